"""Robustness of the fusion models to missing and older chest films (issue 14, item 4).

Transforms of a screens table with attached embeddings (:mod:`fusion.embeddings`); they change
only what the fusion models read (``emb_cxr_*``, ``emb_cxr_age_h``):

:func:`without_images`     every film removed at inference
:func:`with_older_images`  every film shifted ``shift_h`` hours back: each screen sees only films
                           taken at least ``shift_h`` hours before it, with their true (older) ages.
                           Shifting the study times themselves back would let a screen see a film
                           before it was taken (a leak), so the shift delays visibility instead.

:func:`robustness_predictions` scores fitted models under each condition (a ``predictions``
table, one model name per model and condition, for ``evaluation``'s paired bootstrap);
:func:`robustness_table` reports AUROC/AUPRC and the change against the films as observed.

Examples
--------
>>> from fusion._demo import demo_screens
>>> s = demo_screens(n_stays=6, seed=0, hours=5, images=True)
>>> int(s["emb_cxr_age_h"].notna().sum()), int(without_images(s)["emb_cxr_age_h"].notna().sum())
(10, 0)
>>> older = with_older_images(s, 2.0)
>>> bool((older["emb_cxr_age_h"].dropna() >= 2.0).all())
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import require_columns
from evaluation.metrics import average_precision, roc_auc
from fusion.embeddings import attach_embeddings
from fusion.sequences import EMB_AGE, EMB_IMAGE, embedding_columns, studies_from_screens

__all__ = ["CONDITIONS", "robustness_predictions", "robustness_table", "with_older_images", "without_images"]

#: Conditions of the robustness table: name -> shift in hours (None: every film removed).
CONDITIONS = {"observed": 0.0, "no_cxr": None, "cxr_24h_older": 24.0, "cxr_72h_older": 72.0}


def without_images(screens: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``screens`` in which no screen has a film."""
    require_columns(screens, [EMB_AGE], table="screens", purpose="(no CXR embeddings attached)")
    out = screens.copy()
    out[embedding_columns(out.columns)] = np.nan
    out[EMB_AGE] = np.nan
    if EMB_IMAGE in out.columns:
        out[EMB_IMAGE] = None
    return out


def with_older_images(screens: pd.DataFrame, shift_h: float) -> pd.DataFrame:
    """A copy of ``screens`` in which every film became visible ``shift_h`` hours after it was taken."""
    if shift_h < 0:
        raise ValueError(f"shift_h must be >= 0 (older films), got {shift_h}")
    return attach_embeddings(screens, studies_from_screens(screens), delay_h=shift_h,
                             image_paths=EMB_IMAGE in screens.columns)[screens.columns]


def _condition(screens: pd.DataFrame, shift_h) -> pd.DataFrame:
    if shift_h is None:
        return without_images(screens)
    return screens if shift_h == 0 else with_older_images(screens, shift_h)


def robustness_predictions(models: dict, screens: pd.DataFrame, *, conditions: dict | None = None,
                           split: str | None = None) -> pd.DataFrame:
    """A ``predictions`` table of every model under every condition, named ``<model>@<condition>``.

    Every row of ``screens`` is transformed and scored, so each stay keeps its whole history.
    """
    conditions = dict(CONDITIONS if conditions is None else conditions)
    parts = []
    for cond, shift in conditions.items():
        s = _condition(screens, shift)
        parts += [model.predictions(s, name=f"{name}@{cond}", split=split) for name, model in models.items()]
    return pd.concat(parts, ignore_index=True)


def robustness_table(models: dict, screens: pd.DataFrame, *, conditions: dict | None = None,
                     y=None, subset=None) -> pd.DataFrame:
    """AUROC/AUPRC of each model under each condition, and the change from the first (``observed``).

    Parameters
    ----------
    models : dict name -> fitted estimator
    screens : DataFrame with attached embeddings and ``label`` (or pass ``y``)
    conditions : dict name -> shift_h (None removes every film); default :data:`CONDITIONS`
    subset : boolean mask of rows to score (e.g. a subgroup, or screens with new data)

    Returns
    -------
    DataFrame ``model, condition, auroc, auprc, delta_auroc, delta_auprc`` (long).
    """
    conditions = dict(CONDITIONS if conditions is None else conditions)
    y = screens["label"].to_numpy() if y is None else np.asarray(y)
    keep = np.ones(len(screens), bool) if subset is None else np.asarray(subset, bool)
    pred = robustness_predictions(models, screens, conditions=conditions)
    rows = []
    for cond in conditions:
        for name in models:
            p = pred.loc[pred["model"] == f"{name}@{cond}", "risk"].to_numpy()
            rows.append({"model": name, "condition": cond, "auroc": roc_auc(y[keep], p[keep]),
                         "auprc": average_precision(y[keep], p[keep])})
    out = pd.DataFrame(rows)
    ref = out[out.condition == next(iter(conditions))].set_index("model")
    out["delta_auroc"] = out["auroc"] - out["model"].map(ref["auroc"])
    out["delta_auprc"] = out["auprc"] - out["model"].map(ref["auprc"])
    return out
