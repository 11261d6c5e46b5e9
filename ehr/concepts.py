"""The concept dictionary: one entry per clinical concept, loaded from ``concepts.toml``.

Unit conversion happens at ingest, once, through :func:`convert`; models only ever see
canonical units.

Examples
--------
>>> from ehr.concepts import load_concepts
>>> c = load_concepts()
>>> c["temp"].unit, c["temp"].news2
('Cel', 'temperature')
>>> round(float(convert("temp", 100.4, "[degF]")), 1)
38.0
>>> c["crea"].alternatives[0].unit, round(c["crea"].alternatives[0].max)
('umol/L', 2652)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["Concept", "Alternative", "load_concepts", "concept_names", "convert", "source_map"]


@dataclass(frozen=True)
class Alternative:
    """A unit a source is known to send without saying so (``alternatives`` in ``concepts.toml``).

    ``min``/``max`` bound the values (in ``unit``) that are taken to be in it; ``every_value``
    converts each such value, otherwise only a shift of a large share of a field is converted
    (see :mod:`ehr.sources.plausibility`).
    """

    unit: str
    problem: str
    min: float
    max: float
    every_value: bool = False


@dataclass(frozen=True)
class Concept:
    """One clinical concept (see ``concepts.toml`` for the meaning of each field)."""

    name: str
    description: str
    unit: str
    min: float
    max: float
    kind: str
    loinc: tuple[str, ...]
    news2: str
    cuts: tuple[float, ...]
    half_life_h: float
    sources: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    alternatives: tuple[Alternative, ...] = ()

    def n_states(self) -> int:
        """Number of discrete states the cut-points define."""
        return len(self.cuts) + 1


def _parse(raw: dict, origin: str) -> dict[str, Concept]:
    out: dict[str, Concept] = {}
    required = ("description", "unit", "min", "max", "kind", "cuts", "half_life_h")
    for name, entry in raw.get("concepts", {}).items():
        missing = [k for k in required if k not in entry]
        if missing:
            raise ValueError(f"{origin}: concept '{name}' lacks field(s) {missing}")
        cuts = tuple(float(x) for x in entry["cuts"])
        if list(cuts) != sorted(cuts) or len(set(cuts)) != len(cuts):
            raise ValueError(f"{origin}: concept '{name}' field 'cuts' must be strictly increasing")
        if not entry["min"] < entry["max"]:
            raise ValueError(f"{origin}: concept '{name}' has min >= max")
        out[name] = Concept(
            name=name,
            description=entry["description"],
            unit=entry["unit"],
            min=float(entry["min"]),
            max=float(entry["max"]),
            kind=entry["kind"],
            loinc=tuple(entry.get("loinc", ())),
            news2=entry.get("news2", ""),
            cuts=cuts,
            half_life_h=float(entry["half_life_h"]),
            sources=dict(entry.get("sources", {})),
            units=dict(entry.get("units", {entry["unit"]: 1.0})),
        )
        alts = tuple(_alternative(a, out[name], origin) for a in entry.get("alternatives", ()))
        out[name] = replace(out[name], alternatives=alts)
    return out


def _alternative(raw: dict, c: Concept, origin: str) -> Alternative:
    """An ``alternatives`` entry; without min/max, the plausible range expressed in its unit."""
    unit = raw.get("unit")
    rule = c.units.get(unit)
    if rule is None or "problem" not in raw:
        raise ValueError(f"{origin}: concept '{c.name}': an alternative needs 'problem' and a 'unit' listed in "
                         f"units (got {raw})")
    if "min" in raw and "max" in raw:
        lo, hi = float(raw["min"]), float(raw["max"])
    elif isinstance(rule, (int, float)) and rule > 0:
        lo, hi = c.min / rule, c.max / rule
    else:
        raise ValueError(f"{origin}: concept '{c.name}': alternative unit '{unit}' converts by a rule; give "
                         "its min and max")
    return Alternative(unit, raw["problem"], lo, hi, bool(raw.get("every_value", False)))


@lru_cache(maxsize=4)
def load_concepts(path: str | None = None) -> dict[str, Concept]:
    """Load the concept dictionary (the packaged ``concepts.toml`` unless ``path`` is given)."""
    if path is None:
        text = resources.files("ehr").joinpath("concepts.toml").read_text(encoding="utf-8")
        origin = "ehr/concepts.toml"
    else:
        text = Path(path).read_text(encoding="utf-8")
        origin = str(path)
    return _parse(tomllib.loads(text), origin)


def concept_names() -> list[str]:
    """Concept names in dictionary order (the column order of the screens table)."""
    return list(load_concepts())


def source_map(source: str) -> dict[str, str]:
    """Map a source's code (e.g. a PhysioNet column name) to the concept name."""
    return {c.sources[source]: c.name for c in load_concepts().values() if source in c.sources}


def convert(concept: str, values, unit: str):
    """Convert ``values`` given in ``unit`` to the concept's canonical unit.

    Raises ``ValueError`` naming the concept and unit when the unit is not known.
    """
    c = load_concepts()[concept]
    v = np.asarray(values, dtype="float64")
    if unit in (None, "", c.unit):
        return v
    rule = c.units.get(unit)
    if rule is None:
        raise ValueError(
            f"concept '{concept}': unit '{unit}' is not known (canonical '{c.unit}', "
            f"accepted {sorted(c.units)})"
        )
    if rule == "fahrenheit_to_celsius":
        return (v - 32.0) * 5.0 / 9.0
    return v * float(rule)
