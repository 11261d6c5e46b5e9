"""Alarm-level pictures: when true alarms come, and one stay's risk trace through the protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import require_columns
from evaluation.displays._base import new_axes
from evaluation.timeliness import alarm_lead_times

__all__ = ["TrueAlarmTimingDisplay", "RiskTraceDisplay"]

_HOUR = np.timedelta64(1, "h")


class TrueAlarmTimingDisplay:
    """Fraction of true alarms raised at least ``h`` hours before onset, against ``h``.

    Parameters
    ----------
    hours : ndarray
        Grid of lead times (0 .. window).
    fraction : dict of str to ndarray
        For each curve, ``mean(hours_before_onset >= h)`` over its true alarms.
    n_alarms : dict of str to int
    median_h : dict of str to float

    Examples
    --------
    >>> import pandas as pd
    >>> lt = pd.DataFrame({"model": "m", "threshold": 0.5, "hours_before_onset": [1.0, 5.0, 30.0, 47.5]})
    >>> d = TrueAlarmTimingDisplay.from_lead_times(lt, hours=[0, 2, 24, 48])
    >>> d.fraction["m"].tolist(), d.median_h["m"]
    ([1.0, 0.75, 0.5, 0.0], 17.5)
    """

    def __init__(self, *, hours, fraction, n_alarms, median_h, window_h=48.0):
        self.hours = hours
        self.fraction = fraction
        self.n_alarms = n_alarms
        self.median_h = median_h
        self.window_h = window_h

    @classmethod
    def from_lead_times(cls, lead_times: pd.DataFrame, *, hours=None, window_h: float = 48.0):
        """Build from :func:`evaluation.timeliness.alarm_lead_times` output.

        One curve per model, or per model and operating point (threshold) when a model has several.
        """
        require_columns(lead_times, ["model", "hours_before_onset"], table="lead_times")
        grid = np.arange(0.0, window_h + 1e-9, 1.0) if hours is None else np.asarray(hours, dtype="float64")
        frac, n, med = {}, {}, {}
        for name, v in _curves(lead_times):
            n[name] = int(len(v))
            frac[name] = (v[None, :] >= grid[:, None]).mean(axis=1) if len(v) else np.zeros_like(grid)
            med[name] = float(np.median(v)) if len(v) else float("nan")
        return cls(hours=grid, fraction=frac, n_alarms=n, median_h=med, window_h=window_h)

    @classmethod
    def from_alarms(cls, alarms: pd.DataFrame, stays: pd.DataFrame, *, window_h: float = 48.0, hours=None):
        """Build from contract ``alarms`` and ``stays``, counting every fired true alarm."""
        lt = alarm_lead_times(alarms, stays, window_h=window_h, first_only=False)
        return cls.from_lead_times(lt, hours=hours, window_h=window_h)

    def plot(self, ax=None, *, title: str | None = "When true alarms come"):
        """Draw the curves; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax)
        for name, f in self.fraction.items():
            ax.step(self.hours, f, where="post", lw=1.6,
                    label=f"{name} (n={self.n_alarms[name]}, median {self.median_h[name]:.1f} h)")
        ax.set(xlim=(0, max(float(self.hours.max()), 1.0)), ylim=(0, 1.02), xlabel="hours before onset (h)",
               ylabel="fraction of true alarms raised >= h before onset", title=title)
        ax.legend(loc="upper right", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self


def _curves(lead_times: pd.DataFrame):
    label_col = "operating_point" if "operating_point" in lead_times.columns else "threshold"
    for model, g in lead_times.groupby("model", sort=False):
        groups = g.groupby(label_col, sort=True) if label_col in g.columns and g[label_col].nunique() > 1 else None
        if groups is None:
            yield str(model), g["hours_before_onset"].to_numpy("float64")
        else:
            for key, gg in groups:
                key = f"{key:g}" if isinstance(key, float) else str(key)
                yield f"{model} @ {key}", gg["hours_before_onset"].to_numpy("float64")


def _protocol_alarms(hours: np.ndarray, risk: np.ndarray, threshold: float, silencing_h: float):
    """Fired / silenced flags by the protocol rule, for a trace drawn without an alarms table."""
    fired = np.zeros(len(risk), bool)
    silenced = np.zeros(len(risk), bool)
    last = -np.inf
    for i in np.flatnonzero(risk >= threshold):  # a loop over one stay's crossings only
        if hours[i] - last < silencing_h:
            silenced[i] = True
        else:
            fired[i] = True
            last = hours[i]
    return fired, silenced


class RiskTraceDisplay:
    """One stay's risk over time: threshold, fired and silenced alarms, silencing windows, onset.

    Times are hours since the stay's ``admit_time``.

    Attributes
    ----------
    hours, risk : ndarray
    threshold : float
    fired_hours, silenced_hours : ndarray
    silencing_windows : ndarray of shape (n_fired, 2)
        ``[alarm hour, alarm hour + silencing_h]`` per fired alarm.
    onset_hour, antibiotic_hour : float or None

    Examples
    --------
    >>> import pandas as pd
    >>> T = pd.Timestamp("2020-01-01")
    >>> stays = pd.DataFrame({"stay_id": [7], "admit_time": [T], "onset_time": [T + pd.Timedelta(hours=6)]})
    >>> pred = pd.DataFrame({"stay_id": 7, "model": "cpn", "risk": [0.1, 0.6, 0.7, 0.2, 0.8],
    ...                      "screen_time": [T + pd.Timedelta(hours=h) for h in range(1, 6)]})
    >>> d = RiskTraceDisplay.from_frames(pred, stays, stay_id=7, model="cpn", threshold=0.5, silencing_h=3)
    >>> d.fired_hours.tolist(), d.silenced_hours.tolist(), d.silencing_windows.tolist(), d.onset_hour
    ([2.0, 5.0], [3.0], [[2.0, 5.0], [5.0, 8.0]], 6.0)
    """

    def __init__(self, *, hours, risk, threshold, fired_hours, silenced_hours, silencing_windows,
                 onset_hour=None, antibiotic_hour=None, stay_id=None, model=None):
        self.hours = hours
        self.risk = risk
        self.threshold = threshold
        self.fired_hours = fired_hours
        self.silenced_hours = silenced_hours
        self.silencing_windows = silencing_windows
        self.onset_hour = onset_hour
        self.antibiotic_hour = antibiotic_hour
        self.stay_id = stay_id
        self.model = model

    @classmethod
    def from_frames(cls, predictions: pd.DataFrame, stays: pd.DataFrame, *, stay_id, model: str,
                    alarms: pd.DataFrame | None = None, threshold: float | None = None, silencing_h: float = 48.0):
        """Build from contract ``predictions`` and ``stays`` (and ``alarms`` when given).

        With ``alarms`` the fired/silenced screens are read from it (rows of this stay, model
        and ``threshold``; ``threshold`` may be omitted when the model has one threshold there);
        without, they are derived from the risks by the protocol rule (a crossing less than
        ``silencing_h`` hours after the last fired alarm is silenced).
        """
        st = stays[stays["stay_id"] == stay_id]
        if st.empty:
            raise ValueError(f"stays: stay_id {stay_id} not found")
        st = st.iloc[0]
        admit = st["admit_time"]
        pred = predictions[(predictions["stay_id"] == stay_id) & (predictions["model"] == model)]
        if pred.empty:
            raise ValueError(f"predictions: no rows for stay_id {stay_id} and model {model!r}")
        pred = pred.sort_values("screen_time")
        hours = (pred["screen_time"] - admit).to_numpy() / _HOUR
        risk = pred["risk"].to_numpy("float64")
        if alarms is not None:
            a = alarms[alarms["model"] == model]
            if threshold is None:
                thr = a["threshold"].unique()
                if len(thr) != 1:
                    raise ValueError(f"alarms: model {model!r} has {len(thr)} thresholds {sorted(thr)}; "
                                     "pass threshold=")
                threshold = float(thr[0])
            a = a[(a["stay_id"] == stay_id) & np.isclose(a["threshold"].to_numpy("float64"), threshold)]
            a_hours = (a["screen_time"] - admit).to_numpy() / _HOUR
            fired_h = np.sort(a_hours[a["fired"].to_numpy(bool)])
            silenced_h = np.sort(a_hours[a["silenced"].to_numpy(bool)])
        else:
            if threshold is None:
                raise ValueError("threshold is required when no alarms table is given")
            fired, silenced = _protocol_alarms(hours, risk, threshold, silencing_h)
            fired_h, silenced_h = hours[fired], hours[silenced]
        windows = np.column_stack([fired_h, fired_h + silencing_h]) if len(fired_h) else np.empty((0, 2))

        def _h(col):
            v = st.get(col)
            return None if v is None or pd.isna(v) else float((v - admit) / pd.Timedelta(hours=1))

        return cls(hours=hours, risk=risk, threshold=float(threshold), fired_hours=fired_h, silenced_hours=silenced_h,
                   silencing_windows=windows, onset_hour=_h("onset_time"), antibiotic_hour=_h("antibiotic_time"),
                   stay_id=stay_id, model=model)

    def plot(self, ax=None, *, title: str | None = None):
        """Draw the trace; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax, figsize=(7.5, 3.6))
        for i, (a, b) in enumerate(self.silencing_windows):
            ax.axvspan(a, b, color="#f5c96a", alpha=0.35, lw=0, label="silencing window" if i == 0 else None)
        ax.plot(self.hours, self.risk, color="#333333", lw=1.4, marker=".", ms=3, label=f"{self.model} risk")
        ax.axhline(self.threshold, color="#1f5fbf", ls="--", lw=1, label=f"threshold {self.threshold:.3g}")
        at = dict(zip(self.hours, self.risk))
        if len(self.fired_hours):
            ax.plot(self.fired_hours, [at.get(h, self.threshold) for h in self.fired_hours], ls="none", marker="v",
                    ms=9, color="#d0312d", mec="black", label="alarm fired")
        if len(self.silenced_hours):
            ax.plot(self.silenced_hours, [at.get(h, self.threshold) for h in self.silenced_hours], ls="none",
                    marker="o", ms=6, mfc="none", color="#8a6d00", label="alarm silenced")
        if self.onset_hour is not None:
            ax.axvline(self.onset_hour, color="#d0312d", lw=1.6, label="sepsis onset")
        if self.antibiotic_hour is not None:
            ax.axvline(self.antibiotic_hour, color="#2a9d4b", lw=1.2, ls="-.", label="first antibiotic")
        # Silencing windows may outlast the stay; show the stay (and onset), not the empty tail.
        ends = [float(self.hours.max()) if len(self.hours) else 1.0] + [
            h for h in (self.onset_hour, self.antibiotic_hour) if h is not None]
        ax.set_xlim(0, max(ends) * 1.03 + 1)
        ax.set(xlabel="hours since admission", ylabel="risk",
               title=title if title is not None else f"stay {self.stay_id}: {self.model}")
        ax.legend(loc="upper left", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self
