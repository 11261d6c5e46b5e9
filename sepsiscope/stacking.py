"""The main job's stacking steps: out-of-fold member predictions on train, then models that read them.

A pipeline model with ``stacks=True`` (:data:`sepsiscope.pipeline.PIPELINE_MODELS`, e.g. ``stack``)
is not fitted on screens: it is fitted on the other models' patient-grouped K-fold out-of-fold
predictions on the training split (``split="train"``, ``fold`` filled; NEWS2 scored on the same
screens) and scores dev and test from the members' predictions there. The dev split, which picks
the thresholds, is never used to fit it. Nothing here asks a model's kind.

Examples
--------
>>> from gbdt import GBDTClassifier, _demo
>>> s = _demo.demo_screens(n_stays=40, seed=0)
>>> members = {"lightgbm": (GBDTClassifier(n_estimators=5, early_stopping_rounds=None), {})}
>>> p = oof_member_predictions(members, s, n_splits=3, seed=0)
>>> p.groupby("model")["fold"].nunique().to_dict(), set(p["split"])
({'lightgbm': 3}, {'train'})
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ehr.estimator import Labels

__all__ = ["oof_member_predictions", "fit_stackers", "stacker_predictions", "stacker_explanations"]


def oof_member_predictions(members: dict, train: pd.DataFrame, labels: Labels | None = None, *,
                           n_splits: int = 5, seed: int = 0, timed: Callable | None = None) -> pd.DataFrame:
    """Out-of-fold ``predictions`` on ``train`` of every member, all on the same patient-grouped folds.

    ``members`` maps a model name to ``(estimator, fit keywords or a callable of the fold's
    training screens)``; each fold fits a clone of the estimator (:func:`fusion.oof.oof_predictions`).
    ``timed(label)`` is a context manager that records each member's time (the main job's step).
    """
    from contextlib import nullcontext

    from fusion.oof import fold_assignment, oof_predictions

    folds = fold_assignment(train, n_splits, random_state=seed)
    out = []
    for name, (estimator, fit_params) in members.items():
        with (timed(f"out-of-fold {name} ({n_splits} folds)") if timed else nullcontext()):
            out.append(oof_predictions(estimator, train, labels, folds=folds, name=name, split="train",
                                       fit_params=fit_params))
    return pd.concat(out, ignore_index=True)


def fit_stackers(stackers: dict, predictions: pd.DataFrame, train: pd.DataFrame, *, horizon_h: float) -> dict:
    """Fit each stacking model on the out-of-fold ``train`` rows of ``predictions``, labelled with the
    members' horizon (onset within ``horizon_h``); ``{name: model}``."""
    return {name: model.fit_predictions(predictions, train, split="train", horizon_h=horizon_h)
            for name, model in stackers.items()}


def stacker_predictions(stackers: dict, predictions: pd.DataFrame, screens: pd.DataFrame, split: str) -> list:
    """Each stacking model's ``predictions`` on ``screens`` from the members' rows of ``split``."""
    rows = predictions[predictions["split"] == split]
    return [m.predictions_from(rows, screens, split=split, name=name) for name, m in stackers.items()]


def stacker_explanations(stackers: dict, predictions: pd.DataFrame, screens: pd.DataFrame, split: str) -> list:
    """Each stacking model's explanations (members' log-odds contributions) at ``screens``."""
    rows = predictions[predictions["split"] == split]
    return [m.explain(m.member_table(rows, screens, split=split, subset=True), model_name=name)
            for name, m in stackers.items()]
