"""Discrimination metrics, vectorised and weightable (the bootstrap passes per-screen weights).

Calibration metrics (Brier score, reliability curve, ECE) live in :mod:`evaluation.calibration`.

All functions take ``y_true`` (0/1), ``y_score`` and optional ``sample_weight``; ties in the score
are handled as scikit-learn does (one ROC point per distinct score, trapezoidal area), and the
results agree with ``sklearn.metrics`` to 1e-12 (see ``tests/evaluation/test_metrics.py``).

* ``roc_auc`` / ``average_precision``: AUROC and AUPRC (average precision, scikit-learn's step
  definition ``sum_k (R_k - R_{k-1}) P_k``).
* ``fpr_at_tpr``: the false positive rate at the first ROC point (highest threshold) whose TPR
  reaches the target, no interpolation.
* ``threshold_metrics``: sensitivity, specificity, precision of ``score >= threshold``.
* ``check_binary_scores``: the one input check (0/1 labels, finite scores, weights) that these
  functions and :mod:`evaluation.calibration` share.
* :class:`SortedScores` sorts once and evaluates AUROC/AUPRC/FPR-at-TPR for many weight vectors
  with one weighted cumulative sum each: the bootstrap's inner loop.

Examples
--------
>>> import numpy as np
>>> from evaluation.metrics import roc_auc, average_precision
>>> y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
>>> roc_auc(y, s), round(average_precision(y, s), 4)
(0.75, 0.8333)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SortedScores",
    "roc_auc",
    "average_precision",
    "fpr_at_tpr",
    "threshold_metrics",
    "check_binary_scores",
    "screen_labels",
]


def screen_labels(onset_in_h: np.ndarray, window_h: float = 48.0) -> np.ndarray:
    """Screen-level label: 1 when onset follows within ``window_h`` hours (``0 < onset_in_h <= W``)."""
    o = np.asarray(onset_in_h, dtype="float64")
    with np.errstate(invalid="ignore"):
        return ((o > 0) & (o <= window_h)).astype("int8")


def check_binary_scores(y_true, y_score, sample_weight=None, *, score_name: str = "y_score"):
    """``(y, score, weight)`` as float arrays, or a ``ValueError`` naming the first bad row.

    ``y_true`` must be 0/1 and ``y_score`` finite, both 1-D of one length; ``sample_weight``
    defaults to ones.

    Examples
    --------
    >>> check_binary_scores([0, 2], [0.1, 0.2])
    Traceback (most recent call last):
    ...
    ValueError: y_true must be 0/1; row 1 is 2
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype="float64")
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and {score_name} {s.shape} must be 1-d of the same length")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"y_true must be 0/1; row {row} is {y[row].item()!r}")
    if not np.isfinite(s).all():
        raise ValueError(f"{score_name} is not finite at row {int(np.flatnonzero(~np.isfinite(s))[0])}")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype="float64")
    if w.shape != y.shape:
        raise ValueError("sample_weight must have the length of y_true")
    return y.astype("float64"), s, w


class SortedScores:
    """Scores sorted once (descending), for rank metrics under many weight vectors.

    Parameters
    ----------
    y_true : array of 0/1
    y_score : array of float

    Examples
    --------
    >>> import numpy as np
    >>> ss = SortedScores(np.array([0, 1, 0, 1]), np.array([0.2, 0.9, 0.5, 0.5]))
    >>> ss.roc_auc(np.ones(4)), ss.roc_auc(np.array([1.0, 1.0, 0.0, 2.0]))
    (0.875, 1.0)
    """

    def __init__(self, y_true, y_score):
        y, s, _ = check_binary_scores(y_true, y_score)
        self.order_ = np.argsort(-s, kind="stable")
        self.y_sorted_ = y[self.order_]
        s_sorted = s[self.order_]
        n = len(s_sorted)
        # tie groups: one ROC point per distinct threshold
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) if n else np.array([], int)
        group = np.cumsum(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) - 1 if n else np.array([], int)
        has_pos = np.bincount(group, weights=self.y_sorted_, minlength=len(starts)) > 0
        # Runs of tie groups without positives leave TP constant, so they merge into one segment
        # without changing AUROC, AP or FPR-at-TPR; a resample then works on ~2 x (groups with
        # positives) segments instead of one point per distinct score.
        new_seg = has_pos | np.r_[True, has_pos[:-1]] if len(starts) else np.array([], bool)
        self.seg_starts_ = starts[new_seg]
        seg_of_group = np.cumsum(new_seg) - 1
        self.pos_positions_ = np.flatnonzero(self.y_sorted_ == 1)
        self.pos_segment_ = seg_of_group[group[self.pos_positions_]]
        self.n_segments_ = len(self.seg_starts_)

    def curve(self, weight_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative weighted (true positives, false positives) at the end of each segment.

        Segments are the distinct thresholds, with consecutive thresholds that hold no positive
        merged. ``weight_sorted`` is in the sorted order (``weights[self.order_]``).
        """
        if self.n_segments_ == 0:
            return np.zeros(0), np.zeros(0)
        w = np.asarray(weight_sorted)
        cw = np.cumsum(np.add.reduceat(w, self.seg_starts_), dtype="float64")
        tp = np.cumsum(np.bincount(self.pos_segment_, weights=w[self.pos_positions_],
                                   minlength=self.n_segments_))
        return tp, cw - tp

    def _sorted(self, weights):
        return np.asarray(weights, dtype="float64")[self.order_]

    @staticmethod
    def _auc(tp, fp):
        if len(tp) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
            return float("nan")
        dfp = np.diff(fp, prepend=0.0)
        return float(np.sum(dfp * (tp + np.concatenate(([0.0], tp[:-1])))) / 2.0 / (tp[-1] * fp[-1]))

    @staticmethod
    def _ap(tp, fp):
        if len(tp) == 0 or tp[-1] <= 0:
            return float("nan")
        denom = tp + fp
        prec = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return float(np.sum(np.diff(tp, prepend=0.0) * prec) / tp[-1])

    @staticmethod
    def _fpr_at(tp, fp, target):
        if len(tp) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
            return float("nan")
        k = np.searchsorted(tp / tp[-1], target - 1e-12, side="left")
        return float(fp[min(k, len(fp) - 1)] / fp[-1])

    def roc_auc(self, weights) -> float:
        """AUROC under per-screen ``weights`` (original order)."""
        return self._auc(*self.curve(self._sorted(weights)))

    def average_precision(self, weights) -> float:
        """Average precision under per-screen ``weights`` (original order)."""
        return self._ap(*self.curve(self._sorted(weights)))

    def fpr_at_tpr(self, weights, tpr: float = 0.8) -> float:
        """FPR at the first ROC point with TPR >= ``tpr``."""
        return self._fpr_at(*self.curve(self._sorted(weights)), tpr)

    def all_rank_metrics(self, weight_sorted: np.ndarray, tpr: float = 0.8) -> tuple[float, float, float]:
        """(AUROC, AUPRC, FPR at ``tpr``) from one cumulative sum; weights in sorted order."""
        tp, fp = self.curve(weight_sorted)
        return self._auc(tp, fp), self._ap(tp, fp), self._fpr_at(tp, fp, tpr)

    def rank_metrics_and_curves(self, weight_sorted: np.ndarray, grid: np.ndarray, tpr: float = 0.8):
        """:meth:`all_rank_metrics`, plus the ROC and PR curves on ``grid``, from one cumulative sum.

        Returns ``((auroc, auprc, fpr_at_tpr), tpr_at_fpr, precision_at_recall)``: the ROC
        (piecewise linear through every threshold, as its trapezoidal area assumes) at
        FPR = ``grid``, and the precision at the highest threshold whose recall reaches each
        ``grid`` value (the step curve of average precision). NaN without both classes.

        Examples
        --------
        >>> import numpy as np
        >>> ss = SortedScores(np.array([0, 1, 0, 1]), np.array([0.2, 0.9, 0.5, 0.5]))
        >>> _, roc, pr = ss.rank_metrics_and_curves(np.ones(4), np.array([0.0, 0.25, 0.5, 1.0]))
        >>> roc.tolist(), pr.tolist()
        ([0.5, 0.75, 1.0, 1.0], [1.0, 1.0, 1.0, 0.6666666666666666])
        """
        tp, fp = self.curve(weight_sorted)
        return (self._auc(tp, fp), self._ap(tp, fp), self._fpr_at(tp, fp, tpr)), \
            self._roc_at(tp, fp, grid), self._pr_at(tp, fp, grid)

    @staticmethod
    def _roc_at(tp, fp, grid):
        grid = np.asarray(grid, dtype="float64")
        if len(tp) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
            return np.full(len(grid), np.nan)
        fpr = np.concatenate(([0.0], fp / fp[-1]))
        tpr = np.concatenate(([0.0], tp / tp[-1]))
        # the last point at or left of g (the highest TPR at that FPR), then linear to the next one
        k = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)
        nxt = np.minimum(k + 1, len(fpr) - 1)
        span = fpr[nxt] - fpr[k]
        frac = np.divide(grid - fpr[k], span, out=np.zeros(len(grid)), where=span > 0)
        return tpr[k] + np.clip(frac, 0.0, 1.0) * (tpr[nxt] - tpr[k])

    @staticmethod
    def _pr_at(tp, fp, grid):
        grid = np.asarray(grid, dtype="float64")
        if len(tp) == 0 or tp[-1] <= 0:
            return np.full(len(grid), np.nan)
        recall = tp / tp[-1]
        denom = tp + fp
        precision = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
        k = np.minimum(np.searchsorted(recall, grid - 1e-12, side="left"), len(recall) - 1)
        return precision[k]


def roc_auc(y_true, y_score, sample_weight=None) -> float:
    """Area under the ROC curve (NaN when one class is absent)."""
    y, s, w = check_binary_scores(y_true, y_score, sample_weight)
    return SortedScores(y, s).roc_auc(w)


def average_precision(y_true, y_score, sample_weight=None) -> float:
    """Average precision (area under the precision-recall step curve; NaN without positives)."""
    y, s, w = check_binary_scores(y_true, y_score, sample_weight)
    return SortedScores(y, s).average_precision(w)


def fpr_at_tpr(y_true, y_score, tpr: float = 0.8, sample_weight=None) -> float:
    """False positive rate at the highest threshold whose true positive rate reaches ``tpr``.

    Examples
    --------
    >>> fpr_at_tpr([0, 0, 1, 1, 0], [0.1, 0.6, 0.7, 0.5, 0.2], tpr=0.8)
    0.3333333333333333
    """
    y, s, w = check_binary_scores(y_true, y_score, sample_weight)
    return SortedScores(y, s).fpr_at_tpr(w, tpr)


def threshold_metrics(y_true, y_score, threshold: float, sample_weight=None) -> dict:
    """Sensitivity, specificity and precision of ``y_score >= threshold``.

    Examples
    --------
    >>> threshold_metrics([0, 1, 1, 0], [0.9, 0.8, 0.2, 0.1], 0.5)
    {'sensitivity': 0.5, 'specificity': 0.5, 'precision': 0.5}
    """
    y, s, w = check_binary_scores(y_true, y_score, sample_weight)
    alarm = s >= threshold
    tp = float(np.sum(w * y * alarm))
    fp = float(np.sum(w * (1 - y) * alarm))
    pos = float(np.sum(w * y))
    neg = float(np.sum(w * (1 - y)))
    nan = float("nan")
    return {"sensitivity": tp / pos if pos else nan, "specificity": (neg - fp) / neg if neg else nan,
            "precision": tp / (tp + fp) if tp + fp else nan}
