"""``sepsiscope predict``: score screens with a saved model, its out-of-fold predictions, or a stack.

Examples
--------
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=40, seed=0)
>>> m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s)
>>> bool(predict_table(m, s)["fold"].isna().all())
True
>>> oof = predict_table(m, s, oof=3)
>>> sorted(oof["fold"].unique().tolist()), set(oof["split"])
([0, 1, 2], {'train'})
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["predict_table", "fit_params_of"]


def fit_params_of(kind: str):
    """The main job's extra ``fit`` keywords for a model kind (e.g. patient groups for early stopping)."""
    from sepsiscope.pipeline import PIPELINE_MODELS

    return next((spec.fit_params for spec in PIPELINE_MODELS.values() if spec.kind == kind), None)


def predict_table(model, screens: pd.DataFrame, *, name: str | None = None, oof: int = 0, seed: int = 0,
                  member_predictions=None) -> pd.DataFrame:
    """The ``predictions`` of a saved model on ``screens``.

    ``oof >= 2``: K-fold patient-grouped out-of-fold predictions (:func:`fusion.oof.oof_predictions`:
    each fold refits the model's hyperparameters; labels from the screens' ``onset_in_h``, 48 h).
    A model that reads member predictions (a stack) needs ``member_predictions`` (a table or a
    parquet path) on the same screens.
    """
    if oof == 1:
        raise ValueError("out-of-fold predictions need at least 2 folds (--oof K, K >= 2)")
    if getattr(model, "reads_predictions", False):
        if oof:
            raise ValueError(f"a {model.kind} model is fitted on its members' out-of-fold predictions "
                             "(`sepsiscope train stack`); it has no out-of-fold predictions of its own")
        if member_predictions is None:
            raise ValueError(f"a {model.kind} model scores its members' predictions: pass --predictions")
        if not isinstance(member_predictions, pd.DataFrame):
            if not Path(member_predictions).is_file():
                raise FileNotFoundError(f"{member_predictions}: file not found (--predictions)")
            member_predictions = pd.read_parquet(member_predictions)
        return model.predictions_from(member_predictions, screens, name=name)
    if oof:
        from fusion.oof import oof_predictions

        return oof_predictions(model, screens, n_splits=oof, random_state=seed, name=name or model.model_name,
                               split="train", fit_params=fit_params_of(model.kind))
    return model.predictions(screens, name=name)
