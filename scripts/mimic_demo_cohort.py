"""Cohort numbers of the MIMIC-III demo under the Sepsis-3 labels (issue 6 check).

Prints the number of ICU stays, with suspected infection, with Sepsis-3 onset, the distribution of
onset times relative to ICU admission, and the time to ingest and label.

Usage: ``python scripts/mimic_demo_cohort.py [PATH] [--definition sepsis3|physionet2019]``
(PATH defaults to ../shared/data/mimic-iii-demo).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.sources.mimic import read_mimic

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mimic-iii-demo"


def cohort_numbers(stays: pd.DataFrame) -> dict:
    """The issue's numbers from a labelled stays table."""
    rel = ((stays["onset_time"] - stays["admit_time"]) / pd.Timedelta("1h")).dropna()
    bins = [-np.inf, -24, 0, 6, 24, 48, np.inf]
    labels = ["< -24 h", "-24..0 h", "0..6 h", "6..24 h", "24..48 h", ">= 48 h"]
    dist = pd.cut(rel, bins, labels=labels, right=False).value_counts().reindex(labels)
    return {
        "stays": len(stays),
        "suspected_infection": int(stays["suspicion_time"].notna().sum()),
        "sepsis": int(stays["sepsis"].sum()),
        "onset_h_quantiles": {q: round(float(rel.quantile(q)), 2) for q in (0.0, 0.25, 0.5, 0.75, 1.0)} if len(rel) else {},
        "onset_h_bins": {k: int(v) for k, v in dist.items()},
        "bsi": int(stays["bsi"].eq(True).sum()),
        "onset_setting": stays["onset_setting"].value_counts().to_dict(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--definition", default="sepsis3")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cohort = read_mimic(a.path, definition=a.definition)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    elapsed = time.perf_counter() - t0
    n = cohort_numbers(stays)
    print(f"MIMIC demo at {a.path}, definition {a.definition}")
    print(f"ICU stays: {n['stays']}")
    print(f"with suspected infection: {n['suspected_infection']}")
    print(f"with Sepsis onset: {n['sepsis']}")
    print(f"onset - ICU admission (h), quantiles 0/25/50/75/100 %: {n['onset_h_quantiles']}")
    print("onset - ICU admission (h), counts:")
    for k, v in n["onset_h_bins"].items():
        print(f"  {k:>9}: {v}")
    print(f"positive blood culture (bsi): {n['bsi']}; onset setting: {n['onset_setting']}")
    print(f"events: {len(events)} rows; ingest + label time: {elapsed:.1f} s "
          f"(labels {report.timings.get('labels', float('nan')):.1f} s)")
    print(report.summary())


if __name__ == "__main__":
    main()
