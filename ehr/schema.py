"""The data contract: every table SepsisScope reads or writes, every column documented once.

Tables (all parquet on disk, pandas in memory):

``events``        long measurements, a superset of MEDS
``stays``         one row per stay, with outcome fields
``cxr``           one row per chest X-ray study (+ ``cxr_<finding>`` probabilities after imaging)
``screens``       wide, one row per (stay, screen hour); what every model consumes
``predictions``   long model outputs; what stacking and evaluation read
``explanations``  long per-evidence contributions for each explained screen
``alarms``        the screening protocol's output

Leakage rule (from MEDS): a screen at time ``t`` uses only data with ``time <= t``.
``ehr.screens.build_screens`` enforces it; ``tests/ehr/test_screens.py`` checks it.

Times are ``datetime64[ns]`` (naive, local hospital time). Ids are ``int64``. Durations are
float hours (``*_h``). Concept values are in the canonical unit of ``ehr/concepts.toml``.

Examples
--------
>>> import pandas as pd
>>> from ehr.schema import validate, SchemaError
>>> df = pd.DataFrame({"stay_id": [1], "screen_time": [pd.Timestamp("2020-01-01")],
...                    "model": ["news2"], "risk": [3.0], "fold": [0], "split": ["test"]})
>>> validate(df, "predictions") is df
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: CXR findings the imaging model predicts and the CPN takes as evidence (torchxrayvision-style ordered tuple).
CXR_FINDINGS: tuple[str, ...] = ("consolidation", "effusion", "edema", "atelectasis")

__all__ = ["CXR_FINDINGS", "Column", "TABLES", "SchemaError", "validate", "columns", "empty", "screen_concept_columns",
           "require_columns"]


class SchemaError(ValueError):
    """A table does not follow the data contract; the message names the table, column and row."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "int", "float", "str", "bool", "time", "category-like str"
    nullable: bool
    description: str


def _c(name, dtype, nullable, description):
    return Column(name, dtype, nullable, description)


TABLES: dict[str, tuple[Column, ...]] = {
    "events": (
        _c("subject_id", "int", False, "patient id"),
        _c("stay_id", "int", False, "stay (ICU or hospital episode) id"),
        _c("time", "time", False, "when the value became available (charted / resulted)"),
        _c("code", "str", False, "namespaced source code, e.g. PHYSIONET2019/HR, LOINC/8867-4, MIMIC-III/220045"),
        _c("numeric_value", "float", True, "value in the concept's canonical unit (converted at ingest)"),
        _c("text_value", "str", True, "free-text value when the source has one"),
        _c("unit", "str", True, "unit of numeric_value (canonical UCUM unit when concept is set)"),
        _c("concept", "str", True, "concept name from concepts.toml; null for codes that map to none"),
    ),
    "stays": (
        _c("subject_id", "int", False, "patient id"),
        _c("stay_id", "int", False, "stay id, unique"),
        _c("source", "str", False, "where the stay came from: physionet2019, mimic3, mimic4, synthetic, fhir"),
        _c("admit_time", "time", False, "admission to the screened unit; screen hours count from here"),
        _c("discharge_time", "time", False, "discharge (or last observation)"),
        _c("hospital_admit_time", "time", True, "hospital admission (may precede admit_time)"),
        _c("age", "float", True, "age in years at admission"),
        _c("sex", "str", True, "'F' or 'M'"),
        _c("department", "str", True, "unit/department, e.g. MICU, SICU, ward, ED"),
        _c("sepsis", "bool", False, "the stay has a sepsis onset under the source's definition"),
        _c("onset_time", "time", True, "sepsis onset; null when none"),
        _c("sepsis_label_time", "time", True, "PhysioNet 2019: first hour with SepsisLabel=1 (onset - 6 h)"),
        _c("antibiotic_time", "time", True, "first antibiotic dose"),
        _c("surgery_time", "time", True, "surgery during the stay, if any"),
        _c("death", "bool", True, "died in hospital"),
        _c("bsi", "bool", True, "bloodstream infection (positive blood culture)"),
        _c("onset_setting", "str", True, "'community' or 'hospital' (4-day rule) for septic stays"),
        _c("pneumonia", "bool", True, "infection source is pneumonia (synthetic ground truth)"),
        _c("hypercapnic", "bool", True, "hypercapnic respiratory failure: NEWS2 uses SpO2 scale 2"),
    ),
    "cxr": (
        _c("study_id", "int", False, "CXR study id, unique"),
        _c("subject_id", "int", False, "patient id"),
        _c("stay_id", "int", False, "stay id"),
        _c("time", "time", False, "when the study (its finding probabilities) became available"),
        _c("image_path", "str", True, "image file reference (relative to the cohort directory)"),
        # + one float column per finding: cxr_<finding> in [0, 1] (model probabilities), and,
        #   for the synthetic cohort, truth_<finding> in {0, 1} (ground truth)
    ),
    "screens": (
        _c("subject_id", "int", False, "patient id"),
        _c("stay_id", "int", False, "stay id"),
        _c("screen_time", "time", False, "the screen; uses only data with time <= screen_time"),
        _c("hours_since_admit", "float", False, "screen_time - admit_time in hours (1, 2, ...)"),
        _c("new_data", "bool", False, "a concept value was registered in (previous screen, this screen]"),
        _c("age", "float", True, "static: age in years"),
        _c("sex", "str", True, "static: 'F' / 'M'"),
        _c("department", "str", True, "static: unit/department"),
        _c("hypercapnic", "bool", True, "static: NEWS2 SpO2 scale 2"),
        _c("onset_in_h", "float", True, "label: hours from screen_time to onset; null for non-septic stays"),
        _c("label", "int", False, "label: 1 if onset follows within the horizon (0 < onset_in_h <= horizon_h)"),
        # + per concept c: `c` (float, last value carried forward, never back-filled) and
        #   `c_age_h` (float, hours since that value; null if never measured)
        # + `cxr_<finding>` and `cxr_age_h` when a cxr table was given
        # + `sepsis_label` (int) for PhysioNet 2019 sources: the challenge's raw hourly label
    ),
    "predictions": (
        _c("stay_id", "int", False, "stay id"),
        _c("screen_time", "time", False, "the screen scored"),
        _c("model", "str", False, "model name: cpn, lightgbm, xgboost, news2, fusion, stack, ..."),
        _c("risk", "float", False, "risk score; a probability except for scores such as NEWS2"),
        _c("fold", "int", True, "cross-validation fold that produced it"),
        _c("split", "str", True, "'train', 'dev' or 'test'"),
    ),
    "explanations": (
        _c("stay_id", "int", False, "stay id"),
        _c("screen_time", "time", False, "the screen explained"),
        _c("model", "str", False, "model name"),
        _c("feature", "str", False, "evidence item / feature (a concept, cxr_<finding>, context node, or 'total')"),
        _c("value", "float", True, "observed value (canonical unit)"),
        _c("state", "str", True, "discrete state the value falls in (CPN)"),
        _c("age_h", "float", True, "hours since the value was measured"),
        _c("weight", "float", True, "time-decay weight 2^(-age_h/half_life_h) (CPN)"),
        _c("contribution", "float", False, "log10 Bayes factor of the item alone (CPN) or SHAP log-odds (GBDT)"),
        _c("baseline", "float", True, "in-context log10 B(E)/B(E without item) (CPN) or expected value (GBDT)"),
    ),
    "alarms": (
        _c("stay_id", "int", False, "stay id"),
        _c("screen_time", "time", False, "the screen at which risk crossed the threshold"),
        _c("model", "str", False, "model name"),
        _c("threshold", "float", False, "the operating threshold"),
        _c("fired", "bool", False, "an alarm was raised (risk >= threshold and not silenced)"),
        _c("silenced", "bool", False, "risk >= threshold but within the silencing period of an earlier alarm"),
    ),
}

_KEYS = {
    "events": None,
    "stays": ("stay_id",),
    "cxr": ("study_id",),
    "screens": ("stay_id", "screen_time"),
    "predictions": ("stay_id", "screen_time", "model"),
    "alarms": ("stay_id", "screen_time", "model", "threshold"),
    "explanations": None,
}


def columns(kind: str) -> list[str]:
    """The fixed column names of table ``kind``."""
    return [c.name for c in _table(kind)]


def empty(kind: str) -> pd.DataFrame:
    """An empty frame with the fixed columns of ``kind`` in contract dtypes."""
    dt = {"int": "int64", "float": "float64", "str": "object", "bool": "bool", "time": "datetime64[ns]"}
    return pd.DataFrame({c.name: pd.Series([], dtype=dt[c.dtype]) for c in _table(kind)})


def screen_concept_columns(screens: pd.DataFrame) -> list[str]:
    """Concept value columns present in a screens table (those with a matching ``_age_h``)."""
    return [c[: -len("_age_h")] for c in screens.columns
            if c.endswith("_age_h") and c != "cxr_age_h" and c[: -len("_age_h")] in screens.columns]


def require_columns(df: pd.DataFrame, columns, *, table: str, source: str | None = None,
                    purpose: str | None = None) -> None:
    """Raise :class:`SchemaError` naming every column of ``columns`` that ``df`` lacks.

    The one check for "this step needs these columns"; ``purpose`` says what needs them.

    >>> require_columns(pd.DataFrame({"a": [1]}), ["a", "b"], table="screens", purpose="for NEWS2")
    Traceback (most recent call last):
    ...
    ehr.schema.SchemaError: screens: missing column(s) ['b'] for NEWS2
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        where = table + (f" ({source})" if source else "")
        raise SchemaError(f"{where}: missing column(s) {missing}" + (f" {purpose}" if purpose else ""))


def _table(kind: str) -> tuple[Column, ...]:
    if kind not in TABLES:
        raise SchemaError(f"unknown table kind '{kind}'; expected one of {sorted(TABLES)}")
    return TABLES[kind]


def _check_dtype(s: pd.Series, col: Column, kind: str) -> None:
    ok = {
        "int": pd.api.types.is_integer_dtype,
        "float": lambda x: pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x),
        "bool": lambda x: pd.api.types.is_bool_dtype(x) or (pd.api.types.is_object_dtype(x)),
        "str": lambda x: pd.api.types.is_object_dtype(x) or pd.api.types.is_string_dtype(x)
        or isinstance(x.dtype, pd.CategoricalDtype),
        "time": pd.api.types.is_datetime64_any_dtype,
    }[col.dtype]
    if col.dtype == "int" and pd.api.types.is_float_dtype(s) and col.nullable:
        return  # nullable ints arrive as float with NaN
    if col.dtype == "int" and pd.api.types.is_integer_dtype(s):
        return
    if not ok(s):
        raise SchemaError(f"{kind}: column '{col.name}' has dtype {s.dtype}, expected {col.dtype}")


def validate(df: pd.DataFrame, kind: str, *, source: str | None = None) -> pd.DataFrame:
    """Check ``df`` against the contract for table ``kind``; return it unchanged.

    Raises :class:`SchemaError` naming the table (and ``source`` file if given), the column and
    the first offending row.
    """
    where = f"{kind}" + (f" ({source})" if source else "")
    cols = _table(kind)
    missing = [c.name for c in cols if c.name not in df.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}")
    for col in cols:
        s = df[col.name]
        try:
            _check_dtype(s, col, where)
        except SchemaError:
            raise
        if not col.nullable:
            bad = s.isna().to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise SchemaError(f"{where}: column '{col.name}' is null at row {row} "
                                  f"({int(bad.sum())} null row(s)); it must not be")
    keys = _KEYS[kind]
    if keys and len(df):
        dup = df.duplicated(list(keys)).to_numpy()
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise SchemaError(f"{where}: duplicate key {list(keys)} at row {row} "
                              f"({int(dup.sum())} duplicate row(s))")
    if kind == "predictions" and len(df):
        r = df["risk"].to_numpy(dtype="float64")
        if not np.isfinite(r).all():
            row = int(np.flatnonzero(~np.isfinite(r))[0])
            raise SchemaError(f"{where}: column 'risk' is not finite at row {row}")
    if kind == "cxr":
        for c in df.columns:
            if c.startswith("cxr_") and len(df):
                v = df[c].to_numpy(dtype="float64")
                bad = ~np.isnan(v) & ((v < 0) | (v > 1))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise SchemaError(f"{where}: column '{c}' outside [0, 1] at row {row}")
    return df
