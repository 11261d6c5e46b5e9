"""Paired comparisons of every pair of models, against a slow loop over explicitly resampled cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.bootstrap import bootstrap_metrics, cluster_counts
from evaluation.delong import delong_test
from evaluation.metrics import screen_labels
from evaluation.paired import OPERATING_POINT_METRICS, format_p_value, paired_comparisons, paired_differences
from evaluation.protocol import prepare_screens, run_protocol
from tests.evaluation.test_bootstrap import _cohort, _expand

THRESHOLDS = {"cpn": {"news2>=5": 0.6, "sens85": 0.45}, "gbdt": {"news2>=5": 0.55, "sens85": 0.4},
              "news2": {"news2>=5": 5.0, "sens85": 3.0}}


def _three_models(seed=0, n_stays=30):
    pred, screens, stays = _cohort(n_stays=n_stays, seed=seed)
    cpn = pred[pred.model == "cpn"]
    rng = np.random.default_rng(seed + 100)
    gbdt = cpn.assign(model="gbdt", risk=np.clip(0.7 * cpn["risk"] + 0.3 * rng.random(len(cpn)), 0, 1))
    return pd.concat([pred, gbdt], ignore_index=True), screens, stays


def _slow_metrics(P, S, ST, model):
    """Every compared metric of one model on one (expanded) cohort, computed from scratch."""
    fr = prepare_screens(P, ST, S, model=model).frame
    y = screen_labels(fr["onset_in_h"].to_numpy())
    out = {("", "auroc"): roc_auc_score(y, fr["risk"]), ("", "auprc"): average_precision_score(y, fr["risk"])}
    for op, t in THRESHOLDS[model].items():
        sm = run_protocol(P, ST, S, threshold=t, model=model).summary
        out.update({(op, k): sm[k] for k in OPERATING_POINT_METRICS})
    return out


def test_paired_bootstrap_matches_a_slow_loop():
    pred, screens, stays = _three_models()
    B, seed = 8, 4
    boot = bootstrap_metrics(pred, screens, stays, thresholds=THRESHOLDS, n_resamples=B, seed=seed)
    fast = paired_differences(boot).set_index(["model_a", "model_b", "operating_point", "metric"])
    counts = cluster_counts(len(stays), B, seed=seed)
    full = {m: _slow_metrics(pred, screens, stays, m) for m in THRESHOLDS}
    per_resample = []
    for b in range(B):
        P, S, ST = _expand(pred, screens, stays, counts[b])
        per_resample.append({m: _slow_metrics(P, S, ST, m) for m in THRESHOLDS})
    pairs = [("cpn", "gbdt"), ("cpn", "news2"), ("gbdt", "news2")]
    assert sorted(set(fast.index.droplevel([2, 3]))) == pairs
    n_checked = 0
    for a, b in pairs:
        for key in full[a]:
            row = fast.loc[(a, b, *key)]
            assert row["difference"] == pytest.approx(full[a][key] - full[b][key], abs=1e-12, nan_ok=True)
            d = np.array([r[a][key] - r[b][key] for r in per_resample], dtype=float)
            d = d[np.isfinite(d)]
            if not len(d):
                continue
            lo, hi = np.quantile(d, [0.025, 0.975])
            assert row["ci_low"] == pytest.approx(lo, abs=1e-12)
            assert row["ci_high"] == pytest.approx(hi, abs=1e-12)
            p = min(1.0, 2 * min((d <= 0).sum(), (d >= 0).sum()) / len(d))
            assert row["p_value"] == pytest.approx(p if p > 0 else 2 / B, abs=1e-12)
            n_checked += 1
    assert n_checked == 3 * 8


def test_p_values_are_never_zero():
    pred, screens, stays = _cohort(seed=6)
    fr = prepare_screens(pred, stays, screens, model="news2").frame
    # an oracle that ranks by label: no resample can make it lose to NEWS2
    oracle = fr.assign(model="oracle", risk=screen_labels(fr["onset_in_h"].to_numpy()) + 0.01 * fr["risk"],
                       fold=0, split="test").drop(columns="onset_in_h")
    both = pd.concat([pred[pred.model == "news2"], oracle], ignore_index=True)
    boot = bootstrap_metrics(both, screens, stays, n_resamples=40, seed=1, reference=None)
    t = paired_differences(boot, models=["oracle", "news2"]).set_index("metric")
    assert t.loc["auroc", "p_text"] == "< 0.05" and t.loc["auroc", "p_value"] == pytest.approx(2 / 40)
    assert (t["p_value"] > 0).all()
    assert format_p_value(float("nan")) == "n/a" and format_p_value(0.0) == "< 1e-300"


def test_delong_joined_to_the_auroc_rows():
    pred, screens, stays = _three_models(seed=2)
    boot = bootstrap_metrics(pred, screens, stays, thresholds=THRESHOLDS, n_resamples=20, seed=0)
    t = paired_comparisons(boot, pred, screens, stays)
    auc = t[t.metric == "auroc"].set_index(["model_a", "model_b"])
    assert auc["delong_p"].notna().all() and t.loc[t.metric != "auroc", "delong_p"].isna().all()
    fa = prepare_screens(pred, stays, screens, model="cpn").frame
    fb = prepare_screens(pred, stays, screens, model="gbdt").frame
    y = screen_labels(fa["onset_in_h"].to_numpy())
    ref = delong_test(y, fa["risk"], fb["risk"], groups=fa["stay_id"])
    row = auc.loc[("cpn", "gbdt")]
    assert row["delong_p"] == pytest.approx(ref.p_value) and row["delong_z"] == pytest.approx(ref.z)
    assert row["delong_difference"] == pytest.approx(row["difference"], abs=1e-12)
    assert row["delong_p_iid"] == pytest.approx(delong_test(y, fa["risk"], fb["risk"]).p_value)
