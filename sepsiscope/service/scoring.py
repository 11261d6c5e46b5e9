"""``POST /v1/score`` from decoded body to encoded answer, for a batch of requests at once.

:class:`Scorer` runs on the scoring thread (see :mod:`.batching`): it parses each request
(:func:`.inputs.parse_body`; a refused request becomes its own 422, the others go on), scores all
the parsed stays in one :meth:`Engine.score`, keeps them for the page (:class:`.stays.PostedStays`)
and encodes each answer. Parsing here rather than on the event loop keeps the loop free to read
the next requests, so that they are queued, and batched, while a batch is scored.

Examples
--------
>>> import pandas as pd
>>> ev = pd.DataFrame({"concept": ["hr", "hr", "temp"], "source_id": ["a", "b", "c"],
...                    "time": pd.to_datetime(["2026-01-01 08:10", "2026-01-01 09:10", "2026-01-01 08:30"])})
>>> basis(ev, pd.Timestamp("2026-01-01 09:00"))
['Observation/a', 'Observation/c']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.sources.readings import ReadingError

from .engine import Engine
from .fhir_out import risk_assessment
from .inputs import ParseCache, ParsedRequest, parse_bodies
from .jsonio import dumps
from .stays import PostedStays
from .views import explanation_view, iso

__all__ = ["Scorer", "basis", "problem_body", "model_ref"]


def model_ref(m) -> dict:
    return {"name": m.name, "kind": m.kind, "version": m.version}


def problem_body(exc: ReadingError) -> dict:
    """The 422 answer: where the problem is (``loc``), what it is (``msg``) and its ``type``."""
    return {"detail": [{"loc": list(exc.loc), "msg": exc.msg, "type": exc.kind}]}


def basis(events: pd.DataFrame, screen_time) -> list[str]:
    """Observation references of the latest value of each concept at the screen."""
    if "source_id" not in events:
        return []
    latest = {}
    t_end = int(np.datetime64(screen_time, "ns").view(np.int64))
    for concept, t, sid in zip(events["concept"].tolist(), events["time"].to_numpy().view(np.int64).tolist(),
                               events["source_id"].tolist()):
        if t <= t_end and sid is not None:
            latest[concept] = sid
    return [f"Observation/{s}" for s in dict.fromkeys(latest.values())]


class Scorer:
    """Parse, score and answer a batch of ``(body, at, now, cacheable)`` requests: one ``(status, bytes)`` each."""

    def __init__(self, engine: Engine, posted: PostedStays, cache: ParseCache | None = None):
        self.engine, self.posted, self.cache = engine, posted, cache or ParseCache()
        self.notes = [f"{engine.primary.name} reads chest X-ray findings, which cannot be posted: they count as "
                      "missing (a CPN's 'X-ray taken in 24 h' reads no)"] if engine.primary.pad else []

    def __call__(self, requests: list) -> list:
        """``requests``: ``(body, at, now, cacheable)``; ``cacheable``: the body was decoded by orjson,
        so the parse cache may read it (:func:`.jsonio.loads`)."""
        out: list = [None] * len(requests)
        parsed: list[tuple[int, ParsedRequest]] = []
        cached = [i for i, r in enumerate(requests) if r[3]]
        others = [i for i, r in enumerate(requests) if not r[3]]
        read = parse_bodies([requests[i][:3] for i in cached], cache=self.cache) + \
            parse_bodies([requests[i][:3] for i in others])
        for i, p in sorted(zip(cached + others, read), key=lambda x: x[0]):
            if isinstance(p, ReadingError):
                out[i] = (422, dumps(problem_body(p)))
            else:
                parsed.append((i, p))
        results = self.engine.score([p.stay_input for _, p in parsed])
        for (i, p), result in zip(parsed, results):
            if not len(result["risk"]):
                out[i] = (422, dumps(problem_body(ReadingError(
                    ("body",), "no screen: no measurement falls between admission and the scoring time",
                    "empty"))))
                continue
            out[i] = (200, dumps(self.answer(p, result)))
        return out

    def answer(self, parsed: ParsedRequest, result: dict) -> dict:
        """The JSON answer for one scored stay (and keep the stay for the page)."""
        engine = self.engine
        times, risk = result["screen_time"], result["risk"]
        events = parsed.stay_input.events
        i = len(times) - 1
        screen_time = times[i]
        cand, fired = bool(result["candidate"][i]), bool(result["fired"][i])
        silenced_by = None
        if cand and not fired:
            silenced_by = iso(times[np.flatnonzero(result["fired"][:i])[-1]])
        self.posted.put(parsed.stay_id, events, parsed.stay_input.stay, parsed.stay_input.at)
        r = float(risk[i])
        return {
            "stay_id": parsed.stay_id, "screen_time": iso(screen_time),
            "hours_since_admit": float(result["hours"][i]),
            "admit_time": iso(parsed.stay_input.stay["admit_time"]), "admit_time_from": parsed.admit_from,
            "model": model_ref(engine.primary), "risk": round(r, 6), "threshold": engine.threshold,
            "operating_point": engine.operating_point,
            "alarm": {"candidate": cand, "fired": fired, "silenced": cand and not fired, "silenced_by": silenced_by},
            "explanation": explanation_view(result["explanation"], risk=r, model=engine.primary.name),
            "risk_assessment": risk_assessment(
                risk=r, screen_time=screen_time, subject=parsed.subject, encounter=parsed.encounter,
                basis=basis(events, screen_time), model_name=engine.primary.name,
                version=engine.primary.version, threshold=engine.threshold,
                operating_point=engine.operating_point, fired=fired),
            "skipped": parsed.skipped,
            "notes": self.notes,
        }
