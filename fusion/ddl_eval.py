"""Measuring DDL-CXR on the synthetic linked cohort, against the films that would have been taken.

Shared by ``scripts/ddl_synthetic.py`` and ``notebooks/05_ddl_cxr.ipynb``:

:func:`prepare_ddl`       the fusion data (:func:`fusion.ablations.synthetic_fusion_data`), the replayed
                          lung state, the encoder, the latent space fitted on training films and the
                          sequence inputs; the training pairs (consecutive films of training stays)
:func:`fit_ddl_variants`  the DDL model, the regression baseline and the ablations (no EHR, no
                          previous film, no contrastive term), same settings
:func:`conditions_at_test_screens`  every test screen with a film: conditions, and the truth: the
                          latent of the film a new study would have shown then (:mod:`ehr.synthetic.lung`)
:func:`generation_table`  distance to the true current latent and AUROC of decoded findings against
                          the true findings, for copying the last film and each model
:func:`downstream_predictions`  a fusion model scored on the test split with the last film, each
                          generated latent, the true current film (oracle) and no film; for
                          :func:`fusion.ablations.fusion_table`

The true current films are rendered only here, to evaluate; no model ever reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehr.schema import CXR_FINDINGS
from fusion.ddl import LatentDiffusion
from fusion.ddl_data import Conditions, film_pairs, screen_conditions
from fusion.embeddings import attach_embeddings, embedding_names
from fusion.latent import CXRLatentSpace
from fusion.robustness import without_images
from fusion.sequences import SequenceInputs

__all__ = ["DDLSetup", "VARIANTS", "prepare_ddl", "fit_ddl_variants", "conditions_at_test_screens",
           "generate_latents", "generation_table", "downstream_predictions"]

#: model name -> LatentDiffusion parameters that differ from the full model
VARIANTS = {"ddl": {}, "regression": {"method": "regression"}, "ddl_no_ehr": {"use_ehr": False},
            "ddl_no_previous": {"use_previous": False}, "ddl_no_contrastive": {"contrastive_weight": 0.0}}
_TRUTH = [f"truth_{f}" for f in CXR_FINDINGS]


@dataclass
class DDLSetup:
    """Everything the measurements share; ``pairs`` are the training conditions (latents, not embeddings)."""

    data: object
    lungs: object
    encoder: object
    space: CXRLatentSpace
    inputs: SequenceInputs
    pairs: Conditions
    seed: int
    image_size: int
    window_h: int


def prepare_ddl(n_stays: int, out_dir, *, seed: int = 0, image_size: int = 64, encoder_epochs: int = 8,
                n_components: int = 32, window_h: int = 48) -> DDLSetup:
    """Data, encoder and latent space for the DDL measurements; ``out_dir`` gets films and encoder."""
    from pathlib import Path

    from ehr.synthetic.lung import LungState
    from fusion.ablations import synthetic_fusion_data
    from imaging.estimator import CXRFindingClassifier

    data = synthetic_fusion_data(n_stays, out_dir, seed=seed, image_size=image_size, encoder_epochs=encoder_epochs)
    lungs = LungState.from_generator(n_stays, seed)
    encoder = CXRFindingClassifier.load(Path(out_dir) / "encoder")
    train_stays = data.train["stay_id"].unique()
    films = data.embeddings.merge(lungs.cohort.cxr[["study_id", *_TRUTH]], on="study_id", how="left")
    train_films = films[films["stay_id"].isin(train_stays)]
    cols = embedding_names(encoder.network_.feature_dim)
    space = CXRLatentSpace(n_components).fit(train_films[cols].to_numpy(), train_films[_TRUTH].to_numpy())
    inputs = SequenceInputs().fit(data.train)
    pairs = film_pairs(data.train, data.embeddings, inputs, window_h=window_h, stays=train_stays)
    pairs.previous, pairs.target = space.encode(pairs.previous), space.encode(pairs.target)
    return DDLSetup(data, lungs, encoder, space, inputs, pairs, seed, image_size, window_h)


def fit_ddl_variants(setup: DDLSetup, variants=None, *, progress=None, **params) -> dict:
    """Fit each variant (default :data:`VARIANTS`) on the training pairs with ``params``."""
    p = setup.pairs
    models = {}
    for name, own in (VARIANTS if variants is None else variants).items():
        models[name] = LatentDiffusion(**{"random_state": setup.seed, **params, **own}).fit(
            p.previous, p.target, p.ehr, p.gap_h, p.lengths)
        if progress is not None:
            progress(f"{name}: fitted on {len(p.gap_h)} pairs (final loss {models[name].history_[-1]:.3f})")
    return models


def conditions_at_test_screens(setup: DDLSetup) -> tuple[Conditions, pd.DataFrame]:
    """Conditions at every test screen with a film (previous latents), and the truth at those screens.

    The truth table has the lung state (``truth_<finding>``), ``latent_<k>`` of the film it would
    show, ``last_truth_<finding>`` (what the last film showed) and ``changed`` (they differ).
    """
    from imaging.synthetic_images import render_truth_films

    cond = screen_conditions(setup.data.test, setup.inputs, window_h=setup.window_h)
    cond.previous = setup.space.encode(cond.previous)
    state = setup.lungs.at(cond.keys[["stay_id", "time"]])
    last = setup.lungs.at(cond.keys[["stay_id", "previous_time"]].rename(columns={"previous_time": "time"}))
    films = render_truth_films(state, setup.seed, size=setup.image_size)
    unique, inverse = np.unique(films.reshape(len(films), -1), axis=0, return_inverse=True)
    emb = setup.encoder.features(unique.reshape(-1, setup.image_size, setup.image_size), batch_size=256,
                                 device="cpu")[inverse.ravel()]
    latent = setup.space.encode(emb)
    truth = state[["stay_id", "time", *_TRUTH]].copy()
    for f in CXR_FINDINGS:
        truth[f"last_truth_{f}"] = last[f"truth_{f}"].to_numpy()
    truth["changed"] = (state[_TRUTH].to_numpy() != last[_TRUTH].to_numpy()).any(axis=1)
    truth = pd.concat([truth, pd.DataFrame(latent, columns=[f"latent_{k}" for k in range(latent.shape[1])])], axis=1)
    return cond, truth


def generate_latents(models: dict, cond: Conditions, *, seed: int = 0, mean_of: int = 8) -> dict:
    """``{"copy_last": previous latents, name: generated latents, ...}`` at the conditions.

    With ``mean_of`` > 1 also ``"ddl_mean<k>"``: the mean of ``k`` samples of the ``"ddl"`` model
    (seeds ``seed .. seed + k - 1``), an estimate of the conditional mean rather than one draw.
    """
    out = {"copy_last": cond.previous}
    for name, model in models.items():
        out[name] = model.sample(cond.previous, cond.ehr, cond.gap_h, cond.lengths, seed=seed)
    if mean_of > 1 and "ddl" in models:
        draws = [models["ddl"].sample(cond.previous, cond.ehr, cond.gap_h, cond.lengths, seed=seed + k)
                 for k in range(int(mean_of))]
        out[f"ddl_mean{int(mean_of)}"] = np.mean(draws, axis=0)
    return out


def _mean_auroc(y: np.ndarray, p: np.ndarray) -> float:
    from evaluation.metrics import roc_auc

    scores = [roc_auc(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def generation_table(setup: DDLSetup, latents: dict, truth: pd.DataFrame, cond: Conditions) -> pd.DataFrame:
    """Per method: mean latent distance to the true current film, and mean AUROC of decoded findings.

    Columns ``distance`` / ``auroc`` over all test screens with a film, ``*_gap24`` where the last
    film is >= 24 h old, ``*_changed`` where the true findings differ from the last film's. The
    row ``true_film`` is the ceiling: the probes on the true current latent.
    """
    true_latent = truth[[c for c in truth.columns if c.startswith("latent_")]].to_numpy()
    y = truth[_TRUTH].to_numpy()
    subsets = {"": np.ones(len(y), bool), "_gap24": cond.gap_h >= 24.0, "_changed": truth["changed"].to_numpy()}
    rows = []
    for name, z in {**latents, "true_film": true_latent}.items():
        dist = np.linalg.norm(z - true_latent, axis=1)
        proba = setup.space.finding_proba(z)
        row = {"method": name}
        for suffix, m in subsets.items():
            row[f"distance{suffix}"] = float(dist[m].mean()) if m.any() else float("nan")
            row[f"auroc{suffix}"] = _mean_auroc(y[m], proba[m]) if m.any() else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["n"] = {("all" if not k else k[1:]): int(m.sum()) for k, m in subsets.items()}
    return table


def _with_films(screens: pd.DataFrame, cond: Conditions, embeddings: np.ndarray) -> pd.DataFrame:
    """``screens`` where each screen with a film sees, instead, a film taken at its own hour."""
    table = pd.DataFrame(embeddings, columns=embedding_names(embeddings.shape[1]))
    table.insert(0, "time", cond.keys["time"].to_numpy())
    table.insert(0, "stay_id", cond.keys["stay_id"].to_numpy())
    table.insert(0, "study_id", np.arange(len(table)))
    return attach_embeddings(screens, table)


def downstream_predictions(model, setup: DDLSetup, latents: dict, truth: pd.DataFrame, cond: Conditions,
                           *, split: str = "test") -> pd.DataFrame:
    """A fitted fusion model's predictions on the test screens under each film condition.

    Model names ``<model>@last_film`` (as observed), ``@<latent name>`` for each latent of
    ``latents`` (decoded to embedding space and dated at the screen's own hour; ``@copy_last`` is
    the last film so re-dated, the control for that format), ``@true_film`` (oracle) and ``@no_film``.
    """
    test = setup.data.test
    name = model.model_name
    frames = [model.predictions(test, name=f"{name}@last_film", split=split),
              model.predictions(without_images(test), name=f"{name}@no_film", split=split)]
    true_latent = truth[[c for c in truth.columns if c.startswith("latent_")]].to_numpy()
    for label, z in {**latents, "true_film": true_latent}.items():
        screens = _with_films(test, cond, setup.space.decode(z))
        frames.append(model.predictions(screens, name=f"{name}@{label}", split=split))
    return pd.concat(frames, ignore_index=True)
