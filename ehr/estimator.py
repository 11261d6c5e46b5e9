"""The one model interface: every SepsisScope model is a :class:`SepsisEstimator`.

A model is a scikit-learn ``BaseEstimator`` (hyperparameters are the ``__init__`` keyword
arguments, stored unchanged; ``get_params``/``set_params``/``clone`` come from scikit-learn) with

``fit(screens, labels=None)``   labels: a :class:`Labels` (default: taken from the screens)
``predict_proba(screens)``      ``(n, 2)``; column 1 is the risk of onset within the horizon
``explain(screens)``            the ``explanations`` table of ``ehr.schema``
``save(dir)`` / ``load(dir)``   one ``model.json`` through :mod:`ehr.artefacts`
``predictions(screens, ...)``   the ``predictions`` table of ``ehr.schema``

Subclasses set ``kind`` and ``format_version`` and implement ``fit``, ``predict_proba``,
``explain``, ``_write_files(tmp)``, ``_state()`` and ``_restore(directory, meta)``; the base class
does the rest, so the pipeline loops over models without knowing their kinds.

Examples
--------
>>> import numpy as np, pandas as pd, tempfile
>>> class MeanRisk(SepsisEstimator):
...     kind = "mean_risk"
...     def __init__(self, shrink=0.0):
...         self.shrink = shrink
...     def fit(self, screens, labels=None):
...         labels = Labels.coerce(labels, screens)
...         self.rate_ = float(labels.y.mean()) * (1 - self.shrink)
...         self.features_in_ = []
...         return self
...     def predict_proba(self, screens):
...         self._check_fitted("rate_")
...         p = np.full(len(screens), self.rate_)
...         return np.column_stack([1 - p, p])
...     def _state(self):
...         return {"rate": self.rate_}
...     def _restore(self, directory, meta):
...         self.rate_ = meta["state"]["rate"]
>>> s = pd.DataFrame({"stay_id": [1, 1, 2],
...                   "screen_time": pd.to_datetime(["2020-01-01 01:00", "2020-01-01 02:00", "2020-01-01 01:00"]),
...                   "onset_in_h": [10.0, 9.0, np.nan]})
>>> m = MeanRisk(shrink=0.5).fit(s)
>>> m.get_params(), round(m.rate_, 3)
({'shrink': 0.5}, 0.333)
>>> d = m.save(tempfile.mkdtemp() + "/m")
>>> MeanRisk.load(d).predictions(s, split="test")["risk"].round(3).tolist()
[0.333, 0.333, 0.333]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ehr.artefacts import read_model_meta, write_model_dir
from ehr.schema import SchemaError, validate

__all__ = ["Labels", "SepsisEstimator", "DEFAULT_HORIZON_H", "predictions_frame"]

#: The label horizon of the SepsisFinder protocol: onset within 48 h of a screen.
DEFAULT_HORIZON_H = 48.0


@dataclass(frozen=True)
class Labels:
    """What every model learns from: hours from each screen to onset, and the horizon.

    ``onset_in_h[i]`` is the time from screen ``i`` to sepsis onset (``NaN`` when no onset follows).
    Models that predict a binary target use :attr:`y` (onset within ``horizon_h``); the CPN uses
    the hours themselves (its target node is a discretised time to onset).

    >>> Labels(np.array([60.0, 48.0, 6.0, np.nan])).y.tolist()
    [0, 1, 1, 0]
    """

    onset_in_h: np.ndarray
    horizon_h: float = DEFAULT_HORIZON_H

    def __post_init__(self):
        o = np.asarray(self.onset_in_h, dtype="float64")
        if o.ndim != 1:
            raise ValueError(f"onset_in_h must be one-dimensional, got shape {o.shape}")
        if np.isinf(o).any():
            row = int(np.flatnonzero(np.isinf(o))[0])
            raise ValueError(f"onset_in_h is infinite at row {row}; use NaN for 'no onset'")
        h = float(self.horizon_h)
        if not (np.isfinite(h) and h > 0):
            raise ValueError(f"horizon_h must be a positive number of hours, got {self.horizon_h!r}")
        object.__setattr__(self, "onset_in_h", o)
        object.__setattr__(self, "horizon_h", h)

    def __len__(self) -> int:
        return len(self.onset_in_h)

    @property
    def y(self) -> np.ndarray:
        """Binary target: 1 when onset follows within ``(0, horizon_h]`` hours."""
        o = self.onset_in_h
        with np.errstate(invalid="ignore"):
            return ((o > 0) & (o <= self.horizon_h)).astype(np.int64)

    def take(self, rows) -> "Labels":
        """The labels of a subset of screens (``rows``: integer positions or a boolean mask)."""
        return Labels(self.onset_in_h[rows], self.horizon_h)

    @classmethod
    def from_screens(cls, screens: pd.DataFrame, horizon_h: float = DEFAULT_HORIZON_H) -> "Labels":
        """Labels from a screens table's ``onset_in_h`` column."""
        if "onset_in_h" not in screens.columns:
            raise SchemaError("screens: missing column 'onset_in_h'; build the screens with labels "
                              "(ehr.screens.build_screens) or pass labels=")
        return cls(screens["onset_in_h"].to_numpy(dtype="float64"), horizon_h)

    @classmethod
    def coerce(cls, labels, screens: pd.DataFrame) -> "Labels":
        """``labels`` as :class:`Labels` for ``screens``: ``None`` reads them from the screens.

        A bare array is taken as ``onset_in_h``. The length must match the screens.
        """
        if labels is None:
            out = cls.from_screens(screens)
        elif isinstance(labels, Labels):
            out = labels
        else:
            out = cls(np.asarray(labels, dtype="float64"))
        if len(out) != len(screens):
            raise ValueError(f"labels have {len(out)} rows but screens have {len(screens)}")
        return out


class SepsisEstimator(BaseEstimator):
    """Base class of every SepsisScope model (see the module docstring for the contract)."""

    #: ``model.json`` kind; also the default model name in predictions tables
    kind: ClassVar[str] = ""
    #: bump when ``model.json`` or the saved files change meaning; ``load`` refuses other versions
    format_version: ClassVar[int] = 1

    # ------------------------------------------------------------------ to implement
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, screens: pd.DataFrame) -> pd.DataFrame:
        """The ``explanations`` table for ``screens`` (one row per screen and feature)."""
        raise NotImplementedError(f"{type(self).__name__} does not explain its predictions")

    def _write_files(self, directory: Path) -> None:
        """Write the model's own files (weights, network, booster) into ``directory``."""

    def _state(self) -> dict:
        """Fitted attributes, JSON-safe, stored as ``model.json["state"]``."""
        return {}

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

    def _config(self) -> dict:
        """The hyperparameters as stored in ``model.json["config"]`` (override to make one JSON-safe)."""
        return self.get_params(deep=False)

    def save(self, directory, *, attachments: dict | None = None) -> Path:
        """Write ``model.json`` and the model's files to ``directory``, atomically; return it.

        ``attachments`` (``{file name: text, bytes or path}``) travel in the same atomic write,
        e.g. ``{"run.json": ...}`` (see :func:`ehr.artefacts.write_attachments`).
        """
        self._check_fitted()
        return write_model_dir(directory, kind=self.kind, format_version=self.format_version,
                               config=self._config(), features=self.required_columns,
                               write_files=self._write_files, data_hashes=self.data_hashes(),
                               state=self._state(), attachments=attachments)

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
            from ehr.artefacts import ModelFormatError

            raise ModelFormatError(f"{directory / 'model.json'}: config does not fit {cls.__name__} "
                                   f"({exc})") from None
        from ehr.artefacts import ModelFormatError

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
