"""What every fitted SepsisScope model can do without scikit-learn: score, explain, load.

:class:`FittedModel` holds the half of the model interface (:mod:`ehr.estimator`) that a model
read back from its ``model.json`` needs in order to score and explain screens; the estimator
classes add fitting and saving on top of it (:class:`ehr.estimator.SepsisEstimator`, a
scikit-learn ``BaseEstimator``). It exists so that a one-shot command can load a model without
importing scikit-learn, which pulls in scipy.stats (about 1.2 s of a 2 s ``sepsiscope explain``
on the 2-core machine): a kind may register a scorer class built on it
(``sepsiscope.models.SCORER_CLASSES``, e.g. :class:`cpn.scoring.CPNScorer`).

Examples
--------
>>> import numpy as np, pandas as pd
>>> class Half(FittedModel):
...     kind = "half"
...     def predict_proba(self, screens):
...         return np.full((len(screens), 2), 0.5)
>>> m = Half()
>>> m.features_in_ = ["hr"]
>>> s = pd.DataFrame({"stay_id": [1], "screen_time": pd.to_datetime(["2020-01-01"]), "hr": [80.0]})
>>> m.predictions(s)["risk"].tolist(), m.required_columns
([0.5], ['hr'])
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ehr.artefacts import ModelFormatError, read_model_meta
from ehr.schema import SchemaError, validate

__all__ = ["FittedModel", "predictions_frame"]


class FittedModel:
    """Scoring, explaining and loading, shared by every model class (see the module docstring)."""

    #: ``model.json`` kind; also the default model name in predictions tables
    kind: ClassVar[str] = ""
    #: bump when ``model.json`` or the saved files change meaning; ``load`` refuses other versions
    format_version: ClassVar[int] = 1

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, screens: pd.DataFrame) -> pd.DataFrame:
        """The ``explanations`` table for ``screens`` (one row per screen and feature)."""
        raise NotImplementedError(f"{type(self).__name__} does not explain its predictions")

    def _restore(self, directory: Path, meta: dict) -> None:  # pragma: no cover - abstract
        """Set the fitted attributes from ``meta`` and the (checked) files of ``directory``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def model_name(self) -> str:
        """Name in the ``model`` column of predictions and explanations (default: the kind)."""
        return self.kind

    @property
    def required_columns(self) -> list[str]:
        """Screen columns a fitted model needs (``features_in_``)."""
        self._check_fitted("features_in_")
        return list(self.features_in_)

    def check_screens(self, screens: pd.DataFrame, where: str = "screens") -> None:
        """Raise :class:`SchemaError` naming every column the model needs that ``screens`` lacks."""
        missing = [c for c in self.required_columns if c not in screens.columns]
        if missing:
            shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
            raise SchemaError(f"{where}: missing column(s) {shown} that this {self.kind} model was trained "
                              f"on; score screens built from the same concepts")

    def _check_fitted(self, attribute: str = "features_in_") -> None:
        if not hasattr(self, attribute):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or "
                               f"{type(self).__name__}.load() first")

    def data_hashes(self) -> dict:
        """Hashes of the fitting data recorded in ``model.json`` (``data_hashes_`` if set)."""
        return dict(getattr(self, "data_hashes_", {}))

    @classmethod
    def _config_from_json(cls, config: dict) -> dict:
        """Turn ``model.json["config"]`` back into ``__init__`` arguments (override for tuples etc.)."""
        return dict(config)

    @classmethod
    def load(cls, directory):
        """Read a model written by :meth:`save`; refuses another kind or format version."""
        directory = Path(directory)
        meta = read_model_meta(directory, kind=cls.kind, format_version=cls.format_version)
        try:
            model = cls(**cls._config_from_json(meta.get("config", {})))
        except TypeError as exc:
            raise ModelFormatError(f"{directory / 'model.json'}: config does not fit {cls.__name__} "
                                   f"({exc})") from None
        try:
            model.features_in_ = list(meta.get("features", []))
            model.data_hashes_ = dict(meta.get("data_hashes", {}))
            model._restore(directory, meta)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            # a model.json edited or written by another version: missing or mistyped fitted state
            raise ModelFormatError(f"{directory / 'model.json'}: fitted state is incomplete or invalid "
                                   f"({type(exc).__name__}: {exc}); retrain the model") from None
        return model

    def predictions(self, screens: pd.DataFrame, *, name: str | None = None, split: str | None = None,
                    fold: int | None = None) -> pd.DataFrame:
        """The ``predictions`` table of this model on ``screens`` (risk = ``predict_proba[:, 1]``)."""
        risk = np.asarray(self.predict_proba(screens))[:, 1]
        return predictions_frame(screens, risk, model=name or self.model_name, split=split, fold=fold)


def predictions_frame(screens: pd.DataFrame, risk, *, model: str, split: str | None = None,
                      fold=None) -> pd.DataFrame:
    """A validated ``predictions`` table: keys from ``screens``, ``risk`` per row.

    ``fold`` may be one integer for all rows or an array per row.
    """
    n = len(screens)
    risk = np.asarray(risk, dtype="float64")
    if risk.shape != (n,):
        raise ValueError(f"risk has shape {risk.shape}, expected ({n},)")
    folds = np.broadcast_to(np.asarray(fold if fold is not None else pd.NA, dtype=object), (n,))
    out = pd.DataFrame({
        "stay_id": screens["stay_id"].to_numpy(dtype="int64"),
        "screen_time": screens["screen_time"].to_numpy(),
        "model": model,
        "risk": risk,
        "fold": pd.array(folds, dtype="Int64"),
        "split": pd.Series([split] * n, dtype="object"),
    })
    return validate(out, "predictions")
