"""The NumPy oracle (``backend="numpy"``): every op written from its definition, accumulating in float64.

It judges every other backend, so it is derived from none of them; it is itself checked against naive
nested loops (tests/naive.py) and against hand-derived values. Written once for (N, C, D, H, W) volumes
(1-D and 2-D problems are viewed with D = 1), vectorised over the (t, r, s) taps: for each tap, a strided
slice of the padded input holds that tap's input for every output position.

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

import itertools

import numpy as np

from .._dispatch import FunctionImpl
from .._spec import adaptive_window

DTYPES = ("float16", "float32", "float64")


def availability():
    return None


# ---------------------------------------------------------------------------------------------------
# The three dimensions
# ---------------------------------------------------------------------------------------------------
# Every op is written once, for 5-D (N, C, D, H, W) volumes; 1-D and 2-D problems (4-D backend layout) are
# viewed with D = 1 (and H = 1 for 1-D), which costs a reshape.
def _vol(spec, a, channels, sizes=None):
    """``a`` (backend layout) as a float64 (N, channels, D, H, W) volume (``sizes``: default the input's)."""
    return np.asarray(a, dtype=np.float64).reshape((spec.N, channels) + tuple(sizes or spec.in_size))


def _tap_positions(out_len, stride, pad_lo, tap_offset, size):
    """Input coordinates of one tap for every output position, and whether each is inside the input."""
    pos = np.arange(out_len) * stride - pad_lo + tap_offset
    return pos, (pos >= 0) & (pos < size)


def _taps(spec):
    """Every tap (t, r, s) of the window with, per dimension (D, H, W), the input position each output
    reads and whether it is inside the input: ``(t, r, s), ((pos_d, valid_d), (pos_h, valid_h), (pos_w,
    valid_w))``."""
    pads_lo = tuple(lo for lo, _ in spec.pads)
    for tap in itertools.product(*(range(k) for k in spec.window)):
        yield tap, tuple(_tap_positions(o, st, lo, i * d, size) for o, st, lo, i, d, size
                         in zip(spec.out_size, spec.strides, pads_lo, tap, spec.dilations, spec.in_size))


def _grid(*index_arrays):
    """Open-mesh indices over the last three axes (np.ix_), after any leading full slices."""
    return np.ix_(*index_arrays)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
def conv64(spec, x, w, b=None):
    """The convolution in float64, in the output layout (N, K, [Z,] P, Q). Public so tests can build error
    bounds from ``conv64(spec, |x|, |w|, |b|)``."""
    N, G, Cg, Kg = spec.N, spec.groups, spec.C_per_group, spec.K_per_group
    xd = _vol(spec, x, spec.C)
    wd = np.asarray(w, dtype=np.float64).reshape((G, Kg, Cg) + spec.window)
    # pad enough that every tap slice is in range; the masks below zero what falls outside the input
    xp = np.pad(xd, ((0, 0), (0, 0)) + spec.pads)
    xg = xp.reshape((N, G, Cg) + xp.shape[2:])
    out = np.zeros((N, G, Kg) + spec.out_size)
    for tap, ((_, vd), (_, vh), (_, vw)) in _taps(spec):
        sl = tuple(slice(i * d, i * d + (o - 1) * st + 1, st)
                   for i, d, o, st in zip(tap, spec.dilations, spec.out_size, spec.strides))
        t = xg[(slice(None),) * 3 + sl]                                        # (N, G, Cg, Z, P, Q)
        with np.errstate(invalid="ignore"):   # inf weight x padded zero: masked out just below
            contrib = np.einsum("ngczpq,gkc->ngkzpq", t, wd[(Ellipsis,) + tap], optimize=True)
        contrib[..., ~vd, :, :] = 0.0
        contrib[..., ~vh, :] = 0.0
        contrib[..., ~vw] = 0.0
        out += contrib
    out = out.reshape(spec.output_layout)
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * (out.ndim - 2))
    return out


def conv(spec, x, w, b=None):
    return conv64(spec, x, w, b).astype(spec.dtype)


def conv_input64(spec, dy, w, b=None):
    """The input gradient (transposed convolution) in float64, in the input layout: for every tap, the
    in-bounds outputs' ``dy @ w[..., t, r, s]`` added at the positions that tap read."""
    N, G, Cg, Kg = spec.N, spec.groups, spec.C_per_group, spec.K_per_group
    dyd = _vol(spec, dy, spec.K, spec.out_size).reshape((N, G, Kg) + spec.out_size)
    wd = np.asarray(w, dtype=np.float64).reshape((G, Kg, Cg) + spec.window)
    dx = np.zeros((N, G, Cg) + spec.in_size)
    for tap, ((pd, vd), (ph, vh), (pw, vw)) in _taps(spec):
        if not (vd.any() and vh.any() and vw.any()):
            continue
        d = dyd[(slice(None),) * 3 + _grid(np.flatnonzero(vd), np.flatnonzero(vh), np.flatnonzero(vw))]
        contrib = np.einsum("ngkzpq,gkc->ngczpq", d, wd[(Ellipsis,) + tap], optimize=True)
        # within one tap, distinct outputs read distinct positions (stride >= 1): a plain += is exact
        dx[(slice(None),) * 3 + _grid(pd[vd], ph[vh], pw[vw])] += contrib
    dx = dx.reshape(spec.output_layout)
    if b is not None:
        dx += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * (dx.ndim - 2))
    return dx


def conv_input(spec, dy, w, b=None):
    return conv_input64(spec, dy, w, b).astype(spec.dtype)


def conv_weight64(spec, x, dy):
    """The weight gradient in float64, shape (K, C/groups, [T,] R, S)."""
    N, G, Cg, Kg = spec.N, spec.groups, spec.C_per_group, spec.K_per_group
    xd = _vol(spec, x, spec.C).reshape((N, G, Cg) + spec.in_size)
    dyd = _vol(spec, dy, spec.K, spec.out_size).reshape((N, G, Kg) + spec.out_size)
    dw = np.zeros((G, Kg, Cg) + spec.window)
    for tap, ((pd, vd), (ph, vh), (pw, vw)) in _taps(spec):
        if not (vd.any() and vh.any() and vw.any()):
            continue
        xt = xd[(slice(None),) * 3 + _grid(pd[vd], ph[vh], pw[vw])]                      # (N, G, Cg, z', p', q')
        d = dyd[(slice(None),) * 3 + _grid(np.flatnonzero(vd), np.flatnonzero(vh), np.flatnonzero(vw))]
        dw[(Ellipsis,) + tap] = np.einsum("ngczpq,ngkzpq->gkc", xt, d, optimize=True)
    return dw.reshape(spec.weight_shape)


def conv_weight(spec, x, dy):
    return conv_weight64(spec, x, dy).astype(spec.dtype)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def _padded(spec, x, fill):
    """x as a (N, C, D, H, W) volume padded per side, plus whatever ceil_mode's last window needs past the
    after-side padding."""
    widths = []
    for o, k, st, d, (lo, hi), size in zip(spec.out_size, spec.window, spec.strides, spec.dilations, spec.pads,
                                          spec.in_size):
        need = (o - 1) * st + (k - 1) * d + 1        # the padded extent the windows read
        widths.append((lo, hi + max(0, need - (size + lo + hi))))
    return np.pad(_vol(spec, x, spec.C), ((0, 0), (0, 0)) + tuple(widths), constant_values=fill)


def _tap(spec, xp, tap):
    sl = tuple(slice(i * d, i * d + (o - 1) * st + 1, st)
               for i, d, o, st in zip(tap, spec.dilations, spec.out_size, spec.strides))
    return xp[(slice(None), slice(None)) + sl]


def _first_inbounds(out_len, stride, pad, dil):
    """First tap position >= 0 of each window (PyTorch starts its index there)."""
    start = np.arange(out_len) * stride - pad
    neg = start < 0
    start[neg] += (-start[neg] + dil - 1) // dil * dil
    return start


def _flat(spec, pd, ph, pw):
    """Flat positions ``(d*H + h)*W + w`` in a (D, H, W) plane, broadcast over (Z, P, Q)."""
    return (pd[:, None, None] * spec.H + ph[None, :, None]) * spec.W + pw[None, None, :]


def max_pool(spec, x):
    xp = _padded(spec, x, -np.inf)
    best = np.full((spec.N, spec.C) + spec.out_size, -np.inf)
    first = [_first_inbounds(o, st, lo, d) for o, st, (lo, _), d in zip(spec.out_size, spec.strides, spec.pads,
                                                                        spec.dilations)]
    idx = np.broadcast_to(_flat(spec, *first), best.shape).astype(np.int64)
    for tap, ((pd, vd), (ph, vh), (pw, vw)) in _taps(spec):
        val = _tap(spec, xp, tap)
        take = (vd[:, None, None] & vh[None, :, None] & vw[None, None, :]) & ((val > best) | np.isnan(val))
        best = np.where(take, val, best)
        idx = np.where(take, _flat(spec, pd, ph, pw), idx)
    return _pool_result(spec, best, idx)


def avg_pool(spec, x):
    xp = _padded(spec, x, 0.0)
    total = np.zeros((spec.N, spec.C) + spec.out_size)
    for tap, _ in _taps(spec):
        total += _tap(spec, xp, tap)   # padding and the ceil_mode overhang are zeros
    return (total / _avg_divisor(spec)).astype(spec.dtype).reshape(spec.output_layout)


def _avg_divisor(spec):
    """The divisor of every window, (Z, P, Q) (or a scalar for divisor_override)."""
    if spec.divisor_override is not None:
        return float(spec.divisor_override)
    with_pad, inside = [], []
    for o, st, (lo, hi), k, size in zip(spec.out_size, spec.strides, spec.pads, spec.window, spec.in_size):
        start = np.arange(o) * st - lo
        end = np.minimum(start + k, size + hi)                       # clipped to the padded input
        with_pad.append(end - start)
        inside.append(np.minimum(end, size) - np.maximum(start, 0))  # clipped to the input
    d, h, w = with_pad if spec.count_include_pad else inside
    return d[:, None, None] * h[None, :, None] * w[None, None, :]


def _adaptive_windows(spec):
    """Every window ((z, p, q), (d0, d1), (h0, h1), (w0, w1))."""
    for z, p, q in itertools.product(*(range(o) for o in spec.out_size)):
        yield (z, p, q), tuple(adaptive_window(i, n, o) for i, n, o in zip((z, p, q), spec.in_size, spec.out_size))


def adaptive_avg_pool(spec, x):
    xd = _vol(spec, x, spec.C)
    out = np.empty((spec.N, spec.C) + spec.out_size)
    for (z, p, q), ((d0, d1), (h0, h1), (w0, w1)) in _adaptive_windows(spec):
        out[:, :, z, p, q] = xd[:, :, d0:d1, h0:h1, w0:w1].sum(axis=(2, 3, 4)) / ((d1 - d0) * (h1 - h0) * (w1 - w0))
    return out.astype(spec.dtype).reshape(spec.output_layout)


def adaptive_max_pool(spec, x):
    """Per window, the scan rule of max_pool in row-major (d, h, w) order: a NaN wins and the last NaN gives
    the index; otherwise the first maximum (np.argmax's first occurrence) -- -inf everywhere gives the
    first position, as a scan from -inf that takes only greater values."""
    xd = _vol(spec, x, spec.C)
    best = np.empty((spec.N, spec.C) + spec.out_size)
    idx = np.empty((spec.N, spec.C) + spec.out_size, dtype=np.int64)
    for (z, p, q), ((d0, d1), (h0, h1), (w0, w1)) in _adaptive_windows(spec):
        block = xd[:, :, d0:d1, h0:h1, w0:w1].reshape(spec.N, spec.C, -1)
        nan = np.isnan(block)
        last_nan = block.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        local = np.where(nan.any(axis=-1), last_nan, np.argmax(np.where(nan, -np.inf, block), axis=-1))
        dd, hh, ww = np.unravel_index(local, (d1 - d0, h1 - h0, w1 - w0))
        idx[:, :, z, p, q] = ((d0 + dd) * spec.H + h0 + hh) * spec.W + w0 + ww
        best[:, :, z, p, q] = np.take_along_axis(block, local[..., None], axis=-1)[..., 0]
    return _pool_result(spec, best, idx)


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
def _live_windows(spec):
    """(Z, P, Q) bool: the windows holding at least one input position (with dilation a window can lie
    wholly in the padding; its output is -inf whatever the input, so it sends no gradient anywhere)."""
    if spec.is_adaptive:
        return np.ones(spec.out_size, dtype=bool)
    live = [np.zeros(o, dtype=bool) for o in spec.out_size]
    for _, per_dim in _taps(spec):
        for m, (_, valid) in zip(live, per_dim):
            m |= valid
    return live[0][:, None, None] & live[1][None, :, None] & live[2][None, None, :]


def _to_index(spec, dy, indices):
    """dx in float64: each dy of a window holding input positions added at the position its index names."""
    NC, L = spec.N * spec.C, spec.in_elems
    dx = np.zeros((NC, L))
    live = np.broadcast_to(_live_windows(spec), (NC,) + spec.out_size).reshape(-1)
    rows = np.repeat(np.arange(NC), spec.out_elems)[live]
    np.add.at(dx, (rows, np.asarray(indices, dtype=np.int64).reshape(-1)[live]),
              np.asarray(dy, dtype=np.float64).reshape(-1)[live])
    return dx.reshape(spec.input_shape)


def max_pool_backward(spec, dy, indices):
    return _to_index(spec, dy, indices).astype(spec.dtype)


adaptive_max_pool_backward = max_pool_backward


def avg_pool_backward(spec, dy):
    g = _vol(spec, dy, spec.C, spec.out_size) / _avg_divisor(spec)
    dx = np.zeros((spec.N, spec.C) + spec.in_size)
    for _, ((pd, vd), (ph, vh), (pw, vw)) in _taps(spec):
        if vd.any() and vh.any() and vw.any():
            dx[(slice(None),) * 2 + _grid(pd[vd], ph[vh], pw[vw])] += \
                g[(slice(None),) * 2 + _grid(np.flatnonzero(vd), np.flatnonzero(vh), np.flatnonzero(vw))]
    return dx.astype(spec.dtype).reshape(spec.input_shape)


def adaptive_avg_pool_backward(spec, dy):
    g = _vol(spec, dy, spec.C, spec.out_size)
    dx = np.zeros((spec.N, spec.C) + spec.in_size)
    for (z, p, q), ((d0, d1), (h0, h1), (w0, w1)) in _adaptive_windows(spec):
        dx[:, :, d0:d1, h0:h1, w0:w1] += (g[:, :, z, p, q] / ((d1 - d0) * (h1 - h0) * (w1 - w0)))[..., None, None, None]
    return dx.astype(spec.dtype).reshape(spec.input_shape)


def max_unpool(spec, x, indices):
    NC, L = spec.N * spec.C, spec.in_elems
    keys = (np.arange(NC)[:, None] * L + np.asarray(indices, dtype=np.int64).reshape(NC, -1)).reshape(-1)
    vals = np.asarray(x).reshape(-1)
    # the last occurrence of every key (row-major order): the first in the reversed sequence
    _, first_rev = np.unique(keys[::-1], return_index=True)
    last = keys.size - 1 - first_rev
    out = np.zeros(NC * L, dtype=spec.dtype)
    out[keys[last]] = vals[last]
    return out.reshape(spec.input_shape)


def _pool_result(spec, best, idx):
    out = best.astype(spec.dtype).reshape(spec.output_layout)
    if not spec.return_indices:
        return out
    return out, np.ascontiguousarray(idx, dtype=np.int64).reshape(spec.output_layout)


def implementations():
    return [FunctionImpl("numpy", op, "direct", fn, dtypes=DTYPES, spatial_dims=(1, 2, 3)) for op, fn in (
        ("conv", conv),
        ("max_pool", max_pool),
        ("avg_pool", avg_pool),
        ("adaptive_max_pool", adaptive_max_pool),
        ("adaptive_avg_pool", adaptive_avg_pool),
        ("conv_input", conv_input),
        ("conv_weight", conv_weight),
        ("max_pool_backward", max_pool_backward),
        ("avg_pool_backward", avg_pool_backward),
        ("adaptive_max_pool_backward", adaptive_max_pool_backward),
        ("adaptive_avg_pool_backward", adaptive_avg_pool_backward),
        ("max_unpool", max_unpool),
        ("unfold", unfold),
        ("fold", fold),
    )]


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
