"""Fine-tuning the imaging encoder's last block inside a fusion model (``FusionModel(finetune="last_block")``).

A tiny cohort: the demo screens, one procedural film per study written to disk, an untrained
``small`` encoder that embeds them; a few training steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ehr.schema import SchemaError
from fusion._demo import demo_embeddings, demo_screens
from fusion.embeddings import attach_embeddings, embed_cxr_table
from fusion.models import FusionModel
from fusion.robustness import with_older_images, without_images
from fusion.sequences import EMB_IMAGE

N_STAYS, HOURS, SIZE = 24, 8, 32


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """``(screens with emb_cxr_image, encoder directory, image root, the encoder network)``."""
    from imaging.estimator import CXRFindingClassifier
    from imaging.models import CXRFindingModel
    from imaging.synthetic_images import render_study

    root = tmp_path_factory.mktemp("films")
    studies = demo_embeddings(N_STAYS, 0, HOURS)[["study_id", "subject_id", "stay_id", "time"]]
    paths = []
    for sid, stay in zip(studies["study_id"], studies["stay_id"]):
        septic = stay % 3 == 0  # the film carries the sepsis signal, as the demo embeddings do
        Image.fromarray(render_study({"consolidation": int(septic)}, seed=int(sid), size=SIZE)).save(root / f"{sid}.png")
        paths.append(f"{sid}.png")
    studies = studies.assign(image_path=paths)
    torch.manual_seed(0)
    enc = CXRFindingModel(arch="small", findings=("consolidation",), image_size=SIZE).eval()
    CXRFindingClassifier.from_network(enc).save(root / "encoder")
    emb = embed_cxr_table(enc, studies, root)
    screens = attach_embeddings(demo_screens(N_STAYS, 0, HOURS), emb, image_paths=True)
    return screens, root / "encoder", root, enc


def _model(films, strategy="mid", **kw):
    _, encoder, root, _ = films
    params = {"finetune": "last_block", "encoder": str(encoder), "image_root": str(root), "max_images": 2, "hidden": 8, "head_hidden": 8, "epochs": 1, "batch_size": 4,
              "max_batches_per_epoch": 3, "encoder_lr": 1e-2, "random_state": 0, "device": "cpu"}
    return FusionModel(strategy, **{**params, **kw})


@pytest.fixture(scope="module")
def fitted(films):
    return _model(films).fit(films[0])


def test_the_block_trains_and_the_rest_of_the_encoder_does_not(films, fitted):
    enc = films[3]
    frozen0, block0 = enc.split_last_block()
    net = fitted.net_
    changed = [not torch.equal(a, b) for a, b in zip(block0.state_dict().values(), net.block.state_dict().values())]
    assert any(changed)
    for (name, a), b in zip(frozen0.state_dict().items(), net.frozen.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(not p.requires_grad for p in net.frozen.parameters())
    assert net.cache_misses > 0 and fitted.model_name == "fusion_mid_ft"


def test_save_and_load_round_trip_the_predictions(films, fitted, tmp_path):
    screens = films[0]
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]
    back = FusionModel.load(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(screens), fitted.predict_proba(screens), rtol=1e-6, atol=1e-7)
    # the robustness transforms keep the films' files
    assert back.predict_proba(without_images(screens)).shape == (len(screens), 2)
    older = with_older_images(screens, 24.0)
    assert older[EMB_IMAGE].notna().sum() < screens[EMB_IMAGE].notna().sum()
    assert back.predict_proba(older).shape == (len(screens), 2)


def test_explanations_occlude_the_fine_tuned_films(films, fitted):
    screens = films[0]
    rows = np.flatnonzero(screens["emb_cxr_age_h"].notna().to_numpy())[:3]
    ex = fitted.explain(screens, rows)
    film = ex[ex["feature"] == "cxr_image_1"]
    assert len(film) == len(rows) and film["contribution"].notna().all()


def test_bad_input_is_named(films, fitted, tmp_path):
    screens, encoder, root, _ = films
    with pytest.raises(SchemaError, match=EMB_IMAGE):
        fitted.predict_proba(screens.drop(columns=[EMB_IMAGE]))
    with pytest.raises(ValueError, match="strategy must be one of"):
        _model(films, strategy="late").fit(screens)
    with pytest.raises(ValueError, match="needs encoder"):
        _model(films, encoder=None).fit(screens)
    other = screens.copy()
    other[[c for c in screens.columns if c.startswith("emb_cxr_0")]] *= 2.0  # not this encoder's embeddings
    with pytest.raises(ValueError, match="does not reproduce"):
        _model(films).fit(other)
