"""Timeliness: how many hours a true alarm comes before sepsis onset (and before the first antibiotic).

A *true alarm* is a fired alarm (``alarms.fired``) at ``screen_time`` t of a septic stay with
``0 < onset_time - t <= window_h`` hours, the protocol's definition. For each model, threshold
(and ``operating_point`` when the alarms table carries that column) and septic stay, the *first*
true alarm gives

* ``hours_before_onset = (onset_time - alarm_time)`` in hours (in ``(0, window_h]``), and
* ``hours_before_antibiotic = (antibiotic_time - alarm_time)`` in hours where
  ``stays.antibiotic_time`` is known; it is signed: negative means the alarm came after the
  antibiotic had been given.

:func:`summarize_timeliness` gives n, mean, median and IQR per group and
:func:`compare_timeliness` compares groups with the Mann-Whitney U test
(:func:`scipy.stats.mannwhitneyu`), as the SepsisFinder study did.

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2020-01-01")
>>> stays = pd.DataFrame({"stay_id": [1], "onset_time": [T + pd.Timedelta(hours=30)],
...                       "antibiotic_time": [T + pd.Timedelta(hours=32)]})
>>> alarms = pd.DataFrame({"stay_id": [1, 1], "model": "cpn", "threshold": 0.5,
...                        "screen_time": [T + pd.Timedelta(hours=10), T + pd.Timedelta(hours=20)],
...                        "fired": True, "silenced": False})
>>> lt = alarm_lead_times(alarms, stays, window_h=12)
>>> lt[["hours_before_onset", "hours_before_antibiotic"]].values.tolist()
[[10.0, 12.0]]
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from ehr.schema import require_columns
from evaluation.tables import validate_alarms

__all__ = ["alarm_lead_times", "summarize_timeliness", "compare_timeliness", "timeliness_table",
           "timeliness_from_lead_times", "TIMELINESS_COLUMNS"]

logger = logging.getLogger(__name__)

#: The two lead-time columns :func:`alarm_lead_times` produces.
TIMELINESS_COLUMNS = ("hours_before_onset", "hours_before_antibiotic")

_HOUR = np.timedelta64(1, "h")


def _group_cols(frame: pd.DataFrame) -> list[str]:
    return ["model", "threshold"] + (["operating_point"] if "operating_point" in frame.columns else [])


def alarm_lead_times(alarms: pd.DataFrame, stays: pd.DataFrame, *, window_h: float = 48.0,
                     first_only: bool = True) -> pd.DataFrame:
    """One row per true alarm (by default only the first per model/threshold/stay) with its lead times.

    Parameters
    ----------
    alarms : DataFrame
        Contract ``alarms`` (``stay_id, screen_time, model, threshold, fired``); an optional
        ``operating_point`` column is carried through.
    stays : DataFrame
        ``stay_id``, ``onset_time`` and optionally ``antibiotic_time``.
    window_h : float, default 48
        An alarm is true when onset follows within this many hours.
    first_only : bool, default True
        Keep only the earliest true alarm per (group, stay); ``False`` keeps every true alarm
        (what :class:`evaluation.displays.TrueAlarmTimingDisplay` counts).

    Returns
    -------
    DataFrame
        ``model, threshold, [operating_point], stay_id, alarm_time, onset_time,
        hours_before_onset, antibiotic_time, hours_before_antibiotic``.
    """
    validate_alarms(alarms)
    require_columns(stays, ["stay_id", "onset_time"], table="stays", purpose="for lead times")
    if window_h <= 0:
        raise ValueError(f"window_h must be positive, got {window_h}")
    if stays["stay_id"].duplicated().any():
        row = int(np.flatnonzero(stays["stay_id"].duplicated().to_numpy())[0])
        raise ValueError(f"stays: duplicate stay_id at row {row}")
    known = np.isin(alarms["stay_id"].to_numpy(), stays["stay_id"].to_numpy())
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise ValueError(f"alarms: row {row} has stay_id {alarms['stay_id'].iloc[row]} that is not in stays "
                         f"({int((~known).sum())} such row(s))")
    group = _group_cols(alarms)
    info_cols = ["stay_id", "onset_time"] + (["antibiotic_time"] if "antibiotic_time" in stays.columns else [])
    fired = alarms.loc[alarms["fired"].astype(bool).to_numpy(), group + ["stay_id", "screen_time"]]
    data = fired.merge(stays[info_cols], on="stay_id", how="left")
    if "antibiotic_time" not in data.columns:
        data["antibiotic_time"] = pd.Series(pd.NaT, index=data.index, dtype="datetime64[ns]")
    lead = (data["onset_time"] - data["screen_time"]).to_numpy() / _HOUR
    true = (lead > 0) & (lead <= window_h)  # NaN (no onset) compares False
    data = data.loc[true].assign(hours_before_onset=lead[true]).rename(columns={"screen_time": "alarm_time"})
    data = data.sort_values(group + ["stay_id", "alarm_time"], kind="mergesort")
    if first_only:
        data = data.drop_duplicates(group + ["stay_id"], keep="first")
    data["hours_before_antibiotic"] = (data["antibiotic_time"] - data["alarm_time"]).to_numpy() / _HOUR
    cols = group + ["stay_id", "alarm_time", "onset_time", "hours_before_onset", "antibiotic_time",
                    "hours_before_antibiotic"]
    return data[cols].reset_index(drop=True)


def summarize_timeliness(lead_times: pd.DataFrame, *, by=None) -> pd.DataFrame:
    """n, mean, median, 25th and 75th percentile of each lead time per group.

    Parameters
    ----------
    lead_times : DataFrame
        Output of :func:`alarm_lead_times`.
    by : list of str, optional
        Group columns (default ``model, threshold`` and ``operating_point`` when present).

    Returns
    -------
    DataFrame
        One row per group; for each of ``onset`` and ``antibiotic``: ``n_<x>, mean_<x>_h,
        median_<x>_h, q1_<x>_h, q3_<x>_h`` (NaN when there is no value).

    Examples
    --------
    >>> import pandas as pd
    >>> lt = pd.DataFrame({"model": "m", "threshold": 1.0, "hours_before_onset": [1.0, 2.0, 3.0, 10.0],
    ...                    "hours_before_antibiotic": float("nan")})
    >>> s = summarize_timeliness(lt)
    >>> s[["n_onset", "mean_onset_h", "median_onset_h", "q1_onset_h", "q3_onset_h"]].values.tolist()
    [[4.0, 4.0, 2.5, 1.75, 4.75]]
    """
    by = list(by) if by is not None else _group_cols(lead_times)
    rows = []
    for key, g in lead_times.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for col, short in zip(TIMELINESS_COLUMNS, ("onset", "antibiotic")):
            v = g[col].to_numpy(dtype="float64") if col in g.columns else np.array([])
            v = v[np.isfinite(v)]
            row[f"n_{short}"] = int(len(v))
            if len(v):
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                row.update({f"mean_{short}_h": float(v.mean()), f"median_{short}_h": float(med),
                            f"q1_{short}_h": float(q1), f"q3_{short}_h": float(q3)})
            else:
                row.update({f"{s}_{short}_h": float("nan") for s in ("mean", "median", "q1", "q3")})
        rows.append(row)
    cols = by + [c for short in ("onset", "antibiotic") for c in
                 (f"n_{short}", f"mean_{short}_h", f"median_{short}_h", f"q1_{short}_h", f"q3_{short}_h")]
    return pd.DataFrame(rows, columns=cols)


def compare_timeliness(lead_times: pd.DataFrame, *, reference: str = "news2", column: str = "hours_before_onset",
                       alternative: str = "two-sided") -> pd.DataFrame:
    """Mann-Whitney U test of each model's lead times against the reference model's.

    Groups are (model, threshold[, operating_point]). When an ``operating_point`` column is
    present a group is compared with the reference group of the same operating point (or, when
    the reference has no such operating point, with every reference group); otherwise with every
    reference group.

    Returns
    -------
    DataFrame
        ``model, threshold, [operating_point], reference_threshold, n, n_reference, median_h,
        median_reference_h, u_statistic, p_value`` (``u_statistic`` is the model's U; NaN when a
        side has no values).

    Examples
    --------
    >>> import pandas as pd
    >>> lt = pd.DataFrame({"model": ["a"] * 3 + ["news2"] * 3, "threshold": 1.0,
    ...                    "hours_before_onset": [10.0, 11, 12, 1, 2, 3]})
    >>> r = compare_timeliness(lt)
    >>> r[["model", "u_statistic"]].values.tolist(), round(float(r["p_value"].iloc[0]), 3)
    ([['a', 9.0]], 0.1)
    """
    require_columns(lead_times, ["model", "threshold", column], table="lead_times")
    group = _group_cols(lead_times)
    has_op = "operating_point" in group
    ref = lead_times[lead_times["model"] == reference]
    if ref.empty and (lead_times["model"] != reference).any():
        logger.info("no true alarms for reference model %r; comparisons will be NaN", reference)
    rows = []
    for key, g in lead_times[lead_times["model"] != reference].groupby(group, sort=True, dropna=False):
        row0 = dict(zip(group, key))
        cand = ref[ref["operating_point"] == row0["operating_point"]] if has_op else ref
        if cand.empty:  # no reference group of the same name: compare with every reference group
            cand = ref
        ref_groups = list(cand.groupby("threshold", sort=True)) or [(float("nan"), cand)]
        x = g[column].to_numpy(dtype="float64")
        x = x[np.isfinite(x)]
        for ref_thr, rg in ref_groups:
            y = rg[column].to_numpy(dtype="float64")
            y = y[np.isfinite(y)]
            if len(x) and len(y):
                res = stats.mannwhitneyu(x, y, alternative=alternative)
                u, p = float(res.statistic), float(res.pvalue)
            else:
                u = p = float("nan")
            rows.append({**row0, "reference_threshold": ref_thr, "n": int(len(x)), "n_reference": int(len(y)),
                         "median_h": float(np.median(x)) if len(x) else float("nan"),
                         "median_reference_h": float(np.median(y)) if len(y) else float("nan"),
                         "u_statistic": u, "p_value": p})
    cols = group + ["reference_threshold", "n", "n_reference", "median_h", "median_reference_h",
                    "u_statistic", "p_value"]
    return pd.DataFrame(rows, columns=cols)


def timeliness_table(alarms: pd.DataFrame, stays: pd.DataFrame, *, window_h: float = 48.0,
                     reference: str | None = "news2") -> pd.DataFrame:
    """Summary per group plus the Mann-Whitney p-value of hours before onset against ``reference``.

    The convenience the pipeline writes to ``timeliness.csv``; ``p_value_vs_reference`` is
    filled when exactly one reference group matches (same operating point, or a single
    reference threshold).
    """
    return timeliness_from_lead_times(alarm_lead_times(alarms, stays, window_h=window_h), by=_group_cols(alarms),
                                      reference=reference)


def timeliness_from_lead_times(lt: pd.DataFrame, *, by=None, reference: str | None = "news2") -> pd.DataFrame:
    """:func:`timeliness_table` from first true alarms (:func:`alarm_lead_times`), e.g. gathered per part.

    One row per detected stay is all it needs, so a partitioned run computes the lead times of each
    part's stays there and concatenates them (:mod:`evaluation.counts`). ``by``: the group columns
    when ``lt`` is empty (default those of ``lt``).
    """
    summary = summarize_timeliness(lt)
    if summary.empty:
        summary = summarize_timeliness(lt, by=by if by is not None else _group_cols(lt))
    summary["p_value_vs_reference"] = np.nan
    if reference is not None and not lt.empty:
        comp = compare_timeliness(lt, reference=reference)
        group = _group_cols(lt)
        counts = comp.groupby(group, dropna=False)["p_value"].transform("size")
        comp = comp[counts == 1][group + ["p_value"]]
        summary = summary.drop(columns="p_value_vs_reference").merge(
            comp.rename(columns={"p_value": "p_value_vs_reference"}), on=group, how="left")
    return summary
