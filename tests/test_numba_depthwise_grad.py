"""The depthwise gradient kernels of the numba backend (numba:conv_input:direct/depthwise and
numba:conv_weight:direct/depthwise): against the float64 oracle within fastconv.testing's bound, over
strides, paddings (asymmetric too), dilations, channel multipliers, odd sizes, a bias (the input gradient's
start value, as conv_transpose's), float32/float64; exact where padding meets Inf or NaN (taps are clipped);
offered only for depthwise problems; reachable through the public functions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastconv
import fastconv.grad as fg
from fastconv import _dispatch
from fastconv._backends import numba_cpu
from fastconv._spec import conv_input_spec, conv_weight_spec
from fastconv.testing import assert_grad_close

CASES = [  # N, C, M (channel multiplier), H, W, stride, padding, dilation
    (2, 3, 1, 7, 9, 1, 1, 1), (1, 4, 2, 8, 5, 2, 1, 1), (2, 2, 3, 6, 6, 1, 2, 2), (3, 5, 1, 11, 4, 2, 0, 1),
    (1, 3, 1, 4, 4, 3, 3, 1), (2, 8, 1, 7, 7, 1, 1, 1), (1, 2, 1, 1, 9, 1, (1, 0), 1),
    (2, 3, 2, 9, 9, (2, 1), ((1, 0), (2, 1)), (1, 2)),
]


def _case(case, dtype, seed=0):
    N, C, M, H, W, s, p, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C * M, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal(fastconv.conv2d(x, w, None, s, p, d, C, backend="numpy").shape).astype(dtype)
    return x, w, b, dy, (s, p, d, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_depthwise_gradients_against_the_oracle(case, dtype):
    x, w, b, dy, args = _case(case, dtype)
    si, sw = conv_input_spec(x.shape, w, dy, *args), conv_weight_spec(x, w.shape, dy, *args)
    assert si.is_depthwise and sw.is_depthwise
    dx = numba_cpu.conv_input_depthwise(si, dy, w)
    assert_grad_close(dx, si, dy, w)
    dxb = numba_cpu.conv_input_depthwise(si, dy, w, b)       # the bias is dx's start value
    assert_grad_close(dxb, si, dy, w, b)
    dw = numba_cpu.conv_weight_depthwise(sw, x, dy)
    assert_grad_close(dw, sw, x, dy)
    assert np.array_equal(dw, numba_cpu.conv_weight_depthwise(sw, x, dy))     # the same run to run


def test_inputs_are_not_modified_and_views_work():
    x, w, b, dy, args = _case(CASES[1], np.float32)
    xv, wv, dyv = x[..., ::-1], w[..., ::-1], dy[..., ::-1]
    keep = [a.copy() for a in (xv, wv, dyv)]
    dx = fg.conv2d_input(xv.shape, wv, dyv, *args[:3], groups=args[3], algo="direct")
    dw = fg.conv2d_weight(xv, wv.shape, dyv, *args[:3], groups=args[3], algo="direct")
    assert all(np.array_equal(a, k) for a, k in zip((xv, wv, dyv), keep))
    assert_grad_close(dx, conv_input_spec(xv.shape, wv, dyv, *args), dyv, wv)
    assert_grad_close(dw, conv_weight_spec(xv, wv.shape, dyv, *args), xv, dyv)


def test_padding_never_meets_inf_or_nan():
    """Taps are clipped: an Inf in dy or x next to the padding gives what the oracle gives (the padding's
    zeros are never multiplied by it)."""
    x, w, b, dy, args = _case(CASES[0], np.float64)
    x[0, 0, 0, 0] = np.inf
    dy[1, 2, -1, -1] = np.nan
    si, sw = conv_input_spec(x.shape, w, dy, *args), conv_weight_spec(x, w.shape, dy, *args)
    ref_dx = fg.conv2d_input(x.shape, w, dy, *args[:3], groups=args[3], backend="numpy")
    ref_dw = fg.conv2d_weight(x, w.shape, dy, *args[:3], groups=args[3], backend="numpy")
    dx = numba_cpu.conv_input_depthwise(si, dy, w)
    dw = numba_cpu.conv_weight_depthwise(sw, x, dy)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref_dx))
    np.testing.assert_array_equal(np.isinf(dw), np.isinf(ref_dw))
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(ref_dw))


def test_offered_for_depthwise_problems_only():
    x, w, b, dy, args = _case(CASES[0], np.float32)
    names = {"conv_input": "numba:conv_input:direct/depthwise", "conv_weight": "numba:conv_weight:direct/depthwise"}
    impls = {i.name: i for i in numba_cpu.implementations()}
    si, sw = conv_input_spec(x.shape, w, dy, *args), conv_weight_spec(x, w.shape, dy, *args)
    assert impls[names["conv_input"]].not_supported_reasons(si) == []
    assert impls[names["conv_weight"]].not_supported_reasons(sw) == []
    wg = np.ones((6, 3, 3, 3), np.float32)                  # a dense conv: 3 input channels per group
    dyg = np.ones(fastconv.conv2d(x, wg, padding=1, backend="numpy").shape, np.float32)
    for op, spec in (("conv_input", conv_input_spec(x.shape, wg, dyg, 1, 1)),
                     ("conv_weight", conv_weight_spec(x, wg.shape, dyg, 1, 1))):
        assert impls[names[op]].not_supported_reasons(spec) == [
            "not depthwise: 3 input channels per group (this kernel reads one)"]
        assert names[op] not in {i.name for i in _dispatch.supported(spec, "numba", "direct")} \
            if hasattr(_dispatch, "supported") else True


@pytest.mark.parametrize("stride,padding", list(itertools.product([1, 2], [0, 1])))
def test_conv_transpose_depthwise_through_the_public_function(stride, padding):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)      # conv_transpose: (C_in, C_out/groups, R, S)
    b = rng.standard_normal(4).astype(np.float32)
    got = fastconv.conv_transpose2d(x, w, b, stride=stride, padding=padding, groups=4, algo="direct")
    ref = fastconv.conv_transpose2d(x, w, b, stride=stride, padding=padding, groups=4, backend="numpy")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_weight_gradient_phase_path_every_lane_remainder():
    """The weight gradient's phase kernel (numba_cpu.conv_weight_depthwise where the phase buffer is not
    mostly padding) against the oracle over small planes whose flat lengths L cover every remainder of the
    lane width LW that matters (0, 1, LW - 1 among them): the tile loop's last partial tile included."""
    k = numba_cpu.kernels()
    seen = set()
    rng = np.random.default_rng(3)
    for N, C, H, W, s, p in itertools.product((1, 3), (2,), range(1, 12), (3, 9), (1, 2), (0, 1, 2)):
        if H + 2 * p < 3 or W + 2 * p < 3:
            continue
        x = rng.standard_normal((N, C, H, W))
        w_shape = (C, 1, 3, 3)
        dy = rng.standard_normal(fastconv.conv2d(x, np.ones(w_shape), None, s, p, 1, C, backend="numpy").shape)
        sw = conv_weight_spec(x, w_shape, dy, s, p, 1, C)
        if numba_cpu._phase_bound_reasons(sw):
            continue
        _, nb, _, _ = numba_cpu._weight_phase_plan(sw)
        hq, wq = numba_cpu._phase_extent(sw)
        nb = min(nb, N)
        seen.add(((nb - 1) * hq * wq + (sw.P - 1) * wq + sw.Q) % k.LW)
        assert_grad_close(numba_cpu.conv_weight_depthwise(sw, x, dy), sw, x, dy)
    assert {0, 1, k.LW - 1} <= seen, sorted(seen)


# ---------------------------------------------------------------------------------------------------
# numba:conv_input:direct/depthwise-flipped and numba:conv_weight:direct/depthwise-cblock
# ---------------------------------------------------------------------------------------------------
FLIPPED, CBLOCK = "numba:conv_input:direct/depthwise-flipped", "numba:conv_weight:direct/depthwise-cblock"
MORE_CASES = CASES + [  # N, C, M, H, W, stride, padding, dilation: channel blocks of CBLK (16) and a partial one
    (2, 17, 1, 7, 7, 1, 1, 1), (3, 40, 1, 5, 6, 2, 1, 1), (2, 33, 1, 9, 6, 1, (2, 1), 2),
    (1, 16, 1, 6, 9, (1, 3), ((0, 2), (1, 1)), (2, 1)), (4, 18, 1, 3, 3, 1, 2, 1),
]


def _impls():
    return {i.name: i for i in numba_cpu.implementations()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", MORE_CASES, ids=[str(i) for i in range(len(MORE_CASES))])
def test_flipped_input_and_channel_blocked_weight_against_the_oracle(case, dtype):
    """Where each is offered (an unstrided input gradient whose flipped forward conv is depthwise; a weight
    gradient with channel multiplier 1), within the oracle's bound, with and without the bias; the
    weight gradient the same run to run. Where not offered, the reason names why."""
    x, w, b, dy, args = _case(case, dtype)
    N, C, M, H, W, s, p, d = case
    si, sw = conv_input_spec(x.shape, w, dy, *args), conv_weight_spec(x, w.shape, dy, *args)
    impls = _impls()
    why = impls[FLIPPED].not_supported_reasons(si)
    if si.is_strided:
        assert why and why[0].startswith("strided")
    elif M > 1:
        assert why == [f"its flipped forward convolution: not depthwise: {M} input channels per group (this "
                       "kernel reads one)"]
    else:       # fewer than 16 channels: refused (the clipped kernel was quicker), yet right for them too
        assert why == ([] if C >= 16 else [f"{C} channels: fewer than 16, where the clipped kernel's long rows "
                                           "are quicker"])
        assert_grad_close(numba_cpu.conv_input_depthwise_flipped(si, dy, w), si, dy, w)
        assert_grad_close(numba_cpu.conv_input_depthwise_flipped(si, dy, w, b), si, dy, w, b)
    why = impls[CBLOCK].not_supported_reasons(sw)
    if M > 1:
        assert why == [f"a channel multiplier of {M}: this kernel takes one output channel per input channel"]
        return
    # fewer channels than a block: refused (most lanes would idle), yet the kernel is right for them too
    assert why == ([] if C >= 16 else [f"{C} channels: fewer than 16, a block of channels, whose other lanes "
                                       "would be unused"])
    dw = numba_cpu.conv_weight_depthwise_cblock(sw, x, dy)
    assert_grad_close(dw, sw, x, dy)
    assert np.array_equal(dw, numba_cpu.conv_weight_depthwise_cblock(sw, x, dy))


def test_channel_blocked_weight_is_one_sum_per_output_in_the_written_order():
    """dw[k, tap] of the channel-blocked kernel (its docstring's order): per output column q, the serial
    float32 sum over n, then output rows p, of one product each (one rounding: the fused multiply-add);
    then those sums added in q order. Written out here as loops: bitwise equal."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 17, 6, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 17, 3, 3)).astype(np.float32)
    sw = conv_weight_spec(x, (17, 1, 3, 3), dy, 2, 1, 1, 17)
    got = numba_cpu.conv_weight_depthwise_cblock(sw, x, dy)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((17, 1, 3, 3), np.float32)
    for k in range(17):
        for r in range(3):
            for s in range(3):
                lanes = []
                for q in range(3):
                    acc = np.float32(0)
                    for n in range(3):
                        for p in range(3):
                            # (one rounding per term: the float32 product is exact in float64)
                            acc = np.float32(np.float64(acc) + np.float64(dy[n, k, p, q]) * np.float64(
                                xp[n, k, 2 * p + r, 2 * q + s]))
                    lanes.append(acc)
                want[k, 0, r, s] = (lanes[0] + lanes[1]) + lanes[2]
    np.testing.assert_array_equal(got, want)


def test_channel_blocked_weight_recomputes_where_padding_meets_inf():
    """Its padded zeros meet dy: an Inf in dy beside the padding (or in x) would make a NaN there; the
    result is the clipped kernel's instead, so the NaN/Inf pattern is the oracle's."""
    x, w, b, dy, args = _case(MORE_CASES[len(CASES)], np.float64)      # 17 channels: a partial block
    dy[0, 3, 0, 0] = np.inf
    x[1, 16, -1, -1] = -np.inf
    sw = conv_weight_spec(x, w.shape, dy, *args)
    ref = fg.conv2d_weight(x, w.shape, dy, *args[:3], groups=args[3], backend="numpy")
    got = numba_cpu.conv_weight_depthwise_cblock(sw, x, dy)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    assert 0 < fin.sum() < ref.size
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-12, atol=1e-12)


def test_flipped_input_refusals_and_the_data_rule():
    """Unpadded problems are refused (the flipped conv is padded, and dispatch checks the weight for
    Inf/NaN only in padded ones); in a padded one (small: picked by rule, the first direct candidate) an
    Inf weight makes dispatch pass it over (zero_fills_padding), so the public function's result keeps the
    oracle's NaN pattern."""
    impls = _impls()
    assert impls[FLIPPED].zero_fills_padding and not impls[CBLOCK].zero_fills_padding
    x, w, b, dy, args = _case((2, 16, 1, 6, 6, 1, 0, 1), np.float32)
    si = conv_input_spec(x.shape, w, dy, *args)
    assert impls[FLIPPED].not_supported_reasons(si) == [
        "unpadded, while its flipped forward convolution is padded: that padding's zeros would meet the weight, "
        "and dispatch checks the weight for Inf/NaN only in padded problems"]
    x, w, b, dy, args = _case(MORE_CASES[len(CASES)], np.float64)          # 17 channels
    si = conv_input_spec(x.shape, w, dy, *args)
    assert _dispatch.select(si, "numba", "direct", weight=w).name == FLIPPED
    w[1, 0, 0, 0] = np.inf
    assert _dispatch.select(si, "numba", "direct", weight=w).name != FLIPPED
    got = fg.conv2d_input(x.shape, w, dy, *args[:3], groups=args[3], backend="numba", algo="direct")
    ref = fg.conv2d_input(x.shape, w, dy, *args[:3], groups=args[3], backend="numpy")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
