"""The data contract (ehr/schema.py): pyarrow schemas, validation; parquet IO (ehr/tables.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ehr.schema as schema
from ehr.schema import COLUMN_RULES, SCHEMAS, SchemaError, columns, empty, field_for, validate
from ehr.tables import read_table, write_table

T0 = pd.Timestamp("2024-01-01")


def _predictions(**changes) -> pd.DataFrame:
    df = pd.DataFrame({"stay_id": [1, 2], "screen_time": [T0, T0], "model": ["cpn", "cpn"], "risk": [0.1, 0.2],
                       "fold": [0, 0], "split": ["test", "test"]})
    return df.assign(**changes)


def _screens() -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": [1, 1], "stay_id": [1, 1], "screen_time": [T0, T0 + pd.Timedelta("1h")],
        "hours_since_admit": [1.0, 2.0], "new_data": [True, False], "age": [70.0, 70.0],
        "sex": pd.Categorical(["F", "F"]), "department": ["ward", "ward"],
        "hypercapnic": pd.array([pd.NA, pd.NA], dtype="boolean"), "onset_in_h": [np.nan, np.nan], "label": [0, 0],
        "hr": [80.0, 80.0], "hr_age_h": [0.5, 1.5], "cxr_consolidation": [np.nan, 0.7],
        "cxr_age_h": [np.nan, 0.2], "split": ["train", "train"], "my_feature": [1, 2],
    })


# ---------------------------------------------------------------- the schemas

def test_every_fixed_column_is_documented_once():
    for kind, sch in SCHEMAS.items():
        assert len(sch.names) == len(set(sch.names)), kind
        for f in sch:
            assert f.metadata[b"description"].strip(), (kind, f.name)
        key = sch.metadata[b"key"].decode()
        assert all(k in sch.names for k in key.split(",") if k), kind
        validate(empty(kind), kind)
    for kind, rules in COLUMN_RULES.items():
        assert kind in SCHEMAS
        for rule in rules:
            assert rule.description and not rule.matches("nonsense_" + kind), (kind, rule.pattern)


def test_the_documented_tables_are_the_schemas():
    """The module docstring lists the tables; each is a schema, and every schema is listed."""
    listed = re.findall(r"^``(\w+)``\s{2,}", schema.__doc__, flags=re.MULTILINE)
    assert listed == list(SCHEMAS)


def test_parquet_files_carry_the_documented_schema(tmp_path):
    """Written tables keep each field's type, nullability and description: the file documents itself."""
    for kind, sch in SCHEMAS.items():
        path = write_table(empty(kind), tmp_path / f"{kind}.parquet", kind)
        got = pq.read_schema(path)
        for f in sch:
            g = got.field(f.name)
            assert (g.type, g.nullable, g.metadata) == (f.type, f.nullable, f.metadata), (kind, f.name)
        assert got.metadata[b"key"] == sch.metadata[b"key"]
        back = read_table(path, kind)
        assert list(back.columns) == columns(kind) and len(back) == 0


def test_column_rules_cover_the_open_parts():
    assert field_for("screens", "hr").type == pa.float64()
    assert field_for("screens", "base_excess_age_h").metadata[b"min"] == b"0.0"
    assert field_for("screens", "cxr_age_h").metadata[b"description"].startswith(b"hours since the latest CXR")
    assert field_for("screens", "cxr_edema").metadata[b"max"] == b"1.0"
    assert field_for("cxr", "truth_effusion").type == pa.int64()
    assert field_for("stays", "suspicion_time").type == pa.timestamp("ns")
    # not concepts: left to the step that made them
    for name in ("heart_rate", "hr_tested_24h", "cxr_", "Hr"):
        assert field_for("screens", name) is None, name
    assert field_for("events", "hr") is None


# ---------------------------------------------------------------- validate

def test_validate_names_column_and_row():
    df = _predictions(screen_time=pd.to_datetime(["2020-01-01", None]))
    with pytest.raises(SchemaError, match="'screen_time' is null at row 1"):
        validate(df, "predictions")
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['risk'\]"):
        validate(df.drop(columns="risk"), "predictions")
    ok = _predictions(stay_id=[1, 1])
    with pytest.raises(SchemaError, match="duplicate key"):
        validate(ok, "predictions")
    with pytest.raises(SchemaError, match="'risk' is null at row 0"):
        validate(ok.iloc[:1].assign(risk=np.nan), "predictions")
    with pytest.raises(SchemaError, match="'risk' is not finite at row 0"):
        validate(ok.iloc[:1].assign(risk=np.inf), "predictions")
    with pytest.raises(SchemaError, match="unknown table kind"):
        validate(ok, "nonsense")
    assert columns("alarms") == ["stay_id", "screen_time", "model", "threshold", "fired", "silenced"]


def test_an_object_column_is_bool_only_when_it_holds_bools():
    alarms = pd.DataFrame({"stay_id": [1, 2], "screen_time": [T0, T0], "model": ["cpn"] * 2,
                           "threshold": [0.5, 0.5], "fired": ["yes", "no"], "silenced": [False, False]})
    with pytest.raises(SchemaError, match=r"'fired' should hold True/False \(bool\), but row 0 holds 'yes'"):
        validate(alarms, "alarms")
    with pytest.raises(SchemaError, match="row 1 holds 'no'"):
        validate(alarms.assign(fired=pd.Series([True, "no"], dtype=object)), "alarms")
    validate(alarms.assign(fired=pd.Series([True, np.bool_(False)], dtype=object)), "alarms")
    validate(alarms.assign(fired=pd.array([True, False], dtype="boolean")), "alarms")
    with pytest.raises(SchemaError, match="'silenced' has dtype int64, expected bool"):
        validate(alarms.assign(fired=[True, False], silenced=[0, 1]), "alarms")
    stays_death = pd.Series([True, None], dtype=object)  # nullable bool as MIMIC writes it
    assert field_for("stays", "death").nullable and schema._type_problem(stays_death, pa.bool_()) is None


def test_strings_ints_and_times_are_checked_by_value():
    with pytest.raises(SchemaError, match=r"'model' should hold strings \(string\), but row 1 holds 3"):
        validate(_predictions(model=pd.Series(["cpn", 3], dtype=object)), "predictions")
    with pytest.raises(SchemaError, match="'model' should hold strings"):
        validate(_predictions(model=pd.Categorical([1, 2])), "predictions")
    validate(_predictions(model=pd.Categorical(["cpn", "gbdt"]), split=pd.array(["dev", pd.NA], dtype="string")),
             "predictions")
    validate(_predictions(fold=[np.nan, 1.0]), "predictions")  # a nullable int may arrive as float
    with pytest.raises(SchemaError, match=r"'fold' should hold whole numbers \(int64\), but row 1 holds 1.5"):
        validate(_predictions(fold=[0.0, 1.5]), "predictions")
    with pytest.raises(SchemaError, match="'stay_id' has dtype float64, expected int64|'stay_id' is null"):
        validate(_predictions(stay_id=[1.0, np.nan]), "predictions")
    with pytest.raises(SchemaError, match="time zone UTC; contract times are naive"):
        validate(_predictions(screen_time=pd.to_datetime(["2020-01-01"] * 2).tz_localize("UTC")), "predictions")
    with pytest.raises(SchemaError, match="'screen_time' has dtype object, expected timestamp"):
        validate(_predictions(screen_time=["2020-01-01", "2020-01-02"]), "predictions")


def test_rules_check_the_open_columns():
    s = _screens()
    assert validate(s, "screens") is s
    with pytest.raises(SchemaError, match=r"'hr_age_h' outside \[0, inf\] at row 1"):
        validate(s.assign(hr_age_h=[0.5, -1.0]), "screens")
    with pytest.raises(SchemaError, match=r"'cxr_consolidation' outside \[0, 1\] at row 0"):
        validate(s.assign(cxr_consolidation=[1.5, 0.2]), "screens")
    with pytest.raises(SchemaError, match="'hr' has dtype object"):
        validate(s.assign(hr=["80", "90"]), "screens")
    with pytest.raises(SchemaError, match="'sepsis_label' is null at row 0"):
        validate(s.assign(sepsis_label=[np.nan, 1.0]), "screens")
    validate(s.assign(my_feature=["anything", None]), "screens")  # not in the contract: passed through
    cxr = pd.DataFrame({"study_id": [1], "subject_id": [1], "stay_id": [1], "time": [T0], "image_path": [None],
                        "cxr_effusion": [-0.1]})
    with pytest.raises(SchemaError, match=r"cxr: column 'cxr_effusion' outside \[0, 1\] at row 0"):
        validate(cxr, "cxr")


# ---------------------------------------------------------------- parquet IO

def test_write_then_read_gives_the_same_frame(tmp_path):
    s = _screens()
    path = write_table(s, tmp_path / "screens.parquet", "screens")
    back = read_table(path, "screens")
    pd.testing.assert_frame_equal(back, s)
    got = pq.read_schema(path)
    assert got.field("hr_age_h").metadata[b"description"].startswith(b"hours since that value")
    assert pa.types.is_dictionary(got.field("sex").type)  # categoricals stay categorical
    assert got.field("my_feature").metadata is None  # inferred, not documented


def test_write_refuses_a_bad_table_and_leaves_no_file(tmp_path):
    with pytest.raises(SchemaError, match=r"predictions \(.*p.parquet\): column 'risk' is null at row 1"):
        write_table(_predictions(risk=[0.1, np.nan]), tmp_path / "p.parquet", "predictions")
    assert list(tmp_path.iterdir()) == []


def test_read_names_file_column_and_row(tmp_path):
    bad = tmp_path / "predictions.parquet"
    _predictions(model=["cpn", None]).to_parquet(bad)
    with pytest.raises(SchemaError, match=r"predictions \(.*predictions.parquet\): column 'model' is null at row 1"):
        read_table(bad, "predictions")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(SchemaError, match=r"junk.parquet\): not a readable parquet file"):
        read_table(junk, "predictions")
    with pytest.raises(FileNotFoundError, match="nothing.parquet: no such file"):
        read_table(tmp_path / "nothing.parquet", "events")
