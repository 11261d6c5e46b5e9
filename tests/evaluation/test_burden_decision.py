"""Alarm burden against sensitivity and decision curves, against the protocol and the formula written out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.burden import alarm_burden
from evaluation.decision import decision_curve_table, net_benefit
from evaluation.protocol import run_protocol
from evaluation.recalibration import calibrate_predictions
from evaluation.tables import join_labels
from tests.evaluation.test_bootstrap import _cohort


def test_burden_rows_are_the_protocol_at_each_threshold():
    pred, screens, stays = _cohort(n_stays=40, seed=1)
    table = alarm_burden(pred, screens, stays, n_points=12)
    assert set(table["model"]) == {"cpn", "news2"} and len(table[table.model == "cpn"]) >= 8
    for r in table.itertuples():
        sm = run_protocol(pred, stays, screens, threshold=r.threshold, model=r.model).summary
        assert r.sensitivity == pytest.approx(sm["sensitivity"])
        assert r.alarms_per_admission == pytest.approx(sm["alarms_per_admission"])
        assert r.false_alarms_per_true_alarm == pytest.approx(sm["false_alarms_per_true_alarm"], nan_ok=True)
        assert (r.n_alarms, r.n_true_alarms) == (sm["n_alarms"], sm["n_true_alarms"])
    with pytest.raises(ValueError, match="min_fraction"):
        alarm_burden(pred, screens, stays, min_fraction=0.5, max_fraction=0.1)


def test_net_benefit_formula():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    p = np.clip(0.2 * y + rng.random(300) * 0.8, 0, 1)
    pt = np.array([0.05, 0.1, 0.3])
    expected = [((p >= t) & (y == 1)).sum() / 300 - ((p >= t) & (y == 0)).sum() / 300 * t / (1 - t) for t in pt]
    np.testing.assert_allclose(net_benefit(y, p, pt), expected)
    with pytest.raises(ValueError, match="probabilities"):
        net_benefit(y, p * 5, pt)
    with pytest.raises(ValueError, match="strictly between"):
        net_benefit(y, p, [0.0, 0.5])


def test_decision_curve_is_on_platt_calibrated_probabilities():
    pred, screens, stays = _cohort(n_stays=60, seed=2)
    pred = pred.assign(split=np.where(pred["stay_id"] % 2, "test", "dev"))
    screens = screens.assign(label=(screens.merge(
        stays, on="stay_id")["onset_time"] - screens["screen_time"]).dt.total_seconds().between(1, 48 * 3600)
        .astype(int).to_numpy())
    table = decision_curve_table(pred, screens, thresholds=[0.05, 0.2])
    assert list(dict.fromkeys(table["model"])) == ["cpn", "news2", "treat all", "treat none"]
    assert set(table.loc[table.model == "cpn", "calibration"]) == {"platt (dev)"}
    assert set(table.loc[table.model == "news2", "calibration"]) == {"platt-score (dev)"}
    new = screens.loc[screens["new_data"], ["stay_id", "screen_time"]]
    fit = pred.merge(new, on=["stay_id", "screen_time"])
    for model, method in (("cpn", "platt"), ("news2", "platt-score")):
        cal, _ = calibrate_predictions(fit[fit.model == model], screens, method=method)
        test = join_labels(cal[cal.split == "test"], screens)
        got = table.loc[table.model == model, "net_benefit"].to_numpy()
        np.testing.assert_allclose(got, net_benefit(test["y"], test["risk"], [0.05, 0.2]))
    prev = join_labels(fit[(fit.model == "cpn") & (fit.split == "test")], screens)["y"].mean()
    np.testing.assert_allclose(table.loc[table.model == "treat all", "net_benefit"],
                               [prev - (1 - prev) * t / (1 - t) for t in (0.05, 0.2)])
    assert (table.loc[table.model == "treat none", "net_benefit"] == 0).all()
