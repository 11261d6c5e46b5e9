"""CLI commands for the imaging area: ``train imaging``, ``explain-image``, ``cxr-images``, ``score-cxr``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def _train_imaging(
    data: Path = typer.Option(..., "--data", help="Folder with labels.csv + images, or a MedMNIST-style .npz."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.json + model.safetensors)."),
    arch: str = typer.Option("densenet121", help="densenet121 | resnet18 | resnet34 | small"),
    image_size: int = typer.Option(224, help="Square input size in pixels."),
    epochs: int = typer.Option(10, help="Maximum epochs (early stopping on validation AUROC)."),
    findings: str = typer.Option("", help="Comma-separated finding columns; default: every 0/1 finding column."),
    split: str = typer.Option("train", help="Rows of labels.csv whose 'split' starts with this ('' = all)."),
    val_fraction: float = typer.Option(0.2, help="Patient/duplicate-safe validation fraction."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    patience: int = typer.Option(3, help="Early-stopping patience in epochs."),
    max_steps: int = typer.Option(0, help="Cap on steps per epoch (0 = no cap)."),
    limit: int = typer.Option(0, help="Read only the first N labelled rows (0 = all)."),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch default)."),
    seed: int = typer.Option(0, help="Seed for the split, initialisation, shuffling and augmentation."),
    resume: bool = typer.Option(False, help="Resume from OUT/checkpoint.pt."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a CXR finding model on labelled images and save it with validation metrics."""
    import torch

    from imaging.estimator import CXRFindingClassifier, training_sets
    from sepsiscope.runinfo import run_json_text

    if threads:
        torch.set_num_threads(threads)
    names = tuple(f.strip() for f in findings.split(",") if f.strip()) or None
    model = CXRFindingClassifier(arch=arch, findings=names, image_size=image_size, epochs=epochs,
                                 batch_size=batch_size, lr=lr, patience=patience,
                                 max_steps_per_epoch=max_steps or None, validation_fraction=val_fraction,
                                 random_state=seed)
    t0 = time.perf_counter()
    train_set, val_set = training_sets(data, image_size=image_size, findings=names, split=split or None,
                                       limit=limit or None, model=model, progress=progress)
    load_s = time.perf_counter() - t0
    typer.echo(f"{len(train_set)} training / {len(val_set)} validation images "
               f"(findings {', '.join(train_set.findings)}; loaded in {load_s:.0f} s)")
    model.fit(train_set, validation=val_set, checkpoint_dir=out, resume=resume, progress=progress)
    # the checkpoint (resume point) travels with the model: the directory is replaced as a whole
    checkpoint = out / "checkpoint.pt"
    run = run_json_text({"command": "train imaging", "data": str(data), "split": split, "limit": limit,
                         "params": model.get_params()}, seeds={"model": seed}, extra={
                            "timings": {"load_s": load_s, "train_s": time.perf_counter() - t0 - load_s},
                            "complete": True})
    model.save(out, attachments={"run.json": run, **({checkpoint.name: checkpoint} if checkpoint.is_file() else {})})
    for h in model.history_:
        typer.echo(f"epoch {h['epoch']}: loss {h['train_loss']:.4f}  val AUROC {h['val_auroc']:.4f}  "
                   f"{h['images_per_s']:.0f} img/s")
    temperatures = model.network_.temperatures
    for i, f in enumerate(model.findings_):
        m = model.val_metrics_[f]
        typer.echo(f"{f}: AUROC {m['auroc']:.3f}  accuracy {m['accuracy']:.3f}  sensitivity {m['sensitivity']:.3f}  "
                   f"specificity {m['specificity']:.3f}  (n={m['n']}, T={float(temperatures[i]):.2f})")
    typer.echo(f"saved {out} (best epoch {model.best_epoch_})")


def _explain_image(
    image: Path = typer.Argument(..., help="Image file (8-bit grayscale PNG/JPEG)."),
    model_dir: Path = typer.Option(..., "--model", help="Imaging model directory."),
    finding: str = typer.Option(..., "--finding", help="Finding to explain."),
    out: Path = typer.Option(..., "--out", help="PNG overlay to write."),
) -> None:
    """Save a Grad-CAM overlay PNG for one finding on one image, and print the probabilities."""
    from imaging.estimator import CXRFindingClassifier
    from imaging.gradcam import save_grad_cam

    model = CXRFindingClassifier.load(model_dir).network_
    save_grad_cam(model, image, finding, out)
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

    from ehr.schema import CXR_FINDINGS, validate
    from imaging.synthetic_images import render_cohort_images, sample_real_images

    path = cohort / "cxr.parquet"
    cxr = validate(pd.read_parquet(path), "cxr", source=str(path))
    out = sample_real_images(cxr, real, seed=seed) if real is not None else render_cohort_images(
        cxr, cohort, seed, size=size, conspicuity=conspicuity)
    validate(out, "cxr").to_parquet(path, index=False)
    labels = pd.DataFrame({"image": out["image_path"], "patient_id": out["subject_id"]})
    for f in CXR_FINDINGS:
        if f"truth_{f}" in out.columns:
            labels[f] = out[f"truth_{f}"].fillna(0).astype(int)
    labels.to_csv(cohort / "labels.csv", index=False)
    typer.echo(f"{len(out)} studies: images {'drawn from ' + str(real) if real is not None else 'rendered'}; "
               f"wrote {path} and {cohort / 'labels.csv'}")


def _score_cxr(
    cohort: Path = typer.Argument(..., help="Cohort directory holding cxr.parquet with image_path."),
    model_dir: Path = typer.Option(..., "--model", help="Imaging model directory."),
    finding_map: str = typer.Option("", help="model=cxr finding renames, e.g. 'pneumonia=consolidation' "
                                    "for a Kermany model."),
    batch_size: int = typer.Option(64),
) -> None:
    """Fill the cxr table's cxr_<finding> columns with the imaging model's probabilities."""
    import pandas as pd

    from ehr.schema import validate
    from imaging.estimator import CXRFindingClassifier
    from imaging.scoring import score_cxr_table

    path = cohort / "cxr.parquet"
    cxr = validate(pd.read_parquet(path), "cxr", source=str(path))
    model = CXRFindingClassifier.load(model_dir)
    mapping = dict(pair.split("=", 1) for pair in finding_map.split(",") if pair.strip())
    out = score_cxr_table(model, cxr, cohort, finding_map=mapping, batch_size=batch_size)
    out.to_parquet(path, index=False)
    typer.echo(f"scored {int(out['image_path'].notna().sum())} of {len(out)} studies "
               f"({', '.join('cxr_' + mapping.get(f, f) for f in model.findings_)}) -> {path}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("imaging")(_train_imaging)
    app.command("explain-image")(_explain_image)
    app.command("cxr-images")(_cxr_images)
    app.command("score-cxr")(_score_cxr)
