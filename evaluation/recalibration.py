"""Recalibration on the contract tables: a scaler fitted on the development split, applied to every row.

:func:`calibrate_predictions` fits one :mod:`evaluation.calibration` scaler per model on the
``fit_split`` rows (``dev``) and applies it unchanged to every row; :func:`calibration_table`
reports the Brier score and the expected calibration error (ECE) on the evaluated split
(``test``) before and after. Both read the ``predictions`` table and the screens' ``label``
column, never a model.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> n = 2000
>>> screens = pd.DataFrame({"stay_id": np.arange(n), "screen_time": pd.Timestamp("2020-01-01"),
...                         "label": (rng.random(n) < 0.2).astype(int)})
>>> pred = screens[["stay_id", "screen_time"]].assign(
...     model="cpn", risk=np.clip(0.35 + 0.3 * screens["label"] + rng.normal(0, 0.1, n), 0, 1),
...     fold=0, split=np.where(np.arange(n) % 2, "test", "dev"))
>>> table = calibration_table(pred, screens, method="platt")
>>> bool(table.loc[0, "ece_after"] < table.loc[0, "ece_before"])
True
"""

from __future__ import annotations

import pandas as pd

from ehr.schema import require_columns

from .calibration import (PlattScaler, TemperatureScaler, brier_from_sums, brier_score,  # noqa: F401 (one definition, re-exported)
                          calibration_sums, ece_from_sums, reliability_from_sums)
from .tables import join_labels

__all__ = ["calibrate_predictions", "calibration_table", "calibration_row", "make_scaler", "reliability_table",
           "reliability_rows", "PLATT_SUFFIX", "with_new_data", "probability_models"]


def make_scaler(method: str):
    """An unfitted scaler of ``method`` (``platt``, ``platt-score``, ``temperature``)."""
    if method == "platt":
        return PlattScaler(input="probability")
    if method == "platt-score":
        return PlattScaler(input="score")
    if method == "temperature":
        return TemperatureScaler()
    raise ValueError(f"method must be 'platt', 'platt-score' or 'temperature', got {method!r}")


def calibrate_predictions(predictions: pd.DataFrame, screens: pd.DataFrame, *, method: str = "platt",
                          fit_split: str = "dev", models=None, suffix: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Recalibrate each model's risks with a scaler fitted on the ``fit_split`` rows only.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` (needs a ``split`` column).
    screens : DataFrame
        Screens with the ``label`` column.
    method : {"platt", "temperature", "platt-score"}
        ``"platt-score"`` fits on raw scores (use it for NEWS2).
    fit_split : str, default "dev"
        Split the scaler is fitted on; it is applied unchanged to every row.
    models : list of str, optional
        Models to recalibrate (default: all whose risks lie in [0, 1], or all for "platt-score").
    suffix : str, optional
        When given, calibrated rows get ``model + suffix`` and are appended to the original rows;
        otherwise ``risk`` is replaced in place.

    Returns
    -------
    predictions : DataFrame
    scalers : dict
        Fitted scaler per model.
    """
    require_columns(predictions, ["split"], table="predictions", purpose="(calibration is fitted on one split)")
    data = join_labels(predictions, screens)
    if models is None:
        rng = data.groupby("model")["risk"].agg(["min", "max"])
        ok = rng.index if method == "platt-score" else rng.index[(rng["min"] >= 0) & (rng["max"] <= 1)]
        models = list(ok)
    scalers, parts = {}, []
    for model in models:
        sel = (data["model"] == model).to_numpy()
        if not sel.any():
            raise ValueError(f"predictions: model '{model}' has no rows")
        fit_rows = sel & (data["split"] == fit_split).to_numpy()
        if not fit_rows.any():
            raise ValueError(f"predictions: model '{model}' has no rows in split '{fit_split}' to fit on")
        scaler = make_scaler(method).fit(data["risk"].to_numpy()[fit_rows], data["y"].to_numpy()[fit_rows])
        scalers[model] = scaler
        part = predictions.loc[sel].copy()
        part["risk"] = scaler.transform(part["risk"].to_numpy())
        if suffix:
            part["model"] = model + suffix
        parts.append(part)
    if suffix:
        out = pd.concat([predictions, *parts], ignore_index=True)
    else:
        out = predictions.copy()
        for part in parts:
            out.loc[part.index, "risk"] = part["risk"]
    return out, scalers


def calibration_table(predictions: pd.DataFrame, screens: pd.DataFrame, *, method: str = "platt",
                      fit_split: str = "dev", eval_split: str | None = "test", n_bins: int = 10,
                      models=None) -> pd.DataFrame:
    """Brier score and ECE before and after recalibration, per model, on ``eval_split``.

    Models whose risks are not probabilities are skipped unless ``method="platt-score"``.

    Returns
    -------
    DataFrame
        Columns ``model, method, n, prevalence, brier_before, brier_after, ece_before,
        ece_after`` and the fitted parameter (``coef``/``intercept`` or ``temperature``).
    """
    calibrated, scalers = calibrate_predictions(predictions, screens, method=method,
                                                fit_split=fit_split, models=models)
    before = join_labels(predictions, screens)
    # A left merge keeps the row order, so positions line up with ``calibrated``.
    after_risk = calibrated["risk"].to_numpy()
    rows = []
    for model, scaler in scalers.items():
        sel = (before["model"] == model).to_numpy()
        if eval_split is not None:
            sel &= (before["split"] == eval_split).to_numpy()
        y = before["y"].to_numpy()[sel]
        p0 = before["risk"].to_numpy()[sel]
        p1 = after_risk[sel]
        sums0 = calibration_sums(y, p0, n_bins=n_bins) if method != "platt-score" else None
        rows.append(calibration_row(model, method, scaler, sums0, calibration_sums(y, p1, n_bins=n_bins),
                                    n=int(sel.sum()), n_positive=float(y.sum())))
    return pd.DataFrame(rows)


def calibration_row(model: str, method: str, scaler, before, after, *, n: int, n_positive: float) -> dict:
    """One row of :func:`calibration_table` from the :func:`evaluation.calibration.calibration_sums` of the
    evaluated screens before (None: not probabilities) and after recalibration; sums add up over parts."""
    nan = float("nan")
    row = {"model": model, "method": method, "n": int(n), "prevalence": n_positive / n if n else nan,
           "brier_before": brier_from_sums(before) if before is not None else nan,
           "brier_after": brier_from_sums(after),
           "ece_before": ece_from_sums(before) if before is not None else nan,
           "ece_after": ece_from_sums(after)}
    if isinstance(scaler, TemperatureScaler):
        row["temperature"] = scaler.temperature_
    else:
        row["coef"], row["intercept"] = scaler.coef_, scaler.intercept_
    return row


#: suffix of a score model (NEWS2) in the reliability table: drawn after Platt scaling fitted on dev
PLATT_SUFFIX = " (Platt on dev)"


def reliability_rows(model: str, sums) -> pd.DataFrame:
    """The reliability table's rows of one model from its :func:`evaluation.calibration.calibration_sums`
    (non-empty bins: mean risk, observed fraction positive, screens; the model's Brier and ECE)."""
    mp, fp, n = reliability_from_sums(sums)
    return pd.DataFrame({"model": model, "mean_predicted": mp, "fraction_positive": fp, "n": n,
                         "brier": brier_from_sums(sums), "ece": ece_from_sums(sums)})


def reliability_table(predictions: pd.DataFrame, screens: pd.DataFrame, *, fit_split: str = "dev",
                      eval_split: str = "test", n_bins: int = 10) -> pd.DataFrame:
    """The reliability diagram's bins on ``eval_split``'s screens with new data: probabilities as they
    are, scores (NEWS2) after Platt scaling fitted on ``fit_split`` (named ``model + PLATT_SUFFIX``).

    What the report draws; a partitioned run evaluated on counts writes it from summed bins
    (:mod:`evaluation.count_sections`), having no one-file predictions to draw from.
    """
    preds = with_new_data(predictions, screens)
    probability, scores = probability_models(preds)
    parts = [preds[preds["model"].isin(probability)]]
    if scores:
        cal, _ = calibrate_predictions(preds[preds["model"].isin(scores)], screens, method="platt-score",
                                       fit_split=fit_split, suffix=PLATT_SUFFIX)
        parts.append(cal[cal["model"].str.endswith(PLATT_SUFFIX)])
    data = join_labels(pd.concat(parts, ignore_index=True), screens)
    data = data[data["split"] == eval_split]
    rows = [reliability_rows(m, calibration_sums(g["y"].to_numpy(), g["risk"].to_numpy(), n_bins=n_bins))
            for m, g in data.groupby("model", sort=False)]
    return pd.concat(rows, ignore_index=True) if rows else None


def with_new_data(predictions: pd.DataFrame, screens: pd.DataFrame) -> pd.DataFrame:
    """The predictions at screens with new data (all of them when ``screens`` has no ``new_data``)."""
    if "new_data" not in screens.columns:
        return predictions
    keys = screens.loc[screens["new_data"].astype("boolean").fillna(False).to_numpy(bool), ["stay_id", "screen_time"]]
    return predictions.merge(keys, on=["stay_id", "screen_time"], how="inner")


def probability_models(predictions: pd.DataFrame) -> tuple[list, list]:
    """Models whose risks lie in [0, 1] (probabilities), and the others (scores such as NEWS2), in order."""
    ranges = predictions.groupby("model", sort=False)["risk"].agg(["min", "max"])
    probability = [m for m in ranges.index if ranges.loc[m, "min"] >= 0 and ranges.loc[m, "max"] <= 1]
    return probability, [m for m in ranges.index if m not in probability]
