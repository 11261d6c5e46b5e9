"""``sepsiscope explain --run RUN --at H STAY``: time per call, against Python importing pandas.

Usage::

    python benchmarks/explain_speed.py [--run RUN] [--stay ID] [--at HOURS] [--calls 5]

Issue #18 asks for an answer in under 2 s after the first call. Each call is a new process, so
the time is mostly imports and first uses; the first call may also compile the CPN kernel (numba
caches it on disk). Prints, for the first call and the best and median of ``--calls`` later ones,
the wall time and the CPU time of the process (user + system, less sensitive to other load than
wall time); the same for the reference ``python -c "import numpy, pandas, pyarrow.parquet"`` (the
floor of any command that reads a parquet table into pandas) measured in this run, and the ratio;
the modules that take longest to import (``-X importtime``); whether pgmpy, torch, networkx,
matplotlib, numba or scikit-learn were imported (only scikit-learn should be: the models are its
estimators; numba and the compiled kernel are left to long-lived processes, see
``cpn.kernel.SMALL_BATCH``); and the load average.

Without ``--run`` a run-like directory is made here: a small CPN fitted on 300 synthetic stays
(``benchmarks/service_load.py``) and the test screens of those stays.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pgmpy", "torch", "networkx", "matplotlib", "numba", "sklearn")


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stderr


def make_run(out: Path) -> tuple[Path, int, str]:
    """A run-like directory (models/cpn, operating_points.json, test_screens.parquet)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from service_load import fit_models

    from cpn import SepsisCPN
    from ehr.screens import build_screens
    from ehr.synthetic import generate_cohort
    from sepsiscope.stay_screens import write_stay_screens

    fit_models(out)
    c = generate_cohort(300, seed=1)
    screens = build_screens(c.events, c.stays, c.cxr)
    cols = SepsisCPN.load(out / "models" / "cpn").required_columns
    write_stay_screens(screens, out / "test_screens.parquet", columns=cols)
    stay = screens["stay_id"].iloc[len(screens) // 2]
    at = screens.loc[screens["stay_id"] == stay, "hours_since_admit"].iloc[-1]
    return out, int(stay), f"{at:g}"


def summary(name: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    print(f"{name:<44} wall best {min(walls):5.2f} s, median {statistics.median(walls):5.2f} s; "
          f"CPU best {min(cpus):5.2f} s, median {statistics.median(cpus):5.2f} s")
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path)
    ap.add_argument("--stay", type=int)
    ap.add_argument("--at", default=None)
    ap.add_argument("--calls", type=int, default=5)
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if a.run is None:
        a.run, stay, at = make_run(Path(tempfile.mkdtemp(prefix="explain_speed_")))
        a.stay, a.at = a.stay or stay, a.at or at
    if a.stay is None:
        raise SystemExit("--stay is needed with --run")
    explain = [sys.executable, "-m", "sepsiscope.cli", "explain", str(a.stay), "--run", str(a.run)] + \
        (["--at", str(a.at)] if a.at is not None else [])
    reference = [sys.executable, "-c", "import numpy, pandas, pyarrow.parquet"]
    print(f"cpus={os.cpu_count()} load average before: {os.getloadavg()[0]:.2f}; {' '.join(explain[3:])}")
    first = timed(explain, env)
    print(f"{'explain, first call':<44} wall {first[0]:5.2f} s, CPU {first[1]:5.2f} s")
    later = [timed(explain, env)[:2] for _ in range(a.calls)]
    refs = [timed(reference, env)[:2] for _ in range(a.calls)]
    wall, cpu = summary(f"explain, {a.calls} later calls", later)
    ref_wall, ref_cpu = summary("reference: import numpy, pandas, pyarrow", refs)
    print(f"explain / reference: wall {wall / ref_wall:.2f}, CPU {cpu / ref_cpu:.2f} (best of each)")
    _, _, trace = timed([sys.executable, "-X", "importtime", *explain[1:]], env)
    rows = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (.+)", trace)]
    top = [(us, name) for us, name in rows if not name.startswith(" ")]  # imported by the command itself
    print("slowest top-level imports (cumulative ms): " +
          ", ".join(f"{name} {us / 1e3:.0f}" for us, name in sorted(top, reverse=True)[:8]))
    names = {name.strip() for _, name in rows}
    print("heavy packages imported: " + (", ".join(h for h in HEAVY if h in names) or "none"))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
