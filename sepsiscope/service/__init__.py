"""The scoring service: FastAPI app, FHIR in and out, the alarm-review page (``sepsiscope serve``).

Names are imported on first use, so that ``sepsiscope.service.views`` (used by ``sepsiscope explain``)
does not pull in FastAPI. Readable feature and state names come from :mod:`ehr.state_labels`.
"""

import importlib

__all__ = ["create_app", "build_engine", "Engine", "CohortStays"]
_WHERE = {"create_app": ".app", "build_engine": ".engine", "Engine": ".engine", "CohortStays": ".stays"}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
