"""ShapeValidator gives fhir.resources' verdict (and error) on every resource, and takes its fast
path for resources shaped like an accepted one."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr.sources.fhir import validate_resource
from ehr.sources.fhir_shapes import ShapeValidator, shape_of
from ehr.sources.readings import ReadingError

pytest.importorskip("fhir.resources")

OBS = {"resourceType": "Observation", "id": "o1", "status": "final",
       "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                 "code": "vital-signs"}]}],
       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                "text": "HR"},
       "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/9"},
       "effectiveDateTime": "2026-01-01T08:15:00+00:00",
       "valueQuantity": {"value": 88.5, "unit": "beats/minute", "system": "http://unitsofmeasure.org",
                         "code": "/min"}}
ENC = {"resourceType": "Encounter", "id": "9", "status": "in-progress",
       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
       "subject": {"reference": "Patient/p1"}, "period": {"start": "2026-01-01T06:00:00Z"}}
PAT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-01-01", "active": True}
BASES = (OBS, ENC, PAT)

ODD_VALUES = st.one_of(
    st.sampled_from(["", " ", "  x", "x ", "final", "2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z",
                     "2026-01-01", "2026", "2026-01-01T08:15:00", "not a uri", "http://x y", "a" * 70,
                     "ü", "Patient/", "-1", "1e3", "\t", "\n", "12:00", "true"]),
    st.text(max_size=12), st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none())


def _leaf_paths(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "resourceType":
                yield from _leaf_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaf_paths(v, (*path, i))
    else:
        yield path


def _set(node, path, value):
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _verdict(fn, res):
    try:
        fn(res, ("body",))
        return None
    except ReadingError as exc:
        return exc.loc, exc.msg, exc.kind


@st.composite
def mutated(draw):
    base = draw(st.sampled_from(BASES))
    res = copy.deepcopy(base)
    paths = list(_leaf_paths(res))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "extra", "drop", "listify", "same"]))
        path = draw(st.sampled_from(paths))
        value = draw(ODD_VALUES)
        try:  # (an earlier mutation may have removed or replaced the path)
            if kind == "leaf":
                _set(res, path, value)
            elif kind == "extra":
                res[draw(st.sampled_from(["foo", "_status", "valueString", "note", "effectivePeriod"]))] = value
            elif kind == "drop" and len(path) == 1:
                del res[path[0]]
            elif kind == "listify":
                node = res
                for p in path[:-1]:
                    node = node[p]
                node[path[-1]] = [node[path[-1]]]
        except (KeyError, IndexError, TypeError):
            pass
    return base, res


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_same_verdict_and_error_as_fhir_resources(case):
    base, res = case
    check = ShapeValidator()
    check(copy.deepcopy(base))  # an accepted resource of the base's shape: the fast path is armed
    assert _verdict(check, res) == _verdict(validate_resource, res)


def test_the_fast_path_is_taken_and_its_values_are_checked():
    check = ShapeValidator()
    for i in range(20):
        res = copy.deepcopy(OBS)
        res["id"], res["valueQuantity"]["value"] = f"o{i}", 80.0 + i
        res["effectiveDateTime"] = f"2026-01-01T{i:02d}:15:00+00:00"
        check(res)
    assert (check.full, check.fast) == (1, 19)
    bad = copy.deepcopy(OBS)
    bad["effectiveDateTime"] = "2026-01-01T24:15:00+00:00"  # same shape, a bad leaf
    with pytest.raises(ReadingError) as got:
        check(bad, ("body",))
    with pytest.raises(ReadingError) as want:
        validate_resource(bad, ("body",))
    assert (got.value.loc, got.value.msg) == (want.value.loc, want.value.msg)
    assert check.full == 2


def test_a_value_accepted_for_one_type_is_not_taken_for_another():
    """'o 1' is a valid string (display) but not a valid id: remembered values are per type."""
    check = ShapeValidator()
    res = copy.deepcopy(OBS)
    res["code"]["coding"][0]["display"] = "o 1"
    check(res)
    res2 = copy.deepcopy(res)
    res2["id"] = "o 1"
    assert _verdict(check, res2) == _verdict(validate_resource, res2) != None  # noqa: E711


def test_shapes_differ_by_key_type_and_resource_type():
    a, b, c = [], [], []
    s1 = shape_of({"resourceType": "Patient", "active": True}, a)
    s2 = shape_of({"resourceType": "Patient", "active": "true"}, b)
    s3 = shape_of({"resourceType": "Group", "active": True}, c)
    assert len({s1, s2, s3}) == 3 and a == [True] and b == ["true"]


def test_an_element_fhir_resources_trips_over_is_a_reading_error():
    """fhir.resources raises AttributeError for a primitive extension that is not an object: found
    by the property test above; a client's error (422 in the service), never a crash."""
    bad = dict(OBS, _status=5)
    with pytest.raises(ReadingError, match="not a valid FHIR R4 Observation"):
        validate_resource(bad, ("body",))
    with pytest.raises(ReadingError, match="not a valid FHIR R4 Observation"):
        ShapeValidator()(bad, ("body",))
