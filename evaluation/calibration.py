"""Calibration, one definition each: Brier score, reliability curve, ECE, temperature and Platt scaling.

Pure array functions shared by evaluation and the model packages (``imaging``, later ``fusion``);
:mod:`evaluation.recalibration` applies them to the contract tables. The definitions (the ones
:class:`evaluation.displays.ReliabilityDisplay` draws and :mod:`evaluation.bootstrap` resamples):

* **Bins.** ``strategy="uniform"``: ``n_bins`` equal-width bins on [0, 1]; bin ``b`` holds
  ``b/n <= p < (b+1)/n`` and the last bin also holds ``p == 1``. ``strategy="quantile"``:
  equal-count bins at the quantiles of ``p`` (tied edges merged).
* **Sufficient statistics** (:func:`calibration_sums`): total weight, weighted sum of
  ``(p - y)**2``, and per bin the weight, the weighted sum of ``p`` and of ``y``. They add over
  screens, so the cluster bootstrap sums them per stay once and resamples the sums.
* **Brier score**: ``sum w (p - y)**2 / sum w``.
* **Reliability curve**: per non-empty bin the mean risk, the fraction positive and the weight.
* **ECE**: ``sum_b |sum_{i in b} w_i p_i - sum_{i in b} w_i y_i| / sum_i w_i``, i.e. the
  weight share of each bin times its gap between mean risk and fraction positive.
* **Temperature scaling**: ``p = sigmoid(z / T)``, ``T > 0`` by maximum likelihood, one ``T`` per
  column of ``(n, F)`` logits (a multi-finding model); ranking is unchanged.
* **Platt scaling**: ``p = sigmoid(a x + b)`` by maximum likelihood, ``x`` the logit of a
  probability or a raw score such as NEWS2.
* **Class-weight correction**: a model trained with positive-class weight ``w`` (e.g.
  ``pos_weight = n_negative / n_positive``) estimates odds ``w`` times too high, a prior shift;
  :func:`correct_for_class_weight` subtracts ``log w`` from its logits. Temperature scaling alone
  cannot undo it (it has no intercept); Platt scaling can.

Examples
--------
>>> import numpy as np
>>> from evaluation.calibration import TemperatureScaler, brier_score
>>> rng = np.random.default_rng(0)
>>> p_true = rng.uniform(0.05, 0.95, 5000)
>>> y = (rng.uniform(size=5000) < p_true).astype(int)
>>> overconfident = 1 / (1 + np.exp(-3 * np.log(p_true / (1 - p_true))))
>>> scaler = TemperatureScaler().fit(overconfident, y)
>>> bool(2.5 < scaler.temperature_ < 3.5)
True
>>> bool(brier_score(y, scaler.transform(overconfident)) < brier_score(y, overconfident))
True
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from evaluation.metrics import check_binary_scores

__all__ = ["brier_score", "reliability_curve", "expected_calibration_error", "calibration_sums", "brier_from_sums",
           "ece_from_sums", "fit_temperature", "apply_temperature", "correct_for_class_weight", "PlattScaler",
           "TemperatureScaler"]

#: Risks are clipped to [EPS, 1 - EPS] before taking logits so 0 and 1 stay finite (tiny, so the
#: clipping creates no ties among real risks).
EPS = 1e-15


def _first_row(bad: np.ndarray) -> int:  # first row of a 1-D or 2-D mask with a True entry
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def _check_probabilities(p: np.ndarray, name: str) -> None:
    if len(p) and (p.min() < 0 or p.max() > 1):
        row = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"{name} must be probabilities in [0, 1]; row {row} is {p[row]!r} "
                         "(use PlattScaler(input='score') for scores such as NEWS2)")


def _bin_index(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        return np.clip(np.floor(p * n_bins).astype("int64"), 0, n_bins - 1)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1))) if len(p) else np.array([0.0, 1.0])
        return np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, max(len(edges) - 2, 0))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def calibration_sums(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform", sample_weight=None,
                     groups=None, n_groups: int | None = None) -> np.ndarray:
    """Additive sufficient statistics of the Brier score, the reliability curve and the ECE.

    ``groups`` (int per row, ``0 .. n_groups - 1``, e.g. the stay) gives one row of sums per
    group. A row is ``2 + 3 * n_bins`` numbers: total weight, weighted sum of ``(p - y)**2``, then
    per bin the weights, the weighted sums of ``p`` and of ``y``. Rows add: the sum of two rows
    is the row of the union, which :func:`brier_from_sums` and :func:`ece_from_sums` read.

    Examples
    --------
    >>> calibration_sums([0, 1, 1], [0.2, 0.6, 0.9], n_bins=2).tolist()
    [3.0, 0.21000000000000002, 1.0, 2.0, 0.2, 1.5, 0.0, 2.0]
    """
    y, p, w = check_binary_scores(y_true, y_prob, sample_weight, score_name="y_prob")
    _check_probabilities(p, "y_prob")
    b = _bin_index(p, n_bins, strategy)
    g = np.zeros(len(p), dtype="int64") if groups is None else np.asarray(groups, dtype="int64")
    if g.shape != p.shape:
        raise ValueError(f"groups must have the length of y_prob; got shape {g.shape}")
    n_g = (int(g.max()) + 1 if len(g) else 1) if n_groups is None else int(n_groups)
    cell = g * n_bins + b
    weighted = sample_weight is not None
    # Unweighted sums skip the multiplication by one, so they stay bit-identical to plain sums.
    wp, wy = (w * p, w * y) if weighted else (p, y)
    sq = w * (p - y) ** 2 if weighted else (p - y) ** 2

    def per_bin(values):
        return np.bincount(cell, weights=values, minlength=n_g * n_bins).reshape(n_g, n_bins)

    out = np.column_stack([np.bincount(g, weights=w, minlength=n_g), np.bincount(g, weights=sq, minlength=n_g),
                           per_bin(w), per_bin(wp), per_bin(wy)])
    return out[0] if groups is None else out


def _n_bins_of(sums: np.ndarray) -> int:
    k = sums.shape[-1] - 2
    if k < 3 or k % 3:
        raise ValueError(f"sums must have 2 + 3 * n_bins columns (calibration_sums), got {sums.shape[-1]}")
    return k // 3


def brier_from_sums(sums) -> float | np.ndarray:
    """Brier score from :func:`calibration_sums` rows (any leading shape; NaN without weight)."""
    s = np.asarray(sums, dtype="float64")
    _n_bins_of(s)
    tot = s[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(tot > 0, s[..., 1] / np.where(tot > 0, tot, 1), np.nan)
    return float(out) if out.ndim == 0 else out


def ece_from_sums(sums) -> float | np.ndarray:
    """Expected calibration error from :func:`calibration_sums` rows (any leading shape)."""
    s = np.asarray(sums, dtype="float64")
    n_bins = _n_bins_of(s)
    tot = s[..., 0]
    safe = np.where(tot > 0, tot, 1)
    ece = np.zeros(tot.shape)
    for b in range(n_bins):  # bin by bin, so a vector of resamples is summed in the same order as one
        ece += np.abs(s[..., 2 + n_bins + b] - s[..., 2 + 2 * n_bins + b]) / safe
    out = np.where(tot > 0, ece, np.nan)
    return float(out) if out.ndim == 0 else out


def brier_score(y_true, y_prob, *, sample_weight=None) -> float:
    """Mean squared difference between probability and 0/1 outcome.

    Examples
    --------
    >>> round(brier_score([0, 1], [0.2, 0.6]), 12)
    0.1
    """
    return brier_from_sums(calibration_sums(y_true, y_prob, n_bins=1, sample_weight=sample_weight))


def reliability_curve(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform", sample_weight=None):
    """Mean risk, observed fraction positive and weight per non-empty bin.

    Returns ``(mean_predicted, fraction_positive, counts)``, one entry per non-empty bin in
    increasing order of risk; ``counts`` are integers when unweighted, the bins' weights otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> m, f, n = reliability_curve([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2)
    >>> np.round(m, 6).tolist(), f.tolist(), n.tolist()
    ([0.1, 0.9], [0.0, 1.0], [2, 2])
    """
    s = calibration_sums(y_true, y_prob, n_bins=n_bins, strategy=strategy, sample_weight=sample_weight)
    return reliability_from_sums(s, integer_counts=sample_weight is None)


def reliability_from_sums(sums, *, integer_counts: bool = True):
    """:func:`reliability_curve` from one :func:`calibration_sums` row (sums add up over parts)."""
    s = np.asarray(sums, dtype="float64")
    n_bins = _n_bins_of(s)
    count, sum_p, sum_y = s[2:2 + n_bins], s[2 + n_bins:2 + 2 * n_bins], s[2 + 2 * n_bins:]
    keep = count > 0
    counts = count[keep].astype("int64") if integer_counts else count[keep]
    return sum_p[keep] / count[keep], sum_y[keep] / count[keep], counts


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform",
                               sample_weight=None) -> float:
    """Weight-share-weighted mean absolute gap between mean risk and fraction positive over bins.

    Examples
    --------
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2), 6)
    0.1
    """
    return ece_from_sums(calibration_sums(y_true, y_prob, n_bins=n_bins, strategy=strategy,
                                          sample_weight=sample_weight))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    # Mean Bernoulli negative log-likelihood of logits z, computed stably.
    return float(-np.mean(y * log_expit(z) + (1 - y) * log_expit(-z)))


def fit_temperature(logits, y_true, *, bounds: tuple[float, float] = (0.01, 100.0)) -> float | np.ndarray:
    """Maximum-likelihood temperature ``T`` of ``sigmoid(logits / T)`` against 0/1 outcomes.

    One temperature for 1-D ``logits``, one per column for ``(n, F)`` (e.g. one per CXR finding).
    ``y_true`` has their shape: 0/1, NaN for an unlabelled row (skipped in its column). A column
    whose labelled rows hold one class cannot be calibrated and keeps ``T = 1``. ``T`` is searched
    within ``bounds`` on ``log T``, where the likelihood is closer to quadratic.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0, 2, (4000, 2))
    >>> y = (rng.random((4000, 2)) < 1 / (1 + np.exp(-z))).astype(float)
    >>> np.round(fit_temperature(np.c_[3 * z[:, 0], z[:, 1]], y)).tolist()   # 3x too confident, calibrated
    [3.0, 1.0]
    """
    z = np.asarray(logits, dtype="float64")
    y = np.asarray(y_true, dtype="float64")
    if z.shape != y.shape or z.ndim not in (1, 2):
        raise ValueError(f"logits {z.shape} and y_true {y.shape} must have one shape, (n,) or (n, F)")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    if not np.isfinite(z).all():
        raise ValueError(f"logits are not finite at row {_first_row(~np.isfinite(z))}")
    bad = ~(np.isin(y, (0.0, 1.0)) | np.isnan(y))
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"y_true must be 0/1 (NaN for unlabelled); row {row} is {y[row].tolist()!r}")
    z2, y2 = (z[:, None], y[:, None]) if z.ndim == 1 else (z, y)
    temps = np.ones(z2.shape[1])
    for k in range(z2.shape[1]):
        labelled = ~np.isnan(y2[:, k])
        zk, yk = z2[labelled, k], y2[labelled, k]
        if not len(yk) or yk.min() == yk.max():
            continue
        res = optimize.minimize_scalar(lambda lt: _nll(zk / np.exp(lt), yk), bounds=(np.log(lo), np.log(hi)),
                                       method="bounded", options={"xatol": 1e-6})
        temps[k] = float(np.exp(res.x))
    return float(temps[0]) if z.ndim == 1 else temps


def apply_temperature(logits, temperature) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logits / temperature)`` (one temperature per column broadcasts)."""
    return expit(np.asarray(logits, dtype="float64") / np.asarray(temperature, dtype="float64"))


def correct_for_class_weight(logits, pos_weight) -> np.ndarray:
    """Logits of a model trained with positive-class weight ``pos_weight``, shifted back to the data's prior.

    Weighting the positive class by ``w`` in the likelihood is training on data whose prior odds
    are ``w`` times the real ones, so the model's logits are ``log w`` too high.

    Examples
    --------
    >>> float(correct_for_class_weight(0.0, pos_weight=9.0).round(6))   # 50 % under 9:1 weighting
    -2.197225
    """
    w = np.asarray(pos_weight, dtype="float64")
    if np.any(~(w > 0)):
        raise ValueError(f"pos_weight must be positive, got {pos_weight!r}")
    return np.asarray(logits, dtype="float64") - np.log(w)


class _Recalibrator(BaseEstimator):
    """Shared face of the scalers: ``transform`` gives probabilities, ``predict_proba`` n x 2."""

    _input_kinds = ("probability",)

    def _x(self, risk) -> np.ndarray:
        if self.input not in self._input_kinds:
            raise ValueError(f"input must be one of {self._input_kinds}, got {self.input!r}")
        r = np.asarray(risk, dtype="float64")
        if r.ndim not in (1, 2):
            raise ValueError(f"risk must be 1-D or 2-D; got shape {r.shape}")
        if not np.isfinite(r).all():
            raise ValueError(f"risk is not finite at row {_first_row(~np.isfinite(r))}")
        if self.input == "probability":
            _check_probabilities(r.ravel(), "risk")
            return _logit(r)
        return r

    def fit_transform(self, risk, y) -> np.ndarray:
        """``fit(risk, y).transform(risk)``."""
        return self.fit(risk, y).transform(risk)

    def predict_proba(self, risk) -> np.ndarray:
        """n x 2 array ``[1 - p, p]`` (scikit-learn convention) for 1-D ``risk``."""
        p = self.transform(risk)
        return np.column_stack([1 - p, p])


def _as_1d(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"risk must be 1-D (or n x 1); got shape {x.shape}")
    return x


class PlattScaler(_Recalibrator):
    """Platt scaling: ``p = sigmoid(a * x + b)`` fitted by maximum likelihood.

    Parameters
    ----------
    input : {"probability", "score"}, default "probability"
        ``"probability"``: ``x`` is the logit of the risk (so ``a=1, b=0`` is the identity);
        ``"score"``: ``x`` is the raw score (e.g. NEWS2 points), which turns a score into a
        probability.

    Attributes
    ----------
    coef_, intercept_ : float
        Slope ``a`` and intercept ``b``.
    n_iter_ : int

    Examples
    --------
    >>> scaler = PlattScaler(input="score").fit([0, 1, 2, 3, 4, 5], [0, 0, 1, 0, 1, 1])
    >>> p = scaler.transform([0, 5])
    >>> bool(p[0] < 0.5 < p[1])
    True
    """

    _input_kinds = ("probability", "score")

    def __init__(self, input: str = "probability"):
        self.input = input

    def fit(self, risk, y, sample_weight=None) -> PlattScaler:
        """Fit slope and intercept on risks ``risk`` and 0/1 outcomes ``y``; return self.

        ``sample_weight`` (e.g. the counts of a histogram's cells, :mod:`evaluation.count_sections`)
        weighs each row's log-likelihood; without it the fit is that of the unweighted rows exactly.
        """
        x = _as_1d(self._x(risk))
        y, x, w = check_binary_scores(y, x, sample_weight, score_name="risk")
        if not len(y) or y[w > 0].min() == y[w > 0].max():
            raise ValueError("PlattScaler.fit needs both outcomes (0 and 1) in y")
        if sample_weight is None:
            mean = np.mean
        else:
            def mean(v):
                return float(np.dot(w, v) / w.sum())
        # Standardise x so the two-parameter optimisation is well conditioned on raw scores.
        mu = float(mean(x))
        sd = float(x.std()) if sample_weight is None else float(np.sqrt(mean((x - mu) ** 2)))
        sd = sd or 1.0
        xs = (x - mu) / sd

        def fun(theta):
            z = theta[0] * xs + theta[1]
            g = expit(z) - y
            nll = _nll(z, y) if sample_weight is None else -mean(y * log_expit(z) + (1 - y) * log_expit(-z))
            return nll, np.array([mean(g * xs), mean(g)])

        res = optimize.minimize(fun, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        a, b = res.x
        self.coef_ = float(a / sd)
        self.intercept_ = float(b - a * mu / sd)
        self.n_iter_ = int(res.nit)
        return self

    def transform(self, risk) -> np.ndarray:
        """Calibrated probabilities for ``risk`` (1-D array)."""
        check_is_fitted(self, "coef_")
        return expit(self.coef_ * _as_1d(self._x(risk)) + self.intercept_)


class TemperatureScaler(_Recalibrator):
    """Temperature scaling: ``p = sigmoid(logit(risk) / T)`` with ``T > 0`` fitted by maximum likelihood.

    One parameter per column, so it cannot change the ranking (AUROC is unchanged); ``T > 1``
    softens an over-confident model, ``T < 1`` sharpens an under-confident one. See
    :func:`fit_temperature` for the rules (unlabelled rows, one-class columns).

    Parameters
    ----------
    input : {"probability", "logit"}, default "probability"
        What ``risk`` holds.
    bounds : tuple of float, default (0.01, 100.0)
        Search interval for ``T``.

    Attributes
    ----------
    temperature_ : float, or ndarray of shape (F,) for ``(n, F)`` risks

    Examples
    --------
    >>> TemperatureScaler().fit([0.1, 0.9, 0.2, 0.8], [0, 1, 1, 0]).temperature_ > 1
    True
    >>> TemperatureScaler(input="logit").fit([[2.0, -1.0], [-2.0, 1.0], [1.0, 3.0]],
    ...                                      [[1, 0], [0, 1], [0, 1]]).temperature_.shape
    (2,)
    """

    _input_kinds = ("probability", "logit")

    def __init__(self, input: str = "probability", bounds: tuple[float, float] = (0.01, 100.0)):
        self.input = input
        self.bounds = bounds

    def fit(self, risk, y) -> TemperatureScaler:
        """Fit ``T`` on ``risk`` and 0/1 outcomes ``y`` of the same shape; return self."""
        self.temperature_ = fit_temperature(self._x(risk), y, bounds=self.bounds)
        return self

    def transform(self, risk) -> np.ndarray:
        """Calibrated probabilities for ``risk``, in its shape."""
        check_is_fitted(self, "temperature_")
        return apply_temperature(self._x(risk), self.temperature_)
