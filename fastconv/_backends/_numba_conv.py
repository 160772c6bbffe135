"""Numba conv kernels of the ``numba`` backend (the index of kernels is :mod:`._numba_kernels`).

Layout: C-contiguous x[N, C, H, W], w[K, C/G, R, S], b[K] (zeros when the op has no bias), out[N, K, P, Q];
``geo`` is a :class:`~._numba_common.ConvGeometry`, read by field name.

- ``conv2d_direct``          every conv; one iteration per (n, group, block of KB output channels) writes
                             only that block; per output row a (KB, Q) accumulator stays in L1 and each
                             (c, r, s) tap is an axpy over the row's valid columns (vectorised over q).
- ``conv2d_depthwise_phase`` C/G == 1 (depthwise, any channel multiplier): the planes of several images
                             of one channel are zero-padded and split into stride phases once, then every
                             tap is one long unit-stride axpy over all their output planes. Padded zeros are multiplied in: exact for finite
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

from ._numba_common import (INLINE, JIT_CONV, JIT_CONV_SERIAL, JIT_SERIAL, col_range, tap_ranges,
                            tolerate_corrupt_caches,
                            uaxpy, uaxpy_strided, ucopy, ucopy_rows, ufill)
from ._numba_planes import _copy_planes, _phase_tap_offsets

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
# One task holds NB images of one channel, phase-major: buf[(phase * NB + j) * Hq*Wq + i*Wq + jj] (the
# layout of _numba_planes._copy_planes with a phase stride of NB planes), so that tap (r, s) of every
# output (p, q) of all NB images sits at one flat offset from j*Hq*Wq + p*Wq + q, and each tap is one
# loop over the NB planes at once (small planes: 7x7 outputs were 7-long loops one plane at a time).
@njit(**INLINE)
def _dw_taps3(acc, n, buf, o0, o1, o2, w0, w1, w2):
    """acc[i] += w0 * buf[o0 + i] + w1 * buf[o1 + i] + w2 * buf[o2 + i], for i < n, left to right."""
    p0, p1, p2 = np.uint64(o0), np.uint64(o1), np.uint64(o2)
    for i in range(np.uint64(n)):
        t = acc[i]
        t += w0 * buf[i + p0]
        t += w1 * buf[i + p1]
        t += w2 * buf[i + p2]
        acc[i] = t


@njit(**INLINE)
def _dw_taps9(acc, n, buf, toff, wf, wk, bias):
    """acc[i] = bias + wf[wk] * buf[toff[0] + i] + ... + wf[wk + 8] * buf[toff[8] + i], for i < n, left to
    right: a 3x3 window in one pass (nine loads and one store per output, against three passes of four
    loads and a store: measured 2.5x faster on 7x7 planes, Zen 3)."""
    p0, p1, p2 = np.uint64(toff[0]), np.uint64(toff[1]), np.uint64(toff[2])
    p3, p4, p5 = np.uint64(toff[3]), np.uint64(toff[4]), np.uint64(toff[5])
    p6, p7, p8 = np.uint64(toff[6]), np.uint64(toff[7]), np.uint64(toff[8])
    w0, w1, w2, w3, w4 = wf[wk], wf[wk + 1], wf[wk + 2], wf[wk + 3], wf[wk + 4]
    w5, w6, w7, w8 = wf[wk + 5], wf[wk + 6], wf[wk + 7], wf[wk + 8]
    for i in range(np.uint64(n)):
        t = bias
        t += w0 * buf[i + p0]
        t += w1 * buf[i + p1]
        t += w2 * buf[i + p2]
        t += w3 * buf[i + p3]
        t += w4 * buf[i + p4]
        t += w5 * buf[i + p5]
        t += w6 * buf[i + p6]
        t += w7 * buf[i + p7]
        t += w8 * buf[i + p8]
        acc[i] = t


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_phase(x, w, b, out, geo, NB, buf, acc, c0, c1, nchunk):
    """C/G == 1: per task (one channel, NB images), the planes are copied once, zero-padded and split into
    stride phases; then every tap is one axpy over the NB output planes together (columns q >= Q and the
    rows between planes computed and dropped): a 3x3 window in one pass, other windows three taps per
    pass. Zero padding is multiplied in, hence exact for finite weights only. The tasks are cut into
    ``nchunk`` chunks; this call runs chunks [c0, c1) in order (serial: the caller runs chunks on its
    workers, ``_cpu_pool.run_chunks``), in ``buf`` (sh*sw*NB*Hq*Wq values, zero on entry: the padding
    positions are never written) and ``acc`` (NB*Hq*Wq values). The caller allocates both
    (``numba_cpu.phase_plan``), so the kernel allocates nothing and a buffer that does not fit is a
    MemoryError before it starts. Each output: the bias, then the taps in (r, s) row-major order."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    RS = R * S
    R3 = RS - RS % 3
    Hq = (geo.extent_h + sh - 1) // sh
    Wq = (geo.extent_w + sw - 1) // sw
    HW = Hq * Wq
    PB = NB * HW                 # one phase of the task's NB planes
    lo, hi = tap_ranges(sw, 1, geo.pad_left, sw, W, Wq)   # per column phase: its in-plane columns
    toff = _phase_tap_offsets(R, S, dh, dw, sh, sw, PB, Wq)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    nblk = (N + NB - 1) // NB
    ntask = C * nblk
    for ch in range(c0, c1):
        for t in range(ch * ntask // nchunk, (ch + 1) * ntask // nchunk):
            c = t // nblk
            n0 = (t % nblk) * NB
            nb = min(NB, N - n0)
            for j in range(nb):
                _copy_planes(xf, ((n0 + j) * C + c) * H * W, H, W, buf, j * HW, PB, geo, Hq, Wq, lo, hi)
            L = (nb - 1) * HW + (P - 1) * Wq + Q
            for m in range(M):
                k = c * M + m
                wk = k * RS
                if RS == 9:
                    _dw_taps9(acc, L, buf, toff, wf, wk, b[k])
                else:
                    ufill(acc, 0, L, b[k])
                    for j in range(0, R3, 3):
                        _dw_taps3(acc, L, buf, toff[j], toff[j + 1], toff[j + 2], wf[wk + j], wf[wk + j + 1],
                                  wf[wk + j + 2])
                    for j in range(R3, RS):
                        uaxpy(acc, 0, buf, toff[j], wf[wk + j], L)
                for j in range(nb):
                    ob = ((n0 + j) * K + k) * P * Q
                    for p in range(P):
                        ucopy_rows(of, ob + p * Q, acc, j * HW + p * Wq, Q)


@njit(**JIT_CONV)
def conv2d_depthwise_phase_prange(x, w, b, out, geo, NB, bufs, accs, n):
    """``conv2d_depthwise_phase``'s ``n`` chunks on Numba's threads, chunk ``ch`` in ``bufs[ch]`` and
    ``accs[ch]`` (a static split: the quicker launch on a quiet machine; ``numba_cpu._on_workers``
    chooses between it and claimed chunks)."""
    for ch in prange(n):
        conv2d_depthwise_phase(x, w, b, out, geo, NB, bufs[ch], accs[ch], ch, ch + 1, n)


# ---------------------------------------------------------------------------------------------------
# The flat depthwise kernel
# ---------------------------------------------------------------------------------------------------
# At stride_w 2, where the input's width is even (W = 2 * Wp) and an output row fits one column phase
# (Q <= Wp), a plane's column phases are a flat deinterleave of the whole plane (flat index parity is
# column parity), with no work per row: the phase-split kernel's strided copies of 7-28-value rows (about
# 42 cycles a row, Zen 4) were most of its time on 14x14 and 28x28 planes. The price of dropping the
# per-row padding columns: a tap whose column is outside the input reads the neighbouring row of the same
# phase instead (row pitch Wp). So each distinct (phase, column shift) of the taps gets its own copy of
# the phase, with the columns that only such wrapped reads meet zeroed, and a tap reads its copy at
# ``copy base + shift``; rows are not split (stride_h 2 computes the odd rows and drops them), and rows
# above and below the input stay zero (the caller zeroes the buffer once). At stride 1 the same plan
# (three copies, zeroed columns) measured no faster than the phase kernel's unit-stride row copies.
#
# Layout of one task (NB images of one channel): copy cc of plane j starts at M0 + cc*CB + j*PL (PL =
# extent_h * Wp, region row u holding input row u - pad_top; CB = NB*PL + M0; M0 = the largest |shift|,
# the zero margin that the shifted reads of the first and last positions reach). Output (p, q) of plane j
# is acc[j*PL + sh*p*Wp + q]: tap (r, s) of every output of the task sits at the flat offset
# toff[r*S + s] = M0 + cc(s)*CB + r*dh*Wp + shift(s) from it, one loop over all NB planes (the rows
# between planes computed and dropped).
@njit(**INLINE)
def _deinterleave2(dst, d0, d1, src, s, n):
    """dst[d0 + j] = src[s + 2j] and dst[d1 + j] = src[s + 2j + 1], for j < n."""
    a, c, e = np.uint64(d0), np.uint64(d1), np.uint64(s)
    two, one = np.uint64(2), np.uint64(1)
    for j in range(np.uint64(n)):
        dst[a + j] = src[e + two * j]
        dst[c + j] = src[e + two * j + one]


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_flat(x, w, b, out, geo, lay, col_copy, copy_phase, copy_shift, buf, acc, c0, c1, nchunk):
    """C/G == 1, stride_w 2, W = 2 * Wp, Q <= Wp: per task (one channel, NB images), each
    plane is copied whole into its phase copies (``numba_cpu.flat_layout``: ``lay`` = (NB, PL, M0, CB),
    ``col_copy[s]`` the copy tap column s reads, ``copy_phase``/``copy_shift`` each copy's column phase
    and shift), the columns only wrapped reads meet are zeroed, then every tap is one loop over the NB
    output planes together (a 3x3 window in one pass, as ``conv2d_depthwise_phase``). Padded zeros are
    multiplied in: exact for finite weights only. Chunks [c0, c1) of ``nchunk``, serial, in ``buf`` (zero
    on entry) and ``acc`` (NB*PL values), as ``conv2d_depthwise_phase``. Each output: the bias, then the
    taps in (r, s) row-major order (that kernel's sums, bit for bit)."""
    sh, dh = geo.stride_h, geo.dil_h
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    M = K // C
    RS = R * S
    R3 = RS - RS % 3
    NB, PL, M0, CB = lay[0], lay[1], lay[2], lay[3]
    Wp = W // 2
    ncopy = copy_phase.size
    hin = max(0, min(H, geo.extent_h - geo.pad_top))    # input rows the output reads
    nph = hin * Wp                                       # values of one phase of a plane's rows [0, hin)
    top = M0 + geo.pad_top * Wp                          # region row pad_top: input row 0
    toff = np.empty(RS, dtype=np.int64)
    for r in range(R):
        for s in range(S):
            toff[r * S + s] = M0 + col_copy[s] * CB + r * dh * Wp + copy_shift[col_copy[s]]
    first = np.full(2, -1, dtype=np.int64)               # per phase: the copy its values are written to
    for cc in range(ncopy):
        if first[copy_phase[cc]] < 0:
            first[copy_phase[cc]] = cc
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    nblk = (N + NB - 1) // NB
    ntask = C * nblk
    for ch in range(c0, c1):
        for t in range(ch * ntask // nchunk, (ch + 1) * ntask // nchunk):
            c = t // nblk
            n0 = (t % nblk) * NB
            nb = min(NB, N - n0)
            for j in range(nb):
                src = ((n0 + j) * C + c) * H * W
                d = top + j * PL
                if first[0] >= 0 and first[1] >= 0:
                    _deinterleave2(buf, d + first[0] * CB, d + first[1] * CB, xf, src, nph)
                else:                            # (the taps read one column phase)
                    for ph in range(2):
                        if first[ph] >= 0:
                            ucopy(buf, d + first[ph] * CB, xf, src + ph, nph, 2)
                for cc in range(ncopy):
                    if cc != first[copy_phase[cc]]:
                        ucopy_rows(buf, d + cc * CB, buf, d + first[copy_phase[cc]] * CB, nph)
                for cc in range(ncopy):          # (after every copy is made: a phase's first one is shifted too)
                    sft = copy_shift[cc]
                    q0 = max(0, Wp + sft) if sft < 0 else 0
                    q1 = Wp if sft < 0 else min(Wp, sft)
                    for q in range(q0, q1):
                        e = np.uint64(d + cc * CB + q)
                        for h in range(np.uint64(hin)):
                            buf[e + h * np.uint64(Wp)] = 0
            L = (nb - 1) * PL + sh * (P - 1) * Wp + Q
            for m in range(M):
                k = c * M + m
                wk = k * RS
                if RS == 9:
                    _dw_taps9(acc, L, buf, toff, wf, wk, b[k])
                else:
                    ufill(acc, 0, L, b[k])
                    for j in range(0, R3, 3):
                        _dw_taps3(acc, L, buf, toff[j], toff[j + 1], toff[j + 2], wf[wk + j], wf[wk + j + 1],
                                  wf[wk + j + 2])
                    for j in range(R3, RS):
                        uaxpy(acc, 0, buf, toff[j], wf[wk + j], L)
                for j in range(nb):
                    ob = ((n0 + j) * K + k) * P * Q
                    for p in range(P):
                        ucopy_rows(of, ob + p * Q, acc, j * PL + sh * p * Wp, Q)


@njit(**JIT_CONV)
def conv2d_depthwise_flat_prange(x, w, b, out, geo, lay, col_copy, copy_phase, copy_shift, bufs, accs, n):
    """``conv2d_depthwise_flat``'s ``n`` chunks on Numba's threads, as ``conv2d_depthwise_phase_prange``."""
    for ch in prange(n):
        conv2d_depthwise_flat(x, w, b, out, geo, lay, col_copy, copy_phase, copy_shift, bufs[ch], accs[ch], ch,
                              ch + 1, n)


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
                if sh == 1 and sw == 1 and lo == 0 and hi == Q and Q == W:
                    # whole input rows, one after another (a 1x1 conv's plane, the middle tap of a 3x3
                    # one): one copy of the band's rows (7x7 planes: 49 values, not seven copies of 7)
                    ucopy(cf, d + (a - p0) * Q, xf, srow, (e - a) * Q, 1)
                else:
                    for p in range(a, e):
                        dd = d + (p - p0) * Q
                        ufill(cf, dd, lo, 0)
                        ucopy(cf, dd + lo, xf, srow, hi - lo, sw)
                        ufill(cf, dd + hi, Q - hi, 0)
                        srow += sh * W
                ufill(cf, d + (e - p0) * Q, (p1 - e) * Q, 0)
                d += ld


tolerate_corrupt_caches(globals())
