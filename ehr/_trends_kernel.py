"""The numba kernels behind :func:`ehr.trends.trend_features`, with the numpy path of
:mod:`ehr.trends` as their reference (the same numbers, bit for bit: ``tests/ehr/test_trends.py``).

Rows are taken in (stay, time) order; ``order`` maps a sorted position to the table's row, so the
columns are read and the features written in the table's order without gathering the table first.

* :func:`changes`: one pass per concept for the new measurements, the change since the previous
  one and the deviation from the baseline mean. That mean is the difference of two running sums
  over *all* rows in sorted order (the sum now minus the sum before the stay's first row), as the
  numpy path's one global cumulative sum computes it, so that the two round alike.
* :func:`window_starts`: per window length, each row's window start (two pointers), shared by the
  concepts; :func:`window_counts` counts new measurements in it with a running count.
* the window extremes from a sparse table (:func:`build_levels`, :func:`window_extrema`): two
  overlapping power-of-two blocks per row, as the numpy path's :func:`ehr.trends.window_extrema`,
  in straight loops without branches (a monotonic deque, O(1) per row, was three times slower:
  its pops mispredict).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def relative_seconds(t_ns, first):
    """Whole seconds since the stay's first screen, per sorted row (``first``: a stay starts)."""
    n = len(t_ns)
    rel = np.empty(n, dtype=np.int64)
    t0 = 0
    for i in range(n):
        if first[i]:
            t0 = t_ns[i]
        rel[i] = (t_ns[i] - t0) // 1_000_000_000
    return rel


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def window_starts(rel, first, w):
    """Per sorted row ``i``: the first row ``lo`` of its window ``(t - w, t]`` within the stay, and
    ``k = floor(log2(i - lo + 1))`` (the sparse table's level that covers it in two blocks)."""
    n = len(rel)
    lo = np.empty(n, dtype=np.int64)
    level = np.empty(n, dtype=np.int64)
    start = 0
    k = 0
    for i in range(n):
        r = rel[i]
        if first[i]:
            start = i
        while start <= i and rel[start] <= r - w:
            start += 1
        lo[i] = start
        length = i - start + 1
        while k > 0 and (1 << k) > length:
            k -= 1
        while (2 << k) <= length:
            k += 1
        level[i] = k
    return lo, level


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def changes(rel, first, order, x, age, base_s, tol_h, want_delta, want_dev, new, delta, dev):
    """Where a new measurement arrives (``new``, sorted rows; 1 or 0) and, if wanted, the change
    since the previous measurement (``delta``) and the deviation from the mean of the values within
    ``base_s`` seconds of the stay's first screen (``dev``). ``x`` (float32) and ``age`` (float64,
    hours): the concept's value and age columns in table order, read at ``order[i]``."""
    nan32 = np.float32(np.nan)
    prev_meas = np.nan
    prev_val = nan32
    last = nan32
    g_tot = 0.0  # running sums over every row so far (see the module)
    g_cnt = 0.0
    b_tot = 0.0
    b_cnt = 0.0
    for i in range(len(rel)):
        o = order[i]
        v = x[o]
        a = age[o]
        r = rel[i]
        if first[i]:
            prev_meas = np.nan
            prev_val = nan32
            last = nan32
            b_tot = g_tot
            b_cnt = g_cnt
        # a new measurement: the measurement time (screen time - age) moved since the previous row
        meas = r / 3600.0 - a
        is_new = (a == a) and not (abs(meas - prev_meas) <= tol_h)
        if is_new:
            last = v - prev_val
        new[i] = 1 if is_new else 0
        prev_meas = meas
        prev_val = v
        if want_delta:
            delta[o] = last
        if want_dev:
            if v == v and r <= base_s:
                g_tot += np.float64(v)
                g_cnt += 1.0
            dev[o] = np.float32(np.float64(v) - (g_tot - b_tot) / (g_cnt - b_cnt))


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def window_counts(new, lo, order, cnt):
    """New measurements (``new``, sorted rows) in each row's window ``lo[i] .. i``: a running count,
    less the rows that left the window (``lo`` never moves back; a stay's first row starts its own)."""
    count = 0
    start = 0
    for i in range(len(new)):
        count += new[i]
        while start < lo[i]:
            count -= new[start]
            start += 1
        cnt[order[i]] = count


@numba.njit(inline="always")
def _fmin(a, b):
    return a if (a <= b) | (b != b) else b  # NaN-ignoring, as np.fmin (| rather than or: no branch)


@numba.njit(inline="always")
def _fmax(a, b):
    return a if (a >= b) | (b != b) else b


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def build_levels(xs, n_levels, is_min, levels):
    """The sparse table of the sorted values ``xs``: level ``j`` row ``i`` holds the NaN-ignoring
    minimum (``is_min``) or maximum of ``xs[i : i + 2**j]`` (cut at the end)."""
    n = len(xs)
    for i in range(n):
        levels[0, i] = xs[i]
    for j in range(1, n_levels):
        half = 1 << (j - 1)
        a = levels[j - 1]
        b = levels[j]
        m = max(n - half, 0)
        if is_min:
            for i in range(m):
                b[i] = _fmin(a[i], a[i + half])
        else:
            for i in range(m):
                b[i] = _fmax(a[i], a[i + half])
        for i in range(m, n):
            b[i] = a[i]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def window_extrema(levels, lo, level, order, is_min, out):
    """Each row's window minimum (``is_min``) or maximum from two overlapping blocks of the sparse
    table ``levels`` (``lo``, ``level``: :func:`window_starts`)."""
    if is_min:
        for i in range(len(lo)):
            k = level[i]
            out[order[i]] = _fmin(levels[k, lo[i]], levels[k, i - (1 << k) + 1])
    else:
        for i in range(len(lo)):
            k = level[i]
            out[order[i]] = _fmax(levels[k, lo[i]], levels[k, i - (1 << k) + 1])
