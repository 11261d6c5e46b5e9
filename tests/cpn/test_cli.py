"""The cpn CLI commands end to end on a tiny sampled screens file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sepsiscope.cli import app


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sampled_screens):
    """(screens path, model dir, `train cpn` result) for a CPN fitted on 1,500 sampled screens."""
    tmp = tmp_path_factory.mktemp("cpn_cli")
    path = tmp / "screens.parquet"
    sampled_screens.iloc[:1500].to_parquet(path)
    res = CliRunner().invoke(app, ["train", "cpn", "--screens", str(path), "--out", str(tmp / "m"),
                                   "--max-iter", "3", "--no-progress"])
    return path, tmp / "m", res


def test_train_and_explain(trained, sampled_screens):
    path, model, res = trained
    assert res.exit_code == 0, res.output
    # run.json travels inside the model directory (one atomic write), listed with its sha256
    meta = json.loads((model / "model.json").read_text())
    run = json.loads((model / "run.json").read_text())
    assert "run.json" in meta["files"] and run["complete"] and run["config"]["params"]["max_iter"] == 3
    assert run["inputs"]["screens"]["sha256"]
    # every screen by default, and the command says so
    assert run["config"]["params"]["max_rows"] is None and run["n_train_rows"] == run["n_screens"] == 1500
    assert "trained on 1,500 of 1,500 screens\n" in res.output
    runner = CliRunner()
    res = runner.invoke(app, ["explain", "--model", str(model)])
    assert res.exit_code == 0, res.output
    assert "hr" in res.output and "group multipliers" in res.output
    stay = int(sampled_screens.stay_id.iloc[0])
    res = runner.invoke(app, ["explain", str(stay), "--model", str(model), "--screens", str(path)])
    assert res.exit_code == 0, res.output
    assert "total log10 B(E)" in res.output and "P(sepsis within 48 h)" in res.output


def test_explain_refuses_screens_without_measurements(trained, tmp_path, sampled_screens):
    """A run directory's screens.parquet keeps only keys and labels: explaining from it would show
    context alone, so the command says so instead."""
    _, model, res = trained
    assert res.exit_code == 0, res.output
    keys = tmp_path / "keys.parquet"
    sampled_screens.iloc[:1500][["stay_id", "screen_time", "hours_since_admit", "age", "department"]] \
        .to_parquet(keys)
    stay = int(sampled_screens.stay_id.iloc[0])
    res = CliRunner().invoke(app, ["explain", str(stay), "--model", str(model), "--screens", str(keys)])
    assert res.exit_code != 0 and "missing column(s)" in res.output and "explanations.parquet" in res.output


def test_train_with_max_rows_says_how_many_it_used(tmp_path, sampled_screens):
    path = tmp_path / "screens.parquet"
    sampled_screens.iloc[:1500].to_parquet(path)
    res = CliRunner().invoke(app, ["train", "cpn", "--screens", str(path), "--out", str(tmp_path / "m"),
                                   "--max-iter", "1", "--max-rows", "700", "--no-progress"])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    n = run["n_train_rows"]
    assert 0 < n < 1500 and run["n_screens"] == 1500 and run["config"]["params"]["max_rows"] == 700
    assert f"trained on {n:,} of 1,500 screens (--max-rows 700, drawn by stay)" in res.output
