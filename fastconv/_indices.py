"""The rules about index arrays (data, not shapes), applied once for every backend before any kernel runs.

- ``max_unpool``: every index lies in ``[0, H*W)`` of its plane.
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
    """Per output row p and column q: the window's first tap position (padding included, may be negative),
    its number of taps along the axis, and whether it holds any input position (int64 / bool NumPy arrays)."""
    out = []
    for n_out, size, k, stride, pad, dil, axis in ((spec.P, spec.H, spec.R, spec.stride_h, spec.pad_h, spec.dil_h, 0),
                                                   (spec.Q, spec.W, spec.S, spec.stride_w, spec.pad_w, spec.dil_w, 1)):
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


def _dil(spec) -> Tuple[int, int]:
    return (1, 1) if spec.is_adaptive else (spec.dil_h, spec.dil_w)


def check_in_range(spec, indices) -> None:
    """Every index in [0, H*W) (max_unpool)."""
    if indices.size == 0:
        return
    plane = spec.H * spec.W
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= plane:
        raise ValueError(f"indices must lie in [0, {plane}) (flat positions in an output plane of "
                         f"{(spec.H, spec.W)[2 - spec.spatial_dims:]}), got values from {lo} to {hi}")


def check_in_window(spec, indices, xp) -> None:
    """Every index of an output whose window holds input positions names one of them (pool gradients)."""
    if indices.size == 0:
        return
    idx = indices.reshape(spec.N, spec.C, spec.P, spec.Q)
    bounds = window_bounds(spec)
    if xp is np and _numba_usable():
        bad = _numba_bad_count()(np.ascontiguousarray(idx, dtype=np.int64), spec.H, spec.W, *_dil(spec), *bounds)
    else:
        bad = _array_bad_count(idx, spec, bounds, xp)
    if bad:
        raise ValueError(f"indices must name a position inside each output's pooling window (as the forward pool "
                         f"returns them, flat positions in [0, {spec.H * spec.W})); {bad} of {idx.size} do not")


def _array_bad_count(idx, spec, bounds, xp) -> int:
    sh, th, lh, sw, tw, lw = (xp.asarray(b) for b in bounds)
    dil_h, dil_w = _dil(spec)
    idx = idx.astype(xp.int64, copy=False)
    h = idx // spec.W
    w = idx - h * spec.W
    a = h - sh[:, None]
    b = w - sw[None, :]
    ok = (idx >= 0) & (idx < spec.H * spec.W) & (a >= 0) & (b >= 0) & (a < th[:, None] * dil_h) & (b < tw[None, :] * dil_w)
    if dil_h > 1:
        ok &= a % dil_h == 0
    if dil_w > 1:
        ok &= b % dil_w == 0
    ok |= ~(lh[:, None] & lw[None, :])
    return int(ok.size - int(ok.sum()))


def drop_empty_windows(spec, dy, indices, xp):
    """dy and indices with the outputs of windows wholly in the padding neutralised (dy 0, index 0), copied
    only when the problem has such windows; the backend layout (N, C, P, Q)."""
    if spec.is_adaptive:
        return dy, indices
    _, _, live_h, _, _, live_w = window_bounds(spec)
    if live_h.all() and live_w.all():
        return dy, indices
    dead = ~(xp.asarray(live_h)[:, None] & xp.asarray(live_w)[None, :])
    dy = xp.where(dead, xp.zeros((), dtype=dy.dtype), dy.reshape(spec.N, spec.C, spec.P, spec.Q))
    indices = xp.where(dead, 0, indices.reshape(spec.N, spec.C, spec.P, spec.Q))
    return dy, indices


@functools.lru_cache(maxsize=None)
def _numba_usable() -> bool:
    from . import _dispatch
    return _dispatch.availability("numba") is None


@functools.lru_cache(maxsize=None)
def _numba_bad_count():
    from numba import njit, prange

    @njit(parallel=True, cache=True, nogil=True, error_model="numpy")
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
