"""Synthetic cohorts end to end on Dask with 1 and 2 workers, against one process (issue #19, item 5).

For each size: the streaming generator writes a partitioned cohort (``write_synthetic``), then for
each worker count a fresh ``LocalCluster`` (one single-threaded worker process per worker, a
memory limit per worker) runs

    screens per partition -> CPN training (map-reduce EM) -> scoring with explanations per
    partition -> evaluation on counts (:mod:`evaluation.counts`: Poisson-bootstrap AUROC/AUPRC and
    calibration from per-part sums, each task summing a group of parts; nothing gathers the
    predictions)

and prints wall time per stage, throughput (screens/s) and every worker's peak resident memory
(``VmHWM`` of the worker process: its peak since it started, which is this size's run).
Sizes up to ``--single-up-to`` also run the single-process path (the whole cohort in one pandas
process, in a child process so its peak memory is its own) and print the ratio.

The CPN is the ``full`` network with prior half-lives and ``--em-iter`` EM iterations on at most
``--cpn-max-rows`` screens (the pipeline's cap), so its cost does not grow with the cohort; a
screen is explained when its risk is at least ``--explain-above``.

    nice python benchmarks/scale.py --sizes 20000 50000 200000 --workers 1 2 \\
        --out /work/scratch/h-dask/scale --single-up-to 50000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sepsiscope.scale.cluster import peak_rss

STAGES = ("screens", "cpn", "scoring", "evaluation")


def _cpn(args):
    from cpn import SepsisCPN

    return SepsisCPN("full", half_lives="prior", max_iter=args.em_iter, max_rows=args.cpn_max_rows, tol=0.0)


def _counts(pred: pd.DataFrame, labels: pd.DataFrame, n_boot: int):
    """The counts of one part (or the whole table): every screen, no split, no operating point."""
    from evaluation.counts import split_counts

    onset = labels["screen_time"] + pd.to_timedelta(labels["onset_in_h"], unit="h")
    stays = labels.assign(onset_time=onset).groupby("stay_id", as_index=False)["onset_time"].first()
    return split_counts(pred, labels.assign(new_data=True), stays, None, n_resamples=n_boot, seed=0,
                        reference=None, models=[str(pred["model"].iloc[0])] if len(pred) else None)


def _metrics(merged) -> dict:
    from evaluation.counts import evaluation_from_counts

    ev = evaluation_from_counts(pd.DataFrame(columns=["model", "operating_point", "threshold"]), {"all": merged},
                                reference=None, curve_points=0)
    t = ev.bootstrap.set_index("metric")["estimate"]
    return {m: round(float(t[m]), 4) for m in ("auroc", "auprc", "brier") if m in t}


def _counts_group(ks, pred_dir, screens_dir, n_boot):
    """The summed counts of a group of parts, read one after another (a worker holds one part's rows)."""
    from ehr.partitions import PartitionedTable
    from evaluation.counts import merge_counts

    acc = None
    for k in ks:
        pred = PartitionedTable(pred_dir, "predictions").read(k)
        labels = PartitionedTable(screens_dir, "screens").read(k, columns=["stay_id", "screen_time", "onset_in_h"])
        c = _counts(pred, labels, n_boot)
        if c is not None:
            c.alarms = None
            acc = c if acc is None else merge_counts([acc, c])
    return acc


def run_dask(cohort: Path, work: Path, workers: int, args) -> dict:
    from cpn.partitioned import fit_partitioned
    from ehr.cohort import cohort_partitions
    from ehr.partitions import PartitionedTable
    from sepsiscope.scale import DaskMapper, build_screens_partitioned, dask_client, predict_partitioned
    from sepsiscope.scale.cluster import worker_peak_memory

    shutil.rmtree(work, ignore_errors=True)
    n = cohort_partitions(cohort)
    out: dict = {"workers": workers}
    with dask_client(n_workers=workers, memory_limit=args.worker_memory) as client:
        mapper = DaskMapper(client)
        t = time.perf_counter()
        screens_dir, rep = build_screens_partitioned(cohort, work / "screens", mapper)
        out["screens_s"], out["screens"] = time.perf_counter() - t, rep["screens"]
        t = time.perf_counter()
        from functools import partial

        parts = [partial(PartitionedTable(screens_dir, "screens").read, k) for k in range(n)]
        model = fit_partitioned(_cpn(args), parts, mapper)
        model.save(work / "cpn")
        out["cpn_s"] = time.perf_counter() - t
        t = time.perf_counter()
        counts = predict_partitioned(work / "cpn", screens_dir, work / "pred", mapper, explain_out=work / "ex",
                                     explain_threshold=args.explain_above)
        out["scoring_s"], out["explained"] = time.perf_counter() - t, counts["explained"]
        t = time.perf_counter()
        # counts per group of parts (two groups per worker), summed here: no process holds every
        # prediction (evaluation.counts)
        from evaluation.counts import merge_counts

        groups = [list(g) for g in np.array_split(np.arange(n), min(n, 2 * workers))]
        sums = mapper.gather(mapper.map(_counts_group, groups, pred_dir=str(work / "pred"),
                                        screens_dir=str(screens_dir), n_boot=args.n_boot))
        out["metrics"] = _metrics(merge_counts(sums))
        out["evaluation_s"] = time.perf_counter() - t
        out["worker_peak_bytes"] = sorted(worker_peak_memory(client).values())
    out["client_peak_bytes"] = peak_rss()
    shutil.rmtree(work, ignore_errors=True)
    return out


def _single(cohort: str, work: str, args, queue) -> None:
    """The single-process path in a child process (its own peak memory)."""
    from ehr.cohort import Cohort
    from ehr.screens import build_screens

    work = Path(work)
    out: dict = {"workers": 0}
    t = time.perf_counter()
    c = Cohort.load(cohort)
    screens = build_screens(c.events, c.stays, c.cxr)
    del c
    out["screens_s"], out["screens"] = time.perf_counter() - t, len(screens)
    t = time.perf_counter()
    model = _cpn(args).fit(screens)
    out["cpn_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.predictions(screens)
    risky = screens.loc[pred["risk"].to_numpy() >= args.explain_above]
    ex = model.explain(risky)
    out["scoring_s"], out["explained"] = time.perf_counter() - t, len(risky)
    del ex
    t = time.perf_counter()
    out["metrics"] = _metrics(_counts(pred, screens[["stay_id", "screen_time", "onset_in_h"]], args.n_boot))
    out["evaluation_s"] = time.perf_counter() - t
    out["peak_bytes"] = peak_rss()
    queue.put(out)


def run_single(cohort: Path, work: Path, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_single, args=(str(cohort), str(work), args, queue))
    p.start()
    out = queue.get()
    p.join()
    return out


def _gb(b) -> str:
    return f"{b / 2**30:.2f}"


def _line(size: int, r: dict) -> str:
    who = "1 process" if r["workers"] == 0 else f"{r['workers']} worker{'s' * (r['workers'] > 1)}"
    total = sum(r[f"{s}_s"] for s in STAGES)
    mem = _gb(r["peak_bytes"]) if r["workers"] == 0 else "/".join(_gb(b) for b in r["worker_peak_bytes"])
    return (f"{size:>7} {who:>10} {r['screens']:>11,} " + " ".join(f"{r[f'{s}_s']:>8.1f}" for s in STAGES)
            + f" {total:>8.1f} {r['screens'] / r['scoring_s']:>10,.0f} {mem:>11} "
            f"{r['metrics'].get('auroc', float('nan')):>6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 200_000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--stays-per-partition", type=int, default=None,
                    help="parts of a fixed size instead (ceil(size / N) parts): flat memory per worker")
    ap.add_argument("--single-up-to", type=int, default=50_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--worker-memory", default="4GB")
    ap.add_argument("--em-iter", type=int, default=10)
    ap.add_argument("--cpn-max-rows", type=int, default=200_000)
    ap.add_argument("--explain-above", type=float, default=0.5)
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from ehr.synthetic import write_synthetic

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'stays':>7} {'run':>10} {'screens':>11} " + " ".join(f"{s + '_s':>8}" for s in
          ("screens", "cpn", "scoring", "eval")) + f" {'total_s':>8} {'scored/s':>10} {'peak GB':>11} {'AUROC':>6}",
          flush=True)
    for size in args.sizes:
        cohort = args.out / f"cohort_{size}"
        shutil.rmtree(cohort, ignore_errors=True)
        t = time.perf_counter()
        parts = -(-size // args.stays_per_partition) if args.stays_per_partition else args.partitions
        write_synthetic(cohort, size, args.seed, partitions=parts)
        simulate_s = time.perf_counter() - t
        print(f"{size:>7} simulate: {simulate_s:.1f} s ({size / simulate_s:,.0f} stays/s), "
              f"{parts} partitions", flush=True)
        runs = [run_dask(cohort, args.out / "work", w, args) for w in args.workers]
        if size <= args.single_up_to:
            runs.append(run_single(cohort, args.out / "work", args))
        for r in runs:
            print(_line(size, r), flush=True)
        by = {r["workers"]: r for r in runs}
        if 1 in by and 2 in by:
            print(f"{size:>7} scoring: 2 workers {by[1]['scoring_s'] / by[2]['scoring_s']:.2f}x one worker; "
                  f"end to end {sum(by[1][f'{s}_s'] for s in STAGES) / sum(by[2][f'{s}_s'] for s in STAGES):.2f}x",
                  flush=True)
        if 0 in by:
            for w in args.workers:
                ratio = {s: round(by[0][f"{s}_s"] / by[w][f"{s}_s"], 2) for s in STAGES}
                print(f"{size:>7} {w} worker(s) / one process (speed ratio per stage): {ratio}", flush=True)
        results.append({"stays": size, "simulate_s": simulate_s, "runs": runs})
        shutil.rmtree(cohort, ignore_errors=True)
        (args.out / "scale.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    peaks = {r["stays"]: max(max(x["worker_peak_bytes"]) for x in r["runs"] if x["workers"]) for r in results}
    if len(peaks) > 1:
        lo, hi = min(peaks), max(peaks)
        print(f"peak memory per worker: {_gb(peaks[lo])} GB at {lo:,} stays, {_gb(peaks[hi])} GB at {hi:,} "
              f"stays ({peaks[hi] / peaks[lo]:.2f}x)")


if __name__ == "__main__":
    main()
