"""Partition tasks: screens and scores of one part of a partitioned cohort, and their drivers.

Each task reads part ``k`` of its inputs (whole stays: :mod:`ehr.partitions`), does what the
single-process path does to a whole table, and writes part ``k`` of its output into a temporary
folder that :func:`ehr.partitions.parts_directory` renames into place only when every part is
there. A mapper (:mod:`sepsiscope.scale.cluster`) runs the tasks in this process or on Dask.

Screens need the cohort's concept list up front (a rare concept missing from one part must still
be a column of every part): :func:`cohort_concepts` gathers it in a first pass over the events'
``concept`` column.

Examples
--------
>>> import tempfile, pathlib
>>> from ehr.synthetic import write_synthetic
>>> from ehr.partitions import PartitionedTable
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_synthetic(d / "cohort", 40, seed=1, partitions=3)
>>> out, report = build_screens_partitioned(d / "cohort", d / "screens", SerialMapper())
>>> PartitionedTable(out).partitions, report["stays"]
(3, 40)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort, cohort_partitions
from ehr.concepts import concept_names
from ehr.partitions import PartitionedTable, parts_directory, write_part
from ehr.screens import build_screens
from sepsiscope.alarm_explanations import explain_at
from sepsiscope.scale.cluster import SerialMapper

__all__ = ["cohort_concepts", "build_screens_partitioned", "predict_partitioned", "require_partitioned",
           "sum_reports"]


def require_partitioned(cohort_dir) -> int:
    """The part count of a partitioned cohort; a clear error for the one-file layout."""
    n = cohort_partitions(cohort_dir)
    if n is None:
        raise ValueError(f"{cohort_dir}: this cohort is one file per table; --dask needs the partitioned layout "
                         "(write it with `sepsiscope simulate|ingest ... --partitions N`)")
    return n


def _concepts_of_part(k: int, cohort_dir: str) -> set:
    ev = PartitionedTable(Path(cohort_dir) / "events", "events").read(k, columns=["stay_id", "concept"])
    return set(pd.Series(ev["concept"]).dropna().astype(str).unique())


def cohort_concepts(cohort_dir, mapper=None) -> list[str]:
    """Concepts present anywhere in a partitioned cohort's events, in dictionary order."""
    mapper = mapper or SerialMapper()
    n = require_partitioned(cohort_dir)
    present = set().union(*mapper.gather(mapper.map(_concepts_of_part, range(n), cohort_dir=str(cohort_dir))))
    return [c for c in concept_names() if c in present]


def _screens_part(k: int, cohort_dir: str, out: str, horizon_h: float, until_onset: bool, concepts) -> dict:
    part = Cohort.load_partition(cohort_dir, k)
    screens = build_screens(part.events, part.stays, part.cxr, horizon_h=horizon_h, until_onset=until_onset,
                            concepts=list(concepts))
    write_part(screens, out, "screens", k)
    return screens.attrs["build_report"]


def sum_reports(reports: list[dict]) -> dict:
    """Per-part build reports added up (counts summed, settings kept)."""
    out = dict(reports[0]) if reports else {}
    for key in ("stays", "stays_without_events", "events_after_discharge_not_screened", "screens"):
        out[key] = int(sum(r.get(key, 0) for r in reports))
    return out


def build_screens_partitioned(cohort_dir, out, mapper=None, *, horizon_h: float = 48.0,
                              until_onset: bool = True) -> tuple[Path, dict]:
    """Screens of every part of ``cohort_dir`` as a partitioned ``screens`` table at ``out``.

    Part ``k`` of the screens holds the screens of part ``k``'s stays; concatenated and sorted by
    (stay_id, screen_time) they equal :func:`ehr.screens.build_screens` of the whole cohort.
    Returns ``(out, build report summed over parts)``.
    """
    mapper = mapper or SerialMapper()
    n = require_partitioned(cohort_dir)
    concepts = cohort_concepts(cohort_dir, mapper)
    with parts_directory(out, "screens", n) as tmp:
        reports = mapper.gather(mapper.map(_screens_part, range(n), cohort_dir=str(cohort_dir), out=str(tmp),
                                           horizon_h=float(horizon_h), until_onset=bool(until_onset),
                                           concepts=tuple(concepts)))
    return Path(out), sum_reports(reports)


@lru_cache(maxsize=4)
def _model(model_dir: str, stamp: float):
    """A saved model, loaded once per worker process (``stamp``: model.json's mtime, so a rewrite reloads)."""
    from sepsiscope.models import load_model

    return load_model(model_dir)


def cached_model(model_dir):
    """:func:`sepsiscope.models.load_model`, cached in this process per folder and version."""
    model_dir = Path(model_dir)
    return _model(str(model_dir), (model_dir / "model.json").stat().st_mtime)


def _score_part(k: int, screens_dir: str, model_dir: str, out: str, name, explain_out, explain_threshold) -> dict:
    model = cached_model(model_dir)
    screens = PartitionedTable(screens_dir, "screens").read(k)
    pred = model.predictions(screens, name=name)
    write_part(pred, out, "predictions", k)
    n_explained = 0
    if explain_out is not None:
        rows = screens.loc[pred["risk"].to_numpy() >= explain_threshold]
        ex = explain_at(model, name or model.model_name, rows, screens)
        write_part(ex, explain_out, "explanations", k)
        n_explained = len(rows)
    return {"screens": len(screens), "explained": n_explained}


def predict_partitioned(model_dir, screens_dir, out, mapper=None, *, name: str | None = None,
                        explain_out=None, explain_threshold: float = 0.5) -> dict:
    """Score every part of a partitioned screens table with a saved model.

    Writes a partitioned ``predictions`` table at ``out`` and, with ``explain_out``, the
    ``explanations`` of every screen whose risk is at least ``explain_threshold`` (each part
    explained where it was scored). Both appear only when every part is written.
    Returns counts: ``screens``, ``explained``.
    """
    mapper = mapper or SerialMapper()
    n = PartitionedTable(screens_dir, "screens").partitions
    with parts_directory(out, "predictions", n) as tmp:
        if explain_out is None:
            results = mapper.gather(mapper.map(_score_part, range(n), screens_dir=str(screens_dir),
                                               model_dir=str(model_dir), out=str(tmp), name=name,
                                               explain_out=None, explain_threshold=None))
        else:
            with parts_directory(explain_out, "explanations", n) as ex_tmp:
                results = mapper.gather(mapper.map(_score_part, range(n), screens_dir=str(screens_dir),
                                                   model_dir=str(model_dir), out=str(tmp), name=name,
                                                   explain_out=str(ex_tmp),
                                                   explain_threshold=float(explain_threshold)))
    return {key: int(np.sum([r[key] for r in results])) for key in ("screens", "explained")}
