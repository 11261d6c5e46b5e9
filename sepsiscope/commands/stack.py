"""CLI: ``train stack`` (a meta-learner on out-of-fold member predictions) and the stack's side of ``explain``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from sepsiscope.errors import UsageError, data_errors
from sepsiscope.options import positive_hours, seed as seed_value
from sepsiscope.outputs import MODEL_MARKER, check_output_dir, read_screens


def coefficient_text(model) -> str:
    """The meta-learner's weights as text: which member the stack trusts."""
    c = model.coefficients_.copy()
    lines = [f"{'member':<14} {'input':<6} {'coef':>8} {'per sd':>8} {'missing':>8} {'share':>6}  trust"]
    for r in c.itertuples():
        cells = [f"{v:>8.3f}" if pd.notna(v) else f"{'':>8}" for v in (r.coefficient, r.coefficient_per_sd,
                                                                     r.missing_coefficient)]
        bar = "#" * int(round(20 * r.share))
        lines.append(f"{r.member:<14} {r.input:<6} {' '.join(cells)} {r.share:>6.2f}  {bar}")
    if pd.notna(getattr(model, "intercept_", float("nan"))):
        lines.append(f"{'intercept':<14} {'':<6} {model.intercept_:>8.3f}")
    return "\n".join(lines)


def explain_stack(model, stay, predictions: Path | None, at) -> None:
    """``explain``: the coefficients, or one screen's member contributions (log-odds)."""
    from sepsiscope.models import screen_to_explain

    typer.echo(f"{model.kind} ({model.meta} meta-learner) over {', '.join(model.members_)}; "
               f"fitted on {model.n_train_:,} out-of-fold screens")
    typer.echo(coefficient_text(model))
    if stay is None:
        return
    if predictions is None:
        raise typer.BadParameter("--predictions (the members' predictions) is needed to explain a stay's screen")
    try:
        table = model.member_table(pd.read_parquet(predictions).query("stay_id == @stay"))
        row = screen_to_explain(model, table, stay, at)
    except ValueError as exc:   # SchemaError too: a member missing, screens not shared
        raise typer.BadParameter(f"{predictions}: {exc}") from None
    ex = model.explain(row)
    total = ex[ex.feature == "total"].iloc[0]
    typer.echo(f"\nstay {stay}  screen {row['screen_time'].iloc[0]}  P(sepsis within 48 h) = "
               f"{model.predict_proba(row)[0, 1]:.3f}  (log-odds {total.baseline:+.2f} at the average screen)")
    for r in ex[ex.feature != "total"].itertuples():
        bar = ("+" if r.contribution > 0 else "-") * min(20, int(round(abs(r.contribution) * 4)))
        typer.echo(f"  {r.feature:<14} risk {r.value:>8.4g}  {r.contribution:+7.3f}  {bar}")
    typer.echo(f"  {'total':<14} {'':>13}  {total.contribution:+7.3f}")


def train_stack(
    predictions: Path = typer.Option(..., "--predictions", help="Predictions parquet with the members' out-of-fold "
                                     "rows (e.g. a run's predictions.parquet after `run --oof-folds 5`)."),
    screens: Path = typer.Option(..., "--screens", help="Screens parquet with onset_in_h (a run's screens.parquet)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.json, run.json)."),
    members: str = typer.Option(None, "--members", help="Comma-separated members (default: every model in the "
                                "predictions)."),
    meta: str = typer.Option("logistic", "--meta", help="logistic | lightgbm"),
    scores: str = typer.Option("news2", "--scores", help="Members that are scores, not probabilities (may be "
                               "missing on some screens)."),
    split: str = typer.Option("train", "--split", help="The split whose out-of-fold rows the stack learns from."),
    horizon_h: float = typer.Option(48.0, "--horizon-h", callback=positive_hours,
                                    help="Label horizon: onset within this many hours (the members' horizon)."),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Seed (LightGBM meta-learner)."),
) -> None:
    """Fit a stack on its members' out-of-fold predictions; prints which member it trusts."""
    from fusion.stacking import META_LEARNERS, StackClassifier
    from sepsiscope.runinfo import run_json_text

    if meta not in META_LEARNERS:
        raise typer.BadParameter(f"choose from {', '.join(META_LEARNERS)}", param_hint="--meta")
    for path, hint in ((predictions, "--predictions"), (screens, "--screens")):
        if not path.is_file():
            raise typer.BadParameter(f"{path}: file not found", param_hint=hint)
    # never replace a folder that is not a model (a run directory holding the inputs, say)
    check_output_dir(out, marker=MODEL_MARKER, inputs={"--predictions": predictions, "--screens": screens})
    names = tuple(m.strip() for m in members.split(",") if m.strip()) if members else None
    stack = StackClassifier(names, scores=tuple(s.strip() for s in scores.split(",") if s.strip()), meta=meta,
                            random_state=seed)
    with data_errors(predictions):
        member_rows = pd.read_parquet(predictions)
    table = read_screens(screens)
    try:
        stack.fit_predictions(member_rows, table, split=split, horizon_h=horizon_h)
    except ValueError as exc:   # SchemaError too: a member missing, screens not shared, not out-of-fold
        raise UsageError(f"{predictions}: {exc}") from exc
    run = run_json_text({"command": "train stack", "params": stack.get_params(), "split": split,
                         "horizon_h": horizon_h}, inputs={"predictions": predictions, "screens": screens},
                        seeds={"meta": seed}, extra={"complete": True})
    stack.save(out, attachments={"run.json": run})
    typer.echo(coefficient_text(stack))
    typer.echo(f"wrote {out} ({stack.meta} on {stack.n_train_:,} out-of-fold screens)")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("stack")(train_stack)
