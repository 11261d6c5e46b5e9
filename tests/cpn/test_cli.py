"""The cpn CLI commands end to end on a tiny sampled screens file."""

from __future__ import annotations

from typer.testing import CliRunner

from sepsiscope.cli import app


def test_train_and_explain(tmp_path, sampled_screens):
    path = tmp_path / "screens.parquet"
    sampled_screens.iloc[:1500].to_parquet(path)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "cpn", "--screens", str(path), "--out", str(tmp_path / "m"),
                              "--max-iter", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["explain", "--model", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "hr" in res.output and "group multipliers" in res.output
    stay = int(sampled_screens.stay_id.iloc[0])
    res = runner.invoke(app, ["explain", str(stay), "--model", str(tmp_path / "m"), "--screens", str(path)])
    assert res.exit_code == 0, res.output
    assert "total log10 B(E)" in res.output and "P(sepsis within 48 h)" in res.output
