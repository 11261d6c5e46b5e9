"""CLI commands for the imaging area: ``train imaging``, ``evaluate-imaging``, ``explain-image``, ``cxr-images``, ``score-cxr``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from sepsiscope.errors import UsageError, data_errors
from sepsiscope.options import choice, fraction, learning_rate, seed as seed_value
from sepsiscope.outputs import MODEL_MARKER, check_output, check_output_dir, existing_dir, existing_file


def _train_imaging(
    data: Path = typer.Option(..., "--data", help="Folder with labels.csv + images, or a MedMNIST-style .npz."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.json + model.safetensors)."),
    arch: str = typer.Option("densenet121", help="densenet121 | resnet18 | resnet34 | small | resnet18n | "
                             "resnet18n_eq | resnet18w_eq (the narrow ResNets are the CPU recipe)"),
    image_size: int = typer.Option(224, min=16, max=4096, help="Square input size in pixels."),
    epochs: int = typer.Option(10, min=1, max=10_000, help="Maximum epochs (early stopping on validation AUROC)."),
    findings: str = typer.Option("", help="Comma-separated finding columns; default: every 0/1 finding column."),
    split: str = typer.Option("train", help="Rows of labels.csv whose 'split' starts with this ('' = all)."),
    val_fraction: float = typer.Option(0.2, callback=fraction, help="Patient/duplicate-safe validation fraction."),
    holdout_test: float = typer.Option(0.0, min=0.0, max=0.9,
                                       help="Also set aside this fraction of patients as an internal test "
                                       "part, never trained or validated on (imaging.datasets.internal_splits)."),
    batch_size: int = typer.Option(32, min=1, max=65_536),
    lr: float = typer.Option(1e-3, callback=learning_rate, help="AdamW (peak) learning rate."),
    weight_decay: float = typer.Option(1e-4, min=0.0, help="AdamW weight decay."),
    augmentation: str = typer.Option("basic", help="basic | shift (acquisition-shift augmentation, imaging.augment)."),
    marker_mask_p: float = typer.Option(0.0, min=0.0, max=1.0,
                                        help="Probability of training on a film with its markers painted over."),
    focus: str = typer.Option("none", help="none | crop: the model sees only the thoracic box (rule-based lung "
                              "fields plus a margin), at training and inference alike (stored in model.json)."),
    lung_penalty: float = typer.Option(0.0, min=0.0, help="Weight of the training term on class activation outside "
                                       "the lung fields (0 = off; needs --augmentation shift)."),
    schedule: str = typer.Option("constant", help="constant | cosine (linear warm-up, cosine decay)."),
    label_smoothing: float = typer.Option(0.0, min=0.0, max=0.5, help="Label smoothing epsilon."),
    ema_decay: float = typer.Option(0.0, min=0.0, max=0.99999, help="EMA of the weights (0 = off; e.g. 0.998)."),
    target_sensitivity: float = typer.Option(0.95, min=0.01, max=1.0,
                                             help="Validation sensitivity the stored threshold is chosen for."),
    patience: int = typer.Option(3, min=0, help="Early-stopping patience in epochs."),
    max_steps: int = typer.Option(0, min=0, help="Cap on steps per epoch (0 = no cap)."),
    limit: int = typer.Option(0, min=0, help="Read only the first N labelled rows (0 = all)."),
    cache: Path = typer.Option(None, "--cache", help="Keep the decoded images in this .npz (reused when labels.csv, "
                               "size, findings and split match)."),
    threads: int = typer.Option(0, min=0, max=1024, help="torch CPU threads (0 = torch default)."),
    seed: int = typer.Option(0, callback=seed_value, help="Seed for initialisation, shuffling and augmentation "
                             "(and the split)."),
    split_seed: int = typer.Option(None, help="Seed of the --holdout-test patient split only (default: --seed)."),
    resume: bool = typer.Option(False, help="Resume from OUT/checkpoint.pt."),
    saliency_check: int = typer.Option(200, help="Grad-CAM lung-heat check on this many validation films (0 = skip)."),
    shift_check: bool = typer.Option(True, "--shift-check/--no-shift-check",
                                     help="Score validation under the held-out acquisition shifts."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a CXR finding model on labelled images and save it with validation metrics, its threshold and checks."""
    import torch

    from imaging.datasets import cached_image_folder, internal_splits, read_image_folder
    from imaging.estimator import CXRFindingClassifier, training_sets
    from imaging.models import ARCHS
    from sepsiscope.runinfo import run_json_text

    choice(arch, ARCHS, "--arch")
    choice(augmentation, ("basic", "shift"), "--augmentation")
    choice(schedule, ("constant", "cosine"), "--schedule")
    choice(focus, ("none", "crop"), "--focus")
    if lung_penalty > 0 and augmentation != "shift":
        raise UsageError("--lung-penalty needs --augmentation shift (it moves the lung masks with the films)")
    if not data.exists():
        raise UsageError(f"--data {data}: no such file or folder")
    # an interrupted training leaves its checkpoint there (what --resume reads)
    check_output_dir(out, marker=(MODEL_MARKER, "checkpoint.pt"), inputs={"--data": data})
    if resume and not (out / "checkpoint.pt").is_file():
        raise UsageError(f"--resume: {out / 'checkpoint.pt'} does not exist")
    if threads:
        torch.set_num_threads(threads)
    names = tuple(f.strip() for f in findings.split(",") if f.strip()) or None
    model = CXRFindingClassifier(arch=arch, findings=names, image_size=image_size, epochs=epochs,
                                 batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                                 augmentation=augmentation, marker_mask_p=marker_mask_p, schedule=schedule,
                                 label_smoothing=label_smoothing, ema_decay=ema_decay or None,
                                 target_sensitivity=target_sensitivity, max_steps_per_epoch=max_steps or None,
                                 focus=None if focus == "none" else focus, lung_penalty=lung_penalty,
                                 validation_fraction=val_fraction, random_state=seed)
    t0 = time.perf_counter()
    test_ids: list[str] = []
    if holdout_test or (cache is not None and data.suffix != ".npz"):
        with data_errors(data):
            if cache is not None and not limit:
                full = cached_image_folder(data, image_size, cache, findings=names, split=split or None,
                                           progress=progress)
            else:
                full = read_image_folder(data, image_size, findings=names, split=split or None,
                                         limit=limit or None, progress=progress)
        if holdout_test:
            parts = internal_splits(full.groups, full.labels.max(axis=1), test_fraction=holdout_test,
                                    val_fraction=val_fraction, random_state=seed if split_seed is None else split_seed)
            train_set, val_set = full.subset(parts["train"]), full.subset(parts["val"])
            test_ids = [full.ids[i] for i in parts["test"]]
        else:
            train_set, val_set = model.validation_split(full)
    else:
        with data_errors(data):
            train_set, val_set = training_sets(data, image_size=image_size, findings=names, split=split or None,
                                               limit=limit or None, model=model, progress=progress)
    load_s = time.perf_counter() - t0
    typer.echo(f"{len(train_set)} training / {len(val_set)} validation images"
               + (f" / {len(test_ids)} held out as internal test" if test_ids else "")
               + f" (findings {', '.join(train_set.findings)}; loaded in {load_s:.0f} s)")

    def show(h: dict) -> None:
        typer.echo(f"epoch {h['epoch']}/{h['epochs']}: loss {h['train_loss']:.4f}  val loss {h['val_loss']:.4f}  "
                   f"val AUROC {h['val_auroc']:.4f}  lr {h['lr']:.2e}  {h['seconds']:.0f} s "
                   f"({h['images_per_s']:.0f} img/s)")

    with data_errors(data):
        model.fit(train_set, validation=val_set, checkpoint_dir=out, resume=resume, progress=progress,
                  callback=show)
    _checks(model.network_, val_set, saliency_check, shift_check, seed)
    # the checkpoint (resume point) travels with the model: the directory is replaced as a whole
    checkpoint = out / "checkpoint.pt"
    run = run_json_text({"command": "train imaging", "data": str(data), "split": split, "limit": limit,
                         "holdout_test": holdout_test, "split_seed": split_seed, "internal_test_images": test_ids,
                         "params": model.get_params()}, seeds={"model": seed}, extra={
                            "timings": {"load_s": load_s, "train_s": time.perf_counter() - t0 - load_s},
                            "complete": True})
    model.save(out, attachments={"run.json": run, **({checkpoint.name: checkpoint} if checkpoint.is_file() else {})})
    temperatures = model.network_.temperatures
    for i, f in enumerate(model.findings_):
        m = model.val_metrics_[f]
        typer.echo(f"{f}: AUROC {m['auroc']:.3f}  threshold {m['threshold']:.3f} -> accuracy {m['accuracy']:.3f}  "
                   f"sensitivity {m['sensitivity']:.3f}  specificity {m['specificity']:.3f}  "
                   f"(n={m['n']}, T={float(temperatures[i]):.2f})")
    typer.echo(f"saved {out} (best epoch {model.best_epoch_})")


def _checks(model, val_set, n_saliency: int, shifts: bool, seed: int) -> None:
    """Lung-heat fraction of Grad-CAM and the held-out shifts on validation, stored in ``model.metrics``."""
    import numpy as np

    from imaging.evaluate import shift_report
    from imaging.gradcam import lung_heat_fraction
    from imaging.lungs import mask_markers

    if n_saliency:
        pick = np.sort(np.random.default_rng(seed).choice(len(val_set), min(n_saliency, len(val_set)), replace=False))
        k = 0  # the first finding: the lung check reads one finding's maps
        sal = lung_heat_fraction(model, val_set.images[pick], model.findings[k], labels=val_set.labels[pick, k])
        model.metrics["saliency"] = {model.findings[k]: sal}
        typer.echo(f"Grad-CAM ({sal['layer_map_side']}x{sal['layer_map_side']} map) on {sal['n']} validation films: "
                   f"{sal['lung_mean']:.2f} of the heat inside the lung fields "
                   f"(positive films {sal.get('lung_mean_positive', float('nan')):.2f}, negative "
                   f"{sal.get('lung_mean_negative', float('nan')):.2f}), {sal['marker_mean']:.3f} on markers")
    if shifts:
        masked = np.stack([mask_markers(a) for a in val_set.images])
        model.metrics["shifts"] = shift_report(model, val_set.images, val_set.labels, masked_images=masked)
        for name, per in model.metrics["shifts"].items():
            typer.echo(f"validation, shift {name}: " + "  ".join(
                f"{f} AUROC {v['auroc']:.3f} sens {v['sensitivity']:.3f} spec {v['specificity']:.3f}"
                for f, v in per.items()))


def _evaluate_imaging(
    model_dir: Path = typer.Argument(..., help="Imaging model directory."),
    data: Path = typer.Option(..., "--data", help="Labelled folder: labels.csv (column 'image' + 0/1 finding columns) "
                              "or class subfolders (NORMAL/, PNEUMONIA/ ...)."),
    n_boot: int = typer.Option(1000, min=0, max=1_000_000,
                               help="Bootstrap resamples for the AUROC CI (patients when labels.csv names them)."),
    shifts: bool = typer.Option(False, "--shifts/--no-shifts", help="Also score the held-out acquisition shifts."),
    out: Path = typer.Option(None, "--json", help="Write every number (with the reliability table) to this JSON file."),
    seed: int = typer.Option(0, callback=seed_value),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score a saved model on a labelled folder: AUROC (95 % CI), accuracy, sensitivity, specificity at the stored threshold, ECE."""
    from imaging.datasets import read_labelled
    from imaging.estimator import CXRFindingClassifier
    from ehr.artefacts import atomic_file
    from imaging.evaluate import evaluate_model, shift_report

    existing_dir(model_dir, "MODEL_DIR", "model folder")
    if not data.exists():
        raise UsageError(f"--data {data}: no such file or folder")
    if out is not None:
        check_output(out, option="--json", inputs={"--data": data}, model_dirs=[model_dir],
                     input_dirs={"--data": data} if data.is_dir() else None)
    with data_errors(model_dir):
        model = CXRFindingClassifier.load(model_dir).network_
    with data_errors(data):
        images = read_labelled(data, int(model.image_size), model.findings, progress=progress)
        result = {"model": str(model_dir), "data": str(data), "n": len(images),
                  "findings": evaluate_model(model, images.images, images.labels, groups=images.groups,
                                             n_boot=n_boot, seed=seed)}
    for f, m in result["findings"].items():
        lo, hi = m["auroc_ci"]
        typer.echo(f"{f}: AUROC {m['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, {m['n_boot']} resamples)  "
                   f"threshold {m['threshold']:.3f}: accuracy {m['accuracy']:.3f}  sensitivity {m['sensitivity']:.3f}  "
                   f"specificity {m['specificity']:.3f}  ECE {m['ece']:.3f}  "
                   f"(n={m['n']}, {m['n_positive']} positive; mean probability {m['mean_probability']:.3f})")
    if shifts:
        result["shifts"] = shift_report(model, images.images, images.labels)
        for name, per in result["shifts"].items():
            typer.echo(f"shift {name}: " + "  ".join(f"{f} AUROC {v['auroc']:.3f} sens {v['sensitivity']:.3f} "
                                                      f"spec {v['specificity']:.3f}" for f, v in per.items()))
    if out is not None:
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=float))


def _explain_image(
    image: Path = typer.Argument(..., help="Image file (8-bit grayscale PNG/JPEG)."),
    model_dir: Path = typer.Option(..., "--model", help="Imaging model directory."),
    finding: str = typer.Option(..., "--finding", help="Finding to explain."),
    out: Path = typer.Option(..., "--out", help="PNG overlay to write (at the image's own resolution)."),
    method: str = typer.Option("gradcam", help="gradcam | gradcam++ | xgradcam | scorecam (pytorch_grad_cam)."),
) -> None:
    """Save a Grad-CAM overlay PNG for one finding on one image, and print the probabilities."""
    from ehr.artefacts import atomic_file
    from imaging.estimator import CXRFindingClassifier
    from imaging.gradcam import METHODS, save_grad_cam

    choice(method, tuple(METHODS), "--method")
    existing_file(image, "IMAGE")
    existing_dir(model_dir, "--model", "model folder")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"--out {out}: expected a .png or .jpg file name")
    check_output(out, inputs={"IMAGE": image}, model_dirs=[model_dir])
    with data_errors(model_dir):
        model = CXRFindingClassifier.load(model_dir).network_
    if finding not in model.findings:
        raise typer.BadParameter(f"{finding!r} is not one of the model's findings ({', '.join(model.findings)})",
                                 param_hint="--finding")
    with data_errors(image):
        with atomic_file(out) as tmp:
            save_grad_cam(model, image, finding, tmp, method=method)
        probs = model.predict_findings([image]).iloc[0].to_dict()
    typer.echo(json.dumps({"image": str(image), "probabilities": probs, "overlay": str(out)}))


def _cxr_images(
    cohort: Path = typer.Argument(..., help="Cohort directory holding cxr.parquet (e.g. the synthetic cohort)."),
    real: Path = typer.Option(None, "--real", help="Draw real images by finding from this labelled folder "
                              "(Kermany: consolidation-positive from PNEUMONIA, negative from NORMAL)."),
    size: int = typer.Option(128, help="Side of rendered images in pixels."),
    conspicuity: float = typer.Option(1.0, help="Scale of rendered opacities (lower = subtler findings)."),
    seed: int = typer.Option(0),
) -> None:
    """Give every CXR study an image: rendered from its ground truth, or a real image drawn by finding.

    Rewrites COHORT/cxr.parquet with image_path and writes COHORT/labels.csv (image, truth findings,
    patient_id) so that `sepsiscope train imaging --data COHORT` can train on the cohort's images.
    """
    import pandas as pd

    from ehr.artefacts import atomic_file
    from ehr.schema import CXR_FINDINGS
    from ehr.tables import read_table, write_table
    from imaging.synthetic_images import render_cohort_images, sample_real_images

    path = existing_dir(cohort, "COHORT", "cohort directory") / "cxr.parquet"
    if real is not None:
        existing_dir(real, "--real")
    cxr = read_table(path, "cxr")
    with data_errors(real or path):
        out = sample_real_images(cxr, real, seed=seed) if real is not None else render_cohort_images(
            cxr, cohort, seed, size=size, conspicuity=conspicuity)
    write_table(out, path, "cxr")
    labels = pd.DataFrame({"image": out["image_path"], "patient_id": out["subject_id"]})
    for f in CXR_FINDINGS:
        if f"truth_{f}" in out.columns:
            labels[f] = out[f"truth_{f}"].fillna(0).astype(int)
    with atomic_file(cohort / "labels.csv") as tmp:
        labels.to_csv(tmp, index=False)
    typer.echo(f"{len(out)} studies: images {'drawn from ' + str(real) if real is not None else 'rendered'}; "
               f"wrote {path} and {cohort / 'labels.csv'}")


def _score_cxr(
    cohort: Path = typer.Argument(..., help="Cohort directory holding cxr.parquet with image_path."),
    model_dir: Path = typer.Option(..., "--model", help="Imaging model directory."),
    finding_map: str = typer.Option("", help="model=cxr finding renames, e.g. 'pneumonia=consolidation' "
                                    "for a Kermany model."),
    batch_size: int = typer.Option(64, min=1, max=65_536),
) -> None:
    """Fill the cxr table's cxr_<finding> columns with the imaging model's probabilities."""
    from ehr.tables import read_table, write_table
    from imaging.estimator import CXRFindingClassifier
    from imaging.scoring import score_cxr_table

    path = existing_dir(cohort, "COHORT", "cohort directory") / "cxr.parquet"
    existing_dir(model_dir, "--model", "model folder")
    pairs = [pair.split("=", 1) for pair in finding_map.split(",") if pair.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise typer.BadParameter(f"expected model=cxr pairs, got {finding_map!r}", param_hint="--finding-map")
    mapping = {a.strip(): b.strip() for a, b in pairs}
    cxr = read_table(path, "cxr")
    with data_errors(model_dir):
        model = CXRFindingClassifier.load(model_dir)
    with data_errors(path):
        out = score_cxr_table(model, cxr, cohort, finding_map=mapping, batch_size=batch_size)
    write_table(out, path, "cxr")
    typer.echo(f"scored {int(out['image_path'].notna().sum())} of {len(out)} studies "
               f"({', '.join('cxr_' + mapping.get(f, f) for f in model.findings_)}) -> {path}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("imaging")(_train_imaging)
    app.command("explain-image")(_explain_image)
    app.command("evaluate-imaging")(_evaluate_imaging)
    app.command("cxr-images")(_cxr_images)
    app.command("score-cxr")(_score_cxr)
