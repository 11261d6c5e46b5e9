"""Half-life learning by line search (issue 13 item 3): it recovers a known generating decay.

The synthetic problem makes the engine's decayed evidence exact: a leaf ``X`` of a binary target
``T`` is observed at age ``a`` as its current value with probability ``w_g(a)`` and as a uniform
draw otherwise, with ``w_g`` chosen so that the exact likelihood of the observation is
``2**(-a / h_true) * onehot + (1 - 2**(-a / h_true))`` (:func:`cpn.decay.soft_evidence`). The
held-out log-likelihood of ``T`` is then maximised at ``h_true`` (up to sampling noise).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpn import SepsisCPN
from cpn.decay import decay_weight, soft_evidence
from cpn.inference import InferenceEngine
from cpn.learning import conditional_loglik, golden_section, optimise_half_lives, search_half_lives

GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # SepsisCPN's default half_life_grid


def _problem(h_true: float, n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = 3
    cpd_x = np.array([[0.7, 0.1], [0.2, 0.2], [0.1, 0.7]])  # P(X | T), columns T = 0, 1
    eng = InferenceEngine(["T", "X"], {"T": 2, "X": k}, {"T": [], "X": ["T"]},
                          {"T": np.array([0.5, 0.5]), "X": cpd_x}, "T", ["T", "X"])
    t = rng.integers(0, 2, n)
    x = (rng.random(n)[:, None] > np.cumsum(cpd_x[:, t].T, axis=1)).sum(axis=1)
    age = rng.uniform(0.0, 48.0, n)
    w = decay_weight(age, h_true)
    # P(obs | X=x) = w_g 1[x=obs] + (1 - w_g)/k  is proportional to  w 1[x=obs] + (1 - w)
    w_g = w / (k * (1.0 - w) + w)
    obs = np.where(rng.random(n) < w_g, x, rng.integers(0, k, n))

    def score_many(candidates):
        return [conditional_loglik(eng, {"X": soft_evidence(obs, decay_weight(age, c["x"]), k)}, t)
                for c in candidates]

    return score_many


@pytest.mark.parametrize("seed", [0, 1])
def test_line_search_recovers_the_generating_half_life(seed):
    # prior 4 h, truth 12 h: multiplier 3, between the grid's powers of 2
    score_many = _problem(12.0, seed=seed)
    best, scale, profile = optimise_half_lives({"x": 4.0}, lambda k: "g", score_many)
    assert best["x"] == pytest.approx(12.0, rel=0.1)
    assert scale["g"] == pytest.approx(best["x"] / 4.0)
    assert not profile["g"]["no_decay"]
    # the profile is the evidence: its maximum is the chosen point
    i = int(np.argmax(profile["g"]["score"]))
    assert 2.0 ** profile["g"]["log2_multiplier"][i] == pytest.approx(scale["g"])
    # the coarse grid cannot say 12 h: it lands on a power of 2 of the prior (8 or 16 h)
    grid_best, _ = search_half_lives({"x": 4.0}, lambda k: "g", GRID, score_many)
    assert abs(grid_best["x"] / 12.0 - 1.0) > 0.25


def test_line_search_is_deterministic():
    score_many = _problem(6.0, n=5_000, seed=2)
    a = optimise_half_lives({"x": 4.0}, lambda k: "g", score_many)
    b = optimise_half_lives({"x": 4.0}, lambda k: "g", score_many)
    assert a == b


def test_no_decay_is_reported_when_the_score_rises_to_the_bound():
    # two groups, coordinate-wise: "v" keeps improving with longer half-lives, "l" peaks at x 0.5
    def score_many(cands):
        return [np.log2(c["hr"]) - (np.log2(c["crea"] / 12.0) + 1.0) ** 2 for c in cands]

    groups = {"hr": "vital", "crea": "lab"}
    best, scale, prof = optimise_half_lives({"hr": 4.0, "crea": 12.0}, groups.get, score_many,
                                            log2_bounds=(-4.0, 6.0))
    assert prof["vital"]["no_decay"] and scale["vital"] == pytest.approx(2.0 ** 6, rel=0.05)
    assert not prof["lab"]["no_decay"] and best["crea"] == pytest.approx(6.0, rel=0.05)
    with pytest.raises(ValueError, match="log2_bounds"):
        optimise_half_lives({"hr": 4.0}, groups.get, score_many, log2_bounds=(1.0, 1.0))


def test_golden_section_keeps_a_better_known_point():
    x, seen = golden_section(lambda x: -abs(x), -1.0, 1.0, tol=0.1, known={-1.0: -1.0, 0.0: 0.0, 1.0: -1.0})
    assert x == 0.0 and {-1.0, 0.0, 1.0} <= set(seen)


def test_sepsis_cpn_golden_search_round_trip(sampled_screens, tmp_path):
    m = SepsisCPN("physionet", half_life_search="golden", max_iter=4, half_life_em_iter=2).fit(sampled_screens)
    assert set(m.half_life_profile_) == set(m.half_life_scale_) == {"vital", "lab", "blood_gas"}
    for g, prof in m.half_life_profile_.items():
        assert max(prof["score"]) == prof["score"][prof["log2_multiplier"].index(np.log2(m.half_life_scale_[g]))]
    d = m.save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    assert meta["config"]["half_life_search"] == "golden"
    back = SepsisCPN.load(d)
    assert back.half_life_profile_ == m.half_life_profile_ and back.half_life_search == "golden"
    np.testing.assert_allclose(back.predict_proba(sampled_screens.head(200)),
                               m.predict_proba(sampled_screens.head(200)), atol=1e-12)
    with pytest.raises(ValueError, match="half_life_search"):
        SepsisCPN("physionet", half_life_search="brent").fit(sampled_screens)


def test_model_fitted_on_a_network_object_loads_back(sampled_screens, tmp_path):
    """The XMLBIF file may list the nodes in another order than the network object it was fitted on."""
    from cpn.structure import build_expert_network

    net = build_expert_network("physionet", drop=["department"])
    m = SepsisCPN(net, half_lives="prior", max_iter=3).fit(sampled_screens)
    back = SepsisCPN.load(m.save(tmp_path / "m"))
    assert back.features_ == m.features_
    np.testing.assert_allclose(back.predict_proba(sampled_screens.head(100)),
                               m.predict_proba(sampled_screens.head(100)), atol=1e-12)
