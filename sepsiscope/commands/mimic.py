"""CLI for MIMIC: ``sepsiscope ingest --source mimic PATH`` dispatches to :func:`ingest_mimic_cli`.

The ``ingest`` command itself lives in ``sepsiscope/commands/data.py``; this module only holds
the MIMIC part, so ``register`` adds nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["ingest_mimic_cli", "register"]


def ingest_mimic_cli(path, out, definition: str = "sepsis3", progress: bool = True) -> Path:
    """Read a MIMIC-III/IV copy, label it, and write a cohort directory.

    Writes the cohort directory (``Cohort.save``: events, stays, ``ingest_report.json``,
    ``cohort.json``) and ``run.json`` (the onset definition and its parameters under
    ``config.definition_params``). Exits with code 2 and a one-line error on unreadable input.
    """
    from ehr.labels import definition_params
    from ehr.sources.mimic import read_mimic
    from sepsiscope.commands.data import ingest_cohort
    from sepsiscope.progress import console
    from sepsiscope.runinfo import write_run_json

    path, out = Path(path), Path(out)
    try:
        params = definition_params(definition)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--definition") from exc
    cohort = ingest_cohort(lambda: read_mimic(path, definition=definition),
                           f"reading and labelling MIMIC at {path} ({definition})", out, progress)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    write_run_json(out, {"command": "ingest", "source": "mimic", "mimic_source": str(stays["source"].iloc[0])
                         if len(stays) else None, "definition": definition, "definition_params": params},
                   inputs={"source": path}, extra={"timings_s": report.timings})
    console.print(report.summary())
    console.print(f"{len(stays)} stays, {int(stays['suspicion_time'].notna().sum())} with suspected infection, "
                  f"{int(stays.sepsis.sum())} septic ({definition}), {len(events):,} events -> {out} "
                  f"({report.timings.get('total', 0):.1f} s)")
    return out


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI (none: ``ingest`` in commands/data.py dispatches here)."""
