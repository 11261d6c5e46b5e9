"""Alarm burden against sensitivity: alarms per admission and false alarms per true alarm, per model."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ehr.schema import require_columns

__all__ = ["AlarmBurdenDisplay"]

_MARKERS = ("o", "s", "^", "D", "v")


class AlarmBurdenDisplay:
    """Two panels against protocol sensitivity: alarms per admission, and false alarms per true alarm.

    Attributes
    ----------
    sensitivity, alarms_per_admission, false_per_true : dict of str to ndarray
        One curve per model (from :func:`evaluation.burden.alarm_burden`), in order of sensitivity.
    operating_points : DataFrame or None
        ``model, operating_point, sensitivity, alarms_per_admission, false_alarms_per_true_alarm``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"model": "cpn", "threshold": [0.9, 0.5, 0.1], "sensitivity": [0.2, 0.6, 0.9],
    ...                   "alarms_per_admission": [0.1, 0.4, 1.5], "false_alarms_per_true_alarm": [2.0, 5.0, 12.0]})
    >>> d = AlarmBurdenDisplay.from_table(t).plot()
    >>> d.alarms_per_admission["cpn"].tolist(), len(d.axes_)
    ([0.1, 0.4, 1.5], 2)
    """

    def __init__(self, *, sensitivity, alarms_per_admission, false_per_true, operating_points=None):
        self.sensitivity = sensitivity
        self.alarms_per_admission = alarms_per_admission
        self.false_per_true = false_per_true
        self.operating_points = operating_points

    @classmethod
    def from_table(cls, burden: pd.DataFrame, *, operating_points: pd.DataFrame | None = None):
        """Build from :func:`evaluation.burden.alarm_burden`'s table; ``operating_points`` (a protocol
        summary with ``model, operating_point, sensitivity, alarms_per_admission,
        false_alarms_per_true_alarm``) marks the chosen thresholds."""
        require_columns(burden, ["model", "sensitivity", "alarms_per_admission", "false_alarms_per_true_alarm"],
                        table="alarm burden")
        sens, apa, fpt = {}, {}, {}
        for m, g in burden.groupby("model", sort=False):
            g = g.sort_values(["sensitivity", "alarms_per_admission"], kind="stable")
            sens[m] = g["sensitivity"].to_numpy("float64")
            apa[m] = g["alarms_per_admission"].to_numpy("float64")
            fpt[m] = g["false_alarms_per_true_alarm"].to_numpy("float64")
        ops = None
        if operating_points is not None and len(operating_points):
            ops = operating_points[operating_points["model"].isin(list(sens))]
        return cls(sensitivity=sens, alarms_per_admission=apa, false_per_true=fpt, operating_points=ops)

    def plot(self, ax=None, *, title: str | None = "Alarm burden against sensitivity (protocol, per stay)"):
        """Draw both panels; returns self with ``axes_``, ``ax_`` (first panel) and ``figure_`` set."""
        if ax is None:
            fig = Figure(figsize=(10.5, 4.2), layout="constrained")
            axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
        else:
            axes = list(ax)
            fig = axes[0].figure
        colors = {}
        panels = (("alarms_per_admission", self.alarms_per_admission, "alarms per admission"),
                  ("false_alarms_per_true_alarm", self.false_per_true, "false alarms per true alarm"))
        for a, (col, curves, label) in zip(axes, panels):
            for m, y in curves.items():
                ok = np.isfinite(y)
                (line,) = a.plot(self.sensitivity[m][ok], y[ok], lw=1.6, label=m, color=colors.get(m))
                colors[m] = line.get_color()
            if self.operating_points is not None:
                for m, g in self.operating_points.groupby("model", sort=False):
                    for j, r in enumerate(g.itertuples()):
                        a.plot(r.sensitivity, getattr(r, col), marker=_MARKERS[j % len(_MARKERS)], ls="none",
                               ms=7, mec="black", color=colors.get(m), label=f"{m} {r.operating_point}")
            a.set(xlim=(0, 1), xlabel="sensitivity (septic stays warned within the window)", ylabel=label)
            a.set_ylim(bottom=0)
            a.grid(alpha=0.3)
        axes[0].legend(loc="upper left", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=10)
        self.axes_, self.ax_, self.figure_ = axes, axes[0], fig
        return self
