"""The ``planes`` direct conv of the ``numba`` backend: whole zero-padded input planes, every tap one long
unit-stride loop (the index of kernels is :mod:`._numba_kernels`).

Layout: C-contiguous x[N, C, H, W], w[K, C/G, R, S], b[K], out[N, K, P, Q]; ``geo`` is a
:class:`~._numba_common.ConvGeometry`.

- ``conv2d_planes``  any 2-D conv. One item is (image n, group g, a run of output channels). Its C/G input
  planes are copied once, zero-padded and split into stride phases (``_copy_planes``, which the depthwise
  phase kernel shares: in that layout tap (r, s) of every output (p, q) sits at one flat offset from
  p*Wq + q); then per block of ``KB4`` output channels and per tile of ``LT`` flat output positions, four
  accumulators take every (c, tap) as one loop over the tile, three taps at a time: each input value
  loaded serves twelve multiply-adds. The tile's positions q >= Q of each row are computed and dropped.

  For convs whose channels are few and whose planes are small (LeNet's, a small CNN's), where im2col's
  packing costs more than its GEMM gains and the blocked direct kernel's short rows vectorise poorly.
  Padded zeros are multiplied in: exact for finite weights only (``zero_fills_padding``). Each output is
  the bias, then c in order, then (r, s) in row-major order, one rounding each (with the contraction to
  FMA that every conv kernel here allows).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import (INLINE, JIT_CONV, JIT_CONV_SERIAL, serial_twin, tap_ranges, tolerate_corrupt_caches, ucopy,
                            ucopy_rows)

#: output channels per block: four accumulators share each input value loaded
KB4 = 4

#: flat output positions per tile: four tiles of LT values (16 KiB in float32) stay in L1 while every
#: (c, tap) of the block passes over them
LT = 1024


@njit(**INLINE)
def _copy_planes(xf, src, H, W, buf, base, HW, geo, Hq, Wq, lo, hi):
    """The H x W plane at flat ``src`` of ``xf`` into its phase-split, zero-padded copy at ``base`` of
    ``buf``: buf[base + (a*sw + b)*HW + i*Wq + j] = plane[i*sh + a - pad_top, j*sw + b - pad_left] for the
    positions inside the plane (the padding positions stay as the caller zeroed them)."""
    sh, sw, pl = geo.stride_h, geo.stride_w, geo.pad_left
    i = geo.pad_top // sh            # row h + pad_top of the padded plane is row i of phase a
    a = geo.pad_top - i * sh         # (kept by counting: a division per row cost more than a 7-value row)
    for h in range(H):
        if i >= Hq:
            break
        if sw == 1:                  # (one column phase: the common case, without the loop over phases)
            if hi[0] > lo[0]:
                ucopy_rows(buf, base + a * HW + i * Wq + lo[0], xf, src + h * W + lo[0] - pl, hi[0] - lo[0])
        else:
            for b_ in range(sw):
                l, e = lo[b_], hi[b_]
                if e > l:
                    ucopy(buf, base + (a * sw + b_) * HW + i * Wq + l, xf, src + h * W + l * sw + b_ - pl, e - l,
                          sw)
        a += 1
        if a == sh:
            a = 0
            i += 1


@njit(**INLINE)
def _phase_tap_offsets(R, S, dh, dw, sh, sw, phase_stride, Wq):
    """Per tap (r, s), row-major: its flat offset in ``_copy_planes``' layout, where the phases of a plane
    are ``phase_stride`` values apart and a phase's rows Wq apart: tap (r, s) of output (p, q) reads
    base + toff[r*S + s] + p*Wq + q."""
    toff = np.empty(R * S, dtype=np.int64)
    for r in range(R):
        for s in range(S):
            toff[r * S + s] = ((((r * dh) % sh) * sw + (s * dw) % sw) * phase_stride + ((r * dh) // sh) * Wq
                               + (s * dw) // sw)
    return toff


@njit(**INLINE)
def _taps3(a0, a1, a2, a3, n, buf, base, o0, o1, o2, wf, w0, w1, w2, w3):
    """a_k[i] += wf[w_k] * buf[base + o0 + i] + wf[w_k + 1] * buf[base + o1 + i] + wf[w_k + 2] * ...,
    for i < n (the four accumulators of a block; the three taps' weights are consecutive in wf)."""
    p0, p1, p2 = np.uint64(base + o0), np.uint64(base + o1), np.uint64(base + o2)
    u0, u1, u2 = wf[w0], wf[w0 + 1], wf[w0 + 2]
    v0, v1, v2 = wf[w1], wf[w1 + 1], wf[w1 + 2]
    y0, y1, y2 = wf[w2], wf[w2 + 1], wf[w2 + 2]
    z0, z1, z2 = wf[w3], wf[w3 + 1], wf[w3 + 2]
    for i in range(np.uint64(n)):
        x0 = buf[i + p0]
        x1 = buf[i + p1]
        x2 = buf[i + p2]
        s = a0[i]
        s += u0 * x0
        s += u1 * x1
        s += u2 * x2
        a0[i] = s
        s = a1[i]
        s += v0 * x0
        s += v1 * x1
        s += v2 * x2
        a1[i] = s
        s = a2[i]
        s += y0 * x0
        s += y1 * x1
        s += y2 * x2
        a2[i] = s
        s = a3[i]
        s += z0 * x0
        s += z1 * x1
        s += z2 * x2
        a3[i] = s


@njit(**INLINE)
def _tap1(a0, a1, a2, a3, n, buf, base, o0, wf, w0, w1, w2, w3):
    """:func:`_taps3` for one tap (what is left of R*S after the threes)."""
    p0 = np.uint64(base + o0)
    u, v, y, z = wf[w0], wf[w1], wf[w2], wf[w3]
    for i in range(np.uint64(n)):
        x0 = buf[i + p0]
        a0[i] += u * x0
        a1[i] += v * x0
        a2[i] += y * x0
        a3[i] += z * x0


@njit(**JIT_CONV_SERIAL)
def conv2d_planes_chunks(x, w, b, out, geo, kruns, buf, acc, c0, c1, nchunk):
    """Items (n, g, run of output channels): ``kruns`` runs per group (each a whole number of KB4 blocks),
    N*G*kruns items cut into ``nchunk`` chunks, of which this (serial) call runs [c0, c1) in order: it copies
    planes into ``buf`` (C/G phase-split planes, zero on entry: its padding positions are never written, so
    one buffer serves any number of chunks) and accumulates in ``acc`` (KB4 x LT). Which chunks one call runs
    changes no bit of the result (an item's outputs and their arithmetic are fixed by the item). The caller
    allocates both (``numba_cpu.planes_plan``)."""
    sh, sw, dh, dw = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    G = geo.groups
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = out.shape[2], out.shape[3]
    Kg = K // G
    RS = R * S
    R3 = RS - RS % 3
    lt = acc.shape[1]
    Hq = (geo.extent_h + sh - 1) // sh
    Wq = (geo.extent_w + sw - 1) // sw
    HW = Hq * Wq
    PB = sh * sw * HW
    L = (P - 1) * Wq + Q
    lo, hi = tap_ranges(sw, 1, geo.pad_left, sw, W, Wq)
    toff = _phase_tap_offsets(R, S, dh, dw, sh, sw, HW, Wq)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    nblk = (Kg + KB4 - 1) // KB4
    per_run = (nblk + kruns - 1) // kruns
    ntask = N * G * kruns
    PQ = P * Q
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    last = -1
    for t in range(c0 * ntask // nchunk, c1 * ntask // nchunk):
        ng = t // kruns
        n = ng // G
        g = ng % G
        if ng != last:      # this chunk's previous item may have copied these planes already
            for c in range(Cg):
                _copy_planes(xf, (n * C + g * Cg + c) * H * W, H, W, buf, c * PB, HW, geo, Hq, Wq, lo, hi)
            last = ng
        kend = (g + 1) * Kg - 1
        blk0 = (t % kruns) * per_run
        for blk in range(blk0, min(nblk, blk0 + per_run)):
            k0 = g * Kg + blk * KB4
            # a short block (Kg not a multiple of KB4) computes its last channel again in the rest
            k1, k2, k3 = min(k0 + 1, kend), min(k0 + 2, kend), min(k0 + 3, kend)
            for i0 in range(0, L, lt):
                m = min(lt, L - i0)
                bv0, bv1, bv2, bv3 = b[k0], b[k1], b[k2], b[k3]
                for i in range(m):
                    a0[i] = bv0
                    a1[i] = bv1
                    a2[i] = bv2
                    a3[i] = bv3
                for c in range(Cg):
                    base = c * PB + i0
                    for j in range(0, R3, 3):
                        _taps3(a0, a1, a2, a3, m, buf, base, toff[j], toff[j + 1], toff[j + 2], wf,
                               (k0 * Cg + c) * RS + j, (k1 * Cg + c) * RS + j, (k2 * Cg + c) * RS + j,
                               (k3 * Cg + c) * RS + j)
                    for j in range(R3, RS):
                        _tap1(a0, a1, a2, a3, m, buf, base, toff[j], wf, (k0 * Cg + c) * RS + j,
                              (k1 * Cg + c) * RS + j, (k2 * Cg + c) * RS + j, (k3 * Cg + c) * RS + j)
                # output rows p whose columns [p*Wq, p*Wq + Q) meet the tile [i0, i0 + m)
                for p in range(i0 // Wq, min(P, (i0 + m - 1) // Wq + 1)):
                    q0 = max(0, i0 - p * Wq)
                    q1 = min(Q, i0 + m - p * Wq)
                    if q1 > q0:
                        src = p * Wq + q0 - i0
                        o = n * K * PQ + p * Q + q0
                        ucopy(of, o + k0 * PQ, a0, src, q1 - q0, 1)
                        ucopy(of, o + k1 * PQ, a1, src, q1 - q0, 1)
                        ucopy(of, o + k2 * PQ, a2, src, q1 - q0, 1)
                        ucopy(of, o + k3 * PQ, a3, src, q1 - q0, 1)


@njit(**JIT_CONV)
def conv2d_planes(x, w, b, out, geo, kruns, bufs, accs):
    """``conv2d_planes_chunks`` in ``bufs.shape[0]`` chunks on Numba's threads, chunk ``ch`` in ``bufs[ch]`` and
    ``accs[ch]`` (a static split: the quicker launch on a quiet machine; ``numba_cpu._on_workers`` chooses
    between it and claimed chunks). Its serial twin runs a problem too small to split."""
    nchunk = bufs.shape[0]
    for ch in prange(nchunk):
        conv2d_planes_chunks(x, w, b, out, geo, kruns, bufs[ch], accs[ch], ch, ch + 1, nchunk)


#: the static launch of ``conv2d_planes_chunks`` (``_numba_kernels.CHUNKED``) is ``conv2d_planes`` itself
conv2d_planes_chunks_prange = conv2d_planes

#: the serial twin, for problems too small to split (the fast path of a repeat call)
conv2d_planes_serial = serial_twin(conv2d_planes)

tolerate_corrupt_caches(globals())
