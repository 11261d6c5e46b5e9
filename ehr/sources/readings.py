"""Single measurements from message sources (FHIR, JSON events) -> the ``events`` contract, checked once.

A :class:`Reading` is one measurement as it was sent: the concept its code maps to, the value and
unit as given, the time it became available, and where in the message it came from.
:func:`readings_to_events` converts each value to the concept's canonical unit
(:func:`ehr.concepts.convert`), and checks it against the plausible range, the clock and the other
readings of the same stay. Two modes:

``strict=True``   (the scoring service) the first problem raises :class:`ReadingError`, which names
                  the place in the message (``loc``) and says what is wrong: nothing is guessed.
``strict=False``  (file ingest) the plausibility repairs of :mod:`ehr.sources.plausibility` apply as
                  for every source; what cannot be read is dropped and counted in the report.

A unit is never assumed: a quantity without a unit is read only for dimensionless concepts
(canonical unit ``1`` or ``{score}``). Duplicates are readings of one stay and concept at the same
time; with ``strict=False`` the first is kept and the others are counted.

Examples
--------
>>> import numpy as np
>>> t = np.datetime64("2026-01-01T08:00", "ns")
>>> r = [Reading("temp", "LOINC/8310-5", t, 100.4, "[degF]", ("entry", 0), "s1"),
...      Reading("crea", "LOINC/2160-0", t, 88.4, "umol/L", ("entry", 1), "s1")]
>>> ev = readings_to_events(r, stay_ids={"s1": 7})
>>> ev[["stay_id", "concept", "unit"]].values.tolist()
[[7, 'crea', 'mg/dL'], [7, 'temp', 'Cel']]
>>> ev["numeric_value"].round(2).tolist()
[1.0, 38.0]
>>> readings_to_events([r[0]._replace(unit="degF")], stay_ids={"s1": 7})
Traceback (most recent call last):
...
ehr.sources.readings.ReadingError: entry.0: unit 'degF' is not accepted for temp (Body temperature); send one of ['Cel', '[degF]'] (UCUM)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ehr.concepts import convert, load_concepts
from ehr.sources.plausibility import check_values
from ehr.sources.report import IngestError, IngestReport

__all__ = ["Reading", "ReadingError", "readings_to_events", "loc_text", "where", "DIMENSIONLESS_UNITS"]

#: canonical units for which a value without a unit is unambiguous
DIMENSIONLESS_UNITS = ("1", "{score}")
#: how far ahead of ``now`` a reading may be (clock skew between systems) before it is "in the future"
FUTURE_TOLERANCE = np.timedelta64(5, "m")


class Reading(NamedTuple):
    """One measurement as sent (before unit conversion)."""

    concept: str | None     # concept name, None when the code maps to none
    code: str               # namespaced source code, e.g. "LOINC/8867-4"
    time: np.datetime64     # when the value became available (naive UTC or local time, ns)
    value: float
    unit: str | None        # the unit as sent (UCUM code), None when absent
    loc: tuple              # where in the message: ("entry", 3, "resource", "valueQuantity")
    stay: str               # the stay key in the message (an Encounter reference, a subject)
    source_id: str | None = None  # e.g. the Observation id


class ReadingError(IngestError):
    """A reading that cannot be read as sent; ``loc`` is where in the message, ``msg`` what is wrong."""

    def __init__(self, loc: tuple, msg: str, kind: str = "value_error"):
        self.loc, self.msg, self.kind = tuple(loc), msg, kind
        super().__init__(f"{loc_text(loc)}: {msg}")


def loc_text(loc) -> str:
    """``("entry", 3, "resource")`` -> ``"entry.3.resource"`` (the way pydantic prints locations)."""
    return ".".join(str(x) for x in loc)


def where(loc) -> tuple[str, int | None, str]:
    """(file, line, field) of a file location ``(file, line, *path)``, as the ingest report counts them."""
    line = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    return str(loc[0]) if loc else "", line, loc_text(loc[2:] if line is not None else loc[1:])


def _problem(strict, report, reading, problem, msg, action="rejected_value", kind="value_error"):
    if strict:
        raise ReadingError(reading.loc, msg, kind)
    if report is not None:
        report.add(*where(reading.loc), problem, action, msg)


def _unit_ok(r: Reading, concepts, strict, report):
    """The reading's unit (canonical when a dimensionless value comes without one), None if refused."""
    c = concepts[r.concept]
    unit = r.unit or None
    if unit is None and c.unit not in DIMENSIONLESS_UNITS:
        _problem(strict, report, r, "missing unit",
                 f"no unit for {r.concept} ({c.description}); send the UCUM code, e.g. '{c.unit}'", kind="unit")
        return None
    if unit is not None and unit != c.unit and unit not in c.units:
        _problem(strict, report, r, "unit not accepted",
                 f"unit '{unit}' is not accepted for {r.concept} ({c.description}); send one of "
                 f"{sorted(set(c.units) | {c.unit})} (UCUM)", kind="unit")
        return None
    if r.value != r.value or r.value in (float("inf"), float("-inf")):
        _problem(strict, report, r, "value not finite", "value is not a finite number")
        return None
    return unit or c.unit


def _rows_without_problems(readings, concepts, limit):
    """``[(reading, unit)]`` as :func:`readings_to_events`'s checks build them, when no reading has a
    problem (unknown concept, future time, unit refused, value not finite, duplicate); else None, and
    the reading-by-reading checks find, report or raise each problem in order. The same checks,
    vectorised: a service checks a thousand readings a batch."""
    try:
        return _clean_rows(readings, concepts, limit)
    except (TypeError, ValueError):  # an odd reading (unhashable unit, a value that is no number)
        return None


def _clean_rows(readings, concepts, limit):
    if not readings:
        return []
    units: dict = {}
    out = []
    for r in readings:
        key = (r.concept, r.unit)
        unit = units.get(key, False)
        if unit is False:
            c = concepts.get(r.concept) if r.concept is not None else None
            u = r.unit or None
            if c is None or (u is None and c.unit not in DIMENSIONLESS_UNITS) or \
                    (u is not None and u != c.unit and u not in c.units):
                return None
            unit = units[key] = u or c.unit
        out.append((r, unit))
    values = np.array([r.value for r in readings], dtype="float64")
    times = np.array([r.time for r in readings], dtype="datetime64[ns]")
    if not np.isfinite(values).all() or (times > limit).any():
        return None
    keys = set(zip([r.stay for r in readings], [r.concept for r in readings], times.view(np.int64).tolist()))
    return out if len(keys) == len(readings) else None


def _rows_checked(readings, concepts, limit, strict, report) -> list:
    """``[(reading, unit)]`` of the readings without problems, each problem reported (or raised)."""
    rows, seen = [], {}
    for r in readings:
        if r.concept is None:
            _problem(strict, report, r, "code maps to no concept",
                     f"code {r.code} is not in the concept dictionary (ehr/concepts.toml)",
                     action="skipped", kind="unknown_code")
            continue
        if r.time > limit:
            _problem(strict, report, r, "time in the future",
                     f"time {pd.Timestamp(r.time)} is in the future (now {pd.Timestamp(limit - FUTURE_TOLERANCE)} UTC)",
                     action="rejected_row", kind="future_time")
            continue
        unit = _unit_ok(r, concepts, strict, report)
        if unit is None:
            continue
        key = (r.stay, r.concept, r.time)
        if key in seen:
            _problem(strict, report, r, "duplicate observation",
                     f"a second {r.concept} value at {pd.Timestamp(r.time)}; the first is at "
                     f"{loc_text(seen[key])}", action="rejected_row", kind="duplicate")
            continue
        seen[key] = r.loc
        rows.append((r, unit))
    return rows


def readings_to_events(readings, *, stay_ids: dict, subject_ids: dict | None = None, strict: bool = True,
                       now=None, report: IngestReport | None = None, source_ids: bool = False) -> pd.DataFrame:
    """Convert, check and tabulate readings as a contract ``events`` table (canonical units).

    Parameters
    ----------
    readings : iterable of Reading
    stay_ids : dict
        Stay key of each reading -> integer ``stay_id``.
    subject_ids : dict, optional
        Stay key -> integer ``subject_id`` (default: the stay id).
    strict : bool
        Raise :class:`ReadingError` at the first problem (True) or count it in ``report`` (False).
    now : datetime-like, optional
        Readings later than ``now`` (plus 5 min of clock skew) are in the future: an error.
        Default: the current UTC time.
    report : IngestReport, optional
        Where problems are counted when ``strict`` is False (reading locations then start with
        the file and line, see :func:`where`).
    source_ids : bool
        Add a ``source_id`` column (each reading's id in its message, e.g. the Observation id).

    Returns
    -------
    DataFrame with the ``events`` columns, sorted by (stay_id, time, concept).
    """
    concepts = load_concepts()
    limit = np.datetime64(pd.Timestamp.now(tz="UTC").tz_localize(None) if now is None else pd.Timestamp(now),
                          "ns") + FUTURE_TOLERANCE
    subject_ids = subject_ids or {}
    readings = readings if isinstance(readings, (list, tuple)) else list(readings)
    rows = _rows_without_problems(readings, concepts, limit)
    if rows is None:  # some reading has a problem: find, report or raise each, in order
        rows = _rows_checked(readings, concepts, limit, strict, report)
    values = np.array([r.value for r, _ in rows], dtype="float64")
    groups: dict = {}
    for i, (r, unit) in enumerate(rows):
        groups.setdefault((r.concept, unit), []).append(i)
    for (name, unit), idx in groups.items():  # one conversion per concept and unit
        values[idx] = convert(name, values[idx], unit)
    names = np.array([r.concept for r, _ in rows], dtype=object)
    keep = np.ones(len(rows), dtype=bool)
    for name in dict.fromkeys(names):
        idx = np.flatnonzero(names == name)
        c = concepts[name]
        if strict:
            bad = (values[idx] < c.min) | (values[idx] > c.max)
            if bad.any():
                r = rows[idx[np.flatnonzero(bad)[0]]][0]
                raise ReadingError(r.loc, f"{name} = {values[idx[bad]][0]:g} {c.unit} (after conversion from "
                                          f"'{r.unit}') is outside the plausible range [{c.min:g}, {c.max:g}] "
                                          f"{c.unit}; check the value and its unit", "range")
            continue
        places = [where(rows[i][0].loc) for i in idx]
        fixed, ok = check_values(name, values[idx], report or IngestReport("readings"),
                                 np.array([p[0] for p in places], dtype=object),
                                 np.array([p[1] or 0 for p in places], dtype=int))
        values[idx], keep[idx] = fixed, ok
    stays = np.array([stay_ids[r.stay] for r, _ in rows], dtype="int64")
    times = np.array([r.time for r, _ in rows], dtype="datetime64[ns]")
    order = np.lexsort((names.astype(str), times, stays)) if len(rows) else np.zeros(0, dtype=int)
    kept = order[keep[order]].tolist()
    read = [rows[i][0] for i in kept]
    columns = {
        "subject_id": np.array([subject_ids.get(r.stay, stay_ids[r.stay]) for r in read], dtype="int64"),
        "stay_id": stays[kept],
        "time": times[kept],
        "code": np.array([r.code for r in read], dtype=object),
        "numeric_value": values[kept],
        "text_value": np.full(len(read), None, dtype=object),
        "unit": np.array([concepts[r.concept].unit for r in read], dtype=object),
        "concept": np.array([r.concept for r in read], dtype=object),
    }
    if source_ids:
        columns["source_id"] = np.array([r.source_id for r in read], dtype=object)
    return pd.DataFrame(columns)
