"""The rules about index arrays (data, not shapes), applied once for every backend before any kernel runs.

- ``max_unpool``: every index lies in ``[0, D*H*W)`` of its plane.
- pool gradients (``indices=`` given by the caller): every index lies inside its output's window (the gather
  kernels look for an index only there), except for outputs whose window lies wholly in the padding
  (possible with dilation): such a window holds no input element, its output is ``-inf`` whatever the input,
  so its gradient is zero and its index (PyTorch's "first tap with non-negative coordinates", which can lie
  outside the plane) is never followed. fastconv drops those outputs' dy (:func:`drop_empty_windows`) on every
  backend; torch instead adds it at whatever element the flat index aliases.

For NumPy arrays with Numba available the window check is one parallel pass (:func:`_numba_bad_count`, compiled
on first use and cached on disk); otherwise, and for CuPy (on the GPU), it is a few array operations.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np

from ._spec import adaptive_window


def window_bounds(spec) -> Tuple[np.ndarray, ...]:
    """Per output position along D, H and W in turn: the window's first tap position (padding included, may
    be negative), its number of taps along the axis, and whether it holds any input position (int64 / bool
    NumPy arrays; nine in all, three per dimension)."""
    out = []
    for n_out, size, k, stride, (pad, _), dil in zip(spec.out_size, spec.in_size, spec.window, spec.strides,
                                                     spec.pads, spec.dilations):
        if spec.is_adaptive:
            win = np.array([adaptive_window(i, size, n_out) for i in range(n_out)], dtype=np.int64).reshape(n_out, 2)
            start, taps, live = win[:, 0], win[:, 1] - win[:, 0], np.ones(n_out, dtype=bool)
        else:
            start = np.arange(n_out, dtype=np.int64) * stride - pad
            taps = np.full(n_out, k, dtype=np.int64)
            pos = start[:, None] + np.arange(k, dtype=np.int64)[None, :] * dil
            live = ((pos >= 0) & (pos < size)).any(axis=1)
        out += [start, taps, live]
    return tuple(out)


def _dil(spec) -> Tuple[int, int, int]:
    return (1, 1, 1) if spec.is_adaptive else spec.dilations


def _plane_desc(spec) -> tuple:
    return spec.in_size[3 - spec.spatial_dims:]


def check_in_range(spec, indices) -> None:
    """Every index in [0, D*H*W) (max_unpool)."""
    if indices.size == 0:
        return
    plane = spec.in_elems
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= plane:
        raise ValueError(f"indices must lie in [0, {plane}) (flat positions in an output plane of "
                         f"{_plane_desc(spec)}), got values from {lo} to {hi}")


def check_in_window(spec, indices, xp) -> None:
    """Every index of an output whose window holds input positions names one of them (pool gradients)."""
    if indices.size == 0:
        return
    bounds = window_bounds(spec)
    if xp is np and _numba_usable() and not spec.is_3d:
        idx = indices.reshape(spec.N, spec.C, spec.P, spec.Q)
        bad = _numba_bad_count()(np.ascontiguousarray(idx, dtype=np.int64), spec.H, spec.W, *_dil(spec)[1:],
                                 *bounds[3:])
    else:
        bad = _array_bad_count(indices.reshape((spec.N, spec.C) + spec.out_size), spec, bounds, xp)
    if bad:
        raise ValueError(f"indices must name a position inside each output's pooling window (as the forward pool "
                         f"returns them, flat positions in [0, {spec.in_elems})); {bad} of {indices.size} do not")


def _array_bad_count(idx, spec, bounds, xp) -> int:
    """The window check as array operations over (N, C, Z, P, Q) indices (CuPy, 3-D, or no Numba)."""
    idx = idx.astype(xp.int64, copy=False)
    D, H, W = spec.in_size
    coords = (idx // (H * W), (idx // W) % H, idx % W)
    ok = (idx >= 0) & (idx < spec.in_elems)
    live = None
    for axis, (c, dil) in enumerate(zip(coords, _dil(spec))):
        start, taps, lv = (xp.asarray(b) for b in bounds[3 * axis:3 * axis + 3])
        shape = [1, 1, 1]
        shape[axis] = -1
        a = c - start.reshape(shape)
        ok &= (a >= 0) & (a < taps.reshape(shape) * dil)
        if dil > 1:
            ok &= a % dil == 0
        lv = lv.reshape(shape)
        live = lv if live is None else live & lv
    ok |= ~live
    return int(ok.size - int(ok.sum()))


def drop_empty_windows(spec, dy, indices, xp):
    """dy and indices with the outputs of windows wholly in the padding neutralised (dy 0, index 0), copied
    only when the problem has such windows; the backend layout."""
    if spec.is_adaptive:
        return dy, indices
    b = window_bounds(spec)
    live_d, live_h, live_w = b[2], b[5], b[8]
    if live_d.all() and live_h.all() and live_w.all():
        return dy, indices
    live = live_d[:, None, None] & live_h[None, :, None] & live_w[None, None, :]
    layout = spec._layout(spec.N, spec.C, spec.out_size)
    dead = ~xp.asarray(live if spec.is_3d else live[0])
    dy = xp.where(dead, xp.zeros((), dtype=dy.dtype), dy.reshape(layout))
    indices = xp.where(dead, 0, indices.reshape(layout))
    return dy, indices


@functools.lru_cache(maxsize=None)
def _numba_usable() -> bool:
    from . import _dispatch
    return _dispatch.availability("numba") is None


@functools.lru_cache(maxsize=None)
def _numba_bad_count():
    from numba import njit, prange

    from ._backends._numba_common import cache_for

    @njit(parallel=True, cache=cache_for(__file__), nogil=True, error_model="numpy")
    def bad_count(idx, H, W, dil_h, dil_w, start_h, taps_h, live_h, start_w, taps_w, live_w):
        N, C, P, Q = idx.shape
        plane = H * W
        inv_w = 1.0 / W
        bad = 0
        for nc in prange(N * C):
            n, c = nc // C, nc % C
            for p in range(P):
                if not live_h[p]:
                    continue
                for q in range(Q):
                    if not live_w[q]:
                        continue
                    v = idx[n, c, p, q]
                    if v < 0 or v >= plane:
                        bad += 1
                        continue
                    # row and column of v without an integer division (the loop's cost): a float
                    # estimate, corrected by one step (exact for planes far below 2^52)
                    h = np.int64(v * inv_w)
                    w = v - h * W
                    if w < 0:
                        h -= 1
                        w += W
                    elif w >= W:
                        h += 1
                        w -= W
                    a = h - start_h[p]
                    b = w - start_w[q]
                    if dil_h == 1 and dil_w == 1:
                        if a < 0 or b < 0 or a >= taps_h[p] or b >= taps_w[q]:
                            bad += 1
                    elif (a < 0 or b < 0 or a % dil_h != 0 or b % dil_w != 0
                            or a // dil_h >= taps_h[p] or b // dil_w >= taps_w[q]):
                        bad += 1
        return bad
    return bad_count
