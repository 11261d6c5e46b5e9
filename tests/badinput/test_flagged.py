"""Bad values inside readable input: the command succeeds, and every bad value is flagged per field
and row in ``ingest_report.json`` and the console summary (never stored silently)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pandas as pd
from ehr.cohort import Cohort
from ehr.sources.physionet import HEADER
from tests.badinput.conftest import MIMIC4, good_psv_rows, invoke, psv_row, write_psv


def _ingest(tmp, source="psv", extra=()):
    code, out, err, exc = invoke(["ingest", str(tmp / source), "--out", str(tmp / "c"), "--no-progress", *extra])
    assert code == 0 and exc is None, err
    report = json.loads((tmp / "c" / "ingest_report.json").read_text())
    return Cohort.load(tmp / "c"), report, err


def _count(report, field, action=None, problem=None):
    return sum(c["n"] for c in report["counts"] if c["field"] == field and (action is None or c["action"] == action)
               and (problem is None or problem in c["problem"]))


def test_impossible_codes_are_rejected_per_row(tmp_path):
    rows = good_psv_rows(6)
    rows[0] = psv_row(ICULOS=1, HR=80, Age=-3, Gender=5, Unit1=3, Unit2=0, SepsisLabel=2)
    write_psv(tmp_path / "psv" / "p000001.psv", rows)
    write_psv(tmp_path / "psv" / "p000002.psv", good_psv_rows(6, septic_from=3))
    cohort, report, err = _ingest(tmp_path)
    st = cohort.stays.set_index("stay_id")
    assert pd.isna(st.loc[1, "age"]) and st.loc[1, "sex"] is None and not st.loc[1, "sepsis"]
    assert st.loc[2, "sepsis"]
    for field in ("SepsisLabel", "Age", "Gender", "Unit1"):
        assert _count(report, field, "rejected_value") == 1, field
        assert any(e["field"] == field and e["file"] == "p000001.psv" and e["row"] == 1 for e in report["examples"])
        assert field in err  # the console summary names it
    labels = cohort.events[cohort.events["code"] == "PHYSIONET2019/SepsisLabel"]
    assert set(labels["numeric_value"]) == {0.0, 1.0}


def test_iculos_far_in_the_future_is_rejected_not_a_discharge_in_1735(tmp_path):
    rows = good_psv_rows(5) + [psv_row(ICULOS=1e8, HR=80)]
    write_psv(tmp_path / "psv" / "p000001.psv", rows)
    cohort, report, _ = _ingest(tmp_path)
    assert cohort.stays["discharge_time"].iloc[0] == pd.Timestamp("2019-01-01 05:00")
    assert _count(report, "ICULOS", "rejected_row", "ICULOS over 8760 h") == 1


def test_ionised_calcium_is_converted_as_a_declared_unit_shift(tmp_path):
    ionised = [psv_row(ICULOS=i, HR=80, Calcium=1.1 + 0.02 * i) for i in range(1, 5)]
    total = [psv_row(ICULOS=i, HR=80, Calcium=8.5 + 0.1 * i) for i in range(5, 11)]
    write_psv(tmp_path / "psv" / "p000001.psv", ionised + total)
    cohort, report, err = _ingest(tmp_path)
    ca = cohort.events.loc[cohort.events["concept"] == "calcium", "numeric_value"]
    assert len(ca) == 10 and ca.between(8, 11).all()
    (shift,) = report["unit_shifts"]
    assert shift["field"] == "Calcium" and shift["applied"] and shift["n"] == 4 and shift["unit"] == "mmol/L{ionised}"
    assert _count(report, "Calcium", "repaired") == 4 and "unit shift: Calcium" in err


def test_creatinine_in_umol_is_converted(tmp_path):
    rows = [psv_row(ICULOS=i, HR=80, Creatinine=v) for i, v in enumerate([88, 95, 120, 1.1, 0.9], start=1)]
    write_psv(tmp_path / "psv" / "p000001.psv", rows)
    cohort, report, _ = _ingest(tmp_path)
    crea = cohort.events.loc[cohort.events["concept"] == "crea", "numeric_value"].round(2).tolist()
    assert crea == [1.0, 1.07, 1.36, 1.1, 0.9]
    assert report["unit_shifts"][0]["applied"]


def test_glucose_in_mmol_is_offered_not_applied(tmp_path):
    rows = [psv_row(ICULOS=i, HR=80, Glucose=v) for i, v in enumerate([5.5, 6.1, 7.2, 120, 140], start=1)]
    write_psv(tmp_path / "psv" / "p000001.psv", rows)
    cohort, report, err = _ingest(tmp_path)
    (shift,) = report["unit_shifts"]
    assert not shift["applied"] and shift["unit"] == "mmol/L" and shift["n"] == 3
    assert "declare it in ehr/concepts.toml" in shift["message"] and "unit shift: Glucose" in err
    assert _count(report, "Glucose", "rejected_value") == 3
    assert sorted(cohort.events.loc[cohort.events["concept"] == "glucose", "numeric_value"]) == [120, 140]


def test_rejections_have_examples_for_every_field(tmp_path):
    rows = [psv_row(ICULOS=i, HR=999, MAP=999, Resp=999, pH=99) for i in range(1, 4)]
    write_psv(tmp_path / "psv" / "p000001.psv", rows + good_psv_rows(2)[1:])
    _, report, err = _ingest(tmp_path)
    for field in ("HR", "MAP", "Resp", "pH"):
        assert _count(report, field, "rejected_value") == 3
        assert sum(e["field"] == field for e in report["examples"]) == 3
        assert f"{field}: outside plausible range" in err


def test_symlink_out_of_the_folder_is_not_followed(tmp_path):
    write_psv(tmp_path / "psv" / "p000001.psv", good_psv_rows())
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret first line\n")
    os.symlink(secret, tmp_path / "psv" / "p000002.psv")
    cohort, report, err = _ingest(tmp_path)
    assert cohort.stays["stay_id"].tolist() == [1]
    assert "top secret" not in err and "top secret" not in json.dumps(report)
    assert any(e["problem"] == "symlink to a file outside the input folder" for e in report["examples"])


def test_markup_and_emoji_codes_in_input_are_printed_as_text(tmp_path):
    write_psv(tmp_path / "psv[/]" / "p000001.psv", good_psv_rows())
    write_psv(tmp_path / "psv[/]" / "p000002.psv", ["1|2"], header="|".join([":x:", "[bold]"] + HEADER[2:]))
    cohort, report, err = _ingest(tmp_path, source="psv[/]")
    assert "':x:', '[bold]'" in err and "psv[/]" in err and "\u274c" not in err


def test_reingest_replaces_the_cohort_folder_whole(tmp_path):
    write_psv(tmp_path / "psv" / "p000001.psv", good_psv_rows())
    _ingest(tmp_path)
    (tmp_path / "c" / "screens.parquet").write_bytes(b"stale screens of 50 stays")
    _ingest(tmp_path)
    assert not (tmp_path / "c" / "screens.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "psv"]  # nothing left aside


def test_zip_bomb_member_is_skipped_and_counted(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/p000001.psv", "|".join(HEADER) + "\n" + "\n".join(good_psv_rows()) + "\n")
        z.writestr("a/p000002.psv", "0" * (17 * 2**20))
    cohort, report, _ = _ingest(tmp_path, source="d.zip")
    assert cohort.stays["stay_id"].tolist() == [1]
    assert any(c["problem"].startswith("zip member larger than") for c in report["counts"])


def test_mimic_allow_missing_is_named_in_the_report(tmp_path):
    shutil.copytree(MIMIC4, tmp_path / "m")
    (tmp_path / "m" / "hosp" / "prescriptions.csv.gz").unlink()
    cohort, report, err = _ingest(tmp_path, source="m", extra=["--source", "mimic", "--allow-missing",
                                                               "prescriptions"])
    assert report["allowed_missing"] == ["prescriptions"] and "allowed missing: prescriptions" in err
    assert not cohort.stays["sepsis"].any()  # no antibiotics: no suspected infection, as the report says
    assert json.loads((tmp_path / "c" / "run.json").read_text())["config"]["allow_missing"] == ["prescriptions"]


def test_mimic_bad_sex_and_negative_age_are_flagged(tmp_path):
    shutil.copytree(MIMIC4, tmp_path / "m")
    path = tmp_path / "m" / "hosp" / "patients.csv.gz"
    pat = pd.read_csv(path)
    pat.loc[0, "gender"] = "X"
    pat.loc[1, "anchor_age"] = -40
    pat.to_csv(path, index=False, compression="gzip")
    cohort, report, _ = _ingest(tmp_path, source="m", extra=["--source", "mimic"])
    assert _count(report, "gender", "rejected_value", "sex not F or M") == 1
    assert _count(report, "anchor_age", "rejected_value", "age below 0") >= 1
    assert cohort.stays["sex"].isna().sum() >= 1 and cohort.stays["age"].isna().sum() >= 1


def test_ingest_report_has_the_cohort_flow(tmp_path):
    write_psv(tmp_path / "psv" / "p000001.psv", good_psv_rows())
    write_psv(tmp_path / "psv" / "p000002.psv", good_psv_rows(septic_from=2))
    (tmp_path / "psv" / "p000003.psv").write_text("")
    _, report, _ = _ingest(tmp_path)
    flow = {(r["stage"], r["reason"]): (r["n_stays"], r["n_septic"]) for r in report["flow"]}
    assert flow[("read", ".psv files (one stay each)")] == (3, None)
    assert flow[("excluded", "file rejected: empty file")] == (1, None)
    assert flow[("cohort", "stays in the cohort")] == (2, 1)


def test_debug_shows_the_traceback_of_an_expected_error(fx, tmp_path):
    code, out, err, _ = invoke(["--debug", "report", str(fx.root / "partial_run")])
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_mimic_iii_demo_flow_names_stays_whose_onset_precedes_the_first_screen(mimic_demo_dir):
    from ehr.flow import cohort_flow
    from ehr.screens import build_screens
    from ehr.sources.mimic import read_mimic

    cohort = read_mimic(mimic_demo_dir)
    rows = build_screens(cohort.events, cohort.stays, until_onset=False)
    flow = cohort_flow(cohort.stays, rows).set_index("stage")
    late = flow.loc["onset before the first screen"]
    assert late["n_septic"] > 0
    lost = flow.loc[["no hourly screen", "onset before the first screen"], "n_septic"].sum() \
        if "no hourly screen" in flow.index else late["n_septic"]
    assert lost + flow.loc["screened", "n_septic"] == int(cohort.stays["sepsis"].sum())
    # screens built until onset have no row for those stays; the events say they were measured
    until = build_screens(cohort.events, cohort.stays)
    again = cohort_flow(cohort.stays, until, with_events=cohort.events["stay_id"].unique()).set_index("stage")
    assert again.loc["onset before the first screen", "n_septic"] == late["n_septic"]
    assert {r["stage"] for r in cohort.report.flow} >= {"read", "cohort"}


def test_fhir_readings_share_the_unit_shift_checks(tmp_path):
    """FHIR observations go through the same per-field checks: ionised calcium labelled mg/dL is a shift."""
    import datetime as dt

    from tests.service.conftest import bundle_24h, observation

    bundle = bundle_24h()
    end = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
    for i, value in enumerate([1.15, 1.2, 1.1, 9.1, 8.8], start=900):
        bundle["entry"].append(observation(i, "17861-6", value, "mg/dL", end - dt.timedelta(hours=i - 890)))
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    cohort, report, err = _ingest(tmp_path, source="b.json", extra=["--source", "fhir"])
    ca = cohort.events.loc[cohort.events["concept"] == "calcium", "numeric_value"]
    assert len(ca) == 5 and ca.between(8, 10).all()
    assert report["unit_shifts"][0]["applied"] and "unit shift: calcium" in err
    assert {r["stage"] for r in report["flow"]} == {"read", "cohort"}
