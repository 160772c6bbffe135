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

# error_model="numpy": integer division needs no zero check (divisors are validated positive sizes).
# Pools run with fastmath off (the NaN rule needs IEEE compares); conv kernels allow only "contract"
# (a*b+c fused into one FMA, one rounding instead of two), never reassociation or finite-math.
_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True, error_model="numpy")
_JIT_CONV = dict(_JIT, fastmath={"contract"})
_JIT_SERIAL = dict(_JIT, parallel=False)

# Vectorisation note: every inner loop runs over a zero-based ``range`` on slices taken just before it
# (``a = acc[kk, lo:hi]``, ``xs = xrow[lo + off: hi + off]``). Indexing with ``q + off``, where ``off``
# may be negative, makes Numba emit its negative-index wraparound per element, and LLVM then does not
# vectorise the loop (measured: 6x slower).

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


@njit(inline="always")
def _axpy(a, wv, xs):
    for i in range(a.shape[0]):
        a[i] += wv * xs[i]


@njit(inline="always")
def _tap_slices(row, xrow, lo, hi, sw, off):
    """row[lo:hi] and the input taps it meets, xrow[lo*sw + off : ... : sw] (both zero-based views)."""
    return row[lo:hi], xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw]


@njit(**_JIT_CONV)
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
                acc[kk, :] = b[k0 + kk]
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
                        if hi <= lo:
                            continue
                        if sw == 1:
                            xs = xrow[lo + off:hi + off]
                            for kk in range(kn):
                                _axpy(acc[kk, lo:hi], w[k0 + kk, c, r, s], xs)
                        else:
                            xs = xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw]
                            for kk in range(kn):
                                _axpy(acc[kk, lo:hi], w[k0 + kk, c, r, s], xs)
            for kk in range(kn):
                out[n, k0 + kk, p, :] = acc[kk]


@njit(**_JIT_CONV)
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
        plane = x[n, k // M]
        bv = b[k]
        for p in range(P):
            orow = out[n, k, p]
            orow[:] = bv
            for r in range(R):
                h = p * sh - pt + r * dh
                if h < 0 or h >= H:
                    continue
                xrow = plane[h]
                for s in range(S):
                    off = s * dw - pl
                    lo, hi = _col_range(off, sw, W, Q)
                    if hi <= lo:
                        continue
                    if sw == 1:
                        _axpy(orow[lo:hi], w[k, 0, r, s], xrow[lo + off:hi + off])
                    else:
                        _axpy(orow[lo:hi], w[k, 0, r, s], xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw])


@njit(inline="always")
def _copy(dst, src):
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(**_JIT_SERIAL)
def im2col_pack(x, n, g, P, Q, geo, col):
    """col[(c*R + r)*S + s, p*Q + q] = x[n, g*Cg + c, h, w], zero where the tap is in the padding;
    R and S are the extents of the filter (col has Cg*R*S rows), passed in ``geo``.

    Serial on purpose: it alternates with the BLAS GEMM, whose worker threads keep spinning for a while
    after each call; a parallel pack fights them for the cores (measured: the whole im2col conv 3-6x
    slower with a 2-thread pack than with a 1-thread pack on 2 cores)."""
    sh, sw, pt, pl, dh, dw, G, R, S = geo
    H, W = x.shape[2], x.shape[3]
    rows = col.shape[0]
    RS = R * S
    Cg = rows // RS
    for row in range(rows):
        c = row // RS
        r = (row // S) % R
        s = row % S
        src = x[n, g * Cg + c]
        dst = col[row]
        off = s * dw - pl
        lo, hi = _col_range(off, sw, W, Q)
        for p in range(P):
            h = p * sh - pt + r * dh
            drow = dst[p * Q:(p + 1) * Q]
            if h < 0 or h >= H or hi <= lo:
                drow[:] = 0
                continue
            drow[:lo] = 0
            if sw == 1:
                _copy(drow[lo:hi], src[h, lo + off:hi + off])
            else:
                _copy(drow[lo:hi], src[h, lo * sw + off:(hi - 1) * sw + off + 1:sw])
            drow[hi:] = 0


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
                    if hi <= lo:
                        continue
                    xs = xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw]
                    bs = best[lo:hi]
                    if want_idx:
                        bis = bidx[lo:hi]
                        base = h * W + lo * sw + off
                        for i in range(hi - lo):
                            v = xs[i]
                            bv = bs[i]
                            take = (v > bv) | (v != v)
                            bs[i] = v if take else bv
                            bis[i] = base + i * sw if take else bis[i]
                    else:
                        for i in range(hi - lo):
                            v = xs[i]
                            bv = bs[i]
                            bs[i] = v if (v > bv) | (v != v) else bv
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
                    if hi <= lo:
                        continue
                    a = acc[lo:hi]
                    xs = xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw]
                    for i in range(hi - lo):
                        a[i] += xs[i]
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
