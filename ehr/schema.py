"""The data contract: every table SepsisScope reads or writes, every column documented once.

Tables (all parquet on disk, pandas in memory):

``events``        long measurements, a superset of MEDS
``stays``         one row per stay, with outcome fields
``cxr``           one row per chest X-ray study (+ ``cxr_<finding>`` probabilities after imaging)
``truth``         synthetic cohort only: the generator's latent per-stay timeline (no model reads it)
``screens``       wide, one row per (stay, screen hour); what every model consumes
``predictions``   long model outputs; what stacking and evaluation read
``explanations``  long per-evidence contributions for each explained screen
``alarms``        the screening protocol's output

Each table is a :class:`pyarrow.Schema` in :data:`SCHEMAS`: its fixed columns, each with its type,
its nullability and its meaning (field metadata ``description``; ``min``, ``max`` or ``finite``
where values are bounded), and the table's key in the schema metadata. Where the data decides the
columns, :data:`COLUMN_RULES` says what a column of a given name must be: ``screens`` has one
``<concept>`` and one ``<concept>_age_h`` column per measured concept of ``ehr/concepts.toml``
and, with CXR studies, ``cxr_<finding>`` and ``cxr_age_h``; ``cxr`` has ``cxr_<finding>``
probabilities and, in the synthetic cohort, ``truth_<finding>``. Any other column is allowed and
passed through unchecked (a step may add its own, e.g. ``split``).

:func:`validate` checks a frame against its schema; :func:`ehr.tables.write_table` and
:func:`ehr.tables.read_table` are the parquet IO of every table, validated on the way out and in.

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
>>> validate(df.assign(model=[7]), "predictions")
Traceback (most recent call last):
...
ehr.schema.SchemaError: predictions: column 'model' has dtype int64, expected string
>>> SCHEMAS["predictions"].field("risk").metadata[b"description"].decode()
'risk score; a probability except for scores such as NEWS2'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from ehr.concepts import concept_names

#: CXR findings the imaging model predicts and the CPN takes as evidence (torchxrayvision-style ordered tuple).
CXR_FINDINGS: tuple[str, ...] = ("consolidation", "effusion", "edema", "atelectasis")

__all__ = ["CXR_FINDINGS", "SCHEMAS", "COLUMN_RULES", "ColumnRule", "SchemaError", "validate", "columns", "empty",
           "field_for", "schema_of", "screen_concept_columns", "require_columns"]

INT, FLOAT, STR, BOOL, TIME = pa.int64(), pa.float64(), pa.string(), pa.bool_(), pa.timestamp("ns")


class SchemaError(ValueError):
    """A table does not follow the data contract; the message names the table, column and row."""


def _field(name: str, type_: pa.DataType, nullable: bool, description: str, **bounds) -> pa.Field:
    meta = {"description": description} | {k: str(v).lower() for k, v in bounds.items()}
    return pa.field(name, type_, nullable=nullable, metadata=meta)


def _schema(key: tuple[str, ...], *fields: pa.Field) -> pa.Schema:
    return pa.schema(fields, metadata={"key": ",".join(key)})


SCHEMAS: dict[str, pa.Schema] = {
    "events": _schema(
        (),
        _field("subject_id", INT, False, "patient id"),
        _field("stay_id", INT, False, "stay (ICU or hospital episode) id"),
        _field("time", TIME, False, "when the value became available (charted / resulted)"),
        _field("code", STR, False, "namespaced source code, e.g. PHYSIONET2019/HR, LOINC/8867-4, MIMIC-III/220045"),
        _field("numeric_value", FLOAT, True, "value in the concept's canonical unit (converted at ingest)"),
        _field("text_value", STR, True, "free-text value when the source has one"),
        _field("unit", STR, True, "unit of numeric_value (canonical UCUM unit when concept is set)"),
        _field("concept", STR, True, "concept name from concepts.toml; null for codes that map to none"),
    ),
    "stays": _schema(
        ("stay_id",),
        _field("subject_id", INT, False, "patient id"),
        _field("stay_id", INT, False, "stay id, unique"),
        _field("source", STR, False, "where the stay came from: physionet2019, mimic3, mimic4, synthetic, fhir"),
        _field("admit_time", TIME, False, "admission to the screened unit; screen hours count from here"),
        _field("discharge_time", TIME, False, "discharge (or last observation)"),
        _field("hospital_admit_time", TIME, True, "hospital admission (may precede admit_time)"),
        _field("age", FLOAT, True, "age in years at admission"),
        _field("sex", STR, True, "'F' or 'M'"),
        _field("department", STR, True, "unit/department, e.g. MICU, SICU, ward, ED"),
        _field("sepsis", BOOL, False, "the stay has a sepsis onset under the source's definition"),
        _field("onset_time", TIME, True, "sepsis onset; null when none"),
        _field("sepsis_label_time", TIME, True, "PhysioNet 2019: first hour with SepsisLabel=1 (onset - 6 h)"),
        _field("antibiotic_time", TIME, True, "first antibiotic dose"),
        _field("surgery_time", TIME, True, "surgery during the stay, if any"),
        _field("death", BOOL, True, "died in hospital"),
        _field("bsi", BOOL, True, "bloodstream infection (positive blood culture)"),
        _field("onset_setting", STR, True, "'community' or 'hospital' (4-day rule) for septic stays"),
        _field("pneumonia", BOOL, True, "infection source is pneumonia (synthetic ground truth)"),
        _field("hypercapnic", BOOL, True, "hypercapnic respiratory failure: NEWS2 uses SpO2 scale 2"),
    ),
    "cxr": _schema(
        ("study_id",),
        _field("study_id", INT, False, "CXR study id, unique"),
        _field("subject_id", INT, False, "patient id"),
        _field("stay_id", INT, False, "stay id"),
        _field("time", TIME, False, "when the study (its finding probabilities) became available"),
        _field("image_path", STR, True, "image file reference (relative to the cohort directory)"),
    ),
    "truth": _schema(
        ("stay_id",),
        _field("stay_id", INT, False, "stay id"),
        _field("planned_septic", BOOL, False, "the generator planned a septic course"),
        _field("infection", BOOL, False, "the stay has an infection (septic or not)"),
        _field("infection_source", STR, True, "pneumonia, urinary, abdominal, skin or other; null without infection"),
        _field("infection_time", TIME, True, "start of the infection"),
        _field("suspicion_time", TIME, True, "when clinicians would suspect it"),
        _field("lab_derangement_time", TIME, True, "when inflammatory labs start to move"),
        _field("dysfunction_time", TIME, True, "start of the organ-dysfunction ramp"),
        _field("sofa_baseline", INT, False, "SOFA-like score of the noise-free trend when infection starts"),
        _field("sofa_max_rise", INT, False, "largest rise of that score above the baseline"),
        _field("sofa_admission", INT, False, "SOFA-like score of the noise-free trend at admission"),
        _field("copd", BOOL, False, "comorbidity: COPD (chronic SpO2 88-92 %, hypercapnic)"),
        _field("heart_failure", BOOL, False, "comorbidity: heart failure (fluid overload)"),
        _field("ckd", BOOL, False, "comorbidity: chronic kidney disease (high baseline creatinine)"),
        _field("diabetes", BOOL, False, "comorbidity: diabetes"),
        _field("surgical", BOOL, False, "admitted for surgery"),
    ),
    "screens": _schema(
        ("stay_id", "screen_time"),
        _field("subject_id", INT, False, "patient id"),
        _field("stay_id", INT, False, "stay id"),
        _field("screen_time", TIME, False, "the screen; uses only data with time <= screen_time"),
        _field("hours_since_admit", FLOAT, False, "screen_time - admit_time in hours (1, 2, ...)"),
        _field("new_data", BOOL, False, "a concept value was registered in (previous screen, this screen]"),
        _field("age", FLOAT, True, "static: age in years"),
        _field("sex", STR, True, "static: 'F' / 'M'"),
        _field("department", STR, True, "static: unit/department"),
        _field("hypercapnic", BOOL, True, "static: NEWS2 SpO2 scale 2"),
        _field("onset_in_h", FLOAT, True, "label: hours from screen_time to onset; null for non-septic stays"),
        _field("label", INT, False, "label: 1 if onset follows within the horizon (0 < onset_in_h <= horizon_h)"),
    ),
    "predictions": _schema(
        ("stay_id", "screen_time", "model"),
        _field("stay_id", INT, False, "stay id"),
        _field("screen_time", TIME, False, "the screen scored"),
        _field("model", STR, False, "model name: cpn, lightgbm, xgboost, news2, fusion, stack, ..."),
        _field("risk", FLOAT, False, "risk score; a probability except for scores such as NEWS2", finite=True),
        _field("fold", INT, True, "cross-validation fold that produced it"),
        _field("split", STR, True, "'train', 'dev' or 'test'"),
    ),
    "explanations": _schema(
        (),
        _field("stay_id", INT, False, "stay id"),
        _field("screen_time", TIME, False, "the screen explained"),
        _field("model", STR, False, "model name"),
        _field("feature", STR, False, "evidence item / feature (a concept, cxr_<finding>, context node, or 'total')"),
        _field("value", FLOAT, True, "observed value (canonical unit)"),
        _field("state", STR, True, "discrete state the value falls in (CPN)"),
        _field("age_h", FLOAT, True, "hours since the value was measured"),
        _field("weight", FLOAT, True, "time-decay weight 2^(-age_h/half_life_h) (CPN)"),
        _field("contribution", FLOAT, False, "log10 Bayes factor of the item alone (CPN) or SHAP log-odds (GBDT)"),
        _field("baseline", FLOAT, True, "in-context log10 B(E)/B(E without item) (CPN) or expected value (GBDT)"),
    ),
    "alarms": _schema(
        ("stay_id", "screen_time", "model", "threshold"),
        _field("stay_id", INT, False, "stay id"),
        _field("screen_time", TIME, False, "the screen at which risk crossed the threshold"),
        _field("model", STR, False, "model name"),
        _field("threshold", FLOAT, False, "the operating threshold"),
        _field("fired", BOOL, False, "an alarm was raised (risk >= threshold and not silenced)"),
        _field("silenced", BOOL, False, "risk >= threshold but within the silencing period of an earlier alarm"),
    ),
}


@dataclass(frozen=True)
class ColumnRule:
    """What a column whose name matches ``pattern`` must be (the open part of a table).

    ``pattern`` is written with placeholders: ``<concept>`` stands for a concept name of
    ``ehr/concepts.toml``, ``<finding>`` for any lower-case finding name (``CXR_FINDINGS`` are
    the ones the models know).
    """

    pattern: str
    type: pa.DataType
    nullable: bool
    description: str
    min: float | None = None
    max: float | None = None

    def matches(self, column: str) -> bool:
        return _rule_regex(self.pattern).fullmatch(column) is not None

    def field(self, column: str) -> pa.Field:
        bounds = {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}
        return _field(column, self.type, self.nullable, self.description, **bounds)


_PROBABILITY = {"min": 0.0, "max": 1.0}
_SPLIT = ColumnRule("split", STR, True, "'train', 'dev' or 'test' (added by the main job)")

#: Columns a table may have beyond its fixed ones; the first rule whose pattern matches applies.
COLUMN_RULES: dict[str, tuple[ColumnRule, ...]] = {
    "events": (),
    "stays": (
        ColumnRule("suspicion_time", TIME, True, "MIMIC: first suspicion of infection (antibiotic + culture)"),
        _SPLIT,
    ),
    "cxr": (
        ColumnRule("cxr_<finding>", FLOAT, True, "imaging-model probability of the finding", **_PROBABILITY),
        ColumnRule("truth_<finding>", INT, True, "synthetic cohort: the finding is present (0/1)", **_PROBABILITY),
    ),
    "truth": (),
    "screens": (
        ColumnRule("<concept>", FLOAT, True, "last value of the concept carried forward (never back-filled); "
                   "null before its first measurement"),
        ColumnRule("<concept>_age_h", FLOAT, True, "hours since that value was measured; null if never", min=0.0),
        ColumnRule("cxr_age_h", FLOAT, True, "hours since the latest CXR study; null before the first", min=0.0),
        ColumnRule("cxr_<finding>", FLOAT, True, "finding probability of the latest CXR study, carried forward",
                   **_PROBABILITY),
        ColumnRule("sepsis_label", INT, False, "PhysioNet 2019: the challenge's raw hourly SepsisLabel"),
        _SPLIT,
    ),
    "predictions": (),
    "explanations": (),
    "alarms": (),
}


@lru_cache(maxsize=None)
def _rule_regex(pattern: str) -> re.Pattern:
    concepts = "|".join(map(re.escape, concept_names()))
    text = re.escape(pattern).replace(re.escape("<concept>"), f"(?:{concepts})")
    return re.compile(text.replace(re.escape("<finding>"), "[a-z][a-z0-9_]*"))


def schema_of(kind: str) -> pa.Schema:
    """The pyarrow schema of table ``kind`` (:class:`SchemaError` for an unknown kind)."""
    if kind not in SCHEMAS:
        raise SchemaError(f"unknown table kind '{kind}'; expected one of {sorted(SCHEMAS)}")
    return SCHEMAS[kind]


def field_for(kind: str, column: str) -> pa.Field | None:
    """The contract field of ``column`` in table ``kind``: fixed, from a :class:`ColumnRule`, or None.

    >>> field_for("screens", "hr_age_h").metadata[b"min"]
    b'0.0'
    >>> field_for("screens", "my_feature") is None
    True
    """
    schema = schema_of(kind)
    if column in schema.names:
        return schema.field(column)
    rule = next((r for r in COLUMN_RULES[kind] if r.matches(column)), None)
    return rule.field(column) if rule else None


def columns(kind: str) -> list[str]:
    """The fixed column names of table ``kind``."""
    return list(schema_of(kind).names)


def empty(kind: str) -> pd.DataFrame:
    """An empty frame with the fixed columns of ``kind`` in contract dtypes."""
    return pd.DataFrame({f.name: pd.Series([], dtype=f.type.to_pandas_dtype()) for f in schema_of(kind)})


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


# ---------------------------------------------------------------- validation

def _first(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _type_problem(s: pd.Series, t: pa.DataType) -> str | None:
    """Why ``s`` cannot hold arrow type ``t`` (naming the first offending row), or None."""
    dtype = s.dtype
    if pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(s, skipna=True)
        if inferred == "empty":  # only nulls: fits any type
            return None
        if pa.types.is_string(t):
            wanted, python_type, want = "string", str, "strings"
        elif pa.types.is_boolean(t):
            wanted, python_type, want = "boolean", (bool, np.bool_), "True/False"
        else:
            return f"has dtype object, expected {t}"
        if inferred == wanted:
            return None
        bad = s.notna().to_numpy() & ~s.map(lambda v: isinstance(v, python_type)).to_numpy(dtype=bool)
        row = _first(bad)
        return f"should hold {want} ({t}), but row {row} holds {s.iloc[row]!r}"
    if isinstance(dtype, pd.CategoricalDtype):
        return _type_problem(pd.Series(dtype.categories, dtype=object), t) if len(dtype.categories) else None
    if pa.types.is_string(t):
        return None if pd.api.types.is_string_dtype(dtype) else f"has dtype {dtype}, expected {t}"
    if pa.types.is_boolean(t):
        return None if pd.api.types.is_bool_dtype(dtype) else f"has dtype {dtype}, expected {t}"
    if pa.types.is_timestamp(t):
        if isinstance(dtype, pd.DatetimeTZDtype):
            return f"has time zone {dtype.tz}; contract times are naive (local hospital time)"
        return None if pd.api.types.is_datetime64_dtype(dtype) else f"has dtype {dtype}, expected {t}"
    if pa.types.is_integer(t):
        if pd.api.types.is_integer_dtype(dtype):
            return None
        if pd.api.types.is_float_dtype(dtype):  # nullable ints arrive as float with NaN
            v = s.to_numpy(dtype="float64")
            bad = ~np.isnan(v) & (v != np.round(v))
            return f"should hold whole numbers ({t}), but row {_first(bad)} holds {float(v[_first(bad)])!r}" \
                if bad.any() else None
        return f"has dtype {dtype}, expected {t}"
    if pa.types.is_floating(t):
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        return None if numeric else f"has dtype {dtype}, expected {t}"
    raise TypeError(f"no pandas check for arrow type {t}")  # a contract type without a rule is a bug here


def _check_column(s: pd.Series, f: pa.Field, where: str) -> None:
    problem = _type_problem(s, f.type)
    if problem:
        raise SchemaError(f"{where}: column '{f.name}' {problem}")
    if not f.nullable:
        bad = s.isna().to_numpy()
        if bad.any():
            raise SchemaError(f"{where}: column '{f.name}' is null at row {_first(bad)} "
                              f"({int(bad.sum())} null row(s)); it must not be")
    meta = f.metadata or {}
    if not len(s) or not ({b"min", b"max", b"finite"} & set(meta)):
        return
    v = s.to_numpy(dtype="float64", na_value=np.nan)
    if meta.get(b"finite") == b"true" and not np.isfinite(v).all():
        raise SchemaError(f"{where}: column '{f.name}' is not finite at row {_first(~np.isfinite(v))}")
    lo, hi = float(meta.get(b"min", b"-inf")), float(meta.get(b"max", b"inf"))
    bad = ~np.isnan(v) & ((v < lo) | (v > hi))
    if bad.any():
        row = _first(bad)
        raise SchemaError(f"{where}: column '{f.name}' outside [{lo:g}, {hi:g}] at row {row} ({float(v[row])!r})")


def validate(df: pd.DataFrame, kind: str, *, source: str | None = None) -> pd.DataFrame:
    """Check ``df`` against the contract for table ``kind``; return it unchanged.

    Every fixed column must be present; fixed columns and those a :class:`ColumnRule` covers are
    checked for type, nulls and bounds; the table's key must be unique. Raises
    :class:`SchemaError` naming the table (and ``source`` file if given), the column and the
    first offending row.
    """
    schema = schema_of(kind)
    where = f"{kind}" + (f" ({source})" if source else "")
    require_columns(df, schema.names, table=kind, source=source)
    for name in df.columns:
        f = field_for(kind, name)
        if f is not None:
            _check_column(df[name], f, where)
    keys = [k for k in schema.metadata[b"key"].decode().split(",") if k]
    if keys and len(df):
        dup = df.duplicated(keys).to_numpy()
        if dup.any():
            raise SchemaError(f"{where}: duplicate key {keys} at row {_first(dup)} "
                              f"({int(dup.sum())} duplicate row(s))")
    return df
