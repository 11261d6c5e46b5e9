"""Network files, validation, discretisation, decay and evidence building."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgmpy.factors.discrete import TabularCPD

from cpn.decay import cxr_likelihood, decay_weight, soft_evidence
from cpn.discretise import category_states, concept_states
from cpn.evidence import build_evidence, network_info, target_states
from cpn.structure import (SHIPPED_OPTIONS, NetworkError, build_expert_network, load_network, save_network,
                           validate_network)


def test_shipped_files_match_the_generator(physionet_net, full_net):
    for name, net in (("physionet", physionet_net), ("full", full_net)):
        ref = build_expert_network(name, **SHIPPED_OPTIONS[name])
        assert set(net.edges()) == set(ref.edges())
        for v in ref.nodes():
            np.testing.assert_allclose(net.get_cpds(v).values, ref.get_cpds(v).values, atol=1e-12)
    assert "crp" in full_net and "crp" not in physionet_net
    assert {"cxr_consolidation", "cxr_effusion", "cxr_edema", "cxr_atelectasis"} <= set(full_net.nodes())
    assert "cns" in full_net and "cns" not in physionet_net
    # the options are the variant's own: the measurement ages only in physionet (issue 13)
    assert "hr_rise_6h" in full_net and "hr_rise_6h" in physionet_net
    assert "lact_age" in physionet_net and not any(v.endswith("_age") for v in full_net.nodes())


def test_em_recovers_cxr_leaf_only_with_the_calibration_prior():
    """Calibrated probabilities turned into LRs at the true prevalence let EM recover P(X | A);
    at a too-high prior (0.5) every LR is shrunk and P(present | A=no) collapses towards 0."""
    from cpn.inference import InferenceEngine
    from cpn.learning import fit_em

    rng = np.random.default_rng(0)
    n = 4000
    a = (rng.random(n) < 0.3).astype(int)
    x = rng.random(n) < np.where(a == 1, 0.8, 0.05)
    z = rng.normal(2.0 * x, 1.0)  # imaging score; the exact posterior below is calibrated
    prev = x.mean()
    p = 1 / (1 + np.exp(-(np.log(prev / (1 - prev)) + 2.0 * z - 2.0)))
    learned = {}
    for prior in (0.5, p.mean()):
        eng = InferenceEngine(["A", "X"], {"A": 2, "X": 2}, {"A": [], "X": ["A"]},
                              {"A": np.array([.5, .5]), "X": np.array([[.8, .4], [.2, .6]])}, "A", ["A", "X"])
        fit_em(eng, {"A": np.eye(2)[a], "X": cxr_likelihood(p, np.ones(n), prior)},
               pseudo_count=1.0, max_iter=200, tol=1e-9)
        learned[prior] = eng.cpds["X"][1]
    np.testing.assert_allclose(learned[p.mean()], [0.05, 0.8], atol=0.05)
    assert learned[0.5][0] < 0.01 and learned[0.5][1] < 0.7


def test_xray_timing_leaf_only_in_full_network(tiny_screens, physionet_net, full_net):
    assert "xray_taken_24h" in full_net.nodes() and "xray_taken_24h" not in physionet_net.nodes()
    assert set(full_net.get_parents("xray_taken_24h")) == {"infection", "sepsis"}
    s = tiny_screens.assign(cxr_consolidation=[0.8, 0.8, np.nan, np.nan, 0.1, 0.1],
                            cxr_age_h=[2.0, 30.0, np.nan, np.nan, 0.0, 1.0])
    ev, _ = build_evidence(s, network_info(full_net), {"cxr": np.inf},
                           cxr_prior={"cxr_consolidation": 0.2})
    assert ev["xray_taken_24h"].tolist() == [[0, 1], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1]]
    # per-node prior: LR = odds(0.8) / odds(0.2) = 16 -> (1/16, 1) after max-normalising
    np.testing.assert_allclose(ev["cxr_consolidation"][0], [1 / 16, 1.0])
    assert np.isnan(ev["cxr_consolidation"][2]).all()


def test_cycle_is_a_clear_error(tmp_path, physionet_net):
    text = (load_network.__globals__["network_path"]("physionet")).read_text()
    # make 'infection' a parent of 'sepsis' as well: sepsis -> infection -> sepsis
    text = text.replace("<FOR>sepsis</FOR>", "<FOR>sepsis</FOR>\n\t\t<GIVEN>infection</GIVEN>", 1)
    p = tmp_path / "cyclic.xml"
    p.write_text(text)
    with pytest.raises(NetworkError, match="cyclic.xml"):
        load_network(p)


def test_cpd_not_summing_to_one_is_a_clear_error(tmp_path, physionet_net):
    net = physionet_net.copy()
    for v in physionet_net.nodes():
        net.nodes[v].update(physionet_net.nodes[v])
    bad = TabularCPD("lact_tested_24h", 2, [[0.5, 0.5], [0.6, 0.5]], evidence=["infection"],
                     evidence_card=[2], state_names={"lact_tested_24h": ["no", "yes"],
                                                     "infection": ["no", "yes"]})
    net.remove_cpds(net.get_cpds("lact_tested_24h"))
    net.add_cpds(bad)
    with pytest.raises(NetworkError, match="lact_tested_24h.*does not sum to 1"):
        validate_network(net, origin="x.xml")


def test_unknown_concept_leaf_is_a_clear_error(physionet_net):
    net = physionet_net.copy()
    for v in physionet_net.nodes():
        net.nodes[v].update(physionet_net.nodes[v])
    net.add_edge("kidney", "zzz")
    net.nodes["zzz"]["role"] = "concept"
    net.add_cpds(TabularCPD("zzz", 2, [[0.5] * 3, [0.5] * 3], evidence=["kidney"], evidence_card=[3],
                            state_names={"zzz": ["a", "b"], "kidney": ["normal", "impaired", "failing"]}))
    with pytest.raises(NetworkError, match="'zzz' is not in ehr/concepts.toml"):
        validate_network(net)


def test_save_load_roundtrip(tmp_path, full_net):
    p = save_network(full_net, tmp_path / "n.xml")
    back = load_network(p)
    for v in full_net.nodes():
        np.testing.assert_array_equal(back.get_cpds(v).values, full_net.get_cpds(v).values)


@settings(max_examples=50, deadline=None)
@given(a=st.floats(0, 500), b=st.floats(0, 500), h=st.floats(0.1, 200))
def test_decay_weight_is_one_at_zero_and_falls(a, b, h):
    assert decay_weight(0.0, h) == 1.0
    wa, wb = decay_weight(a, h), decay_weight(b, h)
    assert 0.0 <= wa <= 1.0
    if a <= b:
        assert wa >= wb
    assert decay_weight(h, h) == pytest.approx(0.5)


def test_soft_evidence_rule():
    lik = soft_evidence(np.array([2, -1]), np.array([0.25, 1.0]), 4)
    np.testing.assert_allclose(lik[0], [0.75, 0.75, 1.0, 0.75])
    assert np.isnan(lik[1]).all()
    with pytest.raises(ValueError, match="negative age"):
        decay_weight(-1.0, 4.0)


def test_cxr_likelihood_ratio_and_decay():
    full = cxr_likelihood(np.array([0.9]), np.array([1.0]))
    assert full[0, 1] / full[0, 0] == pytest.approx(9.0)
    half = cxr_likelihood(np.array([0.9]), np.array([0.5]))
    np.testing.assert_allclose(half[0], 0.5 * full[0] / full[0].max() + 0.5)
    assert np.isnan(cxr_likelihood(np.array([np.nan]), np.array([1.0]))).all()


def test_discretisation_uses_concept_cuts_and_rejects_out_of_range():
    np.testing.assert_array_equal(concept_states("hr", [40, 41, 90.9, 91, 131, np.nan]), [0, 1, 2, 3, 5, -1])
    with pytest.raises(ValueError, match="column 'hr'.*row 1.*plausible range"):
        concept_states("hr", [80, 400])
    np.testing.assert_array_equal(category_states(["MICU", None, "CCU"], ("MICU", "SICU", "other")),
                                  [0, -1, 2])
    np.testing.assert_array_equal(target_states([1, 6, 6.5, 48, 49, np.nan]), [0, 0, 1, 3, 4, 4])


def test_build_evidence_errors_and_missing(tiny_screens, physionet_net, full_net):
    info = network_info(physionet_net)
    ev, det = build_evidence(tiny_screens, info, {"hr": 4.0}, details=True)
    assert np.isnan(ev["hr"][5]).all()  # never measured -> no evidence
    np.testing.assert_allclose(ev["hr"][1], [0, 0, 0, 0, 1, 0])  # age 0 -> hard evidence
    assert ev["lact_tested_24h"][:, 1].tolist() == [0, 1, 1, 0, 0, 0]
    assert ev["department"][3].tolist() == [0, 1, 0]
    bad = tiny_screens.assign(foo=1.0, foo_age_h=0.0)
    with pytest.raises(ValueError, match="unknown concept 'foo'"):
        build_evidence(bad, info, {})
    with pytest.raises(ValueError, match="column 'temp'.*row 0"):
        build_evidence(tiny_screens.assign(temp=[50.0] + [37.0] * 5), info, {})
    with pytest.raises(ValueError, match="cxr_consolidation"):
        build_evidence(tiny_screens.assign(cxr_consolidation=1.5, cxr_age_h=0.0), network_info(full_net), {})
    with pytest.raises(ValueError, match="unknown CXR finding"):
        build_evidence(tiny_screens.assign(cxr_fracture=0.5), info, {})


def test_drop_removes_nodes_for_ablations():
    from cpn.structure import NetworkError, build_expert_network

    net = build_expert_network("physionet", drop=["department", "age_band", "hours_band"])
    assert net.get_parents("sepsis") == [] and "age_band" not in net.get_parents("kidney")
    assert {"department", "age_band", "hours_band"}.isdisjoint(net.nodes())
    full = build_expert_network("full", drop=[f"cxr_{f}" for f in ("consolidation", "effusion",
                                                                    "atelectasis", "edema")])
    assert "resp_infection" in full.nodes()  # still has the respiration child
    for bad in (["sepsis"], ["kidney"], ["crp"]):  # target, latent, not in the physionet network
        with pytest.raises(NetworkError, match="cannot drop"):
            build_expert_network("physionet", drop=bad)


def test_built_network_order_does_not_depend_on_the_hash_seed():
    # the node order decides the half-life search's order: two processes with other string-hash
    # seeds must build the same network (they did not while the concept leaves came from a set)
    import os
    import subprocess
    import sys

    code = ("from cpn.structure import build_expert_network as b; "
            "n = b('physionet', derived=True, measurement_age='extended'); print(list(n.nodes()), list(n.edges()))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_hours_band_evidence_follows_the_networks_own_bands():
    """Evidence for ``hours_band`` follows the network's own bands: the shipped four, or a network
    built (or saved) with others, not CONTEXT's."""
    import pandas as pd
    from cpn.structure import CONTEXT, state_names

    s = pd.DataFrame({"hours_since_admit": [0.0, 5.0, 11.0, 30.0, 47.0, 71.0, 72.0, 400.0, np.nan]})
    new = network_info(build_expert_network("physionet", hours_cuts=(6, 12, 24, 36, 48, 72)))
    assert new.states["hours_band"] == state_names((6, 12, 24, 36, 48, 72)) != CONTEXT["hours_band"][0]
    ev, _ = build_evidence(s, new, {})
    assert ev["hours_band"][:8].argmax(1).tolist() == [0, 0, 1, 3, 4, 5, 6, 6]
    assert np.isnan(ev["hours_band"][8]).all() or (ev["hours_band"][8] == 1).all()  # no evidence
    old = network_info(build_expert_network("physionet"))
    assert old.states["hours_band"] == ("lt6", "6to24", "24to72", "ge72") == CONTEXT["hours_band"][0]
    ev, _ = build_evidence(s, old, {})
    assert ev["hours_band"].shape[1] == 4
    assert ev["hours_band"][:8].argmax(1).tolist() == [0, 0, 1, 2, 2, 2, 3, 3]
