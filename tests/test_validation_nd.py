"""Bad input to the 3-D ops, per-side pool padding, padding_mode and lp pools: a ValueError/TypeError naming
the argument before anything runs; and what the 3-D spec derives (shapes, GEMM sizes, index width)."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import grad as G
from fastconv._spec import conv_spec, pool_spec


def _x(*shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("call, match", [
    (lambda: fc.conv3d(_x(2, 4, 4), _x(3, 2, 1, 1, 1)), r"input must be 5-D \(N, C, D, H, W\) or 4-D"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 1, 1)), r"weight must be 5-D .*kD, kH, kW"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 1, 1, 1), stride=(1, 1)), "stride"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 1, 1, 1), padding=((1, 1), (1, 1))), "padding"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 9, 1, 1)), "too small for the kernel"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 1, 1, 1), padding="same", stride=2), "same"),
    (lambda: fc.conv3d(_x(1, 2, 4, 4, 4), _x(3, 2, 1, 1, 1), padding_mode="wrap"), "padding_mode"),
    (lambda: fc.conv2d(_x(1, 2, 4, 4), _x(3, 2, 3, 3), padding=4, padding_mode="reflect"), "reflect"),
    (lambda: fc.conv_transpose3d(_x(1, 2, 4, 4, 4), _x(2, 3, 1, 1, 1), padding_mode="circular"), "padding_mode"),
    (lambda: fc.conv_transpose3d(_x(1, 2, 4, 4, 4), _x(2, 3, 2, 2, 2), stride=2, output_padding=2),
     "output_padding"),
    (lambda: fc.max_pool3d(_x(1, 1, 4, 4, 4), 3, padding=2), r"padding <= kernel_size // 2"),
    (lambda: fc.max_pool3d(_x(1, 1, 4, 4, 4), 3, padding=((0, 3), (0, 0), (0, 0))), "per-side padding"),
    (lambda: fc.max_pool2d(_x(1, 1, 4, 4), 2, padding=((0, 1), (0, 1), (0, 1))), "padding"),
    (lambda: fc.avg_pool3d(_x(1, 1, 4, 4, 4), (2, 2)), "kernel_size"),
    (lambda: fc.avg_pool3d(_x(1, 1, 4, 4, 4), 2, divisor_override=0), "divisor_override"),
    (lambda: fc.adaptive_avg_pool3d(_x(1, 1, 4, 4, 4), (2, 2)), "output_size"),
    (lambda: fc.adaptive_max_pool3d(_x(1, 1, 4, 4, 4), 0), "output_size"),
    (lambda: fc.max_pool3d(_x(1, 1, 4, 4, 4), 2, ceil_mode=np.array([True, False])), "ceil_mode"),
    (lambda: fc.max_unpool3d(_x(1, 1, 2, 2, 2), np.full((1, 1, 2, 2, 2), 64), 2), r"indices must lie in \[0, 64\)"),
    (lambda: fc.max_unpool3d(_x(1, 1, 2, 2, 2), np.zeros((1, 1, 2, 2), np.int64), 2), "indices must have shape"),
    (lambda: fc.lp_pool3d(_x(1, 1, 4, 4, 4), 0, 2), "norm_type"),
    (lambda: fc.lp_pool2d(_x(1, 1, 4, 4), 2, (2, 2, 2)), "kernel_size"),
    (lambda: G.conv3d_input((1, 2, 4, 4, 4), _x(3, 2, 1, 1, 1), _x(1, 3, 4, 4, 3)), "grad_output"),
    (lambda: G.conv3d_weight(_x(1, 2, 4, 4, 4), (3, 2, 1, 1), _x(1, 3, 4, 4, 4)), "weight_size"),
    (lambda: G.max_pool3d(_x(1, 1, 2, 2, 2), _x(1, 1, 4, 4, 4), 2, indices=np.full((1, 1, 2, 2, 2), 63)),
     "inside each output's pooling window"),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_numpy_booleans_are_booleans():
    """np.bool_ is accepted wherever a bool is (one validator for every boolean argument)."""
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 4, 4, 4)
    got = fc.max_pool3d(x, 2, ceil_mode=np.bool_(False), return_indices=np.bool_(True), backend="numpy")
    want = fc.max_pool3d(x, 2, ceil_mode=False, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(fc.avg_pool3d(x, 2, count_include_pad=np.bool_(False), backend="numpy"),
                                  fc.avg_pool3d(x, 2, count_include_pad=False, backend="numpy"))


def test_3d_spec_fields_and_derived_sizes():
    """The letters written out for one problem: N=2 C=4 (D,H,W)=(6,7,8), K=6 groups=2, (T,R,S)=(3,2,1),
    stride (2,1,1), padding ((1,0),(0,1),(0,0)), dilation (1,2,1): Z = (6+1-3)//2+1 = 3,
    P = (7+1-3)//1+1 = 6, Q = 8."""
    x, w = _x(2, 4, 6, 7, 8), _x(6, 2, 3, 2, 1)
    s = conv_spec(x, w, None, (2, 1, 1), ((1, 0), (0, 1), (0, 0)), (1, 2, 1), 2, spatial_dims=3)
    assert (s.D, s.H, s.W, s.T, s.R, s.S, s.Z, s.P, s.Q) == (6, 7, 8, 3, 2, 1, 3, 6, 8)
    assert (s.pad_front, s.pad_back, s.pad_top, s.pad_bottom) == (1, 0, 0, 1)
    assert s.input_shape == (2, 4, 6, 7, 8) and s.weight_shape == (6, 2, 3, 2, 1)
    assert s.output_shape == (2, 6, 3, 6, 8) and s.output_layout == (2, 6, 3, 6, 8)
    assert (s.gemm_m, s.gemm_n, s.gemm_k) == (2 * 3 * 6 * 8, 3, 2 * 3 * 2 * 1)
    assert s.flops() == 2 * (2 * 3 * 6 * 8) * 6 * (2 * 3 * 2 * 1)
    assert s.is_3d and s.is_padded and s.is_strided and s.is_dilated and not s.is_depthwise
    assert fc.conv3d(x[0], w, None, (2, 1, 1), ((1, 0), (0, 1), (0, 0)), (1, 2, 1), 2,
                     backend="numpy").shape == (6, 3, 6, 8)


def test_3d_volumes_pass_int32_quickly():
    """N=8, C=64, 128^3 holds 1.07e9 elements (fits int32); 128 output channels of it do not (2.1e9): the
    spec asks for 64-bit indexing exactly then. Built from shapes only (no such arrays are allocated)."""
    x = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (8, 64, 128, 128, 128), (0,) * 5)
    assert not conv_spec(x, _x(64, 64, 1, 1, 1), spatial_dims=3).needs_64bit_indexing
    assert conv_spec(x, _x(128, 64, 1, 1, 1), spatial_dims=3).needs_64bit_indexing
    assert pool_spec("max", x, 2, spatial_dims=3).max_elements() == 8 * 64 * 128 ** 3


def test_per_side_pool_padding_builds_the_spec():
    s = pool_spec("avg", _x(1, 1, 5, 6), 3, 2, ((0, 2), (1, 0)))
    assert (s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) == (0, 2, 1, 0)
    assert (s.P, s.Q) == ((5 + 2 - 3) // 2 + 1, (6 + 1 - 3) // 2 + 1)
    assert not s.is_symmetric_padding
    assert pool_spec("avg", _x(1, 1, 5, 6), 3, 2, 1).is_symmetric_padding


def test_inputs_are_never_modified():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 5, 3)), rng.standard_normal((3, 2, 2, 2, 2))
    keep = x.copy(), w.copy()
    fc.conv3d(x, w, padding=1, padding_mode="reflect", backend="numpy")
    fc.lp_pool3d(x, 3, 2, backend="numpy")
    fc.max_pool3d(x, 2, padding=((0, 1), (1, 0), (0, 1)), backend="numpy")
    np.testing.assert_array_equal(x, keep[0])
    np.testing.assert_array_equal(w, keep[1])
