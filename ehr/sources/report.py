"""Ingest reports: every repaired or rejected value, row or file is counted and explained.

Nothing valid is dropped silently: a reader either repairs a value by a documented rule (and
counts it) or rejects it (and counts it), and the report says which file, row and field.
Counts are kept per (field, problem, action), with up to :data:`MAX_EXAMPLES` examples each, so
a report shows examples of every field that had a problem. ``unit_shifts`` lists the fields
whose values looked like another unit (:mod:`ehr.sources.plausibility`), ``flow`` accounts for
every stay (read, excluded with a reason, kept: :mod:`ehr.sources.flow`), ``allowed_missing``
the tables a reader was allowed to go without.

``ingest_report.json`` (:meth:`IngestReport.to_dict`)::

    source, files_read, rows_read, values_read
    counts          [{field, problem, action, n}]             action: repaired | rejected_value |
                                                              rejected_row | rejected_file | skipped
    examples        [{file, row, field, problem, action, detail, message}]
    unit_shifts     [{field, concept, unit, n, share, applied, problem, message}]
    flow            [{stage, n_stays, n_septic, reason}]
    allowed_missing [table names]
    timings, definition

Examples
--------
>>> r = IngestReport(source="demo")
>>> r.add("p1.psv", 3, "Temp", "fahrenheit", "repaired", "100.4 [degF] -> 38.0 Cel")
>>> r.count("repaired", field="Temp")
1
>>> print(r.summary())
demo: 0 file(s), 0 row(s), 0 value(s) read
         repaired:        1  Temp: fahrenheit  (e.g. p1.psv, row 3: 100.4 [degF] -> 38.0 Cel)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["IngestError", "IngestReport", "Problem", "MAX_EXAMPLES"]

MAX_EXAMPLES = 20  # per (field, problem, action): enough to find the rows, small enough to print
_SUMMARY_LINES = 40


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
    """Counts of what an ingest read, repaired and rejected, with examples per field."""

    source: str
    files_read: int = 0
    rows_read: int = 0
    values_read: int = 0
    #: ``(field, problem, action) -> n`` (field None for file- or row-level problems)
    counts: Counter = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)
    #: seconds per step of the reader (MIMIC: one entry per table, ``labels`` and ``total``)
    timings: dict = field(default_factory=dict)
    #: parameters of the onset definition the reader labelled with (MIMIC), else None
    definition: dict | None = None
    unit_shifts: list[dict] = field(default_factory=list)
    flow: list[dict] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._shown = Counter((p.field, p.problem, p.action) for p in self.examples)

    def add(self, file: str, row: int | None, field_name: str | None, problem: str, action: str,
            detail: str = "", n: int = 1) -> None:
        """Record ``n`` occurrences of a problem; keep the first few of each field as examples."""
        key = (field_name, problem, action)
        if self._shown[key] < MAX_EXAMPLES:
            self._shown[key] += 1
            self.examples.append(Problem(file, row, field_name, problem, action, detail))
        self.counts[key] += n

    def tally(self, field_name: str | None, problem: str, action: str, n: int) -> None:
        """Add ``n`` occurrences without an example (after :meth:`add` with ``n=0`` gave them)."""
        self.counts[(field_name, problem, action)] += n

    def count(self, action: str | None = None, problem: str | None = None, field: str | None = None) -> int:
        """Total occurrences, optionally filtered by action, problem and/or field."""
        return sum(v for (f, p, a), v in self.counts.items()
                   if (action is None or a == action) and (problem is None or p == problem)
                   and (field is None or f == field))

    def add_flow(self, stage: str, n_stays: int, n_septic: int | None = None, reason: str = "") -> None:
        """One row of the cohort flow (see :mod:`ehr.sources.flow`)."""
        self.flow.append({"stage": stage, "n_stays": int(n_stays),
                          "n_septic": None if n_septic is None else int(n_septic), "reason": reason})

    def summary(self) -> str:
        """A short human-readable summary: one line per (field, problem, action), with an example."""
        lines = [f"{self.source}: {self.files_read} file(s), {self.rows_read} row(s), "
                 f"{self.values_read} value(s) read"]
        first = {}
        for p in self.examples:
            first.setdefault((p.field, p.problem, p.action), p)
        rows = sorted(self.counts.items(), key=lambda kv: (kv[0][2], -kv[1], str(kv[0][0]), kv[0][1]))
        for (f, p, a), v in rows[:_SUMMARY_LINES]:
            ex = first.get((f, p, a))
            eg = ""
            if ex is not None:
                where = ex.file + (f", row {ex.row}" if ex.row is not None else "")
                eg = f"  (e.g. {where}{': ' + ex.detail if ex.detail else ''})"
            lines.append(f"  {a:>15}: {v:>8}  {f + ': ' if f else ''}{p}{eg}")
        if len(rows) > _SUMMARY_LINES:
            lines.append(f"  ... {len(rows) - _SUMMARY_LINES} more kind(s) of problem: see ingest_report.json")
        lines += [f"  unit shift: {s['message']}" for s in self.unit_shifts]
        if self.allowed_missing:
            lines.append(f"  allowed missing: {', '.join(self.allowed_missing)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "files_read": self.files_read,
            "rows_read": self.rows_read,
            "values_read": self.values_read,
            "counts": [{"field": f, "problem": p, "action": a, "n": v}
                       for (f, p, a), v in sorted(self.counts.items(), key=lambda kv: tuple(map(str, kv[0])))],
            "examples": [p.__dict__ | {"message": p.message()} for p in self.examples],
            "unit_shifts": list(self.unit_shifts),
            "flow": list(self.flow),
            "allowed_missing": list(self.allowed_missing),
            "timings": dict(self.timings),
            "definition": self.definition,
        }

    @classmethod
    def from_dict(cls, d: dict) -> IngestReport:
        """The report back from :meth:`to_dict` (as read from ``ingest_report.json``).

        >>> r = IngestReport(source="demo", files_read=2)
        >>> r.add("p1.psv", 3, "Temp", "fahrenheit", "repaired")
        >>> r.add_flow("read", 2, 1)
        >>> IngestReport.from_dict(r.to_dict()) == r
        True
        """
        fields = Problem.__dataclass_fields__
        counts = Counter({(c.get("field"), c["problem"], c["action"]): c["n"] for c in d.get("counts", [])})
        return cls(source=d["source"], files_read=d.get("files_read", 0), rows_read=d.get("rows_read", 0),
                   values_read=d.get("values_read", 0), counts=counts,
                   examples=[Problem(**{k: v for k, v in e.items() if k in fields}) for e in d.get("examples", [])],
                   timings=dict(d.get("timings", {})), definition=d.get("definition"),
                   unit_shifts=list(d.get("unit_shifts", [])), flow=list(d.get("flow", [])),
                   allowed_missing=list(d.get("allowed_missing", [])))

    def write_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)
