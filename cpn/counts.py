"""Expected family counts (the EM E-step) on the compiled kernel's design.

``counts[v][x, pa] = sum_n w_n P(X_v = x, Pa_v = pa | E_n)``. The engine's plan is flattened into
a term program as in :mod:`cpn.kernel` -- the forward pass over a tile of screens, then one
adjoint sweep seeded with ``w_n / P(E_n)`` -- with one difference: the CPD entries folded into a
term's coefficient are remembered. ``Z`` is multilinear in the CPD entries and every entry occurs
at most once in a term, so ``theta * dZ/dtheta`` is the sum of the terms holding ``theta``, each
times the gradient of the slot it is added to. *Reduce* instructions compute exactly that, summed
over the tile's screens, and add it to the count cells of the term's CPD entries.

Where only CPDs meet (no evidence below), the plan multiplies them into constant tables once; the
counts of such a table are passed down to the CPDs it was made of after the kernel has run, in
numpy (``C_i = const_i * d/dconst_i`` of ``sum_y C(y) log const(y)``), as they need no row.

The program's structure depends on the network only (built once per engine); its coefficients
are products of CPD entries, refreshed from the current CPDs at every call. The reference is
:meth:`cpn.inference.InferenceEngine._expected_counts_reference` (the einsum adjoint).

Examples
--------
>>> import numpy as np
>>> from cpn.inference import InferenceEngine
>>> eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
...     {"A": np.array([.5, .5]), "B": np.array([[.9, .2], [.1, .8]])}, "A", ["B"])
>>> counts, ll = eng.expected_counts({"B": np.eye(2)[[0, 1, 1]]})  # here where numba is installed
>>> counts["A"].round(3).tolist()
[1.04, 1.96]
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import defaultdict
from functools import partial

import numpy as np

from . import kernel
from .kernel import _flat_index, _indices

__all__ = ["CountsProgram", "expected_counts"]

STORE, ADD, REDUCE = 0, 1, 2


class CountsProgram:
    """The term program of the E-step for an engine's plan (structure only; see the module)."""

    def __init__(self, eng):
        cards = eng.cards
        f = eng._factors
        self.n = 0  # slots so far
        instrs = []  # (kind, slot, src (nt,), inputs (nt, m), cells: list of K-index arrays or None)
        prov = []  # per forward term: its K indices (array)

        def new(count):
            base = self.n
            self.n += count
            return base

        def emit(slot, inputs, cells):
            inputs = np.asarray(inputs, dtype=np.int64).reshape(len(cells), -1)
            src = np.arange(len(prov), len(prov) + len(cells))
            prov.extend(np.asarray(c, dtype=np.int64) for c in cells)
            instrs.append((STORE, slot, src, inputs, None))

        # ---- evidence rows, in the kernel's order (core evidence, then the leaves by group)
        self.row_nodes = list(eng._core_ev) + [v for _, leaves in eng._groups for v in leaves]
        self.n_rows = len(self.row_nodes)
        self.ev_k = np.array([cards[v] for v in self.row_nodes], dtype=np.int64)
        self.ev_lo = np.array([new(cards[v]) for v in self.row_nodes], dtype=np.int64)
        self.n_ev_slots = self.n
        # ---- K: every constant table a batched step reads (CPDs, products of CPDs), then the
        # leaves' (k, P) matrices; counts are gathered per K entry
        first_grp = eng._n_cpd + eng._n_ev
        layout = {i: fac.vars for i, fac in enumerate(f[:first_grp + eng._n_grp + 1])}
        self.const_steps = []  # steps where only CPDs meet: (inputs, output)
        for step in eng._steps:
            if not f[step.output].batched:
                self.const_steps.append((step.inputs, step.output))
                layout[step.output] = f[step.output].vars
        self.layout = layout
        self.k_fac = {}  # constant factor index -> offset in K
        k_size = 0
        for step in eng._steps:
            if f[step.output].batched:
                for i in step.inputs:
                    if not f[i].batched:
                        self.k_fac[i] = k_size
                        k_size += int(np.prod([cards[u] for u in layout[i]]))
        self.k_leaf = []  # (node, scope, offset in K)
        slot_of = {eng._n_cpd + k: (int(self.ev_lo[k]), (v,)) for k, v in enumerate(eng._core_ev)}
        r = len(eng._core_ev) - 1
        for gidx, (scope, leaves) in enumerate(eng._groups):
            p = int(np.prod([cards[u] for u in scope]))
            msgs = []
            for v in leaves:
                r += 1
                k = cards[v]
                self.k_leaf.append((v, scope, k_size))
                base, lo = new(p), int(self.ev_lo[r])
                for q in range(p):  # msg[q] = sum_x A[x, q] L[x]
                    emit(base + q, lo + np.arange(k), [[k_size + x * p + q] for x in range(k)])
                k_size += k * p
                msgs.append(base)
            if len(leaves) == 1:
                gbase = msgs[0]
            else:
                gbase = new(p)
                for q in range(p):
                    emit(gbase + q, [[mb + q for mb in msgs]], [[]])
            slot_of[first_grp + gidx] = (gbase, tuple(scope))
        self.k_size = k_size
        # ---- elimination steps with evidence (as in kernel.Program, CPD entries remembered)
        ones = first_grp + eng._n_grp
        for step in eng._steps:
            out = f[step.output]
            if not out.batched:
                continue
            bat = [i for i in step.inputs if f[i].batched and i != ones]
            unb = [i for i in step.inputs if not f[i].batched]
            xv = list(dict.fromkeys([*out.vars] + [u for i in step.inputs for u in layout[i]]))
            uv = list(dict.fromkeys(u for i in bat for u in slot_of[i][1]))
            if len(bat) > 1 and len(uv) < len(xv):  # multiply the batched inputs first
                uidx = _indices([cards[u] for u in uv])
                ubase = new(uidx.shape[1])
                for q in range(uidx.shape[1]):
                    ins = [slot_of[i][0] + (int(np.ravel_multi_index(
                        tuple(int(uidx[uv.index(u), q]) for u in slot_of[i][1]),
                        tuple(cards[u] for u in slot_of[i][1]))) if slot_of[i][1] else 0) for i in bat]
                    emit(ubase + q, [ins], [[]])
                slot_of[("u", step.output)] = (ubase, tuple(uv))
                bat = [("u", step.output)]
            idx = _indices([cards[u] for u in xv])

            flat = partial(_flat_index, idx, xv, cards)

            kcells = np.stack([self.k_fac[i] + flat(layout[i]) for i in unb], axis=1) if unb \
                else np.zeros((idx.shape[1], 0), np.int64)
            inputs = np.stack([slot_of[i][0] + flat(slot_of[i][1]) for i in bat], axis=1) \
                if bat else np.zeros((idx.shape[1], 0), np.int64)
            base = new(int(np.prod([cards[u] for u in out.vars])))
            o = flat(out.vars)
            for q in range(int(np.prod([cards[u] for u in out.vars]))):
                sel = np.flatnonzero(o == q)
                emit(base + q, inputs[sel], list(kcells[sel]))
            slot_of[step.output] = (base, tuple(out.vars))
            layout[step.output] = out.vars
        zbase, zvars = slot_of[eng._steps[-1].output]
        zidx = zbase + np.arange(cards[eng.target], dtype=np.int64)
        self.n_fwd = len(instrs)
        self.prov = prov
        width = max((len(c) for c in prov), default=0)
        self.prov_mat = np.full((len(prov), width), k_size, dtype=np.int64)  # k_size: a 1 in K
        for t, c in enumerate(prov):
            self.prov_mat[t, :len(c)] = c
        self._adjoint(instrs, zidx)
        self._flatten(instrs, zidx)

    def _adjoint(self, instrs, zidx):
        """Append the adjoint (one gradient slot per slot, seeded with ``w / P(E)``) and the
        reduce instructions, in reverse order of the forward pass. Each target state ``t`` has a seed
        slot of its own (``d log-likelihood / d Z_t``): the same ``w / P(E)`` in every one for EM, and
        ``w T_t / P(T, E) - w / P(E)`` for the discriminative gradient (:func:`discriminative_counts`)."""
        self.seeds = self.n + np.arange(len(zidx), dtype=np.int64)
        self.n += len(zidx)
        seed_of = dict(zip(zidx.tolist(), self.seeds.tolist()))
        contrib = defaultdict(list)  # slot -> [(src, inputs)]
        n_ev = self.n_ev_slots

        def close(slot):
            parts = contrib.pop(slot, [])
            if not parts:
                return None
            g = self.n
            self.n += 1
            by_m = defaultdict(list)
            for s, x in parts:
                by_m[x.shape[1]].append((s, x))
            for j, (_, lst) in enumerate(sorted(by_m.items())):
                instrs.append((ADD if j else STORE, g, np.concatenate([s for s, _ in lst]),
                               np.concatenate([x for _, x in lst]), None))
            return g

        for e, src, inputs, _ in [(i[1], i[2], i[3], i[4]) for i in instrs[:self.n_fwd]][::-1]:
            g = seed_of[e] if e in seed_of else close(e)
            if g is None:
                continue
            nt, m = inputs.shape
            red = np.array([len(self.prov[s]) > 0 for s in src], dtype=bool)
            if red.any():
                cells = [self.prov[s] for s in src[red]]
                instrs.append((REDUCE, -1, src[red],
                               np.column_stack([np.full(int(red.sum()), g), inputs[red]]), cells))
            for j in range(m):
                ii = inputs[:, j]
                keep = ii >= n_ev  # evidence gradients are never needed
                if not keep.any():
                    continue
                ins = np.column_stack([np.full(nt, g), np.delete(inputs, j, axis=1)])
                for i in np.unique(ii[keep]):
                    sel = keep & (ii == i)
                    contrib[int(i)].append((src[sel], ins[sel]))

    def _flatten(self, instrs, zidx):
        """Arrays for the kernel, with slots shared as in :meth:`kernel.Program._share_slots`."""
        n_instr = len(instrs)
        self.out_kind = np.array([i[0] for i in instrs], dtype=np.int64)
        out = np.array([i[1] for i in instrs], dtype=np.int64)
        self.out_arity = np.array([i[3].shape[1] for i in instrs], dtype=np.int64)
        nts = np.array([len(i[2]) for i in instrs], dtype=np.int64)
        self.term_ptr = np.concatenate([[0], np.cumsum(nts)]).astype(np.int64)
        self.src = np.concatenate([i[2] for i in instrs]).astype(np.int64)
        inp = np.concatenate([i[3].ravel() for i in instrs]).astype(np.int64)
        ni = np.array([i[3].size for i in instrs], dtype=np.int64)
        self.inp_base = (np.concatenate([[0], np.cumsum(ni)[:-1]]) - self.out_arity * self.term_ptr[:-1]
                         ).astype(np.int64)
        ncell = np.zeros(len(self.src), dtype=np.int64)
        cells = []
        for o, ins in enumerate(instrs):
            if ins[0] == REDUCE:
                ncell[self.term_ptr[o]:self.term_ptr[o + 1]] = [len(c) for c in ins[4]]
                cells.extend(ins[4])
        self.cell_ptr = np.concatenate([[0], np.cumsum(ncell)]).astype(np.int64)
        self.cells = np.concatenate(cells).astype(np.int64) if cells else np.zeros(0, np.int64)
        # ---- slot sharing: a linear scan (the seeds keep slots of their own)
        last = np.full(self.n, -1, dtype=np.int64)
        for o in range(n_instr):
            m = self.out_arity[o]
            b = self.inp_base[o]
            last[inp[b + m * self.term_ptr[o]:b + m * self.term_ptr[o + 1]]] = o
            if out[o] >= 0:
                last[out[o]] = max(last[out[o]], o)
        last[zidx] = np.maximum(last[zidx], self.n_fwd)  # read for the seed before instruction n_fwd
        phys = np.full(self.n, -1, dtype=np.int64)
        phys[:self.n_ev_slots] = np.arange(self.n_ev_slots)
        phys[self.seeds] = self.n_ev_slots + np.arange(len(self.seeds))
        n_phys = self.n_ev_slots + len(self.seeds)
        free: list = []
        dying = [[] for _ in range(n_instr + 1)]
        for e in range(self.n_ev_slots):
            if last[e] >= 0:
                dying[last[e]].append(e)
        for o in range(n_instr):
            e = out[o]
            if e >= 0 and phys[e] < 0:
                if free:
                    phys[e] = free.pop()
                else:
                    phys[e] = n_phys
                    n_phys += 1
                dying[max(last[e], o)].append(e)
            for d in dying[o]:
                free.append(phys[d])
        self.n_slots = int(n_phys)
        self.out_slot = np.where(out >= 0, phys[np.maximum(out, 0)], -1).astype(np.int64)
        self.inp = phys[inp]
        self.zidx = phys[zidx]
        self.seeds = phys[self.seeds]

    # ------------------------------------------------------------------ per call
    def constants(self, eng):
        """The constant tables for the engine's current CPDs: factor index -> array."""
        from .inference import _einsum_vars

        const = {k: eng.cpds[v] for k, v in enumerate(eng._core_nodes)}
        for ins, out in self.const_steps:
            const[out] = _einsum_vars([(const[i], self.layout[i]) for i in ins], self.layout[out],
                                      eng.cards)
        return const

    def coefficients(self, eng, const):
        """Every term's coefficient: the product of its CPD entries (1 for none)."""
        k = np.ones(self.k_size + 1)
        for i, off in self.k_fac.items():
            k[off:off + const[i].size] = np.asarray(const[i]).ravel()
        for v, scope, off in self.k_leaf:
            a = eng._leaf_matrix(v, scope)
            k[off:off + a.size] = a.ravel()
        return np.prod(k[self.prov_mat], axis=1)[self.src]

    def to_cpds(self, eng, cnt, const):
        """Counts per K entry -> counts per CPD (constant tables passed down to their CPDs)."""
        from .inference import _einsum_vars

        c = {i: cnt[off:off + const[i].size].reshape(np.shape(const[i])) for i, off in self.k_fac.items()}
        for ins, out in reversed(self.const_steps):
            t = np.asarray(const[out])
            ratio = np.where(t > 0, c.pop(out) / np.where(t > 0, t, 1.0), 0.0)
            ops = [(const[i], self.layout[i]) for i in ins] + [(ratio, self.layout[out])]
            for i in ins:
                c[i] = _einsum_vars(ops, self.layout[i], eng.cards)
        counts = {v: np.zeros_like(eng.cpds[v]) for v in eng.nodes}
        for k, v in enumerate(eng._core_nodes):
            if k in c:
                counts[v] = np.asarray(c[k], dtype=float).reshape(eng.cpds[v].shape)
        for v, scope, off in self.k_leaf:
            shape = (eng.cards[v],) + tuple(eng.cards[u] for u in scope)
            g = cnt[off:off + int(np.prod(shape))].reshape(shape)
            counts[v] = counts[v] + g.transpose([0] + [1 + scope.index(q) for q in eng.parents[v]])
        return counts


def expected_counts(eng, evidence, *, weights=None, threads: int | None = None, target_evidence=None):
    """:meth:`cpn.inference.InferenceEngine.expected_counts` on the compiled kernel: ``(counts,
    loglik)`` with the same meaning, on ``threads`` threads (default
    :func:`cpn.kernel.default_threads`; a thread gets at least 4 tiles).

    With ``target_evidence`` (likelihood rows on the target, which ``evidence`` must then leave out):
    :meth:`cpn.inference.InferenceEngine.discriminative_counts` in one pass, ``(E[counts | T, E] -
    E[counts | E], sum_n w_n (log P(T_n, E_n) - log P(E_n)))``."""
    from ._counts_kernel import counts_kernel

    ev, n = eng._check_evidence(evidence)
    k_t = eng.cards[eng.target]
    if target_evidence is None:
        tev = np.zeros((0, k_t))
    else:
        if eng.target in ev:
            raise ValueError(f"target_evidence given and evidence for the target '{eng.target}' too")
        tev = np.array(target_evidence, dtype=float, order="C")  # a copy: NaN rows are made ones
        if tev.shape != (n, k_t):
            raise ValueError(f"target_evidence has shape {tev.shape}, expected ({n}, {k_t})")
        tev[np.isnan(tev).any(axis=1)] = 1.0  # a row holding a NaN carries no evidence
        if (tev < 0).any() or np.isinf(tev).any():
            raise ValueError(f"target_evidence for '{eng.target}' has negative or infinite likelihoods")
    prog = eng.__dict__.get("_counts_program")
    if prog is None:
        prog = eng._counts_program = CountsProgram(eng)
    const = prog.constants(eng)
    coef = prog.coefficients(eng, const)
    w = np.ones(n) if weights is None else np.ascontiguousarray(weights, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    addr, s0, s1, ext, present, keep = kernel.Program.evidence_table(prog, ev, n)
    tile = kernel.TILE
    n_tiles = -(-n // tile)
    k = max(1, min(threads or kernel.default_threads(), n_tiles // 4))
    cuts = [min(n, (n_tiles * j // k) * tile) for j in range(k + 1)]
    cnts = np.zeros((k, prog.k_size))
    stats = np.zeros((k, 2))

    def part(j, _keep=keep):  # (_keep: the arrays stay alive while any part runs)
        return counts_kernel(addr, s0, s1, ext, present, cuts[j], cuts[j + 1], prog.ev_lo, prog.ev_k,
                             prog.n_slots, prog.n_fwd, prog.seeds, prog.zidx, w, tev, prog.out_slot,
                             prog.out_kind, prog.out_arity, prog.term_ptr, coef, prog.inp,
                             prog.inp_base, prog.cell_ptr, prog.cells, cnts[j], stats[j])

    if k == 1:
        codes = [part(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=k - 1) as pool:
            futures = [pool.submit(part, j) for j in range(1, k)]
            try:
                codes = [part(0)]
            finally:  # every part must end before the arrays it reads may go
                concurrent.futures.wait(futures)
            codes += [fu.result() for fu in futures]
    del keep
    code = next((c for c in codes if c), 0)
    if code:
        kernel._raise(code, prog)
    skipped = int(stats[:, 1].sum())
    if skipped:  # logged as the reference path logs it
        logging.getLogger("cpn.inference").warning(
            "expected_counts: %d row(s) with zero-probability evidence skipped", skipped)
    return prog.to_cpds(eng, cnts.sum(axis=0), const), float(stats[:, 0].sum())
