"""Numba 3-D convolution kernels of the ``numba`` backend: the forward, the input gradient (also the
transposed convolution) and the weight gradient (the index of kernels is :mod:`._numba_kernels`).

Layout, C-contiguous, with the *forward* problem's letters (the spec's fields): x/dx[N, C, D, H, W],
w/dw[K, C/G, T, R, S], b[K] (conv; zeros when the op has no bias) or b[C] (input gradient), out/dy[N, K, Z, P,
Q]; ``geo`` is a :class:`~._numba_common.Conv3dGeometry`, read by field name. They are the 2-D kernels of
``_numba_conv`` / ``_numba_grad`` with the depth loop added (a tap (t, r, s) reads depth ``z*stride_d -
pad_front + t*dil_d``); every parallel kernel runs ``prange`` over disjoint outputs and sums each output's
terms in one fixed order (no atomics): results are bitwise reproducible run to run.

- ``conv3d_direct``        every conv; one iteration per (n, group, block of KB output channels, output
                           slice z) writes only that block's slice; per output row (z, p) a (KB, Q)
                           accumulator starts at the bias and each in-bounds (c, t, r, s) tap is an axpy over
                           the row's valid columns. Taps in the padding are never formed: exact for every
                           weight.
- ``vol2col_pack``         output slices [z0, z1) of one image of one group into col[Cg*T*R*S, (z1-z0)*P*Q],
                           zeros where a tap is in the padding (the GEMM that follows multiplies them:
                           ``zero_fills_padding``). Serial, like ``im2col_pack``: it alternates with the
                           BLAS GEMM run from Python (numba_cpu).
- ``conv3d_input_direct``  dx by gathering: one iteration per (n, group, block of CB input channels, input
                           slice d) owns those dx rows; per input row a (CB, W) accumulator starts at the
                           bias, then each (t, r, k, s) term reaching the row is an axpy of a dy row into it
                           (taps that would read padding are never formed: exact for every weight).
- ``col2vol_add``          dx[n, g*Cg + c, d, h, w] += col[((c*T + t)*R + r)*S + s, (z - z0)*P*Q + p*Q + q]
                           for every in-bounds tap of output slices [z0, z1), rows in order; taps in the
                           padding dropped (exact for every weight). Serial (it alternates with the GEMM
                           col = w_g^T @ dy_g).
- ``conv3d_weight_direct`` dw: one iteration per (group, block of KBW output channels, input channel) owns
                           those dw[k, c] filters; per (kk, t, r, s) a lane accumulator over the output
                           columns collects x*dy over (n, z, p) ascending, then its lanes are summed in
                           order. Taps clipped to the input (exact for every dy).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba_common import (JIT_CONV, JIT_SERIAL, col_range, tap_ranges, tolerate_corrupt_caches, uaxpy,
                            uaxpy_strided, ucopy, ufill)
from ._numba_conv import KB
from ._numba_grad import CB, KBW, _fma_lanes, _scatter_add, _scatter_axpy


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def conv3d_direct(x, w, b, out, geo):
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dw = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl, G = geo.pad_front, geo.pad_top, geo.pad_left, geo.groups
    N, C, D, H, W = x.shape
    K, Cg, T, R, S = w.shape
    Z, P, Q = out.shape[2], out.shape[3], out.shape[4]
    Kg = K // G
    nkb = (Kg + KB - 1) // KB
    TRS = T * R * S
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    for task in prange(N * G * nkb * Z):
        z = task % Z
        u = task // Z
        n = u // (G * nkb)
        g = (u // nkb) % G
        k0 = g * Kg + (u % nkb) * KB
        kn = min(KB, g * Kg + Kg - k0)
        acc = np.empty(KB * Q, dtype=out.dtype)   # row kk of the block at kk*Q
        tlo, thi = col_range(z * sd - pf, dd, D, T)
        for p in range(P):
            for kk in range(kn):
                ufill(acc, kk * Q, Q, b[k0 + kk])
            rlo, rhi = col_range(p * sh - pt, dh, H, R)
            for c in range(Cg):
                xc = (n * C + g * Cg + c) * D * H * W
                for t in range(tlo, thi):
                    xs = xc + (z * sd - pf + t * dd) * H * W
                    for r in range(rlo, rhi):
                        xrow = xs + (p * sh - pt + r * dh) * W
                        for s in range(S):
                            lo, hi = slo[s], shi[s]
                            if hi <= lo:
                                continue
                            x0 = xrow + lo * sw + s * dw - pl
                            w0 = (((k0 * Cg + c) * T + t) * R + r) * S + s
                            for kk in range(kn):
                                wv = wf[w0 + kk * Cg * TRS]
                                if sw == 1:
                                    uaxpy(acc, kk * Q + lo, xf, x0, wv, hi - lo)
                                else:
                                    uaxpy_strided(acc, kk * Q + lo, xf, x0, sw, wv, hi - lo)
            for kk in range(kn):
                ucopy(of, (((n * K + k0 + kk) * Z + z) * P + p) * Q, acc, kk * Q, Q, 1)


@njit(**JIT_SERIAL)
def vol2col_pack(x, n, g, geo, col, z0, z1):
    """col[((c*T + t)*R + r)*S + s, (z - z0)*P*Q + p*Q + q] = x[n, g*Cg + c, d, h, w] for the output slices
    z in [z0, z1), zero where the tap is in the padding (col has Cg*T*R*S rows of at least (z1-z0)*P*Q)."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dw = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl = geo.pad_front, geo.pad_top, geo.pad_left
    T, R, S, P, Q = geo.T, geo.R, geo.S, geo.P, geo.Q
    C, D, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    Cg = C // geo.groups
    PQ = P * Q
    ld = col.shape[1]
    xf = x.reshape(x.size)
    cf = col.reshape(col.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    row = 0
    for c in range(Cg):
        src = (n * C + g * Cg + c) * D * H * W
        for t in range(T):
            for r in range(R):
                plo, phi = col_range(r * dh - pt, sh, H, P)
                for s in range(S):
                    lo, hi = slo[s], shi[s]
                    d = row
                    for z in range(z0, z1):
                        dz = z * sd - pf + t * dd
                        if dz < 0 or dz >= D:
                            ufill(cf, d, PQ, 0)
                        else:
                            ufill(cf, d, plo * Q, 0)
                            srow = src + dz * H * W + (plo * sh - pt + r * dh) * W + lo * sw + s * dw - pl
                            for p in range(plo, phi):
                                dp = d + p * Q
                                ufill(cf, dp, lo, 0)
                                ucopy(cf, dp + lo, xf, srow, hi - lo, sw)
                                ufill(cf, dp + hi, Q - hi, 0)
                                srow += sh * W
                            ufill(cf, d + phi * Q, (P - phi) * Q, 0)
                        d += PQ
                    row += ld


# ---------------------------------------------------------------------------------------------------
# Input gradient (transposed convolution)
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def conv3d_input_direct(dy, w, b, dx, geo):
    """dx[n, c, d, h, :] = b[c] + sum over t, r (with z = (d + pad_front - t*dil_d) / stride_d and p likewise
    whole output positions in range), k of the group, s (ascending, in that nesting) of w[k, c, t, r, s] *
    dy[n, k, z, p, q] placed at columns q*stride_w - pad_left + s*dil_w inside [0, W)."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dw = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl, G = geo.pad_front, geo.pad_top, geo.pad_left, geo.groups
    N, K, Z, P, Q = dy.shape
    Cg, T, R, S = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    C, D, H, W = dx.shape[1], dx.shape[2], dx.shape[3], dx.shape[4]
    Kg = K // G
    ncb = (Cg + CB - 1) // CB
    TRS = T * R * S
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    wf = w.reshape(w.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)    # per tap s: the q whose column lies in [0, W)
    for task in prange(N * G * ncb * D):
        d = task % D
        u = task // D
        n = u // (G * ncb)
        g = (u // ncb) % G
        cl0 = (u % ncb) * CB                      # first channel of the block within the group
        c0 = g * Cg + cl0
        cn = min(CB, Cg - cl0)
        acc = np.empty(CB * W, dtype=dx.dtype)    # row cc of the block at cc*W
        for h in range(H):
            for cc in range(cn):
                ufill(acc, cc * W, W, b[c0 + cc])
            for t in range(T):
                numd = d + pf - t * dd
                if numd < 0 or numd % sd != 0:
                    continue
                z = numd // sd
                if z >= Z:
                    continue
                for r in range(R):
                    num = h + pt - r * dh
                    if num < 0 or num % sh != 0:
                        continue
                    p = num // sh
                    if p >= P:
                        continue
                    for k in range(g * Kg, g * Kg + Kg):
                        dyrow = (((n * K + k) * Z + z) * P + p) * Q
                        for s in range(S):
                            lo, hi = slo[s], shi[s]
                            if hi <= lo:
                                continue
                            d0 = lo * sw + s * dw - pl
                            w0 = (((k * Cg + cl0) * T + t) * R + r) * S + s
                            for cc in range(cn):
                                wv = wf[w0 + cc * TRS]
                                if sw == 1:
                                    uaxpy(acc, cc * W + d0, dyf, dyrow + lo, wv, hi - lo)
                                else:
                                    _scatter_axpy(acc, cc * W + d0, sw, dyf, dyrow + lo, wv, hi - lo)
            for cc in range(cn):
                ucopy(dxf, (((n * C + c0 + cc) * D + d) * H + h) * W, acc, cc * W, W, 1)


@njit(**JIT_SERIAL)
def col2vol_add(col, dx, n, g, z0, z1, geo):
    """dx[n, g*Cg + c, d, h, w] += col[((c*T + t)*R + r)*S + s, (z - z0)*P*Q + p*Q + q] for output slices z
    in [z0, z1) and every tap whose (d, h, w) lies inside the volume, rows ascending; taps in the padding
    are dropped."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dw = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl = geo.pad_front, geo.pad_top, geo.pad_left
    T, R, S, P, Q = geo.T, geo.R, geo.S, geo.P, geo.Q
    C, D, H, W = dx.shape[1], dx.shape[2], dx.shape[3], dx.shape[4]
    Cg = C // geo.groups
    PQ = P * Q
    ld = col.shape[1]
    cf = col.reshape(col.size)
    dxf = dx.reshape(dx.size)
    slo, shi = tap_ranges(S, dw, pl, sw, W, Q)
    row = 0
    for c in range(Cg):
        dst = (n * C + g * Cg + c) * D * H * W
        for t in range(T):
            for r in range(R):
                plo, phi = col_range(r * dh - pt, sh, H, P)
                for s in range(S):
                    lo, hi = slo[s], shi[s]
                    if hi > lo:
                        d = row
                        for z in range(z0, z1):
                            dz = z * sd - pf + t * dd
                            if 0 <= dz < D:
                                drow = dst + dz * H * W + (plo * sh - pt + r * dh) * W + lo * sw + s * dw - pl
                                for p in range(plo, phi):
                                    _scatter_add(dxf, drow, sw, cf, d + p * Q + lo, hi - lo)
                                    drow += sh * W
                            d += PQ
                    row += ld


# ---------------------------------------------------------------------------------------------------
# Weight gradient
# ---------------------------------------------------------------------------------------------------
@njit(**JIT_CONV)
def conv3d_weight_direct(x, dy, dw, geo):
    """dw[k, c, t, r, s] = sum over (n, z, p, q) of x[n, g*Cg + c, tap] * dy[n, k, z, p, q] for taps inside
    the input: per (k, t, r, s) the products go to lane q of an accumulator, (n, z, p) ascending, then the Q
    lanes are summed in order."""
    sd, sh, sw = geo.stride_d, geo.stride_h, geo.stride_w
    dd, dh, dwl = geo.dil_d, geo.dil_h, geo.dil_w
    pf, pt, pl, G = geo.pad_front, geo.pad_top, geo.pad_left, geo.groups
    N, C, D, H, W = x.shape
    K, Z, P, Q = dy.shape[1], dy.shape[2], dy.shape[3], dy.shape[4]
    Cg, T, R, S = dw.shape[1], dw.shape[2], dw.shape[3], dw.shape[4]
    Kg = K // G
    nkb = (Kg + KBW - 1) // KBW
    TRS = T * R * S
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dwf = dw.reshape(dw.size)
    slo, shi = tap_ranges(S, dwl, pl, sw, W, Q)
    for task in prange(G * nkb * Cg):
        g = task // (nkb * Cg)
        k0 = g * Kg + ((task // Cg) % nkb) * KBW
        c = task % Cg
        kn = min(KBW, g * Kg + Kg - k0)
        acc = np.zeros(KBW * TRS * Q, dtype=dw.dtype)   # lane q of (kk, t, r, s) at (((kk*T + t)*R + r)*S + s)*Q + q
        for n in range(N):
            xc = (n * C + g * Cg + c) * D * H * W
            for z in range(Z):
                tlo, thi = col_range(z * sd - pf, dd, D, T)
                for p in range(P):
                    rlo, rhi = col_range(p * sh - pt, dh, H, R)
                    for t in range(tlo, thi):
                        xs = xc + (z * sd - pf + t * dd) * H * W
                        for r in range(rlo, rhi):
                            xrow = xs + (p * sh - pt + r * dh) * W
                            for s in range(S):
                                lo, hi = slo[s], shi[s]
                                if hi <= lo:
                                    continue
                                x0 = xrow + lo * sw + s * dwl - pl
                                for kk in range(kn):
                                    _fma_lanes(acc, (((kk * T + t) * R + r) * S + s) * Q + lo, xf, x0, sw, dyf,
                                               (((n * K + k0 + kk) * Z + z) * P + p) * Q + lo, hi - lo)
        for kk in range(kn):
            for j in range(TRS):
                a0 = (kk * TRS + j) * Q
                total = acc[a0]
                for q in range(1, Q):
                    total += acc[a0 + q]
                dwf[((k0 + kk) * Cg + c) * TRS + j] = total


tolerate_corrupt_caches(globals())
