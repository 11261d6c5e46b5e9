"""A compiled (numba) kernel for the engine's plan: explains screens several times faster than the
numpy plan, which stays as the fallback where numba is missing. (One cohesive compiler from the
plan to a term program, hence over the 400-line guide.)

Why a kernel: the numpy plan runs about 3,000 elementary array operations per explained screen,
each a separate pass over memory, and numpy cannot fuse them. Here the plan -- forward pass,
adjoint sweep and the explanation sums -- is flattened into one *term program* over one scratch
array ``v[slot, lane]`` holding a tile of screens side by side:

* a slot is an evidence likelihood, a leaf message, a group product, an elimination output, a
  gradient, or an output sum;
* every slot but the evidence is computed by *instructions*, each a sum of terms
  ``coef * v[a] * v[b] * ...`` of one arity; a slot's first instruction stores, later ones add;
* the constant part of each term (CPD entries, the target-group mask) is folded into ``coef``
  when the program is built, and terms whose ``coef`` is 0 are dropped;
* the adjoint of ``out += c * v[a] * v[b]`` is written as terms of the gradient slots:
  ``g[a] += c * g[out] * v[b]``. Slots whose factor holds the target have one gradient slot
  (``d Z_s / d v`` is ``groups[t, s]`` times the same quantity for every group ``s``), the others
  one per group. So the adjoint is again a forward-style sum: every gradient is written once,
  nothing is cleared, nothing is read back and added per term;
* per evidence item the kernel writes the two ratios whose log10 are the explanations
  (``odds(E) / odds(E without i)`` and ``odds({i}) / prior odds``); numpy takes the logarithms
  over whole arrays, where they run vectorised.

The program depends on the CPD values and the target groups; :meth:`InferenceEngine._fast_plan`
rebuilds it with the plan when the CPDs change. The compiled kernel (:mod:`cpn._kernel`) depends
on nothing but the array types, so one compilation, cached on disk by numba, serves every network.

Examples
--------
>>> import numpy as np
>>> from cpn.inference import InferenceEngine
>>> eng = InferenceEngine(["T", "B"], {"T": 2, "B": 2}, {"T": [], "B": ["T"]},
...     {"T": np.array([.2, .8]), "B": np.array([[.9, .3], [.1, .7]])}, "T", ["B"])
>>> prog = Program(eng, np.eye(2))
>>> prog.n_rows, int(prog.n_fwd), len(prog.out_slot) > prog.n_fwd
(1, 4, True)
"""

from __future__ import annotations

import concurrent.futures
import os
from functools import partial
from collections import defaultdict

import numpy as np

__all__ = ["Program", "available", "loaded", "load", "run_kernel", "evidence_loops", "split_rows", "TILE",
           "SMALL_BATCH", "SPLIT_ROWS"]

#: screens per tile (see :data:`cpn._kernel.TILE`, where the choice is explained; the same value).
TILE = 128

#: Below this many rows, ``backend="auto"`` takes the numpy plan unless the kernel is loaded already:
#: loading numba and the compiled kernel from numba's disk cache costs about 1.5 s of CPU, while the
#: numpy plan explains a few hundred screens in milliseconds. So a one-shot ``sepsiscope explain``
#: never pays for the kernel, and a long-lived process (the service, training) loads it once.
SMALL_BATCH = 2048

_COMPILED = None  # cpn._kernel.kernel once loaded; False when numba cannot be imported


def _disabled() -> bool:
    return bool(os.environ.get("SEPSISCOPE_NO_NUMBA"))


def load():
    """Import numba and the compiled kernel (numba's disk cache, else a compilation); None where
    numba is missing or disabled with ``SEPSISCOPE_NO_NUMBA=1`` (the numpy plan serves then)."""
    global _COMPILED
    if _COMPILED is None:
        try:
            if _disabled():
                raise ImportError("disabled by SEPSISCOPE_NO_NUMBA")
            from . import _kernel
        except ImportError:  # pragma: no cover - exercised where numba is absent
            _COMPILED = False
        else:
            if _kernel.TILE != TILE:  # pragma: no cover - a guard for whoever changes one of them
                raise RuntimeError(f"cpn._kernel.TILE ({_kernel.TILE}) != cpn.kernel.TILE ({TILE})")
            _COMPILED = _kernel.kernel
    return _COMPILED or None


def available() -> bool:
    """Whether the compiled kernel can run here (numba importable and not disabled); imports it."""
    return load() is not None


def loaded() -> bool:
    """Whether the compiled kernel is loaded in this process already (no import cost left)."""
    return bool(_COMPILED)


def wanted(backend: str, n_rows: int | None = None) -> bool:
    """Whether ``backend`` runs ``n_rows`` rows on the kernel: "numba" always (an error where it
    cannot), "numpy" never, "auto" where numba is installed and the batch is large
    (:data:`SMALL_BATCH`) or the kernel is loaded already."""
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if backend == "numba":
        if not available():
            raise RuntimeError("backend='numba' needs numba (pip install numba)")
        return True
    if backend == "numpy":
        return False
    if not loaded() and n_rows is not None and n_rows < SMALL_BATCH:
        return False
    return available()


def evidence_loops(n_rows: int):
    """:mod:`cpn._evidence_kernel` (compiled loops that build evidence: states, likelihood rows)
    where the kernel would score ``n_rows`` rows (:func:`wanted` with "auto"), else None."""
    if not wanted("auto", n_rows):
        return None
    from . import _evidence_kernel

    return _evidence_kernel


class Program:
    """The engine's plan as one flat term program for the kernel (see the module docstring).

    Parameters
    ----------
    eng : InferenceEngine
    groups : ndarray (card[target], 2)
        The target groups of the explanations ("sepsis within 48 h" / not).

    Slots start with the evidence likelihoods (per evidence row its ``k`` states, rows in the
    numpy plan's order ``rows``: core evidence, then the leaves by group). Instructions
    ``[0, n_fwd)`` are the forward pass (``zidx``: the slots of ``Z``); the rest compute the
    gradients and, per evidence row, ``P(group s, E without i)`` (``row_cav``) and
    ``P(group s, {i})`` (``row_alone``), and ``P(group s, E)`` (``zg``).
    """

    def __init__(self, eng, groups):
        groups = np.asarray(groups, dtype=float)
        if groups.shape != (eng.cards[eng.target], 2):
            raise ValueError(f"groups must have shape ({eng.cards[eng.target]}, 2), got {groups.shape}")
        cards = eng.cards
        f = eng._factors
        tv = eng.target
        t_state: list = []  # per slot: the target's state, or -1 where the factor lacks the target
        instrs: list = []  # (out slot, coefs (nt,), inputs (nt, m), add)

        def new_slots(vars_):
            shape = tuple(cards[u] for u in vars_)
            base = len(t_state)
            for idx in (np.ndindex(*shape) if shape else [()]):
                t_state.append(dict(zip(vars_, idx)).get(tv, -1))
            return base

        def emit(slot, coefs, inputs, add=False):
            coefs = np.asarray(coefs, dtype=float)
            inputs = np.asarray(inputs, dtype=np.int64)
            if inputs.ndim != 2:
                inputs = inputs.reshape(len(coefs), -1)
            keep = coefs != 0
            instrs.append((slot, coefs[keep], inputs[keep], add))

        # ---- evidence rows
        row_nodes = list(eng._core_ev) + [v for _, leaves in eng._groups for v in leaves]
        self.row_nodes = row_nodes
        self.rows = {v: r for r, v in enumerate(row_nodes)}
        self.n_rows = len(row_nodes)
        self.ev_k = np.array([cards[v] for v in row_nodes], dtype=np.int64)
        self.ev_lo = np.array([new_slots((v,)) for v in row_nodes], dtype=np.int64)
        self.n_ev_slots = len(t_state)
        cav_src = {}  # row -> (first slot, coefficients): cav = sum_q coef_q * d Z / d slot_q
        slot_of = {}  # factor index -> (first slot, vars)
        for k, v in enumerate(eng._core_ev):
            slot_of[eng._n_cpd + k] = (int(self.ev_lo[k]), (v,))
            cav_src[k] = (int(self.ev_lo[k]), np.ones(cards[v]))
        first_grp = eng._n_cpd + eng._n_ev
        # ---- leaf messages (msg[q] = sum_x A[x, q] L[x]) and group products
        r = len(eng._core_ev) - 1
        for gidx, (scope, leaves) in enumerate(eng._groups):
            msgs = []
            for v in leaves:
                r += 1  # this leaf's row (not rows[v]: a node listed twice has two rows)
                a = eng._leaf_matrix(v, scope)  # (k, P)
                base = new_slots(scope)
                lo = int(self.ev_lo[r])
                for q in range(a.shape[1]):
                    emit(base + q, a[:, q], (lo + np.arange(a.shape[0]))[:, None])
                # Z is linear in L: the joint without the leaf is d Z / d msg . (column sums)
                cav_src[r] = (base, a.sum(axis=0))
                msgs.append(base)
            if len(leaves) == 1:
                gbase = msgs[0]
            else:
                gbase = new_slots(scope)
                for q in range(int(np.prod([cards[u] for u in scope]))):
                    emit(gbase + q, [1.0], [[mb + q for mb in msgs]])
            slot_of[first_grp + gidx] = (gbase, tuple(scope))
        # ---- elimination steps (steps where only CPDs meet are constants, evaluated here)
        from .inference import _einsum_vars  # local: inference imports this module
        const = {k: eng.cpds[v] for k, v in enumerate(eng._core_nodes)}
        layout = {i: fac.vars for i, fac in enumerate(f[:first_grp + eng._n_grp + 1])}
        ones = first_grp + eng._n_grp  # the all-ones batched factor: nothing to multiply
        for step in eng._steps:
            out = f[step.output]
            if not out.batched:
                const[step.output] = _einsum_vars([(const[i], layout[i]) for i in step.inputs],
                                                  out.vars, cards)
                layout[step.output] = out.vars
                continue
            bat = [i for i in step.inputs if f[i].batched and i != ones]
            unb = [i for i in step.inputs if not f[i].batched]
            xv = list(dict.fromkeys([*out.vars] + [u for i in step.inputs for u in layout[i]]))
            uv = list(dict.fromkeys(u for i in bat for u in slot_of[i][1]))
            if len(bat) > 1 and len(uv) < len(xv):
                # the CPDs bring variables the batched inputs lack: multiply the batched inputs
                # over their own variables first (fewer, shorter terms), then contract once
                uidx = _indices([cards[u] for u in uv])
                ubase = new_slots(tuple(uv))
                for q in range(uidx.shape[1]):
                    ins = [slot_of[i][0] + (int(np.ravel_multi_index(
                        tuple(int(uidx[uv.index(u), q]) for u in slot_of[i][1]),
                        tuple(cards[u] for u in slot_of[i][1]))) if slot_of[i][1] else 0) for i in bat]
                    emit(ubase + q, [1.0], [ins])
                key = ("u", step.output)
                slot_of[key] = (ubase, tuple(uv))
                bat = [key]
            idx = _indices([cards[u] for u in xv])

            flat = partial(_flat_index, idx, xv, cards)

            coef = np.ones(idx.shape[1])
            for i in unb:
                coef = coef * (const[i][tuple(idx[xv.index(u)] for u in layout[i])] if layout[i]
                               else float(const[i]))
            inputs = np.stack([slot_of[i][0] + flat(slot_of[i][1]) for i in bat], axis=1) \
                if bat else np.zeros((idx.shape[1], 0), np.int64)
            base = new_slots(out.vars)
            o = flat(out.vars)
            for q in range(int(np.prod([cards[u] for u in out.vars]))):
                sel = np.flatnonzero(o == q)
                emit(base + q, coef[sel], inputs[sel])
            slot_of[step.output] = (base, tuple(out.vars))
            layout[step.output] = out.vars
        zbase, zvars = slot_of[eng._steps[-1].output]
        assert zvars == (tv,)
        self.zidx = zbase + np.arange(cards[tv], dtype=np.int64)
        self.n_fwd = len(instrs)
        fwd = list(instrs)

        # ---- adjoint, as terms of gradient slots, in reverse order of the forward pass
        ts = np.array(t_state)
        need = np.ones(len(t_state), dtype=bool)
        need[:self.n_ev_slots] = False  # leaf likelihoods: their gradients are never read ...
        for k in range(len(eng._core_ev)):  # ... core evidence ones are (explanations)
            need[self.ev_lo[k]:self.ev_lo[k] + self.ev_k[k]] = True
        contrib = defaultdict(list)  # (slot, s) -> [(coefs, inputs (nt, m))]; s = -1: one gradient
        grad = {}  # (slot, s) -> gradient slot
        one = new_slots(())  # the seed d Z_t / d Z_t = 1
        ts = np.append(ts, -1)
        emit(one, [1.0], np.zeros((1, 0)))
        for t in range(cards[tv]):
            contrib[(int(self.zidx[t]), -1)].append((np.ones(1), np.array([[one]])))

        def close(key):
            """Emit the gradient slot of key from its contributions (one instruction per arity)."""
            parts = contrib.pop(key, [])
            if not parts:
                return None
            slot = len(t_state)
            t_state.append(-1)
            by_m = defaultdict(list)
            for c, x in parts:
                by_m[x.shape[1]].append((c, x))
            for j, (_, lst) in enumerate(sorted(by_m.items())):
                emit(slot, np.concatenate([c for c, _ in lst]), np.concatenate([x for _, x in lst]),
                     add=j > 0)
            grad[key] = slot
            return slot

        def keys(e):
            return [(e, -1)] if ts[e] >= 0 else [(e, 0), (e, 1)]

        for e, coefs, inputs, _ in reversed(fwd):
            gs = [close(k) for k in keys(e)]
            if all(g is None for g in gs) or inputs.shape[1] == 0:
                continue
            m = inputs.shape[1]
            for j in range(m):
                others = np.delete(inputs, j, axis=1)
                for tt in range(len(coefs)):
                    i = int(inputs[tt, j])
                    if not need[i]:
                        continue
                    c = coefs[tt]
                    oth = others[tt]
                    if ts[e] >= 0:  # one gradient for e
                        if gs[0] is None:
                            continue
                        if ts[i] >= 0:
                            contrib[(i, -1)].append((np.array([c]), np.array([[gs[0], *oth]])))
                        else:
                            for s in (0, 1):
                                cs = c * groups[ts[e], s]
                                if cs:
                                    contrib[(i, s)].append((np.array([cs]), np.array([[gs[0], *oth]])))
                    else:
                        for s in (0, 1):
                            if gs[s] is not None:
                                contrib[(i, s)].append((np.array([c]), np.array([[gs[s], *oth]])))
        for k in range(len(eng._core_ev)):  # core evidence slots are no out slots: close them here
            for x in range(int(self.ev_k[k])):
                for key in keys(int(self.ev_lo[k]) + x):
                    close(key)

        # ---- outputs: P(group, E), per row P(group, E without i) and P(group, {i})
        def gsum(slot_coefs, s):
            """Terms of sum_q coef_q * d Z_s / d slot_q (gradient slots; the mask where one)."""
            cs, xs = [], []
            for slot, c in slot_coefs:
                if ts[slot] >= 0:
                    g = grad.get((slot, -1))
                    c = c * groups[ts[slot], s]
                else:
                    g = grad.get((slot, s))
                if g is not None and c:
                    cs.append(c)
                    xs.append([g])
            return cs, xs

        def out_slot(cs, xs):
            slot = new_slots(())
            emit(slot, cs, np.array(xs, dtype=np.int64).reshape(len(cs), 1))
            return slot

        self.zg = np.array([out_slot(groups[:, s], self.zidx[:, None]) for s in (0, 1)], np.int64)
        self.row_cav = np.zeros((self.n_rows, 2), np.int64)
        self.row_alone = np.zeros((self.n_rows, 2), np.int64)
        self._alone_instr = np.zeros((self.n_rows, 2), np.int64)  # their instructions (set_alone)
        for r in range(self.n_rows):
            base, cols = cav_src[r]
            for s in (0, 1):
                self.row_cav[r, s] = out_slot(*gsum([(base + q, c) for q, c in enumerate(cols)], s))
            lo, k = int(self.ev_lo[r]), int(self.ev_k[r])
            for s in (0, 1):  # coefficients P(X_i, group) filled in by set_alone
                self._alone_instr[r, s] = len(instrs)
                slot = new_slots(())
                instrs.append((slot, np.zeros(k), (lo + np.arange(k))[:, None], False))
                self.row_alone[r, s] = slot

        # ---- flatten
        self.n_slots = len(t_state)
        self.out_slot = np.array([i[0] for i in instrs], dtype=np.int64)
        self.out_arity = np.array([i[2].shape[1] for i in instrs], dtype=np.int64)
        self.out_add = np.array([i[3] for i in instrs], dtype=np.bool_)
        nts = np.array([len(i[1]) for i in instrs], dtype=np.int64)
        self.term_ptr = np.concatenate([[0], np.cumsum(nts)]).astype(np.int64)
        self.coef = np.concatenate([i[1] for i in instrs])
        self.inp = np.concatenate([i[2].ravel() for i in instrs]).astype(np.int64)
        ni = np.array([i[2].size for i in instrs], dtype=np.int64)
        # the inputs of term t (numbered over the program) of instruction o: inp_base[o] + arity * t
        self.inp_base = (np.concatenate([[0], np.cumsum(ni)[:-1]]) - self.out_arity * self.term_ptr[:-1]
                         ).astype(np.int64)
        self._share_slots()
        self.alone_set = False

    def _share_slots(self):
        """Let slots whose value is no longer needed be reused by later ones (a linear scan over
        the instructions, like a register allocator). Gradients live briefly, so this roughly
        halves the scratch a tile needs, and more of it stays in the cache. The evidence slots and
        the slots the kernel reads at the end (``zidx``, ``zg``, ``row_cav``, ``row_alone``) keep
        theirs; an instruction's output never shares with its own inputs."""
        n_instr = len(self.out_slot)
        last = np.full(self.n_slots, -1, dtype=np.int64)
        for o in range(n_instr):  # the last instruction that reads or accumulates into a slot
            m = self.out_arity[o]
            t0, t1 = self.term_ptr[o], self.term_ptr[o + 1]
            b = self.inp_base[o]
            ins = self.inp[b + m * t0:b + m * t1]
            last[ins] = o
            last[self.out_slot[o]] = max(last[self.out_slot[o]], o)
        keep = np.concatenate([self.zidx, self.zg, self.row_cav.ravel(), self.row_alone.ravel()])
        last[keep] = n_instr  # read by the kernel after the program
        phys = np.full(self.n_slots, -1, dtype=np.int64)
        phys[:self.n_ev_slots] = np.arange(self.n_ev_slots)  # loaded before the program runs
        free: list = []
        n_phys = self.n_ev_slots
        dying = [[] for _ in range(n_instr + 1)]
        for e in range(self.n_ev_slots):
            if 0 <= last[e] < n_instr:
                dying[last[e]].append(e)
        for o in range(n_instr):
            e = self.out_slot[o]
            if phys[e] < 0:  # first definition: a free slot, or a new one
                if free:
                    phys[e] = free.pop()
                else:
                    phys[e] = n_phys
                    n_phys += 1
                if last[e] < n_instr:
                    dying[max(last[e], o)].append(e)
            for d in dying[o]:  # after o has run, what it read for the last time is free
                free.append(phys[d])
        self.n_slots = int(n_phys)
        self.out_slot = phys[self.out_slot]
        self.inp = phys[self.inp]
        self.zidx, self.zg = phys[self.zidx], phys[self.zg]
        self.row_cav, self.row_alone = phys[self.row_cav], phys[self.row_alone]

    def set_alone(self, jmat: dict) -> None:
        """Coefficients of the ``P(group, {i})`` sums: ``jmat`` node -> (k, 2) ``P(X_i, group)``
        (until set they are 0; the forward pass does not need them)."""
        self.alone_set = True
        for r, v in enumerate(self.row_nodes):
            for s in (0, 1):
                o = self._alone_instr[r, s]
                # all k terms are kept (zeros included): one per state, in order
                self.coef[self.term_ptr[o]:self.term_ptr[o + 1]] = jmat[v][:, s]

    def evidence_table(self, ev: dict, n: int):
        """Where the kernel reads each evidence row's array: addresses, element strides per row and
        per state, extents, presence flags, and the arrays themselves (keep them alive while the
        kernel runs). Arrays with strides that are not positive whole elements are copied."""
        k = self.n_rows
        addr, s0, s1, ext = (np.zeros(k, np.int64) for _ in range(4))
        present = np.zeros(k, dtype=np.bool_)
        keep = []
        for r, v in enumerate(self.row_nodes):  # (a node listed twice is evidence twice)
            x = ev.get(v)
            if x is None or n == 0:
                continue
            st = x.strides
            if x.dtype != np.float64 or any(s <= 0 or s % 8 for s in st):
                x = np.ascontiguousarray(x, dtype=np.float64)
                st = x.strides
            keep.append(x)
            addr[r] = x.ctypes.data
            s0[r], s1[r] = st[0] // 8, st[1] // 8
            ext[r] = (x.shape[0] - 1) * s0[r] + (x.shape[1] - 1) * s1[r] + 1
            present[r] = True
        return addr, s0, s1, ext, present, keep


def _flat_index(idx, xv, cards, vars_) -> np.ndarray:
    """Flat positions, in a table over ``vars_``, of every joint state of ``xv`` (rows of ``idx``)."""
    if not vars_:
        return np.zeros(idx.shape[1], np.int64)
    return np.ravel_multi_index(tuple(idx[xv.index(u)] for u in vars_), tuple(cards[u] for u in vars_))


def _indices(shape):
    """Every state assignment of variables with these cardinalities: (n vars, prod) in C order."""
    if not shape:
        return np.zeros((0, 1), dtype=np.int64)
    return np.indices(tuple(shape)).reshape(len(shape), -1)


def _raise(code, prog):
    """Turn the kernel's error code into the engine's error message."""
    kind, r = divmod(int(code) - 1, max(prog.n_rows, 1))
    v = prog.row_nodes[r]
    raise ValueError(f"evidence for '{v}' has {'negative' if kind == 0 else 'infinite'} likelihoods")


_POOL = None  # threads for run_kernel, made on first use (and remade larger when asked for more)
_POOL_SIZE = 0


def _forget_pool():
    """A forked child has none of its parent's threads: it makes a pool of its own."""
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def default_threads() -> int:
    """Threads the kernel uses by default: ``SEPSISCOPE_THREADS`` if set, else every core."""
    env = os.environ.get("SEPSISCOPE_THREADS", "").strip()
    if not env:
        return max(1, os.cpu_count() or 1)
    try:
        return max(1, int(env))
    except ValueError:
        raise ValueError(f"SEPSISCOPE_THREADS must be a whole number of threads, got {env!r}") from None


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The shared worker threads, at least ``workers`` of them."""
    global _POOL, _POOL_SIZE
    if _POOL_SIZE < workers:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpn-kernel")
        _POOL_SIZE = workers
    return _POOL


#: rows per thread at least in :func:`split_rows` (below, starting a thread costs more than it saves)
SPLIT_ROWS = 100_000


def split_rows(fn, n_rows: int, *, threads: int | None = None) -> list:
    """``[fn(a, b), ...]`` over consecutive row ranges ``[a, b)`` that cover ``0 .. n_rows``, on up
    to ``threads`` threads (default :func:`default_threads`; at least :data:`SPLIT_ROWS` rows each);
    this thread takes the first range. Gains only where ``fn`` releases the GIL (a ``nogil`` numba
    loop such as those of :mod:`cpn._evidence_kernel`, which write disjoint rows).

    >>> split_rows(lambda a, b: b - a, 250_000, threads=2)
    [125000, 125000]
    """
    k = max(1, min(threads or default_threads(), n_rows // SPLIT_ROWS))
    cuts = [n_rows * j // k for j in range(k + 1)]
    if k == 1:
        return [fn(0, n_rows)]
    futures = [_pool(k - 1).submit(fn, cuts[j], cuts[j + 1]) for j in range(1, k)]
    try:
        first = fn(cuts[0], cuts[1])
    finally:  # every range done before the caller may free what they write (Ctrl-C included)
        concurrent.futures.wait(futures)
    return [first] + [f.result() for f in futures]


def run_kernel(prog: Program, ev: dict, n: int, *, mode: int, z_out, ctx_out=None, alone_out=None,
               alone_scale: float = 1.0, alone_shift: float = 0.0, log10: bool = False,
               threads: int | None = None):
    """Run the kernel over all ``n`` rows of ``ev`` (node -> (n, k) float arrays, read in place),
    on ``threads`` threads (default :func:`default_threads`; a thread gets at least 4 tiles).

    mode 0: ``z_out`` (T, n) = Z. mode 1: ``z_out`` (2, n) = P(group, E), ``ctx_out`` and
    ``alone_out`` (rows, n) the explanation ratios (see :mod:`cpn._kernel`); with ``log10`` their
    log10 instead (each thread takes the logarithms of its own rows), ``alone_shift`` subtracted
    from the ``alone`` ones."""
    compiled = load()
    if compiled is None:
        raise RuntimeError("the compiled kernel needs numba (pip install numba)")
    dummy = np.empty((1, 2))[:, :0]
    n_instr = prog.n_fwd if mode == 0 else len(prog.out_slot)
    addr, s0, s1, ext, present, keep = prog.evidence_table(ev, n)
    n_tiles = -(-n // TILE)
    k = max(1, min(threads or default_threads(), n_tiles // 4))
    cuts = [min(n, (n_tiles * j // k) * TILE) for j in range(k + 1)]

    def part(j, _keep=keep):  # (_keep: the arrays stay alive while any part runs)
        code = compiled(addr, s0, s1, ext, present, cuts[j], cuts[j + 1], prog.ev_lo, prog.ev_k,
                       prog.n_slots, n_instr, prog.out_slot, prog.out_arity, prog.out_add,
                       prog.term_ptr, prog.coef, prog.inp, prog.inp_base, prog.zidx, prog.zg,
                       prog.row_cav, prog.row_alone, mode, alone_scale, z_out,
                       dummy if ctx_out is None else ctx_out,
                       dummy if alone_out is None else alone_out)
        if log10 and mode == 1 and not code:
            a, b = cuts[j], cuts[j + 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                np.log10(ctx_out[:, a:b], out=ctx_out[:, a:b])
                np.log10(alone_out[:, a:b], out=alone_out[:, a:b])
                if alone_shift:
                    alone_out[:, a:b] -= alone_shift
        return code

    if k == 1:
        codes = [part(0)]
    else:
        futures = [_pool(k - 1).submit(part, j) for j in range(1, k)]
        try:
            codes = [part(0)]  # this thread takes the first part
        finally:
            # wait for every part, whatever happens here (Ctrl-C included): the threads read the
            # evidence and write the outputs in place, so nothing may be freed under them
            concurrent.futures.wait(futures)
        codes += [f.result() for f in futures]
    del keep
    code = next((c for c in codes if c), 0)
    if code:
        _raise(code, prog)
