"""DeLong's test against a brute-force Mann-Whitney formulation (every positive-negative pair)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from evaluation.delong import auc_covariance, delong_test, placement_values


def _psi(x_pos, y_neg):
    """psi(X_i, Y_j) for every pair: 1 above, 1/2 tie, 0 below (m x n)."""
    d = x_pos[:, None] - y_neg[None, :]
    return (d > 0) + 0.5 * (d == 0)


def _brute(y, scores, groups=None):
    """AUROCs and covariance written out from the pair matrix, loop by loop (DeLong 1988; Obuchowski 1997)."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    k = len(scores)
    psis = [_psi(s[pos], s[neg]) for s in scores]
    theta = np.array([p.mean() for p in psis])
    v10 = np.array([p.mean(axis=1) for p in psis])  # per positive
    v01 = np.array([p.mean(axis=0) for p in psis])  # per negative
    cov = np.zeros((k, k))
    if groups is None:
        for r in range(k):
            for s in range(k):
                s10 = sum((v10[r, i] - theta[r]) * (v10[s, i] - theta[s]) for i in range(m)) / (m - 1)
                s01 = sum((v01[r, j] - theta[r]) * (v01[s, j] - theta[s]) for j in range(n)) / (n - 1)
                cov[r, s] = s10 / m + s01 / n
        return theta, cov
    gp, gn = groups[pos], groups[neg]
    clusters = np.unique(groups)
    i10 = len(np.unique(gp))
    i01 = len(np.unique(gn))
    i_all = len(clusters)
    for r in range(k):
        for s in range(k):
            s10 = s01 = s11 = s11t = 0.0
            for c in clusters:
                a_r = v10[r, gp == c].sum() - (gp == c).sum() * theta[r]
                a_s = v10[s, gp == c].sum() - (gp == c).sum() * theta[s]
                b_r = v01[r, gn == c].sum() - (gn == c).sum() * theta[r]
                b_s = v01[s, gn == c].sum() - (gn == c).sum() * theta[s]
                s10 += a_r * a_s
                s01 += b_r * b_s
                s11 += a_r * b_s
                s11t += a_s * b_r
            s10 *= i10 / ((i10 - 1) * m)
            s01 *= i01 / ((i01 - 1) * n)
            s11 *= i_all / (i_all - 1)
            s11t *= i_all / (i_all - 1)
            cov[r, s] = s10 / m + s01 / n + (s11 + s11t) / (m * n)
    return theta, cov


def _data(n=60, seed=0, ties=False, n_clusters=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]
    a = 0.8 * y + rng.normal(0, 1, n)
    b = 0.4 * y + 0.5 * a + rng.normal(0, 1, n)
    if ties:  # integer scores, like NEWS2
        a, b = np.round(a * 2), np.round(b)
    groups = rng.integers(0, n_clusters, n) if n_clusters else None
    return y, a, b, groups


@pytest.mark.parametrize("ties", [False, True])
def test_placement_values_and_auc_match_the_pair_matrix(ties):
    y, a, b, _ = _data(ties=ties)
    theta, v10, v01 = placement_values(y, np.vstack([a, b]))
    for r, s in enumerate((a, b)):
        psi = _psi(s[y == 1], s[y == 0])
        np.testing.assert_allclose(v10[r], psi.mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(v01[r], psi.mean(axis=0), atol=1e-12)
        assert theta[r] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_delong_covariance_matches_brute_force(ties):
    y, a, b, _ = _data(ties=ties, seed=3)
    theta, cov = auc_covariance(y, np.vstack([a, b]))
    t_ref, c_ref = _brute(y, [a, b])
    np.testing.assert_allclose(theta, t_ref, atol=1e-12)
    np.testing.assert_allclose(cov, c_ref, atol=1e-12)
    res = delong_test(y, a, b)
    se = np.sqrt(c_ref[0, 0] + c_ref[1, 1] - 2 * c_ref[0, 1])
    z = (t_ref[0] - t_ref[1]) / se
    assert res.z == pytest.approx(z, abs=1e-10)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-12)
    assert res.ci_low < res.difference < res.ci_high and not res.clustered


@pytest.mark.parametrize("ties", [False, True])
def test_clustered_covariance_matches_brute_force(ties):
    y, a, b, groups = _data(n=80, seed=5, ties=ties, n_clusters=12)
    theta, cov = auc_covariance(y, np.vstack([a, b]), groups)
    t_ref, c_ref = _brute(y, [a, b], groups)
    np.testing.assert_allclose(theta, t_ref, atol=1e-12)
    np.testing.assert_allclose(cov, c_ref, atol=1e-12)
    res = delong_test(y, a, b, groups=groups)
    assert res.clustered and res.n_clusters == 12


def test_one_screen_per_cluster_is_plain_delong():
    y, a, b, _ = _data(seed=8)
    _, plain = auc_covariance(y, np.vstack([a, b]))
    _, single = auc_covariance(y, np.vstack([a, b]), np.arange(len(y)))
    np.testing.assert_allclose(single, plain, atol=1e-14)


def test_clustering_widens_the_variance_of_repeated_screens():
    """A stay screened ten times with nearly the same score is not ten independent screens."""
    rng = np.random.default_rng(2)
    stays = 40
    y_stay = (np.arange(stays) % 3 == 0).astype(int)
    s_stay = y_stay * 0.7 + rng.normal(0, 1, stays)
    g = np.repeat(np.arange(stays), 10)
    y = y_stay[g]
    a = s_stay[g] + rng.normal(0, 0.05, len(g))
    b = rng.normal(0, 1, len(g)) + 0.3 * y
    iid = delong_test(y, a, b)
    clustered = delong_test(y, a, b, groups=g)
    assert clustered.se > 2 * iid.se


def test_identical_scores_and_bad_input():
    y, a, _, _ = _data()
    res = delong_test(y, a, a)
    assert res.difference == 0 and res.p_value == 1.0
    with pytest.raises(ValueError, match="positive and one negative"):
        delong_test(np.zeros(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="score_b is not finite"):
        delong_test([0, 1], [0.1, 0.2], [0.1, np.nan])
