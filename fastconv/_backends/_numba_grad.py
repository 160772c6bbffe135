"""Numba gradient kernels of the ``numba`` backend: conv input/weight gradients (the input gradient is also
the transposed convolution), pool gradients and max_unpool (the index of kernels is :mod:`._numba_kernels`).

Layout, C-contiguous, with the *forward* problem's letters (the specs' fields): dy[N, K, P, Q],
w[K, C/G, R, S], dx[N, C, H, W], dw[K, C/G, R, S]; pools dy/indices[N, C, P, Q], dx[N, C, H, W]; ``geo`` is
a :class:`~._numba_common.ConvGeometry` or :class:`~._numba_common.PoolGeometry`, ``win`` an
:class:`~._numba_common.AdaptiveWindows`, read by field name. Every parallel kernel runs ``prange`` over
disjoint outputs and sums each output's terms in one fixed order (no atomics): results are bitwise
reproducible run to run.

- ``conv2d_input_direct``   dx by gathering: one iteration per (n, group, block of CB input channels) owns
                            those dx planes; per input row a (CB, W) accumulator starts at the bias, then
                            each (r, k, s) term reaching the row is an axpy of a dy row into it (taps that
                            would read padding are never formed: exact for every weight).
- ``col2im_add``            a tile (several whole images, or a band of one image's output rows) of one
                            group: dx[n, g*Cg + c, h, w] += col[(c*R + r)*S + s, (p, q)] for every
                            in-bounds tap, (r, s) ascending; taps in the padding are dropped (exact for
                            every weight). Serial, like ``im2col_pack``: it alternates with the BLAS
                            GEMM col = w_g^T @ dy_g run from Python (numba_cpu).
- ``im2col_pack_tile``      ``im2col_pack`` (the forward's packer) for a tile of images, one call.
- ``conv2d_weight_direct``  dw: one iteration per (group, block of KBW output channels, input channel)
                            owns those dw[k, c] filters; per (kk, r, s) a lane accumulator over the output
                            columns collects x*dy over (n, p), then its lanes are summed in order. Taps
                            are clipped to the input (exact for every dy).
- ``pool2d_scatter_backward`` max and adaptive-max pool gradients: per (n, c) plane, dy added at its
                            index in row-major (p, q) order, in float64 (the oracle's order and type);
                            windows wholly in the padding send nothing (the oracle's rule).
- ``pool2d_scatter_backward_disjoint`` the same where windows share no input position: dx zeros, each
                            dy written (+ 0.0) at its index in dx's dtype (one term: the same value).
- ``avg_pool2d_backward``   every divisor rule: per plane, dy / divisor (the forward's) added at every
                            in-bounds tap, taps (r, s) outer as the oracle, in float64.
- ``avg_pool2d_backward_disjoint`` the same where windows share no input position (stride >= kernel; the
                            global pool): each tap's one term 0.0 + dy / divisor written, zeros elsewhere.
- ``adaptive_avg_pool2d_backward`` per plane, window by window (row-major), dy / area over the window.
- ``max_unpool2d``          per plane, zeros then out[indices[p, q]] = x[p, q] in row-major order (the last
                            write of a repeated index wins).
Plane kernels take ``nchunk``: planes go in that many parallel chunks, each allocating its scratch once.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import (INLINE, JIT, JIT_CONV, JIT_SERIAL, col_range, tap_ranges, tolerate_corrupt_caches, uaxpy,
                            ucopy, ufill)
from ._numba_conv import im2col_pack
from ._numba_pool import _divisors

#: input channels per block of conv2d_input_direct: the (CB, W) accumulator of one dx row stays in L1
#: and each dy row loaded is reused CB times.
CB = 16

#: output channels per block of conv2d_weight_direct: its (KBW, R, S, Q) lane accumulator (8*3*3*56
#: floats = 16 KiB for a 56-wide 3x3 layer) stays in L1 and each x row loaded is reused KBW*S times.
KBW = 8


@njit(**INLINE)
def _scatter_axpy(acc, a0, stride, x, x0, wv, n):
    """acc[a0 : a0 + n*stride : stride] += wv * x[x0 : x0 + n]"""
    ua, ux, st = np.uint64(a0), np.uint64(x0), np.uint64(stride)
    for i in range(np.uint64(n)):
        acc[ua + i * st] += wv * x[ux + i]


@njit(**INLINE)
def _scatter_add(acc, a0, stride, x, x0, n):
    """acc[a0 : a0 + n*stride : stride] += x[x0 : x0 + n]"""
    ua, ux, st = np.uint64(a0), np.uint64(x0), np.uint64(stride)
    if stride == 1:
        for i in range(np.uint64(n)):
            acc[ua + i] += x[ux + i]
    else:
        for i in range(np.uint64(n)):
            acc[ua + i * st] += x[ux + i]


@njit(**INLINE)
def _fma_lanes(acc, a0, x, x0, stride, y, y0, n):
    """acc[a0 + i] += x[x0 + i*stride] * y[y0 + i] for i < n (unit stride apart: LLVM vectorises it)"""
    ua, ux, uy, st = np.uint64(a0), np.uint64(x0), np.uint64(y0), np.uint64(stride)
    if stride == 1:
        for i in range(np.uint64(n)):
            acc[ua + i] += x[ux + i] * y[uy + i]
    else:
        for i in range(np.uint64(n)):
            acc[ua + i] += x[ux + i * st] * y[uy + i]


# ---------------------------------------------------------------------------------------------------
# Convolution: input gradient (transposed convolution)
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def conv2d_input_direct(dy, w, b, dx, geo):
    """dx[n, c, h, :] = b[c] + sum over r (with p = (h + pad_top - r*dil_h) / stride_h a whole output row
    in [0, P)), k of the group, s (ascending, in that nesting) of w[k, c, r, s] * dy[n, k, p, q] placed at
    columns q*stride_w - pad_left + s*dil_w inside [0, W)."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl, G = geo.pad_top, geo.pad_left, geo.groups
    N, K, P, Q = dy.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    Kg = K // G
    ncb = (Cg + CB - 1) // CB
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    wf = w.reshape(w.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)    # per tap s: the q whose column lies in [0, W)
    RS = R * S
    for t in prange(N * G * ncb):
        n = t // (G * ncb)
        g = (t // ncb) % G
        cl0 = (t % ncb) * CB                      # first channel of the block within the group
        c0 = g * Cg + cl0
        cn = min(CB, Cg - cl0)
        acc = np.empty(CB * W, dtype=dx.dtype)    # row cc of the block at cc*W
        for h in range(H):
            for cc in range(cn):
                ufill(acc, cc * W, W, b[c0 + cc])
            for r in range(R):
                num = h + pt - r * dh
                if num < 0 or num % sh != 0:
                    continue
                p = num // sh
                if p >= P:
                    continue
                for k in range(g * Kg, g * Kg + Kg):
                    dyrow = ((n * K + k) * P + p) * Q
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        if hi <= lo:
                            continue
                        d0 = lo * sw + s * dw - pl
                        w0 = ((k * Cg + cl0) * R + r) * S + s
                        for cc in range(cn):
                            wv = wf[w0 + cc * RS]
                            if sw == 1:
                                uaxpy(acc, cc * W + d0, dyf, dyrow + lo, wv, hi - lo)
                            else:
                                _scatter_axpy(acc, cc * W + d0, sw, dyf, dyrow + lo, wv, hi - lo)
            for cc in range(cn):
                ucopy(dxf, ((n * C + c0 + cc) * H + h) * W, acc, cc * W, W, 1)


@njit(**JIT_SERIAL)
def col2im_add(col, dx, n0, m, g, p0, p1, geo):
    """For images n0..n0+m-1 side by side in ``col`` (each (p1 - p0)*Q columns: output rows [p0, p1)):
    dx[n, g*Cg + c, h, w] += col[(c*R + r)*S + s, j*(p1 - p0)*Q + (p - p0)*Q + q] for every (r, s)
    (ascending) whose tap h = p*stride_h - pad_top + r*dil_h, w = q*stride_w - pad_left + s*dil_w lies
    inside the H x W plane. A tile is several whole images (p0 = 0, p1 = P) or a band of one image's
    output rows (m = 1), so the column matrix stays in cache between the GEMM and this add."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl = geo.pad_top, geo.pad_left
    R, S, Q = geo.R, geo.S, geo.Q
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    Cg = C // geo.groups
    ld = col.shape[1]
    band = (p1 - p0) * Q
    cf = col.reshape(col.size)
    dxf = dx.reshape(dx.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    for j in range(m):
        d = j * band
        for c in range(Cg):
            dst = ((n0 + j) * C + g * Cg + c) * H * W
            for r in range(R):
                plo, phi = col_range(r * dh - pt, sh, H, geo.P)
                plo, phi = max(plo, p0), min(phi, p1)
                for s in range(S):
                    lo, hi = slo[s], shi[s]
                    if hi > lo:
                        drow = dst + (plo * sh - pt + r * dh) * W + lo * sw + s * dw - pl
                        for p in range(plo, phi):
                            _scatter_add(dxf, drow, sw, cf, d + (p - p0) * Q + lo, hi - lo)
                            drow += sh * W
                    d += ld


@njit(**JIT_SERIAL)
def im2col_pack_tile(x, n0, m, g, geo, col):
    """``im2col_pack`` of images n0..n0+m-1 side by side (image j at column j*P*Q): one call per tile."""
    PQ = geo.P * geo.Q
    for j in range(m):
        im2col_pack(x, n0 + j, g, geo, col, j * PQ)


# ---------------------------------------------------------------------------------------------------
# Convolution: weight gradient
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def conv2d_weight_direct(x, dy, dw, geo):
    """dw[k, c, r, s] = sum over (n, p, q) of x[n, g*Cg + c, tap] * dy[n, k, p, q] for taps inside the
    input: per (k, r, s) the products go to lane q of an accumulator, (n, p) ascending, then the Q lanes are
    summed in order."""
    sh, sw, dh, dwl = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl, G = geo.pad_top, geo.pad_left, geo.groups
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    Cg, R, S = dw.shape[1], dw.shape[2], dw.shape[3]
    Kg = K // G
    nkb = (Kg + KBW - 1) // KBW
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dwf = dw.reshape(dw.size)
    slo, shi = tap_ranges(S, dwl, pl, sw, W, Q)
    RSQ = R * S * Q
    for t in prange(G * nkb * Cg):
        g = t // (nkb * Cg)
        k0 = g * Kg + ((t // Cg) % nkb) * KBW
        c = t % Cg
        kn = min(KBW, g * Kg + Kg - k0)
        acc = np.zeros(KBW * RSQ, dtype=dw.dtype)          # lane q of (kk, r, s) at ((kk*R + r)*S + s)*Q + q
        for n in range(N):
            xc = (n * C + g * Cg + c) * H * W
            for p in range(P):
                rlo, rhi = col_range(p * sh - pt, dh, H, R)
                for r in range(rlo, rhi):
                    xrow = xc + (p * sh - pt + r * dh) * W
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        if hi <= lo:
                            continue
                        x0 = xrow + lo * sw + s * dwl - pl
                        for kk in range(kn):
                            _fma_lanes(acc, (kk * R + r) * S * Q + s * Q + lo, xf, x0, sw, dyf,
                                       ((n * K + k0 + kk) * P + p) * Q + lo, hi - lo)
        for kk in range(kn):
            for j in range(R * S):
                total = acc[kk * RSQ + j * Q]
                for q in range(1, Q):
                    total += acc[kk * RSQ + j * Q + q]
                dwf[((k0 + kk) * Cg + c) * R * S + j] = total


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool: one (n, c) plane at a time, planes in parallel chunks
# ---------------------------------------------------------------------------------------------------
@njit(**JIT)
def pool2d_scatter_backward(dy, idx, dx, live_h, live_w, nchunk):
    """dx[n, c, i] = sum of dy[n, c, p, q] over the (p, q) (row-major) whose index is i, in float64; outputs
    whose window holds no input position (``live_h[p] & live_w[q]`` false: a dilated window wholly in the
    padding) send nothing, and their index is never read."""
    NC = dy.shape[0] * dy.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    HW = dx.shape[2] * dx.shape[3]
    dyf = dy.reshape(dy.size)
    ixf = idx.reshape(idx.size)
    dxf = dx.reshape(dx.size)
    for ch in prange(nchunk):
        acc = np.empty(HW, dtype=np.float64)
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            ufill(acc, 0, HW, 0.0)
            for p in range(P):
                if live_h[p]:
                    b = np.uint64((t * P + p) * Q)
                    for q in range(np.uint64(Q)):
                        if live_w[q]:
                            acc[np.uint64(ixf[b + q])] += dyf[b + q]
            ucopy(dxf, t * HW, acc, 0, HW, 1)


@njit(**JIT)
def avg_pool2d_backward(dy, dx, geo, count_include_pad, divisor_override, nchunk):
    """dx = sum over taps (r, s) (ascending) and windows (p, q) whose tap is inside the input of
    dy[p, q] / divisor(p, q), in float64; the divisor is the forward's (divisor_override when non-zero,
    else the window clipped to the padded input, count_include_pad, or to the input)."""
    sh, sw, ph, pw, dh, dwl = geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left, geo.dil_h, geo.dil_w
    R, S = geo.R, geo.S
    NC = dy.shape[0] * dy.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    H, W = dx.shape[2], dx.shape[3]
    div_h = _divisors(P, sh, ph, geo.pad_bottom, R, H, count_include_pad)
    div_w = _divisors(Q, sw, pw, geo.pad_right, S, W, count_include_pad)
    plo, phi = tap_ranges(R, dh, ph, sh, H, P)     # per tap r: the p whose row lies in [0, H)
    qlo, qhi = tap_ranges(S, dwl, pw, sw, W, Q)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    for ch in prange(nchunk):
        gr = np.empty(P * Q, dtype=np.float64)
        acc = np.empty(H * W, dtype=np.float64)
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            for p in range(P):
                for q in range(Q):
                    d = divisor_override if divisor_override != 0 else div_h[p] * div_w[q]
                    gr[p * Q + q] = np.float64(dyf[(t * P + p) * Q + q]) / d
            acc[:] = 0.0
            for r in range(R):
                for s in range(S):
                    lo, hi = qlo[s], qhi[s]
                    if hi <= lo:
                        continue
                    for p in range(plo[r], phi[r]):
                        a0 = (p * sh - ph + r * dh) * W + lo * sw + s * dwl - pw
                        ua, ug, st = np.uint64(a0), np.uint64(p * Q + lo), np.uint64(sw)
                        for i in range(np.uint64(hi - lo)):
                            acc[ua + i * st] += gr[ug + i]
            for j in range(H * W):
                dxf[t * H * W + j] = acc[j]


@njit(**JIT)
def pool2d_scatter_backward_disjoint(dy, idx, dx, live_h, live_w, nchunk):
    """pool2d_scatter_backward where no two windows share an input position (stride >= the dilated
    window along each axis, or disjoint adaptive windows) and every index lies in its window (as
    ``grad`` checks them): each position receives at most one dy, so dx is zeros with dy + 0.0 written at
    each live output's index, straight in dx's dtype: the oracle's float64 0.0 + dy, rounded (-0.0 becomes
    0.0 as there)."""
    NC = dy.shape[0] * dy.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    HW = dx.shape[2] * dx.shape[3]
    dyf = dy.reshape(dy.size)
    ixf = idx.reshape(idx.size)
    dxf = dx.reshape(dx.size)
    for ch in prange(nchunk):
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            ufill(dxf, t * HW, HW, 0)
            base = np.uint64(t * HW)
            for p in range(P):
                if live_h[p]:
                    b = np.uint64((t * P + p) * Q)
                    for q in range(np.uint64(Q)):
                        if live_w[q]:
                            dxf[base + np.uint64(ixf[b + q])] = np.float64(dyf[b + q]) + 0.0


@njit(**JIT)
def avg_pool2d_backward_disjoint(dy, dx, geo, count_include_pad, divisor_override, nchunk):
    """avg_pool2d_backward where no two windows share an input position (stride >= kernel along each
    axis; the global pool's one window): each in-bounds tap receives one term, 0.0 + dy[p, q] / divisor
    in float64 (the oracle's sum of one term), every other position 0. Per plane: zeros, then per output
    row p the first in-bounds row of its windows is written output by output and copied to the others
    (every row of a window band holds the same values)."""
    sh, sw, ph, pw = geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left
    NC = dy.shape[0] * dy.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    H, W = dx.shape[2], dx.shape[3]
    div_h = _divisors(P, sh, ph, geo.pad_bottom, geo.R, H, count_include_pad)
    div_w = _divisors(Q, sw, pw, geo.pad_right, geo.S, W, count_include_pad)
    rlo, rhi = np.empty(P, dtype=np.int64), np.empty(P, dtype=np.int64)
    for p in range(P):
        rlo[p], rhi[p] = col_range(p * sh - ph, 1, H, geo.R)
    wlo, whi = np.empty(Q, dtype=np.int64), np.empty(Q, dtype=np.int64)
    for q in range(Q):
        wlo[q], whi[q] = col_range(q * sw - pw, 1, W, geo.S)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    # one window holding the whole plane (the global pool): each plane one fill of its one value
    whole = P == 1 and Q == 1 and rhi[0] - rlo[0] == H and whi[0] - wlo[0] == W
    for ch in prange(nchunk):
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            if whole:
                d = divisor_override if divisor_override != 0 else div_h[0] * div_w[0]
                ufill(dxf, t * H * W, H * W, 0.0 + np.float64(dyf[t]) / d)
                continue
            ufill(dxf, t * H * W, H * W, 0)
            for p in range(P):
                if rhi[p] <= rlo[p]:
                    continue
                first = t * H * W + (p * sh - ph + rlo[p]) * W
                for q in range(Q):
                    d = divisor_override if divisor_override != 0 else div_h[p] * div_w[q]
                    v = 0.0 + np.float64(dyf[(t * P + p) * Q + q]) / d
                    ufill(dxf, first + q * sw - pw + wlo[q], max(whi[q] - wlo[q], 0), v)
                for r in range(rlo[p] + 1, rhi[p]):
                    ucopy(dxf, first + (r - rlo[p]) * W, dxf, first, W, 1)


@njit(**JIT)
def adaptive_avg_pool2d_backward(dy, dx, win, nchunk):
    """dx = sum over windows (i, j) (row-major) of dy[i, j] / area(i, j) over the window, in float64."""
    NC = dy.shape[0] * dy.shape[1]
    P, Q = dy.shape[2], dy.shape[3]
    H, W = dx.shape[2], dx.shape[3]
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    for ch in prange(nchunk):
        acc = np.empty(H * W, dtype=np.float64)
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            acc[:] = 0.0
            for i in range(P):
                h0, h1 = win.row_lo[i], win.row_hi[i]
                for j in range(Q):
                    w0, w1 = win.col_lo[j], win.col_hi[j]
                    v = np.float64(dyf[(t * P + i) * Q + j]) / ((h1 - h0) * (w1 - w0))
                    for h in range(h0, h1):
                        for ww in range(w0, w1):
                            acc[h * W + ww] += v
            for j in range(H * W):
                dxf[t * H * W + j] = acc[j]


@njit(**JIT)
def max_unpool2d(x, idx, out):
    """out[n, c] = zeros with out[n, c, idx[n, c, p, q]] = x[n, c, p, q], (p, q) row-major (the last write
    of a repeated index wins)."""
    NC = x.shape[0] * x.shape[1]
    PQ = x.shape[2] * x.shape[3]
    HW = out.shape[2] * out.shape[3]
    xf = x.reshape(x.size)
    ixf = idx.reshape(idx.size)
    of = out.reshape(out.size)
    for t in prange(NC):
        ufill(of, t * HW, HW, 0)
        for i in range(PQ):
            of[t * HW + ixf[t * PQ + i]] = xf[t * PQ + i]


tolerate_corrupt_caches(globals())
