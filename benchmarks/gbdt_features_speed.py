"""Time gbdt feature building on a set-A-sized screens table (target: < 30 s for 790k screens).

Uses the real PhysioNet 2019 set A screens when the builder and data exist (or ``--screens
FILE.parquet``), else a synthetic 790k-row frame with 40 concepts. Prints seconds and the ratio
to the 30 s budget.

    nice -n 10 .venv/bin/python benchmarks/gbdt_features_speed.py [--synthetic] [--screens S.parquet]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

BUDGET_S = 30.0
ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "physionet2019" / "training_setA.zip"


def _screens(args):
    import pandas as pd

    if args.screens:
        return pd.read_parquet(args.screens), f"screens from {args.screens}"
    if not args.synthetic and ZIP.exists():
        try:
            from ehr.screens import build_screens
            from ehr.sources.physionet import read_physionet
        except ImportError:
            pass
        else:
            cohort = read_physionet(ZIP)
            events, stays = cohort.events, cohort.stays
            return build_screens(events, stays), f"PhysioNet set A ({ZIP})"
    from gbdt._demo import demo_screens

    return demo_screens(n_stays=20_300, seed=0, n_concepts=40), "synthetic (20,300 stays, 40 concepts)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic", action="store_true", help="use the synthetic frame even if real data exist")
    p.add_argument("--screens", help="a screens parquet file to time")
    args = p.parse_args()
    from gbdt.features import ScreenFeatures

    screens, what = _screens(args)
    print(f"{what}: {len(screens):,} screens x {screens.shape[1]} columns")
    for trend in (False, True):
        t0 = time.perf_counter()
        X = ScreenFeatures(trend=trend).fit_transform(screens)
        dt = time.perf_counter() - t0
        print(f"trend={trend!s:5}: {X.shape[1]:4d} features in {dt:6.2f} s "
              f"({dt / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget)")
        del X


if __name__ == "__main__":
    main()
