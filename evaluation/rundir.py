"""The run directory: what ``sepsiscope run`` and :meth:`evaluation.summary.RunEvaluation.write` write, and reading it back.

Only ``run.json`` is required; every other piece is optional, and the report's section for a
missing or unreadable one says "not available" with the reason. The tables are computed once,
by :func:`evaluation.summary.evaluate_run`; :func:`evaluation.report.write_report` renders them.

=========================  ====================================================================
``run.json``               resolved config, seeds, package versions, git commit, input hashes.
                           ``window_h`` / ``silencing_h`` are looked up anywhere in it
                           (default 48 h each); ``primary_model`` (default ``cpn``, else the
                           first model that is not ``news2``) picks the model of the traces;
                           ``evaluated`` (``{split: {"source": ..., ...}}``) names where each
                           evaluated split came from.
``predictions.parquet``    contract ``predictions`` (all models, NEWS2 as ``model="news2"``).
                           With a ``split`` column, figures use the evaluated splits: ``test``
                           (internal) and ``external`` (another source), each on its own (the
                           reliability figure maps scores such as NEWS2 to probabilities on
                           ``dev``). When ``screens`` has ``new_data``, only predictions at
                           screens with new data are drawn (the protocol's screens).
``screens.parquet``        contract ``screens``; at least ``stay_id, screen_time, label``
                           (``onset_in_h``, ``hours_since_admit``, ``new_data`` when present).
``stays.parquet``          contract ``stays`` (+ ``split``).
``alarms.parquet``         contract ``alarms`` for the evaluated operating points, optionally
                           with ``operating_point`` and ``split`` columns.
``explanations.parquet``   contract ``explanations`` (CPN Bayes factors, GBDT SHAP values).
``operating_points.json``  ``{model: {operating_point: threshold}}`` or a list of
                           ``{"model", "operating_point", "threshold"}`` records; floats at full
                           precision (a saved threshold is the dev score it was chosen on).
``cohort_flow.csv``        ``stage, n_stays, n_septic, reason``: every stay read, excluded (with
                           the reason), without a screen, septic with onset before the first
                           screen, screened, and per split (written by the pipeline).
``main_table.csv``         the main table with CIs (AUROC, AUPRC, alarms per admission, ...).
``paired_differences.csv`` every pair of models: differences with paired CIs, bootstrap p-values,
                           DeLong's test on the AUROC rows (:mod:`evaluation.paired`).
``curve_bands.csv``        ROC and PR curves with pointwise bootstrap CI bands.
``alarm_burden.csv``       sensitivity, alarms per admission and false per true alarm over a
                           threshold sweep (:mod:`evaluation.burden`).
``decision_curve.csv``     net benefit on Platt-calibrated probabilities (:mod:`evaluation.decision`).
``timeliness.csv``         hours before onset/antibiotic per model and operating point.
``calibration.csv``        Brier/ECE before/after recalibration (fitted on dev, shown on test).
``subgroups.csv``          subgroup metrics with CIs (:mod:`evaluation.subgroup_metrics`).
``sensitivity.csv``        window/silencing/outcome sensitivity analyses.
``alarm_explanations.csv`` true and false alarms, every evidence item in words
                           (:mod:`evaluation.explained_alarms`).
``utility.json``           PhysioNet 2019 normalised utility, ``{split: {model: {op: value}}}``
                           or any object.
``trace_predictions.parquet``  a partitioned run evaluated on counts: the predictions (primary
``trace_alarms.parquet``   model, screens with new data) and alarms of the few septic stays
                           the risk traces draw (:class:`evaluation.count_sections.TraceRows`),
                           read when ``predictions.parquet`` is absent.
``tables/*.csv``           any further tables, shown under "Further tables" (among them
                           ``auroc_by_hours_band.csv`` and ``context_top_share.csv``,
                           :mod:`evaluation.stratified`).
=========================  ====================================================================

Every table ``evaluate_run`` writes carries a ``split`` column (``test``, ``external``).

Contract tables (``predictions``, ``alarms``, ``explanations``) are checked against
``ehr/schema.py`` as they are read; one that fails is recorded as a problem, like an unreadable
file.

Examples
--------
>>> find_key({"config": {"evaluation": {"window_h": 24}}}, "window_h")
24
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ehr.schema import validate
from evaluation.tables import validate_alarms

__all__ = ["RUN_FILES", "Run", "load_run", "find_key", "operating_points_frame"]

logger = logging.getLogger(__name__)

#: Files of a run directory, in the order of the layout table above.
RUN_FILES = ("run.json", "predictions.parquet", "screens.parquet", "stays.parquet", "alarms.parquet",
             "explanations.parquet", "operating_points.json", "cohort_flow.csv", "main_table.csv",
             "paired_differences.csv", "curve_bands.csv", "alarm_burden.csv", "decision_curve.csv",
             "timeliness.csv", "calibration.csv", "subgroups.csv", "sensitivity.csv", "alarm_explanations.csv",
             "utility.json", "trace_predictions.parquet", "trace_alarms.parquet")

#: How each contract table of the run directory is checked when it is read.
_CHECKS = {
    "predictions.parquet": lambda df, src: validate(df, "predictions", source=src),
    "alarms.parquet": lambda df, src: validate_alarms(df, source=src),
    "explanations.parquet": lambda df, src: validate(df, "explanations", source=src),
    "trace_predictions.parquet": lambda df, src: validate(df, "predictions", source=src),
}


@dataclass
class Run:
    """What :func:`load_run` found in a run directory (``None`` for missing pieces)."""

    path: Path
    run_json: dict
    run_json_text: str
    frames: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)

    def get(self, name: str):
        return self.frames.get(name)

    def missing(self, name: str) -> str:
        """Why ``name`` is not available."""
        return self.problems.get(name, f"{name} not found")


def _read(path: Path):
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return json.loads(path.read_text(encoding="utf-8"))


def load_run(run_dir) -> Run:
    """Read every known file of ``run_dir``; unreadable or invalid optional files are recorded, not raised.

    Raises ``FileNotFoundError`` when the directory or its ``run.json`` is missing and
    ``ValueError`` when ``run.json`` is not a JSON object.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    rj = run_dir / "run.json"
    if not rj.is_file():
        raise FileNotFoundError(f"{rj}: every run directory needs a run.json")
    text = rj.read_text(encoding="utf-8")
    try:
        run_json = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{rj}: not valid JSON ({exc})") from exc
    if not isinstance(run_json, dict):
        raise ValueError(f"{rj}: expected a JSON object, got {type(run_json).__name__}")
    run = Run(path=run_dir, run_json=run_json, run_json_text=text)
    # a partitioned run evaluated on counts (evaluation.counts) names the files it does not write
    ev = run_json.get("evaluation")
    skipped = set(ev.get("not_available", ())) if isinstance(ev, dict) and ev.get("method") == "counts" else set()
    for name in RUN_FILES[1:]:
        p = run_dir / name
        if not p.is_file():
            run.problems[name] = (f"{name}: not written by a partitioned run evaluated on counts (its parts are "
                                  "under parts/; no process holds the whole table; --dask-evaluation gather "
                                  "writes it)") if name in skipped else f"{name} not found"
            continue
        try:
            frame = _read(p)
        except Exception as exc:  # a corrupt optional file must not stop the report
            run.problems[name] = f"{name} could not be read: {exc}"
            logger.warning("%s: could not be read: %s", p, exc)
            continue
        try:
            if name in _CHECKS:
                _CHECKS[name](frame, name)
        except ValueError as exc:
            run.problems[name] = f"{name} does not follow the data contract: {exc}"
            logger.warning("%s: %s", p, exc)
            continue
        run.frames[name] = frame
    extra = sorted((run_dir / "tables").glob("*.csv")) if (run_dir / "tables").is_dir() else []
    run.frames["tables"] = {}
    for p in extra:
        try:
            run.frames["tables"][p.stem] = pd.read_csv(p)
        except Exception as exc:
            run.problems[f"tables/{p.name}"] = f"could not be read: {exc}"
    return run


def find_key(obj, key):
    """First value of ``key`` anywhere in a nested JSON object (depth first), else None."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        children = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for v in children:
        found = find_key(v, key)
        if found is not None:
            return found
    return None


def operating_points_frame(obj) -> pd.DataFrame | None:
    """``operating_points.json`` as a frame ``model, operating_point, threshold`` (None for None)."""
    if obj is None:
        return None
    if isinstance(obj, list):
        df = pd.DataFrame(obj)
    elif isinstance(obj, dict):
        rows = []
        for model, pts in obj.items():
            if isinstance(pts, dict):
                rows += [{"model": model, "operating_point": k,
                          "threshold": v["threshold"] if isinstance(v, dict) else v} for k, v in pts.items()]
            else:
                rows.append({"model": model, "operating_point": "threshold", "threshold": pts})
        df = pd.DataFrame(rows)
    else:
        raise ValueError("operating_points.json: expected an object or a list of records")
    if not {"model", "threshold"} <= set(df.columns):
        raise ValueError("operating_points.json: records need 'model' and 'threshold'")
    df["threshold"] = df["threshold"].astype("float64")
    return df
