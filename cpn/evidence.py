"""From a screens table to per-node likelihood vectors (the engine's soft evidence).

* concept leaves: value -> state (``concepts.toml`` cuts), decayed by ``<concept>_age_h``;
* CXR leaves: ``cxr_<finding>`` probability -> likelihood ratio, decayed by ``cxr_age_h``;
* context: ``department``, ``age`` -> age band, ``hours_since_admit`` -> band (hard evidence);
* tested leaves: was any of the concepts measured within the window (hard evidence, from ages);
* derived leaves (``cpn.structure.DERIVED``): a trend of a concept over the stay's screens (worst
  value in 24 h, 6 h rise or fall, change since the previous measurement, measurements in 24 h) from
  :func:`ehr.trends.trend_features` (hard evidence; needs ``stay_id`` and ``screen_time``). They
  read the stay's earlier screens *in the same table*: score a screen together with its stay's last
  24 h of screens (as the pipeline, the service's bundles and ``explain --run`` do), or a "worst in
  24 h" falls back to the screen's own value.
* measurement-age leaves (``cpn.structure.MEASUREMENT_AGE``): hours since the concept was last measured
  (``<concept>_age_h``; never measured in the stay: 10,000 h, the last state; hard evidence).

Missing values give NaN rows (no evidence). Unknown concept columns, out-of-range values and CXR
probabilities outside [0, 1] raise errors naming the column and row.

Examples
--------
>>> import pandas as pd
>>> from cpn.structure import load_network
>>> net = load_network("physionet")
>>> s = pd.DataFrame({"hr": [120.0], "hr_age_h": [0.0], "age": [70.0], "department": ["MICU"],
...                   "hours_since_admit": [3.0]})
>>> ev, _ = build_evidence(s, network_info(net), {"hr": 4.0})
>>> ev["hr"].tolist()
[[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ehr.concepts import load_concepts
from ehr.schema import CXR_FINDINGS

from .decay import cxr_likelihood, decay_weight, decayed_evidence, soft_evidence
from .discretise import band_states, category_states, concept_states
from .structure import CONTEXT, DERIVED_LEAVES, TARGET_EDGES_H, TESTED, cuts_of_states, node_roles

__all__ = ["NetworkInfo", "network_info", "check_screens", "build_evidence", "EvidenceBuilder", "input_columns", "node_columns", "reads_evidence",
           "half_life_group", "target_states", "small_pages", "EVIDENCE_ROLES"]

EVIDENCE_ROLES = ("context", "concept", "tested", "cxr", "derived")
_CONTEXT_COLUMN = {"age_band": "age", "hours_band": "hours_since_admit", "department": "department"}


@contextmanager
def small_pages():
    """numpy's large arrays on 4 KiB pages for the duration (numpy asks Linux for transparent huge
    pages, ``madvise``, by default; ``NUMPY_MADVISE_HUGEPAGE=0`` turns that off for a whole process).

    Fitting allocates a few GB of evidence, scoring a large table hundreds of MB; both run in this
    context (:meth:`cpn.SepsisCPN.fit`, :class:`cpn.scoring.CPNScoring`). On a virtual machine whose
    host backs guest memory lazily, as the 2-core development machine (a Firecracker guest), the first
    touch of a huge page cost about 10 ms per MB, 20 times as much as on 4 KiB pages (a fresh 0.5 GB:
    5.7 s against 0.25 s). The full-option fit on all of set A took 159 s with huge pages and 122 s
    without, in the same session (``benchmarks/cpn_fit_speed.py``), and the evidence of set A's
    783,819 screens for the shipped network was built in 4 s instead of 11-26 s (machine loaded). On
    bare metal huge pages save little here (the kernel reads the evidence once per pass, in order).
    Only a hint to the OS: the numbers are the same.

    >>> with small_pages():
    ...     x = np.ones(10)
    """
    mod = getattr(getattr(np, "_core", None), "multiarray", None)
    toggle = getattr(mod, "_set_madvise_hugepage", None)
    if toggle is None:  # pragma: no cover - a numpy without the switch
        yield
        return
    before = toggle(False)
    try:
        yield
    finally:
        toggle(before)


@dataclass(frozen=True)
class NetworkInfo:
    """What evidence building needs from a network: states and roles per node."""

    states: dict
    roles: dict

    @property
    def evidence_nodes(self) -> list[str]:
        return [v for v, r in self.roles.items() if r in EVIDENCE_ROLES]


def network_info(net) -> NetworkInfo:
    """States and roles of every node of a pgmpy network."""
    states = {v: tuple(net.get_cpds(v).state_names[v]) for v in net.nodes()}
    return NetworkInfo(states, node_roles(net))


def half_life_group(node: str, role: str) -> str | None:
    """The half-life group of an evidence node: the concept's kind, ``"cxr"``, or None (no decay)."""
    if role == "concept":
        return load_concepts()[node].kind
    if role == "cxr":
        return "cxr"
    return None


def check_screens(screens: pd.DataFrame) -> None:
    """Reject unknown concept columns (``X_age_h`` with X not a concept) and unknown CXR findings."""
    concepts = load_concepts()
    for col in screens.columns:
        m = re.fullmatch(r"(.+)_age_h", col)
        # emb_cxr_age_h: the age of the CXR embedding the fusion models read (fusion.sequences.EMB_AGE)
        if m and m.group(1) not in ("cxr", "emb_cxr") and m.group(1) not in concepts:
            raise ValueError(f"screens: column '{col}' names unknown concept '{m.group(1)}' "
                             "(not in ehr/concepts.toml)")
        if col.startswith("cxr_") and col != "cxr_age_h" and col[4:] not in CXR_FINDINGS:
            raise ValueError(f"screens: column '{col}' names unknown CXR finding '{col[4:]}'; "
                             f"known findings are {CXR_FINDINGS}")


def node_columns(info: NetworkInfo, v: str) -> list[str]:
    """Screen columns the evidence of node ``v`` is built from (see :func:`build_evidence`)."""
    role = info.roles[v]
    if role == "concept":
        return [v, f"{v}_age_h"]
    if role == "cxr":
        return [v, "cxr_age_h"]
    if role == "context" and v in _CONTEXT_COLUMN:
        return [_CONTEXT_COLUMN[v]]
    if role == "tested":
        return [f"{c}_age_h" for c in TESTED[v][0]]
    if role == "derived":
        c, stat = DERIVED_LEAVES[v][:2]
        return [f"{c}_age_h"] if stat == "age_h" else ["stay_id", "screen_time", c, f"{c}_age_h"]
    return []


def reads_evidence(info: NetworkInfo, v: str, columns) -> bool:
    """Whether screens with ``columns`` give node ``v`` evidence (:class:`EvidenceBuilder`'s rule):
    a concept or CXR leaf needs its value column, a ``*_tested_24h`` leaf one of its tests' ages, a
    trend leaf every column of :func:`node_columns`. A scorer uses this with the columns it was
    trained on: a column absent then but present now (say ``potassium_age_h``, empty: "never
    measured") must not give evidence to a leaf whose CPD EM never saw evidence for.

    >>> from cpn.structure import build_expert_network
    >>> info = network_info(build_expert_network("physionet", measurement_age="extended"))
    >>> reads_evidence(info, "potassium_age", ["hr", "hr_age_h"]), reads_evidence(info, "hr", ["hr"])
    (False, True)
    """
    role, have = info.roles[v], set(columns)
    cols = node_columns(info, v)
    if role in ("concept", "cxr"):
        return v in have
    if role == "tested":
        return bool(have.intersection(cols))
    return bool(cols) and set(cols) <= have


def input_columns(info: NetworkInfo) -> list[str]:
    """Screen columns the evidence of each node is built from (see :func:`build_evidence`)."""
    return list(dict.fromkeys(c for v in info.evidence_nodes for c in node_columns(info, v)))


#: from this many screens on, :func:`_numeric_columns` reads column by column
_COLUMN_READ_ROWS = 20_000


def _numeric_columns(screens: pd.DataFrame, info: NetworkInfo) -> dict:
    """Every numeric column the network reads that ``screens`` has: name -> float array. A batch of a
    few hundred screens is read in one go (one conversion of the block instead of a pandas lookup per
    column, which costs more than the arithmetic there); a large table column by column (a float64
    column as it is, without copying the block: 0.2-0.4 s of the 783,819 screens of set A)."""
    names = [c for c in input_columns(info) if c not in ("department", "stay_id", "screen_time")
             and c in screens.columns]
    if len(screens) >= _COLUMN_READ_ROWS:
        return {c: screens[c].to_numpy(dtype=float, na_value=np.nan) for c in names}
    block = screens[names].to_numpy(dtype=float) if names else np.empty((len(screens), 0))
    return dict(zip(names, block.T))


def _derived_values(screens: pd.DataFrame, info: NetworkInfo) -> dict:
    """Each derived leaf's value per screen (NaN: no evidence) from :func:`ehr.trends.trend_features`
    over the stays' screens; none when ``screens`` lacks ``stay_id``, ``screen_time`` or the concept."""
    out = {}
    for v in info.evidence_nodes:  # measurement ages: no trend needed; never measured = 10,000 h
        col = f"{DERIVED_LEAVES[v][0]}_age_h" if info.roles[v] == "derived" else None
        if col and DERIVED_LEAVES[v][1] == "age_h" and col in screens.columns:
            age = screens[col].to_numpy(dtype=float)
            out[v] = np.where(np.isnan(age), 1e4, age)
    nodes = [v for v in info.evidence_nodes if info.roles[v] == "derived" and DERIVED_LEAVES[v][1] != "age_h"
             and {"stay_id", "screen_time", DERIVED_LEAVES[v][0], f"{DERIVED_LEAVES[v][0]}_age_h"}
             <= set(screens.columns)]
    if not nodes or not len(screens):
        return out
    from ehr.trends import trend_features

    concepts = list(dict.fromkeys(DERIVED_LEAVES[v][0] for v in nodes))
    stat_of = {"rise_6h": "min_6h", "fall_6h": "max_6h"}
    wanted = [f"{c}_{stat_of.get(stat, stat)}" for c, stat in (DERIVED_LEAVES[v][:2] for v in nodes)]
    t = trend_features(screens, concepts, (6, 24), counts=True, names=wanted)
    for v in nodes:
        c, stat = DERIVED_LEAVES[v][:2]
        now = screens[c].to_numpy(dtype=float)
        if stat == "rise_6h":
            x = now - t[f"{c}_min_6h"]
        elif stat == "fall_6h":
            x = t[f"{c}_max_6h"] - now
        elif stat == "delta":
            x = t[f"{c}_delta"]
        elif stat == "n_24h":  # no measurement in the window at all: no evidence either way
            x = np.where(np.isnan(now), np.nan, t[f"{c}_n_24h"])
        else:  # max_24h, min_24h
            x = t[f"{c}_{stat}"]
        out[v] = np.asarray(x, dtype=float)
    return out


@lru_cache(maxsize=1024)
def _concept_cuts(states: tuple):
    return cuts_of_states(states)


def build_evidence(screens: pd.DataFrame, info: NetworkInfo, half_lives: dict, *,
                   cxr_prior=0.5, details: bool = False):
    """Likelihood arrays per evidence node for every screen.

    Parameters
    ----------
    screens : DataFrame
        The screens table (only the columns the network uses are read).
    info : NetworkInfo
    half_lives : dict
        Half-life in hours per concept node and ``"cxr"``; a missing entry falls back to the
        concept's prior ``half_life_h`` (``inf`` for CXR).
    cxr_prior : float or dict
        Finding prevalence at which the imaging model's probabilities were calibrated; a dict
        gives it per CXR node (``cxr_<finding>``), missing nodes falling back to 0.5.
    details : bool
        Also return, per node, ``(value, state index, age_h, weight)`` arrays for explanations.

    Returns
    -------
    evidence : dict node -> ndarray (n, n_states) (NaN rows = no evidence)
    details : dict or None
    """
    return EvidenceBuilder(screens, info, cxr_prior=cxr_prior).evidence(half_lives, details=details)


class EvidenceBuilder:
    """:func:`build_evidence` in two halves: what does not depend on the half-lives, read once from the
    screens (states, ages, the derived leaves' trends), and the evidence for given half-lives.

    Fitting asks for the evidence of the same screens under many half-lives (the half-life search
    tries each multiplier of each group on the held-out stays, then EM runs on the chosen ones): the
    screens are read, checked and discretised once, and :meth:`evidence` recomputes only the leaves
    whose half-life changed since its last call (a node's array is kept with its half-life and
    handed out again, not copied: treat the arrays as read-only). :meth:`take` gives the builder of
    a subset of the rows (by whole stays: the trends are per stay, so the same as read from the
    subset). The same numbers as :func:`build_evidence` (``tests/cpn/test_evidence_read.py``).

    Examples
    --------
    >>> import pandas as pd
    >>> from cpn.structure import load_network
    >>> s = pd.DataFrame({"hr": [120.0, 80.0], "hr_age_h": [0.0, 4.0]})
    >>> b = EvidenceBuilder(s, network_info(load_network("physionet")))
    >>> b.evidence({"hr": 4.0})[0]["hr"][1].tolist()
    [0.5, 0.5, 1.0, 0.5, 0.5, 0.5]
    >>> b.take([1]).evidence({"hr": 2.0})[0]["hr"].tolist()
    [[0.75, 0.75, 1.0, 0.75, 0.75, 0.75]]
    """

    def __init__(self, screens: pd.DataFrame, info: NetworkInfo, *, cxr_prior=0.5):
        check_screens(screens)
        concepts = load_concepts()
        n = len(screens)
        read = _numeric_columns(screens, info)
        trends = _derived_values(screens, info)
        self.info, self.n = info, n
        self._parts: dict = {}  # node -> (role, value, state, age, fixed parameter)
        self._cache: dict = {}  # node -> (half-life, evidence array)
        for v in info.evidence_nodes:
            role = info.roles[v]
            age = h = None
            if role == "concept":
                if v not in screens.columns:
                    continue
                value = read[v]
                # the leaf's own states: concepts.toml's cuts, or learned ones (SepsisCPN evidence_states)
                state = concept_states(v, value, column=v, cuts=_concept_cuts(info.states[v]), dtype=np.int8)
                age_col = f"{v}_age_h"
                age = read[age_col] if age_col in read else np.zeros(n)
                if np.any(age < 0):
                    row = int(np.flatnonzero(age < 0)[0])
                    raise ValueError(f"column '{age_col}': negative age {age[row]:g} at row {row}")
                h = concepts[v].half_life_h
            elif role == "cxr":
                if v not in screens.columns:
                    continue
                value = read[v]
                bad = ~np.isnan(value) & ((value < 0) | (value > 1))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise ValueError(f"column '{v}': probability {value[row]:g} at row {row} is outside [0, 1]")
                age = read["cxr_age_h"] if "cxr_age_h" in read else np.zeros(n)
                h = cxr_prior.get(v, 0.5) if isinstance(cxr_prior, dict) else cxr_prior
                state = np.where(np.isnan(value), -1, (value >= 0.5).astype(np.int64))
            elif role == "context":
                col = _CONTEXT_COLUMN.get(v)
                if col is None or col not in screens.columns:
                    continue
                if v == "department":
                    value = np.full(n, np.nan)
                    state = category_states(screens[col].to_numpy(dtype=object), info.states[v])
                else:
                    value = read[col]
                    # the network's own bands (a saved network may predate a change of CONTEXT)
                    cuts = cuts_of_states(info.states[v])
                    state = band_states(value, CONTEXT[v][1] if cuts is None else cuts, dtype=np.int8)
            elif role == "tested":
                cols = [f"{c}_age_h" for c in TESTED[v][0] if f"{c}_age_h" in screens.columns]
                if not cols:
                    continue
                ages = np.column_stack([read[c] for c in cols])
                with np.errstate(invalid="ignore"):
                    recent = np.nanmin(np.where(np.isnan(ages), np.inf, ages), axis=1) <= TESTED[v][1]
                state = recent.astype(np.int8)
                value = state.astype(float)
            elif role == "derived":
                if v not in trends:
                    continue
                value = trends[v]
                state = band_states(value, DERIVED_LEAVES[v][2], dtype=np.int8)
            else:  # pragma: no cover - roles are validated with the network
                continue
            self._parts[v] = (role, value, state, age, h)

    @property
    def nodes(self) -> list:
        """The evidence nodes the screens give evidence to (those :meth:`evidence` returns)."""
        return list(self._parts)

    def take(self, rows) -> "EvidenceBuilder":
        """The builder of the rows ``rows`` (positions) of this one's screens."""
        rows = np.asarray(rows)
        out = object.__new__(EvidenceBuilder)
        out.info, out._cache = self.info, {}
        out.n = int(np.arange(self.n)[rows].size)
        out._parts = {v: (role, value[rows], state[rows], None if age is None else age[rows], h)
                      for v, (role, value, state, age, h) in self._parts.items()}
        return out

    def _weight(self, role, state, age, h):
        """The decay weight of a concept or CXR leaf's rows (NaN where there is no evidence)."""
        weight = decay_weight(np.where(np.isnan(age), 0.0, age), h)
        return np.where(state < 0, np.nan, weight)

    def evidence(self, half_lives: dict, *, details: bool = False, overwrite: bool = False):
        """``(evidence, details)`` as :func:`build_evidence` returns them for these half-lives.

        ``overwrite``: a leaf whose half-life changed is written into the array handed out for it
        before, in place (that array changes: for a caller done with the old evidence, which saves
        allocating the new)."""
        ev, det = {}, {}
        for v, (role, value, state, age, fixed) in self._parts.items():
            h = self._half_life(v, half_lives)
            cached = self._cache.get(v)
            ev[v] = cached[1] if cached is not None and cached[0] == h else self._node(v, h)
            if overwrite and cached is not None and ev[v] is not cached[1]:
                cached[1][...] = ev[v]
                ev[v] = cached[1]
            self._cache[v] = (h, ev[v])
            if details:
                if role in ("concept", "cxr"):
                    weight = self._weight(role, state, age, h)
                else:
                    weight = np.ones(self.n)
                det[v] = (value, state, age, weight)
        return ev, (det if details else None)

    def evidence_rows(self, half_lives: dict, start: int, stop: int, nodes=None, out=None) -> dict:
        """The evidence of the rows ``start:stop`` alone (of the nodes ``nodes``, default all): the
        same numbers as those rows of :meth:`evidence`'s, nothing cached; written into the first
        rows of ``out[node]`` (float64 arrays with at least ``stop - start`` rows) if given.

        Scoring a large table slice by slice into the same buffers
        (:meth:`cpn.scoring.CPNScoring.posterior`) keeps its evidence to a slice's worth of memory,
        touched once: a table's evidence at once is large (2.3 KB per screen for the PhysioNet
        network, 1.8 GB for set A), and on the 2-core development machine first touching that much
        fresh memory took longer than computing it (freed arrays go back to the OS: each table
        touches fresh memory again).

        >>> import pandas as pd
        >>> from cpn.structure import load_network
        >>> b = EvidenceBuilder(pd.DataFrame({"hr": [120.0, 80.0], "hr_age_h": [0.0, 4.0]}),
        ...                     network_info(load_network("physionet")))
        >>> b.evidence_rows({"hr": 4.0}, 1, 2)["hr"].tolist()
        [[0.5, 0.5, 1.0, 0.5, 0.5, 0.5]]
        """
        rows = slice(start, stop)
        return {v: self._node(v, self._half_life(v, half_lives), rows,
                              None if out is None else out[v][: stop - start])
                for v in self._parts if nodes is None or v in nodes}

    def _half_life(self, v, half_lives):
        """Node ``v``'s half-life under ``half_lives`` (None for a node without decay)."""
        role, fixed = self._parts[v][0], self._parts[v][4]
        if role == "concept":
            return float(half_lives.get(v, fixed))
        if role == "cxr":
            return float(half_lives.get("cxr", np.inf))
        return None

    def _node(self, v, h, rows=slice(None), out=None):
        """Node ``v``'s evidence array for half-life ``h`` (of the rows ``rows``, a slice; written
        into ``out`` if given)."""
        role, value, state, age, fixed = self._parts[v]
        k = len(self.info.states[v])
        state = state[rows]
        if role == "concept":
            return decayed_evidence(state, age[rows], h, k, out=out)
        if role == "cxr":
            ev = cxr_likelihood(value[rows], self._weight(role, state, age[rows], h), fixed)
            if out is not None:
                out[...] = ev
            return ev if out is None else out
        return soft_evidence(state, np.ones(len(state)), k, out=out)


def target_states(onset_in_h) -> np.ndarray:
    """Time-to-onset state index per screen (NaN onset = never septic -> last state)."""
    t = np.asarray(onset_in_h, dtype=float)
    s = np.searchsorted(np.asarray(TARGET_EDGES_H), t, side="left")
    return np.where(np.isnan(t), len(TARGET_EDGES_H), s).astype(np.int64)

