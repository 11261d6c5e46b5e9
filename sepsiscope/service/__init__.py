"""The scoring service: FastAPI app, FHIR in and out, the alarm-review page (``sepsiscope serve``)."""

from .app import create_app
from .engine import Engine, build_engine
from .stays import CohortStays

__all__ = ["create_app", "build_engine", "Engine", "CohortStays"]
