"""The main job with ``--models sequence,fusion,stack`` on a tiny synthetic cohort folder: CXR embeddings from an
encoder trained on train-split films only, every member predicted, stacked, explained and reported; fusion
refused on a source without chest X-rays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.schema import validate
from sepsiscope.cli import app
from sepsiscope.models import load_model

runner = CliRunner()


def _text(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    """A simulated (synthetic) cohort folder, run with the deep members and a stack of them."""
    d = tmp_path_factory.mktemp("deeprun")
    res = runner.invoke(app, ["simulate", "--n-stays", "150", "--seed", "3", "--out", str(d / "cohort")])
    assert res.exit_code == 0, res.output
    out = d / "run"
    res = runner.invoke(app, ["run", "--out", str(out), "--cohort", str(d / "cohort"), "--seed", "3",
                              "--n-boot", "10", "--subgroup-n-boot", "5", "--models", "cpn,sequence,fusion,stack",
                              "--cpn-max-iter", "2", "--deep-epochs", "1", "--deep-hidden", "4",
                              "--fusion-strategy", "late", "--cxr-encoder-epochs", "1", "--oof-folds", "2",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_every_member_is_predicted_stacked_and_reported(deep_run):
    pred = validate(pd.read_parquet(deep_run / "predictions.parquet"), "predictions")
    screens = pd.read_parquet(deep_run / "screens.parquet")
    for model in ("sequence", "fusion_late", "stack", "news2"):
        for split in ("dev", "test"):
            rows = pred[(pred.model == model) & (pred.split == split)]
            assert len(rows) > 0 and (model == "news2" or rows["risk"].between(0, 1).all()), (model, split)
    for model in ("sequence", "fusion_late"):   # the stack's members: out-of-fold rows on every train screen
        rows = pred[(pred.model == model) & (pred.split == "train")]
        assert len(rows) == (screens.split == "train").sum() and sorted(rows["fold"].unique()) == [0, 1]
    coefs = pd.read_csv(deep_run / "tables" / "stack_coefficients.csv")
    assert list(coefs.member) == ["cpn", "sequence", "fusion_late", "news2"]
    main = pd.read_csv(deep_run / "main_table.csv")
    assert {"cpn", "sequence", "fusion_late", "stack", "news2"} <= set(main.model)   # the CPN ignores the films
    report = (deep_run / "report.html").read_text()
    assert "fusion_late" in report and "sequence" in report
    info = json.loads((deep_run / "run.json").read_text())
    assert info["config"]["deep_epochs"] == 1 and info["config"]["fusion_strategy"] == "late"
    assert info["fusion_late_epochs"] >= 1 and info["sequence_epochs"] >= 1


@pytest.mark.slow
def test_the_cxr_encoder_saw_training_films_only(deep_run):
    emb = pd.read_parquet(deep_run / "cxr" / "cxr_embeddings.parquet")
    split = pd.read_parquet(deep_run / "stays.parquet").set_index("stay_id")["split"]
    where = emb["stay_id"].map(split)
    assert set(where) == {"train", "dev", "test"}          # every study is embedded ...
    info = json.loads((deep_run / "run.json").read_text())["cxr_embeddings"]
    assert info["studies"] == len(emb)
    assert info["encoder_training_studies"] == (where == "train").sum() < len(emb)   # ... only train's teach


@pytest.mark.slow
def test_saved_deep_models_score_the_runs_test_screens_with_predict(deep_run, tmp_path):
    pred = pd.read_parquet(deep_run / "predictions.parquet")
    for folder, name in (("sequence", "sequence"), ("fusion", "fusion_late")):
        out = tmp_path / f"{folder}.parquet"
        res = runner.invoke(app, ["predict", str(deep_run / "models" / folder), "--screens",
                                  str(deep_run / "test_screens.parquet"), "--out", str(out), "--no-progress"])
        assert res.exit_code == 0, res.output
        mine = pred[(pred.model == name) & (pred.split == "test")]
        again = pd.read_parquet(out).merge(mine, on=["stay_id", "screen_time"], suffixes=("", "_run"))
        assert len(again) == len(mine) and np.allclose(again["risk"], again["risk_run"], atol=1e-6)
    assert load_model(deep_run / "models" / "fusion").strategy == "late"


@pytest.mark.slow
def test_deep_models_explain_the_test_alarms_from_each_stays_history(deep_run):
    ex = validate(pd.read_parquet(deep_run / "explanations.parquet"), "explanations")
    alarms = pd.read_parquet(deep_run / "alarms.parquet")
    fired = alarms[alarms.fired][["stay_id", "screen_time"]].drop_duplicates()
    for model in ("sequence", "fusion_late"):
        mine = ex[ex.model == model]
        keys = mine[["stay_id", "screen_time"]].drop_duplicates()
        assert len(keys) == len(fired) and (mine.feature == "total").sum() == len(fired)
    assert ex.loc[ex.model == "fusion_late", "feature"].str.startswith("cxr_image_").any()


@pytest.mark.parametrize("source", [["--physionet"], ["--mimic"]])
def test_fusion_on_a_source_without_chest_xrays_is_a_usage_error(tmp_path, source):
    data = tmp_path / "data"
    data.mkdir()
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), *source, str(data), "--models",
                              "gbdt,fusion", "--no-progress"])
    assert res.exit_code == 2 and "no chest X-ray studies" in _text(res), res.output
    assert not (tmp_path / "run").exists()


def test_fusion_on_a_cohort_without_chest_xrays_or_with_dask_and_a_bad_cohort_are_refused(tmp_path):
    res = runner.invoke(app, ["simulate", "--n-stays", "20", "--out", str(tmp_path / "cohort")])
    assert res.exit_code == 0, res.output
    (tmp_path / "cohort" / "cxr.parquet").unlink()
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--cohort", str(tmp_path / "cohort"),
                              "--models", "fusion", "--no-progress"])
    assert res.exit_code == 2 and "has no chest X-ray studies" in _text(res), res.output
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--dask", "local", "--models", "sequence",
                              "--no-progress"])
    assert res.exit_code == 2 and "sequence in --models" in _text(res), res.output
    (tmp_path / "cohort" / "cohort.json").write_text("{")
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--cohort", str(tmp_path / "cohort"),
                              "--no-progress"])
    assert res.exit_code == 1 and "cohort.json: not valid JSON" in _text(res), res.output


def test_fusion_with_an_external_source_or_a_bad_strategy_is_a_usage_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--external-mimic", str(data), "--models",
                              "fusion", "--no-progress"])
    assert res.exit_code == 2 and "external" in _text(res)
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--models", "fusion", "--fusion-strategy",
                              "deep", "--no-progress"])
    assert res.exit_code == 2 and "--fusion-strategy" in _text(res)
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--models", "sequence", "--deep-epochs", "0",
                              "--no-progress"])
    assert res.exit_code == 2 and "--deep-epochs" in _text(res)
