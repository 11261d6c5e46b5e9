"""Sensitivity analyses: the protocol over other windows and silencing periods, and another onset definition.

:func:`sensitivity_grid` reruns an evaluation callable over windows and silencing periods
(12/24/48 h), :func:`protocol_sensitivity` does it for the protocol summary with thresholds fixed
on dev, and :func:`alternative_outcome` relabels the screens for another onset definition
(e.g. PhysioNet's ``sepsis_label_time``).

Examples
--------
>>> sensitivity_grid(lambda window_h, silencing_h: window_h + silencing_h, window_h=(12,),
...                  silencing_h=(24, 48)).values.tolist()
[[12, 24, 36], [12, 48, 60]]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd

from ehr.schema import require_columns

from .subgroups import _as_frame

__all__ = ["sensitivity_grid", "protocol_sensitivity", "alternative_outcome"]

_HOUR = np.timedelta64(1, "h")


def sensitivity_grid(evaluate: Callable, *, window_h=(12.0, 24.0, 48.0), silencing_h=(12.0, 24.0, 48.0),
                     **fixed) -> pd.DataFrame:
    """Rerun ``evaluate(window_h=W, silencing_h=S, **fixed)`` for every (W, S) pair.

    ``evaluate`` returns a number, dict/Series or DataFrame, as the metric of
    :func:`run_by_subgroup`; the output gets ``window_h`` and ``silencing_h`` columns in front.
    Pass a single-element tuple to vary only one of the two.

    Examples
    --------
    >>> g = sensitivity_grid(lambda window_h, silencing_h: window_h - silencing_h,
    ...                      window_h=(12, 48), silencing_h=(12,))
    >>> g.values.tolist()
    [[12, 12, 0], [48, 12, 36]]
    """
    parts = []
    for w, s in itertools.product(window_h, silencing_h):
        res = _as_frame(evaluate(window_h=w, silencing_h=s, **fixed))
        # a result that echoes its settings (the protocol summary does) keeps one copy, in front
        res = res.drop(columns=[c for c in ("window_h", "silencing_h") if c in res.columns])
        res.insert(0, "silencing_h", s)
        res.insert(0, "window_h", w)
        parts.append(res)
    return pd.concat(parts, ignore_index=True)


def protocol_sensitivity(thresholds, predictions: pd.DataFrame, screens: pd.DataFrame | None,
                         stays: pd.DataFrame, *, window_h=(12.0, 24.0, 48.0), silencing_h=(12.0, 24.0, 48.0),
                         new_data_only: bool = True) -> pd.DataFrame:
    """The protocol summary of every operating point for every alarm window and silencing period.

    Thresholds stay fixed (chosen once on the development split); only ``window_h`` and
    ``silencing_h`` vary. Runs :func:`evaluation.operating_points.apply_thresholds` per pair.

    Parameters
    ----------
    thresholds : DataFrame or dict
        ``model, operating_point, threshold`` rows or ``{model: {operating_point: threshold}}``.
    predictions, screens, stays : DataFrame
        Contract tables (normally the test split).

    Returns
    -------
    DataFrame
        ``window_h, silencing_h, model, operating_point, threshold`` and the protocol summary
        (``sensitivity``, ``alarms_per_admission``, ``false_alarms_per_true_alarm``, ...).
    """
    from evaluation.operating_points import apply_thresholds  # the protocol's owner; imported on use

    from evaluation.bootstrap import normalise_thresholds
    from evaluation.protocol import prepare_screens

    # the screens are the same for every window and silencing period: joined once per model
    prepared = {m: prepare_screens(predictions, stays, screens, model=m, new_data_only=new_data_only)
                for m in normalise_thresholds(thresholds)["model"].unique()}

    def evaluate(window_h, silencing_h):
        return apply_thresholds(thresholds, predictions, screens, stays, window_h=window_h,
                                silencing_h=silencing_h, new_data_only=new_data_only,
                                check_range=False, prepared=prepared).summary

    return sensitivity_grid(evaluate, window_h=window_h, silencing_h=silencing_h)


def alternative_outcome(stays: pd.DataFrame, screens: pd.DataFrame, *, onset_column: str = "sepsis_label_time",
                        horizon_h: float = 48.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stays and screens relabelled with ``onset_column`` as the onset time.

    ``stays.onset_time`` and ``sepsis`` are replaced, ``screens.onset_in_h`` and ``label``
    recomputed (``label = 0 < onset_in_h <= horizon_h``), and screens at or after the new
    onset are dropped, as the protocol excludes screens after onset.

    Examples
    --------
    >>> import pandas as pd
    >>> T = pd.Timestamp("2020-01-01")
    >>> stays = pd.DataFrame({"stay_id": [1], "onset_time": [T + pd.Timedelta(hours=10)],
    ...                       "sepsis": [True], "sepsis_label_time": [T + pd.Timedelta(hours=4)]})
    >>> screens = pd.DataFrame({"stay_id": 1, "screen_time": [T + pd.Timedelta(hours=h) for h in (1, 3, 5)]})
    >>> _, s = alternative_outcome(stays, screens, horizon_h=2)
    >>> s[["onset_in_h", "label"]].values.tolist()
    [[3.0, 0.0], [1.0, 1.0]]
    """
    require_columns(stays, ["stay_id", onset_column], table="stays", purpose="for the alternative outcome")
    require_columns(screens, ["stay_id", "screen_time"], table="screens", purpose="for the alternative outcome")
    st = stays.copy()
    st["onset_time"] = st[onset_column]
    st["sepsis"] = st["onset_time"].notna()
    onset = screens["stay_id"].map(st.set_index("stay_id")["onset_time"])
    onset_in_h = (onset - screens["screen_time"]).to_numpy() / _HOUR
    keep = ~(onset_in_h <= 0)  # NaN (no onset) is kept
    sc = screens.loc[keep].copy()
    sc["onset_in_h"] = onset_in_h[keep]
    sc["label"] = ((sc["onset_in_h"] > 0) & (sc["onset_in_h"] <= horizon_h)).astype("int64")
    return st, sc
