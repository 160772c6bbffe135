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
- ``conv2d_direct``          every conv; one iteration per (n, group, block of KB output channels) writes
                             only that block; per output row a (KB, Q) accumulator stays in L1 and each
                             (c, r, s) tap is an axpy over the row's valid columns (vectorised over q).
- ``conv2d_depthwise_phase`` C/G == 1 (depthwise, any channel multiplier), finite weights: each plane is
                             zero-padded and split into stride phases once, then every tap is one long
                             unit-stride axpy over the whole output plane.
- ``conv2d_depthwise``       C/G == 1 with a non-finite weight: taps clipped to the input (padding never
                             meets the weight), one iteration per (n, channel).
- ``im2col_pack``            one image of one group into col[Cg*R*S, P*Q], serial; the GEMM runs in BLAS
                             from Python (numba_cpu), never over the whole batch at once.
- ``max_pool2d`` / ``avg_pool2d`` (+ ``_avg_pool_per_window``) / ``adaptive_max_pool2d`` /
  ``adaptive_avg_pool2d``: one iteration per (n, c) plane; the oracle's rules exactly (see
  numpy_oracle's docstring); avg pools sum in float64 in the oracle's tap order.
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

# Vectorisation note: Numba wraps negative indices, so ``a[q + off]`` with a signed ``off`` costs a
# compare-and-select per element and LLVM leaves the loop scalar (measured: 5-6x slower). Inner loops
# therefore index flat arrays with uint64 (the _u* helpers) or 2-D arrays with plain loop counters;
# slices would also do, but building a view per short row cost more than the row on 7x7 planes.

#: output channels per block of conv2d_direct: the (KB, Q) accumulator of one output row stays in L1
#: and each input row loaded is reused KB times.
KB = 16


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
@njit(inline="always", cache=True)
def _col_range(off, stride, size, out_len):
    """Output columns q < out_len whose tap ``q*stride + off`` lies in [0, size): returns [lo, hi) with
    0 <= lo <= hi <= out_len (callers fill [0, lo) and [hi, out_len), so lo must not pass out_len)."""
    lo = 0 if off >= 0 else min(out_len, (-off + stride - 1) // stride)
    if size - 1 - off < 0:
        return lo, lo
    hi = min(out_len, (size - 1 - off) // stride + 1)
    return lo, max(lo, hi)


# Flat-index helpers. Indices are uint64 on purpose: with a signed ``base + i`` Numba emits its negative-
# index wraparound per element and the loop runs 5x slower (measured: 1.6 vs 8.8 GFMA/s for one axpy);
# unsigned indices need no wraparound, and cost no view construction like a slice per row does.
@njit(inline="always", cache=True)
def _uaxpy(acc, a0, x, x0, wv, n):
    """acc[a0 : a0 + n] += wv * x[x0 : x0 + n]"""
    ua, ux = np.uint64(a0), np.uint64(x0)
    for i in range(np.uint64(n)):
        acc[ua + i] += wv * x[ux + i]


@njit(inline="always", cache=True)
def _uaxpy_strided(acc, a0, x, x0, stride, wv, n):
    """acc[a0 : a0 + n] += wv * x[x0 : x0 + n*stride : stride]"""
    ua, ux, st = np.uint64(a0), np.uint64(x0), np.uint64(stride)
    for i in range(np.uint64(n)):
        acc[ua + i] += wv * x[ux + i * st]


@njit(inline="always", cache=True)
def _ucopy(dst, d0, src, s0, n, stride):
    """dst[d0 : d0 + n] = src[s0 : s0 + n*stride : stride]"""
    ud, us, st = np.uint64(d0), np.uint64(s0), np.uint64(stride)
    if stride == 1:
        for i in range(np.uint64(n)):
            dst[ud + i] = src[us + i]
    else:
        for i in range(np.uint64(n)):
            dst[ud + i] = src[us + i * st]


@njit(inline="always", cache=True)
def _ufill(dst, d0, n, value):
    ud = np.uint64(d0)
    for i in range(np.uint64(n)):
        dst[ud + i] = value


@njit(inline="always", cache=True)
def _axpy(a, wv, xs):
    for i in range(a.shape[0]):
        a[i] += wv * xs[i]


@njit(**_JIT_CONV)
def conv2d_direct(x, w, b, out, geo):
    sh, sw, pt, pl, dh, dw, G, _R, _S = geo
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    Kg = K // G
    nkb = (Kg + KB - 1) // KB
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    slo = np.empty(S, dtype=np.int64)
    shi = np.empty(S, dtype=np.int64)
    for s in range(S):
        slo[s], shi[s] = _col_range(s * dw - pl, sw, W, Q)
    for t in prange(N * G * nkb):
        n = t // (G * nkb)
        g = (t // nkb) % G
        k0 = g * Kg + (t % nkb) * KB
        kn = min(KB, g * Kg + Kg - k0)
        acc = np.empty(KB * Q, dtype=out.dtype)   # row kk of the block at kk*Q
        for p in range(P):
            for kk in range(kn):
                _ufill(acc, kk * Q, Q, b[k0 + kk])
            rlo, rhi = _col_range(p * sh - pt, dh, H, R)
            for c in range(Cg):
                xc = (n * C + g * Cg + c) * H * W
                for r in range(rlo, rhi):
                    xrow = xc + (p * sh - pt + r * dh) * W
                    for s in range(S):
                        lo, hi = slo[s], shi[s]
                        if hi <= lo:
                            continue
                        x0 = xrow + lo * sw + s * dw - pl
                        w0 = ((k0 * Cg + c) * R + r) * S + s
                        for kk in range(kn):
                            wv = wf[w0 + kk * Cg * R * S]
                            if sw == 1:
                                _uaxpy(acc, kk * Q + lo, xf, x0, wv, hi - lo)
                            else:
                                _uaxpy_strided(acc, kk * Q + lo, xf, x0, sw, wv, hi - lo)
            for kk in range(kn):
                _ucopy(of, ((n * K + k0 + kk) * P + p) * Q, acc, kk * Q, Q, 1)


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


@njit(inline="always", cache=True)
def _phase_dims(P, Q, R, S, sh, sw, dh, dw):
    """Rows/columns per phase of the padded, phase-split plane a (P, Q) output of an (R, S) window reads."""
    Hp = (P - 1) * sh + (R - 1) * dh + 1
    Wp = (Q - 1) * sw + (S - 1) * dw + 1
    return (Hp + sh - 1) // sh, (Wp + sw - 1) // sw


@njit(inline="always", cache=True)
def _phase_ranges(W, Wq, pl, sw):
    """Per column phase b: the in-plane columns [lo[b], hi[b]) of a phase row (computed once per call:
    integer divisions cost more than the copies on small planes)."""
    lo = np.empty(sw, dtype=np.int64)
    hi = np.empty(sw, dtype=np.int64)
    for b_ in range(sw):
        lo[b_], hi[b_] = _col_range(b_ - pl, sw, W, Wq)
    return lo, hi


@njit(inline="always", cache=True)
def _copy_phase(xf, src, H, W, buf, pt, pl, sh, sw, Hq, Wq, lo, hi):
    """buf[((a*sw + b)*Hq + i)*Wq + j] = plane[i*sh + a - pt, j*sw + b - pl] for the positions inside the
    plane (the H x W plane at flat offset ``src`` of ``xf``; lo/hi from _phase_ranges). The padding
    positions are the same for every plane: the caller zeroes them once per chunk of planes.

    In this layout the taps of window (r, s) for every output (p, q) sit at one flat offset from
    p*Wq + q in phase plane ((r*dh) % sh, (s*dw) % sw), so each tap is one long unit-stride loop."""
    for h in range(H):
        hp = h + pt
        i = hp // sh
        if i >= Hq:
            break
        a = hp - i * sh
        for b_ in range(sw):
            l, e = lo[b_], hi[b_]
            if e > l:
                _ucopy(buf, ((a * sw + b_) * Hq + i) * Wq + l, xf, src + h * W + l * sw + b_ - pl, e - l, sw)


@njit(inline="always", cache=True)
def _tap_offsets(R, S, sh, sw, dh, dw, Hq, Wq):
    """Flat offset, in the phase-split buffer, of tap (r, s) for output (0, 0)."""
    toff = np.empty(R * S, dtype=np.int64)
    for r in range(R):
        for s in range(S):
            toff[r * S + s] = ((((r * dh) % sh) * sw + (s * dw) % sw) * Hq + (r * dh) // sh) * Wq + (s * dw) // sw
    return toff


@njit(**_JIT_CONV)
def conv2d_depthwise_phase(x, w, b, out, geo, nchunk):
    """C/G == 1 with finite weights: each (n, channel) plane is copied once, zero-padded and split into
    stride phases; then every tap is one axpy over the whole (P, Wq) output plane (garbage columns
    q >= Q included and dropped at the end). Zero padding is multiplied in, hence finite weights only.
    Planes are processed in ``nchunk`` parallel chunks, each allocating its buffers once."""
    sh, sw, pt, pl, dh, dw, G, _R, _S = geo
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    RS = R * S
    Hq, Wq = _phase_dims(P, Q, R, S, sh, sw, dh, dw)
    L = (P - 1) * Wq + Q
    lo, hi = _phase_ranges(W, Wq, pl, sw)
    toff = _tap_offsets(R, S, sh, sw, dh, dw, Hq, Wq)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    ntask = N * C
    for ch in prange(nchunk):
        buf = np.zeros(sh * sw * Hq * Wq, dtype=x.dtype)   # padding: zero once, never written
        acc = np.empty(L, dtype=out.dtype)
        t0 = ch * ntask // nchunk
        t1 = (ch + 1) * ntask // nchunk
        for t in range(t0, t1):
            _copy_phase(xf, t * H * W, H, W, buf, pt, pl, sh, sw, Hq, Wq, lo, hi)
            k0 = (t % C) * M
            ob = (t * M) * P * Q          # (n*K + c*M) * P*Q, since K = C*M
            for m in range(M):
                k = k0 + m
                _ufill(acc, 0, L, b[k])
                for j in range(RS):
                    _uaxpy(acc, 0, buf, toff[j], wf[k * RS + j], L)
                for p in range(P):
                    _ucopy(of, ob + p * Q, acc, p * Wq, Q, 1)
                ob += P * Q


@njit(**_JIT_SERIAL)
def im2col_pack(x, n, g, P, Q, geo, col, col0):
    """col[(c*R + r)*S + s, col0 + p*Q + q] = x[n, g*Cg + c, h, w], zero where the tap is in the padding;
    R and S are the extents of the filter (col has Cg*R*S rows), passed in ``geo``; ``col0`` places the
    image in a tile of several images side by side.

    Serial on purpose: it alternates with the BLAS GEMM, whose worker threads keep spinning for a while
    after each call, and a parallel pack fights them for the cores (measured on 2 cores, whole conv at
    N=8: 64x56x56 3x3 20 ms with this serial pack, 64-76 ms with a prange over channels)."""
    sh, sw, pt, pl, dh, dw, G, R, S = geo
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Cg = col.shape[0] // (R * S)
    PQ = P * Q
    ld = col.shape[1]
    xf = x.reshape(x.size)
    cf = col.reshape(col.size)
    slo = np.empty(S, dtype=np.int64)
    shi = np.empty(S, dtype=np.int64)
    for s in range(S):
        slo[s], shi[s] = _col_range(s * dw - pl, sw, W, Q)
    d = col0
    for c in range(Cg):
        src = (n * C + g * Cg + c) * H * W
        for r in range(R):
            plo, phi = _col_range(r * dh - pt, sh, H, P)
            for s in range(S):
                lo, hi = slo[s], shi[s]
                _ufill(cf, d, plo * Q, 0)
                srow = src + (plo * sh - pt + r * dh) * W + lo * sw + s * dw - pl
                for p in range(plo, phi):
                    dd = d + p * Q
                    _ufill(cf, dd, lo, 0)
                    _ucopy(cf, dd + lo, xf, srow, hi - lo, sw)
                    _ufill(cf, dd + hi, Q - hi, 0)
                    srow += sh * W
                _ufill(cf, d + phi * Q, (P - phi) * Q, 0)
                d += ld


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
@njit(inline="always", cache=True)
def _first_inbounds(start, dil):
    """First tap position >= 0 of a window starting at ``start`` (taps ``dil`` apart)."""
    if start >= 0:
        return start
    return start + (-start + dil - 1) // dil * dil


@njit(inline="always", cache=True)
def _window_ranges(out_len, stride, pad, k, dil, size):
    """Per output position: the in-bounds taps [lo, hi) of its window and its first in-bounds position."""
    lo = np.empty(out_len, dtype=np.int64)
    hi = np.empty(out_len, dtype=np.int64)
    first = np.empty(out_len, dtype=np.int64)
    for o in range(out_len):
        start = o * stride - pad
        lo[o], hi[o] = _col_range(start, dil, size, k)
        first[o] = _first_inbounds(start, dil)
    return lo, hi, first


@njit(inline="always", cache=True)
def _tap_ranges(k, dil, pad, stride, size, out_len):
    """Per tap s: the output positions [lo, hi) whose tap s is in bounds."""
    lo = np.empty(k, dtype=np.int64)
    hi = np.empty(k, dtype=np.int64)
    for s in range(k):
        lo[s], hi[s] = _col_range(s * dil - pad, stride, size, out_len)
    return lo, hi


@njit(inline="always", cache=True)
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


@njit(**_JIT)
def max_pool2d(x, out, idx, want_idx, geo):
    """Scan each window row-major; take a tap if it is greater than the best so far or NaN; start from
    -inf with the first in-bounds tap's index; padding taps are skipped (never selected).

    Inner loop over the longer of the output row (Q) and the window row (S): per tap over a row of
    outputs when Q >= S, else per output over its window (global pooling)."""
    R, S, sh, sw, ph, pw, dh, dw = geo
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    ixf = idx.reshape(idx.size)
    rlo, rhi, hfirst = _window_ranges(P, sh, ph, R, dh, H)
    wlo, whi, wfirst = _window_ranges(Q, sw, pw, S, dw, W)
    slo, shi = _tap_ranges(S, dw, pw, sw, W, Q)
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


@njit(**_JIT)
def avg_pool2d(x, out, geo, count_include_pad, divisor_override):
    """Sum of in-bounds taps (float64, the oracle's (r, s) order per window) / divisor: divisor_override
    when non-zero, else the window clipped to the padded input (count_include_pad) or to the input.
    Inner loop per tap over a row of outputs when Q >= S, else per window (_avg_pool_per_window)."""
    R, S, sh, sw, ph, pw, dh, dw = geo
    N, C, H, W = x.shape
    P, Q = out.shape[2], out.shape[3]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
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
    rlo, rhi, _hf = _window_ranges(P, sh, ph, R, 1, H)
    wlo, whi, _wf = _window_ranges(Q, sw, pw, S, 1, W)
    slo, shi = _tap_ranges(S, 1, pw, sw, W, Q)
    if Q < S:
        _avg_pool_per_window(xf, of, N * C, H, W, P, Q, sh, sw, ph, pw, rlo, rhi, wlo, whi, div_h, div_w,
                             divisor_override)
        return
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


@njit(**_JIT)
def _avg_pool_per_window(xf, of, NC, H, W, P, Q, sh, sw, ph, pw, rlo, rhi, wlo, whi, div_h, div_w,
                         divisor_override):
    nblk = (NC + PLANES - 1) // PLANES
    for blk in prange(nblk):
        t0 = blk * PLANES
        nt = min(PLANES, NC - t0)
        acc = np.empty(PLANES, dtype=np.float64)
        for p in range(P):
            for q in range(Q):
                acc[:] = 0.0
                for r in range(rlo[p], rhi[p]):
                    row = t0 * H * W + (p * sh - ph + r) * W + q * sw - pw
                    for s in range(wlo[q], whi[q]):
                        for j in range(nt):
                            acc[j] += xf[row + j * H * W + s]
                d = divisor_override if divisor_override != 0 else div_h[p] * div_w[q]
                for j in range(nt):
                    of[((t0 + j) * P + p) * Q + q] = acc[j] / d


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


# ---------------------------------------------------------------------------------------------------
# A disk cache that survives a corrupted file
# ---------------------------------------------------------------------------------------------------
def _tolerate_corrupt_cache(dispatcher) -> None:
    """Make ``dispatcher``'s on-disk cache ignore an index or data file it cannot read.

    Numba writes its cache atomically (a temporary file, then ``os.replace``), so concurrent writers are
    safe; but it reads with bare ``pickle.load``, and one truncated or corrupted ``.nbi``/``.nbc`` file
    (a full disk, a partial copy) makes *every* call of the kernel raise ``EOFError``/``ValueError``/
    ``UnpicklingError`` forever. Here such a file counts as a cache miss: the kernel compiles again and
    the save that follows rewrites the index and the data file.
    """
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None or not hasattr(cache_file, "_load_index") or not hasattr(cache, "load_overload"):
        return  # caching off, or a Numba whose cache is built differently: leave it as it is
    load_index, load_overload = cache_file._load_index, cache.load_overload

    def _load_index():
        try:
            return load_index()
        except Exception:   # unreadable index: start a new one (the next save replaces the file)
            return {}

    def _load_overload(sig, target_context):
        try:
            return load_overload(sig, target_context)
        except Exception:   # unreadable or unusable data file: compile (the save overwrites it)
            return None

    cache_file._load_index = _load_index
    cache.load_overload = _load_overload


for _obj in list(globals().values()):
    if hasattr(_obj, "py_func") and hasattr(_obj, "_cache"):
        _tolerate_corrupt_cache(_obj)
del _obj
