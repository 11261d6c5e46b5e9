"""Fast exact inference: a compiled, batched variable-elimination engine over numpy.

The elimination order and every contraction are planned once (:class:`InferenceEngine`), then a
whole table of soft (virtual) evidence is pushed through as a batch: every evidence factor carries
a leading row axis, every CPD does not. Evidence leaves are absorbed first (one GEMM per leaf,
leaves sharing a parent set multiplied together); the remaining core (target, latent and context
nodes) is eliminated in einsum steps over a greedy min-weight order. The engine returns the
unnormalised joint ``Z[n, t] = P(target = t, E_n)``; its posterior is ``Z / Z.sum(1)``.

Because ``Z`` is multilinear in every factor, one reverse (adjoint) sweep over the same plan gives
the derivative of ``Z`` with respect to every evidence vector and every CPD at once. Those
derivatives are the *cavity* quantities the rest of the package needs:

* ``dZ/dL_i`` summed over the states of node ``i`` is ``P(target, E without i)`` (explanations);
* ``theta_v * dZ/dtheta_v / Z`` summed over rows is the expected count table of family ``v`` (EM).

Examples
--------
>>> import numpy as np
>>> eng = InferenceEngine(
...     nodes=["A", "B"], cards={"A": 2, "B": 2}, parents={"A": [], "B": ["A"]},
...     cpds={"A": np.array([0.3, 0.7]), "B": np.array([[0.9, 0.2], [0.1, 0.8]])},
...     target="A", evidence_nodes=["B"])
>>> post = eng.posterior({"B": np.array([[0.0, 1.0], [np.nan, np.nan]])})
>>> np.round(post, 4).tolist()
[[0.0508, 0.9492], [0.3, 0.7]]
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass

import numpy as np

__all__ = ["InferenceEngine", "elimination_order"]

logger = logging.getLogger(__name__)

_BATCH = "N"  # row axis letter, reserved
_SEED = "S"  # adjoint seed axis letter, reserved
_LETTERS = [c for c in string.ascii_letters if c not in (_BATCH, _SEED)]


@dataclass(frozen=True)
class _Factor:
    vars: tuple[str, ...]
    batched: bool


@dataclass(frozen=True)
class _Step:
    inputs: tuple[int, ...]
    output: int
    eliminated: str | None


def elimination_order(nodes, families, cards, keep) -> list[str]:
    """Greedy min-weight elimination order over the moral graph.

    Parameters
    ----------
    nodes : list of str
    families : list of tuple of str
        The variable sets of the factors (each CPD's family, each evidence singleton).
    cards : dict
        Cardinality per node.
    keep : str
        The query node; never eliminated.

    Returns
    -------
    list of str
        Every node except ``keep`` in the order to eliminate.

    Examples
    --------
    >>> elimination_order(["A", "B", "C"], [("A",), ("B", "A"), ("C", "B")], {"A": 2, "B": 2, "C": 2}, "A")
    ['C', 'B']
    """
    nbr = {v: set() for v in nodes}
    for fam in families:
        for a in fam:
            nbr[a].update(b for b in fam if b != a)
    remaining = [v for v in nodes if v != keep]
    order = []
    while remaining:
        # weight of the factor created by eliminating v; ties broken by fill-in, then name
        def cost(v):
            weight = cards[v] * int(np.prod([cards[u] for u in nbr[v]], dtype=float))
            ns = list(nbr[v])
            fill = sum(1 for i, a in enumerate(ns) for b in ns[i + 1:] if b not in nbr[a])
            return (weight, fill, v)

        v = min(remaining, key=cost)
        ns = nbr.pop(v)
        for a in ns:
            nbr[a].discard(v)
            nbr[a].update(b for b in ns if b != a)
        remaining.remove(v)
        order.append(v)
    return order


class InferenceEngine:
    """Batched exact inference of ``P(target | soft evidence)`` in a discrete Bayesian network.

    Parameters
    ----------
    nodes : list of str
        Node names.
    cards : dict
        Number of states per node.
    parents : dict
        Ordered parent list per node (the CPD's column axes, in pgmpy's order).
    cpds : dict
        Per node an array of shape ``(card[node], *card[parents])``; columns sum to 1.
    target : str
        The query node.
    evidence_nodes : list of str
        Nodes that may receive (soft) evidence. A row without evidence for a node is a NaN row
        (or an all-ones likelihood); both mean "no evidence".

    Examples
    --------
    >>> import numpy as np
    >>> eng = InferenceEngine(["A", "B"], {"A": 2, "B": 3}, {"A": [], "B": ["A"]},
    ...     {"A": np.array([.5, .5]), "B": np.array([[.6, .1], [.3, .1], [.1, .8]])}, "A", ["B"])
    >>> eng.posterior({"B": np.array([[0, 0, 1.]])}).round(3).tolist()
    [[0.111, 0.889]]
    """

    def __init__(self, nodes, cards, parents, cpds, target, evidence_nodes):
        self.nodes = list(nodes)
        self.cards = {v: int(cards[v]) for v in self.nodes}
        self.parents = {v: list(parents[v]) for v in self.nodes}
        self.target = target
        self.evidence_nodes = list(evidence_nodes)
        unknown = [v for v in [target, *self.evidence_nodes] if v not in self.cards]
        if unknown:
            raise ValueError(f"InferenceEngine: node(s) {unknown} are not in the network")
        self.cpds = {}
        self.set_cpds(cpds)
        self._compile()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pgmpy(cls, model, target, evidence_nodes):
        """Build an engine from a pgmpy ``DiscreteBayesianNetwork`` with TabularCPDs.

        Examples
        --------
        >>> from pgmpy.models import DiscreteBayesianNetwork
        >>> from pgmpy.factors.discrete import TabularCPD
        >>> m = DiscreteBayesianNetwork([("A", "B")])
        >>> m.add_cpds(TabularCPD("A", 2, [[.5], [.5]]), TabularCPD("B", 2, [[.9, .2], [.1, .8]], ["A"], [2]))
        >>> InferenceEngine.from_pgmpy(m, "A", ["B"]).cards
        {'A': 2, 'B': 2}
        """
        nodes = list(model.nodes())
        cpds, parents, cards = {}, {}, {}
        for v in nodes:
            cpd = model.get_cpds(v)
            if cpd is None:
                raise ValueError(f"network: node '{v}' has no CPD")
            parents[v] = list(cpd.variables[1:])
            cards[v] = int(cpd.variable_card)
            cpds[v] = np.asarray(cpd.values, dtype=float).reshape(
                [cards[v]] + [int(c) for c in cpd.cardinality[1:]])
        return cls(nodes, cards, parents, cpds, target, evidence_nodes)

    def set_cpds(self, cpds) -> None:
        """Replace CPD arrays in place (same structure); the compiled plan stays valid."""
        for v in self.nodes:
            a = np.asarray(cpds[v], dtype=float)
            shape = tuple([self.cards[v]] + [self.cards[p] for p in self.parents[v]])
            if a.shape != shape:
                raise ValueError(f"CPD of '{v}' has shape {a.shape}, expected {shape} "
                                 f"(node, *parents {self.parents[v]})")
            self.cpds[v] = a

    def _compile(self) -> None:
        # Evidence leaves are absorbed before variable elimination: their message to the parents
        # is one GEMM (L @ CPD), and leaves with the same parent set are multiplied into one
        # batched factor. The core (target, latent and context nodes) is eliminated in einsum steps.
        children = {v: [] for v in self.nodes}
        for v in self.nodes:
            for p in self.parents[v]:
                children[p].append(v)
        self._absorbed = [v for v in self.evidence_nodes if not children[v] and v != self.target]
        absorbed = set(self._absorbed)
        self._core_nodes = [v for v in self.nodes if v not in absorbed]
        self._core_ev = [v for v in self.evidence_nodes if v not in absorbed]
        groups: dict[tuple, list] = {}
        for v in self._absorbed:
            groups.setdefault(tuple(sorted(self.parents[v])), []).append(v)
        self._groups = list(groups.items())
        factors = [_Factor(tuple([v] + self.parents[v]), False) for v in self._core_nodes]
        factors += [_Factor((v,), True) for v in self._core_ev]
        factors += [_Factor(scope, True) for scope, _ in self._groups]
        factors.append(_Factor((), True))
        self._n_cpd = len(self._core_nodes)
        self._n_ev = len(self._core_ev)
        self._n_grp = len(self._groups)
        self.order = elimination_order(self._core_nodes, [f.vars for f in factors], self.cards, self.target)
        live = set(range(len(factors)))
        steps = []
        for v in self.order:
            ins = tuple(sorted(i for i in live if v in factors[i].vars))
            if not ins:
                continue
            out_vars = tuple(dict.fromkeys(u for i in ins for u in factors[i].vars if u != v))
            factors.append(_Factor(out_vars, any(factors[i].batched for i in ins)))
            live.difference_update(ins)
            live.add(len(factors) - 1)
            steps.append(_Step(ins, len(factors) - 1, v))
        ins = tuple(sorted(live))
        factors.append(_Factor((self.target,), True))
        steps.append(_Step(ins, len(factors) - 1, None))
        self._factors = factors
        self._steps = steps
        self._subs = [self._subscripts(s) for s in steps]
        self.max_factor_size = max(int(np.prod([self.cards[u] for u in f.vars])) for f in factors)

    def _leaf_matrix(self, v, scope):
        """CPD of an absorbed leaf as (card, prod(parent cards)) with parents in ``scope`` order."""
        perm = [0] + [1 + self.parents[v].index(p) for p in scope]
        return self.cpds[v].transpose(perm).reshape(self.cards[v], -1)

    def _letters(self, step):
        vs = dict.fromkeys(u for i in (*step.inputs, step.output) for u in self._factors[i].vars)
        if step.eliminated:
            vs[step.eliminated] = None
        if len(vs) > len(_LETTERS):
            raise ValueError("network too densely connected for the compiled engine "
                             f"({len(vs)} variables in one elimination step)")
        return dict(zip(vs, _LETTERS))

    def _sub(self, f: _Factor, letters) -> str:
        return (_BATCH if f.batched else "") + "".join(letters[u] for u in f.vars)

    def _subscripts(self, step):
        letters = self._letters(step)
        ins = [self._sub(self._factors[i], letters) for i in step.inputs]
        return ",".join(ins) + "->" + self._sub(self._factors[step.output], letters), letters

    # ------------------------------------------------------------------ evidence
    def _evidence_arrays(self, evidence, n=None):
        unknown = [k for k in evidence if k not in self.evidence_nodes]
        if unknown:
            raise ValueError(f"evidence for node(s) {unknown}, which are not evidence nodes of "
                             f"this engine ({self.evidence_nodes})")
        if n is None:
            n = next((len(np.asarray(a)) for a in evidence.values()), 1)
        out = []
        for v in self.evidence_nodes:
            if v not in evidence:
                out.append(np.ones((n, self.cards[v])))
                continue
            a = np.array(evidence[v], dtype=float)
            if a.shape != (n, self.cards[v]):
                raise ValueError(f"evidence for '{v}' has shape {a.shape}, expected ({n}, {self.cards[v]})")
            nan_rows = np.isnan(a).any(axis=1)
            a[nan_rows] = 1.0  # NaN row = no evidence
            if (a < 0).any():
                raise ValueError(f"evidence for '{v}' has negative likelihoods")
            out.append(a)
        return out, n

    def _messages(self, ev_by_node, n):
        """Leaf messages per group: list (per group) of list of (n, P) arrays, and the products."""
        msgs, prods = [], []
        for scope, leaves in self._groups:
            ms = [ev_by_node[v] @ self._leaf_matrix(v, scope) for v in leaves]
            prod = ms[0].copy()
            for m in ms[1:]:
                prod *= m
            msgs.append(ms)
            prods.append(prod.reshape((n,) + tuple(self.cards[u] for u in scope)))
        return msgs, prods

    def _inputs(self, ev_arrays, n):
        ev_by_node = dict(zip(self.evidence_nodes, ev_arrays))
        msgs, prods = self._messages(ev_by_node, n)
        arrays = [self.cpds[v] for v in self._core_nodes] + [ev_by_node[v] for v in self._core_ev]
        arrays += prods + [np.ones(n)]
        return arrays, msgs, ev_by_node

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, arrays, keep=False):
        vals = dict(enumerate(arrays))
        cache = self.__dict__.setdefault("_paths", {})
        for k, (step, (sub, _)) in enumerate(zip(self._steps, self._subs)):
            ops = [vals[i] for i in step.inputs]
            if len(ops) > 1:
                # plan each contraction once per batch shape; path search is pure Python overhead
                key = (k, tuple(o.shape for o in ops))
                path = cache.get(key)
                if path is None:
                    path = cache[key] = np.einsum_path(sub, *ops, optimize="greedy")[0]
                vals[step.output] = np.einsum(sub, *ops, optimize=path)
            else:
                vals[step.output] = np.einsum(sub, *ops)
            if not keep:
                for i in step.inputs:
                    del vals[i]
        return vals

    def joint(self, evidence, *, batch_size: int = 4096) -> np.ndarray:
        """Unnormalised ``Z[n, t] = P(target = t, E_n)`` for every row of ``evidence``.

        ``evidence`` maps evidence node -> array ``(n, card)`` of likelihoods (NaN row = none).
        """
        ev, n = self._evidence_arrays(evidence)
        out = np.empty((n, self.cards[self.target]))
        for a in range(0, max(n, 1), batch_size):
            b = min(n, a + batch_size)
            arrays, _, _ = self._inputs([e[a:b] for e in ev], b - a)
            out[a:b] = self._forward(arrays)[self._steps[-1].output]
        return out

    def posterior(self, evidence, *, batch_size: int = 4096) -> np.ndarray:
        """``P(target | E_n)`` per row, shape ``(n, card[target])``."""
        z = self.joint(evidence, batch_size=batch_size)
        return z / z.sum(axis=1, keepdims=True)

    def backward(self, evidence, seed, *, want_cpds: bool = False, want_evidence: bool = True):
        """Forward pass plus one adjoint sweep.

        Parameters
        ----------
        evidence : dict
            As for :meth:`joint` (one batch; the caller chunks).
        seed : ndarray, shape (S, n, card[target]), or a callable ``z -> seed``
            Adjoint of ``Z``: the returned gradients are ``sum_{n,t} seed[s, n, t] dZ[n, t]/d.``.
        want_cpds, want_evidence : bool
            Which gradients to return.

        Returns
        -------
        z : ndarray (n, card[target])
        grad_evidence : dict node -> ndarray (S, n, card[node])
        grad_cpds : dict node -> ndarray (S, *cpd shape) (summed over rows)
        """
        ev, n = self._evidence_arrays(evidence)
        arrays, msgs, ev_by_node = self._inputs(ev, n)
        vals = self._forward(arrays, keep=True)
        z = vals[self._steps[-1].output]
        seed = np.asarray(seed(z) if callable(seed) else seed, dtype=float)
        if seed.ndim != 3 or seed.shape[1:] != z.shape:
            raise ValueError(f"seed must have shape (S, {n}, {z.shape[1]}), got {seed.shape}")
        n_seed = seed.shape[0]
        adj = {self._steps[-1].output: seed}
        cache = self.__dict__.setdefault("_paths", {})
        n_inputs = len(arrays)
        first_grp = self._n_cpd + self._n_ev
        needed = set(range(first_grp, first_grp + self._n_grp))
        if want_cpds:
            needed.update(range(self._n_cpd))
        if want_evidence:
            needed.update(range(self._n_cpd, first_grp))
        for step, (sub, letters) in zip(reversed(self._steps), reversed(self._subs)):
            g = adj.pop(step.output, None)
            if g is None:
                continue
            ins_subs, out_sub = sub.split("->")
            ins_subs = ins_subs.split(",")
            for j, i in enumerate(step.inputs):
                if i < n_inputs and i not in needed:
                    continue
                others = [k for k in range(len(step.inputs)) if k != j]
                avail = set(out_sub) | {c for k in others for c in ins_subs[k]}
                target_sub = _SEED + "".join(c for c in ins_subs[j] if c in avail)
                expr = ",".join([_SEED + out_sub] + [ins_subs[k] for k in others]) + "->" + target_sub
                ops = [g] + [vals[step.inputs[k]] for k in others]
                key = (expr, tuple(o.shape for o in ops))
                path = cache.get(key)
                if path is None:
                    path = cache[key] = np.einsum_path(expr, *ops, optimize="greedy")[0]
                gi = np.einsum(expr, *ops, optimize=path)
                full = _SEED + ins_subs[j]
                if target_sub != full:  # an index only this operand held: broadcast over it
                    shape = [gi.shape[target_sub.index(c)] if c in target_sub else 1 for c in full]
                    perm = [target_sub.index(c) for c in full if c in target_sub]
                    gi = np.broadcast_to(gi.transpose(perm).reshape(shape),
                                         (g.shape[0],) + vals[i].shape)
                adj[i] = adj[i] + gi if i in adj else gi
        grad_ev, grad_cpd = {}, {}
        if want_evidence:
            for k, v in enumerate(self._core_ev):
                grad_ev[v] = adj.get(self._n_cpd + k, np.zeros((n_seed, n, self.cards[v])))
        if want_cpds:
            for k, v in enumerate(self._core_nodes):
                grad_cpd[v] = adj.get(k, np.zeros((n_seed,) + self.cpds[v].shape))
        for gidx, ((scope, leaves), ms) in enumerate(zip(self._groups, msgs)):
            p = ms[0].shape[1]
            d = adj.get(first_grp + gidx)
            d = np.zeros((n_seed, n, p)) if d is None else np.asarray(d).reshape(n_seed, n, p)
            # cavity of each leaf's message: D * product of the other leaves' messages
            prefix = [np.ones((n, p))]
            for m in ms[:-1]:
                prefix.append(prefix[-1] * m)
            suffix = np.ones((n, p))
            cav = [None] * len(ms)
            for j in range(len(ms) - 1, -1, -1):
                cav[j] = d * (prefix[j] * suffix)[None]
                suffix = suffix * ms[j]
            for j, v in enumerate(leaves):
                A = self._leaf_matrix(v, scope)
                if want_evidence:
                    grad_ev[v] = (cav[j].reshape(n_seed * n, p) @ A.T).reshape(n_seed, n, -1)
                if want_cpds:
                    gc = np.einsum("nx,snp->sxp", ev_by_node[v], cav[j])
                    gc = gc.reshape((n_seed, self.cards[v]) + tuple(self.cards[u] for u in scope))
                    inv = [0, 1] + [2 + scope.index(q) for q in self.parents[v]]
                    grad_cpd[v] = gc.transpose(inv)
        if want_evidence:
            grad_ev = {v: grad_ev[v] for v in self.evidence_nodes}
        if want_cpds:
            grad_cpd = {v: grad_cpd[v] for v in self.nodes}
        return z, grad_ev, grad_cpd

    def cavity(self, evidence, groups, *, batch_size: int = 2048):
        """``P(target group g, E_n)`` and ``P(target group g, E_n without node i)`` for every i.

        Parameters
        ----------
        groups : ndarray, shape (card[target], G)
            0/1 matrix collapsing target states into G groups (e.g. sepsis within 48 h / not).

        Returns
        -------
        zg : ndarray (n, G)
        cav : dict node -> ndarray (n, G)
        """
        ev, n = self._evidence_arrays(evidence)
        groups = np.asarray(groups, dtype=float)
        zg = np.empty((n, groups.shape[1]))
        cav = {v: np.empty((n, groups.shape[1])) for v in self.evidence_nodes}
        for a in range(0, max(n, 1), batch_size):
            b = min(n, a + batch_size)
            chunk = {v: e[a:b] for v, e in zip(self.evidence_nodes, ev)}
            seed = np.broadcast_to(groups.T[:, None, :], (groups.shape[1], b - a, groups.shape[0]))
            z, gev, _ = self.backward(chunk, seed)
            zg[a:b] = z @ groups
            for v in self.evidence_nodes:
                # Z is linear in L_v: replacing L_v by ones gives the joint without v's evidence
                cav[v][a:b] = gev[v].sum(axis=2).T
        return zg, cav

    def target_marginals(self):
        """``P(target, X_i)`` for every evidence node ``i`` with no evidence, shape (T, card_i)."""
        t = self.cards[self.target]
        seed = np.eye(t)[:, None, :]
        _, gev, _ = self.backward({}, seed)
        return {v: gev[v][:, 0, :] for v in self.evidence_nodes}

    def expected_counts(self, evidence, *, weights=None, batch_size: int = 2048):
        """Expected family counts ``sum_n w_n P(X_v, Pa_v | E_n)`` per node (the EM E-step).

        Returns
        -------
        counts : dict node -> ndarray (cpd shape)
        loglik : float
            ``sum_n w_n log P(E_n)`` (rows with impossible evidence are skipped and counted in the log).
        """
        ev, n = self._evidence_arrays(evidence)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        counts = {v: np.zeros_like(self.cpds[v]) for v in self.nodes}
        loglik = 0.0
        skipped = 0
        for a in range(0, max(n, 1), batch_size):
            b = min(n, a + batch_size)
            chunk = {v: e[a:b] for v, e in zip(self.evidence_nodes, ev)}
            wb = w[a:b]

            def seed(z):
                zn = z.sum(axis=1)
                inv = np.where(zn > 0, wb / np.where(zn > 0, zn, 1.0), 0.0)
                return np.broadcast_to(inv[None, :, None], (1,) + z.shape)

            z, _, gcpd = self.backward(chunk, seed, want_cpds=True, want_evidence=False)
            zn = z.sum(axis=1)
            ok = zn > 0
            skipped += int((~ok).sum())
            for v in self.nodes:
                counts[v] += self.cpds[v] * gcpd[v][0]
            loglik += float((wb[ok] * np.log(zn[ok])).sum())
        if skipped:
            logger.warning("expected_counts: %d row(s) with zero-probability evidence skipped", skipped)
        return counts, loglik
