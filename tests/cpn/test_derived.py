"""Derived evidence leaves (issue 13 item 2): worst value in 24 h, 6 h trends, change since the previous
lab, monitoring intensity; structure, evidence by hand, exact inference against pgmpy, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn import SepsisCPN
from cpn.evidence import build_evidence, input_columns, network_info
from cpn.structure import DERIVED, EDGES, NetworkError, build_expert_network, network_path, node_roles, \
    validate_network

from .test_inference import assert_engine_matches_pgmpy


@pytest.fixture(scope="module")
def derived_net():
    return build_expert_network("physionet", derived=True)


def test_derived_leaves_are_optional_children_of_organ_nodes(derived_net, physionet_net):
    roles = node_roles(derived_net)
    assert {v for v, r in roles.items() if r == "derived"} == set(DERIVED)
    assert not any(r == "derived" for r in node_roles(build_expert_network("physionet")).values())  # core network
    # the shipped network carries them (issue 13: chosen by CV on set A)
    assert set(DERIVED) <= {v for v, r in node_roles(physionet_net).items() if r == "derived"}
    for v in DERIVED:
        parents = derived_net.get_parents(v)
        assert len(parents) == 1 and roles[parents[0]] == "latent"
    readme = (network_path("physionet").parent / "README.md").read_text()
    for p, c, reason in EDGES:
        if c in DERIVED:
            assert f"| {p} | {c} | {reason} |" in readme


def test_a_derived_leaf_with_wrong_states_is_rejected(derived_net):
    from pgmpy.factors.discrete import TabularCPD

    net = derived_net.copy()
    for v in derived_net.nodes():
        net.nodes[v].update(derived_net.nodes[v])
    old = net.get_cpds("crea_delta")
    net.remove_cpds(old)
    net.add_cpds(TabularCPD("crea_delta", 2, np.full((2, 3), 0.5), evidence=["kidney"], evidence_card=[3],
                            state_names={"crea_delta": ["a", "b"], "kidney": list(old.state_names["kidney"])}))
    with pytest.raises(NetworkError, match="derived leaf 'crea_delta'"):
        validate_network(net)


def test_derived_evidence_by_hand(derived_net):
    t0 = pd.Timestamp("2020-01-01 00:00")
    h = np.arange(8.0)
    s = pd.DataFrame({
        "stay_id": 1, "screen_time": t0 + pd.to_timedelta(h, unit="h"), "hours_since_admit": h + 1,
        "hr": [80.0, 85, 95, 125, 100, 100, 100, 100], "hr_age_h": [0.0, 0, 0, 0, 0, 1, 2, 3],
        "map": [80.0, 80, 62, 62, 70, 70, 70, 70], "map_age_h": [0.0, 1, 0, 1, 0, 1, 2, 3],
        "crea": [np.nan, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5], "crea_age_h": [np.nan, 0, 1, 2, 0, 1, 2, 3],
    }).iloc[::-1]  # row order must not matter
    info = network_info(derived_net)
    assert {"stay_id", "screen_time"} <= set(input_columns(info))
    ev, det = build_evidence(s, info, {}, details=True)
    state = {v: np.where(np.isnan(ev[v]).any(axis=1), -1, ev[v].argmax(axis=1))[::-1] for v in ev}
    # hr_max_24h cuts 91/111/131: 80, 85 -> 0; 95 -> 1; 125 onwards -> 2
    assert state["hr_max_24h"].tolist() == [0, 0, 1, 2, 2, 2, 2, 2]
    # hr_rise_6h = hr - min over (t - 6 h, t] (cuts 10/20/30): 0, 5, 15, 45, 20, 20, then 80 and 85 leave: 15, 5
    assert state["hr_rise_6h"].tolist() == [0, 0, 1, 3, 2, 2, 1, 0]
    # map_min_24h cuts 55/65/70: 80 -> 3; 62 -> 1 for the rest of the day
    assert state["map_min_24h"].tolist() == [3, 3, 1, 1, 1, 1, 1, 1]
    # crea_delta cuts -0.3/0.3: none before a second value; +0.5 at 4 h, carried forward
    assert state["crea_delta"].tolist() == [-1, -1, -1, -1, 2, 2, 2, 2]
    assert det["crea_delta"][0][::-1][4] == pytest.approx(0.5)
    # a concept the screens lack: no evidence; no stay_id: no derived evidence at all
    assert "plt_delta" not in ev
    ev2, _ = build_evidence(s.drop(columns="stay_id"), info, {})
    assert not any(v in ev2 for v in DERIVED)


def test_engine_matches_pgmpy_on_the_derived_network(derived_net):
    assert_engine_matches_pgmpy(derived_net, seed=11)


def test_sepsiscpn_with_derived_leaves_explains_and_round_trips(derived_net, sampled_screens, tmp_path):
    s = sampled_screens.copy()
    m = SepsisCPN(derived_net, half_lives="prior", max_iter=3, discriminative_iter=2).fit(s)
    assert set(DERIVED) <= set(m.features_)
    ex = m.explain(s.iloc[:20])
    assert "hr_max_24h" in set(ex["feature"])
    back = SepsisCPN.load(m.save(tmp_path / "cpn"))
    np.testing.assert_allclose(back.predict_proba(s), m.predict_proba(s), rtol=0, atol=1e-12)
