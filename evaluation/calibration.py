"""Calibration: Platt and temperature scaling, Brier score, ECE and reliability curves.

A recalibrator is fitted on the development split and applied unchanged to the test split
(:func:`calibrate_predictions`); :func:`calibration_table` reports Brier score and expected
calibration error (ECE) before and after. Everything reads the contract tables (``predictions``
and the ``label`` column of ``screens``), never a model.

Definitions (the same ones :class:`evaluation.displays.ReliabilityDisplay` draws):

* Brier score: ``mean((p - y)**2)``.
* Reliability curve: risks are put in ``n_bins`` bins (``strategy="uniform"``: equal-width bins
  on [0, 1], bin ``b`` holds ``b/n <= p < (b+1)/n`` and the last bin also holds ``p == 1``;
  ``strategy="quantile"``: equal-count bins); for each non-empty bin the mean risk, the observed
  fraction of positives and the count.
* ECE: ``sum_b (n_b / N) * |mean risk_b - fraction positive_b|`` over the non-empty bins.

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

import logging

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import expit, log_expit

__all__ = [
    "PlattScaler",
    "TemperatureScaler",
    "brier_score",
    "expected_calibration_error",
    "reliability_curve",
    "calibrate_predictions",
    "calibration_table",
    "join_labels",
]

logger = logging.getLogger(__name__)

#: Risks are clipped to [EPS, 1 - EPS] before taking logits so 0 and 1 stay finite (tiny, so the
#: clipping creates no ties among real risks).
EPS = 1e-15


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype="float64")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or n x 1); got shape {a.shape}")
    if not np.isfinite(a).all():
        row = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name} is not finite at row {row}")
    return a


def _labels(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-D with {n} entries to match the risks; got shape {y.shape}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"y must be 0/1; row {row} is {y[row]!r}")
    return y.astype("float64")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _check_probabilities(p: np.ndarray, name: str) -> None:
    if len(p) and (p.min() < 0 or p.max() > 1):
        row = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise ValueError(f"{name} must be probabilities in [0, 1]; row {row} is {p[row]!r} "
                         "(use PlattScaler(input='score') for scores such as NEWS2)")


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    # Mean Bernoulli negative log-likelihood of logits z, computed stably.
    return float(-np.mean(y * log_expit(z) + (1 - y) * log_expit(-z)))


class PlattScaler:
    """Platt scaling: ``p = sigmoid(a * x + b)`` fitted by maximum likelihood.

    Parameters
    ----------
    input : {"probability", "score"}, default "probability"
        ``"probability"``: ``x`` is the logit of the risk (so ``a=1, b=0`` is the identity);
        ``"score"``: ``x`` is the raw score (e.g. NEWS2 points), which turns a score into a
        probability.

    Attributes
    ----------
    coef_ : float
        Slope ``a``.
    intercept_ : float
        Intercept ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> scaler = PlattScaler(input="score").fit([0, 1, 2, 3, 4, 5], [0, 0, 1, 0, 1, 1])
    >>> p = scaler.transform([0, 5])
    >>> bool(p[0] < 0.5 < p[1])
    True
    """

    def __init__(self, input: str = "probability"):
        self.input = input

    def _x(self, risk) -> np.ndarray:
        if self.input not in ("probability", "score"):
            raise ValueError(f"input must be 'probability' or 'score', got {self.input!r}")
        r = _as_1d(risk, "risk")
        if self.input == "probability":
            _check_probabilities(r, "risk")
            return _logit(r)
        return r

    def fit(self, risk, y) -> "PlattScaler":
        """Fit slope and intercept on risks ``risk`` and 0/1 outcomes ``y``; return self."""
        x = self._x(risk)
        y = _labels(y, len(x))
        if y.min() == y.max():
            raise ValueError("PlattScaler.fit needs both outcomes (0 and 1) in y")
        # Standardise x so the two-parameter optimisation is well conditioned on raw scores.
        mu, sd = float(x.mean()), float(x.std()) or 1.0
        xs = (x - mu) / sd

        def fun(theta):
            z = theta[0] * xs + theta[1]
            g = expit(z) - y
            return _nll(z, y), np.array([np.mean(g * xs), np.mean(g)])

        res = optimize.minimize(fun, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        a, b = res.x
        self.coef_ = float(a / sd)
        self.intercept_ = float(b - a * mu / sd)
        self.n_iter_ = int(res.nit)
        return self

    def transform(self, risk) -> np.ndarray:
        """Calibrated probabilities for ``risk`` (1-D array)."""
        self._check_fitted()
        return expit(self.coef_ * self._x(risk) + self.intercept_)

    def fit_transform(self, risk, y) -> np.ndarray:
        return self.fit(risk, y).transform(risk)

    def predict_proba(self, risk) -> np.ndarray:
        """n x 2 array ``[1 - p, p]`` (scikit-learn convention)."""
        p = self.transform(risk)
        return np.column_stack([1 - p, p])

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit first")

    def get_params(self, deep: bool = True) -> dict:
        return {"input": self.input}

    def set_params(self, **params) -> "PlattScaler":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"PlattScaler(input={self.input!r})"


class TemperatureScaler:
    """Temperature scaling: ``p = sigmoid(logit(risk) / T)`` with ``T > 0`` fitted by maximum likelihood.

    One parameter, so it cannot change the ranking (AUROC is unchanged); ``T > 1`` softens an
    over-confident model, ``T < 1`` sharpens an under-confident one.

    Parameters
    ----------
    bounds : tuple of float, default (0.01, 100.0)
        Search interval for ``T``.

    Attributes
    ----------
    temperature_ : float

    Examples
    --------
    >>> TemperatureScaler().fit([0.1, 0.9, 0.2, 0.8], [0, 1, 1, 0]).temperature_ > 1
    True
    """

    def __init__(self, bounds: tuple[float, float] = (0.01, 100.0)):
        self.bounds = bounds

    def fit(self, risk, y) -> "TemperatureScaler":
        """Fit ``T`` on probabilities ``risk`` and 0/1 outcomes ``y``; return self."""
        r = _as_1d(risk, "risk")
        _check_probabilities(r, "risk")
        y = _labels(y, len(r))
        z = _logit(r)
        lo, hi = self.bounds
        if not 0 < lo < hi:
            raise ValueError(f"bounds must satisfy 0 < low < high, got {self.bounds}")
        # Optimise over log T: the likelihood is much closer to quadratic there.
        res = optimize.minimize_scalar(lambda lt: _nll(z / np.exp(lt), y),
                                       bounds=(np.log(lo), np.log(hi)), method="bounded",
                                       options={"xatol": 1e-6})
        self.temperature_ = float(np.exp(res.x))
        return self

    def transform(self, risk) -> np.ndarray:
        """Calibrated probabilities for ``risk`` (1-D array)."""
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaler is not fitted; call fit first")
        r = _as_1d(risk, "risk")
        _check_probabilities(r, "risk")
        return expit(_logit(r) / self.temperature_)

    def fit_transform(self, risk, y) -> np.ndarray:
        return self.fit(risk, y).transform(risk)

    def predict_proba(self, risk) -> np.ndarray:
        p = self.transform(risk)
        return np.column_stack([1 - p, p])

    def get_params(self, deep: bool = True) -> dict:
        return {"bounds": self.bounds}

    def set_params(self, **params) -> "TemperatureScaler":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"TemperatureScaler(bounds={self.bounds!r})"


def brier_score(y_true, y_prob) -> float:
    """Mean squared difference between probability and 0/1 outcome.

    Examples
    --------
    >>> brier_score([0, 1], [0.2, 0.6])
    0.1
    """
    p = _as_1d(y_prob, "y_prob")
    y = _labels(y_true, len(p))
    if not len(p):
        return float("nan")
    return float(round(np.mean((p - y) ** 2), 15))


def reliability_curve(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform"):
    """Mean risk, observed fraction positive and count per non-empty bin.

    Returns
    -------
    mean_predicted, fraction_positive, counts : ndarray
        One entry per non-empty bin, in increasing order of risk.

    Examples
    --------
    >>> import numpy as np
    >>> m, f, n = reliability_curve([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2)
    >>> np.round(m, 6).tolist(), f.tolist(), n.tolist()
    ([0.1, 0.9], [0.0, 1.0], [2, 2])
    """
    p = _as_1d(y_prob, "y_prob")
    _check_probabilities(p, "y_prob")
    y = _labels(y_true, len(p))
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        idx = np.clip(np.floor(p * n_bins).astype("int64"), 0, n_bins - 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1))) if len(p) else np.array([0.0, 1.0])
        idx = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, max(len(edges) - 2, 0))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    keep = counts > 0
    return sum_p[keep] / counts[keep], sum_y[keep] / counts[keep], counts[keep]


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Count-weighted mean absolute gap between mean risk and fraction positive over bins.

    Examples
    --------
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2), 6)
    0.1
    """
    m, f, n = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    if not n.sum():
        return float("nan")
    return float(np.sum(n * np.abs(m - f)) / n.sum())


def join_labels(predictions: pd.DataFrame, screens: pd.DataFrame, *, label: str = "label") -> pd.DataFrame:
    """Predictions with the screens' ``label`` column joined on (``stay_id``, ``screen_time``).

    Raises ``ValueError`` naming the first prediction row whose screen is not in ``screens``.
    """
    for col in ("stay_id", "screen_time", "model", "risk"):
        if col not in predictions.columns:
            raise ValueError(f"predictions: missing column '{col}'")
    for col in ("stay_id", "screen_time", label):
        if col not in screens.columns:
            raise ValueError(f"screens: missing column '{col}'")
    lab = screens[["stay_id", "screen_time", label]]
    if lab.duplicated(["stay_id", "screen_time"]).any():
        row = int(np.flatnonzero(lab.duplicated(["stay_id", "screen_time"]).to_numpy())[0])
        raise ValueError(f"screens: duplicate (stay_id, screen_time) at row {row}")
    out = predictions.merge(lab.rename(columns={label: "_y"}), on=["stay_id", "screen_time"],
                            how="left", validate="many_to_one")
    miss = out["_y"].isna().to_numpy()
    if miss.any():
        row = int(np.flatnonzero(miss)[0])
        raise ValueError(f"predictions: row {row} (stay_id={out['stay_id'].iloc[row]}, "
                         f"screen_time={out['screen_time'].iloc[row]}) has no screen with a label "
                         f"({int(miss.sum())} such row(s))")
    out["y"] = out.pop("_y").astype("int64")
    return out


def _make_scaler(method: str):
    if method == "platt":
        return PlattScaler(input="probability")
    if method == "platt-score":
        return PlattScaler(input="score")
    if method == "temperature":
        return TemperatureScaler()
    raise ValueError(f"method must be 'platt', 'platt-score' or 'temperature', got {method!r}")


def calibrate_predictions(predictions: pd.DataFrame, screens: pd.DataFrame, *, method: str = "platt",
                          fit_split: str = "dev", models=None, suffix: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Recalibrate each model's risks with a scaler fitted on the ``fit_split`` rows only.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` (needs a ``split`` column).
    screens : DataFrame
        Screens with the ``label`` column.
    method : {"platt", "temperature", "platt-score"}
        ``"platt-score"`` fits on raw scores (use it for NEWS2).
    fit_split : str, default "dev"
        Split the scaler is fitted on; it is applied unchanged to every row.
    models : list of str, optional
        Models to recalibrate (default: all whose risks lie in [0, 1], or all for "platt-score").
    suffix : str, optional
        When given, calibrated rows get ``model + suffix`` and are appended to the original rows;
        otherwise ``risk`` is replaced in place.

    Returns
    -------
    predictions : DataFrame
    scalers : dict
        Fitted scaler per model.
    """
    if "split" not in predictions.columns:
        raise ValueError("predictions: missing column 'split'; calibration is fitted on one split")
    data = join_labels(predictions, screens)
    if models is None:
        rng = data.groupby("model")["risk"].agg(["min", "max"])
        ok = rng.index if method == "platt-score" else rng.index[(rng["min"] >= 0) & (rng["max"] <= 1)]
        models = list(ok)
    scalers, parts = {}, []
    for model in models:
        sel = (data["model"] == model).to_numpy()
        if not sel.any():
            raise ValueError(f"predictions: model '{model}' has no rows")
        fit_rows = sel & (data["split"] == fit_split).to_numpy()
        if not fit_rows.any():
            raise ValueError(f"predictions: model '{model}' has no rows in split '{fit_split}' to fit on")
        scaler = _make_scaler(method).fit(data["risk"].to_numpy()[fit_rows], data["y"].to_numpy()[fit_rows])
        scalers[model] = scaler
        part = predictions.loc[sel].copy()
        part["risk"] = scaler.transform(part["risk"].to_numpy())
        if suffix:
            part["model"] = model + suffix
        parts.append(part)
    if suffix:
        out = pd.concat([predictions, *parts], ignore_index=True)
    else:
        out = predictions.copy()
        for part in parts:
            out.loc[part.index, "risk"] = part["risk"]
    return out, scalers


def calibration_table(predictions: pd.DataFrame, screens: pd.DataFrame, *, method: str = "platt",
                      fit_split: str = "dev", eval_split: str | None = "test", n_bins: int = 10,
                      models=None) -> pd.DataFrame:
    """Brier score and ECE before and after recalibration, per model, on ``eval_split``.

    Models whose risks are not probabilities are skipped unless ``method="platt-score"``.

    Returns
    -------
    DataFrame
        Columns ``model, method, n, prevalence, brier_before, brier_after, ece_before,
        ece_after`` and the fitted parameter (``coef``/``intercept`` or ``temperature``).
    """
    calibrated, scalers = calibrate_predictions(predictions, screens, method=method,
                                                fit_split=fit_split, models=models)
    before = join_labels(predictions, screens)
    # A left merge keeps the row order, so positions line up with ``calibrated``.
    after_risk = calibrated["risk"].to_numpy()
    rows = []
    for model, scaler in scalers.items():
        sel = (before["model"] == model).to_numpy()
        if eval_split is not None:
            sel &= (before["split"] == eval_split).to_numpy()
        y = before["y"].to_numpy()[sel]
        p0 = before["risk"].to_numpy()[sel]
        p1 = after_risk[sel]
        row = {"model": model, "method": method, "n": int(sel.sum()),
               "prevalence": float(y.mean()) if len(y) else float("nan"),
               "brier_before": brier_score(y, p0) if method != "platt-score" else float("nan"),
               "brier_after": brier_score(y, p1),
               "ece_before": (expected_calibration_error(y, p0, n_bins=n_bins) if method != "platt-score"
                              else float("nan")),
               "ece_after": expected_calibration_error(y, p1, n_bins=n_bins)}
        if isinstance(scaler, TemperatureScaler):
            row["temperature"] = scaler.temperature_
        else:
            row["coef"], row["intercept"] = scaler.coef_, scaler.intercept_
        rows.append(row)
    return pd.DataFrame(rows)
