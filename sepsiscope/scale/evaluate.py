"""The partitioned main job's evaluation on counts: no process holds more than one part's screens.

:func:`finish_counts` is the partitioned run's counterpart of :func:`sepsiscope.pipeline.finish_run`
when ``RunConfig.dask_evaluation == "counts"`` (the default). The predictions were written per part
(``RUN/parts/predictions``); then :func:`evaluation.count_sections.evaluate_counts` runs its passes
over groups of parts (two groups per worker, each group's parts one after another, so a task holds
one part's tables and its group's running sums; the groups' sums are added in a tree of tasks on
the workers, ``mapper.reduce``, four at a time, so the client receives one set of sums):

1. dev: every score bin's highest score and the Platt scalers' cells, then the rounds of the
   threshold search (screenable septic stays each candidate detects);
2. test: the scores' histograms (the alarm burden sweep's ranks) and the scores in the bins holding
   those ranks;
3. test: the main counts (:func:`evaluation.counts.split_counts`) and every further section's
   (:func:`evaluation.count_sections.section_counts`); each part writes its alarms
   (``RUN/parts/alarms``) and every model's explanations of its fired alarms
   (``RUN/parts/explanations``) where it is; on PhysioNet data each part scores its hourly test
   rows for the challenge utility;
4. test: DeLong's placement sums from the merged histograms.

The run directory has every table and file of a single-process run but the one-file
``predictions.parquet``, ``screens.parquet``, ``test_screens.parquet``, ``alarms.parquet`` and
``explanations.parquet`` (their parts are under ``RUN/parts``); the report draws its ROC and PR
figures from ``curve_bands.csv``, the reliability diagram from ``tables/reliability.csv``, the
true-alarm timing figure from ``tables/true_alarm_lead_times.csv`` and the risk traces from
``trace_predictions.parquet`` / ``trace_alarms.parquet`` (the few stays they draw,
:class:`evaluation.count_sections.TraceRows`). ``--dask-evaluation gather`` gathers the predictions and writes them too.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.partitions import PartitionedTable, parts_directory, write_part
from evaluation.count_sections import evaluate_counts
from sepsiscope.alarm_explanations import explain_at
from sepsiscope.progress import step
from sepsiscope.scale.tasks import cached_model

__all__ = ["finish_counts", "NOT_AVAILABLE"]

REFERENCE = "news2"

#: run-directory tables a counts evaluation does not write (they need every screen in one place)
NOT_AVAILABLE = ("predictions.parquet", "screens.parquet", "test_screens.parquet", "alarms.parquet",
                 "explanations.parquet")


def _tables(k: int, split: pd.Series, name: str, screens_dir: str, cohort_dir: str, pred_dir: str):
    """Part ``k``'s predictions, protocol screens and stays of split ``name``."""
    from sepsiscope.scale.pipeline import _load_screens

    screens = _load_screens(k, screens_dir, split, (name,), protocol=True)
    pred = PartitionedTable(pred_dir, "predictions").read(k)
    pred = pred.loc[(pred["split"] == name).to_numpy()].reset_index(drop=True)
    stays = PartitionedTable(Path(cohort_dir) / "stays", "stays").read(k)
    stays = stays.loc[stays["stay_id"].isin(screens["stay_id"]).to_numpy()].reset_index(drop=True)
    return pred, screens, stays


def _part_alarms(k: int, c, screens: pd.DataFrame, *, alarms_dir: str, explain_dir: str | None, model_dirs: dict):
    """Write part ``k``'s evaluated alarms (and the explanations of its fired ones); return the explanations."""
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
    if explain_dir is None:
        return None
    fired = alarms.loc[alarms["fired"].to_numpy(), ["stay_id", "screen_time"]].drop_duplicates()
    rows = fired.merge(screens, on=["stay_id", "screen_time"], how="inner")
    parts = []
    for d in model_dirs.values():
        m = cached_model(d)
        parts.append(explain_at(m, m.model_name, rows, screens))  # (a stay's earlier screens: its trends)
    explanations = pd.concat(parts, ignore_index=True)
    write_part(explanations, explain_dir, "explanations", k)
    return explanations


def _utility_part(k: int, *, split: pd.Series, screens_dir: str, cohort_dir: str, model_dirs: dict):
    """Part ``k``'s ``(predictions, rows)`` over every hourly test row for the PhysioNet utility
    (:func:`sepsiscope.sources.utility_tables` on one part), or None without the challenge label."""
    from ehr.cohort import Cohort
    from evaluation.news2 import news2_predictions
    from sepsiscope.scale.pipeline import _load_screens

    rows = _load_screens(k, screens_dir, split, ("test",), protocol=False)
    if "sepsis_label" not in rows.columns or rows["sepsis_label"].isna().all():
        return None
    part = Cohort.load_partition(cohort_dir, k)
    models = [cached_model(d) for d in model_dirs.values()]
    up = [m.predictions(rows, name=m.model_name, split="test") for m in models]
    up.append(news2_predictions(part.events, part.stays, rows, split="test")[0])
    return pd.concat(up, ignore_index=True), rows[["stay_id", "screen_time", "sepsis_label"]]


def _over_group(ks, splits, name, fn, merge, *, screens_dir, cohort_dir, pred_dir):
    """``merge`` of ``fn(k, predictions, screens, stays)`` over a group's parts, one part read at a time."""
    acc = None
    for k, split in zip(ks, splits):
        got = fn(k, *_tables(k, split, name, screens_dir, cohort_dir, pred_dir))
        acc = merge([acc, got])
    return acc


def _on_part(k, p, s, st, c, **kw):
    return _part_alarms(k, c, s, **kw)


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

    from sepsiscope.scale.pipeline import _has_challenge_rows

    timed = partial(step, enabled=progress, timings=cfg.timings)
    models = [*model_dirs, REFERENCE]
    groups = _groups(n, mapper)
    common = dict(screens_dir=str(screens_dir), cohort_dir=str(cohort_dir), pred_dir=str(out / "parts" / "predictions"))

    def over(name, fn, merge):
        # a tree of merges on the workers: the client receives one result
        return mapper.reduce(merge, mapper.map(_call, [partial(_over_group, g, [split_of[k] for k in g], name, fn, merge)
                                                       for g in groups], **common))

    explain = cfg.explain_alarms and bool(model_dirs)
    utility_part = partial(_utility_part, screens_dir=str(screens_dir), cohort_dir=str(cohort_dir),
                           model_dirs=model_dirs) if _has_challenge_rows(cfg) else None
    with timed("evaluate on counts per partition (thresholds on dev; test; alarms and explanations written per part)"):
        with contextlib.ExitStack() as stack:
            a_tmp = stack.enter_context(parts_directory(out / "parts" / "alarms", "evaluated_alarms", n))
            e_tmp = stack.enter_context(parts_directory(out / "parts" / "explanations", "explanations", n)) \
                if explain else None
            on_part = partial(_on_part, alarms_dir=str(a_tmp), explain_dir=str(e_tmp) if e_tmp else None,
                              model_dirs=model_dirs)
            util = (lambda k: utility_part(k, split=split_of[k])) if utility_part is not None else None
            ev = evaluate_counts(over, models=models, stays=stays, reference=REFERENCE, window_h=cfg.window_h,
                                 silencing_h=cfg.silencing_h, n_boot=cfg.n_boot, subgroup_n_boot=cfg.subgroup_n_boot,
                                 seed=cfg.seed, utility_part=util, on_part=on_part)

    with timed("write run directory"):
        stays.to_parquet(out / "stays.parquet", index=False)
        ev.write(out)
        flow.to_csv(out / "cohort_flow.csv", index=False)
    extra = {"source_info": source_info, "results": ev.headline(),
             "evaluation": {"method": "counts", "bootstrap": "poisson (hash of seed, resample, stay_id)",
                            "score_grid": "2^16 logit bins in [-16, 16] (resamples: 2^12); NEWS2 exact",
                            "paired": ("Evaluated on counts per partition: bootstrap differences on the Poisson "
                                       "resamples; DeLong's test (by stay and screens iid) is exact for the scores "
                                       "rounded to 2^16 logit bins (NEWS2 exact), from each pair's merged "
                                       "histograms and per-stay placement sums"),
                            "platt": "fitted on dev score-bin cells (count and mean logit per bin and label)",
                            "threshold_candidates": getattr(ev, "threshold_candidates", None),
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
