"""DDL-CXR latent diffusion (fusion/ddl.py) and its latent space (fusion/latent.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.ddl import LatentDiffusion, cosine_alpha_bar
from fusion.latent import CXRLatentSpace

torch.set_num_threads(1)
SMALL = dict(hidden=32, ehr_hidden=8, blocks=2, timesteps=100, sample_steps=10)


def _toy(n, seed):
    """The later latent is a known function of the condition: half the previous plus an EHR-driven shift."""
    rng = np.random.default_rng(seed)
    prev = rng.normal(size=(n, 4))
    ehr = rng.normal(size=(n, 6, 3))
    lengths = rng.integers(2, 7, n)
    mean = np.array([ehr[i, :lengths[i]].mean(axis=0) for i in range(n)])
    shift = np.column_stack([mean[:, 0] + mean[:, 1], -mean[:, 1], mean[:, 2], mean[:, 0] - mean[:, 2]])
    target = 0.5 * prev + 1.5 * shift
    return prev, ehr, lengths, rng.uniform(2, 48, n), target


@pytest.fixture(scope="module")
def toy_fit():
    prev, ehr, lens, gap, target = _toy(768, 0)
    model = LatentDiffusion(epochs=50, **SMALL).fit(prev, target, ehr, gap, lens)
    return model


def test_cosine_schedule_is_monotone_inside_zero_one():
    for t in (2, 50, 1000):
        a = cosine_alpha_bar(t)
        assert a.shape == (t,) and (a > 0).all() and (a < 1).all() and (np.diff(a) < 0).all()
    assert cosine_alpha_bar(1000)[-1] < 1e-3 < 0.99 < cosine_alpha_bar(1000)[0]
    with pytest.raises(ValueError, match="timesteps must be >= 2"):
        cosine_alpha_bar(1)


def test_shapes_seeds_and_determinism(toy_fit):
    prev, ehr, lens, gap, _ = _toy(20, 1)
    a = toy_fit.sample(prev, ehr, gap, lens, seed=3)
    assert a.shape == (20, 4) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, toy_fit.generate(prev, ehr, gap, lens, seed=3))
    assert not np.allclose(a, toy_fit.sample(prev, ehr, gap, lens, seed=4))
    again = LatentDiffusion(epochs=50, **SMALL).fit(*_fit_args(768, 0))
    np.testing.assert_array_equal(a, again.sample(prev, ehr, gap, lens, seed=3))


def _fit_args(n, seed):
    prev, ehr, lens, gap, target = _toy(n, seed)
    return prev, target, ehr, gap, lens


def test_save_load_round_trip_gives_identical_samples(toy_fit, tmp_path):
    prev, ehr, lens, gap, _ = _toy(16, 2)
    toy_fit.save(tmp_path / "ddl")
    back = LatentDiffusion.load(tmp_path / "ddl")
    assert back.get_params() == toy_fit.get_params()
    np.testing.assert_array_equal(back.sample(prev, ehr, gap, lens, seed=5),
                                  toy_fit.sample(prev, ehr, gap, lens, seed=5))
    assert not list((tmp_path / "ddl").glob("*.pkl"))


def test_trained_model_beats_copying_the_previous_latent(toy_fit):
    prev, ehr, lens, gap, target = _toy(400, 9)
    copy = np.linalg.norm(prev - target, axis=1).mean()
    generated = np.linalg.norm(toy_fit.sample(prev, ehr, gap, lens, seed=0) - target, axis=1).mean()
    regression = LatentDiffusion(method="regression", epochs=50, **SMALL).fit(*_fit_args(768, 0))
    regressed = np.linalg.norm(regression.sample(prev, ehr, gap, lens) - target, axis=1).mean()
    assert generated < 0.75 * copy and regressed < 0.75 * copy
    # without the EHR the shift cannot be known: worse than with it
    blind = LatentDiffusion(use_ehr=False, epochs=50, **SMALL).fit(*_fit_args(768, 0))
    assert np.linalg.norm(blind.sample(prev, ehr, gap, lens) - target, axis=1).mean() > generated


def test_bad_inputs_are_named():
    prev, target, ehr, gap, lens = _fit_args(10, 0)
    with pytest.raises(ValueError, match="method must be one of"):
        LatentDiffusion(method="gan").fit(prev, target, ehr, gap, lens)
    with pytest.raises(ValueError, match="ehr: expected shape"):
        LatentDiffusion().fit(prev, target, ehr[:5], gap, lens)
    with pytest.raises(ValueError, match="lengths: expected 10 values in"):
        LatentDiffusion().fit(prev, target, ehr, gap, lens + 10)
    with pytest.raises(ValueError, match="gap_h"):
        LatentDiffusion().fit(prev, target, ehr, -gap, lens)
    with pytest.raises(ValueError, match="not fitted"):
        LatentDiffusion().sample(prev, ehr, gap, lens)


def test_latent_space_round_trip_and_probes(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 4))
    emb = rng.normal(0, 0.3, (300, 10)) + np.column_stack([y, y[:, :2], rng.normal(0, 0.3, (300, 4))])
    space = CXRLatentSpace(n_components=10).fit(emb, y)
    np.testing.assert_allclose(space.decode(space.encode(emb)), emb, atol=1e-8)  # all components: exact
    assert CXRLatentSpace(n_components=0.999999).fit(emb, y).dim_ == 10
    assert CXRLatentSpace(n_components=0.5).fit(emb, y).dim_ < 5
    with pytest.raises(ValueError, match="n_components must be"):
        CXRLatentSpace(n_components=1.5).fit(emb, y)
    small = CXRLatentSpace(n_components=5).fit(emb, y)
    assert 0.3 < small.explained_variance_ratio_ < 1.0
    from sklearn.metrics import roc_auc_score

    proba = small.finding_proba(small.encode(emb))
    assert all(roc_auc_score(y[:, j], proba[:, j]) > 0.8 for j in range(4))
    small.save(tmp_path / "latent")
    np.testing.assert_array_equal(CXRLatentSpace.load(tmp_path / "latent").finding_proba(small.encode(emb)), proba)
    with pytest.raises(ValueError, match="latents: expected a"):
        small.decode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="'edema' is never present"):
        CXRLatentSpace().fit(emb, np.column_stack([y[:, :2], np.zeros(300), y[:, 3]]))


def test_condition_windows_hold_only_the_hours_between_the_films():
    import pandas as pd

    from fusion._demo import demo_embeddings, demo_screens
    from fusion.ddl_data import film_pairs, screen_conditions
    from fusion.embeddings import attach_embeddings
    from fusion.sequences import SequenceInputs

    screens = demo_screens(n_stays=24, seed=0, hours=12)
    emb = demo_embeddings(n_stays=24, seed=0, hours=12)
    inputs = SequenceInputs().fit(screens)
    week = inputs.channels_.index("hours_since_admit:week")
    admit = screens.groupby("stay_id")["screen_time"].min() - pd.Timedelta("1h")
    pairs = film_pairs(screens, emb, inputs, window_h=5)
    assert len(pairs.gap_h) > 0 and pairs.ehr.shape[1:] == (5, len(inputs.channels_))
    t0 = (pairs.keys["previous_time"] - admit.loc[pairs.keys["stay_id"]].to_numpy()) / pd.Timedelta(hours=1)
    t1 = (pairs.keys["time"] - admit.loc[pairs.keys["stay_id"]].to_numpy()) / pd.Timedelta(hours=1)
    for r in range(len(pairs.gap_h)):
        hours = pairs.ehr[r, :pairs.lengths[r], week] * 168.0
        assert (hours <= t1.iloc[r] + 1e-6).all() and np.all(np.diff(hours) > 0)
        # rows after the earlier film, unless none: then only the latest row at or before the later one
        assert (hours > t0.iloc[r] - 1e-6).all() or pairs.lengths[r] == 1
    at = screen_conditions(attach_embeddings(screens, emb), inputs, window_h=5)
    assert (at.gap_h >= 0).all() and (at.lengths >= 1).all() and (at.lengths <= 5).all()
    with pytest.raises(ValueError, match="window_h must be >= 1"):
        film_pairs(screens, emb, inputs, window_h=0)
