"""Edge semantics, pinned with values worked out by hand, on every backend (and every conv algo).

The oracle matrix (tests/test_backends.py) compares backends with the oracle on random data, and
tests/test_oracle.py checks the oracle by hand; here each edge rule is written out once and every backend --
the oracle included -- must produce exactly that: NaN/Inf propagation in conv and in every pool, windows
lying wholly in the padding, the empty batch for every op, a kernel as large as the padded input, padding
wider than the kernel, 1x1 filters and 1x1 planes, dilation far past the input, depthwise with channel
multipliers, and float16 (summed in float32, rounded once, overflowing only in the stored result).
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv.testing import to_numpy

from .backend_params import backend_algos, conv_or_refused

INF, NAN = np.inf, np.nan
#: Inf - Inf and half overflow are what these tests are about; NumPy's warnings about them are expected
pytestmark = pytest.mark.filterwarnings("ignore:.*(invalid value|overflow) encountered:RuntimeWarning")


def _conv_params():
    return backend_algos("conv", auto=False)


def _pool_params():
    return [pytest.param(name, id=name, marks=() if info["available"] else
                         pytest.mark.skip(reason=f"{name}: {info['reason']}"))
            for name, info in fc.backends().items()]


CONV = _conv_params()
POOL = _pool_params()


def run(backend, fn, *arrays, **kw):
    """Call ``fn`` on ``backend`` with NumPy data moved to the backend's array type; NumPy results back."""
    if _dispatch.BACKENDS[backend].array_kind == "cupy":
        import cupy
        arrays = tuple(None if a is None else cupy.asarray(a) for a in arrays)
    out = fn(*arrays, backend=backend, **kw)
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


def conv(backend, algo, x, w, b=None, **kw):
    """The conv on ``backend`` with ``algo``; an algorithm that does not take the problem's shapes skips;
    one refused for this weight (a non-finite weight in a padded problem, an algorithm that multiplies
    padded zeros) must raise the refusal, and the result is then what dispatch runs instead."""
    fn = fc.conv1d if w.ndim == 3 else fc.conv2d
    spec = fc.conv_spec(x, w, b, spatial_dims=w.ndim - 2, **kw)
    if algo != "auto":
        try:
            _dispatch.select(spec, backend, algo)
        except ValueError as e:
            pytest.skip(f"{backend}/{algo} does not take this problem: {e}")
    return conv_or_refused(backend, algo, spec, w, lambda a: run(backend, fn, x, w, b, algo=a, **kw))


def row(values, dtype="float32"):
    """A (1, 1, 1, L) input holding ``values``."""
    return np.array(values, dtype=dtype).reshape(1, 1, 1, -1)


# ---------------------------------------------------------------------------------------------------
# NaN and Inf
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("backend, algo", CONV)
def test_conv_nan_and_inf_by_hand(backend, algo, dtype):
    # kernel [1, 1] slid over [1, inf, -inf, 2, nan, 3, 3]: 1+inf, inf-inf, -inf+2, 2+nan, nan+3, 3+3
    y = conv(backend, algo, row([1, INF, -INF, 2, NAN, 3, 3], dtype), row([1, 1], dtype))
    np.testing.assert_array_equal(y[0, 0, 0], [INF, NAN, -INF, NAN, NAN, 6])
    # an in-bounds Inf times a zero weight is NaN (IEEE, as in PyTorch); a finite one gives 0 * 5 + 1 * 1
    y = conv(backend, algo, row([INF, 5, 1], dtype), row([0, 1], dtype))
    np.testing.assert_array_equal(y[0, 0, 0], [NAN, 1])
    assert y.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("backend", POOL)
def test_pools_nan_and_inf_by_hand(backend, dtype):
    x = row([1, INF, NAN, 2, -INF, -INF, INF, -INF], dtype)
    # windows of 2: {1, inf} {nan, 2} {-inf, -inf} {inf, -inf}
    y, idx = run(backend, fc.max_pool2d, x, (1, 2), return_indices=True)
    np.testing.assert_array_equal(y[0, 0, 0], [INF, NAN, -INF, INF])
    np.testing.assert_array_equal(idx[0, 0, 0], [1, 2, 4, 6])     # -inf ties keep the first position
    np.testing.assert_array_equal(run(backend, fc.avg_pool2d, x, (1, 2))[0, 0, 0], [INF, NAN, -INF, NAN])
    # adaptive pools with 4 outputs over 8 inputs take the same windows
    y, idx = run(backend, fc.adaptive_max_pool1d, x[0, :, 0], 4, return_indices=True)
    np.testing.assert_array_equal(y[0], [INF, NAN, -INF, INF])
    np.testing.assert_array_equal(idx[0], [1, 2, 4, 6])
    np.testing.assert_array_equal(run(backend, fc.adaptive_avg_pool1d, x[0, :, 0], 4)[0], [INF, NAN, -INF, NAN])
    # a NaN anywhere in a max window wins, even after +inf; the last NaN gives the index
    y, idx = run(backend, fc.max_pool1d, np.array([[INF, NAN, 3, NAN]], dtype), 4, return_indices=True)
    assert np.isnan(y[0, 0]) and idx[0, 0] == 3


# ---------------------------------------------------------------------------------------------------
# Windows in the padding; padding wider than the kernel; a kernel as large as the padded input
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [3.0, INF])
@pytest.mark.parametrize("backend, algo", CONV)
def test_conv_windows_wholly_in_the_padding_give_the_bias(backend, algo, weight):
    # a 2x2 input of ones, a 1x1 kernel, padding 2 (wider than the kernel): 6x6 outputs, of which only the
    # centre 2x2 has its one tap inside the input; every other output is the bias alone -- also when the
    # weight is infinite, because a padded tap contributes nothing (fastconv's rule, see the README)
    x = np.ones((1, 1, 2, 2), np.float32)
    y = conv(backend, algo, x, np.full((1, 1, 1, 1), weight, np.float32), np.array([5.0], np.float32), padding=2)
    want = np.full((6, 6), 5.0)
    want[2:4, 2:4] = 5.0 + weight
    np.testing.assert_array_equal(y[0, 0], want)


@pytest.mark.parametrize("backend", POOL)
def test_max_pool_window_wholly_in_the_padding(backend):
    # one input element at (0, 0); kernel 2, dilation 2, padding 1: the only window's taps sit at -1 and 1
    # on each axis, all outside the 1x1 input -> -inf, with the index of the first tap at non-negative
    # coordinates, (1, 1) -> 1 * W + 1 = 2 (PyTorch's rule)
    y, idx = run(backend, fc.max_pool2d, np.full((1, 1, 1, 1), 7.0, np.float32), 2, stride=1, padding=1,
                 dilation=2, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -INF and idx[0, 0, 0, 0] == 2
    y, idx = run(backend, fc.max_pool1d, np.full((1, 1, 1), 7.0, np.float32), 2, stride=1, padding=1,
                 dilation=2, return_indices=True)
    assert y[0, 0, 0] == -INF and idx[0, 0, 0] == 1


@pytest.mark.parametrize("backend", POOL)
def test_avg_pool_padding_counts_as_zeros(backend):
    # a 1x1 input 8 under a 3x3 window with padding 1: 8 plus eight padded zeros
    x = np.full((1, 1, 1, 1), 8.0, np.float32)
    assert run(backend, fc.avg_pool2d, x, 3, stride=1, padding=1)[0, 0, 0, 0] == np.float32(8 / 9)
    assert run(backend, fc.avg_pool2d, x, 3, stride=1, padding=1, count_include_pad=False)[0, 0, 0, 0] == 8
    assert run(backend, fc.avg_pool2d, x, 3, stride=1, padding=1, divisor_override=2)[0, 0, 0, 0] == 4


@pytest.mark.parametrize("backend, algo", CONV)
def test_conv_kernel_equal_to_the_padded_input(backend, algo):
    # input 2x3 = 1..6, padding 1 -> 4x5, kernel 4x5 of twos: one output, 2 * 21 + bias 1
    x = np.arange(1, 7, dtype=np.float64).reshape(1, 1, 2, 3)
    y = conv(backend, algo, x, np.full((1, 1, 4, 5), 2.0), np.array([1.0]), padding=1)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 43


@pytest.mark.parametrize("backend", POOL)
def test_pools_with_the_window_equal_to_the_padded_input(backend):
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)        # padded by 1 -> 5x5, window 5x5
    y, idx = run(backend, fc.max_pool2d, x, 5, padding=1, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 8 and idx[0, 0, 0, 0] == 8
    assert run(backend, fc.avg_pool2d, x, 5, padding=1)[0, 0, 0, 0] == 36 / 25
    assert run(backend, fc.avg_pool2d, x, 5, padding=1, count_include_pad=False)[0, 0, 0, 0] == 4


# ---------------------------------------------------------------------------------------------------
# Empty batch, 1x1, HxW = 1, huge dilation, depthwise with multipliers
# ---------------------------------------------------------------------------------------------------
POOL_CALLS = [
    ("max_pool2d", lambda x, be: run(be, fc.max_pool2d, x, 3, 2, 1, return_indices=True), (0, 3, 3, 4)),
    ("avg_pool2d", lambda x, be: run(be, fc.avg_pool2d, x, 2, ceil_mode=True), (0, 3, 3, 4)),
    ("adaptive_max_pool2d", lambda x, be: run(be, fc.adaptive_max_pool2d, x, (2, 5), return_indices=True),
     (0, 3, 2, 5)),
    ("adaptive_avg_pool2d", lambda x, be: run(be, fc.adaptive_avg_pool2d, x, 1), (0, 3, 1, 1)),
    ("max_pool1d", lambda x, be: run(be, fc.max_pool1d, x[:, :, 0], 2, return_indices=True), (0, 3, 4)),
    ("avg_pool1d", lambda x, be: run(be, fc.avg_pool1d, x[:, :, 0], 3, 1, 1), (0, 3, 8)),
    ("adaptive_max_pool1d", lambda x, be: run(be, fc.adaptive_max_pool1d, x[:, :, 0], 3), (0, 3, 3)),
    ("adaptive_avg_pool1d", lambda x, be: run(be, fc.adaptive_avg_pool1d, x[:, :, 0], 3), (0, 3, 3)),
]


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("name, call, shape", POOL_CALLS, ids=[c[0] for c in POOL_CALLS])
@pytest.mark.parametrize("backend", POOL)
def test_empty_batch_pools(backend, name, call, shape, dtype):
    out = call(np.zeros((0, 3, 6, 8), dtype), backend)
    outs = out if isinstance(out, tuple) else (out,)
    assert outs[0].shape == shape and outs[0].dtype == np.dtype(dtype)
    if len(outs) == 2:
        assert outs[1].shape == shape and outs[1].dtype == np.int64


@pytest.mark.parametrize("backend, algo", CONV)
def test_empty_batch_conv(backend, algo):
    y = conv(backend, algo, np.zeros((0, 4, 9), np.float16), np.ones((6, 2, 3), np.float16), None,
             padding="same", groups=2)
    assert y.shape == (0, 6, 9) and y.dtype == np.float16
    y = conv(backend, algo, np.zeros((0, 2, 5, 5)), np.ones((3, 2, 2, 2)), np.ones(3), stride=2)
    assert y.shape == (0, 3, 2, 2) and y.dtype == np.float64


@pytest.mark.parametrize("backend, algo", CONV)
def test_conv_1x1_kernel_on_1x1_planes(backend, algo):
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32).reshape(2, 3, 1, 1)
    w = np.array([[1, 0, -1], [2, 2, 2]], np.float32).reshape(2, 3, 1, 1)
    y = conv(backend, algo, x, w, np.array([0.5, 0], np.float32))
    np.testing.assert_array_equal(y[:, :, 0, 0], [[-1.5, 12], [-1.5, 30]])


@pytest.mark.parametrize("backend", POOL)
def test_pools_on_1x1_planes(backend):
    x = np.array([3.0, -2.0], np.float32).reshape(1, 2, 1, 1)
    y, idx = run(backend, fc.max_pool2d, x, 1, return_indices=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(idx, np.zeros((1, 2, 1, 1)))
    y, idx = run(backend, fc.adaptive_max_pool2d, x, (3, 2), return_indices=True)   # every window is (0, 0)
    np.testing.assert_array_equal(y, np.broadcast_to(x, (1, 2, 3, 2)))
    np.testing.assert_array_equal(idx, np.zeros((1, 2, 3, 2)))
    np.testing.assert_array_equal(run(backend, fc.adaptive_avg_pool2d, x, 2), np.broadcast_to(x, (1, 2, 2, 2)))
    np.testing.assert_array_equal(run(backend, fc.avg_pool2d, x, 1), x)


@pytest.mark.parametrize("backend, algo", CONV)
def test_conv_huge_dilation(backend, algo):
    x = row([1, 2, 3, 4, 5], "float64")
    # taps 4 apart: one window, x[0] * 1 + x[4] * 10
    assert conv(backend, algo, x, row([1, 10], "float64"), dilation=4)[0, 0, 0].tolist() == [51]
    # taps 100 apart, right padding 100: the second tap of every window is padding
    y = conv(backend, algo, x, row([1, 10], "float64"), dilation=100, padding=((0, 0), (0, 100)))
    assert y[0, 0, 0].tolist() == [1, 2, 3, 4, 5]
    # 1-D, a dilation larger than the input with padding on both sides: taps at q - 7 and q - 7 + 9
    y = conv(backend, algo, np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 10.0]]]), dilation=9, padding=7)
    # padded length 17, window span 10: 8 outputs; tap 0 hits x at q = 7..9, tap 1 at q = -2..0
    assert y[0, 0].tolist() == [30, 0, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("backend", POOL)
def test_max_pool_huge_dilation(backend):
    x = -np.arange(60, dtype=np.float32).reshape(1, 1, 60)
    # kernel 2, dilation 50, stride 5: windows {0, 50} and {5, 55}
    y, idx = run(backend, fc.max_pool1d, x, 2, stride=5, dilation=50, return_indices=True)
    assert y[0, 0].tolist() == [0, -5] and idx[0, 0].tolist() == [0, 5]


@pytest.mark.parametrize("backend", POOL)
def test_max_pool_dilated_window_wider_than_the_output_row(backend):
    # a window of 2x4 taps, 2 apart both ways, over 3x8 with one column of padding each side, stride (1, 2):
    # one output row of 2, narrower than the window (numba then walks each output's window, not each tap's
    # row of outputs). Even columns and row 1 hold big values that only a dropped dilation would reach.
    x = np.array([[0, 1, 50, 2, 60, 3, 70, 4],
                  [100] * 8,
                  [0, 5, 50, 6, 60, 7, 70, 8]], np.float32).reshape(1, 1, 3, 8)
    y, idx = run(backend, fc.max_pool2d, x, (2, 4), stride=(1, 2), padding=(0, 1), dilation=2,
                 return_indices=True)
    # output 0: rows {0, 2}, columns {-1 (padding), 1, 3, 5}; output 1: rows {0, 2}, columns {1, 3, 5, 7}
    assert y.shape == (1, 1, 1, 2) and y[0, 0, 0].tolist() == [7, 8]
    assert idx[0, 0, 0].tolist() == [2 * 8 + 5, 2 * 8 + 7]


@pytest.mark.parametrize("backend, algo", CONV)
def test_depthwise_with_channel_multiplier(backend, algo):
    # groups == C == 2, four filters: channels 0, 1 read input channel 0; channels 2, 3 read channel 1
    x = np.array([[1, 2, 3], [10, 20, 30]], np.float32).reshape(1, 2, 1, 3)
    w = np.array([[1, 1], [1, -1], [2, 0], [0, 3]], np.float32).reshape(4, 1, 1, 2)
    y = conv(backend, algo, x, w, groups=2)
    np.testing.assert_array_equal(y[0, :, 0], [[3, 5], [-1, -1], [20, 40], [60, 90]])
    # the same with padding 1: the edge windows hold one tap each
    y = conv(backend, algo, x, w, groups=2, padding=(0, 1))
    np.testing.assert_array_equal(y[0, :, 0], [[1, 3, 5, 3], [-1, -1, -1, 3], [0, 20, 40, 60],
                                               [30, 60, 90, 0]])


# ---------------------------------------------------------------------------------------------------
# float16: stored as half, summed in float32, rounded once
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, algo", CONV)
def test_float16_conv_accumulates_in_float32_and_rounds_once(backend, algo):
    def ones(c):
        return np.ones((1, c, 1, 1), np.float16)
    # summed in half, 1 + 1 + ... stalls at 2048 (2049 is not representable and rounds back to 2048)
    assert conv(backend, algo, ones(4096), ones(4096))[0, 0, 0, 0] == 4096
    # 2051 is exact in float32 and rounds once, to even, to 2052 (a half sum would stall at 2048)
    assert conv(backend, algo, ones(2051), ones(2051))[0, 0, 0, 0] == 2052
    # partial sums beyond half's 65504 are fine when the result is in range ...
    x = np.array([60000, 60000, -60000], np.float16).reshape(1, 3, 1, 1)
    assert conv(backend, algo, x, ones(3))[0, 0, 0, 0] == 60000
    # ... and a result beyond it overflows to inf in the stored half
    y = conv(backend, algo, x[:, :2], ones(2))
    assert y[0, 0, 0, 0] == INF and y.dtype == np.float16


@pytest.mark.parametrize("backend", POOL)
def test_float16_avg_pool_sums_in_float32(backend):
    x = np.array([60000, 60000, 65504, 65504], np.float16).reshape(1, 1, 1, 4)
    y = run(backend, fc.avg_pool2d, x, (1, 2))
    assert y.dtype == np.float16 and y[0, 0, 0].tolist() == [60000, 65504]
    assert run(backend, fc.adaptive_avg_pool2d, x, (1, 1))[0, 0, 0, 0] == np.float16(62752)
    # rounded once: the mean of 1 and 1 + 2^-10 is 1 + 2^-11 (exact in float32), a tie in half -> even -> 1
    x = np.array([1, 1 + 2 ** -10], np.float16).reshape(1, 1, 1, 2)
    assert run(backend, fc.avg_pool2d, x, (1, 2))[0, 0, 0, 0] == 1
