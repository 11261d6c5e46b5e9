"""A posted Bundle read from cached, checked resources: the fast path for re-posted windows.

The reference path (:func:`ehr.sources.fhir.parse_bundle`, then
:func:`ehr.sources.readings.readings_to_events`, strict) reads every entry and converts every
value of every request. A ward system that posts a sliding 24-hour window sends mostly
Observations it sent before. Here each resource is validated with ``fhir.resources`` (by its leaf
values when it has the shape of one accepted before, :class:`ehr.sources.fhir_shapes.ShapeValidator`), read and
checked on its own the first time its content is seen -- concept, unit, conversion to the
canonical unit, plausible range, by the same functions -- and what it said is kept by content
(:class:`~sepsiscope.service.inputs.ParseCache`). A request then costs a key and a lookup per
entry, plus the checks that need the request as a whole: one stay, no reading in the future, no
two readings of one concept at one time.

When anything is not as expected -- a resource that fails on its own, several stays or none, a
future time, a duplicate, an entry of an odd shape -- :func:`read_bundle` returns None and the
caller takes the reference path, so every problem is reported exactly as before. What it returns
equals the reference path's result exactly (``tests/service/test_fast_parse.py``).

:func:`read_bundles` reads a batch of requests: the readings of the resources new to all of them
are checked in one call, where the fixed cost of a call is paid once.

Examples
--------
>>> import pandas as pd
>>> from sepsiscope.service.inputs import ParseCache
>>> obs = {"resourceType": "Observation", "id": "t1", "status": "final", "subject": {"reference": "Patient/7"},
...        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
...        "effectiveDateTime": "2026-01-01T08:10:00Z", "valueQuantity": {"value": 100.4,
...        "system": "http://unitsofmeasure.org", "code": "[degF]"}}
>>> bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs}]}
>>> cache = ParseCache()
>>> _, key, events = read_bundle(bundle, now=pd.Timestamp("2026-02-01"), cache=cache)
>>> key, events[["concept", "numeric_value", "unit", "source_id"]].round(1).values.tolist()
('Patient/7', [['temp', 38.0, 'Cel', 't1']])
>>> read_bundle(bundle, now=pd.Timestamp("2026-01-01"), cache=cache) is None  # in the future: reference path
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehr.sources.fhir import READ_TYPES, ParsedBundle, _observation, stay_id_for
from ehr.sources.readings import FUTURE_TOLERANCE, Reading, ReadingError, readings_to_events

from .jsonio import content_key

__all__ = ["read_bundle", "read_bundles"]

_FAR_FUTURE = pd.Timestamp("2200-01-01")  # per-resource checks leave the clock to the request
_ODD = (ReadingError, TypeError, AttributeError, KeyError)  # -> the reference path says what is wrong


@dataclass
class _Pending:
    """A bundle whose entries were looked up: per Observation ``[said, checked or None, key, id]``,
    and the ``fullUrl`` aliases of its resources."""

    rows: list = field(default_factory=list)
    aliases: dict = field(default_factory=dict)
    out: ParsedBundle = field(default_factory=ParsedBundle)
    ok: bool = True


def _lookup(bundle: dict, cache) -> _Pending | None:
    """Look every entry up, validating resources seen for the first time; Patients, Encounters and
    skipped entries go into the pending bundle's ``out``. None for an odd bundle."""
    entries = bundle.get("entry") or []
    if bundle.get("resourceType") != "Bundle" or not isinstance(entries, list):
        return None
    shell = {k: v for k, v in bundle.items() if k != "entry"}
    key = content_key(shell)
    if cache.lookup(key) is None:
        cache.validate(shell, ("body",))
        cache.store(key, ("ref", "Bundle"))
    pending = _Pending()
    out, rows, aliases = pending.out, pending.rows, pending.aliases
    lookup = cache.lookup
    for i, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        kind = res.get("resourceType") if isinstance(res, dict) else None
        if not isinstance(kind, str):
            return None
        if "id" in res and "fullUrl" in e:
            aliases[e["fullUrl"]] = f"{kind}/{res['id']}"
        if kind not in READ_TYPES:
            out.skipped.append((("body", "entry", i, "resource"), f"{kind} is not read"))
            continue
        key = content_key(res)
        entry = lookup(key)
        if entry is None:
            loc = ("body", "entry", i, "resource")
            cache.validate(res, loc)
            said = _observation(res, loc) if kind == "Observation" else ("ref", f"{kind}/{res.get('id')}")
            cache.store(key, said)
            entry = (said, None)
        said = entry[0]
        if said[0] == "obs":
            rows.append([said, entry[1], key, res.get("id")])
        elif said[0] == "ref":
            (out.patients if kind == "Patient" else out.encounters)[said[1]] = res
        else:
            out.skipped.append((("body", "entry", i, "resource"), said[1]))
    return pending


def _check(pendings: list, cache) -> bool:
    """Check, in one call, the readings of the resources new to ``pendings`` (each resource its own
    stay, so only its own readings can collide) and store them. False when any fails."""
    new = [row for p in pendings for row in p.rows if row[1] is None]
    if not new:
        return True
    readings = [Reading(c, code, t, v, u, rel, str(j), sid) for j, (said, _, _, sid) in enumerate(new)
                for c, code, t, v, u, rel in said[3]]
    try:
        ev = readings_to_events(readings, stay_ids={str(j): j for j in range(len(new))}, strict=True,
                                now=_FAR_FUTURE)
    except ReadingError:
        return False
    parts: list = [[] for _ in new]
    for j, c, code, t, v, u in zip(ev["stay_id"].tolist(), ev["concept"].tolist(), ev["code"].tolist(),
                                   ev["time"].to_numpy().view(np.int64).tolist(), ev["numeric_value"].tolist(),
                                   ev["unit"].tolist()):
        parts[j].append((c, code, t, v, u))  # canonical unit, time in ns
    for row, p in zip(new, parts):
        said, _, key, sid = row
        row[1] = ("obs", said[1], said[2], sid, tuple(p))
        cache.store(key, said, row[1])
    return True


def _finish(pending: _Pending, now):
    """``(parsed, stay key, events)`` of a looked-up and checked bundle, or None (see :func:`read_bundle`)."""
    out, aliases = pending.out, pending.aliases
    stays, readings, sids = set(), [], []
    try:
        for _, (_, encounter, subject, sid, parts), _, _ in pending.rows:
            subject = aliases.get(subject, subject)
            stay = aliases.get(encounter, encounter) or subject
            if subject:
                out.subjects.setdefault(stay, subject)
            stays.add(stay)
            readings += parts
            sids += [sid] * len(parts)
    except _ODD:
        return None
    if len(stays) != 1:
        return None  # several stays or none
    names, codes, times, values, units = zip(*readings)
    t = np.array(times, dtype=np.int64)
    limit = (np.datetime64(pd.Timestamp(now), "ns") + FUTURE_TOLERANCE).astype(np.int64)
    if (t > limit).any() or len(set(zip(names, times))) < len(times):
        return None  # a reading in the future, a duplicate
    key = stays.pop()
    return out, key, _events(names, codes, t, values, units, sids, stay_id=stay_id_for(key))


def read_bundles(requests: list, *, cache) -> list:
    """Per ``(bundle, now)``: ``(parsed, stay key, events)`` as the reference path reads the bundle
    (one stay, strict), or None when the reference path must read it (see the module docstring)."""
    pendings: list = []
    for bundle, _ in requests:
        try:
            pendings.append(_lookup(bundle, cache))
        except _ODD:
            pendings.append(None)
    live = [p for p in pendings if p is not None]
    if not _check(live, cache):  # some resource fails alone: find whose, one bundle at a time
        for p in live:
            p.ok = _check([p], cache)
    return [_finish(p, now) if p is not None and p.ok else None for p, (_, now) in zip(pendings, requests)]


def read_bundle(bundle: dict, *, now, cache):
    """:func:`read_bundles` of one bundle."""
    return read_bundles([(bundle, now)], cache=cache)[0]


def _events(names, codes, t, values, units, sids, *, stay_id) -> pd.DataFrame:
    """The ``events`` table of one stay's checked readings, sorted by time and concept (as
    :func:`~ehr.sources.readings.readings_to_events` sorts them)."""
    names = np.array(names, dtype=object)
    order = np.lexsort((names.astype(str), t))
    n = len(order)
    sid = np.full(n, stay_id, dtype="int64")
    return pd.DataFrame({
        "subject_id": sid, "stay_id": sid.copy(), "time": t[order].view("datetime64[ns]"),
        "code": np.array(codes, dtype=object)[order], "numeric_value": np.array(values, dtype="float64")[order],
        "text_value": np.full(n, None, dtype=object), "unit": np.array(units, dtype=object)[order],
        "concept": names[order], "source_id": np.array(sids, dtype=object)[order]}, copy=False)  # (fresh arrays)
