"""The PhysioNet/Computing in Cardiology Challenge 2019 normalised utility, vectorised.

A re-implementation of ``compute_prediction_utility`` and the normalisation in the official
``evaluate_sepsis_score.py`` (physionetchallenges/evaluation-2019), keeping its quirks:

* Time is the **row position** within a stay (0, 1, ...), not ICULOS or clock time.
* ``t_sepsis`` = first row with label 1, **plus 6** (``- dt_optimal``): the challenge labels start
  6 h before onset. A stay is septic when any label is 1; a non-septic stay has ``t_sepsis = inf``.
* For a septic stay, rows after ``t_sepsis + dt_late`` score 0 whatever is predicted.
* A positive prediction up to ``dt_optimal`` scores ``max(m1 (t - t_sepsis) + b1, u_fp)``: the ramp
  from 0 at ``dt_early`` to ``max_u_tp`` at ``dt_optimal``, floored at ``u_fp`` for earlier alarms;
  after ``dt_optimal`` it falls linearly to 0 at ``dt_late``.
* A missed row of a septic stay scores 0 until ``dt_optimal`` and then falls linearly to
  ``min_u_fn`` at ``dt_late``. Non-septic stays: ``u_fp`` per positive row, ``u_tn`` per negative.
* Normalisation over the whole cohort: ``(observed - inaction) / (best - inaction)`` where *best*
  predicts 1 exactly on rows ``[max(0, t_sepsis + dt_early), min(t_sepsis + dt_late + 1, n))``,
  *inaction* predicts 0 everywhere; like the reference, it raises unless the best utility is at
  least the worst (``1 - best``) and the inaction utilities.

Examples
--------
>>> import numpy as np
>>> from evaluation.utility import physionet_utility
>>> labels = np.r_[np.zeros(10), np.ones(5), np.zeros(5)]      # stay 1 septic, stay 2 not
>>> stay = np.r_[np.ones(15), 2 * np.ones(5)]
>>> res = physionet_utility(labels, labels, stay)               # predict the label itself
>>> round(res["utility"], 4)
0.7097
>>> physionet_utility(labels, np.zeros(20), stay)["utility"]
0.0
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import require_columns

__all__ = ["physionet_utility", "row_utilities", "utility_from_tables", "normalised_utility"]


def _positions(stay_ids: np.ndarray):
    """Row position within stay (rows of a stay keep their order) and stay code per row."""
    order = np.argsort(stay_ids, kind="stable")
    s = stay_ids[order]
    start = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    code_sorted = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    pos_sorted = np.arange(len(s)) - first[code_sorted]
    pos = np.empty(len(s), dtype=np.int64)
    code = np.empty(len(s), dtype=np.int64)
    pos[order] = pos_sorted
    code[order] = code_sorted
    return pos, code, len(first)


def row_utilities(labels, stay_ids, *, dt_early=-12, dt_optimal=-6, dt_late=3.0, max_u_tp=1.0,
                  min_u_fn=-2.0, u_fp=-0.05, u_tn=0.0):
    """Per-row utility of predicting 1 and of predicting 0, and the best prediction per row.

    Returns
    -------
    u_pos, u_neg : ndarray of float
        Utility of a positive / negative prediction on each row.
    best : ndarray of bool
        The reference's optimal prediction for each row.
    """
    if not dt_early < dt_optimal < dt_late:
        raise ValueError("utility parameters must satisfy dt_early < dt_optimal < dt_late")
    y = np.asarray(labels)
    stay_ids = np.asarray(stay_ids)
    if y.shape != stay_ids.shape or y.ndim != 1:
        raise ValueError("labels and stay_ids must be 1-d of the same length")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must satisfy label == 0 or label == 1")
    pos, code, n_stays = _positions(stay_ids)
    big = np.iinfo(np.int64).max
    first_pos = np.full(n_stays, big, dtype=np.int64)
    np.minimum.at(first_pos, code[y == 1], pos[y == 1])
    septic = (first_pos < big)[code]
    t_sepsis = np.where(septic, first_pos[code] - dt_optimal, 0).astype("float64")
    d = pos - t_sepsis  # only meaningful for septic rows

    m_1 = float(max_u_tp) / float(dt_optimal - dt_early)
    b_1 = -m_1 * dt_early
    m_2 = float(-max_u_tp) / float(dt_late - dt_optimal)
    b_2 = -m_2 * dt_late
    m_3 = float(min_u_fn) / float(dt_late - dt_optimal)
    b_3 = -m_3 * dt_optimal

    early = d <= dt_optimal
    in_scope = d <= dt_late
    u_pos_septic = np.where(early, np.maximum(m_1 * d + b_1, u_fp), m_2 * d + b_2)
    u_neg_septic = np.where(early, 0.0, m_3 * d + b_3)
    u_pos = np.where(septic, np.where(in_scope, u_pos_septic, 0.0), u_fp)
    u_neg = np.where(septic, np.where(in_scope, u_neg_septic, 0.0), u_tn)
    best = septic & (d >= dt_early) & (d <= dt_late)
    return u_pos.astype("float64"), u_neg.astype("float64"), best


def physionet_utility(labels, predictions, stay_ids, **params) -> dict:
    """Normalised PhysioNet 2019 utility of binary ``predictions`` (rows in time order per stay).

    Parameters
    ----------
    labels : array of 0/1
        The challenge's hourly ``SepsisLabel``.
    predictions : array of 0/1
        Binary predictions (threshold the risk first).
    stay_ids : array
        Stay of each row; a stay's rows must be in time order (they need not be contiguous).
    **params
        ``dt_early=-12, dt_optimal=-6, dt_late=3, max_u_tp=1, min_u_fn=-2, u_fp=-0.05, u_tn=0``.

    Returns
    -------
    dict
        ``utility`` (normalised), ``observed``, ``best``, ``worst``, ``inaction`` (unnormalised
        sums), ``n_stays``, ``n_rows``.
    """
    p = np.asarray(predictions)
    if len(p) and not np.isin(p, (0, 1)).all():
        raise ValueError("predictions must satisfy prediction == 0 or prediction == 1")
    if p.shape != np.shape(labels):
        raise ValueError("numbers of predictions and labels must be the same")
    u_pos, u_neg, best = row_utilities(labels, stay_ids, **params)
    p = p.astype(bool)
    observed = float(np.where(p, u_pos, u_neg).sum())
    best_u = float(np.where(best, u_pos, u_neg).sum())
    worst_u = float(np.where(~best, u_pos, u_neg).sum())
    inaction = float(u_neg.sum())
    if not (worst_u <= best_u and inaction <= best_u):
        raise ValueError("optimal utility must be higher than inaction utility")
    norm = normalised_utility(observed, best_u, inaction)
    return {"utility": norm, "observed": observed, "best": best_u, "worst": worst_u, "inaction": inaction,
            "n_stays": int(len(np.unique(stay_ids))), "n_rows": int(len(p))}


def normalised_utility(observed: float, best: float, inaction: float) -> float:
    """``(observed - inaction) / (best - inaction)``: the sums add up over stays, so a partitioned run
    sums each part's (:func:`physionet_utility`'s ``observed``, ``best``, ``inaction``) and normalises once.

    >>> normalised_utility(3.0, 5.0, 1.0)
    0.5
    """
    return (observed - inaction) / (best - inaction) if best != inaction else float("nan")


def utility_from_tables(predictions: pd.DataFrame, screens: pd.DataFrame, *, threshold: float,
                        model: str | None = None, label_column: str = "sepsis_label",
                        missing: str = "error", **params) -> dict:
    """Normalised utility of one model from contract tables (PhysioNet 2019 sources).

    ``screens`` must hold every hourly row of each stay *including those after onset* (build them
    with ``until_onset=False``) and the raw challenge label ``sepsis_label``; rows are ordered by
    ``screen_time`` within stay. A prediction is positive when ``risk >= threshold``.

    Parameters
    ----------
    missing : {"error", "negative"}
        What a screen without a prediction gets: an error naming the first one, or a negative
        prediction (e.g. NEWS2, which scores only hours with an observation).
    """
    require_columns(screens, ["stay_id", "screen_time", label_column], table="screens",
                    purpose="(the PhysioNet 2019 hourly label) for the utility")
    if missing not in ("error", "negative"):
        raise ValueError(f"missing must be 'error' or 'negative', got {missing!r}")
    if model is None:
        models = predictions["model"].unique()
        if len(models) != 1:
            raise ValueError(f"predictions hold {len(models)} models {sorted(models)}; pass model=")
        model = models[0]
    p = predictions.loc[predictions["model"] == model, ["stay_id", "screen_time", "risk"]]
    if not len(p):
        raise ValueError(f"predictions: model '{model}' is not in predictions")
    if p.duplicated(["stay_id", "screen_time"]).any():
        raise ValueError(f"predictions: duplicate (stay_id, screen_time) rows for model '{model}'")
    sc = screens[["stay_id", "screen_time", label_column]].sort_values(["stay_id", "screen_time"], kind="stable")
    m = sc.merge(p, on=["stay_id", "screen_time"], how="left", validate="one_to_one")
    absent = m["risk"].isna().to_numpy()
    if absent.any() and missing == "error":
        r = m.loc[np.flatnonzero(absent)[0]]
        raise ValueError(f"predictions: no '{model}' prediction for screen ({r['stay_id']}, {r['screen_time']}) "
                         f"({int(absent.sum())} screen(s) without one); pass missing='negative' to count them "
                         f"as negative")
    orphans = len(p) - int((~absent).sum())
    if orphans:
        raise ValueError(f"predictions: {orphans} '{model}' prediction(s) are not at a screen")
    pred = (m["risk"].fillna(-np.inf).to_numpy() >= threshold).astype(int)
    labels = m[label_column].to_numpy()
    if pd.isna(labels).any():
        raise ValueError(f"screens: '{label_column}' is null at {int(pd.isna(labels).sum())} row(s)")
    out = physionet_utility(labels.astype(int), pred, m["stay_id"].to_numpy(), **params)
    out.update(model=model, threshold=float(threshold), n_missing_predictions=int(absent.sum()))
    return out
