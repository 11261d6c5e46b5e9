"""Recalibration on the contract tables: fitted on dev only, reported on test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from evaluation.calibration import brier_score, expected_calibration_error
from evaluation.recalibration import calibrate_predictions, calibration_table


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    n = 4000
    t0 = pd.Timestamp("2020-01-01")
    z = rng.normal(-2, 1.5, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    screens = pd.DataFrame({"stay_id": np.arange(n) // 10, "screen_time": t0 + pd.to_timedelta(np.arange(n) % 10, "h"),
                            "label": y})
    split = np.where((np.arange(n) // 10) % 2 == 0, "dev", "test")
    preds = pd.concat([
        screens[["stay_id", "screen_time"]].assign(model="cpn", risk=expit(2.5 * z), fold=0, split=split),
        screens[["stay_id", "screen_time"]].assign(model="news2", risk=np.round(np.clip(z + 4, 0, 12)), fold=0,
                                                   split=split),
    ], ignore_index=True)
    return preds, screens


def test_calibrate_predictions_fits_on_dev_only():
    preds, screens = _frames()
    out, scalers = calibrate_predictions(preds, screens, method="temperature")
    assert list(scalers) == ["cpn"]  # news2 is not a probability: skipped
    assert scalers["cpn"].temperature_ == pytest.approx(2.5, rel=0.15)
    assert (out.loc[out["model"] == "news2", "risk"] == preds.loc[preds["model"] == "news2", "risk"]).all()
    # scrambling test labels must not change the fitted scaler
    test_keys = preds.loc[preds["split"] == "test", "stay_id"].unique()
    scr2 = screens.copy()
    sel = scr2["stay_id"].isin(test_keys)
    scr2.loc[sel, "label"] = 1 - scr2.loc[sel, "label"]
    _, s2 = calibrate_predictions(preds, scr2, method="temperature")
    assert s2["cpn"].temperature_ == scalers["cpn"].temperature_
    out2, _ = calibrate_predictions(preds, screens, method="platt", suffix="_platt")
    assert set(out2["model"]) == {"cpn", "news2", "cpn_platt"} and len(out2) == len(preds) + len(preds) // 2


def test_calibration_table_reports_improvement():
    preds, screens = _frames(1)
    t = calibration_table(preds, screens, method="platt").set_index("model")
    assert t.loc["cpn", "n"] == 2000
    assert t.loc["cpn", "brier_after"] < t.loc["cpn", "brier_before"]
    assert t.loc["cpn", "ece_after"] < t.loc["cpn", "ece_before"]
    ts = calibration_table(preds, screens, method="platt-score", models=["news2"]).set_index("model")
    assert 0 <= ts.loc["news2", "ece_after"] < 0.05 and np.isnan(ts.loc["news2", "brier_before"])


def test_calibration_table_matches_the_array_functions():
    preds, screens = _frames(2)
    t = calibration_table(preds, screens, method="temperature", n_bins=5).set_index("model")
    cal, scalers = calibrate_predictions(preds, screens, method="temperature")
    test = (preds["split"] == "test") & (preds["model"] == "cpn")
    y = preds.loc[test].merge(screens, on=["stay_id", "screen_time"])["label"].to_numpy()
    assert t.loc["cpn", "temperature"] == scalers["cpn"].temperature_
    assert t.loc["cpn", "brier_before"] == brier_score(y, preds.loc[test, "risk"])
    assert t.loc["cpn", "ece_after"] == expected_calibration_error(y, cal.loc[test, "risk"], n_bins=5)


def test_errors():
    preds, screens = _frames()
    with pytest.raises(ValueError, match="has no screen with a label"):
        calibrate_predictions(preds, screens.iloc[5:])
    with pytest.raises(ValueError, match="no rows in split 'dev'"):
        calibrate_predictions(preds.assign(split="test"), screens)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['split'\]"):
        calibrate_predictions(preds.drop(columns="split"), screens)
    with pytest.raises(ValueError, match="method must be"):
        calibrate_predictions(preds, screens, method="isotonic")
