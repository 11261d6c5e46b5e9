"""Trends of the carried-forward concept values over the screens of a stay, from the screens table only.

Per concept ``c``: ``c_delta`` (change since the previous measurement, carried forward until the next
one), ``c_min_{w}h`` and ``c_max_{w}h`` (extremes of the carried-forward value over the screens of the
same stay in ``(t - w, t]``) and, with ``counts=True``, ``c_n_{w}h`` (new measurements in that window:
monitoring intensity). With ``baseline_h=B``: ``c_dev_base`` (the value minus the mean of the stay's
values at screens within ``B`` hours of its first screen, fixed after that) and ``c_n_{B}h``. Only rows at or before the screen are used, so the leakage rule of
``ehr.schema`` holds. The tree models' trend features (:mod:`gbdt.features`) and the CPN's derived
evidence leaves (:mod:`cpn.evidence`) both read this one implementation. It runs as a compiled pass
over the stays (:mod:`ehr._trends_kernel`, where numba is installed) or as vectorised numpy, its
reference; the two give the same numbers. On the 783,819 screens of PhysioNet set A (10 concepts,
windows 6 and 24 h, with counts: 70 features) the compiled pass took 0.57 s of CPU against 3.5 s
for numpy on the (loaded) 2-core development machine, most of it first touching the 220 MB of
output; the 18 features the CPN's derived leaves read (``names``) 0.22 s against 3.2 s.

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

import os

import numpy as np
import pandas as pd

from .schema import SchemaError

__all__ = ["TREND_WINDOWS_H", "SMALL_TABLE", "trend_features", "window_extrema", "trend_names",
           "baseline_names"]

#: Rolling windows (hours) of the trend features.
TREND_WINDOWS_H: tuple[int, ...] = (6, 24)

#: Below this many screens, ``backend="auto"`` takes the numpy path unless the compiled pass is loaded
#: already: importing numba and loading the pass from numba's disk cache costs about a second, more
#: than the numpy path spends on a few thousand screens (the service's bundles, ``explain``).
SMALL_TABLE = 20_000

_COMPILED = None  # ehr._trends_kernel once loaded; False where numba cannot be imported

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
                   counts: bool = False, trend: bool = True, baseline_h: int | None = None,
                   names=None, backend: str = "auto") -> dict[str, np.ndarray]:
    """Delta and rolling extremes (and, with ``counts``, measurement counts) per concept, computed per
    stay on time-sorted rows; float32 arrays in the row order of ``screens`` (see the module).

    ``trend=False`` leaves out the deltas and extremes; ``baseline_h`` adds the baseline view;
    ``names`` keeps only those of the features (the compiled pass then computes only those).
    ``backend``: the compiled pass (``"numba"``, :mod:`ehr._trends_kernel`), the vectorised numpy
    reference (``"numpy"``), or ``"auto"``: the compiled pass where numba is installed, except for a
    table under :data:`SMALL_TABLE` rows while it is not loaded yet. Both give the same numbers.

    >>> s = pd.DataFrame({"stay_id": [1, 1, 1], "screen_time": pd.to_datetime(["2020-01-01 01:00",
    ...     "2020-01-02 00:00", "2020-01-03 00:00"]), "hr": [80.0, 100.0, 130.0], "hr_age_h": [0.0, 0.0, 0.0]})
    >>> b = trend_features(s, ["hr"], trend=False, baseline_h=24)
    >>> b["hr_dev_base"].tolist(), b["hr_n_24h"].tolist()
    ([0.0, 10.0, 40.0], [1.0, 2.0, 1.0])
    >>> list(trend_features(s, ["hr"], counts=True, names=["hr_n_24h", "hr_max_6h"]))
    ['hr_max_6h', 'hr_n_24h']
    """
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    every = _names(concepts, windows, counts, trend, baseline_h)
    if names is not None:
        unknown = sorted(set(names) - set(every))
        if unknown:
            raise ValueError(f"trend_features: unknown feature(s) {unknown} for these concepts and options")
        every = [k for k in every if k in set(names)]
    n = len(screens)
    stay = screens["stay_id"].to_numpy()
    t_ns = screens["screen_time"].to_numpy(dtype="datetime64[ns]").view("int64")
    if n > 1 and _in_order(stay, t_ns):  # the usual table: no sort (and no duplicate either)
        order = np.arange(n)
    else:
        order = np.lexsort((t_ns, stay))
        stay, t_ns = stay[order], t_ns[order]
        if n > 1:
            dup = (stay[1:] == stay[:-1]) & (t_ns[1:] == t_ns[:-1])
            if dup.any():
                row = int(order[np.flatnonzero(dup)[0] + 1])
                raise SchemaError(f"screens: duplicate (stay_id, screen_time) at row {row}")
    first = np.ones(n, dtype=bool)
    first[1:] = stay[1:] != stay[:-1]
    # the compiled pass counts whole seconds: a window of a fraction of a second goes to numpy
    whole = all(float(w * 3600).is_integer() for w in (*windows, baseline_h or 0))
    compiled = _compiled(backend, n) if whole else None
    if compiled is not None:
        out = _trends_compiled(compiled, screens, concepts, windows, order, t_ns, first, every, baseline_h)
    else:
        out = _trends_numpy(screens, concepts, windows, order, t_ns, first, counts=counts, trend=trend,
                            baseline_h=baseline_h)
    return {k: out[k] for k in every}


def _trends_numpy(screens, concepts, windows, order, t_ns, first, *, counts, trend,
                  baseline_h) -> dict[str, np.ndarray]:
    """:func:`trend_features` in vectorised numpy, the compiled pass's reference (``order``,
    ``t_ns``, ``first``: the rows in sorted order, their screen times and where a stay starts)."""
    n = len(order)
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


def _load():
    """:mod:`ehr._trends_kernel` (numba), or None where numba is missing or disabled with
    ``SEPSISCOPE_NO_NUMBA=1`` (the numpy path serves then)."""
    global _COMPILED
    if _COMPILED is None:
        try:
            if os.environ.get("SEPSISCOPE_NO_NUMBA"):
                raise ImportError("disabled by SEPSISCOPE_NO_NUMBA")
            from . import _trends_kernel
        except ImportError:  # pragma: no cover - exercised where numba is absent
            _COMPILED = False
        else:
            _COMPILED = _trends_kernel
    return _COMPILED or None


def _compiled(backend: str, n: int):
    """The compiled pass's module if ``backend`` runs ``n`` screens on it, else None."""
    if backend == "numpy" or (backend == "auto" and not _COMPILED and n < SMALL_TABLE):
        return None
    mod = _load()
    if mod is None and backend == "numba":
        raise RuntimeError("backend='numba' needs numba (pip install numba)")
    return mod


def _in_order(stay: np.ndarray, t_ns: np.ndarray) -> bool:
    """Whether the rows are sorted by stay, then strictly by time (as :func:`np.lexsort` sorts them)."""
    same = stay[1:] == stay[:-1]
    return bool(np.all(same | (stay[1:] > stay[:-1])) and np.all(~same | (t_ns[1:] > t_ns[:-1])))


def _trends_compiled(mod, screens, concepts, windows, order, t_ns, first, names,
                     baseline_h) -> dict[str, np.ndarray]:
    """The features ``names`` of :func:`trend_features` by the compiled pass (other arguments as
    :func:`_trends_numpy`'s)."""
    n = len(order)
    want = set(names)
    identity = n == 0 or (order[0] == 0 and order[-1] == n - 1 and bool(np.all(np.diff(order) == 1)))
    rel = mod.relative_seconds(t_ns, first)
    # window starts (and their sparse-table levels) depend on the screens only: shared by the concepts
    spans = {w: mod.window_starts(rel, first, int(w * 3600)) for w in windows
             if any(f"{c}_{s}_{w}h" in want for c in concepts for s in ("min", "max", "n"))}
    base = None if baseline_h is None else mod.window_starts(rel, first, int(baseline_h * 3600))
    n_levels = 1 + max((int(level.max(initial=0)) for _, level in spans.values()), default=0)
    levels = {}  # "min" / "max" -> (levels, n) float32 sparse table; one buffer for every concept
    none = np.empty(0, dtype=np.float32)
    new = np.empty(n, dtype=np.uint8)  # (also one buffer: fresh memory costs here)
    out: dict[str, np.ndarray] = {}
    for c in concepts:
        if not want.intersection(_names([c], windows, True, True, baseline_h)):
            continue
        x = screens[c].to_numpy(dtype="float32", na_value=np.nan)
        age = screens[f"{c}_age_h"].to_numpy(dtype="float64", na_value=np.nan)
        delta = np.empty(n, dtype=np.float32) if f"{c}_delta" in want else none
        dev = np.empty(n, dtype=np.float32) if f"{c}_dev_base" in want else none
        mod.changes(rel, first, order, x, age, -1 if base is None else int(baseline_h * 3600),
                    _SAME_MEASUREMENT_TOL_H, delta.size > 0, dev.size > 0, new, delta, dev)
        out[f"{c}_delta"], out[f"{c}_dev_base"] = delta, dev
        if base is not None and f"{c}_n_{baseline_h}h" in want:
            out[f"{c}_n_{baseline_h}h"] = np.empty(n, dtype=np.float32)
            mod.window_counts(new, base[0], order, out[f"{c}_n_{baseline_h}h"])
        ops = [s for s in ("min", "max") if any(f"{c}_{s}_{w}h" in want for w in spans)]
        for s in ops:
            buf = levels.setdefault(s, np.empty((n_levels, n), dtype=np.float32))
            mod.build_levels(x if identity else x[order], n_levels, s == "min", buf)
        for w, (lo, level) in spans.items():
            for s in ops:
                if f"{c}_{s}_{w}h" in want:
                    out[f"{c}_{s}_{w}h"] = np.empty(n, dtype=np.float32)
                    mod.window_extrema(levels[s], lo, level, order, s == "min", out[f"{c}_{s}_{w}h"])
            if f"{c}_n_{w}h" in want and f"{c}_n_{w}h" not in out:  # (not the baseline's, same numbers)
                out[f"{c}_n_{w}h"] = np.empty(n, dtype=np.float32)
                mod.window_counts(new, lo, order, out[f"{c}_n_{w}h"])
    return out


def _names(concepts, windows, counts, trend, baseline_h) -> list[str]:
    """:func:`trend_features`'s keys, in its order."""
    names = [f"{c}_{s}" for c in concepts for s in ("dev_base", f"n_{baseline_h}h")] if baseline_h is not None else []
    if trend:
        names += [f"{c}_delta" for c in concepts]
        for w in windows:
            names += [f"{c}_{s}_{w}h" for c in concepts for s in ("min", "max", "n")[: 3 if counts else 2]]
    return list(dict.fromkeys(names))
