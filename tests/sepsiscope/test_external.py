"""External validation end to end: train on one synthetic site's ingested cohort, evaluate unchanged on another."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.synthetic import generate_cohort
from evaluation.rundir import operating_points_frame
from sepsiscope.cli import app
from sepsiscope.pipeline import RunConfig, run_main_job

runner = CliRunner()


@pytest.fixture(scope="module")
def external_run(tmp_path_factory):
    """Site A (seed 3) trains and picks thresholds; site B (seed 4: other case mix, habits, prevalence) is external."""
    base = tmp_path_factory.mktemp("external")
    generate_cohort(220, seed=3).save(base / "site_a")
    generate_cohort(140, seed=4, site="B").save(base / "site_b")
    cfg = RunConfig(source="cohort", path=str(base / "site_a"), external_source="cohort",
                    external_path=str(base / "site_b"), seed=3, n_boot=10, subgroup_n_boot=5,
                    cpn_half_lives="prior", cpn_max_iter=5, gbdt_n_estimators=30)
    run_main_job(base / "run", cfg)
    return base / "run"


@pytest.mark.slow
def test_external_split_scored_with_the_dev_thresholds(external_run):
    pred = pd.read_parquet(external_run / "predictions.parquet")
    stays = pd.read_parquet(external_run / "stays.parquet")
    assert set(pred["split"]) == {"dev", "test", "external"}
    ext = stays[stays["split"] == "external"]
    assert len(ext) == 140 and set(ext["source"]) == {"synthetic-B"}
    # both sources number their stays from 200000: the external ones were moved out of the way
    assert not set(ext["stay_id"]) & set(stays.loc[stays["split"] != "external", "stay_id"])
    main = pd.read_csv(external_run / "main_table.csv")
    assert list(dict.fromkeys(main["split"])) == ["test", "external"]
    by_split = main.pivot_table(index=["model", "operating_point"], columns="split", values="threshold")
    assert (by_split["test"] == by_split["external"]).all()  # thresholds unchanged
    ops = operating_points_frame(json.loads((external_run / "operating_points.json").read_text()))
    assert set(ops["model"]) == {"cpn", "lightgbm", "news2"}
    info = json.loads((external_run / "run.json").read_text())
    assert info["evaluated"]["external"]["source"] == "cohort (synthetic, site B)"
    assert info["evaluated"]["test"]["source"] == "cohort (synthetic)"
    assert info["source_info"]["external"]["id_offset"] == 1_000_000


@pytest.mark.slow
def test_every_table_has_both_splits_and_split_counts(external_run):
    screens = pd.read_parquet(external_run / "screens.parquet")
    stays = pd.read_parquet(external_run / "stays.parquet")
    for name in ("paired_differences.csv", "curve_bands.csv", "alarm_burden.csv", "decision_curve.csv",
                 "subgroups.csv", "timeliness.csv", "calibration.csv"):
        assert set(pd.read_csv(external_run / name)["split"]) == {"test", "external"}, name
    sub = pd.read_csv(external_run / "subgroups.csv")
    overall = sub[sub["subgroup"] == "overall"].drop_duplicates("split").set_index("split")
    for split in ("test", "external"):
        ids = screens.loc[screens["split"] == split, "stay_id"].unique()
        assert overall.loc[split, "n_stays"] == len(ids)
        assert overall.loc[split, "n_septic"] == int(stays[stays["stay_id"].isin(ids)]["sepsis"].sum())
    flow = pd.read_csv(external_run / "cohort_flow.csv")
    assert set(flow["source"]) == {"internal", "external"}
    read = flow[flow["stage"] == "read"].set_index("source")["n_stays"]
    assert read["internal"] == 220 and read["external"] == 140


@pytest.mark.slow
def test_report_shows_internal_and_external_side_by_side(external_run):
    text = (external_run / "report.html").read_text()
    main = text.split("<h2>Main table</h2>")[1].split("</section>")[0]
    assert "Internal and external test side by side" in main
    assert "AUROC: internal test (cohort (synthetic))" in main
    assert "AUROC: external test (cohort (synthetic, site B))" in main
    assert text.count("roc_external") >= 1 and text.count("alarm_burden_external") >= 1


def test_cli_rejects_two_sources_and_unknown_exclusions(tmp_path):
    r = runner.invoke(app, ["run", "--physionet", str(tmp_path), "--cohort", str(tmp_path), "--out",
                            str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2 and "at most one training source" in r.output
    r = runner.invoke(app, ["run", "--external-mimic", str(tmp_path), "--external-cohort", str(tmp_path),
                            "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2 and "at most one external source" in r.output
    r = runner.invoke(app, ["run", "--exclusions", "smith2020", "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2 and "--exclusions" in r.output and "johnson2018" in r.output


def test_cli_simulate_site_b(tmp_path):
    from ehr.cohort import Cohort

    r = runner.invoke(app, ["simulate", "--n-stays", "40", "--seed", "2", "--site", "B", "--out",
                            str(tmp_path / "b"), "--no-progress"])
    assert r.exit_code == 0, r.output
    c = Cohort.load(tmp_path / "b")
    assert set(c.stays["source"]) == {"synthetic-B"} and c.meta["site"] == "B"
    r = runner.invoke(app, ["simulate", "--site", "C", "--out", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 2 and "--site" in r.output and "A, B" in r.output


def test_external_cohort_flow_counts_the_stays_read_before_exclusions(tmp_path):
    """The external flow starts from every stay read, so the exclusions show as rows of their own."""
    from sepsiscope.pipeline import _cohort_flow
    from sepsiscope.sources import external_split

    cohort = generate_cohort(60, seed=5)
    children = cohort.stays["stay_id"].iloc[:5]
    cohort.stays.loc[cohort.stays["stay_id"].isin(children), "age"] = 10.0
    cohort.save(tmp_path / "site_b")
    taken = generate_cohort(20, seed=6).stays
    ext = external_split("cohort", str(tmp_path / "site_b"), {}, taken, horizon_h=48.0, exclusions="johnson2018")
    assert len(ext.stays_read) == 60 and len(ext.stays) < 60
    assert set(children + ext.info["id_offset"]) <= set(ext.reasons.index)
    flow = _cohort_flow(ext.stays_read, ext.all_rows, ext.reasons, None, ext.info)
    assert flow.loc[flow["stage"] == "read", "n_stays"].iloc[0] == 60
    excluded = flow[flow["stage"].str.startswith("excluded")]
    assert excluded["n_stays"].sum() == 60 - len(ext.stays)
