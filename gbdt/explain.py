"""Exact per-screen TreeSHAP contributions, in the ``explanations`` contract shape.

Both engines compute exact TreeSHAP values for tree ensembles (LightGBM ``pred_contrib=True``,
XGBoost ``pred_contribs=True``). They are additive in log-odds: for every screen the
contributions plus the expected value equal the raw margin, so ``sigmoid(sum)`` is the risk.

By default contributions are summed per evidence item (a concept's value, age and trend
features together; see :meth:`gbdt.features.ScreenFeatures.item_of`), which keeps them exact
and lines them up with the CPN's evidence items in the alarm views. The public face is
:meth:`GBDTClassifier.explain <gbdt.model.GBDTClassifier.explain>`.

Examples
--------
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=40, seed=2)
>>> m = GBDTClassifier(n_estimators=10, early_stopping_rounds=None).fit(s)
>>> e = m.explain(s.head(3))
>>> sorted(set(e["feature"]))[:3]
['age', 'c0', 'c1']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import validate

__all__ = ["contributions", "explanations_table"]


def contributions(model, screens: pd.DataFrame) -> pd.DataFrame:
    """SHAP contributions (log-odds) per screen and feature, plus a final ``expected_value`` column.

    Rows follow ``screens``; ``contributions(...).sum(axis=1)`` is the raw margin.
    """
    Xm = model._matrix(screens)
    if model.backend == "lightgbm":
        phi = model.booster_.predict(Xm, pred_contrib=True)
    else:
        import xgboost as xgb

        phi = model.booster_.predict(xgb.DMatrix(Xm), pred_contribs=True)
    phi = np.asarray(phi, dtype="float64")
    return pd.DataFrame(phi, columns=[*model.feature_names_, "expected_value"], index=screens.index)


def explanations_table(model, screens: pd.DataFrame, *,
                       model_name: str | None = None, group: bool = True,
                       include_total: bool = True) -> pd.DataFrame:
    """Long ``explanations`` table for the given screens (explain alarms, not all 790k screens).

    Parameters
    ----------
    model : GBDTClassifier
        Fitted model.
    screens : DataFrame
        The screens to explain (e.g. those where an alarm fired).
    model_name : str, optional
        Defaults to the backend name (``"lightgbm"`` / ``"xgboost"``), as in ``predictions``.
    group : bool, default True
        Sum a concept's features (value, age, trends) into one row per evidence item; ``False``
        gives one row per model feature.
    include_total : bool, default True
        Add a ``feature="total"`` row per screen: the summed contribution (margin - expected value).

    Returns
    -------
    DataFrame
        ``explanations`` columns: ``value`` is the item's observed value (category code for
        ``sex``/``department``, see ``model.features_.encodings_``), ``age_h`` its age,
        ``contribution`` the SHAP log-odds, ``baseline`` the expected value (same on every row of
        a screen); ``state`` and ``weight`` are null (CPN-only).
    """
    phi = contributions(model, screens)
    base = phi.pop("expected_value").to_numpy()
    feats = model.features_
    if group:
        items: dict[str, list[str]] = {}
        for f in model.feature_names_:
            items.setdefault(feats.item_of(f)[0], []).append(f)
        contrib = {it: phi[fs].to_numpy().sum(axis=1) for it, fs in items.items()}
        cols = {it: feats.item_of(fs[0])[1:] for it, fs in items.items()}
    else:
        contrib = {f: phi[f].to_numpy() for f in model.feature_names_}
        cols = {f: (f, feats.item_of(f)[2]) for f in model.feature_names_}
    X = feats.transform(screens)  # encoded values for the categorical covariates
    n = len(screens)
    names = list(contrib)
    values = np.column_stack([X[cols[k][0]].to_numpy(dtype="float64") for k in names])
    ages = np.column_stack([X[cols[k][1]].to_numpy(dtype="float64") if cols[k][1] else
                            np.full(n, np.nan) for k in names])
    C = np.column_stack([contrib[k] for k in names])
    if include_total:
        names = names + ["total"]
        values = np.column_stack([values, np.full(n, np.nan)])
        ages = np.column_stack([ages, np.full(n, np.nan)])
        C = np.column_stack([C, phi.to_numpy().sum(axis=1)])
    k = len(names)
    out = pd.DataFrame({
        "stay_id": np.repeat(screens["stay_id"].to_numpy(dtype="int64"), k),
        "screen_time": np.repeat(screens["screen_time"].to_numpy(), k),
        "model": model_name or model.model_name,
        "feature": np.tile(np.array(names, dtype=object), n),
        "value": values.ravel(),
        "state": pd.Series([None] * (n * k), dtype="object"),
        "age_h": ages.ravel(),
        "weight": np.full(n * k, np.nan),
        "contribution": C.ravel(),
        "baseline": np.repeat(base, k),
    })
    return validate(out, "explanations")
