"""Per-alarm explanation: horizontal bars of each evidence item's contribution (blue raises, red lowers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ehr.schema import require_columns, validate
from evaluation.displays._base import LOWER_COLOR, RAISE_COLOR

__all__ = ["BayesFactorDisplay"]


def _bars(expl: pd.DataFrame, column: str, top_k: int | None):
    items = expl[expl["feature"] != "total"]
    v = items[column].to_numpy("float64")
    keep = np.isfinite(v)
    items, v = items[keep], v[keep]
    order = np.lexsort((items["feature"].to_numpy(str), -np.abs(v)))  # largest |contribution| first, ties by name
    if top_k is not None:
        order = order[:top_k]
    items, v = items.iloc[order], v[order]
    labels = []
    for row in items.itertuples():
        val = getattr(row, "value", None)
        state = getattr(row, "state", None)
        text = str(row.feature)
        if val is not None and pd.notna(val):
            text += f" = {val:.4g}"
        if state is not None and pd.notna(state) and str(state) != "":
            text += f" [{state}]"
        labels.append(text)
    total = expl.loc[expl["feature"] == "total", "contribution"]
    return (items["feature"].to_numpy(str), v, np.array(labels, dtype=object),
            float(total.iloc[0]) if len(total) else None)


class BayesFactorDisplay:
    """Bar chart of one alarm's evidence contributions, optionally next to another model's.

    For the CPN, ``contribution`` is log10 B({i}) (the item alone) and ``baseline`` the in-context
    factor log10 B(E)/B(E without i); for the GBDT, ``contribution`` is the SHAP log-odds.
    Bars are sorted by absolute size, largest at the top; blue bars raise risk, red lower it.

    Attributes
    ----------
    features, contributions, labels, colors : dict of str to ndarray
        Per model, in drawing order (largest |contribution| first).
    totals : dict of str to float or None
        The ``total`` row's contribution (log10 B(E) for the CPN) when present.

    Examples
    --------
    >>> import pandas as pd
    >>> T = pd.Timestamp("2020-01-01")
    >>> ex = pd.DataFrame({"stay_id": 1, "screen_time": T, "model": "cpn",
    ...                    "feature": ["crp", "hr", "alb", "total"], "value": [120.0, 95, 40, None],
    ...                    "state": None, "age_h": 1.0, "weight": 1.0,
    ...                    "contribution": [0.8, 0.3, -0.5, 0.6], "baseline": [0.7, 0.2, -0.4, None]})
    >>> d = BayesFactorDisplay.from_explanations(ex, stay_id=1, screen_time=T)
    >>> d.features["cpn"].tolist(), d.contributions["cpn"].tolist(), d.totals["cpn"]
    (['crp', 'alb', 'hr'], [0.8, -0.5, 0.3], 0.6)
    >>> [c == RAISE_COLOR for c in d.colors["cpn"]]
    [True, False, True]
    """

    def __init__(self, *, features, contributions, labels, colors, totals, stay_id=None, screen_time=None,
                 column="contribution", in_context=None, header=None):
        self.features = features
        self.contributions = contributions
        self.labels = labels
        self.colors = colors
        self.totals = totals
        self.stay_id = stay_id
        self.screen_time = screen_time
        self.column = column
        self.in_context = in_context or {}
        self.header = header

    @classmethod
    def from_explained(cls, alarm: pd.DataFrame, *, top_k: int | None = 15):
        """One explained alarm from :func:`evaluation.explained_alarms.alarm_explanations` (its rows).

        Bayes factors get two bars per item, in context (solid) and alone (light); additive
        contributions one. Items keep the table's order (largest first); labels read
        ``feature = value unit [state] (age h, weight)``.
        """
        require_columns(alarm, ["model", "feature_label", "alone", "in_context", "explanation", "total"],
                        table="explained alarm")
        g = alarm.head(top_k) if top_k is not None else alarm
        r = alarm.iloc[0]
        m = str(r["model"])
        labels = []
        for row in g.itertuples():
            text = str(row.feature_label)
            if pd.notna(row.value):
                text += f" = {row.value:.4g}" + (f" {row.unit}" if isinstance(row.unit, str) and row.unit else "")
            if isinstance(row.state_label, str) and row.state_label:
                text += f" [{row.state_label}]"
            labels.append(text)
        alone = g["alone"].to_numpy("float64")
        bayes = r["explanation"] == "bayes_factor"
        ctx = g["in_context"].to_numpy("float64") if bayes else None
        shown = ctx if bayes else alone
        lead = f", {r['hours_before_onset']:.0f} h before onset" if pd.notna(r.get("hours_before_onset")) else ""
        unit = "log10 odds" if bayes else "log-odds"
        header = (f"{m}: {'true' if r['true_alarm'] else 'false'} alarm, stay {r['stay_id']} at {r['screen_time']}{lead}\n"
                  f"risk {r['risk']:.3f}; prior {r['prior']:+.2f}, total {r['total']:+.2f}, "
                  f"needed to alarm {r['needed']:+.2f} ({unit})")
        return cls(features={m: g["feature"].to_numpy(str)}, contributions={m: alone},
                   labels={m: np.array(labels, dtype=object)},
                   colors={m: np.where(shown > 0, RAISE_COLOR, LOWER_COLOR)}, totals={m: float(r["total"])},
                   stay_id=r["stay_id"], screen_time=r["screen_time"], in_context={m: ctx} if bayes else None,
                   header=header)

    @classmethod
    def from_explanations(cls, explanations: pd.DataFrame, *, stay_id, screen_time, model: str = "cpn",
                          compare_model: str | None = None, top_k: int | None = 12, in_context: bool = False):
        """Build from the contract ``explanations`` table for one screen.

        Parameters
        ----------
        model : str, default "cpn"
        compare_model : str, optional
            A second model (e.g. ``"lightgbm"``) whose contributions for the same screen are drawn
            beside the first; missing rows raise.
        top_k : int or None, default 12
            Largest contributions kept per model.
        in_context : bool, default False
            Draw the CPN's in-context factor (``baseline`` column) instead of the item-alone factor.
        """
        validate(explanations, "explanations")
        screen_time = pd.Timestamp(screen_time)
        here = explanations[(explanations["stay_id"] == stay_id) & (explanations["screen_time"] == screen_time)]
        out = {k: {} for k in ("features", "contributions", "labels", "colors", "totals")}
        for i, m in enumerate([model] + ([compare_model] if compare_model else [])):
            e = here[here["model"] == m]
            if e.empty:
                raise ValueError(f"explanations: no rows for model {m!r} at stay_id {stay_id}, "
                                 f"screen_time {screen_time}")
            column = "baseline" if (in_context and i == 0) else "contribution"
            f, v, lab, tot = _bars(e, column, top_k)
            out["features"][m], out["contributions"][m], out["labels"][m], out["totals"][m] = f, v, lab, tot
            out["colors"][m] = np.where(v > 0, RAISE_COLOR, LOWER_COLOR)
        return cls(**out, stay_id=stay_id, screen_time=screen_time,
                   column="baseline" if in_context else "contribution")

    def plot(self, ax=None, *, title: str | None = None):
        """Draw one panel per model side by side; returns self with ``ax_`` (first panel),
        ``axes_`` (all panels) and ``figure_`` set. ``ax`` may be one Axes or a sequence, one per model."""
        models = list(self.features)
        if ax is None:
            n_rows = max(len(v) for v in self.features.values()) if models else 1
            # room for the longest label (about 0.055 in per character at 7 pt) next to the bars
            longest = max((len(str(t)) for v in self.labels.values() for t in v), default=0)
            width = max(5.2, 3.2 + 0.055 * longest)
            fig = Figure(figsize=(width * len(models), 1.4 + 0.32 * max(n_rows, 3)), layout="constrained")
            axes = [fig.add_subplot(1, len(models), i + 1) for i in range(len(models))]
        else:
            axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
            if len(axes) != len(models):
                raise ValueError(f"plot: got {len(axes)} axes for {len(models)} model panel(s)")
            fig = axes[0].figure
        for i, (a, m) in enumerate(zip(axes, models)):
            v = self.contributions[m]
            y = np.arange(len(v))[::-1]  # largest at the top
            ctx = self.in_context.get(m)
            if ctx is not None:  # in context (solid) above, alone (light) below, per item
                a.barh(y + 0.2, ctx, height=0.4, color=self.colors[m], edgecolor="black", lw=0.4, label="in context")
                a.barh(y - 0.2, v, height=0.4, color=np.where(v > 0, RAISE_COLOR, LOWER_COLOR), alpha=0.35,
                       edgecolor="black", lw=0.4, label="alone")
                a.legend(loc="lower right", fontsize=7)
                v = np.concatenate([v, ctx[np.isfinite(ctx)]])
            else:
                a.barh(y, v, color=self.colors[m], edgecolor="black", lw=0.4)
            a.set_yticks(y, self.labels[m], fontsize=7)
            a.axvline(0, color="black", lw=0.8)
            if ctx is not None:
                what = "log10 Bayes factor: in context, and alone"
            elif i == 0 and self.column == "baseline":
                what = "in-context log10 Bayes factor"
            elif m.startswith("cpn"):
                what = "log10 Bayes factor"
            else:
                what = "contribution (SHAP log-odds)"
            a.set_xlabel(what)
            total = "total log10 B(E)" if (ctx is not None or m.startswith("cpn")) else "total (log-odds)"
            head = m + (f": {total} = {self.totals[m]:.2f}" if self.totals[m] is not None else "")
            a.set_title(head, fontsize=9)
            # from the largest bar on each side (at least a tenth of the other side), so one-sided
            # explanations do not waste half the panel
            v = v[np.isfinite(v)]
            hi, lo = (max(float(v.max()), 0.0), min(float(v.min()), 0.0)) if len(v) else (0.0, 0.0)
            span = max(hi - lo, 1e-3)
            a.set_xlim(lo - max(0.1 * span, 0.15 * -lo), hi + max(0.1 * span, 0.15 * hi))
        fig.suptitle(title if title is not None else self.header or
                     f"stay {self.stay_id} at {self.screen_time}: blue raises risk, red lowers it", fontsize=9)
        self.axes_ = axes
        self.ax_, self.figure_ = axes[0], fig
        return self
