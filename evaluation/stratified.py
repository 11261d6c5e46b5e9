"""Is the signal physiology or the clock? Discrimination within bands of hours since admission,
and how often a context variable tops an alarm's explanation.

On ICU data much of what a model learns is *when* in the stay a screen falls: late screens are
often near onset. An overall AUROC mixes that with the physiological signal. Within a band of
hours since admission (0-6, 6-24, 24-72, >= 72 h) the clock is nearly constant, so the AUROC there
is what the model tells apart at the same point of the stay; the positives-weighted mean over the
bands summarises it. The second table counts the fired alarms whose largest in-context factor is
a context variable (time in the unit, department, age, sex) rather than a measurement.

Both read the tables the run already has: predictions, screens (``hours_since_admit``), stays,
alarms and explanations; screens and labels are those of the main table (screens with new data
before onset, onset within ``window_h``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ehr.estimator import predictions_frame
>>> t0 = pd.Timestamp("2024-01-01")
>>> stays = pd.DataFrame({"stay_id": [1, 2], "onset_time": [t0 + pd.Timedelta("76h"), pd.NaT]})
>>> h = np.tile([2.0, 10.0, 30.0, 75.0], 2)
>>> screens = pd.DataFrame({"stay_id": np.repeat([1, 2], 4), "screen_time": t0 + pd.to_timedelta(h, unit="h"),
...                         "hours_since_admit": h, "new_data": True})
>>> pred = predictions_frame(screens, [.1, .2, .6, .9, .2, .1, .5, .3], model="m", split="test")
>>> t = auroc_by_hours_band(pred, screens, stays)
>>> t[["band", "n_positive", "auroc"]].values.tolist()
[['24-72 h', 1, 1.0], ['>= 72 h', 1, 1.0], ['positives-weighted mean', 2, 1.0]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import roc_auc
from .protocol import prepare_screens

__all__ = ["HOURS_BANDS", "CONTEXT_FEATURES", "auroc_by_hours_band", "context_top_share", "band_labels", "band_index",
           "band_rows", "band_table", "merge_context_top_share"]

#: band edges in hours since admission (left-closed)
HOURS_BANDS = (0.0, 6.0, 24.0, 72.0, np.inf)
#: explanation features that describe the setting rather than the patient's physiology (CPN context
#: nodes and their GBDT counterparts)
CONTEXT_FEATURES = ("hours_band", "hours_since_admit", "department", "age_band", "age", "sex")


def _band_label(lo: float, hi: float) -> str:
    return f">= {lo:g} h" if np.isinf(hi) else f"{lo:g}-{hi:g} h"


def auroc_by_hours_band(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                        window_h: float = 48.0, bands=HOURS_BANDS) -> pd.DataFrame:
    """Per model and band: screens, positives (onset within ``window_h``) and AUROC; then the mean
    of the band AUROCs weighted by their positives. Bands with one class only are left out."""
    hours = screens[["stay_id", "screen_time", "hours_since_admit"]]
    edges = list(bands)
    labels = band_labels(bands)
    rows = []
    for model in dict.fromkeys(predictions["model"]):
        frame = prepare_screens(predictions[predictions["model"] == model], stays, screens, model=model).frame
        frame = frame.merge(hours, on=["stay_id", "screen_time"], how="left").dropna(subset=["risk"])
        y = (frame["onset_in_h"] <= window_h).to_numpy()
        band = band_index(frame["hours_since_admit"].to_numpy(), edges)
        risk = frame["risk"].to_numpy()
        rows += band_rows(model, labels, [int((band == b).sum()) for b in range(len(labels))],
                          [int(y[band == b].sum()) for b in range(len(labels))],
                          lambda b: roc_auc(y[band == b], risk[band == b]))
    return band_table(rows)


def band_labels(bands=HOURS_BANDS) -> list[str]:
    """``0-6 h``, ..., ``>= 72 h``."""
    edges = list(bands)
    return [_band_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]


def band_index(hours, bands=HOURS_BANDS) -> np.ndarray:
    """Band of each screen (left-closed), -1 outside every band (or NaN hours)."""
    h = np.asarray(hours, dtype="float64")
    edges = np.asarray(list(bands), dtype="float64")
    b = np.searchsorted(edges, h, side="right") - 1
    return np.where(np.isnan(h) | (b >= len(edges) - 1), -1, b)


def band_rows(model: str, labels, n_screens, n_positive, auroc) -> list[dict]:
    """A model's rows of :func:`auroc_by_hours_band` from each band's counts; ``auroc(b)`` is called
    only for bands with both classes, then the positives-weighted mean."""
    kept = [{"model": model, "band": label, "n_screens": int(n), "n_positive": int(k), "auroc": float(auroc(b))}
            for b, (label, n, k) in enumerate(zip(labels, n_screens, n_positive)) if 0 < k < n]
    if kept:
        w = np.array([r["n_positive"] for r in kept], dtype=float)
        mean = float(np.average([r["auroc"] for r in kept], weights=w))
        kept.append({"model": model, "band": "positives-weighted mean", "n_screens": sum(r["n_screens"] for r in kept),
                     "n_positive": int(w.sum()), "auroc": mean})
    return kept


def band_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "band", "n_screens", "n_positive", "auroc"])


def context_top_share(explanations: pd.DataFrame, alarms: pd.DataFrame, *,
                      context=CONTEXT_FEATURES) -> pd.DataFrame:
    """Per split, model and operating point: fired alarms, how many were explained, and the share
    whose largest in-context contribution (log-odds or log10 Bayes factor) is a ``context`` feature.

    >>> t0 = pd.Timestamp("2024-01-01")
    >>> alarms = pd.DataFrame({"split": "test", "stay_id": [1, 2], "screen_time": t0, "model": "cpn",
    ...                        "operating_point": "p", "fired": True})
    >>> ex = pd.DataFrame({"stay_id": [1, 1, 2, 2], "screen_time": t0, "model": "cpn",
    ...                    "feature": ["hours_band", "hr", "hours_band", "hr"], "contribution": [.9, .2, .1, .4]})
    >>> r = context_top_share(ex, alarms).iloc[0]
    >>> int(r.n_alarms), int(r.n_explained), float(r.context_top_share)
    (2, 2, 0.5)
    """
    keys = ["stay_id", "screen_time", "model"]
    ex = explanations[explanations["feature"] != "total"]
    top = ex.loc[ex.groupby(keys, sort=False)["contribution"].idxmax(), keys + ["feature"]]
    fired = alarms[alarms["fired"].astype(bool)]
    by = [c for c in ("split", "model", "operating_point") if c in fired.columns]
    rows = []
    for k, g in fired.groupby(by, sort=False):
        m = g[keys].merge(top, on=keys, how="inner")
        share = float(m["feature"].isin(context).mean()) if len(m) else np.nan
        rows.append({**dict(zip(by, k if isinstance(k, tuple) else (k,))), "n_alarms": len(g),
                     "n_explained": len(m), "context_top_share": share})
    return pd.DataFrame(rows)


def merge_context_top_share(tables) -> pd.DataFrame | None:
    """:func:`context_top_share` of the union of disjoint sets of stays, from each set's table.

    The shares are counts over explained alarms (``share * n_explained`` is a whole number), so
    the parts' counts add up and the merged table equals the table of the union.
    """
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return None
    cat = pd.concat(tables, ignore_index=True)
    by = [c for c in ("split", "model", "operating_point") if c in cat.columns]
    n_context = np.round(cat["context_top_share"].fillna(0.0) * cat["n_explained"]).astype("int64")
    g = cat.assign(n_context=n_context).groupby(by, sort=False)[["n_alarms", "n_explained", "n_context"]].sum()
    out = g.reset_index()
    out["context_top_share"] = np.where(out["n_explained"] > 0, out["n_context"] / out["n_explained"].where(
        out["n_explained"] > 0, 1), np.nan)
    return out.drop(columns="n_context")
