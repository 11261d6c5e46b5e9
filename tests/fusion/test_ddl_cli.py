"""``train ddl`` and ``train fusion --cxr-latent generated`` (tiny models, a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehr.schema import CXR_FINDINGS
from fusion._demo import demo_embeddings, demo_screens
from fusion.ddl_model import CXRLatentGenerator
from sepsiscope.cli import app

runner = CliRunner()
TINY = ["--epochs", "2", "--hidden", "8", "--components", "3", "--timesteps", "10", "--sample-steps", "3",
        "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddlcli")
    demo_screens(n_stays=24, seed=0, hours=12).to_parquet(d / "screens.parquet")
    emb = demo_embeddings(n_stays=24, seed=0, hours=12)
    emb.to_parquet(d / "emb.parquet")
    rng = np.random.default_rng(0)
    cxr = emb[["study_id", "subject_id", "stay_id", "time"]].assign(image_path=None)
    for f in CXR_FINDINGS:
        cxr[f"truth_{f}"] = rng.integers(0, 2, len(cxr))
    cxr.to_parquet(d / "cxr.parquet")
    return d


def _args(files, out):
    return ["train", "ddl", "--screens", str(files / "screens.parquet"), "--embeddings", str(files / "emb.parquet"),
            "--cxr", str(files / "cxr.parquet"), "--out", str(out)]


def test_train_ddl_then_fusion_on_generated_films(files, tmp_path):
    res = runner.invoke(app, [*_args(files, tmp_path / "gen"), *TINY])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "gen" / "run.json").read_text())
    assert run["complete"] and run["config"]["params"]["method"] == "diffusion"
    gen = CXRLatentGenerator.load(tmp_path / "gen")
    assert gen.space_.dim_ == 3 and gen.model_.timesteps == 10
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--embeddings",
                              str(files / "emb.parquet"), "--strategy", "late", "--cxr-latent", "generated",
                              "--generator", str(tmp_path / "gen"), "--out", str(tmp_path / "fusion"), "--epochs", "1",
                              "--hidden", "4", "--head-hidden", "4", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "fusion" / "run.json").read_text())
    assert run["config"]["command"] == "train fusion --cxr-latent generated"
    pred_path = tmp_path / "p.parquet"
    res = runner.invoke(app, ["predict", str(tmp_path / "fusion"), "--screens", str(files / "screens.parquet"),
                              "--embeddings", str(files / "emb.parquet"), "--generator", str(tmp_path / "gen"),
                              "--out", str(pred_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    from fusion.embeddings import attach_embeddings
    from sepsiscope.models import load_model

    observed = attach_embeddings(pd.read_parquet(files / "screens.parquet"), pd.read_parquet(files / "emb.parquet"))
    generated = gen.attach(observed, seed=0)
    model = load_model(tmp_path / "fusion")
    risk = pd.read_parquet(pred_path)["risk"].to_numpy()
    assert np.allclose(risk, model.predict_proba(generated)[:, 1])
    assert not np.allclose(risk, model.predict_proba(observed)[:, 1])


def test_generator_round_trip_gives_the_same_films(files, tmp_path):
    res = runner.invoke(app, [*_args(files, tmp_path / "gen"), *TINY, "--method", "regression"])
    assert res.exit_code == 0, res.output
    screens = pd.read_parquet(files / "screens.parquet")
    from fusion.embeddings import attach_embeddings

    screens = attach_embeddings(screens, pd.read_parquet(files / "emb.parquet"))
    a = CXRLatentGenerator.load(tmp_path / "gen").generated_films(screens, seed=1)
    b = CXRLatentGenerator.load(tmp_path / "gen").generated_films(screens, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == int(screens["emb_cxr_age_h"].notna().sum())


@pytest.mark.parametrize("extra, message", [
    (["--method", "gan"], "--method"),
    (["--sample-steps", "50", "--timesteps", "10"], "must be at most --timesteps"),
])
def test_bad_options_are_one_line_errors(files, tmp_path, extra, message):
    res = runner.invoke(app, [*_args(files, tmp_path / "gen"), "--no-progress", *extra])
    assert res.exit_code == 2 and message in " ".join(res.output.split())


def test_films_without_findings_are_named(files, tmp_path):
    pd.read_parquet(files / "cxr.parquet").drop(columns=["truth_edema"]).to_parquet(tmp_path / "cxr.parquet")
    args = _args(files, tmp_path / "gen")
    args[args.index("--cxr") + 1] = str(tmp_path / "cxr.parquet")
    res = runner.invoke(app, [*args, *TINY])
    assert res.exit_code != 0 and "no finding columns" in " ".join(res.output.split())


def test_generated_needs_a_generator(files, tmp_path):
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--embeddings",
                              str(files / "emb.parquet"), "--cxr-latent", "generated", "--out", str(tmp_path / "f"),
                              "--no-progress"])
    assert res.exit_code == 2 and "needs --generator" in " ".join(res.output.split())
