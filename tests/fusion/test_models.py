"""The deep estimators: leakage, determinism, save/load, attention fallback, bad input, explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from ehr.artefacts import ModelFormatError
from ehr.schema import SchemaError
from fusion.models import FusionModel, SequenceModel
from fusion.training import resolve_device

from .conftest import tiny

ALL = ("sequence", "mid", "early", "late", "medfuse")


def _perturb_after(s: pd.DataFrame, stay: int, t, seed: int = 1) -> pd.DataFrame:
    """Every value of ``stay`` after ``t`` replaced by noise: concepts, ages, films and their ages."""
    rng = np.random.default_rng(seed)
    out = s.copy()
    later = (out["stay_id"] == stay) & (out["screen_time"] > t)
    for c in out.columns:
        if out[c].dtype.kind == "f" and c not in ("hours_since_admit", "onset_in_h"):
            noise = rng.normal(3.0, 2.0, int(later.sum())).round(2) ** 2
            out.loc[later, c] = noise.astype(out[c].dtype)
    return out


@pytest.mark.parametrize("name", ALL)
def test_no_screen_sees_data_after_its_time(fitted, screens_img, name):
    model = fitted[name]
    stay = 0  # septic, with films
    times = screens_img.loc[screens_img.stay_id == stay, "screen_time"]
    t = times.iloc[3]
    changed = _perturb_after(screens_img, stay, t)
    before = model.predict_proba(screens_img)[:, 1]
    after = model.predict_proba(changed)[:, 1]
    upto = ((screens_img.stay_id == stay) & (screens_img.screen_time <= t)).to_numpy()
    np.testing.assert_array_equal(before[upto], after[upto])
    later = ((screens_img.stay_id == stay) & (screens_img.screen_time > t)).to_numpy()
    assert not np.allclose(before[later], after[later])  # the perturbation did reach the model
    other = (screens_img.stay_id != stay).to_numpy()
    np.testing.assert_array_equal(before[other], after[other])


def test_probabilities_and_names(fitted, screens_img):
    for name, m in fitted.items():
        p = m.predict_proba(screens_img)
        assert p.shape == (len(screens_img), 2)
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert fitted["mid"].model_name == "fusion_mid" and fitted["sequence"].model_name == "sequence"
    pred = fitted["late"].predictions(screens_img, split="test")
    assert set(pred["model"]) == {"fusion_late"} and len(pred) == len(screens_img)


@pytest.mark.parametrize("strategy", [None, "mid"])
def test_same_seed_same_model_other_seed_another(screens_img, strategy):
    a = tiny(strategy, epochs=1).fit(screens_img).predict_proba(screens_img)
    b = tiny(strategy, epochs=1).fit(screens_img).predict_proba(screens_img)
    c = tiny(strategy, epochs=1, random_state=1).fit(screens_img).predict_proba(screens_img)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fitting_leaves_the_global_random_state_alone(screens_img):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(screens_img)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ALL + ("gru",))
def test_save_load_round_trip_gives_identical_predictions(fitted, screens_img, tmp_path, name):
    model = fitted[name]
    d = model.save(tmp_path / name)
    loaded = type(model).load(d)
    np.testing.assert_array_equal(loaded.predict_proba(screens_img), model.predict_proba(screens_img))
    assert loaded.get_params() == model.get_params()
    assert (d / "weights.safetensors").is_file()
    if name == "gru":
        assert isinstance(loaded.net_.encoder.rnn, torch.nn.GRU)


def test_load_refuses_the_other_kind_and_damaged_weights(fitted, tmp_path):
    d = fitted["mid"].save(tmp_path / "mid")
    with pytest.raises(ModelFormatError, match="expected 'sequence'"):
        SequenceModel.load(d)
    (d / "weights.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelFormatError, match="sha256"):
        FusionModel.load(d)


def test_attention_falls_back_to_the_no_image_key(fitted, screens_img):
    m = fitted["mid"]
    seq = m.inputs_.transform(screens_img)
    att = m._outputs(seq, ("logits", "attention"))["attention"]
    none = seq.image_index[:, 0] == 0
    assert none.any() and (~none).any()
    np.testing.assert_array_equal(att[none, 0], 1.0)
    assert (att[none, 1:] == 0).all()
    np.testing.assert_allclose(att.sum(axis=1), 1.0, rtol=1e-6)
    assert (att[~none, 0] < 1).all()  # with a film, the film takes some weight
    missing = seq.image_index == 0
    assert (att[:, 1:][missing] == 0).all()  # never weight on a film that does not exist


def test_medfuse_uses_the_ehr_prediction_without_a_film(fitted, screens_img):
    m = fitted["medfuse"]
    seq = m.inputs_.transform(screens_img)
    from fusion.training import network_outputs

    z = m._outputs(seq)["logits"]
    ehr = network_outputs(m.net_.ehr, seq)["logits"] / float(m.net_.ehr_temperature)
    none = seq.image_index[:, 0] == 0
    np.testing.assert_allclose(z[none], ehr[none], rtol=1e-5)
    assert not np.allclose(z[~none], ehr[~none])


def test_a_cohort_without_the_trained_concepts_is_refused(fitted, screens_img):
    with pytest.raises(SchemaError, match=r"missing column\(s\) lact, lact_age_h that this fusion model"):
        fitted["mid"].predict_proba(screens_img.drop(columns=["lact", "lact_age_h"]))
    no_films = screens_img.drop(columns=[c for c in screens_img.columns if c.startswith("emb_cxr_")])
    with pytest.raises(SchemaError, match="emb_cxr_000"):
        fitted["early"].predict_proba(no_films)
    with pytest.raises(SchemaError, match="emb_cxr_age_h"):
        tiny("mid").fit(no_films)


def test_bad_configuration_is_refused(screens_img):
    with pytest.raises(ValueError, match="strategy must be one of"):
        FusionModel("sideways").fit(screens_img)
    with pytest.raises(ValueError, match="cell must be"):
        tiny(cell="rnn").fit(screens_img)
    with pytest.raises(RuntimeError, match="not fitted"):
        SequenceModel().predict_proba(screens_img)


def test_clone_keeps_hyperparameters():
    m = FusionModel("late", hidden=16, max_images=2)
    c = clone(m)
    assert c.get_params() == m.get_params() and c.strategy == "late" and c.hidden == 16


def test_mixed_precision_path_runs_on_cpu(screens_img):
    """The bfloat16 autocast path CUDA uses, exercised on CPU: finite and close to float32."""
    m = tiny("mid", amp=True, epochs=1).fit(screens_img)
    p = m.predict_proba(screens_img)[:, 1]
    assert np.isfinite(p).all()
    m.amp = False
    np.testing.assert_allclose(m.predict_proba(screens_img)[:, 1], p, atol=0.05)


def test_device_resolution_falls_back_to_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_explanations_follow_the_contract(fitted, screens_img):
    rows = np.flatnonzero(screens_img["emb_cxr_age_h"].notna().to_numpy())[:2]
    e = fitted["mid"].explain(screens_img, rows=rows)
    assert set(e["feature"]) >= {"hr", "lact", "cxr_image_1", "total"}
    film = e[e.feature == "cxr_image_1"]
    assert film["value"].between(0, 1).all() and film["age_h"].notna().all()
    assert e.groupby("screen_time")["baseline"].nunique().eq(1).all()
    risk = fitted["mid"].predict_proba(screens_img)[rows, 1]
    total = e[e.feature == "total"]
    np.testing.assert_allclose(total["contribution"] + total["baseline"], np.log(risk / (1 - risk)), rtol=1e-5)
    seq_e = fitted["sequence"].explain(screens_img, rows=rows[:1])
    assert seq_e["feature"].tolist() == ["hr", "lact", "total"]


def test_removing_one_film_moves_the_older_ones_up():
    from fusion.explain import _without_images
    from fusion.sequences import Sequences

    seq = Sequences(np.zeros((1, 1), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64),
                    np.zeros((4, 2), np.float32), np.array([[3, 2, 1]]), np.array([[1.0, 5.0, 9.0]], np.float32))
    one = _without_images(seq, 0)
    assert one.image_index.tolist() == [[2, 1, 0]] and one.image_age_h.tolist() == [[5.0, 9.0, 0.0]]
    assert _without_images(seq, 1).image_index.tolist() == [[3, 1, 0]]
    assert _without_images(seq).image_index.tolist() == [[0, 0, 0]]
