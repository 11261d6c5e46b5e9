"""CLI commands for the cpn area: ``train cpn`` and ``explain``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from sepsiscope.errors import data_errors
from sepsiscope.options import seed as seed_value
from sepsiscope.outputs import (MODEL_MARKER, check_output_dir, existing_dir, existing_file, read_screens,
                                require_complete_run)

#: the networks shipped with the package (anything else is an XMLBIF path)
NETWORKS = ("physionet", "full")


def _bar(x: float, scale: float = 0.25, width: int = 20) -> str:
    """Text bar for a log10 Bayes factor: '+' raises risk (blue), '-' lowers it (red)."""
    if x is None or not np.isfinite(x):
        return ""
    n = min(width, int(round(abs(x) / scale * 2)))
    return ("+" if x > 0 else "-") * n


def _cell(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def explanation_table(view: dict, threshold: float | None = None) -> str:
    """Plain-text table of one screen's explanation (:func:`sepsiscope.service.views.explanation_view`).

    Bayes factors: each item in context and alone, with value, unit, readable state, age and decay
    weight; then the prior, the total and the posterior (log10 odds), and the threshold.
    """
    if view["kind"] != "bayes_factors":
        lines = [f"{'feature':<34} {'value':>16} {'contribution':>12}"]
        lines += [f"{i['label'][:34]:<34} {_cell(i['value'], '.4g') + ' ' + i['unit']:>16} "
                  f"{i['contribution']:>12.3f}" for i in view["items"]]
        lines.append(f"expected log-odds {view['expected']:.3f}, total {view['total']:.3f}, risk {view['risk']:.3f}")
        return "\n".join(lines)
    lines = [f"{'evidence':<34} {'value':>16} {'state':<18} {'age':>6} {'weight':>6} {'in context':>10} "
             f"{'alone':>7}  bar (in context)"]
    for i in view["items"]:
        yes_no = i["state_label"] in ("yes", "no")  # testing leaves: the state says it all
        value = "" if yes_no else (_cell(i["value"], ".4g") + " " + i["unit"]).strip()
        age = "" if i["age_h"] is None else f"{i['age_h']:.1f} h"
        lines.append(f"{i['label'][:34]:<34} {value:>16} {i['state_label'][:18]:<18} {age:>6} "
                     f"{_cell(i['weight'], '.2f'):>6} {i['in_context']:>10.3f} {i['alone']:>7.3f}  "
                     f"{_bar(i['in_context'])}")
    lines.append(f"prior log10 odds {view['prior']:.3f} + total log10 B(E) {view['total']:.3f} = posterior "
                 f"{view['posterior']:.3f}: risk {view['risk']:.3f}"
                 + (f" (threshold {threshold:.3f}: {'alarm' if view['risk'] >= threshold else 'no alarm'})"
                    if threshold is not None else ""))
    return "\n".join(lines)


def _explain_sources(run, model, screens):
    """(model directory, screens parquet, threshold or None) from --run and/or --model/--screens."""
    threshold = None
    if run is not None:
        require_complete_run(run, "--run")
        model = model or run / "models" / "cpn"
        screens = screens or run / "test_screens.parquet"
        if not screens.exists():
            raise typer.BadParameter(f"{run} has no test_screens.parquet (runs before this version kept only "
                                     "labels); pass --screens with a screens table (`sepsiscope screens COHORT`)")
        ops = run / "operating_points.json"
        if ops.exists():
            import json

            from sepsiscope.models import model_name_of

            name = model_name_of(existing_dir(model, "--model", "model folder"))
            with data_errors(ops):
                records = [r for r in json.loads(ops.read_text()) if r.get("operating_point") == "news2>=5"
                           and r.get("model") == name]
                threshold = float(records[0]["threshold"]) if records else None
    if model is None:
        raise typer.BadParameter("give --run RUN, or --model DIR")
    existing_dir(model, "--model", "model folder")
    return model, screens, threshold


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""

    @train_app.command("cpn")
    def train_cpn(
        screens: Path = typer.Option(..., help="screens parquet (ehr.schema 'screens')"),
        out: Path = typer.Option(..., help="model directory to write (replaced as a whole)"),
        network: str = typer.Option("physionet", help="'physionet', 'full' or an XMLBIF path"),
        max_iter: int = typer.Option(30, min=1, max=10_000, help="EM iterations"),
        discriminative_iter: int = typer.Option(40, min=0, max=10_000, help="discriminative refinement steps after "
                                                "EM (0: EM only)"),
        max_rows: Optional[int] = typer.Option(None, min=1, help="fit on at most this many screens, drawn by "
                                               "stay (default: every screen)"),
        seed: int = typer.Option(0, callback=seed_value, help="random seed"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ):
        """Fit the causal probabilistic network on a screens table."""
        from cpn import SepsisCPN
        from ehr.estimator import Labels
        from sepsiscope.runinfo import run_json_text

        if network not in NETWORKS:
            from cpn.structure import load_network

            with data_errors(existing_file(network, "--network")):
                load_network(network)
        df = read_screens(screens, min_stays=2)
        check_output_dir(out, marker=MODEL_MARKER, inputs={"--screens": screens, "--network": Path(network)})
        if progress:
            typer.echo(f"fitting CPN ({network}) on {len(df):,} screens ...")
        with data_errors(screens):
            y = Labels.from_screens(df).y
            if y.min() == y.max():
                raise ValueError(f"every screen has label {y[0]} (onset within 48 h): the CPN needs septic and "
                                 "non-septic screens")
            model = SepsisCPN(network, max_iter=max_iter, max_rows=max_rows, random_state=seed,
                              discriminative_iter=discriminative_iter).fit(df)
        used = {"n_train_rows": model.n_train_rows_, "n_screens": len(df)}
        run = run_json_text({"command": "train cpn", "params": model.get_params()}, inputs={"screens": screens},
                            seeds={"model": seed}, extra={"complete": True, **used})
        model.save(out, attachments={"run.json": run})
        typer.echo(f"trained on {model.n_train_rows_:,} of {len(df):,} screens"
                   + ("" if model.n_train_rows_ == len(df) else f" (--max-rows {max_rows:,}, drawn by stay)"))
        typer.echo(f"wrote {out} (EM log-likelihood {model.em_history_[-1]:.4f}, "
                   f"{len(model.em_history_)} iterations)")
        _print_half_lives(model)

    @app.command("explain")
    def explain(
        stay: Optional[int] = typer.Argument(None, help="stay id to explain; omit to print a CPN's half-lives"),
        run: Optional[Path] = typer.Option(None, help="run directory: its models/cpn and test_screens.parquet"),
        model: Optional[Path] = typer.Option(None, help="model directory (default with --run: RUN/models/cpn)"),
        screens: Optional[Path] = typer.Option(None, help="screens parquet holding the stay"),
        at: Optional[str] = typer.Option(None, help="hours since admission (e.g. 99) or a time; default: the "
                                         "highest-risk screen"),
        predictions: Optional[Path] = typer.Option(None, help="a stack: its members' predictions parquet"),
    ):
        """Print one screen's explanation (Bayes factors in context and alone), or a CPN's half-lives
        (a stack: its coefficients, and with --predictions one screen's member contributions).

        Reads only the asked stay from the screens (a parquet filter on stay_id).
        """
        from ehr.schema import SchemaError
        from sepsiscope.models import load_scorer
        from sepsiscope.service.views import explanation_view
        from sepsiscope.stay_screens import KEY_COLUMNS, pick_screen, read_stay

        model, screens, threshold = _explain_sources(run, model, screens)
        with data_errors(model):
            m = load_scorer(model)  # a CPN is read without scikit-learn: a one-shot call stays fast
        if getattr(m, "reads_predictions", False):
            from sepsiscope.commands.stack import explain_stack

            return explain_stack(m, stay, predictions, at)
        if stay is None:
            if not hasattr(m, "half_lives_"):
                raise typer.BadParameter("give a stay to explain")
            _print_half_lives(m)
            return
        if screens is None:
            raise typer.BadParameter("--screens (or --run) is needed to explain a stay")
        import pyarrow.parquet as pq

        with data_errors(existing_file(screens, "--screens")):
            have = set(pq.read_schema(screens).names)
        missing = [c for c in m.required_columns if c not in have]
        if missing:
            # e.g. a run directory's screens.parquet, which keeps only keys, labels and covariates
            raise typer.BadParameter(f"{screens}: missing column(s) {missing[:8]} that the model reads; pass a "
                                     "full screens table (`sepsiscope screens COHORT`), or read the run's "
                                     "explanations.parquet")
        columns = [c for c in dict.fromkeys([*KEY_COLUMNS, *m.required_columns]) if c in have]
        rows = read_stay(screens, stay, columns=columns)
        if rows.empty:
            where = " (the run keeps the test split's screens only)" if run is not None else ""
            raise typer.BadParameter(f"stay {stay} is not in {screens}{where}")
        try:
            row = pick_screen(rows, at) if at is not None else \
                rows.iloc[[int(np.argmax(m.predict_proba(rows)[:, 1]))]]
            k = int(np.flatnonzero(rows["screen_time"].to_numpy() == row["screen_time"].to_numpy()[0])[0])
            if hasattr(m, "predict_explain"):  # a CPN reads the evidence once for both, the stay's screens
                proba, explained = m.predict_explain(rows, [k])  # with it (its trend leaves read them)
                proba = proba[[k]]
            elif getattr(m, "reads_history", False):  # sequence / fusion: the screen within the stay's hours
                proba, explained = m.predict_proba(rows)[[k]], m.explain(rows, rows=[k])
            else:
                proba, explained = m.predict_proba(row), m.explain(row)
            risk = float(proba[0, 1])
            view = explanation_view(explained, risk=risk, model=m.model_name)
        except (SchemaError, ValueError) as exc:
            raise typer.BadParameter(str(exc)) from None
        r = row.iloc[0]
        typer.echo(f"stay {stay}  screen {r['screen_time']} ({r['hours_since_admit']:g} h since admission)  "
                   f"{m.model_name}: P(sepsis within 48 h) = {risk:.3f}")
        typer.echo(explanation_table(view, threshold))


def _print_half_lives(model) -> None:
    typer.echo("fitted half-lives (hours):")
    for k, v in sorted(model.half_lives_.items()):
        typer.echo(f"  {k:<14} {v:8.2f}")
    if model.half_life_scale_:
        typer.echo("group multipliers: " + ", ".join(f"{g}={m:g}" for g, m in
                                                     sorted(model.half_life_scale_.items())))
    if getattr(model, "cxr_prior_", None):
        typer.echo("CXR calibration prevalence (likelihood ratios are taken against it): "
                   + ", ".join(f"{v}={p:.3f}" for v, p in sorted(model.cxr_prior_.items())))
