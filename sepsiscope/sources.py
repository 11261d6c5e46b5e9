"""The main job's data sources: read one (raw data or an ingested cohort), exclude, screen; score an external one.

:func:`read_source` reads ``synthetic`` (generated), ``physionet`` / ``mimic`` (raw files) or
``cohort`` (a directory written by ``sepsiscope simulate`` / ``ingest``, read back with
:meth:`ehr.cohort.Cohort.load` instead of re-reading the raw source). :func:`exclude` applies
``--exclusions`` (:mod:`ehr.exclusions`) and records each reason as a cohort-flow row.
:func:`external_split` turns a second source into the ``external`` split: its stays renumbered
when their ids collide with the first source's, its screens built the same way, scored by the
models fitted on the first source and by NEWS2, unchanged (thresholds stay those of the dev split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.screens import build_screens

__all__ = ["SOURCES", "read_source", "cohort_source_name", "exclude", "screen_rows", "utility_tables",
           "ExternalSplit", "external_split"]

#: sources the main job reads
SOURCES = ("synthetic", "physionet", "mimic", "cohort")


def cohort_source_name(path) -> str | None:
    """The ``source`` recorded in a cohort directory's ``cohort.json`` (``synthetic``, ``physionet2019``, ...)."""
    meta = Path(path) / "cohort.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text(encoding="utf-8")).get("meta", {}).get("source")


def _flow(report) -> list:
    """The reader's own cohort-flow rows, where its ingest report records them."""
    return [dict(r) for r in (getattr(report, "flow", None) or [])]


def read_source(source: str, path, *, n_stays: int = 2000, seed: int = 0, definition: str = "sepsis3",
                site: str = "A", allow_missing=()):
    """Return ``(events, stays, cxr or None, info)`` of one source; ``info`` goes into ``run.json``.

    ``info["flow"]`` holds the reader's cohort-flow rows (``stage, n_stays, n_septic, reason``)
    when it records them.
    """
    if source == "synthetic":
        from ehr.synthetic import generate_cohort

        c = generate_cohort(n_stays, seed=seed, site=site)
        label = "synthetic" if site == "A" else f"synthetic, site {site}"
        return c.events, c.stays, c.cxr, {"source": label, "n_stays": n_stays, "site": site}
    if source == "physionet":
        from ehr.sources.physionet import read_physionet

        c = read_physionet(path)
        return c.events, c.stays, None, {"source": "physionet2019", "path": str(path),
                                         "ingest": c.report.to_dict()["counts"], "flow": _flow(c.report)}
    if source == "mimic":
        from ehr.sources.mimic import read_mimic

        c = read_mimic(path, definition=definition, allow_missing=allow_missing)
        return c.events, c.stays, None, {"source": "mimic", "path": str(path), "definition": definition,
                                         "definition_params": c.report.definition,
                                         "ingest": c.report.to_dict()["counts"], "flow": _flow(c.report),
                                         "allowed_missing": list(c.report.allowed_missing)}
    if source == "cohort":
        from ehr.cohort import Cohort

        c = Cohort.load(path)
        made = c.meta.get("source", "unknown") + (f", site {c.meta['site']}" if c.meta.get("site") else "")
        info = {"source": f"cohort ({made})", "path": str(path), "meta": c.meta, "flow": _flow(c.report)}
        return c.events, c.stays, c.cxr, info
    raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


def exclude(events, stays, cxr, exclusions: str | None, info: dict):
    """Apply ``exclusions`` (e.g. ``johnson2018``); returns ``(events, stays, cxr, reasons or None)``.

    The reasons (by ``stay_id``) feed the cohort flow; ``info["exclusions"]`` records the counts
    and the rules skipped for lack of columns.
    """
    if not exclusions:
        return events, stays, cxr, None
    from ehr.exclusions import apply_exclusions

    kept, reasons, skipped = apply_exclusions(stays, exclusions)
    info["exclusions"] = {"name": exclusions, "skipped_rules": skipped,
                          "excluded": {str(k): int(v) for k, v in reasons.value_counts().items()}}
    ids = kept["stay_id"]
    cxr = cxr[cxr["stay_id"].isin(ids)] if cxr is not None else None
    return events[events["stay_id"].isin(ids)], kept, cxr, reasons


def screen_rows(events, stays, cxr, horizon_h: float):
    """``(every hourly row, the protocol's screens before onset)``; PhysioNet's utility needs the former."""
    all_rows = build_screens(events, stays, cxr, horizon_h=horizon_h, until_onset=False)
    return all_rows, all_rows[~(all_rows["onset_in_h"] <= 0)].reset_index(drop=True)


def utility_tables(models: dict, events, stays, rows: pd.DataFrame, split: str, stackers: dict | None = None):
    """``(predictions, rows)`` over every hourly row of ``split`` for the PhysioNet utility, or None
    when the rows carry no challenge label (``sepsis_label``: PhysioNet sources only). Stacking
    models (``stackers``) score from the members' rows."""
    from evaluation.news2 import news2_predictions

    if "sepsis_label" not in rows.columns or rows["sepsis_label"].isna().all():
        return None
    rows = rows[rows["split"] == split]
    up = [m.predictions(rows, name=name, split=split) for name, m in models.items()]
    up.append(news2_predictions(events, stays, rows, split=split)[0])
    if stackers:
        from sepsiscope.stacking import stacker_predictions

        up += stacker_predictions(stackers, pd.concat(up, ignore_index=True), rows, split)
    return pd.concat(up, ignore_index=True), rows


def _id_offset(taken: pd.DataFrame, incoming: pd.DataFrame) -> int:
    """0 when the ids are disjoint, else a power of ten above every id already taken."""
    cols = ["stay_id", "subject_id"]
    if not any(np.isin(incoming[c].to_numpy(), taken[c].to_numpy()).any() for c in cols):
        return 0
    top = int(max(taken[c].max() for c in cols))
    return 10 ** len(str(top + 1))


@dataclass
class ExternalSplit:
    """The second source as the ``external`` split: scored unchanged by the fitted models."""

    predictions: pd.DataFrame
    screens: pd.DataFrame
    stays: pd.DataFrame
    events: pd.DataFrame
    all_rows: pd.DataFrame
    reasons: pd.Series | None
    info: dict
    utility_tables: tuple | None = None
    #: the stays as read, before the exclusions (ids shifted like the rest): the cohort flow's first row
    stays_read: pd.DataFrame | None = None


def external_split(source: str, path, models: dict, taken_stays: pd.DataFrame, *, horizon_h: float,
                   definition: str = "sepsis3", exclusions: str | None = None,
                   stackers: dict | None = None) -> ExternalSplit:
    """Read ``source``, screen it, score it with ``models`` (name -> fitted estimator), NEWS2 and
    the stacking models (``stackers``, from the members' rows).

    Stay and subject ids that collide with ``taken_stays`` are shifted by a power of ten
    (``info["id_offset"]``), so the two sources never share an id in the run directory.
    """
    from evaluation.news2 import news2_predictions

    events, stays_read, cxr, info = read_source(source, path, definition=definition)
    events, stays, cxr, reasons = exclude(events, stays_read, cxr, exclusions, info)
    offset = _id_offset(taken_stays, stays_read)
    if offset:
        shift = {"stay_id": offset, "subject_id": offset}
        events, stays, stays_read = (t.assign(**{c: t[c] + k for c, k in shift.items()})
                                     for t in (events, stays, stays_read))
        cxr = cxr.assign(**{c: cxr[c] + k for c, k in shift.items()}) if cxr is not None else None
        reasons = reasons.set_axis(reasons.index + offset) if reasons is not None else None
    info["id_offset"] = offset
    all_rows, screens = screen_rows(events, stays, cxr, horizon_h)
    stays = stays.assign(split="external")
    screens["split"], all_rows["split"] = "external", "external"
    preds = [m.predictions(screens, name=name, split="external") for name, m in models.items()]
    preds.append(news2_predictions(events, stays, screens, split="external")[0])
    if stackers:
        from sepsiscope.stacking import stacker_predictions

        preds += stacker_predictions(stackers, pd.concat(preds, ignore_index=True), screens, "external")
    utility = utility_tables(models, events, stays, all_rows, "external", stackers)
    return ExternalSplit(predictions=pd.concat(preds, ignore_index=True), screens=screens, stays=stays,
                         events=events, all_rows=all_rows, reasons=reasons, info=info, utility_tables=utility,
                         stays_read=stays_read)
