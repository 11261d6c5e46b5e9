"""Readable names for model features, their units and their discrete states (report, alarm-review page).

The CPN names the states of a concept after its cut-points in ``ehr/concepts.toml``
(``cpn.structure.state_names``: ``lt35p1``, ``35p1to38p1``, ``ge38p1``; ``.`` is written ``p`` and
``-`` is written ``m``). :func:`state_label` turns such a name back into the clinical range with
the concept's unit: ``< 35.1 °C``, ``35.1–38.0 °C``, ``≥ 38.1 °C``. An interval ``[a, b)`` is
shown as ``a`` to ``b`` minus one step of the cut-points' precision, the way NEWS2 and SOFA
tables write their bands. Context and missingness leaves (``age_band``, ``hours_band``,
``*_tested_24h``, ``cxr_*``) get words instead of codes. Any other state is returned unchanged.

This is the one place that reads state names for people: the HTML report, the service's
alarm-review page and ``sepsiscope explain`` all call it.

Examples
--------
>>> state_label("temp", "36p1to38p1"), state_label("temp", "lt35p1"), state_label("hr", "ge131")
('36.1–38.0 °C', '< 35.1 °C', '≥ 131 /min')
>>> state_label("base_excess", "m6tom2"), state_label("age_band", "60to75")
('-6 to -3 mmol/L', '60–74 years')
>>> feature_label("lact_tested_24h"), state_label("lact_tested_24h", "yes"), state_label("on_o2", "ge0p5")
('Lactate measured in the last 24 h', 'yes', 'on oxygen')
"""

from __future__ import annotations

import re
from functools import lru_cache

from ehr.concepts import load_concepts

__all__ = ["display_unit", "feature_unit", "feature_label", "state_label", "parse_state"]

#: UCUM codes of concepts.toml as people write them ('' for dimensionless scores and fractions)
UNIT_DISPLAY = {"Cel": "°C", "mm[Hg]": "mmHg", "10*3/uL": "×10³/µL", "{score}": "", "1": "", "[pH]": "",
                "umol/L": "µmol/L", "ug/L": "µg/L"}

#: two-state concepts whose states read as words (below / above their one cut-point)
_BINARY = {"on_o2": ("on air", "on oxygen"), "acvpu": ("alert", "new confusion, voice, pain or unresponsive")}

#: features that are not concepts: label and unit
_OTHER = {
    "age_band": ("Age", "years"), "age": ("Age", "years"),
    "hours_band": ("Time since admission", "h"), "hours_since_admit": ("Time since admission", "h"),
    "department": ("Department", ""), "sex": ("Sex", ""), "bloodgas": ("Blood gas", ""),
    "xray": ("Chest X-ray", ""), "cxr": ("Chest X-ray", ""), "cxr_age_h": ("Age of the last chest X-ray", "h"),
}

_NUM = r"m?\d+(?:p\d+)?"
_LT, _BETWEEN, _GE = (re.compile(rf"^lt({_NUM})$"), re.compile(rf"^({_NUM})to({_NUM})$"),
                      re.compile(rf"^ge({_NUM})$"))
_TESTED = re.compile(r"^(?P<base>.+?)_(?:tested|taken)_(?P<hours>\d+)h$")


def _number(token: str) -> float:
    sign = -1.0 if token.startswith("m") else 1.0
    return sign * float(token.lstrip("m").replace("p", "."))


def _decimals(x: float) -> int:
    text = f"{x:g}"
    return len(text.split(".")[1]) if "." in text else 0


@lru_cache(maxsize=1)
def _concepts():
    return load_concepts()


def display_unit(ucum: str | None) -> str:
    """A UCUM code as people write it (``Cel`` -> ``°C``; dimensionless -> '').

    >>> display_unit("Cel"), display_unit("mm[Hg]"), display_unit("{score}"), display_unit(None)
    ('°C', 'mmHg', '', '')
    """
    return "" if ucum is None else UNIT_DISPLAY.get(ucum, ucum)


@lru_cache(maxsize=4096)
def feature_unit(feature: str) -> str:
    """The unit of a feature's values as people write it (``°C``, ``mmHg``); '' when it has none.

    >>> feature_unit("temp"), feature_unit("sbp"), feature_unit("gcs"), feature_unit("age_band")
    ('°C', 'mmHg', '', 'years')
    """
    c = _concepts().get(feature)
    if c is not None:
        return display_unit(c.unit)
    if feature.startswith("cxr_") and feature != "cxr_age_h":
        return "probability"
    return _OTHER.get(feature, ("", ""))[1]


def feature_label(feature: str) -> str:
    """A feature's name for people: the concept's description, or words for context/missingness leaves.

    >>> feature_label("temp"), feature_label("bloodgas_tested_24h"), feature_label("cxr_consolidation")
    ('Body temperature', 'Blood gas measured in the last 24 h', 'CXR finding: consolidation')
    """
    c = _concepts().get(feature)
    if c is not None:
        return c.description.split(";")[0]  # the dictionary's notes follow a semicolon
    if feature in _OTHER:
        return _OTHER[feature][0]
    m = _TESTED.match(feature)
    if m:
        base = m.group("base")
        return f"{feature_label(base)} {'taken' if base in ('xray', 'cxr') else 'measured'} in the last {m.group('hours')} h"
    if feature.startswith("cxr_"):
        return f"CXR finding: {feature[4:].replace('_', ' ')}"
    return feature.replace("_", " ")


def parse_state(state: str):
    """``(low, high)`` bounds of a cut-point state name (``None`` for an open end), else None.

    >>> parse_state("35p1to38p1"), parse_state("lt7p25"), parse_state("ge0"), parse_state("yes")
    ((35.1, 38.1), (None, 7.25), (0.0, None), None)
    """
    for pattern, build in ((_BETWEEN, lambda m: (_number(m[1]), _number(m[2]))),
                           (_LT, lambda m: (None, _number(m[1]))), (_GE, lambda m: (_number(m[1]), None))):
        m = pattern.match(str(state))
        if m:
            return build(m)
    return None


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


@lru_cache(maxsize=4096)
def state_label(feature: str, state) -> str:
    """A discrete state as a clinical range with its unit, e.g. ``36.1–38.0 °C`` for ``temp=36p1to38p1``.

    The precision comes from the concept's cut-points in ``concepts.toml`` (else from the numbers
    in the state name). Non-numeric states are returned as they are (``MICU``, ``yes``).
    """
    if state is None or (isinstance(state, float) and state != state):
        return ""
    state = str(state)
    bounds = parse_state(state)
    if bounds is None:
        return state
    c = _concepts().get(feature)
    if feature in _BINARY and len(c.cuts) == 1:
        return _BINARY[feature][0 if bounds[0] is None else 1]
    if c is not None and c.kind == "flag":  # a 0/1 concept: below or above its one cut
        return "no" if bounds[0] is None else "yes"
    numbers = [b for b in bounds if b is not None]
    cuts = list(c.cuts) if c is not None and c.cuts else numbers
    dec = max(_decimals(x) for x in cuts + numbers)
    unit = feature_unit(feature)
    tail = f" {unit}" if unit and unit != "probability" else ""
    low, high = bounds
    if low is None:
        return f"< {_fmt(high, dec)}{tail}"
    if high is None:
        return f"≥ {_fmt(low, dec)}{tail}"
    top = high - 10.0 ** -dec
    sep = " to " if min(low, top) < 0 else "–"
    return f"{_fmt(low, dec)}{sep}{_fmt(top, dec)}{tail}"
