"""Display objects: the arrays they compute, checked against hand-computed values (never pixels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from evaluation.displays import (AlarmBurdenDisplay, BayesFactorDisplay, DecisionCurveDisplay, PrDisplay,
                                 ReliabilityDisplay, RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.displays._base import LOWER_COLOR, RAISE_COLOR
from evaluation.protocol import silence

T = pd.Timestamp("2023-02-01")
H = pd.Timedelta(hours=1)
Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def _frames():
    """Two models on 6 screens; model b only scores 4 of them."""
    screens = pd.DataFrame({"stay_id": [1, 1, 1, 2, 2, 2], "screen_time": [T + h * H for h in (1, 2, 3, 1, 2, 3)],
                            "label": [0, 1, 1, 0, 0, 0]})
    a = screens[["stay_id", "screen_time"]].assign(model="a", risk=[0.2, 0.7, 0.9, 0.1, 0.8, 0.3], fold=0,
                                                        split="test")
    b = screens[["stay_id", "screen_time"]].iloc[[0, 1, 3, 4]].assign(model="b", risk=[1.0, 3.0, 2.0, 0.0],
                                                                      fold=0, split="test")
    dev = a.assign(split="dev", risk=0.5)
    return pd.concat([a, b, dev.iloc[:0]], ignore_index=True), screens


# ----------------------------------------------------------------------------- ROC


def test_roc_arrays_operating_points_and_region():
    d = RocDisplay.from_predictions(Y, S, name="m", operating_points={"hi": 0.5, "lo": 0.3})
    assert d.fpr["m"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert d.tpr["m"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert d.roc_auc["m"] == 0.75
    op = d.operating_points.set_index("label")
    assert op.loc["hi", ["fpr", "tpr", "precision"]].tolist() == [0.0, 0.5, 1.0]
    assert op.loc["lo", ["fpr", "tpr"]].tolist() == [0.5, 1.0]
    assert op.loc["lo", "precision"] == pytest.approx(2 / 3)
    assert op.loc["lo", "specificity"] == 0.5
    assert d.inapplicable_region == pytest.approx((0.1, 1.0))
    d.plot()
    assert isinstance(d.figure_, Figure) and d.ax_.figure is d.figure_
    spans = [p for p in d.ax_.patches]
    assert len(spans) == 1 and spans[0].get_x() == pytest.approx(0.1)


def test_roc_several_models_on_one_axes_from_frames():
    preds, screens = _frames()
    d = RocDisplay.from_frames(preds, screens, split="test",
                               operating_points=pd.DataFrame({"model": ["a", "b"], "operating_point": ["x", "x"],
                                                              "threshold": [0.75, 2.5]}))
    assert list(d.fpr) == ["a", "b"]
    # a: positives 0.7, 0.9; negatives 0.2, 0.1, 0.8, 0.3 -> 7 of 8 pairs ordered (0.7 < 0.8)
    assert d.roc_auc["a"] == 0.875
    # b: positive 3.0; negatives 1.0, 2.0, 0.0 -> perfect
    assert d.roc_auc["b"] == 1.0
    op = d.operating_points.set_index("model")
    assert op.loc["a", ["fpr", "tpr"]].tolist() == [0.25, 0.5]
    assert op.loc["b", ["fpr", "tpr"]].tolist() == [0.0, 1.0]
    fig = Figure()
    ax = fig.add_subplot()
    d.plot(ax=ax, shade=False)
    assert d.ax_ is ax and d.figure_ is fig
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert any(lb.startswith("a (AUROC") for lb in labels) and any(lb.startswith("b (AUROC") for lb in labels)
    assert not ax.patches  # shade=False


def test_roc_errors():
    preds, screens = _frames()
    with pytest.raises(ValueError, match=r"model\(s\) \['zz'\] not found"):
        RocDisplay.from_frames(preds, screens, models=["zz"])
    with pytest.raises(ValueError, match="both outcomes"):
        RocDisplay.from_predictions([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="has no screen with a label"):
        RocDisplay.from_frames(preds, screens.iloc[1:])
    with pytest.raises(ValueError, match="several models"):
        RocDisplay.from_predictions(Y, {"a": S, "b": S}, operating_points=[0.5])


# ----------------------------------------------------------------------------- PR


def test_pr_arrays_and_region():
    d = PrDisplay.from_predictions(Y, S, name="m", operating_points=[0.5])
    assert d.precision["m"].tolist() == pytest.approx([0.5, 2 / 3, 0.5, 1.0, 1.0])
    assert d.recall["m"].tolist() == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert d.average_precision["m"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert d.prevalence["m"] == 0.5
    assert d.operating_points[["tpr", "precision"]].values.tolist() == [[0.5, 1.0]]
    assert d.inapplicable_region == (0.0, 0.15)
    d.plot()
    assert len(d.ax_.patches) == 1
    assert d.ax_.patches[0].get_height() == pytest.approx(0.15)


# ----------------------------------------------------------------------------- reliability


def test_reliability_arrays():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    d = ReliabilityDisplay.from_predictions(y, p, name="m", n_bins=4)
    assert d.mean_predicted["m"].tolist() == [0.0, 0.25, 0.5, 0.875]
    assert d.fraction_positive["m"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert d.counts["m"].tolist() == [1, 1, 1, 2]
    assert d.ece["m"] == pytest.approx((0.75 + 0.5 + 0.25) / 5)
    assert d.brier["m"] == pytest.approx(0.875 / 5)
    d.plot()
    assert d.ax_ is not None


def test_reliability_from_frames_skips_scores():
    preds, screens = _frames()
    d = ReliabilityDisplay.from_frames(preds, screens, n_bins=2)
    assert list(d.mean_predicted) == ["a"]  # b's risks leave [0, 1]
    with pytest.raises(ValueError, match="model 'b'.*probabilities"):
        ReliabilityDisplay.from_frames(preds, screens, models=["b"])


# ----------------------------------------------------------------------------- decision curve


def _naive_net_benefit(y, p, pt):
    out = []
    for t in pt:
        pos = p >= t
        tp, fp = np.sum(pos & (y == 1)), np.sum(pos & (y == 0))
        out.append(tp / len(y) - fp / len(y) * t / (1 - t))
    return np.array(out)


def test_decision_curve_by_hand_and_against_loop():
    d = DecisionCurveDisplay.from_predictions(Y, S, name="m", thresholds=[0.2, 0.35, 0.5])
    # 0.2: TP 2 FP 1; 0.35 (ties count as positive): TP 2 FP 1; 0.5: TP 1 FP 0
    assert d.net_benefit["m"].tolist() == pytest.approx([0.5 - 0.25 * 0.25, 0.5 - 0.25 * 0.35 / 0.65, 0.25])
    assert d.treat_all.tolist() == pytest.approx([0.5 - 0.5 * 0.25, 0.5 - 0.5 * 0.35 / 0.65, 0.0])
    assert d.treat_none.tolist() == [0, 0, 0]
    rng = np.random.default_rng(1)
    p = np.round(rng.uniform(size=300), 2)  # rounded: many ties
    y = (rng.uniform(size=300) < p).astype(int)
    d2 = DecisionCurveDisplay.from_predictions(y, p, name="m")
    assert d2.net_benefit["m"] == pytest.approx(_naive_net_benefit(y, p, d2.thresholds), abs=1e-12)
    d2.plot()
    assert len(d2.ax_.get_lines()) == 3


def test_decision_curve_needs_probabilities():
    with pytest.raises(ValueError, match="model 'n'.*probabilities"):
        DecisionCurveDisplay.from_predictions([0, 1], [3.0, 5.0], name="n")
    with pytest.raises(ValueError, match="strictly between"):
        DecisionCurveDisplay.from_predictions(Y, S, thresholds=[0.0, 0.5])


# ----------------------------------------------------------------------------- true-alarm timing


def test_true_alarm_timing_from_alarms():
    stays = pd.DataFrame({"stay_id": [1, 2, 3], "onset_time": [T + 50 * H, T + 20 * H, pd.NaT]})
    rows = [(1, 10, True), (1, 30, True), (1, 40, False), (2, 18, True), (3, 5, True)]
    alarms = pd.DataFrame([{"stay_id": s, "screen_time": T + h * H, "model": "m", "threshold": 0.5, "fired": f,
                            "silenced": not f} for s, h, f in rows])
    d = TrueAlarmTimingDisplay.from_alarms(alarms, stays, window_h=48)
    # true fired alarms: stay 1 at 40 h and 20 h before onset, stay 2 at 2 h; stay 3 is a false alarm
    assert d.n_alarms == {"m": 3}
    assert d.median_h["m"] == 20.0
    assert d.hours.tolist() == list(range(49))
    f = d.fraction["m"]
    assert f[0] == 1.0 and f[2] == 1.0 and f[3] == pytest.approx(2 / 3) and f[20] == pytest.approx(2 / 3)
    assert f[21] == pytest.approx(1 / 3) and f[40] == pytest.approx(1 / 3) and f[41] == 0.0
    d.plot()
    assert d.ax_.get_xlabel().startswith("hours before onset")


def test_true_alarm_timing_curves_per_operating_point():
    lt = pd.DataFrame({"model": ["m", "m", "m", "k"], "operating_point": ["n5", "n5", "n7", "n5"],
                       "threshold": [0.2, 0.2, 0.6, 3.0], "hours_before_onset": [10.0, 20.0, 5.0, 1.0]})
    d = TrueAlarmTimingDisplay.from_lead_times(lt, hours=[0, 6, 15])
    assert set(d.fraction) == {"m @ n5", "m @ n7", "k"}
    assert d.fraction["m @ n5"].tolist() == [1.0, 1.0, 0.5]
    assert d.fraction["m @ n7"].tolist() == [1.0, 0.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 48), min_size=1, max_size=30))
def test_timing_fraction_falls_from_one(leads):
    lt = pd.DataFrame({"model": "m", "threshold": 1.0, "hours_before_onset": leads})
    f = TrueAlarmTimingDisplay.from_lead_times(lt).fraction["m"]
    assert f[0] == 1.0 and np.all(np.diff(f) <= 0) and f[-1] == np.mean(np.array(leads) >= 48)


# ----------------------------------------------------------------------------- risk trace


def _trace_tables():
    stays = pd.DataFrame({"stay_id": [7], "admit_time": [T], "onset_time": [T + 30 * H],
                          "antibiotic_time": [T + 31 * H]})
    risk = [0.1, 0.6, 0.7, 0.2, 0.3, 0.9, 0.4, 0.8]
    hours = [1, 2, 3, 4, 10, 14, 20, 26]
    pred = pd.DataFrame({"stay_id": 7, "model": "cpn", "risk": risk, "screen_time": [T + h * H for h in hours]})
    return stays, pred


def test_risk_trace_protocol_rule():
    stays, pred = _trace_tables()
    d = RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn", threshold=0.5, silencing_h=12)
    assert d.hours.tolist() == [1, 2, 3, 4, 10, 14, 20, 26]
    # crossings at 2 (fires), 3 (silenced: < 2 + 12), 14 (fires: exactly 2 + 12), 26 (fires: 14 + 12)
    assert d.fired_hours.tolist() == [2.0, 14.0, 26.0]
    assert d.silenced_hours.tolist() == [3.0]
    assert d.silencing_windows.tolist() == [[2.0, 14.0], [14.0, 26.0], [26.0, 38.0]]
    d13 = RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn", threshold=0.5, silencing_h=13)
    assert d13.fired_hours.tolist() == [2.0, 26.0] and d13.silenced_hours.tolist() == [3.0, 14.0]
    assert d.onset_hour == 30.0 and d.antibiotic_hour == 31.0 and d.threshold == 0.5
    d.plot()
    assert d.ax_.get_xlim()[1] > 31


def test_risk_trace_reads_alarms_table():
    stays, pred = _trace_tables()
    alarms = pd.DataFrame({"stay_id": 7, "model": "cpn", "threshold": 0.65,
                           "screen_time": [T + 3 * H, T + 14 * H, T + 26 * H],
                           "fired": [True, False, True], "silenced": [False, True, False]})
    d = RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn", alarms=alarms, silencing_h=24)
    assert d.threshold == 0.65
    assert d.fired_hours.tolist() == [3.0, 26.0] and d.silenced_hours.tolist() == [14.0]
    assert d.silencing_windows.tolist() == [[3.0, 27.0], [26.0, 50.0]]
    two = pd.concat([alarms, alarms.assign(threshold=0.3)])
    with pytest.raises(ValueError, match="2 thresholds"):
        RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn", alarms=two)
    with pytest.raises(ValueError, match="stay_id 8 not found"):
        RiskTraceDisplay.from_frames(pred, stays, stay_id=8, model="cpn", threshold=0.5)
    with pytest.raises(ValueError, match="threshold is required"):
        RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn")


# ----------------------------------------------------------------------------- Bayes factors


def _explanations():
    rows = []
    for m, items in (("cpn", [("crp", 150.0, "high", 0.9, 0.7), ("hr", 110, "high", 0.3, 0.2),
                              ("alb", 40, "normal", -0.5, -0.6), ("lact", 1.0, "normal", -0.1, 0.05),
                              ("total", None, None, 1.2, None)]),
                     ("lightgbm", [("crp", 150.0, None, 0.4, 0.1), ("resp", 30, None, -0.2, 0.1)])):
        for f, v, s, c, b in items:
            rows.append({"stay_id": 3, "screen_time": T + 5 * H, "model": m, "feature": f, "value": v, "state": s,
                         "age_h": 1.0, "weight": 0.9, "contribution": c, "baseline": b})
    rows.append({**rows[0], "screen_time": T + 6 * H, "contribution": 9.0})  # another screen: ignored
    return pd.DataFrame(rows)


def test_bayes_factor_bars():
    ex = _explanations()
    d = BayesFactorDisplay.from_explanations(ex, stay_id=3, screen_time=T + 5 * H, compare_model="lightgbm")
    assert d.features["cpn"].tolist() == ["crp", "alb", "hr", "lact"]
    assert d.contributions["cpn"].tolist() == [0.9, -0.5, 0.3, -0.1]
    assert d.colors["cpn"].tolist() == [RAISE_COLOR, LOWER_COLOR, RAISE_COLOR, LOWER_COLOR]
    assert d.labels["cpn"][0] == "crp = 150 [high]"
    assert d.totals == {"cpn": 1.2, "lightgbm": None}
    assert d.features["lightgbm"].tolist() == ["crp", "resp"]
    assert d.colors["lightgbm"].tolist() == [RAISE_COLOR, LOWER_COLOR]
    d.plot()
    assert len(d.axes_) == 2 and d.ax_ is d.axes_[0]
    bars = [p.get_width() for p in d.ax_.patches]
    assert bars == [0.9, -0.5, 0.3, -0.1]
    assert [p.get_y() for p in d.ax_.patches] == sorted([p.get_y() for p in d.ax_.patches], reverse=True)


def test_bayes_factor_in_context_top_k_and_errors():
    ex = _explanations()
    d = BayesFactorDisplay.from_explanations(ex, stay_id=3, screen_time=T + 5 * H, in_context=True, top_k=2)
    assert d.features["cpn"].tolist() == ["crp", "alb"]
    assert d.contributions["cpn"].tolist() == [0.7, -0.6]
    fig = Figure()
    ax = fig.add_subplot()
    d.plot(ax=ax)
    assert d.ax_ is ax and d.ax_.get_xlabel() == "in-context log10 Bayes factor"
    with pytest.raises(ValueError, match="no rows for model 'xgboost'"):
        BayesFactorDisplay.from_explanations(ex, stay_id=3, screen_time=T + 5 * H, compare_model="xgboost")
    with pytest.raises(ValueError, match="got 1 axes for 2"):
        BayesFactorDisplay.from_explanations(ex, stay_id=3, screen_time=T + 5 * H,
                                             compare_model="lightgbm").plot(ax=ax)


def test_risk_trace_rule_agrees_with_protocol():
    rng = np.random.default_rng(7)
    hours = np.cumsum(rng.integers(1, 5, 200)).astype(float)
    risk = rng.uniform(size=200)
    stays = pd.DataFrame({"stay_id": [1], "admit_time": [T], "onset_time": [pd.NaT]})
    pred = pd.DataFrame({"stay_id": 1, "model": "m", "risk": risk, "screen_time": T + pd.to_timedelta(hours, "h")})
    for s_h in (12.0, 24.0, 48.0):
        d = RiskTraceDisplay.from_frames(pred, stays, stay_id=1, model="m", threshold=0.7, silencing_h=s_h)
        cand = risk >= 0.7
        fired = silence(np.zeros(cand.sum(), int), hours[cand], s_h)
        assert d.fired_hours.tolist() == hours[cand][fired].tolist()
        assert d.silenced_hours.tolist() == hours[cand][~fired].tolist()


def test_curve_bands_from_a_table_are_drawn_per_model():
    preds, screens = _frames()
    bands = pd.DataFrame({"model": "a", "curve": "roc", "x": [0.0, 0.5, 1.0], "estimate": [0.5, 0.8, 1.0],
                          "ci_low": [0.2, 0.6, 1.0], "ci_high": [0.7, 0.9, 1.0]})
    d = RocDisplay.from_frames(preds, screens, models=["a"], bands=bands).plot()
    x, lo, hi = d.bands["a"]
    assert x.tolist() == [0.0, 0.5, 1.0] and lo.tolist() == [0.2, 0.6, 1.0] and hi.tolist() == [0.7, 0.9, 1.0]
    assert len(d.ax_.collections) == 1  # the band (fill_between); the shaded region is a patch
    assert PrDisplay.from_frames(preds, screens, models=["a"]).bands is None


def test_alarm_burden_display_from_table_and_operating_points():
    table = pd.DataFrame({"model": ["m", "m", "m", "n", "n"], "threshold": [0.9, 0.5, 0.2, 7, 5],
                          "sensitivity": [0.3, 0.6, 0.9, 0.4, 0.7], "alarms_per_admission": [0.1, 0.3, 1.2, 0.2, 0.6],
                          "false_alarms_per_true_alarm": [1.0, 3.0, 9.0, np.nan, 8.0]})
    ops = pd.DataFrame({"model": ["m"], "operating_point": ["news2>=5"], "sensitivity": [0.6],
                        "alarms_per_admission": [0.3], "false_alarms_per_true_alarm": [3.0]})
    d = AlarmBurdenDisplay.from_table(table, operating_points=ops).plot()
    assert d.sensitivity["m"].tolist() == [0.3, 0.6, 0.9] and d.false_per_true["n"][0] != d.false_per_true["n"][0]
    assert len(d.axes_) == 2 and d.axes_[1].get_ylabel() == "false alarms per true alarm"
    with pytest.raises(ValueError, match="sensitivity"):
        AlarmBurdenDisplay.from_table(table.drop(columns="sensitivity"))


def test_bayes_factor_from_explained_alarm_draws_in_context_and_alone():
    alarm = pd.DataFrame({"model": "cpn", "stay_id": 5, "screen_time": T, "true_alarm": False,
                          "hours_before_onset": np.nan, "risk": 0.4, "prior": -1.1, "total": 0.9, "needed": 0.5,
                          "explanation": "bayes_factor", "feature": ["hr", "temp"],
                          "feature_label": ["Heart rate", "Body temperature"], "value": [118.0, 36.5],
                          "unit": ["/min", "°C"], "state_label": ["111–130 /min", "36.1–38.0 °C"],
                          "age_h": [1.0, 3.0], "weight": [1.0, 0.8], "alone": [0.3, -0.2], "in_context": [0.6, -0.1]})
    d = BayesFactorDisplay.from_explained(alarm).plot()
    assert d.labels["cpn"].tolist() == ["Heart rate = 118 /min [111–130 /min]", "Body temperature = 36.5 °C [36.1–38.0 °C]"]
    assert d.in_context["cpn"].tolist() == [0.6, -0.1] and d.contributions["cpn"].tolist() == [0.3, -0.2]
    assert [c == RAISE_COLOR for c in d.colors["cpn"]] == [True, False]  # coloured by the in-context factor
    assert "false alarm" in d.header and len(d.ax_.patches) == 4
    additive = BayesFactorDisplay.from_explained(alarm.assign(explanation="additive", model="lightgbm")).plot()
    assert not additive.in_context and len(additive.ax_.patches) == 2
