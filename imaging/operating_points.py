"""Class weights for training, and the decision threshold chosen on validation.

Class-weighted binary cross-entropy with ``pos_weight = w`` (:func:`class_pos_weight`) trains the
network towards ``p_w = w q / (w q + 1 - q)``, where ``q`` is the true probability of the
finding: the prior odds are multiplied by ``w`` and every logit is shifted by ``log w``. The
trainer undoes that with :func:`evaluation.calibration.correct_for_class_weight` (folded into the
head's bias) *before* temperature scaling, which can rescale logits but not move them.

:func:`threshold_for_sensitivity` picks the operating point on validation: the highest threshold
whose sensitivity reaches the target, so that specificity is as high as that sensitivity allows.

Examples
--------
>>> import numpy as np
>>> class_pos_weight(np.array([[1], [1], [1], [0]])).round(4).tolist()
[0.3333]
>>> threshold_for_sensitivity([0.1, 0.4, 0.35, 0.8, 0.9], [0, 0, 1, 1, 1], target=0.6)
0.8
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_pos_weight", "threshold_for_sensitivity"]


def class_pos_weight(labels) -> np.ndarray:
    """``n_negative / n_positive`` per column of 0/1 ``labels`` ``(N, F)`` (1 where a column has no positive)."""
    y = np.asarray(labels, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    n_pos = y.sum(axis=0)
    return np.where(n_pos > 0, (len(y) - n_pos) / np.maximum(n_pos, 1), 1.0)


def threshold_for_sensitivity(probs, labels, target: float = 0.95) -> float:
    """Highest threshold ``t`` with sensitivity ``mean(p[y == 1] >= t) >= target`` (a predicted positive is ``p >= t``).

    Raises ``ValueError`` without positives or for a target outside (0, 1].
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1]; got {target}")
    pos = np.sort(p[y])[::-1]
    if not len(pos):
        raise ValueError("no positives: a sensitivity target cannot be met")
    # the k-th largest positive score keeps k positives at or above it
    k = int(np.ceil(target * len(pos) - 1e-12))
    return float(pos[max(k, 1) - 1])
