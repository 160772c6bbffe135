"""Numba kernels of the ``numba`` backend: conv (direct, depthwise, im2col packing) and pooling, NCHW.

Imported only by :mod:`fastconv._backends.numba_cpu` (itself imported on first use of the backend), so
``import fastconv`` never imports Numba. Every kernel is ``@njit(parallel=True, cache=True)``: the first
process compiles it (per dtype) and writes Numba's on-disk cache next to this file (or under
``NUMBA_CACHE_DIR``); later processes load it. ``prange`` runs on Numba's thread pool, so
``numba.set_num_threads`` / ``NUMBA_NUM_THREADS`` decide how many threads run.

Layout: C-contiguous x[N, C, H, W], w[K, C/G, R, S], b[K] (zeros when the op has no bias),
out[N, K, P, Q]. Geometry travels as one tuple built by ``numba_cpu.conv_geometry`` /
``numba_cpu.pool_geometry``, whose field order is the unpacking order at the top of each kernel.

Kernel versions:
- ``conv2d_direct``     every conv; one iteration per (n, group, block of KB output channels) writes
                        only that block; per output row a (KB, Q) accumulator stays in L1 and each
                        (c, r, s) tap is an axpy over the row's columns (vectorised over q).
- ``conv2d_depthwise``  C/G == 1 (depthwise, any channel multiplier): one iteration per (n, channel).
- ``im2col_pack``       one image of one group into col[Cg*R*S, P*Q] (parallel over rows); the GEMM
                        runs in BLAS from Python (numba_cpu), never over the whole batch at once.
- ``add_bias``          out[n, k] += b[k], parallel over (n, k) planes.
- ``max_pool2d`` / ``avg_pool2d`` / ``adaptive_max_pool2d`` / ``adaptive_avg_pool2d``: one iteration
                        per (n, c) plane; the oracle's rules exactly (see numpy_oracle's docstring).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# error_model="numpy": integer division needs no zero check (divisors are validated positive sizes),
# which keeps the inner loops vectorisable. fastmath stays off: results must follow IEEE order rules
# the oracle's NaN handling relies on.
_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True, error_model="numpy")

#: output channels per block of conv2d_direct: the (KB, Q) accumulator of one output row stays in L1
#: and each input row loaded is reused KB times.
KB = 16


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
@njit(inline="always")
def _col_range(off, stride, size, out_len):
    """Output columns q whose tap ``q*stride + off`` lies in [0, size): returns [lo, hi)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    if size - 1 - off < 0:
        return lo, lo
    hi = min(out_len, (size - 1 - off) // stride + 1)
    return lo, max(lo, hi)


@njit(**_JIT)
def conv2d_direct(x, w, b, out, geo):
    sh, sw, pt, pl, dh, dw, G, _R, _S = geo
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    Kg = K // G
    nkb = (Kg + KB - 1) // KB
    for t in prange(N * G * nkb):
        n = t // (G * nkb)
        g = (t // nkb) % G
        k0 = g * Kg + (t % nkb) * KB
        kn = min(KB, g * Kg + Kg - k0)
        acc = np.empty((KB, Q), dtype=out.dtype)
        for p in range(P):
            for kk in range(kn):
                bv = b[k0 + kk]
                for q in range(Q):
                    acc[kk, q] = bv
            for c in range(Cg):
                ci = g * Cg + c
                for r in range(R):
                    h = p * sh - pt + r * dh
                    if h < 0 or h >= H:
                        continue
                    xrow = x[n, ci, h]
                    for s in range(S):
                        off = s * dw - pl
                        lo, hi = _col_range(off, sw, W, Q)
                        if sw == 1:
                            for kk in range(kn):
                                wv = w[k0 + kk, c, r, s]
                                a = acc[kk]
                                for q in range(lo, hi):
                                    a[q] += wv * xrow[q + off]
                        else:
                            for kk in range(kn):
                                wv = w[k0 + kk, c, r, s]
                                a = acc[kk]
                                for q in range(lo, hi):
                                    a[q] += wv * xrow[q * sw + off]
            for kk in range(kn):
                orow = out[n, k0 + kk, p]
                a = acc[kk]
                for q in range(Q):
                    orow[q] = a[q]


@njit(**_JIT)
def conv2d_depthwise(x, w, b, out, geo):
    """C/G == 1: output channel k reads input channel k // M only (M = K/C, the channel multiplier)."""
    sh, sw, pt, pl, dh, dw, G, _R, _S = geo
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    for t in prange(N * K):
        n = t // K
        k = t % K
        ci = k // M
        plane = x[n, ci]
        bv = b[k]
        for p in range(P):
            orow = out[n, k, p]
            for q in range(Q):
                orow[q] = bv
            for r in range(R):
                h = p * sh - pt + r * dh
                if h < 0 or h >= H:
                    continue
                xrow = plane[h]
                for s in range(S):
                    off = s * dw - pl
                    lo, hi = _col_range(off, sw, W, Q)
                    wv = w[k, 0, r, s]
                    if sw == 1:
                        for q in range(lo, hi):
                            orow[q] += wv * xrow[q + off]
                    else:
                        for q in range(lo, hi):
                            orow[q] += wv * xrow[q * sw + off]


@njit(**_JIT)
def im2col_pack(x, n, g, P, Q, geo, col):
    """col[(c*R + r)*S + s, p*Q + q] = x[n, g*Cg + c, h, w], zero where the tap is in the padding;
    R and S are the extents of the filter (col has Cg*R*S rows), passed in ``geo``."""
    sh, sw, pt, pl, dh, dw, G, R, S = geo
    H, W = x.shape[2], x.shape[3]
    rows = col.shape[0]
    RS = R * S
    Cg = rows // RS
    for row in prange(rows):
        c = row // RS
        r = (row // S) % R
        s = row % S
        src = x[n, g * Cg + c]
        dst = col[row]
        off = s * dw - pl
        lo, hi = _col_range(off, sw, W, Q)
        for p in range(P):
            h = p * sh - pt + r * dh
            base = p * Q
            if h < 0 or h >= H:
                for q in range(Q):
                    dst[base + q] = 0
                continue
            xrow = src[h]
            for q in range(lo):
                dst[base + q] = 0
            if sw == 1:
                for q in range(lo, hi):
                    dst[base + q] = xrow[q + off]
            else:
                for q in range(lo, hi):
                    dst[base + q] = xrow[q * sw + off]
            for q in range(hi, Q):
                dst[base + q] = 0


@njit(**_JIT)
def add_bias(out, b):
    N, K = out.shape[0], out.shape[1]
    for t in prange(N * K):
        plane = out[t // K, t % K]
        bv = b[t % K]
        for p in range(plane.shape[0]):
            for q in range(plane.shape[1]):
                plane[p, q] += bv


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
@njit(inline="always")
def _first_inbounds(start, dil):
    """First tap position >= 0 of a window starting at ``start`` (taps ``dil`` apart)."""
    if start >= 0:
        return start
    return start + (-start + dil - 1) // dil * dil


@njit(**_JIT)
def max_pool2d(x, out, idx, want_idx, geo):
    """Scan each window row-major; take a tap if it is greater than the best so far or NaN; start from
    -inf with the first in-bounds tap's index; padding taps are skipped (never selected)."""
    R, S, sh, sw, ph, pw, dh, dw = geo
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        best = np.empty(Q, dtype=out.dtype)
        bidx = np.empty(Q, dtype=np.int64)
        for p in range(P):
            hstart = p * sh - ph
            h0 = _first_inbounds(hstart, dh)
            for q in range(Q):
                best[q] = -np.inf
                bidx[q] = h0 * W + _first_inbounds(q * sw - pw, dw)
            for r in range(R):
                h = hstart + r * dh
                if h < 0 or h >= H:
                    continue
                xrow = plane[h]
                for s in range(S):
                    off = s * dw - pw
                    lo, hi = _col_range(off, sw, W, Q)
                    if want_idx:
                        for q in range(lo, hi):
                            v = xrow[q * sw + off]
                            if v > best[q] or v != v:
                                best[q] = v
                                bidx[q] = h * W + q * sw + off
                    else:
                        for q in range(lo, hi):
                            v = xrow[q * sw + off]
                            bq = best[q]
                            best[q] = v if (v > bq or v != v) else bq
            orow = out[n, c, p]
            for q in range(Q):
                orow[q] = best[q]
            if want_idx:
                irow = idx[n, c, p]
                for q in range(Q):
                    irow[q] = bidx[q]


@njit(**_JIT)
def avg_pool2d(x, out, geo, count_include_pad, divisor_override):
    """Sum of in-bounds taps / divisor: divisor_override when non-zero, else the window clipped to the
    padded input (count_include_pad) or to the input."""
    R, S, sh, sw, ph, pw, dh, dw = geo
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    # per-axis divisor factors (the divisor of window (p, q) is div_h[p] * div_w[q])
    div_h = np.empty(P, dtype=np.float64)
    div_w = np.empty(Q, dtype=np.float64)
    for p in range(P):
        start = p * sh - ph
        end = min(start + R, H + ph)
        div_h[p] = (end - start) if count_include_pad else (min(end, H) - max(start, 0))
    for q in range(Q):
        start = q * sw - pw
        end = min(start + S, W + pw)
        div_w[q] = (end - start) if count_include_pad else (min(end, W) - max(start, 0))
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        acc = np.empty(Q, dtype=np.float64)
        for p in range(P):
            for q in range(Q):
                acc[q] = 0.0
            for r in range(R):
                h = p * sh - ph + r
                if h < 0 or h >= H:
                    continue
                xrow = plane[h]
                for s in range(S):
                    off = s - pw
                    lo, hi = _col_range(off, sw, W, Q)
                    for q in range(lo, hi):
                        acc[q] += xrow[q * sw + off]
            orow = out[n, c, p]
            if divisor_override != 0:
                for q in range(Q):
                    orow[q] = acc[q] / divisor_override
            else:
                for q in range(Q):
                    orow[q] = acc[q] / (div_h[p] * div_w[q])


@njit(**_JIT)
def adaptive_avg_pool2d(x, out):
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        for i in range(P):
            h0 = (i * H) // P
            h1 = ((i + 1) * H + P - 1) // P
            for j in range(Q):
                w0 = (j * W) // Q
                w1 = ((j + 1) * W + Q - 1) // Q
                acc = 0.0
                for h in range(h0, h1):
                    for ww in range(w0, w1):
                        acc += plane[h, ww]
                out[n, c, i, j] = acc / ((h1 - h0) * (w1 - w0))


@njit(**_JIT)
def adaptive_max_pool2d(x, out, idx, want_idx):
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        plane = x[n, c]
        for i in range(P):
            h0 = (i * H) // P
            h1 = ((i + 1) * H + P - 1) // P
            for j in range(Q):
                w0 = (j * W) // Q
                w1 = ((j + 1) * W + Q - 1) // Q
                best = out.dtype.type(-np.inf)
                bi = h0 * W + w0
                for h in range(h0, h1):
                    for ww in range(w0, w1):
                        v = plane[h, ww]
                        if v > best or v != v:
                            best = v
                            bi = h * W + ww
                out[n, c, i, j] = best
                if want_idx:
                    idx[n, c, i, j] = bi
