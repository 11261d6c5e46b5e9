"""Screen-level curves: ROC, precision-recall, reliability and decision curves, several models per axes.

Each Display holds one array per model in dicts keyed by model name (``display.fpr["cpn"]``).
Build one with ``from_predictions(y_true, y_score)`` (arrays, or mappings of model name to
scores) or ``from_frames(predictions, screens)`` (contract tables joined on
``stay_id, screen_time``), then ``plot(ax=None)`` draws and keeps ``ax_`` and ``figure_``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from ehr.schema import require_columns
from evaluation.calibration import brier_score, expected_calibration_error, reliability_curve
from evaluation.decision import net_benefit
from evaluation.metrics import average_precision, roc_auc, threshold_metrics
from evaluation.displays._base import SHADE_COLOR, as_named, labelled_from_frames, new_axes, operating_point_table

__all__ = ["RocDisplay", "PrDisplay", "ReliabilityDisplay", "DecisionCurveDisplay"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _points(data, operating_points) -> pd.DataFrame:
    table = operating_point_table(operating_points, list(data))
    vals = [threshold_metrics(*data[m], t) for m, t in zip(table["model"], table["threshold"])]
    table["specificity"] = [v["specificity"] for v in vals]
    table["fpr"] = 1 - table["specificity"]
    table["tpr"] = [v["sensitivity"] for v in vals]
    table["precision"] = [v["precision"] for v in vals]
    return table[["model", "label", "threshold", "fpr", "tpr", "precision", "specificity"]]


def _band_dict(bands: pd.DataFrame | None, names) -> dict | None:
    """``{model: (x, low, high)}`` from a band table (``model, x, ci_low, ci_high``)."""
    if bands is None or bands.empty:
        return None
    require_columns(bands, ["model", "x", "ci_low", "ci_high"], table="curve bands")
    return {m: tuple(g[c].to_numpy("float64") for c in ("x", "ci_low", "ci_high"))
            for m, g in bands.sort_values(["model", "x"]).groupby("model", sort=False) if m in set(names)}


class _CurveDisplay:
    """Common constructors of the screen-level curve Displays."""

    #: ``{model: (x, low, high)}``: pointwise CI bands drawn around the curves (ROC, PR)
    bands = None

    @classmethod
    def from_frames(cls, predictions: pd.DataFrame, screens: pd.DataFrame, *, models=None, split=None, bands=None,
                    **kwargs):
        """Build from contract ``predictions`` and ``screens`` (its ``label`` column).

        ``models`` selects and orders models (default: all, in order of appearance); ``split``
        keeps only predictions of that split (e.g. ``"test"``); ``bands`` (ROC, PR) is a table
        ``model, x, ci_low, ci_high`` of pointwise intervals (:func:`evaluation.bootstrap.bootstrap_metrics`
        with ``curve_points``) drawn as shaded bands.
        """
        data = labelled_from_frames(predictions, screens, models=models, split=split)
        out = cls._from_data(data, **kwargs)
        out.bands = _band_dict(bands, list(data))
        return out

    def _draw_bands(self, ax):
        for m, (x, lo, hi) in (self.bands or {}).items():
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(x[ok], lo[ok], hi[ok], color=self.line_colors_.get(m), alpha=0.18, lw=0)

    @classmethod
    def from_predictions(cls, y_true, y_score, *, name=None, **kwargs):
        """Build from 0/1 labels and scores: arrays, or mappings ``{model: scores}`` (and ``{model: labels}``)."""
        return cls._from_data(as_named(y_true, y_score, name), **kwargs)

    def _draw_points(self, ax, x: str, y: str):
        if self.operating_points is None or self.operating_points.empty:
            return
        for i, (model, g) in enumerate(self.operating_points.groupby("model", sort=False)):
            color = self.line_colors_.get(model)
            for j, row in enumerate(g.itertuples()):
                ax.plot(getattr(row, x), getattr(row, y), marker=_MARKERS[j % len(_MARKERS)], ls="none",
                        ms=7, mec="black", color=color, label=f"{model} {row.label}")


class RocDisplay(_CurveDisplay):
    """ROC curves with operating points and the clinically inapplicable region (specificity < 90 %) shaded.

    Parameters
    ----------
    fpr, tpr : dict of str to ndarray
    roc_auc : dict of str to float
    operating_points : DataFrame, optional
        ``model, label, threshold, fpr, tpr, precision, specificity``.
    min_specificity : float, default 0.9
        ``fpr > 1 - min_specificity`` is shaded as clinically inapplicable.

    ``from_predictions``/``from_frames`` take ``operating_points`` (``{model: {label: threshold}}``,
    a ``model, operating_point, threshold`` frame, or for one model ``{label: threshold}`` / a
    list), ``min_specificity`` and ``drop_intermediate`` (default False: every threshold; True
    keeps only the ROC corners, for large data).

    Attributes
    ----------
    inapplicable_region : tuple of float
        The shaded FPR interval.
    ax_, figure_ : matplotlib Axes and Figure, after :meth:`plot`.

    Examples
    --------
    >>> d = RocDisplay.from_predictions([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], name="m",
    ...                                 operating_points={"high": 0.5})
    >>> d.fpr["m"].tolist(), d.tpr["m"].tolist(), d.roc_auc["m"]
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0], 0.75)
    >>> d.operating_points[["fpr", "tpr"]].values.tolist()
    [[0.0, 0.5]]
    >>> _ = d.plot()
    """

    def __init__(self, *, fpr, tpr, roc_auc, operating_points=None, min_specificity=0.9):
        self.fpr = fpr
        self.tpr = tpr
        self.roc_auc = roc_auc
        self.operating_points = operating_points
        self.min_specificity = min_specificity
        self.inapplicable_region = (1.0 - min_specificity, 1.0)

    @classmethod
    def _from_data(cls, data, *, operating_points=None, min_specificity=0.9, drop_intermediate=False):
        fpr, tpr, auc = {}, {}, {}
        for m, (y, s) in data.items():
            if len(np.unique(y)) < 2:
                raise ValueError(f"model {m!r}: ROC needs both outcomes among its screens")
            # drop_intermediate=True keeps only the corners: same curve, far fewer points to draw
            fpr[m], tpr[m], _ = roc_curve(y, s, drop_intermediate=drop_intermediate)
            auc[m] = roc_auc(y, s)
        return cls(fpr=fpr, tpr=tpr, roc_auc=auc, operating_points=_points(data, operating_points),
                   min_specificity=min_specificity)

    def plot(self, ax=None, *, shade: bool = True, title: str | None = "ROC (screen level)"):
        """Draw the curves; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax)
        if shade:
            lo, hi = self.inapplicable_region
            ax.axvspan(lo, hi, color=SHADE_COLOR, alpha=0.35, lw=0,
                       label=f"specificity < {self.min_specificity:.0%}")
        self.line_colors_ = {}
        for m in self.fpr:
            (line,) = ax.plot(self.fpr[m], self.tpr[m], lw=1.6, label=f"{m} (AUROC {self.roc_auc[m]:.3f})")
            self.line_colors_[m] = line.get_color()
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
        self._draw_bands(ax)
        self._draw_points(ax, "fpr", "tpr")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
               ylabel="sensitivity (true positive rate)", title=title)
        ax.legend(loc="lower right", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self


class PrDisplay(_CurveDisplay):
    """Precision-recall curves with operating points and the inapplicable region (precision < 15 %) shaded.

    Parameters
    ----------
    precision, recall : dict of str to ndarray
        As :func:`sklearn.metrics.precision_recall_curve` returns them.
    average_precision : dict of str to float
    prevalence : dict of str to float
        Fraction of positive screens (a no-skill model's precision).
    operating_points : DataFrame, optional
    min_precision : float, default 0.15
        ``precision < min_precision`` is shaded as clinically inapplicable.

    ``from_predictions``/``from_frames`` take ``operating_points`` (as :class:`RocDisplay`),
    ``min_precision`` and ``drop_intermediate``.

    Examples
    --------
    >>> d = PrDisplay.from_predictions([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], name="m")
    >>> d.precision["m"].tolist(), d.recall["m"].tolist()
    ([0.5, 0.6666666666666666, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0])
    >>> round(d.average_precision["m"], 6)
    0.833333
    """

    def __init__(self, *, precision, recall, average_precision, prevalence, operating_points=None,
                 min_precision=0.15):
        self.precision = precision
        self.recall = recall
        self.average_precision = average_precision
        self.prevalence = prevalence
        self.operating_points = operating_points
        self.min_precision = min_precision
        self.inapplicable_region = (0.0, min_precision)

    @classmethod
    def _from_data(cls, data, *, operating_points=None, min_precision=0.15, drop_intermediate=False):
        prec, rec, ap, prev = {}, {}, {}, {}
        for m, (y, s) in data.items():
            if not np.any(y == 1):
                raise ValueError(f"model {m!r}: PR curve needs at least one positive screen")
            prec[m], rec[m], _ = precision_recall_curve(y, s, drop_intermediate=drop_intermediate)
            ap[m] = average_precision(y, s)
            prev[m] = float(np.mean(y))
        return cls(precision=prec, recall=rec, average_precision=ap, prevalence=prev,
                   operating_points=_points(data, operating_points), min_precision=min_precision)

    def plot(self, ax=None, *, shade: bool = True, title: str | None = "Precision-recall (screen level)"):
        """Draw the curves; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax)
        if shade:
            lo, hi = self.inapplicable_region
            ax.axhspan(lo, hi, color=SHADE_COLOR, alpha=0.35, lw=0, label=f"precision < {self.min_precision:.0%}")
        self.line_colors_ = {}
        for m in self.precision:
            (line,) = ax.plot(self.recall[m], self.precision[m], lw=1.6, drawstyle="steps-post",
                              label=f"{m} (AP {self.average_precision[m]:.3f})")
            self.line_colors_[m] = line.get_color()
            ax.axhline(self.prevalence[m], ls=":", lw=0.8, color=line.get_color())
        self._draw_bands(ax)
        self._draw_points(ax, "tpr", "precision")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title)
        ax.legend(loc="upper right", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self


class _ProbabilityCurveDisplay(_CurveDisplay):
    """Curves that need probabilities: ``from_frames`` defaults to the models whose risks lie in [0, 1]."""

    @classmethod
    def from_frames(cls, predictions, screens, *, models=None, split=None, **kwargs):
        if models is None:
            pred = predictions if split is None else predictions[predictions["split"] == split]
            r = pred.groupby("model", sort=False)["risk"].agg(["min", "max"])
            models = list(r.index[(r["min"] >= 0) & (r["max"] <= 1)])
        return super().from_frames(predictions, screens, models=models, split=split, **kwargs)


class ReliabilityDisplay(_ProbabilityCurveDisplay):
    """Reliability diagram: observed fraction of positive screens against mean risk per bin.

    Only probabilities can be drawn; ``from_frames`` skips models whose risks leave [0, 1]
    (e.g. NEWS2) unless they are named in ``models``, which then raises.

    Examples
    --------
    >>> d = ReliabilityDisplay.from_predictions([0, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], name="m", n_bins=2)
    >>> [round(float(v), 6) for v in d.mean_predicted["m"]], d.fraction_positive["m"].tolist(), d.counts["m"].tolist()
    ([0.1, 0.9], [0.0, 1.0], [2, 2])
    >>> round(d.ece["m"], 6), round(d.brier["m"], 6)
    (0.1, 0.0125)
    """

    def __init__(self, *, mean_predicted, fraction_positive, counts, brier, ece, n_bins=10, strategy="uniform"):
        self.mean_predicted = mean_predicted
        self.fraction_positive = fraction_positive
        self.counts = counts
        self.brier = brier
        self.ece = ece
        self.n_bins = n_bins
        self.strategy = strategy


    @classmethod
    def _from_data(cls, data, *, n_bins=10, strategy="uniform"):
        mp, fp, cnt, brier, ece = {}, {}, {}, {}, {}
        for m, (y, p) in data.items():
            try:
                mp[m], fp[m], cnt[m] = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
            except ValueError as exc:
                raise ValueError(f"model {m!r}: {exc}") from exc
            brier[m] = brier_score(y, p)
            ece[m] = expected_calibration_error(y, p, n_bins=n_bins, strategy=strategy)
        return cls(mean_predicted=mp, fraction_positive=fp, counts=cnt, brier=brier, ece=ece,
                   n_bins=n_bins, strategy=strategy)

    def plot(self, ax=None, *, title: str | None = "Reliability (screen level)"):
        """Draw the diagram; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax)
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
        for m in self.mean_predicted:
            ax.plot(self.mean_predicted[m], self.fraction_positive[m], marker="o", ms=4, lw=1.4,
                    label=f"{m} (ECE {self.ece[m]:.3f}, Brier {self.brier[m]:.3f})")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="mean predicted risk",
               ylabel="observed fraction positive", title=title)
        ax.legend(loc="upper left", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self


class DecisionCurveDisplay(_ProbabilityCurveDisplay):
    """Decision curve: net benefit against threshold probability, with treat-all and treat-none.

    Net benefit of the rule ``risk >= p_t``: ``TP/N - FP/N * p_t / (1 - p_t)``; treat-all:
    ``prevalence - (1 - prevalence) * p_t / (1 - p_t)``; treat-none: 0. Risks must be
    probabilities (calibrate NEWS2 first).

    Examples
    --------
    >>> d = DecisionCurveDisplay.from_predictions([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], name="m",
    ...                                           thresholds=[0.2, 0.5])
    >>> d.net_benefit["m"].tolist(), d.treat_all.tolist()
    ([0.4375, 0.25], [0.375, 0.0])
    """

    def __init__(self, *, thresholds, net_benefit, treat_all, treat_none):
        self.thresholds = thresholds
        self.net_benefit = net_benefit
        self.treat_all = treat_all
        self.treat_none = treat_none


    @classmethod
    def _from_data(cls, data, *, thresholds=None):
        pt = np.linspace(0.01, 0.5, 50) if thresholds is None else np.asarray(thresholds, dtype="float64")
        nb, prev = {}, None
        for m, (y, p) in data.items():
            try:
                nb[m] = net_benefit(y, p, pt)
            except ValueError as exc:
                raise ValueError(f"model {m!r}: {exc}") from exc
            prev = float(np.mean(y)) if prev is None else prev
        prev = 0.0 if prev is None else prev
        return cls(thresholds=pt, net_benefit=nb, treat_all=prev - (1 - prev) * pt / (1 - pt),
                   treat_none=np.zeros_like(pt))

    @classmethod
    def from_table(cls, table: pd.DataFrame, *, calibration_note: str | None = None):
        """Draw what :func:`evaluation.decision.decision_curve_table` computed (``treat all`` /
        ``treat none`` rows are the reference lines); ``calibration_note`` goes under the title."""
        require_columns(table, ["model", "threshold", "net_benefit"], table="decision curve")
        curves = {m: g.sort_values("threshold") for m, g in table.groupby("model", sort=False)}
        models = [m for m in curves if m not in ("treat all", "treat none")]
        if not models:
            raise ValueError("decision curve: no model rows")
        pt = curves[models[0]]["threshold"].to_numpy("float64")
        ref = {k: (curves[k]["net_benefit"].to_numpy("float64") if k in curves else np.zeros_like(pt))
               for k in ("treat all", "treat none")}
        out = cls(thresholds=pt, net_benefit={m: curves[m]["net_benefit"].to_numpy("float64") for m in models},
                  treat_all=ref["treat all"], treat_none=ref["treat none"])
        out.calibration_note = calibration_note
        return out

    calibration_note = None

    def plot(self, ax=None, *, title: str | None = "Decision curve (screen level)"):
        """Draw the curves; returns self with ``ax_`` and ``figure_`` set."""
        fig, ax = new_axes(ax)
        if title and self.calibration_note:
            title = f"{title}\n{self.calibration_note}"
        for m, v in self.net_benefit.items():
            ax.plot(self.thresholds, v, lw=1.6, label=m)
        ax.plot(self.thresholds, self.treat_all, color="grey", lw=1, ls="--", label="treat all")
        ax.plot(self.thresholds, self.treat_none, color="black", lw=1, label="treat none")
        hi = max([float(np.nanmax(v)) for v in self.net_benefit.values()] + [float(self.treat_all.max()), 0.0])
        ax.set(xlim=(self.thresholds.min(), self.thresholds.max()), ylim=(-0.05 * max(hi, 0.01), 1.1 * max(hi, 0.01)),
               xlabel="threshold probability", ylabel="net benefit", title=title)
        ax.legend(loc="upper right", fontsize=7)
        self.ax_, self.figure_ = ax, fig
        return self
