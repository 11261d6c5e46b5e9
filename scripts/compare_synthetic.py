"""Compare the synthetic cohort's marginals with PhysioNet 2019 training set A.

Prints, per concept, the median [IQR] of the values and the fraction of hourly rows with a
measurement, for the synthetic cohort (all stays and its ICU stays) and PhysioNet set A, then
prevalence, length of stay, age/sex and time to onset.

Usage::

    .venv/bin/python scripts/compare_synthetic.py [--n 2000] [--seed 0] [--physionet PATH]

The PhysioNet side reads the challenge zip directly (zipfile + pandas, ``sep='|'``); the
numbers in the docstring of ``ehr.synthetic`` come from this script.
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.concepts import load_concepts, source_map
from ehr.synthetic import generate_cohort, synthetic_concepts

DEFAULT_ZIP = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "physionet2019"
               / "training_setA.zip")


def read_physionet_zip(path: Path) -> pd.DataFrame:
    """All rows of all .psv files in the zip, with a ``patient`` column (file order)."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".psv"))
        header = None
        bodies, counts = [], []
        for name in names:
            raw = z.read(name)
            head, _, body = raw.partition(b"\n")
            if header is None:
                header = head.decode().strip().split("|")
            if body and not body.endswith(b"\n"):
                body += b"\n"
            bodies.append(body)
            counts.append(body.count(b"\n"))
    df = pd.read_csv(io.BytesIO(b"".join(bodies)), sep="|", header=None, names=header)
    df["patient"] = np.repeat(np.arange(len(names)), counts)
    return df


def _fmt(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if not v.size:
        return "-"
    q = np.percentile(v, [25, 50, 75])
    d = 2 if abs(q[1]) < 10 else (1 if abs(q[1]) < 100 else 0)
    return f"{q[1]:.{d}f} [{q[0]:.{d}f}-{q[2]:.{d}f}]"


def physionet_summary(df: pd.DataFrame) -> tuple[dict, dict]:
    per, overall = {}, {}
    smap = source_map("physionet")
    for col, concept in smap.items():
        v = df[col].to_numpy(dtype="float64")
        if concept == "fio2":
            v = np.where(v > 1.0, v / 100.0, v)  # some rows chart FiO2 in percent
        per[concept] = (_fmt(v), float(np.isfinite(v).mean()))
    g = df.groupby("patient")
    los = g.size().to_numpy()
    septic = g["SepsisLabel"].max().to_numpy() > 0
    first = df[df["SepsisLabel"] == 1].groupby("patient")["ICULOS"].min() + 6  # challenge onset
    overall["stays"] = len(los)
    overall["hourly rows"] = int(los.sum())
    overall["septic stays"] = f"{septic.sum()} ({septic.mean():.1%})"
    overall["LOS h median [IQR] (mean)"] = f"{_fmt(los.astype(float))} ({los.mean():.1f})"
    overall["age median [IQR]"] = _fmt(g["Age"].first().to_numpy(dtype=float))
    overall["male"] = f"{g['Gender'].first().mean():.1%}"
    overall["onset hour median [IQR]"] = _fmt(first.to_numpy(dtype=float))
    return per, overall


def synthetic_summary(cohort, department: str | None = None) -> tuple[dict, dict]:
    stays = cohort.stays
    ev = cohort.events
    if department is not None:
        stays = stays[stays["department"] == department]
        ev = ev[ev["stay_id"].isin(stays["stay_id"])]
    los_h = (stays["discharge_time"] - stays["admit_time"]).dt.total_seconds().to_numpy() / 3600
    hours = int(np.ceil(los_h).sum())
    admit = ev["stay_id"].map(stays.set_index("stay_id")["admit_time"])
    hour = ((ev["time"] - admit).dt.total_seconds() // 3600).astype(np.int64)
    key = pd.DataFrame({"stay_id": ev["stay_id"], "hour": hour, "concept": ev["concept"]})
    covered = key.drop_duplicates().groupby("concept").size()
    per = {}
    for c, v in ev.groupby("concept")["numeric_value"]:
        per[c] = (_fmt(v.to_numpy(dtype="float64")), covered.get(c, 0) / hours)
    sep = stays["sepsis"].to_numpy()
    onset_h = (stays["onset_time"] - stays["admit_time"]).dt.total_seconds().to_numpy() / 3600
    overall = {
        "stays": len(stays),
        "hourly rows": hours,
        "septic stays": f"{sep.sum()} ({sep.mean():.1%})",
        "LOS h median [IQR] (mean)": f"{_fmt(los_h)} ({los_h.mean():.1f})",
        "age median [IQR]": _fmt(stays["age"].to_numpy(dtype=float)),
        "male": f"{(stays['sex'] == 'M').mean():.1%}",
        "onset hour median [IQR]": _fmt(onset_h[sep]),
    }
    return per, overall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--physionet", type=Path, default=DEFAULT_ZIP)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cohort = generate_cohort(args.n, args.seed)
    print(f"synthetic: {args.n} stays, seed {args.seed}, generated in {time.perf_counter() - t0:.1f} s")
    syn, syn_all = synthetic_summary(cohort)
    icu, icu_all = synthetic_summary(cohort, "ICU")
    if args.physionet.exists():
        t0 = time.perf_counter()
        pn, pn_all = physionet_summary(read_physionet_zip(args.physionet))
        print(f"PhysioNet: read {args.physionet.name} in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"PhysioNet zip not found at {args.physionet}; synthetic side only")
        pn, pn_all = {}, {}

    simulated = synthetic_concepts()
    concepts = simulated + [c for c in load_concepts() if c in pn and c not in simulated]
    rows = []
    for c in concepts:
        s, i, p = syn.get(c, ("-", 0.0)), icu.get(c, ("-", 0.0)), pn.get(c, ("-", np.nan))
        rows.append({"concept": c, "unit": load_concepts()[c].unit,
                     "synthetic median [IQR]": s[0], "synthetic ICU median [IQR]": i[0],
                     "PhysioNet A median [IQR]": p[0],
                     "synth %h": f"{100 * s[1]:.1f}", "synth ICU %h": f"{100 * i[1]:.1f}",
                     "PhysioNet %h": "-" if np.isnan(p[1]) else f"{100 * p[1]:.1f}"})
    pd.set_option("display.width", 250)
    print()
    print("Per concept: value median [IQR]; %h = percent of hourly rows with a measurement")
    print(pd.DataFrame(rows).to_string(index=False))
    print()
    overall = pd.DataFrame({"synthetic": syn_all, "synthetic ICU": icu_all, "PhysioNet A": pn_all})
    print(overall.to_string())


if __name__ == "__main__":
    main()
