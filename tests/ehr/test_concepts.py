"""The concept dictionary."""

from __future__ import annotations

import pytest

from ehr.concepts import convert, load_concepts, source_map
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
