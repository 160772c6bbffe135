"""Winograd F(3x3, 4x4) kernels for the weight gradient of a 3x3, stride-1, undilated, ungrouped conv (the
``numba`` backend's ``conv_weight:winograd/f4x4``; the index of kernels is :mod:`._numba_kernels`, the
driver lives in ``numba_cpu``).

The algorithm. The weight gradient ``dw[k, c, r, s] = sum over (n, p, q) of x[n, c, p - pt + r, q - pl + s] *
dy[n, k, p, q]`` is, per 4x4 tile of dy and the 6x6 window of x it meets, the 3x3 correlation of the window
with the tile as filter: F(3, 4), whose transforms are F(4, 3)'s transposed (the transposition principle:
with ``y = A^T [(G g) * (B^T d)]`` the forward's, ``sum_i dy_i y_i = sum_j (A dy)_j (G g)_j (B^T d)_j`` for
every g, so ``dw_r = (G^T [(A dy) * (B^T d)])_r``). In 2-D, summed over the tiles t of the batch:

    dw[k, c] = G^T [ sum_t (A dY_t A^T)[k] * (B^T X_t B)[c] ] G

so the forward's input transform V = B^T X B (``_numba_winograd.winograd_input``, the same tiles, zeros
in the padding and past the input) meets D = A dY A^T (:func:`winograd_dy`, zeros past P x Q) in 36 GEMMs
M[j] = D[j] @ V[j]^T of (K x T) @ (T x C), and :func:`winograd_weight_output` applies G^T . G per (k, c).

Layout: C-contiguous x[N, C, H, W], dy[N, K, P, Q], dw[K, C, 3, 3]; tiles and chunks of tile rows as in
``_numba_winograd`` (tile t = (gr - gr0)*TW + tw of the global tile row gr = n*TH + th).

- ``winograd_dy``              D[a*6+b, k, col0 + t] = (A dY_t A^T)[a, b]; parallel over output channels.
- ``winograd_weight_output``   dw[k, c] = G^T M[:, k, c] G in float64, rounded once; a (k, c) whose M or
                               result holds Inf or NaN is flagged; parallel over output channels.
- ``winograd_weight_resum``    the flagged (k, c) summed again directly (float64, taps clipped to the
                               input: the definition's terms), so the definition's non-finite pattern
                               holds for every x and dy (the transforms spread one Inf over the tile, the
                               padding's zeros meet dy, and sums can overflow where the direct ones do not).

Roundings per pass, for ``fastconv.testing.winograd_weight_tolerance``: A 2 (:func:`a6`), B^T 2 (the
forward's ``bt6``), G^T in float64.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT_CONV, tolerate_corrupt_caches


@njit(**INLINE)
def a6(y0, y1, y2, y3):
    """A y, A = (A^T)^T of F(4, 3) (6 x 4: rows 1 0 0 0, 1 1 1 1, 1 -1 1 -1, 1 2 4 8, 1 -2 4 -8, 0 0 0 1):
    every term passes through at most 2 roundings (doublings are exact)."""
    e = y0 + y2
    o = y1 + y3
    f = y2 + y2
    f = y0 + (f + f)
    h = y3 + y3
    h = h + h
    g = (y1 + y1) + (h + h)
    return y0, e + o, e - o, f + g, f - g, y3


@njit(**INLINE)
def gt6(m0, m1, m2, m3, m4, m5):
    """G^T m of F(4, 3) (3 x 6: the columns of G), in float64."""
    c6, c12, c24 = 1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0
    s = m1 + m2
    d = m1 - m2
    u = m3 + m4
    v = m3 - m4
    return m0 * 0.25 - s * c6 + u * c24, v * c12 - d * c6, (u - s) * c6 + m5


@njit(**JIT_CONV)
def winograd_dy(dy, gr0, rows, TH, TW, D, col0, k0, k1, nchunk):
    """D[a*6+b, k, col0 + t] = (A dY A^T)[a, b] for the output channels k0 <= k < k1 and the tiles t of tile
    rows [gr0, gr0 + rows), dY the tile's 4x4 values of dy[n, k] (zeros past P x Q); one task per channel,
    in ``nchunk`` parallel chunks that allocate their scratch once. Per task and tile row: the 4 dy rows
    copied into a zeroed row buffer, A down its columns (6 rows), each tile's 4 values of each row gathered
    into L[a*4 + i, t]; then per row a, A along the tiles' rows, one loop over all the task's tiles."""
    N, K, P, Q = dy.shape
    WB = 4 * TW
    RT = rows * TW
    tasks = k1 - k0
    df = dy.reshape(dy.size)
    for ch in prange(nchunk):
        buf = np.zeros((4, WB), dtype=D.dtype)
        bf = buf.reshape(4 * WB)
        cp = np.empty((6, WB), dtype=D.dtype)
        L = np.empty((24, RT), dtype=D.dtype)
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            k = k0 + it
            for tr in range(rows):
                gr = gr0 + tr
                n = gr // TH
                th = gr - n * TH
                for i in range(4):      # flat unsigned indices (row views cost as much as the copies)
                    p = 4 * th + i
                    d0 = np.uint64(i * WB)
                    if p < P:
                        s0 = np.uint64(((n * K + k) * P + p) * Q)
                        for col in range(np.uint64(Q)):
                            bf[d0 + col] = df[s0 + col]
                    else:
                        for col in range(np.uint64(Q)):
                            bf[d0 + col] = 0
                for col in range(WB):
                    v = a6(buf[0, col], buf[1, col], buf[2, col], buf[3, col])
                    cp[0, col] = v[0]
                    cp[1, col] = v[1]
                    cp[2, col] = v[2]
                    cp[3, col] = v[3]
                    cp[4, col] = v[4]
                    cp[5, col] = v[5]
                tb = tr * TW
                for a in range(6):
                    ca = cp[a]
                    for i in range(4):
                        la = L[a * 4 + i]
                        for tw in range(TW):
                            la[tb + tw] = ca[4 * tw + i]
            for a in range(6):
                l0, l1, l2, l3 = L[a * 4], L[a * 4 + 1], L[a * 4 + 2], L[a * 4 + 3]
                d0, d1 = D[a * 6, k, col0:col0 + RT], D[a * 6 + 1, k, col0:col0 + RT]
                d2, d3 = D[a * 6 + 2, k, col0:col0 + RT], D[a * 6 + 3, k, col0:col0 + RT]
                d4, d5 = D[a * 6 + 4, k, col0:col0 + RT], D[a * 6 + 5, k, col0:col0 + RT]
                for t in range(RT):
                    v = a6(l0[t], l1[t], l2[t], l3[t])
                    d0[t] = v[0]
                    d1[t] = v[1]
                    d2[t] = v[2]
                    d3[t] = v[3]
                    d4[t] = v[4]
                    d5[t] = v[5]


@njit(**JIT_CONV)
def winograd_weight_output(M, dw, flags, k0, k1, nchunk):
    """dw[k, c] = G^T M[:, k, c] G (M[a*6+b, k, c], the 36 GEMMs' sums) for k0 <= k < k1, in float64 and
    rounded once; flags[k, c] = 1 where an M value or a result is not finite (else 0). One task per output
    channel, in ``nchunk`` parallel chunks; each pass runs over the channels c (M's rows M[j, k] are
    contiguous along c)."""
    K, C = M.shape[1], M.shape[2]
    tasks = k1 - k0
    for ch in prange(nchunk):
        t = np.empty((18, C), dtype=np.float64)     # t[r*6 + b, c] = (G^T M[:, b])[r]
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            k = k0 + it
            for c in range(C):
                flags[k, c] = 0
            for b in range(6):
                m0, m1, m2 = M[b, k], M[6 + b, k], M[12 + b, k]
                m3, m4, m5 = M[18 + b, k], M[24 + b, k], M[30 + b, k]
                t0, t1, t2 = t[b], t[6 + b], t[12 + b]
                for c in range(C):
                    g = gt6(np.float64(m0[c]), np.float64(m1[c]), np.float64(m2[c]), np.float64(m3[c]),
                            np.float64(m4[c]), np.float64(m5[c]))
                    t0[c] = g[0]
                    t1[c] = g[1]
                    t2[c] = g[2]
            for r in range(3):
                q0, q1, q2, q3, q4, q5 = t[r * 6], t[r * 6 + 1], t[r * 6 + 2], t[r * 6 + 3], t[r * 6 + 4], t[r * 6 + 5]
                for c in range(C):
                    g = gt6(q0[c], q1[c], q2[c], q3[c], q4[c], q5[c])
                    dw[k, c, r, 0] = g[0]
                    dw[k, c, r, 1] = g[1]
                    dw[k, c, r, 2] = g[2]
                    # every M value reaches some result through a nonzero coefficient, and a non-finite
                    # value stays so through sums and scalings (Inf - Inf is NaN): checking dw suffices
                    if not (math.isfinite(dw[k, c, r, 0]) and math.isfinite(dw[k, c, r, 1])
                            and math.isfinite(dw[k, c, r, 2])):
                        flags[k, c] = 1


@njit(**JIT_CONV)
def winograd_weight_resum(x, dy, dw, flags, geo):
    """dw[k, c, r, s] = sum over (n, p, q) of x[n, c, p - pt + r*dil_h, q - pl + s*dil_w] * dy[n, k, p, q]
    (taps inside the input only, float64, n then p then q) for every flagged (k, c); parallel over k. Run on
    the problem as the user gave it (a dilated one's phases have zeros that the definition has no terms
    for)."""
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    pt, pl, dh, dw_ = geo.pad_top, geo.pad_left, geo.dil_h, geo.dil_w
    for k in prange(K):
        for c in range(C):
            if flags[k, c] == 0:
                continue
            for r in range(3):
                for s in range(3):
                    acc = 0.0
                    for n in range(N):
                        for p in range(P):
                            h = p - pt + r * dh
                            if h < 0 or h >= H:
                                continue
                            for q in range(Q):
                                col = q - pl + s * dw_
                                if 0 <= col < W:
                                    acc += np.float64(x[n, c, h, col]) * np.float64(dy[n, k, p, q])
                    dw[k, c, r, s] = acc


tolerate_corrupt_caches(globals())
