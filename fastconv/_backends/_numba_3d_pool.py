"""Numba 3-D pool kernels of the ``numba`` backend, forward and backward (the index of kernels is
:mod:`._numba_kernels`).

Layout: C-contiguous x/dx[N, C, D, H, W], out/dy/idx[N, C, Z, P, Q] (idx int64, a (1, 1, 1, 1, 1) dummy
when indices are not wanted); ``geo`` is a :class:`~._numba_common.Pool3dGeometry`, ``win`` an
:class:`~._numba_common.AdaptiveWindows3d`, both read by field name. The rules are the 2-D kernels' (see
numpy_oracle's docstring) with one more dimension: windows scan (t, r, s) row-major, flat indices are
``d*H*W + h*W + w``, the avg divisor is the product of the three axes' factors (per-side pads: the window
starts at ``z*stride_d - pad_front`` and, with count_include_pad, is clipped at ``D + pad_back``).

- ``max_pool3d``      one iteration per (n, c, output slice z); per output row, per in-bounds tap, a run over
                      the row's outputs (``_numba_pool._max_run``: take if greater or NaN)
- ``avg_pool3d``      the same traversal, float64 sums in the oracle's (t, r, s) tap order
- ``adaptive_pool3d`` both adaptive pools, one iteration per (n, c, output slice), per window; the mean sums
                      the window's contiguous runs in LANES float64 lanes (``_run_sum``, a fixed order)
- ``avg_pool3d_backward``  per (n, c) plane: dy / divisor added at every in-bounds tap, taps (t, r, s) outer
                      (the oracle's order), float64
- ``adaptive_avg_pool3d_backward`` per plane, window by window (row-major), dy / volume over the window
The max pool gradient and max_unpool of 3-D problems run the 2-D kernels (``pool2d_scatter_backward``,
``max_unpool2d``) on views that flatten (Z, P) and (D, H): those kernels work on whole flat planes, in
row-major order. Plane kernels take ``nchunk``: planes go in that many parallel chunks, each allocating its
scratch once.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT, tap_ranges, tolerate_corrupt_caches
from ._numba_pool import _divisors, _max_run, _window_ranges


@njit(**JIT)
def max_pool3d(x, out, idx, want_idx, geo):
    """Scan each window (t, r, s) row-major; take a tap if greater than the best so far or NaN; start from
    -inf with the first in-bounds tap's index; padding taps are skipped (never selected)."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dw = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl = geo.pad_front, geo.pad_top, geo.pad_left
    S = geo.S
    N, C, D, H, W = x.shape
    Z, P, Q = out.shape[2], out.shape[3], out.shape[4]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ixf = idx.reshape(idx.size)
    tlo, thi, dfirst = _window_ranges(Z, sd, pf, geo.T, dd, D)
    rlo, rhi, hfirst = _window_ranges(P, sh, pt, geo.R, dh, H)
    _wlo, _whi, wfirst = _window_ranges(Q, sw, pl, S, dw, W)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    HW = H * W
    for task in prange(N * C * Z):
        z = task % Z
        plane = task // Z
        base = plane * D * HW
        best = np.empty(Q, dtype=out.dtype)
        bidx = np.empty(Q, dtype=np.int64)
        for p in range(P):
            ob = ((plane * Z + z) * P + p) * Q
            for q in range(Q):
                best[q] = -np.inf
                bidx[q] = dfirst[z] * HW + hfirst[p] * W + wfirst[q]
            for t in range(tlo[z], thi[z]):
                ds = (z * sd - pf + t * dd) * HW
                for r in range(rlo[p], rhi[p]):
                    row = ds + (p * sh - pt + r * dh) * W
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        if hi > lo:
                            i0 = row + lo * sw + s * dw - pl
                            _max_run(xf, base + i0, sw, best, bidx, lo, hi - lo, i0, want_idx)
            for q in range(Q):
                of[ob + q] = best[q]
            if want_idx:
                for q in range(Q):
                    ixf[ob + q] = bidx[q]


@njit(**JIT)
def avg_pool3d(x, out, geo, count_include_pad, divisor_override):
    """Sum of in-bounds taps (float64, (t, r, s) order per window) / divisor: divisor_override when non-zero,
    else the window clipped to the padded input (count_include_pad) or to the input, per axis."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    pf, pt, pl = geo.pad_front, geo.pad_top, geo.pad_left
    T, R, S = geo.T, geo.R, geo.S
    N, C, D, H, W = x.shape
    Z, P, Q = out.shape[2], out.shape[3], out.shape[4]
    div_d = _divisors(Z, sd, pf, geo.pad_back, T, D, count_include_pad)
    div_h = _divisors(P, sh, pt, geo.pad_bottom, R, H, count_include_pad)
    div_w = _divisors(Q, sw, pl, geo.pad_right, S, W, count_include_pad)
    tlo, thi, _df = _window_ranges(Z, sd, pf, T, 1, D)
    rlo, rhi, _hf = _window_ranges(P, sh, pt, R, 1, H)
    slo, shi = tap_ranges(S, 1, pl, sw, W, Q)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    HW = H * W
    for task in prange(N * C * Z):
        z = task % Z
        plane = task // Z
        base = plane * D * HW
        acc = np.empty(Q, dtype=np.float64)
        for p in range(P):
            ob = ((plane * Z + z) * P + p) * Q
            acc[:] = 0.0
            for t in range(tlo[z], thi[z]):
                ds = base + (z * sd - pf + t) * HW
                for r in range(rlo[p], rhi[p]):
                    row = ds + (p * sh - pt + r) * W
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        ux, us, uq = np.uint64(row + lo * sw + s - pl), np.uint64(sw), np.uint64(lo)
                        for i in range(np.uint64(max(hi - lo, 0))):
                            acc[uq + i] += xf[ux + i * us]
            if divisor_override != 0:
                for q in range(Q):
                    of[ob + q] = acc[q] / divisor_override
            else:
                dzp = div_d[z] * div_h[p]
                for q in range(Q):
                    of[ob + q] = acc[q] / (dzp * div_w[q])


#: float64 lanes of _run_sum: independent add chains (vectorised), so a long window is not one add
#: latency per element
LANES = 8


@njit(**INLINE)
def _run_sum(xf, start, n, lanes):
    """sum of xf[start : start + n] in float64: element i goes to lane i % LANES for the whole multiples
    of LANES, the lanes are then added in order, then the tail in order (a fixed order: deterministic)."""
    m = n - n % LANES
    us = np.uint64(start)
    for j in range(LANES):
        lanes[j] = 0.0
    for i in range(np.uint64(0), np.uint64(m), np.uint64(LANES)):
        for j in range(np.uint64(LANES)):
            lanes[j] += xf[us + i + j]
    total = 0.0
    for j in range(LANES):
        total += lanes[j]
    for i in range(np.uint64(m), np.uint64(n)):
        total += xf[us + i]
    return total


@njit(**JIT)
def adaptive_pool3d(x, out, idx, want_idx, is_max, win):
    """Both adaptive pools: per window the max scan rule (``is_max``; index d*H*W + h*W + w when
    ``want_idx``) over (d, h, w) row-major, or the float64 mean summed in that order."""
    N, C, D, H, W = x.shape
    Z, P, Q = out.shape[2], out.shape[3], out.shape[4]
    HW = H * W
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ixf = idx.reshape(idx.size)
    neg_inf = out.dtype.type(-np.inf)
    for task in prange(N * C * Z):
        i = task % Z
        plane = task // Z
        base = plane * D * HW
        lanes = np.empty(LANES, dtype=np.float64)
        d0, d1 = win.dep_lo[i], win.dep_hi[i]
        for j in range(P):
            h0, h1 = win.row_lo[j], win.row_hi[j]
            for k in range(Q):
                w0, w1 = win.col_lo[k], win.col_hi[k]
                o = ((plane * Z + i) * P + j) * Q + k
                if is_max:
                    best = neg_inf
                    bi = d0 * HW + h0 * W + w0
                    for d in range(d0, d1):
                        for h in range(h0, h1):
                            e = d * HW + h * W
                            for ww in range(w0, w1):
                                v = xf[base + e + ww]
                                if v > best or v != v:
                                    best = v
                                    bi = e + ww
                    of[o] = best
                    if want_idx:
                        ixf[o] = bi
                else:
                    # the window as contiguous runs: whole (h, w) planes when it spans H and W, whole rows
                    # when it spans W, else row pieces; each run summed in LANES lanes (fixed order)
                    if w1 - w0 == W and h1 - h0 == H:
                        acc = _run_sum(xf, base + d0 * HW, (d1 - d0) * HW, lanes)
                    elif w1 - w0 == W:
                        acc = 0.0
                        for d in range(d0, d1):
                            acc += _run_sum(xf, base + d * HW + h0 * W, (h1 - h0) * W, lanes)
                    else:
                        acc = 0.0
                        for d in range(d0, d1):
                            for h in range(h0, h1):
                                acc += _run_sum(xf, base + d * HW + h * W + w0, w1 - w0, lanes)
                    of[o] = acc / ((d1 - d0) * (h1 - h0) * (w1 - w0))


# ---------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------
@njit(**JIT)
def avg_pool3d_backward(dy, dx, geo, count_include_pad, divisor_override, nchunk):
    """dx = sum over taps (t, r, s) (ascending) and windows (z, p, q) whose tap is inside the input of
    dy[z, p, q] / divisor(z, p, q), in float64; the divisor is the forward's."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    pf, pt, pl = geo.pad_front, geo.pad_top, geo.pad_left
    T, R, S = geo.T, geo.R, geo.S
    NC = dy.shape[0] * dy.shape[1]
    Z, P, Q = dy.shape[2], dy.shape[3], dy.shape[4]
    D, H, W = dx.shape[2], dx.shape[3], dx.shape[4]
    div_d = _divisors(Z, sd, pf, geo.pad_back, T, D, count_include_pad)
    div_h = _divisors(P, sh, pt, geo.pad_bottom, R, H, count_include_pad)
    div_w = _divisors(Q, sw, pl, geo.pad_right, S, W, count_include_pad)
    zlo, zhi = tap_ranges(T, 1, pf, sd, D, Z)     # per tap t: the z whose depth lies in [0, D)
    plo, phi = tap_ranges(R, 1, pt, sh, H, P)
    qlo, qhi = tap_ranges(S, 1, pl, sw, W, Q)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    ZPQ, DHW = Z * P * Q, D * H * W
    for ch in prange(nchunk):
        gr = np.empty(ZPQ, dtype=np.float64)
        acc = np.empty(DHW, dtype=np.float64)
        for pl_ in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            for z in range(Z):
                for p in range(P):
                    for q in range(Q):
                        d = divisor_override if divisor_override != 0 else div_d[z] * div_h[p] * div_w[q]
                        o = (z * P + p) * Q + q
                        gr[o] = np.float64(dyf[pl_ * ZPQ + o]) / d
            acc[:] = 0.0
            for t in range(T):
                for r in range(R):
                    for s in range(S):
                        lo, hi = qlo[s], qhi[s]
                        if hi <= lo:
                            continue
                        for z in range(zlo[t], zhi[t]):
                            for p in range(plo[r], phi[r]):
                                a0 = ((z * sd - pf + t) * H + p * sh - pt + r) * W + lo * sw + s - pl
                                ua, ug, st = np.uint64(a0), np.uint64((z * P + p) * Q + lo), np.uint64(sw)
                                for i in range(np.uint64(hi - lo)):
                                    acc[ua + i * st] += gr[ug + i]
            for j in range(DHW):
                dxf[pl_ * DHW + j] = acc[j]


@njit(**JIT)
def adaptive_avg_pool3d_backward(dy, dx, win, nchunk):
    """dx = sum over windows (i, j, k) (row-major) of dy[i, j, k] / volume(i, j, k) over the window, float64."""
    NC = dy.shape[0] * dy.shape[1]
    Z, P, Q = dy.shape[2], dy.shape[3], dy.shape[4]
    D, H, W = dx.shape[2], dx.shape[3], dx.shape[4]
    ZPQ, DHW, HW = Z * P * Q, D * H * W, H * W
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    for ch in prange(nchunk):
        acc = np.empty(DHW, dtype=np.float64)
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            acc[:] = 0.0
            for i in range(Z):
                d0, d1 = win.dep_lo[i], win.dep_hi[i]
                for j in range(P):
                    h0, h1 = win.row_lo[j], win.row_hi[j]
                    for k in range(Q):
                        w0, w1 = win.col_lo[k], win.col_hi[k]
                        v = np.float64(dyf[t * ZPQ + (i * P + j) * Q + k]) / ((d1 - d0) * (h1 - h0) * (w1 - w0))
                        for d in range(d0, d1):
                            for h in range(h0, h1):
                                e = d * HW + h * W
                                for ww in range(w0, w1):
                                    acc[e + ww] += v
            for j in range(DHW):
                dxf[t * DHW + j] = acc[j]


tolerate_corrupt_caches(globals())
