"""The main job end to end on a tiny synthetic cohort, and the data CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.schema import validate
from sepsiscope.cli import app
from sepsiscope.pipeline import RunConfig, run_main_job
from ehr.splits import split_patients

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(n_stays=300, seed=3, n_boot=20, cpn_half_lives="prior", cpn_max_iter=5,
                    gbdt_n_estimators=40)
    report = run_main_job(out, cfg)
    return out, report


@pytest.mark.slow
def test_main_job_writes_a_complete_run_directory(tiny_run):
    out, report = tiny_run
    assert report == out / "report.html" and report.stat().st_size > 10_000
    for name in ("run.json", "predictions.parquet", "alarms.parquet", "screens.parquet", "stays.parquet",
                 "main_table.csv", "operating_points.json", "timeliness.csv", "models/cpn/model.json",
                 "test_screens.parquet", "models/gbdt/model.json"):
        assert (out / name).exists(), name
    pred = validate(pd.read_parquet(out / "predictions.parquet"), "predictions")
    assert set(pred.model) == {"cpn", "lightgbm", "news2"}
    assert set(pred.split) == {"dev", "test"}
    validate(pd.read_parquet(out / "alarms.parquet"), "alarms")
    main = pd.read_csv(out / "main_table.csv")
    assert set(main.model) == {"cpn", "lightgbm", "news2"}
    assert set(main.operating_point) == {"news2>=5", "news2>=7", "sens85"}
    # NEWS2 keeps its own cut-offs; the others are matched on dev
    assert main.query("model == 'news2'").threshold.tolist() == [5.0, 7.0, main.query(
        "model == 'news2' and operating_point == 'sens85'").threshold.item()]
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["seed"] == 3 and info["seeds"]["split"] == 3
    assert info["versions"]["numpy"] and "results" in info and info["cpn_half_lives_h"]
    # the CPN trains on every training screen by default
    assert info["config"]["cpn_max_rows"] is None
    split = pd.read_parquet(out / "screens.parquet", columns=["split"]).split
    assert info["cpn_n_train_rows"] == int((split == "train").sum()) > 0
    html = report.read_text()
    assert "http://" not in html and "https://" not in html


@pytest.mark.slow
def test_test_split_patients_never_trained_on(tiny_run):
    out, _ = tiny_run
    screens = pd.read_parquet(out / "screens.parquet")
    by_subject = screens.groupby("subject_id")["split"].nunique()
    assert (by_subject == 1).all()
    pred = pd.read_parquet(out / "predictions.parquet")
    assert not set(pred.stay_id) & set(screens.loc[screens.split == "train", "stay_id"])


def test_split_is_seeded_stratified_and_by_patient():
    stays = pd.DataFrame({"subject_id": [i // 2 for i in range(400)], "stay_id": range(400),
                          "sepsis": [i % 10 == 0 for i in range(400)]})
    a = split_patients(stays, seed=1)
    assert a.equals(split_patients(stays, seed=1))
    assert not a.equals(split_patients(stays, seed=2))
    per_subject = stays.assign(split=a.to_numpy()).groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    septic_test = stays.sepsis[a.to_numpy() == "test"].mean()
    assert 0.05 < septic_test < 0.2
    with pytest.raises(ValueError):
        split_patients(stays, dev_fraction=0.6, test_fraction=0.5)


def test_cli_simulate_screens_predict(tmp_path, tiny_run):
    cohort = tmp_path / "cohort"
    r = runner.invoke(app, ["simulate", "--n-stays", "60", "--seed", "1", "--out", str(cohort), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["screens", str(cohort), "--no-progress"])
    assert r.exit_code == 0, r.output
    screens = pd.read_parquet(cohort / "screens.parquet")
    assert len(screens) > 100 and {"hr", "hr_age_h", "label", "new_data"} <= set(screens.columns)
    run_dir, _ = tiny_run
    for model in ("cpn", "gbdt"):
        out = tmp_path / f"{model}.parquet"
        r = runner.invoke(app, ["predict", str(run_dir / "models" / model), "--screens", str(cohort / "screens.parquet"),
                                "--out", str(out), "--no-progress"])
        assert r.exit_code == 0, r.output
        p = validate(pd.read_parquet(out), "predictions")
        assert len(p) == len(screens) and p.risk.between(0, 1).all()


def test_cli_ingest_physionet_bad_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    r = runner.invoke(app, ["ingest", str(bad), "--out", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 1  # a data error: the file exists but cannot be read
    assert "bad.zip" in r.output and not (tmp_path / "c").exists()


def test_cli_report_rewrites_html(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.exists() and "<img" in out.read_text()


def test_run_reports_auroc_within_hours_bands_and_context_as_top_factor(tiny_run):
    """The clock-versus-physiology tables (evaluation.stratified) are written and shown in the report."""
    out, report = tiny_run
    bands = pd.read_csv(out / "tables" / "auroc_by_hours_band.csv")
    assert set(bands.model) == {"cpn", "lightgbm", "news2"} and set(bands.split) == {"test"}
    for _, g in bands.groupby("model"):
        mean = g[g.band == "positives-weighted mean"]
        parts = g[g.band != "positives-weighted mean"]
        assert len(mean) == 1 and mean.n_positive.iloc[0] == parts.n_positive.sum()
        assert mean.auroc.iloc[0] == pytest.approx((parts.auroc * parts.n_positive).sum() / parts.n_positive.sum())
    share = pd.read_csv(out / "tables" / "context_top_share.csv")
    cpn = share[share.model == "cpn"]
    assert len(cpn) and (cpn.n_explained <= cpn.n_alarms).all() and cpn.context_top_share.between(0, 1).all()
    assert "auroc_by_hours_band" in report.read_text() and "context_top_share" in report.read_text()
