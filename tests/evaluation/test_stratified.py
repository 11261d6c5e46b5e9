"""AUROC within hours-since-admission bands against a direct computation with scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ehr.estimator import predictions_frame
from evaluation.stratified import HOURS_BANDS, auroc_by_hours_band


def test_band_aurocs_equal_sklearn_on_the_main_table_screens():
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2024-01-01")
    n, hours = 60, 120
    onset = np.where(rng.random(n) < 0.4, rng.uniform(3, hours, n), np.nan)
    stays = pd.DataFrame({"stay_id": np.arange(n), "onset_time": t0 + pd.to_timedelta(onset, unit="h")})
    h = np.tile(np.arange(hours, dtype=float), n)
    sid = np.repeat(np.arange(n), hours)
    screens = pd.DataFrame({"stay_id": sid, "screen_time": t0 + pd.to_timedelta(h, unit="h"),
                            "hours_since_admit": h, "new_data": rng.random(len(h)) < 0.7})
    risk = rng.random(len(h))
    table = auroc_by_hours_band(predictions_frame(screens, risk, model="m", split="test"), screens, stays)
    # by hand: screens with new data before onset; positive when onset is within 48 h
    to_onset = onset[sid] - h
    keep = screens["new_data"].to_numpy() & ~(to_onset <= 0)
    y = to_onset <= 48
    for lo, hi in zip(HOURS_BANDS[:-1], HOURS_BANDS[1:]):
        m = keep & (h >= lo) & (h < hi)
        row = table[table.band == (f">= {lo:g} h" if np.isinf(hi) else f"{lo:g}-{hi:g} h")]
        assert row.n_screens.iloc[0] == m.sum() and row.n_positive.iloc[0] == y[m].sum()
        assert abs(row.auroc.iloc[0] - roc_auc_score(y[m], risk[m])) < 1e-12
