"""The partitioned main job's evaluation on counts: no process holds more than one part's screens.

:func:`finish_counts` is the partitioned run's counterpart of :func:`sepsiscope.pipeline.finish_run`
when ``RunConfig.dask_evaluation == "counts"`` (the default). The predictions were written per part
(``RUN/parts/predictions``); then, on groups of parts (two per worker, each group's parts one after
another, so a task holds one part's tables and its group's running sums):

1. the operating points on dev (:func:`evaluation.counts.choose_thresholds_from_counts`): each
   group returns its dev scores' bin maxima, then, once per round of the search, how many
   screenable septic stays each candidate threshold detects;
2. the test split's counts (:func:`evaluation.counts.split_counts`), summed over the group; each part
   writes its alarms (``RUN/parts/alarms``) and every model's explanations of its fired alarms
   (``RUN/parts/explanations``) where it is;
3. the groups' sums added (:func:`evaluation.counts.merge_counts`) in a tree of tasks on the
   workers (``mapper.reduce``, four at a time), so the client receives one set of sums, and the
   tables made here (:func:`evaluation.counts.evaluation_from_counts`).

The run directory has ``run.json``, ``stays.parquet``, ``cohort_flow.csv``, ``operating_points.json``,
``main_table.csv``, ``paired_differences.csv`` (bootstrap CIs and p-values; no DeLong),
``curve_bands.csv``, ``timeliness.csv``, ``tables/protocol_summary.csv``,
``tables/bootstrap_metrics.csv``, the models and the report. Not written: the tables that need every
screen in one place (alarm burden, decision and calibration curves, subgroups, the sensitivity
analyses, AUROC by hours since admission, the alarm examples in words, the PhysioNet utility) and
the one-file ``predictions.parquet``, ``screens.parquet`` and ``test_screens.parquet``; the report
says they are not available. ``--dask-evaluation gather`` gathers the predictions and writes every
table instead.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.partitions import PartitionedTable, parts_directory, write_part
from evaluation.counts import (choose_thresholds_from_counts, detected_at, dev_candidates, evaluation_from_counts,
                               merge_counts, split_counts)
from sepsiscope.progress import step
from sepsiscope.scale.tasks import cached_model

__all__ = ["finish_counts", "NOT_AVAILABLE"]

REFERENCE = "news2"

#: run-directory tables a counts evaluation does not write (they need every screen in one place)
NOT_AVAILABLE = ("alarm_burden.csv", "decision_curve.csv", "calibration.csv", "subgroups.csv", "sensitivity.csv",
                 "alarm_explanations.csv", "tables/auroc_by_hours_band.csv", "tables/context_top_share.csv",
                 "utility.json", "predictions.parquet", "screens.parquet", "test_screens.parquet",
                 "alarms.parquet", "explanations.parquet")


def _tables(k: int, split: pd.Series, name: str, screens_dir: str, cohort_dir: str, pred_dir: str):
    """Part ``k``'s predictions, protocol screens and stays of split ``name``."""
    from sepsiscope.scale.pipeline import _load_screens

    screens = _load_screens(k, screens_dir, split, (name,), protocol=True)
    pred = PartitionedTable(pred_dir, "predictions").read(k)
    pred = pred.loc[(pred["split"] == name).to_numpy()].reset_index(drop=True)
    stays = PartitionedTable(Path(cohort_dir) / "stays", "stays").read(k)
    stays = stays.loc[stays["stay_id"].isin(screens["stay_id"]).to_numpy()].reset_index(drop=True)
    return pred, screens, stays


def _candidates_group(ks, splits, *, models, screens_dir, cohort_dir, pred_dir):
    acc = None
    for k, split in zip(ks, splits):
        p, s, st = _tables(k, split, "dev", screens_dir, cohort_dir, pred_dir)
        if not len(s):
            continue
        c = dev_candidates(p, s, st, models=models, reference=REFERENCE)
        acc = c if acc is None else {m: np.maximum(acc[m], c[m]) for m in c}
    return acc


def _detect_group(ks, splits, *, asked, window_h, silencing_h, screens_dir, cohort_dir, pred_dir):
    acc = None
    for k, split in zip(ks, splits):
        p, s, st = _tables(k, split, "dev", screens_dir, cohort_dir, pred_dir)
        if not len(s):
            continue
        got = detected_at(p, s, st, asked, window_h=window_h, silencing_h=silencing_h)
        acc = got if acc is None else {key: acc[key] + got[key] for key in got}
    return acc


def _explain(k: int, fired: pd.DataFrame, screens: pd.DataFrame, model_dirs: dict, out: str):
    rows = fired.merge(screens, on=["stay_id", "screen_time"], how="inner")
    parts = []
    for d in model_dirs.values():
        m = cached_model(d)
        parts.append(m.explain(rows, model_name=m.model_name))
    write_part(pd.concat(parts, ignore_index=True), out, "explanations", k)


def _counts_group(ks, splits, *, thresholds, n_boot, seed, window_h, silencing_h, alarms_dir, explain_dir,
                  model_dirs, screens_dir, cohort_dir, pred_dir):
    acc = None
    for k, split in zip(ks, splits):
        p, s, st = _tables(k, split, "test", screens_dir, cohort_dir, pred_dir)
        c = split_counts(p, s, st, thresholds, n_resamples=n_boot, seed=seed, reference=REFERENCE,
                         window_h=window_h, silencing_h=silencing_h)
        alarms = c.alarms.assign(split="test") if c is not None else None
        if alarms is None:  # a part without test stays: an empty part, so that every part is there
            alarms = pd.DataFrame({"stay_id": pd.Series([], dtype="int64"),
                                   "screen_time": pd.Series([], dtype="datetime64[ns]"),
                                   "model": pd.Series([], dtype=object), "threshold": pd.Series([], dtype="float64"),
                                   "fired": pd.Series([], dtype=bool), "silenced": pd.Series([], dtype=bool),
                                   "operating_point": pd.Series([], dtype=object), "split": pd.Series([], dtype=object)})
        # one row per operating point: two points of one threshold repeat the contract key, so not
        # the contract kind (as alarms.parquet of a single-process run, which is not validated either)
        write_part(alarms, alarms_dir, "evaluated_alarms", k)
        if explain_dir is not None:
            fired = alarms.loc[alarms["fired"].to_numpy(), ["stay_id", "screen_time"]].drop_duplicates()
            _explain(k, fired, s, model_dirs, explain_dir)
        if c is not None:
            c.alarms = None  # written; only the sums go back
            acc = c if acc is None else merge_counts([acc, c])
    return acc


def _groups(n: int, mapper) -> list[list[int]]:
    """Parts cut into contiguous groups, two per worker (tasks of about equal size, few results)."""
    return [list(map(int, g)) for g in np.array_split(np.arange(n), min(n, 2 * mapper.workers)) if len(g)]


def _call(job, **kwargs):
    return job(**kwargs)


def finish_counts(out: Path, cfg, mapper, *, n: int, split_of: list, screens_dir, cohort_dir, model_dirs: dict,
                  stays: pd.DataFrame, n_split: dict, flow: pd.DataFrame, source_info: dict, fitted_info: dict,
                  progress: bool = False) -> Path:
    """Evaluate the partitioned predictions on counts and write the run directory and report (module docstring)."""
    from evaluation.report import write_report
    from sepsiscope.runinfo import write_run_json

    timed = partial(step, enabled=progress, timings=cfg.timings)
    models = [*model_dirs, REFERENCE]
    groups = _groups(n, mapper)
    common = dict(screens_dir=str(screens_dir), cohort_dir=str(cohort_dir), pred_dir=str(out / "parts" / "predictions"))

    def tasks(fn, **kw):
        return mapper.map(_call, [partial(fn, g, [split_of[k] for k in g]) for g in groups], **common, **kw)

    def run(fn, **kw):
        return [r for r in mapper.gather(tasks(fn, **kw)) if r is not None]

    with timed("operating points on dev (counts per partition)"):
        cands = run(_candidates_group, models=models)
        if not cands:
            raise ValueError("the dev split has no screens; use more stays")
        candidates = {m: np.maximum.reduce([c[m] for c in cands]) for m in models}

        def detect(asked):
            got = run(_detect_group, asked=asked, window_h=cfg.window_h, silencing_h=cfg.silencing_h)
            return {key: sum(g[key] for g in got) for key in got[0]}

        thresholds = choose_thresholds_from_counts(candidates, detect, models=models, reference=REFERENCE)
    explain = cfg.explain_alarms and bool(model_dirs)
    with timed("evaluate test (counts per partition), write alarms and explanations"):
        with parts_directory(out / "parts" / "alarms", "evaluated_alarms", n) as a_tmp:
            if explain:
                with parts_directory(out / "parts" / "explanations", "explanations", n) as e_tmp:
                    merged = mapper.reduce(merge_counts, tasks(
                        _counts_group, thresholds=thresholds, n_boot=cfg.n_boot, seed=cfg.seed,
                        window_h=cfg.window_h, silencing_h=cfg.silencing_h, alarms_dir=str(a_tmp),
                        explain_dir=str(e_tmp), model_dirs=model_dirs))
            else:
                merged = mapper.reduce(merge_counts, tasks(
                    _counts_group, thresholds=thresholds, n_boot=cfg.n_boot, seed=cfg.seed,
                    window_h=cfg.window_h, silencing_h=cfg.silencing_h, alarms_dir=str(a_tmp), explain_dir=None,
                    model_dirs=model_dirs))
        if merged is None:
            raise ValueError("the test split has no screens; use more stays")
        ev = evaluation_from_counts(thresholds, {"test": merged}, reference=REFERENCE)

    with timed("write run directory"):
        stays.to_parquet(out / "stays.parquet", index=False)
        ev.write(out)
        flow.to_csv(out / "cohort_flow.csv", index=False)
    extra = {"source_info": source_info, "results": ev.headline(),
             "evaluation": {"method": "counts", "bootstrap": "poisson (hash of seed, resample, stay_id)",
                            "score_grid": "2^16 logit bins in [-16, 16] (resamples: 2^12); NEWS2 exact",
                            "not_available": list(NOT_AVAILABLE),
                            "partitioned_tables": ["parts/predictions", "parts/alarms"]
                            + (["parts/explanations"] if explain else [])},
             "n": {"stays": int(len(stays)), "screens": int(sum(n_split.values())),
                   "septic_stays": int(stays["sepsis"].sum()),
                   **{f"screens_{k}": int(v) for k, v in n_split.items()}},
             **fitted_info, "complete": True}
    write_run_json(out, asdict(cfg), inputs={"source": cfg.path} if cfg.path else None,
                   seeds={"split": cfg.seed, "cohort": cfg.seed, "models": cfg.seed, "bootstrap": cfg.seed},
                   extra=extra)
    with step("write report", progress):
        write_report(out)
    return out / "report.html"
