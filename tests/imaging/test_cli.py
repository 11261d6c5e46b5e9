import json

import pytest
import typer
from typer.testing import CliRunner

from imaging.models import CXRFindingModel
from sepsiscope.commands.imaging import register


def _app():
    app, train_app = typer.Typer(), typer.Typer()
    app.add_typer(train_app, name="train")
    register(app, train_app)
    return app


@pytest.mark.slow
def test_train_then_explain(tiny_folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model"
    r = runner.invoke(_app(), ["train", "imaging", "--data", str(tiny_folder), "--out", str(out), "--arch", "small",
                               "--image-size", "32", "--epochs", "2", "--batch-size", "4", "--findings", "effusion",
                               "--val-fraction", "0.3", "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "effusion: AUROC" in r.output
    meta = json.loads((out / "model.json").read_text())
    state = meta["state"]
    assert meta["kind"] == "imaging" and state["findings"] == ["effusion"] and len(state["temperatures"]) == 1
    assert state["metrics"]["n_val"] == 4  # 2 of 6 patients (ceil(0.3 x 6)), 2 images each
    # run.json and the resume checkpoint travel inside the model directory's one atomic write
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["config"]["params"]["validation_fraction"] == 0.3
    assert {"run.json", "checkpoint.pt", "model.safetensors"} == set(meta["files"])
    m = CXRFindingModel.load(out)
    assert m.arch == "small" and m.image_size == 32
    png = tmp_path / "cam.png"
    r = runner.invoke(_app(), ["explain-image", str(tiny_folder / "images" / "s1.png"), "--model", str(out),
                               "--finding", "effusion", "--out", str(png)])
    assert r.exit_code == 0, r.output
    assert png.is_file() and "effusion" in json.loads(r.output.strip().splitlines()[-1])["probabilities"]


@pytest.mark.slow
def test_cohort_images_train_and_score(tmp_path):
    """Synthetic linked cohort -> rendered images -> imaging model -> cxr_<finding> columns."""
    import pandas as pd

    import ehr.synthetic as synthetic
    from ehr.schema import CXR_FINDINGS, validate

    synthetic.generate_cohort(40, seed=3).save(tmp_path / "cohort")
    runner = CliRunner()
    r = runner.invoke(_app(), ["cxr-images", str(tmp_path / "cohort"), "--size", "40"])
    assert r.exit_code == 0, r.output
    cxr = pd.read_parquet(tmp_path / "cohort" / "cxr.parquet")
    assert cxr["image_path"].notna().all() and (tmp_path / "cohort" / cxr["image_path"].iloc[0]).is_file()
    labels = pd.read_csv(tmp_path / "cohort" / "labels.csv")
    assert (labels["consolidation"].to_numpy() == cxr["truth_consolidation"].to_numpy()).all()
    r = runner.invoke(_app(), ["train", "imaging", "--data", str(tmp_path / "cohort"), "--out", str(tmp_path / "m"),
                               "--arch", "small", "--image-size", "32", "--epochs", "1", "--split", "",
                               "--findings", ",".join(CXR_FINDINGS), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(_app(), ["score-cxr", str(tmp_path / "cohort"), "--model", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    scored = validate(pd.read_parquet(tmp_path / "cohort" / "cxr.parquet"), "cxr")
    model = CXRFindingModel.load(tmp_path / "m")
    from imaging.contract import load_image, resize_uint8
    first = resize_uint8(load_image(tmp_path / "cohort" / scored["image_path"].iloc[0]), 32)
    expect = model.predict_findings(first[None]).iloc[0]
    for f in CXR_FINDINGS:
        assert scored[f"cxr_{f}"].iloc[0] == pytest.approx(expect[f], rel=1e-5)
