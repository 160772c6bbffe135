"""Numba kernels of ``unfold`` and ``fold`` (im2col and col2im as ops) for the ``numba`` backend, 1-D to 3-D.

Imported only when the backend first runs one of them (numba_cpu's ``_fold_op``), so ``import fastconv``
imports no Numba. Arrays are passed flat (C-contiguous): the image x / out of N*C*D*H*W elements and the
column matrix of N*(C*T*R*S)*(Z*P*Q), row ``((c*T + t)*R + r)*S + s`` of image n, column ``(z*P + p)*Q + q``
(see fastconv._spec_fold); one compiled kernel per dtype serves every dimension (a 2-D problem has
D = T = Z = 1). ``geo`` is a :class:`FoldGeometry`, read by field name, built from the spec by
:func:`fold_geometry`.

- ``unfold_rows``  one parallel iteration per column row (n, c, t, r, s) writes its L entries: for every
                   block row (z, p) the in-bounds run of q copied from the image row (strided by stride_w),
                   zeros before and after it and for rows whose (d, h) lies in the padding.
- ``fold_rows``    one parallel iteration per chunk of image rows (n, c, d, h), each row owned by one
                   iteration (disjoint outputs, no atomics): a float64 accumulator of W starts at 0 and
                   takes, tap by tap in ascending (t, r, s) order, the column entries that read it (the taps
                   whose (d, h) offsets are multiples of the strides, from tables built once per call, so no
                   row divides; along w a strided run), then is rounded once into the row. The oracle sums in the same order and type, so the results are
                   bitwise equal to it.
"""
from __future__ import annotations

import collections
import functools

import numpy as np
from numba import njit, prange

from ._numba_common import INLINE, JIT, _from_spec, col_range, tap_ranges, tolerate_corrupt_caches, ucopy, ufill
from ._numba_grad import _scatter_add

#: the geometry of an unfold/fold problem: the spec's fields of these names (the after-side pads are not
#: needed: the block counts Z, P, Q already hold them)
FoldGeometry = collections.namedtuple(
    "FoldGeometry", "N C D H W T R S Z P Q stride_d stride_h stride_w pad_front pad_top pad_left dil_d dil_h dil_w")


@functools.lru_cache(maxsize=1024)
def fold_geometry(spec) -> FoldGeometry:
    return _from_spec(FoldGeometry, spec)


@njit(**JIT)
def unfold_rows(x, col, geo):
    """col[row, :] for every column row (see the module docstring); x and col flat."""
    D, H, W, T, R, S = geo.D, geo.H, geo.W, geo.T, geo.R, geo.S
    Z, P, Q = geo.Z, geo.P, geo.Q
    taps = T * R * S
    L = Z * P * Q
    plane = D * H * W
    rows = geo.N * geo.C * taps
    for row in prange(rows):
        tap = row % taps
        nc = row // taps
        s = tap % S
        r = (tap // S) % R
        t = tap // (S * R)
        qlo, qhi = col_range(s * geo.dil_w - geo.pad_left, geo.stride_w, W, Q)
        w0 = qlo * geo.stride_w - geo.pad_left + s * geo.dil_w      # the first in-bounds block's column
        for z in range(Z):
            d = z * geo.stride_d - geo.pad_front + t * geo.dil_d
            for p in range(P):
                h = p * geo.stride_h - geo.pad_top + r * geo.dil_h
                o = row * L + (z * P + p) * Q
                if d < 0 or d >= D or h < 0 or h >= H or qhi == qlo:
                    ufill(col, o, Q, 0)
                    continue
                ufill(col, o, qlo, 0)
                ucopy(col, o + qlo, x, nc * plane + (d * H + h) * W + w0, qhi - qlo, geo.stride_w)
                ufill(col, o + qhi, Q - qhi, 0)


@njit(**INLINE)
def _block_of_tap(size, k, out, stride, pad, dil):
    """(size, k) int64: the block whose tap j reads position x along one axis (x + pad - j*dil == block*stride,
    0 <= block < out), or -1 where none does. Built once per call, so no image row divides."""
    table = np.full((size, k), -1, dtype=np.int64)
    for x in range(size):
        for j in range(k):
            off = x + pad - j * dil
            if off >= 0 and off % stride == 0 and off // stride < out:
                table[x, j] = off // stride
    return table


@njit(**JIT)
def fold_rows(col, out, geo, nchunk):
    """out's rows (n, c, d, h) in ``nchunk`` parallel chunks (see the module docstring); col and out flat."""
    D, H, W, T, R, S = geo.D, geo.H, geo.W, geo.T, geo.R, geo.S
    Z, P, Q = geo.Z, geo.P, geo.Q
    taps = T * R * S
    L = Z * P * Q
    rows = geo.N * geo.C * D * H
    zblock = _block_of_tap(D, T, Z, geo.stride_d, geo.pad_front, geo.dil_d)
    pblock = _block_of_tap(H, R, P, geo.stride_h, geo.pad_top, geo.dil_h)
    qlo, qhi = tap_ranges(S, geo.dil_w, geo.pad_left, geo.stride_w, W, Q)     # per tap s: the blocks in bounds
    for chunk in prange(nchunk):
        acc = np.empty(W, dtype=np.float64)
        for row in range(chunk * rows // nchunk, (chunk + 1) * rows // nchunk):
            h = row % H
            d = (row // H) % D
            nc = row // (H * D)
            acc[:] = 0.0
            for t in range(T):
                z = zblock[d, t]
                if z < 0:
                    continue
                for r in range(R):
                    p = pblock[h, r]
                    if p < 0:
                        continue
                    for s in range(S):
                        n = qhi[s] - qlo[s]
                        if n <= 0:
                            continue
                        c0 = (nc * taps + (t * R + r) * S + s) * L + (z * P + p) * Q
                        _scatter_add(acc, qlo[s] * geo.stride_w - geo.pad_left + s * geo.dil_w, geo.stride_w,
                                     col, c0 + qlo[s], n)
            ucopy(out, row * W, acc, 0, W, 1)      # rounded once into the row


# ---------------------------------------------------------------------------------------------------
# The runs (numba_cpu's "unfold"/"fold" implementations): C-contiguous arrays in the backend layout
# ---------------------------------------------------------------------------------------------------
def _chunks(tasks: int) -> int:
    """Parallel chunks for ``tasks`` independent rows: a few per thread (load balance), each chunk
    allocating its accumulator once."""
    import numba
    return max(1, min(tasks, 4 * numba.get_num_threads()))


def unfold(spec, x):
    col = np.empty(spec.output_layout, dtype=x.dtype)
    unfold_rows(x.reshape(-1), col.reshape(-1), fold_geometry(spec))
    return col


def fold(spec, cols):
    out = np.empty(spec.output_layout, dtype=cols.dtype)
    fold_rows(cols.reshape(-1), out.reshape(-1), fold_geometry(spec), _chunks(spec.N * spec.C * spec.D * spec.H))
    return out


tolerate_corrupt_caches(globals())
