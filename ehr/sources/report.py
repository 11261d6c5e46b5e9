"""Ingest reports: every repaired or rejected value, row or file is counted and explained.

Nothing valid is dropped silently: a reader either repairs a value by a documented rule (and
counts it) or rejects it (and counts it), and the report says which file, row and field.

Examples
--------
>>> r = IngestReport(source="demo")
>>> r.add("p1.psv", 3, "Temp", "fahrenheit", "repaired", "100.4 [degF] -> 38.0 Cel")
>>> r.counts[("fahrenheit", "repaired")]
1
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["IngestError", "IngestReport", "Problem"]

MAX_EXAMPLES = 200  # per (problem, action): enough to find the rows, small enough to print


class IngestError(ValueError):
    """Input that cannot be read; the message names the file, row and field."""


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None  # 1-based data row within the file (header excluded); None for file-level
    field: str | None
    problem: str
    action: str  # "repaired" | "rejected_value" | "rejected_row" | "rejected_file" | "skipped"
    detail: str = ""

    def message(self) -> str:
        where = self.file + (f", row {self.row}" if self.row is not None else "")
        where += f", field {self.field}" if self.field else ""
        return f"{where}: {self.problem} ({self.action}) {self.detail}".rstrip()


@dataclass
class IngestReport:
    """Counts of what an ingest read, repaired and rejected, with examples."""

    source: str
    files_read: int = 0
    rows_read: int = 0
    values_read: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)
    #: seconds per step of the reader (MIMIC: one entry per table, ``labels`` and ``total``)
    timings: dict = field(default_factory=dict)
    #: parameters of the onset definition the reader labelled with (MIMIC), else None
    definition: dict | None = None

    def add(self, file: str, row: int | None, field_name: str | None, problem: str, action: str,
            detail: str = "", n: int = 1) -> None:
        """Record ``n`` occurrences of a problem; keep the first few as examples."""
        key = (problem, action)
        if sum(1 for p in self.examples if (p.problem, p.action) == key) < MAX_EXAMPLES:
            self.examples.append(Problem(file, row, field_name, problem, action, detail))
        self.counts[key] += n

    def count(self, action: str | None = None, problem: str | None = None) -> int:
        """Total occurrences, optionally filtered by action and/or problem."""
        return sum(v for (p, a), v in self.counts.items()
                   if (action is None or a == action) and (problem is None or p == problem))

    def summary(self) -> str:
        """A short human-readable summary."""
        lines = [f"{self.source}: {self.files_read} file(s), {self.rows_read} row(s), "
                 f"{self.values_read} value(s) read"]
        for (p, a), v in sorted(self.counts.items()):
            lines.append(f"  {a:>15}: {v:>8}  {p}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "files_read": self.files_read,
            "rows_read": self.rows_read,
            "values_read": self.values_read,
            "counts": [{"problem": p, "action": a, "n": v} for (p, a), v in sorted(self.counts.items())],
            "examples": [p.__dict__ | {"message": p.message()} for p in self.examples],
            "timings": dict(self.timings),
            "definition": self.definition,
        }

    @classmethod
    def from_dict(cls, d: dict) -> IngestReport:
        """The report back from :meth:`to_dict` (as read from ``ingest_report.json``).

        >>> r = IngestReport(source="demo", files_read=2)
        >>> r.add("p1.psv", 3, "Temp", "fahrenheit", "repaired")
        >>> IngestReport.from_dict(r.to_dict()) == r
        True
        """
        fields = Problem.__dataclass_fields__
        return cls(source=d["source"], files_read=d.get("files_read", 0), rows_read=d.get("rows_read", 0),
                   values_read=d.get("values_read", 0),
                   counts=Counter({(c["problem"], c["action"]): c["n"] for c in d.get("counts", [])}),
                   examples=[Problem(**{k: v for k, v in e.items() if k in fields}) for e in d.get("examples", [])],
                   timings=dict(d.get("timings", {})), definition=d.get("definition"))

    def write_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)
