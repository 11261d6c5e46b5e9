"""CLI: ``run`` (the main job), ``predict`` and ``report``.

``run`` writes its directory under a temporary name and renames it into place when everything
is written; an existing run directory is replaced only with ``--overwrite``, as a whole.
``report`` reads only a complete run directory (``run.json`` with ``"complete": true``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer

from sepsiscope.commands.data import DASK, mapper_for
from sepsiscope.errors import UsageError, data_errors
from sepsiscope.options import choice, model_names, positive_hours, seed as seed_value
from sepsiscope.outputs import (RUN_MARKER, check_output, check_output_dir, existing_dir, read_screens,
                                require_complete_run)
from sepsiscope.progress import console, step, styled


def _one_source(flag_values: dict, what: str):
    """``(source, path)`` of the one flag given among ``flag_values`` ({source: path}), or (None, None)."""
    given = [(k, v) for k, v in flag_values.items() if v]
    if len(given) > 1:
        raise UsageError(f"give at most one {what} source, got {', '.join('--' + k for k, _ in given)}")
    return (given[0][0], str(given[0][1])) if given else (None, None)


def run(
    out: Path = typer.Option(Path("runs/latest"), "--out", help="Run directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory (as a whole)."),
    physionet: Path = typer.Option(None, "--physionet", help="PhysioNet 2019 .psv dir or zip."),
    mimic: Path = typer.Option(None, "--mimic", help="MIMIC-III / MIMIC-IV directory."),
    cohort: Path = typer.Option(None, "--cohort", help="An ingested cohort directory (sepsiscope simulate / "
                                "ingest): reused instead of re-reading the raw source."),
    external_physionet: Path = typer.Option(None, "--external-physionet", help="Evaluate unchanged on this "
                                            "PhysioNet source (models and thresholds from the first source)."),
    external_mimic: Path = typer.Option(None, "--external-mimic", help="Evaluate unchanged on this MIMIC source."),
    external_cohort: Path = typer.Option(None, "--external-cohort", help="Evaluate unchanged on this cohort "
                                         "directory."),
    exclusions: str = typer.Option(None, "--exclusions", help="Cohort exclusions before screening: johnson2018 "
                                   "(Sepsis-3 cohort of Johnson et al. 2018)."),
    definition: str = typer.Option("sepsis3", "--definition", help="MIMIC onset definition (sepsis3 | physionet2019)."),
    allow_missing: list[str] = typer.Option(None, "--allow-missing", help="MIMIC: a required table that may be "
                                            "missing (repeatable)."),
    n_stays: int = typer.Option(2000, "--n-stays", min=10, max=1_000_000, help="Synthetic cohort size (default "
                                "source)."),
    site: str = typer.Option("A", "--site", help="Synthetic hospital (A | B)."),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Seed for cohort, split, models and bootstrap."),
    n_boot: int = typer.Option(200, "--n-boot", min=1, max=100_000, help="Bootstrap resamples for the CIs."),
    subgroup_n_boot: int = typer.Option(200, "--subgroup-n-boot", min=1, max=100_000,
                                        help="Bootstrap resamples per subgroup level."),
    horizon_h: float = typer.Option(48.0, "--horizon-h", callback=positive_hours, help="Label horizon in hours."),
    window_h: float = typer.Option(48.0, "--window-h", callback=positive_hours, help="An alarm is true when onset "
                                   "follows within this many hours."),
    silencing_h: float = typer.Option(48.0, "--silencing-h", callback=positive_hours, help="Alarms are silenced "
                                      "this many hours after each alarm."),
    gbdt_backend: str = typer.Option("lightgbm", "--gbdt-backend", help="lightgbm | xgboost"),
    gbdt_n_estimators: int = typer.Option(300, "--gbdt-n-estimators", min=1, max=100_000, help="Boosting rounds "
                                          "(early stopping may use fewer)."),
    cpn_max_iter: int = typer.Option(30, "--cpn-max-iter", min=1, max=10_000, help="CPN EM iterations."),
    cpn_discriminative_iter: int = typer.Option(40, "--cpn-discriminative-iter", min=0, max=10_000,
                                                help="CPN discriminative refinement steps after EM (0: EM only)."),
    models: str = typer.Option("cpn,gbdt", "--models", help="Comma-separated: cpn, gbdt, sequence (LSTM over the "
                               "hourly screens), fusion (EHR + chest X-ray; sources with CXR studies: the "
                               "synthetic cohort), stack (fitted on the others' out-of-fold predictions on "
                               "train). NEWS2 always runs."),
    deep_epochs: int = typer.Option(10, "--deep-epochs", min=1, max=10_000, help="sequence, fusion: most training "
                                    "epochs (early stopping may use fewer)."),
    deep_hidden: int = typer.Option(32, "--deep-hidden", min=1, max=4096, help="sequence, fusion: recurrent "
                                    "encoder and head size."),
    fusion_strategy: str = typer.Option("mid", "--fusion-strategy", help="fusion: mid (attention) | early | late "
                                        "| medfuse."),
    cxr_encoder_epochs: int = typer.Option(4, "--cxr-encoder-epochs", min=1, max=10_000, help="fusion: epochs of "
                                           "the small CXR encoder (trained on train-split films only)."),
    oof_folds: int = typer.Option(0, "--oof-folds", min=0, max=100, help="Also write K-fold patient-grouped "
                                  "out-of-fold predictions on train for every model (0: only when stacking, then 5)."),
    stack_meta: str = typer.Option("logistic", "--stack-meta", help="Stack meta-learner: logistic | lightgbm."),
    partitions: int = typer.Option(16, "--partitions", min=1, max=100_000, help="With --dask: parts to write the "
                                   "source in."),
    cpn_max_rows: Optional[int] = typer.Option(None, "--cpn-max-rows", min=100, help="CPN: fit on at most this many "
                                               "screens, drawn by stay (default: every training screen)."),
    dask: str = DASK,
    dask_evaluation: str = typer.Option("counts", "--dask-evaluation", help="With --dask: counts (per-part sums, "
                                        "nothing gathered; every table, rank metrics and DeLong on 2^16 logit "
                                        "bins, Poisson bootstrap) | gather (every prediction to this process; the "
                                        "exact tables and the one-file predictions/alarms/explanations)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """The main job: source -> screens -> split -> models (CPN, GBDT; sequence, fusion, stack), NEWS2 -> report.

    Synthetic linked cohort by default; --physionet, --mimic or --cohort for real or ingested data.
    With --external-physionet / --external-mimic / --external-cohort, models and thresholds come from
    the first source and are evaluated unchanged on the second, next to the internal test split.
    """
    from ehr.cohort import cohort_partitions
    from ehr.exclusions import EXCLUSIONS
    from ehr.labels import definition_params
    from ehr.synthetic.plan import SITES
    from fusion.stacking import META_LEARNERS
    from sepsiscope.pipeline import PIPELINE_MODELS, RunConfig, run_main_job

    source, path = _one_source({"physionet": physionet, "mimic": mimic, "cohort": cohort}, "training")
    ext_source, ext_path = _one_source({"physionet": external_physionet, "mimic": external_mimic,
                                        "cohort": external_cohort}, "external")
    names = model_names(models, tuple(PIPELINE_MODELS))
    stackers = [n for n in names if PIPELINE_MODELS[n].stacks]
    if stackers and len(stackers) == len(names):
        raise UsageError(f"--models {models}: {', '.join(stackers)} combines other models; name at least one "
                         "of them too (e.g. --models cpn,gbdt,stack)")
    choice(gbdt_backend, ("lightgbm", "xgboost"), "--gbdt-backend")
    choice(dask_evaluation, ("counts", "gather"), "--dask-evaluation")
    choice(stack_meta, tuple(META_LEARNERS), "--stack-meta")
    if "fusion" in names:
        from fusion.models import STRATEGIES
        from sepsiscope.cxr_embeddings import cxr_source_problem

        choice(fusion_strategy, STRATEGIES, "--fusion-strategy")
        problem = cxr_source_problem(source or "synthetic", path, ext_source)
        if problem:
            raise UsageError(f"--models fusion: {problem}")
    if oof_folds == 1:
        raise typer.BadParameter("out-of-fold predictions need at least 2 folds", param_hint="--oof-folds")
    choice(site, tuple(SITES), "--site")
    if exclusions is not None:
        choice(exclusions, tuple(EXCLUSIONS), "--exclusions")
    try:
        definition_params(definition)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--definition") from None
    if allow_missing and "mimic" not in (source, ext_source):
        raise UsageError("--allow-missing applies to --mimic only")
    if allow_missing:
        from ehr.sources.mimic.tables import check_allow_missing

        try:
            allow_missing = check_allow_missing(allow_missing)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--allow-missing") from None
    inputs = {}
    for flag, kind, given in (("--" + (source or ""), source, path), ("--external-" + (ext_source or ""), ext_source,
                                                                         ext_path)):
        if not given:
            continue
        if kind in ("mimic", "cohort"):
            existing_dir(Path(given), flag)
        elif not Path(given).exists():
            raise UsageError(f"{flag} {given}: no such file or folder")
        inputs[flag] = Path(given)
    check_output_dir(out, marker=RUN_MARKER, inputs=inputs, overwrite=overwrite)
    with data_errors(path or "the synthetic cohort"):   # an unreadable cohort.json is a data error
        cohort_parts = cohort_partitions(path) if source == "cohort" else None
    partitioned = dask is not None or cohort_parts is not None
    if partitioned:
        if source == "cohort" and cohort_parts is None:
            raise UsageError(f"--cohort {path}: --dask runs on a partitioned cohort (write it with --partitions N)")
        from sepsiscope.scale.pipeline import PARTITIONED_FIT

        per_partition = [n for n in names if PIPELINE_MODELS[n].kind not in PARTITIONED_FIT]
        unsupported = [flag for flag, given in (("--external-*", ext_source), ("--exclusions", exclusions),
                                                ("--site", site != "A"), ("--oof-folds", oof_folds),
                                                (f"{', '.join(per_partition)} in --models", per_partition)) if given]
        if unsupported:
            raise UsageError(f"the partitioned (--dask) main job does not support {', '.join(unsupported)} yet; "
                             "run without --dask")
    cfg = RunConfig(source=source or "synthetic", path=path, n_stays=n_stays, site=site, seed=seed, n_boot=n_boot,
                    subgroup_n_boot=subgroup_n_boot, gbdt_backend=gbdt_backend, definition=definition,
                    models=names, horizon_h=horizon_h, window_h=window_h, silencing_h=silencing_h,
                    gbdt_n_estimators=gbdt_n_estimators, cpn_max_iter=cpn_max_iter,
                    cpn_discriminative_iter=cpn_discriminative_iter,
                    allow_missing=tuple(allow_missing or ()), external_source=ext_source, external_path=ext_path,
                    exclusions=exclusions, oof_folds=oof_folds, stack_meta=stack_meta, partitions=partitions,
                    cpn_max_rows=cpn_max_rows, deep_epochs=deep_epochs, deep_hidden=deep_hidden,
                    fusion_strategy=fusion_strategy, cxr_encoder_epochs=cxr_encoder_epochs,
                    dask_evaluation=dask_evaluation)
    with data_errors(path or "the synthetic cohort"):
        if partitioned:
            from sepsiscope.scale.pipeline import run_partitioned

            with mapper_for(dask) as mapper:
                report = run_partitioned(out, cfg, mapper, progress=progress)
        else:
            report = run_main_job(out, cfg, progress=progress)
    console.print(styled("report:", "bold green", f" {report.resolve()}"))


def predict(
    model_dir: Path = typer.Argument(..., help="A saved model directory (any kind)."),
    screens: Path = typer.Option(..., "--screens", help="Screens parquet (for --oof: with onset_in_h and "
                                 "subject_id), or a partitioned screens folder."),
    out: Path = typer.Option(Path("predictions.parquet"), "--out", help="Predictions parquet to write (a "
                             "partitioned folder when the screens are partitioned)."),
    name: str = typer.Option(None, "--name", help="Model name in the predictions (default: its kind/backend)."),
    oof: int = typer.Option(0, "--oof", min=0, help="K >= 2: refit the model's settings on K-1 patient-grouped "
                            "folds of the screens and predict the held-out fold (fold filled, split=train; labels: onset "
                            "within 48 h)."),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Seed of the --oof fold assignment."),
    member_predictions: Path = typer.Option(None, "--predictions", help="A stack: its members' predictions "
                                            "parquet on the screens."),
    embeddings: Path = typer.Option(None, "--embeddings", help="CXR embeddings parquet to attach to the screens "
                                    "(a fusion model reads them; `sepsiscope train fusion --embeddings`)."),
    generator: Path = typer.Option(None, "--generator", help="A DDL-CXR generator (`sepsiscope train ddl`): every "
                                   "screen with a film sees the film of its own hour generated from it (for a "
                                   "fusion model trained with --cxr-latent generated)."),
    explain_out: Path = typer.Option(None, "--explain-out", help="Partitioned screens: also write the "
                                     "explanations of screens at or above --explain-above here."),
    explain_above: float = typer.Option(0.5, "--explain-above", min=0.0, max=1.0,
                                        help="Risk from which a screen is explained."),
    dask: str = DASK,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Score a screens table with a saved model; writes the ``predictions`` table.

    The table is written under a temporary name and renamed when complete, so an interrupted run
    never leaves a partial table under ``--out``.
    """
    from ehr.partitions import is_partitioned

    existing_dir(model_dir, "MODEL_DIR", "model folder")
    if dask is not None or is_partitioned(screens):
        from sepsiscope.scale import predict_partitioned

        if not is_partitioned(screens):
            raise UsageError(f"--screens {screens}: --dask scores a partitioned screens folder (build it with "
                             "`sepsiscope screens COHORT` on a partitioned cohort)")
        if oof or member_predictions is not None or embeddings is not None or generator is not None:
            raise UsageError("--oof, --predictions, --embeddings and --generator score one screens table; run them "
                             "without --dask")
        if name is not None and not name.strip():
            raise typer.BadParameter("must not be empty", param_hint="--name")
        from ehr.partitions import LAYOUT_FILE

        # each is replaced as a whole: only a partitioned table of its own, never a folder of inputs
        for option, folder in (("--out", out), ("--explain-out", explain_out)):
            if folder is not None:
                check_output_dir(folder, marker=LAYOUT_FILE, option=option,
                                 inputs={"--screens": screens, "MODEL_DIR": model_dir})
        with mapper_for(dask) as mapper, step(f"scoring {screens} per partition", progress), data_errors(screens):
            counts = predict_partitioned(model_dir, screens, out, mapper, name=name, explain_out=explain_out,
                                         explain_threshold=explain_above)
        console.print(f"{counts['screens']:,} predictions -> {out}"
                      + (f"; {counts['explained']:,} screens explained -> {explain_out}" if explain_out else ""))
        return
    from ehr.tables import write_table
    from sepsiscope.models import load_model
    from sepsiscope.predict import predict_table

    if name is not None and not name.strip():
        raise typer.BadParameter("must not be empty", param_hint="--name")
    if oof == 1:
        raise typer.BadParameter("out-of-fold predictions need at least 2 folds", param_hint="--oof")
    table = read_screens(screens)
    check_output(out, inputs={"--screens": screens, "--predictions": member_predictions, "--embeddings": embeddings},
                 model_dirs=[model_dir] + ([generator] if generator is not None else []))
    if embeddings is not None:
        from sepsiscope.commands.fusion import attach_embeddings_file

        table = attach_embeddings_file(table, embeddings)
    if generator is not None:
        from sepsiscope.commands.fusion import attach_generated_films

        table = attach_generated_films(table, generator, screens)
    with data_errors(model_dir):
        model = load_model(model_dir)
    if getattr(model, "reads_predictions", False):  # a stack: scored from its members' predictions
        if oof:
            raise UsageError(f"--oof: a {model.kind} model is fitted on its members' out-of-fold predictions "
                             "(`sepsiscope train stack`); it has none of its own")
        if member_predictions is None:
            raise UsageError(f"a {model.kind} model scores its members' predictions: pass --predictions")
    what = f"{oof}-fold out-of-fold predictions" if oof else "scoring"
    with step(f"{what} of {len(table):,} screens with {model.kind}", progress), data_errors(screens):
        pred = predict_table(model, table, name=name, oof=oof, seed=seed, member_predictions=member_predictions)
    write_table(pred, out, "predictions")
    console.print(f"{len(pred):,} predictions -> {out}")


def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `sepsiscope run`."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file (default RUN_DIR/report.html)."),
    figures: Path = typer.Option(None, "--figures", help="Also write every figure as a PNG here."),
) -> None:
    """Write the self-contained HTML report (tables, figures, run.json) of a run directory."""
    from ehr.artefacts import atomic_file
    from evaluation.report import write_report

    require_complete_run(run_dir)
    out = out or run_dir / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {out}: expected an .html file name")
    run_files = {f"RUN_DIR/{p.relative_to(run_dir)}": p for p in run_dir.rglob("*")
                 if p.is_file() and p.suffix.lower() not in (".html", ".htm")}
    check_output(out, inputs=run_files, model_dirs=[run_dir / "models"])
    with atomic_file(out) as tmp, _figures_stage(figures) as stage, data_errors(run_dir):
        write_report(run_dir, tmp, figures_dir=stage)
    console.print(f"report -> {out}")


@contextlib.contextmanager
def _figures_stage(figures: Path | None):
    """A temporary folder for the figures; on success each PNG is renamed into ``figures``."""
    if figures is None:
        yield None
        return
    if figures.exists() and not figures.is_dir():
        raise UsageError(f"--figures {figures}: is a file; expected a folder")
    figures.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{figures.name}.", suffix=".tmp", dir=figures.parent))
    try:
        yield stage
        figures.mkdir(exist_ok=True)
        for f in sorted(stage.iterdir()):
            os.replace(f, figures / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    app.command()(run)
    app.command()(predict)
    app.command()(report)
