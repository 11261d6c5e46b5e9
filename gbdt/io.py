"""The GBDT's files: the engine's native text model and the fitted state in ``model.json``.

:meth:`GBDTClassifier.save <ehr.estimator.SepsisEstimator.save>` writes, through
:mod:`ehr.artefacts`,

``model.json``
    ``kind="gbdt"``, ``format_version``, the hyperparameters (``config``), the screen columns
    the model needs (``features``) and, in ``state``, the fitted feature state (concepts,
    category encodings), the fitted attributes needed to predict and the package versions.
``booster.txt`` (LightGBM ``model_to_string``) or ``booster.json`` (XGBoost ``save_model``)
    the trees, in the engine's own documented format. Never pickled. Its sha256 is checked
    before LightGBM or XGBoost reads a byte of it, so a truncated or swapped file is refused
    with :class:`ehr.artefacts.ModelFormatError` instead of crashing the native reader.

Examples
--------
>>> import tempfile
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=40, seed=3)
>>> m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(s)
>>> d = m.save(tempfile.mkdtemp() + "/m")
>>> sorted(p.name for p in d.iterdir())
['booster.txt', 'model.json']
>>> bool((GBDTClassifier.load(d).predict_proba(s) == m.predict_proba(s)).all())
True
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from ehr.artefacts import ModelFormatError, model_file

from .features import ScreenFeatures
from .lgb_text import check_lightgbm_text

__all__ = ["BOOSTER_FILE", "write_booster", "fitted_state", "restore", "check_lightgbm_text"]

#: The booster's file name per backend (fixed: ``model.json`` cannot point anywhere else).
BOOSTER_FILE = {"lightgbm": "booster.txt", "xgboost": "booster.json"}


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def write_booster(model, directory: Path) -> None:
    """Write the fitted booster of ``model`` into ``directory`` in its engine's own format."""
    path = Path(directory) / BOOSTER_FILE[model.backend]
    if model.backend == "lightgbm":
        path.write_text(model.booster_.model_to_string(), encoding="utf-8")
    else:
        model.booster_.save_model(str(path))


def fitted_state(model) -> dict:
    """The fitted attributes of ``model`` for ``model.json["state"]``."""
    return {"features": model.features_.to_dict(), "feature_names": list(model.feature_names_),
            "dropped_features": list(model.dropped_features_),
            "n_estimators": int(model.n_estimators_), "scale_pos_weight": float(model.scale_pos_weight_),
            "device": model.device_, "classes": [0, 1], "training_summary": dict(model.training_summary_),
            "versions": {p: _version(p) for p in ("sepsiscope", model.backend, "numpy", "pandas")}}


def restore(model, directory: Path, meta: dict) -> None:
    """Set the fitted attributes of ``model`` from ``meta`` and the (checked) booster file."""
    if model.backend not in BOOSTER_FILE:
        raise ModelFormatError(f"{Path(directory) / 'model.json'}: unknown backend {model.backend!r}")
    path = model_file(directory, meta, BOOSTER_FILE[model.backend])
    if model.backend == "lightgbm":
        import lightgbm as lgb

        model.booster_ = lgb.Booster(model_str=check_lightgbm_text(path.read_bytes(), path))
    else:
        import xgboost as xgb

        model.booster_ = xgb.Booster()
        model.booster_.load_model(str(path))
        model.booster_.set_param({"device": "cpu", "nthread": int(model.n_jobs)})
    state = meta["state"]
    model.features_ = ScreenFeatures.from_dict(state["features"])
    model.feature_names_ = list(state["feature_names"])
    model.dropped_features_ = list(state["dropped_features"])
    model.n_estimators_ = int(state["n_estimators"])
    model.scale_pos_weight_ = float(state["scale_pos_weight"])
    model.device_ = state["device"]
    model.classes_ = np.array(state["classes"])
    model.training_summary_ = dict(state["training_summary"])
