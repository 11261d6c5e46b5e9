"""The contract and the concept dictionary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr.concepts import convert, load_concepts, source_map
from ehr.schema import TABLES, SchemaError, columns, empty, validate
from ehr.sources.physionet import HEADER

SEPSISFINDER = ["hr", "map", "sbp", "resp", "spo2", "o2_flow", "on_o2", "fio2", "gcs", "acvpu", "temp",
                "crp", "wbc", "plt", "bili", "crea", "bun", "alb", "lact", "hco3", "ph"]
NOT_CONCEPTS = {"Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS", "SepsisLabel"}


def test_concepts_cover_sepsisfinder_and_every_physionet_variable():
    c = load_concepts()
    assert set(SEPSISFINDER) <= set(c)
    assert set(source_map("physionet")) == set(HEADER) - NOT_CONCEPTS
    for name, con in c.items():
        assert con.unit and con.min < con.max and con.loinc, name
        assert all(con.min <= x <= con.max for x in con.cuts), name


def test_unit_conversion():
    assert convert("temp", 212.0, "[degF]") == pytest.approx(100.0)
    assert convert("crea", 88.4, "umol/L") == pytest.approx(1.0, rel=1e-3)
    assert convert("fio2", 40.0, "%") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unit 'furlong'"):
        convert("hr", 1.0, "furlong")


def test_every_column_documented_once():
    for kind, cols in TABLES.items():
        names = [c.name for c in cols]
        assert len(names) == len(set(names)), kind
        assert all(c.description for c in cols), kind
        validate(empty(kind), kind)


def test_validate_names_column_and_row():
    df = pd.DataFrame({"stay_id": [1, 2], "screen_time": pd.to_datetime(["2020-01-01", None]),
                       "model": ["cpn", "cpn"], "risk": [0.1, 0.2], "fold": [0, 0], "split": ["test"] * 2})
    with pytest.raises(SchemaError, match="'screen_time' is null at row 1"):
        validate(df, "predictions")
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['risk'\]"):
        validate(df.drop(columns="risk"), "predictions")
    ok = df.assign(stay_id=[1, 1], screen_time=pd.to_datetime(["2020-01-01", "2020-01-01"]))
    with pytest.raises(SchemaError, match="duplicate key"):
        validate(ok, "predictions")
    with pytest.raises(SchemaError, match="'risk' is null at row 0"):
        validate(ok.iloc[:1].assign(risk=np.nan), "predictions")
    with pytest.raises(SchemaError, match="'risk' is not finite at row 0"):
        validate(ok.iloc[:1].assign(risk=np.inf), "predictions")
    with pytest.raises(SchemaError, match="unknown table kind"):
        validate(ok, "nonsense")
    assert columns("alarms") == ["stay_id", "screen_time", "model", "threshold", "fired", "silenced"]
