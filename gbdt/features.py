"""Feature matrices for the tree models, built from the ``screens`` table only.

Two modes, so the comparison with the CPN can be run both ways:

``trend=False`` ("same information")
    per concept ``c``: the last value ``c`` and its age ``c_age_h``; each ``cxr_<finding>`` and
    ``cxr_age_h``; static covariates ``age``, ``sex``, ``department`` and ``hours_since_admit``.
    This is exactly what the CPN sees at a screen.
``trend=True`` ("best effort")
    adds, per concept, ``c_delta`` (change since the previous value) and ``c_min_6h``,
    ``c_max_6h``, ``c_min_24h``, ``c_max_24h`` (extremes of the carried-forward value over the
    screens of the same stay in ``(t - w, t]``). Only rows at or before the screen are used, so
    the leakage rule of ``ehr.schema`` holds.
``baseline=True`` (a second view of the same data, for a diverse stacking member)
    adds, per concept, ``c_dev_base`` (value minus the stay's own baseline: the mean of the
    carried-forward value over the stay's screens in the first 24 h after its first screen, so far;
    frozen after 24 h) and ``c_n_24h`` (new measurements of ``c`` in ``(t - 24 h, t]``, from the
    moves of ``screen_time - c_age_h``). Also only rows at or before the screen.

Categorical covariates are encoded deterministically: the sorted distinct training values get
codes ``0, 1, ...``; missing or unseen values become NaN (the trees' missing branch). The
encodings are stored with the model.

Examples
--------
>>> import pandas as pd
>>> screens = pd.DataFrame({
...     "stay_id": [1, 1, 2], "screen_time": pd.to_datetime(["2020-01-01 01:00",
...     "2020-01-01 02:00", "2020-01-01 01:00"]), "hours_since_admit": [1.0, 2.0, 1.0],
...     "age": [70.0, 70.0, 50.0], "sex": ["F", "F", "M"], "department": ["MICU", "MICU", None],
...     "hr": [80.0, 95.0, None], "hr_age_h": [0.0, 0.0, None]})
>>> f = ScreenFeatures(trend=True).fit(screens)
>>> f.encodings_["sex"]
['F', 'M']
>>> f.transform(screens)["hr_delta"].tolist()
[nan, 15.0, nan]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import CXR_FINDINGS, SchemaError, screen_concept_columns
from ehr.trends import TREND_WINDOWS_H, baseline_names, trend_features, trend_names

__all__ = ["ScreenFeatures", "REQUIRED_COLUMNS", "STATIC_FEATURES", "CATEGORICAL_FEATURES",
           "LABEL_COLUMNS", "TREND_WINDOWS_H", "BASELINE_WINDOW_H"]

#: Columns every screens table must have for the tree models.
REQUIRED_COLUMNS: tuple[str, ...] = ("stay_id", "screen_time", "hours_since_admit", "age", "sex",
                                     "department")
#: Static / context covariates, in feature order.
STATIC_FEATURES: tuple[str, ...] = ("age", "sex", "department", "hours_since_admit")
#: Covariates given as strings and encoded as integer codes.
CATEGORICAL_FEATURES: tuple[str, ...] = ("sex", "department")
#: Label / outcome columns of the screens table: never features, whatever columns sit beside them.
LABEL_COLUMNS: tuple[str, ...] = ("label", "onset_in_h", "sepsis_label")
#: Hours after a stay's first screen that define its baseline, and the window of the measurement counts.
BASELINE_WINDOW_H: int = 24


class ScreenFeatures:
    """Turn a screens table into the numeric feature matrix of the tree models.

    Parameters
    ----------
    trend : bool, default False
        Add the trend features (change since previous value, rolling min/max over 6 h and 24 h).
    baseline : bool, default False
        Add the baseline-deviation and measurement-count features.

    Attributes
    ----------
    concepts_ : list of str
        Concepts (columns with a matching ``_age_h``) found at fit time.
    cxr_columns_ : list of str
        ``cxr_<finding>`` columns found at fit time (plus ``cxr_age_h`` when present).
    encodings_ : dict of str -> list of str
        Category list per categorical covariate; a value's code is its index.
    feature_names_ : list of str
        Column names of :meth:`transform`'s output, in order.
    """

    def __init__(self, trend: bool = False, baseline: bool = False):
        self.trend = trend
        self.baseline = baseline

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, screens: pd.DataFrame) -> "ScreenFeatures":
        """Learn the concept list and category encodings from ``screens``; return ``self``."""
        _check_required(screens)
        self.concepts_ = [c for c in screen_concept_columns(screens) if c not in LABEL_COLUMNS]
        finding_cols = [f"cxr_{f}" for f in CXR_FINDINGS if f"cxr_{f}" in screens.columns]
        self.cxr_columns_ = finding_cols + (["cxr_age_h"] if "cxr_age_h" in screens.columns else [])
        self.encodings_ = {}
        for col in CATEGORICAL_FEATURES:
            vals = screens[col].dropna().astype(str).unique()
            self.encodings_[col] = sorted(vals.tolist())
        names: list[str] = []
        for c in self.concepts_:
            names += [c, f"{c}_age_h"]
        names += self.cxr_columns_
        names += list(STATIC_FEATURES)
        if self.trend:
            for c in self.concepts_:
                names += _trend_names(c)
        if self.baseline:
            for c in self.concepts_:
                names += _baseline_names(c)
        self.feature_names_ = names
        return self

    # -- transforming ----------------------------------------------------------------------
    def transform(self, screens: pd.DataFrame) -> pd.DataFrame:
        """The float32 feature matrix, one row per screen in the order of ``screens``.

        Raises
        ------
        ehr.schema.SchemaError
            When a column the fitted features need is missing or not numeric.
        """
        _check_required(screens)
        base = [c for c in self.feature_names_ if c not in self._derived_names()]
        missing = [c for c in base if c not in screens.columns]
        if missing:
            raise SchemaError(f"screens: missing column(s) {missing} that the fitted features need")
        out: dict[str, np.ndarray] = {}
        for c in base:
            if c in CATEGORICAL_FEATURES:
                out[c] = _encode(screens[c], self.encodings_[c])
            else:
                out[c] = _numeric(screens[c], c)
        if (self.trend or self.baseline) and self.concepts_:
            out.update(_history_features(screens, self.concepts_, trend=self.trend, baseline=self.baseline))
        return pd.DataFrame({c: out[c] for c in self.feature_names_}, index=screens.index)

    def input_columns(self) -> list[str]:
        """Screen columns :meth:`transform` reads (the required ones and every non-trend feature)."""
        derived = self._derived_names()
        return list(dict.fromkeys([*REQUIRED_COLUMNS, *(c for c in self.feature_names_ if c not in derived)]))

    def _derived_names(self) -> set[str]:
        """Names of the features computed from a stay's history (trend, baseline), not read as columns."""
        return {n for c in self.concepts_ for n in _trend_names(c) + _baseline_names(c)}

    def fit_transform(self, screens: pd.DataFrame) -> pd.DataFrame:
        """Fit on ``screens`` and return its feature matrix."""
        return self.fit(screens).transform(screens)

    # -- explanation items -----------------------------------------------------------------
    def item_of(self, feature: str) -> tuple[str, str | None, str | None]:
        """The evidence item a feature belongs to, with its value and age columns.

        All features derived from concept ``c`` (value, age, trend) explain item ``c``, so the
        GBDT's contributions line up with the CPN's evidence items; summing SHAP values within
        an item keeps them exact.
        """
        for c in self.concepts_:
            if feature == c or feature == f"{c}_age_h" or feature in _trend_names(c) + _baseline_names(c):
                return c, c, f"{c}_age_h"
        if feature.startswith("cxr_") and feature != "cxr_age_h":
            return feature, feature, ("cxr_age_h" if "cxr_age_h" in self.cxr_columns_ else None)
        return feature, feature, None

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready state (for ``model.json``)."""
        return {"trend": bool(self.trend), "baseline": bool(self.baseline), "concepts": list(self.concepts_),
                "cxr_columns": list(self.cxr_columns_), "encodings": dict(self.encodings_),
                "feature_names": list(self.feature_names_)}

    @classmethod
    def from_dict(cls, state: dict) -> "ScreenFeatures":
        """Rebuild fitted features from :meth:`to_dict`'s output."""
        self = cls(trend=bool(state["trend"]), baseline=bool(state.get("baseline", False)))
        self.concepts_ = list(state["concepts"])
        self.cxr_columns_ = list(state["cxr_columns"])
        self.encodings_ = {k: list(v) for k, v in state["encodings"].items()}
        self.feature_names_ = list(state["feature_names"])
        return self


def _trend_names(c: str) -> list[str]:
    return trend_names(c, TREND_WINDOWS_H)


def _baseline_names(c: str) -> list[str]:
    return baseline_names(c, BASELINE_WINDOW_H)


def _check_required(screens: pd.DataFrame) -> None:
    if not isinstance(screens, pd.DataFrame):
        raise TypeError(f"screens must be a pandas DataFrame, got {type(screens).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in screens.columns]
    if missing:
        raise SchemaError(f"screens: missing required column(s) {missing}")
    if not pd.api.types.is_datetime64_any_dtype(screens["screen_time"]):
        raise SchemaError(f"screens: column 'screen_time' has dtype {screens['screen_time'].dtype}, "
                          "expected datetime64")


def _numeric(s: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype="float32")
    if not pd.api.types.is_numeric_dtype(s):
        bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
        row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
        raise SchemaError(f"screens: column '{name}' has dtype {s.dtype}, expected numeric "
                          f"(first non-numeric value at row {row}: {s.iloc[row]!r})")
    return s.to_numpy(dtype="float32", na_value=np.nan)


def _encode(s: pd.Series, categories: list[str]) -> np.ndarray:
    codes = pd.Categorical(s.astype("string"), categories=categories).codes.astype("float32")
    codes[codes < 0] = np.nan  # missing or unseen: the trees' missing branch
    return codes


def _history_features(screens: pd.DataFrame, concepts: list[str], *, trend: bool = True,
                      baseline: bool = False) -> dict[str, np.ndarray]:
    """Trend (delta, rolling extremes) and baseline (deviation, counts) features per concept: the
    one implementation in :mod:`ehr.trends`, which the CPN's derived evidence also reads."""
    return trend_features(screens, concepts, TREND_WINDOWS_H, trend=trend,
                          baseline_h=BASELINE_WINDOW_H if baseline else None)
