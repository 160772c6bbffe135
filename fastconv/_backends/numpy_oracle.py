"""The NumPy oracle (``backend="numpy"``): every op written from its definition, accumulating in float64.

It judges every other backend, so it is derived from none of them; it is itself checked against naive
nested loops (tests/naive.py) and against hand-derived values. Written once for (N, C, D, H, W) volumes
(1-D and 2-D problems are viewed with D = 1). Every op walks the taps (t, r, s) of its windows through one
helper, ``_tap_chunks``, in bounded chunks of consecutive taps: a chunk is gathered for every output
position at once, so the Python-level work is one pass per chunk, never one per tap, and memory stays
bounded (the rule is written down at ``CHUNK_ELEMS``).

Definitions used:
- conv: ``y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw] * w[k,c,r,s]``
  over taps that fall inside the input (taps in the padding contribute nothing, so an Inf weight never
  meets a padded zero);
- max pool: scan the window row-major, take a value if it is greater than the current best or is NaN
  (so NaN wins, the last NaN gives the index; ties keep the first); start from -inf with the index of the
  first in-bounds tap; padding is never selected;
- avg pool: sum of in-bounds taps / divisor, divisor = divisor_override, else the window's area clipped
  to the padded input (count_include_pad) or to the input (not count_include_pad);
- adaptive: window i spans [floor(i*In/Out), ceil((i+1)*In/Out)); the adaptive pools are the plain ones
  over those windows (the max pool's scan, the avg pool's sum over the window's area).

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

import math
from typing import NamedTuple, Union

import numpy as np

from .._dispatch import FunctionImpl
from .._spec import adaptive_window

DTYPES = ("float16", "float32", "float64")


def availability():
    return None


# ---------------------------------------------------------------------------------------------------
# Windows and their taps
# ---------------------------------------------------------------------------------------------------
# Every op is written once, for 5-D (N, C, D, H, W) volumes; 1-D and 2-D problems (4-D backend layout) are
# viewed with D = 1 (and H = 1 for 1-D), which costs a reshape.
#
# Per dimension, a window is an _Axis: tap i of output o reads input position start[o] + i*dil, inside the
# input iff 0 <= position < hi[o] (the input's size; for an adaptive window, its end). Every op walks the
# taps (t, r, s), row-major, through _tap_chunks, which hands them out in chunks of consecutive taps; a
# chunk is gathered for every output position at once, as an array (..., taps of the chunk, Z, P, Q).
# The bounds:
# - taps per chunk = max(1, CHUNK_ELEMS // per_tap), where per_tap is what one tap costs the op (its
#   largest temporary over the output, e.g. N*C*Z*P*Q for a pool): besides the float64 copies of the
#   operands and the result, no temporary holds more than max(CHUNK_ELEMS, per_tap) elements -- one tap's
#   worth, as a loop over taps would, only when a single tap is over the budget;
# - chunks = ceil(live taps / taps per chunk), the live taps being the box of taps that reach the input
#   for at least one output (per dimension, the taps that read only padding for every output are skipped
#   as a range): the Python-level work is proportional to the chunks, not to the taps.
CHUNK_ELEMS = 1 << 20


class _Axis(NamedTuple):
    start: np.ndarray              # (O,) input position of each window's first tap (< 0: in the padding)
    dil: int
    taps: int                      # taps per window (adaptive: the longest window's)
    size: int                      # the input's extent
    hi: Union[int, np.ndarray]     # a tap is inside iff 0 <= position < hi: the size, or each window's end


def _axes(spec):
    """The (D, H, W) axes of spec's windows."""
    if getattr(spec, "is_adaptive", False):
        axes = []
        for n, o in zip(spec.in_size, spec.out_size):
            lo, hi = adaptive_window(np.arange(o), n, o)
            axes.append(_Axis(lo, 1, int((hi - lo).max(initial=0)), n, hi))
        return axes
    return [_Axis(np.arange(o) * st - lo, d, k, n, n) for o, st, (lo, _), d, k, n
            in zip(spec.out_size, spec.strides, spec.pads, spec.dilations, spec.window, spec.in_size)]


def _live(ax):
    """The taps [first, stop) of ``ax`` that can read inside the input: tap i reads positions start[0] + i*dil
    up to start[-1] + i*dil, so it reaches the input only if start[-1] + i*dil >= 0 and start[0] + i*dil <
    size (a superset when the stride skips over the input; the chunk's ``inside`` decides each term)."""
    if ax.size == 0 or len(ax.start) == 0:
        return 0, 0
    first = max(0, -(int(ax.start[-1]) // ax.dil))
    stop = min(ax.taps, (ax.size - 1 - int(ax.start[0])) // ax.dil + 1)
    return first, max(first, stop)


class _Chunk(NamedTuple):
    taps: np.ndarray      # (a,) the chunk's taps, as flat indices (t*R + r)*S + s into the window
    inside: np.ndarray    # (a, Z, P, Q) bool: the tap reads inside the input
    flat: np.ndarray      # (a, Z, P, Q) the flat position (d*H + h)*W + w it reads (clipped into the input
    #                       where it is outside: meaningful only where inside)


def _tap_chunks(axes, per_tap):
    """The live taps of the windows ``axes`` in row-major order, in chunks of at most max(1, CHUNK_ELEMS //
    per_tap) consecutive taps (the bounds are written down at CHUNK_ELEMS)."""
    live = [_live(ax) for ax in axes]
    box = tuple(stop - first for first, stop in live)
    count, step = math.prod(box), max(1, CHUNK_ELEMS // max(1, per_tap))
    for c0 in range(0, count, step):
        taps = [t + first for t, (first, _) in zip(np.unravel_index(np.arange(c0, min(count, c0 + step)), box), live)]
        inside, flat = True, 0
        for dim, (ax, t) in enumerate(zip(axes, taps)):
            p = (ax.start[None, :] + t[:, None] * ax.dil).reshape([len(t)] + [-1 if i == dim else 1 for i in range(3)])
            inside = inside & (p >= 0) & (p < (ax.hi if np.ndim(ax.hi) == 0 else ax.hi.reshape(p.shape[1:])))
            flat = flat * ax.size + np.clip(p, 0, ax.size - 1)
        yield _Chunk(np.ravel_multi_index(taps, tuple(ax.taps for ax in axes)), inside, flat)


def _gather(vol, ch):
    """``vol[..., d, h, w]`` (a (D, H, W) volume after any leading axes) at every tap of the chunk for every
    output: (..., a, Z, P, Q)."""
    return np.take(vol.reshape(vol.shape[:-3] + (math.prod(vol.shape[-3:]),)), ch.flat, axis=-1)


def _add_inside(acc, ch, terms, windows_first=False):
    """``acc`` (rows, D*H*W) += every inside term of ``terms`` (rows as leading axes, then (a, Z, P, Q)) at the
    position its tap read. Terms reaching one position are added one after another (np.add.at), taps
    ascending; ``windows_first``: window by window in row-major order, each window's taps ascending (the
    order within a chunk: a window split over chunks sends its later taps with the later chunk)."""
    rows, plane = acc.shape
    terms, inside, flat = terms.reshape((rows,) + ch.inside.shape), ch.inside, ch.flat
    if windows_first:
        terms, inside, flat = np.moveaxis(terms, 1, -1), np.moveaxis(inside, 0, -1), np.moveaxis(flat, 0, -1)
    sel = np.flatnonzero(inside)
    keys = np.arange(rows)[:, None] * plane + np.take(flat, sel)[None, :]
    np.add.at(acc.reshape(-1), keys.reshape(-1), np.take(terms.reshape(rows, inside.size), sel, axis=1).reshape(-1))


def _add_in_order(total, terms):
    """``total + terms[:, :, 0] + terms[:, :, 1] + ...``, added one after another in tap order as the
    definition's loop does (np.sum may pair terms up, which rounds differently)."""
    return np.add.accumulate(np.concatenate([total[:, :, None], terms], axis=2), axis=2)[:, :, -1]


def _vol(spec, a, channels, sizes=None):
    """``a`` (backend layout) as a float64 (N, channels, D, H, W) volume (``sizes``: default the input's)."""
    return np.asarray(a, dtype=np.float64).reshape((spec.N, channels) + tuple(sizes or spec.in_size))


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
# The sums multiply x by w (forward) or by dy (weight gradient). Zeroing x at the outside taps drops their
# terms exactly when the other factor is finite; an Inf or NaN times that zero would be NaN, so then each
# tap's terms are formed first and the outside ones dropped (np.where, never a multiplication by a mask).
def conv64(spec, x, w, b=None):
    """The convolution in float64, in the output layout (N, K, [Z,] P, Q). Public so tests can build error
    bounds from ``conv64(spec, |x|, |w|, |b|)``."""
    N, G, Cg, Kg = spec.N, spec.groups, spec.C_per_group, spec.K_per_group
    xd = _vol(spec, x, spec.C).reshape((N, G, Cg) + spec.in_size)
    wt = np.asarray(w).reshape(G, Kg, Cg, spec.window_elems)               # taps row-major; widened per chunk
    out = np.zeros((N, G, Kg) + spec.out_size)
    per_tap = max(N * max(spec.C, spec.K) * spec.out_elems, spec.K * Cg)
    for ch in _tap_chunks(_axes(spec), per_tap):
        xt = _gather(xd, ch)                                                # (N, G, Cg, a, Z, P, Q)
        wc = wt[..., ch.taps].astype(np.float64)                            # (G, Kg, Cg, a)
        with np.errstate(invalid="ignore"):
            if np.isfinite(wc).all():
                out += np.einsum("ngcazpq,gkca->ngkzpq", np.where(ch.inside, xt, 0.0), wc)
            else:
                terms = np.einsum("ngcazpq,gkca->ngkazpq", xt, wc)
                out += np.where(ch.inside, terms, 0.0).sum(axis=3)
    out = out.reshape(spec.output_layout)
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * (out.ndim - 2))
    return out


def conv(spec, x, w, b=None):
    return conv64(spec, x, w, b).astype(spec.dtype)


def conv_input64(spec, dy, w, b=None):
    """The input gradient (transposed convolution) in float64, in the input layout: every term ``dy @ w``
    of an inside tap added at the position that tap read."""
    N, G, Cg, Kg = spec.N, spec.groups, spec.C_per_group, spec.K_per_group
    dyd = _vol(spec, dy, spec.K, spec.out_size).reshape((N, G, Kg) + spec.out_size)
    wt = np.asarray(w).reshape(G, Kg, Cg, spec.window_elems)
    dx = np.zeros((N * spec.C, spec.in_elems))
    for ch in _tap_chunks(_axes(spec), max(N * spec.C * spec.out_elems, spec.K * Cg)):
        terms = np.einsum("ngkzpq,gkca->ngcazpq", dyd, wt[..., ch.taps].astype(np.float64))
        _add_inside(dx, ch, terms)
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
    dw = np.zeros((G, Kg, Cg, spec.window_elems))
    finite = bool(np.isfinite(dyd).all())
    per_tap = max((N * spec.C if finite else max(N * spec.C, spec.K * Cg)) * spec.out_elems, spec.K * Cg)
    for ch in _tap_chunks(_axes(spec), per_tap):
        xt = _gather(xd, ch)                                                # (N, G, Cg, a, Z, P, Q)
        with np.errstate(invalid="ignore"):
            if finite:
                dw[..., ch.taps] = np.einsum("ngcazpq,ngkzpq->gkca", np.where(ch.inside, xt, 0.0), dyd)
            else:                                                           # terms summed over n only
                terms = np.einsum("ngcazpq,ngkzpq->gkcazpq", xt, dyd)
                dw[..., ch.taps] = np.where(ch.inside, terms, 0.0).sum(axis=(4, 5, 6))
    return dw.reshape(spec.weight_shape)


def conv_weight(spec, x, dy):
    return conv_weight64(spec, x, dy).astype(spec.dtype)


# ---------------------------------------------------------------------------------------------------
# Pooling (plain and adaptive: the same rules over their windows)
# ---------------------------------------------------------------------------------------------------
def _first_inbounds(ax):
    """First tap position >= 0 of each window (PyTorch starts its index there)."""
    start = ax.start.copy()
    neg = start < 0
    start[neg] += (-start[neg] + ax.dil - 1) // ax.dil * ax.dil
    return start


def _flat(spec, pd, ph, pw):
    """Flat positions ``(d*H + h)*W + w`` in a (D, H, W) plane, broadcast over (Z, P, Q)."""
    return (pd[:, None, None] * spec.H + ph[None, :, None]) * spec.W + pw[None, None, :]


def max_pool(spec, x):
    """The scan rule, chunk by chunk: each chunk's own scan (its last NaN if it holds one, else its first
    maximum -- what a row-major scan of the chunk alone keeps) continues the scan of the chunks before it
    (taken if greater or NaN). Outside taps are -inf there, never taken."""
    xd = _vol(spec, x, spec.C)
    axes = _axes(spec)
    best = np.full((spec.N, spec.C) + spec.out_size, -np.inf)
    idx = np.broadcast_to(_flat(spec, *(_first_inbounds(ax) for ax in axes)), best.shape).astype(np.int64)
    for ch in _tap_chunks(axes, spec.N * spec.C * spec.out_elems):
        vals = np.where(ch.inside, _gather(xd, ch), -np.inf)              # (N, C, a, Z, P, Q)
        nan = np.isnan(vals)
        last_nan = vals.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        pick = np.where(nan.any(axis=2), last_nan, np.argmax(np.where(nan, -np.inf, vals), axis=2))[:, :, None]
        val = np.take_along_axis(vals, pick, axis=2)[:, :, 0]
        at = np.take_along_axis(np.broadcast_to(ch.flat, vals.shape), pick, axis=2)[:, :, 0]
        take = (val > best) | np.isnan(val)
        best = np.where(take, val, best)
        idx = np.where(take, at, idx)
    return _pool_result(spec, best, idx)


adaptive_max_pool = max_pool


def avg_pool(spec, x):
    xd = _vol(spec, x, spec.C)
    total = np.zeros((spec.N, spec.C) + spec.out_size)
    for ch in _tap_chunks(_axes(spec), spec.N * spec.C * spec.out_elems):
        total = _add_in_order(total, np.where(ch.inside, _gather(xd, ch), 0.0))
    return (total / _avg_divisor(spec)).astype(spec.dtype).reshape(spec.output_layout)


adaptive_avg_pool = avg_pool


def _avg_divisor(spec):
    """The divisor of every window, (Z, P, Q) (or a scalar for divisor_override)."""
    if spec.is_adaptive:
        d, h, w = (ax.hi - ax.start for ax in _axes(spec))                   # the window's area
    elif spec.divisor_override is not None:
        return float(spec.divisor_override)
    else:
        with_pad, inside = [], []
        for o, st, (lo, hi), k, size in zip(spec.out_size, spec.strides, spec.pads, spec.window, spec.in_size):
            start = np.arange(o) * st - lo
            end = np.minimum(start + k, size + hi)                           # clipped to the padded input
            with_pad.append(end - start)
            inside.append(np.minimum(end, size) - np.maximum(start, 0))     # clipped to the input
        d, h, w = with_pad if spec.count_include_pad else inside
    return d[:, None, None] * h[None, :, None] * w[None, None, :]


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
def _live_windows(spec):
    """(Z, P, Q) bool: the windows holding at least one input position (with dilation a window can lie
    wholly in the padding; its output is -inf whatever the input, so it sends no gradient anywhere): per
    dimension, the window's first tap position >= 0 is one of its taps and inside the input."""
    live = []
    for ax in _axes(spec):
        first = _first_inbounds(ax)
        live.append((first <= ax.start + (ax.taps - 1) * ax.dil) & (first < ax.hi))
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
    """Each window's ``dy / divisor`` sent to every inside tap (plain and adaptive windows). The terms reach a
    position tap by tap for plain windows and window by window for adaptive ones (the order fixes the
    rounding; the numba kernels, compared bit for bit, add in the same orders)."""
    NC = spec.N * spec.C
    g = (_vol(spec, dy, spec.C, spec.out_size) / _avg_divisor(spec)).reshape((NC, 1) + spec.out_size)
    dx = np.zeros((NC, spec.in_elems))
    for ch in _tap_chunks(_axes(spec), NC * spec.out_elems):
        _add_inside(dx, ch, np.broadcast_to(g, (NC,) + ch.inside.shape), windows_first=spec.is_adaptive)
    return dx.astype(spec.dtype).reshape(spec.input_shape)


adaptive_avg_pool_backward = avg_pool_backward


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
# read from, entries of padded positions dropped; float64, taps (t, r, s) in ascending order. Both walk
# the taps in chunks (_tap_chunks), as the ops above.
def unfold(spec, x):
    """The column matrix (N, C*T*R*S, Z*P*Q): the image's values copied tap by tap, 0 at the outside taps
    (exact in every dtype: values are selected, nothing is multiplied)."""
    N, C = spec.N, spec.C
    xd = np.asarray(x).reshape((N, C) + spec.in_size)
    col = np.zeros((N, C, spec.window_elems) + spec.out_size, dtype=spec.dtype)   # taps that read only padding
    zero = np.zeros((), dtype=spec.dtype)
    for ch in _tap_chunks(_axes(spec), N * C * spec.out_elems):
        col[:, :, ch.taps] = np.where(ch.inside, _gather(xd, ch), zero)
    return col.reshape(spec.output_layout)


def fold64(spec, cols):
    """fold in float64, in the backend layout (N, C, [D,] H, W): every column entry of an inside tap added
    at the position it was read from. Public so tests can bound errors with ``fold64(spec, |cols|)``."""
    N, C = spec.N, spec.C
    c = np.asarray(cols, dtype=np.float64).reshape((N, C, spec.window_elems) + spec.out_size)
    acc = np.zeros((N * C, spec.in_elems))
    with np.errstate(invalid="ignore"):          # inf + -inf: NaN is the sum
        for ch in _tap_chunks(_axes(spec), N * C * spec.out_elems):
            _add_inside(acc, ch, c[:, :, ch.taps])
    return acc.reshape(spec.output_layout)


def fold(spec, cols):
    return fold64(spec, cols).astype(spec.dtype)
