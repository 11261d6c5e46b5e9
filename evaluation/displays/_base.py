"""Shared plumbing for the Display objects: inputs as arrays or contract frames, figures without pyplot."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ehr.schema import require_columns
from evaluation.tables import join_labels

#: Blue for evidence that raises risk, red for evidence that lowers it (SepsisFinder's colours).
RAISE_COLOR = "#1f5fbf"
LOWER_COLOR = "#d0312d"
#: Grey used to shade the clinically inapplicable region of ROC/PR plots.
SHADE_COLOR = "#bbbbbb"


def new_axes(ax=None, *, figsize=(5.5, 4.5)):
    """``(figure, ax)``; a new Agg-backed figure (no pyplot, no global state) when ``ax`` is None."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def as_named(y_true, y_score, name=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (y, score)}`` from arrays, or from mappings of name -> scores (and name -> labels)."""
    if isinstance(y_score, Mapping):
        out = {}
        for key, score in y_score.items():
            y = y_true[key] if isinstance(y_true, Mapping) else y_true
            out[str(key)] = _pair(y, score, key)
        return out
    return {str(name) if name is not None else "model": _pair(y_true, y_score, name)}


def _pair(y, score, name):
    y = np.asarray(y)
    s = np.asarray(score, dtype="float64")
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(f"model {name!r}: y_true and y_score must be 1-D of equal length; "
                         f"got shapes {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"model {name!r}: y_score is not finite at row {int(np.flatnonzero(~np.isfinite(s))[0])}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"model {name!r}: y_true must be 0/1; row {int(np.flatnonzero(bad)[0])} is {y[bad][0]!r}")
    return y.astype("int64"), s


def labelled_from_frames(predictions: pd.DataFrame, screens: pd.DataFrame, *, models=None,
                         split: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{model: (label, risk)}`` from contract ``predictions`` joined to the screens' ``label``."""
    pred = predictions
    if split is not None:
        require_columns(pred, ["split"], table="predictions", purpose=f"to select split {split!r}")
        pred = pred[pred["split"] == split]
    present = list(dict.fromkeys(pred["model"].tolist()))
    if models is None:
        models = present
    missing = [m for m in models if m not in present]
    if missing:
        raise ValueError(f"predictions: model(s) {missing} not found"
                         + (f" in split {split!r}" if split is not None else "") + f"; have {present}")
    data = join_labels(pred[pred["model"].isin(models)], screens)
    out = {}
    for m in models:
        g = data[data["model"] == m]
        out[str(m)] = (g["y"].to_numpy("int64"), g["risk"].to_numpy("float64"))
    return out


def operating_point_table(operating_points, names) -> pd.DataFrame:
    """Normalise operating points to a frame ``model, label, threshold``.

    Accepts a DataFrame (``model``, ``threshold`` and optionally ``operating_point``/``label``),
    ``{model: {label: threshold}}``, ``{model: [thresholds]}``, or, for a single model,
    ``{label: threshold}`` / a list of thresholds.
    """
    cols = ["model", "label", "threshold"]
    if operating_points is None:
        return pd.DataFrame(columns=cols)
    if isinstance(operating_points, pd.DataFrame):
        df = operating_points
        require_columns(df, ["model", "threshold"], table="operating_points")
        lab = next((c for c in ("label", "operating_point", "name") if c in df.columns), None)
        out = pd.DataFrame({"model": df["model"].astype(str),
                            "label": df[lab].astype(str) if lab else df["threshold"].map(lambda t: f"{t:g}"),
                            "threshold": df["threshold"].astype("float64")})
        return out[out["model"].isin(names)].reset_index(drop=True)
    names = list(names)
    if not isinstance(operating_points, Mapping) or not all(str(k) in names for k in operating_points):
        if len(names) != 1:
            raise ValueError("operating_points: give {model: {label: threshold}} when plotting several models")
        operating_points = {names[0]: operating_points}
    rows = []
    for model, pts in operating_points.items():
        if str(model) not in names:
            raise ValueError(f"operating_points: model {model!r} is not among {names}")
        items = pts.items() if isinstance(pts, Mapping) else ((f"{float(t):g}", t) for t in np.atleast_1d(pts))
        rows += [(str(model), str(label), float(t)) for label, t in items]
    return pd.DataFrame(rows, columns=cols)
