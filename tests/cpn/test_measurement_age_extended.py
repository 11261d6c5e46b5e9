"""The extended measurement-age set (issue 13): ``build_expert_network(..., measurement_age="extended")``
adds eight more "hours since last measured" leaves (platelets, glucose, potassium, FiO2, PTT, AST,
bicarbonate, haemoglobin) beside the six, each of the 14 with ``sepsis`` as a second parent; structure,
evidence by hand, exact inference against pgmpy, save/load of the network and of a fitted model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn import SepsisCPN
from cpn.evidence import build_evidence, network_info
from cpn.structure import (AGE_EDGES, AGE_EDGES_EXTENDED, AGE_SEPSIS_EDGES, MEASUREMENT_AGE, MEASUREMENT_AGE_EXTENDED,
                           NetworkError, build_expert_network, load_network, network_path, node_roles, save_network)

from .test_inference import assert_engine_matches_pgmpy


@pytest.fixture(scope="module")
def ext_net():
    return build_expert_network("physionet", measurement_age="extended")


def _ages(net) -> set:
    return {v for v, r in node_roles(net).items() if r == "derived" and v.endswith("_age")}


def test_extended_set_adds_eight_leaves_under_their_organs(ext_net):
    assert len(MEASUREMENT_AGE_EXTENDED) == 8 and not set(MEASUREMENT_AGE) & set(MEASUREMENT_AGE_EXTENDED)
    assert _ages(ext_net) == set(MEASUREMENT_AGE) | set(MEASUREMENT_AGE_EXTENDED)
    # each age leaf: its organ (or infection) and, in the extended set, sepsis itself
    assert all(ext_net.get_parents(c) == [p, "sepsis"] for p, c, _ in AGE_EDGES + AGE_EDGES_EXTENDED)
    assert {c for p, c, _ in AGE_SEPSIS_EDGES if p == "sepsis"} == _ages(ext_net)
    # True (and "six") keep the six of before; the names say which set a network has
    six = build_expert_network("physionet", measurement_age=True)
    assert _ages(six) == set(MEASUREMENT_AGE)
    assert _ages(build_expert_network("physionet", measurement_age="six")) == set(MEASUREMENT_AGE)
    assert six.name.endswith("_age") and ext_net.name.endswith("_age_extended")
    with pytest.raises(NetworkError, match="measurement_age must be"):
        build_expert_network("physionet", measurement_age="all")
    readme = (network_path("physionet").parent / "README.md").read_text()
    assert all(f"| {p} | {c} | {r} |" in readme for p, c, r in AGE_EDGES_EXTENDED + AGE_SEPSIS_EDGES)
    assert all(six.get_parents(c) == [p] for p, c, _ in AGE_EDGES)  # the six of before are unchanged


def test_extended_age_evidence_by_hand(ext_net):
    s = pd.DataFrame({"plt": [150.0, 150.0, 150.0, np.nan], "plt_age_h": [0.0, 3.0, 30.0, np.nan],
                      "fio2": [0.4, 0.4, 0.4, np.nan], "fio2_age_h": [0.5, 7.0, 2000.0, np.nan]})
    ev, _ = build_evidence(s, network_info(ext_net), {})
    # cuts 1/6/24/1000 h: this hour, 1-6 h, 6-24 h, >= 24 h, never measured in the stay (the last state)
    assert ev["plt_age"].argmax(axis=1).tolist() == [0, 1, 3, 4]
    assert ev["fio2_age"].argmax(axis=1).tolist() == [0, 2, 4, 4]
    assert "hgb_age" not in ev  # a concept the screens lack: no evidence


def test_engine_matches_pgmpy_on_the_extended_age_network(ext_net):
    assert_engine_matches_pgmpy(ext_net, seed=13, missing=slice(None, None, 4))
    # the network of the cross-validation (with the derived leaves), with and without the hours band
    for drop, seed in (((), 17), (("hours_band",), 19)):
        assert_engine_matches_pgmpy(build_expert_network("physionet", derived=True, measurement_age="extended",
                                                         drop=drop), seed=seed, missing=slice(None, None, 4))


def test_extended_network_and_model_round_trip(ext_net, sampled_screens, tmp_path):
    back = load_network(save_network(ext_net, tmp_path / "ext.xml"))
    assert node_roles(back) == node_roles(ext_net)
    for v in MEASUREMENT_AGE_EXTENDED:
        np.testing.assert_allclose(back.get_cpds(v).values, ext_net.get_cpds(v).values, rtol=0, atol=1e-12)
    m = SepsisCPN(ext_net, half_lives="prior", max_iter=2, discriminative_iter=2).fit(sampled_screens)
    assert set(MEASUREMENT_AGE_EXTENDED) <= set(m.features_)
    assert "plt_age" in set(m.explain(sampled_screens.iloc[:20])["feature"])
    again = SepsisCPN.load(m.save(tmp_path / "cpn"))
    np.testing.assert_allclose(again.predict_proba(sampled_screens), m.predict_proba(sampled_screens),
                               rtol=0, atol=1e-12)
