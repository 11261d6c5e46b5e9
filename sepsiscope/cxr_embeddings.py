"""The main job's chest X-ray embeddings, for the models that read them (``--models ...,fusion``).

The synthetic linked cohort has CXR studies with procedural ground truth: one film is rendered
per study, a small encoder is trained on the films of **training-split** stays only (their finding
labels; dev and test films are only embedded, so nothing of them reaches a model), and every
study's embedding is attached to every screen under the leakage rule
(:func:`fusion.embeddings.synthetic_cxr_embeddings`, :func:`fusion.embeddings.attach_embeddings`).
The run directory keeps the films, the encoder and ``cxr/cxr_embeddings.parquet``.

One encoder serves the whole run: the out-of-fold fits inside train (for a stack) read embeddings
from an encoder that also saw the held-out fold's films. It learned finding labels, never the
sepsis label, so the stack's out-of-fold inputs are not fitted on their own outcomes; an encoder
per fold would remove even that.

A source without CXR studies (PhysioNet, MIMIC without MIMIC-CXR) cannot train a fusion model:
:func:`cxr_source_problem` says why before anything runs.

Examples
--------
>>> cxr_source_problem("physionet", "setA.zip")
'the physionet source has no chest X-ray studies; the fusion model needs them (drop fusion from --models)'
>>> cxr_source_problem("synthetic", None) is None
True
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["cxr_source_problem", "run_cxr_embeddings"]

_NO_CXR = ("physionet", "mimic")


def cxr_source_problem(source: str, path=None, external_source: str | None = None) -> str | None:
    """Why the main job cannot embed chest X-rays for ``source``, or None when it can."""
    from sepsiscope.sources import cohort_source_name

    if source in _NO_CXR:
        return (f"the {source} source has no chest X-ray studies; the fusion model needs them (drop fusion "
                "from --models)")
    if source == "cohort":
        made = cohort_source_name(path)
        if not (Path(path) / "cxr.parquet").is_file() and not (Path(path) / "cxr").is_dir():
            return (f"the cohort {path} ({made or 'unknown source'}) has no chest X-ray studies; the fusion "
                    "model needs them (drop fusion from --models)")
        if made != "synthetic":
            return (f"the cohort {path} ({made or 'unknown source'}) is not synthetic: the main job embeds "
                    "procedural films of the synthetic cohort only; embed real films with "
                    "fusion.embed_cxr_table and train with `sepsiscope train fusion --embeddings`")
    if external_source is not None:
        return ("the fusion model is not evaluated on an external source yet (its films would need the "
                "internal encoder); drop fusion from --models or the --external-* source")
    return None


def run_cxr_embeddings(cfg, cxr: pd.DataFrame | None, split: pd.Series, out_dir: Path, all_rows: pd.DataFrame,
                       screens: pd.DataFrame, fitted_info: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(all_rows, screens)`` with the CXR embeddings attached; the encoder sees train-split films only.

    ``split`` maps a stay to train / dev / test; ``fitted_info`` (``run.json``) gets the number of
    films embedded, of those that trained the encoder, and the encoder's validation AUROC.
    """
    import json

    from fusion.embeddings import attach_embeddings, synthetic_cxr_embeddings

    problem = cxr_source_problem(cfg.source, cfg.path, cfg.external_source)
    if problem is None and (cxr is None or cxr.empty):
        problem = "the source has no chest X-ray studies; the fusion model needs them (drop fusion from --models)"
    if problem is not None:
        raise ValueError(problem)
    train_stays = split.index[split.to_numpy() == "train"].to_numpy()
    emb = synthetic_cxr_embeddings(cxr, train_stays, out_dir, seed=cfg.seed, image_size=cfg.cxr_image_size,
                                   epochs=cfg.cxr_encoder_epochs)
    info = json.loads((Path(out_dir) / "cxr_embeddings.json").read_text())
    fitted_info["cxr_embeddings"] = {k: info[k] for k in ("studies", "encoder_training_studies",
                                                          "validation_mean_auroc", "encoder_sha256")}
    return attach_embeddings(all_rows, emb), attach_embeddings(screens, emb)
