"""Explanations of the deep models: occlusion at the screen, and attention over the films.

Cheap and honest rather than exact: for each concept, the concept is *occluded* (its value,
"measured" and time-gap channels set to "never measured", over the whole history up to the
screen) and the network is run again; the row's ``contribution`` is the change in calibrated
log-odds at the screen, ``logit(risk) - logit(risk without the concept)`` (natural log-odds, as
GBDT's SHAP values; positive raises risk). Contributions are not additive. One pass per concept
scores every screen of the table at once.

Fusion models add one row per film among the ``max_images`` most recent (``cxr_image_1`` is the
latest): ``contribution`` is the change when that film alone is removed (older films move up,
so a model that reads only the latest then reads the one before), ``value`` the attention
weight the mid-fusion model gives it (null for the other strategies), ``age_h`` its age.

Every screen also gets a ``total`` row: ``contribution = logit(risk) - baseline``, where
``baseline`` (on every row of the screen) is the log-odds with every concept occluded and no film.

Examples
--------
>>> from fusion._demo import demo_screens
>>> from fusion.models import SequenceModel
>>> s = demo_screens(n_stays=12, seed=0, hours=4)
>>> m = SequenceModel(hidden=8, head_hidden=8, epochs=1).fit(s)
>>> e = m.explain(s, rows=[3])
>>> e["feature"].tolist()
['hr', 'lact', 'total']
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ehr.schema import validate
from fusion.sequences import Sequences

__all__ = ["occlusion_explanations"]


def _occlude(seq: Sequences, channels: list[int]) -> Sequences:
    """A copy of ``seq`` with ``channels`` (value, measured, gap triples) set to "never measured"."""
    x = seq.x.copy()
    for c in channels:
        x[:, c] = 1.0 if c % 3 == 2 else 0.0  # gap channel: 1 = never; value and mask: 0
    return dataclasses.replace(seq, x=x)


def _without_images(seq: Sequences, which: int | None = None) -> Sequences:
    """``seq`` without any film, or without the ``which``-th most recent (the older ones move up)."""
    idx, age = seq.image_index, seq.image_age_h
    if which is None:
        idx = np.zeros_like(idx)
    else:
        keep = [j for j in range(idx.shape[1]) if j != which]
        idx = np.concatenate([idx[:, keep], np.zeros_like(idx[:, :1])], axis=1)
        age = np.concatenate([age[:, keep], np.zeros_like(age[:, :1])], axis=1)
    return dataclasses.replace(seq, image_index=idx, image_age_h=age)  # keeps the films' files (fine-tuning)


def occlusion_explanations(model, screens: pd.DataFrame, rows=None) -> pd.DataFrame:
    """The ``explanations`` table of a fitted :class:`fusion.models.SequenceModel` (or fusion model).

    ``rows``: positions (or a boolean mask) of ``screens`` to explain; default every row. The
    history of each stay is read from all of ``screens``.
    """
    inputs = model.inputs_
    seq = inputs.transform(screens)
    n = len(screens)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    sorted_pos = np.empty(n, dtype=np.int64)
    sorted_pos[seq.order] = np.arange(n)
    at = sorted_pos[rows]  # positions of the explained rows in sorted order
    images = seq.study_emb is not None
    keys = ("logits", "attention") if images and model.strategy_ == "mid" else ("logits",)
    full = model._outputs(seq, keys)
    z = full["logits"][at]
    all_channels = [c for name in inputs.concepts_ for c in inputs.concept_channels(name)]
    bare = _occlude(_without_images(seq) if images else seq, all_channels)
    baseline = model._outputs(bare)["logits"][at]
    parts = []

    def add(feature, value, age_h, contribution):
        parts.append(pd.DataFrame({"row": rows, "feature": feature, "value": value, "age_h": age_h,
                                   "contribution": contribution}))

    for name in inputs.concepts_:
        occluded = model._outputs(_occlude(seq, inputs.concept_channels(name)))["logits"][at]
        value = screens[name].to_numpy(dtype="float64")[rows]
        add(name, value, screens[f"{name}_age_h"].to_numpy(dtype="float64")[rows], z - occluded)
    if images:
        for j in range(seq.image_index.shape[1]):
            has = seq.image_index[at, j] > 0
            if not has.any():
                continue
            without = model._outputs(_without_images(seq, j))["logits"][at]
            weight = full["attention"][at, j + 1] if "attention" in full else np.full(len(at), np.nan)
            age = np.where(has, seq.image_age_h[at, j], np.nan)
            add(f"cxr_image_{j + 1}", weight, age, np.where(has, z - without, np.nan))
    add("total", np.nan, np.nan, z - baseline)
    out = pd.concat(parts, ignore_index=True).dropna(subset=["contribution"])
    out = out.sort_values(["row"], kind="stable")
    base = np.full(n, np.nan)
    base[rows] = baseline
    r = out["row"].to_numpy()
    table = pd.DataFrame({
        "stay_id": screens["stay_id"].to_numpy(dtype="int64")[r],
        "screen_time": pd.to_datetime(screens["screen_time"]).to_numpy()[r],
        "model": model.model_name,
        "feature": out["feature"].to_numpy(dtype=object),
        "value": out["value"].to_numpy(dtype="float64"),
        "state": pd.Series([None] * len(out), dtype=object),
        "age_h": out["age_h"].to_numpy(dtype="float64"),
        "weight": np.nan,
        "contribution": out["contribution"].to_numpy(dtype="float64"),
        "baseline": base[r],
    })
    return validate(table, "explanations")
