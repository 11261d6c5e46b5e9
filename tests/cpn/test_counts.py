"""The E-step on the compiled kernel (cpn.counts) against the einsum adjoint it replaced: the same
expected counts and log-likelihood on random networks with every awkward case of the kernel tests
(NaN rows, hard evidence, zero CPD entries and columns, the target as evidence, strided and
Fortran-ordered evidence, weights, batches over several tiles and threads), on the shipped
networks, the family posteriors of pgmpy, and the same CPDs after EM; the same errors for bad
evidence."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpn import kernel
from cpn.evidence import build_evidence, network_info, target_states
from cpn.inference import InferenceEngine
from cpn.learning import fit_em
from cpn.sampling import sample_screens
from cpn.structure import TARGET, TARGET_STATES, load_network

from .test_explain_fast import random_engine, random_evidence

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def _same_counts(got, ref, rtol=1e-9):
    """Counts equal to ``rtol`` relative to each table's total (cells of a table share a scale)."""
    assert set(got) == set(ref)
    for v in ref:
        assert got[v].shape == ref[v].shape, v
        scale = max(float(np.abs(ref[v]).sum()), 1e-300)
        np.testing.assert_allclose(got[v] / scale, ref[v] / scale, rtol=0, atol=rtol, err_msg=v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), n_core=st.integers(1, 6), n_leaves=st.integers(0, 7),
       zeros=st.booleans(), target_evidence=st.booleans(), weighted=st.booleans(),
       n=st.sampled_from([1, 5, 130, 1100]), threads=st.sampled_from([1, 2, 3]))
def test_kernel_counts_match_reference(seed, n_core, n_leaves, zeros, target_evidence, weighted, n,
                                       threads):
    rng = np.random.default_rng(seed)
    eng, *_ = random_engine(rng, n_core, n_leaves, zeros=zeros, target_evidence=target_evidence)
    ev = random_evidence(rng, eng, n)
    w = rng.random(n) * 3 if weighted else None
    before = {v: x.copy() for v, x in ev.items()}
    ref, ll_ref = eng.expected_counts(ev, weights=w, backend="numpy")
    got, ll = eng.expected_counts(ev, weights=w, backend="numba", threads=threads)
    _same_counts(got, ref)
    assert ll == pytest.approx(ll_ref, rel=1e-9, abs=1e-9)
    for v, x in ev.items():  # the evidence is read in place, never written
        np.testing.assert_array_equal(x, before[v])


@pytest.mark.parametrize("net_name", ["physionet", "full"])
def test_kernel_counts_on_shipped_networks(net_name):
    """Sampled screens with their time-decayed evidence and the target as hard evidence, as EM
    sees them, over several tiles and both thread counts."""
    net = load_network(net_name)
    info = network_info(net)
    eng = InferenceEngine.from_pgmpy(net, TARGET, info.evidence_nodes + [TARGET])
    screens = sample_screens(net, 3000, seed=5)
    ev, _ = build_evidence(screens, info, {})
    ev[TARGET] = np.eye(len(TARGET_STATES))[target_states(screens["onset_in_h"].to_numpy())]
    ref, ll_ref = eng.expected_counts(ev, backend="numpy")
    assert all(np.isfinite(c).all() for c in ref.values())
    for threads in (1, 2):
        got, ll = eng.expected_counts(ev, backend="numba", threads=threads)
        _same_counts(got, ref)
        assert ll == pytest.approx(ll_ref, rel=1e-12)
    # every family's counts sum to the number of rows (each row's posterior sums to 1)
    for v in eng.nodes:
        assert got[v].sum() == pytest.approx(3000, rel=1e-12), v


def test_em_on_the_kernel_gives_the_reference_cpds():
    """Several EM iterations on each path: the same CPDs and log-likelihood history to ~1e-9."""
    net = load_network("physionet")
    info = network_info(net)
    screens = sample_screens(net, 2000, seed=11)
    ev, _ = build_evidence(screens, info, {})
    ev[TARGET] = np.eye(len(TARGET_STATES))[target_states(screens["onset_in_h"].to_numpy())]
    fits = {}
    for backend in ("numpy", "numba"):
        eng = InferenceEngine.from_pgmpy(net, TARGET, info.evidence_nodes + [TARGET])
        hist = fit_em(eng, ev, max_iter=5, tol=0.0, backend=backend)
        fits[backend] = (hist, eng.cpds)
    (h_ref, c_ref), (h, c) = fits["numpy"], fits["numba"]
    np.testing.assert_allclose(h, h_ref, rtol=1e-10)
    moved = 0
    for v in c_ref:
        np.testing.assert_allclose(c[v], c_ref[v], rtol=0, atol=1e-9, err_msg=v)
        moved += not np.allclose(c_ref[v], net.get_cpds(v).values.reshape(c_ref[v].shape), atol=1e-3)
    assert moved > 10  # EM did move the CPDs: the comparison is not of two starting points


def test_zero_probability_rows_are_skipped_alike(caplog):
    """Hard evidence that the CPDs forbid: skipped (with a warning) by both paths; weights count."""
    eng = InferenceEngine(["A", "B", "C"], {"A": 2, "B": 2, "C": 2}, {"A": [], "B": ["A"], "C": ["A"]},
                          {"A": np.array([.3, .7]), "B": np.array([[1.0, .2], [0.0, .8]]),
                           "C": np.array([[1.0, .4], [0.0, .6]])}, "A", ["A", "B", "C"])
    ev = {"A": np.eye(2)[[0, 0, 1, 1] * 40], "B": np.eye(2)[[1, 0, 1, 0] * 40],
          "C": np.array([[np.nan, np.nan], [.5, 1.], [1., 1.], [0., 1.]] * 40)}
    w = np.linspace(0.5, 2.0, 160)
    ref, ll_ref = eng.expected_counts(ev, weights=w, backend="numpy")
    with caplog.at_level(logging.WARNING, logger="cpn.inference"):
        got, ll = eng.expected_counts(ev, weights=w, backend="numba", threads=2)
    assert "40 row(s) with zero-probability evidence skipped" in caplog.text
    _same_counts(got, ref, rtol=1e-12)
    assert ll == pytest.approx(ll_ref, rel=1e-12)
    assert got["A"].sum() == pytest.approx(w.sum() - w[::4].sum(), rel=1e-12)


@pytest.mark.parametrize("bad, message", [(-0.5, "'B' has negative"), (np.inf, "'B' has infinite")])
def test_bad_evidence_is_rejected_naming_the_node(bad, message):
    eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
                          {"A": np.array([.3, .7]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
    x = np.ones((300, 2))
    x[250, 1] = bad
    with pytest.raises(ValueError, match=message):
        eng.expected_counts({"B": x}, backend="numba", threads=2)
    x[250, 0] = np.nan  # a row holding a NaN carries no evidence, whatever else it holds
    got, _ = eng.expected_counts({"B": x}, backend="numba")
    _same_counts(got, eng.expected_counts({"B": x}, backend="numpy")[0])
    with pytest.raises(ValueError, match="weights must have shape"):
        eng.expected_counts({"B": x}, weights=np.ones(3))


def test_the_counts_program_follows_the_cpds():
    """The program's structure is built once; its coefficients come from the CPDs of each call."""
    net = load_network("physionet")
    info = network_info(net)
    eng = InferenceEngine.from_pgmpy(net, TARGET, info.evidence_nodes)
    ev, _ = build_evidence(sample_screens(net, 300, seed=2), info, {})
    eng.expected_counts(ev)
    prog = eng._counts_program
    rng = np.random.default_rng(0)
    new = {}
    for v, a in eng.cpds.items():
        b = a * rng.random(a.shape)
        new[v] = b / b.sum(axis=0, keepdims=True)
    eng.set_cpds(new)
    got, ll = eng.expected_counts(ev)
    assert eng._counts_program is prog
    ref, ll_ref = eng.expected_counts(ev, backend="numpy")
    _same_counts(got, ref)
    assert ll == pytest.approx(ll_ref, rel=1e-12)


def test_counts_of_constant_tables_reach_their_cpds():
    """Where only CPDs meet (A and B above the target carry no evidence) the plan multiplies them
    into a constant table once; its counts are passed down to P(A) and P(B | A)."""
    rng = np.random.default_rng(4)
    cards = {"A": 3, "B": 2, "T": 3, "E": 2, "F": 3}
    parents = {"A": [], "B": ["A"], "T": ["B"], "E": ["T"], "F": ["T", "B"]}
    cpds = {}
    for v, ps in parents.items():
        a = rng.random([cards[v]] + [cards[p] for p in ps])
        cpds[v] = a / a.sum(axis=0, keepdims=True)
    eng = InferenceEngine(list(cards), cards, parents, cpds, "T", ["E", "F", "T"])
    from cpn.counts import CountsProgram

    assert CountsProgram(eng).const_steps  # the case under test
    ev = {"E": rng.random((500, 2)), "F": rng.random((500, 3)), "T": np.eye(3)[rng.integers(0, 3, 500)]}
    ev["F"][::3] = np.nan
    ref, ll_ref = eng.expected_counts(ev, backend="numpy")
    got, ll = eng.expected_counts(ev, backend="numba")
    _same_counts(got, ref)
    assert ll == pytest.approx(ll_ref, rel=1e-12)


@pytest.mark.parametrize("net_name", ["physionet", "full"])
def test_kernel_family_posteriors_match_pgmpy(net_name, request):
    """One screen's counts are its family posteriors P(X_v, Pa_v | E): against pgmpy's
    VariableElimination with the same soft evidence (a fresh model copy per query)."""
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.inference import VariableElimination

    net = request.getfixturevalue(f"{net_name}_net")
    info = network_info(net)
    eng = InferenceEngine.from_pgmpy(net, TARGET, info.evidence_nodes)
    rng = np.random.default_rng(3)
    row = {v: rng.random(eng.cards[v]) for v in info.evidence_nodes[::2]}
    counts, ll = eng.expected_counts({v: x[None] for v, x in row.items()}, backend="numba")
    names = {v: list(net.get_cpds(v).state_names[v]) for v in net.nodes()}
    latent = [v for v in eng.nodes if v not in info.evidence_nodes]
    checked = 0
    for v in latent + info.evidence_nodes[:4]:
        ve = [TabularCPD(u, len(x), [[float(a)] for a in x], state_names={u: names[u]}) for u, x in row.items()]
        fam = [v, *eng.parents[v]]
        q = VariableElimination(net.copy()).query(fam, virtual_evidence=ve, show_progress=False)
        ref = np.transpose(np.asarray(q.values, dtype=float), [q.variables.index(u) for u in fam])
        np.testing.assert_allclose(counts[v], ref, rtol=0, atol=1e-9, err_msg=v)
        checked += 1
    assert checked >= 8 and len(latent) >= 4


def test_em_without_numba_runs_on_the_reference():
    """SEPSISCOPE_NO_NUMBA=1 stands for a machine without numba: EM's E-step takes the einsum
    adjoint, with the same counts."""
    import os
    import subprocess
    import sys

    code = (
        "import json\n"
        "import numpy as np\n"
        "from cpn import kernel\n"
        "from cpn.inference import InferenceEngine\n"
        "assert not kernel.available()\n"
        "eng = InferenceEngine(['T', 'B'], {'T': 2, 'B': 2}, {'T': [], 'B': ['T']},\n"
        "    {'T': np.array([.2, .8]), 'B': np.array([[.9, .3], [.1, .7]])}, 'T', ['B'])\n"
        "c, ll = eng.expected_counts({'B': np.array([[1.0, 0.0], [0.2, 1.0]])})\n"
        "print(json.dumps([c['T'].tolist(), ll]))\n")
    env = dict(os.environ, SEPSISCOPE_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    eng = InferenceEngine(["T", "B"], {"T": 2, "B": 2}, {"T": [], "B": ["T"]},
                          {"T": np.array([.2, .8]), "B": np.array([[.9, .3], [.1, .7]])}, "T", ["B"])
    c, ll = eng.expected_counts({"B": np.array([[1.0, 0.0], [0.2, 1.0]])}, backend="numba")
    got_c, got_ll = json.loads(out.stdout)
    np.testing.assert_allclose(got_c, c["T"], rtol=1e-12)
    assert float(got_ll) == pytest.approx(ll, rel=1e-12)
