"""EHR-only vs early / late / mid / MedFuse-style fusion on the synthetic linked cohort (issue 14).

1. Generate the cohort and split patients (``ehr.splits.split_patients``: train / dev / test);
   the models fit on train + dev (each holds out its own validation patients), test is scored.
2. CXR embeddings (:func:`fusion.embeddings.synthetic_cxr_embeddings`): one procedural film per
   study, a small encoder trained on the training patients' films (finding labels), every study
   embedded; attached to the screens under the leakage rule.
3. Fit the five models; score the test split; AUROC/AUPRC with 95 % patient-level bootstrap CIs
   (``evaluation.bootstrap_metrics``, screens with new data as in the protocol) and paired
   differences against the EHR-only model, overall and in pneumonia-associated sepsis
   (non-septic stays plus septic stays whose source is pneumonia).
4. Robustness: every film removed, every film 24 h and 72 h older (:mod:`fusion.robustness`);
   the AUROC change of each model against its own score with the films as observed, with a
   paired patient-level bootstrap CI (same resamples, same screens with new data).

    nice -n 10 .venv/bin/python scripts/fusion_synthetic.py --n-stays 4000 --out /work/scratch/r-fusion/synthetic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ehr.estimator import predictions_frame
from ehr.screens import build_screens
from ehr.splits import split_patients
from ehr.synthetic import generate_cohort
from evaluation.bootstrap import bootstrap_metrics
from fusion.embeddings import attach_embeddings, synthetic_cxr_embeddings
from fusion.models import FusionModel, SequenceModel
from fusion.robustness import CONDITIONS, robustness_predictions


def _ci_table(pred, screens, stays, n_boot, seed, reference="sequence"):
    res = bootstrap_metrics(pred, screens, stays, reference=reference, n_resamples=n_boot, seed=seed)
    t = res.table[res.table.metric.isin(["auroc", "auprc"])]
    d = res.differences[res.differences.metric.isin(["auroc", "auprc"])]
    return t[["model", "metric", "estimate", "ci_low", "ci_high"]], d[["model", "metric", "difference", "ci_low",
                                                                          "ci_high", "p_value"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-stays", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/fusion_synthetic")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--encoder-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--models", nargs="+", default=["sequence", "early", "late", "mid", "medfuse"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cohort = generate_cohort(a.n_stays, seed=a.seed)
    split = split_patients(cohort.stays, seed=a.seed)
    fit_stays = split.index[split != "test"].to_numpy()
    test_stays = split.index[split == "test"].to_numpy()
    emb = synthetic_cxr_embeddings(cohort.cxr, split.index[split == "train"].to_numpy(), out / "cxr",
                                   seed=a.seed, image_size=a.image_size, epochs=a.encoder_epochs)
    info = json.loads((out / "cxr" / "cxr_embeddings.json").read_text())
    print(f"{len(emb):,} films embedded; encoder validation mean AUROC {info['validation_mean_auroc']:.3f} "
          f"[{time.time() - t0:.0f} s]", flush=True)
    screens = attach_embeddings(build_screens(cohort.events, cohort.stays, cohort.cxr), emb)
    train = screens[screens.stay_id.isin(fit_stays)].reset_index(drop=True)
    test = screens[screens.stay_id.isin(test_stays)].reset_index(drop=True)
    stays_test = cohort.stays[cohort.stays.stay_id.isin(test_stays)]
    print(f"fit on {train.stay_id.nunique():,} stays ({len(train):,} screens), test {len(test_stays):,} stays "
          f"({len(test):,} screens, {int(stays_test.sepsis.sum())} septic, "
          f"{int((stays_test.sepsis & stays_test.pneumonia.fillna(False)).sum())} with pneumonia)", flush=True)
    models, preds, fit_rows = {}, [], []
    for name in a.models:
        t = time.time()
        kw = {"hidden": a.hidden, "epochs": a.epochs, "device": "cpu", "random_state": a.seed}
        m = SequenceModel(**kw) if name == "sequence" else FusionModel(name, **kw)
        m.fit(train)
        fit_rows.append({"model": m.model_name, "fit_s": round(time.time() - t, 1), "epochs": len(m.history_),
                         "temperature": m.temperature_})
        print(f"{m.model_name}: fitted in {time.time() - t:.0f} s ({len(m.history_)} epochs over its stages)",
              flush=True)
        models[m.model_name] = m
        m.save(out / "models" / m.model_name)
        preds.append(m.predictions(test, split="test"))
    pred = pd.concat(preds, ignore_index=True)
    pred.to_parquet(out / "predictions_test.parquet", index=False)
    pneu = stays_test[~stays_test.sepsis | stays_test.pneumonia.fillna(False).astype(bool)]
    tables, diffs = [], []
    for group, st in (("all", stays_test), ("pneumonia-associated", pneu)):
        s_g = test[test.stay_id.isin(st.stay_id)]
        p_g = pred[pred.stay_id.isin(st.stay_id)]
        t_g, d_g = _ci_table(p_g, s_g, st, a.n_boot, a.seed)
        tables.append(t_g.assign(group=group))
        diffs.append(d_g.assign(group=group))
    table, diff = pd.concat(tables), pd.concat(diffs)
    table.to_csv(out / "metrics.csv", index=False)
    diff.to_csv(out / "differences_vs_sequence.csv", index=False)
    rob_pred = robustness_predictions(models, test, split="test")
    rows = []
    for group, st in (("all", stays_test), ("pneumonia-associated", pneu)):
        s_g = test[test.stay_id.isin(st.stay_id)]
        for name in models:
            p_g = rob_pred[rob_pred.stay_id.isin(st.stay_id) & rob_pred.model.str.startswith(f"{name}@")]
            t_g, d_g = _ci_table(p_g, s_g, st, a.n_boot, a.seed, reference=f"{name}@observed")
            auroc = t_g[t_g.metric == "auroc"].set_index("model")
            d_g = d_g[d_g.metric == "auroc"].set_index("model")
            for cond in CONDITIONS:
                key = f"{name}@{cond}"
                rows.append({"group": group, "model": name, "condition": cond, "auroc": auroc.loc[key, "estimate"],
                             "delta_auroc": d_g["difference"].get(key, 0.0), "ci_low": d_g["ci_low"].get(key),
                             "ci_high": d_g["ci_high"].get(key)})
    rob = pd.DataFrame(rows)
    rob.to_csv(out / "robustness.csv", index=False)
    pd.DataFrame(fit_rows).to_csv(out / "fit.csv", index=False)
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    pd.set_option("display.width", 200)
    print("\n" + table.round(4).to_string(index=False))
    print("\npaired differences vs EHR-only:\n" + diff.round(4).to_string(index=False))
    print("\nrobustness (AUROC change against the films as observed, paired bootstrap CI):\n"
          + rob.round(4).to_string(index=False))
    print("\n" + pd.DataFrame(fit_rows).to_string(index=False))
    print(f"\nwritten {out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
