"""Own metric implementations against scikit-learn (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from evaluation.metrics import (
    SortedScores,
    average_precision,
    fpr_at_tpr,
    roc_auc,
    screen_labels,
    threshold_metrics,
)


@st.composite
def scored(draw):
    n = draw(st.integers(2, 60))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    # few distinct values so that ties are common
    s = np.array(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), dtype=float) / 8
    w = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=float)
    return y, s, w


@settings(max_examples=150, deadline=None)
@given(scored())
def test_rank_metrics_match_sklearn(data):
    y, s, w = data
    if len(set(y)) < 2:
        assert np.isnan(roc_auc(y, s))
        return
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    if (w * y).sum() > 0 and (w * (1 - y)).sum() > 0:
        assert roc_auc(y, s, w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert average_precision(y, s, w) == pytest.approx(
            skm.average_precision_score(y, s, sample_weight=w), abs=1e-12)
        # integer weights = repeated rows (what the cluster bootstrap relies on)
        rep = np.repeat(np.arange(len(y)), w.astype(int))
        assert roc_auc(y, s, w) == pytest.approx(skm.roc_auc_score(y[rep], s[rep]), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(scored(), st.sampled_from([0.5, 0.8, 0.9]))
def test_fpr_at_tpr_matches_sklearn_roc_curve(data, target):
    y, s, _ = data
    if len(set(y)) < 2:
        return
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    expected = fpr[np.flatnonzero(tpr >= target - 1e-12)[0]]
    assert fpr_at_tpr(y, s, target) == pytest.approx(expected, abs=1e-12)


def test_known_values_and_edge_cases():
    y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == 0.75
    assert roc_auc([1, 1], [0.2, 0.3]) != roc_auc([1, 1], [0.2, 0.3])   # NaN: one class
    assert np.isnan(average_precision([0, 0], [0.2, 0.3]))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="not finite"):
        roc_auc([0, 1], [0.1, np.nan])


def test_sorted_scores_all_rank_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500); s = rng.normal(size=500) + y
    w = rng.integers(0, 3, 500).astype(float)
    ss = SortedScores(y, s)
    auc, ap, fpr = ss.all_rank_metrics(w[ss.order_])
    assert auc == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert ap == pytest.approx(skm.average_precision_score(y, s, sample_weight=w), abs=1e-12)
    assert fpr == pytest.approx(fpr_at_tpr(y, s, 0.8, w), abs=1e-12)


def test_threshold_metrics_against_confusion_matrix():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300); s = rng.random(300)
    tn, fp, fn, tp = skm.confusion_matrix(y, s >= 0.6).ravel()
    m = threshold_metrics(y, s, 0.6)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(tp / (tp + fp))


def test_screen_labels():
    assert screen_labels(np.array([np.nan, 0.5, 48, 48.5, -1]), 48).tolist() == [0, 1, 1, 0, 0]


@settings(max_examples=120, deadline=None)
@given(scored())
def test_curves_on_a_grid_match_sklearn(data):
    """TPR at each FPR: sklearn's ROC (every threshold) interpolated; precision at each recall: the step curve."""
    y, s, _ = data
    if y.min() == y.max():
        return
    grid = np.linspace(0, 1, 21)
    _, roc, pr = SortedScores(y, s).rank_metrics_and_curves(np.ones(len(y))[SortedScores(y, s).order_], grid)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    for g, got in zip(grid, roc):
        # from the last ROC point at or left of g (the highest TPR at that FPR), linear to the next one
        i = np.flatnonzero(fpr <= g)[-1]
        right = np.flatnonzero(fpr > g)
        want = tpr[i] if not len(right) else \
            tpr[i] + (tpr[right[0]] - tpr[i]) * (g - fpr[i]) / (fpr[right[0]] - fpr[i])
        assert got == pytest.approx(want, abs=1e-12)
    prec, rec, _ = skm.precision_recall_curve(y, s, drop_intermediate=False)
    for g, got in zip(grid, pr):
        # the highest threshold whose recall reaches g (sklearn lists recall falling, thresholds rising)
        ok = np.flatnonzero(rec[:-1] >= g - 1e-12)
        assert got == pytest.approx(prec[ok[-1]], abs=1e-12)
