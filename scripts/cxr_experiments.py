"""Ablations of the CXR recipe on Kermany (issue #17): one configuration per run, one JSON line per result.

Usage (from the repository root, nice'd, one thread)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/cxr_experiments.py CONFIG --epochs 8 --threads 1 \
        --out /work/scratch/r-cxr/ablation.jsonl [--save DIR] [--test]

The images are read once into a uint8 cache (``--cache-dir``), with a marker-masked copy. Splits
are :func:`imaging.datasets.internal_splits` (fixed seed 17): 15 % of patients are the internal
test part, never used here unless ``--test`` is given (the final recipe, once), 15 % validation,
70 % training. Each run reports validation AUROC, ECE, sensitivity/specificity at the stored
threshold, the held-out shifts (:func:`imaging.evaluate.shift_report`), the lung-heat fraction
of Grad-CAM over 200 validation films, and the model's outputs on the NIH CXR14 sample.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "../shared/data/cxr"

#: name -> (arch, image size, trainer keyword arguments)
BASE = dict(lr=1e-3, batch_size=32, augmentation="basic")
RECIPE = dict(lr=2e-3, batch_size=32, augmentation="shift", schedule="cosine", label_smoothing=0.1,
              ema_decay=0.998, weight_decay=5e-4)
CONFIGS = {
    "small128": ("small", 128, BASE),  # the README recipe before #17, on a short schedule
    "small224": ("small", 224, BASE),
    "r18n": ("resnet18n", 224, BASE),
    "r18n_shift": ("resnet18n", 224, dict(BASE, augmentation="shift")),
    "r18n_eq_shift": ("resnet18n_eq", 224, dict(BASE, augmentation="shift")),
    "r18n_eq_shift_markers": ("resnet18n_eq", 224, dict(BASE, augmentation="shift", marker_mask_p=0.5)),
    "r18n_eq_recipe": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5)),
    "r18n_recipe": ("resnet18n", 224, dict(RECIPE, marker_mask_p=0.5)),
    "r18w_eq_recipe": ("resnet18w_eq", 224, dict(RECIPE, marker_mask_p=0.5)),
    "r18n_eqb_shift": ("resnet18n_eqb", 224, dict(BASE, augmentation="shift")),
    "r18n_eqb_recipe": ("resnet18n_eqb", 224, dict(RECIPE, marker_mask_p=0.5)),
}
# lung-field focus (#17 saliency): the model sees the thoracic box only (imaging.lungs.focus_crop)
CONFIGS.update({
    "r18n_eq_recipe_crop": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5, focus="crop")),
    "r18n_eqb_recipe_crop": ("resnet18n_eqb", 224, dict(RECIPE, marker_mask_p=0.5, focus="crop")),
    # "right for the right reasons": penalise class activation outside the lung fields
    "r18n_eq_recipe_rrr": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5, lung_penalty=1.0)),
    "r18n_eq_recipe_rrr0.2": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5, lung_penalty=0.2)),
    "r18n_eq_recipe_rrr0.05": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5, lung_penalty=0.05)),
    "r18n_eqb_recipe_rrr0.2": ("resnet18n_eqb", 224, dict(RECIPE, marker_mask_p=0.5, lung_penalty=0.2)),
    "r18n_eqb_recipe_rrr": ("resnet18n_eqb", 224, dict(RECIPE, marker_mask_p=0.5, lung_penalty=1.0)),
    "r18n_eq_recipe_crop_rrr": ("resnet18n_eq", 224, dict(RECIPE, marker_mask_p=0.5, focus="crop", lung_penalty=1.0)),
})
# the same steps at 128 px: a third of the cost, for comparing changes on the shared 2-core machine
CONFIGS.update({f"{name}@128": (arch, 128, kw) for name, (arch, size, kw) in list(CONFIGS.items()) if size == 224})


def load(cache_dir: Path, size: int):
    from imaging.contract import resize_uint8
    from imaging.datasets import cached_image_folder
    from imaging.lungs import mask_markers

    data = cached_image_folder(DATA / "kermany_pediatric_224", 224, cache_dir / "kermany224_cache.npz",
                               findings=("pneumonia",))
    masked_path = cache_dir / "kermany224_markers_masked.npy"
    if masked_path.is_file():
        masked = np.load(masked_path)
    else:
        masked = np.stack([mask_markers(a) for a in data.images])
        np.save(masked_path, masked)
    if size != 224:
        data.images = np.stack([resize_uint8(a, size) for a in data.images])
        masked = np.stack([resize_uint8(a, size) for a in masked])
    return data, masked


def nih_smoke(model) -> dict:
    import pandas as pd

    from imaging.evaluate import stored_thresholds

    root = DATA / "nih_cxr14_sample"
    labels = pd.read_csv(root / "labels.csv")
    probs = model.predict_proba([root / p for p in labels["image"]])[:, 0]
    t = stored_thresholds(model)[0]
    pneu = labels["Pneumonia"].to_numpy() == 1
    normal = labels["no_finding"].to_numpy() == 1
    return {"n": int(len(probs)), "mean_probability": float(probs.mean()), "above_threshold": float((probs >= t).mean()),
            "no_finding_mean": float(probs[normal].mean()), "no_finding_above_threshold": float((probs[normal] >= t).mean()),
            "n_pneumonia_label": int(pneu.sum()), "pneumonia_label_probs": probs[pneu].round(3).tolist(),
            "finite": bool(np.isfinite(probs).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/work/scratch/r-cxr/ablation.jsonl"))
    ap.add_argument("--cache-dir", type=Path, default=Path("/work/scratch/r-cxr"))
    ap.add_argument("--save", type=Path, default=None, help="save the model directory here")
    ap.add_argument("--test", action="store_true", help="also score the internal test split (final recipe only)")
    ap.add_argument("--n-saliency", type=int, default=200)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (smoke runs)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="write checkpoint.pt here every epoch (and resume)")
    args = ap.parse_args()

    import torch

    from imaging.datasets import internal_splits
    from imaging.evaluate import evaluate_model, shift_report
    from imaging.gradcam import lung_heat_fraction
    from imaging.models import CXRFindingModel
    from imaging.train import FindingTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arch, size, kw = CONFIGS[args.config]
    kw = dict(kw)
    focus = kw.pop("focus", None)  # a model setting, not the trainer's
    t0 = time.perf_counter()
    data, masked = load(args.cache_dir, size)
    split = internal_splits(data.groups, data.labels[:, 0])
    train, val = data.subset(split["train"]), data.subset(split["val"])
    load_s = time.perf_counter() - t0

    def show(h):
        print(f"[{args.config}] epoch {h['epoch']}/{h['epochs']}: loss {h['train_loss']:.4f} val loss {h['val_loss']:.4f} "
              f"val AUROC {h['val_auroc']:.4f} lr {h['lr']:.2e} {h['seconds']:.0f} s", flush=True)

    model = CXRFindingModel(arch=arch, findings=("pneumonia",), image_size=size, focus=focus)
    trainer = FindingTrainer(epochs=args.epochs, patience=args.epochs, device="cpu", random_state=args.seed,
                             max_steps_per_epoch=args.max_steps, callback=show, checkpoint_dir=args.checkpoint,
                             resume=args.checkpoint is not None, **kw)
    t1 = time.perf_counter()
    trainer.fit(model, train, val, train_masked=masked[split["train"]])
    train_s = time.perf_counter() - t1
    ev = evaluate_model(model, val.images, val.labels, groups=val.groups, n_boot=1000)["pneumonia"]
    shifts = {k: v["pneumonia"] for k, v in shift_report(model, val.images, val.labels,
                                                         masked_images=masked[split["val"]]).items()}
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(val), size=min(args.n_saliency, len(val)), replace=False))
    sal = lung_heat_fraction(model, val.images[pick], "pneumonia", labels=val.labels[pick, 0])
    row = {"config": args.config, "arch": arch, "image_size": size, "focus": focus, "trainer": {k: v for k, v in kw.items()},
           "epochs": args.epochs, "threads": args.threads, "seed": args.seed, "n_train": len(train), "n_val": len(val),
           "best_epoch": trainer.best_epoch_, "train_seconds": train_s, "load_seconds": load_s,
           "seconds_per_epoch": [h["seconds"] for h in trainer.history_],
           "history": [{k: h[k] for k in ("epoch", "train_loss", "val_loss", "val_auroc")} for h in trainer.history_],
           "temperature": float(trainer.temperatures_[0]), "logit_offset": float(trainer.logit_offsets_[0]),
           "validation": ev, "shifts": shifts, "saliency": sal, "nih": nih_smoke(model)}
    if args.test:
        test = data.subset(split["test"])
        row["internal_test"] = evaluate_model(model, test.images, test.labels, groups=test.groups, n_boot=2000)["pneumonia"]
        row["internal_test_shifts"] = {k: v["pneumonia"] for k, v in shift_report(
            model, test.images, test.labels, masked_images=masked[split["test"]]).items()}
    if args.save is not None:
        from imaging.estimator import CXRFindingClassifier

        model.metrics.update(saliency={"pneumonia": sal}, shifts=shifts)
        CXRFindingClassifier.from_network(model, epochs=args.epochs, random_state=args.seed, **kw).save(
            args.save, attachments={"experiment.json": json.dumps(row, default=float)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(row, default=float) + "\n")
    s = shifts
    print(f"[{args.config}] val AUROC {ev['auroc']:.4f} ({ev['auroc_ci'][0]:.4f}-{ev['auroc_ci'][1]:.4f}) "
          f"ECE {ev['ece']:.3f} thr {ev['threshold']:.3f} sens {ev['sensitivity']:.3f} spec {ev['specificity']:.3f} | "
          + " ".join(f"{k} {v['auroc']:.4f}/{v['specificity']:.2f}" for k, v in s.items() if k != "none")
          + f" | lung heat {sal['lung_mean']:.2f} (pos {sal['lung_mean_positive']:.2f}, neg {sal['lung_mean_negative']:.2f}; "
          f"unmirrored mask pos {sal['lung_mean_positive_unmirrored']:.2f}) marker {sal['marker_mean']:.3f}"
          + f" | train {train_s / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
