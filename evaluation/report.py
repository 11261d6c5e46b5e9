"""The statistician's report: ONE self-contained HTML file from a run directory.

Every figure is a base64 PNG inside the file, tables are HTML, the run's ``run.json`` is
embedded verbatim, and there is no external CSS, JavaScript, font or link: the file reads the
same offline, attached to an e-mail, or years later.

Run-directory layout (what ``sepsiscope run`` writes and :func:`write_report` reads)
----------------------------------------------------------------------------------
Only ``run.json`` is required; every other piece is optional and its section says
"not available" (with the reason) when it is missing or unreadable.

=========================  ====================================================================
``run.json``               resolved config, seeds, package versions, git commit, input hashes.
                           ``window_h`` / ``silencing_h`` are looked up anywhere in it
                           (default 48 h each); ``primary_model`` (default ``cpn``, else the
                           first model that is not ``news2``) picks the model of the traces.
``predictions.parquet``    contract ``predictions`` (all models, NEWS2 as ``model="news2"``).
                           With a ``split`` column, figures and computed tables use ``test``
                           rows; calibration is fitted on ``dev``. When ``screens`` has
                           ``new_data``, only predictions at screens with new data are used
                           (the protocol's screens).
``screens.parquet``        contract ``screens``; at least ``stay_id, screen_time, label``
                           (``onset_in_h``, ``hours_since_admit``, ``new_data`` when present).
``stays.parquet``          contract ``stays``.
``alarms.parquet``         contract ``alarms`` for the evaluated operating points, optionally
                           with an ``operating_point`` column naming each threshold.
``explanations.parquet``   contract ``explanations`` (CPN Bayes factors, GBDT SHAP values).
``operating_points.json``  ``{model: {operating_point: threshold}}`` or a list of
                           ``{"model", "operating_point", "threshold"}`` records.
``main_table.csv``         the main table with CIs (AUROC, AUPRC, alarms per admission, ...),
                           shown as written; without it the report computes point estimates.
``timeliness.csv``         hours before onset/antibiotic per model and operating point;
                           computed from ``alarms`` + ``stays`` when absent.
``calibration.csv``        Brier/ECE before/after recalibration; computed when predictions
                           carry ``dev`` and ``test`` splits.
``subgroups.csv``          subgroup analyses (``evaluation.subgroups.run_by_subgroup`` output).
``sensitivity.csv``        window/silencing/outcome sensitivity analyses.
``utility.json``           PhysioNet 2019 normalised utility, ``{model: value}`` or any object.
``tables/*.csv``           any further tables, shown under "Further tables".
=========================  ====================================================================

Examples
--------
>>> from evaluation.report import write_report
>>> path = write_report("runs/demo")            # doctest: +SKIP
>>> path.name                                   # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.recalibration import calibrate_predictions, calibration_table
from evaluation.displays import (BayesFactorDisplay, DecisionCurveDisplay, PrDisplay, ReliabilityDisplay,
                                 RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.subgroups import define_subgroups, protocol_sensitivity, run_by_subgroup
from evaluation.timeliness import timeliness_table

__all__ = ["write_report", "load_run", "Run", "RUN_FILES"]

logger = logging.getLogger(__name__)

#: Files of a run directory the report knows, in the order of the layout table above.
RUN_FILES = ("run.json", "predictions.parquet", "screens.parquet", "stays.parquet", "alarms.parquet",
             "explanations.parquet", "operating_points.json", "main_table.csv", "timeliness.csv",
             "calibration.csv", "subgroups.csv", "sensitivity.csv", "utility.json")

_NA = "not available"


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


def load_run(run_dir) -> Run:
    """Read every known file of ``run_dir``; unreadable optional files are recorded, not raised.

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
    for name in RUN_FILES[1:]:
        p = run_dir / name
        if not p.is_file():
            run.problems[name] = f"{name} not found"
            continue
        try:
            if name.endswith(".parquet"):
                run.frames[name] = pd.read_parquet(p)
            elif name.endswith(".csv"):
                run.frames[name] = pd.read_csv(p)
            else:
                run.frames[name] = json.loads(p.read_text(encoding="utf-8"))
        except Exception as exc:  # a corrupt optional file must not stop the report
            run.problems[name] = f"{name} could not be read: {exc}"
            logger.warning("%s: could not be read: %s", p, exc)
    extra = sorted((run_dir / "tables").glob("*.csv")) if (run_dir / "tables").is_dir() else []
    run.frames["tables"] = {}
    for p in extra:
        try:
            run.frames["tables"][p.stem] = pd.read_csv(p)
        except Exception as exc:
            run.problems[f"tables/{p.name}"] = f"could not be read: {exc}"
    return run


# ----------------------------------------------------------------------------- helpers


def _find_key(obj, key):
    """First value of ``key`` anywhere in a nested JSON object (depth first)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def _png(fig, name: str, figures_dir: Path | None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no URL in the file
    data = buf.getvalue()
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        (figures_dir / f"{name}.png").write_bytes(data)
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _fmt(x):
    if isinstance(x, float | np.floating):
        if np.isnan(x):
            return ""
        return f"{x:.4g}"
    return x


def _table(df: pd.DataFrame, max_rows: int = 200) -> str:
    if df is None or df.empty:
        return f"<p class='na'>{_NA}: the table is empty</p>"
    more = len(df) - max_rows
    df = df.head(max_rows)
    body = df.map(_fmt).to_html(index=False, escape=True, border=0, classes="tbl", na_rep="")
    if more > 0:
        body += f"<p class='na'>{more} more row(s) not shown</p>"
    return body


def _na(reason: str) -> str:
    return f"<p class='na'>{_NA}: {html.escape(reason)}</p>"


def _json_table(obj) -> str:
    if isinstance(obj, dict) and all(not isinstance(v, dict | list) for v in obj.values()):
        return _table(pd.DataFrame({"key": list(obj), "value": list(obj.values())}))
    if isinstance(obj, dict) and all(isinstance(v, dict) for v in obj.values()):
        return _table(pd.DataFrame.from_dict(obj, orient="index").rename_axis("model").reset_index())
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return _table(pd.DataFrame(obj))
    return f"<pre>{html.escape(json.dumps(obj, indent=2, default=str))}</pre>"


def _operating_points(obj) -> pd.DataFrame | None:
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


class _Builder:
    """Collects sections; each one is computed inside a guard so one failure never stops the report."""

    def __init__(self, figures_dir: Path | None):
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.figures_dir = figures_dir
        self.n_figures = 0

    def section(self, title: str, fn: Callable[[], str]):
        anchor = "s" + str(len(self.toc) + 1)
        self.toc.append((anchor, title))
        try:
            body = fn()
        except _Missing as exc:
            body = _na(str(exc))
        except Exception as exc:  # report what failed and carry on with the other sections
            logger.warning("report section %r failed: %s", title, exc, exc_info=True)
            body = _na(f"{type(exc).__name__}: {exc}")
        self.parts.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>")

    def figure(self, display, name: str, **plot_kwargs) -> str:
        display.plot(**plot_kwargs)
        self.n_figures += 1
        return _png(display.figure_, f"{self.n_figures:02d}_{name}", self.figures_dir)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.tbl{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.tbl th,table.tbl td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
table.tbl th{background:#f2f2f2} table.tbl td:first-child{text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.75em;color:#777;text-align:center}
.na{color:#a33;font-style:italic} pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
nav ol{columns:2;font-size:.9em} .meta{color:#555;font-size:.9em}
"""


# ----------------------------------------------------------------------------- main entry


def write_report(run_dir, out=None, *, figures_dir=None, max_traces: int = 3, max_explanations: int = 3,
                 compute_missing: bool = True) -> Path:
    """Write the self-contained HTML report of a run directory and return its path.

    Parameters
    ----------
    run_dir : path
        A run directory with the layout of this module's docstring.
    out : path, optional
        The HTML file to write (default ``run_dir / "report.html"``).
    figures_dir : path, optional
        Also write every figure there as a PNG (for review; the HTML does not refer to them).
    max_traces, max_explanations : int
        How many per-stay risk traces and per-alarm explanation charts to draw.
    compute_missing : bool, default True
        Compute point-estimate tables (main table, timeliness, calibration, subgroups,
        sensitivity) from the contract tables when the pipeline did not write them; ``False``
        says "not available" instead. Figures are always computed.

    Returns
    -------
    Path
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    b = _Builder(Path(figures_dir) if figures_dir is not None else None)

    window_h = float(_find_key(run.run_json, "window_h") or 48.0)
    silencing_h = float(_find_key(run.run_json, "silencing_h") or 48.0)
    preds, screens, stays = run.get("predictions.parquet"), run.get("screens.parquet"), run.get("stays.parquet")
    alarms, expl = run.get("alarms.parquet"), run.get("explanations.parquet")
    ops = None
    if run.get("operating_points.json") is not None:
        try:
            ops = _operating_points(run.get("operating_points.json"))
        except ValueError as exc:
            run.problems["operating_points.json"] = str(exc)
    if preds is not None and screens is not None and "new_data" in screens.columns:
        # The protocol screens only hours with new data: the figures judge the same screens.
        keys = screens.loc[screens["new_data"].fillna(False).astype(bool), ["stay_id", "screen_time"]]
        preds = preds.merge(keys, on=["stay_id", "screen_time"], how="inner")
    split = "test" if preds is not None and "split" in preds.columns and (preds["split"] == "test").any() else None
    test_preds = preds if split is None or preds is None else preds[preds["split"] == split]
    models = list(dict.fromkeys(test_preds["model"])) if test_preds is not None else []
    primary = _find_key(run.run_json, "primary_model") or (
        "cpn" if "cpn" in models else next((m for m in models if m != "news2"), models[0] if models else None))

    def need(*names):
        missing = [run.problems.get(n, f"{n} not found") for n in names if run.get(n) is None]
        if missing:
            raise _Missing("; ".join(missing))

    # --- overview
    def overview():
        rows = []
        for key in ("created", "started", "finished", "git_commit", "commit", "seed", "source", "version"):
            v = _find_key(run.run_json, key)
            if v is not None and not isinstance(v, dict | list):
                rows.append({"field": key, "value": str(v)})
        if preds is not None:
            rows += [{"field": "models", "value": ", ".join(models)},
                     {"field": "evaluated split", "value": split or "all rows (no split column)"}]
        if stays is not None:
            n_sep = int(stays["sepsis"].sum()) if "sepsis" in stays.columns else int(stays["onset_time"].notna().sum())
            rows += [{"field": "stays", "value": str(len(stays))}, {"field": "septic stays", "value": str(n_sep)}]
        rows += [{"field": "alarm window / silencing", "value": f"{window_h:g} h / {silencing_h:g} h"}]
        files = pd.DataFrame({"file": RUN_FILES, "status": ["present" if (run.path / f).is_file() else "missing"
                                                            for f in RUN_FILES]})
        return _table(pd.DataFrame(rows)) + "<h3>Files</h3>" + _table(files)

    b.section("Run overview", overview)

    # --- main table
    def main_table():
        if run.get("main_table.csv") is not None:
            return _table(run.get("main_table.csv"))
        if not compute_missing:
            raise _Missing(run.problems.get("main_table.csv", "main_table.csv not found"))
        need("predictions.parquet", "screens.parquet")
        note = ("<p class='na'>main_table.csv not found: point estimates computed by the report, "
                "without confidence intervals.</p>")
        return note + _table(_screen_metrics(test_preds, screens, stays))

    b.section("Main table", main_table)

    def op_section():
        if ops is None:
            raise _Missing(run.problems.get("operating_points.json", "operating_points.json not found"))
        return _table(ops)

    b.section("Operating points", op_section)

    # --- discrimination
    def discrimination():
        need("predictions.parquet", "screens.parquet")
        roc = RocDisplay.from_frames(preds, screens, split=split, operating_points=ops, drop_intermediate=True)
        pr = PrDisplay.from_frames(preds, screens, split=split, operating_points=ops, drop_intermediate=True)
        return (b.figure(roc, "roc") + b.figure(pr, "precision_recall")
                + "<p class='meta'>Shaded: clinically inapplicable (specificity &lt; 90 %, precision &lt; 15 %). "
                  "Markers: operating points.</p>")

    b.section("Discrimination (ROC and precision-recall)", discrimination)

    # --- calibration
    def calibration():
        need("predictions.parquet", "screens.parquet")
        parts = []
        rel = ReliabilityDisplay.from_frames(preds, screens, split=split)
        prob_models = list(rel.mean_predicted)
        score_models = [m for m in models if m not in prob_models]
        shown, note = preds, ""
        if score_models and split == "test" and (preds["split"] == "dev").any():
            # Scores (NEWS2) have no probability scale: Platt-map them on dev so they can be compared here.
            cal, _ = calibrate_predictions(preds[preds["model"].isin(score_models)], screens, method="platt-score",
                                           suffix=" (Platt on dev)")
            shown = pd.concat([preds, cal[cal["model"].str.endswith(" (Platt on dev)")]], ignore_index=True)
            rel = ReliabilityDisplay.from_frames(shown, screens, split=split)
            note = ("<p class='meta'>Scores without a probability scale (" + html.escape(", ".join(score_models))
                    + ") are drawn after Platt scaling fitted on the dev split.</p>")
        if not rel.mean_predicted:
            return _na("no model outputs probabilities in [0, 1]")
        parts.append(b.figure(rel, "reliability"))
        dc = DecisionCurveDisplay.from_frames(shown, screens, split=split, models=list(rel.mean_predicted))
        parts.append(b.figure(dc, "decision_curve") + note)
        if run.get("calibration.csv") is not None:
            parts.append("<h3>Recalibration</h3>" + _table(run.get("calibration.csv")))
        elif compute_missing and "split" in preds.columns and (preds["split"] == "dev").any() and split == "test":
            rows = [calibration_table(preds, screens, method=m, models=prob_models) for m in ("platt", "temperature")
                    if prob_models]
            if score_models:
                rows.append(calibration_table(preds, screens, method="platt-score", models=score_models))
            parts.append("<h3>Recalibration (fitted on dev, evaluated on test)</h3>" + _table(pd.concat(rows)))
        else:
            parts.append("<h3>Recalibration</h3>" + _na("calibration.csv not found and no dev split to fit on"))
        return "".join(parts)

    b.section("Calibration and decision curve", calibration)

    # --- timeliness
    def timeliness():
        parts = []
        if run.get("timeliness.csv") is not None:
            parts.append(_table(run.get("timeliness.csv")))
        elif alarms is not None and stays is not None and compute_missing:
            parts.append("<p class='meta'>Computed by the report from alarms.parquet (first true alarm per "
                         "stay; Mann-Whitney U against news2).</p>"
                         + _table(timeliness_table(_test_alarms(alarms, test_preds), stays, window_h=window_h)))
        else:
            parts.append(_na("; ".join([run.problems.get("timeliness.csv", "timeliness.csv not found")]
                                       + [run.problems.get(n, n) for n in ("alarms.parquet", "stays.parquet")
                                          if run.get(n) is None])))
        if alarms is not None and stays is not None:
            disp = TrueAlarmTimingDisplay.from_alarms(_test_alarms(alarms, test_preds), stays, window_h=window_h)
            parts.append(b.figure(disp, "true_alarm_timing") if disp.fraction else _na("no true alarms"))
        return "".join(parts)

    b.section("Timeliness", timeliness)

    # --- traces
    def traces():
        need("predictions.parquet", "stays.parquet")
        if primary is None:
            return _na("no model in predictions")
        threshold, a = _trace_threshold(primary, alarms, ops)
        if threshold is None:
            why = "; ".join(run.problems.get(n, f"{n} has no rows for it") for n in
                            ("alarms.parquet", "operating_points.json"))
            return _na(f"no threshold for model {primary!r}: {why}")
        septic_ids = stays.loc[stays["onset_time"].notna(), "stay_id"]
        cand = test_preds[(test_preds["model"] == primary) & test_preds["stay_id"].isin(septic_ids)]
        ids = list(dict.fromkeys(cand["stay_id"]))
        if a is not None:
            fired = a[a["fired"].astype(bool) & (a["model"] == primary) & np.isclose(a["threshold"], threshold)]
            ids = [i for i in ids if i in set(fired["stay_id"])] + [i for i in ids if i not in set(fired["stay_id"])]
        if not ids:
            return _na(f"no septic stay scored by {primary!r}")
        parts = []
        for sid in ids[:max_traces]:
            d = RiskTraceDisplay.from_frames(preds, stays, stay_id=sid, model=primary, alarms=a,
                                             threshold=threshold, silencing_h=silencing_h)
            parts.append(b.figure(d, f"risk_trace_stay_{sid}"))
        return ("<p class='meta'>Septic stays, model " + html.escape(str(primary))
                + f", threshold {threshold:.4g}" + (" (alarms from alarms.parquet)" if a is not None else
                                                   " (alarms derived from risks by the protocol rule)")
                + ".</p>" + "".join(parts))

    b.section("Risk traces", traces)

    # --- explanations
    def explanations():
        need("explanations.parquet")
        ex = expl
        main = primary if primary in set(ex["model"]) else ex["model"].iloc[0]
        keys = ex.loc[ex["model"] == main, ["stay_id", "screen_time"]].drop_duplicates()
        if test_preds is not None and keys["stay_id"].isin(test_preds["stay_id"]).any():
            keys = keys[keys["stay_id"].isin(test_preds["stay_id"])]
        if alarms is not None:
            fired = alarms.loc[alarms["fired"].astype(bool) & (alarms["model"] == main), ["stay_id", "screen_time"]]
            k2 = keys.merge(fired.drop_duplicates(), on=["stay_id", "screen_time"], how="inner")
            keys = k2 if not k2.empty else keys
        parts = []
        for row in keys.head(max_explanations).itertuples():
            here = ex[(ex["stay_id"] == row.stay_id) & (ex["screen_time"] == row.screen_time)]
            others = [m for m in dict.fromkeys(here["model"]) if m != main]
            d = BayesFactorDisplay.from_explanations(ex, stay_id=row.stay_id, screen_time=row.screen_time, model=main,
                                                     compare_model=others[0] if others else None)
            parts.append(b.figure(d, f"explanation_stay_{row.stay_id}"))
        return "".join(parts) if parts else _na("no explained screens")

    b.section("Alarm explanations (Bayes factors)", explanations)

    def subgroups():
        if run.get("subgroups.csv") is not None:
            return _table(run.get("subgroups.csv"))
        if not compute_missing:
            raise _Missing(run.problems.get("subgroups.csv", "subgroups.csv not found"))
        need("predictions.parquet", "screens.parquet", "stays.parquet")
        ids = test_preds["stay_id"].unique()
        st, sc = stays[stays["stay_id"].isin(ids)], screens[screens["stay_id"].isin(ids)]
        table = run_by_subgroup(_screen_metrics, test_preds, sc, st, subgroups=define_subgroups(st, sc))
        return ("<p class='meta'>subgroups.csv not found: screen-level point estimates computed by the report "
                "(no CIs). For outcome subgroups (bsi, onset_setting) every non-septic stay is in every level."
                "</p>" + _table(table, max_rows=400))

    b.section("Subgroups", subgroups)

    def sensitivity():
        if run.get("sensitivity.csv") is not None:
            return _table(run.get("sensitivity.csv"))
        if not compute_missing:
            raise _Missing(run.problems.get("sensitivity.csv", "sensitivity.csv not found"))
        need("predictions.parquet", "stays.parquet")
        thr = ops
        if thr is None and alarms is not None:
            cols = ["model", "operating_point", "threshold"] if "operating_point" in alarms.columns else None
            thr = alarms[cols].drop_duplicates() if cols else None
        if thr is None:
            raise _Missing("sensitivity.csv not found and no operating points (operating_points.json, alarms) "
                           "to rerun the protocol with")
        if "operating_point" not in thr.columns:
            thr = thr.assign(operating_point=thr["threshold"].map(lambda t: f"{t:g}"))
        thr = thr[thr["model"].isin(models)]
        table = protocol_sensitivity(thr[["model", "operating_point", "threshold"]], test_preds,
                                     screens[screens["stay_id"].isin(test_preds["stay_id"].unique())]
                                     if screens is not None else None, stays)
        keep = [c for c in ("window_h", "silencing_h", "model", "operating_point", "threshold", "sensitivity",
                            "alarms_per_admission", "false_alarms_per_true_alarm", "n_alarms", "n_true_alarms",
                            "n_detected", "n_septic_screenable") if c in table.columns]
        return ("<p class='meta'>sensitivity.csv not found: the protocol rerun by the report with the fixed "
                "thresholds for alarm windows and silencing periods of 12/24/48 h.</p>" + _table(table[keep]))

    b.section("Sensitivity analyses (window and silencing)", sensitivity)

    b.section("PhysioNet 2019 utility", lambda: _json_table(run.get("utility.json")) if run.get("utility.json")
              is not None else _na(run.problems.get("utility.json", "utility.json not found")))

    if run.frames.get("tables"):
        b.section("Further tables", lambda: "".join(f"<h3>{html.escape(k)}</h3>{_table(v)}"
                                                    for k, v in run.frames["tables"].items()))

    b.section("run.json", lambda: f"<pre id='run-json'>{html.escape(run.run_json_text)}</pre>")

    title = f"SepsisScope report: {run.path.name}"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t in b.toc)
    doc = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
           f"<h1>{html.escape(title)}</h1><p class='meta'>Written {now} from {html.escape(str(run.path))}; "
           f"{b.n_figures} figure(s). Self-contained: readable offline.</p>"
           f"<nav><ol>{toc}</ol></nav>{''.join(b.parts)}</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out


def _screen_metrics(pred: pd.DataFrame, scr: pd.DataFrame, st: pd.DataFrame) -> pd.DataFrame:
    """Per model: screens, positives, AUROC and AUPRC (NaN with one class) on a subset."""
    d = pred.merge(scr[["stay_id", "screen_time", "label"]], on=["stay_id", "screen_time"], how="inner")
    rows = []
    for m, g in d.groupby("model", sort=False):
        y, r = g["label"].to_numpy(), g["risk"].to_numpy()
        two = len(np.unique(y)) == 2
        rows.append({"model": m, "screens": len(g), "positive_screens": int(y.sum()),
                     "auroc": roc_auc_score(y, r) if two else np.nan,
                     "auprc": average_precision_score(y, r) if two else np.nan})
    return pd.DataFrame(rows)


class _Missing(Exception):
    """An optional input is absent: the section says "not available" with this reason."""


def _test_alarms(alarms: pd.DataFrame, test_preds: pd.DataFrame | None) -> pd.DataFrame:
    """Alarms of the evaluated split's stays only (alarms carry no split column)."""
    if test_preds is None or "split" not in test_preds.columns:
        return alarms
    return alarms[alarms["stay_id"].isin(test_preds["stay_id"].unique())]


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
