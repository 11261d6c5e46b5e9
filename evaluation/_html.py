"""HTML building blocks of the report: escaped tables, inline PNG figures, guarded sections, the page.

Everything the report writes goes through these few functions, so it stays self-contained (no
external CSS, script, font or link) and every value is escaped in one place.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

NA = "not available"


class Missing(Exception):
    """An optional input is absent: the section says "not available" with this reason."""


def na(reason: str) -> str:
    return f"<p class='na'>{NA}: {html.escape(reason)}</p>"


def note(text: str) -> str:
    return f"<p class='meta'>{html.escape(text)}</p>"


def _fmt(x):
    if isinstance(x, float | np.floating):
        if np.isnan(x):
            return ""
        return f"{x:.4g}"
    return x


def table(df: pd.DataFrame | None, max_rows: int = 200) -> str:
    if df is None or df.empty:
        return f"<p class='na'>{NA}: the table is empty</p>"
    more = len(df) - max_rows
    df = df.head(max_rows)
    body = df.map(_fmt).to_html(index=False, escape=True, border=0, classes="tbl", na_rep="")
    if more > 0:
        body += f"<p class='na'>{more} more row(s) not shown</p>"
    return body


def json_table(obj) -> str:
    if isinstance(obj, dict) and all(not isinstance(v, dict | list) for v in obj.values()):
        return table(pd.DataFrame({"key": list(obj), "value": list(obj.values())}))
    if isinstance(obj, dict) and all(isinstance(v, dict) for v in obj.values()):
        return table(pd.DataFrame.from_dict(obj, orient="index").rename_axis("model").reset_index())
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return table(pd.DataFrame(obj))
    return f"<pre>{html.escape(json.dumps(obj, indent=2, default=str))}</pre>"


def png_figure(fig, name: str, figures_dir: Path | None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no URL in the file
    data = buf.getvalue()
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        (figures_dir / f"{name}.png").write_bytes(data)
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


class Page:
    """Collects sections; each one is computed inside a guard so one failure never stops the report."""

    def __init__(self, figures_dir: Path | None):
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.figures_dir = figures_dir
        self.n_figures = 0

    def section(self, title: str, fn: Callable[[], str]):
        anchor = "s" + str(len(self.toc) + 1)
        self.toc.append((anchor, title))
        try:
            body = fn()
        except Missing as exc:
            body = na(str(exc))
        except Exception as exc:  # report what failed and carry on with the other sections
            logger.warning("report section %r failed: %s", title, exc, exc_info=True)
            body = na(f"{type(exc).__name__}: {exc}")
        self.parts.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>")

    def figure(self, display, name: str, **plot_kwargs) -> str:
        display.plot(**plot_kwargs)
        self.n_figures += 1
        return png_figure(display.figure_, f"{self.n_figures:02d}_{name}", self.figures_dir)

    def html(self, title: str, meta: str) -> str:
        toc = "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t in self.toc)
        return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(meta)}</p>"
                f"<nav><ol>{toc}</ol></nav>{''.join(self.parts)}</body></html>\n")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.tbl{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.tbl th,table.tbl td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
table.tbl th{background:#f2f2f2} table.tbl td:first-child{text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.75em;color:#777;text-align:center}
.na{color:#a33;font-style:italic} pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
nav ol{columns:2;font-size:.9em} .meta{color:#555;font-size:.9em}
"""
