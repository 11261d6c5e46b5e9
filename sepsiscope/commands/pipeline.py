"""CLI: ``run`` (the main job), ``predict`` and ``report``."""

from __future__ import annotations

from pathlib import Path

import typer

from sepsiscope.progress import console, step


def run(
    out: Path = typer.Option(Path("runs/latest"), "--out", help="Run directory to write."),
    physionet: Path = typer.Option(None, "--physionet", help="PhysioNet 2019 .psv dir or zip."),
    mimic: Path = typer.Option(None, "--mimic", help="MIMIC-III / MIMIC-IV directory."),
    definition: str = typer.Option("sepsis3", "--definition", help="MIMIC onset definition (sepsis3 | physionet2019)."),
    n_stays: int = typer.Option(2000, "--n-stays", help="Synthetic cohort size (default source)."),
    seed: int = typer.Option(0, "--seed", help="Seed for cohort, split, models and bootstrap."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples for the CIs."),
    gbdt_backend: str = typer.Option("lightgbm", "--gbdt-backend", help="lightgbm | xgboost"),
    models: str = typer.Option("cpn,gbdt", "--models", help="Comma-separated: cpn, gbdt (NEWS2 always runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """The main job: source -> screens -> split -> CPN, GBDT, NEWS2 -> evaluation -> HTML report.

    Synthetic linked cohort by default; --physionet or --mimic for real data.
    """
    from sepsiscope.pipeline import PIPELINE_MODELS, RunConfig, run_main_job

    if physionet and mimic:
        raise typer.BadParameter("give at most one of --physionet and --mimic")
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    unknown = [m for m in names if m not in PIPELINE_MODELS]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from "
                                 f"{', '.join(PIPELINE_MODELS)}", param_hint="--models")
    source, path = ("physionet", physionet) if physionet else ("mimic", mimic) if mimic else ("synthetic", None)
    cfg = RunConfig(source=source, path=str(path) if path else None, n_stays=n_stays, seed=seed, n_boot=n_boot,
                    gbdt_backend=gbdt_backend, definition=definition,
                    models=names)
    report = run_main_job(out, cfg, progress=progress)
    console.print(f"[bold green]report:[/] {report.resolve()}")


def predict(
    model_dir: Path = typer.Argument(..., help="A saved model directory (cpn or gbdt: any model that scores screens)."),
    screens: Path = typer.Option(..., "--screens", help="Screens parquet."),
    out: Path = typer.Option(Path("predictions.parquet"), "--out", help="Predictions parquet to write."),
    name: str = typer.Option(None, "--name", help="Model name in the predictions (default: its kind/backend)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Score a screens table with a saved model; writes the ``predictions`` table."""
    import pandas as pd

    from sepsiscope.models import load_model

    model = load_model(model_dir)
    table = pd.read_parquet(screens)
    with step(f"scoring {len(table):,} screens with {model.kind}", progress):
        pred = model.predictions(table, name=name)
    pred.to_parquet(out, index=False)
    console.print(f"{len(pred):,} predictions -> {out}")


def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `sepsiscope run`."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file (default RUN_DIR/report.html)."),
    figures: Path = typer.Option(None, "--figures", help="Also write every figure as a PNG here."),
) -> None:
    """Write the self-contained HTML report (tables, figures, run.json) of a run directory."""
    from evaluation.report import write_report

    if not Path(run_dir).is_dir():
        raise typer.BadParameter(f"{run_dir} is not a directory")
    path = write_report(run_dir, out, figures_dir=figures)
    console.print(f"report -> {path}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    app.command()(run)
    app.command()(predict)
    app.command()(report)
