"""The numba kernel behind :mod:`cpn.kernel` (see there for the term program it runs).

Every ``for r in range(R)`` loop runs over the ``R`` screens of one tile, side by side in memory,
and LLVM vectorises it. The kernel releases the GIL; :func:`cpn.kernel.run_kernel` splits the rows
over threads, each call with its own scratch array.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def _ptr(typingctx, address):
    """A float64 pointer from an integer address (the evidence arrays are read in place)."""
    if not isinstance(address, types.Integer):
        return None
    sig = types.CPointer(types.float64)(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


#: screens per tile. Longer rows amortise each loop's set-up; shorter ones keep a tile's scratch
#: (slots x TILE doubles: 780 KB for the PhysioNet network's 764 slots at 128) in the L2 cache.
#: On one core of the development machine 128 was the fastest (1.09-1.12 us per explained screen,
#: against 1.32 at 64, 1.13 at 192 and 1.30 at 256).
TILE = 128


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _tile(a, nl, addr, s0, s1, extent, present, ev_lo, ev_k, n_instr, out_slot, out_arity,
          out_add, term_ptr, coef, inp, inp_base, zidx, zg, row_cav, row_alone, mode, alone_scale,
          z_out, ctx_out, alone_out, v, nanrow, acc, pa, mn, mx, blk):
    """One tile: evidence rows a : a + nl; returns 0 or an error code (see :func:`kernel`)."""
    R = TILE
    n_rows = len(ev_k)
    # ---- evidence, read in place (node i: a float64 array at address addr[i], element strides
    # s0[i] per row and s1[i] per state). A row holding a NaN carries none (ones); negative and
    # infinite values are counted branch-free (so the loops vectorise) and located only if any.
    for r in range(R):
        mx[r] = 0.0  # per lane: the count of negative / infinite values in rows with evidence
    for i in range(n_rows):
        lo = ev_lo[i]
        k = ev_k[i]
        if not present[i]:
            for r in range(R):
                nanrow[i, r] = np.nan
            for x in range(k):
                for r in range(R):
                    v[lo + x, r] = 1.0
            continue
        X = numba.carray(_ptr(addr[i]), (extent[i],))
        for r in range(R):
            acc[r] = 0.0
            mn[r] = 0.0
        if s1[i] == 1 and s0[i] == k and nl == R:
            # C-ordered rows: copy the tile's block (contiguous, so streamed at memory speed),
            # then transpose it out of the L1 cache
            a0 = a * k
            for j in range(R * k):
                blk[j] = X[a0 + j]
            for x in range(k):
                for r in range(R):
                    v[lo + x, r] = blk[r * k + x]
        else:  # any other layout, or the last, partial tile (lanes past nl: no evidence)
            r0 = s0[i]
            c1 = s1[i]
            for x in range(k):
                for r in range(R):
                    v[lo + x, r] = X[(a + r) * r0 + x * c1] if r < nl else np.nan
        # acc: NaN count (any NaN: no evidence; a sum would also turn inf + -inf into NaN)
        for x in range(k):
            for r in range(R):
                val = v[lo + x, r]
                acc[r] += 1.0 if val != val else 0.0
                mn[r] += 1.0 if (val < 0.0) | (val == np.inf) else 0.0
        for x in range(k):
            for r in range(R):
                v[lo + x, r] = v[lo + x, r] if acc[r] == 0.0 else 1.0
        for r in range(R):
            ok = acc[r] == 0.0
            mx[r] += mn[r] if ok else 0.0
            nanrow[i, r] = 0.0 if ok else np.nan
    nbad = 0.0
    for r in range(R):
        nbad += mx[r]
    if nbad > 0.0:  # find the first offending node
        for i in range(n_rows):
            if not present[i]:
                continue
            X = numba.carray(_ptr(addr[i]), (extent[i],))
            neg = False
            inf = False
            for r in range(nl):
                if nanrow[i, r] != 0.0:
                    continue
                for x in range(ev_k[i]):
                    val = X[s0[i] * (a + r) + s1[i] * x]
                    neg = neg or val < 0.0
                    inf = inf or val == np.inf
            if neg:  # negatives first, as the numpy plan reports them
                return 1 + i
            if inf:
                return 1 + n_rows + i
    # ---- the term program: slot = (its value so far if "add") + sum of coef * v[in_0] * ...
    for o in range(n_instr):
        e = out_slot[o]
        ar = out_arity[o]
        t0 = term_ptr[o]
        t1 = term_ptr[o + 1]
        ib = inp_base[o]
        add = out_add[o]
        if ar == 2 and t1 > t0:  # the first term initialises the sum (no clearing pass)
            c = coef[t0]
            i0 = inp[ib + 2 * t0]
            i1 = inp[ib + 2 * t0 + 1]
            if add:
                for r in range(R):
                    acc[r] = v[e, r] + c * v[i0, r] * v[i1, r]
            else:
                for r in range(R):
                    acc[r] = c * v[i0, r] * v[i1, r]
            for t in range(t0 + 1, t1):
                c = coef[t]
                i0 = inp[ib + 2 * t]
                i1 = inp[ib + 2 * t + 1]
                for r in range(R):
                    acc[r] += c * v[i0, r] * v[i1, r]
            for r in range(R):
                v[e, r] = acc[r]
            continue
        if ar == 1 and t1 > t0:
            c = coef[t0]
            i0 = inp[ib + t0]
            if add:
                for r in range(R):
                    acc[r] = v[e, r] + c * v[i0, r]
            else:
                for r in range(R):
                    acc[r] = c * v[i0, r]
            for t in range(t0 + 1, t1):
                c = coef[t]
                i0 = inp[ib + t]
                for r in range(R):
                    acc[r] += c * v[i0, r]
            for r in range(R):
                v[e, r] = acc[r]
            continue
        if add:
            for r in range(R):
                acc[r] = v[e, r]
        else:
            for r in range(R):
                acc[r] = 0.0
        if ar == 3:
            for t in range(t0, t1):
                c = coef[t]
                i0 = inp[ib + 3 * t]
                i1 = inp[ib + 3 * t + 1]
                i2 = inp[ib + 3 * t + 2]
                for r in range(R):
                    acc[r] += c * v[i0, r] * v[i1, r] * v[i2, r]
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
                i1 = inp[b0 + 1]
                for r in range(R):
                    pa[r] = c * v[i0, r] * v[i1, r]
                for j in range(2, ar):
                    ij = inp[b0 + j]
                    for r in range(R):
                        pa[r] *= v[ij, r]
                for r in range(R):
                    acc[r] += pa[r]
        for r in range(R):
            v[e, r] = acc[r]
    if mode == 0:
        for t in range(len(zidx)):
            zt = zidx[t]
            for r in range(nl):
                z_out[t, a + r] = v[zt, r]
        return 0
    # ---- outputs: P(group, E) and per evidence row the two explanation ratios
    z0 = zg[0]
    z1 = zg[1]
    for r in range(nl):
        z_out[0, a + r] = v[z0, r]
        z_out[1, a + r] = v[z1, r]
    for r in range(R):
        acc[r] = v[z0, r] / v[z1, r]  # odds(E)
    for i in range(n_rows):
        c0 = row_cav[i, 0]
        c1 = row_cav[i, 1]
        j0 = row_alone[i, 0]
        j1 = row_alone[i, 1]
        for r in range(nl):  # nanrow: NaN where the node has no evidence, else 0
            ctx_out[i, a + r] = (v[c1, r] / v[c0, r]) * acc[r] + nanrow[i, r]
        for r in range(nl):
            alone_out[i, a + r] = (v[j0, r] / v[j1, r]) * alone_scale + nanrow[i, r]
    return 0


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def kernel(addr, s0, s1, extent, present, row0, row1, ev_lo, ev_k, n_slots, n_instr, out_slot,
           out_arity, out_add, term_ptr, coef, inp, inp_base, zidx, zg, row_cav, row_alone, mode,
           alone_scale, z_out, ctx_out, alone_out):
    """Evidence rows row0:row1 (read in place: see :func:`_tile`); row0 is a multiple of TILE.
    The first ``n_instr`` instructions of the program run. Releases the GIL, so that threads can
    share the rows (see :func:`cpn.kernel.run_kernel`).

    mode 0: ``z_out`` (T, n) = Z. mode 1: ``z_out`` (2, n) = P(group, E) and per evidence row
    ``ctx_out`` = odds(E) / odds(E without i) and ``alone_out`` = odds({i}) * alone_scale (NaN
    where the row has no evidence for the node). Returns 0, or 1 + kind * rows + row for a
    negative (kind 0) or infinite (kind 1) likelihood."""
    R = TILE
    n_rows = len(ev_k)
    v = np.empty((n_slots, R))
    nanrow = np.zeros((max(n_rows, 1), R))
    acc = np.empty(R)
    pa = np.empty(R)
    mn = np.empty(R)
    mx = np.empty(R)
    kmax = 1
    for i in range(n_rows):
        kmax = max(kmax, ev_k[i])
    blk = np.empty(R * kmax)
    for a in range(row0, row1, R):
        code = _tile(a, min(R, row1 - a), addr, s0, s1, extent, present, ev_lo, ev_k, n_instr,
                     out_slot, out_arity, out_add, term_ptr, coef, inp, inp_base, zidx, zg,
                     row_cav, row_alone, mode, alone_scale, z_out, ctx_out, alone_out, v, nanrow,
                     acc, pa, mn, mx, blk)
        if code:
            return code
    return 0
