"""What ``POST /v1/score`` accepts: a FHIR R4 Bundle of Observations, or the project's JSON events.

Both end as one :class:`~sepsiscope.service.engine.StayInput` (events in canonical units, the
stay's admission and covariates) through the same checks (:mod:`ehr.sources.readings`, strict):
any problem is a :class:`~ehr.sources.readings.ReadingError` naming the field, which the app
answers with 422. One request holds one stay.

JSON events (times without an offset are taken as UTC, like FHIR times once converted)::

    {"stay": {"stay_id": 17, "admit_time": "2026-01-01T08:00:00Z", "age": 71, "sex": "F",
              "department": "ward"},
     "events": [{"time": "2026-01-01T09:10:00Z", "concept": "temp", "value": 38.6, "unit": "Cel"}]}

FHIR resources are validated with ``fhir.resources``; :class:`ParseCache` remembers what each
resource said once it was validated and read (by a hash of its content), so a client that posts a
sliding 24-hour window each hour pays validation only for the new observations.

Examples
--------
>>> body = {"stay": {"stay_id": 3, "admit_time": "2026-01-01T08:00:00"},
...         "events": [{"time": "2026-01-01T09:10:00", "concept": "temp", "value": 100.4, "unit": "[degF]"}]}
>>> parsed = parse_body(body, now=pd.Timestamp("2026-01-02"))
>>> parsed.stay_input.events[["concept", "numeric_value"]].round(1).values.tolist(), parsed.stay_id
([['temp', 38.0]], 3)
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ehr.concepts import load_concepts
from ehr.sources.fhir import parse_bundle, stay_id_for, stay_row
from ehr.sources.fhir_shapes import ShapeValidator
from ehr.sources.readings import Reading, ReadingError, readings_to_events

from .bundles import read_bundles
from .engine import StayInput
from .jsonio import content_key

__all__ = ["parse_body", "parse_bodies", "ParsedRequest", "ParseCache", "EventsRequest", "to_utc"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StayIn(_Strict):
    """The stay of posted JSON events."""

    stay_id: int | None = Field(None, ge=0, lt=2**63, description="default: a new id")
    admit_time: datetime | None = Field(None, description="admission; default: the first event")
    age: float | None = Field(None, ge=0, le=130, description="years")
    sex: Literal["F", "M"] | None = None
    department: str | None = Field(None, max_length=64)


class EventIn(_Strict):
    """One measurement: a concept of ``ehr/concepts.toml`` with its value and UCUM unit."""

    time: datetime
    concept: str = Field(max_length=64)
    value: float
    unit: str | None = Field(None, max_length=32, description="UCUM; default: none (dimensionless only)")


class EventsRequest(_Strict):
    """The project's JSON events for one stay."""

    stay: StayIn
    events: list[EventIn] = Field(min_length=1, max_length=50_000)


def to_utc(t) -> pd.Timestamp:
    """A datetime as the contract's naive UTC (naive input is taken as UTC already)."""
    t = pd.Timestamp(t)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


class ParseCache:
    """What each FHIR resource said, by content, for up to ``maxsize`` resources (the oldest go first).

    A resource is validated with ``fhir.resources`` and read the first time it is seen; a later
    request carrying the same resource (by content, :func:`.jsonio.content_key`) reuses that
    reading. Per resource it keeps what :func:`ehr.sources.fhir.parse_bundle` read (``get``/``put``,
    the interface that function takes) and, once :mod:`.bundles` has checked them, its readings
    in canonical units. Only resources that were read without error are kept.
    """

    def __init__(self, maxsize: int = 200_000):
        self.maxsize = maxsize
        # key -> (said, checked readings or None): tuples of strings and numbers, which the cyclic
        # collector stops tracking, so a full cache costs its passes little
        self._entries: OrderedDict[bytes, tuple] = OrderedDict()
        self.hits = self.misses = 0
        # a resource new by content is mostly new by value only: validated by its leaves when an
        # accepted resource had its shape (same verdicts and errors as fhir.resources)
        self.validate = ShapeValidator()

    def lookup(self, key: bytes):
        """``(said, checked)`` of a resource key, or None (counted as a hit or a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def store(self, key: bytes, said: tuple, checked=None) -> None:
        self._entries[key] = (said, checked)
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def get(self, resource: dict):
        entry = self.lookup(content_key(resource))
        return None if entry is None else entry[0]

    def put(self, resource: dict, said: tuple) -> None:
        self.store(content_key(resource), said)


@dataclass
class ParsedRequest:
    """A scored request's stay, with what the response reports about its input."""

    stay_input: StayInput
    stay_id: int
    subject: str | None = None
    encounter: str | None = None
    admit_from: str = "given"
    skipped: list = field(default_factory=list)


def _events_request(body: dict, now) -> ParsedRequest:
    try:
        req = EventsRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ReadingError(("body", *err["loc"]), err["msg"], err["type"]) from None
    concepts = load_concepts()
    readings = []
    for i, e in enumerate(req.events):
        if e.concept not in concepts:
            raise ReadingError(("body", "events", i, "concept"), f"'{e.concept}' is not a concept of "
                               "ehr/concepts.toml", "unknown_code")
        readings.append(Reading(e.concept, f"SEPSISCOPE/{e.concept}", to_utc(e.time).to_datetime64(), e.value,
                                e.unit, ("body", "events", i), "stay"))
    stay_id = req.stay.stay_id if req.stay.stay_id is not None else stay_id_for(f"posted/{uuid.uuid4()}")
    events = readings_to_events(readings, stay_ids={"stay": stay_id}, strict=True, now=now)
    admit = to_utc(req.stay.admit_time) if req.stay.admit_time else events["time"].min()
    stay = {"admit_time": admit, "age": req.stay.age, "sex": req.stay.sex, "department": req.stay.department}
    return ParsedRequest(StayInput(events, stay), stay_id,
                         admit_from="stay.admit_time" if req.stay.admit_time else "first event")


def _read_bundle(body: dict, now, cache):
    """(parsed bundle, stay key, events), read in full: every problem raises its :class:`ReadingError`."""
    parsed = parse_bundle(body, loc=("body",), cache=cache)
    stays = list(dict.fromkeys(r.stay for r in parsed.readings))
    if not stays:
        raise ReadingError(("body",), "no Observation with a value to score", "empty")
    if len(stays) > 1:
        raise ReadingError(("body",), f"observations of {len(stays)} stays ({', '.join(stays[:3])}); post one "
                           "stay per request", "several_stays")
    key = stays[0]
    events = readings_to_events(parsed.readings, stay_ids={key: stay_id_for(key)}, strict=True, now=now,
                                source_ids=True)
    return parsed, key, events


def _bundle_request(body: dict, now, cache, fast=None) -> ParsedRequest:
    parsed, key, events = fast or _read_bundle(body, now, cache)
    sid = stay_id_for(key)
    times = events["time"].to_numpy()
    row = stay_row(parsed, key, times.min(), times.max())
    enc = parsed.encounters.get(key, {})
    subject = parsed.subjects.get(key) or (enc.get("subject") or {}).get("reference")
    stay = {"admit_time": row["admit_time"], "age": row["age"], "sex": row["sex"], "department": row["department"]}
    admit_from = "Encounter.period.start" if "start" in (enc.get("period") or {}) else "first observation"
    return ParsedRequest(StayInput(events, stay), sid, subject=subject,
                         encounter=key if key.startswith("Encounter/") else None, admit_from=admit_from,
                         skipped=[{"loc": ".".join(map(str, loc)), "reason": why} for loc, why in parsed.skipped])


def parse_body(body, *, now=None, cache: ParseCache | None = None, at=None) -> ParsedRequest:
    """A decoded JSON body -> :class:`ParsedRequest` (``ReadingError`` names the field of any problem)."""
    out = parse_bodies([(body, at, now)], cache=cache)[0]
    if isinstance(out, ReadingError):
        raise out
    return out


def parse_bodies(requests: list, *, cache: ParseCache | None = None) -> list:
    """:func:`parse_body` of many ``(body, at, now)`` requests: a :class:`ParsedRequest` or the
    :class:`ReadingError` of each. With a cache, bundles are read from it where they can be
    (:func:`.bundles.read_bundles`, the new resources of all of them checked at once)."""
    default_now = datetime.now(timezone.utc).replace(tzinfo=None)
    requests = [(body, at, default_now if now is None else now) for body, at, now in requests]
    bundles = [i for i, (body, _, _) in enumerate(requests) if isinstance(body, dict) and "resourceType" in body]
    fast = dict(zip(bundles, read_bundles([requests[i][0::2] for i in bundles], cache=cache))) \
        if cache is not None else {}
    out = []
    for i, (body, at, now) in enumerate(requests):
        try:
            out.append(_parse_one(body, now, cache, at, fast.get(i)))
        except ReadingError as exc:
            out.append(exc)
    return out


def _parse_one(body, now, cache, at, fast) -> ParsedRequest:
    if not isinstance(body, dict):
        raise ReadingError(("body",), "a JSON object is required (a FHIR Bundle or {stay, events})", "type")
    out = _bundle_request(body, now, cache, fast) if "resourceType" in body else _events_request(body, now)
    if at is not None:
        at = to_utc(at)
        events = out.stay_input.events
        if at < out.stay_input.stay["admit_time"]:
            raise ReadingError(("query", "at"), f"{at} is before the admission ({out.stay_input.stay['admit_time']})",
                               "at")
        if at < events["time"].min():
            raise ReadingError(("query", "at"), f"{at} is before the first measurement", "at")
        out.stay_input.at = at
    return out
