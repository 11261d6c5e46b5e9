"""CLI: ``train ddl`` — the DDL-CXR generator of up-to-date chest-film embeddings (:mod:`fusion.ddl_model`).

Reads a screens table, the per-study CXR embeddings (``cxr_embeddings.parquet`` from
``sepsiscope embed-cxr``) and the cohort's ``cxr.parquet`` for the films' findings (ground truth
``truth_<finding>`` where the cohort has it, else the imaging model's ``cxr_<finding>`` >= 0.5),
which fit the latent space's probes. The generator then feeds ``sepsiscope train fusion
--cxr-latent generated --generator DIR``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sepsiscope.errors import DataError, data_errors
from sepsiscope.options import choice, learning_rate, seed as seed_value
from sepsiscope.outputs import MODEL_MARKER, check_output_dir, existing_file, read_screens

__all__ = ["train_ddl", "film_findings"]


def film_findings(embeddings, cxr, cxr_path: Path):
    """The findings ``(n, F)`` of each embedded film: ``truth_<f>`` if present, else ``cxr_<f> >= 0.5``."""
    from ehr.schema import CXR_FINDINGS

    for prefix, threshold in (("truth_", None), ("cxr_", 0.5)):
        cols = [f"{prefix}{f}" for f in CXR_FINDINGS]
        if all(c in cxr.columns for c in cols):
            break
    else:
        raise DataError(f"{cxr_path}: no finding columns (truth_<finding> or cxr_<finding>) for the films")
    if "study_id" not in embeddings.columns:
        raise DataError("--embeddings: no study_id column to join the films' findings on")
    joined = embeddings[["study_id"]].merge(cxr[["study_id", *cols]], on="study_id", how="left")
    if joined[cols].isna().any(axis=1).any():
        sid = joined.loc[joined[cols].isna().any(axis=1), "study_id"].iloc[0]
        raise DataError(f"{cxr_path}: study_id {sid} of the embeddings has no findings here (another cohort?)")
    values = joined[cols].to_numpy(dtype=float)
    return values if threshold is None else (values >= threshold).astype(float)


def train_ddl(
    screens: Path = typer.Option(..., "--screens", help="Screens parquet (every screen hour of each stay)."),
    embeddings: Path = typer.Option(..., "--embeddings", help="CXR embeddings parquet (study_id, stay_id, time, "
                                    "emb_cxr_*; `sepsiscope embed-cxr`)."),
    cxr: Path = typer.Option(..., "--cxr", help="The cohort's cxr.parquet: the films' findings for the probes."),
    out: Path = typer.Option(..., "--out", help="Generator directory (model.json, latent_space/, generator/, "
                             "run.json)."),
    method: str = typer.Option("diffusion", "--method", help="diffusion | regression (the no-diffusion baseline)."),
    components: int = typer.Option(32, "--components", min=1, max=1024, help="Latent dimension (PCA)."),
    window_h: int = typer.Option(48, "--window-h", min=1, max=10_000, help="Hours of EHR since the previous film."),
    epochs: int = typer.Option(300, "--epochs", min=1, max=100_000, help="Training epochs."),
    hidden: int = typer.Option(128, "--hidden", min=4, max=4096, help="Denoiser width."),
    timesteps: int = typer.Option(200, "--timesteps", min=2, max=10_000, help="Diffusion steps in training."),
    sample_steps: int = typer.Option(25, "--sample-steps", min=1, max=10_000, help="DDIM steps when generating."),
    contrastive_weight: float = typer.Option(0.1, "--contrastive-weight", min=0.0, max=100.0,
                                             help="Weight of the InfoNCE term (0: off)."),
    use_ehr: bool = typer.Option(True, "--ehr/--no-ehr", help="Condition on the EHR since the previous film."),
    use_previous: bool = typer.Option(True, "--previous/--no-previous", help="Condition on the previous film."),
    lr: float = typer.Option(2e-3, "--lr", callback=learning_rate, help="AdamW learning rate."),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Seed of initialisation, batches and noise."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Train the DDL-CXR generator: an up-to-date film latent from the previous film and the EHR since."""
    from ehr.tables import read_table
    from fusion.ddl_model import CXRLatentGenerator
    from sepsiscope.commands.fusion import attach_embeddings_file, read_embeddings_file
    from sepsiscope.progress import console, step
    from sepsiscope.runinfo import run_json_text

    choice(method, ("diffusion", "regression"), "--method")
    if sample_steps > timesteps:
        raise typer.BadParameter(f"must be at most --timesteps ({timesteps})", param_hint="--sample-steps")
    existing_file(embeddings, "--embeddings")
    existing_file(cxr, "--cxr")
    table = read_screens(screens, min_stays=2)
    check_output_dir(out, marker=MODEL_MARKER, inputs={"--screens": screens, "--embeddings": embeddings, "--cxr": cxr})
    emb = read_embeddings_file(embeddings)  # read once: attached to the screens and joined to the findings
    table = attach_embeddings_file(table, embeddings, embeddings=emb)
    with data_errors(cxr):
        findings = film_findings(emb, read_table(cxr, "cxr"), cxr)
    params = {"method": method, "hidden": hidden, "timesteps": timesteps, "sample_steps": sample_steps,
              "contrastive_weight": contrastive_weight, "use_ehr": use_ehr, "use_previous": use_previous,
              "epochs": epochs, "lr": lr, "random_state": seed}
    generator = CXRLatentGenerator(components, window_h=window_h, **params)
    with step(f"fitting the DDL-CXR generator on the films of {table['stay_id'].nunique():,} stays", progress), \
            data_errors(screens):
        generator.fit(table, emb, findings)
    run = run_json_text({"command": "train ddl", "components": components, "window_h": window_h, "params": params},
                        inputs={"screens": screens, "embeddings": embeddings, "cxr": cxr}, seeds={"model": seed},
                        extra={"complete": True, "latent_variance_kept": generator.space_.explained_variance_ratio_})
    generator.save(out, attachments={"run.json": run})
    console.print(f"DDL-CXR generator ({method}, {generator.space_.dim_}-d latent, "
                  f"{generator.space_.explained_variance_ratio_:.1%} of the embedding variance) -> {out}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("ddl")(train_ddl)
