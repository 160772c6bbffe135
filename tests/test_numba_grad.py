"""The numba backend's gradients against the NumPy oracle: conv input gradient (and conv_transpose), conv
weight gradient, every pool gradient and max_unpool; every Impl dispatch offers for each op
(``_dispatch.candidates(spec, "numba", algo)``), bitwise determinism on rerun, the Inf-in-dy rule for
the weight gradient, the tuner measuring the new conv ops, the kernels' geometry records.

Expected values come only from the oracle (fastconv._backends.numpy_oracle) or are written by hand.
Conv tolerances scale with the reduction length (fastconv.testing.assert_grad_close: a dx element sums at
most K/G*R*S terms (+ the bias), a dw element N*P*Q). Pool gradients and max_unpool must match the oracle
bitwise (the same float64 sums in the same order, rounded once).
"""
import numpy as np
import pytest

numba = pytest.importorskip("numba")

import fastconv  # noqa: E402
from fastconv import _dispatch, grad  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._backends import numpy_oracle as oracle  # noqa: E402
from fastconv._spec import (conv_input_spec, conv_transpose_spec, conv_weight_spec, pool_grad_spec,  # noqa: E402
                            unpool_spec)
from fastconv.testing import assert_grad_close  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

DTYPES = (np.float32, np.float64)
CONV_ALGOS = ("direct", "im2col")


def _rng(seed):
    return np.random.default_rng(seed)


def _supported(spec, algo):
    """Every Impl of ``algo`` that takes ``spec`` (dispatch's candidates without reasons), at least one."""
    impls = [i for i in _dispatch.candidates(spec, "numba", algo) if not _dispatch.reasons(i, spec)]
    assert impls, [(i.name, _dispatch.reasons(i, spec)) for i in _dispatch.candidates(spec, "numba", algo)]
    return impls


def _names_2d(spec):
    """The candidates dispatch offers a 1-D/2-D spec, by name (the 3-D Impls of the op refuse it)."""
    return [i.name for i in _dispatch.candidates(spec, "numba") if spec.spatial_dims in i.spatial_dims]


def check_conv_input(spec, dy, w, b, out):
    """``out`` (the user's shape or the backend layout) against the oracle within fastconv.testing's gradient
    tolerance (the reduction length K/G*R*S + 1 times the unit roundoff times the |.|-oracle)."""
    assert_grad_close(np.asarray(out).reshape(spec.output_shape), spec, dy, w, b)


def check_conv_weight(spec, x, dy, out):
    """As :func:`check_conv_input`; the reduction length is N*P*Q + 1."""
    assert_grad_close(np.asarray(out).reshape(spec.output_shape), spec, x, dy)


# ---------------------------------------------------------------------------------------------------
# Convolution gradients through the public API (grad.conv*d_input / _weight), every algo
# ---------------------------------------------------------------------------------------------------
#: name: (x shape, w shape, kwargs of the forward conv)
CONV_CASES = {
    "3x3-pad1": ((2, 3, 9, 10), (4, 3, 3, 3), dict(padding=1)),
    "stride2-asym-pad": ((2, 3, 11, 9), (5, 3, 3, 3), dict(stride=2, padding=((1, 0), (2, 1)))),
    "stride3x2": ((1, 2, 12, 13), (3, 2, 3, 2), dict(stride=(3, 2), padding=(1, 0))),
    "dilation": ((2, 2, 12, 11), (3, 2, 3, 2), dict(dilation=(2, 3), padding=2)),
    "same-even": ((1, 3, 7, 6), (2, 3, 4, 2), dict(padding="same")),
    "groups": ((2, 6, 7, 7), (9, 2, 3, 3), dict(groups=3, padding=1)),
    "depthwise": ((2, 5, 9, 8), (5, 1, 3, 3), dict(groups=5, padding=1)),
    "depthwise-mult2-s2": ((2, 4, 9, 9), (8, 1, 3, 3), dict(groups=4, stride=2, padding=1)),
    "depthwise-dil-asym": ((2, 3, 9, 11), (3, 1, 2, 3), dict(groups=3, dilation=(1, 2), padding=((1, 0), (3, 1)))),
    "depthwise-3wide-narrow": ((1, 2, 4, 2), (2, 1, 3, 3), dict(groups=2, padding=(1, 2), stride=(1, 3))),
    "depthwise-5x5": ((2, 3, 8, 8), (3, 1, 5, 5), dict(groups=3, padding=2)),
    "1x1": ((3, 8, 5, 6), (7, 8, 1, 1), {}),
    "1x1-s2": ((2, 6, 9, 7), (5, 6, 1, 1), dict(stride=2)),
    "blocks-over-CB": ((1, 37, 5, 5), (18, 37, 3, 3), dict(padding=1)),   # C, K past one channel block
    "kernel-eq-input": ((2, 3, 5, 4), (2, 3, 5, 4), {}),
    "pad-only-taps": ((1, 1, 2, 2), (1, 1, 5, 5), dict(padding=4)),      # windows mostly padding
    "tap-all-in-padding": ((2, 1, 1, 5), (1, 1, 1, 3), dict(padding=((0, 0), (2, 0)), dilation=(1, 3))),
    "stride-over-kernel": ((1, 2, 11, 11), (3, 2, 2, 2), dict(stride=3)),   # rows no tap reaches
}
CONV1D_CASES = {
    "1d": ((2, 3, 20), (4, 3, 5), dict(padding=2)),
    "1d-stride-dil-asym-groups": ((1, 4, 17), (6, 2, 3), dict(stride=2, dilation=2, padding=((2, 1),), groups=2)),
}
UNBATCHED_CASES = {
    "unbatched-2d": ((3, 7, 7), (2, 3, 3, 3), dict(padding=1)),
    "unbatched-1d": ((3, 9), (2, 3, 4), dict(padding="same")),
}
ALL_CONV_CASES = {**CONV_CASES, **CONV1D_CASES, **UNBATCHED_CASES}


def _conv_case(name, dtype, seed=0):
    xs, ws, kw = ALL_CONV_CASES[name]
    nd = len(ws) - 2
    rng = _rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    fwd = fastconv.conv1d if nd == 1 else fastconv.conv2d
    dy = rng.standard_normal(fwd(x, w, backend="numpy", **kw).shape).astype(dtype)
    return x, w, dy, kw, nd


def _args(kw):
    return (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algo", CONV_ALGOS)
@pytest.mark.parametrize("case", list(ALL_CONV_CASES))
def test_conv_input_matches_oracle(case, algo, dtype):
    x, w, dy, kw, nd = _conv_case(case, dtype)
    spec = conv_input_spec(x.shape, w, dy, *_args(kw), spatial_dims=nd)
    dy4, w4 = dy.reshape(spec.operands()[0]), w.reshape(spec.weight_shape)
    for impl in _supported(spec, algo):
        check_conv_input(spec, dy4, w4, None, impl.run(spec, dy4, w4, None))
    fn = grad.conv1d_input if nd == 1 else grad.conv2d_input
    out = fn(x.shape, w, dy, *_args(kw), backend="numba", algo=algo)
    assert out.dtype == dtype and out.shape == x.shape
    check_conv_input(spec, dy4, w4, None, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algo", CONV_ALGOS)
@pytest.mark.parametrize("case", list(ALL_CONV_CASES))
def test_conv_weight_matches_oracle(case, algo, dtype):
    x, w, dy, kw, nd = _conv_case(case, dtype, seed=1)
    spec = conv_weight_spec(x, w.shape, dy, *_args(kw), spatial_dims=nd)
    x4, dy4 = x.reshape(spec.input_shape), dy.reshape(spec.operands()[1])
    for impl in _supported(spec, algo):
        check_conv_weight(spec, x4, dy4, impl.run(spec, x4, dy4))
    fn = grad.conv1d_weight if nd == 1 else grad.conv2d_weight
    out = fn(x, w.shape, dy, *_args(kw), backend="numba", algo=algo)
    assert out.dtype == dtype and out.shape == w.shape
    check_conv_weight(spec, x4, dy4, out)


#: (input shape, weight shape (C_in, C_out/groups, ...), kwargs of conv_transpose)
TRANSPOSE_CASES = {
    "s2-outpad1": ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "s2-outpad1-unpadded": ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, output_padding=1)),
    "s3-outpad-hw-groups": ((1, 4, 4, 5), (4, 2, 3, 2), dict(stride=3, padding=(1, 0), output_padding=(2, 1),
                                                              groups=2)),
    "dil2-outpad1": ((2, 3, 6, 6), (3, 2, 3, 3), dict(dilation=2, stride=1, output_padding=1)),
    "asym-pad": ((1, 2, 5, 5), (2, 3, 3, 3), dict(stride=2, padding=((1, 0), (0, 2)))),
    "depthwise": ((2, 6, 7, 7), (6, 1, 3, 3), dict(groups=6, stride=2, padding=1, output_padding=1)),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("algo", CONV_ALGOS)
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES) + ["1d"])
def test_conv_transpose_matches_oracle(case, algo, bias):
    """output_padding gives rows/columns no dy reaches: they hold the bias only."""
    rng = _rng(3)
    if case == "1d":
        xs, ws, kw, nd = (2, 3, 9), (3, 4, 3), dict(stride=2, padding=1, output_padding=1), 1
    else:
        (xs, ws, kw), nd = TRANSPOSE_CASES[case], 2
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1)).astype(np.float32) if bias else None
    spec = conv_transpose_spec(x, w, b, spatial_dims=nd, **kw)
    x4, w4 = x.reshape(spec.operands()[0]), w.reshape(spec.weight_shape)
    for impl in _supported(spec, algo):
        check_conv_input(spec, x4, w4, b, impl.run(spec, x4, w4, b))
    fn = fastconv.conv_transpose1d if nd == 1 else fastconv.conv_transpose2d
    out = fn(x, w, b, backend="numba", algo=algo, **kw)
    assert out.shape == fn(x, w, b, backend="numpy", **kw).shape
    check_conv_input(spec, x.reshape(spec.operands()[0]), w.reshape(spec.weight_shape), b, out)
    if case == "s2-outpad1-unpadded":
        # by hand: 12 x 14 outputs; row 11 (column 13) would need p*2 + r = 11 with r <= 2, so p = 5 > P - 1:
        # no dy reaches the last row and column, which hold the bias only
        assert out.shape[2:] == (12, 14)
        want = np.broadcast_to((b if bias else np.zeros(3, np.float32))[None, :, None], (2, 3, 14))
        np.testing.assert_array_equal(out[:, :, -1, :], want)
        np.testing.assert_array_equal(out[:, :, :, -1], want[:, :, :12])


@pytest.mark.parametrize("algo", CONV_ALGOS)
def test_conv_gradients_by_hand(algo):
    """A 1x1 image of value 2 through a 3x3 filter with padding 1: dy (1x1) = 5 sends 5*w[1, 1] to dx and
    dw = 2*5 at the centre tap only (every other tap reads padding)."""
    x = np.full((1, 1, 1, 1), 2.0)
    w = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    dy = np.full((1, 1, 1, 1), 5.0)
    dx = grad.conv2d_input(x.shape, w, dy, padding=1, backend="numba", algo=algo)
    np.testing.assert_array_equal(dx, [[[[20.0]]]])
    dw = grad.conv2d_weight(x, w.shape, dy, padding=1, backend="numba", algo=algo)
    want = np.zeros((1, 1, 3, 3))
    want[0, 0, 1, 1] = 10.0
    np.testing.assert_array_equal(dw, want)


@pytest.mark.parametrize("algo", CONV_ALGOS)
def test_conv_gradients_float16_upcast(algo):
    x, w, dy, kw, _ = _conv_case("3x3-pad1", np.float16)
    dx = grad.conv2d_input(x.shape, w, dy, padding=1, backend="numba", algo=algo)
    dw = grad.conv2d_weight(x, w.shape, dy, padding=1, backend="numba", algo=algo)
    assert dx.dtype == dw.dtype == np.float16
    si = conv_input_spec(x.shape, w, dy, 1, 1)
    ref = oracle.conv_input64(si, dy, w)
    mag = oracle.conv_input64(si, np.abs(dy), np.abs(w))
    assert (np.abs(dx - ref) <= 2 * np.finfo(np.float16).eps * mag + 1e-3).all()
    sw = conv_weight_spec(x, w.shape, dy, 1, 1)
    ref = oracle.conv_weight64(sw, x, dy)
    mag = oracle.conv_weight64(sw, np.abs(x), np.abs(dy))
    assert (np.abs(dw - ref) <= 2 * np.finfo(np.float16).eps * mag + 1e-3).all()


@pytest.mark.parametrize("per_tile", [1, 3])
def test_im2col_tiles_of_several_images(per_tile, monkeypatch):
    """One image per tile, or several with a partial last tile (7 images, 3 per tile); groups, bias."""
    rng = _rng(8)
    x = rng.standard_normal((7, 4, 5, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(4)
    dy = rng.standard_normal(fastconv.conv2d(x, w, padding=1, groups=2, backend="numpy").shape)
    si = conv_input_spec(x.shape, w, dy, 1, 1, 1, 2)
    sw = conv_weight_spec(x, w.shape, dy, 1, 1, 1, 2)
    one = (si.gemm_k + si.K_per_group) * si.P * si.Q * 8
    monkeypatch.setattr(numba_cpu, "TILE_BYTES", per_tile * one)
    assert numba_cpu.images_per_tile(si) == numba_cpu.images_per_tile(sw) == per_tile
    check_conv_input(si, dy, w, b, numba_cpu.conv_input_im2col(si, dy, w, b))
    check_conv_weight(sw, x, dy, numba_cpu.conv_weight_im2col(sw, x, dy))
    if per_tile == 1:     # one image per tile: conv_input goes in bands of 2 output rows (the last of 1)
        monkeypatch.setattr(numba_cpu, "BAND_BYTES", 2 * si.gemm_k * si.Q * 8)
        assert numba_cpu.rows_per_band(si) == 2 and si.P == 5
        check_conv_input(si, dy, w, b, numba_cpu.conv_input_im2col(si, dy, w, b))
        dy2 = rng.standard_normal(fastconv.conv2d(x, w, None, 2, 1, 1, 2, backend="numpy").shape)
        s2 = conv_input_spec(x.shape, w, dy2, 2, 1, 1, 2)           # stride 2: 3 output rows, bands of 2
        monkeypatch.setattr(numba_cpu, "TILE_BYTES", (s2.gemm_k + s2.K_per_group) * s2.P * s2.Q * 8)
        monkeypatch.setattr(numba_cpu, "BAND_BYTES", 2 * s2.gemm_k * s2.Q * 8)
        assert numba_cpu.images_per_tile(s2) == 1 and numba_cpu.rows_per_band(s2) == 2 and s2.P == 3
        check_conv_input(s2, dy2, w, b, numba_cpu.conv_input_im2col(s2, dy2, w, b))


def test_conv_gradients_do_not_modify_inputs():
    x, w, dy, kw, _ = _conv_case("groups", np.float32)
    xv, wv, dyv = x[:, :, :, ::-1], w[:, :, ::-1], dy[..., ::-1]       # non-contiguous views
    copies = [a.copy() for a in (xv, wv, dyv)]
    for algo in CONV_ALGOS:
        grad.conv2d_input(x.shape, wv, dyv, *_args(kw), backend="numba", algo=algo)
        grad.conv2d_weight(xv, w.shape, dyv, *_args(kw), backend="numba", algo=algo)
    for a, c in zip((xv, wv, dyv), copies):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------------------------------
# Special values: the padding rule for each operand that meets it
# ---------------------------------------------------------------------------------------------------
def test_inf_in_dy_padded_weight_gradient_refuses_im2col(monkeypatch):
    """conv_weight im2col multiplies the column matrix's padded zeros by dy: with an Inf/NaN in dy and
    padding, dispatch refuses it (naming the rule) and auto runs the exact direct kernel."""
    rng = _rng(4)
    x = rng.standard_normal((2, 3, 6, 6))
    dy = rng.standard_normal((2, 4, 6, 6))
    dy[0, 1, 0, 0] = np.inf       # output (0, 0): its top-left taps read padding
    dy[1, 2, 3, 3] = np.nan
    spec = conv_weight_spec(x, (4, 3, 3, 3), dy, 1, 1)
    with pytest.raises(ValueError, match=r"numba:conv_weight:im2col/pack-gemm: a weight is Inf or NaN and the "
                                         r"problem is padded"):
        grad.conv2d_weight(x, (4, 3, 3, 3), dy, padding=1, backend="numba", algo="im2col")
    assert _dispatch.select(spec, "numba", "auto", weight=dy).name == "numba:conv_weight:direct/lanes"
    out = grad.conv2d_weight(x, (4, 3, 3, 3), dy, padding=1, backend="numba")
    ref = oracle.conv_weight64(spec, x, dy)
    assert np.isinf(ref[1]).any() and not np.isnan(ref[1]).all()    # padded taps did not meet the Inf
    check_conv_weight(spec, x, dy, out)
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)   # measured: whatever wins, im2col is not run
    assert _dispatch.select(spec, "numba", "auto", weight=dy).name == "numba:conv_weight:direct/lanes"
    np.testing.assert_array_equal(grad.conv2d_weight(x, (4, 3, 3, 3), dy, padding=1, backend="numba"), out)
    # unpadded, the same dy meets no padding: im2col takes it and agrees
    dyv = dy[:, :, :4, :4].copy()
    sv = conv_weight_spec(x, (4, 3, 3, 3), dyv, 1, 0)
    assert _dispatch.select(sv, "numba", "im2col", weight=dyv).name == "numba:conv_weight:im2col/pack-gemm"
    check_conv_weight(sv, x, dyv, grad.conv2d_weight(x, (4, 3, 3, 3), dyv, backend="numba", algo="im2col"))


@pytest.mark.parametrize("algo", CONV_ALGOS)
def test_nonfinite_weight_input_gradient_is_exact(algo):
    """Both conv_input kernels drop padded taps instead of multiplying zeros: an Inf weight is accepted by
    every algo and gives the oracle's Inf/NaN pattern; NaN in dy goes where its taps reach."""
    rng = _rng(5)
    w = rng.standard_normal((3, 2, 3, 3))
    w[1, 0, 0, 0] = np.inf
    dy = rng.standard_normal((2, 3, 5, 5))
    dy[1, 2, 4, 4] = np.nan
    spec = conv_input_spec((2, 2, 5, 5), w, dy, 1, 1)
    assert _dispatch.select(spec, "numba", algo, weight=w).algo == algo
    out = grad.conv2d_input((2, 2, 5, 5), w, dy, padding=1, backend="numba", algo=algo)
    ref = oracle.conv_input64(spec, dy, w)
    assert np.isinf(ref).any() and np.isfinite(ref).any()
    check_conv_input(spec, dy, w, None, out)


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool: bitwise the oracle
# ---------------------------------------------------------------------------------------------------
def _pool_input(dtype, shape=(2, 3, 9, 10), seed=5):
    x = _rng(seed).standard_normal(shape).astype(dtype)
    x[0, 0, 2, 3] = np.nan                 # a lone NaN: the gradient goes where the forward points
    x[0, 1, 4:6, 4:6] = np.nan             # a NaN block (the last NaN's index)
    x[1, 1, :4, :4] = -np.inf              # windows of only -inf
    x[1, 2, 5, :] = 0.5                    # ties: the first in scan order
    x[1, 2, 6, :] = 0.5
    return x


def _pool_grad_pair(fn, dy, x, **kw):
    got = fn(dy, x, backend="numba", **kw)
    ref = fn(dy, x, backend="numpy", **kw)
    assert got.dtype == ref.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, ref)
    return got


MAX_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),                    # overlapping windows share maxima
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    dict(kernel_size=3, stride=1, dilation=3, padding=1),
    dict(kernel_size=(9, 10)),                                   # global
    # per-side pads (beyond torch; each side up to dilation * (kernel - 1)): the window starts at the before pad
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True),
    dict(kernel_size=(3, 4), stride=(1, 3), padding=((0, 1), (3, 1)), dilation=(2, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(MAX_CASES)))
def test_max_pool_backward(case, dtype):
    x = _pool_input(dtype)
    kw = MAX_CASES[case]
    out, idx = fastconv.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    dy = _rng(case).standard_normal(out.shape).astype(dtype)
    spec = pool_grad_spec("max", dy, x, **kw)
    assert _names_2d(spec) == ["numba:max_pool_backward:direct/disjoint", "numba:max_pool_backward:direct"]
    got = _pool_grad_pair(grad.max_pool2d, dy, x, indices=idx, **kw)
    np.testing.assert_array_equal(got, _pool_grad_pair(grad.max_pool2d, dy, x, **kw))   # indices recomputed


def test_max_pool_backward_by_hand():
    """Ties keep the first maximum, NaN takes the window (last NaN), overlapping windows add."""
    x = np.array([[[1.0, 3.0, 3.0, np.nan, 0.0, np.nan]]], np.float32)
    dy = np.array([[[10.0, 20.0, 40.0, 80.0, 160.0]]], np.float32)   # kernel 2, stride 1: 5 windows
    got = grad.max_pool1d(dy, x, 2, 1, backend="numba")
    # windows: [1,3]->1, [3,3]->1 (first), [3,nan]->3, [nan,0]->3, [0,nan]->5
    np.testing.assert_array_equal(got[0, 0], [0.0, 30.0, 0.0, 120.0, 0.0, 160.0])


AVG_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), divisor_override=5),
    dict(kernel_size=2, ceil_mode=True, divisor_override=-3),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    dict(kernel_size=(3, 7), stride=(2, 5), padding=(1, 3), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(9, 10)),
    # per-side pads: the divisor's padded extent ends at the after pad ([-before, size + after))
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 4), stride=(2, 3), padding=((1, 2), (3, 0)), ceil_mode=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool_backward(case, dtype):
    x = _pool_input(dtype)
    kw = AVG_CASES[case]
    dy = _rng(case).standard_normal(fastconv.avg_pool2d(x, backend="numpy", **kw).shape).astype(dtype)
    dy[0, 0, 0, 0] = np.nan
    _pool_grad_pair(grad.avg_pool2d, dy, x, **kw)


def test_avg_pool_backward_divisors_by_hand():
    """3x3 ones, kernel 2, stride 2, padding 1, ceil_mode: the corner window holds 1 input pixel, of a
    padded window of 4 (count_include_pad) or of itself (not)."""
    x = np.zeros((1, 1, 3, 3), np.float32)
    dy = np.ones((1, 1, 2, 2), np.float32)
    got = grad.avg_pool2d(dy, x, 2, 2, 1, ceil_mode=True, backend="numba")
    # 2x2 windows starting at -1 and 1 per axis: each input pixel in exactly one window, every window's
    # padded extent 2 x 2 (/4); without the padding the first window row/column holds 1 pixel, the second 2
    np.testing.assert_array_equal(got[0, 0], np.full((3, 3), 0.25))
    got = grad.avg_pool2d(dy, x, 2, 2, 1, ceil_mode=True, count_include_pad=False, backend="numba")
    np.testing.assert_array_equal(got[0, 0], [[1.0, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    got = grad.avg_pool2d(dy, x, 2, 2, 1, ceil_mode=True, divisor_override=2, backend="numba")
    np.testing.assert_array_equal(got[0, 0], np.full((3, 3), 0.5))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("output_size", [(4, 3), (1, 1), (7, 10), (9, 10), (5, 7), (13, 11)])
def test_adaptive_pool_backward(dtype, output_size):
    """Sizes that do not divide the input (overlapping windows), one window, identity, upsampling."""
    x = _pool_input(dtype)
    dy = _rng(7).standard_normal(x.shape[:2] + output_size).astype(dtype)
    _pool_grad_pair(grad.adaptive_avg_pool2d, dy, x)
    _, idx = fastconv.adaptive_max_pool2d(x, output_size, return_indices=True, backend="numpy")
    got = _pool_grad_pair(grad.adaptive_max_pool2d, dy, x, indices=idx)
    np.testing.assert_array_equal(got, _pool_grad_pair(grad.adaptive_max_pool2d, dy, x))
    spec = pool_grad_spec("adaptive_max", dy, x)
    assert _names_2d(spec) == ["numba:adaptive_max_pool_backward:direct/disjoint",
                               "numba:adaptive_max_pool_backward:direct"]


def test_pool_backward_1d_and_unbatched():
    x = _pool_input(np.float64, shape=(3, 4, 11, 11))[:, :, 5]
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    dy = _rng(9).standard_normal(fastconv.max_pool1d(x, backend="numpy", **kw).shape)
    _pool_grad_pair(grad.max_pool1d, dy, x, **kw)
    _pool_grad_pair(grad.max_pool1d, dy[0], x[0], **kw)
    _pool_grad_pair(grad.avg_pool1d, dy, x, count_include_pad=False, **kw)
    _pool_grad_pair(grad.avg_pool1d, dy[1], x[1], **kw)
    dy = _rng(10).standard_normal((3, 4, 4))
    _pool_grad_pair(grad.adaptive_avg_pool1d, dy, x)
    _pool_grad_pair(grad.adaptive_max_pool1d, dy[2], x[2])


def test_pool_backward_float16_upcast():
    x = _pool_input(np.float16)
    dy = _rng(11).standard_normal((2, 3, 5, 5)).astype(np.float16)
    for fn in (grad.max_pool2d, grad.avg_pool2d):
        got = fn(dy, x, 3, 2, 1, backend="numba")
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, fn(dy, x, 3, 2, 1, backend="numpy"))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_max_unpool(dtype):
    x = _pool_input(dtype, shape=(2, 3, 9, 9))     # 5x5 windows; the default output size is 9x9 again
    out, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numpy")   # overlapping windows
    spec = unpool_spec(out, idx, 3, 2, 1, output_size=x.shape[2:])
    assert _names_2d(spec) == ["numba:max_unpool:direct"]
    for size in (None, x.shape[2:]):
        got = fastconv.max_unpool2d(out, idx, 3, 2, 1, output_size=size, backend="numba")
        np.testing.assert_array_equal(got, fastconv.max_unpool2d(out, idx, 3, 2, 1, output_size=size,
                                                                 backend="numpy"))
    x1 = x[:, :, 0]
    o1, i1 = fastconv.max_pool1d(x1, 2, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(fastconv.max_unpool1d(o1[0], i1[0], 2, backend="numba"),
                                  fastconv.max_unpool1d(o1[0], i1[0], 2, backend="numpy"))


def test_max_unpool_repeated_indices_last_wins():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    idx = np.array([[[[5, 5], [0, 5]]]], np.int64)
    got = fastconv.max_unpool2d(x, idx, 2, backend="numba")       # 4x4 output
    want = np.zeros((1, 1, 4, 4), np.float32)
    want.flat[0], want.flat[5] = 3.0, 4.0                         # row-major: (1, 1) writes last
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------------
# Random geometries (bounded, derandomized)
# ---------------------------------------------------------------------------------------------------
SETTINGS = hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])


@st.composite
def conv_problems(draw):
    g = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    H = draw(st.integers(max(1, dh * (R - 1) + 1 - pads[0][0] - pads[0][1]), 11))
    W = draw(st.integers(max(1, dw * (S - 1) + 1 - pads[1][0] - pads[1][1]), 11))
    return dict(N=draw(st.integers(1, 3)), C=g * cg, H=H, W=W, K=g * kg, R=R, S=S, groups=g,
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=pads, dilation=(dh, dw),
                seed=draw(st.integers(0, 2**16)), dtype=draw(st.sampled_from(DTYPES)),
                algo=draw(st.sampled_from(CONV_ALGOS)), special=draw(st.booleans()))


@SETTINGS
@hypothesis.given(conv_problems())
def test_conv_gradients_random_geometries(p):
    rng = _rng(p["seed"])
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(p["dtype"])
    w = rng.standard_normal((p["K"], p["C"] // p["groups"], p["R"], p["S"])).astype(p["dtype"])
    args = (p["stride"], p["padding"], p["dilation"], p["groups"])
    y = fastconv.conv2d(x, w, None, *args, backend="numpy")
    dy = rng.standard_normal(y.shape).astype(p["dtype"])
    if p["special"]:                   # a NaN in x and an Inf in w: they go wherever their taps reach
        x.flat[rng.integers(x.size)] = np.nan
        w.flat[rng.integers(w.size)] = np.inf
    spec = conv_input_spec(x.shape, w, dy, *args)
    out = grad.conv2d_input(x.shape, w, dy, *args, backend="numba", algo=p["algo"])
    check_conv_input(spec, dy, w, None, out)
    spec = conv_weight_spec(x, w.shape, dy, *args)
    out = grad.conv2d_weight(x, w.shape, dy, *args, backend="numba", algo=p["algo"])
    check_conv_weight(spec, x, dy, out)


@st.composite
def pool_problems(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    H = draw(st.integers(max(1, d[0] * (k[0] - 1) + 1 - 2 * pad[0]), 11))
    W = draw(st.integers(max(1, d[1] * (k[1] - 1) + 1 - 2 * pad[1]), 11))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), kernel_size=k, dilation=d,
                stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))), padding=pad,
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                divisor=draw(st.sampled_from([None, None, 3, -2])),
                out=(draw(st.integers(1, 12)), draw(st.integers(1, 12))),
                seed=draw(st.integers(0, 2**16)), dtype=draw(st.sampled_from(DTYPES)))


@SETTINGS
@hypothesis.given(pool_problems())
def test_pool_gradients_random_geometries(p):
    rng = _rng(p["seed"])
    x = rng.standard_normal(p["shape"]).astype(p["dtype"])
    x[x > 1.5] = np.nan
    common = dict(kernel_size=p["kernel_size"], stride=p["stride"], padding=p["padding"], ceil_mode=p["ceil_mode"])
    mx = dict(common, dilation=p["dilation"])
    out, idx = fastconv.max_pool2d(x, return_indices=True, backend="numpy", **mx)
    dy = rng.standard_normal(out.shape).astype(p["dtype"])
    _pool_grad_pair(grad.max_pool2d, dy, x, indices=idx, **mx)
    unpool = (out, idx, p["kernel_size"], p["stride"], p["padding"])
    try:           # max_unpool takes the input size only within one stride of its default (no dilation)
        uspec = unpool_spec(*unpool, output_size=x.shape[2:])
    except ValueError as e:
        assert "output_size" in str(e)
    else:
        np.testing.assert_array_equal(fastconv.max_unpool2d(*unpool, output_size=x.shape[2:], backend="numba"),
                                      oracle.max_unpool(uspec, out, idx))
    av = dict(common, count_include_pad=p["count_include_pad"], divisor_override=p["divisor"])
    dy = rng.standard_normal(fastconv.avg_pool2d(x, backend="numpy", **av).shape).astype(p["dtype"])
    _pool_grad_pair(grad.avg_pool2d, dy, x, **av)
    dy = rng.standard_normal(p["shape"][:2] + p["out"]).astype(p["dtype"])
    _pool_grad_pair(grad.adaptive_avg_pool2d, dy, x)
    _pool_grad_pair(grad.adaptive_max_pool2d, dy, x)


# ---------------------------------------------------------------------------------------------------
# Determinism, choosing, the kernels
# ---------------------------------------------------------------------------------------------------
def test_bitwise_deterministic_on_rerun(monkeypatch):
    """Every new Impl twice on the same data (im2col with several tiles, so tiles add up): identical bits."""
    rng = _rng(12)
    x = rng.standard_normal((5, 6, 12, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal(fastconv.conv2d(x, w, None, 1, 1, 1, 2, backend="numpy").shape).astype(np.float32)
    si = conv_input_spec(x.shape, w, dy, 1, 1, 1, 2)
    monkeypatch.setattr(numba_cpu, "TILE_BYTES", 2 * (si.gemm_k + si.K_per_group) * si.P * si.Q * 4)
    runs = []
    for _ in range(2):
        r = [grad.conv2d_input(x.shape, w, dy, 1, 1, 1, 2, backend="numba", algo=a) for a in CONV_ALGOS]
        r += [grad.conv2d_weight(x, w.shape, dy, 1, 1, 1, 2, backend="numba", algo=a) for a in CONV_ALGOS]
        p, idx = fastconv.max_pool2d(x, 3, 1, 1, return_indices=True, backend="numpy")
        r += [grad.max_pool2d(p, x, 3, 1, 1, indices=idx, backend="numba"),
              grad.avg_pool2d(p, x, 3, 1, 1, backend="numba"),
              grad.adaptive_avg_pool2d(p[:, :, :5, :7], x, backend="numba"),
              grad.adaptive_max_pool2d(p[:, :, :5, :7], x, backend="numba"),
              fastconv.max_unpool2d(p, idx, 3, 1, 1, backend="numba")]
        runs.append(r)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def test_auto_measures_the_conv_gradients(monkeypatch):
    """Above MEASURE_MIN_FLOPS, auto times every supported algo (a 3x3's: winograd too) on
    synthetic inputs of spec.operands() (once per spec) and runs the winner; below it (and for pool
    gradients) the first direct runs unmeasured."""
    TUNER = numba_cpu.TUNER
    TUNER.reset()
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 10**5)
    rng = _rng(13)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    for spec, operand in ((conv_input_spec(x.shape, w, dy, 1, 1), w), (conv_weight_spec(x, w.shape, dy, 1, 1), dy)):
        assert spec.flops() >= numba_cpu.MEASURE_MIN_FLOPS
        names = [i.name for i in _supported(spec, "auto")]
        assert [n.split(":")[2].split("/")[0] for n in names] == (
            ["direct", "im2col", "winograd"])
        before = TUNER.measure_count
        chosen = _dispatch.select(spec, "numba", "auto", weight=operand)
        assert TUNER.measure_count == before + 1 and chosen.name in names
        entry = TUNER.cache().entries()[TUNER.key(numba_cpu.tune_context(), spec, names)]
        assert set(entry["s"]) == set(names) and entry["choice"] == chosen.name
        assert _dispatch.select(spec, "numba", "auto", weight=operand) is chosen
        assert TUNER.measure_count == before + 1
    check_conv_input(conv_input_spec(x.shape, w, dy, 1, 1), dy, w, None,
                     grad.conv2d_input(x.shape, w, dy, padding=1, backend="numba"))
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 2 * 10**7)
    small = conv_weight_spec(x, w.shape, dy, 1, 1)
    before = TUNER.measure_count
    assert _dispatch.select(small, "numba", "auto", weight=dy).name == "numba:conv_weight:direct/lanes"
    assert TUNER.measure_count == before


GRAD_NAMES = ["numba:conv_input:direct/gather", "numba:conv_input:im2col/col2im", "numba:conv_input:winograd/f4x4",
              "numba:conv_input:winograd/f4x4-phases", "numba:conv_weight:direct/lanes",
              "numba:conv_weight:im2col/pack-gemm", "numba:conv_weight:winograd/f4x4",
              "numba:conv_weight:winograd/f4x4-phases", "numba:max_pool_backward:direct",
              "numba:avg_pool_backward:direct",
              "numba:adaptive_max_pool_backward:direct", "numba:adaptive_avg_pool_backward:direct",
              "numba:max_unpool:direct"]


def test_gradient_impls_registered():
    impls = [i for i in numba_cpu.implementations() if i.name in GRAD_NAMES]
    assert [i.name for i in impls] == GRAD_NAMES
    assert {i.name for i in impls if i.zero_fills_padding} == {"numba:conv_weight:im2col/pack-gemm",
                                                               "numba:conv_input:winograd/f4x4-phases"}
    assert all(i.dtypes == ("float32", "float64") for i in impls)


def test_gradient_kernels_take_their_records_and_run_parallel():
    """Each gradient kernel compiled with its geometry record type (by name, never an anonymous tuple);
    the parallel ones are compiled with parallel=True and col2im_add is serial (it alternates with BLAS)."""
    k = numba_cpu.kernels()
    import inspect
    x, w, dy, kw, _ = _conv_case("3x3-pad1", np.float32)
    for algo in CONV_ALGOS:
        grad.conv2d_input(x.shape, w, dy, padding=1, backend="numba", algo=algo)
        grad.conv2d_weight(x, w.shape, dy, padding=1, backend="numba", algo=algo)
    p, idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="numpy")
    grad.max_pool2d(p, x, 2, indices=idx, backend="numba")            # disjoint windows
    grad.avg_pool2d(p, x, 2, backend="numba")
    p3, idx3 = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numpy")
    grad.max_pool2d(p3, x, 3, 2, 1, indices=idx3, backend="numba")    # overlapping windows: the general
    grad.avg_pool2d(p3, x, 3, 2, 1, backend="numba")                  # kernels (not left to other tests)
    grad.adaptive_avg_pool2d(p, x, backend="numba")
    fastconv.max_unpool2d(p, idx, 2, backend="numba")
    xd = np.ascontiguousarray(x[:, :2])              # a depthwise problem: the depthwise gradient kernels
    wd = np.ones((4, 1, 3, 3), x.dtype)
    dyd = np.ones(fastconv.conv2d(xd, wd, padding=1, groups=2, backend="numpy").shape, x.dtype)
    dspec, wspec = conv_input_spec(xd.shape, wd, dyd, 1, 1, 1, 2), conv_weight_spec(xd, wd.shape, dyd, 1, 1, 1, 2)
    for _ in range(2):      # twice: a chunked kernel's first launch of a spec on several threads is its twin
        numba_cpu.conv_input_depthwise(dspec, dyd, wd)
        numba_cpu.conv_weight_depthwise(wspec, xd, dyd)
    w1 = np.ones((2, 1, 3, 3), x.dtype)              # channel multiplier 1: the channel-blocked kernel
    dy1 = np.ones(fastconv.conv2d(xd, w1, padding=1, groups=2, backend="numpy").shape, x.dtype)
    cspec = conv_weight_spec(xd, w1.shape, dy1, 1, 1, 1, 2)
    for _ in range(2):
        numba_cpu.conv_weight_depthwise_cblock(cspec, xd, dy1)
    xd[0, 0, 0, 0] = np.inf          # the phase kernel's zeros meet it: recomputed by conv2d_depthwise_weight
    ispec = conv_weight_spec(xd, wd.shape, dyd, 1, 1, 1, 2)
    for _ in range(2):
        numba_cpu.conv_weight_depthwise(ispec, xd, dyd)
    for name, (record, parallel) in k.GRAD_KERNELS.items():
        kernel = getattr(k, name)
        assert kernel.signatures, f"{name} never ran"
        assert kernel.targetoptions.get("parallel") is parallel, name
        params = list(inspect.signature(kernel.py_func).parameters)
        if record is None:
            assert "geo" not in params and "win" not in params
            continue
        pos = params.index("win" if "win" in params else "geo")
        for sig in kernel.signatures:
            assert isinstance(sig[pos], numba.types.BaseNamedTuple) and sig[pos].instance_class is record, name
    assert "_numba_grad" in k.MODULES          # its dispatchers tolerate a corrupt disk cache


def test_a_gradient_prange_becomes_a_parallel_region():
    """A fresh copy (not from the disk cache) of one plane kernel: Numba's parfor diagnostics count its
    prange loop (a kernel without parallel=True would run it as a plain range)."""
    k = numba_cpu.kernels()
    fresh = numba.njit(parallel=True, error_model="numpy")(k.max_unpool2d.py_func)
    f32, i64 = numba.float32[:, :, :, ::1], numba.int64[:, :, :, ::1]
    fresh.compile((f32, i64, f32))
    assert fresh.get_metadata(fresh.signatures[0])["parfor_diagnostics"].count_parfors() >= 1


def test_max_pool_backward_window_wholly_in_padding_sends_nothing():
    """Dilation 3 over 2 rows with padding 1: the only window row taps rows -1 and 2, both outside, so its
    outputs are -inf whatever x and their dy goes nowhere (the oracle's rule); the forward's index for them
    (the first tap with non-negative coordinates, row 2) lies outside the plane and is never followed, by the
    public call (which neutralises those outputs) nor by the Impl itself."""
    x = _rng(14).standard_normal((1, 2, 2, 5))
    kw = dict(kernel_size=2, stride=1, padding=(1, 0), dilation=(3, 1))
    out, idx = fastconv.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    assert out.shape == (1, 2, 1, 4) and np.isneginf(out).all() and (idx >= x.shape[2] * x.shape[3]).all()
    dy = np.ones(out.shape)
    np.testing.assert_array_equal(grad.max_pool2d(dy, x, indices=idx, backend="numba", **kw), np.zeros(x.shape))
    spec = pool_grad_spec("max", dy, x, **kw)
    impl = _dispatch.select(spec, "numba")
    np.testing.assert_array_equal(impl.run(spec, dy, idx), oracle.max_pool_backward(spec, dy, idx))
    np.testing.assert_array_equal(impl.run(spec, dy, idx), np.zeros(x.shape))
    # the same along the columns: there the forward's index of a dead window aliases the next row's first
    # element (h*W + 2 with W = 2), inside the plane for every row but the last
    x = _rng(15).standard_normal((1, 1, 3, 2))
    kw = dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 3))
    out, idx = fastconv.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    assert idx.ravel().tolist() == [2, 4, 6] and np.isneginf(out).all()
    dy = np.ones(out.shape)
    spec = pool_grad_spec("max", dy, x, **kw)
    np.testing.assert_array_equal(_dispatch.select(spec, "numba").run(spec, dy, idx), np.zeros(x.shape))
