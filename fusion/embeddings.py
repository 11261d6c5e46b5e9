"""CXR embeddings for the fusion models: embed studies, store them per study, attach them to screens.

The embedding table is a **fusion-side artefact** (``cxr_embeddings.parquet``), one row per CXR
study with an image: ``study_id, subject_id, stay_id, time, image_path`` and ``emb_cxr_000 ...`` (the imaging
encoder's pooled features, ``imaging.models.CXRFindingModel.features``). It lives next to the
encoder that made it, not in the ``cxr`` contract table, whose ``cxr_<finding>`` columns are
probabilities read by the CPN and GBDT (hence the ``emb_cxr_`` prefix: a ``cxr_`` column of the
screens is a finding probability under ``ehr.schema.COLUMN_RULES``).

:func:`attach_embeddings` puts them on the screens, under the leakage rule: each screen gets the
latest study with ``time <= screen_time`` (``time + delay_h`` with a delay: the robustness
transform that makes every film older), as ``emb_cxr_<k>`` and ``emb_cxr_age_h``.

:func:`synthetic_cxr_embeddings` is the reproducible path on the synthetic linked cohort: render
one procedural film per study from its ground truth (``imaging.render_cohort_images``), train a
small CPU-sized encoder on the films of training patients only (their finding labels), and embed
every study.

Examples
--------
>>> import numpy as np, pandas as pd
>>> t0 = pd.Timestamp("2024-01-01")
>>> screens = pd.DataFrame({"stay_id": [1, 1, 1], "screen_time": t0 + pd.to_timedelta([1, 2, 3], unit="h")})
>>> emb = pd.DataFrame({"study_id": [7], "stay_id": [1], "time": [t0 + pd.Timedelta("90min")],
...                     "emb_cxr_000": [0.5]})
>>> attach_embeddings(screens, emb)[["emb_cxr_000", "emb_cxr_age_h"]].to_numpy().tolist()
[[nan, nan], [0.5, 0.5], [0.5, 1.5]]
>>> attach_embeddings(screens, emb, delay_h=1.0)["emb_cxr_age_h"].tolist()
[nan, nan, 1.5]
"""

from __future__ import annotations

import json
import logging
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.artefacts import atomic_file, file_sha256
from ehr.schema import CXR_FINDINGS, SchemaError, require_columns
from fusion.sequences import EMB_AGE, EMB_IMAGE, EMB_PREFIX, embedding_columns

__all__ = ["attach_embeddings", "embed_cxr_table", "embedding_names", "synthetic_cxr_embeddings"]

log = logging.getLogger(__name__)


def embedding_names(dim: int) -> list[str]:
    """Column names of a ``dim``-dimensional embedding.

    >>> embedding_names(2)
    ['emb_cxr_000', 'emb_cxr_001']
    """
    return [f"{EMB_PREFIX}{k:03d}" for k in range(dim)]


def attach_embeddings(screens: pd.DataFrame, embeddings: pd.DataFrame, *, delay_h: float = 0.0,
                      image_paths: bool = False) -> pd.DataFrame:
    """A copy of ``screens`` with the latest visible study's embedding and age on every row.

    Parameters
    ----------
    screens : DataFrame
        Screens (``stay_id``, ``screen_time``); existing ``emb_cxr_*`` columns are replaced.
    embeddings : DataFrame
        One row per study: ``stay_id``, ``time`` and ``emb_cxr_<k>`` (``study_id`` breaks ties).
    delay_h : float
        A study becomes visible ``delay_h`` hours after its time (0: at its time). Ages stay true
        ages, so with a delay every screen sees an older film.
    image_paths : bool
        Also attach the study's image file as ``emb_cxr_image`` (from the embeddings' ``image_path``
        column, which it then needs): what a fusion model that fine-tunes the encoder reads.

    Returns
    -------
    DataFrame
        Rows in the order of ``screens``; ``emb_cxr_age_h`` is NaN where no study is visible.
    """
    cols = embedding_columns(embeddings.columns)
    require_columns(screens, ["stay_id", "screen_time"], table="screens", purpose="to attach CXR embeddings")
    require_columns(embeddings, ["stay_id", "time", *(cols[:1] or [f"{EMB_PREFIX}000"])], table="cxr embeddings")
    if image_paths:
        require_columns(embeddings, ["image_path"], table="cxr embeddings",
                        purpose="to attach the studies' image files (fine-tuning the encoder)")
    values = embeddings[cols].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise SchemaError(f"cxr embeddings: row {row} has a missing or infinite embedding value")
    times = pd.to_datetime(embeddings["time"]).to_numpy(dtype="datetime64[ns]")
    keys = ([embeddings["study_id"].to_numpy()] if "study_id" in embeddings.columns else []) + [times]
    order = np.lexsort(keys)  # by time, then study_id: the later study of a tie wins, reproducibly
    values, times = values[order], times[order]
    right = pd.DataFrame({"stay_id": embeddings["stay_id"].to_numpy(dtype=np.int64)[order],
                          "_visible": times + np.timedelta64(int(round(delay_h * 3.6e12)), "ns"),
                          "_time": times, "_row": np.arange(len(order))})
    left = pd.DataFrame({"stay_id": screens["stay_id"].to_numpy(dtype=np.int64),
                         "_visible": pd.to_datetime(screens["screen_time"]).to_numpy(dtype="datetime64[ns]"),
                         "_pos": np.arange(len(screens))}).sort_values("_visible", kind="stable")
    hit = pd.merge_asof(left, right, on="_visible", by="stay_id", direction="backward").sort_values("_pos")
    row = hit["_row"].to_numpy()
    got = ~np.isnan(row)
    out = screens.drop(columns=[c for c in screens.columns if c.startswith(EMB_PREFIX)])
    emb = np.full((len(out), len(cols)), np.nan, dtype=np.float32)
    emb[got] = values[row[got].astype(np.int64)]
    out = pd.concat([out, pd.DataFrame(emb, columns=cols, index=out.index)], axis=1)
    age = (hit["_visible"].to_numpy() - hit["_time"].to_numpy()) / np.timedelta64(1, "h")
    out[EMB_AGE] = np.where(got, age.astype("float64"), np.nan)
    if image_paths:
        files = embeddings["image_path"].to_numpy(dtype=object)[order]
        picked = np.full(len(out), None, dtype=object)
        picked[got] = files[row[got].astype(np.int64)]
        out[EMB_IMAGE] = picked
    return out


def embed_cxr_table(encoder, cxr: pd.DataFrame, image_root: str | PathLike | None = None, *,
                    batch_size: int = 64, device=None) -> pd.DataFrame:
    """Embed every study of a ``cxr`` table that has an image: the embedding table.

    ``encoder`` is a fitted ``imaging.CXRFindingClassifier`` or its network (``features``); studies without an
    ``image_path`` have no embedding and are left out (counted in ``attrs["report"]``). ``device``
    as in :func:`fusion.training.resolve_device` (default: where the encoder is); on CUDA the
    encoder runs in ``channels_last`` under bfloat16 autocast.
    """
    import torch

    from fusion.training import amp_context, resolve_device
    from imaging.contract import ImageContractError, load_image, resize_uint8

    encoder = getattr(encoder, "network_", encoder)
    dev = next(encoder.parameters()).device if device is None else resolve_device(device)
    if dev.type == "cuda":
        encoder.to(dev, memory_format=torch.channels_last)

    require_columns(cxr, ["study_id", "stay_id", "time", "image_path"], table="cxr", purpose="to embed studies")
    root = Path(image_root) if image_root is not None else Path(".")
    has = cxr["image_path"].notna().to_numpy() & (cxr["image_path"].astype(str).str.len() > 0).to_numpy()
    rows = np.flatnonzero(has)
    size = int(encoder.image_size)
    feats = []
    for start in range(0, len(rows), batch_size):
        imgs = []
        for r in rows[start:start + batch_size]:
            try:
                imgs.append(resize_uint8(load_image(root / str(cxr["image_path"].iloc[r])), size))
            except ImageContractError as exc:
                raise ImageContractError(f"cxr row {r} (study_id {cxr['study_id'].iloc[r]}): {exc}") from None
        with amp_context(dev, dev.type == "cuda"):
            feats.append(encoder.features(np.stack(imgs), batch_size=batch_size, device=dev))
    dim = int(encoder.feature_dim)
    values = np.concatenate(feats) if feats else np.zeros((0, dim), dtype=np.float32)
    # image_path stays (relative to image_root): a fusion model that fine-tunes the encoder reads the films
    keep = [c for c in ("study_id", "subject_id", "stay_id", "time", "image_path") if c in cxr.columns]
    out = cxr.iloc[rows][keep].reset_index(drop=True)
    out = pd.concat([out, pd.DataFrame(values.astype(np.float32), columns=embedding_names(dim))], axis=1)
    out.attrs["report"] = {"studies": int(len(cxr)), "embedded": int(len(rows)),
                           "without_image": int(len(cxr) - len(rows))}
    return out


def synthetic_cxr_embeddings(cxr: pd.DataFrame, train_stays, out_dir: str | PathLike, *, seed: int = 0,
                             image_size: int = 64, epochs: int = 8, batch_size: int = 32,
                             device=None) -> pd.DataFrame:
    """Render, train a small encoder on training patients' films, embed every study; write the artefacts.

    The encoder is an ``imaging.CXRFindingClassifier`` (``arch="small"``) trained on the films'
    ``truth_<finding>`` labels, early-stopped and calibrated on a fifth of the training patients.

    Parameters
    ----------
    cxr : DataFrame
        The synthetic cohort's ``cxr`` table (``truth_<finding>`` columns).
    train_stays : array-like
        Stays whose films may train the encoder (the training split); others are only embedded.
    out_dir : path-like
        Receives ``cxr_images/``, ``encoder/`` (imaging model directory), ``cxr_embeddings.parquet``
        and ``cxr_embeddings.json`` (seed, sizes, encoder sha256, validation AUROC).

    Returns
    -------
    DataFrame
        The embedding table.
    """
    from ehr.splits import holdout_groups
    from imaging.datasets import ImageSet, load_images
    from imaging.estimator import CXRFindingClassifier
    from imaging.synthetic_images import render_cohort_images

    out_dir = Path(out_dir)
    truth = [f"truth_{f}" for f in CXR_FINDINGS]
    require_columns(cxr, ["study_id", "subject_id", "stay_id", "time", *truth], table="cxr",
                    purpose="to render procedural films")
    rendered = render_cohort_images(cxr, out_dir, seed, size=image_size)
    images = load_images([out_dir / p for p in rendered["image_path"]], image_size)
    data = ImageSet(images, rendered[truth].to_numpy(dtype=np.float32), tuple(CXR_FINDINGS),
                    rendered["subject_id"].to_numpy(dtype=np.int64))
    tr = np.flatnonzero(rendered["stay_id"].isin(np.asarray(train_stays)).to_numpy())
    fit_rows, val_rows = holdout_groups(data.groups[tr], 0.2, random_state=seed)
    encoder = CXRFindingClassifier(arch="small", findings=tuple(CXR_FINDINGS), image_size=image_size, epochs=epochs,
                                   batch_size=batch_size, random_state=seed, device=device)
    encoder.fit(data.subset(tr[fit_rows]), validation=data.subset(tr[val_rows]))
    encoder.save(out_dir / "encoder")
    table = embed_cxr_table(encoder, rendered, out_dir, device=device)
    with atomic_file(out_dir / "cxr_embeddings.parquet") as tmp:
        table.to_parquet(tmp)
    info = {"seed": seed, "image_size": image_size, "epochs": epochs, "studies": int(len(table)),
            "encoder_training_studies": int(len(tr)), "encoder": "small",
            "encoder_sha256": file_sha256(out_dir / "encoder" / "model.safetensors"),
            "validation_mean_auroc": encoder.val_metrics_["mean_auroc"], "best_epoch": encoder.best_epoch_}
    (out_dir / "cxr_embeddings.json").write_text(json.dumps(info, indent=1) + "\n")
    log.info("embedded %d studies (encoder validation mean AUROC %.3f)", len(table), info["validation_mean_auroc"])
    return table
