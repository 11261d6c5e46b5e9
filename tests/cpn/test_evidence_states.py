"""Learned evidence resolution (issue 13): concept leaves re-cut at training-data quantiles
(``SepsisCPN(evidence_states=K)``): the cut-points, the evidence they give, exact inference against
pgmpy on the re-cut network, save/load, and no leakage (cuts come from the fitted screens only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn import SepsisCPN
from cpn.discretise import concept_states, learn_cuts
from cpn.evidence import build_evidence, network_info
from cpn.structure import (NetworkError, build_expert_network, cuts_of_states, node_roles, state_names,
                           validate_network, with_concept_cuts)

from .test_inference import assert_engine_matches_pgmpy

HR_CUTS = (60.0, 75.0, 90.0, 110.0)


@pytest.fixture(scope="module")
def recut_net():
    return with_concept_cuts(build_expert_network("physionet", derived=True),
                             {"hr": HR_CUTS, "lact": (1.0, 1.5, 2.0, 3.0, 4.5), "temp": (36.5, 37.0, 37.5, 38.0)})


def test_learn_cuts_are_snapped_quantiles_inside_the_plausible_range():
    rng = np.random.default_rng(0)
    hr = rng.normal(85, 15, 20000)
    cuts = learn_cuts("hr", hr, 8)
    assert len(cuts) == 7 and all(float(c).is_integer() for c in cuts)  # 1 /min resolution
    frac = np.bincount(np.searchsorted(cuts, hr, side="right"), minlength=8) / hr.size
    assert np.all(np.abs(frac - 1 / 8) < 0.02)
    # values piled on few numbers give fewer states; too few values keep the clinical cuts
    assert len(learn_cuts("gcs", rng.choice([3.0, 15.0], 5000, p=[0.2, 0.8]), 8)) == 1
    assert learn_cuts("hr", hr[:10], 8) == (41.0, 51.0, 91.0, 111.0, 131.0)
    # clinical mode keeps every clinical threshold and adds data-driven ones between them
    mixed = learn_cuts("hr", hr, 8, mode="clinical")
    assert set((41.0, 51.0, 91.0, 111.0, 131.0)) < set(mixed) and len(mixed) > 5
    with pytest.raises(ValueError, match="mode"):
        learn_cuts("hr", hr, 8, mode="tree")


def test_recut_leaf_states_round_trip_and_validate(recut_net):
    assert tuple(recut_net.get_cpds("hr").state_names["hr"]) == state_names(HR_CUTS)
    assert cuts_of_states(state_names(HR_CUTS)) == HR_CUTS
    # the expert prior anchors the normal heart rate (75) in its state: 75to90
    assert int(np.argmax(recut_net.get_cpds("hr").values.reshape(5, -1)[:, 0])) == 2
    with pytest.raises(NetworkError, match="not a concept leaf"):
        with_concept_cuts(recut_net, {"circulation": (1.0,)})
    with pytest.raises(NetworkError, match="concept leaf 'hr'"):  # cuts outside [20, 300]
        with_concept_cuts(recut_net, {"hr": (10.0, 90.0)})
    validate_network(recut_net)


def test_evidence_uses_the_networks_cuts(recut_net):
    s = pd.DataFrame({"hr": [59.0, 60.0, 89.9, 130.0, np.nan], "hr_age_h": [0.0] * 5,
                      "lact": [0.8, 1.5, 2.5, 5.0, 1.0], "lact_age_h": [0.0] * 5})
    ev, _ = build_evidence(s, network_info(recut_net), {})
    state = np.where(np.isnan(ev["hr"]).any(axis=1), -1, ev["hr"].argmax(axis=1))
    assert state.tolist() == [0, 1, 2, 4, -1]
    assert ev["lact"].argmax(axis=1).tolist() == [0, 2, 3, 5, 1]
    # the shipped network still reads concepts.toml's cuts (41/51/91/111/131)
    ev0, _ = build_evidence(s, network_info(build_expert_network("physionet")), {})
    assert ev0["hr"][:4].argmax(axis=1).tolist() == concept_states("hr", s.hr[:4]).tolist() == [2, 2, 2, 4]


def test_engine_matches_pgmpy_on_the_recut_network(recut_net):
    assert_engine_matches_pgmpy(recut_net, seed=5, missing=slice(1, None, 3))


def test_sepsiscpn_learns_cuts_on_its_training_screens_and_round_trips(sampled_screens, tmp_path):
    s = sampled_screens.copy()
    m = SepsisCPN("physionet", half_lives="prior", max_iter=3, evidence_states=6, discriminative_iter=2).fit(s)
    hr = s["hr"].to_numpy()[s["hr_age_h"].to_numpy() < 1]
    assert hr.size > 200 and learn_cuts("hr", hr, 6) != (41.0, 51.0, 91.0, 111.0, 131.0)
    assert tuple(m.network_.get_cpds("hr").state_names["hr"]) == state_names(learn_cuts("hr", hr, 6))
    # no leakage: the cuts depend on the training screens only (shifted training values move them)
    shifted = s.assign(hr=np.clip(s["hr"] + 15, 20, 300))
    m2 = SepsisCPN("physionet", half_lives="prior", max_iter=1, evidence_states=6).fit(shifted)
    assert m2.network_.get_cpds("hr").state_names["hr"] != m.network_.get_cpds("hr").state_names["hr"]
    ex = m.explain(s.iloc[:10])
    assert "hr" in set(ex["feature"])
    back = SepsisCPN.load(m.save(tmp_path / "cpn"))
    assert back.evidence_states == 6
    np.testing.assert_allclose(back.predict_proba(s), m.predict_proba(s), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def age_net():
    return build_expert_network("physionet", measurement_age=True)


def test_measurement_age_leaves_evidence_by_hand(age_net):
    from cpn.structure import MEASUREMENT_AGE

    roles = node_roles(age_net)
    assert {v for v, r in roles.items() if r == "derived"} == set(MEASUREMENT_AGE)
    assert not any(r == "derived" for r in node_roles(build_expert_network("physionet")).values())
    from cpn.structure import AGE_EDGES, network_path

    readme = (network_path("physionet").parent / "README.md").read_text()
    assert all(f"| {p} | {c} | {r} |" in readme for p, c, r in AGE_EDGES)
    assert all(age_net.get_parents(c) == [p] for p, c, _ in AGE_EDGES)
    s = pd.DataFrame({"lact": [2.0, 2.0, 2.0, np.nan], "lact_age_h": [0.0, 3.0, 30.0, np.nan],
                      "temp": [37.0] * 4, "temp_age_h": [0.0, 1.0, 2.5, 8.0]})
    ev, _ = build_evidence(s, network_info(age_net), {})  # no stay_id needed
    # lact cuts 1/6/24/1000 h: this hour, 1-6 h, >= 24 h, never measured (the last state)
    assert ev["lact_age"].argmax(axis=1).tolist() == [0, 1, 3, 4]
    assert ev["temp_age"].argmax(axis=1).tolist() == [0, 1, 2, 3]
    assert "wbc_age" not in ev  # a concept the screens lack: no evidence


def test_engine_matches_pgmpy_on_the_measurement_age_network(age_net):
    assert_engine_matches_pgmpy(with_concept_cuts(age_net, {"lact": (1.0, 2.0, 4.0)}), seed=7,
                                missing=slice(None, None, 4))


def test_partitioned_fit_refuses_learned_cuts():
    from cpn.partitioned import fit_partitioned

    with pytest.raises(ValueError, match="evidence_states=8"):
        fit_partitioned(SepsisCPN("physionet", evidence_states=8), [], None)
