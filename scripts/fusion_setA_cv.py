"""The EHR sequence model under 5-fold patient-grouped cross-validation on PhysioNet set A (issue 14).

Folds are ``ehr.splits.group_kfold(subject_id, 5)`` without shuffling: scikit-learn's
deterministic ``GroupKFold``, the same folds as ``scripts/cpn_cv.py``. Screen-level AUROC/AUPRC
of the 48 h ``label``, pooled over the out-of-fold screens and per fold (mean, sd), with the
training time of each fold. ``--gbdt`` adds LightGBM (``gbdt.GBDTClassifier`` defaults) on the same
folds. Out-of-fold predictions (``stay_id, screen_time, fold, risk``, one file per model) are
written for the stacking work.

    nice -n 10 .venv/bin/python scripts/fusion_setA_cv.py --screens /work/scratch/r-fusion/setA_screens.parquet \\
        --out /work/scratch/r-fusion/setA_cv [--gbdt] [--threads 1] [--hidden 64] [--cell lstm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ehr.screens import build_screens
from ehr.splits import group_kfold
from evaluation.metrics import average_precision, roc_auc
from fusion.models import SequenceModel


def _screens(path: str | None, zip_path: str) -> pd.DataFrame:
    if path and Path(path).exists():
        return pd.read_parquet(path)
    from ehr.sources.physionet import read_physionet

    cohort = read_physionet(zip_path)
    s = build_screens(cohort.events, cohort.stays)
    if path:
        s.to_parquet(path)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zip", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / "physionet2019" / "training_setA.zip"))
    ap.add_argument("--screens", default=None, help="screens parquet cache (written when absent)")
    ap.add_argument("--out", default="runs/fusion_setA_cv")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-folds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--gbdt", action="store_true", help="also fit LightGBM (defaults) on the same folds")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    s = _screens(a.screens, a.zip).reset_index(drop=True)
    y = s["label"].to_numpy()
    print(f"{len(s):,} screens, {s['stay_id'].nunique():,} stays, label rate {y.mean():.4f} "
          f"[{time.time() - t0:.0f} s]", flush=True)
    folds = group_kfold(s["subject_id"].to_numpy(), a.folds)[: a.max_folds]
    models = ["sequence"] + (["lightgbm"] if a.gbdt else [])
    risk = {m: np.full(len(s), np.nan) for m in models}
    fold_of = np.full(len(s), -1)
    rows = []
    for k, (tr, te) in enumerate(folds):
        fold_of[te] = k
        for name in models:
            t = time.time()
            if name == "lightgbm":
                from gbdt import GBDTClassifier

                m = GBDTClassifier(random_state=a.seed, n_jobs=a.threads).fit(s.iloc[tr],
                                                                               groups=s["subject_id"].iloc[tr])
                info = ""
            else:
                m = SequenceModel(hidden=a.hidden, cell=a.cell, epochs=a.epochs, device="cpu",
                                  random_state=a.seed + k).fit(s.iloc[tr])
                best = max(m.history_, key=lambda h: h["val_auprc"])
                info = f" epochs {len(m.history_)} (best {best['epoch']}), T={m.temperature_:.3f}"
            fit_s = time.time() - t
            risk[name][te] = m.predict_proba(s.iloc[te])[:, 1]
            rows.append({"model": name, "fold": k, "auroc": roc_auc(y[te], risk[name][te]),
                         "auprc": average_precision(y[te], risk[name][te]), "fit_s": round(fit_s, 1),
                         "threads": a.threads})
            print(f"fold {k} {name}: AUROC {rows[-1]['auroc']:.4f} AUPRC {rows[-1]['auprc']:.4f} "
                  f"(fit {fit_s:.0f} s){info}", flush=True)
    done = fold_of >= 0
    for name in models:
        rows.append({"model": name, "fold": "pooled", "auroc": roc_auc(y[done], risk[name][done]),
                     "auprc": average_precision(y[done], risk[name][done])})
        oof = pd.DataFrame({"stay_id": s["stay_id"].to_numpy()[done], "screen_time": s["screen_time"].to_numpy()[done],
                            "fold": fold_of[done], "risk": risk[name][done]})
        oof.to_parquet(out / f"oof_{name}.parquet", index=False)
    res = pd.DataFrame(rows)
    res.to_csv(out / "cv_results.csv", index=False)
    per_fold = res[res.fold != "pooled"].groupby("model")[["auroc", "auprc", "fit_s"]].agg(["mean", "std"])
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    pooled = res[res.fold == "pooled"][["model", "auroc", "auprc"]]
    print("\npooled out-of-fold:\n" + pooled.round(4).to_string(index=False))
    print("\nper fold (mean, sd):\n" + per_fold.round(4).to_string())
    print(f"\nwritten {out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
