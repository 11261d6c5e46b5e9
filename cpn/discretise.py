"""Discretisation: concept values -> states (``concepts.toml`` cuts), context -> bands.

A value ``v`` falls in state ``i`` where ``cuts[i-1] <= v < cuts[i]``. Missing values are no
evidence (state ``-1``), never a state of their own. Values outside the concept's plausible
``[min, max]`` are an error: ingest should have rejected them.

Examples
--------
>>> import numpy as np
>>> concept_states("temp", np.array([36.0, 38.5, np.nan])).tolist()
[1, 3, -1]
>>> band_states(np.array([30.0, 80.0]), (40.0, 60.0, 75.0)).tolist()
[0, 3]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.concepts import load_concepts

from .kernel import evidence_loops, split_rows

__all__ = ["concept_states", "band_states", "category_states", "learn_cuts"]


def concept_states(concept: str, values, *, column: str | None = None, cuts=None,
                   dtype=np.int64) -> np.ndarray:
    """State index per value of ``concept`` (``-1`` for NaN); out-of-range values raise.

    ``cuts`` overrides the concept's ``concepts.toml`` cut-points (a network whose concept leaf has
    learned states, :func:`learn_cuts`). ``dtype``: of the indices (a large batch's evidence is
    built from ``int8`` ones: an eighth of the fresh memory, which costs more than the arithmetic)."""
    concepts = load_concepts()
    if concept not in concepts:
        raise ValueError(f"unknown concept '{concept}' (not in ehr/concepts.toml)")
    c = concepts[concept]
    v = np.asarray(values, dtype=float)
    cuts = np.asarray(c.cuts if cuts is None else cuts, dtype=float)
    dtype = _index_dtype(dtype, cuts)
    loops = _loops(v, cuts)
    if loops is not None:
        s = np.empty(len(v), dtype=dtype)
        lo, hi = float(c.min), float(c.max)
        if not sum(split_rows(lambda a, b: loops.bin_states(v[a:b], cuts, lo, hi, s[a:b]), len(v))):
            return s
    bad = ~np.isnan(v) & ((v < c.min) | (v > c.max))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column '{column or concept}': value {v[row]:g} at row {row} is outside the "
                         f"plausible range [{c.min:g}, {c.max:g}] {c.unit} ({int(bad.sum())} row(s))")
    s = np.searchsorted(cuts, v, side="right")
    return np.where(np.isnan(v), -1, s).astype(dtype)


def _index_dtype(dtype, cuts: np.ndarray):
    """``dtype``, or int64 where it cannot hold every index of ``cuts``."""
    return dtype if np.iinfo(dtype).max > len(cuts) else np.int64


def _loops(v: np.ndarray, cuts: np.ndarray):
    """The compiled loops (:func:`cpn.kernel.evidence_loops`) for a large batch of 1-D values and
    non-decreasing cuts (what ``searchsorted`` assumes), else None (numpy then)."""
    if v.ndim != 1 or cuts.ndim != 1 or not np.all(cuts[1:] >= cuts[:-1]):
        return None
    return evidence_loops(len(v))


def _snap_step(v: np.ndarray) -> float:
    """A round resolution for cut-points of values ``v``: a tenth of the power of ten nearest the
    interquartile range (1 for heart rate, 0.1 for temperature, 10 for platelets)."""
    q25, q75 = np.quantile(v, [0.25, 0.75])
    spread = q75 - q25 if q75 > q25 else float(np.ptp(v))
    return 10.0 ** (np.round(np.log10(spread)) - 1) if spread > 0 else 1.0


def learn_cuts(concept: str, values, n_states: int, *, mode: str = "quantile") -> tuple:
    """Data-driven cut-points for ``concept``: ``n_states`` quantile states of ``values``, snapped.

    Quantiles of the observed (non-NaN) values are rounded to a round resolution (a tenth of the power
    of ten nearest the interquartile range: 1 /min for heart rate, 0.1 °C for temperature), deduplicated
    and kept inside the concept's plausible ``(min, max]``, so a concept whose values pile up
    on few numbers (GCS, FiO2) gets fewer states. ``mode="clinical"`` starts from the clinical
    ``concepts.toml`` cuts and adds a quantile cut only where no clinical cut lies within half the
    median spacing of the quantile cuts (the clinical thresholds stay, the bulk of the data gets
    finer states). Returns the concept's clinical cuts when there are too few values (< 50).

    Learn them on training screens only (``SepsisCPN(evidence_states=...)`` does, inside ``fit``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> learn_cuts("hr", rng.normal(85, 15, 5000), 4)
    (75.0, 85.0, 95.0)
    >>> learn_cuts("temp", rng.normal(37, 0.6, 5000), 3, mode="clinical")
    (35.1, 36.1, 36.8, 37.3, 38.1, 39.1)
    """
    if mode not in ("quantile", "clinical"):
        raise ValueError(f"mode must be 'quantile' or 'clinical', got {mode!r}")
    c = load_concepts()[concept]
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size < 50 or n_states < 2:
        return tuple(float(x) for x in c.cuts)
    step = _snap_step(v)
    q = np.quantile(v, np.arange(1, n_states) / n_states)
    q = np.unique(np.round(np.round(q / step) * step, 10))
    q = q[(q > c.min) & (q <= c.max)]  # a cut at max is the state "exactly max" (GCS 15); at min, empty
    if not q.size:
        return tuple(float(x) for x in c.cuts)
    if mode == "clinical" and len(c.cuts):
        gap = float(np.median(np.diff(q))) if q.size > 1 else step
        out = [float(x) for x in c.cuts]
        for x in q:
            if min(abs(x - y) for y in out) >= gap / 2:
                out.append(float(x))
        q = np.unique(out)
    return tuple(float(x) for x in q)


def band_states(values, cuts, *, dtype=np.int64) -> np.ndarray:
    """Band index of each value for increasing ``cuts`` (``-1`` for NaN; ``dtype`` as for
    :func:`concept_states`)."""
    v = np.asarray(values, dtype=float)
    cuts = np.asarray(cuts, dtype=float)
    dtype = _index_dtype(dtype, cuts)
    loops = _loops(v, cuts)
    if loops is not None:
        s = np.empty(len(v), dtype=dtype)
        split_rows(lambda a, b: loops.bin_states(v[a:b], cuts, -np.inf, np.inf, s[a:b]), len(v))
        return s
    s = np.searchsorted(cuts, v, side="right")
    return np.where(np.isnan(v), -1, s).astype(dtype)


def category_states(values, states) -> np.ndarray:
    """Index of each category in ``states`` (case-insensitive; missing -> ``-1``).

    ``"*ICU"`` names go to ``"ICU"`` and names containing a state as a word ("surgical ward")
    to that state; other unlisted categories go to ``"other"`` when the node has it (so a new
    unit never crashes scoring).
    """
    lower = [s.lower() for s in states]
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    lut = np.empty(len(uniques), dtype=np.int64)
    for j, x in enumerate(uniques):
        key = str(x).strip().lower()
        if key in lower:
            lut[j] = lower.index(key)
        elif key.endswith("icu") and "icu" in lower:
            lut[j] = lower.index("icu")
        elif any(name in key.split() for name in lower):  # e.g. "surgical ward" -> "ward"
            lut[j] = next(i for i, name in enumerate(lower) if name in key.split())
        elif "other" in lower:
            lut[j] = lower.index("other")
        else:
            row = int(np.flatnonzero(codes == j)[0])
            raise ValueError(f"category '{x}' at row {row} is not one of {list(states)}")
    return np.where(codes < 0, -1, lut[np.maximum(codes, 0)] if len(lut) else -1).astype(np.int64)
