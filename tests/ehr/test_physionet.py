"""PhysioNet 2019 reader: format, labels, every bad-input case, and the real set A."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from ehr.schema import validate
from ehr.screens import build_screens
from ehr.sources.physionet import EPOCH, HEADER, read_physionet
from ehr.sources.report import IngestError


def _row(**values) -> str:
    base = {h: "NaN" for h in HEADER}
    base.update({"Age": "65", "Gender": "1", "Unit1": "1", "Unit2": "0", "HospAdmTime": "-5",
                 "SepsisLabel": "0"})
    base.update({k: str(v) for k, v in values.items()})
    return "|".join(base[h] for h in HEADER)


def _write(tmp_path, name, rows, header=True):
    lines = (["|".join(HEADER)] if header else []) + rows
    (tmp_path / name).write_text("\n".join(lines) + "\n")


@pytest.fixture
def psv_dir(tmp_path):
    # stay 1: septic, first label at ICULOS 3 -> onset at hour 9
    _write(tmp_path, "p000001.psv", [_row(ICULOS=i, HR=80 + i, SepsisLabel=int(i >= 3)) for i in range(1, 6)])
    # stay 2: non-septic, a temperature in Fahrenheit and FiO2 in percent (both repaired)
    _write(tmp_path, "p000002.psv", [_row(ICULOS=1, Temp=37.0, Gender=0, Unit1=0, Unit2=1),
                                     _row(ICULOS=2, Temp=101.3, FiO2=40, Gender=0, Unit1=0, Unit2=1)])
    return tmp_path


def test_reads_directory_into_contract_tables(psv_dir):
    cohort = read_physionet(psv_dir)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    validate(events, "events")
    validate(stays, "stays")
    assert stays.stay_id.tolist() == [1, 2]
    assert stays.sex.tolist() == ["M", "F"]
    assert stays.department.tolist() == ["MICU", "SICU"]
    s1 = stays.set_index("stay_id").loc[1]
    assert s1.sepsis and s1.sepsis_label_time == EPOCH + pd.Timedelta(hours=3)
    assert s1.onset_time == EPOCH + pd.Timedelta(hours=9)  # first label + 6 h
    assert s1.hospital_admit_time == EPOCH - pd.Timedelta(hours=5)
    hr = events[events.concept == "hr"]
    assert hr.numeric_value.tolist() == [81, 82, 83, 84, 85]
    # ICULOS k is available at the end of ICU hour k
    assert (hr.time - EPOCH).dt.total_seconds().div(3600).tolist() == [1, 2, 3, 4, 5]
    assert report.rows_read == 7 and report.files_read == 2


def test_repairs_fahrenheit_and_percent_fio2_with_counts(psv_dir):
    cohort = read_physionet(psv_dir)
    events, report = cohort.events, cohort.report
    temp = events[(events.stay_id == 2) & (events.concept == "temp")].numeric_value.to_numpy()
    np.testing.assert_allclose(temp, [37.0, (101.3 - 32) * 5 / 9])
    fio2 = events[events.concept == "fio2"].numeric_value.tolist()
    assert fio2 == [0.40]
    assert report.count("repaired", "temperature in Fahrenheit") == 1
    assert report.count("repaired", "FiO2 given in percent") == 1
    ex = [p for p in report.examples if p.problem == "temperature in Fahrenheit"][0]
    assert (ex.file, ex.row, ex.field) == ("p000002.psv", 2, "Temp")


def test_out_of_range_value_rejected_and_counted(tmp_path):
    _write(tmp_path, "p000003.psv", [_row(ICULOS=1, HR=500, Resp=18)])
    cohort = read_physionet(tmp_path)
    events, report = cohort.events, cohort.report
    assert "hr" not in set(events.concept.dropna())
    assert events[events.concept == "resp"].numeric_value.tolist() == [18]
    assert report.count("rejected_value", "outside plausible range") == 1
    with pytest.raises(IngestError, match=r"p000003.psv, row 1, field HR"):
        read_physionet(tmp_path, errors="raise")


def test_non_numeric_cell_rejected_with_file_row_field(tmp_path):
    _write(tmp_path, "p000004.psv", [_row(ICULOS=1, HR=80), _row(ICULOS=2, HR="eighty", Resp=20)])
    cohort = read_physionet(tmp_path)
    events, report = cohort.events, cohort.report
    assert report.count("rejected_value", "non-numeric value") == 1
    ex = [p for p in report.examples if p.problem == "non-numeric value"][0]
    assert (ex.file, ex.row, ex.field) == ("p000004.psv", 2, "HR")
    assert events[events.concept == "resp"].numeric_value.tolist() == [20]  # the rest of the row stays
    with pytest.raises(IngestError, match=r"p000004.psv, row 2, field HR"):
        read_physionet(tmp_path, errors="raise")


@pytest.mark.parametrize("rows,problem", [
    (["-1", "1", "2"], "negative, fractional or missing ICULOS"),
    (["1", "2", "2"], "repeated or decreasing ICULOS"),
    (["1", "3", "2"], "repeated or decreasing ICULOS"),
])
def test_bad_iculos_rows_rejected(tmp_path, rows, problem):
    _write(tmp_path, "p000005.psv", [_row(ICULOS=i, HR=70) for i in rows])
    cohort = read_physionet(tmp_path)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    assert report.count("rejected_row", problem) == 1
    assert report.rows_read == 3
    assert len(events[events.concept == "hr"]) == 2
    with pytest.raises(IngestError, match="p000005.psv, row"):
        read_physionet(tmp_path, errors="raise")


@pytest.mark.parametrize("content,problem", [
    ("", "empty file"),
    ("|".join(HEADER) + "\n", "header only, no rows"),
    (_row(ICULOS=1) + "\n", "missing header (first line holds data)"),
    ("|".join(HEADER).replace("HR|", "Pulse|") + "\n" + _row(ICULOS=1) + "\n", "wrong header"),
])
def test_bad_files_rejected_and_reported(tmp_path, content, problem):
    _write(tmp_path, "p000001.psv", [_row(ICULOS=1, HR=70)])
    (tmp_path / "p000009.psv").write_text(content)
    cohort = read_physionet(tmp_path)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    assert stays.stay_id.tolist() == [1]
    assert report.count("rejected_file") == 1
    assert any(p.file == "p000009.psv" and p.problem.startswith(problem) for p in report.examples)
    with pytest.raises(IngestError, match="p000009.psv"):
        read_physionet(tmp_path, errors="raise")


def test_wrong_field_count_row_rejected(tmp_path):
    _write(tmp_path, "p000006.psv", [_row(ICULOS=1, HR=70), "1|2|3"])
    cohort = read_physionet(tmp_path)
    events, report = cohort.events, cohort.report
    assert report.count("rejected_row", "wrong number of fields") == 1
    assert len(events[events.concept == "hr"]) == 1


def test_corrupt_zip_raises(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(IngestError, match="broken.zip"):
        read_physionet(bad)


def test_zip_and_directory_agree(psv_dir, tmp_path_factory):
    z = tmp_path_factory.mktemp("z") / "set.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(psv_dir.glob("*.psv")):
            zf.write(f, f"training/{f.name}")
    cohort = read_physionet(psv_dir)
    e1, s1 = cohort.events, cohort.stays
    cohort = read_physionet(z)
    e2, s2 = cohort.events, cohort.stays
    pd.testing.assert_frame_equal(e1, e2)
    pd.testing.assert_frame_equal(s1, s2)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_set_a_counts(physionet_zip):
    cohort = read_physionet(physionet_zip)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    assert len(stays) == 20_336
    assert report.rows_read == 790_215
    assert int(stays.sepsis.sum()) == 1_790
    assert report.count("rejected_row") == 0 and report.count("rejected_file") == 0
    # rejected values are few and all reported
    assert 0 < report.count("rejected_value") < 2_000
    screens = build_screens(events, stays, until_onset=False)
    assert len(screens) == 790_215
    # the raw label round-trips: 1 from onset - 6 h onwards
    assert int(screens.sepsis_label.sum()) == 17_136
    # every septic stay's onset is the first labelled hour + 6 h
    septic = stays[stays.sepsis]
    assert ((septic.onset_time - septic.sepsis_label_time) == pd.Timedelta(hours=6)).all()
    validate(events.head(100_000), "events")
    validate(stays, "stays")


def test_rejected_iculos_row_does_not_reset_the_order_check(tmp_path):
    """ICULOS 1, 2, missing, 1, 3: the second 1 repeats an earlier hour and is rejected (review fix)."""
    _write(tmp_path, "p000007.psv", [_row(ICULOS=i, HR=70) for i in ("1", "2", "NaN", "1", "3")])
    cohort = read_physionet(tmp_path)
    events, report = cohort.events, cohort.report
    assert report.count("rejected_row", "repeated or decreasing ICULOS") == 1
    assert report.count("rejected_row", "negative, fractional or missing ICULOS") == 1
    hr = events[events.concept == "hr"]
    assert len(hr) == 3 and not hr.time.duplicated().any()
