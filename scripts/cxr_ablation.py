"""CPN (and LightGBM) with vs without CXR evidence on the synthetic linked cohort.

Reports screen-level AUROC/AUPRC overall and in pneumonia-associated sepsis (non-septic stays plus
septic stays whose infection is pneumonia), and timeliness: hours from the first true alarm to
onset for pneumonia-associated septic stays, with thresholds chosen on a development cohort at
85 % protocol sensitivity and applied unchanged to the test cohort.

    .venv/bin/python scripts/cxr_ablation.py [--train 1500] [--dev 600] [--test 800] [--seed 10] \
        [--cpn-ablations [timing] [prior]]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from cpn import SepsisCPN
from cpn.structure import SHIPPED_OPTIONS, build_expert_network
from ehr.estimator import predictions_frame
from ehr.screens import build_screens
from ehr.synthetic import generate_cohort
from evaluation.metrics import average_precision, roc_auc
from evaluation.operating_points import apply_thresholds, choose_thresholds
from gbdt import GBDTClassifier


def _cohort(n, seed, offset):
    c = generate_cohort(n, seed=seed)
    # distinct ids per cohort so dev/test stays never collide
    stays = c.stays.assign(stay_id=c.stays.stay_id + offset, subject_id=c.stays.subject_id + offset)
    events = c.events.assign(stay_id=c.events.stay_id + offset, subject_id=c.events.subject_id + offset)
    cxr = c.cxr.assign(stay_id=c.cxr.stay_id + offset, subject_id=c.cxr.subject_id + offset)
    return stays, build_screens(events, stays, cxr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--dev", type=int, default=600)
    ap.add_argument("--test", type=int, default=800)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--cpn-ablations", nargs="*", default=None, choices=["timing", "prior"],
                    help="also fit the CPN without the xray_taken_24h leaf (timing: the findings alone) and "
                         "with cxr_prior=0.5 (prior); no value: both")
    a = ap.parse_args()
    _, s_tr = _cohort(a.train, a.seed, 0)
    st_dev, s_dev = _cohort(a.dev, a.seed + 1, 10_000_000)
    st_te, s_te = _cohort(a.test, a.seed + 2, 20_000_000)
    stays = pd.concat([st_dev, st_te], ignore_index=True)
    pneu = stays.set_index("stay_id")["pneumonia"].fillna(False).astype(bool)
    septic = stays.set_index("stay_id")["sepsis"].astype(bool)
    sub = (~septic | pneu).reindex(s_te.stay_id).to_numpy()
    cxr_cols = [c for c in s_tr.columns if c.startswith("cxr_")]
    y = s_te["label"].to_numpy()
    print(f"train {len(s_tr):,} screens, test {len(s_te):,} (pneumonia-sepsis subgroup {int(sub.sum()):,} "
          f"screens, {int(y[sub].sum())} positive)")
    rows = []
    # CPN variants: (label, columns dropped, SepsisCPN arguments); the last two isolate the two
    # parts of the CXR evidence fix: the film-timing leaf and the calibration prevalence
    # the shipped network, less the film-timing leaf
    no_timing = build_expert_network("full", drop=["xray_taken_24h"], **SHIPPED_OPTIONS["full"])
    cpn_variants = [("with CXR", [], {}), ("without CXR", cxr_cols, {})]
    ablations = ["timing", "prior"] if a.cpn_ablations == [] else a.cpn_ablations or []
    if "timing" in ablations:
        cpn_variants.append(("with CXR, no xray_taken_24h leaf", [], {"network": no_timing}))
    if "prior" in ablations:
        cpn_variants.append(("with CXR, cxr_prior=0.5", [], {"cxr_prior": 0.5}))
    lgb_variants = [("with CXR", [], {}), ("without CXR", cxr_cols, {})]
    for model_name, variants in (("cpn", cpn_variants), ("lightgbm", lgb_variants)):
        for variant, drop, kw in variants:
            t0 = time.perf_counter()
            if model_name == "cpn":
                m = SepsisCPN(**{"network": "full", "max_iter": 15, "random_state": 0, **kw}).fit(
                    s_tr.drop(columns=drop))
            else:
                m = GBDTClassifier(random_state=0, n_jobs=2).fit(s_tr.drop(columns=drop), groups=s_tr.stay_id)
            preds = []
            for split, s in (("dev", s_dev), ("test", s_te)):
                preds.append(predictions_frame(s, m.predict_proba(s.drop(columns=drop))[:, 1], model=model_name,
                                               split=split))
            p_te = preds[1]["risk"].to_numpy()
            th = choose_thresholds(preds[0], s_dev, st_dev, reference=model_name, news2_cuts=())
            res = apply_thresholds(th, preds[1], s_te, st_te, check_range=False)
            so = res.stay_outcomes
            so = so[so.septic & so.stay_id.map(pneu).fillna(False).astype(bool)]
            lead = so["first_true_alarm_h"].dropna()
            rows.append({"model": model_name, "evidence": variant,
                         "auroc": roc_auc(y, p_te), "auprc": average_precision(y, p_te),
                         "auroc_pneumonia": roc_auc(y[sub], p_te[sub]), "auprc_pneumonia": average_precision(y[sub], p_te[sub]),
                         "sens85_pneumonia_detected": f"{int(so.detected.sum())}/{len(so)}",
                         "median_h_before_onset_pneumonia": float(lead.median()) if len(lead) else np.nan,
                         "fit_s": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
