"""Calibration: recalibrators fix deliberately miscalibrated scores; Brier/ECE/reliability by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from evaluation.calibration import (PlattScaler, TemperatureScaler, brier_score, calibrate_predictions,
                                    calibration_table, expected_calibration_error, reliability_curve)


def _cohort(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.5, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    return z, y


def test_temperature_fixes_overconfidence_and_keeps_ranking():
    z, y = _cohort()
    bad = expit(3.0 * z)  # over-confident: true temperature 3
    sc = TemperatureScaler().fit(bad, y)
    assert sc.temperature_ == pytest.approx(3.0, rel=0.08)
    good = sc.transform(bad)
    assert brier_score(y, good) < brier_score(y, bad)
    assert expected_calibration_error(y, good) < 0.02 < expected_calibration_error(y, bad)
    assert roc_auc_score(y, good) == pytest.approx(roc_auc_score(y, bad), abs=1e-12)


def test_platt_recovers_slope_and_intercept():
    z, y = _cohort(seed=1)
    bad = expit(0.5 * z + 1.0)  # under-confident and shifted up
    sc = PlattScaler().fit(bad, y)
    # logit(bad) = 0.5 z + 1  ->  z = 2 * logit(bad) - 2
    assert sc.coef_ == pytest.approx(2.0, rel=0.08)
    assert sc.intercept_ == pytest.approx(-2.0, abs=0.15)
    good = sc.transform(bad)
    assert brier_score(y, good) < brier_score(y, bad)
    assert expected_calibration_error(y, good) < 0.02 < expected_calibration_error(y, bad)
    assert sc.predict_proba(bad).shape == (len(bad), 2)


def test_platt_on_scores_turns_news2_into_probability():
    rng = np.random.default_rng(2)
    score = rng.integers(0, 13, 5000).astype(float)
    y = (rng.uniform(size=5000) < expit(0.6 * score - 5)).astype(int)
    sc = PlattScaler(input="score").fit(score, y)
    assert sc.coef_ == pytest.approx(0.6, rel=0.15)
    assert sc.intercept_ == pytest.approx(-5, rel=0.15)
    with pytest.raises(ValueError, match="probabilities"):
        PlattScaler().fit(score, y)


def test_identity_when_already_calibrated():
    z, y = _cohort(seed=4)
    p = expit(z)
    assert TemperatureScaler().fit(p, y).temperature_ == pytest.approx(1.0, abs=0.05)
    sc = PlattScaler().fit(p, y)
    assert sc.coef_ == pytest.approx(1.0, abs=0.06) and sc.intercept_ == pytest.approx(0.0, abs=0.06)


def test_brier_ece_reliability_by_hand():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert brier_score(y, p) == pytest.approx((0 + 0.5625 + 0.25 + 0.0625 + 0) / 5)
    m, f, n = reliability_curve(y, p, n_bins=4)
    # bins [0,.25) [.25,.5) [.5,.75) [.75,1]: 0.0 | 0.25 | 0.5 | 0.75, 1.0
    assert m.tolist() == [0.0, 0.25, 0.5, 0.875]
    assert f.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert n.tolist() == [1, 1, 1, 2]
    ece = (1 * 0 + 1 * 0.75 + 1 * 0.5 + 2 * 0.125) / 5
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(ece)
    mq, fq, nq = reliability_curve(y, p, n_bins=2, strategy="quantile")
    assert nq.sum() == 5 and len(nq) == 2


def test_agrees_with_evaluation_metrics():
    metrics = pytest.importorskip("evaluation.metrics")
    if not hasattr(metrics, "expected_calibration_error"):
        pytest.skip("evaluation.metrics has no ECE yet")
    rng = np.random.default_rng(5)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    assert expected_calibration_error(y, p) == pytest.approx(metrics.expected_calibration_error(y, p), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(metrics.brier_score(y, p), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60), st.integers(1, 12))
def test_ece_properties(rows, n_bins):
    p = np.array([r[0] for r in rows])
    y = np.array([int(r[1]) for r in rows])
    ece = expected_calibration_error(y, p, n_bins=n_bins)
    assert 0 <= ece <= 1
    m, f, n = reliability_curve(y, p, n_bins=n_bins)
    assert n.sum() == len(p)
    assert np.all(np.diff(m) > 0) or len(m) <= 1  # bins are in increasing order of risk


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
        screens[["stay_id", "screen_time"]].assign(model="cpn", risk=expit(2.5 * z), split=split),
        screens[["stay_id", "screen_time"]].assign(model="news2", risk=np.round(np.clip(z + 4, 0, 12)), split=split),
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


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaler().transform([0.5])
    with pytest.raises(ValueError, match="both outcomes"):
        PlattScaler().fit([0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match="0/1; row 1"):
        TemperatureScaler().fit([0.2, 0.3], [0, 2])
    with pytest.raises(ValueError, match="not finite at row 0"):
        brier_score([0], [np.nan])
    preds, screens = _frames()
    with pytest.raises(ValueError, match="has no screen with a label"):
        calibrate_predictions(preds, screens.iloc[5:])
    with pytest.raises(ValueError, match="no rows in split 'dev'"):
        calibrate_predictions(preds.assign(split="test"), screens)
    with pytest.raises(ValueError, match="missing column 'split'"):
        calibrate_predictions(preds.drop(columns="split"), screens)
    assert logit(0.5) == 0  # scipy's logit is the reference the scalers invert
