"""The statistician's report: ONE self-contained HTML file from a run directory.

Every figure is a base64 PNG inside the file, tables are HTML, the run's ``run.json`` is
embedded verbatim, and there is no external CSS, JavaScript, font or link: the file reads the
same offline, attached to an e-mail, or years later.

The report renders what :func:`evaluation.summary.evaluate_run` computed and wrote into the run
directory (layout: :mod:`evaluation.rundir`); it computes no table itself, and a missing one is
shown as "not available" with the reason. Figures are drawn from the contract tables by the
Display objects of :mod:`evaluation.displays`. Each section is one function of the run
(``_section_*``), so each can become a template.

Examples
--------
>>> from evaluation.report import write_report
>>> path = write_report("runs/demo")            # doctest: +SKIP
>>> path.name                                   # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation._html import Missing, Page, json_table, na, note, table
from evaluation.displays import (BayesFactorDisplay, DecisionCurveDisplay, PrDisplay, ReliabilityDisplay,
                                 RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.recalibration import calibrate_predictions
from evaluation.rundir import RUN_FILES, Run, find_key, load_run, operating_points_frame

__all__ = ["write_report"]

_PLATT = " (Platt on dev)"


@dataclass
class _Context:
    """The run as the sections see it: contract tables, the evaluated split and the page."""

    run: Run
    page: Page
    window_h: float
    silencing_h: float
    screens: pd.DataFrame | None = None
    stays: pd.DataFrame | None = None
    alarms: pd.DataFrame | None = None
    explanations: pd.DataFrame | None = None
    preds: pd.DataFrame | None = None
    test_preds: pd.DataFrame | None = None
    split: str | None = None
    models: list = field(default_factory=list)
    primary: str | None = None
    ops: pd.DataFrame | None = None
    max_traces: int = 3
    max_explanations: int = 3

    def need(self, *names):
        missing = [self.run.missing(n) for n in names if self.run.get(n) is None]
        if missing:
            raise Missing("; ".join(missing))


def _context(run: Run, page: Page, max_traces: int, max_explanations: int) -> _Context:
    ctx = _Context(run=run, page=page, window_h=float(find_key(run.run_json, "window_h") or 48.0),
                   silencing_h=float(find_key(run.run_json, "silencing_h") or 48.0),
                   screens=run.get("screens.parquet"), stays=run.get("stays.parquet"),
                   alarms=run.get("alarms.parquet"), explanations=run.get("explanations.parquet"),
                   max_traces=max_traces, max_explanations=max_explanations)
    if run.get("operating_points.json") is not None:
        try:
            ctx.ops = operating_points_frame(run.get("operating_points.json"))
        except ValueError as exc:
            run.problems["operating_points.json"] = str(exc)
    preds, screens = run.get("predictions.parquet"), ctx.screens
    if preds is None:
        return ctx
    if screens is not None and "new_data" in screens.columns:
        # The protocol screens only hours with new data: the figures judge the same screens.
        keys = screens.loc[screens["new_data"].fillna(False).astype(bool), ["stay_id", "screen_time"]]
        preds = preds.merge(keys, on=["stay_id", "screen_time"], how="inner")
    ctx.preds = preds
    ctx.split = "test" if "split" in preds.columns and (preds["split"] == "test").any() else None
    ctx.test_preds = preds if ctx.split is None else preds[preds["split"] == ctx.split]
    ctx.models = list(dict.fromkeys(ctx.test_preds["model"]))
    ctx.primary = find_key(run.run_json, "primary_model") or (
        "cpn" if "cpn" in ctx.models else next((m for m in ctx.models if m != "news2"),
                                               ctx.models[0] if ctx.models else None))
    return ctx


def _written(ctx: _Context, name: str) -> str:
    """A table ``evaluate_run`` wrote, as written, or why it is not there."""
    frame = ctx.run.get(name)
    return table(frame) if frame is not None else na(f"{ctx.run.missing(name)} (written by evaluate_run)")


def _section_overview(ctx: _Context) -> str:
    rows = []
    for key in ("created", "started", "finished", "git_commit", "commit", "seed", "source", "version"):
        v = find_key(ctx.run.run_json, key)
        if v is not None and not isinstance(v, dict | list):
            rows.append({"field": key, "value": str(v)})
    if ctx.preds is not None:
        rows += [{"field": "models", "value": ", ".join(ctx.models)},
                 {"field": "evaluated split", "value": ctx.split or "all rows (no split column)"}]
    stays = ctx.stays
    if stays is not None:
        n_sep = int(stays["sepsis"].sum()) if "sepsis" in stays.columns else int(stays["onset_time"].notna().sum())
        rows += [{"field": "stays", "value": str(len(stays))}, {"field": "septic stays", "value": str(n_sep)}]
    rows += [{"field": "alarm window / silencing", "value": f"{ctx.window_h:g} h / {ctx.silencing_h:g} h"}]
    files = pd.DataFrame({"file": RUN_FILES, "status": ["present" if (ctx.run.path / f).is_file() else "missing"
                                                        for f in RUN_FILES]})
    return table(pd.DataFrame(rows)) + "<h3>Files</h3>" + table(files)


def _section_operating_points(ctx: _Context) -> str:
    if ctx.ops is None:
        raise Missing(ctx.run.missing("operating_points.json"))
    return table(ctx.ops)


def _section_discrimination(ctx: _Context) -> str:
    ctx.need("predictions.parquet", "screens.parquet")
    kw = dict(split=ctx.split, operating_points=ctx.ops, drop_intermediate=True)
    roc = RocDisplay.from_frames(ctx.preds, ctx.screens, **kw)
    pr = PrDisplay.from_frames(ctx.preds, ctx.screens, **kw)
    return (ctx.page.figure(roc, "roc") + ctx.page.figure(pr, "precision_recall")
            + note("Shaded: clinically inapplicable (specificity < 90 %, precision < 15 %). "
                   "Markers: operating points."))


def _section_calibration(ctx: _Context) -> str:
    ctx.need("predictions.parquet", "screens.parquet")
    preds, screens = ctx.preds, ctx.screens
    rel = ReliabilityDisplay.from_frames(preds, screens, split=ctx.split)
    score_models = [m for m in ctx.models if m not in rel.mean_predicted]
    shown, extra = preds, ""
    if score_models and ctx.split == "test" and (preds["split"] == "dev").any():
        # Scores (NEWS2) have no probability scale: Platt-map them on dev so they can be compared here.
        cal, _ = calibrate_predictions(preds[preds["model"].isin(score_models)], screens, method="platt-score",
                                       suffix=_PLATT)
        shown = pd.concat([preds, cal[cal["model"].str.endswith(_PLATT)]], ignore_index=True)
        rel = ReliabilityDisplay.from_frames(shown, screens, split=ctx.split)
        extra = note(f"Scores without a probability scale ({', '.join(score_models)}) are drawn after "
                     "Platt scaling fitted on the dev split.")
    if not rel.mean_predicted:
        return na("no model outputs probabilities in [0, 1]")
    dc = DecisionCurveDisplay.from_frames(shown, screens, split=ctx.split, models=list(rel.mean_predicted))
    return (ctx.page.figure(rel, "reliability") + ctx.page.figure(dc, "decision_curve") + extra
            + "<h3>Recalibration (fitted on dev, evaluated on test)</h3>" + _written(ctx, "calibration.csv"))


def _test_alarms(ctx: _Context) -> pd.DataFrame:
    """Alarms of the evaluated split's stays only (alarms carry no split column)."""
    if ctx.test_preds is None or "split" not in ctx.test_preds.columns:
        return ctx.alarms
    return ctx.alarms[ctx.alarms["stay_id"].isin(ctx.test_preds["stay_id"].unique())]


def _section_timeliness(ctx: _Context) -> str:
    out = _written(ctx, "timeliness.csv")
    if ctx.alarms is not None and ctx.stays is not None:
        disp = TrueAlarmTimingDisplay.from_alarms(_test_alarms(ctx), ctx.stays, window_h=ctx.window_h)
        out += ctx.page.figure(disp, "true_alarm_timing") if disp.fraction else na("no true alarms")
    return out


def _trace_threshold(model, alarms, ops):
    """(threshold, alarms or None) for the traces: the model's first operating point."""
    if alarms is not None and (alarms["model"] == model).any():
        a = alarms[alarms["model"] == model]
        if "operating_point" in a.columns:
            first = sorted(a["operating_point"].astype(str).unique())[0]
            thr = float(a.loc[a["operating_point"].astype(str) == first, "threshold"].iloc[0])
        else:
            thr = float(np.sort(a["threshold"].unique())[0])
        return thr, alarms
    if ops is not None and (ops["model"] == model).any():
        return float(ops.loc[ops["model"] == model, "threshold"].iloc[0]), None
    return None, None


def _section_traces(ctx: _Context) -> str:
    ctx.need("predictions.parquet", "stays.parquet")
    primary, stays, test_preds = ctx.primary, ctx.stays, ctx.test_preds
    if primary is None:
        return na("no model in predictions")
    threshold, a = _trace_threshold(primary, ctx.alarms, ctx.ops)
    if threshold is None:
        why = "; ".join(ctx.run.problems.get(n, f"{n} has no rows for it")
                        for n in ("alarms.parquet", "operating_points.json"))
        return na(f"no threshold for model {primary!r}: {why}")
    septic_ids = stays.loc[stays["onset_time"].notna(), "stay_id"]
    cand = test_preds[(test_preds["model"] == primary) & test_preds["stay_id"].isin(septic_ids)]
    ids = list(dict.fromkeys(cand["stay_id"]))
    if a is not None:
        fired = set(a.loc[a["fired"].astype(bool) & (a["model"] == primary)
                          & np.isclose(a["threshold"], threshold), "stay_id"])
        ids = [i for i in ids if i in fired] + [i for i in ids if i not in fired]
    if not ids:
        return na(f"no septic stay scored by {primary!r}")
    figures = "".join(
        ctx.page.figure(RiskTraceDisplay.from_frames(ctx.preds, stays, stay_id=sid, model=primary, alarms=a,
                                                     threshold=threshold, silencing_h=ctx.silencing_h),
                        f"risk_trace_stay_{sid}")
        for sid in ids[:ctx.max_traces])
    source = "alarms from alarms.parquet" if a is not None else "alarms derived from risks by the protocol rule"
    return note(f"Septic stays, model {primary}, threshold {threshold:.4g} ({source}).") + figures


def _section_explanations(ctx: _Context) -> str:
    ctx.need("explanations.parquet")
    ex, alarms, test_preds = ctx.explanations, ctx.alarms, ctx.test_preds
    main = ctx.primary if ctx.primary in set(ex["model"]) else ex["model"].iloc[0]
    keys = ex.loc[ex["model"] == main, ["stay_id", "screen_time"]].drop_duplicates()
    if test_preds is not None and keys["stay_id"].isin(test_preds["stay_id"]).any():
        keys = keys[keys["stay_id"].isin(test_preds["stay_id"])]
    if alarms is not None:
        fired = alarms.loc[alarms["fired"].astype(bool) & (alarms["model"] == main), ["stay_id", "screen_time"]]
        at_alarms = keys.merge(fired.drop_duplicates(), on=["stay_id", "screen_time"], how="inner")
        keys = at_alarms if not at_alarms.empty else keys
    parts = []
    for row in keys.head(ctx.max_explanations).itertuples():
        here = ex[(ex["stay_id"] == row.stay_id) & (ex["screen_time"] == row.screen_time)]
        others = [m for m in dict.fromkeys(here["model"]) if m != main]
        d = BayesFactorDisplay.from_explanations(ex, stay_id=row.stay_id, screen_time=row.screen_time, model=main,
                                                 compare_model=others[0] if others else None)
        parts.append(ctx.page.figure(d, f"explanation_stay_{row.stay_id}"))
    return "".join(parts) if parts else na("no explained screens")


def _section_utility(ctx: _Context) -> str:
    utility = ctx.run.get("utility.json")
    return json_table(utility) if utility is not None else na(ctx.run.missing("utility.json"))


def _section_further_tables(ctx: _Context) -> str:
    return "".join(f"<h3>{html.escape(k)}</h3>{table(v)}" for k, v in ctx.run.frames["tables"].items())


def write_report(run_dir, out=None, *, figures_dir=None, max_traces: int = 3, max_explanations: int = 3) -> Path:
    """Write the self-contained HTML report of a run directory and return its path.

    Parameters
    ----------
    run_dir : path
        A run directory (layout: :mod:`evaluation.rundir`), its tables written by
        :meth:`evaluation.summary.RunEvaluation.write`.
    out : path, optional
        The HTML file to write (default ``run_dir / "report.html"``).
    figures_dir : path, optional
        Also write every figure there as a PNG (for review; the HTML does not refer to them).
    max_traces, max_explanations : int
        How many per-stay risk traces and per-alarm explanation charts to draw.

    Returns
    -------
    Path
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    page = Page(Path(figures_dir) if figures_dir is not None else None)
    ctx = _context(run, page, max_traces, max_explanations)
    sections = [
        ("Run overview", _section_overview),
        ("Main table", lambda c: _written(c, "main_table.csv")),
        ("Operating points", _section_operating_points),
        ("Discrimination (ROC and precision-recall)", _section_discrimination),
        ("Calibration and decision curve", _section_calibration),
        ("Timeliness", _section_timeliness),
        ("Risk traces", _section_traces),
        ("Alarm explanations (Bayes factors)", _section_explanations),
        ("Subgroups", lambda c: _written(c, "subgroups.csv")),
        ("Sensitivity analyses (window and silencing)", lambda c: _written(c, "sensitivity.csv")),
        ("PhysioNet 2019 utility", _section_utility),
    ]
    if run.frames.get("tables"):
        sections.append(("Further tables", _section_further_tables))
    sections.append(("run.json", lambda c: f"<pre id='run-json'>{html.escape(c.run.run_json_text)}</pre>"))
    for title, render in sections:
        page.section(title, lambda render=render: render(ctx))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = page.html(f"SepsisScope report: {run.path.name}",
                    f"Written {now} from {run.path}; {page.n_figures} figure(s). Self-contained: readable offline.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
