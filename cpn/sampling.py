"""Forward sampling of screens-like tables from a network (for tests, benchmarks and demos).

Examples
--------
>>> from cpn.structure import load_network
>>> s = sample_screens(load_network("physionet"), 5, seed=0)
>>> len(s), "hr" in s.columns and "hr_age_h" in s.columns
(5, True)
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from ehr.concepts import load_concepts

from .structure import CONTEXT, TARGET, TARGET_EDGES_H, cuts_of_states, node_roles

__all__ = ["sample_states", "sample_screens"]


def sample_states(net, n: int, *, seed: int = 0) -> dict:
    """Sample ``n`` joint configurations; returns node -> state index array."""
    rng = np.random.default_rng(seed)
    out = {}
    order = list(nx.topological_sort(nx.DiGraph(list(net.edges())))) if net.edges() else []
    order += [v for v in net.nodes() if v not in order]
    for v in order:
        cpd = net.get_cpds(v)
        k = cpd.variable_card
        vals = np.asarray(cpd.values, dtype=float).reshape(k, -1)
        parents = cpd.variables[1:]
        if parents:
            col = np.ravel_multi_index([out[p] for p in parents], [int(c) for c in cpd.cardinality[1:]])
        else:
            col = np.zeros(n, dtype=np.int64)
        cdf = np.cumsum(vals[:, col], axis=0)
        u = rng.random(n)
        out[v] = np.minimum((u[None, :] > cdf).sum(axis=0), k - 1)
    return out


def sample_screens(net, n: int, *, seed: int = 0, p_missing: float = 0.3,
                   mean_age_h: float = 6.0, n_stays: int | None = None) -> pd.DataFrame:
    """A screens-like table sampled from ``net``: concept values uniform within their sampled
    state's interval, ages exponential, a fraction ``p_missing`` missing; ``onset_in_h`` from the
    target state (NaN for the last state)."""
    rng = np.random.default_rng(seed + 1)
    st = sample_states(net, n, seed=seed)
    roles = node_roles(net)
    concepts = load_concepts()
    cols = {"stay_id": rng.integers(0, n_stays or max(1, n // 20), n).astype("int64")}
    cols["subject_id"] = cols["stay_id"]
    cols["screen_time"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(n), unit="h")
    for v, r in roles.items():
        s = st[v]
        if r == "concept":
            c = concepts[v]
            edges = np.concatenate([[c.min], c.cuts, [c.max]])
            lo, hi = edges[s], edges[s + 1]
            val = lo + (hi - lo) * rng.random(n) * 0.999
            age = rng.exponential(mean_age_h, n)
            miss = rng.random(n) < p_missing
            cols[v] = np.where(miss, np.nan, val)
            cols[f"{v}_age_h"] = np.where(miss, np.nan, age)
        elif r == "cxr":
            p = np.clip(np.where(s == 1, rng.beta(5, 2, n), rng.beta(2, 5, n)), 0, 1)
            miss = rng.random(n) < 0.7
            cols[v] = np.where(miss, np.nan, p)
    if any(r == "cxr" for r in roles.values()):
        present = ~np.isnan(np.column_stack([cols[v] for v, r in roles.items() if r == "cxr"])).all(1)
        cols["cxr_age_h"] = np.where(present, rng.exponential(24.0, n), np.nan)
    for v, col in (("age_band", "age"), ("hours_band", "hours_since_admit")):
        net_cuts = cuts_of_states(net.get_cpds(v).state_names[v])
        cuts = np.concatenate([[18.0 if v == "age_band" else 0.0], CONTEXT[v][1] if net_cuts is None else net_cuts,
                               [95.0 if v == "age_band" else 300.0]])
        s = st[v]
        # whole hours / years inside the sampled band (the upper cut belongs to the next band)
        cols[col] = np.floor(cuts[s] + (cuts[s + 1] - cuts[s]) * rng.random(n))
    dept = np.asarray(net.get_cpds("department").state_names["department"], dtype=object)
    cols["department"] = dept[st["department"]]
    edges = np.concatenate([[0.0], TARGET_EDGES_H])
    t = st[TARGET]
    onset = np.where(t < len(TARGET_EDGES_H), edges[np.minimum(t, 3)] + 0.5 +
                     (edges[np.minimum(t, 3) + 1] - edges[np.minimum(t, 3)] - 0.5) * rng.random(n), np.nan)
    cols["onset_in_h"] = onset
    cols["label"] = (onset <= 48).astype("int64")
    return pd.DataFrame(cols)
