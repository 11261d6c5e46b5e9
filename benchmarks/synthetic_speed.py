"""How fast the synthetic cohort generates (target: 5,000 stays in under 30 s).

Usage::

    .venv/bin/python benchmarks/synthetic_speed.py [--n 5000] [--seed 0] [--repeat 3]

Prints the best wall time of ``generate_cohort`` over the repeats, rows produced, the ratio to
the 30 s target, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import time

import psutil

from ehr.synthetic import generate_cohort

TARGET_S = 30.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cohort = generate_cohort(args.n, args.seed)
        best = min(best, time.perf_counter() - t0)
    rss = psutil.Process().memory_info().rss / 2**20
    print(f"generate_cohort({args.n}, seed={args.seed}): best of {args.repeat}: {best:.2f} s "
          f"({best / TARGET_S:.2f} x the {TARGET_S:.0f} s target); "
          f"{len(cohort.events):,} events, {len(cohort.stays):,} stays, {len(cohort.cxr):,} CXR studies; "
          f"RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
