"""The one output-size formula, the exported shape helpers and the spec's derived facts.

Expected values are worked out by hand in the comments, or come from walking windows along an axis
(tests/naive.py), never from the formula under test.
"""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv._spec import adaptive_window, conv_spec, output_size, pool_spec

from . import naive


# --- output_size ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    # (size, k, stride, lo, hi, dil, ceil) -> by hand
    ((32, 5, 1, 0, 0, 1, False), 28),   # LeNet CONV1: 32 - 5 + 1
    ((28, 2, 2, 0, 0, 1, False), 14),   # LeNet POOL1
    ((224, 7, 2, 3, 3, 1, False), 112),  # ResNet stem: (224 + 6 - 7) // 2 + 1 = 111 + 1
    ((112, 3, 2, 1, 1, 1, False), 56),  # ResNet max pool: (112 + 2 - 3) // 2 + 1 = 55 + 1
    ((10, 3, 1, 0, 0, 2, False), 6),    # dilated: eff = 5, 10 - 5 + 1
    ((10, 3, 1, 1, 2, 1, False), 11),   # asymmetric: 10 + 3 - 3 + 1
    ((5, 2, 2, 0, 0, 1, False), 2),     # floor: windows at 0, 2 (4 would need 6 elements)
    ((5, 2, 2, 0, 0, 1, True), 3),      # ceil: a third window starts at 4, inside the input
    ((4, 2, 2, 0, 0, 1, True), 2),      # ceil, no tail left: same as floor
    ((6, 3, 2, 1, 1, 1, True), 4),      # ceil: span 5, windows at padded 0,2,4 full, 6 starts at input 5 < 6
    ((5, 3, 2, 1, 1, 1, True), 3),      # ceil: span 4 divides: no extra window
    ((2, 3, 1, 0, 0, 1, False), 0),     # kernel bigger than input: nothing fits
    ((1, 1, 1, 0, 0, 1, False), 1),
])
def test_output_size_by_hand(args, expected):
    assert output_size(*args) == expected


def test_ceil_mode_drops_a_window_starting_in_right_padding():
    # size 4, k 2, stride 3, pad 1: padded length 6, windows at padded 0 and 3 (full), ceil would add a
    # window at padded 6 = input position 5 >= 4, i.e. entirely in the right padding: dropped.
    assert output_size(4, 2, 3, 1, 1, 1, False) == 2
    assert output_size(4, 2, 3, 1, 1, 1, True) == 2
    # without padding the tail [3, 4) is uncovered and the extra window starts at 3 < 4: kept
    assert output_size(4, 2, 3, 0, 0, 1, False) == 1   # only [0, 2) fits; [3, 5) would overhang
    assert output_size(4, 2, 3, 0, 0, 1, True) == 2


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 40), k=st.integers(1, 7), stride=st.integers(1, 5), lo=st.integers(0, 4),
       hi=st.integers(0, 4), dil=st.integers(1, 4), ceil=st.booleans())
def test_output_size_counts_the_windows_that_fit(size, k, stride, lo, hi, dil, ceil):
    """The closed form equals the number of windows found by walking along the axis. ceil_mode exists
    only for pools, whose padding is symmetric and at most kernel_size // 2 (outside that domain
    PyTorch's rule can drop a full window that starts in the right padding)."""
    if ceil:
        hi = lo = min(lo, k // 2)
    assert output_size(size, k, stride, lo, hi, dil, ceil) == len(naive._windows(size, k, stride, lo, hi, dil, ceil))


# --- exported helpers -------------------------------------------------------------------------------
def test_conv_output_size_forms():
    assert fc.conv_output_size(32, 5) == 28
    assert fc.conv_output_size(10, 3, padding=(1, 2)) == 11               # one dim, asymmetric
    assert fc.conv_output_size((32, 16), (5, 3), stride=(1, 2), padding=1) == (30, 8)  # 32+2-5+1; (16+2-3)//2+1
    assert fc.conv_output_size((10, 12), 3, 2, ((1, 0), 1)) == (5, 6)      # (10+1-3)//2+1; (12+2-3)//2+1
    assert fc.conv_output_size((8, 8, 8), 3, dilation=(1, 2, 3)) == (6, 4, 2)  # 3-D: 8-3+1, 8-5+1, 8-7+1
    assert fc.conv_output_size(5, 2, 2, ceil_mode=True) == 3
    assert fc.conv_output_size(2, 3) == 0


@pytest.mark.parametrize("call, exc, words", [
    (lambda: fc.conv_output_size(10, 0), ValueError, "kernel_size"),
    (lambda: fc.conv_output_size(10, 3, stride=0), ValueError, "stride"),
    (lambda: fc.conv_output_size(10, 3, dilation=-1), ValueError, "dilation"),
    (lambda: fc.conv_output_size(10, 3, padding=-1), ValueError, "padding"),
    (lambda: fc.conv_output_size(10.0, 3), TypeError, "size"),
    (lambda: fc.conv_output_size((10, 10), (3, 3, 3)), ValueError, "same number"),
    (lambda: fc.conv_output_size(10, 3, ceil_mode=1), TypeError, "ceil_mode"),
    (lambda: fc.conv_output_size((1, 2, 3, 4), 1), ValueError, "1 to 3"),
])
def test_conv_output_size_rejects(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_conv_param_count_lenet_by_hand():
    assert fc.conv_param_count(3, 8, 5) == 8 * 3 * 25 + 8            # 608
    assert fc.conv_param_count(8, 16, (5, 5)) == 16 * 8 * 25 + 16    # 3216
    assert fc.conv_param_count(8, 16, 5, bias=False) == 3200
    assert fc.conv_param_count(32, 32, 3, groups=32) == 32 * 1 * 9 + 32  # depthwise
    assert fc.conv_param_count(4, 6, (3, 3, 3), groups=2) == 6 * 2 * 27 + 6
    assert fc.conv_param_count(4, 6, (3,)) == 6 * 4 * 3 + 6          # 1-D: a 1-tuple
    with pytest.raises(ValueError, match="divisible by groups"):
        fc.conv_param_count(4, 6, 3, groups=4)
    with pytest.raises(TypeError, match="bias"):
        fc.conv_param_count(4, 6, 3, bias=None)


def test_receptive_field_by_hand():
    # LeNet: conv5 s1 -> 1 + 4 = 5; pool2 s2 -> 5 + 1 = 6, then jump 2; conv5 -> 6 + 4*2 = 14;
    # pool2 -> 14 + 1*2 = 16 (jump becomes 4 only after this layer)
    lenet = [(5, 1), (2, 2), (5, 1), (2, 2)]
    assert fc.receptive_field(lenet[:3]) == 14
    assert fc.receptive_field(lenet) == 16
    assert fc.receptive_field([(3, 1, 2), (3, 1, 4)]) == 1 + 4 + 8   # dilated stack: 13
    assert fc.receptive_field([((3, 5), 1)]) == (3, 5)
    with pytest.raises(ValueError, match="layers"):
        fc.receptive_field([])
    with pytest.raises(ValueError, match="stride"):
        fc.receptive_field([(3, 0)])


# --- specs --------------------------------------------------------------------------------------------
def _x(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def test_conv_spec_padding_forms():
    x, w = _x((1, 4, 10, 11)), _x((6, 2, 3, 4))
    s = conv_spec(x, w, None, 1, "same", (2, 1), 2)
    # total pad = d*(k-1): H 2*2 = 4 -> (2, 2); W 1*3 = 3 -> (1, 2), odd extra bottom/right
    assert (s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) == (2, 2, 1, 2)
    assert (s.P, s.Q) == (10, 11)
    s = conv_spec(x, w, None, 1, ((1, 0), (2, 3)), groups=2)
    assert (s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) == (1, 0, 2, 3)
    s = conv_spec(x, w, None, (2, 3), (1, 2), groups=2)
    assert (s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) == (1, 1, 2, 2)
    assert (s.stride_h, s.stride_w, s.groups, s.C_per_group, s.K_per_group) == (2, 3, 2, 2, 3)
    s = conv_spec(x, w, None, 1, "valid", groups=2)
    assert (s.P, s.Q) == (8, 8)


def test_conv1d_spec_is_2d_with_unit_height():
    s = conv_spec(_x((5, 9)), _x((3, 5, 4)), None, 2, ((1, 2),), 1, 1, spatial_dims=1)
    assert (s.N, s.C, s.H, s.W, s.R, s.S, s.P) == (1, 5, 1, 9, 1, 4, 1)
    assert (s.pad_top, s.pad_bottom, s.pad_left, s.pad_right) == (0, 0, 1, 2)
    assert s.Q == (9 + 3 - 4) // 2 + 1
    assert s.output_shape == (3, s.Q) and not s.batched


def test_conv_spec_facts():
    s = conv_spec(_x((2, 8, 16, 16)), _x((8, 1, 3, 3)), _x((8,)), 2, 1, 1, 8)
    assert s.is_depthwise and s.is_strided and not s.is_dilated and s.has_bias
    assert s.flops() == 2 * (2 * 8 * 8) * 8 * (1 * 3 * 3)           # 2 * N*P*Q * K * Cg*R*S
    assert s.bytes() == 4 * (2 * 8 * 16 * 16 + 8 * 9 + 2 * 8 * 8 * 8 + 8)
    assert not s.needs_64bit_indexing
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.N = 3
    big = dataclasses.replace(s, N=2**20)
    assert big.needs_64bit_indexing        # 2^20 * 8 * 256 elements > 2^31
    assert conv_spec(_x((1, 4, 5, 5)), _x((4, 4, 1, 1))).is_pointwise


def test_pool_spec_defaults_and_adaptive():
    s = pool_spec("max", _x((2, 3, 9, 9)), 3)
    assert (s.stride_h, s.stride_w, s.P, s.Q) == (3, 3, 3, 3)      # stride defaults to kernel_size
    s = pool_spec("adaptive_avg", _x((2, 3, 9, 7)), output_size_=(4, None))
    assert (s.P, s.Q) == (4, 7)
    assert [adaptive_window(i, 9, 4) for i in range(4)] == [(0, 3), (2, 5), (4, 7), (6, 9)]
    # floor(i*9/4), ceil((i+1)*9/4): 0..3, 2..5 (9/4=2.25 -> 2, 4.5 -> 5), 4..7 (6.75 -> 7), 6..9


def test_import_compiles_nothing_and_imports_no_backend():
    code = ("import sys, fastconv; bad = [m for m in ('numba', 'cupy', 'torch', 'llvmlite') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import fastconv pulled in {out.stdout.strip()}"


def test_input_extent_is_the_inverse_of_output_size():
    """The input positions a run of outputs reads, written out by hand: (count-1)*stride + (k-1)*dil + 1."""
    from fastconv._spec import input_extent, output_size
    assert input_extent(1, 3) == 3 and input_extent(1, 3, 2, 2) == 5          # the dilated window itself
    assert input_extent(4, 3, 2, 1) == 3 * 2 + 2 + 1 == 9
    assert input_extent(0, 3, 2, 1) == 0
    for size in range(1, 30):
        for k, st, d, pad in ((1, 1, 1, 0), (3, 2, 1, 1), (3, 1, 2, 2), (5, 3, 1, 0), (2, 2, 3, 1)):
            n = output_size(size, k, st, pad, pad, d)
            if n:   # n outputs fit in the padded input, n + 1 would not
                assert input_extent(n, k, st, d) <= size + 2 * pad < input_extent(n + 1, k, st, d)


def test_spec_vocabulary():
    s = conv_spec(_x((2, 3, 9, 10)), _x((6, 3, 3, 2)), None, (2, 1), ((1, 0), (2, 1)), (1, 2))
    assert (s.P, s.Q) == (4, 11)      # (9+1+0-3)//2+1, (10+2+1-3)//1+1 with the dilated width 3
    assert s.input_extent_hw() == (3 * 2 + 2 + 1, 10 * 1 + 1 * 2 + 1) == (9, 13)
    assert s.input_extent_hw(2, 3) == (1 * 2 + 2 + 1, 2 * 1 + 1 * 2 + 1)
    assert (s.gemm_m, s.gemm_n, s.gemm_k) == (2 * 4 * 11, 6, 3 * 3 * 2)
    assert s.is_padded and not s.is_depthwise
    # depthwise: one input channel per group, including a single-channel conv
    assert conv_spec(_x((1, 4, 5, 5)), _x((8, 1, 3, 3)), groups=4).is_depthwise
    assert conv_spec(_x((1, 1, 5, 5)), _x((8, 1, 3, 3))).is_depthwise
    assert not conv_spec(_x((1, 4, 5, 5)), _x((8, 2, 3, 3)), groups=2).is_depthwise
    p = pool_spec("max", _x((1, 1, 9, 9)), 3, 2, 1, dilation=2)
    assert (p.P, p.Q) == (4, 4) and p.input_extent_hw() == (3 * 2 + 2 * 2 + 1,) * 2   # (9+2-5)//2+1; 11
