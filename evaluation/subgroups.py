"""Subgroup analyses: rerun any metric per subgroup (window, silencing and outcome: :mod:`evaluation.sensitivity`).

Subgroups are derived from whatever fields ``stays`` / ``screens`` carry; a definition whose
fields are absent (or all null) is left out. Three kinds:

``stay``      partitions all stays (both outcomes):
              ``age_band`` (``< 45``, ``45-64``, ``65-79``, ``>= 80`` years), ``sex``,
              ``department``, ``surgical`` (``surgical`` / ``non-surgical``: a ``surgery_time``),
              ``source`` (``stays.source``, only when the stays come from two or more),
              ``episode_length`` (admit -> discharge: ``0-2 d``, ``2-5 d``, ``5-10 d``, ``>10 d``),
              ``survival`` (``survivor`` / ``non-survivor`` from ``death``).
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
e.g. one per model); :func:`subgroup_jobs` lists the subsets it visits.

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

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehr.schema import require_columns

__all__ = ["Subgroup", "define_subgroups", "subgroup_jobs", "subset_tables", "run_by_subgroup", "AGE_BANDS",
           "EPISODE_LENGTH_BINS_D"]

logger = logging.getLogger(__name__)

#: Episode-length bin edges in days (right-closed: (0, 2], (2, 5], (5, 10], (10, inf)).
EPISODE_LENGTH_BINS_D = (0.0, 2.0, 5.0, 10.0, np.inf)
_EPISODE_LABELS = ("0-2 d", "2-5 d", "5-10 d", ">10 d")
#: age bands (years): lower edges and labels
AGE_BANDS = ((0.0, 45.0, 65.0, 80.0, np.inf), ("< 45", "45-64", "65-79", ">= 80"))
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
    # Order "< 45" < "45-64" < ... < ">= 80", "1" < ... < ">5" and "0-2 d" < "2-5 d" < ... naturally.
    s = str(v)
    digits = "".join(ch if ch.isdigit() else " " for ch in s).split()
    return (s.startswith(">"), int(digits[0]) - 0.5 * s.startswith("<") if digits else 0, s)


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
    if _has(st, "age"):
        edges, labels = AGE_BANDS
        lab = pd.cut(st["age"].astype("float64"), bins=list(edges), right=False, labels=list(labels))
        out["age_band"] = Subgroup("age_band", "stay", lab.astype("object").where(lab.notna(), None))
    if _has(st, "sex"):
        out["sex"] = Subgroup("sex", "stay", st["sex"].astype("object"))
    if _has(st, "department"):
        out["department"] = Subgroup("department", "stay", st["department"].astype("object"))
    if _has(st, "surgery_time"):
        out["surgical"] = Subgroup("surgical", "stay", pd.Series(
            np.where(st["surgery_time"].notna(), "surgical", "non-surgical"), index=st.index, dtype=object))
    if _has(st, "source") and st["source"].nunique() > 1:
        out["source"] = Subgroup("source", "stay", st["source"].astype("object"))
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
    if _has(st, "onset_time") and ({"hospital_admit_time", "admit_time"} & set(st.columns)):
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


def subgroup_jobs(subgroups: Mapping[str, Subgroup], stays: pd.DataFrame, *, include_overall: bool = True):
    """``(subgroup, level, stay_ids, screen_mask)`` of every subset, in order.

    Stay and positive subgroups give ``stay_ids`` (a positive level: its septic stays plus every
    non-septic stay) and ``screen_mask=None``; screen subgroups give a boolean mask over the rows
    of the screens table they were defined on and ``stay_ids=None``.
    """
    st = stays.set_index("stay_id", drop=False)
    negatives = st.index[~_septic(st).to_numpy()]
    jobs = [("overall", "all", st.index, None)] if include_overall else []
    for name, sg in subgroups.items():
        for level in sg.levels:
            if sg.kind == "screen":
                jobs.append((name, level, None, (sg.labels == level).to_numpy()))
                continue
            ids = sg.labels.index[(sg.labels == level).to_numpy()]
            jobs.append((name, level, ids.union(negatives) if sg.kind == "positive" else ids, None))
    return jobs


def subset_tables(predictions, screens, stays, stay_ids=None, screen_mask=None):
    """``(predictions, screens, stays)`` of one subset from :func:`subgroup_jobs`."""
    return _subset(predictions, screens, stays, stay_ids, screen_mask)


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
    parts = []
    for name, level, ids, mask in subgroup_jobs(subgroups, stays, include_overall=include_overall):
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
