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

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ehr.artefacts import write_model_dir
from ehr.fitted import FittedModel, predictions_frame
from ehr.schema import SchemaError

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


class SepsisEstimator(FittedModel, BaseEstimator):
    """Base class of every SepsisScope model (see the module docstring for the contract): scoring,
    explaining and loading come from :class:`ehr.fitted.FittedModel`, parameters from scikit-learn."""

    # ------------------------------------------------------------------ to implement
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _write_files(self, directory: Path) -> None:
        """Write the model's own files (weights, network, booster) into ``directory``."""

    def _state(self) -> dict:
        """Fitted attributes, JSON-safe, stored as ``model.json["state"]``."""
        return {}

    # ------------------------------------------------------------------ saving
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
