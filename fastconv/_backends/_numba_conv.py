"""Numba conv kernels of the ``numba`` backend (the index of kernels is :mod:`._numba_kernels`).

Layout: C-contiguous x[N, C, H, W], w[K, C/G, R, S], b[K] (zeros when the op has no bias), out[N, K, P, Q];
``geo`` is a :class:`~._numba_common.ConvGeometry`, read by field name.

- ``conv2d_direct``          every conv; one iteration per (n, group, block of KB output channels) writes
                             only that block; per output row a (KB, Q) accumulator stays in L1 and each
                             (c, r, s) tap is an axpy over the row's valid columns (vectorised over q).
- ``conv2d_depthwise_phase`` C/G == 1 (depthwise, any channel multiplier): each plane is zero-padded and
                             split into stride phases once, then every tap is one long unit-stride axpy
                             over the whole output plane. Padded zeros are multiplied in: exact for finite
                             weights only (dispatch's rule, ``zero_fills_padding``).
- ``conv2d_depthwise``       C/G == 1, taps clipped to the input (padding never meets the weight), one
                             iteration per (n, channel); exact for every weight.
- ``im2col_pack``            one image of one group into col[Cg*R*S, P*Q], serial; the GEMM runs in BLAS
                             from Python (numba_cpu), never over the whole batch at once.
- ``im2col_pack_rows``       the same for a band of output rows (an image too big for one workspace).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import (INLINE, JIT_CONV, JIT_SERIAL, col_range, tap_ranges, tolerate_corrupt_caches,
                            uaxpy, uaxpy_strided, ucopy, ufill)

#: output channels per block of conv2d_direct: the (KB, Q) accumulator of one output row stays in L1
#: and each input row loaded is reused KB times.
KB = 16


@njit(**JIT_CONV)
def conv2d_direct(x, w, b, out, geo):
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl, G = geo.pad_top, geo.pad_left, geo.groups
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    Kg = K // G
    nkb = (Kg + KB - 1) // KB
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    for t in prange(N * G * nkb):
        n = t // (G * nkb)
        g = (t // nkb) % G
        k0 = g * Kg + (t % nkb) * KB
        kn = min(KB, g * Kg + Kg - k0)
        acc = np.empty(KB * Q, dtype=out.dtype)   # row kk of the block at kk*Q
        for p in range(P):
            for kk in range(kn):
                ufill(acc, kk * Q, Q, b[k0 + kk])
            rlo, rhi = col_range(p * sh - pt, dh, H, R)
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
                                uaxpy(acc, kk * Q + lo, xf, x0, wv, hi - lo)
                            else:
                                uaxpy_strided(acc, kk * Q + lo, xf, x0, sw, wv, hi - lo)
            for kk in range(kn):
                ucopy(of, ((n * K + k0 + kk) * P + p) * Q, acc, kk * Q, Q, 1)


@njit(**INLINE)
def _axpy(a, wv, xs):
    for i in range(a.shape[0]):
        a[i] += wv * xs[i]


@njit(**JIT_CONV)
def conv2d_depthwise(x, w, b, out, geo):
    """C/G == 1: output channel k reads input channel k // M only (M = K/C, the channel multiplier)."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
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
                h = p * sh - geo.pad_top + r * dh
                if h < 0 or h >= H:
                    continue
                xrow = plane[h]
                for s in range(S):
                    off = s * dw - geo.pad_left
                    lo, hi = col_range(off, sw, W, Q)
                    if hi <= lo:
                        continue
                    if sw == 1:
                        _axpy(orow[lo:hi], w[k, 0, r, s], xrow[lo + off:hi + off])
                    else:
                        _axpy(orow[lo:hi], w[k, 0, r, s], xrow[lo * sw + off:(hi - 1) * sw + off + 1:sw])


# ---------------------------------------------------------------------------------------------------
# The phase-split depthwise kernel
# ---------------------------------------------------------------------------------------------------
# The padded plane a (P, Q) output reads is geo.extent_h x geo.extent_w (spec.input_extent_hw()); split
# into sh x sw stride phases, each phase has Hq x Wq positions (Hq = ceil(extent_h / sh), likewise Wq).
@njit(**INLINE)
def _copy_phase(xf, src, H, W, buf, geo, Hq, Wq, lo, hi):
    """buf[((a*sw + b)*Hq + i)*Wq + j] = plane[i*sh + a - pt, j*sw + b - pl] for the positions inside the
    plane (the H x W plane at flat offset ``src`` of ``xf``; lo/hi: per column phase b the in-plane
    columns [lo[b], hi[b]) of a phase row). The padding positions are the same for every plane: the
    caller zeroes them once per chunk of planes.

    In this layout the taps of window (r, s) for every output (p, q) sit at one flat offset from
    p*Wq + q in phase plane ((r*dh) % sh, (s*dw) % sw), so each tap is one long unit-stride loop."""
    sh, sw, pl = geo.stride_h, geo.stride_w, geo.pad_left
    for h in range(H):
        hp = h + geo.pad_top
        i = hp // sh
        if i >= Hq:
            break
        a = hp - i * sh
        for b_ in range(sw):
            l, e = lo[b_], hi[b_]
            if e > l:
                ucopy(buf, ((a * sw + b_) * Hq + i) * Wq + l, xf, src + h * W + l * sw + b_ - pl, e - l, sw)


@njit(**INLINE)
def _tap_offsets(geo, Hq, Wq):
    """Flat offset, in the phase-split buffer, of tap (r, s) for output (0, 0)."""
    sh, sw, dh, dw, S = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w, geo.S
    toff = np.empty(geo.R * S, dtype=np.int64)
    for r in range(geo.R):
        for s in range(S):
            toff[r * S + s] = ((((r * dh) % sh) * sw + (s * dw) % sw) * Hq + (r * dh) // sh) * Wq + (s * dw) // sw
    return toff


@njit(**JIT_CONV)
def conv2d_depthwise_phase(x, w, b, out, geo, bufs, accs):
    """C/G == 1: each (n, channel) plane is copied once, zero-padded and split into stride phases; then
    every tap is one axpy over the whole (P, Wq) output plane (garbage columns q >= Q included and
    dropped at the end). Zero padding is multiplied in, hence exact for finite weights only. Planes are
    processed in ``bufs.shape[0]`` parallel chunks; chunk ``ch`` works in ``bufs[ch]`` (sh*sw*Hq*Wq
    values, zero on entry: the padding positions are never written) and ``accs[ch]`` ((P-1)*Wq + Q
    values). The caller allocates both (``numba_cpu.phase_plan``), so the kernel allocates nothing and a
    buffer that does not fit is a MemoryError before it starts."""
    sh, sw = geo.stride_h, geo.stride_w
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    RS = R * S
    Hq = (geo.extent_h + sh - 1) // sh
    Wq = (geo.extent_w + sw - 1) // sw
    L = (P - 1) * Wq + Q
    lo, hi = tap_ranges(sw, 1, geo.pad_left, sw, W, Wq)   # per column phase: its in-plane columns
    toff = _tap_offsets(geo, Hq, Wq)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    ntask = N * C
    nchunk = bufs.shape[0]
    for ch in prange(nchunk):
        buf = bufs[ch]          # padding: zero on entry, never written
        acc = accs[ch]
        t0 = ch * ntask // nchunk
        t1 = (ch + 1) * ntask // nchunk
        for t in range(t0, t1):
            _copy_phase(xf, t * H * W, H, W, buf, geo, Hq, Wq, lo, hi)
            k0 = (t % C) * M
            ob = (t * M) * P * Q          # (n*K + c*M) * P*Q, since K = C*M
            for m in range(M):
                k = k0 + m
                ufill(acc, 0, L, b[k])
                for j in range(RS):
                    uaxpy(acc, 0, buf, toff[j], wf[k * RS + j], L)
                for p in range(P):
                    ucopy(of, ob + p * Q, acc, p * Wq, Q, 1)
                ob += P * Q


# ---------------------------------------------------------------------------------------------------
# im2col packing
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_SERIAL)
def im2col_pack(x, n, g, geo, col, col0):
    """col[(c*R + r)*S + s, col0 + p*Q + q] = x[n, g*Cg + c, h, w], zero where the tap is in the padding;
    ``col0`` places the image in a tile of several images side by side (col has Cg*R*S rows; P, Q come
    from ``geo``, since a tile's width is not one image's). ``im2col_pack_rows`` of every output row.

    Serial on purpose: it alternates with the BLAS GEMM, whose worker threads keep spinning for a while
    after each call, and a parallel pack fights them for the cores (measured on 2 cores, whole conv at
    N=8: 64x56x56 3x3 20 ms with this serial pack, 64-76 ms with a prange over channels)."""
    im2col_pack_rows(x, n, g, geo, col, col0, 0, geo.P)


@njit(**JIT_SERIAL)
def im2col_pack_rows(x, n, g, geo, col, col0, p0, p1):
    """The columns of output rows p0 <= p < p1 only (a band of one image, so the workspace of an image
    whose whole column matrix is too big is a band's): col[(c*R + r)*S + s, col0 + (p - p0)*Q + q]."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl = geo.pad_top, geo.pad_left
    R, S, P, Q = geo.R, geo.S, geo.P, geo.Q
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Cg = C // geo.groups
    ld = col.shape[1]
    xf = x.reshape(x.size)
    cf = col.reshape(col.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    d = col0
    for c in range(Cg):
        src = (n * C + g * Cg + c) * H * W
        for r in range(R):
            plo, phi = col_range(r * dh - pt, sh, H, P)
            a = max(p0, min(plo, p1))          # the band's rows whose tap row r is inside the input
            e = max(a, min(phi, p1))
            for s in range(S):
                lo, hi = slo[s], shi[s]
                ufill(cf, d, (a - p0) * Q, 0)
                srow = src + (a * sh - pt + r * dh) * W + lo * sw + s * dw - pl
                for p in range(a, e):
                    dd = d + (p - p0) * Q
                    ufill(cf, dd, lo, 0)
                    ucopy(cf, dd + lo, xf, srow, hi - lo, sw)
                    ufill(cf, dd + hi, Q - hi, 0)
                    srow += sh * W
                ufill(cf, d + (e - p0) * Q, (p1 - e) * Q, 0)
                d += ld


tolerate_corrupt_caches(globals())
