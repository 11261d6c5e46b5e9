"""Fixtures for the service tests: a tiny synthetic cohort, a CPN and a GBDT fitted on it, an app.

The models are fitted once per session on 150 synthetic stays (CPN: prior half-lives, 4 EM
iterations; LightGBM: 30 trees), which is enough for alarms and explanations to exist; their
quality is not under test here. The threshold is the 90th percentile of the CPN's risk over the
cohort's new-data screens, so a few stays alarm.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette's TestClient asks for httpx2, which is not needed here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Served:
    cohort_dir: Path
    cpn_dir: Path
    gbdt_dir: Path
    threshold: float
    screens: object

    @property
    def cxr_columns(self) -> list:
        return [c for c in self.screens.columns if c.startswith("cxr_")]


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    from cpn import SepsisCPN
    from ehr.screens import build_screens
    from ehr.synthetic import generate_cohort
    from gbdt import GBDTClassifier

    root = tmp_path_factory.mktemp("served")
    cohort = generate_cohort(150, seed=11)
    cohort.save(root / "cohort")
    screens = build_screens(cohort.events, cohort.stays, cohort.cxr)
    cpn = SepsisCPN("full", half_lives="prior", max_iter=4, max_rows=None).fit(screens)
    cpn.save(root / "models" / "cpn")
    gbdt = GBDTClassifier(n_estimators=30, early_stopping_rounds=None).fit(screens)
    gbdt.save(root / "models" / "gbdt")
    risk = cpn.predict_proba(screens)[:, 1]
    threshold = float(np.quantile(risk[screens["new_data"].to_numpy()], 0.9))
    ops = [{"model": "cpn", "operating_point": "news2>=5", "threshold": threshold}]
    (root / "operating_points.json").write_text(json.dumps(ops))
    # root stands for a run directory: explain --run and serve --run read only complete ones
    (root / "run.json").write_text(json.dumps({"complete": True}))
    return Served(root / "cohort", root / "models" / "cpn", root / "models" / "gbdt", threshold, screens)


@pytest.fixture(scope="session")
def engine(served):
    from sepsiscope.service import build_engine

    return build_engine(served.cpn_dir, compare=[served.gbdt_dir], run_dir=served.cpn_dir.parent.parent)


@pytest.fixture(scope="session")
def app(engine, served):
    from sepsiscope.service import CohortStays, create_app

    return create_app(engine, token=TOKEN, cohort=CohortStays(served.cohort_dir), max_body_bytes=1 << 20)


@pytest.fixture()
def client(app):
    with TestClient(app) as c:
        yield c


def observation(i, code, value, unit, when, *, patient="Patient/p1", encounter="Encounter/4711", **extra):
    """One FHIR Observation entry (LOINC code, UCUM unit)."""
    quantity = {"value": value, "system": "http://unitsofmeasure.org", "code": unit} if unit else {"value": value}
    res = {"resourceType": "Observation", "id": f"o{i}", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
           "subject": {"reference": patient}, "encounter": {"reference": encounter},
           "effectiveDateTime": when.isoformat(), "valueQuantity": quantity}
    res.update(extra)
    return {"fullUrl": f"urn:uuid:o{i}", "resource": res}


VITALS = (("8867-4", 88.0, "/min"), ("8480-6", 118.0, "mm[Hg]"), ("9279-1", 18.0, "/min"),
          ("59408-5", 96.0, "%"), ("8310-5", 37.4, "Cel"))


def bundle_24h(end: dt.datetime | None = None, *, hours: int = 24, encounter_id: str = "4711",
               admit_hours_before: int = 30, shift: float = 0.0) -> dict:
    """A 24-hour Bundle of hourly vitals and two labs, with its Patient and Encounter."""
    end = end or dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
    start = end - dt.timedelta(hours=hours)
    entries = [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female",
                                                "birthDate": "1951-06-01"}},
        {"fullUrl": "urn:uuid:e1", "resource": {
            "resourceType": "Encounter", "id": encounter_id, "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/p1"}, "serviceType": {"text": "ward"},
            "period": {"start": (end - dt.timedelta(hours=admit_hours_before)).isoformat()}}},
    ]
    i = 0
    for h in range(hours):
        t = start + dt.timedelta(hours=h, minutes=20)
        for code, value, unit in VITALS:
            i += 1
            bump = shift * h / hours if code in ("8867-4", "9279-1") else 0.0
            entries.append(observation(i, code, round(value + bump, 1), unit, t,
                                       encounter=f"Encounter/{encounter_id}"))
    for code, value, unit in (("2524-7", 2.4, "mmol/L"), ("2160-0", 1.1, "mg/dL")):
        i += 1
        entries.append(observation(i, code, value, unit, end - dt.timedelta(hours=3),
                                   encounter=f"Encounter/{encounter_id}"))
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(app):
    """The app served by uvicorn on 127.0.0.1 (a free port), in a background thread."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
