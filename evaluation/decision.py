"""Decision curves on calibrated probabilities: net benefit of every model, treat-all and treat-none.

Net benefit of the rule ``risk >= p_t`` (Vickers & Elkin 2006): ``TP/N - FP/N * p_t / (1 - p_t)``;
treat-all: ``prevalence - (1 - prevalence) * p_t / (1 - p_t)``; treat-none: 0. The threshold
probability means something only when the risks are calibrated, so
:func:`decision_curve_table` first recalibrates every model with Platt scaling fitted on the
development split (:func:`evaluation.recalibration.calibrate_predictions`: on the logit of the
risk for probability models, on the raw score for scores such as NEWS2) and evaluates on the
evaluated split's screens with new data.

Examples
--------
>>> net_benefit([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [0.2, 0.5]).tolist()
[0.4375, 0.25]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .recalibration import calibrate_predictions, probability_models, with_new_data
from .tables import join_labels

__all__ = ["net_benefit", "net_benefit_from_counts", "treat_all", "decision_curve_table", "CALIBRATION_NOTE",
           "DEFAULT_THRESHOLDS"]

#: how the decision curve's probabilities are made (shown with the figure)
CALIBRATION_NOTE = ("Platt scaling fitted on the dev split (on the logit of the risk; on the raw score for "
                    "models whose scores are not probabilities, e.g. NEWS2), evaluated on the screens with new data")

#: threshold probabilities of the decision curve: 0.01, 0.02, ..., 0.50
DEFAULT_THRESHOLDS = np.round(np.linspace(0.01, 0.5, 50), 10)


def net_benefit(y_true, probability, thresholds) -> np.ndarray:
    """Net benefit of ``probability >= p_t`` at each threshold probability ``p_t`` in (0, 1)."""
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(probability, dtype="float64")
    pt = np.asarray(thresholds, dtype="float64")
    if len(pt) == 0 or pt.min() <= 0 or pt.max() >= 1:
        raise ValueError("thresholds must lie strictly between 0 and 1")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError("decision curves need probabilities in [0, 1]; calibrate scores such as NEWS2 first")
    n = len(y)
    if n == 0:
        return np.full(len(pt), np.nan)
    # sort once and count by searchsorted: vectorised over all thresholds
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    pos_after = np.concatenate([np.cumsum(ys[::-1])[::-1], [0.0]])
    first = np.searchsorted(ps, pt, side="left")
    tp = pos_after[first]
    fp = (n - first) - tp
    return net_benefit_from_counts(tp, fp, n, pt)


def net_benefit_from_counts(tp, fp, n, thresholds) -> np.ndarray:
    """Net benefit ``TP/N - FP/N * p_t / (1 - p_t)`` from the counts at each threshold probability.

    The counts add up over disjoint sets of screens, so a partitioned run sums them per part
    (:mod:`evaluation.count_sections`).

    >>> net_benefit_from_counts([2, 1], [1, 0], 4, [0.2, 0.5]).tolist()
    [0.4375, 0.25]
    """
    pt = np.asarray(thresholds, dtype="float64")
    tp, fp = np.asarray(tp, dtype="float64"), np.asarray(fp, dtype="float64")
    return tp / n - fp / n * pt / (1 - pt)


def treat_all(prevalence: float, thresholds) -> np.ndarray:
    """Net benefit of treating everyone: ``prevalence - (1 - prevalence) * p_t / (1 - p_t)``."""
    pt = np.asarray(thresholds, dtype="float64")
    return prevalence - (1 - prevalence) * pt / (1 - pt)


def decision_curve_table(predictions: pd.DataFrame, screens: pd.DataFrame, *, fit_split: str = "dev",
                         eval_split: str = "test", thresholds=None, new_data_only: bool = True) -> pd.DataFrame:
    """Net benefit of every model after Platt scaling fitted on ``fit_split``, on ``eval_split``.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` with a ``split`` column holding ``fit_split`` and ``eval_split``.
    screens : DataFrame
        Screens with ``label`` (and ``new_data``).
    thresholds : array, optional
        Threshold probabilities (default 0.01, 0.02, ..., 0.50).
    new_data_only : bool, default True
        Fit and evaluate on the screens with new data only (the protocol's screens).

    Returns
    -------
    DataFrame
        ``model, calibration, threshold, net_benefit``; the rows ``treat all`` and ``treat none``
        (``calibration`` empty) come last.
    """
    pt = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype="float64")
    preds = with_new_data(predictions, screens) if new_data_only else predictions
    probability, scores = probability_models(preds)
    order = list(dict.fromkeys(preds["model"]))
    parts = []
    for method, models in (("platt", probability), ("platt-score", scores)):
        if models:
            cal, _ = calibrate_predictions(preds[preds["model"].isin(models)], screens, method=method,
                                           fit_split=fit_split)
            parts.append(cal.assign(calibration=f"{method} ({fit_split})"))
    data = join_labels(pd.concat(parts, ignore_index=True), screens)
    data = data[data["split"] == eval_split]
    rows = []
    for m in order:
        g = data[data["model"] == m]
        if g.empty:
            continue
        rows.append(pd.DataFrame({"model": m, "calibration": g["calibration"].iloc[0], "threshold": pt,
                                  "net_benefit": net_benefit(g["y"], g["risk"], pt)}))
    if not rows:
        return pd.DataFrame(columns=["model", "calibration", "threshold", "net_benefit"])
    # one population for the reference lines: the first model's screens
    first = data[data["model"] == order[0]]
    prev = float(first["y"].mean())
    rows.append(pd.DataFrame({"model": "treat all", "calibration": "", "threshold": pt,
                              "net_benefit": treat_all(prev, pt)}))
    rows.append(pd.DataFrame({"model": "treat none", "calibration": "", "threshold": pt, "net_benefit": 0.0}))
    return pd.concat(rows, ignore_index=True)
