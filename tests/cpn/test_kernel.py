"""The compiled kernel (cpn.kernel) against the numpy plan and the general einsum path: the same
joint and the same Bayes factors on random networks with every awkward case of
test_explain_fast (NaN rows, hard evidence, zero CPD entries and columns, tiny likelihoods, the
target as evidence, strided and Fortran-ordered evidence), on batches that span several tiles
and threads; the same errors for bad evidence; and the shipped network against pgmpy-checked
numbers of the numpy plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpn import kernel
from cpn.explain import bayes_factors
from cpn.inference import InferenceEngine

from .test_explain_fast import _groups, random_engine, random_evidence

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def _same(a, b, atol=1e-12):
    """Equal to ``atol`` relative to each row's largest magnitude, NaN / inf in the same places."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    fa, fb = np.isfinite(a), np.isfinite(b)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a[~fa], b[~fb])  # same NaN / +-inf
    if fa.any():
        np.testing.assert_allclose(a[fa], b[fb], rtol=0, atol=atol)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), n_core=st.integers(1, 6), n_leaves=st.integers(0, 7),
       zeros=st.booleans(), tiny=st.booleans(), target_evidence=st.booleans(),
       n=st.sampled_from([1, 5, 130, 1100]), threads=st.sampled_from([1, 2, 3]))
@np.errstate(invalid="ignore", divide="ignore")
def test_kernel_matches_numpy_plan(seed, n_core, n_leaves, zeros, tiny, target_evidence, n, threads):
    rng = np.random.default_rng(seed)
    eng, *_ = random_engine(rng, n_core, n_leaves, zeros=zeros, target_evidence=target_evidence)
    ev = random_evidence(rng, eng, n, tiny=tiny)
    groups = _groups(eng, rng)
    before = {v: x.copy() for v, x in ev.items()}
    z = eng.joint(ev, backend="numba", threads=threads)
    z_ref = eng.joint(ev, backend="numpy")
    scale = np.abs(z_ref).max(axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    np.testing.assert_allclose(z / scale, z_ref / scale, rtol=0, atol=1e-12)
    bf = bayes_factors(eng, ev, groups, backend="numba", threads=threads)
    ref = bayes_factors(eng, ev, groups, backend="numpy")
    _same(bf["prior"], ref["prior"])
    _same(bf["posterior"], ref["posterior"])
    _same(bf["total"], ref["total"], atol=1e-9)
    assert list(bf["alone"]) == list(ref["alone"])
    for v in ref["alone"]:
        _same(bf["alone"][v], ref["alone"][v], atol=1e-9)
        _same(bf["in_context"][v], ref["in_context"][v], atol=1e-9)
    for v, x in ev.items():  # the evidence is read in place, never written
        np.testing.assert_array_equal(x, before[v])


def _engine():
    return InferenceEngine(["A", "B", "C"], {"A": 2, "B": 2, "C": 3}, {"A": [], "B": ["A"], "C": ["A"]},
                           {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]]),
                            "C": np.array([[.2, .5], [.3, .3], [.5, .2]])}, "A", ["B", "C"])


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_rejects_bad_evidence_naming_the_node(threads):
    eng = _engine()
    n = 2000
    ok = np.full((n, 3), 0.5)
    for bad, word in ((-1.0, "negative"), (np.inf, "infinite"), (-np.inf, "negative"),
                      ((np.inf, -np.inf), "negative")):  # inf + -inf is NaN: must not pass as NaN
        x = np.full((n, 2), 0.5)
        x[1777, :] = bad if isinstance(bad, tuple) else (0.5, bad)  # second thread, a full tile
        with pytest.raises(ValueError, match=f"evidence for 'B' has {word} likelihoods"):
            bayes_factors(eng, {"B": x, "C": ok}, np.eye(2), backend="numba", threads=threads)
        with pytest.raises(ValueError, match=f"evidence for 'B' has {word} likelihoods"):
            eng.joint({"B": x[:1779], "C": ok[:1779]}, backend="numba", threads=threads)  # last tile
    # a row holding a NaN carries no evidence, whatever else it holds
    x = np.full((n, 2), 0.5)
    x[5] = [np.nan, -1.0]
    x[6] = [np.inf, np.nan]
    p = eng.posterior({"B": x, "C": ok}, backend="numba", threads=threads)
    np.testing.assert_allclose(p[5], eng.posterior({"C": ok[5:6]}, backend="numpy")[0])
    np.testing.assert_allclose(p[6], p[5])


def test_backend_argument_is_checked():
    eng = _engine()
    ev = {"B": np.array([[1.0, 0.0]])}
    with pytest.raises(ValueError, match="backend"):
        eng.joint(ev, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        bayes_factors(eng, ev, np.eye(2), backend="gpu")
    with pytest.raises(ValueError, match="2 target groups"):
        bayes_factors(eng, ev, np.array([[1.0, 0, 0], [0, 1.0, 0]]), backend="numba")
    # three groups: "auto" takes the numpy plan, which explains the first two
    three = bayes_factors(eng, ev, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert np.isfinite(three["total"]).all()


def test_kernel_on_the_shipped_network_matches_numpy_plan():
    from cpn.evidence import build_evidence, network_info
    from cpn.sampling import sample_screens
    from cpn.structure import SEPSIS_STATES, TARGET, TARGET_STATES, load_network

    for name in ("physionet", "full"):
        net = load_network(name)
        info = network_info(net)
        eng = InferenceEngine.from_pgmpy(net, TARGET, info.evidence_nodes)
        groups = np.array([[1.0, 0.0] if s in SEPSIS_STATES else [0.0, 1.0] for s in TARGET_STATES])
        ev, _ = build_evidence(sample_screens(net, 3000, seed=1), info, {})
        bf = bayes_factors(eng, ev, groups, backend="numba", threads=2)
        ref = bayes_factors(eng, ev, groups, backend="numpy")
        _same(bf["posterior"], ref["posterior"], atol=1e-13)
        for v in ref["alone"]:
            _same(bf["in_context"][v], ref["in_context"][v], atol=1e-10)
            _same(bf["alone"][v], ref["alone"][v], atol=1e-10)
        np.testing.assert_allclose(eng.posterior(ev, backend="numba"), eng.posterior(ev, backend="numpy"),
                                   rtol=0, atol=1e-13)


def test_program_is_rebuilt_when_cpds_change():
    eng = _engine()
    ev = {"B": np.array([[1.0, 0.0]]), "C": np.array([[0.0, 0.0, 1.0]])}
    before = bayes_factors(eng, ev, np.eye(2), backend="numba")["total"]
    eng.cpds["C"][:, 0] = [0.5, 0.3, 0.2]  # in place, behind set_cpds' back
    after = bayes_factors(eng, ev, np.eye(2), backend="numba")["total"]
    assert after != pytest.approx(before)
    np.testing.assert_allclose(after, bayes_factors(eng, ev, np.eye(2), backend="numpy")["total"])


def test_numpy_fallback_without_numba():
    """SEPSISCOPE_NO_NUMBA=1 stands for a machine without numba: the numpy plan answers, and the
    numba backend says what is missing."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from cpn import kernel\n"
        "from cpn.explain import bayes_factors\n"
        "from cpn.inference import InferenceEngine\n"
        "assert not kernel.available()\n"
        "eng = InferenceEngine(['T', 'B'], {'T': 2, 'B': 2}, {'T': [], 'B': ['T']},\n"
        "    {'T': np.array([.2, .8]), 'B': np.array([[.9, .3], [.1, .7]])}, 'T', ['B'])\n"
        "bf = bayes_factors(eng, {'B': np.array([[1.0, 0.0]])}, np.eye(2))\n"
        "print(round(float(bf['total'][0]), 4))\n"
        "try:\n"
        "    eng.joint({'B': np.array([[1.0, 0.0]])}, backend='numba')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n")
    env = dict(os.environ, SEPSISCOPE_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "0.4771"
    assert "needs numba" in lines[1]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_threads_work_in_a_forked_child():
    """The kernel's thread pool does not survive a fork; a child must make its own, not wait on
    threads it does not have (as a DataLoader or multiprocessing worker would)."""
    import os

    eng = _engine()
    ev = {"B": np.full((5000, 2), 0.5), "C": np.full((5000, 3), 0.2)}
    want = eng.posterior(ev, backend="numba", threads=2)  # the parent's pool now exists
    import signal
    import time

    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the threaded kernel answers, and correctly
        ok = False
        try:
            ok = np.allclose(eng.posterior(ev, backend="numba", threads=2), want)
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:  # waiting on threads it does not have
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the kernel hung in a forked child")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("ev_nodes", [["B", "B", "C"], ["B", "C", "C"], ["A", "A", "B"]])
def test_a_node_listed_twice_is_evidence_twice(ev_nodes):
    """Both backends read a node named twice among the evidence nodes as two evidence factors
    (found by review: the kernel's program once kept only the last row of a listed-twice leaf)."""
    eng = InferenceEngine(["A", "B", "C"], {"A": 2, "B": 2, "C": 3}, {"A": [], "B": ["A"], "C": ["A"]},
                          {"A": np.array([.3, .7]), "B": np.array([[.9, .2], [.1, .8]]),
                           "C": np.array([[.2, .5], [.3, .3], [.5, .2]])}, "A", ev_nodes)
    ev = {"A": np.array([[0.4, 1.0], [np.nan, np.nan]]), "B": np.array([[1.0, 0.0], [0.3, 1.0]]),
          "C": np.array([[0.0, 0.0, 1.0], [1.0, 0.5, 0.2]])}
    ev = {v: x for v, x in ev.items() if v in ev_nodes}
    ref = eng._joint_reference(ev)
    for backend in ("numba", "numpy"):
        np.testing.assert_allclose(eng.joint(ev, backend=backend), ref, rtol=1e-13)
    a = bayes_factors(eng, ev, np.eye(2), backend="numba")
    b = bayes_factors(eng, ev, np.eye(2), backend="numpy")
    for v in b["alone"]:
        _same(a["alone"][v], b["alone"][v])
        _same(a["in_context"][v], b["in_context"][v])
    _same(a["total"], b["total"])


def test_a_small_batch_in_a_fresh_process_does_not_load_the_kernel():
    """A one-shot ``sepsiscope explain`` must not pay about 1.5 s of CPU for numba and the compiled
    kernel: "auto" takes the numpy plan for a small batch until the kernel is loaded (warm_up, a
    large batch), and then the kernel for every batch. The numbers agree either way."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import numpy as np\n"
        "from cpn import kernel\n"
        "from cpn.explain import bayes_factors\n"
        "from cpn.inference import InferenceEngine\n"
        "eng = InferenceEngine(['T', 'B'], {'T': 2, 'B': 2}, {'T': [], 'B': ['T']},\n"
        "    {'T': np.array([.2, .8]), 'B': np.array([[.9, .3], [.1, .7]])}, 'T', ['B'])\n"
        "ev = {'B': np.array([[1.0, 0.0], [0.2, 0.9]])}\n"
        "a = bayes_factors(eng, ev, np.eye(2))['total']\n"
        "z = eng.joint(ev)\n"
        "print('numba' in sys.modules, 'cpn._kernel' in sys.modules, kernel.wanted('auto', 2))\n"
        "assert kernel.available() and kernel.loaded()\n"
        "print(kernel.wanted('auto', 2), kernel.wanted('numpy', 10**6), kernel.wanted('auto', None))\n"
        "b = bayes_factors(eng, ev, np.eye(2))['total']\n"
        "print(np.allclose(a, b, rtol=0, atol=1e-12), np.allclose(z, eng.joint(ev), rtol=1e-12, atol=0))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "True", "False", "True", "True", "True"]
    with pytest.raises(ValueError, match="backend must be"):
        kernel.wanted("fast", 1)
