"""Count-based evaluation (evaluation/counts.py): against scikit-learn, merging parts, the Poisson bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.bootstrap import bootstrap_metrics
from evaluation.counts import (RankCounts, ScoreGrid, choose_thresholds_from_counts, detected_at, dev_candidates,
                               evaluate_run_counts, poisson_weights, split_counts)
from evaluation.operating_points import apply_thresholds, choose_thresholds
from evaluation.summary import evaluate_run

T0 = pd.Timestamp("2020-01-01")


def _scores(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.15
    s = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.5 - 2 + 1.2 * y)))
    return y, s


def test_auroc_auprc_equal_scikit_learn_on_binned_scores_and_within_the_tie_bound_on_raw_scores():
    y, s = _scores()
    grid = ScoreGrid()
    bins = grid.bins(s)
    rc = RankCounts.from_scores(y, bins, grid.n_bins)
    auroc, auprc, _ = rc.metrics()
    # a bin is one tie group: exactly scikit-learn's metrics of the scores rounded to their bin
    assert auroc == pytest.approx(roc_auc_score(y, bins), abs=1e-12)
    assert auprc == pytest.approx(average_precision_score(y, bins), abs=1e-12)
    # against the raw scores: AUROC within the bound (half the share of pos/neg pairs in one bin)
    bound = rc.auroc_tie_bound()
    assert abs(auroc - roc_auc_score(y, s)) <= bound + 1e-12
    assert bound < 1e-3  # 2^16 logit bins of width 4.9e-4: few pairs share one at this sample size
    # AUPRC has no such bound; measured here well under 1e-3
    assert abs(auprc - average_precision_score(y, s)) < 1e-3
    # the resample grid (2^12 bins) is 16 times coarser: still close
    coarse = RankCounts.from_scores(y, bins // grid.coarse, grid.n_coarse)
    assert abs(coarse.metrics()[0] - roc_auc_score(y, s)) <= coarse.auroc_tie_bound() + 1e-12


def test_integer_grid_is_exact_and_bad_scores_are_named():
    rng = np.random.default_rng(1)
    y = rng.random(3000) < 0.2
    news2 = rng.integers(0, 15, 3000) + 3 * y
    g = ScoreGrid.integers(0, 63)
    a, p, _ = RankCounts.from_scores(y, g.bins(news2), g.n_bins).metrics()
    assert a == pytest.approx(roc_auc_score(y, news2), abs=1e-12)
    assert p == pytest.approx(average_precision_score(y, news2), abs=1e-12)
    with pytest.raises(ValueError, match="row 2 is 1.5"):
        ScoreGrid().bins([0.1, 0.2, 1.5], what="cpn risk")
    with pytest.raises(ValueError, match="row 1 is 64"):
        g.bins([3, 64])


def test_histograms_of_parts_add_up_to_the_histogram_of_the_union_exactly():
    y, s = _scores(5000, seed=3)
    grid = ScoreGrid()
    bins = grid.bins(s)
    whole = RankCounts.from_scores(y, bins, grid.n_bins)
    cut = np.random.default_rng(0).integers(0, 4, len(y))
    parts = [RankCounts.from_scores(y[cut == k], bins[cut == k], grid.n_bins) for k in range(4)]
    total = parts[0] + parts[1] + parts[2] + parts[3]
    assert np.array_equal(total.pos, whole.pos) and np.array_equal(total.neg, whole.neg)
    assert total.metrics() == whole.metrics()


def test_poisson_weights_depend_on_seed_resample_and_stay_only():
    ids = np.arange(1000, 3000)
    w = poisson_weights(ids, 50, seed=7)
    assert np.array_equal(w, poisson_weights(ids, 50, seed=7))                       # deterministic
    assert not np.array_equal(w, poisson_weights(ids, 50, seed=8))                   # the seed matters
    sub = np.random.default_rng(0).permutation(ids)[:300]
    assert np.array_equal(poisson_weights(sub, 50, seed=7), w[:, np.searchsorted(ids, sub)])  # any partition
    assert np.array_equal(poisson_weights(ids, 20, seed=7), w[:20])                  # more resamples extend
    big = poisson_weights(np.arange(100_000), 2, seed=0)
    assert abs(big.mean() - 1) < 0.01 and abs(big.var() - 1) < 0.02 and abs((big == 0).mean() - np.exp(-1)) < 0.005


def _tables(n_stays=120, seed=0, stale=0.0):
    """Predictions of a model (``cpn``, probabilities) and NEWS2 (integers) on dev and test stays;
    a share ``stale`` of the screens (seeded) without new data."""
    rng = np.random.default_rng(seed)
    rows = []
    stays = []
    for sid in range(n_stays):
        septic = rng.random() < 0.25
        n = int(rng.integers(5, 30))
        onset = T0 + pd.Timedelta(hours=n - 2) if septic else pd.NaT
        stays.append((sid, onset, septic))
        h = np.arange(1, n + 1)
        near = septic & (h >= n - 10)
        for m, r in (("cpn", 1 / (1 + np.exp(-(rng.normal(size=n) - 2 + 1.5 * near)))),
                     ("news2", np.clip(rng.integers(0, 8, n) + 4 * near, 0, 20).astype(float))):
            rows.append(pd.DataFrame({"stay_id": sid, "screen_time": T0 + pd.to_timedelta(h, unit="h"), "model": m,
                                      "risk": r, "fold": 0, "split": "dev" if sid % 2 else "test"}))
    pred = pd.concat(rows, ignore_index=True)
    st = pd.DataFrame(stays, columns=["stay_id", "onset_time", "sepsis"])
    screens = pred.loc[pred["model"] == "cpn", ["stay_id", "screen_time", "split"]].reset_index(drop=True)
    screens["new_data"] = np.random.default_rng(seed + 1).random(len(screens)) >= stale
    onset = screens["stay_id"].map(st.set_index("stay_id")["onset_time"])
    screens["onset_in_h"] = (onset - screens["screen_time"]).dt.total_seconds() / 3600
    screens["label"] = ((screens["onset_in_h"] > 0) & (screens["onset_in_h"] <= 48)).astype(int)
    screens = screens[~(screens["onset_in_h"] <= 0)].reset_index(drop=True)
    pred = pred.merge(screens[["stay_id", "screen_time"]], on=["stay_id", "screen_time"])
    return pred, screens, st


@pytest.fixture(scope="module")
def tables():
    return _tables()


def test_counts_of_parts_merge_to_the_counts_of_the_union(tables):
    pred, screens, stays = tables
    one = evaluate_run_counts(pred, screens, stays, n_boot=20, seed=3, parts=1)
    four = evaluate_run_counts(pred, screens, stays, n_boot=20, seed=3, parts=4)
    pd.testing.assert_frame_equal(one.thresholds, four.thresholds)
    for name in ("summary", "bootstrap", "paired", "main_table", "timeliness", "bands"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(four, name), check_exact=False, rtol=0, atol=1e-12)
    again = evaluate_run_counts(pred, screens, stays, n_boot=20, seed=3, parts=2)
    pd.testing.assert_frame_equal(one.bootstrap, again.bootstrap, check_exact=False, rtol=0, atol=1e-12)
    other = evaluate_run_counts(pred, screens, stays, n_boot=20, seed=4, parts=1)
    assert not np.allclose(one.bootstrap["ci_low"], other.bootstrap["ci_low"], equal_nan=True)


def test_thresholds_on_counts_equal_the_exact_search_when_bins_hold_one_score(tables):
    pred, screens, stays = tables
    dev_p, dev_s = pred[pred["split"] == "dev"], screens[screens["split"] == "dev"]
    exact = choose_thresholds(dev_p, dev_s, stays)
    cand = dev_candidates(dev_p, dev_s, stays, models=["cpn", "news2"])
    counted = choose_thresholds_from_counts(
        cand, lambda asked: detected_at(dev_p, dev_s, stays, asked), models=["cpn", "news2"])
    pd.testing.assert_frame_equal(exact, counted)


def test_count_evaluation_against_the_exact_evaluation(tables):
    """Same thresholds and protocol counts; rank metrics within the bin resolution; CIs as wide."""
    pred, screens, stays = tables
    counted = evaluate_run_counts(pred, screens, stays, n_boot=400, seed=0)
    exact = evaluate_run(pred, screens, stays, n_boot=400, seed=0, subgroups=False, sensitivity=False)
    pd.testing.assert_frame_equal(exact.thresholds, counted.thresholds)
    cols = [c for c in counted.summary.columns if c != "split"]
    pd.testing.assert_frame_equal(exact.summary[cols], counted.summary[cols], check_exact=False, rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(exact.timeliness, counted.timeliness)
    key = ["model", "operating_point", "metric"]
    b = exact.bootstrap.merge(counted.bootstrap, on=key, suffixes=("_x", "_c"))
    assert len(b) == len(exact.bootstrap) == len(counted.bootstrap)
    rank = b["metric"].isin(["auroc", "auprc", "fpr_at_80_tpr"])
    assert np.allclose(b.loc[~rank, "estimate_x"], b.loc[~rank, "estimate_c"], rtol=0, atol=1e-12, equal_nan=True)
    assert np.allclose(b.loc[rank, "estimate_x"], b.loc[rank, "estimate_c"], rtol=0, atol=1e-3)
    # Poisson against multinomial resamples of 60 stays: the same CIs up to Monte Carlo noise
    auroc = b[b["metric"] == "auroc"]
    width_x, width_c = auroc["ci_high_x"] - auroc["ci_low_x"], auroc["ci_high_c"] - auroc["ci_low_c"]
    assert ((width_c / width_x) > 0.7).all() and ((width_c / width_x) < 1.4).all()
    assert ((auroc["ci_low_c"] <= auroc["estimate_c"]) & (auroc["estimate_c"] <= auroc["ci_high_c"])).all()


def test_split_counts_of_a_part_without_screens_is_none(tables):
    pred, screens, stays = tables
    assert split_counts(pred.iloc[:0], screens.iloc[:0], stays, None, n_resamples=5, seed=0, models=["cpn"]) is None
