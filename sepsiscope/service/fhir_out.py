"""The FHIR R4 ``RiskAssessment`` a score answers with.

``prediction`` holds the probability of sepsis onset within the horizon (``whenRange`` 0 to 48 h
after the screen), ``basis`` references the Observations whose values entered the scored screen
(the latest value of each concept), ``method`` names the model with its version (kind, format
version and the first 12 hex digits of its ``model.json`` sha256), and ``note`` states the alarm
at the operating point. Times are the contract's naive UTC, written with ``+00:00``.

Examples
--------
>>> import pandas as pd
>>> ra = risk_assessment(risk=0.42, screen_time=pd.Timestamp("2026-01-02 08:00"), subject="Patient/7",
...                      encounter=None, basis=["Observation/o1"], model_name="cpn", version="cpn/v1/abc",
...                      threshold=0.5, operating_point="news2>=5", fired=False)
>>> ra["prediction"][0]["probabilityDecimal"], ra["occurrenceDateTime"], ra["basis"]
(0.42, '2026-01-02T08:00:00+00:00', [{'reference': 'Observation/o1'}])
"""

from __future__ import annotations

import pandas as pd

__all__ = ["risk_assessment", "MODEL_SYSTEM"]

#: code system of the method coding: SepsisScope model names
MODEL_SYSTEM = "urn:sepsiscope:model"
_UCUM = "http://unitsofmeasure.org"


def _hours(v: float) -> dict:
    return {"value": v, "unit": "h", "system": _UCUM, "code": "h"}


def _fhir_time(t) -> str:
    return pd.Timestamp(t).tz_localize("UTC").isoformat()


def risk_assessment(*, risk: float, screen_time, subject: str | None, encounter: str | None, basis: list[str],
                    model_name: str, version: str, threshold: float, operating_point: str | None,
                    fired: bool, horizon_h: float = 48.0) -> dict:
    """A ``RiskAssessment`` resource (a dict, valid FHIR R4 JSON)."""
    op = f" (operating point {operating_point})" if operating_point else ""
    out = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": subject} if subject else {"display": "unidentified patient"},
        "occurrenceDateTime": _fhir_time(screen_time),
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": model_name, "version": version,
                               "display": f"SepsisScope {model_name}"}],
                   "text": f"SepsisScope {model_name} {version}"},
        "prediction": [{
            "outcome": {"text": f"sepsis onset within {horizon_h:g} h"},
            "probabilityDecimal": round(float(risk), 6),
            "whenRange": {"low": _hours(0), "high": _hours(horizon_h)},
        }],
        "note": [{"text": f"alarm threshold {threshold:.6g}{op}: "
                          f"{'alarm' if fired else 'no alarm'} at this screen"}],
    }
    if encounter:
        out["encounter"] = {"reference": encounter}
    if basis:
        out["basis"] = [{"reference": b} for b in basis]
    return out
