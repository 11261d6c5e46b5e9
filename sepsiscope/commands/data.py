"""CLI: ``simulate``, ``ingest`` and ``screens`` — from a source to the screens table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sepsiscope.progress import console, step

_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress.")


def save_cohort(cohort, out: Path) -> None:
    """``cohort.save(out)``; a directory it must not replace is a one-line error (exit code 2)."""
    try:
        cohort.save(out)
    except FileExistsError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def ingest_cohort(read, label: str, out: Path, progress: bool):
    """Run a reader (``read()`` -> Cohort) under a spinner and save its cohort to ``out``.

    Unreadable input (:class:`~ehr.sources.report.IngestError`) is a one-line error, exit code 2.
    """
    from ehr.sources.report import IngestError

    try:
        with step(label, progress):
            cohort = read()
    except IngestError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    save_cohort(cohort, out)
    return cohort


def simulate(
    out: Path = typer.Option(Path("cohort"), "--out", help="Cohort directory to write."),
    n_stays: int = typer.Option(2000, "--n-stays", min=1, help="Number of stays."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    render_images: bool = typer.Option(False, "--render-images", help="Render a procedural radiograph per CXR study."),
    cxr_images: Path = typer.Option(None, "--cxr-images", help="Draw real images by finding from this labelled "
                                    "folder (e.g. ../shared/data/cxr/kermany_pediatric_224): a semi-synthetic cohort."),
    progress: bool = _PROGRESS,
) -> None:
    """Generate the synthetic linked cohort (events, stays, CXR studies, ground truth)."""
    from ehr.tables import write_table
    from ehr.synthetic import generate_cohort
    from sepsiscope.runinfo import write_run_json

    with step(f"simulating {n_stays} stays (seed {seed})", progress):
        cohort = generate_cohort(n_stays, seed=seed)
    if cxr_images is not None:
        from imaging.synthetic_images import sample_real_images

        with step(f"drawing real CXR images from {cxr_images}", progress):
            cohort.cxr = sample_real_images(cohort.cxr, cxr_images, seed=seed)
    save_cohort(cohort, out)
    if render_images and cxr_images is None:
        from imaging.synthetic_images import render_cohort_images

        # the images live in the cohort directory, which save() has just replaced as a whole
        with step("rendering procedural CXR images", progress):
            cohort.cxr = render_cohort_images(cohort.cxr, out, seed)
        write_table(cohort.cxr, out / "cxr.parquet", "cxr")
    write_run_json(out, {"command": "simulate", "n_stays": n_stays, "render_images": render_images,
                         "cxr_images": str(cxr_images) if cxr_images else None}, seeds={"cohort": seed})
    console.print(f"{len(cohort.stays)} stays, {int(cohort.stays.sepsis.sum())} septic, "
                  f"{len(cohort.events):,} events, {len(cohort.cxr)} CXR studies -> {out}")


def ingest(
    path: Path = typer.Argument(..., help="Source data: PhysioNet .psv dir or zip; MIMIC directory; FHIR "
                                "Bundles (.json) or NDJSON (.ndjson), a file or a directory."),
    source: str = typer.Option("physionet", "--source", help="physionet | mimic | fhir"),
    out: Path = typer.Option(Path("cohort"), "--out", help="Cohort directory to write."),
    definition: str = typer.Option("sepsis3", "--definition", help="MIMIC onset definition."),
    progress: bool = _PROGRESS,
) -> None:
    """Read a real data source into the events/stays contract (+ an ingest report)."""
    from sepsiscope.runinfo import write_run_json

    if source == "mimic":
        from sepsiscope.commands.mimic import ingest_mimic_cli

        ingest_mimic_cli(path, out, definition, progress)
        return
    if source == "fhir":
        from ehr.sources.fhir import read_fhir as reader
    elif source == "physionet":
        from ehr.sources.physionet import read_physionet as reader
    else:
        raise typer.BadParameter(f"unknown source {source!r}; expected physionet, mimic or fhir")
    cohort = ingest_cohort(lambda: reader(path), f"reading {path}", out, progress)
    write_run_json(out, {"command": "ingest", "source": source}, inputs={"source": path})
    console.print(cohort.report.summary())
    console.print(f"{len(cohort.stays)} stays, {int(cohort.stays.sepsis.sum())} septic, "
                  f"{len(cohort.events):,} events -> {out}")


def screens(
    cohort: Path = typer.Argument(..., help="Cohort directory (written by simulate or ingest)."),
    out: Path = typer.Option(None, "--out", help="Screens parquet (default COHORT/screens.parquet)."),
    horizon_h: float = typer.Option(48.0, "--horizon-h", help="Label horizon in hours."),
    until_onset: bool = typer.Option(True, "--until-onset/--all-hours", help="Stop screening at onset."),
    progress: bool = _PROGRESS,
) -> None:
    """Build the hourly screens table (last value carried forward, ages, labels)."""
    from ehr.cohort import Cohort
    from ehr.tables import write_table
    from ehr.screens import build_screens

    data = Cohort.load(cohort)
    with step("building hourly screens", progress):
        table = build_screens(data.events, data.stays, data.cxr, horizon_h=horizon_h, until_onset=until_onset)
    out = out or Path(cohort) / "screens.parquet"
    write_table(table, out, "screens")
    rep = table.attrs.get("build_report", {})
    console.print(json.dumps(rep))
    console.print(f"{len(table):,} screens of {table.stay_id.nunique()} stays, "
                  f"{table.label.mean():.3f} positive at {horizon_h:g} h -> {out}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    app.command()(simulate)
    app.command()(ingest)
    app.command()(screens)
