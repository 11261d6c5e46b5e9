"""Rendering for the report (and the service's pages): Jinja2 templates with autoescaping, tables, inline PNGs.

Everything the report writes goes through the templates in ``evaluation/templates`` (a layout,
macros and one template per section), rendered with autoescaping: a value from a data file can
never become markup. Tables reach the templates as :class:`TableView` (formatted cells), figures
as :class:`FigureView` (a base64 PNG, drawn by a Display object), so the output stays
self-contained: no external CSS, script, font or link.

Examples
--------
>>> import pandas as pd
>>> view = TableView.of(pd.DataFrame({"model": ["<b>cpn</b>"], "auroc": [0.76234]}))
>>> view.rows
[['<b>cpn</b>', '0.7623']]
>>> html = environment().from_string("{% import 'macros.html.j2' as m %}{{ m.table(t) }}").render(t=view)
>>> "&lt;b&gt;cpn&lt;/b&gt;" in html and "<b>" not in html
True
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

__all__ = ["TEMPLATES", "environment", "TableView", "FigureView", "png_figure", "Missing", "NA"]

#: the report's templates (also for the service's alarm-review page)
TEMPLATES = Path(__file__).with_name("templates")

NA = "not available"


class Missing(Exception):
    """An optional input is absent: the section says "not available" with this reason."""


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja2 environment of the report templates: autoescaping on, undefined names an error."""
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _cell(x) -> str:
    if x is None or x is pd.NA or (isinstance(x, float | np.floating) and np.isnan(x)):
        return ""
    if isinstance(x, float | np.floating):
        return f"{x:.4g}"
    return str(x)


@dataclass
class TableView:
    """A table as the templates see it: column names and rows of formatted cells."""

    columns: list
    rows: list
    more: int = 0

    @classmethod
    def of(cls, df: pd.DataFrame | None, max_rows: int = 200) -> TableView:
        """Format a frame: floats to 4 significant digits, NaN and None as empty cells."""
        if df is None or df.empty:
            return cls(columns=[], rows=[])
        head = df.head(max_rows)
        rows = [[_cell(v) for v in r] for r in head.itertuples(index=False, name=None)]
        return cls(columns=[str(c) for c in df.columns], rows=rows, more=max(len(df) - max_rows, 0))

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass
class FigureView:
    """One figure of the report: its name and the base64 PNG."""

    name: str
    png_base64: str


def png_figure(fig, name: str, figures_dir: Path | None = None) -> FigureView:
    """Encode a matplotlib figure as PNG (also written to ``figures_dir`` when given)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no URL in the file
    data = buf.getvalue()
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        (figures_dir / f"{name}.png").write_bytes(data)
    return FigureView(name=name, png_base64=base64.b64encode(data).decode("ascii"))
