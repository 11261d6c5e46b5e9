"""PhysioNet 2019 utility: hand-built cases and a transcription of the official reference loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.utility import physionet_utility, row_utilities, utility_from_tables


# --- direct transcription of the official scorer (evaluate_sepsis_score.py, physionetchallenges/
# --- evaluation-2019): compute_prediction_utility and the normalisation loop of evaluate_scores.
def reference_prediction_utility(labels, predictions, dt_early=-12, dt_optimal=-6, dt_late=3.0,
                                 max_u_tp=1, min_u_fn=-2, u_fp=-0.05, u_tn=0):
    if np.any(labels):
        is_septic = True
        t_sepsis = np.argmax(labels) - dt_optimal
    else:
        is_septic = False
        t_sepsis = float("inf")
    n = len(labels)
    m_1 = float(max_u_tp) / float(dt_optimal - dt_early)
    b_1 = -m_1 * dt_early
    m_2 = float(-max_u_tp) / float(dt_late - dt_optimal)
    b_2 = -m_2 * dt_late
    m_3 = float(min_u_fn) / float(dt_late - dt_optimal)
    b_3 = -m_3 * dt_optimal
    u = np.zeros(n)
    for t in range(n):
        if t <= t_sepsis + dt_late:
            if is_septic and predictions[t]:
                if t <= t_sepsis + dt_optimal:
                    u[t] = max(m_1 * (t - t_sepsis) + b_1, u_fp)
                elif t <= t_sepsis + dt_late:
                    u[t] = m_2 * (t - t_sepsis) + b_2
            elif not is_septic and predictions[t]:
                u[t] = u_fp
            elif is_septic and not predictions[t]:
                if t <= t_sepsis + dt_optimal:
                    u[t] = 0
                elif t <= t_sepsis + dt_late:
                    u[t] = m_3 * (t - t_sepsis) + b_3
            elif not is_septic and not predictions[t]:
                u[t] = u_tn
    return np.sum(u)


def reference_normalised_utility(cohort_labels, cohort_predictions, dt_early=-12, dt_optimal=-6, dt_late=3):
    observed, best, worst, inaction = [], [], [], []
    for labels, observed_predictions in zip(cohort_labels, cohort_predictions):
        num_rows = len(labels)
        best_predictions = np.zeros(num_rows)
        inaction_predictions = np.zeros(num_rows)
        if np.any(labels):
            t_sepsis = np.argmax(labels) - dt_optimal
            best_predictions[max(0, t_sepsis + dt_early): min(t_sepsis + dt_late + 1, num_rows)] = 1
        worst_predictions = 1 - best_predictions
        observed.append(reference_prediction_utility(labels, observed_predictions))
        best.append(reference_prediction_utility(labels, best_predictions))
        worst.append(reference_prediction_utility(labels, worst_predictions))
        inaction.append(reference_prediction_utility(labels, inaction_predictions))
    o, b, w, i = map(np.sum, (observed, best, worst, inaction))
    assert w <= b and i <= b
    return (o - i) / (b - i), o, b, i


def _flat(cohort_labels, cohort_predictions):
    stay = np.concatenate([np.full(len(l), k) for k, l in enumerate(cohort_labels)])
    return np.concatenate(cohort_labels), np.concatenate(cohort_predictions), stay


def test_hand_built_rows():
    # septic stay, first label at row 10 -> t_sepsis = 16; rows d = t - 16 = -16 .. 5
    labels = np.r_[np.zeros(10), np.ones(12)]
    u_pos, u_neg, best = row_utilities(labels, np.zeros(22))
    d = np.arange(22) - 16
    exp_pos = {-16: -0.05, -12: 0.0, -9: 0.5, -6: 1.0, -3: 2 / 3, 0: 1 / 3, 3: 0.0, 4: 0.0, 5: 0.0}
    exp_neg = {-16: 0.0, -6: 0.0, -5: -2 / 9, 0: -12 / 9, 3: -2.0, 4: 0.0}
    for k, v in exp_pos.items():
        assert u_pos[d == k][0] == pytest.approx(v)
    for k, v in exp_neg.items():
        assert u_neg[d == k][0] == pytest.approx(v)
    assert best.tolist() == [(-12 <= k <= 3) for k in d]
    # non-septic stay: -0.05 per alarm, 0 otherwise
    u_pos, u_neg, best = row_utilities(np.zeros(4), np.ones(4))
    assert u_pos.tolist() == [-0.05] * 4 and u_neg.tolist() == [0.0] * 4 and not best.any()


def test_hand_built_cohorts():
    labels = [np.r_[np.zeros(10), np.ones(12)], np.zeros(30)]
    perfect = [np.r_[np.zeros(4), np.ones(16), np.zeros(2)], np.zeros(30)]
    y, p, s = _flat(labels, perfect)
    assert physionet_utility(y, p, s)["utility"] == pytest.approx(1.0)
    y, p, s = _flat(labels, [np.zeros(22), np.zeros(30)])
    assert physionet_utility(y, p, s)["utility"] == 0.0
    # alarm everywhere on the non-septic stay only: 30 x -0.05 below inaction
    y, p, s = _flat(labels, [np.zeros(22), np.ones(30)])
    r = physionet_utility(y, p, s)
    assert r["observed"] - r["inaction"] == pytest.approx(-1.5)
    assert r["utility"] == pytest.approx(-1.5 / (r["best"] - r["inaction"]))


def test_rows_need_not_be_contiguous():
    labels = [np.r_[np.zeros(8), np.ones(6)], np.zeros(9)]
    preds = [np.r_[np.zeros(5), np.ones(9)], np.r_[np.ones(2), np.zeros(7)]]
    y, p, s = _flat(labels, preds)
    perm = np.argsort(np.r_[np.arange(14) * 2, np.arange(9) * 2 + 1], kind="stable")   # interleave stays
    a = physionet_utility(y, p, s)["utility"]
    b = physionet_utility(y[perm], p[perm], s[perm])["utility"]
    assert a == pytest.approx(b)


@st.composite
def cohorts(draw):
    k = draw(st.integers(1, 6))
    labels, preds = [], []
    for _ in range(k):
        n = draw(st.integers(1, 60))
        if draw(st.booleans()):
            first = draw(st.integers(0, n - 1))
            lab = np.r_[np.zeros(first), np.ones(n - first)]
        else:
            lab = np.zeros(n)
        labels.append(lab)
        preds.append(np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float))
    if not any(l.any() for l in labels):
        labels[0] = np.ones(len(labels[0]))
    return labels, preds


@settings(max_examples=200, deadline=None)
@given(cohorts())
def test_matches_reference_transcription(data):
    labels, preds = data
    ref, o, b, i = reference_normalised_utility(labels, preds)
    y, p, s = _flat(labels, preds)
    got = physionet_utility(y, p, s)
    assert got["utility"] == pytest.approx(ref, abs=1e-9)
    assert (got["observed"], got["best"], got["inaction"]) == pytest.approx((o, b, i), abs=1e-9)


def test_from_tables_and_errors():
    t0 = pd.Timestamp("2019-01-01")
    labels = [np.r_[np.zeros(10), np.ones(12)], np.zeros(6)]
    screens = pd.concat([pd.DataFrame({"stay_id": k, "screen_time": t0 + pd.to_timedelta(np.arange(len(l)), "h"),
                                       "sepsis_label": l.astype(int)}) for k, l in enumerate(labels)],
                        ignore_index=True)
    risk = np.r_[np.linspace(0, 1, 22), np.full(6, 0.1)]
    pred = screens[["stay_id", "screen_time"]].assign(model="m", risk=risk, fold=0, split="test").sample(frac=1, random_state=0)
    got = utility_from_tables(pred, screens, threshold=0.5)
    ref, *_ = reference_normalised_utility(labels, [(risk[:22] >= 0.5).astype(float), np.zeros(6)])
    assert got["utility"] == pytest.approx(ref)
    part = pred.iloc[:-3]
    with pytest.raises(ValueError, match="without one"):
        utility_from_tables(part, screens, threshold=0.5)
    r = utility_from_tables(part, screens, threshold=0.5, missing="negative")
    assert r["n_missing_predictions"] == 3
    with pytest.raises(ValueError, match="sepsis_label"):
        utility_from_tables(pred, screens.drop(columns="sepsis_label"), threshold=0.5)
    with pytest.raises(ValueError, match="not in predictions"):
        utility_from_tables(pred, screens, threshold=0.5, model="x")
    with pytest.raises(ValueError, match="label == 0"):
        physionet_utility(np.array([0, 2]), np.array([0, 1]), np.array([1, 1]))
