"""Hourly screens: the one wide table every model consumes.

One row per (stay, screen hour). Screen hour ``k`` of a stay is at ``admit_time + k h`` and sees
every event with ``time <= screen_time`` (the leakage rule of ``ehr/schema.py``): an event at
``admit_time + 2.5 h`` is first visible to screen 3. For each concept the screen carries the last
value registered so far (carried forward, never back-filled) and ``<concept>_age_h``, the hours
since it was registered (null if never). ``new_data`` says a concept value was registered since
the previous screen. CXR finding probabilities of the latest study are carried the same way, with
``cxr_age_h``.

The grid of a stay runs from the hour of its first event (any code; at least hour 1) to the hour
of discharge, and by default stops before onset: screens at or after ``onset_time`` are not
screened (``until_onset=False`` keeps them, e.g. for the PhysioNet utility). Stays without any
event have no screens. Events after discharge are not screened; they are counted in
``screens.attrs["build_report"]``.

Labels: ``onset_in_h`` = hours from the screen to onset (null for non-septic stays) and
``label`` = 1 when ``0 < onset_in_h <= horizon_h``. For PhysioNet sources, ``sepsis_label`` is the
challenge's raw hourly label.

Examples
--------
>>> import pandas as pd
>>> t0 = pd.Timestamp("2024-01-01")
>>> stays = pd.DataFrame({"subject_id": [1], "stay_id": [1], "admit_time": [t0],
...     "discharge_time": [t0 + pd.Timedelta(hours=3)], "onset_time": [pd.NaT],
...     "age": [70.0], "sex": ["F"], "department": ["ward"]})
>>> events = pd.DataFrame({"subject_id": [1, 1], "stay_id": [1, 1],
...     "time": [t0 + pd.Timedelta(minutes=30), t0 + pd.Timedelta(hours=2, minutes=30)],
...     "code": ["SYNTH/hr"] * 2, "numeric_value": [80.0, 120.0], "concept": ["hr", "hr"]})
>>> s = build_screens(events, stays)
>>> s[["hours_since_admit", "hr", "hr_age_h", "new_data"]].to_numpy().tolist()
[[1.0, 80.0, 0.5, True], [2.0, 80.0, 1.5, False], [3.0, 120.0, 0.5, True]]
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ehr.concepts import concept_names
from ehr.schema import SchemaError, require_columns

__all__ = ["build_screens", "add_labels", "screen_concepts"]

log = logging.getLogger(__name__)

_HOUR_NS = 3_600_000_000_000
_STATIC = ("age", "sex", "department", "hypercapnic")


def _ns(series) -> np.ndarray:
    """datetime-like -> int64 nanoseconds (NaT -> int64 min)."""
    return pd.to_datetime(series).to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _carry_forward(n_rows: int, starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index of the most recent row <= each row (within its stay) that has data, else -1.

    ``rows`` are the (sorted or not) rows that hold data; ``starts`` are each stay's first row.
    A stay start with no data resets the carry so nothing crosses from one stay to the next.
    """
    idx = np.full(n_rows, -1, dtype=np.int64)
    idx[rows] = rows
    reset = starts[idx[starts] < 0]
    idx[reset] = reset  # a sentinel row with no data of its own
    np.maximum.accumulate(idx, out=idx)
    has = np.zeros(n_rows, dtype=bool)
    has[rows] = True
    return np.where(has[idx], idx, -1)


def screen_concepts(events: pd.DataFrame) -> list[str]:
    """Concepts present in ``events``, in dictionary order."""
    present = set(pd.Series(events["concept"]).dropna().astype(str).unique())
    return [c for c in concept_names() if c in present]


def build_screens(events: pd.DataFrame, stays: pd.DataFrame, cxr: pd.DataFrame | None = None, *,
                  horizon_h: float = 48.0, until_onset: bool = True,
                  concepts: list[str] | None = None) -> pd.DataFrame:
    """Build the hourly screens table from ``events`` and ``stays`` (+ optional ``cxr``).

    Parameters
    ----------
    events, stays, cxr : contract tables (``ehr/schema.py``)
    horizon_h : label horizon: ``label = 1`` when onset follows within this many hours
    until_onset : stop each septic stay's screens before onset (default, as the protocol screens)
    concepts : concept columns to build; default those present in ``events``

    Returns
    -------
    screens : DataFrame sorted by (stay_id, screen_time)
    """
    purpose = "to build screens"
    require_columns(stays, ["stay_id", "admit_time", "discharge_time"], table="stays", purpose=purpose)
    require_columns(events, ["stay_id", "time", "concept", "numeric_value"], table="events", purpose=purpose)
    if cxr is not None:
        require_columns(cxr, ["stay_id", "time"], table="cxr", purpose=purpose)
    if concepts is None:
        concepts = screen_concepts(events)
    unknown = sorted(set(concepts) - set(concept_names()))
    if unknown:
        raise SchemaError(f"unknown concept(s) {unknown}; see ehr/concepts.toml")

    st = stays.sort_values("stay_id").reset_index(drop=True)
    sid = st["stay_id"].to_numpy(dtype=np.int64)
    if len(sid) and (np.diff(sid) == 0).any():
        raise SchemaError(f"stays: duplicate stay_id {sid[np.flatnonzero(np.diff(sid) == 0)[0]]}")
    admit = _ns(st["admit_time"])
    dis = _ns(st["discharge_time"])

    ev_sid = events["stay_id"].to_numpy(dtype=np.int64)
    pos = np.searchsorted(sid, ev_sid)
    pos_c = np.minimum(pos, max(len(sid) - 1, 0))
    known = (pos < len(sid)) & (sid[pos_c] == ev_sid) if len(sid) else np.zeros(len(ev_sid), bool)
    if not known.all():
        bad = int(np.flatnonzero(~known)[0])
        raise SchemaError(f"events: row {bad} refers to stay_id {ev_sid[bad]} which is not in stays")
    t = _ns(events["time"])
    rel = t - admit[pos]
    hour = np.maximum(-(-rel // _HOUR_NS), 1)  # ceil: an event is visible at the end of its hour
    last_hour = np.maximum(-(-(dis - admit) // _HOUR_NS), 1)
    after = hour > last_hour[pos]
    n_after = int(after.sum())

    # grid: from the first event's hour to the discharge hour
    first_hour = np.full(len(sid), np.iinfo(np.int64).max)
    np.minimum.at(first_hour, pos[~after], hour[~after])
    has_events = first_hour != np.iinfo(np.int64).max
    first_hour = np.where(has_events, first_hour, 1)
    n_hours = np.where(has_events, last_hour - first_hour + 1, 0)
    starts = np.concatenate([[0], np.cumsum(n_hours)[:-1]]).astype(np.int64)
    n = int(n_hours.sum())
    row_stay = np.repeat(np.arange(len(sid)), n_hours)
    hour_of_row = np.arange(n) - starts[row_stay] + first_hour[row_stay]
    screen_ns = admit[row_stay] + hour_of_row * _HOUR_NS

    cols: dict[str, np.ndarray] = {
        "subject_id": (st["subject_id"].to_numpy(dtype=np.int64) if "subject_id" in st else sid)[row_stay],
        "stay_id": sid[row_stay],
        "screen_time": screen_ns.astype("datetime64[ns]"),
        "hours_since_admit": hour_of_row.astype("float64"),
    }
    ok = ~after
    ev_row = np.where(ok, starts[pos] + hour - first_hour[pos], -1)
    concept = pd.Series(events["concept"]).astype("object").to_numpy()
    value = events["numeric_value"].to_numpy(dtype="float64")
    new_data = np.zeros(n, dtype=bool)
    for c in concepts:
        m = ok & (concept == c) & ~np.isnan(value)
        r, tv, v = ev_row[m], t[m], value[m]
        # the last value within each row wins: sort by (row, time) and keep the final one
        order = np.lexsort((tv, r))
        r, tv, v = r[order], tv[order], v[order]
        keep = np.concatenate([r[1:] != r[:-1], [True]]) if len(r) else np.zeros(0, bool)
        r, tv, v = r[keep], tv[keep], v[keep]
        new_data[r] = True
        val = np.full(n, np.nan)
        tim = np.zeros(n, dtype=np.int64)
        val[r], tim[r] = v, tv
        src = _carry_forward(n, starts[n_hours > 0], r)
        got = src >= 0
        cols[c] = np.where(got, val[np.maximum(src, 0)], np.nan)
        cols[f"{c}_age_h"] = np.where(got, (screen_ns - tim[np.maximum(src, 0)]) / _HOUR_NS, np.nan)
    cols["new_data"] = new_data

    if cxr is not None and len(cxr):
        _add_cxr(cols, cxr, sid, admit, last_hour, starts, n_hours, first_hour, screen_ns, n)
    elif cxr is not None:  # no study (yet): the same columns, so every partition of a cohort has them
        for c in [*_finding_columns(cxr), "cxr_age_h"]:
            cols[c] = np.full(n, np.nan)

    screens = pd.DataFrame(cols)
    for c in _STATIC:
        if c in st.columns:
            screens[c] = st[c].to_numpy()[row_stay]

    onset = _ns(st["onset_time"]) if "onset_time" in st.columns else np.full(len(sid), np.iinfo(np.int64).min)
    onset_ok = onset != np.iinfo(np.int64).min
    screens["onset_in_h"] = np.where(onset_ok[row_stay], (onset[row_stay] - screen_ns) / _HOUR_NS, np.nan)
    if "sepsis_label_time" in st.columns and st["sepsis_label_time"].notna().any():
        lab = _ns(st["sepsis_label_time"])
        lab_ok = lab != np.iinfo(np.int64).min
        screens["sepsis_label"] = (lab_ok[row_stay] & (screen_ns >= lab[row_stay])).astype(np.int64)
    add_labels(screens, horizon_h)
    if until_onset:
        screens = screens[~(screens["onset_in_h"] <= 0)].reset_index(drop=True)
    screens.attrs["build_report"] = {
        "stays": int(len(sid)), "stays_without_events": int((~has_events).sum()),
        "events_after_discharge_not_screened": n_after, "screens": int(len(screens)),
        "horizon_h": float(horizon_h), "until_onset": bool(until_onset),
    }
    if n_after:
        log.warning("%d event(s) after discharge were not screened", n_after)
    return screens


def add_labels(screens: pd.DataFrame, horizon_h: float = 48.0) -> pd.DataFrame:
    """(Re)compute ``label`` for a horizon from ``onset_in_h``, in place; returns ``screens``.

    >>> import pandas as pd
    >>> s = pd.DataFrame({"onset_in_h": [60.0, 48.0, 6.0, float("nan")]})
    >>> add_labels(s, 48)["label"].tolist()
    [0, 1, 1, 0]
    """
    o = screens["onset_in_h"].to_numpy(dtype="float64")
    screens["label"] = ((o > 0) & (o <= horizon_h)).astype(np.int64)
    return screens


def _finding_columns(cxr: pd.DataFrame) -> list[str]:
    return [c for c in cxr.columns if c.startswith("cxr_") and c != "cxr_age_h"]


def _add_cxr(cols, cxr, sid, admit, last_hour, starts, n_hours, first_hour, screen_ns, n):
    """Carry the latest CXR study's finding probabilities forward, with ``cxr_age_h``."""
    finding_cols = _finding_columns(cxr)
    c_sid = cxr["stay_id"].to_numpy(dtype=np.int64)
    pos = np.searchsorted(sid, c_sid)
    pos_c = np.minimum(pos, len(sid) - 1)
    known = (pos < len(sid)) & (sid[pos_c] == c_sid)
    if not known.all():
        bad = int(np.flatnonzero(~known)[0])
        raise SchemaError(f"cxr: row {bad} refers to stay_id {c_sid[bad]} which is not in stays")
    t = _ns(cxr["time"])
    hour = np.maximum(-(-(t - admit[pos]) // _HOUR_NS), first_hour[pos])
    ok = (hour <= last_hour[pos]) & (n_hours[pos] > 0)
    r = np.where(ok, starts[pos] + hour - first_hour[pos], -1)
    sel = np.flatnonzero(ok)
    order = sel[np.lexsort((t[sel], r[sel]))]
    rr = r[order]
    keep = np.concatenate([rr[1:] != rr[:-1], [True]]) if len(rr) else np.zeros(0, bool)
    order = order[keep]
    study_of_row = np.full(n, -1, dtype=np.int64)
    study_of_row[r[order]] = order
    src = _carry_forward(n, starts[n_hours > 0], r[order])
    got = src >= 0
    study = np.where(got, study_of_row[np.maximum(src, 0)], 0)
    for c in finding_cols:
        v = cxr[c].to_numpy(dtype="float64")
        cols[c] = np.where(got, v[study], np.nan)
    cols["cxr_age_h"] = np.where(got, (screen_ns - t[study]) / _HOUR_NS, np.nan)
