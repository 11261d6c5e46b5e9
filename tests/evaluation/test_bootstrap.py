"""Cluster bootstrap: golden check against explicitly resampled cohorts, pairing, seeding, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from evaluation.bootstrap import bootstrap_metrics, cluster_counts, percentile_ci
from evaluation.calibration import expected_calibration_error
from evaluation.metrics import screen_labels
from evaluation.protocol import prepare_screens, run_protocol

T0 = pd.Timestamp("2022-05-01")


def _cohort(n_stays=30, seed=0):
    rng = np.random.default_rng(seed)
    rows, onsets = [], []
    for s in range(n_stays):
        n = int(rng.integers(3, 40))
        septic = rng.random() < 0.3
        onset = int(rng.integers(2, n + 5)) if septic else None
        onsets.append(T0 + pd.Timedelta(hours=onset) if septic else pd.NaT)
        for h in range(1, n + 1):
            near = septic and 0 < onset - h <= 48
            rows.append((s, T0 + pd.Timedelta(hours=h), rng.random() < 0.8,
                         float(np.clip(rng.random() * 0.7 + 0.3 * near, 0, 1)),
                         float(rng.integers(0, 9) + 3 * near)))
    df = pd.DataFrame(rows, columns=["stay_id", "screen_time", "new_data", "cpn", "news2"])
    screens = df[["stay_id", "screen_time", "new_data"]]
    pred = pd.concat([
        df[["stay_id", "screen_time"]].assign(model=m, risk=df[m], fold=np.nan, split="test")
        for m in ("cpn", "news2")], ignore_index=True)
    stays = pd.DataFrame({"stay_id": np.arange(n_stays), "onset_time": onsets})
    return pred, screens, stays


THRESHOLDS = {"cpn": {"op": 0.6}, "news2": {"op": 7.0}}


def _expand(pred, screens, stays, counts):
    """The resampled cohort written out: stay s appears counts[s] times under new ids."""
    P, S, ST = [], [], []
    new_id = 0
    for s, k in enumerate(counts):
        for _ in range(k):
            P.append(pred[pred.stay_id == s].assign(stay_id=new_id))
            S.append(screens[screens.stay_id == s].assign(stay_id=new_id))
            ST.append(stays[stays.stay_id == s].assign(stay_id=new_id))
            new_id += 1
    return (pd.concat(P, ignore_index=True), pd.concat(S, ignore_index=True),
            pd.concat(ST, ignore_index=True))


def test_resamples_match_explicitly_resampled_cohorts():
    pred, screens, stays = _cohort()
    B = 6
    res = bootstrap_metrics(pred, screens, stays, thresholds=THRESHOLDS, n_resamples=B, seed=11)
    counts = cluster_counts(len(stays), B, seed=11)
    smp = res.samples.set_index(["model", "operating_point", "metric", "resample"])["value"]
    for b in range(B):
        P, S, ST = _expand(pred, screens, stays, counts[b])
        for m in ("cpn", "news2"):
            pr = run_protocol(P, ST, S, threshold=THRESHOLDS[m]["op"], model=m)
            sm = pr.summary
            assert smp[(m, "op", "alarms_per_admission", b)] == pytest.approx(sm["alarms_per_admission"])
            assert smp[(m, "op", "sensitivity", b)] == pytest.approx(sm["sensitivity"], nan_ok=True)
            assert smp[(m, "", "screens_per_admission", b)] == pytest.approx(sm["screens_per_admission"])
            # screen level, from the eligible screens of the expanded cohort
            fr = prepare_screens(P, ST, S, model=m).frame
            y = screen_labels(fr["onset_in_h"].to_numpy())
            assert smp[(m, "", "auroc", b)] == pytest.approx(roc_auc_score(y, fr["risk"]), abs=1e-12)
            assert smp[(m, "", "auprc", b)] == pytest.approx(average_precision_score(y, fr["risk"]), abs=1e-12)
            if m == "cpn":
                assert smp[(m, "", "brier", b)] == pytest.approx(brier_score_loss(y, fr["risk"]))
                assert smp[(m, "", "ece", b)] == pytest.approx(expected_calibration_error(y, fr["risk"]))


def test_estimates_equal_unresampled_metrics_and_cis_bracket_them():
    pred, screens, stays = _cohort(seed=2)
    res = bootstrap_metrics(pred, screens, stays, thresholds=THRESHOLDS, n_resamples=200, seed=0)
    t = res.table.set_index(["model", "operating_point", "metric"])
    for m in ("cpn", "news2"):
        sm = run_protocol(pred, stays, screens, threshold=THRESHOLDS[m]["op"], model=m).summary
        for k in ("alarms_per_admission", "sensitivity", "false_alarms_per_true_alarm", "alarm_precision"):
            assert t.loc[(m, "op", k), "estimate"] == pytest.approx(sm[k])
    assert "brier" not in t.loc["news2"].index.get_level_values("metric")   # NEWS2 is not a probability
    auc = t.loc[("cpn", "", "auroc")]
    assert auc.ci_low < auc.estimate < auc.ci_high and auc.ci_high - auc.ci_low < 0.3


def test_paired_differences():
    pred, screens, stays = _cohort(seed=3)
    dup = pd.concat([pred, pred[pred.model == "news2"].assign(model="news2_copy")], ignore_index=True)
    th = dict(THRESHOLDS, news2_copy={"op": 7.0})
    res = bootstrap_metrics(dup, screens, stays, thresholds=th, n_resamples=100, seed=5)
    d = res.differences.set_index(["model", "operating_point", "metric"])
    same = d.loc["news2_copy"]
    assert (same["difference"] == 0).all() and (same["ci_low"] == 0).all() and (same["ci_high"] == 0).all()
    # model - reference per resample, on the same resamples
    s = res.samples.set_index(["model", "operating_point", "metric", "resample"])["value"].sort_index()
    diff = s.loc[("cpn", "", "auroc")] - s.loc[("news2", "", "auroc")]
    lo, hi = percentile_ci(diff.to_numpy())
    assert d.loc[("cpn", "", "auroc"), "ci_low"] == pytest.approx(lo)
    assert d.loc[("cpn", "", "auroc"), "ci_high"] == pytest.approx(hi)
    assert 0 <= d.loc[("cpn", "", "auroc"), "p_value"] <= 1


def test_seeded_and_local_rng():
    pred, screens, stays = _cohort(seed=4)
    np.random.seed(123)
    a = bootstrap_metrics(pred, screens, stays, n_resamples=30, seed=9).samples
    np.random.seed(456)   # global state must not matter
    b = bootstrap_metrics(pred, screens, stays, n_resamples=30, seed=9).samples
    c = bootstrap_metrics(pred, screens, stays, n_resamples=30, seed=10).samples
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["value"].fillna(-1), c["value"].fillna(-1))
    counts = cluster_counts(50, 250, seed=0)
    assert (counts.sum(axis=1) == 50).all() and abs(counts.mean() - 1) < 0.05


def test_errors():
    pred, screens, stays = _cohort(seed=5)
    with pytest.raises(ValueError, match="outside the score range"):
        bootstrap_metrics(pred, screens, stays, thresholds={"cpn": {"op": 2.0}}, n_resamples=5)
    res = bootstrap_metrics(pred, screens, stays, thresholds={"cpn": {"op": 2.0}}, n_resamples=5,
                            check_range=False)
    assert res.table.query("metric == 'alarms_per_admission'")["estimate"].tolist() == [0.0]
    with pytest.raises(ValueError, match="not in predictions"):
        bootstrap_metrics(pred, screens, stays, models=["gbdt"], n_resamples=5)
    with pytest.raises(ValueError, match="gbdt"):
        bootstrap_metrics(pred, screens, stays, thresholds={"gbdt": {"op": 0.5}}, n_resamples=5)
    with pytest.raises(ValueError, match="duplicate"):
        bootstrap_metrics(pd.concat([pred, pred.iloc[:2]]), screens, stays, n_resamples=5)
    with pytest.raises(ValueError, match="not in stays"):
        bootstrap_metrics(pred, screens, stays.iloc[1:], n_resamples=5)
