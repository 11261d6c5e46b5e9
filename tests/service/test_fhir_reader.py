"""The FHIR reader (ehr.sources.fhir) and the reading checks it shares with the service."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.schema import validate
from ehr.screens import build_screens
from ehr.sources.fhir import parse_bundle, read_fhir, stay_id_for
from ehr.sources.readings import ReadingError, readings_to_events
from ehr.sources.report import IngestError

from .conftest import bundle_24h, observation

T = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
NOW = pd.Timestamp("2026-03-05")


def _bundle(*entries):
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


def _events(*entries, strict=True):
    parsed = parse_bundle(_bundle(*entries))
    keys = {r.stay: stay_id_for(r.stay) for r in parsed.readings}
    return readings_to_events(parsed.readings, stay_ids=keys, strict=strict, now=NOW)


def test_units_convert_at_ingest_fahrenheit_and_micromoles():
    ev = _events(observation(1, "8310-5", 100.4, "[degF]", T), observation(2, "2160-0", 88.4, "umol/L", T))
    got = dict(zip(ev["concept"], ev["numeric_value"].round(4)))
    # independent arithmetic: (100.4 - 32) * 5/9 and 88.4 umol/L / 88.4 (umol/L per mg/dL)
    assert got == {"temp": 38.0, "crea": pytest.approx(88.4 / 88.4, abs=2e-3)}
    assert dict(zip(ev["concept"], ev["unit"])) == {"temp": "Cel", "crea": "mg/dL"}
    validate(ev, "events")


def test_a_unit_the_dictionary_does_not_list_is_an_error_never_a_guess():
    with pytest.raises(ReadingError) as err:
        _events(observation(1, "8310-5", 100.4, "degF", T))
    assert err.value.loc == ("entry", 0, "resource")
    assert "unit 'degF' is not accepted for temp" in err.value.msg and "[degF]" in err.value.msg


def test_a_celsius_label_on_a_fahrenheit_value_is_refused_not_repaired_when_strict():
    with pytest.raises(ReadingError, match=r"temp = 100.4 Cel .* outside the plausible range \[25, 45\]"):
        _events(observation(1, "8310-5", 100.4, "Cel", T))
    # file ingest repairs it by the documented plausibility rule, and counts it
    ev = _events(observation(1, "8310-5", 100.4, "Cel", T), strict=False)
    assert ev["numeric_value"].round(1).tolist() == [38.0]


def test_missing_unit_is_refused_except_for_dimensionless_concepts():
    with pytest.raises(ReadingError, match="no unit for hr"):
        _events(observation(1, "8867-4", 80, None, T))
    gcs = observation(2, "9269-2", 0, None, T)
    del gcs["resource"]["valueQuantity"]
    gcs["resource"]["valueInteger"] = 14
    assert _events(gcs)["numeric_value"].tolist() == [14.0]


def test_blood_pressure_panel_components_are_read_as_their_own_concepts():
    panel = observation(1, "85354-9", 0, None, T)
    del panel["resource"]["valueQuantity"]
    panel["resource"]["component"] = [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 131, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 77, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]
    ev = _events(panel)
    assert dict(zip(ev["concept"], ev["numeric_value"])) == {"dbp": 77.0, "sbp": 131.0}


def test_a_loinc_code_of_two_concepts_needs_the_specific_coding():
    sat = observation(1, "2708-6", 95, "%", T)
    with pytest.raises(ReadingError, match="maps to several concepts"):
        parse_bundle(_bundle(sat))
    sat["resource"]["code"]["coding"].append({"system": "http://loinc.org", "code": "59408-5"})
    assert parse_bundle(_bundle(sat)).readings[0].concept == "spo2"


def test_unknown_code_comparator_date_only_and_bad_status_are_named():
    with pytest.raises(ReadingError, match=r"code LOINC/99999-9 is not in the concept dictionary"):
        _events(observation(1, "99999-9", 1, "mg/dL", T))
    bound = observation(2, "2524-7", 0.5, "mmol/L", T)
    bound["resource"]["valueQuantity"]["comparator"] = "<"
    with pytest.raises(ReadingError) as err:
        parse_bundle(_bundle(bound))
    assert err.value.loc[-2:] == ("valueQuantity", "comparator")
    dated = observation(3, "8867-4", 80, "/min", T)
    dated["resource"]["effectiveDateTime"] = "2026-03-01"
    with pytest.raises(ReadingError, match="has no time of day"):
        parse_bundle(_bundle(dated))
    weird = observation(4, "8867-4", 80, "/min", T, status="done")
    with pytest.raises(ReadingError) as err:
        parse_bundle(_bundle(weird))
    assert err.value.loc == ("entry", 0, "resource", "status")


def test_fhir_validation_errors_name_the_field():
    bad = observation(1, "8867-4", 80, "/min", T)
    bad["resource"]["effectiveDateTime"] = "yesterday at noon"
    with pytest.raises(ReadingError) as err:
        parse_bundle(_bundle(bad))
    assert err.value.loc == ("entry", 0, "resource", "effectiveDateTime")
    assert "FHIR R4 Observation" in err.value.msg


def test_future_and_duplicate_readings():
    future = T + dt.timedelta(days=30)
    with pytest.raises(ReadingError, match="is in the future"):
        _events(observation(1, "8867-4", 80, "/min", future))
    with pytest.raises(ReadingError, match=r"a second hr value .* the first is at entry.0.resource"):
        _events(observation(1, "8867-4", 80, "/min", T), observation(2, "8867-4", 81, "/min", T))


def test_skipped_statuses_and_resources_are_listed():
    parsed = parse_bundle(_bundle(observation(1, "8867-4", 80, "/min", T, status="entered-in-error"),
                                  {"resource": {"resourceType": "Condition", "id": "c1"}},
                                  observation(2, "8867-4", 82, "/min", T)))
    assert [r.value for r in parsed.readings] == [82.0]
    assert [why for _, why in parsed.skipped] == ["status entered-in-error", "Condition is not read"]


def test_read_fhir_files_bundles_and_ndjson_into_the_contract(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(bundle_24h(hours=6)))
    lines = [json.dumps(observation(i, "8867-4", 70 + i, "/min", T + dt.timedelta(hours=i),
                                    patient="Patient/9", encounter="Encounter/900")["resource"])
             for i in range(3)]
    lines.insert(1, "{not json")
    lines.append(json.dumps(observation(9, "8310-5", 99.1, "degF", T, patient="Patient/9",
                                        encounter="Encounter/900")["resource"]))
    (tmp_path / "b.ndjson").write_text("\n".join(lines))
    cohort = read_fhir(tmp_path, now=NOW)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    validate(events, "events")
    validate(stays, "stays")
    assert sorted(stays["stay_id"]) == [900, 4711]
    s = stays.set_index("stay_id")
    assert s.loc[4711, "sex"] == "F" and s.loc[4711, "department"] == "ward"
    assert s.loc[4711, "age"] == pytest.approx((pd.Timestamp("2026-03-01 02:00") - pd.Timestamp("1951-06-01")).days
                                               / 365.25)
    assert s.loc[4711, "admit_time"] == pd.Timestamp("2026-03-01 02:00")  # Encounter.period.start, in UTC
    assert s.loc[900, "admit_time"] == events.query("stay_id == 900")["time"].min()  # no Encounter given
    assert report.count(problem="not JSON") == 1 and report.count(problem="unit not accepted") == 1
    bad = [p for p in report.examples if p.problem == "not JSON"][0]
    assert (bad.file, bad.row) == ("b.ndjson", 2)
    assert len(events.query("stay_id == 900")) == 3
    screens = build_screens(events, stays)
    assert screens["stay_id"].nunique() == 2


def test_read_fhir_without_any_observation_is_an_error(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps(_bundle()))
    with pytest.raises(IngestError, match="no observation could be read"):
        read_fhir(tmp_path)


def test_ingest_cli_writes_a_cohort(tmp_path):
    from sepsiscope.cli import app

    (tmp_path / "in.json").write_text(json.dumps(bundle_24h(hours=4)))
    out = tmp_path / "cohort"
    result = CliRunner().invoke(app, ["ingest", "--source", "fhir", str(tmp_path / "in.json"), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    events = pd.read_parquet(out / "events.parquet")
    assert len(events) == 4 * 5 + 2 and (out / "ingest_report.json").exists()
    assert np.isclose(events.query("concept == 'temp'")["numeric_value"], 37.4).all()


def test_a_parse_cache_reads_each_resource_once_and_only_by_its_content(monkeypatch):
    import ehr.sources.fhir as fhir
    from sepsiscope.service.inputs import ParseCache

    validated = []
    real = fhir.validate_resource
    monkeypatch.setattr(fhir, "validate_resource", lambda res, loc=(): (validated.append(res.get("id")),
                                                                        real(res, loc)))
    cache = ParseCache()
    first = _bundle(observation(1, "8867-4", 80, "/min", T), observation(2, "8310-5", 37.0, "Cel", T))
    a = parse_bundle(first, cache=cache, validate=fhir.validate_resource)
    changed = _bundle(observation(1, "8867-4", 80, "/min", T), observation(2, "8310-5", 38.5, "Cel", T))
    b = parse_bundle(changed, cache=cache, validate=fhir.validate_resource)
    assert validated == [None, "o1", "o2", "o2"]   # the shell and o1 once; o2 again: its value changed
    assert [r.value for r in a.readings] == [80.0, 37.0] and [r.value for r in b.readings] == [80.0, 38.5]
    assert b.readings[1].loc == ("entry", 1, "resource") and cache.hits == 2
    bad = _bundle(observation(1, "8867-4", 80, "/min", T), observation(3, "8867-4", 80, "/min", T, status="x"))
    with pytest.raises(ReadingError):
        parse_bundle(bad, cache=cache)
    with pytest.raises(ReadingError):   # errors are not cached
        parse_bundle(bad, cache=cache)
