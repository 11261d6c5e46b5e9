"""Trends of the carried-forward concept values over the screens of a stay, from the screens table only.

Per concept ``c``: ``c_delta`` (change since the previous measurement, carried forward until the next
one), ``c_min_{w}h`` and ``c_max_{w}h`` (extremes of the carried-forward value over the screens of the
same stay in ``(t - w, t]``) and, with ``counts=True``, ``c_n_{w}h`` (new measurements in that window:
monitoring intensity). With ``baseline_h=B``: ``c_dev_base`` (the value minus the mean of the stay's
values at screens within ``B`` hours of its first screen, fixed after that) and ``c_n_{B}h``. Only rows at or before the screen are used, so the leakage rule of
``ehr.schema`` holds. The tree models' trend features (:mod:`gbdt.features`) and the CPN's derived
evidence leaves (:mod:`cpn.evidence`) both read this one implementation.

Examples
--------
>>> import pandas as pd
>>> s = pd.DataFrame({"stay_id": [1, 1, 1], "screen_time": pd.to_datetime(["2020-01-01 01:00",
...     "2020-01-01 02:00", "2020-01-01 03:00"]), "hr": [80.0, 95.0, 95.0], "hr_age_h": [0.0, 0.0, 1.0]})
>>> t = trend_features(s, ["hr"], counts=True)
>>> t["hr_delta"].tolist(), t["hr_max_6h"].tolist(), t["hr_n_24h"].tolist()
([nan, 15.0, 15.0], [80.0, 95.0, 95.0], [1.0, 2.0, 2.0])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import SchemaError

__all__ = ["TREND_WINDOWS_H", "trend_features", "window_extrema", "trend_names", "baseline_names"]

#: Rolling windows (hours) of the trend features.
TREND_WINDOWS_H: tuple[int, ...] = (6, 24)

# A new measurement shows as a jump in (screen_time - age_h); allow for float round-off.
_SAME_MEASUREMENT_TOL_H = 1e-6


def trend_names(c: str, windows=TREND_WINDOWS_H, counts: bool = False) -> list[str]:
    """The names :func:`trend_features` gives concept ``c``'s trends, in order.

    >>> trend_names("hr", (6,))
    ['hr_delta', 'hr_min_6h', 'hr_max_6h']
    """
    names = [f"{c}_delta"]
    for w in windows:
        names += [f"{c}_min_{w}h", f"{c}_max_{w}h"] + ([f"{c}_n_{w}h"] if counts else [])
    return names


def baseline_names(c: str, baseline_h: int) -> list[str]:
    """The names :func:`trend_features` gives concept ``c``'s baseline view.

    >>> baseline_names("hr", 24)
    ['hr_dev_base', 'hr_n_24h']
    """
    return [f"{c}_dev_base", f"{c}_n_{baseline_h}h"]


def trend_features(screens: pd.DataFrame, concepts: list[str], windows=TREND_WINDOWS_H, *,
                   counts: bool = False, trend: bool = True,
                   baseline_h: int | None = None) -> dict[str, np.ndarray]:
    """Delta and rolling extremes (and, with ``counts``, measurement counts) per concept, computed per
    stay on time-sorted rows; arrays in the row order of ``screens`` (see the module).

    ``trend=False`` leaves out the deltas and extremes; ``baseline_h`` adds the baseline view.

    >>> s = pd.DataFrame({"stay_id": [1, 1, 1], "screen_time": pd.to_datetime(["2020-01-01 01:00",
    ...     "2020-01-02 00:00", "2020-01-03 00:00"]), "hr": [80.0, 100.0, 130.0], "hr_age_h": [0.0, 0.0, 0.0]})
    >>> b = trend_features(s, ["hr"], trend=False, baseline_h=24)
    >>> b["hr_dev_base"].tolist(), b["hr_n_24h"].tolist()
    ([0.0, 10.0, 40.0], [1.0, 2.0, 1.0])
    """
    n = len(screens)
    stay = screens["stay_id"].to_numpy()
    t_ns = screens["screen_time"].to_numpy(dtype="datetime64[ns]").view("int64")
    order = np.lexsort((t_ns, stay))
    stay, t_ns = stay[order], t_ns[order]
    if n > 1:
        dup = (stay[1:] == stay[:-1]) & (t_ns[1:] == t_ns[:-1])
        if dup.any():
            row = int(order[np.flatnonzero(dup)[0] + 1])
            raise SchemaError(f"screens: duplicate (stay_id, screen_time) at row {row}")
    first = np.ones(n, dtype=bool)
    first[1:] = stay[1:] != stay[:-1]
    starts = np.flatnonzero(first)
    stay_start = np.repeat(starts, np.diff(np.append(starts, n)))
    rel_s = (t_ns - t_ns[stay_start]) // 1_000_000_000  # seconds since the stay's first screen
    rank = np.cumsum(first) - 1
    key = (rank.astype("int64") << 32) + rel_s  # sorted: stays in order, time within stay

    values = np.column_stack([screens[c].to_numpy(dtype="float32", na_value=np.nan)[order]
                              for c in concepts])
    ages = np.column_stack([screens[f"{c}_age_h"].to_numpy(dtype="float64", na_value=np.nan)[order]
                            for c in concepts])
    out: dict[str, np.ndarray] = {}

    # Change since the previous value: a new measurement is a row where the measurement time
    # (screen time - age) moved; its delta is carried forward until the next measurement.
    meas_h = rel_s[:, None] / 3600.0 - ages
    prev_meas = np.vstack([np.full((1, len(concepts)), np.nan), meas_h[:-1]])
    prev_val = np.vstack([np.full((1, len(concepts)), np.nan, dtype="float32"), values[:-1]])
    prev_meas[first] = np.nan
    prev_val[first] = np.nan
    new = ~np.isnan(ages) & ~(np.abs(meas_h - prev_meas) <= _SAME_MEASUREMENT_TOL_H)
    step = values - prev_val
    idx = np.where(new, np.arange(n)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    valid = last >= stay_start[:, None]
    delta = np.take_along_axis(step, np.maximum(last, 0), axis=0)
    delta[~valid] = np.nan
    new_rows = new.astype(np.int64) if counts or baseline_h is not None else None
    del meas_h, prev_meas, prev_val, new, step, idx, last, valid

    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    if baseline_h is not None:
        # running per-stay sums: a global cumulative sum minus its value just before the stay's first row
        def stay_cumsum(a):
            cs = np.cumsum(a, axis=0)
            return cs - np.vstack([np.zeros((1, a.shape[1])), cs[:-1]])[stay_start]

        early = ~np.isnan(values) & (rel_s <= baseline_h * 3600)[:, None]
        total = stay_cumsum(np.where(early, values, 0.0).astype("float64"))
        count = stay_cumsum(early.astype("float64"))
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = (values - total / count).astype("float32")  # NaN until the first value
        lo = np.searchsorted(key, key - baseline_h * 3600, side="right")
        cum = np.vstack([np.zeros((1, len(concepts))), np.cumsum(new_rows, axis=0)])
        n_recent = (cum[np.arange(n) + 1] - cum[lo]).astype("float32")  # in (t - B, t]; lo stays in the stay
        for j, c in enumerate(concepts):
            out[f"{c}_dev_base"] = dev[inv, j]
            out[f"{c}_n_{baseline_h}h"] = n_recent[inv, j]
    if not trend:
        return out
    for j, c in enumerate(concepts):
        out[f"{c}_delta"] = delta[inv, j]
    for w in windows:
        lo = np.searchsorted(key, key - w * 3600, side="right")
        mn = window_extrema(values, lo, np.fmin)
        mx = window_extrema(values, lo, np.fmax)
        if counts:  # new measurements in the window: cumulative count now minus before the window
            cum = np.vstack([np.zeros((1, len(concepts))), np.cumsum(new_rows, axis=0)])
            n_new = (cum[np.arange(n) + 1] - cum[lo]).astype("float32")
        for j, c in enumerate(concepts):
            out[f"{c}_min_{w}h"] = mn[inv, j]
            out[f"{c}_max_{w}h"] = mx[inv, j]
            if counts:
                out[f"{c}_n_{w}h"] = n_new[inv, j]
    return out


def window_extrema(values: np.ndarray, lo: np.ndarray, op) -> np.ndarray:
    """``op``-reduce ``values[lo[i] : i + 1]`` for every row ``i`` (NaN-ignoring ``op``).

    A sparse table: level ``j`` holds the reduction over ``2**j`` rows, and any window is the
    reduction of two overlapping power-of-two blocks. ``O(n log w)`` and fully vectorised.
    """
    n = len(values)
    hi = np.arange(n)
    length = hi - lo + 1
    k = np.zeros(n, dtype=np.int64)
    k[length > 0] = np.floor(np.log2(length[length > 0])).astype(np.int64)
    out = np.empty_like(values)
    level = values
    for j in range(int(k.max(initial=0)) + 1):
        if j > 0:
            half = 1 << (j - 1)
            nxt = level.copy()
            nxt[: n - half] = op(level[: n - half], level[half:])
            level = nxt
        rows = np.flatnonzero(k == j)
        if rows.size:
            out[rows] = op(level[lo[rows]], level[hi[rows] - (1 << j) + 1])
    return out
