"""The one Cohort type (ehr/cohort.py): every source returns it; one on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ehr.cohort import Cohort
from ehr.schema import SchemaError
from ehr.sources.mimic import read_mimic
from ehr.sources.physionet import HEADER, read_physionet
from ehr.synthetic import generate_cohort

FIXTURE4 = Path(__file__).parent / "fixtures" / "mimic4"


def _psv(tmp_path) -> Path:
    d = tmp_path / "psv"
    d.mkdir()
    rows = []
    for i in range(1, 4):
        row = {h: "NaN" for h in HEADER} | {"Age": "70", "Gender": "0", "Unit1": "1", "Unit2": "0",
                                            "HospAdmTime": "-2", "ICULOS": str(i), "HR": str(90 + i),
                                            "Temp": "101.3" if i == 2 else "NaN", "SepsisLabel": str(int(i == 3))}
        rows.append("|".join(row[h] for h in HEADER))
    (d / "p000007.psv").write_text("|".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    return d


def _assert_same(a: Cohort, b: Cohort) -> None:
    assert list(a.tables()) == list(b.tables())
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(table, getattr(b, name), obj=name)
    assert a.meta == b.meta


def test_every_source_returns_a_cohort_that_survives_save_and_load(tmp_path):
    for name, cohort in (("physionet", read_physionet(_psv(tmp_path))), ("mimic", read_mimic(FIXTURE4)),
                         ("synthetic", generate_cohort(15, seed=4))):
        assert isinstance(cohort, Cohort)
        back = Cohort.load(cohort.save(tmp_path / name))
        _assert_same(cohort, back)
        if cohort.report is None:
            assert back.report is None and not (tmp_path / name / "ingest_report.json").exists()
        else:  # the ingest report comes back whole, with its counts and examples
            assert back.report == cohort.report
    assert back.truth is not None and back.meta["source"] == "synthetic"


def test_reader_meta_and_report(tmp_path):
    pn = read_physionet(_psv(tmp_path))
    assert pn.meta == {"source": "physionet2019", "path": str(tmp_path / "psv")}
    assert pn.report.count("repaired") == 1 and pn.cxr is None and pn.truth is None
    m = read_mimic(FIXTURE4, definition="physionet2019")
    assert m.meta["source"] == "mimic4" and m.meta["definition"] == "physionet2019"
    assert m.report.definition["name"] == "physionet2019" and m.report.timings["total"] >= 0
    assert "suspicion_time" in m.stays.columns
    assert repr(m) == "Cohort(source='mimic4', stays=2, events=50)"


def test_save_replaces_a_cohort_directory_as_a_whole(tmp_path):
    d = tmp_path / "c"
    generate_cohort(10, seed=1).save(d)
    (d / "screens.parquet").write_text("screens of the old cohort")
    new = generate_cohort(12, seed=2)
    new.save(d)
    assert not (d / "screens.parquet").exists()
    assert Cohort.load(d).meta["n_stays"] == 12


def test_a_failed_save_leaves_the_old_cohort(tmp_path):
    d = tmp_path / "c"
    old = generate_cohort(10, seed=1)
    old.save(d)
    bad = generate_cohort(10, seed=2)
    bad.stays.loc[3, "admit_time"] = pd.NaT
    with pytest.raises(SchemaError, match=r"stays \(.*stays.parquet\): column 'admit_time' is null at row 3"):
        bad.save(d)
    _assert_same(old, Cohort.load(d))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary directory left behind


def test_save_refuses_to_replace_a_directory_that_is_not_a_cohort(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no cohort.json; refusing"):
        generate_cohort(5, seed=0).save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cohort.json: no such file; .* is not a cohort directory"):
        Cohort.load(tmp_path)
    d = generate_cohort(8, seed=3).save(tmp_path / "c")
    (d / "cxr.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"cxr.parquet: no such file \(expected a 'cxr' parquet table\)"):
        Cohort.load(d)
    doc = json.loads((d / "cohort.json").read_text())
    (d / "cohort.json").write_text(json.dumps(doc | {"format_version": 99}))
    with pytest.raises(ValueError, match="cohort format_version 99, this reader reads 1"):
        Cohort.load(d)
    (d / "cohort.json").write_text(json.dumps(doc | {"tables": ["stays"]}))
    with pytest.raises(ValueError, match=r"'tables' must list \['events', 'stays'\]"):
        Cohort.load(d)
    (d / "cohort.json").write_text(json.dumps(doc | {"tables": ["events", "stays"]}))
    events = pd.read_parquet(d / "events.parquet")
    events.loc[5, "code"] = None
    events.to_parquet(d / "events.parquet")
    with pytest.raises(SchemaError, match=r"events \(.*events.parquet\): column 'code' is null at row 5"):
        Cohort.load(d)


def test_cli_simulate_writes_a_cohort_and_refuses_a_foreign_directory(tmp_path):
    from typer.testing import CliRunner

    from sepsiscope.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--n-stays", "12", "--seed", "3", "--out", str(tmp_path / "c"),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    _assert_same(generate_cohort(12, seed=3), Cohort.load(tmp_path / "c"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["simulate", "--n-stays", "5", "--out", str(tmp_path / "mine"), "--no-progress"])
    assert res.exit_code == 2 and "refusing to replace" in res.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
