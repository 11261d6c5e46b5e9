"""CLI for MIMIC: ``sepsiscope ingest --source mimic PATH`` dispatches to :func:`ingest_mimic_cli`.

The ``ingest`` command itself lives in ``sepsiscope/commands/data.py``; this module only holds
the MIMIC part, so ``register`` adds nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["ingest_mimic_cli", "register"]


def ingest_mimic_cli(path, out, definition: str = "sepsis3", progress: bool = True, allow_missing=(),
                     partitions: int | None = None) -> Path:
    """Read a MIMIC-III/IV copy, label it, and write a cohort directory.

    Writes the cohort directory (``Cohort.save``: events, stays, ``ingest_report.json``,
    ``cohort.json``) and ``run.json`` (the onset definition and its parameters under
    ``config.definition_params``, the tables allowed to be missing) in one atomic write. A bad
    option is a usage error (exit code 2), unreadable input a data error (exit code 1).
    """
    from ehr.labels import definition_params
    from ehr.sources.mimic import read_mimic
    from ehr.sources.mimic.tables import check_allow_missing
    from sepsiscope.commands.data import ingest_cohort
    from sepsiscope.progress import console

    path, out = Path(path), Path(out)
    try:
        params = definition_params(definition)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--definition") from exc
    try:
        allowed = check_allow_missing(allow_missing)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--allow-missing") from exc
    if not path.is_dir():
        raise typer.BadParameter(f"{path}: not a folder of MIMIC tables", param_hint="PATH")

    def config(cohort) -> dict:
        source = str(cohort.stays["source"].iloc[0]) if len(cohort.stays) else None
        return {"command": "ingest", "source": "mimic", "mimic_source": source, "definition": definition,
                "definition_params": params, "allow_missing": list(allowed)}

    cohort = ingest_cohort(lambda: read_mimic(path, definition=definition, allow_missing=allowed),
                           f"reading and labelling MIMIC at {path} ({definition})", out, progress, config,
                           {"source": path}, partitions)
    events, stays, report = cohort.events, cohort.stays, cohort.report
    console.print(report.summary())
    console.print(f"{len(stays)} stays, {int(stays['suspicion_time'].notna().sum())} with suspected infection, "
                  f"{int(stays.sepsis.sum())} septic ({definition}), {len(events):,} events -> {out} "
                  f"({report.timings.get('total', 0):.1f} s)")
    return out


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI (none: ``ingest`` in commands/data.py dispatches here)."""
