"""Explained alarms for people: a few true and false alarms per model, every evidence item readable.

From the contract ``explanations`` (see ``ehr/schema.py``) :func:`alarm_explanations` picks, per
model and evaluated split, the ``per_kind`` true alarms and ``per_kind`` false alarms with the
highest risk (one per stay) at one operating point, and lists each one's evidence: feature and
state in words (:mod:`ehr.state_labels`), value and unit, age and decay weight, and the
contributions, with the prior, the total and what the total had to reach to alarm.

Two kinds of explanation are told apart by the contract's ``total`` row:

``prior``, ``total`` and ``needed`` are in the explanation's own ``scale`` (``log10`` or ``ln`` odds):

* **Bayes factors** (the CPN: the ``total`` row has no ``baseline``): ``alone`` is log10 B({i})
  (the item alone), ``in_context`` is log10 B(E)/B(E without i) (what it adds to the rest), the
  total is log10 B(E), the prior is ``log10 odds(risk) - total`` and the alarm needed
  ``log10 odds(threshold) - prior``.
* **Additive contributions** (TreeSHAP for the GBDT: the ``total`` row's ``baseline`` is the base
  value): ``alone`` is the item's contribution in log-odds, ``in_context`` is empty, the prior is
  the base value and the alarm needed ``logit(threshold) - base``.

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2020-01-01 10:00")
>>> ex = pd.DataFrame({"stay_id": 1, "screen_time": T, "model": "cpn", "feature": ["temp", "total"],
...                    "value": [38.6, None], "state": ["38p1to39p1", None], "age_h": [2.0, None],
...                    "weight": [0.7, None], "contribution": [0.5, 0.4], "baseline": [0.3, None]})
>>> alarms = pd.DataFrame({"stay_id": [1], "screen_time": [T], "model": "cpn", "threshold": 0.2,
...                        "fired": True, "silenced": False, "operating_point": "news2>=5"})
>>> pred = pd.DataFrame({"stay_id": [1], "screen_time": [T], "model": "cpn", "risk": [0.25], "fold": 0,
...                      "split": "test"})
>>> stays = pd.DataFrame({"stay_id": [1], "onset_time": [T + pd.Timedelta(hours=5)]})
>>> row = alarm_explanations(ex, alarms, pred, stays).iloc[0]
>>> bool(row.true_alarm), row.state_label, row.unit, round(float(row.prior), 3), row.explanation, row.scale
(True, '38.1–39.0 °C', '°C', -0.877, 'bayes_factor', 'log10')
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import require_columns
from ehr.state_labels import feature_label, feature_unit, state_label

__all__ = ["alarm_explanations", "merge_alarm_explanations", "EXPLAINED_COLUMNS"]

_HOUR = np.timedelta64(1, "h")
_CATEGORICAL = ("department", "sex")

#: columns of the table :func:`alarm_explanations` returns (one row per evidence item)
EXPLAINED_COLUMNS = (
    "split", "model", "operating_point", "threshold", "stay_id", "screen_time", "true_alarm", "hours_before_onset",
    "risk", "explanation", "scale", "prior", "total", "needed", "rank", "feature", "feature_label", "value",
    "unit", "state", "state_label", "age_h", "weight", "alone", "in_context")


def _log_odds(p, base):
    p = np.clip(np.asarray(p, dtype="float64"), 1e-15, 1 - 1e-15)
    return np.log(p / (1 - p)) / np.log(base)


def _chosen(alarms, risk, stays, *, model, op, per_kind, window_h):
    """The fired alarms to explain: per stay its highest-risk one, then the top ``per_kind`` true and false."""
    a = alarms[(alarms["model"] == model) & alarms["fired"].astype(bool)]
    if op is not None and "operating_point" in a.columns:
        a = a[a["operating_point"] == op]
    a = a.merge(risk, on=["stay_id", "screen_time"], how="inner")
    onset = a["stay_id"].map(stays.drop_duplicates("stay_id").set_index("stay_id")["onset_time"])
    a = a.assign(hours_before_onset=(onset - a["screen_time"]).to_numpy() / _HOUR)
    a["true_alarm"] = (a["hours_before_onset"] > 0) & (a["hours_before_onset"] <= window_h)
    a = a.sort_values(["risk", "stay_id", "screen_time"], ascending=[False, True, True], kind="stable")
    a = a.drop_duplicates("stay_id")
    return pd.concat([a[a["true_alarm"] == kind].head(per_kind) for kind in (True, False)], ignore_index=True)


def _items(ex_screen: pd.DataFrame, risk: float, threshold: float) -> tuple[dict, pd.DataFrame]:
    total_row = ex_screen[ex_screen["feature"] == "total"]
    items = ex_screen[ex_screen["feature"] != "total"]
    total = float(total_row["contribution"].iloc[0]) if len(total_row) else float(items["contribution"].sum())
    base = total_row["baseline"].iloc[0] if len(total_row) else np.nan
    if len(total_row) and pd.isna(base):  # Bayes factors: the prior follows from the posterior and the total
        prior = float(_log_odds(risk, 10)) - total
        head = {"explanation": "bayes_factor", "scale": "log10", "prior": prior, "total": total,
                "needed": float(_log_odds(threshold, 10)) - prior}
        in_context = items["baseline"].to_numpy("float64")
    else:
        base = float(base) if pd.notna(base) else float(_log_odds(risk, np.e)) - total
        head = {"explanation": "additive", "scale": "ln", "prior": base, "total": total,
                "needed": float(_log_odds(threshold, np.e)) - base}
        in_context = np.full(len(items), np.nan)
    # a category's code (department, sex as the GBDT encodes them) is not a value to show
    value = np.where(items["feature"].isin(_CATEGORICAL), np.nan, items["value"].to_numpy("float64"))
    out = pd.DataFrame({
        "feature": items["feature"].to_numpy(), "value": value,
        "state": items["state"].to_numpy(object), "age_h": items["age_h"].to_numpy("float64"),
        "weight": items["weight"].to_numpy("float64"), "alone": items["contribution"].to_numpy("float64"),
        "in_context": in_context})
    size = np.where(np.isfinite(out["in_context"]), out["in_context"].abs(), out["alone"].abs())
    out = out.iloc[np.lexsort((out["feature"].to_numpy(str), -size))].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out["feature_label"] = [feature_label(f) for f in out["feature"]]
    out["unit"] = [feature_unit(f) for f in out["feature"]]
    out["state_label"] = [state_label(f, s) for f, s in zip(out["feature"], out["state"])]
    return head, out


def alarm_explanations(explanations: pd.DataFrame, alarms: pd.DataFrame, predictions: pd.DataFrame,
                       stays: pd.DataFrame, *, models=None, operating_point: str | None = None,
                       per_kind: int = 3, window_h: float = 48.0, top_k: int | None = None) -> pd.DataFrame:
    """The evidence of a few true and false alarms per model and split, one row per item.

    Parameters
    ----------
    explanations, alarms, predictions, stays : DataFrame
        Contract tables; ``alarms`` may carry ``operating_point``, ``predictions`` a ``split``.
    models : list of str, optional
        Default: every model with explanations, in order of appearance.
    operating_point : str, optional
        The operating point whose alarms are explained (default: each model's first in ``alarms``).
    per_kind : int, default 3
        True alarms and false alarms explained per model and split.
    window_h : float, default 48
        An alarm is true when onset follows within ``window_h`` hours.
    top_k : int, optional
        Keep only the largest items of each alarm (by in-context factor, else contribution).

    Returns
    -------
    DataFrame
        Columns :data:`EXPLAINED_COLUMNS`, items ranked by size within each alarm.
    """
    require_columns(explanations, ["stay_id", "screen_time", "model", "feature", "contribution", "baseline"],
                    table="explanations", purpose="to explain alarms")
    require_columns(alarms, ["stay_id", "screen_time", "model", "threshold", "fired"], table="alarms")
    require_columns(stays, ["stay_id", "onset_time"], table="stays")
    models = list(dict.fromkeys(explanations["model"])) if models is None else list(models)
    pred = predictions if "split" in predictions.columns else predictions.assign(split="all")
    keys = ["stay_id", "screen_time"]
    parts = []
    for model in models:
        ex = explanations[explanations["model"] == model]
        ma = alarms[alarms["model"] == model]
        if ex.empty or ma.empty:
            continue
        op = operating_point
        if op is None and "operating_point" in ma.columns:
            op = ma["operating_point"].iloc[0]
        explained = ex[keys].drop_duplicates()
        risk = pred.loc[pred["model"] == model, keys + ["risk", "split"]].merge(explained, on=keys)
        for split, r in risk.groupby("split", sort=False):
            chosen = _chosen(ma, r[keys + ["risk"]], stays, model=model, op=op, per_kind=per_kind,
                             window_h=window_h)
            for a in chosen.itertuples():
                here = ex[(ex["stay_id"] == a.stay_id) & (ex["screen_time"] == a.screen_time)]
                head, items = _items(here, float(a.risk), float(a.threshold))
                if top_k is not None:
                    items = items.head(top_k)
                parts.append(items.assign(split=split, model=model, operating_point=op or "",
                                          threshold=float(a.threshold), stay_id=a.stay_id,
                                          screen_time=a.screen_time, true_alarm=a.true_alarm,
                                          hours_before_onset=a.hours_before_onset, risk=float(a.risk), **head))
    if not parts:
        return pd.DataFrame(columns=list(EXPLAINED_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(EXPLAINED_COLUMNS)]


def merge_alarm_explanations(tables, *, per_kind: int = 3, models=None) -> pd.DataFrame:
    """:func:`alarm_explanations` of the union of disjoint sets of whole stays, from each set's table.

    Each set's table holds its top ``per_kind`` true and false alarms per model and split (one per
    stay, the stay's highest-risk one) at the same operating point per model; the top of the union
    is the top of these candidates, in the same order (risk descending, then stay and time), so the
    merged table is the table of the union. ``models``: their order in the merged table (then any
    other model by name), so the tables may come in any order; default: order of first appearance.

    Examples
    --------
    >>> merge_alarm_explanations([None]).empty
    True
    """
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return pd.DataFrame(columns=list(EXPLAINED_COLUMNS))
    cat = pd.concat(tables, ignore_index=True)
    keys = ["split", "model", "stay_id", "screen_time"]
    alarms = cat.drop_duplicates(keys)[keys + ["true_alarm", "risk"]]
    alarms = alarms.sort_values(["risk", "stay_id", "screen_time"], ascending=[False, True, True], kind="stable")
    present = list(dict.fromkeys(cat["model"]))
    if models is not None:
        present = [m for m in models if m in set(present)] + sorted(set(present) - set(models))
    parts = []
    for model in present:
        for split in dict.fromkeys(cat.loc[cat["model"] == model, "split"]):
            a = alarms[(alarms["model"] == model) & (alarms["split"] == split)]
            for kind in (True, False):
                for r in a[a["true_alarm"] == kind].head(per_kind).itertuples():
                    parts.append(cat[(cat["model"] == model) & (cat["split"] == split) & (cat["stay_id"] == r.stay_id)
                                     & (cat["screen_time"] == r.screen_time)])
    return pd.concat(parts, ignore_index=True)[list(EXPLAINED_COLUMNS)]
