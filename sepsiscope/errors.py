"""The CLI's one error path: every expected failure is one line on stderr and an exit code.

Exit codes
----------
``0``    success
``1``    data: a file exists but cannot be used (bad table, bad model folder, unreadable source,
         a fit that the data cannot support)
``2``    usage: a bad option value, a missing input path, an output that would replace an input
         or a directory the command may not replace
``130``  interrupted (Ctrl-C); outputs are left as they were

Commands raise :class:`UsageError` or :class:`DataError` (or let the library's own errors
through: :class:`~ehr.sources.report.IngestError`, :class:`~ehr.schema.SchemaError`,
:class:`~ehr.artefacts.ModelFormatError`); :class:`SepsisGroup` turns each into ``error: ...``,
one line, printed as plain text (never as Rich markup, so ``[/]`` or ``:x:`` in a path or a
header is shown as it is). Anything else is a bug and keeps its traceback; ``--debug`` (anywhere
on the command line, or ``SEPSISCOPE_DEBUG=1``) shows the traceback of expected errors too.

Examples
--------
>>> exit_code(UsageError("--out: is also the input"))
2
>>> exit_code(DataError("screens.parquet: no rows"))
1
>>> one_line("p1.psv: wrong header\\n  missing ['HR']")
"p1.psv: wrong header; missing ['HR']"
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator

import typer
from typer.core import TyperGroup

try:  # typer vendors click (0.2x); older typers use click itself
    from typer._click.exceptions import ClickException, UsageError as ClickUsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError as ClickUsageError

__all__ = ["UsageError", "DataError", "SepsisGroup", "exit_code", "one_line", "data_errors", "DEBUG_FLAG"]

DEBUG_FLAG = "--debug"
USAGE, DATA, INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """The command line asks for something the command will not do (exit code 2)."""


class DataError(Exception):
    """An input exists but cannot be used; the message names the file, row or field (exit code 1)."""


def _data_classes() -> tuple[type, ...]:
    from ehr.artefacts import ModelFormatError
    from ehr.schema import SchemaError
    from ehr.sources.report import IngestError

    return (DataError, IngestError, SchemaError, ModelFormatError)


#: native engines' own exception types (matched by name: importing them would load the engines)
_ENGINE_ERRORS = {"LightGBMError", "XGBoostError"}


def exit_code(exc: BaseException) -> int | None:
    """The exit code of an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, (UsageError, ClickUsageError, FileExistsError)):
        return USAGE
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, _data_classes()) or type(exc).__name__ in _ENGINE_ERRORS:
        return DATA
    if isinstance(exc, ClickException):
        return exc.exit_code
    if isinstance(exc, OSError):  # unreadable or unwritable files, a full disk: named by the OS
        return DATA
    return None


def one_line(message: str) -> str:
    """``message`` on one line (line breaks become '; ')."""
    parts = [p.strip() for p in str(message).strip().splitlines() if p.strip()]
    return "; ".join(parts)


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClickUsageError):
        cmd = exc.ctx.command_path if exc.ctx is not None else "sepsiscope"
        return f"{cmd}: {exc.format_message()} (see {cmd} --help)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; outputs were left as they were"
    if isinstance(exc, ClickException):
        return exc.format_message()
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in str(exc):
        return f"{exc.filename}: {exc}"
    return str(exc) or type(exc).__name__


def report_error(exc: BaseException, debug: bool = False) -> int:
    """Print ``exc`` as one ``error:`` line on stderr (with the traceback when ``debug``); its exit code."""
    code = exit_code(exc)
    if code is None:
        raise exc
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, ClickUsageError) and not exc.format_message():
        return code  # no arguments: the help was shown
    typer.echo(f"error: {one_line(_message(exc))}", err=True)
    return code


@contextlib.contextmanager
def data_errors(where) -> Iterator[None]:
    """Turn a ``ValueError`` (or ``KeyError``) raised by the library inside the block into a
    :class:`DataError` prefixed with ``where`` (the input the data came from).

    Use it around one library call whose ``ValueError`` means "this data cannot be used"
    (a fit on one class, a table without rows, a finding that is not a column), not around
    whole commands.

    >>> with data_errors("s.parquet"):  # doctest: +ELLIPSIS
    ...     raise ValueError("one class")
    Traceback (most recent call last):
    ...
    sepsiscope.errors.DataError: s.parquet: one class
    """
    try:
        yield
    except (UsageError, DataError):
        raise
    except (ValueError, KeyError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        if str(where) in text:
            if isinstance(exc, _data_classes()):
                raise
            raise DataError(text) from exc
        raise DataError(f"{where}: {text}") from exc


class SepsisGroup(TyperGroup):
    """The ``sepsiscope`` command group: its ``main`` is the CLI's one error path."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             windows_expand_args=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = DEBUG_FLAG in args or os.environ.get("SEPSISCOPE_DEBUG", "") not in ("", "0")
        args = [a for a in args if a != DEBUG_FLAG]
        prog_name = "sepsiscope"
        self._main_shell_completion(extra, prog_name, complete_var)
        code = 0
        try:
            with self.make_context(prog_name, args, **extra) as ctx:
                self.invoke(ctx)
        except typer.Exit as exc:  # --help, typer.Exit(n)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = DATA
        except BrokenPipeError:
            code = DATA
        except BaseException as exc:  # noqa: BLE001 - sorted by exit_code; bugs are re-raised there
            if isinstance(exc, SystemExit):
                raise
            code = report_error(exc, debug)
        if standalone_mode:
            sys.exit(code)
        return code


def debug_option(debug: bool = typer.Option(False, DEBUG_FLAG, help="Show the traceback of an error "
                                            "(also accepted after the command name).")) -> None:
    """SepsisScope: open, explainable early sepsis warning."""
