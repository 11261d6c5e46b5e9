"""Readable names for what an explanation shows: features, units and discretised states.

The CPN names its states so that they survive XMLBIF (``36p1to38p1``, ``lt35p1``, ``ge39p1``:
``p`` for the decimal point, ``m`` for minus); a clinician reads ``36.1 to <38.1 °C``. A state
``AtoB`` holds values ``A <= v < B`` (the cut-points of ``ehr/concepts.toml``).

Examples
--------
>>> state_label("temp", "36p1to38p1"), state_label("temp", "lt35p1"), state_label("temp", "ge39p1")
('36.1 to <38.1 °C', '<35.1 °C', '≥39.1 °C')
>>> state_label("base_excess", "ltm6"), state_label("on_o2", "ge0p5"), state_label("acvpu", "lt1")
('<-6 mmol/L', 'on oxygen', 'alert')
>>> state_label("hours_band", "6to24"), state_label("lact_tested_24h", "yes")
('6 to <24 h', 'yes')
>>> feature_label("lact_tested_24h"), feature_label("bun"), display_unit("10*3/uL")
('Lactate tested in the last 24 h', 'Urea nitrogen (BUN)', '×10³/µL')
"""

from __future__ import annotations

import re
from functools import lru_cache

from ehr.concepts import load_concepts

__all__ = ["state_label", "feature_label", "display_unit", "feature_unit"]

#: UCUM codes as printed for people
_UNITS = {"Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg", "10*3/uL": "×10³/µL", "umol/L": "µmol/L",
          "{score}": "", "1": "", "[pH]": "", "/min": "/min"}
_CONTEXT = {
    "age_band": ("Age", "y"),
    "hours_band": ("Hours since admission", "h"),
    "department": ("Department", ""),
    "xray_taken_24h": ("Chest X-ray taken in the last 24 h", ""),
    "cxr_age_h": ("Age of the last chest X-ray", "h"),
    "hours_since_admit": ("Hours since admission", "h"),
    "age": ("Age", "y"),
    "sex": ("Sex", ""),
}
_TESTED = {"lact": "Lactate", "bloodgas": "Blood gas"}
_FLAGS = {"on_o2": ("on air", "on oxygen"), "acvpu": ("alert", "new confusion, voice, pain or unresponsive")}
_BOUND = re.compile(r"^(lt|ge)?(m?\d+(?:p\d+)?)(?:to(m?\d+(?:p\d+)?))?$")


def display_unit(ucum: str | None) -> str:
    """A UCUM code as printed for people (``Cel`` -> ``°C``; dimensionless -> ``""``)."""
    if ucum is None:
        return ""
    return _UNITS.get(ucum, ucum)


@lru_cache(maxsize=4096)
def feature_unit(feature: str) -> str:
    """The display unit of a feature's values (concepts: their canonical unit)."""
    c = load_concepts().get(feature)
    if c is not None:
        return display_unit(c.unit)
    if feature in _CONTEXT:
        return _CONTEXT[feature][1]
    if feature.startswith("cxr_"):
        return "probability"
    return ""


@lru_cache(maxsize=4096)
def feature_label(feature: str) -> str:
    """A readable name: the concept's description, or the name of a context or testing node."""
    c = load_concepts().get(feature)
    if c is not None:
        return c.description.split(";")[0]  # the dictionary's notes follow a semicolon
    if feature in _CONTEXT:
        return _CONTEXT[feature][0]
    if feature.endswith("_tested_24h"):
        what = feature[: -len("_tested_24h")]
        return f"{_TESTED.get(what, what.replace('_', ' ').capitalize())} tested in the last 24 h"
    if feature.startswith("cxr_"):
        return f"Chest X-ray: {feature[4:]}"
    return feature.replace("_", " ")


def _number(token: str) -> str:
    return token.replace("m", "-").replace("p", ".")


@lru_cache(maxsize=4096)
def state_label(feature: str, state) -> str:
    """``36p1to38p1`` of ``temp`` -> ``36.1 to <38.1 °C``; other states are returned as they are."""
    if state is None or state != state:  # None or NaN
        return ""
    state = str(state)
    if feature in _FLAGS and state in ("lt0p5", "lt1"):
        return _FLAGS[feature][0]
    if feature in _FLAGS and state in ("ge0p5", "ge1"):
        return _FLAGS[feature][1]
    m = _BOUND.match(state)
    if m is None:
        return state
    unit = feature_unit(feature)
    unit = f" {unit}" if unit and unit != "probability" else ""
    side, low, high = m.groups()
    if side == "lt" and high is None:
        return f"<{_number(low)}{unit}"
    if side == "ge" and high is None:
        return f"≥{_number(low)}{unit}"
    if side is None and high is not None:
        return f"{_number(low)} to <{_number(high)}{unit}"
    return state
