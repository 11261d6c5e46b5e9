"""Unit repairs and plausibility checks applied once, at ingest, for every source.

A value outside its concept's plausible ``[min, max]`` (``ehr/concepts.toml``) is, in order:

1. converted, when the concept declares an ``alternatives`` unit whose range holds it:
   ``every_value`` alternatives (°F temperatures, FiO2 in percent, saturations as fractions)
   convert each such value; the others only a **unit shift**: more than
   :data:`SHIFT_SHARE` of the field's values out of range, and at least :data:`CLUSTER_SHARE`
   of those inside the alternative's range (ionised calcium in mmol/L, creatinine in µmol/L);
2. otherwise rejected (the value, not the row). When the rejected values of a field shift into
   the range of another unit the concept knows (``units``), the report says so and offers the
   conversion (declare it as an alternative to apply it).

Every conversion and rejection is counted per field in the ingest report, with examples;
each shift (applied or offered) is listed in ``report.unit_shifts``.

Examples
--------
>>> import numpy as np
>>> from ehr.sources.report import IngestReport
>>> r = IngestReport("demo")
>>> v, keep = check_values("temp", np.array([37.0, 100.4, 5.0]), r, "f.psv", np.array([1, 2, 3]))
>>> np.round(v[keep], 1).tolist(), r.count("repaired"), r.count("rejected_value")
([37.0, 38.0], 1, 1)
>>> ca = np.array([9.1, 8.7, 1.17, 1.2, 1.1, 9.5])  # half of them ionised, in mmol/L
>>> v, keep = check_values("calcium", ca, r, "f.psv", np.arange(1, 7), field="Calcium")
>>> np.round(v, 1).tolist(), r.unit_shifts[0]["applied"]
([9.1, 8.7, 9.4, 9.6, 8.8, 9.5], True)
"""

from __future__ import annotations

import numpy as np

from ehr.concepts import Alternative, convert, load_concepts
from ehr.sources.report import MAX_EXAMPLES, IngestReport

__all__ = ["check_values", "SHIFT_SHARE", "CLUSTER_SHARE"]

#: a field is shifted when more than this share of its values is out of range ...
SHIFT_SHARE = 0.05
#: ... and at least this share of those lies in one other unit's range
CLUSTER_SHARE = 0.8


def _examples(report, files, rows, idx, field, problem, action, values, fmt):
    for i in idx[:MAX_EXAMPLES]:
        f = files if isinstance(files, str) else str(files[i])
        report.add(f, int(rows[i]), field, problem, action, fmt(values[i]), n=0)
    report.tally(field, problem, action, len(idx))


def _convert_into(concept, v, out, unit, lo, hi):
    """Indices of out-of-range values inside [lo, hi] (in ``unit``) that convert into range, and the values."""
    c = load_concepts()[concept]
    idx = np.flatnonzero(out & (v >= lo) & (v <= hi))
    conv = convert(concept, v[idx], unit)
    ok = (conv >= c.min) & (conv <= c.max)
    return idx[ok], conv[ok]


def _shift_record(report, concept, field, unit, n, n_present, applied, problem, rule):
    share = n / n_present
    if applied:
        msg = f"{field}: {n} value(s) ({share:.1%}) read as {problem}, converted to {load_concepts()[concept].unit}"
    else:
        msg = (f"{field}: {n} value(s) ({share:.1%}) are outside the plausible range but lie in the range of "
               f"{unit} (x{rule:g} gives plausible values); they were rejected. If this source sends {unit}, "
               f"declare it in ehr/concepts.toml (concepts.{concept}.alternatives) to convert them at ingest")
    report.unit_shifts.append({"field": field, "concept": concept, "unit": unit, "n": int(n),
                               "share": round(float(share), 4), "applied": bool(applied), "problem": problem,
                               "message": msg})


def _apply_alternative(alt: Alternative, concept, v, out, n_present, report, files, rows, field, orig):
    """Convert the values ``alt`` covers (in place); returns the indices converted."""
    idx, conv = _convert_into(concept, v, out, alt.unit, alt.min, alt.max)
    if not len(idx):
        return idx
    if not alt.every_value:
        n_out = int(out.sum())
        if n_out <= SHIFT_SHARE * n_present or len(idx) < CLUSTER_SHARE * n_out:
            return idx[:0]
        _shift_record(report, concept, field, alt.unit, len(idx), n_present, True, alt.problem, None)
    v[idx] = conv
    c = load_concepts()[concept]
    _examples(report, files, rows, idx, field, alt.problem, "repaired", orig,
              lambda x: f"{x:g} [{alt.unit}] -> {float(convert(concept, x, alt.unit)):.4g} {c.unit}")
    return idx


def _offer(concept, v, out, n_present, report, field):
    """Report (not apply) a shift of the out-of-range values into a known, undeclared unit."""
    c = load_concepts()[concept]
    n_out = int(out.sum())
    if n_out <= SHIFT_SHARE * n_present:
        return
    declared = {a.unit for a in c.alternatives}
    for unit, rule in c.units.items():
        if unit == c.unit or unit in declared or not isinstance(rule, (int, float)) or rule in (0, 1):
            continue
        idx, _ = _convert_into(concept, v, out, unit, c.min / rule, c.max / rule)
        if len(idx) >= CLUSTER_SHARE * n_out:
            _shift_record(report, concept, field, unit, len(idx), n_present, False, f"looks like {unit}", rule)
            return


def check_values(concept: str, values: np.ndarray, report: IngestReport, files, rows,
                 field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Repair and range-check ``values`` (canonical unit expected) of one concept.

    Parameters
    ----------
    concept : concept name in ``concepts.toml``
    values : float array (all values of one source field, so that a unit shift can be seen)
    report : the ingest report that counts repairs, rejections and unit shifts
    files : a file name, or an array (same length as ``values``) naming each value's file
    rows : int array, each value's data row within its file (1-based)
    field : the source field name for messages (defaults to the concept name)

    Returns
    -------
    values, keep : the (possibly converted) values and a mask of values that passed the checks
    """
    c = load_concepts()[concept]
    field = field or concept
    v = np.array(values, dtype="float64", copy=True)
    orig = np.array(values, dtype="float64", copy=True)
    present = ~np.isnan(v)
    n_present = int(present.sum())
    out = present & ((v < c.min) | (v > c.max))
    if out.any():
        for alt in c.alternatives:
            done = _apply_alternative(alt, concept, v, out, n_present, report, files, rows, field, orig)
            out[done] = False
        if out.any():
            _offer(concept, v, out, n_present, report, field)
            idx = np.flatnonzero(out)
            _examples(report, files, rows, idx, field, "outside plausible range", "rejected_value",
                      v, lambda x: f"{x:g} not in [{c.min:g}, {c.max:g}] {c.unit}")
    return v, present & ~out
