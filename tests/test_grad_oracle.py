"""The oracle's gradients (backend="numpy") judged by things outside it: naive loops (tests/naive.py), central
finite differences of the forward ops, the adjoint identities

    <conv(x, w), g> == <x, conv_input(g, w)> == <w, conv_weight(x, g)>,   <pool(x), g> == <x, pool_grad(g)>

(a pool is linear once its windows' winners are fixed), and values worked out by hand. Everything in float64;
hypothesis runs derandomized (the same examples every run), bounded for CI.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc

from . import naive
from .test_oracle import _pool_input, conv_cases, pool_cases

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
B = dict(backend="numpy")


def _conv_args(c):
    return dict(stride=c["stride"], padding=c["pads"], dilation=c["dil"], groups=c["groups"])


def _conv_problem(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal((c["N"], c["C"], c["H"], c["W"]))
    w = rng.standard_normal((c["K"], c["C"] // c["groups"], c["R"], c["S"]))
    y = fc.conv2d(x, w, None, **_conv_args(c), **B)
    g = rng.standard_normal(y.shape)
    return x, w, y, g


# --- naive loops ---------------------------------------------------------------------------------------------
@SETTINGS
@given(conv_cases())
def test_conv_gradients_match_naive_loops(c):
    x, w, y, g = _conv_problem(c)
    dx = fc.grad.conv2d_input(x.shape, w, g, **_conv_args(c), **B)
    dw = fc.grad.conv2d_weight(x, w.shape, g, **_conv_args(c), **B)
    np.testing.assert_allclose(dx, naive.conv2d_input(g, w, x.shape, c["stride"], c["pads"], c["dil"], c["groups"]),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, naive.conv2d_weight(x, g, w.shape, c["stride"], c["pads"], c["dil"], c["groups"]),
                               rtol=1e-12, atol=1e-12)


@SETTINGS
@given(conv_cases(), st.integers(0, 2))
def test_conv_transpose_matches_naive_loops(c, extra):
    """conv_transpose of y is the input gradient of the convolution whose output y is; output_padding rows
    (below max(stride, dilation)) are reached by no dy and so hold the bias only."""
    rng = np.random.default_rng(c["seed"])
    y = rng.standard_normal((c["N"], c["K"], max(1, c["H"] // 2), max(1, c["W"] // 2)))
    w = rng.standard_normal((c["K"], c["C"] // c["groups"], c["R"], c["S"]))
    b = rng.standard_normal(c["C"])
    op = tuple(min(extra, max(s, d) - 1) for s, d in zip(c["stride"], c["dil"]))
    try:
        out = fc.conv_transpose2d(y, w, b, c["stride"], c["pads"], op, c["groups"], c["dil"], **B)
    except ValueError as e:      # padding removes the whole output: refused, and the rule says so
        assert "would be empty" in str(e)
        sizes = [(i - 1) * s - lo - hi + d * (k - 1) + o + 1 for i, s, (lo, hi), d, k, o in
                 zip(y.shape[2:], c["stride"], c["pads"], c["dil"], (c["R"], c["S"]), op)]
        assert min(sizes) < 1
        return
    ref = naive.conv2d_input(y, w, out.shape, c["stride"], c["pads"], c["dil"], c["groups"]) + b[None, :, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(pool_cases())
def test_max_pool_gradient_matches_naive_loops(c):
    rng = np.random.default_rng(c["seed"] + 1)
    x = _pool_input(c)            # ties and NaN included: the gradient follows the forward's index
    kw = dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"], dilation=c["dil"], ceil_mode=c["ceil"])
    y, idx = fc.max_pool2d(x, return_indices=True, **kw, **B)
    g = rng.standard_normal(y.shape)
    want = naive.to_indices(g, naive.max_pool2d(x, c["k"], c["stride"], c["pad"], c["dil"], c["ceil"])[1], x.shape)
    np.testing.assert_allclose(fc.grad.max_pool2d(g, x, **kw, **B), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fc.grad.max_pool2d(g, x, **kw, indices=idx, **B), want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(pool_cases(dilation=False), st.booleans(), st.sampled_from([None, 1, 3, -2]))
def test_avg_pool_gradient_matches_naive_loops(c, include_pad, override):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal(c["shape"])
    kw = dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"], ceil_mode=c["ceil"],
              count_include_pad=include_pad, divisor_override=override)
    g = rng.standard_normal(fc.avg_pool2d(x, **kw, **B).shape)
    want = naive.avg_pool2d_backward(g, x.shape, c["k"], c["stride"], c["pad"], c["ceil"], include_pad, override)
    np.testing.assert_allclose(fc.grad.avg_pool2d(g, x, **kw, **B), want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**16))
def test_adaptive_pool_gradients_match_naive_loops(H, W, P, Q, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, H, W))
    g = rng.standard_normal((2, 2, P, Q))
    np.testing.assert_allclose(fc.grad.adaptive_avg_pool2d(g, x, **B), naive.adaptive_avg_pool2d_backward(g, x.shape),
                               rtol=1e-12, atol=1e-12)
    _, idx = naive.adaptive_pool2d(x, (P, Q), "max")
    np.testing.assert_allclose(fc.grad.adaptive_max_pool2d(g, x, **B), naive.to_indices(g, idx, x.shape),
                               rtol=1e-12, atol=1e-12)


@SETTINGS
@given(pool_cases(dilation=False))
def test_max_unpool_matches_naive_loops(c):
    x = _pool_input(c)            # ties: repeated indices in overlapping windows
    kw = dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"])
    y, idx = fc.max_pool2d(x, return_indices=True, **kw, **B)
    out = fc.max_unpool2d(y, idx, **kw, output_size=x.shape[2:], **B)
    np.testing.assert_array_equal(out, naive.max_unpool2d(y, idx, x.shape[2:]))


# --- adjoint identities --------------------------------------------------------------------------------------
@SETTINGS
@given(conv_cases())
def test_conv_adjoint_identity(c):
    x, w, y, g = _conv_problem(c)
    dx = fc.grad.conv2d_input(x.shape, w, g, **_conv_args(c), **B)
    dw = fc.grad.conv2d_weight(x, w.shape, g, **_conv_args(c), **B)
    lhs = float(np.sum(y * g))
    scale = float(np.sum(np.abs(y * g))) + 1.0
    assert abs(lhs - float(np.sum(x * dx))) <= 1e-12 * scale
    assert abs(lhs - float(np.sum(w * dw))) <= 1e-12 * scale


@SETTINGS
@given(pool_cases(dilation=False), st.booleans(), st.sampled_from([None, 2]))
def test_pool_adjoint_identities(c, include_pad, override):
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal(c["shape"])
    kw = dict(kernel_size=c["k"], stride=c["stride"], padding=c["pad"], ceil_mode=c["ceil"])
    y = fc.avg_pool2d(x, count_include_pad=include_pad, divisor_override=override, **kw, **B)
    g = rng.standard_normal(y.shape)
    dx = fc.grad.avg_pool2d(g, x, count_include_pad=include_pad, divisor_override=override, **kw, **B)
    assert abs(float(np.sum(y * g)) - float(np.sum(x * dx))) <= 1e-12 * (float(np.sum(np.abs(y * g))) + 1)
    # a max pool is the linear map x -> x[indices]: its gradient is that map's transpose
    y, idx = fc.max_pool2d(x, return_indices=True, **kw, **B)
    dx = fc.grad.max_pool2d(g, x, indices=idx, **kw, **B)
    assert abs(float(np.sum(y * g)) - float(np.sum(x * dx))) <= 1e-12 * (float(np.sum(np.abs(y * g))) + 1)


# --- finite differences --------------------------------------------------------------------------------------
def _central_differences(f, a, eps=1e-6):
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        hi = f()
        a[i] = old - eps
        lo = f()
        a[i] = old
        grad[i] = (hi - lo) / (2 * eps)
    return grad


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=((1, 0), (2, 1))), dict(dilation=2, padding="same"),
                                dict(groups=2, padding=1, stride=(1, 2))], ids=["plain", "stride-asym", "same-dil", "groups"])
def test_conv_gradients_match_finite_differences(kw):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((4, 4 // kw.get("groups", 1), 3, 2))
    g = rng.standard_normal(fc.conv2d(x, w, **kw, **B).shape)

    def loss():
        return float(np.sum(fc.conv2d(x, w, **kw, **B) * g))
    np.testing.assert_allclose(fc.grad.conv2d_input(x.shape, w, g, **kw, **B), _central_differences(loss, x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fc.grad.conv2d_weight(x, w.shape, g, **kw, **B), _central_differences(loss, w),
                               rtol=1e-6, atol=1e-6)


def test_conv1d_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 11)), rng.standard_normal((2, 3, 3))
    kw = dict(stride=2, padding=((2, 1),), dilation=2)
    g = rng.standard_normal(fc.conv1d(x, w, **kw, **B).shape)

    def loss():
        return float(np.sum(fc.conv1d(x, w, **kw, **B) * g))
    np.testing.assert_allclose(fc.grad.conv1d_input(x.shape, w, g, **kw, **B), _central_differences(loss, x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fc.grad.conv1d_weight(x, w.shape, g, **kw, **B), _central_differences(loss, w),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["max", "avg", "adaptive_max", "adaptive_avg", "max1d", "avg1d"])
def test_pool_gradients_match_finite_differences(op):
    rng = np.random.default_rng(3)
    # distinct values far apart: a step of eps never changes a window's winner
    x = rng.permutation(np.arange(2 * 3 * 7 * 8, dtype=np.float64)).reshape(2, 3, 7, 8) * 0.01
    if op.endswith("1d"):
        x = x.reshape(2, 3, 56)
    fwd = {"max": lambda a: fc.max_pool2d(a, 3, 2, 1, ceil_mode=True, **B),
           "avg": lambda a: fc.avg_pool2d(a, 3, 2, 1, ceil_mode=True, count_include_pad=False, **B),
           "adaptive_max": lambda a: fc.adaptive_max_pool2d(a, (3, 5), **B),
           "adaptive_avg": lambda a: fc.adaptive_avg_pool2d(a, (3, 5), **B),
           "max1d": lambda a: fc.max_pool1d(a, 4, 3, 2, dilation=2, **B),
           "avg1d": lambda a: fc.avg_pool1d(a, 4, 3, 2, **B)}[op]
    bwd = {"max": lambda g: fc.grad.max_pool2d(g, x, 3, 2, 1, ceil_mode=True, **B),
           "avg": lambda g: fc.grad.avg_pool2d(g, x, 3, 2, 1, ceil_mode=True, count_include_pad=False, **B),
           "adaptive_max": lambda g: fc.grad.adaptive_max_pool2d(g, x, **B),
           "adaptive_avg": lambda g: fc.grad.adaptive_avg_pool2d(g, x, **B),
           "max1d": lambda g: fc.grad.max_pool1d(g, x, 4, 3, 2, dilation=2, **B),
           "avg1d": lambda g: fc.grad.avg_pool1d(g, x, 4, 3, 2, **B)}[op]
    g = rng.standard_normal(fwd(x).shape)
    np.testing.assert_allclose(bwd(g), _central_differences(lambda: float(np.sum(fwd(x) * g)), x, eps=1e-4),
                               rtol=1e-6, atol=1e-6)


# --- by hand --------------------------------------------------------------------------------------------------
def test_conv_input_by_hand_stride2():
    """1-D, stride 2, kernel [a, b], no padding: y[p] = a*x[2p] + b*x[2p+1], so dx[2p] = a*g[p],
    dx[2p+1] = b*g[p], and x[4] (read by no window of a length-5 input) gets nothing."""
    w = np.array([[[2.0, 3.0]]])
    g = np.array([[[1.0, 10.0]]])
    dx = fc.grad.conv1d_input((1, 1, 5), w, g, stride=2, **B)
    np.testing.assert_array_equal(dx, [[[2.0, 3.0, 20.0, 30.0, 0.0]]])


def test_conv_weight_by_hand_with_padding():
    """1-D, kernel 2, padding 1, x = [1, 2]: windows (pad, 1), (1, 2), (2, pad); dw[0] = 1*g1 + 2*g2,
    dw[1] = 1*g0 + 2*g1 (padded taps contribute nothing, even for an infinite g)."""
    x = np.array([[[1.0, 2.0]]])
    g = np.array([[[np.inf, 10.0, 100.0]]])
    dw = fc.grad.conv1d_weight(x, (1, 1, 2), g, padding=1, **B)
    assert dw[0, 0, 0] == 1 * 10 + 2 * 100
    assert dw[0, 0, 1] == np.inf
    g = np.array([[[1.0, 10.0, 100.0]]])
    np.testing.assert_array_equal(fc.grad.conv1d_weight(x, (1, 1, 2), g, padding=1, **B), [[[210.0, 21.0]]])


def test_conv_transpose_by_hand_output_padding_and_bias():
    """1-D, stride 2, kernel [1, 1], input [1, 2]: positions 0,1 get 1 and 2,3 get 2; output_padding 1 adds a
    position no input reaches, which holds the bias only."""
    out = fc.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 2)), np.array([0.5]), stride=2,
                              output_padding=1, **B)
    np.testing.assert_array_equal(out, [[[1.5, 1.5, 2.5, 2.5, 0.5]]])


def test_max_pool_gradient_by_hand_shared_winner_and_nan():
    """Overlapping windows (kernel 2, stride 1) with one maximum: both windows send it their gradient. A NaN wins
    its windows (as in the forward), so the gradient goes to the NaN."""
    x = np.array([[[0.0, 5.0, 1.0]]])
    np.testing.assert_array_equal(fc.grad.max_pool1d(np.array([[[1.0, 10.0]]]), x, 2, 1, **B), [[[0.0, 11.0, 0.0]]])
    x = np.array([[[0.0, 5.0, np.nan]]])
    np.testing.assert_array_equal(fc.grad.max_pool1d(np.array([[[1.0, 10.0]]]), x, 2, 1, **B), [[[0.0, 1.0, 10.0]]])


def test_avg_pool_gradient_by_hand_divisors():
    """Kernel 2, stride 2, padding 1 on a length-3 input: windows (pad, 0), (1, 2). count_include_pad: both
    divide by 2; without it the first divides by 1; divisor_override 4 divides both by 4."""
    x = np.zeros((1, 1, 1, 3))
    g = np.array([[[[2.0, 4.0]]]])
    kw = dict(kernel_size=(1, 2), stride=(1, 2), padding=(0, 1))
    np.testing.assert_array_equal(fc.grad.avg_pool2d(g, x, **kw, **B), [[[[1.0, 2.0, 2.0]]]])
    np.testing.assert_array_equal(fc.grad.avg_pool2d(g, x, **kw, count_include_pad=False, **B), [[[[2.0, 2.0, 2.0]]]])
    np.testing.assert_array_equal(fc.grad.avg_pool2d(g, x, **kw, divisor_override=4, **B), [[[[0.5, 1.0, 1.0]]]])


def test_max_unpool_by_hand_last_repeat_wins():
    x = np.array([[[1.0, 2.0, 3.0]]])
    idx = np.array([[[1, 1, 0]]])
    np.testing.assert_array_equal(fc.max_unpool1d(x, idx, 1, **B), [[[3.0, 2.0, 0.0]]])


def test_conv_bias_sums_all_but_channels():
    g = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(fc.grad.conv_bias(g), [g[:, k].sum() for k in range(3)])
    assert fc.grad.conv_bias(g.astype(np.float16)).dtype == np.float16
