"""The stays a server can show: those of a loaded cohort directory, and those posted to ``/v1/score``.

A cohort's events are read once and indexed by stay; a stay's screens are built when it is first
asked for (the same :meth:`Engine.screens` as scoring) and kept in a small LRU cache, so a server
on a large cohort starts in seconds and holds only what it shows. Posted stays are kept (their
events and stay row, up to ``max_posted``, least recently posted dropped first) so that the page
can show their traces too. A posted stay shadows a cohort stay with the same id.

Examples
--------
>>> import pandas as pd
>>> p = PostedStays(max_posted=2)
>>> for i in (1, 2, 3):
...     p.put(i, pd.DataFrame({"time": [pd.Timestamp("2026-01-01")]}), {"admit_time": pd.Timestamp("2026-01-01")})
>>> sorted(p.ids())
[2, 3]
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CohortStays", "PostedStays", "StayNotFound"]


class StayNotFound(KeyError):
    """No loaded or posted stay has this id."""


class _LRU(OrderedDict):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


class CohortStays:
    """A cohort directory (:meth:`ehr.cohort.Cohort.save`) served by stay."""

    def __init__(self, directory, *, cache_size: int = 256):
        from ehr.cohort import Cohort

        self.directory = Path(directory)
        cohort = Cohort.load(self.directory)
        events, stays, cxr = cohort.events, cohort.stays, cohort.cxr
        events = events.sort_values(["stay_id", "time"], kind="stable").reset_index(drop=True)
        self._ev_ids = events["stay_id"].to_numpy(dtype=np.int64)
        self.events = events
        self.cxr = cxr.sort_values("stay_id", kind="stable").reset_index(drop=True) if cxr is not None else None
        self.stays = stays.set_index("stay_id", drop=False).sort_index()
        self._screens = _LRU(cache_size)
        self._summary = None

    def __contains__(self, stay_id) -> bool:
        return stay_id in self.stays.index

    def summary(self) -> list[dict]:
        """One small dict per stay for the page's picker (computed once)."""
        if self._summary is None:
            self._summary = self._summarise()
        return self._summary

    def _summarise(self) -> list[dict]:
        s = self.stays
        hours = (s["discharge_time"] - s["admit_time"]).dt.total_seconds() / 3600.0
        septic = s["onset_time"].notna() if "onset_time" in s else pd.Series(False, index=s.index)
        dept = s["department"] if "department" in s else pd.Series(None, index=s.index)
        return [{"stay_id": int(i), "source": "cohort", "septic": bool(sp), "hours": round(float(h), 1),
                 "department": None if pd.isna(d) else str(d)}
                for i, sp, h, d in zip(s.index, septic, hours, dept)]

    def stay(self, stay_id: int) -> dict:
        if stay_id not in self:
            raise StayNotFound(stay_id)
        return self.stays.loc[stay_id].to_dict()

    def screens(self, stay_id: int, engine) -> pd.DataFrame:
        """The stay's screens (built on first use, then cached)."""
        if stay_id in self._screens:
            self._screens.move_to_end(stay_id)
            return self._screens[stay_id]
        row = self.stays.loc[[stay_id]] if stay_id in self else None
        if row is None:
            raise StayNotFound(stay_id)
        lo, hi = np.searchsorted(self._ev_ids, [stay_id, stay_id + 1])
        cxr = None
        if self.cxr is not None:
            ids = self.cxr["stay_id"].to_numpy(dtype=np.int64)
            c_lo, c_hi = np.searchsorted(ids, [stay_id, stay_id + 1])
            cxr = self.cxr.iloc[c_lo:c_hi]
        screens = engine.screens(self.events.iloc[lo:hi], row.reset_index(drop=True), cxr)
        self._screens.put(stay_id, screens)
        return screens


class PostedStays:
    """Stays posted to ``/v1/score``: their events and stay rows, least recently posted dropped first."""

    def __init__(self, max_posted: int = 1000):
        self._stays = _LRU(max_posted)

    def put(self, stay_id: int, events: pd.DataFrame, stay: dict, at=None) -> None:
        self._stays.put(int(stay_id), (events, dict(stay), at))

    def ids(self):
        return list(self._stays)

    def __contains__(self, stay_id) -> bool:
        return stay_id in self._stays

    def summary(self) -> list[dict]:
        out = []
        for sid, (events, stay, at) in self._stays.items():
            end = at if at is not None else events["time"].max()
            out.append({"stay_id": sid, "source": "posted", "septic": None,
                        "hours": round((end - stay["admit_time"]).total_seconds() / 3600.0, 1),
                        "department": stay.get("department")})
        return out

    def stay(self, stay_id: int) -> dict:
        if stay_id not in self._stays:
            raise StayNotFound(stay_id)
        events, stay, at = self._stays[stay_id]
        return {**stay, "stay_id": stay_id, "onset_time": pd.NaT,
                "discharge_time": at if at is not None else events["time"].max()}

    def screens(self, stay_id: int, engine) -> pd.DataFrame:
        events = self._stays[stay_id][0] if stay_id in self._stays else None
        if events is None:
            raise StayNotFound(stay_id)
        stay = pd.DataFrame([{**self.stay(stay_id), "subject_id": stay_id}])
        return engine.screens(events.assign(stay_id=stay_id), stay, until_onset=False)
