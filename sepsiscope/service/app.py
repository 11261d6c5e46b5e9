"""The FastAPI app: scoring, stay traces and explanations under ``/v1`` (bearer token), the page at ``/``.

Routes
------
``GET  /healthz``                      liveness, no token
``POST /v1/score[?at=TIME]``           a FHIR Bundle or JSON events of one stay -> risk, alarm,
                                       explanation, RiskAssessment (see :mod:`.inputs`)
``GET  /v1/model``                     the models, threshold and operating point
``GET  /v1/stays``                     loaded and posted stays
``GET  /v1/stays/{stay_id}/trace``     risk per screen, alarms, silencing windows, onset
``GET  /v1/stays/{stay_id}/explain?at=TIME``  every model's explanation of one screen
``GET  /openapi.json``                 the schema FastAPI publishes
``GET  /`` and ``/static/*``           the alarm-review page (no build step, no outside requests)

Errors: 400 body is not JSON, 401 token, 404 unknown stay, 413 body too large, 415 not JSON,
422 with ``detail: [{loc, msg, type}]`` naming the field for everything the data contract refuses.
"""

from __future__ import annotations

import gc
import json
import logging
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ehr.sources.readings import ReadingError

from . import jsonio
from .batching import Batcher
from .engine import Engine
from .inputs import ParseCache, to_utc
from .schemas import (SCORE_BODY, ExplainResponse, ModelInfo, Problem, ScoreResponse, StaysResponse,
                      TraceResponse)
from .security import GuardMiddleware, bearer_dependency
from .scoring import Scorer, model_ref, problem_body
from .stays import CohortStays, PostedStays
from .views import explanation_view, iso, trace_view

__all__ = ["create_app"]

log = logging.getLogger("sepsiscope.service")
STATIC = Path(__file__).parent / "static"
_JSON_TYPES = ("application/json", "application/fhir+json")
_ERRORS = {400: {"description": "not JSON"}, 401: {"description": "no or wrong token"},
           413: {"description": "body too large"}, 415: {"description": "not JSON"},
           422: {"model": list[Problem], "description": "the field that is wrong, and why"}}


def _problem(exc: ReadingError) -> JSONResponse:
    return JSONResponse(problem_body(exc), status_code=422)


def create_app(engine: Engine, *, token: str, cohort: CohortStays | None = None, max_body_bytes: int = 2 << 20,
               cors_origins=(), max_posted: int = 1000, max_batch: int = 64, linger_s: float = 0.003) -> FastAPI:
    """The service app for ``engine``; ``/v1`` routes need ``Authorization: Bearer <token>``.

    ``max_batch`` and ``linger_s``: see :class:`.batching.Batcher`."""
    cache = ParseCache()
    posted = PostedStays(max_posted)
    batcher = Batcher(Scorer(engine, posted, cache), max_batch=max_batch, linger=linger_s)

    @asynccontextmanager
    async def lifespan(app):
        # the models' objects live as long as the server: keep the cyclic collector from walking
        # them on every full collection (pauses of tens of ms under load)
        gc.collect()
        gc.freeze()
        # a request allocates thousands of small objects (decoded JSON, readings) that die young:
        # collect the young generation every 50,000 allocations rather than 700, which cuts the
        # collector's share of a request (about 1 ms of 5 on the load benchmark) and its pauses
        threshold = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        yield
        gc.set_threshold(*threshold)
        batcher.close()

    app = FastAPI(title="SepsisScope", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Early sepsis warning with explained alarms (CPN Bayes factors, TreeSHAP).")
    auth = [Depends(bearer_dependency(token))]
    app.state.batcher, app.state.parse_cache, app.state.posted = batcher, cache, posted
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)

    def lookup(stay_id: int):
        for store in (posted, cohort):
            if store is not None and stay_id in store:
                return store
        raise HTTPException(404, f"stay {stay_id} is neither in the loaded cohort nor posted")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/v1/score", dependencies=auth, responses={200: {"model": ScoreResponse}, **_ERRORS},
              openapi_extra={"requestBody": SCORE_BODY})
    async def score(request: Request, at: datetime | None = Query(None, description="score at this time "
                                                                  "(default: the last observation)")):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in _JSON_TYPES:
            raise HTTPException(415, f"content-type must be application/json or application/fhir+json, got "
                                     f"'{ctype or 'none'}'")
        try:
            body, cacheable = jsonio.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if at is not None and to_utc(at) > pd.Timestamp(now) + pd.Timedelta(minutes=5):
            return _problem(ReadingError(("query", "at"), "is in the future", "future_time"))
        status, content = await batcher.submit((body, at, now, cacheable))
        return Response(content, status_code=status, media_type="application/json")

    @app.get("/v1/model", dependencies=auth, response_model=ModelInfo)
    async def model_info():
        return {"primary": model_ref(engine.primary), "compare": [model_ref(m) for m in engine.compare],
                "threshold": engine.threshold, "operating_point": engine.operating_point,
                "silencing_h": engine.silencing_h}

    @app.get("/v1/stays", dependencies=auth, response_model=StaysResponse)
    async def stays(limit: int = Query(1000, ge=1, le=100_000), offset: int = Query(0, ge=0)):
        # posted stays change on the scoring thread: read them there
        rows = await batcher.run(lambda: posted.summary() + (cohort.summary() if cohort is not None else []))
        return {"total": len(rows), "stays": rows[offset: offset + limit]}

    @app.get("/v1/stays/{stay_id}/trace", dependencies=auth, response_model=TraceResponse)
    async def trace(stay_id: int):
        def compute():  # on the scoring thread, where posted stays are added and dropped
            store = lookup(stay_id)
            screens = store.screens(stay_id, engine)
            return store, store.stay(stay_id), screens, engine.trace(screens)

        store, stay, screens, tr = await batcher.run(compute)
        onset = stay.get("onset_time")
        onset_h = None if onset is None or pd.isna(onset) else (onset - stay["admit_time"]).total_seconds() / 3600
        return {"stay_id": stay_id, "source": "posted" if store is posted else "cohort",
                "admit_time": iso(stay["admit_time"]), "onset_time": iso(onset), "onset_hours": onset_h,
                "threshold": engine.threshold, "operating_point": engine.operating_point,
                "silencing_h": engine.silencing_h, "model": model_ref(engine.primary),
                **trace_view(screens, tr, silencing_h=engine.silencing_h)}

    @app.get("/v1/stays/{stay_id}/explain", dependencies=auth, response_model=ExplainResponse)
    async def explain(stay_id: int, at: datetime = Query(..., description="a screen time of the stay")):
        t = to_utc(at)

        def compute():
            screens = lookup(stay_id).screens(stay_id, engine)
            at = np.flatnonzero((screens["screen_time"] == t).to_numpy())
            return screens.iloc[at], (engine.explain(screens, at) if len(at) else None), screens

        rows, models, screens = await batcher.run(compute)
        if models is None:
            span = (f"from {iso(screens['screen_time'].iloc[0])} to {iso(screens['screen_time'].iloc[-1])}"
                    if len(screens) else "none")
            return _problem(ReadingError(("query", "at"), f"{iso(t)} is not a screen of stay {stay_id} "
                                         f"(hourly screens {span})", "not_a_screen"))
        return {"stay_id": stay_id, "screen_time": iso(t),
                "hours_since_admit": float(rows["hours_since_admit"].iloc[0]), "threshold": engine.threshold,
                "explanations": [explanation_view(ex, risk=float(r[0]), model=m.name) for m, ex, r in models]}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_body_schemas(app)
    return app


def _add_body_schemas(app: FastAPI) -> None:
    """Put the JSON-events models that the score body refers to into the OpenAPI components."""
    from .inputs import EventsRequest

    original = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = original()
            defs = EventsRequest.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {})
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return app.openapi_schema

    app.openapi = openapi
