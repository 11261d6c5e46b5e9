"""One stay's screens from a large table, and the screens a run keeps so that its alarms can be explained.

A run writes ``test_screens.parquet``: the test split's screens with the keys and the columns its
models read (``required_columns``), sorted by stay and time in row groups of 16,384 rows, so that
:func:`read_stay` reads one stay through a parquet filter on ``stay_id`` (the row groups' min/max
statistics skip the others) instead of the whole table. :func:`pick_screen` chooses the screen to
explain from a time or from hours since admission, and refuses one outside the stay.

Examples
--------
>>> import pandas as pd, tempfile, pathlib
>>> t0 = pd.Timestamp("2026-01-01")
>>> s = pd.DataFrame({"stay_id": [2, 1, 1], "screen_time": [t0 + pd.Timedelta(hours=h) for h in (1, 2, 1)],
...                   "hours_since_admit": [1.0, 2.0, 1.0], "hr": [70.0, 91.0, 88.0]})
>>> path = pathlib.Path(tempfile.mkdtemp()) / "test_screens.parquet"
>>> _ = write_stay_screens(s, path, columns=["hr"])
>>> stay = read_stay(path, 1)
>>> stay["hr"].tolist(), pick_screen(stay, "2").index.tolist(), pick_screen(stay, "2026-01-01 01:30").index.tolist()
([88.0, 91.0], [1], [0])
>>> pick_screen(stay, "7")
Traceback (most recent call last):
...
ValueError: stay 1 has screens from 1 h to 2 h after admission (2026-01-01 01:00:00 to 2026-01-01 02:00:00); 7 h is outside it
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["write_stay_screens", "read_stay", "pick_screen", "KEY_COLUMNS", "ROW_GROUP"]

KEY_COLUMNS = ("stay_id", "subject_id", "screen_time", "hours_since_admit", "new_data")
ROW_GROUP = 16_384


def write_stay_screens(screens: pd.DataFrame, path, *, columns) -> Path:
    """Write the keys and ``columns`` of ``screens``, sorted by stay and time, for :func:`read_stay`."""
    keep = [c for c in KEY_COLUMNS if c in screens.columns] + [c for c in dict.fromkeys(columns)
                                                               if c in screens.columns and c not in KEY_COLUMNS]
    out = screens[keep].sort_values(["stay_id", "screen_time"], kind="stable")
    out.to_parquet(path, index=False, compression="zstd", row_group_size=ROW_GROUP)
    return Path(path)


def read_stay(path, stay_id: int, columns=None) -> pd.DataFrame:
    """The screens of one stay (sorted by time), read through a filter on ``stay_id``."""
    stay = pd.read_parquet(path, columns=columns, filters=[("stay_id", "==", int(stay_id))])
    return stay.sort_values("screen_time", kind="stable").reset_index(drop=True)


def pick_screen(stay: pd.DataFrame, at: str) -> pd.DataFrame:
    """The stay's last screen at or before ``at``: hours since admission (``"99"``) or a time.

    Raises ``ValueError`` when ``at`` falls before the first screen or after the last.
    """
    if stay.empty:
        raise ValueError("no screens")
    try:
        hours = float(at)
    except ValueError:
        hours = None
    first, last = stay.iloc[0], stay.iloc[-1]
    span = (f"stay {int(first['stay_id'])} has screens from {first['hours_since_admit']:g} h to "
            f"{last['hours_since_admit']:g} h after admission ({first['screen_time']} to {last['screen_time']})")
    if hours is not None:
        chosen = stay[stay["hours_since_admit"] <= hours]
        outside = chosen.empty or hours > last["hours_since_admit"] + 1
        what = f"{at} h"
    else:
        t = pd.Timestamp(at)
        chosen = stay[stay["screen_time"] <= t]
        outside = chosen.empty or t > last["screen_time"] + pd.Timedelta(hours=1)
        what = str(t)
    if outside:
        raise ValueError(f"{span}; {what} is outside it")
    return chosen.iloc[[-1]]
