"""Time and peak memory of reading PhysioNet 2019 set A and building its screens.

Target (issue #2): at most 60 s and 4 GB peak on the 2-core machine. Prints the figures and, as a
same-run reference, the time pandas needs just to parse every file one by one (what a naive reader
does), so the ratio is meaningful on a noisy machine.

    .venv/bin/python benchmarks/physionet_ingest.py [PATH]
"""

from __future__ import annotations

import sys
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import psutil

from ehr.screens import build_screens
from ehr.sources.physionet import read_physionet

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared/data/physionet2019/training_setA.zip"


def main(path: Path = DEFAULT) -> None:
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.perf_counter()
    cohort = read_physionet(path)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    t1 = time.perf_counter()
    screens = build_screens(events, stays, until_onset=False)
    t2 = time.perf_counter()
    done.set()
    print(f"stays {len(stays):,}  rows {report.rows_read:,}  events {len(events):,}  screens {len(screens):,}")
    print(f"read {t1 - t0:.1f} s  screens {t2 - t1:.1f} s  total {t2 - t0:.1f} s (target <= 60 s)")
    print(f"peak RSS {peak[0] / 2**30:.2f} GiB (target <= 4 GB)")

    # reference: naive per-file pandas parse of the first 2,000 files, extrapolated
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".psv")]
        t3 = time.perf_counter()
        for n in names[:2000]:
            with zf.open(n) as fh:
                pd.read_csv(fh, sep="|")
        naive = (time.perf_counter() - t3) * len(names) / 2000
    print(f"reference: naive per-file pandas parse ~{naive:.1f} s for all files; "
          f"ratio naive/ours (read only) = {naive / (t1 - t0):.1f}x")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
