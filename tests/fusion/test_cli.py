"""``train sequence``, ``train fusion`` and ``predict`` with them (tiny models, a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fusion._demo import demo_embeddings, demo_screens
from fusion.embeddings import attach_embeddings
from fusion.models import FusionModel, SequenceModel
from sepsiscope.cli import app
from sepsiscope.models import load_model

runner = CliRunner()
TINY = ["--epochs", "1", "--hidden", "4", "--head-hidden", "4", "--batch-size", "8", "--device", "cpu",
        "--no-progress"]


def _text(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Screens without embeddings, the studies' embedding table, both as parquet."""
    d = tmp_path_factory.mktemp("fusioncli")
    demo_screens(n_stays=24, seed=0, hours=8).to_parquet(d / "screens.parquet")
    demo_embeddings(n_stays=24, seed=0, hours=8).to_parquet(d / "emb.parquet")
    return d


def test_train_sequence_writes_a_model_that_predict_scores(files, tmp_path):
    out = tmp_path / "seq"
    res = runner.invoke(app, ["train", "sequence", "--screens", str(files / "screens.parquet"), "--out", str(out),
                              "--cell", "gru", *TINY])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["config"]["command"] == "train sequence"
    assert run["config"]["params"]["cell"] == "gru" and run["config"]["params"]["epochs"] == 1
    assert run["inputs"]["screens"]["sha256"] and run["fitted"]["epochs"] >= 1
    model = load_model(out)
    assert isinstance(model, SequenceModel) and model.cell == "gru"
    pred_path = tmp_path / "p.parquet"
    res = runner.invoke(app, ["predict", str(out), "--screens", str(files / "screens.parquet"), "--out",
                              str(pred_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(pred_path)
    screens = pd.read_parquet(files / "screens.parquet")
    assert set(pred["model"]) == {"sequence"}
    assert np.allclose(pred["risk"], model.predict_proba(screens)[:, 1])


def test_train_fusion_attaches_the_embeddings_and_predict_needs_them(files, tmp_path):
    out = tmp_path / "fusion"
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--out", str(out),
                              "--strategy", "late", "--embeddings", str(files / "emb.parquet"), "--image-proj", "4",
                              *TINY])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["params"]["strategy"] == "late" and run["inputs"]["embeddings"]["sha256"]
    model = load_model(out)
    assert isinstance(model, FusionModel) and model.model_name == "fusion_late"
    assert "emb_cxr_000" in model.required_columns

    pred_path = tmp_path / "p.parquet"
    args = ["predict", str(out), "--screens", str(files / "screens.parquet"), "--out", str(pred_path),
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "no CXR embeddings" in _text(res) and "--embeddings" in _text(res)
    assert not pred_path.exists()
    res = runner.invoke(app, [*args, "--embeddings", str(files / "emb.parquet")])
    assert res.exit_code == 0, res.output
    screens = attach_embeddings(pd.read_parquet(files / "screens.parquet"), pd.read_parquet(files / "emb.parquet"))
    pred = pd.read_parquet(pred_path)
    assert set(pred["model"]) == {"fusion_late"}
    assert np.allclose(pred["risk"], model.predict_proba(screens)[:, 1])


def test_screens_that_carry_embeddings_need_no_embeddings_option(files, tmp_path):
    screens = attach_embeddings(pd.read_parquet(files / "screens.parquet"), pd.read_parquet(files / "emb.parquet"))
    screens.to_parquet(tmp_path / "with_emb.parquet")
    res = runner.invoke(app, ["train", "fusion", "--screens", str(tmp_path / "with_emb.parquet"), "--out",
                              str(tmp_path / "m"), "--strategy", "mid", "--max-images", "2", *TINY])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "m").max_images == 2


def test_fusion_without_embeddings_is_a_usage_error_naming_them(files, tmp_path):
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--out",
                              str(tmp_path / "m"), *TINY])
    assert res.exit_code == 2 and "no CXR embeddings" in _text(res) and "--embeddings" in _text(res)
    assert not (tmp_path / "m").exists()


def test_embeddings_of_other_stays_are_a_data_error(files, tmp_path):
    emb = pd.read_parquet(files / "emb.parquet").assign(stay_id=lambda e: e["stay_id"] + 1000)
    emb.to_parquet(tmp_path / "other.parquet")
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--out",
                              str(tmp_path / "m"), "--embeddings", str(tmp_path / "other.parquet"), *TINY])
    assert res.exit_code == 1 and "no screen sees a CXR study" in _text(res)


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--hidden", "0"], ["--strategy", "deep"],
                                 ["--validation-fraction", "0"], ["--lr", "nan"], ["--cell", "rnn"],
                                 ["--max-images", "0"]])
def test_bad_options_are_usage_errors(files, tmp_path, bad):
    res = runner.invoke(app, ["train", "fusion", "--screens", str(files / "screens.parquet"), "--out",
                              str(tmp_path / "m"), "--embeddings", str(files / "emb.parquet"), *TINY, *bad])
    assert res.exit_code == 2, res.output
    assert bad[0] in _text(res)
    assert not (tmp_path / "m").exists()


def test_explain_reads_a_deep_models_screen_within_the_stays_history(tmp_path):
    import re

    screens = demo_screens(n_stays=24, seed=0, hours=8, images=True)
    screens.to_parquet(tmp_path / "screens.parquet")
    model = SequenceModel(hidden=8, head_hidden=8, epochs=10, patience=10, lr=1e-2, random_state=0).fit(screens)
    model.save(tmp_path / "m")
    stay = 3                                       # septic: risk rises along the stay
    res = runner.invoke(app, ["explain", str(stay), "--model", str(tmp_path / "m"), "--screens",
                              str(tmp_path / "screens.parquet"), "--at", "6"])
    assert res.exit_code == 0, res.output
    printed = float(re.search(r"P\(sepsis within 48 h\) = ([0-9.]+)", res.output).group(1))
    rows = screens[screens.stay_id == stay].reset_index(drop=True)
    k = int(np.flatnonzero(rows["hours_since_admit"] == 6)[0])
    in_history = model.predict_proba(rows)[k, 1]
    alone = model.predict_proba(rows.iloc[[k]])[0, 1]        # what scoring the one row would say
    assert printed == pytest.approx(in_history, abs=6e-4) and abs(in_history - alone) > 5e-3
    assert "hr" in res.output or "Heart rate" in res.output
