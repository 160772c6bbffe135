"""Numba pool kernels of the ``numba`` backend (the index of kernels is :mod:`._numba_kernels`).

Layout: C-contiguous x[N, C, H, W], out[N, C, P, Q], idx[N, C, P, Q] int64 (a (1, 1, 1, 1) dummy when
indices are not wanted); ``geo`` is a :class:`~._numba_common.PoolGeometry`, ``win`` an
:class:`~._numba_common.AdaptiveWindows`, both read by field name. Every kernel runs one iteration per
(n, c) plane and follows the oracle's rules exactly (see numpy_oracle's docstring); avg pools sum in
float64 in the oracle's tap order.

- ``max_pool2d``          per tap over a row of outputs (Q >= S), else per window (global pooling)
- ``avg_pool2d``          the same split; the per-window case is ``_avg_pool_per_window`` (PLANES planes
                          side by side)
- ``adaptive_pool2d``     both adaptive pools (max with its NaN/index rule, or the float64 mean), per
                          window, the windows from the spec
- ``global_avg_pool2d``   avg_pool2d with a 1x1 output (the global average pool; adaptive_avg_pool2d to
                          1x1 is the one of a whole-plane kernel): per plane one float64 sum in the
                          oracle's order, GLOBAL_PLANES planes side by side, in ``nchunk`` chunks
- ``max_pool2x2``, ``avg_pool2x2``  kernel 2, stride 2, no padding, every window whole: per output the
                          general kernels' scan and sum written out, in ``nchunk`` chunks of output rows
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT, JIT_SERIAL, col_range, serial_twin, tap_ranges, tolerate_corrupt_caches


@njit(**INLINE)
def _first_inbounds(start, dil):
    """First tap position >= 0 of a window starting at ``start`` (taps ``dil`` apart)."""
    if start >= 0:
        return start
    return start + (-start + dil - 1) // dil * dil


@njit(**INLINE)
def _window_ranges(out_len, stride, pad, k, dil, size):
    """Per output position: the in-bounds taps [lo, hi) of its window and its first in-bounds position."""
    lo = np.empty(out_len, dtype=np.int64)
    hi = np.empty(out_len, dtype=np.int64)
    first = np.empty(out_len, dtype=np.int64)
    for o in range(out_len):
        start = o * stride - pad
        lo[o], hi[o] = col_range(start, dil, size, k)
        first[o] = _first_inbounds(start, dil)
    return lo, hi, first


# ---------------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------------
@njit(**INLINE)
def _max_run(xf, x0, sw, best, bidx, q0, n, i0, want_idx):
    """best[q0 + i] vs xf[x0 + i*sw] for i < n under the scan rule (take if greater or NaN); the taken
    tap's plane index is i0 + i*sw."""
    ux, us, uq = np.uint64(x0), np.uint64(sw), np.uint64(q0)
    if want_idx:
        for i in range(np.uint64(n)):
            v = xf[ux + i * us]
            if (v > best[uq + i]) | (v != v):
                best[uq + i] = v
                bidx[uq + i] = i0 + np.int64(i) * sw
    else:
        for i in range(np.uint64(n)):
            v = xf[ux + i * us]
            bv = best[uq + i]
            best[uq + i] = v if (v > bv) | (v != v) else bv


@njit(**JIT)
def max_pool2d(x, out, idx, want_idx, geo):
    """Scan each window row-major; take a tap if it is greater than the best so far or NaN; start from
    -inf with the first in-bounds tap's index; padding taps are skipped (never selected).

    Inner loop over the longer of the output row (Q) and the window row (S): per tap over a row of
    outputs when Q >= S, else per output over its window (global pooling)."""
    sh, sw, ph, pw, dh, dw = geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left, geo.dil_h, geo.dil_w
    S = geo.S
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ixf = idx.reshape(idx.size)
    rlo, rhi, hfirst = _window_ranges(P, sh, ph, geo.R, dh, H)
    wlo, whi, wfirst = _window_ranges(Q, sw, pw, S, dw, W)
    slo, shi = tap_ranges(S, dw, pw, sw, W, Q)
    per_tap = Q >= S
    for t in prange(N * C):
        base = t * H * W
        best = np.empty(Q, dtype=out.dtype)
        bidx = np.empty(Q, dtype=np.int64)
        for p in range(P):
            hs = p * sh - ph
            ob = (t * P + p) * Q
            if per_tap:
                for q in range(Q):
                    best[q] = -np.inf
                    bidx[q] = hfirst[p] * W + wfirst[q]
                for r in range(rlo[p], rhi[p]):
                    h = hs + r * dh
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        if hi > lo:
                            i0 = h * W + lo * sw + s * dw - pw
                            _max_run(xf, base + i0, sw, best, bidx, lo, hi - lo, i0, want_idx)
                for q in range(Q):
                    of[ob + q] = best[q]
                if want_idx:
                    for q in range(Q):
                        ixf[ob + q] = bidx[q]
            else:
                for q in range(Q):
                    ws = q * sw - pw
                    bv = out.dtype.type(-np.inf)
                    bi = hfirst[p] * W + wfirst[q]
                    for r in range(rlo[p], rhi[p]):
                        row = (hs + r * dh) * W + ws
                        for s in range(wlo[q], whi[q]):
                            v = xf[base + row + s * dw]
                            if (v > bv) | (v != v):
                                bv = v
                                bi = row + s * dw
                    of[ob + q] = bv
                    if want_idx:
                        ixf[ob + q] = bi


# ---------------------------------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------------------------------
@njit(**INLINE)
def _divisors(out_len, stride, pad_lo, pad_hi, k, size, count_include_pad):
    """Per output position along one axis: its factor of the window's divisor (the divisor of window
    (p, q) is div_h[p] * div_w[q]), the window clipped to the padded input [-pad_lo, size + pad_hi)
    (count_include_pad; ceil_mode's overhang past the after-padding is not counted) or to the input."""
    div = np.empty(out_len, dtype=np.float64)
    for o in range(out_len):
        start = o * stride - pad_lo
        end = min(start + k, size + pad_hi)
        div[o] = (end - start) if count_include_pad else (min(end, size) - max(start, 0))
    return div


@njit(**JIT)
def avg_pool2d(x, out, geo, count_include_pad, divisor_override):
    """Sum of in-bounds taps (float64, the oracle's (r, s) order per window) / divisor: divisor_override
    when non-zero, else the window clipped to the padded input (count_include_pad) or to the input.
    Inner loop per tap over a row of outputs when Q >= S, else per window (_avg_pool_per_window)."""
    sh, sw, ph, pw, S = geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left, geo.S
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    div_h = _divisors(P, sh, ph, geo.pad_bottom, geo.R, H, count_include_pad)
    div_w = _divisors(Q, sw, pw, geo.pad_right, S, W, count_include_pad)
    rlo, rhi, _hf = _window_ranges(P, sh, ph, geo.R, 1, H)
    wlo, whi, _wf = _window_ranges(Q, sw, pw, S, 1, W)
    if Q < S:
        _avg_pool_per_window(x, out, geo, rlo, rhi, wlo, whi, div_h, div_w, divisor_override)
        return
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    slo, shi = tap_ranges(S, 1, pw, sw, W, Q)
    for t in prange(N * C):
        base = t * H * W
        acc = np.empty(Q, dtype=np.float64)
        for p in range(P):
            hs = p * sh - ph
            ob = (t * P + p) * Q
            acc[:] = 0.0
            for r in range(rlo[p], rhi[p]):
                row = base + (hs + r) * W
                for s in range(S):
                    lo, hi = slo[s], shi[s]
                    ux, us, uq = np.uint64(row + lo * sw + s - pw), np.uint64(sw), np.uint64(lo)
                    for i in range(np.uint64(max(hi - lo, 0))):
                        acc[uq + i] += xf[ux + i * us]
            if divisor_override != 0:
                for q in range(Q):
                    of[ob + q] = acc[q] / divisor_override
            else:
                for q in range(Q):
                    of[ob + q] = acc[q] / (div_h[p] * div_w[q])


#: planes summed side by side by _avg_pool_per_window: independent float64 add chains (one per plane)
#: hide the add latency that one chain per window would expose.
PLANES = 8


@njit(**JIT)
def _avg_pool_per_window(x, out, geo, rlo, rhi, wlo, whi, div_h, div_w, divisor_override):
    """avg_pool2d when windows are wider than the output row (Q < S): per window, PLANES planes at once;
    rlo/rhi, wlo/whi: each output row's/column's in-bounds taps, div_h/div_w: its divisor factors."""
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    NC = N * C
    nblk = (NC + PLANES - 1) // PLANES
    for blk in prange(nblk):
        t0 = blk * PLANES
        nt = min(PLANES, NC - t0)
        acc = np.empty(PLANES, dtype=np.float64)
        for p in range(P):
            for q in range(Q):
                acc[:] = 0.0
                for r in range(rlo[p], rhi[p]):
                    row = t0 * H * W + (p * geo.stride_h - geo.pad_top + r) * W + q * geo.stride_w - geo.pad_left
                    for s in range(wlo[q], whi[q]):
                        for j in range(nt):
                            acc[j] += xf[row + j * H * W + s]
                d = divisor_override if divisor_override != 0 else div_h[p] * div_w[q]
                for j in range(nt):
                    of[((t0 + j) * P + p) * Q + q] = acc[j] / d


@njit(**JIT_SERIAL)
def global_avg_pool2d(x, out, geo, count_include_pad, divisor_override, c0, c1, nchunk):
    """avg_pool2d of a 1x1 output (the global average pool): per plane the float64 sum of the window's
    in-bounds taps x[t, h0:h1, w0:w1], row-major from 0.0 (the oracle's (r, s) order), / the divisor
    (avg_pool2d's rule). GLOBAL_PLANES planes are summed side by side (independent add chains in
    registers hide the add latency one chain per plane would expose), over float64 copies of the block's
    runs made GLOBAL_SEGMENT values at a time (vectorised conversions, one for the whole block where the
    window is the plane, where converting each value inside the chains cost a quarter of the time). The
    blocks are cut into ``nchunk`` chunks, of which this (serial) call runs [c0, c1) (``numba_cpu`` hands
    chunks to its workers); the last chunk also sums the planes after the last full block."""
    NC = x.shape[0] * x.shape[1]
    H, W = x.shape[2], x.shape[3]
    HW = H * W
    div_h = _divisors(1, geo.stride_h, geo.pad_top, geo.pad_bottom, geo.R, H, count_include_pad)[0]
    div_w = _divisors(1, geo.stride_w, geo.pad_left, geo.pad_right, geo.S, W, count_include_pad)[0]
    d = np.float64(divisor_override) if divisor_override != 0 else div_h * div_w
    rlo, rhi, _hf = _window_ranges(1, geo.stride_h, geo.pad_top, geo.R, 1, H)
    wlo, whi, _wf = _window_ranges(1, geo.stride_w, geo.pad_left, geo.S, 1, W)
    h0, h1 = rlo[0] - geo.pad_top, rhi[0] - geo.pad_top
    w0, n = wlo[0] - geo.pad_left, max(whi[0] - wlo[0], 0)
    if n == W and h1 > h0:         # whole rows: one contiguous run, the same row-major order
        h1, n = h0 + 1, (h1 - h0) * W
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    nfull = NC // GLOBAL_PLANES
    seg = GLOBAL_SEGMENT
    whole = n == HW and HW <= seg     # the window is the plane: a block's planes are one run, converted at once
    tmp = np.empty(GLOBAL_PLANES * seg, dtype=np.float64)
    uhw = np.uint64(HW)
    ps = uhw if whole else np.uint64(seg)          # plane stride in tmp
    for ch in range(c0, c1):
        for blk in range(ch * nfull // nchunk, (ch + 1) * nfull // nchunk):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            for h in range(h0, h1):
                row = np.uint64(blk * GLOBAL_PLANES * HW + h * W + w0)
                for s0 in range(0, n, seg):
                    m = np.uint64(min(seg, n - s0))
                    start = row + np.uint64(s0)
                    if whole:
                        for i in range(np.uint64(GLOBAL_PLANES) * uhw):
                            tmp[i] = np.float64(xf[start + i])
                    else:
                        for j in range(np.uint64(GLOBAL_PLANES)):
                            src, dst = start + j * uhw, j * ps
                            for i in range(m):
                                tmp[dst + i] = np.float64(xf[src + i])
                    for i in range(m):
                        a0 += tmp[i]
                        a1 += tmp[i + ps]
                        a2 += tmp[i + np.uint64(2) * ps]
                        a3 += tmp[i + np.uint64(3) * ps]
                        a4 += tmp[i + np.uint64(4) * ps]
                        a5 += tmp[i + np.uint64(5) * ps]
                        a6 += tmp[i + np.uint64(6) * ps]
                        a7 += tmp[i + np.uint64(7) * ps]
            t = blk * GLOBAL_PLANES
            of[t] = a0 / d
            of[t + 1] = a1 / d
            of[t + 2] = a2 / d
            of[t + 3] = a3 / d
            of[t + 4] = a4 / d
            of[t + 5] = a5 / d
            of[t + 6] = a6 / d
            of[t + 7] = a7 / d
        if ch == nchunk - 1:                      # the planes after the last full block
            for t in range(nfull * GLOBAL_PLANES, NC):
                acc = 0.0
                for h in range(h0, h1):
                    for s in range(n):
                        acc += xf[t * HW + h * W + w0 + s]
                of[t] = acc / d


#: planes global_avg_pool2d sums side by side: its eight accumulators a0..a7
GLOBAL_PLANES = 8
#: values of each of those planes global_avg_pool2d converts to float64 at a time (8 x 512 x 8 bytes: 32 KiB)
GLOBAL_SEGMENT = 512


@njit(**JIT)
def global_avg_pool2d_prange(x, out, geo, count_include_pad, divisor_override, n):
    """``global_avg_pool2d``'s ``n`` chunks on Numba's threads (a static split: the quicker launch on a
    quiet machine; ``numba_cpu._on_workers`` chooses between it and claimed chunks)."""
    for ch in prange(n):
        global_avg_pool2d(x, out, geo, count_include_pad, divisor_override, ch, ch + 1, n)


# ---------------------------------------------------------------------------------------------------
# 2x2 windows, stride 2, no padding (every window whole): LeNet's and VGG's pools
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_SERIAL)
def max_pool2x2(x, out, idx, want_idx, c0, c1, nchunk):
    """max_pool2d with kernel 2, stride 2, no padding, dilation 1 and every window inside the plane
    (P = H // 2, Q = W // 2): per output the general kernel's scan written out, taps (0,0), (0,1), (1,0),
    (1,1), each taken if greater than the best so far or NaN (the first tap is taken whatever it is, as
    from -inf with its index). The NC * P output rows are cut into ``nchunk`` chunks, of which this
    (serial) call runs [c0, c1); straight-line code over unsigned indices, so the row loop vectorises."""
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ixf = idx.reshape(idx.size)
    rows = N * C * P
    uW, uHW, uP, uQ = np.uint64(W), np.uint64(H * W), np.uint64(P), np.uint64(Q)
    one, two = np.uint64(1), np.uint64(2)
    for ch in range(c0, c1):
        for row in range(np.uint64(ch * rows // nchunk), np.uint64((ch + 1) * rows // nchunk)):
            t, p = row // uP, row % uP
            h0 = two * p * uW                   # the window's first row, as an index into its plane
            x0 = t * uHW + h0
            x1 = x0 + uW
            ob = row * uQ
            if want_idx:
                for q in range(uQ):
                    c = two * q
                    b = xf[x0 + c]
                    bi = h0 + c
                    v = xf[x0 + c + one]
                    if (v > b) | (v != v):
                        b, bi = v, h0 + c + one
                    v = xf[x1 + c]
                    if (v > b) | (v != v):
                        b, bi = v, h0 + uW + c
                    v = xf[x1 + c + one]
                    if (v > b) | (v != v):
                        b, bi = v, h0 + uW + c + one
                    of[ob + q] = b
                    ixf[ob + q] = np.int64(bi)
            else:
                for q in range(uQ):
                    c = two * q
                    b = xf[x0 + c]
                    v = xf[x0 + c + one]
                    b = v if (v > b) | (v != v) else b
                    v = xf[x1 + c]
                    b = v if (v > b) | (v != v) else b
                    v = xf[x1 + c + one]
                    b = v if (v > b) | (v != v) else b
                    of[ob + q] = b


@njit(**JIT_SERIAL)
def avg_pool2x2(x, out, divisor, c0, c1, nchunk):
    """avg_pool2d with kernel 2, stride 2, no padding and every window inside the plane: per output the
    float64 sum 0.0 + x00 + x01 + x10 + x11 (the oracle's (r, s) order) / ``divisor`` (4, or the
    divisor_override). Chunks of the NC * P output rows as :func:`max_pool2x2`."""
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    rows = N * C * P
    d = np.float64(divisor)
    uW, uHW, uP, uQ = np.uint64(W), np.uint64(H * W), np.uint64(P), np.uint64(Q)
    one, two = np.uint64(1), np.uint64(2)
    for ch in range(c0, c1):
        for row in range(np.uint64(ch * rows // nchunk), np.uint64((ch + 1) * rows // nchunk)):
            t, p = row // uP, row % uP
            x0 = t * uHW + two * p * uW
            x1 = x0 + uW
            ob = row * uQ
            for q in range(uQ):
                c = two * q
                a = 0.0 + np.float64(xf[x0 + c])
                a += np.float64(xf[x0 + c + one])
                a += np.float64(xf[x1 + c])
                a += np.float64(xf[x1 + c + one])
                of[ob + q] = a / d


@njit(**JIT)
def max_pool2x2_prange(x, out, idx, want_idx, n):
    """``max_pool2x2``'s ``n`` chunks on Numba's threads (static; ``numba_cpu._on_workers`` chooses)."""
    for ch in prange(n):
        max_pool2x2(x, out, idx, want_idx, ch, ch + 1, n)


@njit(**JIT)
def avg_pool2x2_prange(x, out, divisor, n):
    """``avg_pool2x2``'s ``n`` chunks on Numba's threads (static; ``numba_cpu._on_workers`` chooses)."""
    for ch in prange(n):
        avg_pool2x2(x, out, divisor, ch, ch + 1, n)


# ---------------------------------------------------------------------------------------------------
# Adaptive pooling: one window per output, its bounds from the spec (win)
# ---------------------------------------------------------------------------------------------------
@njit(**INLINE)
def _window_mean(plane, h0, h1, w0, w1):
    """The float64 mean of plane[h0:h1, w0:w1], summed row-major."""
    acc = 0.0
    for h in range(h0, h1):
        for ww in range(w0, w1):
            acc += plane[h, ww]
    return acc / ((h1 - h0) * (w1 - w0))


@njit(**INLINE)
def _window_max(plane, h0, h1, w0, w1, neg_inf):
    """max_pool2d's scan rule over plane[h0:h1, w0:w1]: (value, its flat index h * W + w in the plane)."""
    W = plane.shape[1]
    best = neg_inf
    bi = h0 * W + w0
    for h in range(h0, h1):
        for ww in range(w0, w1):
            v = plane[h, ww]
            if v > best or v != v:
                best = v
                bi = h * W + ww
    return best, bi


@njit(**JIT)
def adaptive_pool2d(x, out, idx, want_idx, is_max, win):
    """Both adaptive pools (the traversal is the same): per window the max scan rule (``is_max``, with
    its index when ``want_idx``) or the float64 mean. ``is_max`` is the same for every window of a call,
    so the branch costs nothing next to the window's loop."""
    N, C = x.shape[0], x.shape[1]
    neg_inf = out.dtype.type(-np.inf)
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = x[n, c]
        for i in range(out.shape[2]):
            h0, h1 = win.row_lo[i], win.row_hi[i]
            for j in range(out.shape[3]):
                w0, w1 = win.col_lo[j], win.col_hi[j]
                if is_max:
                    best, bi = _window_max(plane, h0, h1, w0, w1, neg_inf)
                    out[n, c, i, j] = best
                    if want_idx:
                        idx[n, c, i, j] = bi
                else:
                    out[n, c, i, j] = _window_mean(plane, h0, h1, w0, w1)


#: the pools' serial twins, for problems too small to split (the fast path of a repeat call)
max_pool2d_serial = serial_twin(max_pool2d)
avg_pool2d_serial = serial_twin(avg_pool2d)

tolerate_corrupt_caches(globals())
