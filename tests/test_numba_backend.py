"""The numba backend against the NumPy oracle: every algo, both dtypes, every geometry and pool rule;
which implementation dispatch selects (names, reasons, the non-finite-weight rule); algo="auto" measuring
once per spec (and thread-safely); the geometry records; the parallel path really parallel; the disk cache.

Expected values come only from the oracle (fastconv._backends.numpy_oracle) or are derived by hand.
Conv tolerance scales with the reduction length: |out - ref| <= 4 * eps * (Cg*R*S + 1) * conv64(|x|, |w|, |b|).
Max pools must match exactly, values and indices; avg pools too (same float64 sum in the same tap order).
Kernels compile once per dtype (Numba's disk cache makes later runs fast), so cases are many but small.
"""
import dataclasses
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import fastconv  # noqa: E402
from fastconv import _dispatch  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._backends import numpy_oracle as oracle  # noqa: E402

ALGOS = ("direct", "im2col")
DTYPES = (np.float32, np.float64)


def _rng(seed=0):
    return np.random.default_rng(seed)


def check_conv(x, w, b, *, nd=2, algo, **kw):
    fn = fastconv.conv1d if nd == 1 else fastconv.conv2d
    out = fn(x, w, b, backend="numba", algo=algo, **kw)
    spec = fastconv.conv_spec(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                              kw.get("groups", 1), spatial_dims=nd)
    x4, w4 = x.reshape(spec.input_shape), w.reshape(spec.weight_shape)
    ref = oracle.conv64(spec, x4, w4, b).reshape(spec.output_shape)
    mag = oracle.conv64(spec, np.abs(x4), np.abs(w4), None if b is None else np.abs(b)).reshape(spec.output_shape)
    eps = np.finfo(x.dtype).eps
    bound = 4 * eps * (spec.gemm_k + 1) * mag + np.finfo(x.dtype).tiny
    assert out.dtype == x.dtype and out.shape == spec.output_shape
    err = np.abs(out.astype(np.float64) - ref)
    assert (err <= bound).all(), f"max error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"
    return out


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
CONV_CASES = {
    # name: (N, C, H, W, K, R, S, kwargs)
    "plain": (2, 3, 8, 9, 5, 3, 3, {}),
    "bias_pad1": (2, 4, 7, 7, 6, 3, 3, dict(padding=1)),
    "stride2": (2, 3, 11, 10, 4, 3, 3, dict(stride=2, padding=1)),
    "stride_hw": (1, 2, 12, 13, 3, 3, 2, dict(stride=(3, 2), padding=(1, 0))),
    "asym_pad": (2, 3, 6, 8, 4, 3, 3, dict(padding=((2, 0), (1, 3)))),
    "same_even_k": (1, 3, 7, 6, 2, 4, 2, dict(padding="same")),
    "same_dilated": (1, 2, 9, 9, 3, 3, 3, dict(padding="same", dilation=2)),
    "dilation_hw": (2, 2, 12, 11, 3, 3, 2, dict(dilation=(2, 3), padding=2)),
    "groups": (2, 6, 7, 7, 9, 3, 3, dict(groups=3, padding=1)),
    "depthwise": (2, 5, 9, 8, 5, 3, 3, dict(groups=5, padding=1)),
    "depthwise_mult2_s2": (2, 4, 9, 9, 8, 3, 3, dict(groups=4, stride=2, padding=1)),
    "pointwise": (3, 8, 5, 6, 16, 1, 1, {}),
    "pointwise_groups": (2, 8, 5, 4, 4, 1, 1, dict(groups=2)),
    "pointwise_s2": (2, 6, 9, 7, 5, 1, 1, dict(stride=2)),
    "k_over_block": (1, 3, 5, 5, 37, 3, 3, dict(padding=1)),  # K not a multiple of the direct kernel's block
    "kernel_eq_input": (2, 3, 5, 4, 2, 5, 4, {}),
    "pad_only_taps": (1, 1, 2, 2, 1, 5, 5, dict(padding=4)),   # windows that are mostly padding
    # a tap whose every output column lies in the left padding (found by hypothesis: the pack zeroed
    # past the row's end into the next image of the tile)
    "tap_all_in_padding": (2, 1, 1, 5, 1, 1, 3, dict(padding=((0, 0), (2, 0)), dilation=(1, 3))),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv2d_matches_oracle(case, algo, dtype, bias):
    N, C, H, W, K, R, S, kw = CONV_CASES[case]
    g = kw.get("groups", 1)
    rng = _rng(hash(case) % 2**32)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    check_conv(x, w, b, algo=algo, **kw)


@pytest.mark.parametrize("per_tile", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_im2col_tiles_of_several_images(dtype, per_tile):
    """One image per tile, or several with a partial last tile; groups and bias."""
    rng = _rng(8)
    x = rng.standard_normal((7, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    spec = fastconv.conv_spec(x, w, b, 1, 1, 1, 2)
    old = numba_cpu.TILE_BYTES
    try:
        numba_cpu.TILE_BYTES = per_tile * (spec.gemm_k + spec.K_per_group) * spec.P * spec.Q * x.itemsize
        assert numba_cpu.images_per_tile(spec) == per_tile
        check_conv(x, w, b, algo="im2col", padding=1, groups=2)
        x1 = rng.standard_normal((5, 4, 3, 3)).astype(dtype)                  # pointwise, tiled
        check_conv(x1, rng.standard_normal((8, 4, 1, 1)).astype(dtype), None, algo="im2col")
    finally:
        numba_cpu.TILE_BYTES = old


@pytest.mark.parametrize("algo", ALGOS)
def test_conv1d_and_unbatched(algo):
    rng = _rng(1)
    x = rng.standard_normal((2, 4, 17)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    check_conv(x, w, b, nd=1, algo=algo, stride=2, padding=((2, 1),), dilation=2, groups=2)
    check_conv(x[0], w, None, nd=1, algo=algo, padding="same", groups=2)  # (C, L)
    x2 = rng.standard_normal((3, 6, 7)).astype(np.float64)
    w2 = rng.standard_normal((4, 3, 3, 2)).astype(np.float64)
    out = check_conv(x2, w2, None, algo=algo, padding=1)                 # (C, H, W)
    assert out.shape == (4, 6, 8)


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_float16_upcast(algo):
    rng = _rng(2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    out = fastconv.conv2d(x, w, None, padding=1, backend="numba", algo=algo)
    assert out.dtype == np.float16
    spec = fastconv.conv_spec(x, w, None, 1, 1)
    ref = oracle.conv64(spec, x, w)
    mag = oracle.conv64(spec, np.abs(x), np.abs(w))
    assert (np.abs(out - ref) <= 2 * np.finfo(np.float16).eps * mag + 1e-3).all()


def test_conv_special_values_follow_the_definition():
    """Inf/NaN in the input propagate like in the oracle; an Inf weight never meets a padded zero, and
    im2col, whose column matrix holds the padded zeros, refuses a padded problem with one (saying why)."""
    x = np.ones((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((1, 1, 3, 3), np.float32)
    for algo in ALGOS:
        out = fastconv.conv2d(x, w, padding=1, backend="numba", algo=algo)
        assert np.isnan(out).all()  # every 3x3 window (padding 1) covers the centre
    x = np.ones((1, 1, 3, 3), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = np.inf
    ref = oracle.conv(fastconv.conv_spec(x, w, None, 1, 1), x, w)
    for algo in ("direct", "auto"):
        out = fastconv.conv2d(x, w, padding=1, backend="numba", algo=algo)
        np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
        assert not np.isnan(out).any()
    with pytest.raises(ValueError, match=r"numba:conv:im2col/packed: a weight is Inf or NaN and the problem is padded"):
        fastconv.conv2d(x, w, padding=1, backend="numba", algo="im2col")


def test_depthwise_inf_weight_never_meets_padding():
    """The phase-split depthwise kernel multiplies padded zeros in, so for a non-finite weight dispatch
    selects the clipped kernel (algo="direct" and "auto"); the result is the oracle's. im2col refuses."""
    x = np.ones((1, 2, 4, 4), np.float64)
    w = np.zeros((2, 1, 3, 3), np.float64)
    w[1, 0, 0, 0] = np.inf
    spec = fastconv.conv_spec(x, w, None, 1, 1, 1, 2)
    ref = oracle.conv(spec, x, w)
    for algo in ("direct", "auto"):
        out = fastconv.conv2d(x, w, padding=1, groups=2, backend="numba", algo=algo)
        np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="Inf or NaN"):
        fastconv.conv2d(x, w, padding=1, groups=2, backend="numba", algo="im2col")


def test_conv_inputs_not_modified_and_noncontiguous():
    rng = _rng(3)
    x = rng.standard_normal((2, 6, 9, 8)).astype(np.float32)[:, ::2, :, ::-1]   # non-contiguous view
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x_copy, w_copy = x.copy(), w.copy()
    for algo in ALGOS:
        check_conv(x, w, None, algo=algo, padding=1)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(w, w_copy)


def _im2col_peak(N, C, H, W, K):
    import tracemalloc
    rng = _rng(4)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    spec = fastconv.conv_spec(x, w, None, 1, 1)
    numba_cpu.conv_im2col(spec, x, w)  # compile outside the measurement
    tracemalloc.start()
    numba_cpu.conv_im2col(spec, x, w)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return spec, peak, N * K * H * W * 4, C * 9 * H * W * 4


def test_im2col_workspace_is_one_image():
    """Peak memory of im2col: the output plus one image's column matrix per GEMM worker (never the whole
    batch's)."""
    spec, peak, out_bytes, col_one_image = _im2col_peak(3, 32, 64, 64, 4)
    workers = numba_cpu.gemm_workers(spec)
    assert numba_cpu.images_per_tile(spec) == 1 and workers < spec.N
    assert peak <= out_bytes + workers * col_one_image + 64 * 1024, (peak, out_bytes, col_one_image)


def test_im2col_workspace_is_one_tile():
    """Small images share a tile of at most TILE_BYTES (plus that tile's staged output), one per GEMM
    worker, not the batch."""
    spec, peak, out_bytes, col_one_image = _im2col_peak(40, 8, 20, 20, 4)
    nb, workers = numba_cpu.images_per_tile(spec), numba_cpu.gemm_workers(spec)
    stage = spec.K * nb * spec.P * spec.Q * 4
    assert 1 < nb < spec.N and nb * col_one_image + stage <= numba_cpu.TILE_BYTES
    assert peak <= out_bytes + workers * (nb * col_one_image + stage) + 64 * 1024, (peak, out_bytes, nb)


# ---------------------------------------------------------------------------------------------------
# Random geometries (hypothesis)
# ---------------------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def conv_problems(draw):
    g = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    H = draw(st.integers(max(1, dh * (R - 1) + 1 - pads[0][0] - pads[0][1]), 12))
    W = draw(st.integers(max(1, dw * (S - 1) + 1 - pads[1][0] - pads[1][1]), 12))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return dict(N=draw(st.integers(1, 2)), C=g * cg, H=H, W=W, K=g * kg, R=R, S=S, groups=g, stride=stride,
                padding=pads, dilation=(dh, dw), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                dtype=draw(st.sampled_from(DTYPES)), algo=draw(st.sampled_from(ALGOS)))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(conv_problems())
def test_conv_random_geometries(p):
    rng = _rng(p["seed"])
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(p["dtype"])
    w = rng.standard_normal((p["K"], p["C"] // p["groups"], p["R"], p["S"])).astype(p["dtype"])
    b = rng.standard_normal(p["K"]).astype(p["dtype"]) if p["bias"] else None
    check_conv(x, w, b, algo=p["algo"], stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
               groups=p["groups"])


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def _pool_input(dtype, shape=(2, 3, 9, 10), seed=5):
    x = _rng(seed).standard_normal(shape).astype(dtype)
    x[0, 0, 2, 3] = np.nan                 # a lone NaN
    x[0, 1, 4:6, 4:6] = np.nan             # a NaN block (the last NaN's index wins)
    x[1, 0, 1, 1] = np.inf
    x[1, 1, :4, :4] = -np.inf              # windows of only -inf: index of the first in-bounds tap
    x[1, 2, 5, :] = 0.5                     # ties: the first in scan order
    x[1, 2, 6, :] = 0.5
    return x


def assert_pool_equal(got, ref):
    if isinstance(ref, tuple):
        np.testing.assert_array_equal(got[0], ref[0])   # NaN == NaN here
        assert got[1].dtype == np.int64
        np.testing.assert_array_equal(got[1], ref[1])
    else:
        np.testing.assert_array_equal(got, ref)


MAX_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    dict(kernel_size=3, stride=1, dilation=3, padding=1),
    # fewer outputs per row than window columns: the kernel loops per window instead of per tap
    dict(kernel_size=(2, 5), stride=(1, 4), padding=(1, 2), dilation=(1, 2), ceil_mode=True),
    dict(kernel_size=(9, 10)),                                                     # global
    # per-side pads (beyond torch; each side up to dilation * (kernel - 1)): the window starts at the before pad
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True),
    dict(kernel_size=(3, 4), stride=(1, 3), padding=((0, 1), (3, 1)), dilation=(2, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(MAX_CASES)))
@pytest.mark.parametrize("indices", [True, False], ids=["idx", "noidx"])
def test_max_pool2d_exact(case, dtype, indices):
    x = _pool_input(dtype)
    kw = dict(MAX_CASES[case], return_indices=indices)
    assert_pool_equal(fastconv.max_pool2d(x, backend="numba", **kw), fastconv.max_pool2d(x, backend="numpy", **kw))


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
                seed=draw(st.integers(0, 2**16)), dtype=draw(st.sampled_from(DTYPES)))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(pool_problems())
def test_pools_random_geometries(p):
    x = _rng(p["seed"]).standard_normal(p["shape"]).astype(p["dtype"])
    x[x > 1.5] = np.nan                                  # some NaN windows
    common = dict(kernel_size=p["kernel_size"], stride=p["stride"], padding=p["padding"], ceil_mode=p["ceil_mode"])
    mx = dict(common, dilation=p["dilation"], return_indices=True)
    assert_pool_equal(fastconv.max_pool2d(x, backend="numba", **mx), fastconv.max_pool2d(x, backend="numpy", **mx))
    av = dict(common, count_include_pad=p["count_include_pad"])
    assert_pool_equal(fastconv.avg_pool2d(x, backend="numba", **av), fastconv.avg_pool2d(x, backend="numpy", **av))


def test_max_pool_nan_rule_by_hand():
    """Window [1, NaN, 3, NaN]: the value is NaN and the index is the last NaN's (3); [-inf, -inf] with
    padding in front keeps the first in-bounds tap's index (0)."""
    x = np.array([[[1.0, np.nan, 3.0, np.nan]]], np.float32)
    out, idx = fastconv.max_pool1d(x, 4, return_indices=True, backend="numba")
    assert np.isnan(out[0, 0, 0]) and idx[0, 0, 0] == 3
    x = np.array([[[-np.inf, -np.inf, 2.0, 2.0]]], np.float64)
    out, idx = fastconv.max_pool1d(x, 2, stride=2, padding=1, return_indices=True, backend="numba")
    np.testing.assert_array_equal(out[0, 0], [-np.inf, 2.0, 2.0])
    np.testing.assert_array_equal(idx[0, 0], [0, 2, 3])


def test_max_pool1d_and_unbatched():
    x = _pool_input(np.float32, shape=(3, 4, 11, 11))[:, :, 5]
    for kw in (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True),
               dict(kernel_size=2, dilation=2)):
        assert_pool_equal(fastconv.max_pool1d(x, backend="numba", **kw), fastconv.max_pool1d(x, backend="numpy", **kw))
        assert_pool_equal(fastconv.max_pool1d(x[0], backend="numba", **kw),
                          fastconv.max_pool1d(x[0], backend="numpy", **kw))


AVG_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),                       # overhang not counted
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), divisor_override=5),
    dict(kernel_size=2, ceil_mode=True, divisor_override=-3),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    dict(kernel_size=(3, 7), stride=(2, 5), padding=(1, 3), ceil_mode=True),       # per-window loop
    dict(kernel_size=(3, 7), stride=(2, 5), padding=(1, 3), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(9, 10)),                                                     # global
    # per-side pads: the divisor's padded extent ends at the after pad ([-before, size + after))
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 4), stride=(2, 3), padding=((1, 2), (3, 0)), ceil_mode=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool2d_exact(case, dtype):
    x = _pool_input(dtype)
    x[np.isinf(x)] = 7.0
    kw = AVG_CASES[case]
    assert_pool_equal(fastconv.avg_pool2d(x, backend="numba", **kw), fastconv.avg_pool2d(x, backend="numpy", **kw))


def test_avg_pool_divisors_by_hand():
    """A 3x3 input of ones, kernel 2, stride 2, padding 1, ceil_mode: windows cover 1 input pixel
    (corner) or 2; with count_include_pad the divisor is the window clipped to the padded input (4)."""
    x = np.ones((1, 1, 3, 3), np.float32)
    got = fastconv.avg_pool2d(x, 2, 2, 1, ceil_mode=True, backend="numba")
    np.testing.assert_array_equal(got[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    got = fastconv.avg_pool2d(x, 2, 2, 1, ceil_mode=True, count_include_pad=False, backend="numba")
    np.testing.assert_array_equal(got[0, 0], np.ones((2, 2)))
    got = fastconv.avg_pool2d(x, 2, 2, 1, divisor_override=2, backend="numba")
    np.testing.assert_array_equal(got[0, 0], [[0.5, 1.0], [1.0, 2.0]])
    x1 = np.arange(5, dtype=np.float64).reshape(1, 1, 5)
    np.testing.assert_array_equal(fastconv.avg_pool1d(x1, 2, backend="numba")[0, 0], [0.5, 2.5])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("output_size", [(4, 3), 1, (7, None), (9, 10), (5, 7)])
def test_adaptive_pools(dtype, output_size):
    x = _pool_input(dtype)
    assert_pool_equal(fastconv.adaptive_max_pool2d(x, output_size, return_indices=True, backend="numba"),
                      fastconv.adaptive_max_pool2d(x, output_size, return_indices=True, backend="numpy"))
    assert_pool_equal(fastconv.adaptive_max_pool2d(x, output_size, backend="numba"),
                      fastconv.adaptive_max_pool2d(x, output_size, backend="numpy"))
    x[np.isinf(x)] = 7.0
    got = fastconv.adaptive_avg_pool2d(x, output_size, backend="numba")
    ref = fastconv.adaptive_avg_pool2d(x.astype(np.float64), output_size, backend="numpy")
    mag = fastconv.adaptive_avg_pool2d(np.abs(x).astype(np.float64), output_size, backend="numpy")
    taps = x.shape[2] * x.shape[3]  # a bound on any window's length
    bound = 2 * np.finfo(dtype).eps * taps * mag
    assert (np.isnan(got) == np.isnan(ref)).all()
    assert (np.isnan(ref) | (np.abs(got - ref) <= bound)).all()
    x1 = x[:, :, 0]
    assert_pool_equal(fastconv.adaptive_max_pool1d(x1, 4, return_indices=True, backend="numba"),
                      fastconv.adaptive_max_pool1d(x1, 4, return_indices=True, backend="numpy"))


def test_pool_float16_upcast():
    x = _pool_input(np.float16)
    out, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numba")
    ref, ridx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numpy")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(idx, ridx)


# ---------------------------------------------------------------------------------------------------
# Which implementation runs: names, reasons, the non-finite-weight rule
# ---------------------------------------------------------------------------------------------------
CONV_NAMES = ["numba:conv:direct/depthwise-flat", "numba:conv:direct/depthwise-phase", "numba:conv:direct/depthwise",
              "numba:conv:direct/planes",
              "numba:conv:direct/blocked",
              "numba:conv:im2col/pointwise", "numba:conv:im2col/packed", "numba:conv:winograd/f4x4",
              "numba:conv:winograd/f4x4-phases"]
POOL_NAMES = ["numba:max_pool:direct/2x2", "numba:max_pool:direct", "numba:avg_pool:direct/global",
              "numba:avg_pool:direct/2x2", "numba:avg_pool:direct",
              "numba:adaptive_max_pool:direct", "numba:adaptive_avg_pool:direct/global",
              "numba:adaptive_avg_pool:direct"]
ZERO_FILLING = {"numba:conv:direct/depthwise-flat", "numba:conv:direct/depthwise-phase", "numba:conv:direct/planes",
                "numba:conv:im2col/packed", "numba:conv:winograd/f4x4-phases"}


def test_impl_names_in_priority_order():
    """The forward implementations of 1-D and 2-D problems (the gradients' are held by
    tests/test_numba_grad.py, the 3-D ones by tests/test_numba_3d.py)."""
    impls = [i for i in numba_cpu.implementations() if (i.op == "conv" or i.op.endswith("_pool"))
             and i.spatial_dims == (1, 2)]
    assert [i.name for i in impls] == CONV_NAMES + POOL_NAMES
    assert {i.name for i in impls if i.zero_fills_padding} == ZERO_FILLING


def _spec(xshape, wshape, padding=0, groups=1, dtype=np.float32):
    return fastconv.conv_spec(np.zeros(xshape, dtype), np.zeros(wshape, dtype), None, 1, padding, 1, groups)


def _reasons(spec):
    """Each candidate's reasons, among those taking the spec's dimensions (the 3-D Impls refuse any 2-D spec)."""
    return {i.name: _dispatch.reasons(i, spec) for i in _dispatch.candidates(spec, "numba")
            if spec.spatial_dims in i.spatial_dims}


def test_reasons_say_why_a_kernel_does_not_take_a_spec():
    general = _reasons(_spec((2, 4, 9, 9), (6, 2, 3, 3), padding=1, groups=2))
    for name in ("numba:conv:direct/depthwise-flat", "numba:conv:direct/depthwise-phase",
                 "numba:conv:direct/depthwise"):
        assert general[name][0] == "not depthwise: 2 input channels per group (this kernel reads one)"
    assert general["numba:conv:direct/blocked"] == [] and general["numba:conv:im2col/packed"] == []
    assert general["numba:conv:direct/planes"] == []
    assert general["numba:conv:im2col/pointwise"] == [
        "not pointwise (1x1, stride 1, no padding): the input is not the column matrix"]

    assert general["numba:conv:winograd/f4x4-phases"][-1] == "not dilated: no phases to split (winograd/f4x4 runs it)"
    dilated = _reasons(fastconv.conv_spec(np.zeros((2, 4, 9, 9), np.float32), np.zeros((6, 4, 3, 3), np.float32),
                                          None, 1, 2, 2))
    assert dilated["numba:conv:winograd/f4x4-phases"] == []
    assert dilated["numba:conv:winograd/f4x4"] == [
        "dilation (2, 2): Winograd tiles need dilation 1 (winograd/f4x4-phases runs a dilated conv's phases)"]

    depthwise = _reasons(_spec((2, 4, 9, 9), (8, 1, 3, 3), padding=1, groups=4))   # channel multiplier 2
    assert {n for n, r in depthwise.items() if r} == {"numba:conv:im2col/pointwise", "numba:conv:winograd/f4x4",
                                                     "numba:conv:winograd/f4x4-phases",
                                                     "numba:conv:direct/depthwise-flat"}
    assert depthwise["numba:conv:direct/depthwise-flat"] == [
        "stride (1, 1): this kernel takes a column stride of 2 and a row stride of 1 or 2"]

    big = _spec((2, 64, 128, 128), (16, 64, 1, 1))          # one image's column matrix fills a tile
    assert numba_cpu.images_per_tile(big) == 1
    assert {n for n, r in _reasons(big).items() if r} == {"numba:conv:direct/depthwise-flat",
                                                         "numba:conv:direct/depthwise-phase",
                                                         "numba:conv:direct/depthwise", "numba:conv:im2col/packed",
                                                         "numba:conv:winograd/f4x4",
                                                         "numba:conv:winograd/f4x4-phases"}
    assert _reasons(big)["numba:conv:im2col/packed"] == [
        "pointwise with one image per tile: the input is its own column matrix (im2col/pointwise runs it "
        "without a copy)"]
    small = _spec((8, 4, 5, 5), (6, 4, 1, 1))                # several images share a tile: packed side by side
    assert numba_cpu.images_per_tile(small) == 8
    assert _reasons(small)["numba:conv:im2col/pointwise"] == [
        "8 images fit one tile: im2col/packed puts them side by side for a wider GEMM"]
    assert _reasons(small)["numba:conv:im2col/packed"] == []

    half = _spec((2, 4, 9, 9), (6, 4, 3, 3), dtype=np.float16)     # float16 runs in float32: no reason
    assert all(r == [] for n, r in _reasons(half).items()
               if "depthwise" not in n and "pointwise" not in n and "phases" not in n)
    assert {i.compute_spec(half).dtype for i in numba_cpu.implementations() if i.op == "conv"} == {"float32"}


def test_select_names_what_runs():
    """Finite weights, small problems (chosen by rule, not measured): what dispatch returns for each algo."""
    cases = [  # (spec, {algo: name})
        (_spec((2, 4, 9, 9), (6, 2, 3, 3), padding=1, groups=2),
         {"direct": "numba:conv:direct/planes", "im2col": "numba:conv:im2col/packed",
          "auto": "numba:conv:direct/planes"}),
        (_spec((2, 4, 9, 9), (8, 1, 3, 3), padding=1, groups=4),
         {"direct": "numba:conv:direct/depthwise-phase", "im2col": "numba:conv:im2col/packed",
          "auto": "numba:conv:direct/depthwise-phase"}),
        (fastconv.conv_spec(np.zeros((2, 4, 10, 10), np.float32), np.zeros((4, 1, 3, 3), np.float32), None, 2, 1,
                            1, 4),
         {"direct": "numba:conv:direct/depthwise-flat", "auto": "numba:conv:direct/depthwise-flat"}),
        (_spec((1, 64, 128, 128), (2, 64, 1, 1)), {"im2col": "numba:conv:im2col/pointwise"}),
    ]
    for spec, want in cases:
        for algo, name in want.items():
            if algo != "im2col":
                assert spec.flops() < numba_cpu.MEASURE_MIN_FLOPS
            w = np.ones(spec.weight_shape, spec.dtype)
            assert _dispatch.select(spec, "numba", algo, weight=w).name == name, (spec, algo)


def _nonfinite_case(value, *, xshape, wshape, groups, seed):
    rng = _rng(seed)
    x = rng.standard_normal(xshape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    w[1, 0, 0, 0] = value
    spec = fastconv.conv_spec(x, w, b, 1, 1, 1, groups)
    ref = fastconv.conv2d(x, w, b, padding=1, groups=groups, backend="numpy")
    assert np.isfinite(ref[0, 1, 0, 0]) and not np.isfinite(ref[0, 1, 1, 1])   # the padding rule bites here
    return spec, x, w, b, ref


def _check_against_oracle(impl, spec, x, w, b, ref):
    from fastconv.testing import assert_conv_close
    assert_conv_close(impl.run(spec, x, w, b), ref, spec, x, np.nan_to_num(w, posinf=0, neginf=0), b)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_nonfinite_weight_in_padded_depthwise_selects_the_clipped_kernel(value, monkeypatch):
    spec, x, w, b, ref = _nonfinite_case(value, xshape=(2, 3, 6, 7), wshape=(6, 1, 3, 3), groups=3, seed=12)
    for algo in ("direct", "auto"):
        impl = _dispatch.select(spec, "numba", algo, weight=w)
        assert impl.name == "numba:conv:direct/depthwise", algo
        _check_against_oracle(impl, spec, x, w, b, ref)
    # the same shape with finite weights runs the phase-split kernel, and so does an unpadded problem
    phase = "numba:conv:direct/depthwise-phase"
    assert _dispatch.select(spec, "numba", "direct", weight=np.ones_like(w)).name == phase
    unpadded = fastconv.conv_spec(x, w, b, 1, 0, 1, 3)
    assert _dispatch.select(unpadded, "numba", "direct", weight=w).name == phase
    # measured (every candidate timed): only the exact kernels compete
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)
    impl = _dispatch.select(spec, "numba", "auto", weight=w)
    assert impl.name in ("numba:conv:direct/depthwise", "numba:conv:direct/blocked")
    _check_against_oracle(impl, spec, x, w, b, ref)


@pytest.mark.parametrize("value", [np.inf, np.nan], ids=["inf", "nan"])
def test_nonfinite_weight_in_padded_conv_does_not_select_im2col(value, monkeypatch):
    spec, x, w, b, ref = _nonfinite_case(value, xshape=(2, 4, 6, 7), wshape=(5, 4, 3, 3), groups=1, seed=13)
    assert _dispatch.select(spec, "numba", "im2col", weight=np.ones_like(w)).name == "numba:conv:im2col/packed"
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)        # auto would measure im2col against direct
    impl = _dispatch.select(spec, "numba", "auto", weight=w)
    assert impl.name == "numba:conv:direct/blocked"
    _check_against_oracle(impl, spec, x, w, b, ref)
    with pytest.raises(ValueError) as err:
        _dispatch.select(spec, "numba", "im2col", weight=w)
    assert ("numba:conv:im2col/packed: a weight is Inf or NaN and the problem is padded" in str(err.value)
            and "numba:conv:im2col/pointwise: not pointwise" in str(err.value))


# ---------------------------------------------------------------------------------------------------
# Several candidates: measured once per spec (fastconv._tune, memory only)
# ---------------------------------------------------------------------------------------------------
TUNER = numba_cpu.TUNER


def _big_spec(dtype=np.float32, K=16):
    x = np.zeros((1, 32, 64, 64), dtype)
    w = np.zeros((K, 32, 3, 3), dtype)
    spec = fastconv.conv_spec(x, w, None, 1, 1)
    assert spec.flops() >= numba_cpu.MEASURE_MIN_FLOPS
    return spec


def _choice(spec, names):
    return TUNER.cache().entries()[TUNER.key(numba_cpu.tune_context(), spec, names)]["choice"]


def test_auto_measures_once_per_spec_and_caches():
    TUNER.reset()
    spec = _big_spec()
    before = TUNER.measure_count
    first = _dispatch.select(spec, "numba", "auto")
    assert TUNER.measure_count == before + 1
    for _ in range(3):
        assert _dispatch.select(spec, "numba", "auto") is first
    assert TUNER.measure_count == before + 1
    assert numba_cpu.tune_context() == f"threads={numba.get_num_threads()}"
    assert _choice(spec, ["numba:conv:direct/planes", "numba:conv:direct/blocked", "numba:conv:im2col/packed",
                          "numba:conv:winograd/f4x4"]) == first.name
    _dispatch.select(_big_spec(np.float64), "numba", "auto")   # another key (dtype): measured again
    assert TUNER.measure_count == before + 2
    assert TUNER.persist is False and TUNER.cache().path is None   # memory only: never a file


def test_measured_times_are_the_ones_behind_the_choice():
    """``_dispatch.measured_times`` (what a benchmark row shows as ``tuned_s``): None before a measurement
    and for a choice made by rule; after one, a time for every candidate, the fastest being the choice."""
    TUNER.reset()
    spec = _big_spec(K=20)
    assert _dispatch.measured_times(spec, "numba") is None
    chosen = _dispatch.select(spec, "numba", "auto")
    times = _dispatch.measured_times(spec, "numba")
    names = [i.name for i in _dispatch.plan(spec, "numba", "auto").choosable]
    assert len(names) > 1 and sorted(times) == sorted(names)
    assert min(times, key=times.get) == chosen.name and all(t > 0 for t in times.values())
    times.clear()                                   # a copy: the tuner's memory is untouched
    assert _dispatch.measured_times(spec, "numba")
    small = fastconv.conv_spec(np.zeros((1, 2, 5, 5), np.float32), np.zeros((2, 2, 3, 3), np.float32))
    _dispatch.select(small, "numba", "auto")
    assert _dispatch.measured_times(small, "numba") is None


def test_auto_is_thread_safe():
    TUNER.reset()
    spec = _big_spec(K=24)
    before = TUNER.measure_count
    picks, errors = [], []

    def worker():
        try:
            picks.append(_dispatch.select(spec, "numba", "auto"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert TUNER.measure_count == before + 1
    assert len({p.name for p in picks}) == 1


def test_auto_small_problem_uses_rule_without_measuring(monkeypatch):
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w)
    assert spec.flops() < numba_cpu.MEASURE_MIN_FLOPS
    before = TUNER.measure_count
    assert _dispatch.select(spec, "numba", "auto").algo == "direct"
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    TUNER.reset()
    assert _dispatch.select(_big_spec(K=32), "numba", "auto").algo == "direct"
    assert TUNER.measure_count == before


def test_auto_result_matches_oracle():
    rng = _rng(6)
    x = rng.standard_normal((1, 16, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    check_conv(x, w, None, algo="auto", padding=1)


# ---------------------------------------------------------------------------------------------------
# Geometry records
# ---------------------------------------------------------------------------------------------------
#: a (weight shape, padding, groups) each conv kernel takes (im2col/pointwise runs no Numba kernel)
_KERNEL_CONVS = {"depthwise-phase": ((4, 1, 3, 3), 1, 4), "depthwise": ((4, 1, 3, 3), 1, 4),
                 "depthwise-flat": ((4, 1, 3, 3), 1, 4, 2),
                 "blocked": ((4, 4, 3, 3), 1, 1), "packed": ((4, 4, 3, 3), 1, 1), "planes": ((4, 4, 3, 3), 1, 1)}


def _exercise_every_kernel():
    """One call of each kernel, so every kernel has a compiled signature to inspect."""
    rng = _rng(14)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    for impl in numba_cpu.implementations():
        if impl.op == "conv" and impl.variant in _KERNEL_CONVS:
            wshape, pad, groups, stride = (_KERNEL_CONVS[impl.variant] + (1,))[:4]
            w = rng.standard_normal(wshape).astype(np.float32)
            xs = x if stride == 1 else x[:, :, :8, :8].copy()       # (depthwise-flat: an even width)
            spec = fastconv.conv_spec(xs, w, None, stride, pad, 1, groups)
            assert _dispatch.reasons(impl, spec) == []
            impl.run(spec, xs, w, None)
    # im2col_pack runs inside im2col_pack_tile, which, loaded from Numba's disk cache, compiles no
    # signature of it: call it (and im2col_pack_rows) once here
    k = numba_cpu.kernels()
    spec = fastconv.conv_spec(x, rng.standard_normal((4, 4, 3, 3)).astype(np.float32), None, 1, 1)
    k.im2col_pack(x, 0, 0, k.conv_geometry(spec), np.empty((4 * 9, spec.P * spec.Q), np.float32), 0)
    k.im2col_pack_rows(x, 0, 0, k.conv_geometry(spec), np.empty((4 * 9, spec.P * spec.Q), np.float32), 0, 0,
                       spec.P)     # (the forward runs it for bands of an image too big for one workspace)
    # conv2d_planes is the planes kernel's static launch, which a problem small enough to run on one thread
    # never takes (impl.run above ran its chunks on the calling thread): launch it with two chunks
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    spec = fastconv.conv_spec(x, w, None, 1, 1)
    _, runs, buf, acc = numba_cpu.planes_plan(spec)
    k.conv2d_planes(x, w, np.zeros(4, np.float32), np.empty(spec.output_layout, np.float32), k.conv_geometry(spec),
                    runs, np.zeros((2, buf), np.float32), np.empty((2, k.KB4, acc // k.KB4), np.float32))
    fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numba")
    fastconv.avg_pool2d(x, 3, 2, 1, backend="numba")
    fastconv.avg_pool2d(x, (3, 7), (2, 5), (1, 3), ceil_mode=True, backend="numba")   # per-window path
    fastconv.adaptive_avg_pool2d(x, 1, backend="numba")                              # global_avg_pool2d
    tiny = x[:1].copy()
    for _ in range(2):     # a repeat call of a problem too small to split: the serial twins (not 2x2 windows:
        fastconv.max_pool2d(tiny, 3, 2, 1, backend="numba")      # those run max_pool2x2 / avg_pool2x2)
        fastconv.avg_pool2d(tiny, 3, 2, 1, backend="numba")
        fastconv.conv2d(tiny, np.ones((2, 4, 3, 3), np.float32), backend="numba")
    fastconv.adaptive_max_pool2d(x, (4, 3), return_indices=True, backend="numba")


def _geometry_arg(dispatcher):
    import inspect
    names = list(inspect.signature(dispatcher.py_func).parameters)
    return names.index("win" if "win" in names else "geo")


def test_every_kernel_takes_its_geometry_record():
    """Each kernel's geometry argument compiled as the record type (never an anonymous tuple), and an
    anonymous tuple of the same values does not type: a kernel reads its geometry by name only."""
    k = numba_cpu.kernels()
    _exercise_every_kernel()
    for name, record in k.KERNELS.items():
        kernel = getattr(k, name)
        assert kernel.signatures, f"{name} never ran"
        pos = _geometry_arg(kernel)
        for sig in kernel.signatures:
            assert isinstance(sig[pos], numba.types.BaseNamedTuple) and sig[pos].instance_class is record, \
                (name, sig[pos])
        _assert_needs_the_record(kernel, kernel.signatures[0], pos, len(record._fields))
    # launched by avg_pool2d with its PoolGeometry (a call inside a cached kernel leaves no signature here)
    f32, i64, f64 = numba.float32[:, :, :, ::1], numba.int64[::1], numba.float64[::1]
    geo = k.pool_geometry(fastconv.pool_spec("avg", np.zeros((1, 1, 9, 9), np.float32), 3))
    sig = (f32, f32, numba.typeof(geo), i64, i64, i64, i64, f64, f64, numba.int64)
    _assert_needs_the_record(k._avg_pool_per_window, sig, 2, len(geo), sig_untested=True)


def _assert_needs_the_record(kernel, sig, pos, nfields, sig_untested=False):
    """``kernel`` does not type with an anonymous tuple of the record's length in place of its geometry
    record at ``pos`` of ``sig`` (compiled for ``sig`` first when no run proved it; fresh copies, never
    written to the disk cache)."""
    options = {o: v for o, v in kernel.targetoptions.items() if o not in ("cache", "nopython")}
    if sig_untested:
        numba.njit(**options)(kernel.py_func).compile(tuple(sig))
    anonymous = list(sig)
    anonymous[pos] = numba.types.UniTuple(sig[pos].dtype, nfields)
    with pytest.raises(numba.core.errors.TypingError):
        numba.njit(**options)(kernel.py_func).compile(tuple(anonymous))


def test_geometry_records_are_the_spec_by_name():
    """Every field of a record is the spec's field of that name (all values distinct here, so a swapped
    field shows); the conv record's extent is spec.input_extent_hw(); the adaptive windows are the spec's."""
    k = numba_cpu.kernels()
    spec = fastconv.conv_spec(np.zeros((1, 9, 60, 70)), np.zeros((9, 1, 3, 2)), None, (4, 5), ((1, 0), (6, 0)),
                              (7, 8), 9)
    assert dataclasses.is_dataclass(spec) and (spec.P, spec.Q) == (12, 14)
    geo = k.conv_geometry(spec)
    assert geo._fields == ("R", "S", "stride_h", "stride_w", "pad_top", "pad_left", "dil_h", "dil_w", "groups",
                           "P", "Q", "extent_h", "extent_w")
    # by hand: extent = (P-1)*stride + (R-1)*dilation + 1 per axis
    assert geo == (3, 2, 4, 5, 1, 6, 7, 8, 9, 12, 14, 11 * 4 + 2 * 7 + 1, 13 * 5 + 1 * 8 + 1)
    assert (geo.extent_h, geo.extent_w) == spec.input_extent_hw()
    pspec = fastconv.pool_spec("max", np.zeros((1, 1, 40, 40)), (5, 4), (3, 6), ((2, 4), (1, 3)), (7, 8))
    pgeo = k.pool_geometry(pspec)
    assert pgeo._fields == ("R", "S", "stride_h", "stride_w", "pad_top", "pad_bottom", "pad_left", "pad_right",
                            "dil_h", "dil_w")
    assert pgeo == (5, 4, 3, 6, 2, 4, 1, 3, 7, 8)
    assert geo._fields[:4] == pgeo._fields[:4]           # the shared fields come first, in the same order
    aspec = fastconv.pool_spec("adaptive_avg", np.zeros((1, 1, 10, 7)), output_size_=(4, 3))
    win = k.adaptive_windows(aspec)
    assert win.row_lo.tolist() == [0, 2, 5, 7] and win.row_hi.tolist() == [3, 5, 8, 10]   # by hand
    assert win.col_lo.tolist() == [0, 2, 4] and win.col_hi.tolist() == [3, 5, 7]
    assert all(a.dtype == np.int64 and a.flags.c_contiguous for a in win)


def test_swapped_geometry_fields_change_the_result():
    """The kernels read what the record says: the same call with stride_h/stride_w (or the pads)
    exchanged gives another result, so a builder that swapped two fields would fail the oracle tests."""
    k = numba_cpu.kernels()
    rng = _rng(15)
    x = rng.standard_normal((1, 2, 11, 11))
    w = rng.standard_normal((2, 2, 3, 3))
    spec = fastconv.conv_spec(x, w, None, (2, 2), ((1, 1), (0, 0)), 1)
    geo = k.conv_geometry(spec)
    b = np.zeros(2)
    out = np.empty(spec.output_layout)
    k.conv2d_direct(x, w, b, out, geo)
    np.testing.assert_allclose(out, oracle.conv64(spec, x, w), rtol=1e-12, atol=1e-12)
    swapped = np.empty_like(out)
    k.conv2d_direct(x, w, b, swapped, geo._replace(pad_top=geo.pad_left, pad_left=geo.pad_top))
    assert not np.allclose(swapped, out)


# ---------------------------------------------------------------------------------------------------
# Threads, compilation, imports, the disk cache
# ---------------------------------------------------------------------------------------------------
PARALLEL_PROBES = {
    "conv_direct": "fastconv.conv2d(x, w, padding=1, backend='numba', algo='direct')",
    "conv_depthwise": "fastconv.conv2d(x, w[:, :1], padding=1, groups=4, backend='numba', algo='direct')",
    "max_pool": "fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend='numba')",
    "avg_pool": "fastconv.avg_pool2d(x, 3, 2, 1, backend='numba')",
}


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fastconv.__file__)),
                                                        os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize("probe", list(PARALLEL_PROBES))
def test_parallel_path_really_runs(probe):
    """In a fresh process, one op alone: Numba's threading layer gets initialised only when a prange loop
    was launched as a parallel region (a kernel without parallel=True would leave it uninitialised)."""
    code = ("import numpy as np, numba, fastconv\n"
            "x = np.ones((2, 4, 9, 9), np.float32); w = np.ones((4, 4, 3, 3), np.float32)\n"
            f"{PARALLEL_PROBES[probe]}\n"
            "print(numba.threading_layer(), numba.get_num_threads())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    layer, threads = res.stdout.split()[-2:]
    assert layer in ("tbb", "omp", "workqueue") and int(threads) >= 1


def test_prange_loops_become_parallel_regions():
    """Compile a fresh copy (not from the disk cache) of one kernel and read Numba's parfor diagnostics."""
    k = numba_cpu.kernels()
    assert all(getattr(k, n).targetoptions.get("parallel") is (n not in ("im2col_pack", "im2col_pack_rows")
                                                               and n not in k.CHUNKED
                                                               and not n.endswith("_serial"))
               for n in k.KERNELS)
    for n in k.KERNELS:       # each serial twin is its kernel's Python function, under a name of its own
        if n.endswith("_serial"):
            twin, kernel = getattr(k, n), getattr(k, n[:-len("_serial")])
            assert twin.py_func.__code__ is kernel.py_func.__code__ and twin.py_func.__qualname__ == n
    kernel = k.max_pool2d
    fresh = numba.njit(parallel=True, error_model="numpy")(kernel.py_func)
    f32, i64 = numba.float32[:, :, :, ::1], numba.int64[:, :, :, ::1]
    geo = k.pool_geometry(fastconv.pool_spec("max", np.zeros((1, 1, 9, 9), np.float32), 3, 2, 1))
    fresh.compile((f32, f32, i64, numba.boolean, numba.typeof(geo)))
    diag = fresh.get_metadata(fresh.signatures[0])["parfor_diagnostics"]
    assert diag.count_parfors() >= 1


def test_respects_numba_thread_count():
    rng = _rng(7)
    x = rng.standard_normal((4, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fastconv.conv2d(x, w, padding=1, backend="numba", algo="direct")
        pool1 = fastconv.max_pool2d(x, 3, 2, 1, backend="numba")
    finally:
        numba.set_num_threads(old)
    assert numba.get_num_threads() == old   # the backend never changes it
    np.testing.assert_array_equal(one, fastconv.conv2d(x, w, padding=1, backend="numba", algo="direct"))
    np.testing.assert_array_equal(pool1, fastconv.max_pool2d(x, 3, 2, 1, backend="numba"))


def test_import_fastconv_does_not_import_numba():
    code = "import sys, fastconv; fastconv.conv_output_size(5, 3); assert 'numba' not in sys.modules, 'numba'"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_registered_and_available():
    assert fastconv.backends()["numba"]["available"]
    assert _dispatch.default_backend("numpy") == "numba"
    algos = {i.algo for i in numba_cpu.implementations() if i.op == "conv"}
    assert algos == {"direct", "im2col", "winograd"}
    assert all(i.dtypes == ("float32", "float64") for i in numba_cpu.implementations())


def test_every_kernel_module_tolerates_a_corrupt_cache():
    """Every dispatcher with a disk cache in every kernel module (kernels and inline helpers) reads its
    cache through the wrappers that turn an unreadable file into a miss (exercised on a real corrupted
    cache by test_determinism.py)."""
    import importlib
    from fastconv._backends import _numba_common
    k = numba_cpu.kernels()
    seen = 0
    for name in k.MODULES:
        mod = importlib.import_module(f"fastconv._backends.{name}")
        for d in _numba_common.dispatchers(vars(mod)):
            assert _numba_common.is_tolerant(d), f"{name}.{d.py_func.__name__}"
            seen += 1
    assert all(_numba_common.is_tolerant(getattr(k, n)) for n in k.KERNELS) and seen > len(k.KERNELS)


_CACHE_CHILD = """
import numpy as np, fastconv
from fastconv._backends import numba_cpu
x = np.ones((2, 4, 9, 9), np.float32); w = np.ones((4, 4, 3, 3), np.float32)
fastconv.conv2d(x, w, padding=1, backend="numba", algo="direct")   # conv2d_planes_chunks (one thread), by rule
fastconv.max_pool2d(x, 3, 2, 1, backend="numba")
fastconv.adaptive_avg_pool2d(x, 3, backend="numba")
k = numba_cpu.kernels()
print(*(sum(getattr(k, n).stats.cache_hits.values())
        for n in ("conv2d_planes_chunks", "max_pool2d", "adaptive_pool2d")))
"""


def test_record_typed_kernels_load_from_the_disk_cache_in_a_new_process():
    """A kernel whose argument is a geometry record is cached like any other: the second of two fresh
    processes loads it from Numba's disk cache (the first may compile it and write the cache)."""
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", _CACHE_CHILD], capture_output=True, text=True, env=_env())
        assert res.returncode == 0, res.stderr[-2000:]
    assert all(int(h) >= 1 for h in res.stdout.split()), res.stdout


def test_row_copies_every_short_length_and_stride():
    """``ucopy_rows``' fixed chunks (overlapping last chunk, 4-chunks, single values) and ``ucopy`` against
    NumPy slicing, for every length up to past the chunked range (strides 1-3 for ``ucopy``), at offsets
    that are not multiples of 8, between two arrays and within one: each call writes exactly
    dst[d0 : d0 + n]."""
    from numba import njit
    from fastconv._backends._numba_common import ucopy, ucopy_rows

    @njit
    def copy(dst, d0, src, s0, n, stride, rows):
        if rows:
            ucopy_rows(dst, d0, src, s0, n)
        else:
            ucopy(dst, d0, src, s0, n, stride)

    src = np.arange(1.0, 200.0)
    for rows, stride in ((True, 1), (False, 1), (False, 2), (False, 3)):
        for n in range(0, 41):
            for d0, s0 in ((0, 0), (3, 5), (13, 1)):
                dst = np.zeros(60)
                copy(dst, d0, src, s0, n, stride, rows)
                want = np.zeros(60)
                want[d0:d0 + n] = src[s0:s0 + n * stride:stride]
                assert np.array_equal(dst, want), (rows, stride, n, d0, s0)
                one = np.arange(1.0, 301.0)          # disjoint ranges of one array
                copy(one, 300 - n, one, 0, n, stride, rows)
                want = np.arange(1.0, 301.0)
                want[300 - n:300] = np.arange(1.0, 301.0)[0:n * stride:stride]
                assert np.array_equal(one, want), (rows, stride, n, "one array")


def test_phase_copy_of_every_small_plane_stride_and_pad():
    """``_copy_planes`` (the phase layout of the planes, depthwise phase and depthwise weight-gradient
    kernels) against the layout built by hand from its definition, buf[(a*sw + b)*HW + i*Wq + j] =
    plane[i*sh + a - pad_top, j*sw + b - pad_left] inside the plane and 0 elsewhere: strides 1-3 (one column
    phase and several), every width 1-13, left pads 0-3 and right pads 0-1."""
    from numba import njit
    from fastconv._backends._numba_common import conv_geometry, tap_ranges
    from fastconv._backends._numba_planes import _copy_planes

    @njit
    def copy(xf, H, W, buf, geo, Hq, Wq):
        sw = geo.stride_w
        lo, hi = tap_ranges(sw, 1, geo.pad_left, sw, W, Wq)
        _copy_planes(xf, 0, H, W, buf, 0, Hq * Wq, geo, Hq, Wq, lo, hi)

    rng = _rng(11)
    for sh, sw in ((1, 1), (1, 2), (2, 2), (2, 3), (3, 2), (1, 3)):
        for W in range(1, 14):
            for pl, pr in ((0, 0), (1, 0), (1, 1), (2, 1), (3, 0), (0, 1)):
                H, pt, pb = 5, 1, 0
                if W + pl + pr < 3:
                    continue
                x = rng.standard_normal((1, 1, H, W))
                spec = fastconv.conv_spec(x, np.ones((1, 1, 3, 3)), None, (sh, sw), ((pt, pb), (pl, pr)))
                geo = conv_geometry(spec)
                Hq, Wq = -(-geo.extent_h // sh), -(-geo.extent_w // sw)
                buf = np.zeros(sh * sw * Hq * Wq)
                copy(x.reshape(-1), H, W, buf, geo, Hq, Wq)
                want = np.zeros((sh, sw, Hq, Wq))
                for a in range(sh):
                    for b in range(sw):
                        for i in range(Hq):
                            for j in range(Wq):
                                h, w_ = i * sh + a - pt, j * sw + b - pl
                                if 0 <= h < H and 0 <= w_ < W:
                                    want[a, b, i, j] = x[0, 0, h, w_]
                assert np.array_equal(buf.reshape(sh, sw, Hq, Wq), want), (sh, sw, W, pl, pr)


def test_cached_kernels_go_when_a_kernel_source_they_import_changes(tmp_path):
    """Numba checks a cached kernel against its own file only; ``drop_stale_caches`` deletes the cached
    kernels of every module whose source, or a kernel source it imports (an inlined helper's file), differs
    from the digests kept beside the cache, and leaves everything else alone."""
    from fastconv._backends._numba_common import SOURCES_STAMP, drop_stale_caches
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    cache.mkdir()
    (src / "_numba_common.py").write_text("def h(): return 0\n")
    (src / "_numba_a.py").write_text("from ._numba_common import h\ndef f(): return 1\n")
    (src / "_numba_b.py").write_text("from ._numba_a import f\ndef g(): return 2\n")
    (src / "plain.py").write_text("x = 1\n")
    a = ["_numba_a.f-1.py311.nbi", "_numba_a.f-1.py311.1.nbc"]
    b = ["_numba_b.g-1.py311.nbi"]
    other = ["plain.k-1.py311.nbi", "unrelated.txt"]

    def fill():
        for name in a + b + other:
            (cache / name).write_text("x")

    def left():
        return {p.name for p in cache.iterdir()}

    fill()
    assert drop_stale_caches(str(src), str(cache)) == ["_numba_a", "_numba_b", "_numba_common"]   # no digests
    assert left() == set(other) | {SOURCES_STAMP}
    fill()
    assert drop_stale_caches(str(src), str(cache)) == []               # same sources: kept
    (src / "plain.py").write_text("x = 2\n")                          # not a kernel source: kept
    assert drop_stale_caches(str(src), str(cache)) == [] and left() >= set(a + b)
    (src / "_numba_b.py").write_text("from ._numba_a import f\ndef g(): return 3\n")   # only b's go
    assert drop_stale_caches(str(src), str(cache)) == ["_numba_b"]
    assert left() == set(a + other) | {SOURCES_STAMP}
    fill()
    (src / "_numba_common.py").write_text("def h(): return 9\n")      # imported by a, and through a by b
    assert drop_stale_caches(str(src), str(cache)) == ["_numba_a", "_numba_b", "_numba_common"]
    assert left() == set(other) | {SOURCES_STAMP}
    assert drop_stale_caches(str(src), str(cache / "missing")) == []
