"""Fast exact inference: a compiled, batched variable-elimination engine over numpy.

(Longer than our 400-line guide on purpose: planning, the forward pass, the adjoint sweep and
the cavity/explanation passes share one plan and one set of private invariants; split apart,
each piece would need the others' internals.)

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

:meth:`InferenceEngine.joint` and :func:`cpn.explain.bayes_factors` run, where numba is installed,
the plan flattened into a compiled term program (:mod:`cpn.kernel`: forward pass, adjoint and
explanation sums in one pass over a tile of screens, several threads). The numpy fallback -- and
:meth:`~InferenceEngine.cavity` always -- runs the same plan specialised to the current CPD values in
a batch-last layout (``_Plan``): arrays are ``(*states, rows)``, each CPD contraction is one stacked
matmul, and the adjoint sweep returns only the summed cavities. :meth:`~InferenceEngine.backward`
keeps the general einsum form (any seed, per-state and CPD gradients) and is the reference both are
tested against.

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

from . import kernel

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
    def _evidence_arrays(self, evidence):
        """Checked evidence as one fresh (n, k) array per evidence node, NaN rows and absent nodes
        replaced by ones (no evidence): the input of the general einsum/adjoint path."""
        checked, n = self._check_evidence(evidence)
        out = []
        for v in self.evidence_nodes:
            if v not in checked:
                out.append(np.ones((n, self.cards[v])))
                continue
            a = checked[v].copy()
            a[np.isnan(a).any(axis=1)] = 1.0  # NaN row = no evidence
            if (a < 0).any():
                raise ValueError(f"evidence for '{v}' has negative likelihoods")
            out.append(a)
        return out, n

    def _check_evidence(self, evidence):
        """Check names and shapes without copying: node -> (n, k) float array (nodes without
        evidence left out), and n. Rows holding a NaN carry no evidence; the plan finds them, and
        rejects negative or infinite likelihoods, chunk by chunk (while the chunk is in cache)."""
        unknown = [k for k in evidence if k not in self.evidence_nodes]
        if unknown:
            raise ValueError(f"evidence for node(s) {unknown}, which are not evidence nodes of "
                             f"this engine ({self.evidence_nodes})")
        n = next((len(np.asarray(a)) for a in evidence.values()), 1)
        ev = {}
        for v in self.evidence_nodes:
            if v not in evidence:
                continue
            a = np.asarray(evidence[v], dtype=float)
            if a.shape != (n, self.cards[v]):
                raise ValueError(f"evidence for '{v}' has shape {a.shape}, expected ({n}, {self.cards[v]})")
            ev[v] = a
        return ev, n

    def _fast_plan(self) -> "_Plan":
        """The numeric plan for the current CPDs (rebuilt when any CPD array changed)."""
        plan = self.__dict__.get("_plan")
        cur = [self.cpds[v] for v in self.nodes]
        if plan is None or not all(a.shape == b.shape and np.array_equal(a, b)
                                   for a, b in zip(plan.cpds, cur)):
            plan = self._plan = _Plan(self)
            plan.cpds = [a.copy() for a in cur]
        return plan

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

    def _program(self, groups=None) -> "kernel.Program":
        """The compiled kernel's term program for the current CPDs and these target groups (kept
        with the numpy plan, so rebuilt with it when a CPD changes); ``None``: any program, for
        the forward pass."""
        plan = self._fast_plan()
        progs = plan.__dict__.setdefault("programs", {})
        forward_only = groups is None
        if forward_only:  # the forward pass alone: the same in every program
            if progs:
                return next(iter(progs.values()))
            t = self.cards[self.target]
            groups = np.stack([np.arange(t) == 0, np.arange(t) != 0], axis=1)
        groups = np.asarray(groups, dtype=float)
        key = groups.tobytes()
        if key not in progs:
            progs[key] = kernel.Program(self, groups)
        prog = progs[key]
        if not forward_only and not prog.alone_set:  # P(X_i, group): one backward pass, once
            marg = self.target_marginals()
            prog.set_alone({v: marg[v].T @ groups for v in self.evidence_nodes})
        return prog

    def _use_kernel(self, backend: str, n_rows: int | None = None) -> bool:
        """See :func:`cpn.kernel.wanted` (``n_rows`` None: as for a large batch)."""
        return kernel.wanted(backend, n_rows)

    def joint(self, evidence, *, batch_size: int = 4096, backend: str = "auto",
              threads: int | None = None) -> np.ndarray:
        """Unnormalised ``Z[n, t] = P(target = t, E_n)`` for every row of ``evidence``.

        ``evidence`` maps evidence node -> array ``(n, card)`` of likelihoods (NaN row = none).
        ``backend``: the compiled kernel ("numba"), the numpy plan ("numpy", in chunks of
        ``batch_size`` rows) or, with "auto", the kernel where numba is installed unless the batch is
        small and the kernel not yet loaded (:func:`cpn.kernel.wanted`); ``threads``: the
        kernel's (default ``SEPSISCOPE_THREADS`` or every core).
        """
        ev, n = self._check_evidence(evidence)
        if self._use_kernel(backend, n):
            out = np.empty((self.cards[self.target], n))
            kernel.run_kernel(self._program(), ev, n, mode=0, z_out=out, threads=threads)
            return np.ascontiguousarray(out.T)
        plan = self._fast_plan()
        out = np.empty((self.cards[self.target], n))
        for a in range(0, n, batch_size):
            b = min(n, a + batch_size)
            vals = plan.forward(ev, a, b, keep=False)[0]
            out[:, a:b] = vals[plan.z_index]
        return np.ascontiguousarray(out.T)

    def _joint_reference(self, evidence, *, batch_size: int = 4096) -> np.ndarray:
        """:meth:`joint` through the general einsum plan (the reference the fast plan is tested on)."""
        ev, n = self._evidence_arrays(evidence)
        out = np.empty((n, self.cards[self.target]))
        for a in range(0, max(n, 1), batch_size):
            b = min(n, a + batch_size)
            arrays, _, _ = self._inputs([e[a:b] for e in ev], b - a)
            out[a:b] = self._forward(arrays)[self._steps[-1].output]
        return out

    def posterior(self, evidence, *, batch_size: int = 4096, backend: str = "auto",
                  threads: int | None = None) -> np.ndarray:
        """``P(target | E_n)`` per row, shape ``(n, card[target])`` (``backend``, ``threads``: see
        :meth:`joint`)."""
        z = self.joint(evidence, batch_size=batch_size, backend=backend, threads=threads)
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
        ev, n = self._check_evidence(evidence)
        zg, cav, rows = self._cavity_arrays(ev, n, groups, batch_size=batch_size)
        return (np.ascontiguousarray(zg.T),
                {v: np.ascontiguousarray(cav[:, rows[v], :].T) for v in self.evidence_nodes})

    def _cavity_arrays(self, ev, n, groups, *, batch_size: int = 2048):
        """Batch-last :meth:`cavity` on checked evidence: ``zg`` (G, n), ``cav`` (G, rows, n) and
        the row of each evidence node in ``cav``. Z is linear in every evidence vector, so the joint
        without node i's evidence is the adjoint of L_i summed over i's states; one adjoint sweep
        seeded with the G groups gives it for every node."""
        groups = np.asarray(groups, dtype=float)
        if groups.ndim != 2 or groups.shape[0] != self.cards[self.target]:
            raise ValueError(f"groups must have shape ({self.cards[self.target]}, G), got {groups.shape}")
        plan = self._fast_plan()
        zg = np.empty((groups.shape[1], n))
        cav = np.empty((groups.shape[1], plan.n_rows, n))
        for a in range(0, n, batch_size):
            b = min(n, a + batch_size)
            plan.cavity(ev, a, b, groups, zg[:, a:b], cav[:, :, a:b])
        return zg, cav, plan.rows

    def _cavity_reference(self, evidence, groups, *, batch_size: int = 2048):
        """:meth:`cavity` through the general :meth:`backward` (the reference the fast plan is
        tested on)."""
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
        plan = self._fast_plan()
        if plan.marginals is None:
            t = self.cards[self.target]
            _, gev, _ = self.backward({}, np.eye(t)[:, None, :])
            plan.marginals = {v: gev[v][:, 0, :].copy() for v in self.evidence_nodes}
        return {v: m.copy() for v, m in plan.marginals.items()}

    def expected_counts(self, evidence, *, weights=None, batch_size: int = 2048, backend: str = "auto",
                        threads: int | None = None):
        """Expected family counts ``sum_n w_n P(X_v, Pa_v | E_n)`` per node (the EM E-step).

        ``backend``: the compiled kernel's counts program (:mod:`cpn.counts`; "numba", or "auto"
        where numba is installed) or the einsum adjoint in chunks of ``batch_size`` rows
        ("numpy"; also where a node is listed twice among the evidence nodes); ``threads``: see
        :meth:`joint`.

        Returns
        -------
        counts : dict node -> ndarray (cpd shape)
        loglik : float
            ``sum_n w_n log P(E_n)`` (rows with impossible evidence are skipped and counted in the log).
        """
        if self._use_kernel(backend) and len(set(self.evidence_nodes)) == len(self.evidence_nodes):
            from .counts import expected_counts

            return expected_counts(self, evidence, weights=weights, threads=threads)
        return self._expected_counts_reference(evidence, weights=weights, batch_size=batch_size)

    def discriminative_counts(self, evidence, target_evidence, *, weights=None, batch_size: int = 2048,
                              backend: str = "auto", threads: int | None = None):
        """``E[counts | T, E] - E[counts | E]`` and ``sum_n w_n log P(T_n | E_n)``: the two E-steps
        of the discriminative gradient (:func:`cpn.learning.refine_discriminative`) in one pass.

        ``evidence`` leaves the target out; ``target_evidence`` (n, card[target]) is its likelihood
        rows ``T``. Because ``Z`` keeps the target, ``P(T, E) = sum_t T_t Z_t`` and both E-steps share
        one forward pass; the adjoint is seeded per target state with ``w T_t / P(T, E) - w / P(E)``
        (the compiled kernel, :mod:`cpn.counts`). Elsewhere (``backend="numpy"``): two
        :meth:`expected_counts` passes, the reference.

        Returns
        -------
        counts : dict node -> ndarray (cpd shape), the difference of the two expected counts
        cll : float
            ``sum_n w_n (log P(T_n, E_n) - log P(E_n))`` (each term over the rows where its
            probability is positive, as the two passes skip them).

        Examples
        --------
        >>> eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
        ...     {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["A", "B"])
        >>> ev, t = {"B": np.eye(2)[[0, 1]]}, np.eye(2)[[0, 0]]
        >>> d, cll = eng.discriminative_counts(ev, t)
        >>> c1, l1 = eng.expected_counts({**ev, "A": t}, backend="numpy")
        >>> c0, l0 = eng.expected_counts(ev, backend="numpy")
        >>> bool(np.allclose(d["B"], c1["B"] - c0["B"])), round(cll - (l1 - l0), 12)
        (True, 0.0)
        """
        if self.target in evidence:
            raise ValueError(f"discriminative_counts: evidence for the target '{self.target}' is given as "
                             "target_evidence, not in evidence")
        if self._use_kernel(backend) and len(set(self.evidence_nodes)) == len(self.evidence_nodes):
            from .counts import expected_counts

            return expected_counts(self, evidence, weights=weights, threads=threads, target_evidence=target_evidence)
        c1, ll1 = self.expected_counts({**evidence, self.target: target_evidence}, weights=weights,
                                       batch_size=batch_size, backend="numpy")
        c0, ll0 = self.expected_counts(evidence, weights=weights, batch_size=batch_size, backend="numpy")
        return {v: c1[v] - c0[v] for v in c1}, ll1 - ll0

    def _expected_counts_reference(self, evidence, *, weights=None, batch_size: int = 2048):
        """:meth:`expected_counts` through the general :meth:`backward` (the reference)."""
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


def _check_chunk(v, x):
    """Reject negative or infinite likelihoods in rows of ``x`` that carry evidence (a row holding
    a NaN carries none, whatever else it holds)."""
    if x.size and (np.fmin.reduce(x, axis=None) < 0 or np.fmax.reduce(x, axis=None) == np.inf):
        used = ~np.isnan(x).any(axis=1)
        if (x[used] < 0).any():
            raise ValueError(f"evidence for '{v}' has negative likelihoods")
        if np.isinf(x[used]).any():
            raise ValueError(f"evidence for '{v}' has infinite likelihoods")


def _einsum_vars(operands, out_vars, cards):
    """``einsum`` over (array, variable names) pairs onto ``out_vars``, summing the other variables;
    an output variable no operand holds is broadcast (the result is then constant along it)."""
    names = list(dict.fromkeys([*out_vars, *(u for _, vs in operands for u in vs)]))
    if len(names) > len(_LETTERS):
        raise ValueError("network too densely connected for the compiled engine "
                         f"({len(names)} variables in one elimination step)")
    let = dict(zip(names, _LETTERS))
    held = {u for _, vs in operands for u in vs}
    ops = list(operands) + [(np.ones(cards[u]), (u,)) for u in out_vars if u not in held]
    subs = ",".join("".join(let[u] for u in vs) for _, vs in ops)
    return np.einsum(subs + "->" + "".join(let[u] for u in out_vars), *[a for a, _ in ops])


@dataclass
class _PlanStep:
    out: int
    bat: list  # per batched input: (factor index, transpose, shape in X order with 1s), row axis last
    # per batched input: (kind, einsum expression gP[, others] -> gradient or None (no sum),
    # transpose to its layout, conversion "sum_t" / "mask" / None, axis of the target for "mask")
    grads: list
    mode: str  # "sum" (no CPD: P summed over the eliminated), "mm" (contract with CPDs), "const"
    xshape: tuple  # shape of the batched product P (row axis excluded)
    out_shape: tuple  # output shape (row axis excluded)
    sum2: str = ""  # "sum" mode with two inputs: einsum expression of the fused product-sum
    mat: np.ndarray | None = None  # "mm": (|H|, |F|, |K|); "const": the output factor
    mat_t: np.ndarray | None = None  # "mm": (|H|, |K|, |F|)
    hfk: tuple = ()  # "mm": (|H|, |F|, |K|)
    s1: bool = False  # the adjoint runs with one seed row (P holds the target)
    expand: int | None = None  # axis of the target in the output when only the CPDs hold it
    f_t: np.ndarray | None = None  # "mm" with expand: the target's state per flat F index


@dataclass
class _PlanGroup:
    index: int  # factor index of the group's batched factor
    scope_shape: tuple
    leaves: list
    mats: list  # per leaf: (p, k) transposed, column-normalised CPD matrix
    fill: np.ndarray  # (nl, p, 1) message of a leaf without evidence (1, or 0 for a zero column)
    ones: bool  # every fill entry is 1
    scale: np.ndarray  # (p, 1): product of the leaves' column sums (undoes the normalisation)
    rows: slice  # the leaves' rows in the cavity output
    tiny: float = 0.0  # messages in (tiny, 1 / tiny): their products neither underflow nor overflow
    nonneg: bool = True  # no negative CPD entry (so no negative message)
    divide: bool = True  # the column-sum product (scale) is moderate: leave-one-out by division


class _Plan:
    """The engine's elimination plan specialised to its current CPD values, batch-last.

    Every batched array has shape ``(*cards of its variables, B)``: the row axis is last and
    contiguous, so products, contractions and reductions run numpy's inner loops along rows rather
    than along 2-6 states, and every contraction with CPDs is one stacked matmul
    ``(H, F, K) @ (H, K, B)`` (H: variables kept from the batched side, K: the eliminated one,
    F: variables only the CPDs hold) or, when F or K is empty, one broadcast product / einsum.
    Each step output is laid out in the order its contraction produces.

    The forward pass keeps what the adjoint pass needs; the adjoint pass returns only what
    explanations use: per evidence node the joint with that node's evidence removed, summed over
    its states (``P(group, E without i)``), never the per-state gradients. Adjoints of factors
    that hold the target carry one seed row instead of one per group (see ``s1`` below). Leaves of
    a group are handled together: one matmul per leaf gives its message (column-normalised CPD,
    so a leaf without evidence sends ones) and, for explanations, its prior joint with the groups;
    the leave-one-out products are the group factor divided by each message while every message
    is safely away from 0 and overflow, prefix/suffix products (exact) otherwise.
    """

    def __init__(self, eng):
        f = eng._factors
        cards = eng.cards
        n_cpd, n_ev = eng._n_cpd, eng._n_ev
        first_grp = n_cpd + n_ev
        self.n_inputs = first_grp + eng._n_grp + 1
        ones = self.n_inputs - 1  # the all-ones batched factor that only makes the result batched
        self.target_card = cards[eng.target]
        self.core_ev = [(n_cpd + k, v, cards[v]) for k, v in enumerate(eng._core_ev)]
        self.rows = {v: k for k, v in enumerate(eng._core_ev)}
        self.groups = []
        r = len(eng._core_ev)
        for gidx, (scope, leaves) in enumerate(eng._groups):
            mats, fill, cols = [], [], []
            for v in leaves:
                a = eng._leaf_matrix(v, scope)
                c = a.sum(axis=0)
                s = np.where(c > 0, c, 1.0)
                mats.append(np.ascontiguousarray((a / s).T))
                fill.append((c / s)[:, None])
                cols.append(s)
            fill = np.stack(fill)
            scale = np.prod(cols, axis=0)[:, None]
            self.groups.append(_PlanGroup(
                first_grp + gidx, tuple(cards[u] for u in scope), list(leaves), mats, fill,
                ones=bool((fill == 1).all()), scale=scale, rows=slice(r, r + len(leaves)),
                tiny=10.0 ** (-290 / len(leaves)), nonneg=all((m >= 0).all() for m in mats),
                divide=bool(((scale >= 1e-10) & (scale <= 1e10)).all())))
            self.rows.update({v: r + j for j, v in enumerate(leaves)})
            r += len(leaves)
        self.n_rows = r
        self.ev_rows = {idx: self.rows[v] for idx, v, _ in self.core_ev}

        steps = eng._steps
        layout = {i: fac.vars for i, fac in enumerate(f[:self.n_inputs])}  # memory order of each array
        const = {k: eng.cpds[v] for k, v in enumerate(eng._core_nodes)}
        self.steps = []
        for step in steps:
            out = f[step.output]
            if not out.batched:  # only CPDs meet here: a constant, evaluated once
                const[step.output] = _einsum_vars([(const[i], layout[i]) for i in step.inputs],
                                                  out.vars, cards)
                layout[step.output] = out.vars
                continue
            bat = [i for i in step.inputs if f[i].batched and i != ones]
            unb = [(const[i], layout[i]) for i in step.inputs if not f[i].batched]
            elim = () if step.eliminated is None else (step.eliminated,)
            held = list(dict.fromkeys(u for i in bat for u in layout[i]))
            yv = out.vars
            if unb:
                h = [u for u in held if u in yv]
                k = [u for u in held if u not in yv]  # eliminated variables the batched side holds
                fv = [u for u in yv if u not in held]
                xv, ov = h + k, h + fv
            else:  # the eliminated variables first: the sum runs over the outermost axes
                xv = [u for u in held if u in elim] + [u for u in held if u not in elim]
                ov = [u for u in xv if u not in elim]
            names = list(dict.fromkeys([*xv, *ov]))
            if len(names) > len(_LETTERS):
                raise ValueError("network too densely connected for the compiled engine "
                                 f"({len(names)} variables in one elimination step)")
            let = dict(zip(names, _LETTERS))
            xs = "".join(let[u] for u in xv)
            # Adjoints of factors holding the target t need no seed axis: d Z_s / d phi(x) is
            # groups[x_t, s] times the same quantity for every s. A step whose product P holds t
            # runs its adjoint with one seed row ("s1"); the split into the groups happens where a
            # gradient loses t (summed with t kept, then one (S, T) @ (T, .) product).
            tv = eng.target
            s1 = tv in xv and tv in ov
            views, grads = [], []
            for i in bat:
                vs = layout[i]
                perm = tuple(vs.index(u) for u in xv if u in vs) + (len(vs),)
                views.append((i, perm, tuple(cards[u] if u in vs else 1 for u in xv)))
                src = f"{_SEED}{xs}{_BATCH}" + ("" if len(bat) == 1 else f",{xs}{_BATCH}")
                kind = "msg" if i >= self.n_inputs else ("grp" if i >= first_grp else "ev")
                in_x = [u for u in xv if u in vs]  # its variables in X order
                back = (0,) + tuple(1 + in_x.index(u) for u in vs) + (1 + len(vs),)
                conv, axis = None, None
                if kind == "ev":  # core evidence: only the sum over its states
                    keep = [tv] if s1 else []
                    conv = "sum_t" if s1 else None
                    back = None
                elif s1 and tv not in vs:
                    keep, conv = [tv] + in_x, "sum_t"
                else:
                    keep = in_x
                    if s1 and kind == "grp":
                        conv, axis = "mask", in_x.index(tv)
                expr = None if keep == xv else \
                    f"{src}->{_SEED}{''.join(let[u] for u in keep)}{_BATCH}"
                grads.append((kind, expr, back, conv, axis))
            st = _PlanStep(step.output, views, grads, "sum", tuple(cards[u] for u in xv),
                           tuple(cards[u] for u in ov), s1=s1,
                           expand=ov.index(tv) if tv in ov and tv not in xv else None)
            if unb and not bat:
                st.mode = "const"
                st.mat = _einsum_vars(unb, ov, cards)
            elif unb:
                st.mode = "mm"
                st.hfk = tuple(int(np.prod([cards[u] for u in g])) for g in (h, fv, k))
                st.mat = np.ascontiguousarray(_einsum_vars(unb, h + fv + k, cards).reshape(st.hfk))
                st.mat_t = np.ascontiguousarray(st.mat.transpose(0, 2, 1))
                if tv in fv:
                    st.f_t = np.indices([cards[u] for u in fv])[fv.index(tv)].ravel()
            elif len(bat) == 2 and elim:
                sa, sb = ("".join(let[u] for u in layout[i]) for i in bat)
                st.sum2 = f"{sa}{_BATCH},{sb}{_BATCH}->{''.join(let[u] for u in ov)}{_BATCH}"
            layout[step.output] = tuple(ov)
            self.steps.append(st)
        self.z_index = steps[-1].output
        self.marginals = None  # cache of InferenceEngine.target_marginals

    # ------------------------------------------------------------------ passes
    def forward(self, ev, a, b, keep, ext=None, nan_out=None):
        """One chunk: rows a:b of the evidence ``ev`` (node -> (n, k) array; absent = none).

        ``ext``: per group a list of per-leaf (p + G, k) matrices (the message matrix with G more
        rows); the extra rows of every leaf's product with its evidence are returned in ``extra``
        (per group (G, nl, rows); NaN for rows without evidence). ``nan_out`` (rows of the
        cavity output, b - a): set to NaN where a node has no evidence, 0 elsewhere."""
        n = b - a
        vals, raw = {}, {}
        for idx, v, k in self.core_ev:
            x = ev.get(v)
            if x is None:
                vals[idx] = np.broadcast_to(np.ones((k, 1)), (k, n))
                if nan_out is not None:
                    nan_out[self.ev_rows[idx]] = np.nan
                continue
            _check_chunk(v, x[a:b])
            e = np.empty((k, n))
            np.copyto(e, x[a:b].T)
            sm = e.sum(axis=0)  # NaN iff the row holds a NaN (evidence is finite)
            m = np.isnan(sm)
            if nan_out is not None:
                np.multiply(sm, 0.0, out=nan_out[self.ev_rows[idx]])
            if m.any():
                raw[idx] = e.copy()
                np.copyto(e, 1.0, where=m)
            vals[idx] = e
        evs = {idx: raw.get(idx, vals[idx]) for idx, _, _ in self.core_ev}  # with their NaN
        gtape, extra = [], []
        for gi, g in enumerate(self.groups):
            nl = len(g.leaves)
            mats = g.mats if ext is None else ext[gi]
            p = g.mats[0].shape[0]
            # (message rows, then the extra rows) x leaf x row: the message block is contiguous
            full = np.empty((mats[0].shape[0], nl, n))
            for j, v in enumerate(g.leaves):
                x = ev.get(v)
                if x is None:
                    full[:p, j] = g.fill[j]
                    full[p:, j] = np.nan
                else:
                    _check_chunk(v, x[a:b])
                    np.matmul(mats[j], x[a:b].T, out=full[:, j])
            # a row holding a NaN gives all-NaN products (NaN propagates through the sum over states,
            # and evidence is finite otherwise): those rows carry no evidence. The extra rows keep
            # their NaN, and so does `nan_out` (0 where the node has evidence).
            msg = full[:p]
            if nan_out is not None:
                np.multiply(msg[0], 0.0, out=nan_out[g.rows])
                for j, v in enumerate(g.leaves):
                    if v not in ev:
                        nan_out[g.rows.start + j] = np.nan
            bad = np.isnan(msg[0])  # (leaf, row)
            if bad.any():
                if g.ones and g.nonneg:  # NaN -> 0 (messages are >= 0), then + 1 on those rows
                    np.fmax(msg, 0.0, out=msg)
                    add = np.empty(bad.shape)
                    np.copyto(add, bad)
                    msg += add
                else:
                    np.copyto(msg, np.broadcast_to(g.fill.transpose(1, 0, 2), msg.shape), where=bad)
            msg = msg.transpose(1, 0, 2)  # leaf x message row x row
            if ext is not None:
                extra.append(full[p:])
            fac = msg[0] * g.scale if nl == 1 else np.multiply.reduce(msg, axis=0) * g.scale
            if keep:
                gtape.append((msg, fac))
            vals[g.index] = fac.reshape(g.scope_shape + (n,))
        tape = []
        for st in self.steps:
            arrs = [vals.pop(i) for i, _, _ in st.bat]
            ws = [x.transpose(perm).reshape(shape + (n,)) for x, (_, perm, shape) in zip(arrs, st.bat)]
            pre = None
            if st.sum2:
                vals[st.out] = np.einsum(st.sum2, *arrs)
                if keep:
                    tape.append((ws, pre))
                continue
            if not ws:
                p = None
            elif len(ws) == 1:
                p = ws[0]
            elif keep and len(ws) > 2:
                pre = [None, ws[0]]
                for w in ws[1:-1]:
                    pre.append(pre[-1] * w)
                p = pre[-1] * ws[-1]
            else:
                p = ws[0] * ws[1]
                for w in ws[2:]:
                    if p.shape == st.xshape + (n,):
                        p *= w
                    else:
                        p = p * w
            if st.mode == "sum":
                ne = len(st.xshape) - len(st.out_shape)
                o = p if ne == 0 else p.sum(axis=tuple(range(ne)))
            elif st.mode == "mm":
                nh, nf, nk = st.hfk
                if nk == 1:  # nothing eliminated on the batched side: an outer product
                    o = st.mat * p.reshape(nh, 1, n)
                elif nf == 1:
                    o = np.einsum("hk,hkN->hN", st.mat[:, 0, :], p.reshape(nh, nk, n))
                else:
                    o = np.matmul(st.mat, p.reshape(nh, nk, n))
                o = o.reshape(st.out_shape + (n,))
            else:
                o = np.broadcast_to(st.mat[..., None], st.mat.shape + (n,))
            vals[st.out] = o
            if keep:
                tape.append((ws, pre))
        return vals, tape, gtape, extra, evs

    def alone_mats(self, alone):
        """``ext`` for :meth:`forward` from node -> (k, G) matrices J: message rows, then J.T."""
        return [[np.vstack([m, alone[v].T]) for m, v in zip(g.mats, g.leaves)] for g in self.groups]

    def cavity(self, ev, a, b, groups, zg_out, cav_out, alone=None, ext=None, aj_out=None, nan_out=None):
        """Rows a:b: ``zg_out = groups.T @ Z`` (G, b - a) and ``cav_out[:, row]`` (G, rows, b - a)
        per evidence node; with ``alone`` (node -> (k, G) matrix J, and ``ext = alone_mats(alone)``)
        also ``aj_out[:, row] = (L @ J).T`` (NaN where the node has no evidence); ``nan_out``: see
        :meth:`forward`."""
        n = b - a
        vals, tape, gtape, extra, evs = self.forward(ev, a, b, keep=True, ext=ext, nan_out=nan_out)
        z = vals[self.z_index]
        np.matmul(groups.T, z, out=zg_out)
        if alone is not None:
            for g, x in zip(self.groups, extra):
                aj_out[:, g.rows] = x
            for idx, v, _ in self.core_ev:
                if v in ev:
                    np.matmul(alone[v].T, evs[idx], out=aj_out[:, self.ev_rows[idx]])
                else:
                    aj_out[:, self.ev_rows[idx]] = np.nan
        s = groups.shape[1]
        gt = groups.T
        gkey = gt.tobytes()  # the seed-split arrays below depend on the groups only: kept per groups
        masks = self._masks if getattr(self, "_masks_key", None) == gkey else {}
        self._masks, self._masks_key = masks, gkey

        def mask(nd, axis):  # groups.T placed on axis `axis` of an (S, nd variables, rows) array
            key = (nd, axis)
            if key not in masks:
                shape = [s] + [1] * nd + [1]
                shape[1 + axis] = self.target_card
                masks[key] = gt.reshape(shape)
            return masks[key]

        grads = {self.z_index: np.broadcast_to(np.ones((1, self.target_card, 1)), (1, self.target_card, n))}
        for st, (ws, pre) in zip(reversed(self.steps), reversed(tape)):
            go = grads.pop(st.out)
            if st.mode == "sum":
                ne = len(st.xshape) - len(st.out_shape)
                gp = go if ne == 0 else np.broadcast_to(go.reshape(go.shape[:1] + (1,) * ne + go.shape[1:]),
                                                         (go.shape[0],) + st.xshape + (n,))
            elif st.mode == "mm":
                nh, nf, nk = st.hfk
                go = go.reshape(go.shape[0], nh, nf, n)
                if st.f_t is not None:
                    # the target only in the CPDs: its seed split goes into the matrix, (S, H, K, F)
                    key = (id(st), gkey)
                    if key not in masks:
                        masks[key] = st.mat_t[None] * gt[:, st.f_t][:, None, None, :]
                    m = masks[key]
                    gp = np.einsum("ShF,ShFN->ShN", m[:, :, 0, :], go) if nk == 1 \
                        else np.matmul(m, go)
                elif nk == 1:
                    gp = np.einsum("hf,ShfN->ShN", st.mat[:, :, 0], go)
                elif nf == 1:
                    gp = st.mat_t[None, :, :, :] * go
                else:
                    gp = np.matmul(st.mat_t, go)
                gp = gp.reshape((gp.shape[0],) + st.xshape + (n,))
            else:
                continue
            nb = len(ws)
            suf = None
            for j in range(nb - 1, -1, -1):
                kind, expr, back, conv, axis = st.grads[j]
                if nb == 1:
                    oth = None
                elif nb == 2:
                    oth = ws[1 - j]
                elif j == nb - 1:
                    oth = pre[j]
                elif j == 0:
                    oth = suf
                else:
                    oth = pre[j] * suf
                if nb > 2 and j > 0:
                    suf = ws[j] if suf is None else suf * ws[j]
                if expr is None:  # the input holds every variable of P: no sum
                    gi = gp if oth is None else gp * oth
                else:
                    gi = np.einsum(expr, gp) if oth is None else np.einsum(expr, gp, oth)
                if conv == "sum_t":
                    gi = (gt @ gi.reshape(self.target_card, -1)).reshape((s,) + gi.shape[2:])
                elif conv == "mask":
                    gi = gi * mask(gi.ndim - 2, axis)
                if kind == "ev":
                    cav_out[:, self.ev_rows[st.bat[j][0]]] = gi
                else:
                    grads[st.bat[j][0]] = gi.transpose(back)
        for g, (msg, fac) in zip(self.groups, gtape):
            d = grads.pop(g.index).reshape(s, -1, n)
            nl = len(g.leaves)
            # leave-one-out products of the leaves' messages: the group factor over the message
            # (exact to rounding) while no message is 0 or extreme (and so neither is any product
            # of them), else prefix/suffix products
            if nl == 1:
                oth = g.fill
                d = d * g.scale
            elif g.divide and np.fmin.reduce(msg, axis=None) > g.tiny \
                    and np.fmax.reduce(msg, axis=None) < 1 / g.tiny:
                # scale * prod_{k != j} msg_k, no underflow within these bounds (a CPD column
                # summing to 0 gives 0 messages, so groups with such columns never come here)
                oth = np.divide(fac, msg)
            else:
                oth = _leave_one_out(msg)
                if not g.ones:
                    oth *= g.fill
                d = d * g.scale
            cav_out[:, g.rows] = np.einsum(f"{_SEED}pN,jpN->{_SEED}jN", d, oth)


def _leave_one_out(msg):
    """``out[j] = prod_{k != j} msg[k]`` along the first axis by prefix and suffix products."""
    nl = len(msg)
    out = np.empty(msg.shape)
    pre = [None, msg[0]]
    for j in range(2, nl):
        pre.append(pre[-1] * msg[j - 1])
    out[nl - 1] = pre[nl - 1]
    suf = msg[nl - 1]
    for j in range(nl - 2, 0, -1):
        np.multiply(pre[j], suf, out=out[j])
        suf = suf * msg[j]
    out[0] = suf
    return out
