"""One call that evaluates every model of a run the SepsisFinder way, and the headline table.

:func:`evaluate_run` takes the contract tables of a run whose ``predictions`` and ``screens``
carry a ``split`` column (``dev`` / ``test``): it chooses each model's operating points on ``dev``
(matched to NEWS2 >= 5, NEWS2 >= 7 and 85 % sensitivity), applies them unchanged to ``test``, and
computes on ``test`` the cluster-bootstrap CIs, paired differences against NEWS2, timeliness,
calibration, subgroups, window/silencing sensitivity analyses and (for PhysioNet sources) the
challenge utility. :meth:`RunEvaluation.write` writes the files the report reads
(see :mod:`evaluation.report`).

Examples
--------
>>> ev = evaluate_run(predictions, screens, stays, n_boot=200)   # doctest: +SKIP
>>> ev.main_table[["model", "operating_point", "auroc", "sensitivity"]]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.schema import require_columns

from .bootstrap import bootstrap_metrics
from .metrics import average_precision, roc_auc
from .operating_points import apply_thresholds, choose_thresholds
from .recalibration import calibration_table
from .subgroups import protocol_sensitivity, run_by_subgroup
from .timeliness import timeliness_table
from .utility import utility_from_tables

__all__ = ["RunEvaluation", "evaluate_run", "format_ci"]

log = logging.getLogger(__name__)

_MAIN_METRICS = ("sensitivity", "alarms_per_admission", "false_alarms_per_true_alarm")


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


@dataclass
class RunEvaluation:
    """Everything :func:`evaluate_run` computed (tables are DataFrames)."""

    thresholds: pd.DataFrame
    summary: pd.DataFrame          # protocol summary per (model, operating point) on test
    alarms: pd.DataFrame           # contract alarms on test, with operating_point
    bootstrap: pd.DataFrame        # metric estimates with CIs
    differences: pd.DataFrame      # paired differences against the reference
    main_table: pd.DataFrame
    timeliness: pd.DataFrame
    calibration: pd.DataFrame | None = None
    subgroups: pd.DataFrame | None = None
    sensitivity: pd.DataFrame | None = None
    utility: dict | None = None
    n_boot: int = 0

    def write(self, out) -> None:
        """Write the evaluation files of a run directory."""
        out = Path(out)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        self.main_table.to_csv(out / "main_table.csv", index=False)
        self.thresholds.to_json(out / "operating_points.json", orient="records", indent=1)
        self.timeliness.to_csv(out / "timeliness.csv", index=False)
        self.summary.to_csv(out / "tables" / "protocol_summary.csv", index=False)
        self.bootstrap.to_csv(out / "tables" / "bootstrap_metrics.csv", index=False)
        self.differences.to_csv(out / "tables" / "differences_vs_news2.csv", index=False)
        if self.calibration is not None:
            self.calibration.to_csv(out / "calibration.csv", index=False)
        if self.subgroups is not None:
            self.subgroups.to_csv(out / "subgroups.csv", index=False)
        if self.sensitivity is not None:
            self.sensitivity.to_csv(out / "sensitivity.csv", index=False)
        if self.utility is not None:
            (out / "utility.json").write_text(json.dumps(self.utility, indent=1))

    def headline(self) -> dict:
        """Compact numbers for ``run.json``: AUROC/AUPRC per model and the main table rows."""
        b = self.bootstrap
        out = {}
        for m, g in b[b["operating_point"] == ""].groupby("model"):
            out[m] = {r.metric: [round(r.estimate, 4), round(r.ci_low, 4), round(r.ci_high, 4)]
                      for r in g.itertuples() if r.metric in ("auroc", "auprc")}
        return {"screen_level": out, "main_table": self.main_table.to_dict(orient="records"),
                "utility": self.utility}


def _labels_metric(p: pd.DataFrame, s: pd.DataFrame, st: pd.DataFrame) -> pd.DataFrame:
    """AUROC and AUPRC per model on a subset (for subgroups)."""
    m = p.merge(s[["stay_id", "screen_time", "label"]], on=["stay_id", "screen_time"], how="inner")
    rows = []
    for model, g in m.groupby("model", sort=True):
        y, r = g["label"].to_numpy(), g["risk"].to_numpy()
        ok = 0 < y.sum() < len(y)
        rows.append({"model": model, "auroc": roc_auc(y, r) if ok else np.nan,
                     "auprc": average_precision(y, r) if ok else np.nan, "n_positive": int(y.sum())})
    return pd.DataFrame(rows)


def _main_table(thresholds, boot_table, timeliness, summary) -> pd.DataFrame:
    b = boot_table.set_index(["model", "operating_point", "metric"])

    def cell(model, op, metric, digits=3):
        try:
            r = b.loc[(model, op, metric)]
        except KeyError:
            return "n/a"
        return format_ci(r["estimate"], r["ci_low"], r["ci_high"], digits)

    tl = timeliness.copy()
    rows = []
    for r in thresholds.itertuples():
        row = {"model": r.model, "operating_point": r.operating_point, "threshold": round(float(r.threshold), 6),
               "auroc": cell(r.model, "", "auroc"), "auprc": cell(r.model, "", "auprc")}
        for m in _MAIN_METRICS:
            row[m] = cell(r.model, r.operating_point, m, 2 if m != "sensitivity" else 3)
        if "operating_point" in tl.columns and "model" in tl.columns:
            t = tl[(tl["model"] == r.model) & (tl["operating_point"] == r.operating_point)]
        else:
            t = tl.iloc[0:0]
        if len(t):
            t0 = t.iloc[0]
            med = t0.get("median_onset_h", np.nan)
            row["hours_before_onset_median_iqr"] = (f"{med:.1f} ({t0['q1_onset_h']:.1f}-{t0['q3_onset_h']:.1f})"
                                                    if np.isfinite(med) else "n/a")
            row["n_detected"] = int(t0.get("n_onset", 0))
        else:
            row["hours_before_onset_median_iqr"] = "n/a"
            row["n_detected"] = 0
        s = summary[(summary["model"] == r.model) & (summary["operating_point"] == r.operating_point)]
        for col in ("n_alarms", "n_true_alarms"):
            if len(s) and col in s.columns:
                row[col] = int(s[col].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_run(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                 reference: str = "news2", window_h: float = 48.0, silencing_h: float = 48.0,
                 n_boot: int = 200, seed: int = 0, utility_tables: tuple | None = None,
                 subgroups: bool = True, sensitivity: bool = True) -> RunEvaluation:
    """Evaluate every model of ``predictions`` on the test split with dev-chosen thresholds.

    Parameters
    ----------
    predictions, screens : DataFrame
        Contract tables with a ``split`` column holding ``dev`` and ``test``.
    stays : DataFrame
        Contract ``stays`` table.
    reference : str
        NEWS2's model name: its cut-offs 5 and 7 define the matched operating points.
    utility_tables : (predictions, screens), optional
        Test-split tables over *every* hourly row including post-onset ones, with ``sepsis_label``
        (PhysioNet sources): the challenge utility is computed at each operating point.
    """
    for name, df in (("predictions", predictions), ("screens", screens)):
        require_columns(df, ["split"], table=name, purpose="(dev/test) to evaluate a run")
    dev_p, test_p = (predictions[predictions["split"] == s] for s in ("dev", "test"))
    dev_s, test_s = (screens[screens["split"] == s] for s in ("dev", "test"))
    if dev_p.empty or test_p.empty:
        raise ValueError("predictions need rows in both the 'dev' and the 'test' split")
    thresholds = choose_thresholds(dev_p, dev_s, stays, reference=reference, silencing_h=silencing_h,
                                   window_h=window_h)
    applied = apply_thresholds(thresholds, test_p, test_s, stays, silencing_h=silencing_h,
                               window_h=window_h, check_range=False)
    # a dev threshold outside the test score range is a legitimate result (e.g. no alarm)
    boot = bootstrap_metrics(test_p, test_s, stays, thresholds=thresholds, reference=reference,
                             n_resamples=n_boot, seed=seed, window_h=window_h, silencing_h=silencing_h,
                             check_range=False)
    timeliness = timeliness_table(applied.alarms, stays, window_h=window_h, reference=reference)
    main = _main_table(thresholds, boot.table, timeliness, applied.summary)
    cal = None
    try:
        cal = calibration_table(predictions, screens, method="platt")
    except ValueError as exc:  # e.g. a split without positives
        log.warning("calibration skipped: %s", exc)
    sub = run_by_subgroup(_labels_metric, test_p, test_s, stays) if subgroups else None
    sens = protocol_sensitivity(thresholds, test_p, test_s, stays) if sensitivity else None
    util = None
    if utility_tables is not None:
        up, us = utility_tables
        util = {}
        for r in thresholds.itertuples():
            res = utility_from_tables(up, us, threshold=float(r.threshold), model=r.model,
                                      missing="negative")
            util.setdefault(r.model, {})[r.operating_point] = round(float(res["utility"]), 4)
    return RunEvaluation(thresholds=thresholds, summary=applied.summary, alarms=applied.alarms,
                         bootstrap=boot.table, differences=boot.differences, main_table=main,
                         timeliness=timeliness, calibration=cal, subgroups=sub, sensitivity=sens,
                         utility=util, n_boot=n_boot)
