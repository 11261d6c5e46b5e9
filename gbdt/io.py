"""Saving and loading fitted GBDT models: ``model.json`` plus the engine's native text model.

A model directory holds

``model.json``
    ``kind="gbdt"``, ``format_version``, ``backend``, package versions, the hyperparameters
    (``config``), the fitted feature state (feature list, concepts, category encodings) and the
    fitted attributes needed to predict.
``booster.txt`` (LightGBM ``model_to_string``) or ``booster.json`` (XGBoost ``save_model``)
    the trees, in the engine's own documented format. Never pickle.

Examples
--------
>>> import tempfile
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=40, seed=3)
>>> m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s)
>>> d = tempfile.mkdtemp()
>>> save_model(m, d)
>>> bool((load_model(d).predict_proba(s) == m.predict_proba(s)).all())
True
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np

from .features import ScreenFeatures
from .model import GBDTClassifier

__all__ = ["save_model", "load_model", "FORMAT_VERSION", "ModelFormatError"]

#: Version of the on-disk layout; bump when model.json changes incompatibly.
FORMAT_VERSION = 1
_BOOSTER_FILE = {"lightgbm": "booster.txt", "xgboost": "booster.json"}


class ModelFormatError(ValueError):
    """A model directory is not a GBDT model this version can read; the message names the file."""


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def save_model(model: GBDTClassifier, directory) -> None:
    """Write a fitted :class:`GBDTClassifier` to ``directory`` (created if needed)."""
    model._check_fitted()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    booster_file = _BOOSTER_FILE[model.backend]
    if model.backend == "lightgbm":
        (d / booster_file).write_text(model.booster_.model_to_string(), encoding="utf-8")
    else:
        model.booster_.save_model(str(d / booster_file))
    meta = {
        "kind": "gbdt",
        "format_version": FORMAT_VERSION,
        "backend": model.backend,
        "booster_file": booster_file,
        "versions": {p: _version(p) for p in ("sepsiscope", model.backend, "numpy", "pandas")},
        "config": _jsonable(model.get_params()),
        "features": model.features_.to_dict(),
        "feature_names": list(model.feature_names_),
        "dropped_features": list(model.dropped_features_),
        "fitted": {"n_estimators": int(model.n_estimators_),
                   "scale_pos_weight": float(model.scale_pos_weight_),
                   "device": model.device_, "classes": [0, 1],
                   "training_summary": dict(model.training_summary_)},
    }
    (d / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_model(directory) -> GBDTClassifier:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    ModelFormatError
        When ``model.json`` is missing, belongs to another kind of model, or has another
        format version.
    """
    d = Path(directory)
    path = d / "model.json"
    if not path.is_file():
        raise ModelFormatError(f"{path}: not found; is {d} a model directory written by save_model?")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("kind") != "gbdt":
        raise ModelFormatError(f"{path}: kind is {meta.get('kind')!r}, expected 'gbdt'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format_version {meta.get('format_version')!r}, this "
                               f"version of sepsiscope reads format_version {FORMAT_VERSION}")
    backend = meta.get("backend")
    if backend not in _BOOSTER_FILE:
        raise ModelFormatError(f"{path}: unknown backend {backend!r}")
    booster_path = d / meta.get("booster_file", _BOOSTER_FILE[backend])
    if not booster_path.is_file():
        raise ModelFormatError(f"{booster_path}: booster file not found (named in {path})")
    model = GBDTClassifier(**meta["config"])
    if backend == "lightgbm":
        import lightgbm as lgb

        model.booster_ = lgb.Booster(model_str=booster_path.read_text(encoding="utf-8"))
    else:
        import xgboost as xgb

        model.booster_ = xgb.Booster()
        model.booster_.load_model(str(booster_path))
        model.booster_.set_param({"device": "cpu", "nthread": int(model.n_jobs)})
    model.features_ = ScreenFeatures.from_dict(meta["features"])
    model.feature_names_ = list(meta["feature_names"])
    model.dropped_features_ = list(meta["dropped_features"])
    fitted = meta["fitted"]
    model.n_estimators_ = int(fitted["n_estimators"])
    model.scale_pos_weight_ = float(fitted["scale_pos_weight"])
    model.device_ = fitted["device"]
    model.classes_ = np.array(fitted["classes"])
    model.training_summary_ = dict(fitted.get("training_summary", {}))
    return model


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
