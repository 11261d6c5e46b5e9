"""Readable state labels: every state name the CPN builds from concepts.toml reads back as its range."""

from __future__ import annotations

import re

import pytest

from cpn.structure import CONTEXT, state_names
from ehr.concepts import load_concepts
from ehr.state_labels import display_unit, feature_label, feature_unit, parse_state, state_label


@pytest.mark.parametrize("name", sorted(load_concepts()))
def test_every_concept_state_round_trips_to_its_cut_points(name):
    cuts = list(load_concepts()[name].cuts)
    names = state_names(cuts)
    bounds = [parse_state(s) for s in names]
    if not cuts:
        assert bounds == [None]
        return
    assert bounds[0] == (None, cuts[0]) and bounds[-1] == (cuts[-1], None)
    assert [b for b in bounds[1:-1]] == list(zip(cuts[:-1], cuts[1:]))
    labels = [state_label(name, s) for s in names]
    assert len(set(labels)) == len(labels) and all(lab and not re.search(r"\dp\d|^(lt|ge)|\dto", lab)
                                                   for lab in labels)
    if name == "on_o2":
        assert labels == ["on air", "on oxygen"]


@pytest.mark.parametrize("feature, state, label", [
    ("temp", "36p1to38p1", "36.1–38.0 °C"),      # NEWS2's 36.1-38.0 band
    ("temp", "38p1to39p1", "38.1–39.0 °C"),
    ("hr", "51to91", "51–90 /min"),
    ("hr", "lt41", "< 41 /min"),
    ("spo2", "92to94", "92–93 %"),
    ("crea", "1p2to2", "1.2–1.9 mg/dL"),         # SOFA's renal band
    ("ph", "7p25to7p35", "7.25–7.34"),
    ("sbp", "ge220", "≥ 220 mmHg"),
    ("base_excess", "m2to3", "-2 to 2 mmol/L"),
    ("hours_band", "24to72", "24–71 h"),
    ("department", "MICU", "MICU"),
    ("lact_tested_24h", "no", "no"),
])
def test_labels(feature, state, label):
    assert state_label(feature, state) == label


def test_context_states_all_read():
    for node, (states, _) in CONTEXT.items():
        assert all(state_label(node, s) and state_label(node, s) != s for s in states), node


def test_units_and_names():
    assert feature_unit("wbc") == "×10³/µL" and feature_unit("unknown_feature") == ""
    assert display_unit("10*3/uL") == "×10³/µL" and feature_unit("cxr_consolidation") == "probability"
    assert state_label("acvpu", "lt1") == "alert" and state_label("acvpu", "ge1").startswith("new confusion")
    assert feature_label("xray_taken_24h") == "Chest X-ray taken in the last 24 h"
    assert feature_label("some_new_thing") == "some new thing"
    assert state_label("temp", None) == "" and state_label("temp", float("nan")) == ""
