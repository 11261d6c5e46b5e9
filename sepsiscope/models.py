"""Every model kind in one registry, loaded by its ``model.json`` kind, imported only when used.

``MODEL_CLASSES`` maps a ``model.json`` kind to ``"module:Class"``; the class is imported when a
model of that kind is loaded, so scoring with a CPN never imports torch.

Examples
--------
>>> model_class("gbdt").__name__
'GBDTClassifier'
>>> model_class("forest")
Traceback (most recent call last):
...
ehr.artefacts.ModelFormatError: no model kind 'forest'; SepsisScope knows cpn, gbdt, imaging, stack, sequence, fusion
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.artefacts import ModelFormatError, read_model_meta

__all__ = ["MODEL_CLASSES", "SCORER_CLASSES", "model_class", "model_kind", "model_name_of", "scores_one_screen",
           "load_model", "load_scorer", "screen_to_explain"]

#: ``model.json`` kind -> the class that reads it back (a :class:`ehr.estimator.SepsisEstimator`)
MODEL_CLASSES: dict[str, str] = {
    "cpn": "cpn.model:SepsisCPN",
    "gbdt": "gbdt.model:GBDTClassifier",
    "imaging": "imaging.estimator:CXRFindingClassifier",
    "stack": "fusion.stacking:StackClassifier",
    "sequence": "fusion.models:SequenceModel",
    "fusion": "fusion.models:FusionModel",
}

#: kinds that can also be read for scoring alone, without scikit-learn (an :class:`ehr.fitted.FittedModel`
#: with the same ``predict_proba``/``explain``), for one-shot commands such as ``sepsiscope explain``
SCORER_CLASSES: dict[str, str] = {
    "cpn": "cpn.scoring:CPNScorer",
}


def _import(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def model_class(kind: str) -> type:
    """The estimator class of a model kind (imported on first use)."""
    if kind not in MODEL_CLASSES:
        raise ModelFormatError(f"no model kind {kind!r}; SepsisScope knows {', '.join(MODEL_CLASSES)}")
    return _import(MODEL_CLASSES[kind])


def model_kind(path) -> str:
    """The ``kind`` recorded in ``path/model.json`` (:class:`~ehr.artefacts.ModelFormatError` if none)."""
    return read_model_meta(path)["kind"]


def model_name_of(path) -> str:
    """The name a saved model gives its rows in predictions and operating points (``model_name``:
    the kind, or what its parameters make it, e.g. ``lightgbm`` for a GBDT), without loading its files."""
    meta = read_model_meta(path)
    kind = meta["kind"]
    cls = _import(SCORER_CLASSES[kind]) if kind in SCORER_CLASSES else model_class(kind)
    return cls(**cls._config_from_json(meta.get("config", {}))).model_name


def scores_one_screen(path) -> bool:
    """Whether a saved model scores a screen from that screen's own columns: not from its members'
    predictions (a stack) or the stay's whole history (sequence and fusion models), which a
    service posting one screen at a time cannot give it."""
    cls = model_class(model_kind(path))
    # (``is True``: a class-level flag; the CPN's ``reads_history`` is a per-network property, and a CPN
    # given one screen reads the screen's own values for its trend leaves)
    return not (getattr(cls, "reads_predictions", False) is True or getattr(cls, "reads_history", False) is True)


def load_model(path):
    """Load any saved model directory by its kind; kind, format version and files are checked."""
    return model_class(model_kind(path)).load(Path(path))


def load_scorer(path):
    """Load a saved model to score and explain with: its kind's scorer class where it has one
    (:data:`SCORER_CLASSES`, no scikit-learn imported), else :func:`load_model`.

    >>> import tempfile
    >>> from gbdt._demo import demo_screens
    >>> from gbdt.model import GBDTClassifier
    >>> s = demo_screens(n_stays=30, seed=0)
    >>> d = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s).save(tempfile.mkdtemp() + "/m")
    >>> type(load_scorer(d)).__name__   # no scorer class for this kind: the model itself
    'GBDTClassifier'
    """
    kind = model_kind(path)
    if kind in SCORER_CLASSES:
        return _import(SCORER_CLASSES[kind]).load(Path(path))
    return load_model(path)


def screen_to_explain(model, screens: pd.DataFrame, stay_id, at=None) -> pd.DataFrame:
    """The one screen of ``stay_id`` to explain, as a one-row table.

    ``at`` (a time) picks the stay's last screen at or before it; without ``at``, the screen the
    model gives the highest risk. Raises :class:`~ehr.schema.SchemaError` when ``screens`` lack a
    column the model needs, and ``ValueError`` naming the stay when it has no such screen.

    >>> from gbdt._demo import demo_screens
    >>> from gbdt.model import GBDTClassifier
    >>> s = demo_screens(n_stays=30, seed=0)
    >>> m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s)
    >>> screen_to_explain(m, s, 1, at=s["screen_time"].iloc[2]).index.tolist()
    [2]
    """
    model.check_screens(screens)
    stay = screens[screens["stay_id"] == stay_id]
    if stay.empty:
        raise ValueError(f"stay {stay_id} is not in the screens")
    if at is not None:
        stay = stay[stay["screen_time"] <= pd.Timestamp(at)]
        if stay.empty:
            raise ValueError(f"stay {stay_id} has no screen at or before {at}")
        return stay.iloc[[-1]]
    return stay.iloc[[int(np.argmax(model.predict_proba(stay)[:, 1]))]]
