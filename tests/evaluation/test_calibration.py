"""Calibration array functions and scalers, against independent implementations.

Golden values: scikit-learn's ``calibration_curve`` and ``brier_score_loss``, ECE by a brute-force
loop over bins and rows, the temperature by scipy's optimiser on scikit-learn's ``log_loss``,
and the class-weight correction against scikit-learn's weighted logistic regression.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from evaluation.calibration import (PlattScaler, TemperatureScaler, apply_temperature, brier_from_sums, brier_score,
                                    calibration_sums, correct_for_class_weight, ece_from_sums,
                                    expected_calibration_error, fit_temperature, reliability_curve)


def _cohort(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.5, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    return z, y


def _ece_brute_force(y, p, n_bins, w=None):
    """ECE the long way: every bin, every row, the uniform bin rule written out."""
    w = np.ones(len(p)) if w is None else w
    total = sum(w)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(len(p)) if lo <= p[i] < hi or (b == n_bins - 1 and p[i] == 1.0)]
        weight = sum(w[i] for i in rows)
        if weight:
            mean_p = sum(w[i] * p[i] for i in rows) / weight
            frac_y = sum(w[i] * y[i] for i in rows) / weight
            ece += weight / total * abs(mean_p - frac_y)
    return ece


# ----------------------------------------------------------------------------- golden: metrics


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn_calibration_curve(strategy):
    rng = np.random.default_rng(5)
    p = rng.random(1000)  # continuous: no risk sits on a bin edge, where sklearn's edge rule differs
    y = (rng.random(1000) < p).astype(int)
    mean_p, frac, counts = reliability_curve(y, p, n_bins=10, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(frac, prob_true, atol=1e-12)
    np.testing.assert_allclose(mean_p, prob_pred, atol=1e-12)
    assert counts.sum() == 1000 and counts.dtype.kind == "i"


def test_brier_matches_sklearn():
    rng = np.random.default_rng(6)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    w = rng.integers(0, 4, 1000).astype(float)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-14)
    assert brier_score(y, p, sample_weight=w) == pytest.approx(brier_score_loss(y, p, sample_weight=w), abs=1e-14)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans(), st.integers(0, 3)), min_size=1, max_size=50),
       st.integers(1, 12))
def test_ece_matches_brute_force(rows, n_bins):
    # risks on a grid of twentieths, so many sit exactly on bin edges (and at 0 and 1)
    p = np.array([r[0] / 20 for r in rows])
    y = np.array([int(r[1]) for r in rows])
    w = np.array([float(r[2]) for r in rows])
    assert expected_calibration_error(y, p, n_bins=n_bins) == pytest.approx(_ece_brute_force(y, p, n_bins),
                                                                            abs=1e-12)
    if w.sum() > 0:
        assert expected_calibration_error(y, p, n_bins=n_bins, sample_weight=w) == pytest.approx(
            _ece_brute_force(y, p, n_bins, w), abs=1e-12)
    m, f, n = reliability_curve(y, p, n_bins=n_bins)
    assert n.sum() == len(p) and (len(m) <= 1 or np.all(np.diff(m) > 0))
    assert 0 <= expected_calibration_error(y, p, n_bins=n_bins) <= 1


def test_by_hand():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert brier_score(y, p) == pytest.approx((0 + 0.5625 + 0.25 + 0.0625 + 0) / 5)
    m, f, n = reliability_curve(y, p, n_bins=4)
    # bins [0,.25) [.25,.5) [.5,.75) [.75,1]: 0.0 | 0.25 | 0.5 | 0.75, 1.0
    assert m.tolist() == [0.0, 0.25, 0.5, 0.875]
    assert f.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert n.tolist() == [1, 1, 1, 2]
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx((0 + 0.75 + 0.5 + 2 * 0.125) / 5)
    assert expected_calibration_error([0, 1, 0, 1], [0.5] * 4) == 0


def test_sums_add_over_groups():
    """Per-group sums add up to the whole: what the cluster bootstrap relies on."""
    rng = np.random.default_rng(7)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    g = rng.integers(0, 7, 300)
    per_group = calibration_sums(y, p, n_bins=5, groups=g, n_groups=9)
    assert per_group.shape == (9, 2 + 15) and not per_group[7:].any()
    np.testing.assert_allclose(per_group.sum(axis=0), calibration_sums(y, p, n_bins=5), atol=1e-12)
    counts = np.array([[1] * 9, [2, 0, 1, 0, 3, 1, 0, 0, 0]], dtype=float)
    resampled = counts @ per_group
    rep = np.repeat(np.arange(300), counts[1][g].astype(int))
    assert brier_from_sums(resampled)[1] == pytest.approx(brier_score(y[rep], p[rep]), abs=1e-12)
    assert ece_from_sums(resampled)[1] == pytest.approx(expected_calibration_error(y[rep], p[rep], n_bins=5),
                                                        abs=1e-12)
    assert np.isnan(ece_from_sums(np.zeros(17))) and np.isnan(brier_from_sums(np.zeros(17)))


# ----------------------------------------------------------------------------- golden: temperature


def _temperature_by_scipy(z, y):
    """The NLL of sigmoid(z / T) by scikit-learn's log_loss, minimised over T by Nelder-Mead."""
    res = optimize.minimize(lambda t: log_loss(y, expit(z / t[0]), labels=[0, 1]), x0=[1.0],
                            method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-14})
    return float(res.x[0])


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_matches_scipy_optimum(true_t):
    z, y = _cohort(n=5000, seed=int(10 * true_t))
    t = fit_temperature(true_t * z, y)
    assert t == pytest.approx(_temperature_by_scipy(true_t * z, y), rel=1e-4)
    assert t == pytest.approx(true_t, rel=0.1)


def test_temperature_one_per_column_for_multi_finding_models():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (5000, 3))
    y = (rng.random((5000, 3)) < expit(z)).astype(float)
    y[:1000, 1] = np.nan  # finding 1 unlabelled on the first 1000 images
    y[:, 2] = 0.0          # finding 2 never positive: cannot be calibrated
    logits = np.c_[3 * z[:, 0], 0.5 * z[:, 1], z[:, 2]]
    t = fit_temperature(logits, y, bounds=(0.05, 20.0))
    assert t.shape == (3,)
    assert t[0] == pytest.approx(_temperature_by_scipy(logits[:, 0], y[:, 0]), rel=1e-4)
    assert t[1] == pytest.approx(_temperature_by_scipy(logits[1000:, 1], y[1000:, 1]), rel=1e-4)
    assert t[2] == 1.0
    probs = apply_temperature(logits, t)
    assert probs.shape == logits.shape
    assert expected_calibration_error(y[:, 0], probs[:, 0]) < expected_calibration_error(y[:, 0], expit(logits[:, 0]))
    scaler = TemperatureScaler(input="logit", bounds=(0.05, 20.0)).fit(logits, y)
    np.testing.assert_array_equal(scaler.temperature_, t)
    np.testing.assert_array_equal(scaler.transform(logits), probs)


def test_temperature_fixes_overconfidence_and_keeps_ranking():
    z, y = _cohort()
    bad = expit(3.0 * z)  # over-confident: true temperature 3
    sc = TemperatureScaler().fit(bad, y)
    assert sc.temperature_ == pytest.approx(3.0, rel=0.08)
    good = sc.transform(bad)
    assert brier_score(y, good) < brier_score(y, bad)
    assert expected_calibration_error(y, good) < 0.02 < expected_calibration_error(y, bad)
    assert roc_auc_score(y, good) == pytest.approx(roc_auc_score(y, bad), abs=1e-12)


# ----------------------------------------------------------------------------- Platt, class weights


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


def test_platt_matches_unpenalised_logistic_regression():
    rng = np.random.default_rng(2)
    score = rng.integers(0, 13, 5000).astype(float)
    y = (rng.uniform(size=5000) < expit(0.6 * score - 5)).astype(int)
    sc = PlattScaler(input="score").fit(score, y)
    lr = LogisticRegression(C=1e10, tol=1e-10, max_iter=1000).fit(score[:, None], y)
    assert sc.coef_ == pytest.approx(float(lr.coef_[0, 0]), rel=1e-4)
    assert sc.intercept_ == pytest.approx(float(lr.intercept_[0]), rel=1e-4)
    with pytest.raises(ValueError, match="probabilities"):
        PlattScaler().fit(score, y)


def test_identity_when_already_calibrated():
    z, y = _cohort(seed=4)
    p = expit(z)
    assert TemperatureScaler().fit(p, y).temperature_ == pytest.approx(1.0, abs=0.05)
    sc = PlattScaler().fit(p, y)
    assert sc.coef_ == pytest.approx(1.0, abs=0.06) and sc.intercept_ == pytest.approx(0.0, abs=0.06)


def test_class_weight_correction_restores_the_prior():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40000, 2))
    y = (rng.random(40000) < expit(x @ [1.0, -0.5] - 3)).astype(int)  # about 7 % positive
    w = (1 - y.mean()) / y.mean()
    weighted = LogisticRegression(C=1e10, class_weight={0: 1, 1: w}).fit(x, y)
    plain = LogisticRegression(C=1e10).fit(x, y)
    z = weighted.decision_function(x)
    assert expit(z).mean() > 0.3  # class weighting inflates the risks
    corrected = correct_for_class_weight(z, w)
    assert expit(corrected).mean() == pytest.approx(y.mean(), abs=0.01)
    np.testing.assert_allclose(corrected, plain.decision_function(x), atol=0.15)
    with pytest.raises(ValueError, match="positive"):
        correct_for_class_weight(z, 0.0)


# ----------------------------------------------------------------------------- estimator contract, errors


def test_scalers_are_sklearn_estimators():
    for cls, params in ((PlattScaler, {"input": "score"}), (TemperatureScaler, {"input": "logit", "bounds": (0.1, 10)})):
        assert "get_params" not in vars(cls) and "set_params" not in vars(cls)
        est = cls(**params)
        assert est.get_params() == {**cls().get_params(), **params}
        twin = clone(est)
        assert twin.get_params() == est.get_params() and twin is not est
        assert repr(est).startswith(cls.__name__ + "(")


def test_errors():
    with pytest.raises(NotFittedError):
        TemperatureScaler().transform([0.5])
    with pytest.raises(NotFittedError):
        PlattScaler().transform([0.5])
    with pytest.raises(ValueError, match="both outcomes"):
        PlattScaler().fit([0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match="0/1 .*row 1"):
        TemperatureScaler().fit([0.2, 0.3], [0, 2])
    with pytest.raises(ValueError, match="not finite at row 1"):
        TemperatureScaler().fit([0.2, np.nan], [0, 1])
    with pytest.raises(ValueError, match="input must be one of"):
        PlattScaler(input="logit").fit([0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="not finite at row 0"):
        brier_score([0], [np.nan])
    with pytest.raises(ValueError, match="probabilities"):
        brier_score([0, 1], [3.0, 5.0])
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve([0, 1], [0.1, 0.2], strategy="equal")
    with pytest.raises(ValueError, match="one shape"):
        fit_temperature(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature([1.0, -1.0], [1, 0], bounds=(2.0, 1.0))
    assert logit(0.5) == 0  # scipy's logit is the reference the scalers invert


def test_one_definition_behind_every_public_name():
    import evaluation
    import evaluation.bootstrap
    import evaluation.displays.curves
    import evaluation.recalibration

    assert evaluation.expected_calibration_error is evaluation.displays.curves.expected_calibration_error
    assert evaluation.brier_score is evaluation.recalibration.brier_score
    assert evaluation.bootstrap.ece_from_sums is ece_from_sums
    assert all(hasattr(evaluation, name) for name in evaluation.__all__) and len(evaluation.__all__) == 34
