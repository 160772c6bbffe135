"""The NumPy oracle (``backend="numpy"``): every op written from its definition, accumulating in float64.

It judges every other backend, so it is derived from none of them; it is itself checked against naive
nested loops (tests/naive.py) and against hand-derived values. Vectorised over the (r, s) taps: for each
tap, a strided slice of the padded input holds that tap's input for every output position.

Definitions used:
- conv: ``y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw] * w[k,c,r,s]``
  over taps that fall inside the input (taps in the padding contribute nothing, so an Inf weight never
  meets a padded zero);
- max pool: scan the window row-major, take a value if it is greater than the current best or is NaN
  (so NaN wins, the last NaN gives the index; ties keep the first); start from -inf with the index of the
  first in-bounds tap; padding is never selected;
- avg pool: sum of in-bounds taps / divisor, divisor = divisor_override, else the window's area clipped
  to the padded input (count_include_pad) or to the input (not count_include_pad);
- adaptive: window i spans [floor(i*In/Out), ceil((i+1)*In/Out)).

Gradients are the adjoints of those sums, written out term by term (never derived from another backend):
- conv input gradient (and the transposed convolution): every (p, q, r, s) term of the forward sum whose
  tap is inside the input sends ``dy[n,k,p,q] * w[k,c,r,s]`` to ``dx`` at that tap;
- conv weight gradient: ``dw[k,c,r,s] = sum_{n,p,q} x[tap] * dy[n,k,p,q]`` over taps inside the input;
- max pools: ``dy`` goes to the position the forward's index names (windows sharing it add up); a window
  wholly in the padding (dilation) holds no input position and sends nothing;
- avg pools: each window sends ``dy / divisor`` (the forward's divisor) to every in-bounds tap;
- max_unpool: ``out[indices] = x``, the last of repeated indices (row-major) winning.
"""
from __future__ import annotations

import numpy as np

from .._dispatch import FunctionImpl
from .._spec import adaptive_window

DTYPES = ("float16", "float32", "float64")


def availability():
    return None


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
def _tap_positions(out_len, stride, pad_lo, tap_offset, size):
    """Input coordinates of one tap for every output position, and whether each is inside the input."""
    pos = np.arange(out_len) * stride - pad_lo + tap_offset
    return pos, (pos >= 0) & (pos < size)


def conv64(spec, x, w, b=None):
    """The convolution in float64, shape (N, K, P, Q). Public so tests can build error bounds from
    ``conv64(spec, |x|, |w|, |b|)``."""
    N, C, H, W = spec.input_shape
    G, Cg, Kg, P, Q = spec.groups, spec.C_per_group, spec.K_per_group, spec.P, spec.Q
    xd = np.asarray(x, dtype=np.float64).reshape(N, C, H, W)
    wd = np.asarray(w, dtype=np.float64).reshape(G, Kg, Cg, spec.R, spec.S)
    # pad enough that every tap slice is in range; the masks below zero what falls outside the input
    xp = np.pad(xd, ((0, 0), (0, 0), (spec.pad_top, spec.pad_bottom), (spec.pad_left, spec.pad_right)))
    xg = xp.reshape(N, G, Cg, xp.shape[2], xp.shape[3])
    out = np.zeros((N, G, Kg, P, Q))
    for r in range(spec.R):
        _, valid_h = _tap_positions(P, spec.stride_h, spec.pad_top, r * spec.dil_h, H)
        h0 = r * spec.dil_h
        for s in range(spec.S):
            _, valid_w = _tap_positions(Q, spec.stride_w, spec.pad_left, s * spec.dil_w, W)
            w0 = s * spec.dil_w
            tap = xg[:, :, :, h0:h0 + (P - 1) * spec.stride_h + 1:spec.stride_h,
                     w0:w0 + (Q - 1) * spec.stride_w + 1:spec.stride_w]          # (N, G, Cg, P, Q)
            with np.errstate(invalid="ignore"):   # inf weight x padded zero: masked out just below
                contrib = np.einsum("ngcpq,gkc->ngkpq", tap, wd[:, :, :, r, s], optimize=True)
            contrib[..., ~valid_h, :] = 0.0
            contrib[..., :, ~valid_w] = 0.0
            out += contrib
    out = out.reshape(N, spec.K, P, Q)
    if b is not None:
        out += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return out


def conv(spec, x, w, b=None):
    return conv64(spec, x, w, b).astype(spec.dtype)


def _tap_slices(spec, r, s):
    """For tap (r, s): the output rows/columns whose tap lies inside the input (boolean masks over P, Q) and
    the input positions they read (integer arrays over P, Q)."""
    hpos, valid_h = _tap_positions(spec.P, spec.stride_h, spec.pad_top, r * spec.dil_h, spec.H)
    wpos, valid_w = _tap_positions(spec.Q, spec.stride_w, spec.pad_left, s * spec.dil_w, spec.W)
    return valid_h, valid_w, hpos, wpos


def conv_input64(spec, dy, w, b=None):
    """The input gradient (transposed convolution) in float64, shape (N, C, H, W): for every tap, the
    in-bounds outputs' ``dy @ w[..., r, s]`` added at the positions that tap read."""
    N, C, H, W = spec.input_shape
    G, Cg, Kg, P, Q = spec.groups, spec.C_per_group, spec.K_per_group, spec.P, spec.Q
    dyd = np.asarray(dy, dtype=np.float64).reshape(N, G, Kg, P, Q)
    wd = np.asarray(w, dtype=np.float64).reshape(G, Kg, Cg, spec.R, spec.S)
    dx = np.zeros((N, G, Cg, H, W))
    for r in range(spec.R):
        for s in range(spec.S):
            valid_h, valid_w, hpos, wpos = _tap_slices(spec, r, s)
            if not valid_h.any() or not valid_w.any():
                continue
            d = dyd[:, :, :, valid_h][:, :, :, :, valid_w]                  # (N, G, Kg, p', q')
            contrib = np.einsum("ngkpq,gkc->ngcpq", d, wd[:, :, :, r, s], optimize=True)
            # within one tap, distinct outputs read distinct positions (stride >= 1): a plain += is exact
            dx[:, :, :, hpos[valid_h][:, None], wpos[valid_w][None, :]] += contrib
    dx = dx.reshape(N, C, H, W)
    if b is not None:
        dx += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return dx


def conv_input(spec, dy, w, b=None):
    return conv_input64(spec, dy, w, b).astype(spec.dtype)


def conv_weight64(spec, x, dy):
    """The weight gradient in float64, shape (K, C/groups, R, S)."""
    N, C, H, W = spec.input_shape
    G, Cg, Kg = spec.groups, spec.C_per_group, spec.K_per_group
    xd = np.asarray(x, dtype=np.float64).reshape(N, G, Cg, H, W)
    dyd = np.asarray(dy, dtype=np.float64).reshape(N, G, Kg, spec.P, spec.Q)
    dw = np.zeros((G, Kg, Cg, spec.R, spec.S))
    for r in range(spec.R):
        for s in range(spec.S):
            valid_h, valid_w, hpos, wpos = _tap_slices(spec, r, s)
            if not valid_h.any() or not valid_w.any():
                continue
            xt = xd[:, :, :, hpos[valid_h][:, None], wpos[valid_w][None, :]]   # (N, G, Cg, p', q')
            d = dyd[:, :, :, valid_h][:, :, :, :, valid_w]                       # (N, G, Kg, p', q')
            dw[:, :, :, r, s] = np.einsum("ngcpq,ngkpq->gkc", xt, d, optimize=True)
    return dw.reshape(spec.weight_shape)


def conv_weight(spec, x, dy):
    return conv_weight64(spec, x, dy).astype(spec.dtype)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def _padded(spec, x, fill):
    """x padded by pad_h/pad_w, plus whatever ceil_mode's last window needs past the right padding."""
    N, C, H, W = spec.input_shape
    need_h, need_w = spec.input_extent_hw()     # the padded extent the P x Q windows read
    extra_h = max(0, need_h - (H + 2 * spec.pad_h))
    extra_w = max(0, need_w - (W + 2 * spec.pad_w))
    return np.pad(np.asarray(x, dtype=np.float64).reshape(N, C, H, W),
                  ((0, 0), (0, 0), (spec.pad_h, spec.pad_h + extra_h), (spec.pad_w, spec.pad_w + extra_w)),
                  constant_values=fill)


def _tap(spec, xp, r, s):
    h0, w0 = r * spec.dil_h, s * spec.dil_w
    return xp[:, :, h0:h0 + (spec.P - 1) * spec.stride_h + 1:spec.stride_h,
              w0:w0 + (spec.Q - 1) * spec.stride_w + 1:spec.stride_w]


def _first_inbounds(out_len, stride, pad, dil):
    """First tap position >= 0 of each window (PyTorch starts its index there)."""
    start = np.arange(out_len) * stride - pad
    neg = start < 0
    start[neg] += (-start[neg] + dil - 1) // dil * dil
    return start


def max_pool(spec, x):
    N, C, H, W = spec.input_shape
    xp = _padded(spec, x, -np.inf)
    best = np.full((N, C, spec.P, spec.Q), -np.inf)
    h_first = _first_inbounds(spec.P, spec.stride_h, spec.pad_h, spec.dil_h)
    w_first = _first_inbounds(spec.Q, spec.stride_w, spec.pad_w, spec.dil_w)
    idx = np.broadcast_to(h_first[:, None] * W + w_first[None, :], best.shape).astype(np.int64)
    for r in range(spec.R):
        hpos, valid_h = _tap_positions(spec.P, spec.stride_h, spec.pad_h, r * spec.dil_h, H)
        for s in range(spec.S):
            wpos, valid_w = _tap_positions(spec.Q, spec.stride_w, spec.pad_w, s * spec.dil_w, W)
            val = _tap(spec, xp, r, s)
            take = (valid_h[:, None] & valid_w[None, :]) & ((val > best) | np.isnan(val))
            best = np.where(take, val, best)
            idx = np.where(take, hpos[:, None] * W + wpos[None, :], idx)
    return _pool_result(spec, best, idx)


def avg_pool(spec, x):
    N, C, H, W = spec.input_shape
    xp = _padded(spec, x, 0.0)
    total = np.zeros((N, C, spec.P, spec.Q))
    for r in range(spec.R):
        for s in range(spec.S):
            total += _tap(spec, xp, r, s)   # padding and the ceil_mode overhang are zeros
    return (total / _avg_divisor(spec)).astype(spec.dtype)


def _avg_divisor(spec):
    """The divisor of every window, (P, Q) (or a scalar for divisor_override)."""
    if spec.divisor_override is not None:
        return float(spec.divisor_override)

    def extent(out_len, stride, pad, k, size):
        start = np.arange(out_len) * stride - pad
        end = np.minimum(start + k, size + pad)             # clipped to the padded input
        with_pad = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)  # clipped to the input
        return with_pad, inside

    ph, ih = extent(spec.P, spec.stride_h, spec.pad_h, spec.R, spec.H)
    pw, iw = extent(spec.Q, spec.stride_w, spec.pad_w, spec.S, spec.W)
    return (ph[:, None] * pw[None, :]) if spec.count_include_pad else (ih[:, None] * iw[None, :])


def _adaptive_windows(spec):
    for i in range(spec.P):
        h0, h1 = adaptive_window(i, spec.H, spec.P)
        for j in range(spec.Q):
            w0, w1 = adaptive_window(j, spec.W, spec.Q)
            yield i, j, h0, h1, w0, w1


def adaptive_avg_pool(spec, x):
    xd = np.asarray(x, dtype=np.float64).reshape(spec.input_shape)
    out = np.empty(spec.output_layout)
    for i, j, h0, h1, w0, w1 in _adaptive_windows(spec):
        out[:, :, i, j] = xd[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return out.astype(spec.dtype)


def adaptive_max_pool(spec, x):
    N, C, H, W = spec.input_shape
    xd = np.asarray(x, dtype=np.float64).reshape(N, C, H, W)
    best = np.empty(spec.output_layout)
    idx = np.empty(spec.output_layout, dtype=np.int64)
    for i, j, h0, h1, w0, w1 in _adaptive_windows(spec):
        b = np.full((N, C), -np.inf)
        ix = np.full((N, C), h0 * W + w0, dtype=np.int64)
        for h in range(h0, h1):            # the same row-major scan rule as max_pool
            for w in range(w0, w1):
                val = xd[:, :, h, w]
                take = (val > b) | np.isnan(val)
                b = np.where(take, val, b)
                ix = np.where(take, h * W + w, ix)
        best[:, :, i, j], idx[:, :, i, j] = b, ix
    return _pool_result(spec, best, idx)


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
def _live_windows(spec):
    """(P, Q) bool: the windows holding at least one input position (with dilation a window can lie wholly
    in the padding; its output is -inf whatever the input, so it sends no gradient anywhere)."""
    if spec.is_adaptive:
        return np.ones((spec.P, spec.Q), dtype=bool)
    live_h = np.zeros(spec.P, dtype=bool)
    for r in range(spec.R):
        live_h |= _tap_positions(spec.P, spec.stride_h, spec.pad_h, r * spec.dil_h, spec.H)[1]
    live_w = np.zeros(spec.Q, dtype=bool)
    for s in range(spec.S):
        live_w |= _tap_positions(spec.Q, spec.stride_w, spec.pad_w, s * spec.dil_w, spec.W)[1]
    return live_h[:, None] & live_w[None, :]


def _to_index(spec, dy, indices):
    """dx (N, C, H, W) in float64: each dy of a window holding input positions added at the position its
    index names."""
    N, C, H, W = spec.input_shape
    dx = np.zeros((N * C, H * W))
    live = np.broadcast_to(_live_windows(spec), (N * C, spec.P, spec.Q)).reshape(-1)
    rows = np.repeat(np.arange(N * C), spec.P * spec.Q)[live]
    np.add.at(dx, (rows, np.asarray(indices, dtype=np.int64).reshape(-1)[live]),
              np.asarray(dy, dtype=np.float64).reshape(-1)[live])
    return dx.reshape(N, C, H, W)


def max_pool_backward(spec, dy, indices):
    return _to_index(spec, dy, indices).astype(spec.dtype)


adaptive_max_pool_backward = max_pool_backward


def avg_pool_backward(spec, dy):
    N, C, H, W = spec.input_shape
    g = np.asarray(dy, dtype=np.float64).reshape(N, C, spec.P, spec.Q) / _avg_divisor(spec)
    dx = np.zeros((N, C, H, W))
    for r in range(spec.R):
        hpos, valid_h = _tap_positions(spec.P, spec.stride_h, spec.pad_h, r * spec.dil_h, H)
        for s in range(spec.S):
            wpos, valid_w = _tap_positions(spec.Q, spec.stride_w, spec.pad_w, s * spec.dil_w, W)
            if valid_h.any() and valid_w.any():
                dx[:, :, hpos[valid_h][:, None], wpos[valid_w][None, :]] += g[:, :, valid_h][:, :, :, valid_w]
    return dx.astype(spec.dtype)


def adaptive_avg_pool_backward(spec, dy):
    g = np.asarray(dy, dtype=np.float64).reshape(spec.N, spec.C, spec.P, spec.Q)
    dx = np.zeros(spec.input_shape)
    for i, j, h0, h1, w0, w1 in _adaptive_windows(spec):
        dx[:, :, h0:h1, w0:w1] += (g[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
    return dx.astype(spec.dtype)


def max_unpool(spec, x, indices):
    N, C, H, W = spec.input_shape
    keys = (np.arange(N * C)[:, None] * (H * W)
            + np.asarray(indices, dtype=np.int64).reshape(N * C, -1)).reshape(-1)
    vals = np.asarray(x).reshape(-1)
    # the last occurrence of every key (row-major order): the first in the reversed sequence
    _, first_rev = np.unique(keys[::-1], return_index=True)
    last = keys.size - 1 - first_rev
    out = np.zeros(N * C * H * W, dtype=spec.dtype)
    out[keys[last]] = vals[last]
    return out.reshape(N, C, H, W)


def _pool_result(spec, best, idx):
    out = best.astype(spec.dtype)
    return (out, np.ascontiguousarray(idx, dtype=np.int64)) if spec.return_indices else out


def implementations():
    return [
        FunctionImpl("numpy", "conv", "direct", conv, dtypes=DTYPES),
        FunctionImpl("numpy", "max_pool", "direct", max_pool, dtypes=DTYPES),
        FunctionImpl("numpy", "avg_pool", "direct", avg_pool, dtypes=DTYPES),
        FunctionImpl("numpy", "adaptive_max_pool", "direct", adaptive_max_pool, dtypes=DTYPES),
        FunctionImpl("numpy", "adaptive_avg_pool", "direct", adaptive_avg_pool, dtypes=DTYPES),
        FunctionImpl("numpy", "conv_input", "direct", conv_input, dtypes=DTYPES),
        FunctionImpl("numpy", "conv_weight", "direct", conv_weight, dtypes=DTYPES),
        FunctionImpl("numpy", "max_pool_backward", "direct", max_pool_backward, dtypes=DTYPES),
        FunctionImpl("numpy", "avg_pool_backward", "direct", avg_pool_backward, dtypes=DTYPES),
        FunctionImpl("numpy", "adaptive_max_pool_backward", "direct", adaptive_max_pool_backward, dtypes=DTYPES),
        FunctionImpl("numpy", "adaptive_avg_pool_backward", "direct", adaptive_avg_pool_backward, dtypes=DTYPES),
        FunctionImpl("numpy", "max_unpool", "direct", max_unpool, dtypes=DTYPES),
        FunctionImpl("numpy", "unfold", "direct", unfold, dtypes=DTYPES, spatial_dims=(1, 2, 3)),
        FunctionImpl("numpy", "fold", "direct", fold, dtypes=DTYPES, spatial_dims=(1, 2, 3)),
    ]


# ---------------------------------------------------------------------------------------------------
# unfold and fold (im2col and col2im as ops; fastconv._spec_fold), 1-D to 3-D
# ---------------------------------------------------------------------------------------------------
# unfold: col[n, ((c*T + t)*R + r)*S + s, (z*P + p)*Q + q] = x[n, c, z*sd - pf + t*dd, p*sh - pt + r*dh,
# q*sw - pl + s*dw], 0 in the padding. fold, its adjoint: each column entry added at the position it was
# read from, entries of padded positions dropped; float64, taps (t, r, s) in ascending order. Vectorised
# over the taps: for each tap, one strided slice of the padded image holds its position for every block.
def _fold_tap_slices(spec):
    """(row of the tap within a channel's T*R*S rows, the slices of the padded (D, H, W) volume that hold
    that tap's position for every block (Z, P, Q)), taps in ascending (t, r, s) order."""
    for t in range(spec.T):
        for r in range(spec.R):
            for s in range(spec.S):
                yield (t * spec.R + r) * spec.S + s, tuple(
                    slice(k * dil, k * dil + (out - 1) * stride + 1, stride)
                    for k, dil, out, stride in zip((t, r, s), spec.dilations, spec.out_size, spec.strides))


def unfold(spec, x):
    """The column matrix (N, C*T*R*S, Z*P*Q): a copy of the zero-padded image, tap by tap (exact in every
    dtype; the padding's zeros are stored, nothing is multiplied)."""
    N, C, taps = spec.N, spec.C, spec.window_elems
    xp = np.pad(np.asarray(x).reshape((N, C) + spec.in_size), ((0, 0), (0, 0)) + spec.pads)
    col = np.empty((N, C, taps) + spec.out_size, dtype=spec.dtype)
    for row, window in _fold_tap_slices(spec):
        col[:, :, row] = xp[(slice(None), slice(None)) + window]
    return col.reshape(spec.output_layout)


def fold64(spec, cols):
    """fold in float64, in the backend layout (N, C, [D,] H, W): the padded volume accumulates every tap's
    column entries (within one tap distinct blocks read distinct positions, so a slice += is exact), and
    the padding (holding the dropped entries) is cut off. Public so tests can bound errors with
    ``fold64(spec, |cols|)``."""
    N, C, taps = spec.N, spec.C, spec.window_elems
    c = np.asarray(cols, dtype=np.float64).reshape((N, C, taps) + spec.out_size)
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(spec.in_size, spec.pads))
    acc = np.zeros((N, C) + padded)
    with np.errstate(invalid="ignore"):          # inf + -inf: NaN is the sum (or lies in the dropped padding)
        for row, window in _fold_tap_slices(spec):
            acc[(slice(None), slice(None)) + window] += c[:, :, row]
    inner = tuple(slice(lo, lo + size) for size, (lo, _) in zip(spec.in_size, spec.pads))
    return acc[(slice(None), slice(None)) + inner].reshape(spec.output_layout)


def fold(spec, cols):
    return fold64(spec, cols).astype(spec.dtype)
