"""The oracle (backend="numpy") against naive loops on generated cases and against values worked out by hand.

The oracle judges every other backend, so it is judged only by things outside it: tests/naive.py, the
rules written out in these comments, and (tests/test_torch_crosscheck.py) PyTorch where installed.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc

from . import naive

SETTINGS = settings(max_examples=60, deadline=None)


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# --- generated cases against naive loops ----------------------------------------------------------------
@st.composite
def conv_cases(draw):
    g = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # inputs just big enough for at least one window
    h_min = max(1, dil[0] * (R - 1) + 1 - sum(pads[0]))
    w_min = max(1, dil[1] * (S - 1) + 1 - sum(pads[1]))
    H, W = draw(st.integers(h_min, h_min + 6)), draw(st.integers(w_min, w_min + 6))
    N = draw(st.integers(1, 2))
    return dict(N=N, C=g * cg, H=H, W=W, K=g * kg, R=R, S=S, stride=stride, pads=pads, dil=dil, groups=g,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(conv_cases())
def test_conv2d_oracle_matches_naive_loops(c):
    rng = np.random.default_rng(c["seed"])
    x = _rand(rng, (c["N"], c["C"], c["H"], c["W"]))
    w = _rand(rng, (c["K"], c["C"] // c["groups"], c["R"], c["S"]))
    b = _rand(rng, (c["K"],)) if c["bias"] else None
    got = fc.conv2d(x, w, b, c["stride"], c["pads"], c["dil"], c["groups"], backend="numpy")
    want = naive.conv2d(x, w, b, c["stride"], c["pads"], c["dil"], c["groups"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@st.composite
def pool_cases(draw, dilation=True):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    h_min = max(1, dil[0] * (k[0] - 1) + 1 - 2 * pad[0])
    w_min = max(1, dil[1] * (k[1] - 1) + 1 - 2 * pad[1])
    H, W = draw(st.integers(h_min, h_min + 7)), draw(st.integers(w_min, w_min + 7))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), k=k, pad=pad, dil=dil,
                stride=stride, ceil=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                nan=draw(st.booleans()), ties=draw(st.booleans()))


def _pool_input(c):
    rng = np.random.default_rng(c["seed"])
    if c["ties"]:   # few distinct values: ties decide the index
        x = rng.integers(-2, 3, c["shape"]).astype(np.float64)
    else:
        x = rng.standard_normal(c["shape"])
    if c["nan"]:
        x[rng.random(c["shape"]) < 0.15] = np.nan
    return x


@SETTINGS
@given(pool_cases())
def test_max_pool2d_oracle_matches_naive_loops(c):
    x = _pool_input(c)
    got, idx = fc.max_pool2d(x, c["k"], c["stride"], c["pad"], c["dil"], c["ceil"], True, backend="numpy")
    want, want_idx = naive.max_pool2d(x, c["k"], c["stride"], c["pad"], c["dil"], c["ceil"])
    np.testing.assert_array_equal(got, want)      # NaN positions included
    np.testing.assert_array_equal(idx, want_idx)


@SETTINGS
@given(pool_cases(dilation=False), st.booleans(), st.sampled_from([None, 1, 3, -2]))
def test_avg_pool2d_oracle_matches_naive_loops(c, include_pad, override):
    x = _pool_input(c)
    got = fc.avg_pool2d(x, c["k"], c["stride"], c["pad"], c["ceil"], include_pad, override, backend="numpy")
    want = naive.avg_pool2d(x, c["k"], c["stride"], c["pad"], c["ceil"], include_pad, override)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**16),
       st.booleans())
def test_adaptive_pools_match_naive_loops(H, W, P, Q, seed, nan):
    x = _pool_input(dict(shape=(2, 2, H, W), seed=seed, nan=nan, ties=seed % 2 == 0))
    np.testing.assert_allclose(fc.adaptive_avg_pool2d(x, (P, Q), backend="numpy"),
                               naive.adaptive_pool2d(x, (P, Q), "avg"), rtol=1e-12, atol=1e-12)
    got, idx = fc.adaptive_max_pool2d(x, (P, Q), True, backend="numpy")
    want, want_idx = naive.adaptive_pool2d(x, (P, Q), "max")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)


# --- each rule, by hand --------------------------------------------------------------------------------
def test_conv_by_hand_same_padding_puts_the_odd_extra_bottom_right():
    # 1x1x3x3 input 1..9, 2x2 all-ones kernel, 'same': total pad 1 per dim -> 0 top/left, 1 bottom/right,
    # so y[i, j] = x[i, j] + x[i, j+1] + x[i+1, j] + x[i+1, j+1] with zeros past the edge.
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    y = fc.conv2d(x, np.ones((1, 1, 2, 2)), padding="same", backend="numpy")
    np.testing.assert_array_equal(y[0, 0], [[1 + 2 + 4 + 5, 2 + 3 + 5 + 6, 3 + 6],
                                            [4 + 5 + 7 + 8, 5 + 6 + 8 + 9, 6 + 9],
                                            [7 + 8, 8 + 9, 9]])


def test_conv_by_hand_asymmetric_padding_stride_dilation_groups_bias():
    # x: channel 0 = 1..5, channel 1 = 10, 20, .., 50 (1-D as H=1). groups=2, kernel [1, -1] dilated by 2,
    # stride 2, padding (left 1, right 0), bias (100, 200).
    x = np.array([[[1, 2, 3, 4, 5], [10, 20, 30, 40, 50]]], dtype=np.float64)
    w = np.array([[[1, -1]], [[1, -1]]], dtype=np.float64)
    y = fc.conv1d(x, w, np.array([100.0, 200.0]), stride=2, padding=((1, 0),), dilation=2, groups=2,
                  backend="numpy")
    # padded positions -1..4; windows start at -1, 1 (next at 3 would need position 5): taps (s, s+2)
    # channel 0: (-1 -> 0) - x[1] = -2 ; x[1] - x[3] = 2 - 4 = -2   (+100)
    # channel 1: 0 - 20 = -20 ; 20 - 40 = -20                         (+200)
    np.testing.assert_array_equal(y, [[[98, 98], [180, 180]]])


def test_conv_inf_weight_meets_no_padded_zero():
    x = np.ones((1, 1, 2, 2))
    w = np.array([[[[np.inf, 1.0], [1.0, 1.0]]]])
    y = fc.conv2d(x, w, padding=1, backend="numpy")
    # output (0, 0): only the bottom-right tap (weight 1) is inside -> 1, not inf*0 = NaN
    assert y[0, 0, 0, 0] == 1.0
    assert np.isinf(y[0, 0, 1, 1])            # the inf tap meets x[0, 0] = 1


def test_max_pool_by_hand_nan_and_index_rules():
    x = np.array([[[[1.0, 5.0, 5.0, 2.0],
                    [np.nan, 0.0, 3.0, np.nan],
                    [7.0, np.nan, 1.0, 1.0]]]])
    y, idx = fc.max_pool2d(x, (2, 2), stride=(1, 2), return_indices=True, backend="numpy")
    # windows rows 0-1 / 1-2, cols 0-1 / 2-3
    # (0, 0): {1, 5, nan, 0} -> nan at flat 4 ;  (0, 1): {5, 2, 3, nan} -> nan at 7
    # (1, 0): {nan, 0, 7, nan} -> the LAST nan, flat 9 ;  (1, 1): {3, nan, 1, 1} -> nan at 7
    assert np.isnan(y).all()
    np.testing.assert_array_equal(idx[0, 0], [[4, 7], [9, 7]])
    x = np.array([[[[5.0, 5.0], [1.0, 5.0]]]])
    y, idx = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert y[0, 0, 0, 0] == 5.0 and idx[0, 0, 0, 0] == 0       # ties keep the first
    assert idx.dtype == np.int64


def test_max_pool_padding_is_never_selected_and_indices_are_plane_positions():
    x = -np.arange(1, 7, dtype=np.float64).reshape(1, 1, 2, 3)     # all negative, padding would be 0
    y, idx = fc.max_pool2d(x, 3, stride=1, padding=1, return_indices=True, backend="numpy")
    # output (0, 0) covers rows -1..1, cols -1..1 -> in-bounds {-1, -2, -4, -5}: max -1 at (0, 0) -> 0
    # output (1, 2) covers rows 0..2, cols 1..3 -> {-2, -3, -5, -6}: max -2 at (0, 1) -> 1
    assert y[0, 0, 0, 0] == -1 and idx[0, 0, 0, 0] == 0
    assert y[0, 0, 1, 2] == -2 and idx[0, 0, 1, 2] == 1
    y1, idx1 = fc.max_pool1d(np.array([[3.0, 1.0, 4.0, 1.0, 5.0]]), 2, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(idx1, [[0, 2]])                  # positions along L


def test_all_minus_inf_window_gives_minus_inf_and_first_inbounds_index():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = fc.max_pool2d(x, 3, stride=2, padding=1, return_indices=True, backend="numpy")
    assert np.all(y == -np.inf)
    # windows start at -1 (first in-bounds tap 0) and 1
    np.testing.assert_array_equal(idx[0, 0], [[0 * 3 + 0, 0 * 3 + 1], [1 * 3 + 0, 1 * 3 + 1]])


def test_ceil_mode_by_hand():
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 1, 5)
    # k 2, s 2: floor -> windows [0,1], [2,3]; ceil adds [4] (starts inside the input)
    np.testing.assert_array_equal(fc.max_pool2d(x, (1, 2), ceil_mode=False, backend="numpy")[0, 0, 0], [1, 3])
    np.testing.assert_array_equal(fc.max_pool2d(x, (1, 2), ceil_mode=True, backend="numpy")[0, 0, 0], [1, 3, 4])
    # avg, count_include_pad: the ceil_mode overhang is not counted: last window [4] averages over 1
    np.testing.assert_array_equal(fc.avg_pool2d(x, (1, 2), ceil_mode=True, backend="numpy")[0, 0, 0],
                                  [0.5, 2.5, 4.0])
    # x of width 4, k 2, s 3, pad 1: padded -1..4; windows at -1, 2; a third would start at 5 (padding)
    x4 = np.arange(4, dtype=np.float64).reshape(1, 1, 1, 4)
    y = fc.max_pool2d(x4, (1, 2), (1, 3), (0, 1), ceil_mode=True, backend="numpy")
    np.testing.assert_array_equal(y[0, 0, 0], [0, 3])


def test_avg_pool_divisors_by_hand():
    x = np.ones((1, 1, 3, 3))
    # k 2, s 2, pad 1, ceil off: windows rows {-1,0}, {1,2}; cols the same
    inc = fc.avg_pool2d(x, 2, 2, 1, count_include_pad=True, backend="numpy")[0, 0]
    exc = fc.avg_pool2d(x, 2, 2, 1, count_include_pad=False, backend="numpy")[0, 0]
    # corner (0,0) holds 1 real element of a 2x2 window including padding -> 1/4; excluding -> 1/1
    np.testing.assert_array_equal(inc, [[1 / 4, 2 / 4], [2 / 4, 4 / 4]])
    np.testing.assert_array_equal(exc, [[1.0, 1.0], [1.0, 1.0]])
    ovr = fc.avg_pool2d(x, 2, 2, 1, divisor_override=3, backend="numpy")[0, 0]
    np.testing.assert_array_equal(ovr, [[1 / 3, 2 / 3], [2 / 3, 4 / 3]])
    # ceil_mode with padding: x 1x4 of ones, k 3, s 2, pad 1: windows start -1, 1, 3(ceil: starts inside)
    # divisors with pad: [-1,2) -> 3, [1,4) -> 3, [3,6) clipped to padded end 5 -> 2
    row = fc.avg_pool2d(np.ones((1, 1, 1, 4)), (1, 3), (1, 2), (0, 1), ceil_mode=True, backend="numpy")[0, 0, 0]
    np.testing.assert_array_equal(row, [2 / 3, 3 / 3, 1 / 2])


def test_adaptive_by_hand():
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 1, 5)
    # out 3 over 5: windows [0,2), [1,4), [3,5)  (floor(5/3)=1, ceil(10/3)=4, floor(10/3)=3)
    np.testing.assert_array_equal(fc.adaptive_avg_pool2d(x, (1, 3), backend="numpy")[0, 0, 0], [0.5, 2.0, 3.5])
    y, idx = fc.adaptive_max_pool1d(x[0, :, 0], 3, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(y, [[1, 3, 4]])
    np.testing.assert_array_equal(idx, [[1, 3, 4]])
    assert fc.adaptive_avg_pool2d(np.ones((2, 4, 6)), (None, 2), backend="numpy").shape == (2, 4, 2)


def test_unbatched_in_unbatched_out():
    x = np.random.default_rng(0).standard_normal((3, 6, 6))
    w = np.random.default_rng(1).standard_normal((2, 3, 3, 3))
    y = fc.conv2d(x, w, backend="numpy")
    np.testing.assert_array_equal(y, fc.conv2d(x[None], w, backend="numpy")[0])
    assert fc.max_pool2d(x, 2, backend="numpy").shape == (3, 3, 3)
    assert fc.conv1d(x[:, 0], w[:, :, 0], backend="numpy").shape == (2, 4)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_preserved(dtype):
    x = np.ones((1, 2, 4, 4), dtype=dtype)
    w = np.ones((3, 2, 3, 3), dtype=dtype)
    y = fc.conv2d(x, w, backend="numpy")
    assert y.dtype == dtype and np.all(y == 18)
    assert fc.avg_pool2d(x, 2, backend="numpy").dtype == dtype


def test_float16_is_computed_wide_and_rounded_once():
    # 2048 ones summed in float16 would stall at 2048 - but the exact sum 4096 is representable
    x = np.ones((1, 4096, 1, 1), dtype=np.float16)
    w = np.ones((1, 4096, 1, 1), dtype=np.float16)
    assert fc.conv2d(x, w, backend="numpy")[0, 0, 0, 0] == 4096
