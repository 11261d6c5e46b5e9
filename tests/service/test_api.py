"""The service's answers against independent computations: the models called directly on screens
built from the same data by the file reader, and the evaluation package's protocol for alarms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehr.concepts import concept_names
from ehr.screens import build_screens
from ehr.sources.fhir import read_fhir
from evaluation.protocol import run_protocol

from .conftest import AUTH, TOKEN, TestClient, bundle_24h

NOW = pd.Timestamp("2026-03-05")


def _direct(served, tmp_path, bundle):
    """Screens of a bundle built the file-ingest way, and the CPN's risk and explanation of the last one.

    Every concept gets its column, as in training (a test not in the bundle was not done); the CXR
    columns are empty, since a bundle of Observations carries no images.
    """
    from cpn import SepsisCPN

    (tmp_path / "b.json").write_text(json.dumps(bundle))
    cohort = read_fhir(tmp_path / "b.json", now=NOW)
    screens = build_screens(cohort.events, cohort.stays, until_onset=False, concepts=concept_names())
    screens = screens.assign(**{c: np.nan for c in served.cxr_columns})
    cpn = SepsisCPN.load(served.cpn_dir)
    # the last screen read with the stay's earlier ones (the CPN's trend leaves), as the service does
    return screens, cpn.predict_proba(screens)[-1, 1], cpn.explain(screens, rows=[len(screens) - 1])


def test_score_matches_the_model_on_screens_built_from_the_file_reader(client, served, tmp_path):
    bundle = bundle_24h(shift=30.0)
    r = client.post("/v1/score", json=bundle, headers=AUTH)
    assert r.status_code == 200, r.text
    got = r.json()
    screens, risk, ex = _direct(served, tmp_path, bundle)
    assert got["screen_time"] == screens["screen_time"].iloc[-1].isoformat()
    assert got["hours_since_admit"] == screens["hours_since_admit"].iloc[-1] == 30.0
    assert got["admit_time_from"] == "Encounter.period.start"
    assert got["risk"] == pytest.approx(risk, abs=1e-6)
    want = ex[ex.feature != "total"].set_index("feature")
    items = {i["feature"]: i for i in got["explanation"]["items"]}
    assert set(items) == set(want.index)
    for f, row in want.iterrows():
        assert items[f]["alone"] == pytest.approx(row.contribution, abs=1e-6), f
        assert items[f]["in_context"] == pytest.approx(row.baseline, abs=1e-6), f
        if pd.notna(row.age_h):
            assert items[f]["age_h"] == pytest.approx(row.age_h, abs=1e-3)
            assert items[f]["weight"] == pytest.approx(row.weight, abs=1e-4)
    assert items["temp"]["unit"] == "°C" and items["temp"]["value"] == 37.4
    assert items["hr"]["state_label"].endswith("/min")
    e = got["explanation"]
    assert e["total"] == pytest.approx(ex.query("feature == 'total'").contribution.item(), abs=1e-6)
    assert e["prior"] + e["total"] == pytest.approx(e["posterior"], abs=1e-5)
    assert e["posterior"] == pytest.approx(np.log10(risk / (1 - risk)), abs=1e-5)


def test_absent_tests_read_not_done_and_absent_images_carry_no_evidence(client):
    got = client.post("/v1/score", json=bundle_24h(), headers=AUTH).json()
    assert "chest X-ray findings, which cannot be posted" in got["notes"][0]
    items = {i["feature"]: i for i in got["explanation"]["items"]}
    assert items["lact_tested_24h"]["state"] == "yes"        # lactate 3 h before the screen
    assert items["bloodgas_tested_24h"]["state"] == "no"     # no blood gas in the bundle
    assert not any(f.startswith("cxr_") for f in items)      # findings: no evidence
    assert items["xray_taken_24h"]["state"] == "no"          # ... but "no film", and the answer says so


def test_the_prior_is_the_models_and_the_same_for_every_stay(client):
    a = client.post("/v1/score", json=bundle_24h(), headers=AUTH).json()["explanation"]
    b = client.post("/v1/score", json=bundle_24h(shift=40.0, encounter_id="5"), headers=AUTH).json()["explanation"]
    assert a["total"] != pytest.approx(b["total"], abs=1e-3)
    assert a["prior"] == pytest.approx(b["prior"], abs=1e-5)


def test_risk_assessment_is_valid_fhir_with_basis_model_and_version(client, engine):
    from fhir.resources.R4B.riskassessment import RiskAssessment

    got = client.post("/v1/score", json=bundle_24h(), headers=AUTH).json()
    ra = got["risk_assessment"]
    RiskAssessment.model_validate(ra)
    assert ra["prediction"][0]["probabilityDecimal"] == got["risk"]
    assert ra["subject"] == {"reference": "Patient/p1"} and ra["encounter"] == {"reference": "Encounter/4711"}
    coding = ra["method"]["coding"][0]
    assert coding["code"] == "cpn" and coding["version"] == engine.primary.version
    # the latest of each vital (the last hour's five) and the two labs
    bundle = bundle_24h()
    ids = [e["resource"]["id"] for e in bundle["entry"][-7:]]
    assert sorted(b["reference"] for b in ra["basis"]) == sorted(f"Observation/{i}" for i in ids)


def test_json_events_score_like_the_equivalent_bundle(client):
    bundle = bundle_24h(shift=20.0)
    events = []
    concept = {"8867-4": "hr", "8480-6": "sbp", "9279-1": "resp", "59408-5": "spo2", "8310-5": "temp",
               "2524-7": "lact", "2160-0": "crea"}
    for e in bundle["entry"][2:]:
        res = e["resource"]
        q = res["valueQuantity"]
        events.append({"time": res["effectiveDateTime"], "concept": concept[res["code"]["coding"][0]["code"]],
                       "value": q["value"], "unit": q["code"]})
    body = {"stay": {"stay_id": 4711, "admit_time": bundle["entry"][1]["resource"]["period"]["start"],
                     "age": 74.75, "sex": "F", "department": "ward"}, "events": events}
    a = client.post("/v1/score", json=bundle, headers=AUTH).json()
    b = client.post("/v1/score", json=body, headers=AUTH).json()
    assert b["stay_id"] == a["stay_id"] == 4711
    assert b["risk"] == pytest.approx(a["risk"], abs=1e-9)
    assert b["risk_assessment"].get("basis") is None


def test_score_at_an_earlier_time(client):
    bundle = bundle_24h()
    r = client.post("/v1/score", params={"at": "2026-03-01T20:30:00Z"}, json=bundle, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["screen_time"] == "2026-03-01T21:00:00"
    r = client.post("/v1/score", params={"at": "2026-02-01T00:00:00Z"}, json=bundle, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "at"]


def test_alarm_fires_once_then_is_silenced_for_48_hours(served, engine):
    from sepsiscope.service import create_app
    from sepsiscope.service.engine import Engine

    always = Engine(engine.primary, threshold=0.0, operating_point=None)
    with TestClient(create_app(always, token=TOKEN)) as c:
        got = c.post("/v1/score", json=bundle_24h(), headers=AUTH).json()
        assert got["alarm"] == {"candidate": True, "fired": False, "silenced": True,
                                "silenced_by": "2026-03-01T09:00:00"}
        trace = c.get(f"/v1/stays/{got['stay_id']}/trace", headers=AUTH).json()
    assert [a["fired"] for a in trace["alarms"]] == [True] + [False] * 23
    assert trace["silencing_windows"][0]["start_hours"] + 48 == trace["silencing_windows"][0]["end_hours"]


def _stay_with_alarms(served, engine):
    from cpn import SepsisCPN

    s = served.screens
    pred = SepsisCPN.load(served.cpn_dir).predictions(s)
    stays = pd.read_parquet(served.cohort_dir / "stays.parquet")
    res = run_protocol(pred, stays, s, threshold=engine.threshold, silencing_h=48.0)
    counts = res.alarms.groupby("stay_id")["fired"].agg(["sum", "size"])
    stay = int(counts.sort_values(["size", "sum"], ascending=False).index[0])
    return stay, res.alarms[res.alarms.stay_id == stay], stays.set_index("stay_id").loc[stay]


def test_cohort_trace_alarms_agree_with_the_evaluation_protocol(client, served, engine):
    stay, alarms, row = _stay_with_alarms(served, engine)
    got = client.get(f"/v1/stays/{stay}/trace", headers=AUTH).json()
    assert got["source"] == "cohort" and got["threshold"] == engine.threshold
    want = [(t.isoformat(), bool(f)) for t, f in zip(alarms.screen_time, alarms.fired)]
    assert [(a["screen_time"], a["fired"]) for a in got["alarms"]] == want
    fired = [a["hours"] for a in got["alarms"] if a["fired"]]
    assert [w["start_hours"] for w in got["silencing_windows"]] == fired
    s = served.screens[served.screens.stay_id == stay]
    assert [p["screen_time"] for p in got["points"]] == [t.isoformat() for t in s.screen_time]
    if pd.notna(row.onset_time):
        assert got["onset_hours"] == pytest.approx((row.onset_time - row.admit_time).total_seconds() / 3600)


def test_explain_a_cohort_alarm_with_every_model(client, served, engine):
    from gbdt import GBDTClassifier

    stay, alarms, _ = _stay_with_alarms(served, engine)
    t = alarms.screen_time.iloc[0]
    got = client.get(f"/v1/stays/{stay}/explain", params={"at": t.isoformat()}, headers=AUTH)
    assert got.status_code == 200, got.text
    cpn_view, gbdt_view = got.json()["explanations"]
    assert cpn_view["kind"] == "bayes_factors" and gbdt_view["kind"] == "contributions"
    row = served.screens[(served.screens.stay_id == stay) & (served.screens.screen_time == t)]
    gb = GBDTClassifier.load(served.gbdt_dir)
    want = gb.explain(row).set_index("feature")["contribution"]
    for item in gbdt_view["items"]:
        assert item["contribution"] == pytest.approx(want[item["feature"]], abs=1e-6)
    assert gbdt_view["total"] == pytest.approx(want["total"], abs=1e-6)
    assert gbdt_view["risk"] == pytest.approx(gb.predict_proba(row)[0, 1], abs=1e-6)
    assert cpn_view["risk"] >= engine.threshold
    # the risk that fired the alarm: the CPN's derived leaves read the stay's earlier screens, so the
    # screen is explained with its stay's history, not alone
    from cpn import SepsisCPN

    s = served.screens[served.screens.stay_id == stay]
    fired_risk = SepsisCPN.load(served.cpn_dir).predict_proba(s)[(s.screen_time == t).to_numpy(), 1][0]
    assert cpn_view["risk"] == pytest.approx(fired_risk, abs=1e-6)


def test_explain_errors_name_what_is_wrong(client, served, engine):
    stay, _, _ = _stay_with_alarms(served, engine)
    r = client.get(f"/v1/stays/{stay}/explain", params={"at": "1999-01-01T00:00:00"}, headers=AUTH)
    assert r.status_code == 422 and "is not a screen of stay" in r.json()["detail"][0]["msg"]
    assert client.get("/v1/stays/123456789/trace", headers=AUTH).status_code == 404


def test_stays_lists_cohort_and_posted_stays(client, served):
    client.post("/v1/score", json=bundle_24h(encounter_id="777"), headers=AUTH)
    got = client.get("/v1/stays", headers=AUTH).json()
    sources = {s["stay_id"]: s["source"] for s in got["stays"]}
    assert sources[777] == "posted"
    assert got["total"] == len(got["stays"]) >= 150 + 1
    assert client.get("/v1/stays/777/trace", headers=AUTH).json()["source"] == "posted"


def test_health_openapi_and_model_info(client, engine):
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/stays/{stay_id}/trace", "/v1/stays/{stay_id}/explain"} <= set(schema["paths"])
    body = schema["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert "application/fhir+json" in body and "EventIn" in schema["components"]["schemas"]
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["primary"]["name"] == "cpn" and info["compare"][0]["name"] == "lightgbm"
    assert info["operating_point"] == "news2>=5" and info["threshold"] == engine.threshold
