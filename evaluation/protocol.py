"""The SepsisFinder screening protocol: hourly screens, alarms, silencing, alarm windows.

Rules (each one tested):

* **Screens.** A model is screened at every hour in which a new value was registered
  (``screens.new_data``); screens at or after onset are excluded.
* **Alarm.** A screen is an alarm candidate when ``risk >= threshold``.
* **Silencing.** After each *fired* alarm at time ``t`` further candidates with
  ``t < screen_time < t + silencing_h`` are silenced (kept in the ``alarms`` table with
  ``fired=False, silenced=True``); a candidate at exactly ``t + silencing_h`` fires again.
  Silenced candidates never start a silencing period of their own.
* **Outcome.** A fired alarm is a true positive when onset follows within ``window_h`` hours
  (``0 < onset - screen_time <= window_h``), otherwise a false positive (including every alarm of a
  non-septic stay). A septic stay is detected when it has a true-positive alarm; otherwise it is a
  false negative.
* **Population.** The stays of ``screens`` (or, without screens, of ``predictions``). Sensitivity
  is over septic stays with at least one eligible screen before onset (a stay whose onset precedes
  every screen cannot be warned by any model; their count is reported as ``n_septic_unscreenable``).

Silencing is sequential per stay; it runs in vectorised rounds over the alarm candidates only
(round k fires each stay's k-th alarm), so the cost is (number of candidates) x (most fired alarms
in one stay).

Examples
--------
>>> import pandas as pd
>>> from evaluation.protocol import run_protocol
>>> t0 = pd.Timestamp("2020-01-01")
>>> times = [t0 + pd.Timedelta(hours=h) for h in (1, 2, 3, 60)]
>>> pred = pd.DataFrame({"stay_id": 1, "screen_time": times, "model": "m", "risk": [0.9, 0.8, 0.1, 0.9],
...                      "fold": 0, "split": "test"})
>>> stays = pd.DataFrame({"stay_id": [1], "onset_time": [t0 + pd.Timedelta(hours=70)]})
>>> res = run_protocol(pred, stays, threshold=0.5)
>>> res.alarms[["fired", "silenced"]].values.tolist()
[[True, False], [False, True], [True, False]]
>>> res.alarm_outcomes["true_positive"].tolist()
[False, True]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehr.schema import require_columns, validate

__all__ = ["ProtocolResult", "ScreenSet", "run_protocol", "silence", "validate_predictions", "prepare_screens"]

_NS_PER_H = 3_600_000_000_000


def validate_predictions(predictions: pd.DataFrame, stays: pd.DataFrame | None = None, *,
                         models=None) -> pd.DataFrame:
    """Check a ``predictions`` table: the contract (``ehr.schema.validate``) plus what the protocol needs.

    Beyond the contract (columns, dtypes, nulls, finite risk, one row per (stay, screen_time,
    model)): every model of ``models`` is present, and every stay is in ``stays``. Raises a
    ``ValueError`` naming the row; returns ``predictions`` unchanged.
    """
    validate(predictions, "predictions")
    if models is not None:
        have = set(predictions["model"].unique())
        absent = [m for m in ([models] if isinstance(models, str) else models) if m not in have]
        if absent:
            raise ValueError(f"predictions: model(s) {absent} not in predictions (have {sorted(have)})")
    if stays is not None:
        unknown = ~predictions["stay_id"].isin(stays["stay_id"]).to_numpy()
        if unknown.any():
            row = predictions.index[np.flatnonzero(unknown)[0]]
            raise ValueError(f"predictions: stay_id {predictions.loc[row, 'stay_id']} at row {row} is not in "
                             f"stays ({int(unknown.sum())} row(s) for unknown stays)")
    return predictions


def _onset_by_stay(stays: pd.DataFrame) -> pd.Series:
    require_columns(stays, ["stay_id", "onset_time"], table="stays", purpose="for the protocol")
    s = stays.drop_duplicates("stay_id").set_index("stay_id")["onset_time"]
    return pd.to_datetime(s)


@dataclass
class ScreenSet:
    """One model's eligible screens and the evaluation population (from :func:`prepare_screens`).

    Attributes
    ----------
    model : str
    frame : DataFrame
        ``stay_id, screen_time, risk, onset_in_h`` sorted by (stay_id, screen_time): screens with
        new data, before onset. ``onset_in_h`` is NaN for stays without onset.
    population : ndarray of int64
        Sorted stay ids evaluated (those of ``screens``, else of the model's predictions).
    septic : ndarray of bool
        Per population stay: has an onset.
    screenable : ndarray of bool
        Per population stay: septic with at least one eligible screen before onset in ``screens``
        (model-independent), the denominator of sensitivity.
    """

    model: str
    frame: pd.DataFrame
    population: np.ndarray
    septic: np.ndarray
    screenable: np.ndarray

    @property
    def stay_index(self) -> np.ndarray:
        """Position in ``population`` of each screen's stay."""
        return np.searchsorted(self.population, self.frame["stay_id"].to_numpy())

    def subset(self, stay_ids) -> ScreenSet:
        """The screen set of some stays only: what :func:`prepare_screens` gives on their tables, without the joins."""
        keep = np.isin(self.population, np.asarray(stay_ids, dtype="int64"))
        frame = self.frame[np.isin(self.frame["stay_id"].to_numpy(), self.population[keep])]
        return ScreenSet(model=self.model, frame=frame.reset_index(drop=True), population=self.population[keep],
                         septic=self.septic[keep], screenable=self.screenable[keep])


def prepare_screens(predictions: pd.DataFrame, stays: pd.DataFrame, screens: pd.DataFrame | None = None, *,
                    model: str | None = None, new_data_only: bool = True) -> ScreenSet:
    """One model's eligible screens and the population, validated and joined once.

    Eligible = at a screen with ``new_data`` (when ``screens`` is given and ``new_data_only``) and
    before onset. ``onset_in_h`` is recomputed from ``stays.onset_time`` (NaN when no onset).
    Errors for a missing model, duplicate rows, unknown stays, and predictions at a
    (stay, screen_time) that is not in ``screens``.
    """
    if model is None:
        models = predictions["model"].unique() if "model" in predictions.columns else []
        if len(models) != 1:
            raise ValueError(f"predictions hold {len(models)} models {sorted(models)}; pass model=")
        model = models[0]
    validate_predictions(predictions, stays, models=[model])
    onset_of = _onset_by_stay(stays)
    p = predictions.loc[predictions["model"] == model, ["stay_id", "screen_time", "risk"]]
    if screens is not None:
        cols = ["stay_id", "screen_time"] + (["new_data"] if "new_data" in screens.columns else [])
        m = p.merge(screens[cols], on=["stay_id", "screen_time"], how="left", indicator=True)
        orphan = (m["_merge"] == "left_only").to_numpy()
        if orphan.any():
            r = m.loc[np.flatnonzero(orphan)[0]]
            raise ValueError(f"predictions (model {model}): ({r['stay_id']}, {r['screen_time']}) is not a "
                             f"screen ({int(orphan.sum())} prediction(s) without a screen)")
        if new_data_only and "new_data" in m.columns:
            m = m.loc[m["new_data"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
        p = m[["stay_id", "screen_time", "risk"]]
    onset = p["stay_id"].map(onset_of)
    onset_in_h = (onset - p["screen_time"]).dt.total_seconds().to_numpy() / 3600.0
    keep = np.isnan(onset_in_h) | (onset_in_h > 0)
    frame = pd.DataFrame({
        "stay_id": p["stay_id"].to_numpy(dtype="int64")[keep],
        "screen_time": p["screen_time"].to_numpy()[keep],
        "risk": p["risk"].to_numpy(dtype="float64")[keep],
        "onset_in_h": onset_in_h[keep],
    })
    frame = frame.sort_values(["stay_id", "screen_time"], kind="stable").reset_index(drop=True)

    if screens is not None:
        unknown = ~screens["stay_id"].isin(onset_of.index).to_numpy()
        if unknown.any():
            row = screens.index[np.flatnonzero(unknown)[0]]
            raise ValueError(f"screens: stay_id {screens.loc[row, 'stay_id']} at row {row} is not in stays")
        population = np.unique(screens["stay_id"].to_numpy(dtype="int64"))
        sc = screens
        if new_data_only and "new_data" in sc.columns:
            sc = sc.loc[sc["new_data"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
        before = (sc["screen_time"] < sc["stay_id"].map(onset_of)).to_numpy()
        screenable_ids = np.unique(sc.loc[before, "stay_id"].to_numpy(dtype="int64"))
    else:
        population = np.unique(p["stay_id"].to_numpy(dtype="int64"))
        screenable_ids = np.unique(frame["stay_id"].to_numpy())
    septic = onset_of.reindex(population).notna().to_numpy()
    screenable = septic & np.isin(population, screenable_ids)
    return ScreenSet(model=str(model), frame=frame, population=population, septic=septic,
                     screenable=screenable)


def silence(stay_codes: np.ndarray, times_h: np.ndarray, silencing_h: float) -> np.ndarray:
    """Which alarm candidates fire under silencing (candidates sorted by stay, then time).

    Parameters
    ----------
    stay_codes : array of int
        Stay of each candidate, non-decreasing.
    times_h : array of float
        Candidate times in hours, increasing within a stay.
    silencing_h : float
        Silencing period after each fired alarm; 0 fires every candidate.

    Returns
    -------
    ndarray of bool
        ``True`` for fired candidates; the rest are silenced.

    Examples
    --------
    >>> silence(np.array([0, 0, 0, 1]), np.array([0.0, 10.0, 48.0, 5.0]), 48).tolist()
    [True, False, True, True]
    """
    n = len(stay_codes)
    fired = np.zeros(n, dtype=bool)
    if n == 0:
        return fired
    if silencing_h <= 0:
        fired[:] = True
        return fired
    undecided = np.ones(n, dtype=bool)
    idx_all = np.arange(n)
    while undecided.any():
        idx = idx_all[undecided]
        codes = stay_codes[idx]
        # the first undecided candidate of each stay fires
        first = np.ones(len(idx), dtype=bool)
        first[1:] = codes[1:] != codes[:-1]
        fire_idx = idx[first]
        fired[fire_idx] = True
        undecided[fire_idx] = False
        # its silencing period: per candidate, the fire time of its stay's first candidate this round
        group = np.cumsum(first) - 1
        fire_time = times_h[fire_idx][group]
        quiet = (~first) & (times_h[idx] < fire_time + silencing_h)
        undecided[idx[quiet]] = False
    return fired


@dataclass
class ProtocolResult:
    """What :func:`run_protocol` returns.

    Attributes
    ----------
    alarms : DataFrame
        Contract ``alarms`` table: every candidate (risk >= threshold) with ``fired``/``silenced``.
    alarm_outcomes : DataFrame
        Fired alarms: ``stay_id, screen_time, risk, onset_in_h, true_positive``.
    stay_outcomes : DataFrame
        One row per stay of the population: ``stay_id, septic, screenable, n_screens, n_alarms,
        n_true_alarms, n_false_alarms, detected, first_true_alarm_h`` (hours before onset).
    summary : dict
        Counts and rates: stays, screens, alarms, sensitivity, alarms per admission, ...
    """

    alarms: pd.DataFrame
    alarm_outcomes: pd.DataFrame
    stay_outcomes: pd.DataFrame
    summary: dict = field(default_factory=dict)


def _safe_div(a, b):
    return float(a) / float(b) if b else float("nan")


def run_protocol(predictions: pd.DataFrame, stays: pd.DataFrame, screens: pd.DataFrame | None = None, *,
                 threshold: float, model: str | None = None, silencing_h: float = 48.0,
                 window_h: float = 48.0, new_data_only: bool = True,
                 prepared: ScreenSet | None = None) -> ProtocolResult:
    """Run the SepsisFinder screening protocol for one model at one threshold.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` table (one model, or pass ``model``).
    stays : DataFrame
        Contract ``stays`` table (uses ``stay_id``, ``onset_time``).
    screens : DataFrame, optional
        Contract ``screens`` table (uses ``stay_id``, ``screen_time``, ``new_data``); defines the
        population and which hours are screened. Without it every prediction is a screen.
    threshold : float
        Alarm when ``risk >= threshold``.
    model : str, optional
        Which model of ``predictions`` to screen.
    silencing_h : float, default 48
        Silencing period after each fired alarm (12 and 24 are the usual alternatives).
    window_h : float, default 48
        An alarm is a true positive when onset follows within this many hours.
    new_data_only : bool, default True
        Screen only hours with ``new_data``.
    prepared : ScreenSet, optional
        Output of :func:`prepare_screens` to reuse across thresholds (skips validation and joins;
        ``predictions``, ``screens``, ``model`` and ``new_data_only`` are then ignored).

    Returns
    -------
    ProtocolResult
    """
    if prepared is None:
        prepared = prepare_screens(predictions, stays, screens, model=model, new_data_only=new_data_only)
    model = prepared.model
    frame = prepared.frame
    stay = frame["stay_id"].to_numpy()
    t_ns = frame["screen_time"].to_numpy().astype("datetime64[ns]").astype("int64")
    risk = frame["risk"].to_numpy()
    onset_in_h = frame["onset_in_h"].to_numpy()

    cand = np.flatnonzero(risk >= threshold)
    c_stay = stay[cand]
    _, c_codes = np.unique(c_stay, return_inverse=True)
    fired = silence(c_codes, t_ns[cand] / _NS_PER_H, silencing_h)
    alarms = pd.DataFrame({
        "stay_id": c_stay,
        "screen_time": frame["screen_time"].to_numpy()[cand],
        "model": model,
        "threshold": float(threshold),
        "fired": fired,
        "silenced": ~fired,
    })
    validate(alarms, "alarms")
    f = cand[fired]
    tp = (onset_in_h[f] > 0) & (onset_in_h[f] <= window_h)
    alarm_outcomes = pd.DataFrame({
        "stay_id": stay[f], "screen_time": frame["screen_time"].to_numpy()[f], "risk": risk[f],
        "onset_in_h": onset_in_h[f], "true_positive": tp,
    })

    pop, septic, screenable = prepared.population, prepared.septic, prepared.screenable
    n_screens = np.bincount(np.searchsorted(pop, stay), minlength=len(pop))
    apos = np.searchsorted(pop, stay[f])
    n_alarms = np.bincount(apos, minlength=len(pop))
    n_true = np.bincount(apos, weights=tp, minlength=len(pop)).astype("int64")
    first_true = np.full(len(pop), np.nan)
    if tp.any():
        # earliest true alarm = largest onset_in_h among true alarms of the stay
        np.fmax.at(first_true, apos[tp], onset_in_h[f][tp])
    stay_outcomes = pd.DataFrame({
        "stay_id": pop, "septic": septic, "screenable": screenable, "n_screens": n_screens,
        "n_alarms": n_alarms, "n_true_alarms": n_true, "n_false_alarms": n_alarms - n_true,
        "detected": n_true > 0, "first_true_alarm_h": first_true,
    })
    n_stays = len(pop)
    n_tp_alarms = int(tp.sum())
    n_fp_alarms = int(len(f) - n_tp_alarms)
    n_screenable = int(screenable.sum())
    n_detected = int((stay_outcomes["detected"] & screenable).sum())
    summary = {
        "model": model, "threshold": float(threshold), "silencing_h": float(silencing_h),
        "window_h": float(window_h), "n_stays": n_stays, "n_septic": int(septic.sum()),
        "n_septic_screenable": n_screenable, "n_septic_unscreenable": int(septic.sum()) - n_screenable,
        "n_screens": int(len(frame)), "n_candidates": int(len(cand)), "n_alarms": int(len(f)),
        "n_true_alarms": n_tp_alarms, "n_false_alarms": n_fp_alarms, "n_detected": n_detected,
        "sensitivity": _safe_div(n_detected, n_screenable),
        "alarm_precision": _safe_div(n_tp_alarms, len(f)),
        "alarms_per_admission": _safe_div(len(f), n_stays),
        "screens_per_admission": _safe_div(len(frame), n_stays),
        "false_alarms_per_true_alarm": _safe_div(n_fp_alarms, n_tp_alarms),
    }
    return ProtocolResult(alarms=alarms, alarm_outcomes=alarm_outcomes, stay_outcomes=stay_outcomes,
                          summary=summary)
