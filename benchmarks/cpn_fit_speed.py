"""CPN training time: the default fit against the core network's EM-only fit, in the same run.

Usage::

    python benchmarks/cpn_fit_speed.py --screens cohort/screens.parquet   # e.g. all of set A
    python benchmarks/cpn_fit_speed.py [--n-rows 100000]                  # screens sampled from the network

Issue #13 asks for training on all of PhysioNet set A in under 2 minutes on 2 cores, the ratio
against today's EM measured in the same run. Fits, on every screen of ``--screens`` (or on
``--n-rows`` screens forward-sampled from the full-option network):

* ``core``: ``SepsisCPN(build_expert_network("physionet"), discriminative_iter=0)`` (the network
  shipped before issue 13's defaults: no derived or measurement-age leaves; learned half-lives, EM);
* ``full``: ``SepsisCPN()``, the default: the shipped PhysioNet network (derived leaves and the 14
  measurement-age leaves, ``cpn.structure.SHIPPED_OPTIONS["physionet"]``) and 40 discriminative steps.

Prints each fit's wall time (building the network included, as a user pays it), its phases --
reading the screens into evidence (:class:`cpn.evidence.EvidenceBuilder`: discretising, the
derived leaves' trends), the half-life search (its provisional EM, then the held-out likelihood of
every candidate), the final EM, the discriminative refinement -- and the ratio full / core,
each fit the best of ``--repeat`` runs. Set ``SEPSISCOPE_THREADS`` for the kernel's threads (default
every core); the load average is printed with the results, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import time

import numpy as np
import pandas as pd

import cpn.evidence as evidence_module
import cpn.model as model_module
from cpn import SepsisCPN, kernel
from cpn.sampling import sample_screens
from cpn.structure import build_expert_network, load_network

class PhaseTimer:
    """Seconds per phase of ``SepsisCPN.fit``, from wrappers around the functions each phase calls."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self._in_search = False
        self._saved = []

    def _wrap(self, owner, name, phase):
        fn = getattr(owner, name)
        self._saved.append((owner, name, fn))

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            key = phase(self) if callable(phase) else phase
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if key:
                    self.seconds[key] += time.perf_counter() - t

        setattr(owner, name, timed)

    def __enter__(self):
        self._wrap(evidence_module.EvidenceBuilder, "__init__", "evidence")
        self._wrap(evidence_module.EvidenceBuilder, "evidence",
                   lambda t: None if t._in_search else "evidence")
        self._wrap(model_module, "fit_em", lambda t: "half-life EM" if t._in_search else "final EM")
        self._wrap(model_module, "refine_discriminative", "discriminative")
        learn = model_module.SepsisCPN._learn_half_lives
        self._saved.append((model_module.SepsisCPN, "_learn_half_lives", learn))
        timer = self

        @functools.wraps(learn)
        def learn_timed(*args, **kwargs):
            timer._in_search = True
            t = time.perf_counter()
            try:
                return learn(*args, **kwargs)
            finally:
                timer._in_search = False
                timer.seconds["half-life search"] += time.perf_counter() - t

        model_module.SepsisCPN._learn_half_lives = learn_timed
        return self

    def __exit__(self, *exc):
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)


def timed_fit(make, screens, repeat):
    """Best of ``repeat`` fits: (wall seconds, phase seconds, fitted model)."""
    best = (np.inf, None, None)
    for _ in range(repeat):
        with PhaseTimer() as timer:
            t = time.perf_counter()
            m = make().fit(screens)
            wall = time.perf_counter() - t
        if wall < best[0]:
            best = (wall, dict(timer.seconds), m)
    return best


def report(name, wall, phases, m):
    search = phases.get("half-life search", 0.0)
    hl_em = phases.get("half-life EM", 0.0)
    parts = {"evidence": phases.get("evidence", 0.0), "half-life EM": hl_em,
             "half-life candidates (evidence + held-out likelihood)": search - hl_em,
             "final EM": phases.get("final EM", 0.0), "discriminative": phases.get("discriminative", 0.0)}
    parts["other (network, hashing, holdout)"] = wall - sum(parts.values()) + 0.0
    print(f"{name}: {wall:.1f} s on {m.n_train_rows_:,} screens (EM {len(m.em_history_)} iterations, "
          f"{len(m.discriminative_history_)} discriminative steps; half-life x {m.half_life_scale_})")
    for k, v in parts.items():
        print(f"    {k:55s} {v:7.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screens", default=None, help="screens parquet (default: sampled screens)")
    ap.add_argument("--n-rows", type=int, default=100_000, help="sampled screens (without --screens)")
    ap.add_argument("--discriminative", type=int, default=40, help="discriminative steps of the full fit")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-core", action="store_true", help="time the default fit only")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not kernel.available():
        raise SystemExit("this benchmark needs numba (the kernel)")

    def full():
        return SepsisCPN(discriminative_iter=a.discriminative)

    def core():
        return SepsisCPN(build_expert_network("physionet"), discriminative_iter=0)

    if a.screens:
        screens, source = pd.read_parquet(a.screens), a.screens
    else:
        screens = sample_screens(load_network("physionet"), a.n_rows, seed=a.seed)
        source = "sampled from the full-option network"
    threads = os.environ.get("SEPSISCOPE_THREADS") or f"{os.cpu_count()} (every core)"
    print(f"{len(screens):,} screens ({source}); kernel threads {threads}; "
          f"load average at the start {os.getloadavg()[0]:.2f}")
    SepsisCPN(max_iter=1, half_lives="prior", discriminative_iter=0).fit(screens.iloc[:2000])  # JIT / cache load, not timed

    t_full, ph_full, m_full = timed_fit(full, screens, a.repeat)
    report("default (shipped network with derived + measurement-age leaves, discriminative)", t_full, ph_full, m_full)
    if not a.skip_core:
        t_core, ph_core, m_core = timed_fit(core, screens, a.repeat)
        report("core network, EM only (the default before issue 13)", t_core, ph_core, m_core)
        print(f"ratio default / core EM only: {t_full / t_core:.2f}")
    print(f"default fit {t_full:.1f} s (target < 120 s on 2 cores)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
