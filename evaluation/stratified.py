"""Is the signal physiology or the clock? Discrimination within bands of hours since admission,
and how often a context variable tops an alarm's explanation.

On ICU data much of what a model learns is *when* in the stay a screen falls: late screens are
often near onset. An overall AUROC mixes that with the physiological signal. Within a band of
hours since admission (0-6, 6-24, 24-72, >= 72 h) the clock is nearly constant, so the AUROC there
is what the model tells apart at the same point of the stay; the positives-weighted mean over the
bands summarises it. The second table counts the fired alarms whose largest in-context factor is
a context variable (time in the unit, department, age, sex) rather than a measurement.

Both read the tables the run already has: predictions, screens (``hours_since_admit``), stays,
alarms and explanations; screens and labels are those of the main table (screens with new data
before onset, onset within ``window_h``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ehr.estimator import predictions_frame
>>> t0 = pd.Timestamp("2024-01-01")
>>> stays = pd.DataFrame({"stay_id": [1, 2], "onset_time": [t0 + pd.Timedelta("76h"), pd.NaT]})
>>> h = np.tile([2.0, 10.0, 30.0, 75.0], 2)
>>> screens = pd.DataFrame({"stay_id": np.repeat([1, 2], 4), "screen_time": t0 + pd.to_timedelta(h, unit="h"),
...                         "hours_since_admit": h, "new_data": True})
>>> pred = predictions_frame(screens, [.1, .2, .6, .9, .2, .1, .5, .3], model="m", split="test")
>>> t = auroc_by_hours_band(pred, screens, stays)
>>> t[["band", "n_positive", "auroc"]].values.tolist()
[['24-72 h', 1, 1.0], ['>= 72 h', 1, 1.0], ['positives-weighted mean', 2, 1.0]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import roc_auc
from .protocol import prepare_screens

__all__ = ["HOURS_BANDS", "CONTEXT_FEATURES", "auroc_by_hours_band", "context_top_share"]

#: band edges in hours since admission (left-closed)
HOURS_BANDS = (0.0, 6.0, 24.0, 72.0, np.inf)
#: explanation features that describe the setting rather than the patient's physiology (CPN context
#: nodes and their GBDT counterparts)
CONTEXT_FEATURES = ("hours_band", "hours_since_admit", "department", "age_band", "age", "sex")


def _band_label(lo: float, hi: float) -> str:
    return f">= {lo:g} h" if np.isinf(hi) else f"{lo:g}-{hi:g} h"


def auroc_by_hours_band(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                        window_h: float = 48.0, bands=HOURS_BANDS) -> pd.DataFrame:
    """Per model and band: screens, positives (onset within ``window_h``) and AUROC; then the mean
    of the band AUROCs weighted by their positives. Bands with one class only are left out."""
    hours = screens[["stay_id", "screen_time", "hours_since_admit"]]
    edges = list(bands)
    labels = [_band_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    rows = []
    for model in dict.fromkeys(predictions["model"]):
        frame = prepare_screens(predictions[predictions["model"] == model], stays, screens, model=model).frame
        frame = frame.merge(hours, on=["stay_id", "screen_time"], how="left").dropna(subset=["risk"])
        y = (frame["onset_in_h"] <= window_h).to_numpy()
        band = pd.cut(frame["hours_since_admit"], edges, right=False, labels=labels)
        kept = []
        for label in labels:
            m = (band == label).to_numpy()
            if m.any() and 0 < y[m].sum() < m.sum():
                kept.append({"model": model, "band": label, "n_screens": int(m.sum()), "n_positive": int(y[m].sum()),
                             "auroc": roc_auc(y[m], frame["risk"].to_numpy()[m])})
        if kept:
            w = np.array([r["n_positive"] for r in kept], dtype=float)
            mean = float(np.average([r["auroc"] for r in kept], weights=w))
            kept.append({"model": model, "band": "positives-weighted mean", "n_screens": sum(r["n_screens"] for r in kept),
                         "n_positive": int(w.sum()), "auroc": mean})
        rows += kept
    return pd.DataFrame(rows, columns=["model", "band", "n_screens", "n_positive", "auroc"])


def context_top_share(explanations: pd.DataFrame, alarms: pd.DataFrame, *,
                      context=CONTEXT_FEATURES) -> pd.DataFrame:
    """Per split, model and operating point: fired alarms, how many were explained, and the share
    whose largest in-context contribution (log-odds or log10 Bayes factor) is a ``context`` feature.

    >>> t0 = pd.Timestamp("2024-01-01")
    >>> alarms = pd.DataFrame({"split": "test", "stay_id": [1, 2], "screen_time": t0, "model": "cpn",
    ...                        "operating_point": "p", "fired": True})
    >>> ex = pd.DataFrame({"stay_id": [1, 1, 2, 2], "screen_time": t0, "model": "cpn",
    ...                    "feature": ["hours_band", "hr", "hours_band", "hr"], "contribution": [.9, .2, .1, .4]})
    >>> r = context_top_share(ex, alarms).iloc[0]
    >>> int(r.n_alarms), int(r.n_explained), float(r.context_top_share)
    (2, 2, 0.5)
    """
    keys = ["stay_id", "screen_time", "model"]
    ex = explanations[explanations["feature"] != "total"]
    top = ex.loc[ex.groupby(keys, sort=False)["contribution"].idxmax(), keys + ["feature"]]
    fired = alarms[alarms["fired"].astype(bool)]
    by = [c for c in ("split", "model", "operating_point") if c in fired.columns]
    rows = []
    for k, g in fired.groupby(by, sort=False):
        m = g[keys].merge(top, on=keys, how="inner")
        share = float(m["feature"].isin(context).mean()) if len(m) else np.nan
        rows.append({**dict(zip(by, k if isinstance(k, tuple) else (k,))), "n_alarms": len(g),
                     "n_explained": len(m), "context_top_share": share})
    return pd.DataFrame(rows)
