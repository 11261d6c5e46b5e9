"""The batched engine against pgmpy and against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgmpy.factors.discrete import TabularCPD
from pgmpy.inference import VariableElimination
from pgmpy.models import DiscreteBayesianNetwork

from cpn import kernel
from cpn.evidence import EVIDENCE_ROLES
from cpn.inference import InferenceEngine
from cpn.structure import node_roles


#: both inference paths: the compiled kernel where numba is installed, and the numpy plan
BACKENDS = ("numba", "numpy") if kernel.available() else ("numpy",)

def random_network(rng, n_nodes, max_parents=2):
    names = [f"X{i}" for i in range(n_nodes)]
    cards = {v: int(rng.integers(2, 4)) for v in names}
    par = {}
    for i, v in enumerate(names):
        k = min(i, int(rng.integers(0, max_parents + 1)))
        par[v] = [str(p) for p in rng.choice(names[:i], size=k, replace=False)] if k else []
    m = DiscreteBayesianNetwork()
    m.add_nodes_from(names)
    m.add_edges_from([(p, v) for v in names for p in par[v]])
    for v in names:
        ec = [cards[p] for p in par[v]]
        vals = rng.dirichlet(np.ones(cards[v]) * 0.7, size=int(np.prod(ec)) if ec else 1).T
        m.add_cpds(TabularCPD(v, cards[v], vals, evidence=par[v] or None, evidence_card=ec or None))
    return m, names, cards


def pgmpy_posterior(model, target, evidence_row):
    """Reference: a fresh model copy per query (pgmpy's virtual_evidence mutates the model)."""
    ve = [TabularCPD(v, len(x), [[float(a)] for a in x],
                     state_names={v: list(model.get_cpds(v).state_names[v])})
          for v, x in evidence_row.items() if not np.isnan(x).any()]
    q = VariableElimination(model.copy()).query([target], virtual_evidence=ve or None,
                                                show_progress=False)
    return np.asarray(q.values, dtype=float)


def assert_engine_matches_pgmpy(net, *, seed: int, missing=slice(None, None, 3), target: str = "sepsis"):
    """Two rows of random soft evidence on every evidence node of a shipped-style ``net`` (row 1 with
    the ``missing`` nodes blanked): the engine's posterior on every backend equals pgmpy's to 1e-9."""
    from cpn.evidence import EVIDENCE_ROLES
    from cpn.structure import node_roles

    ev_nodes = [v for v, r in node_roles(net).items() if r in EVIDENCE_ROLES]
    eng = InferenceEngine.from_pgmpy(net, target, ev_nodes)
    rng = np.random.default_rng(seed)
    ev = {v: rng.random((2, net.get_cardinality(v))) for v in ev_nodes}
    for v in ev_nodes[missing]:
        ev[v][1] = np.nan
    posts = [eng.posterior(ev, backend=b) for b in BACKENDS]
    for r in range(2):
        ref = pgmpy_posterior(net, target, {v: ev[v][r] for v in ev_nodes})
        for post in posts:
            np.testing.assert_allclose(post[r], ref, atol=1e-9, rtol=0)


def brute_force_joint(names, cards, cpds, parents, evidence_row):
    """Enumerate every configuration: P(X) * prod_i L_i(x_i)."""
    out = {}
    for conf in itertools.product(*[range(cards[v]) for v in names]):
        x = dict(zip(names, conf))
        p = 1.0
        for v in names:
            p *= cpds[v][(x[v], *[x[u] for u in parents[v]])]
        for v, lik in evidence_row.items():
            p *= 1.0 if np.isnan(lik).any() else lik[x[v]]
        out[conf] = p
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_nodes=st.integers(2, 7))
def test_engine_matches_pgmpy_on_random_networks(seed, n_nodes):
    rng = np.random.default_rng(seed)
    model, names, cards = random_network(rng, n_nodes)
    target = names[int(rng.integers(0, n_nodes))]
    ev_nodes = [v for v in names if rng.random() < 0.7] or [names[-1]]
    eng = InferenceEngine.from_pgmpy(model, target, ev_nodes)
    n = 3
    ev = {v: rng.random((n, cards[v])) for v in ev_nodes}
    for v in ev_nodes:
        if rng.random() < 0.3:
            ev[v][0] = np.nan  # row 0 without evidence for v
    posts = [eng.posterior(ev, backend=b) for b in BACKENDS]
    for r in range(n):
        ref = pgmpy_posterior(model, target, {v: ev[v][r] for v in ev_nodes})
        for post in posts:
            np.testing.assert_allclose(post[r], ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("net_name", ["physionet", "full"])
def test_engine_matches_pgmpy_on_shipped_networks(net_name, request):
    net = request.getfixturevalue(f"{net_name}_net")
    roles = node_roles(net)
    ev_nodes = [v for v, r in roles.items() if r in EVIDENCE_ROLES]
    eng = InferenceEngine.from_pgmpy(net, "sepsis", ev_nodes)
    rng = np.random.default_rng(7)
    n = 2
    ev = {v: rng.random((n, net.get_cardinality(v))) for v in ev_nodes}
    for v in ev_nodes[::3]:
        ev[v][1] = np.nan
    posts = [eng.posterior(ev, backend=b) for b in BACKENDS]
    for r in range(n):
        ref = pgmpy_posterior(net, "sepsis", {v: ev[v][r] for v in ev_nodes})
        for post in posts:
            np.testing.assert_allclose(post[r], ref, atol=1e-9, rtol=0)


def test_nan_row_equals_no_evidence(physionet_net):
    roles = node_roles(physionet_net)
    ev_nodes = [v for v, r in roles.items() if r in EVIDENCE_ROLES]
    eng = InferenceEngine.from_pgmpy(physionet_net, "sepsis", ev_nodes)
    nan = {v: np.full((1, physionet_net.get_cardinality(v)), np.nan) for v in ev_nodes}
    np.testing.assert_allclose(eng.posterior(nan), eng.posterior({}), atol=1e-12)
    prior = pgmpy_posterior(physionet_net, "sepsis", {})
    np.testing.assert_allclose(eng.posterior({})[0], prior, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_cavity_and_expected_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    model, names, cards = random_network(rng, 5)
    target = names[0]
    eng = InferenceEngine.from_pgmpy(model, target, names)
    parents = eng.parents
    n = 2
    ev = {v: rng.random((n, cards[v])) for v in names}
    ev[names[-1]][1] = np.nan
    groups = np.zeros((cards[target], 2))
    groups[0, 0] = 1
    groups[1:, 1] = 1
    zg, cav = eng.cavity(ev, groups)
    counts, ll = eng.expected_counts(ev)
    bf_counts = {v: np.zeros_like(eng.cpds[v]) for v in names}
    bf_ll = 0.0
    for r in range(n):
        row = {v: ev[v][r] for v in names}
        joint = brute_force_joint(names, cards, eng.cpds, parents, row)
        total = sum(joint.values())
        bf_ll += np.log(total)
        z = np.zeros(cards[target])
        for conf, p in joint.items():
            z[conf[0]] += p
            x = dict(zip(names, conf))
            for v in names:
                bf_counts[v][(x[v], *[x[u] for u in parents[v]])] += p / total
        np.testing.assert_allclose(zg[r], z @ groups, rtol=1e-10)
        for v in names:
            drop = dict(row)
            drop[v] = np.full(cards[v], np.nan)
            jd = brute_force_joint(names, cards, eng.cpds, parents, drop)
            zd = np.zeros(cards[target])
            for conf, p in jd.items():
                zd[conf[0]] += p
            np.testing.assert_allclose(cav[v][r], zd @ groups, rtol=1e-10)
    assert ll == pytest.approx(bf_ll, rel=1e-10)
    for v in names:
        np.testing.assert_allclose(counts[v], bf_counts[v], rtol=1e-9, atol=1e-12)


def test_bad_evidence_shape_and_node():
    eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                          {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
    with pytest.raises(ValueError, match="shape"):
        eng.posterior({"B": np.ones((2, 3))})
    with pytest.raises(ValueError, match="not evidence nodes"):
        eng.posterior({"A": np.ones((2, 2))})
    with pytest.raises(ValueError, match="shape"):
        InferenceEngine(["A"], {"A": 2}, {"A": []}, {"A": np.ones(3) / 3}, "A", [])
