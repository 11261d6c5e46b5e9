"""The Dask path gives the single-process path's answers on PhysioNet set A (issue #19, item 4).

Runs the main job twice on the same source, once in one process (``run_main_job``) and once per
partition on a Dask ``LocalCluster`` (``run_partitioned``), then compares:

* screens: every part built on the workers, concatenated and sorted, against ``build_screens``
  of the whole cohort (must be identical);
* CPN parameters: every CPD entry (target: |difference| <= 1e-9), learned half-lives;
* CPN risks on dev and test (target: <= 1e-12), NEWS2 scores;
* evaluation tables (``main_table.csv``, ``bootstrap.csv``, ``differences.csv``...): CPN and NEWS2
  rows must be equal; LightGBM (Dask-trained, no early stopping) is reported by how much it differs.
  With ``--dask-evaluation counts`` (the partitioned run's default, :mod:`evaluation.counts`) the
  Dask run's tables are compared twice: with :func:`evaluation.counts.evaluate_run_counts` of the
  single-process run's tables (the same count-based evaluation in one process: must be equal), and
  with the single-process run's own (exact) tables, by how much each metric's estimate and CI
  bounds differ (bin resolution of the rank metrics, Poisson against multinomial resamples).

Usage::

    nice python benchmarks/scale_equality.py --physionet ../shared/data/physionet2019/training_setA.zip \\
        --out /work/scratch/h-dask/setA --workers 2
    python benchmarks/scale_equality.py --n-stays 400 --out /tmp/eq      # synthetic, a few minutes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _cpds(model_dir: Path) -> dict:
    from sepsiscope.models import load_model

    m = load_model(model_dir)
    return {v: np.asarray(c) for v, c in m.engine_.cpds.items()}, m.half_lives_


def _compare_tables(a_dir: Path, b_dir: Path) -> dict:
    out = {}
    for name in sorted(p.name for p in a_dir.glob("*.csv")):
        if not (b_dir / name).exists():
            out[name] = "missing in the Dask run"
            continue
        a, b = pd.read_csv(a_dir / name), pd.read_csv(b_dir / name)
        if "model" not in a.columns:
            out[name] = "equal" if a.equals(b) else "differs"
            continue
        res = {}
        for model in sorted(set(a["model"]) | set(b["model"])):
            x = a[a["model"] == model].reset_index(drop=True)
            y = b[b["model"] == model].reset_index(drop=True)
            if x.equals(y):
                res[model] = "equal"
                continue
            num = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])
                   and c in y.columns]
            diff = (x[num] - y[num]).abs().max().max() if len(x) == len(y) and num else None
            res[model] = f"differs (max |numeric difference| {diff})"
        out[name] = res
    return out


def _bootstrap_differences(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Max |difference| of estimate and CI bounds per model and metric between two bootstrap tables."""
    key = ["split", "model", "operating_point", "metric"]
    m = a.merge(b, on=key, suffixes=("_a", "_b"))
    out = {}
    for (model, metric), g in m.groupby(["model", "metric"]):
        out.setdefault(model, {})[metric] = {c: float((g[f"{c}_a"] - g[f"{c}_b"]).abs().max())
                                             for c in ("estimate", "ci_low", "ci_high")}
    return out


def _counts_of_single(single: Path, out: Path, n_boot: int, seed: int, subgroup_n_boot: int) -> Path:
    """The count-based evaluation of the single-process run's gathered tables, written as a run writes it."""
    from evaluation.counts import evaluate_run_counts

    pred, screens, stays = (pd.read_parquet(single / f) for f in ("predictions.parquet", "screens.parquet",
                                                                   "stays.parquet"))
    ev = evaluate_run_counts(pred, screens, stays, n_boot=n_boot, seed=seed, subgroup_n_boot=subgroup_n_boot)
    out.mkdir(parents=True, exist_ok=True)
    ev.write(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--physionet", type=Path)
    ap.add_argument("--n-stays", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--dask-evaluation", choices=("counts", "gather"), default="counts")
    ap.add_argument("--cpn-max-iter", type=int, default=30)
    ap.add_argument("--cpn-half-lives", choices=("learn", "prior"), default="learn")
    ap.add_argument("--compare-only", action="store_true", help="compare the runs already under --out")
    ap.add_argument("--reuse-single", action="store_true", help="keep the single-process run under --out, rerun the Dask one")
    args = ap.parse_args()

    from ehr.cohort import Cohort
    from ehr.partitions import PartitionedTable
    from ehr.screens import build_screens
    from sepsiscope.pipeline import RunConfig, run_main_job
    from sepsiscope.scale import DaskMapper, dask_client
    from sepsiscope.scale.pipeline import run_partitioned

    source = dict(source="physionet", path=str(args.physionet)) if args.physionet else {}
    kw = dict(**source, n_stays=args.n_stays, n_boot=args.n_boot, partitions=args.partitions,
              cpn_max_iter=args.cpn_max_iter, cpn_half_lives=args.cpn_half_lives)
    single, dask_dir = args.out / "single", args.out / "dask"
    timings = {}
    if args.physionet is None and args.n_stays > 5000:
        raise SystemExit("synthetic: the partitioned path streams chunks of 5000 stays, a different cohort above that")
    if not args.compare_only:
        t = time.perf_counter()
        if not args.reuse_single:
            run_main_job(single, RunConfig(**kw))
            timings["single_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        with dask_client(n_workers=args.workers, memory_limit="6GB") as client:
            run_partitioned(dask_dir, RunConfig(**kw, dask_evaluation=args.dask_evaluation), DaskMapper(client))
        timings["dask_s"] = round(time.perf_counter() - t, 1)

    report: dict = {"timings": timings, "workers": args.workers, "partitions": args.partitions}
    cohort = Cohort.load(dask_dir / "parts" / "cohort")
    whole = build_screens(cohort.events, cohort.stays, cohort.cxr, until_onset=False)
    parts = PartitionedTable(dask_dir / "parts" / "screens", "screens").read_all()
    parts = parts.sort_values(["stay_id", "screen_time"], kind="stable").reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(parts[whole.columns], whole)
        report["screens"] = f"identical ({len(whole)} rows, {whole.shape[1]} columns)"
    except AssertionError as exc:
        report["screens"] = f"DIFFER: {str(exc)[:300]}"
    (a, hl_a), (b, hl_b) = _cpds(single / "models" / "cpn"), _cpds(dask_dir / "models" / "cpn")
    report["cpn_max_abs_cpd_difference"] = float(max(np.abs(a[v] - b[v]).max() for v in a))
    report["cpn_half_lives_equal"] = bool(hl_a == hl_b)
    pa = pd.read_parquet(single / "predictions.parquet")
    if args.dask_evaluation == "counts":  # written per part: the single-process order back
        from sepsiscope.scale.pipeline import _in_order

        pb = _in_order(PartitionedTable(dask_dir / "parts" / "predictions", "predictions").read_all(),
                       list(dict.fromkeys(pa["model"])))
    else:
        pb = pd.read_parquet(dask_dir / "predictions.parquet")
    for model in sorted(set(pa["model"])):
        x = pa[pa["model"] == model].reset_index(drop=True)
        y = pb[pb["model"] == model].reset_index(drop=True)
        same_keys = len(x) == len(y) and (x[["stay_id", "screen_time", "split"]] == y[["stay_id", "screen_time",
                                                                                      "split"]]).all().all()
        report[f"{model}_risk_max_abs_difference"] = float((x["risk"] - y["risk"]).abs().max()) if same_keys \
            else f"keys differ ({len(x)} vs {len(y)} rows)"
    if args.dask_evaluation == "counts":
        counted = _counts_of_single(single, args.out / "single_counts", args.n_boot, 0, RunConfig().subgroup_n_boot)
        report["tables_vs_counts_of_single"] = {**_compare_tables(counted, dask_dir),
                                                **_compare_tables(counted / "tables", dask_dir / "tables")}
        a, b = (pd.read_csv(d / "tables" / "bootstrap_metrics.csv") for d in (single, dask_dir))
        report["bootstrap_vs_single_exact_max_abs_difference"] = _bootstrap_differences(a, b)
        a, b = (pd.read_csv(d / "main_table.csv") for d in (single, dask_dir))
        report["main_table_vs_single_exact"] = _compare_tables(single, dask_dir).get("main_table.csv")
        # every further section against the single-process run's own (exact) tables: max |difference| per model
        report["sections_vs_single_exact"] = {
            **{k: v for k, v in _compare_tables(single, dask_dir).items() if k != "main_table.csv"},
            **{f"tables/{k}": v for k, v in _compare_tables(single / "tables", dask_dir / "tables").items()}}
        report["utility"] = {d.name: json.loads((d / "utility.json").read_text()) if (d / "utility.json").exists()
                             else None for d in (single, dask_dir)}

        def files(d):
            return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()
                    and p.relative_to(d).parts[0] not in ("parts", "models")}

        report["files_only_in_single"] = sorted(files(single) - files(dask_dir))
        report["files_only_in_dask"] = sorted(files(dask_dir) - files(single))
        report["thresholds_vs_single_exact"] = {
            f"{r.model} {r.operating_point}": [r.threshold_a, r.threshold_b] for r in
            a.merge(b, on=["model", "operating_point"], suffixes=("_a", "_b")).itertuples()
            if r.threshold_a != r.threshold_b}
    else:
        report["tables"] = _compare_tables(single, dask_dir)
        report["tables_in_tables_dir"] = _compare_tables(single / "tables", dask_dir / "tables") \
            if (single / "tables").is_dir() else {}
    text = json.dumps(report, indent=1, default=str)
    (args.out / "equality.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
