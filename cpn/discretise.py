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

__all__ = ["concept_states", "band_states", "category_states"]


def concept_states(concept: str, values, *, column: str | None = None) -> np.ndarray:
    """State index per value of ``concept`` (``-1`` for NaN); out-of-range values raise."""
    concepts = load_concepts()
    if concept not in concepts:
        raise ValueError(f"unknown concept '{concept}' (not in ehr/concepts.toml)")
    c = concepts[concept]
    v = np.asarray(values, dtype=float)
    bad = ~np.isnan(v) & ((v < c.min) | (v > c.max))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column '{column or concept}': value {v[row]:g} at row {row} is outside the "
                         f"plausible range [{c.min:g}, {c.max:g}] {c.unit} ({int(bad.sum())} row(s))")
    s = np.searchsorted(np.asarray(c.cuts), v, side="right")
    return np.where(np.isnan(v), -1, s).astype(np.int64)


def band_states(values, cuts) -> np.ndarray:
    """Band index of each value for increasing ``cuts`` (``-1`` for NaN)."""
    v = np.asarray(values, dtype=float)
    s = np.searchsorted(np.asarray(cuts, dtype=float), v, side="right")
    return np.where(np.isnan(v), -1, s).astype(np.int64)


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
