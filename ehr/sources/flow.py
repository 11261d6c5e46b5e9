"""The reader's part of the cohort flow: what it saw, what it left out and why, what it kept.

:func:`reader_flow` adds rows ``{stage, n_stays, n_septic, reason}`` to the ingest report
(``read``: files or ICU stay rows seen, septic count unknown; ``excluded``: files or stays left
out, one row per reason; ``cohort``: stays returned). :func:`ehr.flow.cohort_flow` puts them
first in the run's ``cohort_flow.csv`` and adds screening and the split.

Examples
--------
>>> import pandas as pd
>>> from ehr.sources.report import IngestReport
>>> rep = IngestReport("demo")
>>> reader_flow(rep, n_seen=3, what="ICU stay rows", stays=pd.DataFrame({"sepsis": [True, False]}),
...             excluded={"no admission row": 1})
>>> [(r["stage"], r["n_stays"]) for r in rep.flow]
[('read', 3), ('excluded', 1), ('cohort', 2)]
"""

from __future__ import annotations

import pandas as pd

from ehr.sources.report import IngestReport

__all__ = ["reader_flow"]


def reader_flow(report: IngestReport, *, n_seen: int, what: str, stays: pd.DataFrame,
                excluded: dict | None = None) -> None:
    """Add the reader's flow rows to ``report``: seen, rejected files, other exclusions, cohort."""
    report.add_flow("read", n_seen, None, what)
    for (_field, problem, action), n in sorted(report.counts.items(), key=lambda kv: str(kv[0])):
        if action == "rejected_file" and n:
            report.add_flow("excluded", n, None, f"file rejected: {problem}")
    for reason, n in (excluded or {}).items():
        if n:
            report.add_flow("excluded", n, None, reason)
    report.add_flow("cohort", len(stays), int(stays["sepsis"].sum()) if len(stays) else 0, "stays in the cohort")
