"""Forward-filtered hidden Markov layer over the CPN's hourly posteriors (temporal coherence).

An ablation that was not kept as an option of the CPN (``scripts/cpn_hmm_ablation.py`` measures
it), so it is not among :mod:`cpn`'s public names: import it from :mod:`cpn.temporal`.

The hidden state of a stay at each screen is the time-to-onset target state (``TARGET_STATES``).
It moves from hour to hour by a transition matrix estimated from training labels (consecutive
screens of one stay, Dirichlet prior), and each screen's CPN posterior divided by the CPN's prior
over the target is its emission likelihood (Bayes: ``P(e | s) ∝ P(s | e) / P(s)``). The forward
filter then gives ``P(s_t | e_1..e_t)``: the hourly evidence combined with the stay's past, using
only past and current screens of the same stay.

The filter is written in vectorised numpy (one loop over hour positions, all stays at once)
rather than with pomegranate's ``DenseHMM``: ``DenseHMM.forward`` does accept precomputed
per-step emission log-likelihoods, but only as one padded (stays x length x states) tensor of
equal-length sequences without per-step gaps, which for ~790k screens of stays from 1 to 336 h
means padding and masking around it; the tests check this implementation against
``DenseHMM.forward``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> s = pd.DataFrame({"stay_id": [1, 1, 1, 2, 2], "screen_time": [0.0, 1.0, 2.0, 0.0, 1.0],
...                   "onset_in_h": [3.0, 2.0, 1.0, np.nan, np.nan]})
>>> post = np.full((5, 5), 0.2)
>>> f = TemporalFilter().fit(s, post)
>>> f.transition_.shape, f.filter(s, post).shape
((5, 5), (5, 5))
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .evidence import target_states
from .structure import SEPSIS_STATES, TARGET_STATES

__all__ = ["TemporalFilter"]

logger = logging.getLogger(__name__)

_K = len(TARGET_STATES)
_SEPSIS = np.array([s in SEPSIS_STATES for s in TARGET_STATES])


def _check_posteriors(screens: pd.DataFrame, posteriors, where: str) -> np.ndarray:
    p = np.asarray(posteriors, dtype=float)
    if p.shape != (len(screens), _K):
        raise ValueError(f"{where}: posteriors must have shape ({len(screens)}, {_K}) "
                         f"(screens x TARGET_STATES), got {p.shape}")
    bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)
    if bad.any():
        raise ValueError(f"{where}: posteriors row {int(np.flatnonzero(bad)[0])} is not finite "
                         "and non-negative")
    return p


def _hours(screens: pd.DataFrame, where: str) -> np.ndarray:
    for c in ("stay_id", "screen_time"):
        if c not in screens.columns:
            raise ValueError(f"{where}: screens lack column '{c}'")
    t = screens["screen_time"]
    if pd.api.types.is_datetime64_any_dtype(t):
        return (t - t.min()).dt.total_seconds().to_numpy() / 3600.0
    return t.to_numpy(dtype=float)


def _layout(screens: pd.DataFrame, step_h: float, where: str):
    """Row order by (stay, time), stay codes, position within stay and gap in steps to the
    previous screen of the same stay (rounded; -1 at a stay's first screen)."""
    hours = _hours(screens, where)
    stay = screens["stay_id"].to_numpy()
    order = np.lexsort((hours, stay))
    stay_o, h_o = stay[order], hours[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = stay_o[1:] != stay_o[:-1]
    code = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    pos = np.arange(len(order)) - starts[code]
    gap = np.full(len(order), -1, dtype=np.int64)
    gap[~first] = np.rint(np.diff(h_o)[~first[1:]] / step_h).astype(np.int64)
    return order, code, pos, gap


class TemporalFilter(BaseEstimator):
    """Forward filter of the time-to-onset state over each stay's hourly CPN posteriors.

    Parameters
    ----------
    transition_pseudo_count : float, default 1.0
        Dirichlet pseudo-count added to every cell of the transition counts and of the initial
        state counts (so that no transition is impossible, e.g. under label noise).
    emission_power : float, default 1.0
        Exponent on the emission likelihood. Consecutive hourly posteriors share most of their
        (decayed) evidence, so multiplying them as if independent over-counts it; a power below 1
        tempers that. 1.0 is the plain HMM.
    step_h : float, default 1.0
        Hours per transition step; a gap of k steps between screens applies the matrix k times.

    Attributes
    ----------
    transition_ : ndarray (5, 5)
        ``P(s_t = j | s_{t-1} = i)`` for one step, rows ``TARGET_STATES``.
    initial_ : ndarray (5,)
        State distribution at a stay's first screen.
    prior_ : ndarray (5,)
        The CPN's prior over the target that the posteriors are divided by.
    transition_counts_ : ndarray (5, 5)
        Observed one-step transitions in the training screens.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> s = pd.DataFrame({"stay_id": [1, 1], "screen_time": [0.0, 1.0], "onset_in_h": [49.0, 48.0]})
    >>> f = TemporalFilter().fit(s, np.full((2, 5), 0.2))
    >>> int(f.transition_counts_[4, 3])
    1
    """

    def __init__(self, transition_pseudo_count=1.0, emission_power=1.0, step_h=1.0):
        self.transition_pseudo_count = transition_pseudo_count
        self.emission_power = emission_power
        self.step_h = step_h

    def fit(self, screens: pd.DataFrame, posteriors=None, prior=None, y=None):
        """Estimate transitions and initial states from training labels; store the CPN prior.

        Parameters
        ----------
        screens : DataFrame
            Training screens with ``stay_id``, ``screen_time`` (and ``onset_in_h`` unless ``y``).
        posteriors : array (n, 5), optional
            The CPN's posteriors on these screens; their mean is the prior when ``prior`` is None.
        prior : array (5,), optional
            The CPN's prior over the target (e.g. its marginal ``P(target)``).
        y : array-like, optional
            Hours from screen to onset (NaN = never septic); default ``screens["onset_in_h"]``.

        Returns
        -------
        self
        """
        where = "TemporalFilter.fit"
        if self.transition_pseudo_count < 0 or self.emission_power < 0 or self.step_h <= 0:
            raise ValueError(f"{where}: transition_pseudo_count and emission_power must be >= 0, "
                             "step_h > 0")
        if y is None:
            if "onset_in_h" not in screens.columns:
                raise ValueError(f"{where}: screens lack column 'onset_in_h' and no y was given")
            y = screens["onset_in_h"].to_numpy()
        y = np.asarray(y, dtype=float)
        if len(y) != len(screens):
            raise ValueError(f"{where}: y has {len(y)} rows, screens {len(screens)}")
        order, _, pos, gap = _layout(screens, self.step_h, where)
        st = target_states(y)[order]
        one = np.flatnonzero(gap == 1)  # only exactly one-step pairs estimate the one-step matrix
        counts = np.zeros((_K, _K))
        np.add.at(counts, (st[one - 1], st[one]), 1.0)
        a = counts + self.transition_pseudo_count
        self.transition_counts_ = counts
        self.transition_ = a / a.sum(axis=1, keepdims=True)
        init = np.bincount(st[pos == 0], minlength=_K) + float(self.transition_pseudo_count)
        self.initial_ = init / init.sum()
        if prior is None:
            if posteriors is None:
                raise ValueError(f"{where}: give the CPN's posteriors or its prior")
            prior = _check_posteriors(screens, posteriors, where).mean(axis=0)
        prior = np.asarray(prior, dtype=float)
        if prior.shape != (_K,) or not np.isfinite(prior).all() or (prior <= 0).any():
            raise ValueError(f"{where}: prior must be {_K} positive numbers (TARGET_STATES)")
        self.prior_ = prior / prior.sum()
        logger.info("transition diagonal %s", np.round(np.diag(self.transition_), 4))
        return self

    def filter(self, screens: pd.DataFrame, posteriors) -> np.ndarray:
        """Filtered ``P(state | this and earlier screens of the stay)``, shape (n, 5), row order of
        ``screens``.

        Parameters
        ----------
        screens : DataFrame
            Screens with ``stay_id`` and ``screen_time`` (any row order).
        posteriors : array (n, 5)
            The CPN's per-screen posteriors over ``TARGET_STATES``.
        """
        if not hasattr(self, "transition_"):
            raise RuntimeError("TemporalFilter is not fitted; call fit() first")
        where = "TemporalFilter.filter"
        p = _check_posteriors(screens, posteriors, where)
        out = np.empty_like(p)
        if not len(p):
            return out
        order, code, pos, gap = _layout(screens, self.step_h, where)
        lik = (p[order] / self.prior_) ** self.emission_power
        alpha = np.empty((code[-1] + 1, _K))
        powers = {0: np.eye(_K), 1: self.transition_}
        # rows at each position, in stay order; one vectorised step per hour position
        by_pos = np.argsort(pos, kind="stable")
        bounds = np.searchsorted(pos[by_pos], np.arange(pos.max() + 2))
        for t in range(pos.max() + 1):
            rows = by_pos[bounds[t]:bounds[t + 1]]
            c = code[rows]
            if t == 0:
                pred = np.broadcast_to(self.initial_, (len(rows), _K))
            else:
                g = gap[rows]
                pred = alpha[c] @ self.transition_
                for k in np.unique(g[g != 1]):
                    if k not in powers:
                        powers[k] = np.linalg.matrix_power(self.transition_, int(k))
                    m = g == k
                    pred[m] = alpha[c[m]] @ powers[k]
            a = lik[rows] * pred
            z = a.sum(axis=1, keepdims=True)
            # an all-zero likelihood row carries no usable evidence: keep the prediction
            a = np.where(z > 0, a / np.where(z > 0, z, 1.0), pred)
            alpha[c] = a
            out[order[rows]] = a
        return out

    @staticmethod
    def risk(filtered) -> np.ndarray:
        """``P(onset within 48 h)``: the filtered mass of ``SEPSIS_STATES``, shape (n,)."""
        return np.asarray(filtered)[:, _SEPSIS].sum(axis=1)
