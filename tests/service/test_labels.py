"""Every state of the shipped networks gets a readable label; feature labels and units."""

from __future__ import annotations

import re

import pytest

from ehr.state_labels import feature_label, feature_unit, state_label


@pytest.mark.parametrize("variant", ["physionet", "full"])
def test_every_concept_state_reads_as_an_interval(variant):
    from cpn.evidence import network_info
    from cpn.structure import load_network

    info = network_info(load_network(variant))
    for node, states in info.states.items():
        if info.roles[node] not in ("concept", "context"):
            continue
        for s in states:
            label = state_label(node, s)
            assert not re.search(r"\dp\d|^(lt|ge)|\dto|^m\d", label), (node, s, label)  # XMLBIF-safe name left
            if node in ("on_o2", "acvpu"):
                assert label in ("on air", "on oxygen", "alert", "new confusion, voice, pain or unresponsive")
            elif node != "department":
                assert label[0] in "<≥0123456789-", (node, s, label)
        assert feature_label(node) != node or node == "sex"


def test_units_and_labels_of_context_and_testing_nodes():
    assert (feature_unit("temp"), feature_unit("hr"), feature_unit("gcs"), feature_unit("age_band")) == \
        ("°C", "/min", "", "years")
    assert feature_label("bloodgas_tested_24h") == "Blood gas measured in the last 24 h"
    assert state_label("hours_band", "ge72") == "≥ 72 h" and state_label("temp", None) == ""
