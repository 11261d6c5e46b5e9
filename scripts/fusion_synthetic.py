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
5. With ``mid_ft`` / ``early_ft`` among ``--models``: the same strategy with the imaging encoder's
   last block fine-tuned jointly (``FusionModel(finetune="last_block")``), and its paired
   differences against the frozen-embedding model (``differences_vs_frozen.csv``).
   ``--model-seeds`` refits the models with other seeds on the same data and encoder.

    nice -n 10 .venv/bin/python scripts/fusion_synthetic.py --n-stays 4000 --out /work/scratch/r-fusion/synthetic
    nice -n 10 .venv/bin/python scripts/fusion_synthetic.py --n-stays 2000 --models sequence mid mid_ft \
        --model-seeds 0 1 2 --out /work/scratch/h-fusion/ft2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from fusion.ablations import (ABLATION_MODELS, FINETUNED_MODELS, fit_ablation_models, fusion_table, pneumonia_groups,
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
    ap.add_argument("--models", nargs="+", default=list(ABLATION_MODELS),
                    help=f"of {ABLATION_MODELS + FINETUNED_MODELS}")
    ap.add_argument("--encoder-lr", type=float, default=2e-4, help="learning rate of the fine-tuned block (*_ft)")
    ap.add_argument("--model-seeds", type=int, nargs="+", default=None,
                    help="fit the models once per seed (default: --seed); tables per seed and pooled over seeds")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    finetuned = [m for m in a.models if m in FINETUNED_MODELS]
    data = synthetic_fusion_data(a.n_stays, out / "cxr", seed=a.seed, image_size=a.image_size,
                                 encoder_epochs=a.encoder_epochs, image_paths=bool(finetuned))
    print(f"{len(data.embeddings):,} films embedded; encoder validation mean AUROC "
          f"{data.encoder_info['validation_mean_auroc']:.3f} [{time.time() - t0:.0f} s]", flush=True)
    st = data.stays_test
    print(f"fit on {data.train.stay_id.nunique():,} stays ({len(data.train):,} screens), test {len(st):,} stays "
          f"({len(data.test):,} screens, {int(st.sepsis.sum())} septic, "
          f"{int((st.sepsis & st.pneumonia.fillna(False)).sum())} with pneumonia)", flush=True)
    groups = pneumonia_groups(st)
    pd.set_option("display.width", 200)
    seeds = a.model_seeds or [a.seed]
    tables, diffs, frozen_diffs, robs, all_fits = [], [], [], [], []
    for seed in seeds:
        sub = out if len(seeds) == 1 else out / f"seed{seed}"
        models, fits = fit_ablation_models(data.train, a.models, save_dir=sub / "models",
                                           progress=lambda text: print(f"[seed {seed}] {text}", flush=True),
                                           cxr_dir=data.cxr_dir, encoder_lr=a.encoder_lr, hidden=a.hidden,
                                           epochs=a.epochs, device="cpu", random_state=seed)
        pred = pd.concat([m.predictions(data.test, split="test") for m in models.values()], ignore_index=True)
        pred.to_parquet(sub / "predictions_test.parquet", index=False)
        table, diff = fusion_table(pred, data.test, groups, n_boot=a.n_boot, seed=a.seed)
        tables.append(table.assign(seed=seed))
        diffs.append(diff.assign(seed=seed))
        for name in finetuned:  # each fine-tuned model against the same strategy on frozen embeddings
            ft, frozen = f"fusion_{name}", f"fusion_{name[:-3]}"
            if frozen in models:
                keep = pred["model"].isin([ft, frozen])
                _, d = fusion_table(pred[keep], data.test, groups, n_boot=a.n_boot, seed=a.seed, reference=frozen)
                frozen_diffs.append(d.assign(seed=seed))
        robs.append(robustness_ci_table(models, data.test, groups, n_boot=a.n_boot, seed=a.seed).assign(seed=seed))
        all_fits.append(fits.assign(seed=seed))
    table, diff, rob, fits = (pd.concat(x, ignore_index=True) for x in (tables, diffs, robs, all_fits))
    table.to_csv(out / "metrics.csv", index=False)
    diff.to_csv(out / "differences_vs_sequence.csv", index=False)
    rob.to_csv(out / "robustness.csv", index=False)
    fits.to_csv(out / "fit.csv", index=False)
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    print("\n" + table.round(4).to_string(index=False))
    print("\npaired differences vs EHR-only:\n" + diff.round(4).to_string(index=False))
    if frozen_diffs:
        fd = pd.concat(frozen_diffs, ignore_index=True)
        fd.to_csv(out / "differences_vs_frozen.csv", index=False)
        print("\nfine-tuned last block vs frozen embeddings (paired patient bootstrap, per seed):\n"
              + fd.round(4).to_string(index=False))
        if len(seeds) > 1:
            print("\nmean over seeds (sd):\n" + fd.groupby(["group", "model", "metric"])["difference"]
                  .agg(["mean", "std"]).round(4).to_string())
    print("\nrobustness (AUROC change against the films as observed, paired bootstrap CI):\n"
          + rob.round(4).to_string(index=False))
    print("\n" + fits.to_string(index=False))
    print(f"\nwritten {out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
