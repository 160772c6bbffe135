"""Winograd F(4x4, 3x3) kernels of the ``numba`` backend: a 3x3, stride-1, undilated, ungrouped conv as
three transforms around 36 BLAS GEMMs (the index of kernels is :mod:`._numba_kernels`; the driver,
its chunking and its reasons live in ``numba_cpu``).

Layout: C-contiguous x[N, C, H, W], w[K, C, 3, 3], b[K] (zeros when the op has no bias), out[N, K, P, Q];
``geo`` is a :class:`~._numba_common.ConvGeometry`, read by field name. Output tiles are 4x4, aligned at
output (0, 0): tile (th, tw) writes outputs [4th, 4th+4) x [4tw, 4tw+4) (those inside P x Q) and reads
the 6x6 input window starting at (4th - pad_top, 4tw - pad_left), zeros outside the input (the
padding, and the rows/columns past the input that only the unwritten outputs of a partial last tile
would need). The batch's tiles are numbered row-major over (n, th, tw); a *chunk* is a run of whole
tile rows [gr0, gr0 + rows) of the global tile-row index gr = n*TH + th (several images, or a band of
one), so a chunk holds rows*TW tiles, numbered t = (gr - gr0)*TW + tw.

- ``winograd_filter``  U[a*6+b, k, c] = (G g G^T)[a, b] for g = w[k, c] (the transform in float64,
                       rounded once to U's dtype); parallel over k.
- ``winograd_input``   V[a*6+b, c, t] = (B^T d B)[a, b] for the chunk's tiles; parallel over channels;
                       per tile row it copies the 6 input rows into a zeroed row buffer (the padding
                       stays zero) and runs B^T down its columns, then B^T along every tile at once.
- ``winograd_output``  out = A^T M A + b over the chunk's tiles (M[a*6+b, k, t], the GEMMs' result),
                       writing only outputs inside P x Q; parallel over output channels. A tile whose
                       result holds Inf or NaN is computed again by direct summation (taps clipped to
                       the input, float64): the transforms spread one input's (or weight's) Inf over
                       the whole tile, and can overflow where the conv does not, so this keeps the
                       definition's non-finite pattern exactly (a padded tap never meets the weight).

The elementwise stage between input and output transforms is M[j] = U[j] @ V[j] for j < 36 (36 GEMMs
(K x C) @ (C x T)), run by NumPy's matmul from ``numba_cpu``.

The matrices B^T, G, A^T are Lavin & Gray's F(4, 3) (``_winograd_f4x4``, where they are written out with
their source; checked against the 1-D correlation loop in float64 by tests/test_numba_winograd.py).
The kernels below apply them factored (shared sums, small integer multiples by additions, which are
exact), with the rounding counts per pass that ``fastconv.testing.winograd_tolerance`` derives its bound
from: B^T 2, A^T 3, G (in float64) 4 per pass.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _winograd_f4x4 as _m
from ._numba_common import INLINE, JIT_CONV, tolerate_corrupt_caches

#: the transform matrices (float64 NumPy arrays, in a module without Numba so that
#: ``fastconv.testing``'s error bound uses the same ones); the kernels apply them factored
AT, BT, G = _m.AT, _m.BT, _m.G

#: output tile (m), filter taps (r) and input tile (m + r - 1) of F(m x m, r x r)
TILE_OUT, TAPS, TILE_IN = 4, 3, 6


# ---------------------------------------------------------------------------------------------------
# The 1-D transforms, factored (each returns its 6 or 4 values)
# ---------------------------------------------------------------------------------------------------
@njit(**INLINE)
def bt6(d0, d1, d2, d3, d4, d5):
    """B^T d: every term passes through at most 2 roundings (d4 - 4 d2, then the sum)."""
    c = d4 - d2
    a = d4 - (d2 + d2 + d2 + d2)
    b = d3 - (d1 + d1 + d1 + d1)
    e = d3 - d1
    e = e + e
    f = d0 - d2
    h = d1 - d3
    return ((f + f + f + f) + c, a + b, a - b, c + e, c - e, (h + h + h + h) + (d5 - d3))


@njit(**INLINE)
def _bt6_rows(s0, s1, s2, s3, s4, s5, d0, d1, d2, d3, d4, d5, n):
    """(d0..d5)[i] = bt6(s0[i], ..., s5[i]) for i < n: B^T applied down six rows at once, one column per
    iteration (a loop Numba vectorises; both passes of winograd_input's B^T d B)."""
    for i in range(n):
        v = bt6(s0[i], s1[i], s2[i], s3[i], s4[i], s5[i])
        d0[i] = v[0]
        d1[i] = v[1]
        d2[i] = v[2]
        d3[i] = v[3]
        d4[i] = v[4]
        d5[i] = v[5]


@njit(**INLINE)
def at6(m0, m1, m2, m3, m4, m5):
    """A^T m: every term passes through at most 3 roundings."""
    p = m1 + m2
    q = m1 - m2
    r = m3 + m4
    s = m3 - m4
    r4 = r + r
    r4 = r4 + r4
    s2 = s + s
    s8 = s2 + s2
    s8 = s8 + s8
    return (m0 + p) + r, q + s2, p + r4, (q + s8) + m5


@njit(**INLINE)
def _at6_rows(s0, s1, s2, s3, s4, s5, d0, d1, d2, d3, n, bias, add_bias):
    """(d0..d3)[i] = at6(s0[i], ..., s5[i]) (+ bias where ``add_bias``) for i < n: A^T applied down six
    rows at once, one column per iteration (both passes of winograd_output's A^T M A, the second adding
    the bias)."""
    for i in range(n):
        y = at6(s0[i], s1[i], s2[i], s3[i], s4[i], s5[i])
        if add_bias:
            d0[i] = y[0] + bias
            d1[i] = y[1] + bias
            d2[i] = y[2] + bias
            d3[i] = y[3] + bias
        else:
            d0[i] = y[0]
            d1[i] = y[1]
            d2[i] = y[2]
            d3[i] = y[3]


@njit(**INLINE)
def g3(g0, g1, g2):
    """G g in float64: every term passes through at most 4 roundings (the constant, the product, two
    sums)."""
    c4, c6, c12, c24 = 0.25, 1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0
    s = g0 + g2
    e = g0 * c24 + g2 * c6
    o = g1 * c12
    return g0 * c4, -(s + g1) * c6, -(s - g1) * c6, e + o, e - o, g2


# ---------------------------------------------------------------------------------------------------
# The kernels
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def winograd_filter(w, U, k0, k1, u0, flip):
    """U[a*6+b, k - u0, c] = (G w[k, c] G^T)[a, b] for the output channels k0 <= k < k1 (parallel over them;
    u0: the channel of U's first row; ``flip``: the filter is w's flipped transpose, w[c, k, 2 - r, 2 - s],
    an input gradient's, read from w as it is so that one compiled kernel serves both),
    computed in float64 and rounded once; per k the taps are first gathered tap-major (wt[r*3+s, c]), so
    both passes run over c with unit stride, on row views (which LLVM vectorizes; 3-D indexing it does not)."""
    C = w.shape[0] if flip else w.shape[1]
    for k in prange(k0, k1):
        wt = np.empty((9, C))
        t = np.empty((18, C))           # t[a*3+s, c] = (G w[k, c])[a, s]
        for c in range(C):
            for j in range(9):
                wt[j, c] = w[c, k, 2 - j // 3, 2 - j % 3] if flip else w[k, c, j // 3, j % 3]
        for s in range(3):
            g0, g1, g2 = wt[s], wt[3 + s], wt[6 + s]
            o0, o1, o2, o3, o4, o5 = t[s], t[3 + s], t[6 + s], t[9 + s], t[12 + s], t[15 + s]
            for c in range(C):
                v = g3(g0[c], g1[c], g2[c])
                o0[c] = v[0]
                o1[c] = v[1]
                o2[c] = v[2]
                o3[c] = v[3]
                o4[c] = v[4]
                o5[c] = v[5]
        for a in range(6):
            h0, h1, h2 = t[a * 3], t[a * 3 + 1], t[a * 3 + 2]
            ku = k - u0
            f0, f1, f2 = U[a * 6, ku], U[a * 6 + 1, ku], U[a * 6 + 2, ku]
            f3, f4, f5 = U[a * 6 + 3, ku], U[a * 6 + 4, ku], U[a * 6 + 5, ku]
            for c in range(C):
                v = g3(h0[c], h1[c], h2[c])
                f0[c] = v[0]
                f1[c] = v[1]
                f2[c] = v[2]
                f3[c] = v[3]
                f4[c] = v[4]
                f5[c] = v[5]


@njit(**JIT_CONV)
def winograd_input(x, gr0, rows, TH, TW, geo, V, col0, c0, c1, nchunk):
    """V[a*6+b, c, col0 + t] = (B^T d B)[a, b] for the channels c0 <= c < c1 and the tiles t of tile rows
    [gr0, gr0 + rows) (see the module docstring; col0: the column of the chunk's first tile in V); one task
    per channel, in ``nchunk`` parallel chunks that allocate their scratch once. Per task and tile row: the
    6 input rows copied zero-padded into a row buffer (the columns the tile row reads), B^T down its
    columns, and each tile's 6 values of each transformed row gathered into L[a*6 + i, t]; then per row a,
    B^T along the tiles' rows, one loop over all the task's tiles. Every loop with arithmetic runs over a
    contiguous index on row views (so LLVM vectorizes it), the longest one available: the task's tiles."""
    N, C, H, W = x.shape
    pt, pl = geo.pad_top, geo.pad_left
    WB = 4 * (TW + 1)           # buffer columns: input columns [-pl, WB - pl); tile tw reads 4tw .. 4tw + 5
    lo = min(WB, pl)            # buffer columns [lo, hi) hold input columns [lo - pl, hi - pl)
    hi = max(lo, min(WB, W + pl))
    RT = rows * TW
    tasks = c1 - c0
    xf = x.reshape(x.size)
    for ch in prange(nchunk):
        buf = np.zeros((6, WB), dtype=V.dtype)
        bf = buf.reshape(6 * WB)
        cp = np.empty((6, WB), dtype=V.dtype)
        L = np.empty((36, RT), dtype=V.dtype)
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            c = c0 + it
            for tr in range(rows):
                gr = gr0 + tr
                n = gr // TH
                th = gr - n * TH
                for i in range(6):      # flat unsigned indices: a row view per row cost half the kernel
                    h = 4 * th - pt + i
                    d0 = np.uint64(i * WB)
                    if h >= 0 and h < H:
                        s0 = np.uint64(((n * C + c) * H + h) * W - pl)
                        for col in range(np.uint64(lo), np.uint64(hi)):
                            bf[d0 + col] = xf[s0 + col]
                    else:
                        for col in range(np.uint64(lo), np.uint64(hi)):
                            bf[d0 + col] = 0
                _bt6_rows(buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], cp[0], cp[1], cp[2], cp[3], cp[4], cp[5], WB)
                tb = tr * TW
                for a in range(6):
                    ca = cp[a]
                    for i in range(6):
                        la = L[a * 6 + i]
                        for tw in range(TW):
                            la[tb + tw] = ca[4 * tw + i]
            for a in range(6):
                l0, l1, l2 = L[a * 6], L[a * 6 + 1], L[a * 6 + 2]
                l3, l4, l5 = L[a * 6 + 3], L[a * 6 + 4], L[a * 6 + 5]
                _bt6_rows(l0, l1, l2, l3, l4, l5, V[a * 6, c, col0:col0 + RT], V[a * 6 + 1, c, col0:col0 + RT],
                          V[a * 6 + 2, c, col0:col0 + RT], V[a * 6 + 3, c, col0:col0 + RT],
                          V[a * 6 + 4, c, col0:col0 + RT], V[a * 6 + 5, c, col0:col0 + RT], RT)


@njit(**INLINE)
def _direct_tile(x, w, b, out, n, k, p0, q0, geo, flip):
    """out[n, k] over the 4x4 tile at (p0, q0), inside P x Q, by direct summation in float64 with the taps
    clipped to the input (the definition's rule for padding)."""
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for p in range(p0, min(P, p0 + 4)):
        for q in range(q0, min(Q, q0 + 4)):
            acc = np.float64(b[k])
            for c in range(C):
                for r in range(3):
                    h = p - geo.pad_top + r
                    if h < 0 or h >= H:
                        continue
                    for s in range(3):
                        col = q - geo.pad_left + s
                        if 0 <= col < W:
                            wv = w[c, k, 2 - r, 2 - s] if flip else w[k, c, r, s]
                            acc += np.float64(x[n, c, h, col]) * np.float64(wv)
            out[n, k, p, q] = acc


@njit(**JIT_CONV)
def winograd_output(M, b, out, gr0, rows, TH, TW, x, w, geo, flip, col0, k0, k1, m0, nchunk):
    """out[n, k] = A^T M A + b[k] for the output channels k0 <= k < k1 over the tiles of tile rows
    [gr0, gr0 + rows) (channel k in M's row k - m0, the chunk's first tile at its column col0), only
    outputs inside P x Q; a tile with a non-finite result is summed again directly (see the module
    docstring; ``flip`` as winograd_filter's). One task per output channel, in ``nchunk`` parallel chunks
    that allocate their scratch once; both passes of A^T run over all the task's tiles (row views,
    contiguous: vectorized), then each tile row's outputs are written out."""
    N, K, P, Q = out.shape
    RT = rows * TW
    tasks = k1 - k0
    of = out.reshape(out.size)
    for ch in prange(nchunk):
        S = np.empty((24, RT), dtype=M.dtype)     # S[i*6 + bb, t] = (A^T M[:, bb])[i] of tile t
        Y = np.empty((16, RT), dtype=out.dtype)   # Y[i*4 + j, t]: tile t's output (i, j), bias added
        Yf = Y.reshape(16 * RT)
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            k = k0 + it
            km = k - m0
            bk = b[k]
            for bb in range(6):
                r0, r1 = M[bb, km, col0:col0 + RT], M[6 + bb, km, col0:col0 + RT]
                r2, r3 = M[12 + bb, km, col0:col0 + RT], M[18 + bb, km, col0:col0 + RT]
                r4, r5 = M[24 + bb, km, col0:col0 + RT], M[30 + bb, km, col0:col0 + RT]
                _at6_rows(r0, r1, r2, r3, r4, r5, S[bb], S[6 + bb], S[12 + bb], S[18 + bb], RT, bk, False)
            for i in range(4):
                q0, q1, q2 = S[6 * i], S[6 * i + 1], S[6 * i + 2]
                q3, q4, q5 = S[6 * i + 3], S[6 * i + 4], S[6 * i + 5]
                _at6_rows(q0, q1, q2, q3, q4, q5, Y[4 * i], Y[4 * i + 1], Y[4 * i + 2], Y[4 * i + 3], RT, bk, True)
            for tr in range(rows):
                gr = gr0 + tr
                n = gr // TH
                th = gr - n * TH
                p0 = 4 * th
                tb = tr * TW
                nan_if_any = bk * 0         # x * 0 is NaN exactly where x is Inf or NaN
                for i in range(min(4, P - p0)):     # flat unsigned indices, as winograd_input's copies
                    o0 = np.uint64(((n * K + k) * P + p0 + i) * Q)
                    for j in range(min(4, Q)):
                        y0 = np.uint64((4 * i + j) * RT + tb)
                        for tw in range(np.uint64((Q - j + 3) // 4)):      # the columns 4tw + j < Q
                            v = Yf[y0 + tw]
                            of[o0 + np.uint64(4) * tw + np.uint64(j)] = v
                            nan_if_any += v * 0
                if nan_if_any == 0:
                    continue
                for tw in range(TW):
                    finite = True
                    for i in range(min(4, P - p0)):
                        for j in range(min(4, Q - 4 * tw)):
                            if not math.isfinite(Y[4 * i + j, tb + tw]):
                                finite = False
                    if not finite:
                        _direct_tile(x, w, b, out, n, k, p0, 4 * tw, geo, flip)


tolerate_corrupt_caches(globals())
