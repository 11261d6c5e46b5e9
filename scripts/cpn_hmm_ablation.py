"""Temporal-coherence ablation (issue 3 item 9): CPN vs CPN + forward-filtered HMM on set A.

Patient-grouped K-fold CV (default 5). In each fold the training patients are split 75/25 into a
fit part (CPN, HMM transitions, CPN prior) and a dev part (HMM emission power and the 85 %
protocol-sensitivity thresholds); the test fold is scored once. Screen-level AUROC/AUPRC of the
48 h ``label`` are pooled over the out-of-fold screens; protocol metrics pool the test folds'
alarms and stays (each fold with its own dev thresholds).

    nice -n 10 .venv/bin/python scripts/cpn_hmm_ablation.py \
        --zip /work/shared/data/physionet2019/training_setA.zip --screens /tmp/cpn_work/screensA.parquet
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from cpn import SepsisCPN
from cpn.temporal import TemporalFilter
from ehr.estimator import predictions_frame
from ehr.screens import build_screens
from ehr.sources.physionet import read_physionet
from evaluation.bootstrap import bootstrap_metrics
from evaluation.metrics import average_precision, roc_auc
from evaluation.operating_points import apply_thresholds, choose_thresholds



def _preds(screens, risk, model):
    return predictions_frame(screens, risk, model=model)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zip", default="/work/shared/data/physionet2019/training_setA.zip")
    ap.add_argument("--screens", default=None, help="cached screens parquet (built from --zip when absent)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-folds", type=int, default=None, help="run only the first N folds")
    ap.add_argument("--max-rows", type=int, default=150_000)
    ap.add_argument("--max-iter", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--powers", type=float, nargs="+", default=[0.25, 0.5, 1.0, 1.5, 2.0],
                    help="HMM emission powers tried on dev (best dev AUROC is used)")
    ap.add_argument("--n-boot", type=int, default=200, help="patient-cluster bootstrap resamples (0: none)")
    args = ap.parse_args()

    t0 = time.time()
    cohort = read_physionet(args.zip)
    events, stays = cohort.events, cohort.stays
    if args.screens and Path(args.screens).exists():
        s = pd.read_parquet(args.screens)
    else:
        s = build_screens(events, stays)
    del events
    s = s.reset_index(drop=True)
    print(f"{len(s)} screens, {s['stay_id'].nunique()} stays, label rate {s['label'].mean():.4f} "
          f"({time.time() - t0:.0f}s)", flush=True)
    y = s["label"].to_numpy()
    risk = {"cpn": np.full(len(s), np.nan), "cpn+hmm": np.full(len(s), np.nan)}
    summaries, stay_out = [], []
    folds = list(GroupKFold(n_splits=args.folds).split(s, y, groups=s["subject_id"]))[:args.max_folds]
    for k, (tr, te) in enumerate(folds):
        t = time.time()
        inner = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=args.seed + k)
        fi, de = next(inner.split(tr, groups=s["subject_id"].to_numpy()[tr]))
        fit, dev, test = s.iloc[tr[fi]], s.iloc[tr[de]], s.iloc[te]
        cpn = SepsisCPN(network="physionet", max_rows=args.max_rows, max_iter=args.max_iter,
                        half_lives="prior", random_state=args.seed + k).fit(fit)
        post = {n: cpn.posterior(d) for n, d in (("fit", fit), ("dev", dev), ("test", test))}
        # the prior the posteriors are divided by: the CPN's own mean posterior on its training screens
        tf = TemporalFilter(transition_pseudo_count=1.0).fit(fit, post["fit"])
        dev_auc = {}
        for pw in args.powers:
            tf.emission_power = pw
            dev_auc[pw] = roc_auc(dev["label"].to_numpy(), tf.risk(tf.filter(dev, post["dev"])))
        best = max(dev_auc, key=dev_auc.get)
        tf.emission_power = best
        r_dev = {"cpn": post["dev"][:, :4].sum(1), "cpn+hmm": tf.risk(tf.filter(dev, post["dev"]))}
        r_test = {"cpn": post["test"][:, :4].sum(1), "cpn+hmm": tf.risk(tf.filter(test, post["test"]))}
        for m in risk:
            risk[m][te] = r_test[m]
        pd_dev = pd.concat([_preds(dev, r_dev[m], m) for m in r_dev], ignore_index=True)
        pd_test = pd.concat([_preds(test, r_test[m], m) for m in r_test], ignore_index=True)
        st_dev = stays[stays["stay_id"].isin(dev["stay_id"].unique())]
        st_test = stays[stays["stay_id"].isin(test["stay_id"].unique())]
        cols = ["stay_id", "screen_time", "new_data"]
        thr = choose_thresholds(pd_dev, dev[cols], st_dev, reference="cpn", news2_cuts=(),
                                target_sensitivity=0.85)
        res = apply_thresholds(thr, pd_test, test[cols], st_test, check_range=False)
        summaries.append(res.summary.assign(fold=k))
        stay_out.append(res.stay_outcomes.assign(fold=k))
        yt = test["label"].to_numpy()
        print(f"fold {k} ({time.time() - t:.0f}s): dev AUROC by emission power "
              f"{ {p: round(v, 4) for p, v in dev_auc.items()} } -> {best}; test AUROC cpn "
              f"{roc_auc(yt, r_test['cpn']):.4f} hmm {roc_auc(yt, r_test['cpn+hmm']):.4f}; "
              f"AUPRC cpn {average_precision(yt, r_test['cpn']):.4f} "
              f"hmm {average_precision(yt, r_test['cpn+hmm']):.4f}",
              flush=True)
        print(res.summary[["model", "threshold", "sensitivity", "alarms_per_admission",
                           "false_alarms_per_true_alarm"]].to_string(index=False), flush=True)

    done = ~np.isnan(risk["cpn"])
    print(f"\n== pooled over {len(folds)} fold(s), {int(done.sum())} test screens ==")
    sm = pd.concat(summaries, ignore_index=True)
    so = pd.concat(stay_out, ignore_index=True)
    rows = []
    for m in risk:
        g = sm[sm["model"] == m]
        o = so[(so["model"] == m) & so["detected"]]
        rows.append({"model": m, "AUROC": roc_auc(y[done], risk[m][done]),
                     "AUPRC": average_precision(y[done], risk[m][done]),
                     "sensitivity": g["n_detected"].sum() / g["n_septic_screenable"].sum(),
                     "alarms_per_admission": g["n_alarms"].sum() / g["n_stays"].sum(),
                     "false_alarms_per_true_alarm": g["n_false_alarms"].sum() / g["n_true_alarms"].sum(),
                     "median_h_before_onset": float(np.median(o["first_true_alarm_h"]))
                     if len(o) else np.nan})
    with pd.option_context("display.width", 200, "display.precision", 4):
        print(pd.DataFrame(rows).to_string(index=False))
    if args.n_boot:
        # paired patient-cluster bootstrap of the rank metrics on all out-of-fold screens
        sd = s.loc[done, ["stay_id", "screen_time"]].assign(new_data=True)
        preds = pd.concat([_preds(s.loc[done], risk[m][done], m) for m in risk], ignore_index=True)
        bs = bootstrap_metrics(preds, sd, stays[stays["stay_id"].isin(sd["stay_id"].unique())],
                               reference="cpn", n_resamples=args.n_boot, seed=args.seed, new_data_only=False)
        d = bs.differences
        d = d[d["metric"].isin(["auroc", "auprc"])]
        print(f"\npaired bootstrap ({args.n_boot} patient resamples), cpn+hmm minus cpn:")
        print(d[["metric", "difference", "ci_low", "ci_high", "p_value"]].to_string(index=False))
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
