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
#: Rolling windows (hours) of the trend features.
TREND_WINDOWS_H: tuple[int, ...] = (6, 24)
#: Hours after a stay's first screen that define its baseline, and the window of the measurement counts.
BASELINE_WINDOW_H: int = 24

# A new measurement shows as a jump in (screen_time - age_h); allow for float round-off.
_SAME_MEASUREMENT_TOL_H = 1e-6


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
    names = [f"{c}_delta"]
    for w in TREND_WINDOWS_H:
        names += [f"{c}_min_{w}h", f"{c}_max_{w}h"]
    return names


def _baseline_names(c: str) -> list[str]:
    return [f"{c}_dev_base", f"{c}_n_{BASELINE_WINDOW_H}h"]


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
    """Trend (delta, rolling extremes) and baseline (deviation, counts) features per concept,
    computed per stay on time-sorted rows."""
    n = len(screens)
    stay = screens["stay_id"].to_numpy()
    t_ns = screens["screen_time"].to_numpy(dtype="datetime64[ns]").view("int64")
    order = np.lexsort((t_ns, stay))
    stay, t_ns = stay[order], t_ns[order]
    if n > 1:
        dup = (stay[1:] == stay[:-1]) & (t_ns[1:] == t_ns[:-1])
        if dup.any():
            row = int(order[np.flatnonzero(dup)[0] + 1])
            raise SchemaError(f"screens: duplicate (stay_id, screen_time) at row {row}")
    first = np.ones(n, dtype=bool)
    first[1:] = stay[1:] != stay[:-1]
    starts = np.flatnonzero(first)
    stay_start = np.repeat(starts, np.diff(np.append(starts, n)))
    rel_s = (t_ns - t_ns[stay_start]) // 1_000_000_000  # seconds since the stay's first screen
    rank = np.cumsum(first) - 1
    key = (rank.astype("int64") << 32) + rel_s  # sorted: stays in order, time within stay

    values = np.column_stack([screens[c].to_numpy(dtype="float32", na_value=np.nan)[order]
                              for c in concepts])
    ages = np.column_stack([screens[f"{c}_age_h"].to_numpy(dtype="float64", na_value=np.nan)[order]
                            for c in concepts])
    out: dict[str, np.ndarray] = {}

    # Change since the previous value: a new measurement is a row where the measurement time
    # (screen time - age) moved; its delta is carried forward until the next measurement.
    meas_h = rel_s[:, None] / 3600.0 - ages
    prev_meas = np.vstack([np.full((1, len(concepts)), np.nan), meas_h[:-1]])
    prev_val = np.vstack([np.full((1, len(concepts)), np.nan, dtype="float32"), values[:-1]])
    prev_meas[first] = np.nan
    prev_val[first] = np.nan
    new = ~np.isnan(ages) & ~(np.abs(meas_h - prev_meas) <= _SAME_MEASUREMENT_TOL_H)
    step = values - prev_val
    idx = np.where(new, np.arange(n)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    valid = last >= stay_start[:, None]
    delta = np.take_along_axis(step, np.maximum(last, 0), axis=0)
    delta[~valid] = np.nan
    del meas_h, prev_meas, prev_val, step, idx, last, valid

    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    if baseline:
        # running per-stay sums: a global cumulative sum minus its value just before the stay's first row
        def stay_cumsum(a):
            cs = np.cumsum(a, axis=0)
            return cs - np.vstack([np.zeros((1, a.shape[1])), cs[:-1]])[stay_start]

        early = ~np.isnan(values) & (rel_s <= BASELINE_WINDOW_H * 3600)[:, None]
        total = stay_cumsum(np.where(early, values, 0.0).astype("float64"))
        count = stay_cumsum(early.astype("float64"))
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = (values - total / count).astype("float32")  # NaN until the first value
        new_cum = stay_cumsum(new.astype("float64"))
        lo = np.searchsorted(key, key - BASELINE_WINDOW_H * 3600, side="right")
        # measurements in (t - w, t]: the running count now minus the running count just before lo
        before = np.where((lo > stay_start)[:, None], new_cum[np.maximum(lo - 1, 0)], 0.0)
        n_recent = (new_cum - before).astype("float32")
        for j, c in enumerate(concepts):
            out[f"{c}_dev_base"] = dev[inv, j]
            out[f"{c}_n_{BASELINE_WINDOW_H}h"] = n_recent[inv, j]
    if not trend:
        return out
    for j, c in enumerate(concepts):
        out[f"{c}_delta"] = delta[inv, j]
    for w in TREND_WINDOWS_H:
        lo = np.searchsorted(key, key - w * 3600, side="right")
        mn = _window_extrema(values, lo, np.fmin)
        mx = _window_extrema(values, lo, np.fmax)
        for j, c in enumerate(concepts):
            out[f"{c}_min_{w}h"] = mn[inv, j]
            out[f"{c}_max_{w}h"] = mx[inv, j]
    return out


def _window_extrema(values: np.ndarray, lo: np.ndarray, op) -> np.ndarray:
    """``op``-reduce ``values[lo[i] : i + 1]`` for every row ``i`` (NaN-ignoring ``op``).

    A sparse table: level ``j`` holds the reduction over ``2**j`` rows, and any window is the
    reduction of two overlapping power-of-two blocks. ``O(n log w)`` and fully vectorised.
    """
    n = len(values)
    hi = np.arange(n)
    length = hi - lo + 1
    k = np.zeros(n, dtype=np.int64)
    k[length > 0] = np.floor(np.log2(length[length > 0])).astype(np.int64)
    out = np.empty_like(values)
    level = values
    for j in range(int(k.max(initial=0)) + 1):
        if j > 0:
            half = 1 << (j - 1)
            nxt = level.copy()
            nxt[: n - half] = op(level[: n - half], level[half:])
            level = nxt
        rows = np.flatnonzero(k == j)
        if rows.size:
            out[rows] = op(level[lo[rows]], level[hi[rows] - (1 << j) + 1])
    return out
