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
    assert "epoch 1/2: loss" in r.output and "epoch 2/2: loss" in r.output  # validation metrics every epoch
    assert (out / "model.safetensors").stat().st_mode == (out / "model.json").stat().st_mode
    assert "inside the lung fields" in r.output and "shift gamma_0.5" in r.output
    meta = json.loads((out / "model.json").read_text())
    state = meta["state"]
    assert state["metrics"]["saliency"]["effusion"]["n"] == 4 and "markers_masked" in state["metrics"]["shifts"]
    assert 0 < state["metrics"]["operating_points"]["effusion"]["threshold"] < 1
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


def test_evaluate_imaging_on_a_labelled_folder(tiny_folder, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    torch.manual_seed(0)
    m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    m.metrics = {"operating_points": {"effusion": {"threshold": 0.3}}}
    m.save(tmp_path / "m")
    runner = CliRunner()
    r = runner.invoke(_app(), ["evaluate-imaging", str(tmp_path / "m"), "--data", str(tiny_folder), "--n-boot", "50",
                               "--no-progress", "--json", str(tmp_path / "r.json"), "--shifts"])
    assert r.exit_code == 0, r.output
    assert "effusion: AUROC" in r.output and "95% CI" in r.output and "threshold 0.300" in r.output
    assert "ECE" in r.output and "shift gamma_2.0" in r.output
    res = json.loads((tmp_path / "r.json").read_text())["findings"]["effusion"]
    probs = m.predict_proba([tiny_folder / f"images/s{i}.png" for i in range(12)])[:, 0]
    y = np.arange(12) % 2
    assert res["specificity"] == (probs[y == 0] < 0.3).mean() and res["sensitivity"] == (probs[y == 1] >= 0.3).mean()
    assert res["n"] == 12 and res["n_boot"] == 50 and res["auroc_ci"][0] <= res["auroc"] <= res["auroc_ci"][1]

    # class subfolders (NORMAL/ EFFUSION/) work the same way
    for i in range(12):
        d = tmp_path / "cls" / ("EFFUSION" if i % 2 else "NORMAL")
        d.mkdir(parents=True, exist_ok=True)
        Image.open(tiny_folder / f"images/s{i}.png").save(d / f"s{i:02d}.png")
    r = runner.invoke(_app(), ["evaluate-imaging", str(tmp_path / "m"), "--data", str(tmp_path / "cls"),
                               "--n-boot", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"AUROC {res['auroc']:.3f}" in r.output


def test_train_imaging_recipe_options_and_internal_test(tiny_folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model"
    r = runner.invoke(_app(), ["train", "imaging", "--data", str(tiny_folder), "--out", str(out), "--arch", "resnet18n_eq",
                               "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--findings", "effusion",
                               "--val-fraction", "0.34", "--holdout-test", "0.34", "--augmentation", "shift",
                               "--marker-mask-p", "0.5", "--schedule", "cosine", "--label-smoothing", "0.1",
                               "--ema-decay", "0.9", "--target-sensitivity", "0.9", "--saliency-check", "0",
                               "--focus", "crop", "--lung-penalty", "0.5",
                               "--no-shift-check", "--cache", str(tmp_path / "c.npz"), "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "held out as internal test" in r.output and (tmp_path / "c.npz").is_file()
    meta = json.loads((out / "model.json").read_text())
    assert meta["config"]["augmentation"] == "shift" and meta["config"]["ema_decay"] == 0.9
    assert meta["config"]["focus"] == "crop" and meta["config"]["lung_penalty"] == 0.5
    run = json.loads((out / "run.json").read_text())
    test_ids = set(run["config"]["internal_test_images"])
    assert test_ids and meta["state"]["metrics"]["operating_points"]["effusion"]["target_sensitivity"] == 0.9
    n_train, n_val = meta["state"]["metrics"]["n_train"], meta["state"]["metrics"]["n_val"]
    assert n_train + n_val + len(test_ids) == 12
