"""Screens, stays and NEWS2 of a source in one call, cached as parquet: what experiments and notebooks start from.

``experiment_tables("synthetic", n_stays=300)`` generates the linked synthetic cohort;
``experiment_tables("physionet", path=ZIP, cache=DIR)`` reads PhysioNet 2019 set A once and keeps
``setA_screens.parquet``, ``setA_stays.parquet`` and ``setA_news2.parquet`` in ``DIR`` (the files
``scripts/stack_setA_cv.py`` writes), so a rerun starts in seconds.

Examples
--------
>>> t = experiment_tables("synthetic", n_stays=40, seed=1)
>>> len(t.stays), {"stay_id", "onset_in_h", "label"} <= set(t.screens.columns), set(t.news2["model"])
(40, True, {'news2'})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["ExperimentTables", "experiment_tables"]


@dataclass
class ExperimentTables:
    """Screens (with labels), stays and NEWS2 ``predictions`` of one source; ``cxr`` when it has images."""

    screens: pd.DataFrame
    stays: pd.DataFrame
    news2: pd.DataFrame
    cxr: pd.DataFrame | None = None


def _build(events, stays, cxr) -> ExperimentTables:
    from ehr.screens import build_screens
    from evaluation.news2 import news2_predictions

    screens = build_screens(events, stays, cxr).reset_index(drop=True)
    news2 = news2_predictions(events, stays, screens)[0].astype({"fold": "Int64"})
    return ExperimentTables(screens, stays, news2, cxr)


def experiment_tables(source: str = "synthetic", *, n_stays: int = 300, seed: int = 0, path=None,
                      cache=None, max_stays: int | None = None) -> ExperimentTables:
    """The screens, stays and NEWS2 of ``source`` (``"synthetic"`` or ``"physionet"``).

    ``cache`` (PhysioNet): folder of the parquet cache (written when absent). ``max_stays``: keep
    the first N stays only (quick looks at a large source).
    """
    if source == "synthetic":
        from ehr.synthetic import generate_cohort

        c = generate_cohort(n_stays, seed=seed)
        tables = _build(c.events, c.stays, c.cxr)
    elif source == "physionet":
        files = [Path(cache) / f"setA_{n}.parquet" for n in ("screens", "stays", "news2")] if cache else None
        if files and all(f.is_file() for f in files):
            screens, stays, news2 = (pd.read_parquet(f) for f in files)
            tables = ExperimentTables(screens, stays, news2.astype({"fold": "Int64"}))
        else:
            from ehr.sources.physionet import read_physionet

            if path is None:
                raise ValueError("source 'physionet' needs path= (the training_setA .zip or .psv folder)")
            c = read_physionet(path)
            tables = _build(c.events, c.stays, None)
            if files:
                files[0].parent.mkdir(parents=True, exist_ok=True)
                for f, t in zip(files, (tables.screens, tables.stays, tables.news2)):
                    t.to_parquet(f, index=False)
    else:
        raise ValueError(f"unknown source {source!r}; expected 'synthetic' or 'physionet'")
    if max_stays:
        keep = tables.stays["stay_id"].iloc[:max_stays]
        tables = ExperimentTables(*(t[t["stay_id"].isin(keep)].reset_index(drop=True)
                                    for t in (tables.screens, tables.stays, tables.news2)),
                                  None if tables.cxr is None else tables.cxr[tables.cxr["stay_id"].isin(keep)])
    return tables
