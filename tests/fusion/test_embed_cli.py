"""``embed-cxr``: a cohort's CXR embeddings for ``train fusion`` (synthetic films, or any imaging model)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sepsiscope.cli import app
from sepsiscope.models import load_model

runner = CliRunner()


def _text(result) -> str:
    return " ".join(result.output.split())


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A simulated cohort and its embeddings from procedural films (16 px, one encoder epoch)."""
    d = tmp_path_factory.mktemp("embedcxr")
    _ok(["simulate", "--n-stays", "80", "--seed", "2", "--out", str(d / "cohort")])
    _ok(["embed-cxr", str(d / "cohort"), "--out", str(d / "emb"), "--image-size", "16", "--encoder-epochs", "1",
         "--device", "cpu", "--no-progress"])
    return d


@pytest.fixture(scope="module")
def screens_file(embedded):
    """The cohort's screens, built once for the train fusion tests."""
    _ok(["screens", str(embedded / "cohort"), "--out", str(embedded / "s.parquet")])
    return embedded / "s.parquet"


def test_the_encoder_learns_from_training_split_films_only(embedded):
    emb = pd.read_parquet(embedded / "emb" / "cxr_embeddings.parquet")
    cxr = pd.read_parquet(embedded / "cohort" / "cxr.parquet")
    assert sorted(emb["study_id"]) == sorted(cxr["study_id"]) and "emb_cxr_000" in emb.columns
    split = pd.read_csv(embedded / "emb" / "encoder_split.csv").set_index("stay_id")["split"]
    assert set(split) == {"train", "dev", "test"}
    info = json.loads((embedded / "emb" / "cxr_embeddings.json").read_text())
    assert info["encoder_training_studies"] == (cxr["stay_id"].map(split) == "train").sum() < len(cxr)
    run = json.loads((embedded / "emb" / "run.json").read_text())
    assert run["complete"] and run["config"]["image_size"] == 16
    assert load_model(embedded / "emb" / "encoder").kind == "imaging"


def test_train_fusion_on_the_cohorts_screens_and_embeddings(embedded, screens_file, tmp_path):
    _ok(["train", "fusion", "--screens", str(screens_file), "--embeddings",
         str(embedded / "emb" / "cxr_embeddings.parquet"), "--out", str(tmp_path / "m"), "--epochs", "1",
         "--hidden", "4", "--head-hidden", "4", "--device", "cpu", "--no-progress"])
    assert load_model(tmp_path / "m").model_name == "fusion_mid"


def test_train_fusion_fine_tunes_the_encoders_last_block_and_predict_reads_the_films(embedded, screens_file,
                                                                                    tmp_path):
    emb = embedded / "emb"
    base = ["train", "fusion", "--screens", str(screens_file), "--embeddings",
            str(emb / "cxr_embeddings.parquet"), "--epochs", "1", "--hidden", "4", "--head-hidden", "4",
            "--device", "cpu", "--no-progress", "--finetune", "last_block"]
    res = runner.invoke(app, base + ["--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "needs --encoder" in _text(res)
    res = runner.invoke(app, base + ["--out", str(tmp_path / "x"), "--encoder", str(emb / "encoder"),
                                     "--strategy", "late"])
    assert res.exit_code == 2 and "--strategy mid or early" in _text(res)
    _ok(base + ["--out", str(tmp_path / "m"), "--encoder", str(emb / "encoder")])  # films under the embeddings' folder
    model = load_model(tmp_path / "m")
    assert model.model_name == "fusion_mid_ft" and model.image_root == str(emb.resolve())
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["config"]["command"] == "train fusion --cxr-latent observed --finetune last_block"
    _ok(["predict", str(tmp_path / "m"), "--screens", str(screens_file), "--embeddings",
         str(emb / "cxr_embeddings.parquet"), "--out", str(tmp_path / "p.parquet"), "--no-progress"])
    assert pd.read_parquet(tmp_path / "p.parquet")["risk"].notna().all()


def test_an_imaging_model_embeds_the_cohorts_images(embedded, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(embedded / "cohort", cohort)
    args = ["embed-cxr", str(cohort), "--out", str(tmp_path / "e"), "--encoder", str(embedded / "emb" / "encoder"),
            "--device", "cpu", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "no study has an image" in _text(res) and "cxr-images" in _text(res)
    _ok(["cxr-images", str(cohort), "--size", "16", "--seed", "0"])   # embed-cxr rendered with its --seed, 0
    _ok(args)
    mine = pd.read_parquet(tmp_path / "e" / "cxr_embeddings.parquet")
    ref = pd.read_parquet(embedded / "emb" / "cxr_embeddings.parquet")
    assert mine["study_id"].tolist() == ref["study_id"].tolist()
    cols = [c for c in ref.columns if c.startswith("emb_cxr_")]
    # the same procedural films (same seed and size) through the same encoder: the same embeddings
    assert np.allclose(mine[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-5)


def test_a_cohort_without_studies_or_ground_truth_is_refused(embedded, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(embedded / "cohort", cohort)
    cxr = pd.read_parquet(cohort / "cxr.parquet")
    cxr.drop(columns=[c for c in cxr.columns if c.startswith("truth_")]).to_parquet(cohort / "cxr.parquet")
    res = runner.invoke(app, ["embed-cxr", str(cohort), "--out", str(tmp_path / "e"), "--no-progress"])
    assert res.exit_code == 2 and "no procedural ground truth" in _text(res) and "--encoder" in _text(res)
    (cohort / "cxr.parquet").unlink()
    res = runner.invoke(app, ["embed-cxr", str(cohort), "--out", str(tmp_path / "e"), "--no-progress"])
    assert res.exit_code == 2 and "no cxr.parquet" in _text(res)
