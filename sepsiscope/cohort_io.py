"""Reading and writing cohort directories: ``events.parquet``, ``stays.parquet``, ``cxr.parquet``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["write_cohort", "read_cohort"]


def write_cohort(out, events: pd.DataFrame, stays: pd.DataFrame, cxr: pd.DataFrame | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out / "events.parquet", index=False)
    stays.to_parquet(out / "stays.parquet", index=False)
    if cxr is not None:
        cxr.to_parquet(out / "cxr.parquet", index=False)
    return out


def read_cohort(path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Read a cohort directory; a clear error names what is missing."""
    path = Path(path)
    for name in ("events.parquet", "stays.parquet"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: no {name} here; write one with `sepsiscope simulate` or "
                                    f"`sepsiscope ingest`")
    events = pd.read_parquet(path / "events.parquet")
    stays = pd.read_parquet(path / "stays.parquet")
    cxr = pd.read_parquet(path / "cxr.parquet") if (path / "cxr.parquet").exists() else None
    return events, stays, cxr
