"""The numba kernel behind :mod:`cpn.counts`: expected family counts over a tile of screens.

It reuses the explanation kernel's tile loader (:func:`cpn._kernel._tile` with no instruction to
run: evidence read in place, NaN rows made ones, bad likelihoods reported) and then runs the
counts program: the forward pass, the seed ``w_n / P(E_n)`` per screen, the adjoint and the
*reduce* instructions, whose terms are summed over the tile's screens and added to count cells.
"""

from __future__ import annotations

import numba
import numpy as np

from ._kernel import TILE, _tile

#: instruction kinds
STORE, ADD, REDUCE = 0, 1, 2


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy",
            fastmath={"reassoc"})  # reassoc: the sums over a tile's lanes vectorise
def _run(v, o0, o1, out_slot, out_kind, out_arity, term_ptr, coef, inp, inp_base, cell_ptr, cells,
         cnt, acc, pa):
    """Instructions o0:o1. STORE / ADD: ``v[slot] (+)= sum_t coef_t * prod v[inputs_t]``;
    REDUCE: per term t, its sum over the lanes is added to the count cells of t."""
    R = TILE
    for o in range(o0, o1):
        e = out_slot[o]
        ar = out_arity[o]
        t0 = term_ptr[o]
        t1 = term_ptr[o + 1]
        ib = inp_base[o]
        kind = out_kind[o]
        if kind == REDUCE:
            for t in range(t0, t1):
                c = coef[t]
                b0 = ib + ar * t
                i0 = inp[b0]
                if ar == 2:
                    i1 = inp[b0 + 1]
                    for r in range(R):
                        pa[r] = c * v[i0, r] * v[i1, r]
                else:
                    for r in range(R):
                        pa[r] = c * v[i0, r]
                    for j in range(1, ar):
                        ij = inp[b0 + j]
                        for r in range(R):
                            pa[r] *= v[ij, r]
                s = 0.0
                for r in range(R):
                    s += pa[r]
                for q in range(cell_ptr[t], cell_ptr[t + 1]):
                    cnt[cells[q]] += s
            continue
        if kind == ADD:
            for r in range(R):
                acc[r] = v[e, r]
        else:
            for r in range(R):
                acc[r] = 0.0
        if ar == 1:
            for t in range(t0, t1):
                c = coef[t]
                i0 = inp[ib + t]
                for r in range(R):
                    acc[r] += c * v[i0, r]
        elif ar == 2:
            for t in range(t0, t1):
                c = coef[t]
                i0 = inp[ib + 2 * t]
                i1 = inp[ib + 2 * t + 1]
                for r in range(R):
                    acc[r] += c * v[i0, r] * v[i1, r]
        elif ar == 0:
            for t in range(t0, t1):
                c = coef[t]
                for r in range(R):
                    acc[r] += c
        else:
            for t in range(t0, t1):
                c = coef[t]
                b0 = ib + ar * t
                i0 = inp[b0]
                for r in range(R):
                    pa[r] = c * v[i0, r]
                for j in range(1, ar):
                    ij = inp[b0 + j]
                    for r in range(R):
                        pa[r] *= v[ij, r]
                for r in range(R):
                    acc[r] += pa[r]
        for r in range(R):
            v[e, r] = acc[r]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def counts_kernel(addr, s0, s1, extent, present, row0, row1, ev_lo, ev_k, n_slots, n_fwd, seeds,
                  zidx, weights, target_ev, out_slot, out_kind, out_arity, term_ptr, coef, inp, inp_base,
                  cell_ptr, cells, cnt, stats):
    """Evidence rows row0:row1 (row0 a multiple of TILE): adds their expected counts to ``cnt``;
    ``stats`` = (sum of ``w log P(E)`` over rows with ``P(E) > 0``, rows with ``P(E) = 0``).
    Returns 0 or the explanation kernel's error code for bad evidence.

    With ``target_ev`` (likelihood rows ``T`` on the target, one per evidence row; an empty array:
    none) the counts are the difference ``E[counts | T, E] - E[counts | E]`` (the discriminative
    gradient, each target state's seed ``w T_t / P(T, E) - w / P(E)``) and ``stats[0]`` is
    ``sum w (log P(T, E) - log P(E))``, each term over the rows where its probability is positive;
    ``stats[1]`` counts the rows where either is 0."""
    R = TILE
    n_rows = len(ev_k)
    v = np.zeros((n_slots, R))
    nanrow = np.zeros((max(n_rows, 1), R))
    acc = np.empty(R)
    pa = np.empty(R)
    mn = np.empty(R)
    mx = np.empty(R)
    kmax = 1
    for i in range(n_rows):
        kmax = max(kmax, ev_k[i])
    blk = np.empty(R * kmax)
    no_i1 = np.empty(0, np.int64)
    no_i2 = np.empty((0, 2), np.int64)
    no_f2 = np.empty((1, 0))
    no_b = np.empty(0, np.bool_)
    n_instr = len(out_slot)
    disc = target_ev.shape[0] > 0
    ll = 0.0
    skipped = 0.0
    for a in range(row0, row1, R):
        nl = min(R, row1 - a)
        code = _tile(a, nl, addr, s0, s1, extent, present, ev_lo, ev_k, 0, no_i1, no_i1, no_b,
                     no_i1, coef, no_i1, no_i1, no_i1, no_i1, no_i2, no_i2, 0, 1.0, no_f2, no_f2,
                     no_f2, v, nanrow, acc, pa, mn, mx, blk)
        if code:
            return code
        _run(v, 0, n_fwd, out_slot, out_kind, out_arity, term_ptr, coef, inp, inp_base, cell_ptr,
             cells, cnt, acc, pa)
        nt = len(zidx)
        for r in range(R):
            z = 0.0
            for t in range(nt):
                z += v[zidx[t], r]
            if not disc:
                if r < nl and z > 0.0:
                    w = weights[a + r]
                    for t in range(nt):
                        v[seeds[t], r] = w / z
                    ll += w * np.log(z)
                else:
                    for t in range(nt):  # lanes past the last row, and impossible evidence: no counts
                        v[seeds[t], r] = 0.0
                    if r < nl:
                        skipped += 1.0
                continue
            for t in range(nt):
                v[seeds[t], r] = 0.0
            if r >= nl:
                continue
            w = weights[a + r]
            z1 = 0.0
            for t in range(nt):
                z1 += target_ev[a + r, t] * v[zidx[t], r]
            if z1 > 0.0:  # the pass with the target's evidence ...
                for t in range(nt):
                    v[seeds[t], r] = w * target_ev[a + r, t] / z1
                ll += w * np.log(z1)
            if z > 0.0:  # ... minus the pass without it
                for t in range(nt):
                    v[seeds[t], r] -= w / z
                ll -= w * np.log(z)
            if not (z1 > 0.0 and z > 0.0):
                skipped += 1.0
        _run(v, n_fwd, n_instr, out_slot, out_kind, out_arity, term_ptr, coef, inp, inp_base,
             cell_ptr, cells, cnt, acc, pa)
    stats[0] = ll
    stats[1] = skipped
    return 0
