"""DeLong's test for two correlated AUROCs, plain and clustered (Obuchowski 1997).

The AUROC is the Mann-Whitney statistic ``theta = mean over (positive i, negative j) of
psi(X_i, Y_j)`` with ``psi = 1`` when ``X_i > Y_j``, ``1/2`` on a tie, ``0`` otherwise. DeLong,
DeLong & Clarke-Pearson (Biometrics 1988) estimate the covariance of several such statistics on
the same screens from the *placement values* ``V10_i = mean_j psi(X_i, Y_j)`` (per positive) and
``V01_j = mean_i psi(X_i, Y_j)`` (per negative):
``S10 = cov(V10) / m + cov(V01) / n`` (sample covariances, ddof 1). Placement values come from
midranks (Sun & Xu, IEEE SPL 2014), so the cost is a sort, not ``m x n`` comparisons.

Screens are not independent: one stay contributes many. With ``groups`` the variance is
Obuchowski's clustered estimator (Biometrics 1997): placement values are summed per cluster
(``V10_k``, ``V01_k``, with ``m_k`` positives and ``n_k`` negatives in cluster k), and

``S10 = I10 / ((I10 - 1) m) sum_k (V10_k - m_k theta)(V10_k - m_k theta)'``,
``S01 = I01 / ((I01 - 1) n) sum_k (V01_k - n_k theta)(...)'``,
``S11 = I / (I - 1) sum_k (V10_k - m_k theta)(V01_k - n_k theta)'``,
``var = S10 / m + S01 / n + (S11 + S11') / (m n)``,

where ``I10`` / ``I01`` count clusters with at least one positive / negative and ``I`` all
clusters. With one screen per cluster it is DeLong's estimator exactly.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
>>> a = np.array([0.1, 0.3, 0.2, 0.8, 0.7, 0.4, 0.5, 0.9])
>>> b = np.array([0.2, 0.1, 0.4, 0.6, 0.3, 0.5, 0.7, 0.8])
>>> res = delong_test(y, a, b)
>>> round(res.auc_a, 4), round(res.auc_b, 4)
(0.9375, 0.75)
>>> bool(0 < res.p_value < 1)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .metrics import check_binary_scores

__all__ = ["DeLongResult", "placement_values", "auc_covariance", "clustered_covariance", "iid_covariance",
           "delong_test", "delong_result"]


@dataclass(frozen=True)
class DeLongResult:
    """Two AUROCs on the same screens, their difference, its standard error and the test.

    ``p_value`` is two-sided, from the normal distribution of ``z = difference / se``.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    clustered: bool
    n_positive: int
    n_negative: int
    n_clusters: int


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def placement_values(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs and placement values of several score columns on the same screens.

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    scores : array, shape (k, n)

    Returns
    -------
    theta : (k,) AUROCs
    v10 : (k, m) per positive: fraction of negatives it outranks (ties count 1/2)
    v01 : (k, n_neg) per negative: fraction of positives that outrank it

    Examples
    --------
    >>> theta, v10, v01 = placement_values([1, 0, 1, 0], [[0.9, 0.1, 0.4, 0.4]])
    >>> theta.tolist(), v10.tolist(), v01.tolist()
    ([0.875], [[1.0, 0.75]], [[1.0, 0.75]])
    """
    y = np.asarray(y)
    s = np.atleast_2d(np.asarray(scores, dtype="float64"))
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong needs at least one positive and one negative screen")
    theta = np.empty(len(s))
    v10, v01 = np.empty((len(s), m)), np.empty((len(s), n))
    for r, row in enumerate(s):
        all_rank = _midrank(row)
        # rank among all minus rank among its own class = how many of the other class lie below
        v10[r] = (all_rank[pos] - _midrank(row[pos])) / n
        v01[r] = 1.0 - (all_rank[neg] - _midrank(row[neg])) / m
        theta[r] = v10[r].mean()
    return theta, v10, v01


def auc_covariance(y, scores, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and their covariance matrix: DeLong's, or Obuchowski's clustered one with ``groups``.

    Examples
    --------
    >>> theta, cov = auc_covariance([1, 0, 1, 0, 1], [[0.9, 0.1, 0.4, 0.5, 0.7]])
    >>> round(float(theta[0]), 4), round(float(cov[0, 0]), 4)
    (0.8333, 0.0556)
    """
    y = np.asarray(y)
    theta, v10, v01 = placement_values(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    if groups is None:
        s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((len(theta),) * 2)
        s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((len(theta),) * 2)
        return theta, s10 / m + s01 / n
    _, code = np.unique(np.asarray(groups), return_inverse=True)
    n_clusters = int(code.max()) + 1
    pos, neg = y == 1, y == 0
    # per-cluster sums of placement values minus their expectation under theta
    m_k = np.bincount(code[pos], minlength=n_clusters)
    n_k = np.bincount(code[neg], minlength=n_clusters)
    d10 = np.stack([np.bincount(code[pos], weights=v, minlength=n_clusters) for v in v10]) - np.outer(theta, m_k)
    d01 = np.stack([np.bincount(code[neg], weights=v, minlength=n_clusters) for v in v01]) - np.outer(theta, n_k)
    i10, i01, i_all = int((m_k > 0).sum()), int((n_k > 0).sum()), n_clusters
    return theta, clustered_covariance(d10 @ d10.T, d01 @ d01.T, d10 @ d01.T, m=m, n=n, i10=i10, i01=i01,
                                       i_all=i_all)


def clustered_covariance(sum10, sum01, sum11, *, m: int, n: int, i10: int, i01: int, i_all: int) -> np.ndarray:
    """Obuchowski's covariance from its sums over clusters: ``sum10 = sum_k d10_k d10_k'``,
    ``sum01 = sum_k d01_k d01_k'``, ``sum11 = sum_k d10_k d01_k'`` (module docstring).

    The sums add up over disjoint sets of clusters, so a partitioned run (a part holds whole stays)
    sums them per part (:mod:`evaluation.count_sections`).
    """
    k = len(sum10)
    s10 = sum10 * (i10 / ((i10 - 1) * m)) if i10 > 1 else np.zeros((k, k))
    s01 = sum01 * (i01 / ((i01 - 1) * n)) if i01 > 1 else np.zeros((k, k))
    s11 = sum11 * (i_all / (i_all - 1)) if i_all > 1 else np.zeros((k, k))
    return s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def iid_covariance(sum10, sum01, *, m: int, n: int) -> np.ndarray:
    """DeLong's covariance from ``sum10 = sum_i (V10_i - theta)(V10_i - theta)'`` over positives and
    ``sum01`` likewise over negatives (``np.cov`` with ddof 1: the mean of the placements is theta)."""
    k = len(sum10)
    s10 = sum10 / (m - 1) if m > 1 else np.zeros((k, k))
    s01 = sum01 / (n - 1) if n > 1 else np.zeros((k, k))
    return s10 / m + s01 / n


def delong_test(y_true, score_a, score_b, *, groups=None, ci: float = 0.95) -> DeLongResult:
    """DeLong's test of AUROC(a) = AUROC(b) on the same screens (paired).

    Parameters
    ----------
    y_true : array of 0/1
    score_a, score_b : arrays of scores, aligned with ``y_true``
    groups : array, optional
        Cluster (stay) of each screen: Obuchowski's clustered variance. Without it the screens
        are treated as independent, which understates the variance when stays contribute many
        screens.
    ci : float, default 0.95
        Level of the normal-theory interval of the difference.

    Returns
    -------
    DeLongResult
    """
    y, a, _ = check_binary_scores(y_true, score_a, score_name="score_a")
    _, b, _ = check_binary_scores(y_true, score_b, score_name="score_b")
    theta, cov = auc_covariance(y, np.vstack([a, b]), groups)
    n_clusters = int(len(np.unique(groups))) if groups is not None else int(len(y))
    return delong_result(theta, cov, clustered=groups is not None, n_positive=int(y.sum()),
                         n_negative=int(len(y) - y.sum()), n_clusters=n_clusters, ci=ci)


def delong_result(theta, cov, *, clustered: bool, n_positive: int, n_negative: int, n_clusters: int,
                  ci: float = 0.95) -> DeLongResult:
    """The test of ``theta[0] = theta[1]`` from the two AUROCs and their covariance."""
    diff = float(theta[0] - theta[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:  # identical rankings: no evidence of a difference
        z, p = 0.0 if diff == 0 else float(np.sign(diff) * np.inf), 1.0 if diff == 0 else 0.0
    half = float(stats.norm.ppf(0.5 + ci / 2)) * se
    return DeLongResult(auc_a=float(theta[0]), auc_b=float(theta[1]), difference=diff, se=se, z=float(z),
                        p_value=p, ci_low=diff - half, ci_high=diff + half, clustered=clustered,
                        n_positive=int(n_positive), n_negative=int(n_negative), n_clusters=int(n_clusters))
