"""One call that evaluates every model of a run the SepsisFinder way: every table the report shows.

:func:`evaluate_run` takes the contract tables of a run whose ``predictions`` and ``screens``
carry a ``split`` column: it chooses each model's operating points on ``dev`` (matched to
NEWS2 >= 5, NEWS2 >= 7 and 85 % sensitivity), then applies them unchanged to every evaluated
split (``test``, the internal held-out patients, and ``external``, another source, when
present). On each evaluated split, counting only that split's stays and the protocol's screens
(new data, before onset), it computes the main table with patient-level bootstrap CIs, paired
comparisons of every pair of models with DeLong's test (:mod:`evaluation.paired`), ROC and PR
curves with CI bands, alarm burden against sensitivity (:mod:`evaluation.burden`), decision
curves on Platt-calibrated probabilities (:mod:`evaluation.decision`), calibration, timeliness,
subgroups with CIs (:mod:`evaluation.subgroup_metrics`), window/silencing sensitivity analyses
and (for PhysioNet sources) the challenge utility. Every table carries a ``split`` column.
:meth:`RunEvaluation.write` writes the files the report renders (layout: :mod:`evaluation.rundir`);
the report computes none of them.

Examples
--------
>>> ev = evaluate_run(predictions, screens, stays, n_boot=200)   # doctest: +SKIP
>>> ev.main_table[["split", "model", "operating_point", "auroc", "sensitivity"]]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.artefacts import json_safe
from ehr.schema import require_columns

from .bootstrap import bootstrap_metrics
from .burden import alarm_burden
from .decision import decision_curve_table
from .explained_alarms import alarm_explanations
from .operating_points import apply_thresholds, choose_thresholds
from .paired import paired_comparisons
from .recalibration import calibration_table, reliability_table
from .sensitivity import protocol_sensitivity
from .subgroup_metrics import subgroup_table
from .stratified import auroc_by_hours_band, context_top_share
from .timeliness import alarm_lead_times, timeliness_table
from .utility import utility_from_tables

__all__ = ["EVALUATED_SPLITS", "RunEvaluation", "evaluate_run", "format_ci"]

log = logging.getLogger(__name__)

#: splits evaluated with the dev thresholds, in report order: internal test, then another source
EVALUATED_SPLITS = ("test", "external")

_MAIN_METRICS = ("sensitivity", "alarms_per_admission", "false_alarms_per_true_alarm")
CURVE_POINTS = 101

#: table attribute -> file of the run directory (see evaluation.rundir)
_FILES = {"main_table": "main_table.csv", "timeliness": "timeliness.csv", "paired": "paired_differences.csv",
          "bands": "curve_bands.csv", "burden": "alarm_burden.csv", "decision": "decision_curve.csv",
          "calibration": "calibration.csv", "subgroups": "subgroups.csv", "sensitivity": "sensitivity.csv",
          "explained": "alarm_explanations.csv", "summary": "tables/protocol_summary.csv",
          "bootstrap": "tables/bootstrap_metrics.csv", "hours_bands": "tables/auroc_by_hours_band.csv",
          "context_share": "tables/context_top_share.csv", "reliability": "tables/reliability.csv",
          "true_alarm_lead_times": "tables/true_alarm_lead_times.csv"}


#: the risk traces' rows of a run without predictions.parquet and alarms.parquet (evaluation.count_sections.TraceRows)
TRACE_FILES = ("trace_predictions.parquet", "trace_alarms.parquet")


def format_ci(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """``0.812 (0.790-0.833)``; ``n/a`` for a missing estimate.

    >>> format_ci(0.81234, 0.79, 0.8333)
    '0.812 (0.790-0.833)'
    """
    if estimate is None or not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def write_thresholds(thresholds: pd.DataFrame, path) -> None:
    """``operating_points.json`` with every float at full precision (``repr``), so that a threshold
    read back is the very dev score it was chosen on (pandas' ``to_json`` keeps 10 digits)."""
    records = json_safe(thresholds.to_dict(orient="records"))
    Path(path).write_text(json.dumps(records, indent=1, allow_nan=False), encoding="utf-8")


@dataclass
class RunEvaluation:
    """Everything :func:`evaluate_run` computed; every table has a ``split`` column (DataFrames)."""

    thresholds: pd.DataFrame       # chosen on dev: model, operating_point, threshold, dev_sensitivity
    summary: pd.DataFrame          # protocol summary per (split, model, operating point)
    alarms: pd.DataFrame           # contract alarms of the evaluated splits, with operating_point, split
    bootstrap: pd.DataFrame        # metric estimates with CIs
    paired: pd.DataFrame           # every pair of models: differences with CIs, p-values, DeLong
    main_table: pd.DataFrame
    timeliness: pd.DataFrame
    bands: pd.DataFrame | None = None        # ROC / PR curves with CI bands
    burden: pd.DataFrame | None = None       # alarm burden against sensitivity
    decision: pd.DataFrame | None = None     # net benefit on Platt-calibrated probabilities
    calibration: pd.DataFrame | None = None
    subgroups: pd.DataFrame | None = None
    sensitivity: pd.DataFrame | None = None
    explained: pd.DataFrame | None = None    # see add_explanations
    hours_bands: pd.DataFrame | None = None  # AUROC within bands of hours since admission
    context_share: pd.DataFrame | None = None  # alarms whose top in-context factor is context (add_explanations)
    utility: dict | None = None              # {split: {model: {operating_point: utility}}}
    reliability: pd.DataFrame | None = None  # reliability diagram's bins (counts runs: no one-file predictions)
    true_alarm_lead_times: pd.DataFrame | None = None  # every true alarm (the timing figure without alarms.parquet)
    #: (predictions, alarms) of the risk traces' stays, written without the one-file tables (counts runs)
    trace_rows: tuple | None = None
    n_boot: int = 0
    splits: tuple = ("test",)

    def add_explanations(self, explanations: pd.DataFrame | None, predictions: pd.DataFrame,
                         stays: pd.DataFrame, *, per_kind: int = 3, window_h: float = 48.0) -> None:
        """Pick true and false alarms to explain (:func:`evaluation.explained_alarms.alarm_explanations`)."""
        if explanations is not None and len(explanations):
            pred = predictions[predictions["split"].isin(self.splits)]
            self.explained = alarm_explanations(explanations, self.alarms, pred, stays, per_kind=per_kind,
                                                window_h=window_h)
            self.context_share = context_top_share(explanations, self.alarms)

    def write(self, out) -> None:
        """Write the evaluation files of a run directory."""
        out = Path(out)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        write_thresholds(self.thresholds, out / "operating_points.json")
        for f in fields(self):
            table = getattr(self, f.name)
            if f.name in _FILES and table is not None:
                table.to_csv(out / _FILES[f.name], index=False)
        if self.trace_rows is not None:
            for table, name in zip(self.trace_rows, TRACE_FILES):
                table.to_parquet(out / name, index=False)
        if self.utility is not None:
            (out / "utility.json").write_text(json.dumps(json_safe(self.utility), indent=1))

    def headline(self) -> dict:
        """Compact numbers for ``run.json``: AUROC/AUPRC per split and model, and the main table."""
        b = self.bootstrap
        out: dict = {}
        for (split, m), g in b[b["operating_point"] == ""].groupby(["split", "model"], sort=False):
            out.setdefault(split, {})[m] = {r.metric: [round(r.estimate, 4), round(r.ci_low, 4), round(r.ci_high, 4)]
                                            for r in g.itertuples() if r.metric in ("auroc", "auprc")}
        return {"screen_level": out, "main_table": self.main_table.to_dict(orient="records"),
                "utility": self.utility}


def _main_table(thresholds, boot_table, timeliness, summary) -> pd.DataFrame:
    b = boot_table.set_index(["model", "operating_point", "metric"])

    def cell(model, op, metric, digits=3):
        try:
            r = b.loc[(model, op, metric)]
        except KeyError:
            return "n/a"
        return format_ci(r["estimate"], r["ci_low"], r["ci_high"], digits)

    rows = []
    for r in thresholds.itertuples():
        row = {"model": r.model, "operating_point": r.operating_point, "threshold": round(float(r.threshold), 6),
               "auroc": cell(r.model, "", "auroc"), "auprc": cell(r.model, "", "auprc")}
        for m in _MAIN_METRICS:
            row[m] = cell(r.model, r.operating_point, m, 2 if m != "sensitivity" else 3)
        t = timeliness[(timeliness["model"] == r.model) & (timeliness["operating_point"] == r.operating_point)] \
            if {"model", "operating_point"} <= set(timeliness.columns) else timeliness.iloc[0:0]
        med = t["median_onset_h"].iloc[0] if len(t) else np.nan
        row["hours_before_onset_median_iqr"] = (f"{med:.1f} ({t['q1_onset_h'].iloc[0]:.1f}-"
                                                f"{t['q3_onset_h'].iloc[0]:.1f})" if np.isfinite(med) else "n/a")
        row["n_detected"] = int(t["n_onset"].iloc[0]) if len(t) else 0
        s = summary[(summary["model"] == r.model) & (summary["operating_point"] == r.operating_point)]
        for col in ("n_alarms", "n_true_alarms"):
            if len(s) and col in s.columns:
                row[col] = int(s[col].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def _with_split(table: pd.DataFrame, split: str) -> pd.DataFrame:
    out = table.drop(columns="split", errors="ignore")
    out.insert(0, "split", split)
    return out


def _safely(what: str, fn):
    """An optional table: a ValueError (e.g. a split without positives) is logged and gives None."""
    try:
        return fn()
    except ValueError as exc:
        log.warning("%s skipped: %s", what, exc)
        return None


def _evaluate_split(split, predictions, screens, stays, thresholds, *, reference, window_h, silencing_h, n_boot,
                    subgroup_n_boot, seed, utility_tables, subgroups, sensitivity) -> dict:
    p, s = predictions[predictions["split"] == split], screens[screens["split"] == split]
    sts = stays[stays["stay_id"].isin(s["stay_id"].unique())]  # counts from the evaluated split only
    proto = dict(window_h=window_h, silencing_h=silencing_h)
    # a dev threshold outside this split's score range is a legitimate result (e.g. no alarm)
    applied = apply_thresholds(thresholds, p, s, sts, check_range=False, **proto)
    boot = bootstrap_metrics(p, s, sts, thresholds=thresholds, reference=reference, n_resamples=n_boot, seed=seed,
                             check_range=False, curve_points=CURVE_POINTS, **proto)
    timeliness = timeliness_table(applied.alarms, sts, window_h=window_h, reference=reference)
    fitted = predictions[predictions["split"].isin(["dev", split])]
    out = {"summary": applied.summary, "alarms": applied.alarms, "bootstrap": boot.table, "bands": boot.bands,
           "paired": paired_comparisons(boot, p, s, sts, reference=reference, window_h=window_h),
           "timeliness": timeliness, "main_table": _main_table(thresholds, boot.table, timeliness, applied.summary),
           "burden": alarm_burden(p, s, sts, **proto),
           "decision": _safely("decision curve", lambda: decision_curve_table(fitted, screens, eval_split=split)),
           "calibration": _safely("calibration", lambda: calibration_table(fitted, screens, method="platt",
                                                                         eval_split=split)),
           "reliability": _safely("reliability", lambda: reliability_table(fitted, screens, eval_split=split)),
           # every true alarm, not only the first per stay: the report's timing figure
           "true_alarm_lead_times": alarm_lead_times(applied.alarms, sts, window_h=window_h, first_only=False)
           if len(applied.alarms) else None}
    if "hours_since_admit" in s.columns:  # is the signal physiology or the clock? (evaluation.stratified)
        out["hours_bands"] = auroc_by_hours_band(p, s, sts, window_h=window_h)
    if subgroups:
        out["subgroups"] = subgroup_table(p, s, sts, thresholds=thresholds, n_resamples=subgroup_n_boot, seed=seed,
                                          **proto)
    if sensitivity:
        out["sensitivity"] = protocol_sensitivity(thresholds, p, s, sts)
    if utility_tables and split in utility_tables:
        up, us = utility_tables[split]
        out["utility"] = {}
        for r in thresholds.itertuples():
            res = utility_from_tables(up, us, threshold=float(r.threshold), model=r.model, missing="negative")
            out["utility"].setdefault(r.model, {})[r.operating_point] = round(float(res["utility"]), 4)
    return out


def evaluate_run(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                 reference: str = "news2", window_h: float = 48.0, silencing_h: float = 48.0,
                 n_boot: int = 200, subgroup_n_boot: int | None = None, seed: int = 0,
                 utility_tables: dict | tuple | None = None, subgroups: bool = True,
                 sensitivity: bool = True, splits=None) -> RunEvaluation:
    """Evaluate every model on each evaluated split with thresholds chosen on ``dev``.

    Parameters
    ----------
    predictions, screens : DataFrame
        Contract tables with a ``split`` column holding ``dev`` and at least one evaluated split.
    stays : DataFrame
        Contract ``stays`` table (every split; each evaluation counts only its split's stays).
    reference : str
        NEWS2's model name: its cut-offs 5 and 7 define the matched operating points.
    n_boot, subgroup_n_boot : int
        Bootstrap resamples for the main tables and for each subgroup level (default ``n_boot``).
    utility_tables : dict or tuple, optional
        ``{split: (predictions, screens)}`` over *every* hourly row including post-onset ones,
        with ``sepsis_label`` (PhysioNet sources); a tuple means ``{"test": tuple}``.
    splits : sequence of str, optional
        Splits to evaluate (default: those of :data:`EVALUATED_SPLITS` present in ``predictions``).
    """
    for name, df in (("predictions", predictions), ("screens", screens)):
        require_columns(df, ["split"], table=name, purpose="(dev/test) to evaluate a run")
    present = set(predictions["split"].dropna().unique())
    splits = tuple(s for s in (EVALUATED_SPLITS if splits is None else splits) if s in present)
    if "dev" not in present or not splits:
        raise ValueError("predictions need rows in the 'dev' split and in an evaluated split "
                         f"({', '.join(EVALUATED_SPLITS)}); have {sorted(present)}")
    if isinstance(utility_tables, tuple):
        utility_tables = {"test": utility_tables}
    dev_p, dev_s = predictions[predictions["split"] == "dev"], screens[screens["split"] == "dev"]
    thresholds = choose_thresholds(dev_p, dev_s, stays, reference=reference, silencing_h=silencing_h,
                                   window_h=window_h)
    per_split = {split: _evaluate_split(split, predictions, screens, stays, thresholds, reference=reference,
                                        window_h=window_h, silencing_h=silencing_h, n_boot=n_boot,
                                        subgroup_n_boot=subgroup_n_boot or n_boot, seed=seed,
                                        utility_tables=utility_tables, subgroups=subgroups,
                                        sensitivity=sensitivity)
                 for split in splits}

    def stacked(name):
        parts = [_with_split(t, split) for split, d in per_split.items() if (t := d.get(name)) is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    utility = {split: d["utility"] for split, d in per_split.items() if "utility" in d} or None
    names = ("summary", "alarms", "bootstrap", "paired", "main_table", "timeliness", "bands", "burden", "decision",
             "calibration", "subgroups", "sensitivity", "hours_bands", "reliability", "true_alarm_lead_times")
    return RunEvaluation(thresholds=thresholds, **{n: stacked(n) for n in names}, utility=utility, n_boot=n_boot,
                         splits=splits)
