"""The explanations table (``ehr.schema`` "explanations") of batched Bayes factors, built with numpy.

One row per screen and evidence item that has evidence, in the network's node order, then the
screen's ``total`` row (``log10 B(E)``); screens in the order given. Each node's rows are picked
with one index array and the table is put together once, so that building it costs little next
to the inference, even for a single screen (it used to take one DataFrame per node and a sort).

Examples
--------
>>> import numpy as np
>>> bf = {"total": np.array([0.5, -0.2]), "alone": {"hr": np.array([0.3, np.nan])},
...       "in_context": {"hr": np.array([0.4, np.nan])}}
>>> det = {"hr": (np.array([120.0, np.nan]), np.array([2, -1]), np.array([0.5, np.nan]), np.array([0.9, np.nan]))}
>>> t = explanation_table(bf, det, {"hr": ("lt51", "51to91", "91to131")}, stay=np.array([7, 7]),
...                       times=np.array(["2026-01-01T01", "2026-01-01T02"], dtype="datetime64[ns]"), model="cpn")
>>> t[["stay_id", "feature", "state", "contribution"]].values.tolist()
[[7, 'hr', '91to131', 0.3], [7, 'total', None, 0.5], [7, 'total', None, -0.2]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["explanation_table"]


def explanation_table(bf: dict, details: dict, states: dict, *, stay, times, model: str) -> pd.DataFrame:
    """The explanations table of ``n`` screens.

    Parameters
    ----------
    bf : dict
        :func:`cpn.explain.bayes_factors` output: ``total`` (n,), ``alone`` and ``in_context``
        (node -> (n,)); the nodes of ``alone``, in its order, are the table's items.
    details : dict
        Node -> ``(value, state index, age_h, weight)`` arrays of length n (:func:`cpn.evidence.build_evidence`
        with ``details=True``); ``value``, ``age_h`` and ``weight`` may be None (NaN, NaN, 1); a
        state index below 0 means no evidence (no row).
    states : dict
        Node -> state names.
    stay, times : ndarray (n,)
        Each screen's ``stay_id`` and ``screen_time``.
    model : str
        The ``model`` column.
    """
    n = len(bf["total"])
    nodes = list(bf["alone"])
    parts = {k: [] for k in ("row", "code", "value", "state", "age_h", "weight", "contribution", "baseline")}

    def add(rows, code, value, state, age, weight, alone, ctx):
        for key, a in zip(parts, (rows, np.full(len(rows), code), value, state, age, weight, alone, ctx)):
            parts[key].append(a)

    nan = np.full(n, np.nan)
    for j, v in enumerate(nodes):
        value, state, age, weight = details[v]
        idx = np.flatnonzero(state >= 0)
        add(idx, j, nan[idx] if value is None else value[idx], np.asarray(states[v], dtype=object)[state[idx]],
            nan[idx] if age is None else age[idx], np.ones(len(idx)) if weight is None else weight[idx],
            bf["alone"][v][idx], bf["in_context"][v][idx])
    add(np.arange(n), len(nodes), nan, np.full(n, None, dtype=object), nan, nan, bf["total"], nan)
    row = np.concatenate(parts.pop("row"))
    order = np.argsort(row, kind="stable")  # per screen: its items in node order, then its total
    row = row[order]
    cols = {k: np.concatenate(a)[order] for k, a in parts.items()}
    feature = np.array([*nodes, "total"], dtype=object)[cols.pop("code")]
    return pd.DataFrame({"stay_id": np.asarray(stay)[row].astype("int64"),
                         "screen_time": pd.to_datetime(np.asarray(times)[row]), "model": model,
                         "feature": feature, **cols}, copy=False)  # (fresh arrays: no copy needed)
