"""Naive loops for any number of spatial dimensions (1-D, 2-D, 3-D), with per-side padding everywhere.

The same discipline as tests/naive.py: scalar Python straight from the definitions, windows found by walking
(naive._windows), nothing shared with the oracle. Shapes are (N, C, *spatial); ``pads`` are per-dimension
(before, after) pairs; a point of a window is a tuple of coordinates, its flat index row-major.
"""
import itertools
import math

import numpy as np

from .naive import _windows


def _inside(pos, sizes):
    return all(0 <= p < n for p, n in zip(pos, sizes))


def _flat(pos, sizes):
    i = 0
    for p, n in zip(pos, sizes):
        i = i * n + p
    return i


def _starts(sizes, ks, stride, pads, dil, ceil_mode=False):
    return [_windows(n, k, s, lo, hi, d, ceil_mode) for n, k, s, (lo, hi), d in zip(sizes, ks, stride, pads, dil)]


def conv(x, w, b, stride, pads, dil, groups):
    N, C, *sizes = x.shape
    K, Cg, *ks = w.shape
    Kg = K // groups
    starts = _starts(sizes, ks, stride, pads, dil)
    out = np.zeros((N, K) + tuple(len(s) for s in starts))
    for n, k in itertools.product(range(N), range(K)):
        g = k // Kg
        for o in itertools.product(*(range(len(s)) for s in starts)):
            acc = 0.0 if b is None else float(b[k])
            for c in range(Cg):
                for tap in itertools.product(*(range(kk) for kk in ks)):
                    pos = tuple(s[i] + t * d for s, i, t, d in zip(starts, o, tap, dil))
                    if _inside(pos, sizes):
                        acc += float(x[(n, g * Cg + c) + pos]) * float(w[(k, c) + tap])
            out[(n, k) + o] = acc
    return out


def conv_input(dy, w, x_shape, stride, pads, dil, groups):
    """Every dy position's window (there may be more than the forward has), each in-bounds term sent back."""
    N, C, *sizes = x_shape
    K, Cg, *ks = w.shape
    Kg = K // groups
    dx = np.zeros(x_shape)
    for n, k in itertools.product(range(N), range(K)):
        g = k // Kg
        for o in itertools.product(*(range(m) for m in dy.shape[2:])):
            for c in range(Cg):
                for tap in itertools.product(*(range(kk) for kk in ks)):
                    pos = tuple(-lo + i * s + t * d for (lo, _), i, s, t, d in zip(pads, o, stride, tap, dil))
                    if _inside(pos, sizes):
                        dx[(n, g * Cg + c) + pos] += float(dy[(n, k) + o]) * float(w[(k, c) + tap])
    return dx


def conv_weight(x, dy, w_shape, stride, pads, dil, groups):
    N, C, *sizes = x.shape
    K, Cg, *ks = w_shape
    Kg = K // groups
    starts = _starts(sizes, ks, stride, pads, dil)
    dw = np.zeros(w_shape)
    for n, k in itertools.product(range(N), range(K)):
        g = k // Kg
        for o in itertools.product(*(range(len(s)) for s in starts)):
            for c in range(Cg):
                for tap in itertools.product(*(range(kk) for kk in ks)):
                    pos = tuple(s[i] + t * d for s, i, t, d in zip(starts, o, tap, dil))
                    if _inside(pos, sizes):
                        dw[(k, c) + tap] += float(x[(n, g * Cg + c) + pos]) * float(dy[(n, k) + o])
    return dw


def max_pool(x, ks, stride, pads, dil, ceil_mode):
    """(values, int64 flat indices). NaN wins (last NaN's index), ties keep the first; the start index is
    that of the first point with non-negative coordinates (PyTorch's rule)."""
    N, C, *sizes = x.shape
    starts = _starts(sizes, ks, stride, pads, dil, ceil_mode)
    shape = (N, C) + tuple(len(s) for s in starts)
    out, idx = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(len(s)) for s in starts)):
            axes = [[s[i] + t * d for t in range(k)] for s, i, k, d in zip(starts, o, ks, dil)]
            best = -math.inf
            bi = _flat(tuple(min(p for p in a if p >= 0) for a in axes), sizes)
            for pos in itertools.product(*axes):
                if _inside(pos, sizes):
                    v = float(x[(n, c) + pos])
                    if v > best or math.isnan(v):
                        best, bi = v, _flat(pos, sizes)
            out[(n, c) + o], idx[(n, c) + o] = best, bi
    return out, idx


def _avg_window(pos_axes, sizes, pads):
    """(points inside the input, count inside the padded extent, count inside the input)."""
    inside, with_pad, pts = 0, 0, []
    for pos in itertools.product(*pos_axes):
        with_pad += all(-lo <= p < n + hi for p, n, (lo, hi) in zip(pos, sizes, pads))
        if _inside(pos, sizes):
            inside += 1
            pts.append(pos)
    return pts, with_pad, inside


def avg_pool(x, ks, stride, pads, ceil_mode, count_include_pad, divisor_override):
    N, C, *sizes = x.shape
    starts = _starts(sizes, ks, stride, pads, (1,) * len(ks), ceil_mode)
    out = np.zeros((N, C) + tuple(len(s) for s in starts))
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(len(s)) for s in starts)):
            axes = [range(s[i], s[i] + k) for s, i, k in zip(starts, o, ks)]
            pts, with_pad, inside = _avg_window(axes, sizes, pads)
            div = divisor_override or (with_pad if count_include_pad else inside)
            out[(n, c) + o] = sum(float(x[(n, c) + p]) for p in pts) / div
    return out


def avg_pool_backward(dy, x_shape, ks, stride, pads, ceil_mode, count_include_pad, divisor_override):
    N, C, *sizes = x_shape
    starts = _starts(sizes, ks, stride, pads, (1,) * len(ks), ceil_mode)
    dx = np.zeros(x_shape)
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(len(s)) for s in starts)):
            axes = [range(s[i], s[i] + k) for s, i, k in zip(starts, o, ks)]
            pts, with_pad, inside = _avg_window(axes, sizes, pads)
            div = divisor_override or (with_pad if count_include_pad else inside)
            for p in pts:
                dx[(n, c) + p] += float(dy[(n, c) + o]) / div
    return dx


def _adaptive_axes(o, sizes, outs):
    return [range(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i, n, m in zip(o, sizes, outs)]


def adaptive_pool(x, outs, kind):
    """kind 'avg' -> values; 'max' -> (values, indices)."""
    N, C, *sizes = x.shape
    out = np.zeros((N, C) + tuple(outs))
    idx = np.zeros((N, C) + tuple(outs), dtype=np.int64)
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(m) for m in outs)):
            pts = list(itertools.product(*_adaptive_axes(o, sizes, outs)))
            if kind == "avg":
                out[(n, c) + o] = sum(float(x[(n, c) + p]) for p in pts) / len(pts)
            else:
                best, bi = -math.inf, _flat(pts[0], sizes)
                for p in pts:
                    v = float(x[(n, c) + p])
                    if v > best or math.isnan(v):
                        best, bi = v, _flat(p, sizes)
                out[(n, c) + o], idx[(n, c) + o] = best, bi
    return out if kind == "avg" else (out, idx)


def adaptive_avg_pool_backward(dy, x_shape):
    N, C, *sizes = x_shape
    outs = dy.shape[2:]
    dx = np.zeros(x_shape)
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(m) for m in outs)):
            pts = list(itertools.product(*_adaptive_axes(o, sizes, outs)))
            for p in pts:
                dx[(n, c) + p] += float(dy[(n, c) + o]) / len(pts)
    return dx


def to_indices(dy, idx, x_shape):
    N, C = x_shape[:2]
    dx = np.zeros((N, C, int(np.prod(x_shape[2:]))))
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(m) for m in dy.shape[2:])):
            dx[n, c, int(idx[(n, c) + o])] += float(dy[(n, c) + o])
    return dx.reshape(x_shape)


def max_unpool(x, idx, out_sizes):
    """Zeros, then x written at its index in row-major order (a later write overwrites an earlier one)."""
    N, C = x.shape[:2]
    out = np.zeros((N, C, int(np.prod(out_sizes))))
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(m) for m in x.shape[2:])):
            out[n, c, int(idx[(n, c) + o])] = float(x[(n, c) + o])
    return out.reshape((N, C) + tuple(out_sizes))


def pad(x, pads, mode):
    """Explicit padding by ``mode``, one source coordinate per padded coordinate, from the definitions:
    reflect mirrors about the edge element (-1 -> 1), replicate clamps, circular wraps."""
    N, C, *sizes = x.shape
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(sizes, pads))

    def source(i, n):
        if mode == "reflect":
            return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
        if mode == "replicate":
            return min(max(i, 0), n - 1)
        if mode == "circular":
            return i % n
        raise ValueError(mode)

    out = np.zeros((N, C) + shape)
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(m) for m in shape)):
            src = tuple(source(i - lo, size) for i, (lo, _), size in zip(o, pads, sizes))
            out[(n, c) + o] = x[(n, c) + src]
    return out


def lp_pool(x, p, ks, stride, ceil_mode):
    """torch's rule written out: ``(prod(k) * sum(x**p over in-bounds taps) / in-bounds count) ** (1/p)``
    (no padding: the average pool's divisor is the window clipped to the input)."""
    N, C, *sizes = x.shape
    starts = _starts(sizes, ks, stride, ((0, 0),) * len(ks), (1,) * len(ks), ceil_mode)
    out = np.zeros((N, C) + tuple(len(s) for s in starts))
    for n, c in itertools.product(range(N), range(C)):
        for o in itertools.product(*(range(len(s)) for s in starts)):
            pts = [pos for pos in itertools.product(*(range(s[i], s[i] + k) for s, i, k in zip(starts, o, ks)))
                   if _inside(pos, sizes)]
            with np.errstate(invalid="ignore", over="ignore"):
                total = sum(np.float64(x[(n, c) + q]) ** p for q in pts)
                out[(n, c) + o] = np.float64(math.prod(ks) * total / len(pts)) ** (1.0 / p)
    return out
