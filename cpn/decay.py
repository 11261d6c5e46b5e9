"""Time decay of evidence: an old measurement is weaker (soft) evidence.

A measurement of age ``a`` hours with half-life ``h`` has weight ``w = 2**(-a / h)``. Its
likelihood vector is 1 for the observed state and ``1 - w`` for every other state, i.e. the hard
(one-hot) likelihood mixed with the uninformative all-ones vector: ``L = w * onehot + (1 - w)``.
The same mixing decays any soft likelihood (the CXR findings).

Examples
--------
>>> import numpy as np
>>> decay_weight(np.array([0.0, 4.0, np.inf]), 4.0).tolist()
[1.0, 0.5, 0.0]
>>> soft_evidence(np.array([1, -1]), np.array([0.5, 1.0]), 3).tolist()[0]
[0.5, 1.0, 0.5]
"""

from __future__ import annotations

import numpy as np

from .kernel import evidence_loops, split_rows

__all__ = ["decay_weight", "soft_evidence", "decayed_evidence", "decay_likelihood", "cxr_likelihood"]


def decay_weight(age_h, half_life_h) -> np.ndarray:
    """``2**(-age_h / half_life_h)``; weight 1 at age 0, halving every half-life.

    ``half_life_h = inf`` means no decay (weight 1 at any finite age). Negative ages are an error.
    """
    age = np.asarray(age_h, dtype=float)
    if np.any(age < 0):
        raise ValueError("decay_weight: negative age_h (a measurement from the future?)")
    h = np.asarray(half_life_h, dtype=float)
    if np.any(h <= 0):
        raise ValueError("decay_weight: half_life_h must be > 0")
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.exp2(-age / h)
    return np.where(np.isinf(h) & np.isfinite(age), 1.0, w)


def soft_evidence(state, weight, n_states: int, *, out=None) -> np.ndarray:
    """Likelihood rows for observed state indices (``-1`` = no evidence -> NaN row).

    Returns an ``(n, n_states)`` array: 1 at the observed state, ``1 - weight`` elsewhere (written
    into ``out``, a float64 array of that shape, if given).
    """
    state = _indices(state)
    w = np.asarray(weight, dtype=float)
    out = _output(out, len(w), n_states)
    rows = evidence_loops(len(w))
    if rows is not None and not sum(split_rows(lambda a, b: rows.soft_rows(state[a:b], w[a:b], out[a:b]), len(w))):
        return out
    out[:] = (1.0 - w)[:, None]  # (np.repeat is several times slower)
    ok = state >= 0
    out[np.flatnonzero(ok), state[ok]] = 1.0
    out[~ok] = np.nan
    return out


def decayed_evidence(state, age_h, half_life_h: float, n_states: int, *, out=None) -> np.ndarray:
    """:func:`soft_evidence` of measurements ``age_h`` hours old (a missing age counts as 0) with
    the :func:`decay_weight` of ``half_life_h``: the likelihood rows of a concept leaf.

    >>> decayed_evidence(np.array([0, 1, -1]), np.array([4.0, np.nan, 1.0]), 4.0, 2).tolist()
    [[1.0, 0.5], [0.0, 1.0], [nan, nan]]
    """
    state = _indices(state)
    age = np.asarray(age_h, dtype=float)
    out = _output(out, len(state), n_states)
    rows = evidence_loops(len(state)) if half_life_h > 0 else None
    h = float(half_life_h)
    if rows is not None and not sum(split_rows(lambda a, b: rows.decayed_rows(state[a:b], age[a:b], h, out[a:b]),
                                               len(state))):
        return out
    # numpy (and where the loop met a state out of range or a negative age: the errors named)
    weight = decay_weight(np.where(np.isnan(age), 0.0, age), half_life_h)
    return soft_evidence(state, np.nan_to_num(np.where(state < 0, np.nan, weight)), n_states, out=out)


def _output(out, n: int, n_states: int) -> np.ndarray:
    """``out`` checked to be a C-ordered float64 ``(n, n_states)`` array, or a new one."""
    if out is None:
        return np.empty((n, n_states))
    if out.shape != (n, n_states) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-ordered float64 array of shape {(n, n_states)}, "
                         f"got {out.dtype} {out.shape}")
    return out


def _indices(state) -> np.ndarray:
    """State indices as a signed integer array, not copied if they are one already (int8 or int64)."""
    state = np.asarray(state)
    return state if state.dtype in (np.int8, np.int64) else state.astype(np.int64)


def decay_likelihood(likelihood, weight) -> np.ndarray:
    """Mix likelihood rows (max-normalised to 1) with the uninformative vector by ``weight``."""
    lik = np.asarray(likelihood, dtype=float)
    lik = lik / lik.max(axis=1, keepdims=True)
    w = np.asarray(weight, dtype=float)[:, None]
    return w * lik + (1.0 - w)


def cxr_likelihood(p, weight, prior: float = 0.5) -> np.ndarray:
    """Soft evidence ``(absent, present)`` for a CXR finding probability ``p``.

    The imaging model's probability ``p`` was calibrated at finding prevalence ``prior``; its
    likelihood ratio is ``odds(p) / odds(prior)``, which enters the network as the likelihood
    vector ``(1, LR)`` (max-normalised) and is then decayed by ``weight``. NaN ``p`` -> NaN row.

    Examples
    --------
    >>> cxr_likelihood(np.array([0.8]), np.array([1.0])).round(3).tolist()
    [[0.25, 1.0]]
    """
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    lr = (p / (1 - p)) / (prior / (1 - prior))
    lik = np.stack([np.ones_like(lr), lr], axis=1)
    out = decay_likelihood(np.where(np.isnan(lik), 1.0, lik), np.where(np.isnan(weight), 0.0, weight))
    out[np.isnan(np.asarray(p, dtype=float)) | np.isnan(np.asarray(weight, dtype=float))] = np.nan
    return out
