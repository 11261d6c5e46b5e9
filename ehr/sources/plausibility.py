"""Unit repairs and plausibility checks applied once, at ingest, for every source.

Documented repair rules (each repaired value is counted in the ingest report):

- ``temp``: a value outside the Celsius range that lies in 86-113 is taken as Fahrenheit
  (30-45 °C) and converted.
- ``fio2``: a value in [21, 100] is taken as a percentage and divided by 100.
- ``spo2``, ``sao2``: a value in (0, 1] is taken as a fraction and multiplied by 100.

Everything else outside the concept's plausible ``[min, max]`` (``concepts.toml``) is rejected
(the value, not the row) and counted.

Examples
--------
>>> import numpy as np
>>> from ehr.sources.report import IngestReport
>>> r = IngestReport("demo")
>>> v, keep = check_values("temp", np.array([37.0, 100.4, 5.0]), r, "f.psv", np.array([1, 2, 3]))
>>> np.round(v[keep], 1).tolist(), r.count("repaired"), r.count("rejected_value")
([37.0, 38.0], 1, 1)
"""

from __future__ import annotations

import numpy as np

from ehr.concepts import load_concepts
from ehr.sources.report import MAX_EXAMPLES, IngestReport

__all__ = ["check_values"]


def _examples(report, files, rows, idx, field, problem, action, values, fmt):
    for i in idx[:MAX_EXAMPLES]:
        f = files if isinstance(files, str) else str(files[i])
        report.add(f, int(rows[i]), field, problem, action, fmt(values[i]), n=0)
    report.counts[(problem, action)] += len(idx)


def check_values(concept: str, values: np.ndarray, report: IngestReport, files, rows,
                 field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Repair and range-check ``values`` (canonical unit expected) of one concept.

    Parameters
    ----------
    concept : concept name in ``concepts.toml``
    values : float array
    report : the ingest report that counts repairs and rejections
    files : a file name, or an array (same length as ``values``) naming each value's file
    rows : int array, each value's data row within its file (1-based)
    field : the source field name for messages (defaults to the concept name)

    Returns
    -------
    values, keep : the (possibly repaired) values and a mask of values that passed the checks
    """
    c = load_concepts()[concept]
    field = field or concept
    v = np.array(values, dtype="float64", copy=True)
    orig = np.array(values, dtype="float64", copy=True)
    present = ~np.isnan(v)
    out = present & ((v < c.min) | (v > c.max))
    if out.any():
        if concept == "temp":
            fix = out & (v >= 86.0) & (v <= 113.0)
            idx = np.flatnonzero(fix)
            if len(idx):
                v[idx] = (v[idx] - 32.0) * 5.0 / 9.0
                _examples(report, files, rows, idx, field, "temperature in Fahrenheit", "repaired",
                          orig, lambda x: f"{x:g} [degF] -> {(x - 32) * 5 / 9:.2f} Cel")
        elif concept == "fio2":
            fix = out & (v >= 21.0) & (v <= 100.0)
            idx = np.flatnonzero(fix)
            if len(idx):
                v[idx] = v[idx] / 100.0
                _examples(report, files, rows, idx, field, "FiO2 given in percent", "repaired",
                          orig, lambda x: f"{x:g} % -> {x / 100:g}")
        elif concept in ("spo2", "sao2"):
            fix = out & (v > 0.0) & (v <= 1.0)
            idx = np.flatnonzero(fix)
            if len(idx):
                v[idx] = v[idx] * 100.0
                _examples(report, files, rows, idx, field, "saturation given as a fraction", "repaired",
                          orig, lambda x: f"{x:g} -> {x * 100:g} %")
        out = present & ((v < c.min) | (v > c.max))
        idx = np.flatnonzero(out)
        if len(idx):
            _examples(report, files, rows, idx, field, "outside plausible range", "rejected_value",
                      v, lambda x: f"{x:g} not in [{c.min:g}, {c.max:g}] {c.unit}")
    return v, present & ~out
