"""The ``sepsiscope`` command line.

Each area registers its commands from ``sepsiscope/commands/<area>.py`` through a
``register(app, train_app)`` function, so the CLI stays one thin layer over the packages.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

# The CLI (not the library) decides what is shown: warnings and up, unless asked otherwise.
logging.basicConfig(level=os.environ.get("SEPSISCOPE_LOG_LEVEL", "WARNING").upper(),
                    format="%(levelname)s %(name)s: %(message)s")

app = typer.Typer(help="SepsisScope: open, explainable early sepsis warning.", no_args_is_help=True,
                  add_completion=False)
train_app = typer.Typer(help="Train a model (cpn, gbdt, imaging).", no_args_is_help=True)
app.add_typer(train_app, name="train")

_AREAS = ("data", "cpn", "gbdt", "imaging", "mimic", "pipeline", "service")

for _area in _AREAS:
    importlib.import_module(f"sepsiscope.commands.{_area}").register(app, train_app)


if __name__ == "__main__":  # pragma: no cover
    app()
