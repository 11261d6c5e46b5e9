"""DDL-CXR on the synthetic linked cohort (issue 20): is a generated up-to-date film better than the last one?

The steps are library functions (:mod:`fusion.ddl_eval`), shared with ``notebooks/05_ddl_cxr.ipynb``:

1. The fusion data of issue 14 (cohort, patient split, procedural films, encoder trained on
   training films, embeddings on the screens); the lung state replayed from the generator; a
   32-d latent space (whitened PCA, finding probes) fitted on training films.
2. Training pairs: consecutive films of training stays, with the hourly EHR between them. Fit the
   DDL model, the regression baseline and the ablations (no EHR, no previous film, no contrastive).
3. Generation: at every test screen with a film, the latent of the film the lung state would have
   shown then (rendered only to evaluate) against copying the last film, the regression and each
   DDL variant: mean latent distance and mean AUROC of decoded findings.
4. Downstream: one fusion model (fitted on observed films) scored with the last film, each
   generated latent, the true current film (oracle) and no film: AUROC/AUPRC with patient-level
   bootstrap CIs, overall and in pneumonia-associated sepsis, and paired differences against the
   last film.

    flock /work/coord/heavy.lock nice -n 10 .venv/bin/python scripts/ddl_synthetic.py --out runs/ddl_synthetic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from fusion.ablations import fit_ablation_models, fusion_table, pneumonia_groups
from fusion.ddl_eval import (conditions_at_test_screens, downstream_predictions, fit_ddl_variants, generate_latents,
                             generation_table, prepare_ddl)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-stays", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/ddl_synthetic")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--encoder-epochs", type=int, default=6)
    ap.add_argument("--components", type=float, default=0.99, help="latent dimension, or share of variance kept")
    ap.add_argument("--ddl-epochs", type=int, default=300)
    ap.add_argument("--fusion-epochs", type=int, default=8)
    ap.add_argument("--strategy", default="late")
    ap.add_argument("--n-boot", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def say(text):
        print(f"{text} [{time.time() - t0:.0f} s]", flush=True)

    components = int(a.components) if a.components >= 1 else a.components
    setup = prepare_ddl(a.n_stays, out / "cxr", seed=a.seed, encoder_epochs=a.encoder_epochs, n_components=components)
    say(f"{len(setup.data.embeddings):,} films; latent space keeps {setup.space.explained_variance_ratio_:.1%} of "
        f"the embedding variance; {len(setup.pairs.gap_h):,} training pairs")
    models = fit_ddl_variants(setup, epochs=a.ddl_epochs, progress=say)
    cond, truth = conditions_at_test_screens(setup)
    say(f"{len(truth):,} test screens with a film; true current films rendered and embedded")
    latents = generate_latents(models, cond, seed=a.seed)
    gen = generation_table(setup, latents, truth, cond)
    say(f"generation table (n = {gen.attrs['n']})")
    fusion, _ = fit_ablation_models(setup.data.train, [a.strategy], hidden=32, head_hidden=32, epochs=a.fusion_epochs,
                                    device="cpu", random_state=a.seed)
    model = next(iter(fusion.values()))
    pred = downstream_predictions(model, setup, latents, truth, cond)
    groups = pneumonia_groups(setup.data.stays_test)
    table, diff = fusion_table(pred, setup.data.test, groups, n_boot=a.n_boot, seed=a.seed,
                               reference=f"{model.model_name}@last_film")
    gen.to_csv(out / "generation.csv", index=False)
    table.to_csv(out / "downstream.csv", index=False)
    diff.to_csv(out / "downstream_vs_last_film.csv", index=False)
    (out / "args.json").write_text(json.dumps(vars(a) | {"n": gen.attrs["n"]}, indent=1))
    pd.set_option("display.width", 200)
    print("\ngeneration (latent distance to the true current film; mean AUROC of decoded findings):\n"
          + gen.round(3).to_string(index=False))
    print("\ndownstream:\n" + table.round(3).to_string(index=False))
    print("\npaired differences vs the last film:\n" + diff.round(3).to_string(index=False))
    say(f"written {out}")


if __name__ == "__main__":
    main()
