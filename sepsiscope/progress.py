"""Progress display for the CLI (the library never shows progress by itself)."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console

console = Console(stderr=True)


@contextlib.contextmanager
def step(label: str, enabled: bool = True, timings: dict | None = None):
    """Show a spinner with ``label`` while the block runs, then the elapsed time.

    ``timings`` (a dict) also gets ``timings[label]``: the block's seconds, rounded to 0.01, when
    the block succeeds.
    """
    t0 = time.perf_counter()
    if enabled:
        with console.status(f"[bold]{label}…"):
            yield
        console.print(f"[green]✓[/] {label} ({time.perf_counter() - t0:.1f} s)")
    else:
        yield
    if timings is not None:
        timings[label] = round(time.perf_counter() - t0, 2)
