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
                       (c, tile row); each iteration copies its 6 input rows, split by column phase
                       (column 4q + r at [r, q]), into a zeroed buffer, so both passes run over tiles
                       with unit stride.
- ``winograd_output``  out = A^T M A + b over the chunk's tiles (M[a*6+b, k, t], the GEMMs' result),
                       writing only outputs inside P x Q; parallel over (k, tile row). A tile whose
                       result holds Inf or NaN is computed again by direct summation (taps clipped to
                       the input, float64): the transforms spread one input's (or weight's) Inf over
                       the whole tile, and can overflow where the conv does not, so this keeps the
                       definition's non-finite pattern exactly (a padded tap never meets the weight).

The elementwise stage between input and output transforms is M[j] = U[j] @ V[j] for j < 36 (36 GEMMs
(K x C) @ (C x T)), run by NumPy's matmul from ``numba_cpu``.

The matrices (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016, section 4.3:
F(4, 3) from the interpolation points 0, 1, -1, 2, -2 and infinity; the same as NNPACK's and oneDNN's):

    B^T = [[4,  0, -5,  0, 1, 0],       G = [[ 1/4,     0,    0],     A^T = [[1, 1,  1, 1,  1, 0],
           [0, -4, -4,  1, 1, 0],            [-1/6,  -1/6, -1/6],            [0, 1, -1, 2, -2, 0],
           [0,  4, -4, -1, 1, 0],            [-1/6,   1/6, -1/6],            [0, 1,  1, 4,  4, 0],
           [0, -2, -1,  2, 1, 0],            [1/24,  1/12,  1/6],            [0, 1, -1, 8, -8, 1]]
           [0,  2, -1, -2, 1, 0],            [1/24, -1/12,  1/6],
           [0,  4,  0, -5, 0, 1]]            [   0,     0,    1]]

1-D: y = A^T [(G g) * (B^T d)] is the correlation y[i] = sum_r g[r] d[i + r], i < 4, of 6 inputs with 3
taps (checked against that loop in float64 by tests/test_numba_winograd.py); 2-D nests it on both axes.
The kernels below apply them factored (shared sums, small integer multiples by additions, which are
exact), with the rounding counts per pass that ``fastconv.testing.winograd_tolerance`` derives its bound
from: B^T 2, A^T 3, G (in float64) 4 per pass.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT_CONV, tolerate_corrupt_caches

#: the transform matrices as float64 NumPy arrays (the kernels apply them factored; tests check both)
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)

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
@njit(**JIT_CONV)
def winograd_filter(w, U):
    """U[a*6+b, k, c] = (G w[k, c] G^T)[a, b], computed in float64 and rounded once."""
    K, C = w.shape[0], w.shape[1]
    for k in prange(K):
        for c in range(C):
            t = np.empty((6, 3))
            for s in range(3):
                v = g3(np.float64(w[k, c, 0, s]), np.float64(w[k, c, 1, s]), np.float64(w[k, c, 2, s]))
                for a in range(6):
                    t[a, s] = v[a]
            for a in range(6):
                v = g3(t[a, 0], t[a, 1], t[a, 2])
                for b in range(6):
                    U[a * 6 + b, k, c] = v[b]


@njit(**JIT_CONV)
def winograd_input(x, gr0, rows, TH, TW, geo, V):
    """V[a*6+b, c, t] = (B^T d B)[a, b] for the tiles of tile rows [gr0, gr0 + rows) (see the module
    docstring), one iteration per (channel, tile row)."""
    N, C, H, W = x.shape
    pt, pl = geo.pad_top, geo.pad_left
    QP = TW + 1                 # phase columns: tile tw reads phase columns tw (4 values) and tw + 1 (2)
    for it in prange(C * rows):
        c = it // rows
        tr = it - c * rows
        gr = gr0 + tr
        n = gr // TH
        th = gr - n * TH
        buf = np.zeros((6, 4, QP), dtype=V.dtype)     # buf[i, r, q] = x[n, c, 4th - pt + i, 4q + r - pl]
        for i in range(6):
            h = 4 * th - pt + i
            if h < 0 or h >= H:
                continue
            for r in range(4):
                q_lo = max(0, (pl - r + 3) // 4)       # first q with 4q + r - pl >= 0
                q_hi = min(QP, (W - 1 + pl - r) // 4 + 1) if W - 1 + pl - r >= 0 else 0
                for q in range(q_lo, q_hi):
                    buf[i, r, q] = x[n, c, h, 4 * q + r - pl]
        tmp = np.empty((6, 4, QP), dtype=V.dtype)     # tmp[a, r, q] = (B^T buf[:, r, q])[a]
        for r in range(4):
            for q in range(QP):
                v = bt6(buf[0, r, q], buf[1, r, q], buf[2, r, q], buf[3, r, q], buf[4, r, q], buf[5, r, q])
                for a in range(6):
                    tmp[a, r, q] = v[a]
        base = tr * TW
        for a in range(6):
            for tw in range(TW):
                v = bt6(tmp[a, 0, tw], tmp[a, 1, tw], tmp[a, 2, tw], tmp[a, 3, tw], tmp[a, 0, tw + 1],
                        tmp[a, 1, tw + 1])
                for b in range(6):
                    V[a * 6 + b, c, base + tw] = v[b]


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
def winograd_output(M, b, out, gr0, rows, TH, TW, x, w, geo):
    """out[n, k] = A^T M A + b[k] over the tiles of tile rows [gr0, gr0 + rows), only outputs inside
    P x Q; a tile with a non-finite result is summed again directly (see the module docstring). One
    iteration per (output channel, tile row)."""
    N, K, P, Q = out.shape
    for it in prange(K * rows):
        k = it // rows
        tr = it - k * rows
        gr = gr0 + tr
        n = gr // TH
        th = gr - n * TH
        base = tr * TW
        tmp = np.empty((4, 6, TW), dtype=M.dtype)     # tmp[i, bb, tw] = (A^T M[:, bb])[i]
        for bb in range(6):
            for tw in range(TW):
                t = base + tw
                y = at6(M[bb, k, t], M[6 + bb, k, t], M[12 + bb, k, t], M[18 + bb, k, t], M[24 + bb, k, t],
                        M[30 + bb, k, t])
                for i in range(4):
                    tmp[i, bb, tw] = y[i]
        row = np.empty((4, 4 * TW), dtype=out.dtype)
        bk = b[k]
        for i in range(4):
            for tw in range(TW):
                y = at6(tmp[i, 0, tw], tmp[i, 1, tw], tmp[i, 2, tw], tmp[i, 3, tw], tmp[i, 4, tw], tmp[i, 5, tw])
                for j in range(4):
                    row[i, 4 * tw + j] = y[j] + bk
        p0 = 4 * th
        for i in range(min(4, P - p0)):
            for q in range(Q):
                out[n, k, p0 + i, q] = row[i, q]
        for tw in range(TW):
            finite = True
            for i in range(min(4, P - p0)):
                for j in range(min(4, Q - 4 * tw)):
                    if not math.isfinite(row[i, 4 * tw + j]):
                        finite = False
            if not finite:
                _direct_tile(x, w, b, out, n, k, p0, 4 * tw, geo)


tolerate_corrupt_caches(globals())
