"""CLI commands for the cpn area: ``train cpn`` and ``explain``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer


def _bar(x: float, scale: float = 0.25, width: int = 20) -> str:
    """Text bar for a log10 Bayes factor: '+' raises risk (blue), '-' lowers it (red)."""
    if not np.isfinite(x):
        return ""
    n = min(width, int(round(abs(x) / scale * 2)))
    return ("+" if x > 0 else "-") * n


def explanation_table(ex: pd.DataFrame) -> str:
    """Plain-text table of one screen's explanation rows (sorted by |in-context| factor)."""
    total = ex[ex.feature == "total"]
    items = ex[ex.feature != "total"].copy()
    items = items.reindex(items["baseline"].abs().sort_values(ascending=False).index)
    lines = [f"{'feature':<20} {'value':>9} {'state':<12} {'age_h':>6} {'weight':>6} "
             f"{'log10 B(i)':>10} {'in ctx':>8}  bar (in context)"]
    for _, r in items.iterrows():
        val = "" if pd.isna(r.value) else f"{r.value:.4g}"
        age = "" if pd.isna(r.age_h) else f"{r.age_h:.1f}"
        w = "" if pd.isna(r.weight) else f"{r.weight:.2f}"
        lines.append(f"{r.feature:<20} {val:>9} {str(r.state):<12} {age:>6} {w:>6} "
                     f"{r.contribution:>10.3f} {r.baseline:>8.3f}  {_bar(r.baseline)}")
    if len(total):
        lines.append(f"{'total log10 B(E)':<20} {'':>9} {'':<12} {'':>6} {'':>6} "
                     f"{total.contribution.iloc[0]:>10.3f}")
    return "\n".join(lines)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Attach this area's commands to the CLI."""

    @train_app.command("cpn")
    def train_cpn(
        screens: Path = typer.Option(..., help="screens parquet (ehr.schema 'screens')"),
        out: Path = typer.Option(..., help="model directory to write"),
        network: str = typer.Option("physionet", help="'physionet', 'full' or an XMLBIF path"),
        max_iter: int = typer.Option(30, help="EM iterations"),
        max_rows: int = typer.Option(300_000, help="fit on at most this many screens (by stay)"),
        seed: int = typer.Option(0, help="random seed"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ):
        """Fit the causal probabilistic network on a screens table."""
        from cpn import SepsisCPN
        from sepsiscope.runinfo import run_json_text

        df = pd.read_parquet(screens)
        if progress:
            typer.echo(f"fitting CPN ({network}) on {len(df):,} screens ...")
        model = SepsisCPN(network, max_iter=max_iter, max_rows=max_rows, random_state=seed).fit(df)
        run = run_json_text({"command": "train cpn", "params": model.get_params()}, inputs={"screens": screens},
                            seeds={"model": seed}, extra={"complete": True})
        model.save(out, attachments={"run.json": run})
        typer.echo(f"wrote {out} (EM log-likelihood {model.em_history_[-1]:.4f}, "
                   f"{len(model.em_history_)} iterations)")
        _print_half_lives(model)

    @app.command("explain")
    def explain(
        stay: Optional[int] = typer.Argument(None, help="stay id to explain; omit to print half-lives"),
        model: Path = typer.Option(..., help="fitted CPN model directory"),
        screens: Optional[Path] = typer.Option(None, help="screens parquet holding the stay"),
        at: Optional[str] = typer.Option(None, help="screen time (default: the highest-risk screen)"),
    ):
        """Print one alarm's Bayes-factor explanation, or the model's fitted half-lives."""
        from cpn import SepsisCPN
        from ehr.schema import SchemaError
        from sepsiscope.models import screen_to_explain

        m = SepsisCPN.load(model)
        if stay is None:
            _print_half_lives(m)
            return
        if screens is None:
            raise typer.BadParameter("--screens is needed to explain a stay")
        try:
            row = screen_to_explain(m, pd.read_parquet(screens), stay, at)
        except SchemaError as exc:
            # e.g. a run directory's screens.parquet, which keeps only keys, labels and covariates
            raise typer.BadParameter(f"{screens}: {exc}; pass a full screens table (`sepsiscope screens "
                                     "COHORT`), or read the run's explanations.parquet") from None
        except ValueError as exc:
            raise typer.BadParameter(f"{screens}: {exc}") from None
        risk = m.predict_proba(row)[0, 1]
        typer.echo(f"stay {stay}  screen {row['screen_time'].iloc[0]}  "
                   f"P(sepsis within 48 h) = {risk:.3f}")
        typer.echo(explanation_table(m.explain(row)))


def _print_half_lives(model) -> None:
    typer.echo("fitted half-lives (hours):")
    for k, v in sorted(model.half_lives_.items()):
        typer.echo(f"  {k:<14} {v:8.2f}")
    if model.half_life_scale_:
        typer.echo("group multipliers: " + ", ".join(f"{g}={m:g}" for g, m in
                                                     sorted(model.half_life_scale_.items())))
    if getattr(model, "cxr_prior_", None):
        typer.echo("CXR calibration prevalence (likelihood ratios are taken against it): "
                   + ", ".join(f"{v}={p:.3f}" for v, p in sorted(model.cxr_prior_.items())))
