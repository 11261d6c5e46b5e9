"""CLI: ``simulate``, ``ingest`` and ``screens`` — from a source to the screens table.

A cohort directory is written whole: everything (tables, ``ingest_report.json``, images,
``run.json``) goes into a staging directory renamed into place at the end, so an interrupted or
failed command leaves the old directory as it was, and nothing of an older cohort (e.g. its
``screens.parquet``) survives next to a new one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from sepsiscope.errors import UsageError, data_errors
from sepsiscope.options import choice, positive_hours, seed as seed_value
from sepsiscope.outputs import check_output, check_output_dir, existing_dir
from sepsiscope.progress import console, step

_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress.")
_PARTITIONS = typer.Option(None, "--partitions", min=1, max=100_000, help="Write the partitioned layout with "
                           "this many parts (hash buckets of stay_id) for --dask.")
#: ``--dask [SCHEDULER_ADDRESS]`` of the commands that run per partition
DASK = typer.Option(None, "--dask", metavar="[SCHEDULER_ADDRESS]",
                    help="Run per partition on Dask: a scheduler address, or alone (or 'local') for a "
                         "LocalCluster sized to this machine. Needs a partitioned cohort.")
COHORT_MARKER = "cohort.json"
#: a cohort directory's own files, which no output may replace
COHORT_FILES = ("events.parquet", "stays.parquet", "cxr.parquet", "truth.parquet", COHORT_MARKER,
                "ingest_report.json", "run.json", "labels.csv")
SOURCES = ("physionet", "mimic", "fhir")


@contextlib.contextmanager
def cohort_output(out: Path, inputs: dict | None = None):
    """Yield the staging directory of cohort ``out``; renamed into place when the block succeeds.

    ``out`` must be new, empty or a cohort directory (:func:`~sepsiscope.outputs.check_output_dir`).
    """
    from ehr.artefacts import atomic_dir

    check_output_dir(out, marker=COHORT_MARKER, inputs=inputs)
    with atomic_dir(out, keep_name=True) as stage:
        yield stage


def ingest_cohort(read, label: str, out: Path, progress: bool, run_config, inputs: dict,
                  partitions: int | None = None):
    """Run a reader (``read()`` -> Cohort) under a spinner; write its cohort and ``run.json`` to ``out``.

    ``run_config(cohort)`` gives ``run.json``'s config. Nothing is written when the reader fails.
    """
    from sepsiscope.runinfo import write_run_json

    with cohort_output(out, inputs) as stage:
        with step(label, progress):
            cohort = read()
        cohort.save(stage, partitions=partitions)
        write_run_json(stage, run_config(cohort), inputs=inputs,
                       extra={"timings_s": cohort.report.timings} if cohort.report else None)
    return cohort


def simulate(
    out: Path = typer.Option(Path("cohort"), "--out", help="Cohort directory to write."),
    n_stays: int = typer.Option(2000, "--n-stays", min=1, max=1_000_000, help="Number of stays."),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Random seed."),
    site: str = typer.Option("A", "--site", help="Hospital: A (default) or B (more ICU/surgical, older, more "
                             "sepsis, more frequent observations; for external validation)."),
    render_images: bool = typer.Option(False, "--render-images", help="Render a procedural radiograph per CXR study."),
    cxr_images: Path = typer.Option(None, "--cxr-images", help="Draw real images by finding from this labelled "
                                    "folder (e.g. ../shared/data/cxr/kermany_pediatric_224): a semi-synthetic cohort."),
    truth_films: int = typer.Option(None, "--truth-films", min=1, max=100_000, help="Also render the film the "
                                    "lung state would have shown at N sampled screen hours (truth_films/, "
                                    "truth_films.parquet): ground truth for evaluating generated films only."),
    partitions: int = _PARTITIONS,
    chunk_stays: int = typer.Option(None, "--chunk-stays", min=1, help="With --partitions: stays generated "
                                    "at a time (default 5000; part of the cohort's definition)."),
    progress: bool = _PROGRESS,
) -> None:
    """Generate the synthetic linked cohort (events, stays, CXR studies, ground truth)."""
    from ehr.synthetic import generate_cohort
    from ehr.synthetic.plan import SITES
    from ehr.tables import write_table
    from sepsiscope.runinfo import write_run_json

    choice(site, tuple(SITES), "--site")
    if partitions is not None:
        if render_images or cxr_images is not None or site != "A" or truth_films is not None:
            raise typer.BadParameter("--partitions streams site A's cohort; it cannot add CXR images, truth "
                                     "films or another site", param_hint="--partitions")
        _simulate_partitioned(out, n_stays, seed, partitions, chunk_stays, progress)
        return
    if chunk_stays is not None:
        raise typer.BadParameter("--chunk-stays goes with --partitions", param_hint="--chunk-stays")
    if cxr_images is not None:
        existing_dir(cxr_images, "--cxr-images")
    with cohort_output(out, {"--cxr-images": cxr_images}) as stage:
        with step(f"simulating {n_stays} stays (seed {seed}, site {site})", progress):
            cohort = generate_cohort(n_stays, seed=seed, site=site)
        if cxr_images is not None:
            from imaging.synthetic_images import sample_real_images

            with step(f"drawing real CXR images from {cxr_images}", progress):
                cohort.cxr = sample_real_images(cohort.cxr, cxr_images, seed=seed)
        cohort.save(stage)
        if render_images and cxr_images is None:
            from imaging.synthetic_images import render_cohort_images

            with step("rendering procedural CXR images", progress):
                cohort.cxr = render_cohort_images(cohort.cxr, stage, seed)
            write_table(cohort.cxr, stage / "cxr.parquet", "cxr")
        if truth_films is not None:
            with step(f"rendering {truth_films} truth films", progress):
                _write_truth_films(stage, n_stays, seed, site, truth_films)
        write_run_json(stage, {"command": "simulate", "n_stays": n_stays, "site": site, "truth_films": truth_films,
                               "render_images": render_images, "cxr_images": str(cxr_images) if cxr_images else None}, seeds={"cohort": seed})
    console.print(f"{len(cohort.stays)} stays, {int(cohort.stays.sepsis.sum())} septic, "
                  f"{len(cohort.events):,} events, {len(cohort.cxr)} CXR studies -> {out}")


def _write_truth_films(stage: Path, n_stays: int, seed: int, site: str, n: int) -> None:
    """``truth_films/film_<k>.png`` and ``truth_films.parquet`` (the lung state, ``image_path``) for n screens."""
    from PIL import Image

    from ehr.synthetic.lung import LungState, sample_screen_times
    from imaging.synthetic_images import render_truth_films

    lungs = LungState.from_generator(n_stays, seed, site=site)
    state = lungs.at(sample_screen_times(lungs.cohort.stays, n, seed=seed))
    films = render_truth_films(state, seed)
    (stage / "truth_films").mkdir()
    state["image_path"] = [f"truth_films/film_{k:05d}.png" for k in range(len(state))]
    for film, rel in zip(films, state["image_path"]):
        Image.fromarray(film).save(stage / rel)
    state.to_parquet(stage / "truth_films.parquet")


def _simulate_partitioned(out: Path, n_stays: int, seed: int, partitions: int, chunk_stays, progress: bool):
    """The streaming generator: one chunk of stays in memory at a time."""
    from ehr.synthetic.stream import DEFAULT_CHUNK_STAYS, write_synthetic
    from sepsiscope.runinfo import write_run_json

    chunk_stays = chunk_stays or DEFAULT_CHUNK_STAYS
    check_output_dir(out, marker=COHORT_MARKER)
    with step(f"simulating {n_stays} stays (seed {seed}) into {partitions} partitions", progress):
        write_synthetic(out, n_stays, seed, partitions=partitions, chunk_stays=chunk_stays)
    write_run_json(out, {"command": "simulate", "n_stays": n_stays, "partitions": partitions,
                         "chunk_stays": chunk_stays}, seeds={"cohort": seed})
    console.print(f"{n_stays} stays in {partitions} partitions (chunks of {chunk_stays}) -> {out}")


def ingest(
    path: Path = typer.Argument(..., help="Source data: PhysioNet .psv dir or zip; MIMIC directory; FHIR "
                                "Bundles (.json) or NDJSON (.ndjson), a file or a directory."),
    source: str = typer.Option("physionet", "--source", help="physionet | mimic | fhir"),
    out: Path = typer.Option(Path("cohort"), "--out", help="Cohort directory to write."),
    definition: str = typer.Option("sepsis3", "--definition", help="MIMIC onset definition."),
    allow_missing: list[str] = typer.Option(None, "--allow-missing", help="MIMIC: a required table that may be "
                                            "missing (repeatable); the ingest report names it."),
    partitions: int = _PARTITIONS,
    progress: bool = _PROGRESS,
) -> None:
    """Read a real data source into the events/stays contract (+ an ingest report)."""
    from sepsiscope.options import choice

    choice(source, SOURCES, "--source")
    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file or folder", param_hint="PATH")
    if source == "mimic":
        from sepsiscope.commands.mimic import ingest_mimic_cli

        ingest_mimic_cli(path, out, definition, progress, allow_missing=allow_missing or (), partitions=partitions)
        return
    if allow_missing:
        raise typer.BadParameter("applies to --source mimic only", param_hint="--allow-missing")
    if source == "fhir":
        from ehr.sources.fhir import read_fhir as reader
    else:
        from ehr.sources.physionet import read_physionet as reader

    cohort = ingest_cohort(lambda: reader(path), f"reading {path}", out, progress,
                           lambda c: {"command": "ingest", "source": source}, {"source": path}, partitions)
    console.print(cohort.report.summary())
    console.print(f"{len(cohort.stays)} stays, {int(cohort.stays.sepsis.sum())} septic, "
                  f"{len(cohort.events):,} events -> {out}")


def screens(
    cohort: Path = typer.Argument(..., help="Cohort directory (written by simulate or ingest)."),
    out: Path = typer.Option(None, "--out", help="Screens parquet (default COHORT/screens.parquet; for a "
                             "partitioned cohort a partitioned folder, default COHORT/screens)."),
    horizon_h: float = typer.Option(48.0, "--horizon-h", callback=positive_hours, help="Label horizon in hours."),
    until_onset: bool = typer.Option(True, "--until-onset/--all-hours", help="Stop screening at onset."),
    dask: str = DASK,
    progress: bool = _PROGRESS,
) -> None:
    """Build the hourly screens table (last value carried forward, ages, labels)."""
    from ehr.cohort import Cohort, cohort_partitions

    existing_dir(cohort, "COHORT", "cohort directory")
    with data_errors(cohort):
        parts = cohort_partitions(cohort)
    if dask is not None and parts is None:  # refused before a cluster starts
        raise UsageError(f"{cohort}: this cohort is one file per table; --dask needs the partitioned layout "
                         "(write it with `sepsiscope simulate|ingest ... --partitions N`)")
    if dask is not None or parts is not None:
        from ehr.partitions import LAYOUT_FILE
        from sepsiscope.scale import build_screens_partitioned

        out = out or Path(cohort) / "screens"
        check_output_dir(out, marker=LAYOUT_FILE, option="--out", inputs={"COHORT": cohort})
        with mapper_for(dask) as mapper, step("building hourly screens per partition", progress), \
                data_errors(cohort):
            out, rep = build_screens_partitioned(cohort, out, mapper, horizon_h=horizon_h, until_onset=until_onset)
        console.print(json.dumps(rep))
        console.print(f"{rep['screens']:,} screens of {rep['stays']} stays -> {out}")
        return
    from ehr.screens import build_screens
    from ehr.flow import cohort_flow
    from ehr.tables import write_table

    out = out or Path(cohort) / "screens.parquet"
    check_output(out, inputs={f"COHORT/{name}": Path(cohort) / name for name in COHORT_FILES})
    with data_errors(cohort):
        data = Cohort.load(cohort)
    with step("building hourly screens", progress):
        table = build_screens(data.events, data.stays, data.cxr, horizon_h=horizon_h, until_onset=until_onset)
    write_table(table, out, "screens")
    console.print(json.dumps(table.attrs.get("build_report", {})))
    flow = cohort_flow(data.stays, table, with_events=data.events["stay_id"].unique())
    console.print("; ".join(f"{r.stage} {r.n_stays} ({r.reason})" for r in flow.itertuples()))
    positive = f"{table.label.mean():.3f} positive" if len(table) else "no screen"
    console.print(f"{len(table):,} screens of {table.stay_id.nunique()} stays, {positive} at {horizon_h:g} h "
                  f"-> {out}")


@contextlib.contextmanager
def mapper_for(dask: str | None):
    """The mapper of ``--dask``: serial without it, else a Dask client (``local``: a LocalCluster).

    A one-file cohort or screens table given to ``--dask`` is a one-line error (exit code 2).
    """
    from sepsiscope.scale import DaskMapper, SerialMapper, dask_client

    if dask is None:
        yield SerialMapper()
        return
    with contextlib.ExitStack() as stack:
        try:  # only starting the client is a usage error; what runs on it is not
            client = stack.enter_context(dask_client(None if dask == "local" else dask))
        except (ValueError, OSError) as exc:
            raise UsageError(f"--dask {dask}: {exc}") from exc
        console.print(f"Dask: {client.dashboard_link if dask != 'local' else 'LocalCluster'} "
                      f"({len(client.scheduler_info()['workers'])} workers)")
        yield DaskMapper(client)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    app.command()(simulate)
    app.command()(ingest)
    app.command()(screens)
