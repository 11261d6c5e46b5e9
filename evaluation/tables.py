"""Contract-table plumbing shared across evaluation: schema checks (``ehr.schema``) and the label join.

Evaluation reads and writes only the contract tables of ``ehr/schema.py``; this module holds
the two checks that need more than ``ehr.schema.validate`` (an ``alarms`` table that lists
several operating points, and predictions joined to their screens' labels).

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2020-01-01")
>>> pred = pd.DataFrame({"stay_id": [1, 1], "screen_time": [T, T], "model": ["a", "b"], "risk": [0.2, 0.7],
...                      "fold": 0, "split": "test"})
>>> screens = pd.DataFrame({"stay_id": [1], "screen_time": [T], "label": [1]})
>>> join_labels(pred, screens)[["model", "y"]].values.tolist()
[['a', 1], ['b', 1]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import require_columns, validate

__all__ = ["join_labels", "validate_alarms"]


def validate_alarms(alarms: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Check an ``alarms`` table against the contract; return it unchanged.

    With an ``operating_point`` column the table lists several protocol runs, and two operating
    points of one model may share a threshold (NEWS2 >= 5 can also be the 85 % point), so the
    contract's key is checked within each operating point (and an error's row is counted within
    its operating point, which the message names).
    """
    if "operating_point" not in alarms.columns:
        return validate(alarms, "alarms", source=source)
    require_columns(alarms, ["operating_point"], table="alarms", source=source)
    for op, part in alarms.groupby("operating_point", sort=False):
        validate(part, "alarms", source=f"{source + ', ' if source else ''}operating point {op!r}")
    return alarms


def join_labels(predictions: pd.DataFrame, screens: pd.DataFrame, *, label: str = "label") -> pd.DataFrame:
    """Predictions with the screens' ``label`` column joined on (``stay_id``, ``screen_time``) as ``y``.

    Raises ``ValueError`` naming the first prediction row whose screen is not in ``screens``.
    """
    validate(predictions, "predictions")
    require_columns(screens, ["stay_id", "screen_time", label], table="screens", purpose="to label predictions")
    lab = screens[["stay_id", "screen_time", label]]
    if lab.duplicated(["stay_id", "screen_time"]).any():
        row = int(np.flatnonzero(lab.duplicated(["stay_id", "screen_time"]).to_numpy())[0])
        raise ValueError(f"screens: duplicate (stay_id, screen_time) at row {row}")
    out = predictions.merge(lab.rename(columns={label: "_y"}), on=["stay_id", "screen_time"],
                            how="left", validate="many_to_one")
    miss = out["_y"].isna().to_numpy()
    if miss.any():
        row = int(np.flatnonzero(miss)[0])
        raise ValueError(f"predictions: row {row} (stay_id={out['stay_id'].iloc[row]}, "
                         f"screen_time={out['screen_time'].iloc[row]}) has no screen with a label "
                         f"({int(miss.sum())} such row(s))")
    out["y"] = out.pop("_y").astype("int64")
    return out
