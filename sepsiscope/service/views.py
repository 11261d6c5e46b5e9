"""JSON views of explanations and risk traces, as the service returns them and the page draws them.

A Bayes-factor explanation (the CPN's: rows with a decay ``weight``) lists, for each evidence
item, its factor alone (``log10 B({i})``) and in context (``log10 B(E)/B(E without i)``), its
value in the canonical unit, state (raw and readable), age and decay weight; then the prior log10
odds, the total ``log10 B(E)`` and the posterior log10 odds, which add up:
``prior + total = posterior``. The prior is read off the model's own risk and total
(``log10 odds(risk) - total``), so it needs nothing beyond ``predict_proba`` and ``explain``.
An additive explanation (GBDT TreeSHAP, in log-odds) lists each item's contribution, the expected
value and the total.

Examples
--------
>>> import pandas as pd
>>> ex = pd.DataFrame({"feature": ["temp", "hr", "total"], "value": [38.6, 88.0, None],
...                    "state": ["38p1to39p1", "51to91", None], "age_h": [0.5, 2.0, None],
...                    "weight": [0.94, 0.71, None], "contribution": [0.8, -0.1, 0.6],
...                    "baseline": [0.7, -0.2, None]})
>>> v = explanation_view(ex, risk=0.5, model="cpn")
>>> v["kind"], v["total"], round(v["prior"], 3), v["items"][0]["state_label"], v["items"][0]["unit"]
('bayes_factors', 0.6, -0.6, '38.1–39.0 °C', '°C')
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ehr.state_labels import feature_label, feature_unit, state_label

__all__ = ["explanation_view", "trace_view", "iso", "log10_odds", "VIEW_COLUMNS"]

_CATEGORICAL = ("department", "sex")
#: the columns of an explanations table that a view reads
VIEW_COLUMNS = ("feature", "value", "state", "age_h", "weight", "contribution", "baseline")


def iso(t) -> str | None:
    """An ISO 8601 timestamp (naive: the contract's times), or None."""
    return None if t is None or pd.isna(t) else pd.Timestamp(t).isoformat()


def _num(x, digits: int = 6):
    return None if x is None or x != x or x in (math.inf, -math.inf) else round(float(x), digits)


def log10_odds(p: float) -> float:
    """``log10(p / (1 - p))`` with the ends mapped to +-inf."""
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log10(p / (1.0 - p))


def _columns(ex) -> dict:
    """``{column: list}`` of explanation rows given as a DataFrame or already as such a dict."""
    return ex if isinstance(ex, dict) else {c: ex[c].tolist() for c in ex.columns}


def explanation_view(ex, *, risk: float, model: str, top: int | None = None) -> dict:
    """One screen's explanation rows (a DataFrame, or ``{column: list}``) -> a JSON-ready dict (items
    sorted by size, largest first)."""
    table = _columns(ex)
    n = len(table["feature"])
    cols = {c: table.get(c, [None] * n) for c in VIEW_COLUMNS}
    rows = [dict(zip(cols, r)) for r in zip(*cols.values())]
    total_rows = [r for r in rows if r["feature"] == "total"]
    items = [r for r in rows if r["feature"] != "total"]
    total = float(total_rows[0]["contribution"]) if total_rows else float(sum(r["contribution"] for r in items))
    bayes = any(r["weight"] is not None and r["weight"] == r["weight"] for r in items)
    size = "baseline" if bayes else "contribution"
    items.sort(key=lambda r: -abs(r[size]) if r[size] == r[size] else 0.0)
    if not bayes:
        items = [r for r in items if r["contribution"] != 0]
    out_items = []
    for r in items[:top]:
        f = r["feature"]
        item = {"feature": f, "label": feature_label(f), "value": _num(r["value"], 4), "unit": feature_unit(f),
                "age_h": _num(r["age_h"], 3)}
        if bayes:
            state = r["state"] if isinstance(r["state"], str) else None
            item.update({"state": state, "state_label": state_label(f, state), "weight": _num(r["weight"], 4),
                         "alone": _num(r["contribution"]), "in_context": _num(r["baseline"])})
        else:
            if f in _CATEGORICAL:
                item["value"] = None  # a category code, not a value
            else:
                item["missing"] = item["value"] is None  # TreeSHAP credits missingness too
            item["contribution"] = _num(r["contribution"])
        out_items.append(item)
    view = {"model": model, "risk": _num(risk), "items": out_items}
    if bayes:
        posterior = log10_odds(risk)
        view.update({"kind": "bayes_factors", "scale": "log10 Bayes factor", "total": _num(total),
                     "posterior": _num(posterior), "prior": _num(posterior - total)})
    else:
        base = [b for b in cols["baseline"] if b is not None and b == b]
        view.update({"kind": "contributions", "scale": "log-odds (TreeSHAP)", "total": _num(total),
                     "expected": _num(float(base[0])) if base else None})
    return view


def trace_view(screens: pd.DataFrame, trace: dict, *, silencing_h: float) -> dict:
    """Risk per screen, the alarm candidates (fired or silenced) and each fired alarm's silencing window."""
    times = screens["screen_time"].to_numpy()
    hours = trace["hours"]
    points = [{"screen_time": iso(t), "hours": float(h), "risk": _num(r), "new_data": bool(n)}
              for t, h, r, n in zip(times, hours, trace["risk"], trace["new_data"])]
    alarms = [{"screen_time": iso(times[i]), "hours": float(hours[i]), "risk": _num(trace["risk"][i]),
               "fired": bool(trace["fired"][i]), "silenced": not bool(trace["fired"][i])}
              for i in np.flatnonzero(trace["candidate"])]
    windows = [{"start_hours": float(hours[i]), "end_hours": float(hours[i]) + silencing_h,
                "start": iso(times[i]), "end": iso(pd.Timestamp(times[i]) + pd.Timedelta(hours=silencing_h))}
               for i in np.flatnonzero(trace["fired"])]
    return {"points": points, "alarms": alarms, "silencing_windows": windows}
