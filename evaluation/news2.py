"""NEWS2: the Royal College of Physicians' National Early Warning Score 2 (2017 chart).

The chart, component by component (points in brackets):

=====================  ==============================================================================
respiration_rate       <=8 (3), 9-11 (1), 12-20 (0), 21-24 (2), >=25 (3)
spo2 (scale 1)         <=91 (3), 92-93 (2), 94-95 (1), >=96 (0)
spo2 (scale 2)         <=83 (3), 84-85 (2), 86-87 (1), 88-92 (0), >=93 on air (0),
                       93-94 on oxygen (1), 95-96 on oxygen (2), >=97 on oxygen (3)
air_or_oxygen          air (0), oxygen (2)
systolic_bp            <=90 (3), 91-100 (2), 101-110 (1), 111-219 (0), >=220 (3)
pulse                  <=40 (3), 41-50 (1), 51-90 (0), 91-110 (1), 111-130 (2), >=131 (3)
consciousness          Alert (0); new Confusion, Voice, Pain or Unresponsive (3)
temperature            <=35.0 (3), 35.1-36.0 (1), 36.1-38.0 (0), 38.1-39.0 (1), >=39.1 (2)
=====================  ==============================================================================

Rules this module adds where the chart is silent (each is tested):

* **Non-integer values at band edges.** The chart prints integers (temperature to 0.1 degC). A band
  printed ``a-b`` covers the half-open interval ``[a, next band's a)``, the convention of the
  ``cuts`` in ``ehr/concepts.toml``: SpO2 92.5 scores as 92-93 (2), SpO2 91.5 as <=91 (3),
  temperature 35.05 as <=35.0 (3), respiration 20.5 as 12-20 (0). A tolerance of 1e-6 absorbs
  floating-point error from unit conversion (35.0999999 counts as 35.1).
* **Scale 2** is used for stays flagged ``hypercapnic`` (the ``stays``/``screens`` column); a missing
  flag means scale 1. On scale 2, SpO2 >= 93 scores only when the patient is known to be on oxygen;
  unknown oxygen counts as air (the chart's default row), so it scores 0.
* **Air or oxygen.** ``on_o2`` (1/0) when charted; otherwise inferred from ``o2_flow > 0`` or
  ``fio2 > 0.21`` (either suffices; both must be missing for the component to be missing).
* **Consciousness.** ACVPU code from ``concepts.toml`` (0=A, 1=C, 2=V, 3=P, 4=U): code >= 1 scores 3.
  When ACVPU is missing it is derived from GCS: GCS < 15 scores 3, GCS 15 scores 0. (GCS < 15 is
  the usual mapping of "not Alert"; it cannot tell new confusion from chronic.)

Time points (``news2_from_events``): NEWS2 is computed at every (stay, time) with at least one
component present and **without carry-forward**, as in the SepsisFinder study; the total is the sum
of the components present at that time and ``n_components`` says how many there were.

Examples
--------
>>> import pandas as pd
>>> from evaluation.news2 import news2_components, news2_score
>>> df = pd.DataFrame({"resp": [22], "spo2": [95], "on_o2": [1], "sbp": [105], "hr": [112],
...                    "acvpu": [0], "temp": [38.4]})
>>> news2_components(df).iloc[0].tolist()
[2.0, 1.0, 2.0, 1.0, 2.0, 0.0, 1.0]
>>> float(news2_score(df).iloc[0])
9.0
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ehr.schema import require_columns

__all__ = [
    "NEWS2_COMPONENTS",
    "NEWS2_INPUTS",
    "news2_components",
    "news2_score",
    "news2_from_events",
    "news2_predictions",
]

log = logging.getLogger(__name__)

#: Component columns in chart order.
NEWS2_COMPONENTS: tuple[str, ...] = (
    "respiration_rate", "spo2", "air_or_oxygen", "systolic_bp", "pulse", "consciousness", "temperature",
)
#: Concepts (``ehr/concepts.toml`` names) NEWS2 reads.
NEWS2_INPUTS: tuple[str, ...] = ("resp", "spo2", "on_o2", "o2_flow", "fio2", "sbp", "hr", "acvpu", "gcs", "temp")

# Lower edges of each band after the first, and the points of every band (len(points) = len(cuts)+1).
_BANDS = {
    "respiration_rate": ((9, 12, 21, 25), (3, 1, 0, 2, 3)),
    "spo2_scale1": ((92, 94, 96), (3, 2, 1, 0)),
    "spo2_scale2_air": ((84, 86, 88), (3, 2, 1, 0)),
    "spo2_scale2_o2": ((84, 86, 88, 93, 95, 97), (3, 2, 1, 0, 1, 2, 3)),
    "systolic_bp": ((91, 101, 111, 220), (3, 2, 1, 0, 3)),
    "pulse": ((41, 51, 91, 111, 131), (3, 1, 0, 1, 2, 3)),
    "temperature": ((35.1, 36.1, 38.1, 39.1), (3, 1, 0, 1, 2)),
}
_EDGE_TOL = 1e-6


def _band(values: np.ndarray, name: str) -> np.ndarray:
    cuts, points = _BANDS[name]
    idx = np.searchsorted(np.asarray(cuts, dtype="float64") - _EDGE_TOL, values, side="right")
    out = np.asarray(points, dtype="float64")[idx]
    out[np.isnan(values)] = np.nan
    return out


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    return np.full(len(frame), np.nan)


def _on_oxygen(frame: pd.DataFrame) -> np.ndarray:
    """1/0/NaN: charted ``on_o2``, else inferred from ``o2_flow > 0`` or ``fio2 > 0.21``."""
    on = _col(frame, "on_o2")
    flow = _col(frame, "o2_flow")
    fio2 = _col(frame, "fio2")
    inferred = np.full(len(frame), np.nan)
    known = ~np.isnan(flow) | ~np.isnan(fio2)
    yes = (np.nan_to_num(flow, nan=0.0) > 0) | (np.nan_to_num(fio2, nan=0.0) > 0.21 + _EDGE_TOL)
    inferred[known] = yes[known].astype("float64")
    on_known = ~np.isnan(on)
    inferred[on_known] = (on[on_known] >= 0.5).astype("float64")
    return inferred


def news2_components(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-component NEWS2 points for each row of a wide frame (NaN where the component is missing).

    Parameters
    ----------
    frame : DataFrame
        Columns named as concepts (any subset of ``resp, spo2, on_o2, o2_flow, fio2, sbp, hr,
        acvpu, gcs, temp``) in canonical units, plus optionally ``hypercapnic`` (bool; SpO2 scale 2).
        A ``screens`` table works as is, but note that its values are carried forward.

    Returns
    -------
    DataFrame
        One float column per component (:data:`NEWS2_COMPONENTS`), same index as ``frame``.

    Examples
    --------
    >>> import pandas as pd
    >>> news2_components(pd.DataFrame({"spo2": [90.0], "gcs": [14]}))[["spo2", "consciousness"]].iloc[0].tolist()
    [3.0, 3.0]
    """
    on_o2 = _on_oxygen(frame)
    spo2 = _col(frame, "spo2")
    if "hypercapnic" in frame.columns:
        scale2 = frame["hypercapnic"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    else:
        scale2 = np.zeros(len(frame), dtype=bool)
    spo2_points = _band(spo2, "spo2_scale1")
    if scale2.any():
        s2_air = _band(spo2, "spo2_scale2_air")
        s2_o2 = _band(spo2, "spo2_scale2_o2")
        # unknown oxygen counts as air on scale 2: the chart only scores >= 93 on oxygen
        spo2_points = np.where(scale2, np.where(on_o2 == 1, s2_o2, s2_air), spo2_points)

    acvpu = _col(frame, "acvpu")
    gcs = _col(frame, "gcs")
    conscious = np.where(acvpu >= 1 - _EDGE_TOL, 3.0, 0.0)
    from_gcs = np.where(gcs < 15 - _EDGE_TOL, 3.0, 0.0)
    conscious = np.where(np.isnan(acvpu), np.where(np.isnan(gcs), np.nan, from_gcs), conscious)

    out = pd.DataFrame(
        {
            "respiration_rate": _band(_col(frame, "resp"), "respiration_rate"),
            "spo2": spo2_points,
            "air_or_oxygen": np.where(np.isnan(on_o2), np.nan, 2.0 * on_o2),
            "systolic_bp": _band(_col(frame, "sbp"), "systolic_bp"),
            "pulse": _band(_col(frame, "hr"), "pulse"),
            "consciousness": conscious,
            "temperature": _band(_col(frame, "temp"), "temperature"),
        },
        index=frame.index,
    )
    return out


def news2_score(frame: pd.DataFrame) -> pd.Series:
    """NEWS2 total per row: the sum of the components present (NaN when none is).

    Examples
    --------
    >>> import pandas as pd
    >>> news2_score(pd.DataFrame({"resp": [8, None], "hr": [131, None]})).tolist()
    [6.0, nan]
    """
    comp = news2_components(frame)
    return comp.sum(axis=1, min_count=1).rename("news2")


def news2_from_events(events: pd.DataFrame, stays: pd.DataFrame) -> pd.DataFrame:
    """NEWS2 at every (stay, time) with at least one component charted, without carry-forward.

    Parameters
    ----------
    events : DataFrame
        The ``events`` table (uses ``stay_id``, ``time``, ``concept``, ``numeric_value``). When a
        concept is charted twice at the same (stay, time) the later row (input order) wins.
    stays : DataFrame
        The ``stays`` table; ``hypercapnic`` (if present) selects SpO2 scale 2. Every stay in
        ``events`` must be in ``stays``.

    Returns
    -------
    DataFrame
        ``stay_id, time``, one column per component, ``total`` and ``n_components``, sorted by
        (stay_id, time).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.Timestamp("2020-01-01 08:00")
    >>> ev = pd.DataFrame({"stay_id": [1, 1, 1], "time": [t, t, t + pd.Timedelta("2h")],
    ...                    "concept": ["hr", "resp", "temp"], "numeric_value": [120.0, 26.0, 39.5]})
    >>> st = pd.DataFrame({"stay_id": [1], "hypercapnic": [False]})
    >>> news2_from_events(ev, st)[["total", "n_components"]].values.tolist()
    [[5.0, 2.0], [2.0, 1.0]]
    """
    require_columns(events, ["stay_id", "time", "concept", "numeric_value"], table="events", purpose="for NEWS2")
    require_columns(stays, ["stay_id"], table="stays", purpose="for NEWS2")
    ev = events.loc[events["concept"].isin(NEWS2_INPUTS) & events["numeric_value"].notna(),
                    ["stay_id", "time", "concept", "numeric_value"]]
    unknown = ~ev["stay_id"].isin(stays["stay_id"])
    if unknown.any():
        row = ev.index[np.flatnonzero(unknown.to_numpy())[0]]
        raise ValueError(f"events: stay_id {ev.loc[row, 'stay_id']} at row {row} is not in stays "
                         f"({int(unknown.sum())} event row(s) with unknown stays)")
    ev = ev.drop_duplicates(["stay_id", "time", "concept"], keep="last")
    wide = ev.pivot(index=["stay_id", "time"], columns="concept", values="numeric_value")
    wide = wide.reset_index()
    wide.columns.name = None
    if "hypercapnic" in stays.columns:
        hyper = stays.drop_duplicates("stay_id").set_index("stay_id")["hypercapnic"]
        wide["hypercapnic"] = wide["stay_id"].map(hyper).astype("boolean").fillna(False).to_numpy(dtype=bool)
    comp = news2_components(wide)
    out = pd.concat([wide[["stay_id", "time"]], comp], axis=1)
    out["n_components"] = comp.notna().sum(axis=1).astype("float64")
    out["total"] = comp.sum(axis=1, min_count=1)
    out = out.loc[out["n_components"] > 0]
    out = out.sort_values(["stay_id", "time"], kind="stable").reset_index(drop=True)
    cols = ["stay_id", "time", *NEWS2_COMPONENTS, "total", "n_components"]
    return out[cols]


def news2_predictions(events: pd.DataFrame, stays: pd.DataFrame, screens: pd.DataFrame, *,
                      split: str | None = None) -> tuple[pd.DataFrame, int]:
    """NEWS2 as a ``predictions`` table (``model="news2"``, ``risk`` = total score).

    Each screen gets the highest NEWS2 total among the time points within its screen hour, i.e.
    with ``time`` in ``(screen_time - 1 h, screen_time]`` (time points are often partial charts: a
    lone temperature after a full set of vitals must not hide the earlier score). A screen with no NEWS2 observation in that
    hour is **not scored** (dropped from the NEWS2 predictions; the count is returned): the
    SepsisFinder protocol screens every hour in which a new value was registered, and NEWS2 has no
    new value in such an hour (carrying the previous score would be the carry-forward the study
    avoided). Paired comparisons still pair by patient (the cluster bootstrap resamples stays).

    Parameters
    ----------
    events, stays : DataFrame
        Contract tables (see :func:`news2_from_events`).
    screens : DataFrame
        The ``screens`` table (uses ``stay_id`` and ``screen_time``).
    split : str, optional
        Value for the ``split`` column (``'dev'``/``'test'``); null when not given.

    Returns
    -------
    predictions : DataFrame
        Contract ``predictions`` table, sorted by (stay_id, screen_time).
    n_unscored : int
        Number of screens without a NEWS2 observation in their hour (not in ``predictions``).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.Timestamp("2020-01-01 08:00")
    >>> ev = pd.DataFrame({"stay_id": [1], "time": [t + pd.Timedelta("30min")],
    ...                    "concept": ["hr"], "numeric_value": [135.0]})
    >>> st = pd.DataFrame({"stay_id": [1]})
    >>> sc = pd.DataFrame({"stay_id": [1, 1], "screen_time": [t + pd.Timedelta("1h"), t + pd.Timedelta("2h")]})
    >>> pred, n_unscored = news2_predictions(ev, st, sc)
    >>> pred["risk"].tolist(), n_unscored
    ([3.0], 1)
    """
    scores = news2_from_events(events, stays)
    # merge_asof needs identical key dtypes: int64 ids and nanosecond times on both sides
    sc = pd.DataFrame({"stay_id": screens["stay_id"].to_numpy(dtype="int64"),
                       "screen_time": screens["screen_time"].to_numpy().astype("datetime64[ns]")})
    sc = sc.sort_values("screen_time", kind="stable")
    right = pd.DataFrame({"stay_id": scores["stay_id"].to_numpy(dtype="int64"),
                          "time": scores["time"].to_numpy().astype("datetime64[ns]"),
                          "total": scores["total"].to_numpy()})
    right = right.sort_values("time", kind="stable")
    # Each NEWS2 time point belongs to the first screen at or after it, if that screen is within
    # the hour; a screen takes the HIGHEST total of its hour (time points are partial charts, and
    # a later lone temperature must not hide an earlier full set of vitals that scored 7).
    owner = pd.merge_asof(right, sc[["stay_id", "screen_time"]].sort_values("screen_time", kind="stable"),
                          left_on="time", right_on="screen_time", by="stay_id", direction="forward")
    owner = owner[owner["screen_time"].notna()
                  & ((owner["screen_time"] - owner["time"]) < pd.Timedelta(hours=1))]
    best = owner.groupby(["stay_id", "screen_time"], sort=False)["total"].max().reset_index()
    merged = sc.merge(best, on=["stay_id", "screen_time"], how="left")
    in_hour = merged["total"].notna()
    n_unscored = int((~in_hour).sum())
    merged = merged.loc[in_hour]
    pred = pd.DataFrame(
        {
            "stay_id": merged["stay_id"].to_numpy(dtype="int64"),
            "screen_time": merged["screen_time"].to_numpy(),
            "model": "news2",
            "risk": merged["total"].to_numpy(dtype="float64"),
            "fold": np.nan,
            "split": pd.Series([split] * len(merged), dtype="object"),
        }
    )
    pred = pred.sort_values(["stay_id", "screen_time"], kind="stable").reset_index(drop=True)
    if n_unscored:
        log.info("NEWS2: %d of %d screens had no NEWS2 observation in their hour (not scored)",
                 n_unscored, len(sc))
    return pred, n_unscored
