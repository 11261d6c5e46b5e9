"""CLI: ``train sequence`` (the EHR-only deep model) and ``train fusion`` (EHR + chest X-ray embeddings).

Both read a screens table; ``train fusion`` also the CXR embeddings of the studies
(``cxr_embeddings.parquet``: ``stay_id, time, emb_cxr_000 ...``, one row per study, e.g. from
:func:`fusion.embeddings.embed_cxr_table` or :func:`fusion.embeddings.synthetic_cxr_embeddings`),
attached to the screens under the leakage rule (:func:`fusion.embeddings.attach_embeddings`).
Screens that already carry ``emb_cxr_*`` columns need no ``--embeddings``.

``embed-cxr COHORT`` writes that table: with ``--encoder`` (a fitted imaging model) from the
studies' images; without, for a synthetic cohort, from procedural films and a small encoder
trained on the training split's films only.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sepsiscope.errors import DataError, UsageError, data_errors
from sepsiscope.options import choice, fraction, learning_rate, positive_hours, seed as seed_value
from sepsiscope.outputs import MODEL_MARKER, check_output_dir, existing_file, read_screens

__all__ = ["attach_embeddings_file", "attach_generated_films", "embed_cxr", "train_fusion", "train_sequence"]

_DEVICES = ("auto", "cpu", "cuda")
_CELLS = ("lstm", "gru")

_SCREENS = typer.Option(..., "--screens", help="Screens parquet (with 'onset_in_h'; every screen hour of each stay).")
_OUT = typer.Option(..., "--out", help="Model directory: model.json + weights.safetensors + run.json (written at "
                    "once).")
_EPOCHS = typer.Option(20, "--epochs", min=1, max=10_000, help="Most training epochs (early stopping may use fewer).")
_HIDDEN = typer.Option(64, "--hidden", min=1, max=4096, help="Recurrent encoder size.")
_LAYERS = typer.Option(2, "--layers", min=1, max=16, help="Recurrent layers.")
_CELL = typer.Option("lstm", "--cell", help="lstm | gru")
_HEAD = typer.Option(64, "--head-hidden", min=1, max=4096, help="Hidden units of the MLP head.")
_BATCH = typer.Option(32, "--batch-size", min=1, max=100_000, help="Stays per batch.")
_LR = typer.Option(2e-3, "--lr", callback=learning_rate, help="Adam learning rate.")
_PATIENCE = typer.Option(3, "--patience", min=1, max=10_000, help="Epochs without a better validation AUPRC "
                         "before stopping.")
_VALIDATION = typer.Option(0.2, "--validation-fraction", callback=fraction, help="Share of patients held out for "
                           "early stopping and the temperature (0 < f < 1).")
_DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
_SEED = typer.Option(0, "--seed", callback=seed_value, help="Seed for initialisation, batches and the validation "
                     "split.")
_HORIZON = typer.Option(48.0, "--horizon-h", callback=positive_hours, help="Label horizon: onset within this many "
                        "hours.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress.")


def read_embeddings_file(path: Path, option: str = "--embeddings"):
    """The CXR embeddings parquet ``path``; errors name the file."""
    import pandas as pd
    import pyarrow as pa

    p = existing_file(path, option)
    try:
        return pd.read_parquet(p)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable parquet table ({exc})") from None


def attach_embeddings_file(table, path: Path, option: str = "--embeddings", embeddings=None):
    """``table`` with the CXR embeddings of the parquet ``path`` attached (``embeddings``: that
    file already read); errors name the file. A table with ``image_path`` (``embed-cxr`` writes
    it) also gives each screen its film's file (``emb_cxr_image``), which a fusion model that
    fine-tunes the encoder reads."""
    from fusion.embeddings import attach_embeddings

    emb = read_embeddings_file(path, option) if embeddings is None else embeddings
    with data_errors(path):
        return attach_embeddings(table, emb, image_paths="image_path" in emb.columns)


def attach_generated_films(table, generator: Path, screens: Path):
    """``table`` where every screen with a film sees the film of its own hour from the DDL-CXR ``generator``.

    Generated with seed 0, so ``train fusion`` and ``predict`` give a screen the same film.
    """
    from fusion.ddl_model import CXRLatentGenerator
    from sepsiscope.outputs import existing_dir

    existing_dir(generator, "--generator", "generator folder")
    with data_errors(generator):
        gen = CXRLatentGenerator.load(generator)
    with data_errors(screens):
        return gen.attach(table, seed=0)


def _shared(epochs, hidden, layers, cell, head_hidden, batch_size, lr, patience, validation_fraction, device,
            seed) -> dict:
    """The checked ``__init__`` keywords both deep models take."""
    choice(cell, _CELLS, "--cell")
    choice(device, _DEVICES, "--device")
    if validation_fraction == 0:
        raise typer.BadParameter("must be above 0: early stopping needs validation patients",
                                 param_hint="--validation-fraction")
    return {"epochs": epochs, "hidden": hidden, "layers": layers, "cell": cell, "head_hidden": head_hidden,
            "batch_size": batch_size, "lr": lr, "patience": patience, "validation_fraction": validation_fraction,
            "device": device, "random_state": seed}


def _fit_and_save(model, table, screens: Path, out: Path, *, horizon_h: float, seed: int, progress: bool,
                  command: str, inputs: dict) -> None:
    """Fit ``model`` on ``table`` (labels at ``horizon_h``), save it with ``run.json``."""
    import numpy as np

    from ehr.estimator import Labels
    from sepsiscope.progress import console, step
    from sepsiscope.runinfo import run_json_text

    with data_errors(screens):
        labels = Labels.from_screens(table, horizon_h)
        if "label" in table.columns and not np.array_equal(table["label"].to_numpy(), labels.y):
            raise ValueError(f"column 'label' does not match onset within {horizon_h:g} h; pass the "
                             "--horizon-h the screens were built with")
        if labels.y.min() == labels.y.max():
            raise ValueError(f"every screen has label {labels.y[0]} (onset within {horizon_h:g} h): the model "
                             "needs septic and non-septic screens")
        with step(f"fitting {model.model_name} on {len(table):,} screens", progress):
            model.fit(table, labels)
    run = run_json_text({"command": command, "horizon_h": horizon_h, "params": model.get_params()},
                        inputs=inputs, seeds={"model": seed},
                        extra={"fitted": {"epochs": len(model.history_), "temperature": model.temperature_,
                                          "n_inputs": len(model.features_in_)}, "complete": True})
    model.save(out, attachments={"run.json": run})
    console.print(f"{model.model_name}: {len(model.history_)} epochs on {len(model.features_in_)} input columns "
                  f"-> {out}")


def train_sequence(
    screens: Path = _SCREENS, out: Path = _OUT, epochs: int = _EPOCHS, hidden: int = _HIDDEN,
    layers: int = _LAYERS, cell: str = _CELL, head_hidden: int = _HEAD, batch_size: int = _BATCH,
    lr: float = _LR, patience: int = _PATIENCE, validation_fraction: float = _VALIDATION, device: str = _DEVICE,
    seed: int = _SEED, horizon_h: float = _HORIZON, progress: bool = _PROGRESS,
) -> None:
    """Train the EHR-only sequence model (2-layer LSTM over hourly values, masks and time gaps)."""
    from fusion.models import SequenceModel

    params = _shared(epochs, hidden, layers, cell, head_hidden, batch_size, lr, patience, validation_fraction,
                     device, seed)
    table = read_screens(screens, min_stays=2)
    check_output_dir(out, marker=MODEL_MARKER, inputs={"--screens": screens})
    _fit_and_save(SequenceModel(**params), table, screens, out, horizon_h=horizon_h, seed=seed, progress=progress,
                  command="train sequence", inputs={"screens": screens})


def _finetune_params(finetune: str, strategy: str, encoder, encoder_lr: float, image_root, embeddings,
                     cxr_latent: str) -> dict:
    """The checked fine-tuning keywords of ``FusionModel`` (paths made absolute: ``predict`` may run elsewhere)."""
    from fusion.models import _FINETUNABLE, FINETUNE
    from sepsiscope.outputs import existing_dir

    choice(finetune, FINETUNE, "--finetune")
    if finetune == "frozen":
        if encoder is not None or image_root is not None:
            raise typer.BadParameter("--encoder and --image-root go with --finetune last_block", param_hint="--encoder")
        return {}
    if strategy not in _FINETUNABLE:
        raise typer.BadParameter(f"--finetune last_block trains one network end to end: use --strategy "
                                 f"{' or '.join(_FINETUNABLE)}", param_hint="--finetune")
    if cxr_latent != "observed":
        raise typer.BadParameter("--finetune last_block reads the films as taken (--cxr-latent observed)",
                                 param_hint="--finetune")
    if encoder is None:
        raise typer.BadParameter("--finetune last_block needs --encoder DIR (the imaging model that made the "
                                 "embeddings)", param_hint="--encoder")
    existing_dir(encoder, "--encoder", "model folder")
    if image_root is None:
        if embeddings is None:
            raise typer.BadParameter("--finetune last_block needs --image-root DIR when the screens carry the "
                                     "embeddings", param_hint="--image-root")
        image_root = Path(embeddings).parent
    existing_dir(image_root, "--image-root", "image folder")
    return {"finetune": finetune, "encoder": str(Path(encoder).resolve()), "encoder_lr": encoder_lr,
            "image_root": str(Path(image_root).resolve())}


def train_fusion(
    screens: Path = _SCREENS, out: Path = _OUT,
    strategy: str = typer.Option("mid", "--strategy", help="mid (attention) | early | late | medfuse"),
    embeddings: Path = typer.Option(None, "--embeddings", help="CXR embeddings parquet (stay_id, time, "
                                    "emb_cxr_000 ...; one row per study); not needed when the screens carry "
                                    "emb_cxr_* columns."),
    max_images: int = typer.Option(3, "--max-images", min=1, max=100, help="Most recent films each screen "
                                   "attends to (mid)."),
    image_proj: int = typer.Option(16, "--image-proj", min=1, max=4096, help="Projected film embedding size "
                                   "(early, late, medfuse)."),
    cxr_latent: str = typer.Option("observed", "--cxr-latent", help="observed (the films as taken) | generated: "
                                   "every screen with a film sees instead the film of its own hour generated by "
                                   "--generator (DDL-CXR)."),
    generator: Path = typer.Option(None, "--generator", help="With --cxr-latent generated: a DDL-CXR generator "
                                   "directory (`sepsiscope train ddl`)."),
    finetune: str = typer.Option("frozen", "--finetune", help="frozen (the embeddings as given) | last_block: "
                                 "fine-tune the last block of --encoder jointly with the fusion model (mid, "
                                 "early), reading every film from --image-root."),
    encoder: Path = typer.Option(None, "--encoder", help="With --finetune last_block: the imaging model that "
                                 "made the embeddings (`embed-cxr` writes it to OUT/encoder)."),
    encoder_lr: float = typer.Option(2e-4, "--encoder-lr", callback=learning_rate, help="With --finetune "
                                     "last_block: learning rate of the encoder's last block."),
    image_root: Path = typer.Option(None, "--image-root", help="With --finetune last_block: folder the films' "
                                    "image_path start from (default: the --embeddings file's folder, where "
                                    "`embed-cxr` renders synthetic films; the cohort folder for real images)."),
    epochs: int = _EPOCHS, hidden: int = _HIDDEN, layers: int = _LAYERS, cell: str = _CELL,
    head_hidden: int = _HEAD, batch_size: int = _BATCH, lr: float = _LR, patience: int = _PATIENCE,
    validation_fraction: float = _VALIDATION, device: str = _DEVICE, seed: int = _SEED,
    horizon_h: float = _HORIZON, progress: bool = _PROGRESS,
) -> None:
    """Train an EHR + chest X-ray fusion model on screens and CXR study embeddings."""
    from fusion.models import STRATEGIES, FusionModel
    from fusion.sequences import EMB_AGE, EMB_IMAGE, embedding_columns

    choice(strategy, STRATEGIES, "--strategy")
    choice(cxr_latent, ("observed", "generated"), "--cxr-latent")
    if (cxr_latent == "generated") != (generator is not None):
        raise typer.BadParameter("--cxr-latent generated needs --generator DIR, and --generator goes only with it",
                                 param_hint="--generator")
    params = _shared(epochs, hidden, layers, cell, head_hidden, batch_size, lr, patience, validation_fraction,
                     device, seed)
    if embeddings is not None:
        existing_file(embeddings, "--embeddings")
    params.update(_finetune_params(finetune, strategy, encoder, encoder_lr, image_root, embeddings, cxr_latent))
    table = read_screens(screens, min_stays=2)
    check_output_dir(out, marker=MODEL_MARKER, inputs={"--screens": screens, "--embeddings": embeddings,
                                                       "--generator": generator})
    if embeddings is not None:
        table = attach_embeddings_file(table, embeddings)
    elif not embedding_columns(table.columns) or EMB_AGE not in table.columns:
        raise UsageError(f"--screens {screens}: no CXR embeddings (emb_cxr_* and {EMB_AGE} columns); a fusion "
                         "model needs them: pass --embeddings cxr_embeddings.parquet")
    if table[EMB_AGE].notna().sum() == 0:
        raise DataError(f"{embeddings or screens}: no screen sees a CXR study (no study of these stays at or "
                        "before their screens); check that the embeddings belong to these screens")
    if finetune == "last_block" and EMB_IMAGE not in table.columns:
        raise DataError(f"{embeddings or screens}: no image_path column (each study's film), which --finetune "
                        "last_block reads; embed the studies with `sepsiscope embed-cxr`")
    if generator is not None:
        table = attach_generated_films(table, generator, screens)
    model = FusionModel(strategy, max_images=max_images, image_proj=image_proj, **params)
    _fit_and_save(model, table, screens, out, horizon_h=horizon_h, seed=seed, progress=progress,
                  command=f"train fusion --cxr-latent {cxr_latent}" + ("" if finetune == "frozen" else f" --finetune {finetune}"),
                  inputs={k: v for k, v in (("screens", screens), ("embeddings", embeddings),
                                            ("generator", generator and generator / "model.json"),
                                            ("encoder", encoder and encoder / "model.json"))
                          if v is not None})


def embed_cxr(
    cohort: Path = typer.Argument(..., help="Cohort directory holding cxr.parquet (`sepsiscope simulate`, ingest)."),
    out: Path = typer.Option(..., "--out", help="Folder: cxr_embeddings.parquet (+ cxr_embeddings.json; without "
                             "--encoder also the rendered films, the encoder and encoder_split.csv)."),
    encoder: Path = typer.Option(None, "--encoder", help="A fitted imaging model (`sepsiscope train imaging`): "
                                 "embed every study's image (cxr.parquet image_path, relative to COHORT). "
                                 "Without it: a synthetic cohort's procedural films and a small encoder trained "
                                 "on its training-split stays."),
    image_size: int = typer.Option(64, "--image-size", min=8, max=1024, help="Without --encoder: film size."),
    encoder_epochs: int = typer.Option(8, "--encoder-epochs", min=1, max=10_000, help="Without --encoder: epochs "
                                       "of the small encoder."),
    device: str = _DEVICE, seed: int = _SEED, progress: bool = _PROGRESS,
) -> None:
    """Embed a cohort's chest X-ray studies for `train fusion --embeddings` and `predict --embeddings`.

    Without --encoder the encoder learns only from the films of the training split that `sepsiscope run`
    uses with the same --seed, default split fractions and no --exclusions (split by patient; written to
    encoder_split.csv): fit fusion models on those
    stays and evaluate on the others.
    """
    from ehr.artefacts import atomic_dir, atomic_file
    from ehr.schema import CXR_FINDINGS
    from ehr.splits import split_patients
    from ehr.tables import read_table
    from fusion.sequences import embedding_columns
    from sepsiscope.outputs import existing_dir
    from sepsiscope.progress import console, step
    from sepsiscope.runinfo import write_run_json

    choice(device, _DEVICES, "--device")
    torch_device = None if device == "auto" else device   # None: CUDA when available
    cxr_path = existing_dir(cohort, "COHORT", "cohort directory") / "cxr.parquet"
    if not cxr_path.is_file():
        raise UsageError(f"COHORT {cohort}: has no cxr.parquet (no chest X-ray studies to embed)")
    if encoder is not None:
        existing_dir(encoder, "--encoder", "model folder")
    check_output_dir(out, marker="cxr_embeddings.parquet", inputs={"COHORT": cohort, "--encoder": encoder})
    cxr = read_table(cxr_path, "cxr")
    if cxr.empty:
        raise DataError(f"{cxr_path}: no chest X-ray studies to embed")
    # written under a temporary name and renamed when complete: an interrupted re-run leaves the old
    # embeddings whole, never mixed with a new encoder or split
    with atomic_dir(out, keep_name=True) as stage:
        if encoder is None:
            from ehr.cohort import Cohort
            from fusion.embeddings import synthetic_cxr_embeddings

            if not all(f"truth_{f}" in cxr.columns for f in CXR_FINDINGS):
                raise UsageError(f"{cxr_path}: no procedural ground truth (truth_<finding>) to render films from; "
                                 "embed real films with --encoder MODEL_DIR (`sepsiscope train imaging`)")
            split = split_patients(Cohort.load(cohort).stays, seed=seed)
            with atomic_file(stage / "encoder_split.csv") as tmp:
                split.rename("split").rename_axis("stay_id").reset_index().to_csv(tmp, index=False)
            with step(f"rendering {len(cxr):,} films, training the encoder on the training split", progress), \
                    data_errors(cxr_path):
                table = synthetic_cxr_embeddings(cxr, split.index[split == "train"].to_numpy(), stage, seed=seed,
                                                 image_size=image_size, epochs=encoder_epochs, device=torch_device)
        else:
            from fusion.embeddings import embed_cxr_table
            from sepsiscope.models import load_model

            with data_errors(encoder):
                model = load_model(encoder)
            if model.kind != "imaging":
                raise UsageError(f"--encoder {encoder}: a {model.kind} model; expected an imaging model")
            if cxr["image_path"].isna().all():
                raise DataError(f"{cxr_path}: no study has an image (image_path); give them images first "
                                "(`sepsiscope cxr-images COHORT`)")
            with step(f"embedding {int(cxr['image_path'].notna().sum()):,} films", progress), data_errors(cxr_path):
                table = embed_cxr_table(model, cxr, cohort, device=torch_device)
            with atomic_file(stage / "cxr_embeddings.parquet") as tmp:
                table.to_parquet(tmp)
        write_run_json(stage, {"command": "embed-cxr", "encoder": None if encoder is None else str(encoder),
                               "image_size": image_size, "encoder_epochs": encoder_epochs},
                       inputs={"cxr": cxr_path}, seeds={"split": seed, "encoder": seed},
                       extra={"studies": int(len(table)), "complete": True})
    console.print(f"{len(table):,} studies embedded ({len(embedding_columns(table.columns))} dimensions) -> "
                  f"{out / 'cxr_embeddings.parquet'}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("sequence")(train_sequence)
    train_app.command("fusion")(train_fusion)
    app.command("embed-cxr")(embed_cxr)
