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
- ``winograd_input``   V[a*6+b, c, t] = (B^T d B)[a, b] for the chunk's tiles; parallel over
                       (c, tile row); each iteration copies its 6 input rows into a zeroed row buffer
                       (the padding stays zero), runs B^T down its columns, then along each tile.
- ``winograd_output``  out = A^T M A + b over the chunk's tiles (M[a*6+b, k, t], the GEMMs' result),
                       writing only outputs inside P x Q; parallel over (k, tile row). A tile whose
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
@njit(**INLINE)
def _put6(a, i0, j, t, v):
    """a[i0 + 0..5, j, t] = v (constant tuple indices: no tuple indexed by a variable)"""
    a[i0, j, t] = v[0]
    a[i0 + 1, j, t] = v[1]
    a[i0 + 2, j, t] = v[2]
    a[i0 + 3, j, t] = v[3]
    a[i0 + 4, j, t] = v[4]
    a[i0 + 5, j, t] = v[5]


@njit(**JIT_CONV)
def winograd_filter(w, U):
    """U[a*6+b, k, c] = (G w[k, c] G^T)[a, b], computed in float64 and rounded once; per k the taps are
    first gathered tap-major (wt[r*3+s, c]), so both passes run over c with unit stride."""
    K, C = w.shape[0], w.shape[1]
    for k in prange(K):
        wt = np.empty((9, C))
        t = np.empty((18, C))           # t[a*3+s, c] = (G w[k, c])[a, s]
        for c in range(C):
            for j in range(9):
                wt[j, c] = w[k, c, j // 3, j % 3]
        for s in range(3):
            for c in range(C):
                v = g3(wt[s, c], wt[3 + s, c], wt[6 + s, c])
                t[s, c] = v[0]
                t[3 + s, c] = v[1]
                t[6 + s, c] = v[2]
                t[9 + s, c] = v[3]
                t[12 + s, c] = v[4]
                t[15 + s, c] = v[5]
        for a in range(6):
            for c in range(C):
                _put6(U, a * 6, k, c, g3(t[a * 3, c], t[a * 3 + 1, c], t[a * 3 + 2, c]))


@njit(**JIT_CONV)
def winograd_input(x, gr0, rows, TH, TW, geo, V, nchunk):
    """V[a*6+b, c, t] = (B^T d B)[a, b] for the tiles of tile rows [gr0, gr0 + rows) (see the module
    docstring); tasks are (channel, tile row), in ``nchunk`` parallel chunks that allocate their scratch
    once. Per task: the 6 input rows copied zero-padded into a row buffer (the columns the tile row
    reads), B^T down its columns written split by column phase (column 4q + r at [a*4 + r, q]), then B^T
    along each tile, reading the phases with unit stride."""
    N, C, H, W = x.shape
    pt, pl = geo.pad_top, geo.pad_left
    QP = TW + 1                 # phase columns: tile tw reads phase columns tw (4 values) and tw + 1 (2)
    WB = 4 * QP                 # buffer columns: input columns [-pl, WB - pl)
    lo = min(WB, pl)            # buffer columns [lo, hi) hold input columns [lo - pl, hi - pl)
    hi = max(lo, min(WB, W + pl))
    tasks = C * rows
    for ch in prange(nchunk):
        buf = np.zeros((6, WB), dtype=V.dtype)
        ph = np.empty((24, QP), dtype=V.dtype)
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            c = it // rows
            tr = it - c * rows
            gr = gr0 + tr
            n = gr // TH
            th = gr - n * TH
            for i in range(6):
                h = 4 * th - pt + i
                dst = buf[i]
                if h >= 0 and h < H:
                    src = x[n, c, h]
                    for col in range(lo, hi):
                        dst[col] = src[col - pl]
                else:
                    for col in range(lo, hi):
                        dst[col] = 0
            for q in range(QP):
                for r in range(4):
                    col = 4 * q + r
                    v = bt6(buf[0, col], buf[1, col], buf[2, col], buf[3, col], buf[4, col], buf[5, col])
                    ph[r, q] = v[0]
                    ph[4 + r, q] = v[1]
                    ph[8 + r, q] = v[2]
                    ph[12 + r, q] = v[3]
                    ph[16 + r, q] = v[4]
                    ph[20 + r, q] = v[5]
            base = tr * TW
            for a in range(6):
                p0, p1, p2, p3 = ph[4 * a], ph[4 * a + 1], ph[4 * a + 2], ph[4 * a + 3]
                for tw in range(TW):
                    _put6(V, a * 6, c, base + tw, bt6(p0[tw], p1[tw], p2[tw], p3[tw], p0[tw + 1], p1[tw + 1]))


@njit(**INLINE)
def _direct_tile(x, w, b, out, n, k, p0, q0, geo):
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
                            acc += np.float64(x[n, c, h, col]) * np.float64(w[k, c, r, s])
            out[n, k, p, q] = acc


@njit(**JIT_CONV)
def winograd_output(M, b, out, gr0, rows, TH, TW, x, w, geo, nchunk):
    """out[n, k] = A^T M A + b[k] over the tiles of tile rows [gr0, gr0 + rows), only outputs inside
    P x Q; a tile with a non-finite result is summed again directly (see the module docstring). Tasks
    are (output channel, tile row), in ``nchunk`` parallel chunks that allocate their scratch once."""
    N, K, P, Q = out.shape
    tasks = K * rows
    for ch in prange(nchunk):
        tmp = np.empty((24, TW), dtype=M.dtype)     # tmp[i*6 + bb, tw] = (A^T M[:, bb])[i]
        row = np.empty((4, 4 * TW), dtype=out.dtype)
        for it in range(ch * tasks // nchunk, (ch + 1) * tasks // nchunk):
            k = it // rows
            tr = it - k * rows
            gr = gr0 + tr
            n = gr // TH
            th = gr - n * TH
            base = tr * TW
            for bb in range(6):
                m0, m1, m2 = M[bb, k, base:base + TW], M[6 + bb, k, base:base + TW], M[12 + bb, k, base:base + TW]
                m3, m4, m5 = M[18 + bb, k, base:base + TW], M[24 + bb, k, base:base + TW], M[30 + bb, k, base:base + TW]
                for tw in range(TW):
                    y = at6(m0[tw], m1[tw], m2[tw], m3[tw], m4[tw], m5[tw])
                    tmp[bb, tw] = y[0]
                    tmp[6 + bb, tw] = y[1]
                    tmp[12 + bb, tw] = y[2]
                    tmp[18 + bb, tw] = y[3]
            bk = b[k]
            for i in range(4):
                t0, t1, t2 = tmp[6 * i], tmp[6 * i + 1], tmp[6 * i + 2]
                t3, t4, t5 = tmp[6 * i + 3], tmp[6 * i + 4], tmp[6 * i + 5]
                ri = row[i]
                for tw in range(TW):
                    y = at6(t0[tw], t1[tw], t2[tw], t3[tw], t4[tw], t5[tw])
                    ri[4 * tw] = y[0] + bk
                    ri[4 * tw + 1] = y[1] + bk
                    ri[4 * tw + 2] = y[2] + bk
                    ri[4 * tw + 3] = y[3] + bk
            p0 = 4 * th
            nan_if_any = bk * 0         # x * 0 is NaN exactly where x is Inf or NaN
            for i in range(min(4, P - p0)):
                ri = row[i]
                oi = out[n, k, p0 + i]
                for q in range(Q):
                    oi[q] = ri[q]
                    nan_if_any += ri[q] * 0
            if nan_if_any == 0:
                continue
            for tw in range(TW):
                finite = True
                for i in range(min(4, P - p0)):
                    for j in range(min(4, Q - 4 * tw)):
                        if not math.isfinite(row[i, 4 * tw + j]):
                            finite = False
                if not finite:
                    _direct_tile(x, w, b, out, n, k, p0, 4 * tw, geo)


tolerate_corrupt_caches(globals())
