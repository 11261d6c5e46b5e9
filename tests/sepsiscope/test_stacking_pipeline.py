"""The main job with ``--models cpn,gbdt,stack``: out-of-fold member predictions on train, a stack fitted on
them only, evaluated like its members; ``train stack``, ``predict --oof/--predictions`` and ``explain``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.schema import validate
from fusion.stacking import StackClassifier
from sepsiscope.cli import app
from sepsiscope.models import load_model
from sepsiscope.pipeline import RunConfig, run_main_job

runner = CliRunner()
HORIZON_H = 24.0


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stackrun")
    # a horizon other than the default: the stack must learn the members' label, not 48 h
    cfg = RunConfig(n_stays=300, seed=3, n_boot=20, cpn_half_lives="prior", cpn_max_iter=5, gbdt_n_estimators=40,
                    models=("cpn", "gbdt", "stack"), oof_folds=3, horizon_h=HORIZON_H)
    run_main_job(out, cfg)
    return out


@pytest.mark.slow
def test_members_get_out_of_fold_predictions_on_train_only(stack_run):
    pred = validate(pd.read_parquet(stack_run / "predictions.parquet"), "predictions")
    screens = pd.read_parquet(stack_run / "screens.parquet")
    train = pred[pred.split == "train"]
    assert set(train.model) == {"cpn", "lightgbm", "news2"}            # the stack has no train rows
    for m in ("cpn", "lightgbm"):
        rows = train[train.model == m]
        assert rows["fold"].notna().all() and sorted(rows["fold"].unique()) == [0, 1, 2]
        assert len(rows) == (screens.split == "train").sum()
    assert train.loc[train.model == "news2", "fold"].isna().all()
    on = train.merge(screens[["stay_id", "screen_time", "split", "subject_id"]], on=["stay_id", "screen_time"],
                     suffixes=("", "_screen"))
    assert (on["split_screen"] == "train").all() and len(on) == len(train)
    assert (on[on.model == "cpn"].groupby("subject_id")["fold"].nunique() == 1).all()
    assert pred.loc[pred.split != "train", "fold"].isna().all()


@pytest.mark.slow
def test_the_stack_is_fitted_on_out_of_fold_rows_and_scores_dev_and_test(stack_run):
    pred = pd.read_parquet(stack_run / "predictions.parquet")
    screens = pd.read_parquet(stack_run / "screens.parquet")
    saved = load_model(stack_run / "models" / "stack")
    # refitting on the train split's out-of-fold rows alone gives the saved stack: dev never entered it
    again = StackClassifier(random_state=3).fit_predictions(pred[pred.split == "train"], screens, horizon_h=HORIZON_H)
    at_48 = StackClassifier(random_state=3).fit_predictions(pred[pred.split == "train"], screens, horizon_h=48.0)
    assert not np.allclose(at_48.coef_, saved.coef_)
    assert np.allclose(again.coef_, saved.coef_) and again.intercept_ == pytest.approx(saved.intercept_)
    for split in ("dev", "test"):
        mine = pred[(pred.model == "stack") & (pred.split == split)].reset_index(drop=True)
        assert len(mine) == (screens.split == split).sum()
        redo = saved.predictions_from(pred[pred.model != "stack"], screens[screens.split == split], split=split)
        assert np.allclose(mine["risk"], redo["risk"])


@pytest.mark.slow
def test_the_stack_is_evaluated_and_reported_like_its_members(stack_run):
    main = pd.read_csv(stack_run / "main_table.csv")
    assert set(main.model) == {"cpn", "lightgbm", "news2", "stack"}
    diffs = pd.read_csv(stack_run / "paired_differences.csv")  # every pair, the stack's included
    assert {("stack", m) for m in ("cpn", "lightgbm", "news2")} <= set(zip(diffs.model_a, diffs.model_b)) | \
        set(zip(diffs.model_b, diffs.model_a))
    coefs = pd.read_csv(stack_run / "tables" / "stack_coefficients.csv")
    assert list(coefs.member) == ["cpn", "lightgbm", "news2"] and coefs["share"].sum() == pytest.approx(1)
    info = json.loads((stack_run / "run.json").read_text())
    assert info["config"]["oof_folds"] == 3 and [c["member"] for c in info["stack_coefficients"]] == list(coefs.member)
    assert "out-of-fold cpn (3 folds)" in info["config"]["timings"]
    ex = validate(pd.read_parquet(stack_run / "explanations.parquet"), "explanations")
    stack_ex = ex[ex.model == "stack"]
    assert set(stack_ex.feature) == {"cpn", "lightgbm", "news2", "total"}
    html = (stack_run / "report.html").read_text()
    assert "stack_coefficients" in html and "coefficient_per_sd" in html


@pytest.mark.slow
def test_cli_train_stack_explain_and_predict(stack_run, tmp_path):
    pred, screens = stack_run / "predictions.parquet", stack_run / "screens.parquet"
    out = tmp_path / "stack"
    r = runner.invoke(app, ["train", "stack", "--predictions", str(pred), "--screens", str(screens), "--out", str(out),
                            "--horizon-h", str(HORIZON_H),
                            "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "lightgbm" in r.output and "share" in r.output
    assert np.allclose(load_model(out).coef_, load_model(stack_run / "models" / "stack").coef_)
    assert json.loads((out / "run.json").read_text())["config"]["command"] == "train stack"

    r = runner.invoke(app, ["explain", "--model", str(out)])
    assert r.exit_code == 0, r.output
    assert "cpn" in r.output and "intercept" in r.output
    alarms = pd.read_parquet(stack_run / "alarms.parquet")
    stay = int(alarms[alarms.fired & (alarms.model == "stack")].stay_id.iloc[0])
    r = runner.invoke(app, ["explain", str(stay), "--model", str(out), "--predictions", str(pred)])
    assert r.exit_code == 0, r.output
    assert f"stay {stay}" in r.output and "total" in r.output
    r = runner.invoke(app, ["explain", str(stay), "--model", str(out)])
    assert r.exit_code != 0 and "--predictions" in r.output

    p_out = tmp_path / "p.parquet"
    r = runner.invoke(app, ["predict", str(out), "--screens", str(screens), "--predictions", str(pred),
                            "--out", str(p_out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert len(validate(pd.read_parquet(p_out), "predictions")) == len(pd.read_parquet(screens))
    r = runner.invoke(app, ["predict", str(out), "--screens", str(screens), "--no-progress"])
    assert r.exit_code == 2 and "pass --predictions" in _text(r)


@pytest.mark.slow
def test_cli_train_stack_bad_input_names_what_is_missing(stack_run, tmp_path):
    pred, screens = stack_run / "predictions.parquet", stack_run / "screens.parquet"
    base = ["train", "stack", "--predictions", str(pred), "--screens", str(screens), "--out", str(tmp_path / "s")]
    r = runner.invoke(app, base + ["--members", "cpn,sequence"])
    assert r.exit_code == 2 and "'sequence'" in _text(r) and not (tmp_path / "s").exists()
    r = runner.invoke(app, base + ["--split", "dev"])                  # dev rows are not out-of-fold
    assert r.exit_code == 2 and "member 'cpn' has" in _text(r) and "not out-of-fold" in _text(r)
    p = pd.read_parquet(pred)
    a_train_stay = p.loc[p.split == "train", "stay_id"].iloc[0]
    some = p[~((p.model == "lightgbm") & (p.stay_id == a_train_stay))]
    cut = tmp_path / "cut.parquet"
    some.to_parquet(cut)
    r = runner.invoke(app, ["train", "stack", "--predictions", str(cut), "--screens", str(screens),
                            "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "member 'lightgbm' has no prediction for" in _text(r)
    r = runner.invoke(app, base + ["--meta", "forest"])
    assert r.exit_code != 0 and "--meta" in r.output


def test_cli_predict_oof_refits_a_saved_models_settings(tmp_path):
    from gbdt._demo import demo_screens
    from gbdt.model import GBDTClassifier

    s = demo_screens(n_stays=40, seed=2)
    s.to_parquet(tmp_path / "s.parquet")
    GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s).save(tmp_path / "gbdt")
    out = tmp_path / "oof.parquet"
    r = runner.invoke(app, ["predict", str(tmp_path / "gbdt"), "--screens", str(tmp_path / "s.parquet"),
                            "--oof", "4", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    p = validate(pd.read_parquet(out), "predictions")
    assert sorted(p.fold.unique()) == [0, 1, 2, 3] and set(p.split) == {"train"} and len(p) == len(s)
    r = runner.invoke(app, ["predict", str(tmp_path / "gbdt"), "--screens", str(tmp_path / "s.parquet"),
                            "--oof", "1", "--no-progress"])
    assert r.exit_code == 2 and "at least 2 folds" in _text(r)


def test_cli_run_rejects_unknown_stack_options():
    r = runner.invoke(app, ["run", "--models", "cpn,stack", "--stack-meta", "forest", "--no-progress"])
    assert r.exit_code != 0 and "--stack-meta" in r.output
    r = runner.invoke(app, ["run", "--models", "cpn,stack", "--oof-folds", "1", "--no-progress"])
    assert r.exit_code != 0 and "--oof-folds" in r.output
