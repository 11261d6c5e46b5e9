import json

import pandas as pd
import typer
from typer.testing import CliRunner

from gbdt import GBDTClassifier
from sepsiscope.commands.gbdt import register


def _app():
    from sepsiscope.errors import SepsisGroup

    app, train_app = typer.Typer(cls=SepsisGroup), typer.Typer()
    app.add_typer(train_app, name="train")
    register(app, train_app)
    return app


def test_train_gbdt_writes_model_grid_and_run(tiny_screens, tmp_path, monkeypatch):
    import gbdt.search

    small = {"max_depth": [2], "n_estimators": [5, 10], "reg_alpha": [0.0], "reg_lambda": [1.0]}
    monkeypatch.setitem(gbdt.search.__dict__, "DEFAULT_GRID", small)
    path = tmp_path / "screens.parquet"
    tiny_screens.to_parquet(path)
    out = tmp_path / "run"
    res = CliRunner().invoke(_app(), ["train", "gbdt", "--screens", str(path), "--out", str(out),
                                      "--backend", "xgboost", "--trend", "--folds", "3",
                                      "--device", "cpu", "--extend-edges", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    grid = pd.read_csv(out / "grid_results.csv")
    assert len(grid) == 2  # the grid as given (widening is tested in test_search)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["backend"] == "xgboost" and run["inputs"]["screens"]["sha256"]
    assert run["config"]["extend_edges"] == 0
    model = GBDTClassifier.load(out)
    assert model.backend == "xgboost" and model.trend
    assert model.n_estimators_ == int(grid.iloc[0]["n_estimators"])
    assert model.predict_proba(tiny_screens).shape == (len(tiny_screens), 2)


def test_train_gbdt_bad_input_exits_with_message(tiny_screens, tmp_path):
    path = tmp_path / "screens.parquet"
    tiny_screens.drop(columns="department").to_parquet(path)
    res = CliRunner().invoke(_app(), ["train", "gbdt", "--screens", str(path), "--out",
                                      str(tmp_path / "run"), "--grid", "none", "--no-progress"])
    assert res.exit_code == 1  # a data error: the screens exist but lack a column
    assert "department" in res.output


def test_train_gbdt_baseline_view(tiny_screens, tmp_path):
    path = tmp_path / "screens.parquet"
    tiny_screens.to_parquet(path)
    out = tmp_path / "run"
    res = CliRunner().invoke(_app(), ["train", "gbdt", "--screens", str(path), "--out", str(out),
                                      "--baseline", "--grid", "none", "--n-jobs", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    model = GBDTClassifier.load(out)
    assert model.baseline and not model.trend
    assert any(f.endswith("_dev_base") for f in model.feature_names_)
    assert json.loads((out / "run.json").read_text())["config"]["baseline"] is True
