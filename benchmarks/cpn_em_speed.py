"""CPN EM speed: the E-step on the compiled kernel (:mod:`cpn.counts`) vs the einsum adjoint it
replaced, in the same run on the same rows.

Usage::

    python benchmarks/cpn_em_speed.py [--network physionet] [--n-rows 200000] [--iters 5]
    python benchmarks/cpn_em_speed.py --screens cohort/screens.parquet   # e.g. all of set A

The evidence is what ``SepsisCPN.fit`` gives EM (prior half-lives, the target as hard evidence):
from ``--screens`` (every row) or from ``--n-rows`` screens forward-sampled from the network.
Prints the time of one E-step (``engine.expected_counts``) on the old path (``backend="numpy"``,
the einsum adjoint in chunks of ``--batch-size`` rows) and on the kernel (one thread, and
``--threads``), their ratio, then ``fit_em`` for ``--iters`` iterations (``tol=0``) from the same
starting CPDs on both paths: times, ratio, and the largest CPD difference between the two fits.
Timings are the best of ``--repeat`` runs; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from cpn import SepsisCPN, kernel
from cpn.evidence import target_states
from cpn.learning import fit_em
from cpn.sampling import sample_screens
from cpn.structure import TARGET, TARGET_STATES, load_network


def em_evidence(network: str, screens: pd.DataFrame):
    """The engine (starting CPDs) and the evidence ``SepsisCPN.fit`` would run EM on."""
    m = SepsisCPN(network, half_lives="prior")
    m._prepare_network()
    m.cxr_prior_ = m._cxr_prior_from_sums(m._cxr_sums(screens))
    m.half_lives_ = m._initial_half_lives()
    ev, _ = m._evidence(screens)
    ev[TARGET] = np.eye(len(TARGET_STATES))[target_states(screens["onset_in_h"].to_numpy())]
    return m.engine_, ev


def best(fn, repeat):
    t_best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="physionet")
    ap.add_argument("--screens", default=None, help="screens parquet (default: sampled screens)")
    ap.add_argument("--n-rows", type=int, default=200_000, help="sampled screens (without --screens)")
    ap.add_argument("--iters", type=int, default=5, help="EM iterations of the timed fits (0: none)")
    ap.add_argument("--batch-size", type=int, default=2048, help="rows per chunk on the old path")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not kernel.available():
        raise SystemExit("this benchmark needs numba (the kernel)")

    if a.screens:
        screens = pd.read_parquet(a.screens)
        source = a.screens
    else:
        screens = sample_screens(load_network(a.network), a.n_rows, seed=a.seed)
        source = "sampled from the network"
    t = time.perf_counter()
    eng, ev = em_evidence(a.network, screens)
    n = len(screens)
    print(f"network {a.network}; {n:,} rows ({source}); evidence built in {time.perf_counter() - t:.1f} s; "
          f"cpus={os.cpu_count()}")
    start = {v: c.copy() for v, c in eng.cpds.items()}
    eng.expected_counts({v: x[:300] for v, x in ev.items()})  # JIT / cache load, program build

    t_old, (c_old, ll_old) = best(lambda: eng.expected_counts(ev, backend="numpy", batch_size=a.batch_size),
                                  a.repeat)
    t_1, _ = best(lambda: eng.expected_counts(ev, backend="numba", threads=1), a.repeat)
    t_new, (c_new, ll_new) = best(lambda: eng.expected_counts(ev, backend="numba", threads=a.threads), a.repeat)
    scale = {v: max(float(np.abs(c).sum()), 1.0) for v, c in c_old.items()}
    err = max(float(np.abs(c_new[v] - c_old[v]).max()) / scale[v] for v in c_old)
    print(f"E-step, old path (einsum adjoint, batch {a.batch_size}): {t_old:.2f} s = {t_old / n * 1e6:.2f} us/row")
    print(f"E-step, kernel, 1 thread: {t_1:.2f} s = {t_1 / n * 1e6:.2f} us/row; ratio {t_old / t_1:.1f}x")
    print(f"E-step, kernel, {a.threads} threads: {t_new:.2f} s = {t_new / n * 1e6:.2f} us/row; "
          f"ratio {t_old / t_new:.1f}x")
    print(f"max |counts kernel - old| / table total: {err:.1e}; loglik {ll_new:.6f} vs {ll_old:.6f}")

    if a.iters:
        fits = {}
        for backend in ("numpy", "numba"):
            eng.set_cpds(start)
            t = time.perf_counter()
            hist = fit_em(eng, ev, max_iter=a.iters, tol=0.0, batch_size=a.batch_size, backend=backend)
            fits[backend] = (time.perf_counter() - t, hist, {v: c.copy() for v, c in eng.cpds.items()})
        (t_o, h_o, p_o), (t_k, h_k, p_k) = fits["numpy"], fits["numba"]
        d = max(float(np.abs(p_k[v] - p_o[v]).max()) for v in p_o)
        print(f"fit_em, {a.iters} iterations on {n:,} rows: old {t_o:.1f} s, kernel {t_k:.1f} s; ratio "
              f"{t_o / t_k:.1f}x; max |CPD kernel - old| {d:.1e}; mean loglik {h_k[-1]:.6f} vs {h_o[-1]:.6f}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
