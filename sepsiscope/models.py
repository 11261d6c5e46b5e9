"""Load any saved model directory by its ``model.json`` kind, and score screens with it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ehr.schema import validate

__all__ = ["load_model", "model_kind", "predict_table"]


def model_kind(path) -> str:
    """The ``kind`` recorded in ``path/model.json`` (clear error when it is not a model directory)."""
    meta = Path(path) / "model.json"
    if not meta.exists():
        raise FileNotFoundError(f"{path}: no model.json; not a SepsisScope model directory")
    kind = json.loads(meta.read_text()).get("kind")
    if kind is None:
        raise ValueError(f"{meta}: no 'kind' field")
    return kind


def load_model(path):
    """Load a CPN or GBDT model directory."""
    kind = model_kind(path)
    if kind == "cpn":
        from cpn import SepsisCPN

        return SepsisCPN.load(path)
    if kind == "gbdt":
        from gbdt import GBDTClassifier

        return GBDTClassifier.load(path)
    raise ValueError(f"{path}: model kind {kind!r} cannot score screens (expected 'cpn' or 'gbdt')")


def predict_table(model, screens: pd.DataFrame, *, name: str, split: str | None = None,
                  fold: int | None = None) -> pd.DataFrame:
    """A ``predictions`` table of ``model`` on ``screens``."""
    risk = model.predict_proba(screens)[:, 1]
    out = pd.DataFrame({
        "stay_id": screens["stay_id"].to_numpy(dtype="int64"),
        "screen_time": screens["screen_time"].to_numpy(),
        "model": name,
        "risk": risk,
        "fold": pd.array([fold] * len(screens), dtype="Int64"),
        "split": pd.Series([split] * len(screens), dtype="object"),
    })
    return validate(out, "predictions")
