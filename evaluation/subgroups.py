"""Subgroup and sensitivity analyses: rerun any metric per subgroup, window, silencing or outcome.

Subgroups are derived from whatever fields ``stays`` / ``screens`` carry; a definition whose
fields are absent (or all null) is left out. Three kinds:

``stay``      partitions all stays (both outcomes):
              ``episode_length`` (admit -> discharge: ``0-2 d``, ``2-5 d``, ``5-10 d``, ``>10 d``),
              ``department``, ``survival`` (``survivor`` / ``non-survivor`` from ``death``).
``screen``    partitions screens: ``admission_day`` (day 1..5 of the stay, then ``>5``, from
              ``hours_since_admit``), ``surgery`` (``pre-surgery`` / ``post-surgery`` relative to
              ``surgery_time``; ``no surgery`` for stays without one).
``positive``  partitions the septic stays only; every non-septic stay is shared by all levels so
              that discrimination metrics stay defined: ``bsi`` (``BSI`` / ``no BSI``),
              ``onset_setting`` (``community`` / ``hospital``: ``stays.onset_setting`` where
              given, else the 4-day rule, onset at least ``hospital_onset_h`` = 96 h after
              hospital admission (``hospital_admit_time``, falling back to ``admit_time``) is
              hospital-onset).

:func:`run_by_subgroup` calls a metric ``metric(predictions, screens, stays)`` on each subset;
the metric may return a number, a dict / Series (one column each) or a DataFrame (rows kept,
e.g. one per model). :func:`sensitivity_grid` reruns an evaluation callable over windows and
silencing periods (12/24/48 h) and :func:`alternative_outcome` relabels the screens for another
onset definition (e.g. PhysioNet's ``sepsis_label_time``).

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2020-01-01")
>>> stays = pd.DataFrame({"stay_id": [1, 2], "admit_time": [T, T],
...                       "discharge_time": [T + pd.Timedelta(days=1), T + pd.Timedelta(days=7)],
...                       "sepsis": [False, True]})
>>> define_subgroups(stays)["episode_length"].labels.tolist()
['0-2 d', '5-10 d']
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehr.schema import require_columns

__all__ = ["Subgroup", "define_subgroups", "run_by_subgroup", "sensitivity_grid", "protocol_sensitivity",
           "alternative_outcome", "EPISODE_LENGTH_BINS_D"]

logger = logging.getLogger(__name__)

#: Episode-length bin edges in days (right-closed: (0, 2], (2, 5], (5, 10], (10, inf)).
EPISODE_LENGTH_BINS_D = (0.0, 2.0, 5.0, 10.0, np.inf)
_EPISODE_LABELS = ("0-2 d", "2-5 d", "5-10 d", ">10 d")
_HOUR = np.timedelta64(1, "h")


@dataclass(frozen=True)
class Subgroup:
    """One subgroup variable.

    Attributes
    ----------
    name : str
    kind : {"stay", "screen", "positive"}
    labels : Series
        For ``stay``/``positive``: indexed by ``stay_id`` (null = not in any level; for
        ``positive`` non-septic stays are null). For ``screen``: aligned with the rows of the
        screens table it was built from.
    """

    name: str
    kind: str
    labels: pd.Series

    @property
    def levels(self) -> list:
        return sorted(self.labels.dropna().unique().tolist(), key=_level_key)


def _level_key(v):
    # Order "1" < "2" < ... < ">5" and "0-2 d" < "2-5 d" < ... naturally.
    s = str(v)
    digits = "".join(ch if ch.isdigit() else " " for ch in s).split()
    return (s.startswith(">"), int(digits[0]) if digits else 0, s)


def _has(frame: pd.DataFrame | None, col: str) -> bool:
    return frame is not None and col in frame.columns and frame[col].notna().any()


def define_subgroups(stays: pd.DataFrame, screens: pd.DataFrame | None = None, *,
                     hospital_onset_h: float = 96.0, max_day: int = 5) -> dict[str, Subgroup]:
    """Every subgroup definition the available fields allow.

    Parameters
    ----------
    stays : DataFrame
        Contract ``stays`` (any subset of the optional columns).
    screens : DataFrame, optional
        Needed for the screen-level subgroups (``admission_day``, ``surgery``).
    hospital_onset_h : float, default 96
        4-day rule used when ``onset_setting`` is not given.
    max_day : int, default 5
        Admission days ``1..max_day`` get their own level; later screens are ``>max_day``.

    Returns
    -------
    dict of str to Subgroup
    """
    require_columns(stays, ["stay_id"], table="stays", purpose="for subgroups")
    st = stays.set_index("stay_id", drop=False)
    if st.index.duplicated().any():
        row = int(np.flatnonzero(st.index.duplicated())[0])
        raise ValueError(f"stays: duplicate stay_id at row {row}")
    septic = _septic(st)
    out: dict[str, Subgroup] = {}

    if _has(st, "admit_time") and _has(st, "discharge_time"):
        days = (st["discharge_time"] - st["admit_time"]).to_numpy() / _HOUR / 24.0
        lab = pd.cut(pd.Series(days, index=st.index), bins=list(EPISODE_LENGTH_BINS_D), right=True,
                     include_lowest=True, labels=list(_EPISODE_LABELS))
        out["episode_length"] = Subgroup("episode_length", "stay", lab.astype("object").where(lab.notna(), None))
    if _has(st, "department"):
        out["department"] = Subgroup("department", "stay", st["department"].astype("object"))
    if _has(st, "death"):
        d = st["death"]
        out["survival"] = Subgroup("survival", "stay",
                                   d.map({True: "non-survivor", False: "survivor"}).where(d.notna(), None))
    if _has(st, "bsi"):
        b = st["bsi"].map({True: "BSI", False: "no BSI"}).where(st["bsi"].notna() & septic, None)
        if b.notna().any():
            out["bsi"] = Subgroup("bsi", "positive", b)
    setting = _onset_setting(st, septic, hospital_onset_h)
    if setting is not None and setting.notna().any():
        out["onset_setting"] = Subgroup("onset_setting", "positive", setting)

    if screens is not None:
        require_columns(screens, ["stay_id"], table="screens", purpose="for subgroups")
        if _has(screens, "hours_since_admit"):
            # hours 1..24 are day 1 (a screen at hour h covers (h-1, h]).
            day = np.ceil(screens["hours_since_admit"].to_numpy(dtype="float64") / 24.0).clip(min=1)
            lab = np.where(day > max_day, f">{max_day}", day.astype("int64").astype(str))
            out["admission_day"] = Subgroup("admission_day", "screen",
                                            pd.Series(lab, index=screens.index, dtype=object))
        if _has(st, "surgery_time") and "screen_time" in screens.columns:
            surg = screens["stay_id"].map(st["surgery_time"])
            lab = np.where(surg.isna(), "no surgery",
                           np.where(screens["screen_time"] < surg, "pre-surgery", "post-surgery"))
            out["surgery"] = Subgroup("surgery", "screen", pd.Series(lab, index=screens.index, dtype=object))
    return out


def _septic(st: pd.DataFrame) -> pd.Series:
    if "sepsis" in st.columns:
        return st["sepsis"].fillna(False).astype(bool)
    if "onset_time" in st.columns:
        return st["onset_time"].notna()
    raise ValueError("stays: needs a 'sepsis' or 'onset_time' column")


def _onset_setting(st: pd.DataFrame, septic: pd.Series, hospital_onset_h: float) -> pd.Series | None:
    given = st["onset_setting"] if "onset_setting" in st.columns else pd.Series(None, index=st.index, dtype=object)
    if _has(st, "onset_time"):
        start = st["hospital_admit_time"] if "hospital_admit_time" in st.columns else st["admit_time"]
        if "admit_time" in st.columns:
            start = start.fillna(st["admit_time"])
        hours = (st["onset_time"] - start).to_numpy() / _HOUR
        rule = pd.Series(np.where(hours >= hospital_onset_h, "hospital", "community"), index=st.index, dtype=object)
        rule = rule.where(~np.isnan(hours), None)
        given = given.where(given.notna(), rule)
    elif not _has(st, "onset_setting"):
        return None
    return given.where(septic, None).astype(object)


def _subset(predictions, screens, stays, stay_ids=None, screen_mask=None):
    if screen_mask is not None:
        scr = screens.loc[screen_mask]
        keys = scr[["stay_id", "screen_time"]]
        pred = predictions.merge(keys, on=["stay_id", "screen_time"], how="inner")
        sts = stays[stays["stay_id"].isin(scr["stay_id"].unique())]
        return pred, scr, sts
    pred = predictions[predictions["stay_id"].isin(stay_ids)]
    scr = screens[screens["stay_id"].isin(stay_ids)] if screens is not None else None
    sts = stays[stays["stay_id"].isin(stay_ids)]
    return pred, scr, sts


def _as_frame(result) -> pd.DataFrame:
    if isinstance(result, pd.DataFrame):
        return result.reset_index(drop=True)
    if isinstance(result, pd.Series):
        return result.to_frame().T.reset_index(drop=True)
    if isinstance(result, Mapping):
        return pd.DataFrame([dict(result)])
    if np.isscalar(result) or result is None:
        return pd.DataFrame([{"value": result}])
    raise TypeError(f"metric returned {type(result).__name__}; expected a number, dict, Series or DataFrame")


def run_by_subgroup(metric: Callable, predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                    subgroups: Mapping[str, Subgroup] | None = None, errors: str = "coerce",
                    include_overall: bool = True) -> pd.DataFrame:
    """Run ``metric(predictions, screens, stays)`` on every level of every subgroup.

    Parameters
    ----------
    metric : callable
        ``metric(predictions, screens, stays)`` on the subset; returns a number, a dict/Series,
        or a DataFrame (one output row per frame row, e.g. per model).
    predictions, screens, stays : DataFrame
        Contract tables (``screens`` needs ``stay_id``, ``screen_time`` and the label column
        the metric reads).
    subgroups : dict, optional
        From :func:`define_subgroups` (default: ``define_subgroups(stays, screens)``).
    errors : {"coerce", "raise"}, default "coerce"
        A ``ValueError`` from the metric on a subset (e.g. AUROC with one class) becomes a row
        with the message in ``note``; ``"raise"`` re-raises it naming the subgroup.
    include_overall : bool, default True
        Add the whole data set as subgroup ``overall`` / level ``all``.

    Returns
    -------
    DataFrame
        ``subgroup, level, n_stays, n_septic, n_screens, note`` and the metric's columns.

    Examples
    --------
    >>> import pandas as pd
    >>> T = pd.Timestamp("2020-01-01")
    >>> stays = pd.DataFrame({"stay_id": [1, 2], "department": ["ICU", "ward"], "sepsis": [True, False]})
    >>> screens = pd.DataFrame({"stay_id": [1, 2], "screen_time": [T, T], "label": [1, 0]})
    >>> preds = screens[["stay_id", "screen_time"]].assign(model="m", risk=[0.9, 0.2])
    >>> n = lambda p, s, st: len(p)
    >>> run_by_subgroup(n, preds, screens, stays)[["subgroup", "level", "value"]].values.tolist()
    [['overall', 'all', 2], ['department', 'ICU', 1], ['department', 'ward', 1]]
    """
    if errors not in ("coerce", "raise"):
        raise ValueError(f"errors must be 'coerce' or 'raise', got {errors!r}")
    if subgroups is None:
        subgroups = define_subgroups(stays, screens)
    st = stays.set_index("stay_id", drop=False)
    septic = _septic(st)
    negatives = st.index[~septic.to_numpy()]

    jobs = []
    if include_overall:
        jobs.append(("overall", "all", st.index, None))
    for name, sg in subgroups.items():
        for level in sg.levels:
            if sg.kind == "screen":
                mask = (sg.labels == level).to_numpy()
                jobs.append((name, level, None, mask))
            else:
                ids = sg.labels.index[(sg.labels == level).to_numpy()]
                if sg.kind == "positive":
                    ids = ids.union(negatives)
                jobs.append((name, level, ids, None))

    parts = []
    for name, level, ids, mask in jobs:
        pred, scr, sts = _subset(predictions, screens, stays, ids, mask)
        head = {"subgroup": name, "level": level, "n_stays": int(len(sts)),
                "n_septic": int(_septic(sts.set_index("stay_id")).sum()) if len(sts) else 0,
                "n_screens": int(len(scr)) if scr is not None else np.nan, "note": ""}
        try:
            res = _as_frame(metric(pred, scr, sts))
        except ValueError as exc:
            if errors == "raise":
                raise ValueError(f"metric failed on subgroup {name}={level!r}: {exc}") from exc
            logger.info("metric failed on subgroup %s=%r: %s", name, level, exc)
            res = pd.DataFrame([{}])
            head["note"] = str(exc)
        res = res.assign(**{k: v for k, v in head.items() if k not in res.columns})
        parts.append(res)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    front = ["subgroup", "level", "n_stays", "n_septic", "n_screens", "note"]
    return out[front + [c for c in out.columns if c not in front]]


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

    def evaluate(window_h, silencing_h):
        return apply_thresholds(thresholds, predictions, screens, stays, window_h=window_h,
                                silencing_h=silencing_h, new_data_only=new_data_only,
                                check_range=False).summary

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
