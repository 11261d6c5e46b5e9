"""The main job's explanations at the test alarms: every model explains every fired alarm's screen.

A model that reads each stay's history (``reads_history``: the sequence and fusion models) is
given the alarmed stays' every screen and explains only the alarm screens; the others explain
the alarm screens alone. Nothing here asks a model's kind.
"""

from __future__ import annotations

import pandas as pd

from sepsiscope.stacking import stacker_explanations

__all__ = ["explain_alarms", "explain_at"]


def explain_alarms(models: dict, alarms: pd.DataFrame, test_screens: pd.DataFrame, stackers: dict | None = None,
                   predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Explanations of every model at every fired test alarm of any model.

    Each model explains the union of alarm screens, so an alarm view can show the CPN's Bayes
    factors next to the GBDT's contributions for the same screen (and a stack's trust in each).
    """
    fired = alarms[alarms["fired"]][["stay_id", "screen_time"]].drop_duplicates()
    if fired.empty:
        return None
    rows = fired.merge(test_screens, on=["stay_id", "screen_time"], how="inner")
    parts = [explain_at(m, name, rows, test_screens) for name, m in models.items()]
    for split in ("test", "external") if stackers else ():
        keys = rows.loc[rows["split"] == split, ["stay_id", "screen_time"]]
        if len(keys):
            parts += stacker_explanations(stackers, predictions, keys, split)
    return pd.concat(parts, ignore_index=True) if parts else None


def explain_at(model, name: str, rows: pd.DataFrame, screens: pd.DataFrame) -> pd.DataFrame:
    """``model``'s explanations of ``rows``; a model that reads each stay's history (``reads_history``,
    the sequence and fusion models) gets the alarmed stays' every screen, and explains only ``rows``."""
    if not getattr(model, "reads_history", False):
        return model.explain(rows, model_name=name)
    history = screens[screens["stay_id"].isin(rows["stay_id"].unique())].reset_index(drop=True)
    at = pd.MultiIndex.from_frame(history[["stay_id", "screen_time"]]).isin(
        pd.MultiIndex.from_frame(rows[["stay_id", "screen_time"]]))
    return model.explain(history, rows=at.nonzero()[0], model_name=name)
