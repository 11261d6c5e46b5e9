"""Progress display for the CLI (the library never shows progress by itself).

The console never interprets Rich markup or emoji codes: file names, headers and messages from
the data are printed as they are (``[/]`` and ``:x:`` stay text). Styles come from
:class:`rich.text.Text`, never from markup in strings.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.text import Text

console = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)

__all__ = ["console", "step", "styled"]


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style`` followed by plain ``rest`` (neither is read as markup).

    >>> styled("report:", "bold green", " runs/x/report.html [/]").plain
    'report: runs/x/report.html [/]'
    """
    return Text.assemble((label, style), rest)


@contextlib.contextmanager
def step(label: str, enabled: bool = True, timings: dict | None = None):
    """Show a spinner with ``label`` while the block runs, then the elapsed time.

    ``timings`` (a dict) also gets ``timings[label]``: the block's seconds, rounded to 0.01, when
    the block succeeds.
    """
    t0 = time.perf_counter()
    if enabled:
        with console.status(Text(f"{label}…", style="bold")):
            yield
        console.print(styled("✓", "green", f" {label} ({time.perf_counter() - t0:.1f} s)"))
    else:
        yield
    if timings is not None:
        timings[label] = round(time.perf_counter() - t0, 2)
