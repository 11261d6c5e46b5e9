"""CLI commands for the evaluation area."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
