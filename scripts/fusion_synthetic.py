"""EHR-only vs early / late / mid / MedFuse-style fusion on the synthetic linked cohort (issue 14).

The steps are library functions (:mod:`fusion.ablations`), shared with
``notebooks/04_fusion_ablations.ipynb``:

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

import pandas as pd
import torch

from fusion.ablations import (ABLATION_MODELS, fit_ablation_models, fusion_table, pneumonia_groups,
                              robustness_ci_table, synthetic_fusion_data)


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
    ap.add_argument("--models", nargs="+", default=list(ABLATION_MODELS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = synthetic_fusion_data(a.n_stays, out / "cxr", seed=a.seed, image_size=a.image_size,
                                 encoder_epochs=a.encoder_epochs)
    print(f"{len(data.embeddings):,} films embedded; encoder validation mean AUROC "
          f"{data.encoder_info['validation_mean_auroc']:.3f} [{time.time() - t0:.0f} s]", flush=True)
    st = data.stays_test
    print(f"fit on {data.train.stay_id.nunique():,} stays ({len(data.train):,} screens), test {len(st):,} stays "
          f"({len(data.test):,} screens, {int(st.sepsis.sum())} septic, "
          f"{int((st.sepsis & st.pneumonia.fillna(False)).sum())} with pneumonia)", flush=True)
    models, fits = fit_ablation_models(data.train, a.models, save_dir=out / "models",
                                       progress=lambda text: print(text, flush=True), hidden=a.hidden,
                                       epochs=a.epochs, device="cpu", random_state=a.seed)
    pred = pd.concat([m.predictions(data.test, split="test") for m in models.values()], ignore_index=True)
    pred.to_parquet(out / "predictions_test.parquet", index=False)
    groups = pneumonia_groups(st)
    table, diff = fusion_table(pred, data.test, groups, n_boot=a.n_boot, seed=a.seed)
    table.to_csv(out / "metrics.csv", index=False)
    diff.to_csv(out / "differences_vs_sequence.csv", index=False)
    rob = robustness_ci_table(models, data.test, groups, n_boot=a.n_boot, seed=a.seed)
    rob.to_csv(out / "robustness.csv", index=False)
    fits.to_csv(out / "fit.csv", index=False)
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    pd.set_option("display.width", 200)
    print("\n" + table.round(4).to_string(index=False))
    print("\npaired differences vs EHR-only:\n" + diff.round(4).to_string(index=False))
    print("\nrobustness (AUROC change against the films as observed, paired bootstrap CI):\n"
          + rob.round(4).to_string(index=False))
    print("\n" + fits.to_string(index=False))
    print(f"\nwritten {out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
