"""Numba gradient kernels of depthwise convolutions (C/groups == 1, any channel multiplier M = K/C), for the
``numba`` backend (the index of kernels is :mod:`._numba_kernels`).

Layout as :mod:`._numba_grad`'s, with the forward problem's letters: dy[N, K, P, Q], w[K, 1, R, S],
x/dx[N, C, H, W], dw[K, 1, R, S]; output channel k reads input channel c = k // M. The general gradient
kernels treat a depthwise problem as C groups of one channel: their blocks of output channels hold one
channel, and their per-tap row loops run over rows of a few pixels (7 on MobileNet's last layers) one tap at
a time. These walk each plane once per tap with flat, unsigned indices, several planes per chunk.
Taps are clipped to the input (padding never meets an operand): exact for every weight and every dy. Each
output's terms are summed in one fixed order, no atomics: results are bitwise reproducible run to run.

- ``conv2d_depthwise_input``   dx: per (n, c) plane, dx starts at the bias, then for each of the M output
                               channels j, tap (r, s) (ascending) and output row p whose tap row is inside,
                               dx's row gets w[k, r, s] * dy's row (strided by the stride along W).
- ``conv2d_depthwise_weight``  dw: per output channel k, a lane accumulator per tap over the output columns
                               collects dy * x over (n, p); then each tap's lanes are summed in column order.
- ``conv2d_depthwise_weight_cblock``  dw, channel multiplier 1, any stride: CBLK channels side by side,
                               the channel innermost (the layout is described above the kernel); its
                               padding zeros meet dy, so ``numba_cpu`` recomputes a NaN result with
                               ``conv2d_depthwise_weight``.
- ``conv2d_depthwise_weight_phase``  dw on the forward phase kernel's layout: x's planes of NB images
                               zero-padded and split into stride phases (``_copy_planes``), dy's planes at
                               the same row stride with zeros between; then each tap is one long update of
                               LW lanes over all NB planes at once. Its zeros meet dy (padding) and x
                               (between dy's rows): exact for finite operands only, so ``numba_cpu`` falls
                               back to ``conv2d_depthwise_weight`` when a NaN comes out.

All are serial and take ``c0, c1, nchunk``: the planes (output channels; channel blocks) are cut into
``nchunk`` chunks and a call runs chunks [c0, c1); ``numba_cpu`` hands the chunks to its workers
(``_cpu_pool.run_chunks``), each with its own scratch (``lanes``: R*S*Q values; the phase kernel's
``buf``, ``dyb``, ``ln``; the channel-blocked one's ``xt``, ``dyt``, ``acc``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT_CONV, JIT_CONV_SERIAL, tap_ranges, tolerate_corrupt_caches, ucopy_rows, ufill
from ._numba_planes import _copy_planes, _phase_tap_offsets

#: lanes per tap of ``conv2d_depthwise_weight_phase``: flat position i adds to lane i % LW of its tap, so
#: the R*S*LW lanes stay in L1 and each tap's closing sum is LW adds whatever the planes' size
LW = 64


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_input(dy, w, b, dx, geo, c0, c1, nchunk):
    sh, sw, dh, dwl = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl = geo.pad_top, geo.pad_left
    N, K, P, Q = dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    R, S = w.shape[2], w.shape[3]
    M = K // C
    NC = N * C
    dyf = dy.reshape(dy.size)
    wf = w.reshape(w.size)
    dxf = dx.reshape(dx.size)
    plo, phi = tap_ranges(R, dh, pt, sh, H, P)      # per tap row r: the p whose input row is in [0, H)
    qlo, qhi = tap_ranges(S, dwl, pl, sw, W, Q)     # per tap column s: the q whose column is in [0, W)
    st = np.uint64(sw)
    for ch in range(c0, c1):
        for t in range(ch * NC // nchunk, (ch + 1) * NC // nchunk):
            n = t // C
            c = t - n * C
            base = t * H * W
            ufill(dxf, base, H * W, b[c])
            for j in range(M):
                k = c * M + j
                dyb = (n * K + k) * P * Q
                for r in range(R):
                    for s in range(S):
                        lo, hi = qlo[s], qhi[s]
                        if hi <= lo:
                            continue
                        wv = wf[(k * R + r) * S + s]
                        for p in range(plo[r], phi[r]):
                            d0 = np.uint64(base + (p * sh - pt + r * dh) * W + lo * sw + s * dwl - pl)
                            y0 = np.uint64(dyb + p * Q + lo)
                            for i in range(np.uint64(hi - lo)):
                                dxf[d0 + i * st] += wv * dyf[y0 + i]


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_weight(x, dy, dw, geo, lanes, c0, c1, nchunk):
    sh, sw, dh, dwl = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl = geo.pad_top, geo.pad_left
    N, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    R, S = dw.shape[2], dw.shape[3]
    M = K // C
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dwf = dw.reshape(dw.size)
    plo, phi = tap_ranges(R, dh, pt, sh, H, P)
    qlo, qhi = tap_ranges(S, dwl, pl, sw, W, Q)
    st = np.uint64(sw)
    for ch in range(c0, c1):
        for k in range(ch * K // nchunk, (ch + 1) * K // nchunk):
            c = k // M
            lanes[:] = 0
            for n in range(N):
                xb = (n * C + c) * H * W
                dyb = (n * K + k) * P * Q
                for r in range(R):
                    for p in range(plo[r], phi[r]):
                        xrow = xb + (p * sh - pt + r * dh) * W
                        for s in range(S):
                            lo, hi = qlo[s], qhi[s]
                            l0 = np.uint64((r * S + s) * Q + lo)
                            y0 = np.uint64(dyb + p * Q + lo)
                            x0 = np.uint64(xrow + lo * sw + s * dwl - pl)
                            for i in range(np.uint64(hi - lo)):
                                lanes[l0 + i] += dyf[y0 + i] * xf[x0 + i * st]
            for tap in range(R * S):
                acc = lanes[tap * Q]
                for q in range(1, Q):
                    acc += lanes[tap * Q + q]
                dwf[k * R * S + tap] = acc


@njit(**INLINE)
def _lanes_add(lanes, l0, a, a0, b, b0, n):
    """lanes[l0 + i % LW] = that + a[a0 + i] * b[b0 + i], for i < n in order, one tile of LW positions at a
    time (written out, not ``+=``: Numba 0.68 leaves the ``+=`` form of a three-array update scalar)."""
    ul, ua, ub = np.uint64(l0), np.uint64(a0), np.uint64(b0)
    for t0 in range(0, n, LW):
        m = np.uint64(min(LW, n - t0))
        u0 = np.uint64(t0)
        for i in range(m):
            lanes[ul + i] = lanes[ul + i] + a[ua + u0 + i] * b[ub + u0 + i]


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_weight_phase(x, dy, dw, geo, NB, buf, dyb, ln, c0, c1, nchunk):
    """dw[k, 0, r, s] = sum over (n, p, q) of dy[n, k, p, q] * xpad[n, k // M, p*sh + r*dh, q*sw + s*dw].
    Per output channel k (chunks [c0, c1) of ``nchunk``, in ``buf``, ``dyb`` and ``ln``), per block of NB
    images: x's planes of channel k // M go into ``buf`` as the forward phase kernel lays them out
    (sh*sw*NB*Hq*Wq values, zero padding), dy's planes into ``dyb`` at row stride Wq and plane stride
    Hq*Wq (NB*Hq*Wq values: the positions between rows and planes are never written, so stay the zero they
    were allocated with); then for each tap t and flat position i (ascending), lane (t, i % LW) += dy[i] *
    x[toff[t] + i]. Each tap's LW lanes
    are then summed in lane order. Padding zeros meet dy and the zeros between dy's rows meet x: for finite
    operands they add nothing; an Inf or NaN among them makes a NaN, which the caller checks for."""
    sh, sw, dh, dwl = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    N, C, H, W = x.shape
    K, P, Q = dy.shape[1], dy.shape[2], dy.shape[3]
    R, S = dw.shape[2], dw.shape[3]
    M = K // C
    RS = R * S
    Hq = (geo.extent_h + sh - 1) // sh
    Wq = (geo.extent_w + sw - 1) // sw
    HW = Hq * Wq
    PB = NB * HW
    lo, hi = tap_ranges(sw, 1, geo.pad_left, sw, W, Wq)
    toff = _phase_tap_offsets(R, S, dh, dwl, sh, sw, PB, Wq)
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dwf = dw.reshape(dw.size)
    for ch in range(c0, c1):
        for k in range(ch * K // nchunk, (ch + 1) * K // nchunk):
            c = k // M
            ufill(ln, 0, RS * LW, 0)
            for n0 in range(0, N, NB):
                nb = min(NB, N - n0)
                for j in range(nb):
                    _copy_planes(xf, ((n0 + j) * C + c) * H * W, H, W, buf, j * HW, PB, geo, Hq, Wq, lo, hi)
                    for p in range(P):
                        ucopy_rows(dyb, j * HW + p * Wq, dyf, (((n0 + j) * K + k) * P + p) * Q, Q)
                L = (nb - 1) * HW + (P - 1) * Wq + Q
                for t in range(RS):
                    _lanes_add(ln, t * LW, dyb, 0, buf, toff[t], max(L, 0))
            for t in range(RS):
                acc = ln[t * LW]
                for i in range(1, LW):
                    acc += ln[t * LW + i]
                dwf[k * RS + t] = acc


# ---------------------------------------------------------------------------------------------------
# The channel-blocked weight gradient
# ---------------------------------------------------------------------------------------------------
# dw[k, tap] is a sum over every (n, p, q): on small planes a per-plane kernel spends its time on loops
# over 7-value rows and on closing each (k, tap)'s sum. Here CBLK channels go side by side instead, as
# oneDNN's blocked layouts do: per image, the block's x planes are copied zero-padded and split into
# column phases into xt with the channel innermost (CBLK values per position), dy's planes into dyt the
# same way. A tap's operands for one output row are then two contiguous runs of Q*CBLK values (dy's row;
# the x row the tap reads, in the tap's column phase), so each (image, output row, tap) is one long
# multiply-add into the tap's Q*CBLK row lanes, and a block's dw is its row lanes summed over q once at
# the end: CBLK channels' sums closed at once.
#: channels per block: one 512-bit vector of float32 (two of 256 bits)
CBLK = 16


@njit(**INLINE)
def _gather_channels(dst, d0, src, s0, stride, nb):
    """dst[d0 + j] = src[s0 + j*stride] for j < nb (CBLK of them in one loop of constant length, which
    LLVM turns into one vector gather)."""
    ud, us, st = np.uint64(d0), np.uint64(s0), np.uint64(stride)
    if nb == CBLK:
        for j in range(np.uint64(CBLK)):
            dst[ud + j] = src[us + j * st]
    else:
        for j in range(np.uint64(nb)):
            dst[ud + j] = src[us + j * st]


@njit(**INLINE)
def _row_fma(acc, a0, d, d0, xt, x0, n):
    """acc[a0 + i] += d[d0 + i] * xt[x0 + i], for i < n."""
    ua, ud, ux = np.uint64(a0), np.uint64(d0), np.uint64(x0)
    for i in range(np.uint64(n)):
        acc[ua + i] = acc[ua + i] + d[ud + i] * xt[ux + i]


@njit(**INLINE)
def _row_fma3(acc, a0, a1, a2, d, d0, xt, x0, x1, x2, n):
    """acc[a_t + i] += d[d0 + i] * xt[x_t + i] for t = 0, 1, 2 and i < n (three taps' row lanes, one load
    of d for the three)."""
    u0, u1, u2, ud = np.uint64(a0), np.uint64(a1), np.uint64(a2), np.uint64(d0)
    v0, v1, v2 = np.uint64(x0), np.uint64(x1), np.uint64(x2)
    for i in range(np.uint64(n)):
        g = d[ud + i]
        acc[u0 + i] = acc[u0 + i] + g * xt[v0 + i]
        acc[u1 + i] = acc[u1 + i] + g * xt[v1 + i]
        acc[u2 + i] = acc[u2 + i] + g * xt[v2 + i]


@njit(**INLINE)
def _row_fma3x2(acc, a0, a1, a2, d, d0, d1, xt, x0, x1, x2, y, n):
    """Two output rows at once: acc[a_t + i] += d[d0 + i] * xt[x_t + i], then += d[d1 + i] * xt[x_t + y + i]
    (the next row's, y values on), for t = 0, 1, 2 and i < n: the same two updates in the same order as
    two calls of :func:`_row_fma3`, with one load and store of the lanes for both."""
    u0, u1, u2, ud, ue = np.uint64(a0), np.uint64(a1), np.uint64(a2), np.uint64(d0), np.uint64(d1)
    v0, v1, v2 = np.uint64(x0), np.uint64(x1), np.uint64(x2)
    w0, w1, w2 = np.uint64(x0 + y), np.uint64(x1 + y), np.uint64(x2 + y)
    for i in range(np.uint64(n)):
        g, h = d[ud + i], d[ue + i]
        acc[u0 + i] = (acc[u0 + i] + g * xt[v0 + i]) + h * xt[w0 + i]
        acc[u1 + i] = (acc[u1 + i] + g * xt[v1 + i]) + h * xt[w1 + i]
        acc[u2 + i] = (acc[u2 + i] + g * xt[v2 + i]) + h * xt[w2 + i]


@njit(**JIT_CONV_SERIAL)
def conv2d_depthwise_weight_cblock(x, dy, dw, geo, xt, dyt, acc, c0, c1, nchunk):
    """dw[k, 0, r, s] = sum over (n, p, q) of dy[n, k, p, q] * xpad[n, k, p*sh + r*dh, q*sw + s*dw], K == C
    (channel multiplier 1). Per block of CBLK channels (chunks [c0, c1) of ``nchunk``), with Wq =
    ceil(extent_w / sw): ``acc`` (R*S*Q*CBLK values) starts at zero; per image n ascending, x's planes of
    the block go into ``xt`` (extent_h * sw * Wq * CBLK values: xt[((u*sw + b)*Wq + v)*CBLK + j] =
    xpad[n, k0 + j, u, v*sw + b]; the padding positions are never written, so stay the zero the caller
    allocated) and dy's into ``dyt`` (P*Q*CBLK values, dyt[(p*Q + q)*CBLK + j] = dy[n, k0 + j, p, q]);
    then for each output row p (ascending) and tap, acc[tap, q, j] += dyt[p, q, j] * xt[the tap's x
    position for (p, q), j] (the taps of a window row three at a time, two output rows per pass). Then
    dw[k0 + j, tap] = the sum over q ascending of acc[tap, q, j]. Padding zeros meet dy: exact for finite
    operands only, so ``numba_cpu`` recomputes a NaN result with ``conv2d_depthwise_weight``. A last block
    of fewer channels computes its unused lanes from stale values and drops them."""
    sh, sw, dh, dwl = geo.stride_h, geo.stride_w, geo.dil_h, geo.dil_w
    pt, pl = geo.pad_top, geo.pad_left
    N, C, H, W = x.shape
    P, Q = dy.shape[2], dy.shape[3]
    R, S = dw.shape[2], dw.shape[3]
    RS = R * S
    S3 = S - S % 3
    EH, EW = geo.extent_h, geo.extent_w
    Wq = (EW + sw - 1) // sw
    B = CBLK
    QB = Q * B
    nblk = (C + B - 1) // B
    toff = np.empty(RS, dtype=np.int64)      # tap (r, s) of output (p, q): xt at (p*sh*sw*Wq + q)*B + toff
    for r in range(R):
        for s in range(S):
            toff[r * S + s] = ((r * dh * sw + (s * dwl) % sw) * Wq + (s * dwl) // sw) * B
    h1 = min(H, EH - pt)                     # the rows and columns of x the output reads
    w1 = min(W, EW - pl)
    PQ = P * Q
    HW = H * W
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dwf = dw.reshape(dw.size)
    for ch in range(c0, c1):
        for blk in range(ch * nblk // nchunk, (ch + 1) * nblk // nchunk):
            k0 = blk * B
            nb = min(B, C - k0)
            ufill(acc, 0, RS * QB, 0)
            for n in range(N):
                xs = (n * C + k0) * HW
                for h in range(h1):
                    for b in range(sw):                         # column phase b: columns v = vq*sw + b
                        vq0 = max(0, pl - b + sw - 1) // sw     # the first vq whose column w = v - pl >= 0
                        d = (((h + pt) * sw + b) * Wq + vq0) * B
                        e = xs + h * W + vq0 * sw + b - pl
                        for _ in range(vq0, (w1 + pl - b + sw - 1) // sw):
                            _gather_channels(xt, d, xf, e, HW, nb)
                            d += B
                            e += sw
                ds = (n * C + k0) * PQ
                for i in range(PQ):
                    _gather_channels(dyt, i * B, dyf, ds + i, PQ, nb)
                ystep = sh * sw * Wq * B                        # xt values from one output row's to the next's
                for p in range(0, P, 2):
                    x0 = p * ystep
                    two = p + 1 < P
                    for r in range(R):
                        t = r * S
                        for _ in range(S3 // 3):                # three taps of a window row at a time
                            if two:                             # (and two output rows)
                                _row_fma3x2(acc, t * QB, (t + 1) * QB, (t + 2) * QB, dyt, p * QB, (p + 1) * QB, xt,
                                            x0 + toff[t], x0 + toff[t + 1], x0 + toff[t + 2], ystep, QB)
                            else:
                                _row_fma3(acc, t * QB, (t + 1) * QB, (t + 2) * QB, dyt, p * QB, xt, x0 + toff[t],
                                          x0 + toff[t + 1], x0 + toff[t + 2], QB)
                            t += 3
                        for t in range(r * S + S3, (r + 1) * S):
                            _row_fma(acc, t * QB, dyt, p * QB, xt, x0 + toff[t], QB)
                            if two:
                                _row_fma(acc, t * QB, dyt, (p + 1) * QB, xt, x0 + ystep + toff[t], QB)
            for t in range(RS):
                for j in range(nb):
                    a = acc[t * QB + j]
                    for q in range(1, Q):
                        a += acc[t * QB + q * B + j]
                    dwf[(k0 + j) * RS + t] = a


# The chunks of each kernel above on Numba's threads (a static split: the quicker launch on a quiet machine;
# numba_cpu._on_workers chooses between these and claimed chunks); scratch row ch for chunk ch.
@njit(**JIT_CONV)
def conv2d_depthwise_input_prange(dy, w, b, dx, geo, n):
    for ch in prange(n):
        conv2d_depthwise_input(dy, w, b, dx, geo, ch, ch + 1, n)


@njit(**JIT_CONV)
def conv2d_depthwise_weight_prange(x, dy, dw, geo, lanes, n):
    for ch in prange(n):
        conv2d_depthwise_weight(x, dy, dw, geo, lanes[ch], ch, ch + 1, n)


@njit(**JIT_CONV)
def conv2d_depthwise_weight_cblock_prange(x, dy, dw, geo, xts, dyts, accs, n):
    for ch in prange(n):
        conv2d_depthwise_weight_cblock(x, dy, dw, geo, xts[ch], dyts[ch], accs[ch], ch, ch + 1, n)


@njit(**JIT_CONV)
def conv2d_depthwise_weight_phase_prange(x, dy, dw, geo, NB, bufs, dybufs, lanes, n):
    for ch in prange(n):
        conv2d_depthwise_weight_phase(x, dy, dw, geo, NB, bufs[ch], dybufs[ch], lanes[ch], ch, ch + 1, n)


tolerate_corrupt_caches(globals())
