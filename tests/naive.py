"""Naive nested loops, straight from the textbook definitions, that judge the oracle on tiny cases.

Deliberately scalar Python: no slicing tricks, no padding arrays, nothing shared with the oracle but the
definitions. Arguments are explicit (not a spec) so the output size is derived here too, by counting the
windows that fit rather than by the closed-form formula.
"""
import math

import numpy as np


def _windows(size, k, stride, pad_lo, pad_hi, dil, ceil_mode=False):
    """Start positions (in unpadded coordinates) of every window, by walking along the axis."""
    eff = dil * (k - 1) + 1
    starts, start = [], -pad_lo
    while start + eff <= size + pad_hi:          # every window that fits in the padded input
        starts.append(start)
        start += stride
    # ceil_mode: one more, partial, window covers a tail the full windows left uncovered, but only if it
    # starts inside the input or the left padding
    if ceil_mode and starts and starts[-1] + eff < size + pad_hi and start < size:
        starts.append(start)
    return starts


def conv2d(x, w, b, stride, pads, dil, groups):
    """x (N,C,H,W), w (K,C/g,R,S); pads ((top,bottom),(left,right)); float64 result."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    hs = _windows(H, R, stride[0], pads[0][0], pads[0][1], dil[0])
    ws = _windows(W, S, stride[1], pads[1][0], pads[1][1], dil[1])
    out = np.zeros((N, K, len(hs), len(ws)))
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for p, h0 in enumerate(hs):
                for q, w0 in enumerate(ws):
                    acc = 0.0 if b is None else float(b[k])
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                h, ww = h0 + r * dil[0], w0 + s * dil[1]
                                if 0 <= h < H and 0 <= ww < W:
                                    acc += float(x[n, g * Cg + c, h, ww]) * float(w[k, c, r, s])
                    out[n, k, p, q] = acc
    return out


def max_pool2d(x, k, stride, pad, dil, ceil_mode):
    """Returns (values float64, indices int64). NaN wins (last NaN's index), ties keep the first."""
    N, C, H, W = x.shape
    hs = _windows(H, k[0], stride[0], pad[0], pad[0], dil[0], ceil_mode)
    ws = _windows(W, k[1], stride[1], pad[1], pad[1], dil[1], ceil_mode)
    out = np.zeros((N, C, len(hs), len(ws)))
    idx = np.zeros((N, C, len(hs), len(ws)), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for p, h0 in enumerate(hs):
                for q, w0 in enumerate(ws):
                    rows = [h0 + r * dil[0] for r in range(k[0])]
                    cols = [w0 + s * dil[1] for s in range(k[1])]
                    taps = [(h, ww) for h in rows for ww in cols if 0 <= h < H and 0 <= ww < W]
                    # start: -inf at the first tap with non-negative coordinates (PyTorch's rule; for a
                    # window wholly in the padding, possible with dilation, that position lies past the edge)
                    best = -math.inf
                    bi = min(h for h in rows if h >= 0) * W + min(ww for ww in cols if ww >= 0)
                    for h, ww in taps:
                        v = float(x[n, c, h, ww])
                        if v > best or math.isnan(v):
                            best, bi = v, h * W + ww
                    out[n, c, p, q], idx[n, c, p, q] = best, bi
    return out, idx


def avg_pool2d(x, k, stride, pad, ceil_mode, count_include_pad, divisor_override):
    N, C, H, W = x.shape
    hs = _windows(H, k[0], stride[0], pad[0], pad[0], 1, ceil_mode)
    ws = _windows(W, k[1], stride[1], pad[1], pad[1], 1, ceil_mode)
    out = np.zeros((N, C, len(hs), len(ws)))
    for n in range(N):
        for c in range(C):
            for p, h0 in enumerate(hs):
                for q, w0 in enumerate(ws):
                    total, inside, with_pad = 0.0, 0, 0
                    for h in range(h0, h0 + k[0]):
                        for ww in range(w0, w0 + k[1]):
                            in_padded = -pad[0] <= h < H + pad[0] and -pad[1] <= ww < W + pad[1]
                            in_input = 0 <= h < H and 0 <= ww < W
                            with_pad += in_padded
                            inside += in_input
                            if in_input:
                                total += float(x[n, c, h, ww])
                    div = divisor_override or (with_pad if count_include_pad else inside)
                    out[n, c, p, q] = total / div
    return out


def adaptive_pool2d(x, out_hw, kind):
    """kind 'avg' -> values; 'max' -> (values, indices)."""
    N, C, H, W = x.shape
    P, Q = out_hw
    out = np.zeros((N, C, P, Q))
    idx = np.zeros((N, C, P, Q), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(P):
                h0, h1 = math.floor(i * H / P), math.ceil((i + 1) * H / P)
                for j in range(Q):
                    w0, w1 = math.floor(j * W / Q), math.ceil((j + 1) * W / Q)
                    vals = [(float(x[n, c, h, ww]), h * W + ww) for h in range(h0, h1) for ww in range(w0, w1)]
                    if kind == "avg":
                        out[n, c, i, j] = sum(v for v, _ in vals) / len(vals)
                    else:
                        best, bi = -math.inf, vals[0][1]
                        for v, pos in vals:
                            if v > best or math.isnan(v):
                                best, bi = v, pos
                        out[n, c, i, j], idx[n, c, i, j] = best, bi
    return out if kind == "avg" else (out, idx)


# --- gradients: the forward loops above with each term's contribution sent back ----------------------------
def conv2d_input(dy, w, x_shape, stride, pads, dil, groups):
    """The adjoint of conv2d in x: walk the forward loops, add dy * w at every in-bounds tap."""
    N, C, H, W = x_shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    dx = np.zeros(x_shape)
    for n in range(N):
        for k in range(K):
            g = k // Kg
            # every dy position's window (a transposed convolution may have more dy positions than the
            # forward has windows: their taps past the input are dropped like any other)
            for p in range(dy.shape[2]):
                for q in range(dy.shape[3]):
                    h0, w0 = -pads[0][0] + p * stride[0], -pads[1][0] + q * stride[1]
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                h, ww = h0 + r * dil[0], w0 + s * dil[1]
                                if 0 <= h < H and 0 <= ww < W:
                                    dx[n, g * Cg + c, h, ww] += float(dy[n, k, p, q]) * float(w[k, c, r, s])
    return dx


def conv2d_weight(x, dy, w_shape, stride, pads, dil, groups):
    """The adjoint of conv2d in w: every in-bounds term's x * dy added to its weight."""
    N, C, H, W = x.shape
    K, Cg, R, S = w_shape
    Kg = K // groups
    dw = np.zeros(w_shape)
    hs = _windows(H, R, stride[0], pads[0][0], pads[0][1], dil[0])
    ws = _windows(W, S, stride[1], pads[1][0], pads[1][1], dil[1])
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for p, h0 in enumerate(hs):
                for q, w0 in enumerate(ws):
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                h, ww = h0 + r * dil[0], w0 + s * dil[1]
                                if 0 <= h < H and 0 <= ww < W:
                                    dw[k, c, r, s] += float(x[n, g * Cg + c, h, ww]) * float(dy[n, k, p, q])
    return dw


def to_indices(dy, idx, x_shape):
    """Max-pool gradients: each dy added at the flat position its index names."""
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            for p in range(dy.shape[2]):
                for q in range(dy.shape[3]):
                    dx[n, c, int(idx[n, c, p, q])] += float(dy[n, c, p, q])
    return dx.reshape(N, C, H, W)


def avg_pool2d_backward(dy, x_shape, k, stride, pad, ceil_mode, count_include_pad, divisor_override):
    """The adjoint of avg_pool2d: each window's dy / divisor to each of its in-bounds taps."""
    N, C, H, W = x_shape
    hs = _windows(H, k[0], stride[0], pad[0], pad[0], 1, ceil_mode)
    ws = _windows(W, k[1], stride[1], pad[1], pad[1], 1, ceil_mode)
    dx = np.zeros(x_shape)
    for n in range(N):
        for c in range(C):
            for p, h0 in enumerate(hs):
                for q, w0 in enumerate(ws):
                    inside, with_pad, taps = 0, 0, []
                    for h in range(h0, h0 + k[0]):
                        for ww in range(w0, w0 + k[1]):
                            with_pad += -pad[0] <= h < H + pad[0] and -pad[1] <= ww < W + pad[1]
                            if 0 <= h < H and 0 <= ww < W:
                                inside += 1
                                taps.append((h, ww))
                    div = divisor_override or (with_pad if count_include_pad else inside)
                    for h, ww in taps:
                        dx[n, c, h, ww] += float(dy[n, c, p, q]) / div
    return dx


def adaptive_avg_pool2d_backward(dy, x_shape):
    N, C, H, W = x_shape
    P, Q = dy.shape[2:]
    dx = np.zeros(x_shape)
    for n in range(N):
        for c in range(C):
            for i in range(P):
                h0, h1 = math.floor(i * H / P), math.ceil((i + 1) * H / P)
                for j in range(Q):
                    w0, w1 = math.floor(j * W / Q), math.ceil((j + 1) * W / Q)
                    for h in range(h0, h1):
                        for ww in range(w0, w1):
                            dx[n, c, h, ww] += float(dy[n, c, i, j]) / ((h1 - h0) * (w1 - w0))
    return dx


def max_unpool2d(x, idx, out_hw):
    """Zeros, then x written at its index in row-major order (a later write overwrites an earlier one)."""
    N, C = x.shape[:2]
    out = np.zeros((N, C, out_hw[0] * out_hw[1]))
    for n in range(N):
        for c in range(C):
            for p in range(x.shape[2]):
                for q in range(x.shape[3]):
                    out[n, c, int(idx[n, c, p, q])] = float(x[n, c, p, q])
    return out.reshape(N, C, *out_hw)
