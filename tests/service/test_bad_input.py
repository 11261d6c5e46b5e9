"""Bad requests: each gets the right 4xx with a precise message, and the server keeps serving."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re

import pytest

from .conftest import AUTH, bundle_24h, observation

GOOD = bundle_24h()


@pytest.fixture()
def check(client):
    """Send a request, return its answer, and check that a good request is still scored after it."""
    def send(method="post", path="/v1/score", **kwargs):
        kwargs.setdefault("headers", AUTH)
        answer = getattr(client, method)(path, **kwargs)
        assert client.post("/v1/score", json=GOOD, headers=AUTH).status_code == 200
        return answer
    return send


def _with(*extra, drop_last=0):
    b = copy.deepcopy(GOOD)
    if drop_last:
        b["entry"] = b["entry"][:-drop_last]
    b["entry"].extend(extra)
    return b


def _detail(r):
    return r.json()["detail"][0]


def test_malformed_json(check):
    r = check(content=b'{"resourceType": "Bundle", "entry": [', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("the body is not valid JSON: Expecting value: line 1 column 38 (char 37)")


def test_not_json_content_type(check):
    r = check(content=b"hr=80", headers={**AUTH, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/fhir+json" in r.json()["detail"]


def test_unknown_loinc_code(check):
    when = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "12345-6", 3.0, "mg/dL", when)))
    assert r.status_code == 422
    d = _detail(r)
    assert d["type"] == "unknown_code" and d["loc"] == ["body", "entry", len(GOOD["entry"]), "resource"]
    assert d["msg"] == "code LOINC/12345-6 is not in the concept dictionary (ehr/concepts.toml)"


def test_temperature_in_fahrenheit_is_converted(check):
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "8310-5", 101.3, "[degF]", when)))
    assert r.status_code == 200
    temp = [i for i in r.json()["explanation"]["items"] if i["feature"] == "temp"][0]
    assert temp["value"] == pytest.approx((101.3 - 32) * 5 / 9, abs=1e-4) and temp["unit"] == "°C"


def test_temperature_with_a_non_ucum_unit_is_refused(check):
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "8310-5", 101.3, "°F", when)))
    assert r.status_code == 422
    assert _detail(r)["msg"] == ("unit '°F' is not accepted for temp (Body temperature); send one of "
                                 "['Cel', '[degF]'] (UCUM)")


def test_fahrenheit_value_labelled_celsius_is_refused_not_misread(check):
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "8310-5", 101.3, "Cel", when)))
    assert r.status_code == 422 and _detail(r)["type"] == "range"
    assert "temp = 101.3 Cel" in _detail(r)["msg"] and "[25, 45] Cel" in _detail(r)["msg"]


def test_creatinine_in_micromoles_is_converted(check):
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "2160-0", 176.8, "umol/L", when)))
    assert r.status_code == 200
    crea = [i for i in r.json()["explanation"]["items"] if i["feature"] == "crea"][0]
    assert crea["value"] == pytest.approx(176.8 * 0.011312, abs=1e-4) and crea["unit"] == "mg/dL"


def test_creatinine_in_an_unknown_unit_is_refused(check):
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "2160-0", 1.2, "mmol/L", when)))
    assert r.status_code == 422 and "unit 'mmol/L' is not accepted for crea" in _detail(r)["msg"]


def test_future_timestamps(check):
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    r = check(json=_with(observation(900, "8867-4", 90, "/min", future)))
    assert r.status_code == 422 and _detail(r)["type"] == "future_time"
    assert "is in the future" in _detail(r)["msg"]
    r = check(json=GOOD, params={"at": future.isoformat()})
    assert r.status_code == 422 and _detail(r)["loc"] == ["query", "at"]


def test_duplicate_observations(check):
    last = copy.deepcopy(GOOD["entry"][-3])
    last["resource"]["id"] = "copy"
    last["resource"]["valueQuantity"]["value"] += 1
    r = check(json=_with(last))
    assert r.status_code == 422 and _detail(r)["type"] == "duplicate"
    assert f"the first is at body.entry.{len(GOOD['entry']) - 3}.resource" in _detail(r)["msg"]


def test_fifty_megabyte_body(check):
    body = b'{"resourceType": "Bundle", "type": "collection", "entry": [' + b" " * (50 << 20) + b"]}"
    r = check(content=body, headers={**AUTH, "content-type": "application/fhir+json"})
    assert r.status_code == 413 and "larger than the limit of 1,048,576 bytes" in r.json()["detail"]


def test_missing_and_wrong_token(check):
    r = check(json=GOOD, headers={})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "missing Authorization header" in r.json()["detail"]
    r = check(json=GOOD, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
    r = check(json=GOOD, headers={"Authorization": f"Basic {AUTH['Authorization'].split()[1]}"})
    assert r.status_code == 401


@pytest.mark.parametrize("body, loc, text", [
    ({"stay": {"admit_time": "2026-03-01T00:00:00Z"}, "events": [
        {"time": "2026-03-01T01:00:00Z", "concept": "hr", "value": 80, "unit": "/min", "colour": "red"}]},
     ["body", "events", 0, "colour"], "Extra inputs are not permitted"),
    ({"stay": {}, "events": [{"time": "2026-03-01T01:00:00Z", "concept": "heart", "value": 80}]},
     ["body", "events", 0, "concept"], "'heart' is not a concept of ehr/concepts.toml"),
    ({"stay": {"age": 200}, "events": [{"time": "2026-03-01T01:00:00Z", "concept": "hr", "value": 80}]},
     ["body", "stay", "age"], "less than or equal to 130"),
    ({"stay": {}, "events": []}, ["body", "events"], "at least 1 item"),
    ([1, 2], ["body"], "a JSON object is required"),
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, ["body"], "no Observation with a value"),
])
def test_strict_validation_names_the_field(check, body, loc, text):
    r = check(json=body)
    assert r.status_code == 422
    assert _detail(r)["loc"] == loc and text in _detail(r)["msg"]


def test_a_bundle_of_two_stays_is_refused(check):
    when = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.timezone.utc)
    r = check(json=_with(observation(900, "8867-4", 90, "/min", when, encounter="Encounter/2")))
    assert r.status_code == 422 and "post one stay per request" in _detail(r)["msg"]


def test_every_v1_route_needs_the_token(app, client):
    routes = [r for r in app.routes if getattr(r, "path", "").startswith("/v1")]
    assert len(routes) >= 5
    for route in routes:
        method = sorted(route.methods)[0].lower()
        path = route.path.replace("{stay_id}", "1")
        assert getattr(client, method)(path).status_code == 401, route.path


def test_cors_is_closed_by_default_and_opens_only_for_named_origins(client, engine):
    from sepsiscope.service import create_app

    from .conftest import TOKEN, TestClient

    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/score", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(engine, token=TOKEN, cors_origins=("http://ward.example",))) as c:
        ok = c.options("/v1/score", headers={**pre, "Origin": "http://ward.example"})
        assert ok.headers["access-control-allow-origin"] == "http://ward.example"
        assert "access-control-allow-origin" not in c.options("/v1/score", headers=pre).headers


def test_security_headers(client):
    r = client.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/v1/model", headers=AUTH).headers["cache-control"] == "no-store"


def test_logs_carry_no_patient_values(client, caplog):
    import logging

    marker = 173.25  # a heart rate no other test posts
    when = dt.datetime(2026, 3, 2, 7, 50, tzinfo=dt.timezone.utc)
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/score", json=_with(observation(900, "8867-4", marker, "/min", when)), headers=AUTH)
        client.post("/v1/score", json=_with(observation(901, "8310-5", 104.9, "Cel", when)), headers=AUTH)
        client.get("/v1/stays/4711/trace", headers=AUTH)
    server = [r for r in caplog.records if not r.name.startswith("httpx")]  # httpx logs the test client's side
    # the request's duration (the one float a log line carries) may by chance contain the digits
    # of a secret, e.g. "11.78598600...": left out of what is checked
    text = "\n".join(re.sub(r" [0-9.]+ ms$", "", r.getMessage()) for r in server) + json.dumps(
        [[a for a in (r.args or ()) if not isinstance(a, float)] for r in server], default=str)
    assert "POST /v1/score 200" in text and "POST /v1/score 422" in text
    assert "GET /v1/stays/{stay_id}/trace 200" in text
    for secret in ("173.25", "104.9", "4711", "Patient/p1", "1951-06-01"):
        assert secret not in text, secret
