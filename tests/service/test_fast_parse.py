"""The parse cache's fast path (sepsiscope.service.bundles) against the reference path: the same
events, stay and report for every bundle it reads, and the same error for every bundle it hands
back; each resource validated once."""

from __future__ import annotations

import copy
import datetime as dt

import pandas as pd
import pytest

from ehr.sources.readings import ReadingError
from sepsiscope.service import bundles, inputs
from sepsiscope.service.inputs import ParseCache, parse_bodies, parse_body
from sepsiscope.service.jsonio import dumps, loads

from .conftest import VITALS, bundle_24h, observation

NOW = pd.Timestamp("2026-03-05")
END = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
WHEN = END - dt.timedelta(minutes=10)


def _decoded(bundle):
    value, by_orjson = loads(dumps(bundle))
    assert by_orjson
    return value


def _same(a, b):
    pd.testing.assert_frame_equal(a.stay_input.events, b.stay_input.events, check_exact=True)
    assert a.stay_input.stay == b.stay_input.stay
    assert (a.stay_id, a.subject, a.encounter, a.admit_from, a.skipped) == \
        (b.stay_id, b.subject, b.encounter, b.admit_from, b.skipped)


def _panel(i):
    """A blood-pressure panel: values in its components, referenced through the Encounter's fullUrl."""
    e = observation(i, "85354-9", 0, None, WHEN, encounter="urn:uuid:e1")
    res = e["resource"]
    del res["valueQuantity"]
    res["component"] = [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 101.0, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 55.0, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]
    return e


def _variants():
    """Windows sliding by an hour, and bundles with converted units, a panel, aliases and skipped entries."""
    out = [bundle_24h(END + dt.timedelta(hours=h), admit_hours_before=30 + h) for h in range(3)]
    b = bundle_24h(shift=25.0)
    b["entry"] += [observation(900, "8310-5", 101.3, "[degF]", WHEN), observation(901, "2160-0", 176.8, "umol/L", WHEN),
                   _panel(902)]
    cancelled = observation(903, "8867-4", 140.0, "/min", WHEN)
    cancelled["resource"]["status"] = "cancelled"
    absent = observation(904, "9279-1", 0, None, WHEN)
    del absent["resource"]["valueQuantity"]
    absent["resource"]["dataAbsentReason"] = {"text": "not measured"}
    b["entry"] += [cancelled, absent, {"resource": {"resourceType": "Procedure", "id": "x", "status": "completed"}}]
    out.append(b)
    no_encounter = bundle_24h()
    no_encounter["entry"] = [e for e in no_encounter["entry"] if e["resource"]["resourceType"] != "Encounter"]
    out.append(no_encounter)
    return out


def test_the_fast_path_reads_as_the_reference_path(monkeypatch):
    cache, used = ParseCache(), []
    real = bundles.read_bundles
    monkeypatch.setattr(inputs, "read_bundles", lambda *a, **k: used.extend(real(*a, **k)) or used[-1:])
    for bundle in _variants() * 2:  # the second time from the cache
        _same(parse_body(_decoded(bundle), now=NOW, cache=cache), parse_body(bundle, now=NOW))
    assert all(u is not None for u in used) and len(used) == 2 * len(_variants())


def test_each_resource_is_validated_once(monkeypatch):
    calls = []
    cache = ParseCache()
    real = cache.validate
    cache.validate = lambda res, loc: calls.append(loc) or real(res, loc)
    first = bundle_24h()
    parse_body(_decoded(first), now=NOW, cache=cache)
    assert len(calls) == len(first["entry"]) + 1  # every resource and the Bundle itself
    full = real.full  # one per shape: a vital, a lab, the Patient, the Encounter, the Bundle
    assert full <= 6 and real.fast == len(calls) - full
    # an hour on: the window loses its first hour's five vitals and gains five new ones
    second = copy.deepcopy(first)
    new = [observation(1000 + j, code, value, unit, END + dt.timedelta(minutes=20))
           for j, (code, value, unit) in enumerate(VITALS)]
    second["entry"] = second["entry"][:2] + second["entry"][7:] + new
    calls.clear()
    _same(parse_body(_decoded(second), now=NOW, cache=cache), parse_body(second, now=NOW))
    assert len(calls) == 5
    assert real.full == full  # shaped like the vitals before them: checked by their values alone


def _bad():
    good = bundle_24h()
    late = dt.datetime(2026, 3, 7, tzinfo=dt.timezone.utc)  # after NOW
    dup = copy.deepcopy(good["entry"][-3])
    dup["resource"]["id"] = "copy"
    dup["resource"]["valueQuantity"]["value"] += 1
    bad_status = observation(905, "8867-4", 80, "/min", WHEN)
    bad_status["resource"]["status"] = "done"
    return [good["entry"] + e for e in (
        [observation(900, "12345-6", 3.0, "mg/dL", WHEN)], [observation(900, "8310-5", 101.3, "°F", WHEN)],
        [observation(900, "8310-5", 101.3, "Cel", WHEN)], [observation(900, "2160-0", 1.2, "mmol/L", WHEN)],
        [observation(900, "8867-4", 90, "/min", late)], [dup], [bad_status],
        [observation(900, "8867-4", 90, "/min", WHEN, encounter="Encounter/2")],
        [{"resource": {"resourceType": "Observation", "id": "v", "status": "final"}}], ["not an entry"])] + [[]]


@pytest.mark.parametrize("entries", _bad())
def test_every_problem_is_the_reference_paths_error(entries):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    cache = ParseCache()
    parse_body(_decoded(bundle_24h()), now=NOW, cache=cache)  # the good part is cached
    with pytest.raises(ReadingError) as want:
        parse_body(copy.deepcopy(bundle), now=NOW)
    assert bundles.read_bundle(_decoded(bundle), now=NOW, cache=cache) is None
    with pytest.raises(ReadingError) as got:
        parse_body(_decoded(bundle), now=NOW, cache=cache)
    assert (got.value.loc, got.value.msg, got.value.kind) == (want.value.loc, want.value.msg, want.value.kind)


def test_a_batch_reads_as_each_bundle_alone_with_a_bad_one_among_them():
    bad = [{"resourceType": "Bundle", "type": "collection", "entry": e} for e in _bad()[:4]]
    good = _variants()
    batch = [good[0], bad[0], good[3], bad[2], good[1], bad[3]]
    got = parse_bodies([(_decoded(b), None, NOW) for b in batch], cache=ParseCache())
    for b, g in zip(batch, got):
        try:
            want = parse_body(b, now=NOW)
        except ReadingError as exc:
            assert isinstance(g, ReadingError) and (g.loc, g.msg, g.kind) == (exc.loc, exc.msg, exc.kind)
        else:
            _same(g, want)
