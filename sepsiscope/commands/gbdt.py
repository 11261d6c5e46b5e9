"""CLI: ``train gbdt`` — grid search by patient-grouped CV, then a final fit on all screens."""

from __future__ import annotations

from pathlib import Path

import typer

from sepsiscope.errors import data_errors
from sepsiscope.options import choice, positive_hours, seed as seed_value
from sepsiscope.outputs import MODEL_MARKER, check_output_dir, read_screens

_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress.")


def train_gbdt(
    screens: Path = typer.Option(..., "--screens", help="Screens parquet (with the 'onset_in_h' column)."),
    out: Path = typer.Option(..., "--out", help="Model directory: model.json + booster, grid_results.csv, "
                             "run.json (written at once)."),
    backend: str = typer.Option("lightgbm", "--backend", help="lightgbm | xgboost"),
    trend: bool = typer.Option(False, "--trend/--no-trend", help="Add trend features (best effort mode)."),
    baseline: bool = typer.Option(False, "--baseline/--no-baseline", help="Add the baseline view: each value's "
                                  "deviation from the stay's own first-24 h mean, and measurements in 24 h."),
    grid: str = typer.Option("default", "--grid", help="default | full | none (fit the defaults, no search)"),
    folds: int = typer.Option(10, "--folds", min=2, max=100, help="Patient-grouped CV folds for the grid search."),
    n_jobs: int = typer.Option(None, "--n-jobs", min=1, max=256, help="Threads per fit (default: every core)."),
    extend_edges: int = typer.Option(1, "--extend-edges", min=0, max=5, help="Rounds of widening a grid axis "
                                     "whose best value sits on its edge, searched again (0: the grid as given)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (XGBoost only)"),
    seed: int = typer.Option(0, "--seed", callback=seed_value, help="Seed for folds and boosting."),
    horizon_h: float = typer.Option(48.0, "--horizon-h", callback=positive_hours,
                                    help="Label horizon: onset within this many hours."),
    progress: bool = _PROGRESS,
) -> None:
    """Train the gradient-boosting comparator on a screens table."""
    import numpy as np

    from ehr.estimator import Labels
    from gbdt import GBDTClassifier, best_params, grid_search
    from gbdt.search import GRID_RESULTS_FILE
    from sepsiscope.progress import console, step
    from sepsiscope.runinfo import run_json_text

    choice(grid, ("default", "full", "none"), "--grid")
    choice(backend, ("lightgbm", "xgboost"), "--backend")
    choice(device, ("auto", "cpu", "cuda"), "--device")
    table = read_screens(screens, min_stays=2)
    check_output_dir(out, marker=MODEL_MARKER, inputs={"--screens": screens})
    import os

    base = GBDTClassifier(backend, trend=trend, baseline=baseline, n_jobs=n_jobs or os.cpu_count() or 1, device=device,
                          random_state=seed)
    attachments: dict = {}
    with data_errors(screens):
        labels = Labels.from_screens(table, horizon_h)
        if "label" in table.columns and not np.array_equal(table["label"].to_numpy(), labels.y):
            raise ValueError(f"column 'label' does not match onset within {horizon_h:g} h; pass the "
                             "--horizon-h the screens were built with")
        params: dict = {}
        if grid != "none":
            with step(f"grid search ({grid}, {folds}-fold patient-grouped CV, {backend})", progress):
                results = grid_search(table, labels, param_grid=grid, n_splits=folds, estimator=base,
                                      random_state=seed, progress=progress, extend_edges=extend_edges)
            attachments[GRID_RESULTS_FILE] = results.to_csv(index=False)
            params = best_params(results)
            # the iteration count was chosen by CV: train exactly that many rounds on all data
            params["early_stopping_rounds"] = None
            console.print(f"best: {params} (mean AUROC {results['mean_auroc'].iloc[0]:.4f})")
        model = base.set_params(**params)
        with step(f"fitting {backend} on {len(table):,} screens", progress):
            model.fit(table, labels)
    attachments["run.json"] = run_json_text(
        {"command": "train gbdt", "backend": backend, "trend": trend, "baseline": baseline, "grid": grid, "folds": folds,
         "extend_edges": extend_edges,
         "horizon_h": horizon_h, "params": model.get_params()},
        inputs={"screens": screens}, seeds={"folds": seed, "boosting": seed},
        extra={"fitted": {"n_estimators": model.n_estimators_, "device": model.device_,
                          "n_features": len(model.feature_names_)}, "complete": True})
    model.save(out, attachments=attachments)
    console.print(f"{backend}: {model.n_estimators_} trees on {len(model.feature_names_)} features -> {out}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""
    train_app.command("gbdt")(train_gbdt)
