"""Discriminative refinement of the CPDs (issue 13 item 2): exact gradient, proper CPDs, off by default."""

from __future__ import annotations

import numpy as np
import pytest

from cpn import SepsisCPN
from cpn.inference import InferenceEngine
from cpn.learning import binary_target_evidence, refine_discriminative

_G = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def _toy(seed=0):
    rng = np.random.default_rng(seed)

    def cpd(k, *pa):
        a = rng.random((k, *pa)) + 0.1
        return a / a.sum(axis=0, keepdims=True)

    cards = {"T": 3, "L": 2, "A": 3, "B": 2}
    parents = {"T": [], "L": ["T"], "A": ["L"], "B": ["L", "T"]}
    cpds = {"T": cpd(3), "L": cpd(2, 3), "A": cpd(3, 2), "B": cpd(2, 2, 3)}
    eng = InferenceEngine(list(cards), cards, parents, cpds, "T", ["T", "A", "B"])
    n = 40
    ev = {"A": np.eye(3)[rng.integers(0, 3, n)], "B": np.eye(2)[rng.integers(0, 2, n)]}
    return eng, cpds, ev, rng.integers(0, 2, n)


def _cll(eng, cpds, ev, y):
    eng.set_cpds(cpds)
    p = eng.posterior(ev) @ _G[:, 0]
    return float(np.sum(np.where(y == 1, np.log(p), np.log1p(-p))))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_count_difference_is_the_exact_gradient(backend):
    # d CLL / d eta = E[counts | E, y] - E[counts | E] - theta * column sum: against finite differences
    eng, cpds, ev, y = _toy()
    c1, _ = eng.expected_counts({**ev, "T": binary_target_evidence(_G, y)}, backend=backend)
    c0, _ = eng.expected_counts(ev, backend=backend)
    for v in cpds:
        d = c1[v] - c0[v]
        grad = d - cpds[v] * d.sum(axis=0, keepdims=True)
        eta = np.log(cpds[v])
        num = np.zeros_like(eta)
        for idx in np.ndindex(eta.shape):
            e = eta.copy()
            e[idx] += 1e-6
            moved = np.exp(e) / np.exp(e).sum(axis=0, keepdims=True)
            num[idx] = (_cll(eng, {**cpds, v: moved}, ev, y) - _cll(eng, cpds, ev, y)) / 1e-6
        np.testing.assert_allclose(grad, num, atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_refinement_raises_the_conditional_likelihood_and_keeps_proper_cpds(optimizer):
    eng, cpds, ev, y = _toy(1)
    before = _cll(eng, cpds, ev, y)
    hist = refine_discriminative(eng, ev, binary_target_evidence(_G, y), target="T", max_iter=30,
                                 learning_rate=0.05 if optimizer == "adam" else 0.5, l2=0.0, optimizer=optimizer)
    after = _cll(eng, eng.cpds, ev, y)
    assert after > before + 0.5
    assert hist[-1]["cll"] > hist[0]["cll"]
    for v, c in eng.cpds.items():
        np.testing.assert_allclose(c.sum(axis=0), 1.0)
        assert (c > 0).all()


def test_the_l2_pull_keeps_the_cpds_nearer_the_start():
    def distance(l2):
        eng, cpds, ev, y = _toy(2)
        refine_discriminative(eng, ev, binary_target_evidence(_G, y), target="T", max_iter=20, l2=l2,
                              learning_rate=0.2, optimizer="gd")
        return sum(float(np.abs(np.log(eng.cpds[v]) - np.log(cpds[v])).sum()) for v in cpds)

    free, pulled = distance(0.0), distance(0.2)
    assert free > 0.5
    assert pulled < 0.8 * free


def test_early_stopping_keeps_the_best_cpds():
    eng, cpds, ev, y = _toy(3)
    scores = iter([0.0, 1.0, 0.5, 0.4, 0.3])  # start, then the best after step 1
    kept = {}

    def val_score(e):
        s = next(scores)
        if s == 1.0:
            kept.update({v: c.copy() for v, c in e.cpds.items()})
        return s

    hist = refine_discriminative(eng, ev, binary_target_evidence(_G, y), target="T", max_iter=10,
                                 val_score=val_score, patience=3, learning_rate=0.05, optimizer="adam")
    assert len(hist) == 4
    for v in cpds:
        np.testing.assert_array_equal(eng.cpds[v], kept[v])


def test_sepsiscpn_refines_by_default_every_step_and_zero_turns_it_off(sampled_screens):
    base = SepsisCPN(half_lives="prior", max_iter=3, discriminative_iter=0).fit(sampled_screens)
    assert base.discriminative_history_ == []
    on = SepsisCPN(half_lives="prior", max_iter=3).fit(sampled_screens)
    assert on.get_params()["discriminative_iter"] == 40 and not on.get_params()["discriminative_early_stopping"]
    hist = on.discriminative_history_
    assert len(hist) == 40 and "val" not in hist[0]  # no early stopping: every step, no held-out score
    assert hist[-1]["cll"] > hist[0]["cll"]
    assert np.abs(on.predict_proba(sampled_screens) - base.predict_proba(sampled_screens)).max() > 1e-3
    es = SepsisCPN(half_lives="prior", max_iter=3, discriminative_iter=4, discriminative_early_stopping=True)
    es.fit(sampled_screens)
    assert 1 <= len(es.discriminative_history_) <= 4 and "val" in es.discriminative_history_[0]


def test_the_l2_pull_is_a_prior_on_the_summed_likelihood(sampled_screens, monkeypatch):
    # a prior of fixed strength: the pull per screen falls as the training set grows, so a small
    # cohort stays nearer EM's CPDs (with 1e-4 per screen whatever the size, 160 synthetic stays lost
    # the CXR findings' Bayes factors, tests/cpn/test_integration.py); 78.4 is 1e-4 on all of set A
    import cpn.model

    seen = []

    def record(*args, l2, **kw):
        seen.append(l2)
        return []

    monkeypatch.setattr(cpn.model, "refine_discriminative", record)
    half = sampled_screens.iloc[: len(sampled_screens) // 2]
    for s in (sampled_screens, half):
        SepsisCPN(half_lives="prior", max_iter=1, discriminative_iter=1).fit(s)
    assert seen == [pytest.approx(78.4 / len(sampled_screens)), pytest.approx(78.4 / len(half))]
    assert SepsisCPN()._l2_per_row(783_819) == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_discriminative_counts_are_the_two_e_steps_in_one_pass(backend):
    # one forward pass (Z keeps the target) and one adjoint seeded w T_t / P(T, E) - w / P(E) per
    # target state: the difference of the two E-steps, weights and rows without target evidence included
    eng, cpds, ev, y = _toy(3)
    t = binary_target_evidence(_G, y)
    t[5] = np.nan  # no target evidence: this row adds nothing to either
    w = np.linspace(0.5, 2.0, len(y))
    c1, l1 = eng.expected_counts({**ev, "T": t}, weights=w, backend="numpy")
    c0, l0 = eng.expected_counts(ev, weights=w, backend="numpy")
    d, cll = eng.discriminative_counts(ev, t, weights=w, backend=backend)
    assert cll == pytest.approx(l1 - l0, rel=1e-12)
    for v in cpds:
        np.testing.assert_allclose(d[v], c1[v] - c0[v], atol=1e-12)
    with pytest.raises(ValueError, match="target"):
        eng.discriminative_counts({**ev, "T": t}, t, backend=backend)
