"""Compiled loops that build evidence for large batches (:func:`cpn.kernel.evidence_loops`), with
the numpy code they replace as their reference (the same numbers: ``tests/cpn/test_evidence_loops.py``):

* likelihood rows (:func:`cpn.decay.soft_evidence`, :func:`cpn.decay.decayed_evidence`), each row
  written once, in place of numpy's fill, fancy-indexed assignment and masked NaN rows;
* state indices (:func:`cpn.discretise.concept_states`, :func:`cpn.discretise.band_states`): a count
  of the cuts at or below each value, in one pass, in place of ``searchsorted`` and three more.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def soft_rows(state, weight, out):
    """``out[r]``: 1 at ``state[r]``, ``1 - weight[r]`` elsewhere; a NaN row where ``state[r] < 0``.
    Returns the number of states beyond the row (left unwritten: the caller raises)."""
    n, k = out.shape
    bad = 0
    for r in range(n):
        s = state[r]
        if s >= k:
            bad += 1
            continue
        if s < 0:
            for x in range(k):
                out[r, x] = np.nan
            continue
        f = 1.0 - weight[r]
        for x in range(k):
            out[r, x] = f
        out[r, s] = 1.0
    return bad


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def decayed_rows(state, age, half_life, out):
    """:func:`soft_rows` with the decay weight ``2**(-age / half_life)`` (a missing age counts as 0;
    an infinite half-life keeps weight 1 at any finite age; a NaN weight counts as 0). Returns the
    number of states beyond the row and of negative ages (rows left unwritten: the caller raises)."""
    n, k = out.shape
    no_decay = np.isinf(half_life)
    bad = 0
    for r in range(n):
        s = state[r]
        a = age[r]
        if s >= k or a < 0:
            bad += 1
            continue
        if s < 0:
            for x in range(k):
                out[r, x] = np.nan
            continue
        if a != a:
            a = 0.0
        if no_decay and np.isfinite(a):
            w = 1.0
        else:
            w = np.exp2(-a / half_life)
            if w != w:
                w = 0.0
        f = 1.0 - w
        for x in range(k):
            out[r, x] = f
        out[r, s] = 1.0
    return bad


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def bin_states(values, cuts, lo, hi, out):
    """Per value the number of ``cuts`` (non-decreasing) at or below it, written to ``out``
    (``np.searchsorted(cuts, v, side="right")``; -1 for NaN); returns how many values lie outside
    ``[lo, hi]``. One pass per cut, each a straight loop over the values that vectorises."""
    n = len(values)
    bad = 0
    for r in range(n):
        v = values[r]
        out[r] = 0 if v == v else -1
        bad += 1 if (v < lo) | (v > hi) else 0
    for c in cuts:
        for r in range(n):
            out[r] += 1 if c <= values[r] else 0  # (a NaN compares False: its -1 stays)
    return bad
