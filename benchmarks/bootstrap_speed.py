"""Cluster-bootstrap speed: 1,000 resamples over ~800k synthetic screens.

Prints the time for the rank metrics alone (AUROC + AUPRC + FPR@80%TPR per resample), for the full
``bootstrap_metrics`` of one model with two operating points, and the ratio against scikit-learn's
``roc_auc_score`` on one resample (expanded rows), extrapolated to 1,000 resamples.

With ``--physionet PATH`` (the challenge zip or directory) it also times the full
``bootstrap_metrics`` on real NEWS2 predictions of PhysioNet 2019 (ingest and screens not timed).

Run: ``nice -n 10 .venv/bin/python benchmarks/bootstrap_speed.py [--screens 800000] [--resamples 1000]
[--physionet ../shared/data/physionet2019/training_setA.zip]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def synthetic(n_screens: int, n_stays: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    per = np.maximum(1, rng.poisson(n_screens / n_stays, n_stays))
    per = np.round(per * n_screens / per.sum()).astype(int).clip(1)
    stay = np.repeat(np.arange(n_stays), per)
    hour = np.concatenate([np.arange(1, k + 1) for k in per])
    septic = rng.random(n_stays) < 0.09
    onset_h = np.where(septic, per + 1 - rng.integers(0, 10, n_stays).clip(0, per - 1), np.nan)
    t0 = pd.Timestamp("2020-01-01")
    onset = pd.to_datetime(t0) + pd.to_timedelta(onset_h, unit="h")
    stays = pd.DataFrame({"stay_id": np.arange(n_stays), "onset_time": onset})
    soon = septic[stay] & (onset_h[stay] - hour <= 48)
    risk = 1 / (1 + np.exp(-(rng.normal(size=len(stay)) + 1.5 * soon - 2)))
    pred = pd.DataFrame({"stay_id": stay, "screen_time": t0 + pd.to_timedelta(hour, unit="h"),
                         "model": "m", "risk": risk, "fold": np.nan, "split": "test"})
    screens = pred[["stay_id", "screen_time"]].assign(new_data=True)
    return pred, screens, stays


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screens", type=int, default=800_000)
    ap.add_argument("--stays", type=int, default=20_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--physionet", default=None, help="PhysioNet 2019 zip/dir: also time NEWS2 on real screens")
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from evaluation.bootstrap import _iter_counts, bootstrap_metrics
    from evaluation.metrics import SortedScores, screen_labels
    from evaluation.protocol import prepare_screens

    pred, screens, stays = synthetic(args.screens, args.stays)
    print(f"{len(pred):,} screens, {args.stays:,} stays, {args.resamples} resamples")
    ss = prepare_screens(pred, stays, screens)
    y = screen_labels(ss.frame["onset_in_h"].to_numpy())
    s = ss.frame["risk"].to_numpy()
    idx = ss.stay_index

    t = time.perf_counter()
    sorted_scores = SortedScores(y, s)
    idx_sorted = idx[sorted_scores.order_]
    aucs = []
    for _, block in _iter_counts(len(ss.population), args.resamples, 0):
        for c in block:
            aucs.append(sorted_scores.all_rank_metrics(c[idx_sorted])[0])
    rank_s = time.perf_counter() - t
    print(f"rank metrics (AUROC+AUPRC+FPR@80) x {args.resamples}: {rank_s:.1f} s "
          f"({1000 * rank_s / args.resamples:.1f} ms per resample); AUROC CI "
          f"[{np.quantile(aucs, 0.025):.4f}, {np.quantile(aucs, 0.975):.4f}]")

    # scikit-learn on one resample: expand the resampled stays into rows
    counts = next(_iter_counts(len(ss.population), 1, 1))[1][0]
    w = counts[idx]
    t = time.perf_counter()
    rep = np.repeat(np.arange(len(y)), w)
    sk = roc_auc_score(y[rep], s[rep])
    sk_s = time.perf_counter() - t
    ours = SortedScores(y, s).roc_auc(w.astype(float))
    print(f"sklearn roc_auc_score, one resample: {sk_s * 1000:.0f} ms (x{args.resamples} = "
          f"{sk_s * args.resamples:.0f} s); ours per resample {1000 * rank_s / args.resamples:.1f} ms "
          f"-> ratio {sk_s / (rank_s / args.resamples):.1f}x; |diff| = {abs(sk - ours):.2e}")

    t = time.perf_counter()
    res = bootstrap_metrics(pred, screens, stays, thresholds={"m": {"p0.2": 0.2, "p0.4": 0.4}},
                            n_resamples=args.resamples, seed=0, reference=None)
    full_s = time.perf_counter() - t
    auc = res.table.query("metric == 'auroc'").iloc[0]
    print(f"bootstrap_metrics (1 model, 2 operating points, {len(res.table)} metrics) x "
          f"{args.resamples}: {full_s:.1f} s; AUROC {auc.estimate:.4f} [{auc.ci_low:.4f}, {auc.ci_high:.4f}]")

    if args.physionet:
        from ehr.screens import build_screens
        from ehr.sources.physionet import read_physionet
        from evaluation.news2 import news2_predictions
        from evaluation.operating_points import choose_thresholds

        cohort = read_physionet(args.physionet)

        events, stays = cohort.events, cohort.stays
        screens = build_screens(events, stays)
        pred, n_unscored = news2_predictions(events, stays, screens)
        t = time.perf_counter()
        th = choose_thresholds(pred, screens, stays, models=["news2"])
        choose_s = time.perf_counter() - t
        t = time.perf_counter()
        res = bootstrap_metrics(pred, screens, stays, thresholds=th, n_resamples=args.resamples, seed=0)
        real_s = time.perf_counter() - t
        auc = res.table.query("metric == 'auroc'").iloc[0]
        print(f"PhysioNet: {len(screens):,} screens, {len(pred):,} NEWS2-scored ({n_unscored:,} without a "
              f"NEWS2 observation); choose_thresholds {choose_s:.1f} s; bootstrap_metrics (3 operating "
              f"points) x {args.resamples}: {real_s:.1f} s; NEWS2 AUROC {auc.estimate:.3f} "
              f"[{auc.ci_low:.3f}, {auc.ci_high:.3f}]")


if __name__ == "__main__":
    main()
