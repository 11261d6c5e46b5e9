"""The statistician's report: ONE self-contained HTML file from a run directory.

Every figure is a base64 PNG inside the file, tables are HTML, the run's ``run.json`` is
embedded verbatim, and there is no external CSS, JavaScript, font or link: the file reads the
same offline, attached to an e-mail, or years later.

The report renders what :func:`evaluation.summary.evaluate_run` computed and wrote into the run
directory (layout: :mod:`evaluation.rundir`); it computes no table itself, and a missing one is
shown as "not available" with the reason. Figures are drawn by the Display objects of
:mod:`evaluation.displays` from the written tables (bands, burden, decision curve, explained
alarms) or from the contract tables (curves, reliability, traces). Each section is a builder in
:mod:`evaluation.report_sections` and a Jinja2 template in ``evaluation/templates/sections``,
rendered with autoescaping (:mod:`evaluation.render`). When the run evaluated an external
source, the internal test and the external test are shown side by side.

Examples
--------
>>> from evaluation.report import write_report
>>> path = write_report("runs/demo")            # doctest: +SKIP
>>> path.name                                   # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from evaluation.render import Missing, environment, png_figure
from evaluation.rundir import Run, find_key, load_run, operating_points_frame

__all__ = ["write_report", "ReportContext"]

logger = logging.getLogger(__name__)


@dataclass
class ReportContext:
    """The run as the section builders see it: contract tables, the evaluated splits, the figures."""

    run: Run
    window_h: float
    silencing_h: float
    figures_dir: Path | None = None
    screens: pd.DataFrame | None = None
    stays: pd.DataFrame | None = None
    alarms: pd.DataFrame | None = None
    explanations: pd.DataFrame | None = None
    preds: pd.DataFrame | None = None           # predictions at the protocol's screens (new data)
    splits: list = field(default_factory=list)  # evaluated splits present: "test", "external"
    models: list = field(default_factory=list)
    primary: str | None = None
    ops: pd.DataFrame | None = None
    max_traces: int = 3
    max_explanations: int = 3
    n_figures: int = 0

    def need(self, *names):
        missing = [self.run.missing(n) for n in names if self.run.get(n) is None]
        if missing:
            raise Missing("; ".join(missing))

    def written(self, name: str, by: str = "evaluate_run") -> pd.DataFrame:
        """A table ``evaluate_run`` wrote, or :class:`Missing` saying why it is not there."""
        frame = self.run.get(name)
        if frame is None:
            raise Missing(f"{self.run.missing(name)} (written by {by})")
        return frame

    def split_label(self, split) -> str:
        """``internal test`` / ``external`` with the source each came from (``run.json`` ``evaluated``)."""
        info = (find_key(self.run.run_json, "evaluated") or {}).get(split) or {}
        base = {"test": "internal test", "external": "external test"}.get(split, str(split))
        source = info.get("source") if isinstance(info, dict) else None
        return f"{base} ({source})" if source else base

    def split_preds(self, split) -> pd.DataFrame | None:
        if self.preds is None:
            return None
        return self.preds if "split" not in self.preds.columns or split is None else \
            self.preds[self.preds["split"] == split]

    def figure(self, display, name: str, **plot_kwargs):
        display.plot(**plot_kwargs)
        self.n_figures += 1
        return png_figure(display.figure_, f"{self.n_figures:02d}_{name}", self.figures_dir)


def _context(run: Run, figures_dir, max_traces: int, max_explanations: int) -> ReportContext:
    ctx = ReportContext(run=run, window_h=float(find_key(run.run_json, "window_h") or 48.0),
                        silencing_h=float(find_key(run.run_json, "silencing_h") or 48.0), figures_dir=figures_dir,
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
    if "split" in preds.columns:
        ctx.splits = [s for s in ("test", "external") if (preds["split"] == s).any()]
    ctx.splits = ctx.splits or [None]
    shown = ctx.split_preds(ctx.splits[0])
    ctx.models = list(dict.fromkeys(shown["model"]))
    ctx.primary = find_key(run.run_json, "primary_model") or (
        "cpn" if "cpn" in ctx.models else next((m for m in ctx.models if m != "news2"),
                                               ctx.models[0] if ctx.models else None))
    return ctx


def _render_section(ctx: ReportContext, title: str, template: str, build) -> Markup:
    env = environment()
    try:
        body = env.get_template(f"sections/{template}.html.j2").render(**build(ctx))
    except Missing as exc:
        body = env.get_template("sections/missing.html.j2").render(reason=str(exc))
    except Exception as exc:  # report what failed and carry on with the other sections
        logger.warning("report section %r failed: %s", title, exc, exc_info=True)
        body = env.get_template("sections/missing.html.j2").render(reason=f"{type(exc).__name__}: {exc}")
    return Markup(body)


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
        How many per-stay risk traces and explained alarms (per model, split and kind) to draw.

    Returns
    -------
    Path
    """
    from evaluation.report_sections import SECTIONS as sections

    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    ctx = _context(run, Path(figures_dir) if figures_dir is not None else None, max_traces, max_explanations)
    rendered = []
    for i, (title, template, build) in enumerate(sections, start=1):
        if template == "further_tables" and not run.frames.get("tables"):
            continue
        rendered.append({"anchor": f"s{i}", "title": title, "body": _render_section(ctx, title, template, build)})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = environment().get_template("report.html.j2").render(
        title=f"SepsisScope report: {run.path.name}", sections=rendered,
        meta=f"Written {now} from {run.path}; {ctx.n_figures} figure(s). Self-contained: readable offline.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
