"""CLI: ``serve`` — the scoring service and the alarm-review page (uvicorn, one worker)."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

import typer

from sepsiscope.outputs import require_complete_run
from sepsiscope.progress import console, styled


def _serves(path) -> bool:
    from ehr.artefacts import ModelFormatError
    from sepsiscope.models import scores_one_screen

    try:
        return scores_one_screen(path)
    except (ModelFormatError, ValueError, OSError):
        return True  # an unreadable folder is reported by build_engine, with its reason


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    model: Path = typer.Option(None, "--model", help="Model directory that scores and alarms (default with --run: "
                               "RUN/models/cpn)."),
    compare: list[Path] = typer.Option(None, "--compare", help="Model directories shown beside it (repeatable; "
                                       "default with --run: the run's other models)."),
    run: Path = typer.Option(None, "--run", help="Run directory: its models and operating_points.json."),
    cohort: Path = typer.Option(None, "--cohort", help="Cohort directory whose stays the page shows."),
    threshold: float = typer.Option(None, "--threshold", help="Alarm threshold (default: the run's operating point)."),
    operating_point: str = typer.Option("news2>=5", "--operating-point", help="news2>=5 | news2>=7 | sens85"),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback unless you say otherwise)."),
    port: int = typer.Option(8000, "--port"),
    token_file: Path = typer.Option(None, "--token-file", help="File whose first line is the API token "
                                    "(default: $SEPSISCOPE_TOKEN, else a new token is printed)."),
    max_body_mb: float = typer.Option(2.0, "--max-body-mb", help="Largest request body accepted (413 above)."),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="Allow this browser origin (repeatable; "
                                          "default: none, CORS closed)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Threads of the CPN kernel and BLAS in the one "
                                "worker (batches are small; more threads mostly wait)."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve risk scoring (FHIR R4 in, RiskAssessment out) and the alarm-review page."""
    import logging
    import os

    import uvicorn
    from threadpoolctl import threadpool_limits

    from sepsiscope.service import CohortStays, build_engine, create_app
    from sepsiscope.service.security import TOKEN_ENV, load_token

    if model is None and run is None:
        raise typer.BadParameter("give --model DIR or --run RUN")
    if run is not None:
        require_complete_run(run, "--run")
    os.environ["SEPSISCOPE_THREADS"] = str(threads)
    threadpool_limits(threads)
    model = model or run / "models" / "cpn"
    if not compare and run is not None:
        compare = [d for d in sorted((run / "models").iterdir()) if d.is_dir() and d.resolve() != model.resolve()
                   and _serves(d)]
    for option, path in [("--model", model), *(("--compare", c) for c in compare or ())]:
        if (Path(path) / "model.json").is_file() and not _serves(path):
            raise typer.BadParameter(f"{path}: this model scores from its members' predictions or the stay's whole "
                                     "history; the service scores one screen at a time", param_hint=option)
    try:
        token = load_token(token_file=token_file)
        shown = None
    except ValueError as exc:
        if token_file is not None:
            raise typer.BadParameter(str(exc)) from None
        token = shown = secrets.token_urlsafe(32)
    try:
        engine = build_engine(model, compare=compare or (), threshold=threshold, operating_point=operating_point,
                              run_dir=run)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    stays = CohortStays(cohort) if cohort is not None else None
    app = create_app(engine, token=token, cohort=stays, max_body_bytes=int(max_body_mb * 2**20),
                     cors_origins=tuple(cors_origin or ()))
    if not _loopback(host):
        console.print(styled("warning:", "yellow", f" listening on {host}, not loopback: put TLS in front of it"))
    op = f" ({engine.operating_point})" if engine.operating_point else ""
    console.print(f"model {engine.primary.name} {engine.primary.version}, threshold {engine.threshold:.6g}{op}"
                  + (f"; cohort {cohort} ({len(stays.stays)} stays)" if stays is not None else ""))
    if shown:
        console.print(f"no {TOKEN_ENV} and no --token-file: this run's token is printed once below")
        console.print(f"page: http://{host}:{port}/#token={shown}")
    else:
        console.print(f"page: http://{host}:{port}/ (enter the token, or add #token=... to the address)")
    logging.getLogger("sepsiscope.service").setLevel(log_level.upper())
    uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level=log_level,
                server_header=False)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    app.command()(serve)
