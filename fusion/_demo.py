"""Tiny seeded screens for doctests and tests: two concepts, a few hours per stay, optional films.

Septic stays (every third) have a heart rate and lactate that rise towards onset, which falls
just after the last screen; with ``images=True`` some stays get CXR studies whose embedding
carries the sepsis signal (a stand-in for a consolidation), attached by
:func:`fusion.embeddings.attach_embeddings`.

>>> s = demo_screens(n_stays=6, seed=0, hours=5, images=True)
>>> s.shape[0], int(s["label"].sum()) > 0, "emb_cxr_000" in s.columns
(30, True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion.embeddings import attach_embeddings, embedding_names

__all__ = ["demo_screens", "demo_embeddings"]

_T0 = pd.Timestamp("2024-01-01")


def demo_embeddings(n_stays: int = 24, seed: int = 0, hours: int = 14, dim: int = 4) -> pd.DataFrame:
    """CXR embedding table for the stays of :func:`demo_screens`: about half the stays have films."""
    rng = np.random.default_rng([seed, 1])
    rows = []
    for stay in range(n_stays):
        if rng.random() < 0.5:
            continue
        septic = stay % 3 == 0
        for k, t in enumerate(np.sort(rng.uniform(0.0, hours, rng.integers(1, 3)))):
            emb = rng.normal(0.0, 1.0, dim) + (1.5 if septic else 0.0) * (np.arange(dim) == 0)
            rows.append({"study_id": 100 * stay + k, "subject_id": stay, "stay_id": stay,
                         "time": _T0 + pd.Timedelta(hours=float(t)), **dict(zip(embedding_names(dim), emb))})
    return pd.DataFrame(rows)


def demo_screens(n_stays: int = 24, seed: int = 0, hours: int = 14, images: bool = False) -> pd.DataFrame:
    """Screens of ``n_stays`` stays of ``hours`` hourly rows (``hr``, ``lact``, static, labels)."""
    rng = np.random.default_rng(seed)
    stay = np.repeat(np.arange(n_stays), hours)
    hour = np.tile(np.arange(1, hours + 1), n_stays).astype("float64")
    septic = stay % 3 == 0
    onset_in_h = np.where(septic, hours + 1 - hour, np.nan)
    ramp = np.where(septic, hour / hours, 0.0)
    measured_hr = rng.random(len(stay)) < 0.7
    measured_lact = (rng.random(len(stay)) < 0.25) | (hour == 1)
    out = pd.DataFrame({"subject_id": stay, "stay_id": stay,
                        "screen_time": _T0 + pd.to_timedelta(hour, unit="h"), "hours_since_admit": hour})
    signals = (("hr", measured_hr, 85.0, 35.0, 8.0), ("lact", measured_lact, 1.2, 2.5, 0.4))
    for name, measured, base, rise, sd in signals:
        raw = base + rise * ramp + rng.normal(0.0, sd, len(stay))
        last = pd.Series(np.where(measured, raw, np.nan)).groupby(stay).ffill().to_numpy()
        t_meas = pd.Series(np.where(measured, hour, np.nan)).groupby(stay).ffill().to_numpy()
        out[name] = last
        out[f"{name}_age_h"] = hour - t_meas + 0.5
    out["age"] = np.repeat(rng.uniform(30, 90, n_stays), hours)
    out["sex"] = np.repeat(np.where(rng.random(n_stays) < 0.5, "F", "M"), hours)
    out["department"] = np.repeat(np.array(["ward", "ICU"])[rng.integers(0, 2, n_stays)], hours)
    out["onset_in_h"] = onset_in_h
    out["label"] = ((onset_in_h > 0) & (onset_in_h <= 48)).astype(np.int64)
    if images:
        out = attach_embeddings(out, demo_embeddings(n_stays, seed, hours))
    return out
