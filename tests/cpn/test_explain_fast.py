"""The batch-last fast plan (joint, cavity, Bayes factors) against the general einsum/adjoint path
and brute force, on random networks with the awkward cases it handles specially: NaN rows (also
partly NaN), hard evidence, leaves sharing a parent set, CPDs with zero entries and zero columns
(messages that are exactly 0, so the leave-one-out products cannot divide), tiny likelihoods
(products near underflow), the target as an evidence node, and nodes without any evidence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpn import kernel
from cpn.explain import bayes_factors
from cpn.inference import InferenceEngine, _leave_one_out

from .test_inference import brute_force_joint


def random_engine(rng, n_core, n_leaves, *, zeros=False, target_evidence=False):
    """A random DAG: ``n_core`` core nodes (up to 2 parents each), then ``n_leaves`` childless
    leaves on one or two core parents drawn from a few parent sets (so several leaves share one)."""
    names = [f"C{i}" for i in range(n_core)] + [f"L{i}" for i in range(n_leaves)]
    cards = {v: int(rng.integers(2, 4)) for v in names}
    parents = {}
    for i in range(n_core):
        k = min(i, int(rng.integers(0, 3)))
        parents[names[i]] = [str(p) for p in rng.choice(names[:i], size=k, replace=False)] if k else []
    sets = [[str(p) for p in rng.choice(names[:n_core], size=min(n_core, int(rng.integers(1, 3))),
                                         replace=False)] for _ in range(2)]
    for i in range(n_leaves):
        parents[names[n_core + i]] = list(sets[int(rng.integers(0, len(sets)))])
    cpds = {}
    for v in names:
        shape = [cards[v]] + [cards[p] for p in parents[v]]
        a = rng.dirichlet(np.ones(cards[v]) * 0.7, size=int(np.prod(shape[1:]))).T.reshape(shape)
        if zeros and v.startswith("L") and rng.random() < 0.7:
            a = np.where(rng.random(shape) < 0.3, 0.0, a)  # zero entries (columns renormalised)
            s = a.sum(axis=0, keepdims=True)
            a = np.where(s > 0, a / np.where(s > 0, s, 1.0), 0.0)  # an all-zero column stays 0
        cpds[v] = a
    target = names[int(rng.integers(0, n_core))]
    ev_nodes = [v for v in names if v != target and rng.random() < 0.85] or [names[-1]]
    if target_evidence:
        ev_nodes.append(target)
    return InferenceEngine(names, cards, parents, cpds, target, ev_nodes), names, cards, parents


def random_evidence(rng, eng, n, *, tiny=False):
    ev = {}
    for v in eng.evidence_nodes:
        if rng.random() < 0.15:
            continue  # no evidence for v at all
        k = eng.cards[v]
        x = rng.random((n, k))
        hard = rng.random(n) < 0.4
        x[hard] = np.eye(k)[rng.integers(0, k, hard.sum())]  # hard evidence (may hit a zero column)
        x[rng.random(n) < 0.25] = np.nan  # no evidence on these rows
        part = rng.random(n) < 0.1
        x[part, 0] = np.nan  # a partly NaN row also means no evidence
        if tiny and rng.random() < 0.5:
            x *= 1e-120  # products of such messages underflow: the division path must step aside
        layout = rng.integers(0, 3)
        if layout == 1:
            x = np.asfortranarray(x)
        elif layout == 2:  # a strided view into a wider array
            wide = np.full((n, 2 * k), -1.0)
            wide[:, ::2] = x
            x = wide[:, ::2]
        ev[v] = x
    if not ev:  # keep n rows
        v = eng.evidence_nodes[0]
        ev[v] = np.full((n, eng.cards[v]), np.nan)
    return ev


def _groups(eng, rng):
    t = eng.cards[eng.target]
    first = rng.random(t) < 0.5
    first[0], first[-1] = True, False
    return np.stack([first, ~first], axis=1).astype(float)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), n_core=st.integers(1, 5), n_leaves=st.integers(0, 6),
       zeros=st.booleans(), tiny=st.booleans(), target_evidence=st.booleans(),
       batch=st.sampled_from([1, 3, 7, 64]))
def test_fast_plan_matches_general_path(seed, n_core, n_leaves, zeros, tiny, target_evidence, batch):
    rng = np.random.default_rng(seed)
    eng, *_ = random_engine(rng, n_core, n_leaves, zeros=zeros, target_evidence=target_evidence)
    n = 13
    ev = random_evidence(rng, eng, n, tiny=tiny)
    groups = _groups(eng, rng)
    before = {v: x.copy() for v, x in ev.items()}
    z_ref = eng._joint_reference(ev)
    z = eng.joint(ev, batch_size=batch, backend="numpy")
    scale = np.abs(z_ref).max(axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    np.testing.assert_allclose(z / scale, z_ref / scale, rtol=0, atol=1e-12)
    zg_ref, cav_ref = eng._cavity_reference(ev, groups)
    zg, cav = eng.cavity(ev, groups, batch_size=batch)
    s = np.where(np.abs(zg_ref).max(axis=1, keepdims=True) > 0, np.abs(zg_ref).max(axis=1, keepdims=True), 1)
    np.testing.assert_allclose(zg / s, zg_ref / s, rtol=0, atol=1e-12)
    assert set(cav) == set(eng.evidence_nodes)
    for v in eng.evidence_nodes:
        c = np.where(np.abs(cav_ref[v]).max(axis=1, keepdims=True) > 0,
                     np.abs(cav_ref[v]).max(axis=1, keepdims=True), 1)
        np.testing.assert_allclose(cav[v] / c, cav_ref[v] / c, rtol=0, atol=1e-12, err_msg=v)
    bayes_factors(eng, ev, groups, batch_size=batch, backend="numpy")
    for v, x in ev.items():  # the evidence is read, never written
        np.testing.assert_array_equal(x, before[v])


@pytest.mark.parametrize("backend", [
    "numpy", pytest.param("numba", marks=pytest.mark.skipif(not kernel.available(), reason="no numba"))])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), zeros=st.booleans(), batch=st.sampled_from([1, 4, 50]))
@np.errstate(invalid="ignore")  # -inf - -inf where evidence is impossible (both sides NaN then)
def test_bayes_factors_match_brute_force(backend, seed, zeros, batch):
    rng = np.random.default_rng(seed)
    eng, names, cards, parents = random_engine(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                                               zeros=zeros)
    n = 5
    ev = random_evidence(rng, eng, n)
    groups = _groups(eng, rng)
    bf = bayes_factors(eng, ev, groups, batch_size=batch, backend=backend)
    target = names.index(eng.target)

    def log_odds(row):
        joint = brute_force_joint(names, cards, eng.cpds, parents, row)
        z = np.zeros(cards[eng.target])
        for conf, p in joint.items():
            z[conf[target]] += p
        g = z @ groups
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(g[0]) - np.log10(g[1]), g[0] / g.sum()

    prior, _ = log_odds({})
    np.testing.assert_allclose(bf["prior"], prior, rtol=0, atol=1e-12)  # NaN where both groups are impossible
    assert list(bf["alone"]) == [v for v in eng.evidence_nodes if v in ev]
    for r in range(n):
        row = {v: x[r] for v, x in ev.items()}
        full, post = log_odds(row)
        np.testing.assert_allclose(bf["posterior"][r], post, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(bf["total"][r], full - prior, rtol=0, atol=1e-9)
        for v, x in ev.items():
            if np.isnan(x[r]).any():
                assert np.isnan(bf["alone"][v][r]) and np.isnan(bf["in_context"][v][r])
                continue
            alone, _ = log_odds({v: x[r]})
            without, _ = log_odds({u: y for u, y in row.items() if u != v})
            np.testing.assert_allclose(bf["alone"][v][r], alone - prior, rtol=0, atol=1e-9)
            np.testing.assert_allclose(bf["in_context"][v][r], full - without, rtol=0, atol=1e-9)


def test_leave_one_out_products():
    rng = np.random.default_rng(0)
    m = rng.random((5, 3, 7))
    m[2, 1, 3] = 0.0
    out = _leave_one_out(m)
    for j in range(5):
        np.testing.assert_allclose(out[j], np.prod(np.delete(m, j, axis=0), axis=0), rtol=1e-15)


def test_zero_messages_take_the_exact_path():
    """A leaf whose hard evidence has probability 0 under some parent state: its message holds
    exact zeros, so the division path cannot be used; the cavities must still be exact."""
    cpds = {"T": np.array([0.3, 0.7]),
            "A": np.array([[1.0, 0.2], [0.0, 0.8]]),
            "B": np.array([[0.6, 0.1], [0.4, 0.9]])}
    eng = InferenceEngine(["T", "A", "B"], {"T": 2, "A": 2, "B": 2},
                          {"T": [], "A": ["T"], "B": ["T"]}, cpds, "T", ["A", "B"])
    ev = {"A": np.array([[0.0, 1.0], [1.0, 0.0]]), "B": np.array([[1.0, 0.0], [0.5, 1.0]])}
    groups = np.eye(2)
    zg, cav = eng.cavity(ev, groups)
    zg_ref, cav_ref = eng._cavity_reference(ev, groups)
    np.testing.assert_allclose(zg, zg_ref, rtol=1e-14)
    for v in ("A", "B"):
        np.testing.assert_allclose(cav[v], cav_ref[v], rtol=1e-14, atol=1e-300)
    # without evidence on A the cavity of B is the prior joint of the groups
    np.testing.assert_allclose(cav["A"][0], [0.3 * 0.6, 0.7 * 0.1], rtol=1e-14)


def test_cpd_change_rebuilds_the_plan():
    eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                          {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
    ev = {"B": np.array([[1.0, 0.0]])}
    before = eng.posterior(ev)
    eng.cpds["B"][0, 0] = 0.5  # in place, behind set_cpds' back
    eng.cpds["B"][1, 0] = 0.5
    after = eng.posterior(ev)
    np.testing.assert_allclose(after, eng._joint_reference(ev) / eng._joint_reference(ev).sum(1, keepdims=True))
    assert not np.allclose(before, after)
    eng.set_cpds({"A": np.array([.2, .8]), "B": np.array([[.9, .2], [.1, .8]])})
    np.testing.assert_allclose(eng.target_marginals()["B"].sum(axis=1), [.2, .8])


def test_invalid_evidence_is_rejected():
    eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                          {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
    with pytest.raises(ValueError, match="negative"):
        eng.posterior({"B": np.array([[0.5, -1.0]])})
    with pytest.raises(ValueError, match="infinite"):
        eng.posterior({"B": np.array([[np.inf, 1.0]])})
    # a row holding a NaN carries no evidence, whatever else it holds
    p = eng.posterior({"B": np.array([[np.nan, -1.0], [np.inf, np.nan]])})
    np.testing.assert_allclose(p, [[.5, .5], [.5, .5]])


def test_empty_and_single_row():
    eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                          {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
    groups = np.eye(2)
    assert eng.posterior({"B": np.zeros((0, 2))}).shape == (0, 2)
    bf = bayes_factors(eng, {"B": np.zeros((0, 2))}, groups)
    assert bf["posterior"].shape == (0,) and bf["alone"]["B"].shape == (0,)
    zg, cav = eng.cavity({}, groups)
    np.testing.assert_allclose(zg, [[.5, .5]])
    np.testing.assert_allclose(cav["B"], [[.5, .5]])
    # no evidence nodes at all: the joint is the prior, one row per... nothing
    bare = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                           {"A": np.array([.3, .7]), "B": np.array([[.9, .2], [.1, .8]])}, "B", [])
    np.testing.assert_allclose(bare.joint({}), bare._joint_reference({}))
    zg, cav = bare.cavity({}, groups)
    np.testing.assert_allclose(zg, bare._joint_reference({}) @ groups)
    assert cav == {}
