"""The ``sepsiscope`` command line.

Each area registers its commands from ``sepsiscope/commands/<area>.py`` through a
``register(app, train_app)`` function, so the CLI stays one thin layer over the packages.
Errors take one path (:mod:`sepsiscope.errors`): one ``error:`` line on stderr, exit code 2 for
usage and 1 for data, a traceback only with ``--debug`` or for a bug.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys

import typer

from sepsiscope.errors import SepsisGroup, debug_option

# The CLI (not the library) decides what is shown: warnings and up, unless asked otherwise.
logging.basicConfig(level=os.environ.get("SEPSISCOPE_LOG_LEVEL", "WARNING").upper(),
                    format="%(levelname)s %(name)s: %(message)s")

app = typer.Typer(cls=SepsisGroup, help="SepsisScope: open, explainable early sepsis warning.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.callback()(debug_option)
train_app = typer.Typer(help="Train a model (cpn, gbdt, imaging, stack, sequence, fusion, ddl).", no_args_is_help=True)
app.add_typer(train_app, name="train")

_AREAS = ("data", "cpn", "gbdt", "imaging", "mimic", "pipeline", "service", "stack", "fusion", "ddl")

for _area in _AREAS:
    importlib.import_module(f"sepsiscope.commands.{_area}").register(app, train_app)


_ADDRESS = re.compile(r"^(\w+://.+|[\w.\-]+:\d+)$")


def dask_argv(argv: list[str]) -> list[str]:
    """``--dask`` without an address becomes ``--dask local`` (typer options cannot have an optional value).

    A scheduler address is ``PROTOCOL://HOST:PORT`` or ``HOST:PORT``; anything else after
    ``--dask`` (a path, another option) is left where it is.

    >>> dask_argv(["screens", "--dask", "cohort/"]), dask_argv(["predict", "--dask", "tcp://h:8786"])
    (['screens', '--dask', 'local', 'cohort/'], ['predict', '--dask', 'tcp://h:8786'])
    """
    out = []
    for i, token in enumerate(argv):
        out.append(token)
        if token == "--dask" and (i + 1 == len(argv) or not (_ADDRESS.match(argv[i + 1]) or argv[i + 1] == "local")):
            out.append("local")
    return out


def main() -> None:
    """The console entry point: :data:`app` on the command line (``--dask`` alone allowed)."""
    app(args=dask_argv(sys.argv[1:]), prog_name="sepsiscope")


if __name__ == "__main__":  # pragma: no cover
    main()
