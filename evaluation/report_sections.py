"""The report's sections: each builder turns the run directory into the variables of its template.

A builder takes the :class:`evaluation.report.ReportContext` and returns the variables of
``templates/sections/<name>.html.j2``; it raises :class:`evaluation.render.Missing` when its
input is absent. Builders only select, arrange and format what :func:`evaluation.summary.evaluate_run`
wrote (and draw figures from it); they compute no statistic. :data:`SECTIONS` lists them in
report order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.displays import (AlarmBurdenDisplay, BayesFactorDisplay, DecisionCurveDisplay, PrDisplay,
                                 ReliabilityDisplay, RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.decision import CALIBRATION_NOTE
from evaluation.recalibration import PLATT_SUFFIX, calibrate_predictions
from evaluation.render import Missing, TableView
from evaluation.rundir import RUN_FILES, find_key

__all__ = ["SECTIONS"]

_PLATT = PLATT_SUFFIX
_METRICS = {"auroc": "AUROC", "auprc": "AUPRC", "sensitivity": "sensitivity",
            "alarms_per_admission": "alarms / admission", "false_alarms_per_true_alarm": "false / true alarm"}


def _by_split(ctx, frame: pd.DataFrame):
    """``(split, label, rows)`` per evaluated split of a written table (one untitled part without a split column)."""
    if "split" not in frame.columns:
        return [(None, None, frame)]
    return [(s, ctx.split_label(s), frame[frame["split"] == s].drop(columns="split"))
            for s in dict.fromkeys(frame["split"])]


def _of_split(frame: pd.DataFrame | None, split):
    """The rows of one split (all rows when the frame has no split column)."""
    if frame is None or split is None or "split" not in frame.columns:
        return frame
    return frame[frame["split"] == split]


def _ci(est, lo, hi, digits=3):
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} ({lo:.{digits}f} to {hi:.{digits}f})"


def overview(ctx) -> dict:
    rj = ctx.run.run_json
    rows = [{"field": k, "value": str(v)} for k in ("created", "started", "finished", "git_commit", "commit", "seed",
                                                    "source", "version")
            if (v := find_key(rj, k)) is not None and not isinstance(v, dict | list)]
    if ctx.preds is not None:
        rows += [{"field": "models", "value": ", ".join(ctx.models)},
                 {"field": "evaluated", "value": "; ".join(ctx.split_label(s) for s in ctx.splits if s)
                  or "all rows (no split column)"}]
    if ctx.stays is not None:
        sep = ctx.stays["sepsis"] if "sepsis" in ctx.stays.columns else ctx.stays["onset_time"].notna()
        rows += [{"field": "stays (all splits)", "value": str(len(ctx.stays))},
                 {"field": "septic stays (all splits)", "value": str(int(sep.sum()))}]
    rows.append({"field": "alarm window / silencing", "value": f"{ctx.window_h:g} h / {ctx.silencing_h:g} h"})
    evaluated = find_key(rj, "evaluated") or {}
    sources = pd.DataFrame([{"split": k, **{kk: str(vv) for kk, vv in v.items()}} for k, v in evaluated.items()
                            if isinstance(v, dict)])
    files = pd.DataFrame({"file": RUN_FILES, "status": [
        ctx.run.problems.get(f, "present") if (ctx.run.path / f).is_file() else "missing" for f in RUN_FILES]})
    return {"fields": TableView.of(pd.DataFrame(rows)), "sources": TableView.of(sources),
            "files": TableView.of(files)}


def cohort_flow(ctx) -> dict:
    return {"flow": TableView.of(ctx.written("cohort_flow.csv", by="the pipeline"))}


def main_table(ctx) -> dict:
    main = ctx.written("main_table.csv")
    side = None
    if "split" in main.columns and main["split"].nunique() > 1:
        wide = main.pivot_table(index=["model", "operating_point"], columns="split", values=list(_METRICS),
                                aggfunc="first", sort=False)
        order = list(dict.fromkeys(main["split"]))
        cols = [(m, s) for m in _METRICS for s in order if (m, s) in wide.columns]
        side = wide[cols].set_axis([f"{_METRICS[m]}: {ctx.split_label(s)}" for m, s in cols], axis=1).reset_index()
    return {"side_by_side": TableView.of(side) if side is not None else None, "main": TableView.of(main)}


def paired(ctx) -> dict:
    table = ctx.written("paired_differences.csv")
    parts = []
    for _, label, t in _by_split(ctx, table):
        digits = np.where(t["metric"].isin(["alarms_per_admission", "false_alarms_per_true_alarm"]), 2, 3)
        view = pd.DataFrame({
            "comparison": t["model_a"] + " − " + t["model_b"], "operating point": t["operating_point"],
            "metric": t["metric"].map(_METRICS).fillna(t["metric"]),
            "a": [f"{v:.{d}f}" for v, d in zip(t["estimate_a"], digits)],
            "b": [f"{v:.{d}f}" for v, d in zip(t["estimate_b"], digits)],
            "difference (95 % CI)": [_ci(e, lo, hi, d) for e, lo, hi, d in
                                     zip(t["difference"], t["ci_low"], t["ci_high"], digits)],
            "p (bootstrap)": t["p_text"]})
        for col, name in (("delong_p_text", "DeLong p (by stay)"), ("delong_p_iid_text", "DeLong p (screens iid)")):
            if col in t.columns:
                view[name] = t[col].fillna("")
        n = int(t["n_resamples"].iloc[0]) if len(t) else 0
        parts.append({"label": label, "table": TableView.of(view, max_rows=500), "n_resamples": n})
    ev = ctx.run.run_json.get("evaluation")
    method = ev.get("paired") if isinstance(ev, dict) and ev.get("method") == "counts" else None
    return {"parts": parts, "method_note": method}


def operating_points(ctx) -> dict:
    if ctx.ops is None:
        raise Missing(ctx.run.missing("operating_points.json"))
    return {"ops": TableView.of(ctx.ops)}


def _bands(ctx, split, curve):
    b = _of_split(ctx.run.get("curve_bands.csv"), split)
    return None if b is None else b[b["curve"] == curve]


def _curves_from_bands(ctx, split):
    """ROC and PR Displays from ``curve_bands.csv`` alone (a partitioned run evaluated on counts has no
    one-file predictions): each curve at its 101 grid points, the AUROC/AUPRC of the bootstrap table,
    the operating points' screen-level rates of the protocol summary."""
    bands = _of_split(ctx.written("curve_bands.csv"), split)
    boot = _of_split(ctx.run.frames.get("tables", {}).get("bootstrap_metrics"), split)
    summary = _of_split(ctx.run.frames.get("tables", {}).get("protocol_summary"), split)
    if boot is None:
        raise Missing("tables/bootstrap_metrics.csv not found (needed with curve_bands.csv when predictions.parquet "
                      "is not there)")
    est = boot[boot["operating_point"].fillna("") == ""].set_index(["model", "metric"])["estimate"]
    roc, pr = bands[bands["curve"] == "roc"], bands[bands["curve"] == "pr"]
    models = list(dict.fromkeys(roc["model"]))
    points = None
    if summary is not None and len(summary):
        points = pd.DataFrame({"model": summary["model"], "label": summary["operating_point"],
                               "threshold": summary["threshold"], "fpr": 1 - summary["screen_specificity"],
                               "tpr": summary["screen_sensitivity"], "precision": summary["screen_precision"],
                               "specificity": summary["screen_specificity"]})
    xs = {m: g.sort_values("x") for m, g in roc.groupby("model", sort=False)}
    ps = {m: g.sort_values("x") for m, g in pr.groupby("model", sort=False)}
    r = RocDisplay(fpr={m: xs[m]["x"].to_numpy() for m in models}, tpr={m: xs[m]["estimate"].to_numpy() for m in models},
                   roc_auc={m: float(est.get((m, "auroc"), np.nan)) for m in models}, operating_points=points)
    p = PrDisplay(precision={m: ps[m]["estimate"].to_numpy() for m in models if m in ps},
                  recall={m: ps[m]["x"].to_numpy() for m in models if m in ps},
                  average_precision={m: float(est.get((m, "auprc"), np.nan)) for m in models if m in ps},
                  prevalence={m: np.nan for m in models if m in ps}, operating_points=points)
    r.bands = {m: tuple(g[c].to_numpy("float64") for c in ("x", "ci_low", "ci_high")) for m, g in xs.items()}
    p.bands = {m: tuple(g[c].to_numpy("float64") for c in ("x", "ci_low", "ci_high")) for m, g in ps.items()}
    return r, p


def discrimination(ctx) -> dict:
    if ctx.run.get("predictions.parquet") is None and ctx.run.get("curve_bands.csv") is not None:
        parts = []
        splits = list(dict.fromkeys(ctx.run.get("curve_bands.csv").get("split", pd.Series([None]))))
        for split in splits:
            roc, pr = _curves_from_bands(ctx, split)
            tag = split or "all"
            parts.append({"label": ctx.split_label(split) if split else None,
                          "figures": [ctx.figure(roc, f"roc_{tag}"), ctx.figure(pr, f"precision_recall_{tag}")]})
        return {"parts": parts, "banded": True, "from_bands": True}
    ctx.need("predictions.parquet", "screens.parquet")
    parts = []
    for split in ctx.splits:
        kw = dict(split=split, operating_points=ctx.ops, drop_intermediate=True)
        roc = RocDisplay.from_frames(ctx.preds, ctx.screens, bands=_bands(ctx, split, "roc"), **kw)
        pr = PrDisplay.from_frames(ctx.preds, ctx.screens, bands=_bands(ctx, split, "pr"), **kw)
        tag = split or "all"
        parts.append({"label": ctx.split_label(split) if split else None,
                      "figures": [ctx.figure(roc, f"roc_{tag}"), ctx.figure(pr, f"precision_recall_{tag}")]})
    return {"parts": parts, "banded": ctx.run.get("curve_bands.csv") is not None, "from_bands": False}


def burden(ctx) -> dict:
    table = ctx.written("alarm_burden.csv")
    summary = ctx.run.frames.get("tables", {}).get("protocol_summary")
    parts = []
    for split, label, t in _by_split(ctx, table):
        disp = AlarmBurdenDisplay.from_table(t, operating_points=_of_split(summary, split))
        parts.append({"label": label, "figure": ctx.figure(disp, f"alarm_burden_{split or 'all'}")})
    return {"parts": parts}


def _decision_figures(ctx, decision, split) -> list:
    d = _of_split(decision, split) if decision is not None else None
    if d is None or not len(d):
        return []
    return [ctx.figure(DecisionCurveDisplay.from_table(d, calibration_note="Platt-calibrated on dev"),
                       f"decision_curve_{split or 'all'}")]


def calibration(ctx) -> dict:
    decision = ctx.run.get("decision_curve.csv")
    reliability = ctx.run.frames.get("tables", {}).get("reliability")
    if ctx.run.get("predictions.parquet") is None and decision is not None:
        # a partitioned run evaluated on counts: the reliability diagram from its bins' sums
        reliability_missing = None if reliability is not None else ctx.run.missing("predictions.parquet")
        splits = list(dict.fromkeys(decision["split"])) if "split" in decision.columns else [None]
        preds = None
    else:
        ctx.need("predictions.parquet", "screens.parquet")
        reliability_missing, splits, preds = None, ctx.splits, ctx.preds
    parts = []
    for split in splits:
        if preds is None:
            figures = []
            r = _of_split(reliability, split) if reliability is not None else None
            if r is not None and len(r):
                g = {m: x for m, x in r.groupby("model", sort=False)}
                rel = ReliabilityDisplay(mean_predicted={m: x["mean_predicted"].to_numpy() for m, x in g.items()},
                                         fraction_positive={m: x["fraction_positive"].to_numpy() for m, x in g.items()},
                                         counts={m: x["n"].to_numpy() for m, x in g.items()},
                                         brier={m: float(x["brier"].iloc[0]) for m, x in g.items()},
                                         ece={m: float(x["ece"].iloc[0]) for m, x in g.items()})
                figures.append(ctx.figure(rel, f"reliability_{split or 'all'}"))
            score_models = [m[:-len(_PLATT)] for m in (g if r is not None and len(r) else {}) if m.endswith(_PLATT)]
            parts.append({"label": ctx.split_label(split) if split else None,
                          "figures": figures + _decision_figures(ctx, decision, split), "score_models": score_models})
            continue
        rel = ReliabilityDisplay.from_frames(preds, ctx.screens, split=split)
        score_models = [m for m in ctx.models if m not in rel.mean_predicted]
        if score_models and split and (preds["split"] == "dev").any():
            # scores (NEWS2) have no probability scale: drawn after Platt scaling fitted on dev
            cal, _ = calibrate_predictions(preds[preds["model"].isin(score_models)], ctx.screens,
                                           method="platt-score", suffix=_PLATT)
            rel = ReliabilityDisplay.from_frames(pd.concat([preds, cal[cal["model"].str.endswith(_PLATT)]]),
                                                 ctx.screens, split=split)
        figures = [ctx.figure(rel, f"reliability_{split or 'all'}")] if rel.mean_predicted else []
        parts.append({"label": ctx.split_label(split) if split else None,
                      "figures": figures + _decision_figures(ctx, decision, split), "score_models": score_models})
    cal_table = ctx.run.get("calibration.csv")
    return {"parts": parts, "decision_available": decision is not None, "calibration_note": CALIBRATION_NOTE,
            "reliability_missing": reliability_missing,
            "decision_missing": ctx.run.missing("decision_curve.csv"),
            "table": TableView.of(cal_table) if cal_table is not None else None,
            "table_missing": f"{ctx.run.missing('calibration.csv')} (written by evaluate_run)"}


def _split_alarms(ctx, split):
    a = ctx.alarms
    if "split" in a.columns and split:
        return a[a["split"] == split]
    preds = ctx.split_preds(split)
    return a if preds is None else a[a["stay_id"].isin(preds["stay_id"].unique())]


def timeliness(ctx) -> dict:
    table = ctx.written("timeliness.csv")
    figures = []
    lead = ctx.run.frames.get("tables", {}).get("true_alarm_lead_times")
    if ctx.alarms is not None and ctx.stays is not None:
        for split in ctx.splits:
            disp = TrueAlarmTimingDisplay.from_alarms(_split_alarms(ctx, split), ctx.stays, window_h=ctx.window_h)
            if disp.fraction:
                figures.append(ctx.figure(disp, f"true_alarm_timing_{split or 'all'}"))
    elif lead is not None and len(lead):
        # a partitioned run evaluated on counts: every true alarm's lead time, gathered from its parts
        for split in (list(dict.fromkeys(lead["split"])) if "split" in lead.columns else [None]):
            disp = TrueAlarmTimingDisplay.from_lead_times(_of_split(lead, split), window_h=ctx.window_h)
            if disp.fraction:
                figures.append(ctx.figure(disp, f"true_alarm_timing_{split or 'all'}"))
    return {"table": TableView.of(table), "figures": figures}


def traces(ctx) -> dict:
    preds, a, primary, split = ctx.preds, ctx.alarms, ctx.primary, ctx.splits[0] if ctx.splits else None
    source_file = "alarms.parquet"
    rows = ctx.run.get("trace_predictions.parquet")
    if preds is None and rows is not None:
        # a partitioned run evaluated on counts: the few stays' rows it gathered from its parts
        preds, a, source_file = rows, ctx.run.get("trace_alarms.parquet"), "trace_alarms.parquet"
        split = next((s for s in ("test", "external") if "split" in rows.columns and (rows["split"] == s).any()),
                     None)
        models = list(dict.fromkeys(rows["model"]))
        primary = find_key(ctx.run.run_json, "primary_model") or (models[0] if models else None)
    else:
        ctx.need("predictions.parquet", "stays.parquet")
    ctx.need("stays.parquet")
    stays = ctx.stays
    if primary is None:
        raise Missing("no model in predictions")
    threshold = None
    if a is not None and (a["model"] == primary).any():
        mine = a[a["model"] == primary]
        first = mine["operating_point"].iloc[0] if "operating_point" in mine.columns else None
        threshold = float(mine.loc[mine["operating_point"] == first, "threshold"].iloc[0]) if first is not None \
            else float(np.sort(mine["threshold"].unique())[0])
    elif ctx.ops is not None and (ctx.ops["model"] == primary).any():
        threshold, a = float(ctx.ops.loc[ctx.ops["model"] == primary, "threshold"].iloc[0]), None
    if threshold is None:
        raise Missing(f"no threshold for model {primary!r}: " + "; ".join(
            ctx.run.problems.get(n, f"{n} has no rows for it") for n in ("alarms.parquet", "operating_points.json")))
    test_preds = preds if "split" not in preds.columns or split is None else preds[preds["split"] == split]
    septic = stays.loc[stays["onset_time"].notna(), "stay_id"]
    ids = list(dict.fromkeys(test_preds.loc[(test_preds["model"] == primary) & test_preds["stay_id"].isin(septic),
                                            "stay_id"]))
    if a is not None:
        fired = set(a.loc[a["fired"].astype(bool) & (a["model"] == primary) & np.isclose(a["threshold"], threshold),
                          "stay_id"])
        ids = [i for i in ids if i in fired] + [i for i in ids if i not in fired]
    if not ids:
        raise Missing(f"no septic stay scored by {primary!r}")
    figures = [ctx.figure(RiskTraceDisplay.from_frames(preds, stays, stay_id=sid, model=primary, alarms=a,
                                                       threshold=threshold, silencing_h=ctx.silencing_h),
                          f"risk_trace_stay_{sid}") for sid in ids[:ctx.max_traces]]
    source = f"alarms from {source_file}" if a is not None else "alarms derived from risks by the protocol rule"
    return {"note": f"Septic stays of the {ctx.split_label(split) if split else 'run'}, model {primary}, "
                    f"threshold {threshold:.4g} ({source}).", "figures": figures}


def _alarm_head(g: pd.DataFrame) -> dict:
    r = g.iloc[0]
    scale = "log10 odds" if r["scale"] == "log10" else "log-odds"
    lead = f", {r['hours_before_onset']:.1f} h before onset" if pd.notna(r["hours_before_onset"]) else ""
    kind = "true" if r["true_alarm"] else "false"
    return {"title": f"{r['model']}: {kind} alarm, stay {r['stay_id']} at {r['screen_time']}{lead}",
            "kind": kind,
            "facts": [("risk", f"{r['risk']:.3f}"), ("threshold", f"{r['threshold']:.4g} ({r['operating_point']})"),
                      ("prior", f"{r['prior']:+.2f} {scale}"), ("total", f"{r['total']:+.2f}"),
                      ("needed to alarm", f"{r['needed']:+.2f}")],
            "bayes": r["explanation"] == "bayes_factor"}


def explanations(ctx) -> dict:
    table = ctx.written("alarm_explanations.csv")
    table = table.assign(screen_time=pd.to_datetime(table["screen_time"]))
    alarms = []
    keys = ["split", "model", "true_alarm", "stay_id", "screen_time"]
    for (split, model, _), group in table.groupby(keys[:3], sort=False):
        for _, g in list(group.groupby(keys[3:], sort=False))[:ctx.max_explanations]:
            head = _alarm_head(g)
            items = pd.DataFrame({"evidence": g["feature_label"],
                                  "value": [f"{v:.4g} {u}".strip() if pd.notna(v) else ""
                                            for v, u in zip(g["value"], g["unit"].fillna(""))],
                                  "state": g["state_label"].fillna(""), "age (h)": g["age_h"],
                                  "decay weight": g["weight"]})
            if head["bayes"]:
                items["in context (log10 BF)"], items["alone (log10 BF)"] = g["in_context"], g["alone"]
            else:
                items["contribution (log-odds)"] = g["alone"]
            disp = BayesFactorDisplay.from_explained(g, top_k=15)
            alarms.append({**head, "split": ctx.split_label(split), "table": TableView.of(items),
                           "figure": ctx.figure(disp, f"explanation_{model}_{head['kind']}_alarm_stay_"
                                                      f"{g['stay_id'].iloc[0]}")})
    if not alarms:
        raise Missing("alarm_explanations.csv has no explained alarm")
    return {"alarms": alarms}


def subgroups(ctx) -> dict:
    table = ctx.written("subgroups.csv")
    parts = []
    for _, label, t in _by_split(ctx, table):
        t = t.assign(cell=[_ci(e, lo, hi, 2 if m in ("alarms_per_admission", "false_alarms_per_true_alarm") else 3)
                           for e, lo, hi, m in zip(t["estimate"], t["ci_low"], t["ci_high"], t["metric"])])
        t = t.assign(operating_point=t["operating_point"].fillna(""))
        head = ["subgroup", "level", "n_stays", "n_septic", "n_screens"]
        tables = []
        first_op = next((op for op in dict.fromkeys(t["operating_point"]) if op), None)
        for op, metrics in (("", ("auroc", "auprc")), (first_op, ("sensitivity", "alarms_per_admission"))):
            sel = t[(t["operating_point"] == op) & t["metric"].isin(metrics)] if op is not None else t.iloc[0:0]
            if sel.empty:
                continue
            wide = sel.pivot_table(index=head, columns=["model", "metric"], values="cell", aggfunc="first", sort=False)
            wide.columns = [f"{m} {_METRICS[k]}" for m, k in wide.columns]
            caption = "discrimination (screen level)" if op == "" else f"at the {op} operating point (protocol)"
            tables.append({"caption": caption, "table": TableView.of(wide.reset_index())})
        n = int(t["n_resamples"].dropna().iloc[0]) if t["n_resamples"].notna().any() else 0
        parts.append({"label": label, "tables": tables, "n_resamples": n})
    return {"parts": parts}


def sensitivity(ctx) -> dict:
    return {"table": TableView.of(ctx.written("sensitivity.csv"))}


def utility(ctx) -> dict:
    u = ctx.run.get("utility.json")
    if u is None:
        raise Missing(ctx.run.missing("utility.json"))
    rows = []
    if isinstance(u, dict):
        for k, v in u.items():
            nested = isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())
            for model, ops in (v.items() if nested else [(k, v)]):
                base = {"split": ctx.split_label(k)} if nested else {}
                rows.append({**base, "model": model, **(ops if isinstance(ops, dict) else {"utility": ops})})
    return {"table": TableView.of(pd.DataFrame(rows))}


def further_tables(ctx) -> dict:
    return {"tables": [{"name": k, "table": TableView.of(v)} for k, v in ctx.run.frames["tables"].items()]}


def run_json(ctx) -> dict:
    return {"text": ctx.run.run_json_text}


#: (title, template name, builder) in report order
SECTIONS = [
    ("Run overview", "overview", overview),
    ("Cohort flow", "cohort_flow", cohort_flow),
    ("Main table", "main_table", main_table),
    ("Paired comparisons", "paired", paired),
    ("Operating points", "operating_points", operating_points),
    ("Discrimination (ROC and precision-recall)", "discrimination", discrimination),
    ("Alarm burden against sensitivity", "burden", burden),
    ("Calibration and decision curve", "calibration", calibration),
    ("Timeliness", "timeliness", timeliness),
    ("Risk traces", "traces", traces),
    ("Alarm explanations", "explanations", explanations),
    ("Subgroups", "subgroups", subgroups),
    ("Sensitivity analyses (window and silencing)", "sensitivity", sensitivity),
    ("PhysioNet 2019 utility", "utility", utility),
    ("Further tables", "further_tables", further_tables),
    ("run.json", "run_json", run_json),
]
