"""Per-finding temperature scaling (Guo et al. 2017) and simple calibration summaries.

A temperature ``T > 0`` rescales a finding's logit, ``p = sigmoid(z / T)``; it is fitted on
validation logits by minimising the binary cross-entropy, so ranking (AUROC) is unchanged.

Examples
--------
>>> import numpy as np
>>> from imaging.calibration import fit_temperatures
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(0, 2, (4000, 1))
>>> y = (rng.random((4000, 1)) < 1 / (1 + np.exp(-z))).astype(float)
>>> t = fit_temperatures(3 * z, y)          # logits three times too confident
>>> bool(abs(t[0] - 3) < 0.4)
True
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

__all__ = ["fit_temperatures", "apply_temperatures", "expected_calibration_error"]


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    # numerically stable mean binary cross-entropy from logits
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperatures(logits, labels, *, bounds: tuple[float, float] = (0.05, 20.0)) -> np.ndarray:
    """Fit one temperature per column of ``logits`` ``(N, F)`` against 0/1 ``labels`` ``(N, F)``.

    A column whose labels are all one class cannot be calibrated and keeps ``T = 1``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.ndim == 1:
        z, y = z[:, None], y[:, None]
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} differ in shape")
    temps = np.ones(z.shape[1])
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    for k in range(z.shape[1]):
        ok = np.isfinite(z[:, k]) & np.isfinite(y[:, k])
        zk, yk = z[ok, k], y[ok, k]
        if len(np.unique(yk)) < 2:
            continue
        res = minimize_scalar(lambda lt: _bce(zk / np.exp(lt), yk), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-5})
        temps[k] = float(np.exp(res.x))
    return temps


def apply_temperatures(logits, temperatures) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logits / T)``."""
    return expit(np.asarray(logits, dtype=np.float64) / np.asarray(temperatures, dtype=np.float64))


def expected_calibration_error(probs, labels, *, n_bins: int = 10) -> float:
    """Expected calibration error of one finding's probabilities (equal-width bins)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)
