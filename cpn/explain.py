"""Bayes-factor explanations (SepsisFinder's definition), batched.

For evidence ``E'`` the Bayes factor is ``B(E') = odds(sepsis | E') / odds(sepsis)``, where
"sepsis" is onset within 48 h (the target states in ``SEPSIS_STATES``). Per screen and evidence
item ``i`` we report ``log10 B({i})`` (the item alone) and the in-context
``log10 B(E) / B(E without i)``, plus ``log10 B(E)`` for the whole screen.

``B({i})`` needs only the prior joint ``P(target, X_i)`` (computed once); the in-context factors
come from one adjoint sweep of the engine (as in ``InferenceEngine.cavity``), not one inference per
item. Where numba is installed, the compiled kernel (:mod:`cpn.kernel`) computes the forward pass,
the adjoint and both sums of every item in one term program per tile of screens; otherwise the
engine's batch-last numpy plan does it chunk by chunk, the joint ``L_i @ P(X_i, group)`` of each
item riding along in the matmul that forms its message. Both give the same numbers.

Examples
--------
>>> import numpy as np
>>> from cpn.inference import InferenceEngine
>>> eng = InferenceEngine(["T", "B"], {"T": 2, "B": 2}, {"T": [], "B": ["T"]},
...     {"T": np.array([.2, .8]), "B": np.array([[.9, .3], [.1, .7]])}, "T", ["B"])
>>> bf = bayes_factors(eng, {"B": np.array([[1.0, 0.0]])}, np.array([[1, 0], [0, 1]]))
>>> round(float(bf["total"][0]), 4), round(float(bf["alone"]["B"][0]), 4)
(0.4771, 0.4771)
"""

from __future__ import annotations

import numpy as np

from . import kernel

__all__ = ["bayes_factors"]


def _log10_odds(z):
    with np.errstate(divide="ignore"):
        return np.log10(z[..., 0]) - np.log10(z[..., 1])


def bayes_factors(engine, evidence: dict, groups, *, nodes=None, batch_size: int = 2048,
                  backend: str = "auto", threads: int | None = None):
    """Batched log10 Bayes factors.

    Parameters
    ----------
    engine : InferenceEngine
    evidence : dict node -> (n, k) likelihoods (NaN rows = no evidence)
    groups : ndarray (card[target], 2)
        Column 0 marks the "sepsis" target states, column 1 the others.
    nodes : list of str, optional
        Evidence nodes to explain (default: all evidence nodes with evidence given).
    batch_size : int
        Rows per chunk of the numpy plan.
    backend : {"auto", "numba", "numpy"}
        The compiled kernel (:mod:`cpn.kernel`) or the numpy plan; "auto" takes the kernel where
        numba is installed and ``groups`` has 2 columns, except for a small batch while the kernel
        is not loaded yet (:func:`cpn.kernel.wanted`). Both give the same numbers (to ~1e-15).
    threads : int, optional
        Threads of the kernel (default: ``SEPSISCOPE_THREADS`` or every core).

    Returns
    -------
    dict with ``prior`` (log10 prior odds), ``posterior`` ((n,) P(sepsis | E)), ``total``
    ((n,) log10 B(E)), ``alone`` and ``in_context`` (dict node -> (n,) arrays; NaN where the row
    has no evidence for that node).
    """
    groups = np.asarray(groups, dtype=float)
    nodes = [v for v in (nodes or engine.evidence_nodes) if v in evidence]
    marg = engine.target_marginals()
    joint_prior = next(iter(marg.values())).sum(axis=1) if marg else None
    prior = float(_log10_odds(joint_prior @ groups))
    ev, n = engine._check_evidence(evidence)
    if groups.ndim != 2 or groups.shape[0] != engine.cards[engine.target] or groups.shape[1] < 2:
        raise ValueError(f"groups must have shape ({engine.cards[engine.target]}, 2), got {groups.shape}")
    use_kernel = engine._use_kernel(backend, n)  # (checks the backend's name)
    if use_kernel and groups.shape[1] != 2:
        if backend == "numba":
            raise ValueError(f"backend='numba' explains 2 target groups, got {groups.shape[1]}")
        use_kernel = False
    with np.errstate(over="ignore"):
        prior_inv = float(np.power(10.0, -prior))  # 1 / prior odds (0 or inf when out of range)
    scale_ok = bool(np.isfinite(prior_inv) and prior_inv > 0)
    if use_kernel:
        prog = engine._program(groups)
        zg = np.empty((2, n))
        alone, ctx = np.empty((prog.n_rows, n)), np.empty((prog.n_rows, n))
        kernel.run_kernel(prog, ev, n, mode=1, z_out=zg, ctx_out=ctx, alone_out=alone,
                          alone_scale=prior_inv if scale_ok else 1.0,
                          alone_shift=0.0 if scale_ok else prior, log10=True, threads=threads)
        with np.errstate(divide="ignore", invalid="ignore"):
            posterior = zg[0] / (zg[0] + zg[1])
            total = np.log10(zg[0]) - np.log10(zg[1]) - prior
        rows = prog.rows
    else:
        posterior, total, alone, ctx, rows = _numpy_plan(engine, ev, n, groups, marg, prior,
                                                         prior_inv, scale_ok, batch_size)
    out = {"prior": prior, "posterior": posterior, "total": total, "alone": {}, "in_context": {}}
    for v in nodes:
        out["alone"][v] = alone[rows[v]]
        out["in_context"][v] = ctx[rows[v]]
    return out


def _numpy_plan(engine, ev, n, groups, marg, prior, prior_inv, scale_ok, batch_size):
    """:func:`bayes_factors` on the numpy plan (chunk by chunk, batch-last arrays)."""
    plan = engine._fast_plan()
    # P(X_i = x, group): B({i}) of a likelihood L is odds(L @ J_i) / prior odds
    jmat = {v: marg[v].T @ groups for v in engine.evidence_nodes}
    ext = plan.alone_mats(jmat)
    g = groups.shape[1]
    posterior, total = np.empty(n), np.empty(n)
    # per evidence node (in the plan's row order) and screen
    alone, ctx = np.empty((plan.n_rows, n)), np.empty((plan.n_rows, n))
    size = max(1, min(batch_size, n))
    zg, cav, aj = np.empty((g, size)), np.empty((g, plan.n_rows, size)), np.empty((g, plan.n_rows, size))
    nan, buf = np.empty((plan.n_rows, size)), np.empty((plan.n_rows, size))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # one pass per chunk of rows: posterior, total, the alone and the in-context factors; each
        # output is written once (ratios built in a chunk buffer, the log10 writes the output)
        for a in range(0, n, size):
            b = min(n, a + size)
            m = b - a
            plan.cavity(ev, a, b, groups, zg[:, :m], cav[:, :, :m], alone=jmat, ext=ext,
                        aj_out=aj[:, :, :m], nan_out=nan[:, :m])
            z0, z1 = zg[0, :m], zg[1, :m]
            np.divide(z0, zg[:, :m].sum(axis=0), out=posterior[a:b])
            np.subtract(np.log10(z0) - np.log10(z1), prior, out=total[a:b])
            # log10 B(E) / B(E without i) = log10 odds(E) / odds(E without i); NaN where the row
            # has no evidence for the node (`nan`; `aj` holds those NaN already)
            r = buf[:, :m]
            np.divide(cav[1, :, :m], cav[0, :, :m], out=r)
            r *= z0 / z1
            r += nan[:, :m]
            np.log10(r, out=ctx[:, a:b])
            # log10 B({i}) = log10 odds({i}) / prior odds
            np.divide(aj[0, :, :m], aj[1, :, :m], out=r)
            if scale_ok:
                r *= prior_inv
                np.log10(r, out=alone[:, a:b])
            else:  # prior odds beyond the float range
                np.subtract(np.log10(r, out=r), prior, out=alone[:, a:b])
    return posterior, total, alone, ctx, plan.rows
