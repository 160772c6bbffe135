"""fastconv.dask's ops against the single-array op on the whole array (the oracle, backend="numpy"): random
shapes, arguments and chunkings on every axis (hypothesis, derandomized, few examples), then the cases by
hand: channel chunks, empty batch chunks, the threaded scheduler, the size of the graph, the errors (the
single-array op's own, before any graph), the ChunkWarning and where it points, inputs left alone."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array", reason="fastconv.dask needs the [dask] extra (dask[array])")

import fastconv as fc  # noqa: E402
import fastconv.dask as fd  # noqa: E402

from .conftest import (NP, SETTINGS, assert_bitwise, assert_close, assert_conv_equal, axis_blocks,  # noqa: E402
                       chunking, compute, expected_tasks, graph_tasks)

pytestmark = pytest.mark.filterwarnings("ignore::fastconv.dask.ChunkWarning")

SIZES = {1: (4, 13), 2: (3, 9), 3: (3, 6)}


def same_result_or_same_error(single, dask_op, *, exact=False, check=None):
    """Call the single-array op; if it refuses, the dask op must refuse with the same type and message, at the
    call (before any graph). Otherwise compute the dask op (threaded scheduler) and compare
    (``check(out, ref)``)."""
    try:
        ref = single()
    except (TypeError, ValueError) as e:
        with pytest.raises(type(e)) as got:
            dask_op()
        assert str(got.value) == str(e)
        return
    # the random cases run on Dask's threaded scheduler: blocks computed concurrently, as users run them
    out = compute(*dask_op(), scheduler="threads") if isinstance(ref, tuple) else compute(dask_op(),
                                                                                          scheduler="threads")
    if exact:
        assert_bitwise(out, ref)
    else:
        check(out, ref)


@st.composite
def image(draw, nd, channels=None, dtypes=("float32",)):
    """(NumPy input, its chunks, batched?): batched or not, random chunks on every axis."""
    lo, hi = SIZES[nd]
    spatial = tuple(draw(st.integers(lo, hi)) for _ in range(nd))
    batched = draw(st.booleans())
    c = draw(st.integers(1, 3)) if channels is None else channels
    shape = ((draw(st.integers(1, 3)),) if batched else ()) + (c,) + spatial
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape).astype(dtype)
    if draw(st.booleans()):      # ties, for the max pools' first-index rule
        x = np.round(x).astype(dtype)
    chunks = tuple(draw(chunking(n)) for n in shape)
    return x, chunks, batched


def window_args(draw, nd, per_side_most):
    k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    s = draw(st.sampled_from([None, 1, 2, 3, tuple(draw(st.integers(1, 3)) for _ in range(nd))]))
    form = draw(st.sampled_from(["int", "tuple", "pairs"]))
    if form == "int":
        pad = draw(st.integers(0, min(kk // 2 for kk in k)))
    elif form == "tuple":
        pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
    else:
        pad = tuple((draw(st.integers(0, per_side_most(kk, dd))), draw(st.integers(0, per_side_most(kk, dd))))
                    for kk, dd in zip(k, d))
    return k, s, pad, d


# ---------------------------------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_conv_equals_the_single_array_conv(data):
    nd = data.draw(st.integers(1, 3), "nd")
    kind = data.draw(st.sampled_from(["plain", "groups", "depthwise"]), "groups")
    g = {"plain": 1, "groups": 2, "depthwise": data.draw(st.integers(2, 3))}[kind]
    cg = 1 if kind == "depthwise" else data.draw(st.integers(1, 2))
    kg = data.draw(st.integers(1, 2))
    x, chunks, batched = data.draw(image(nd, g * cg, ("float16", "float32", "float64")), "x")
    rng = np.random.default_rng(x.size)
    k = tuple(data.draw(st.integers(1, 3)) for _ in range(nd))
    w = rng.standard_normal((g * kg, cg) + k).astype(x.dtype)
    b = rng.standard_normal(g * kg).astype(x.dtype) if data.draw(st.booleans()) else None
    padding = data.draw(st.sampled_from(["int", "tuple", "pairs", "same", "valid"]))
    stride = 1 if padding == "same" else data.draw(st.sampled_from([1, 2, (1, 2, 3)[:nd]]))
    dilation = data.draw(st.sampled_from([1, 2, (2, 1, 1)[:nd]]))
    padding = {"int": data.draw(st.integers(0, 2)), "tuple": tuple(data.draw(st.integers(0, 2)) for _ in k),
               "pairs": tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))) for _ in k),
               "same": "same", "valid": "valid"}[padding]
    mode = data.draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=g, padding_mode=mode, **NP)
    single, dask_fn = getattr(fc, f"conv{nd}d"), getattr(fd, f"conv{nd}d")
    dx = da.from_array(x, chunks=chunks)
    same_result_or_same_error(
        lambda: single(x, w, b, **kw), lambda: dask_fn(dx, w, b, **kw),
        check=lambda out, ref: assert_conv_equal(out, ref, x, w, b, stride, padding, dilation, g, mode, nd))


@SETTINGS
@given(st.data())
def test_max_pools_equal_the_single_array_pool_bitwise(data):
    nd = data.draw(st.integers(1, 3), "nd")
    x, chunks, _ = data.draw(image(nd, dtypes=("float16", "float32", "float64")), "x")
    if data.draw(st.booleans()):
        x.flat[::7] = np.nan
    k, s, pad, d = window_args(data.draw, nd, lambda kk, dd: dd * (kk - 1))
    kw = dict(kernel_size=k, stride=s, padding=pad, dilation=d, ceil_mode=data.draw(st.booleans()),
              return_indices=data.draw(st.booleans()), **NP)
    dx = da.from_array(x, chunks=chunks)
    same_result_or_same_error(lambda: getattr(fc, f"max_pool{nd}d")(x, **kw),
                              lambda: getattr(fd, f"max_pool{nd}d")(dx, **kw), exact=True)


@SETTINGS
@given(st.data())
def test_avg_pools_equal_the_single_array_pool(data):
    nd = data.draw(st.integers(1, 3), "nd")
    x, chunks, _ = data.draw(image(nd, dtypes=("float32", "float64")), "x")
    k, s, pad, _ = window_args(data.draw, nd, lambda kk, dd: kk - 1)
    kw = dict(kernel_size=k, stride=s, padding=pad, ceil_mode=data.draw(st.booleans()),
              count_include_pad=data.draw(st.booleans()), **NP)
    if nd > 1:
        kw["divisor_override"] = data.draw(st.sampled_from([None, None, 1, 3]))
    dx = da.from_array(x, chunks=chunks)
    same_result_or_same_error(lambda: getattr(fc, f"avg_pool{nd}d")(x, **kw),
                              lambda: getattr(fd, f"avg_pool{nd}d")(dx, **kw),
                              check=lambda out, ref: assert_close(out, ref, x.dtype))


@SETTINGS
@given(st.data())
def test_adaptive_pools_equal_the_single_array_pool(data):
    nd = data.draw(st.integers(1, 3), "nd")
    x, chunks, batched = data.draw(image(nd, dtypes=("float32", "float64")), "x")
    spatial = x.shape[-nd:]
    # In % Out == 0, != 0, 1, Out > In, None (keep that axis)
    out = tuple(data.draw(st.sampled_from([None, 1, n, max(1, n // 2), max(1, n - 2), n + 1])) for n in spatial)
    out = out if nd > 1 else out[0]
    assert_ = "adaptive_avg" if data.draw(st.booleans()) else "adaptive_max"
    dx = da.from_array(x, chunks=chunks)
    if assert_ == "adaptive_avg":
        same_result_or_same_error(lambda: getattr(fc, f"adaptive_avg_pool{nd}d")(x, out, **NP),
                                  lambda: getattr(fd, f"adaptive_avg_pool{nd}d")(dx, out, **NP),
                                  check=lambda o, r: assert_close(o, r, x.dtype))
    else:
        ri = data.draw(st.booleans())
        same_result_or_same_error(lambda: getattr(fc, f"adaptive_max_pool{nd}d")(x, out, ri, **NP),
                                  lambda: getattr(fd, f"adaptive_max_pool{nd}d")(dx, out, ri, **NP), exact=True)


@SETTINGS
@given(st.data())
def test_lp_pools_equal_the_single_array_pool(data):
    nd = data.draw(st.integers(1, 3), "nd")
    x, chunks, _ = data.draw(image(nd, dtypes=("float32", "float64")), "x")
    p = data.draw(st.sampled_from([1, 2, 3.5, math.inf]))
    if p == 3.5:
        x = np.abs(x)        # a fractional power of a negative window sum is NaN, on both sides alike
    k, s, _, _ = window_args(data.draw, nd, lambda kk, dd: 0)
    kw = dict(stride=s, ceil_mode=data.draw(st.booleans()), **NP)
    dx = da.from_array(x, chunks=chunks)
    same_result_or_same_error(lambda: getattr(fc, f"lp_pool{nd}d")(x, p, k, **kw),
                              lambda: getattr(fd, f"lp_pool{nd}d")(dx, p, k, **kw),
                              check=lambda out, ref: assert_close(out, ref, x.dtype))


# ---------------------------------------------------------------------------------------------------
# Channels, batches, schedulers
# ---------------------------------------------------------------------------------------------------
RNG = np.random.default_rng(16)
X = RNG.standard_normal((3, 4, 12, 12)).astype(np.float32)
W = RNG.standard_normal((5, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_conv_input_channel_chunks_are_summed(dtype):
    """Channel chunks (1, 2, 1) of a groups=1 convolution: three partial results summed into all 5 output
    channels (in float32 for float16: the result is float16, within the oracle's tolerance)."""
    x, w, b = X.astype(dtype), W.astype(dtype), B.astype(dtype)
    y = fd.conv2d(da.from_array(x, chunks=(2, (1, 2, 1), 5, 12)), w, b, padding=1, **NP)
    assert y.chunks[1] == (5,)
    out = compute(y)
    assert out.dtype == np.dtype(dtype)
    assert_conv_equal(out, fc.conv2d(x, w, b, padding=1, **NP), x, w, b, 1, 1, 1, 1, "zeros", 2)


def test_float16_partials_are_summed_in_float32():
    """2048 + 1 + 1 over three channel chunks of a 1x1 convolution: 2050 in float32, then float16 (the
    oracle's value); summing float16 partials would round 2048 + 1 back to 2048, twice."""
    x = np.array([2048.0, 1.0, 1.0], dtype=np.float16).reshape(1, 3, 1, 1)
    w = np.ones((1, 3, 1, 1), dtype=np.float16)
    out = compute(fd.conv2d(da.from_array(x, chunks=(1, 1, 1, 1)), w, **NP))
    assert_bitwise(out, fc.conv2d(x, w, **NP))
    assert out.item() == 2050


@pytest.mark.parametrize("groups, chunks, out_chunks", [(2, (2, 2), (2, 4 - 2)), (4, (1, 3), (2, 6))])
def test_grouped_conv_channel_chunks_map_per_group(groups, chunks, out_chunks):
    """A grouped convolution's channel chunk holding whole groups gives the output channels of those
    groups: groups=2 over (2, 2) gives (2, 2) of K=4; depthwise (4 groups, 2 filters each) over (1, 3)
    gives (2, 6) of K=8."""
    k = out_chunks[0] + out_chunks[1]
    w = RNG.standard_normal((k, 4 // groups, 3, 3)).astype(np.float32)
    y = fd.conv2d(da.from_array(X, chunks=(3, chunks, 7, 5)), w, None, padding=1, groups=groups, **NP)
    assert y.chunks[1] == out_chunks
    assert_conv_equal(compute(y), fc.conv2d(X, w, None, padding=1, groups=groups, **NP), X, w, None, 1, 1, 1,
                      groups, "zeros", 2)


@pytest.mark.parametrize("value, sizes", [(2, (2, 2, 1)), ((1, 4), (1, 4)), (5, (5,)), (9, (5,)), (None, (5,))])
def test_out_channel_chunks_split_the_output_channels(value, sizes):
    """out_channel_chunks=2 over K=5 gives chunks (2, 2, 1); sizes are taken as they are; an int of K or more
    (or None) is one chunk. Each chunk equals those channels of the single-array result."""
    y = fd.conv2d(da.from_array(X, chunks=(3, (1, 3), 7, 12)), W, B, padding=1, out_channel_chunks=value, **NP)
    assert y.chunks[1] == sizes
    assert_conv_equal(compute(y), fc.conv2d(X, W, B, padding=1, **NP), X, W, B, 1, 1, 1, 1, "zeros", 2)


def test_out_channel_chunks_tasks_by_hand():
    """No spatial split (one 12x12 chunk), channel chunks (1, 3), out_channel_chunks (2, 3): per batch chunk,
    each of the 2 output-channel chunks has 2 partials (one per input-channel chunk) and their sum: 6 tasks;
    2 batch chunks: 12, plus the weight and the bias, stored once in the graph: 14."""
    dx = da.from_array(X, chunks=((1, 2), (1, 3), 12, 12))
    y = fd.conv2d(dx, W, B, padding=1, out_channel_chunks=(2, 3), **NP)
    assert graph_tasks(y, dx) == 14


@pytest.mark.parametrize("value, err, match", [
    (0, ValueError, "out_channel_chunks must be positive, got 0"),
    ((2, 2), ValueError, r"adding up to the 5 output channels, got \(2, 2\)"),
    ((0, 5), ValueError, "positive ints"),
    ("2", TypeError, "out_channel_chunks must be None, an int or a tuple of ints, got str"),
    (True, TypeError, "got bool"),
])
def test_bad_out_channel_chunks_are_refused(value, err, match):
    with pytest.raises(err, match=match):
        fd.conv2d(da.from_array(X, chunks=6), W, B, out_channel_chunks=value, **NP)


def test_out_channel_chunks_refused_for_grouped_convs():
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="out_channel_chunks is for groups=1 only"):
        fd.conv2d(da.from_array(X, chunks=6), w, groups=2, out_channel_chunks=2, **NP)


def test_empty_batch_chunk():
    """Dask allows a chunk of 0 along the batch: it maps to an empty output chunk."""
    dx = da.from_array(X, chunks=((0, 1, 2), 4, 6, 12))
    y = fd.conv2d(dx, W, B, padding=1, **NP)
    assert y.chunks[0] == (0, 1, 2)
    assert_conv_equal(compute(y), fc.conv2d(X, W, B, padding=1, **NP), X, W, B, 1, 1, 1, 1, "zeros", 2)
    values, idx = fd.max_pool2d(dx, 3, 2, 1, return_indices=True, **NP)
    assert_bitwise(compute(values, idx), fc.max_pool2d(X, 3, 2, 1, return_indices=True, **NP))


def test_threaded_scheduler():
    """Dask's default scheduler (threads)."""
    dx = da.from_array(X, chunks=(1, 2, 5, 7))
    out = compute(fd.conv2d(dx, W, B, stride=2, padding=2, dilation=2, **NP), scheduler="threads")
    assert_conv_equal(out, fc.conv2d(X, W, B, stride=2, padding=2, dilation=2, **NP), X, W, B, 2, 2, 2, 1,
                      "zeros", 2)
    assert_bitwise(compute(fd.max_pool2d(dx, 3, 2, 1, ceil_mode=True, **NP), scheduler="threads"),
                   fc.max_pool2d(X, 3, 2, 1, ceil_mode=True, **NP))


# ---------------------------------------------------------------------------------------------------
# The graph stays small
# ---------------------------------------------------------------------------------------------------
GRAPH_CASES = {
    # name: (op, input chunks, kwargs, window (k, s, d, lo, hi) per spatial axis)
    "conv 3x3 pad 1": ("conv2d", (2, 4, (4, 4, 4), (6, 6)), dict(padding=1), [(3, 1, 1, 1, 1)] * 2),
    "conv summed channels": ("conv2d", (3, (1, 3), (5, 7), (3, 3, 6)), dict(padding=(0, 2)),
                             [(3, 1, 1, 0, 0), (3, 1, 1, 2, 2)]),
    "conv dilated": ("conv2d", (1, 4, (6, 6), (12,)), dict(dilation=2, padding=1), [(3, 1, 2, 1, 1)] * 2),
    "max pool 2 stride 2": ("max_pool2d", (1, (2, 2), (4, 8), (6, 6)), dict(kernel_size=2),
                            [(2, 2, 1, 0, 0)] * 2),
    "max pool 3 stride 1": ("max_pool2d", (3, (3, 1), (5, 7), (4, 4, 4)), dict(kernel_size=3, stride=1, padding=1),
                            [(3, 1, 1, 1, 1)] * 2),
    "avg pool 3 stride 1": ("avg_pool2d", (3, 4, (4, 4, 4), (12,)), dict(kernel_size=3, stride=1),
                            [(3, 1, 1, 0, 0)] * 2),
}


def _graph_case(name):
    op, chunks, kw, windows = GRAPH_CASES[name]
    dx = da.from_array(X, chunks=chunks)
    conv = op.startswith("conv")
    y = getattr(fd, op)(dx, W, B, **kw, **NP) if conv else getattr(fd, op)(dx, **kw, **NP)
    axes = [axis_blocks(n, *win, c) for n, win, c in zip(X.shape[2:], windows, dx.chunks[2:])]
    return dx, y, axes, conv


@pytest.mark.parametrize("name", list(GRAPH_CASES))
def test_graph_has_a_task_per_block_and_halo_piece(name):
    dx, y, axes, conv = _graph_case(name)
    assert y.chunks[2:] == tuple(tuple(size for size, _, _ in a) for a in axes)
    summed = conv and len(dx.chunks[1]) > 1
    want = expected_tasks(axes, len(dx.chunks[0]), len(dx.chunks[1]), summed) + (2 if conv else 0)
    assert graph_tasks(y, dx) == want      # (+ the weight and the bias, stored once)


@pytest.mark.parametrize("name", ["conv 3x3 pad 1", "max pool 3 stride 1", "avg pool 3 stride 1", "conv dilated"])
def test_only_the_halo_moves(name):
    """Every task between the input chunks and the output blocks (but the weight and bias) is a slice no
    bigger than the halo: along each axis it is the whole chunk or what a block reads past its chunk."""
    from dask.local import get_sync
    dx, y, axes, conv = _graph_case(name)
    graph = dict(y.__dask_graph__())
    outputs = {k for k in graph if isinstance(k, tuple) and k[0] == y.name}
    inner = sorted(set(graph) - set(dict(dx.__dask_graph__())) - outputs, key=str)
    results = dict(zip(inner, get_sync(graph, inner)))
    if conv:
        results = {k: v for k, v in results.items() if not (np.array_equal(v, W) or np.array_equal(v, B))}
    assert len(results) == graph_tasks(y, dx) - len(outputs) - (2 if conv else 0)
    assert results, "no halo pieces: the case does not test anything"
    # how far a block reads past its chunk, by the rule: at most the dilated window minus one
    past = [max(p for _, _, p in a) for a in axes]
    windows = GRAPH_CASES[name][3]
    assert all(0 <= p <= d * (k - 1) for p, (k, _, d, _, _) in zip(past, windows))
    for v in results.values():
        cut = [a for a in range(2) if v.shape[2 + a] not in dx.chunks[2 + a]]
        assert cut and all(v.shape[2 + a] <= past[a] for a in cut), (v.shape, dx.chunks, past)
        assert v.shape[:2] in [(nb, c) for nb in dx.chunks[0] for c in dx.chunks[1]]


# ---------------------------------------------------------------------------------------------------
# Errors: before any graph, the single-array op's own
# ---------------------------------------------------------------------------------------------------
X1, W1 = X[:, :, 0], W[:, :, 0]
X3, W3 = X[:, :, :4, :5, None].repeat(3, axis=-1), W[..., None].repeat(2, axis=-1)

#: (op, input, args, kwargs): each refused by the single-array op
BAD = {
    "conv stride 0": ("conv2d", X, (W, B), dict(stride=0)),
    "conv padding -1": ("conv2d", X, (W, B), dict(padding=-1)),
    "conv same strided": ("conv2d", X, (W, B), dict(padding="same", stride=2)),
    "conv padding word": ("conv2d", X, (W, B), dict(padding="full")),
    "conv dilation 0": ("conv2d", X, (W, B), dict(dilation=0)),
    "conv groups 3": ("conv2d", X, (W, B), dict(groups=3)),
    "conv groups 0": ("conv2d", X, (W, B), dict(groups=0)),
    "conv weight ndim": ("conv2d", X, (W[0], B), {}),
    "conv weight channels": ("conv2d", X, (W[:, :2], B), {}),
    "conv bias shape": ("conv2d", X, (W, B[:3]), {}),
    "conv weight dtype": ("conv2d", X, (W.astype(np.float64), B), {}),
    "conv int input": ("conv2d", X.astype(np.int32), (W.astype(np.int32), None), {}),
    "conv input ndim": ("conv2d", X[0, 0], (W, B), {}),
    "conv too small": ("conv2d", X[:, :, :2, :2], (W, B), {}),
    "conv padding_mode": ("conv2d", X, (W, B), dict(padding=1, padding_mode="mirror")),
    "conv reflect too far": ("conv2d", X, (W, B), dict(padding=12, padding_mode="reflect")),
    "conv circular too far": ("conv2d", X, (W, B), dict(padding=13, padding_mode="circular")),
    "conv algo": ("conv2d", X, (W, B), dict(algo="fastest")),
    "conv backend": ("conv2d", X, (W, B), dict(backend="tpu")),
    "conv cuda backend on numpy": ("conv2d", X, (W, B), dict(backend="cuda")),
    "conv1d stride": ("conv1d", X1, (W1,), dict(stride=(1, 1))),
    "conv3d dilation": ("conv3d", X3, (W3,), dict(dilation=-1)),
    "max kernel 0": ("max_pool2d", X, (0,), {}),
    "max padding over half": ("max_pool2d", X, (3, 2, 2), {}),
    "max stride 0": ("max_pool2d", X, (3, 0), {}),
    "max dilation 0": ("max_pool2d", X, (3,), dict(dilation=0)),
    "max kernel too big": ("max_pool2d", X, (13,), {}),
    "max backend": ("max_pool2d", X, (2,), dict(backend="tpu")),
    "max1d per-side too far": ("max_pool1d", X1, (3, 1, ((0, 3),)), {}),
    "max3d kernel": ("max_pool3d", X3, ((2, 2),), {}),
    "avg divisor 0": ("avg_pool2d", X, (3,), dict(divisor_override=0)),
    "avg padding": ("avg_pool2d", X, (2, 1, 2), {}),
    "avg1d kernel": ("avg_pool1d", X1, (-1,), {}),
    "adaptive avg 0": ("adaptive_avg_pool2d", X, ((0, 2),), {}),
    "adaptive avg length": ("adaptive_avg_pool2d", X, ((2, 2, 2),), {}),
    "adaptive avg1d None": ("adaptive_avg_pool1d", X1, (None,), {}),
    "adaptive max negative": ("adaptive_max_pool3d", X3, (-1,), {}),
    "adaptive backend": ("adaptive_max_pool2d", X, (2,), dict(backend="cuda-emu-x")),
    "lp norm 0": ("lp_pool2d", X, (0, 2), {}),
    "lp norm nan": ("lp_pool1d", X1, (math.nan, 2), {}),
    "lp kernel": ("lp_pool3d", X3, (2, 0), {}),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_raise_the_single_array_error(name):
    op, x, args, kw = BAD[name]
    with pytest.raises((TypeError, ValueError)) as single:
        getattr(fc, op)(x, *args, **kw)
    dx = da.from_array(x, chunks=tuple(max(1, n // 2) for n in x.shape))
    with pytest.raises(single.type) as dask_err:
        getattr(fd, op)(dx, *args, **kw)
    assert str(dask_err.value) == str(single.value)


@pytest.mark.parametrize("op, args", [("conv2d", (W, B)), ("max_pool2d", (2,)), ("adaptive_avg_pool2d", (2,)),
                                      ("lp_pool2d", (2, 2))])
def test_a_numpy_input_is_refused_naming_the_single_array_op(op, args):
    with pytest.raises(TypeError, match=rf"takes a dask\.array\.Array as input.*call fastconv\.{op}\b"):
        getattr(fd, op)(X, *args)


def test_a_dask_weight_or_bias_is_refused():
    dx = da.from_array(X, chunks=(1, 4, 6, 6))
    with pytest.raises(TypeError, match=r"^weight must be a NumPy or CuPy array.*weight\.compute\(\)"):
        fd.conv2d(dx, da.from_array(W), B)
    with pytest.raises(TypeError, match=r"^bias must be a NumPy or CuPy array.*bias\.compute\(\)"):
        fd.conv2d(dx, W, da.from_array(B))


def test_unknown_chunk_sizes_are_refused():
    dx = da.from_array(X, chunks=(1, 4, 6, 6))
    masked = dx[dx[:, 0, 0, 0] > -10]          # a boolean index: the batch's chunk sizes are unknown
    assert math.isnan(masked.shape[0])
    for call in (lambda: fd.conv2d(masked, W, B), lambda: fd.max_pool2d(masked, 2)):
        with pytest.raises(ValueError, match=r"input has unknown chunk sizes.*compute_chunk_sizes\(\)"):
            call()


# ---------------------------------------------------------------------------------------------------
# ChunkWarning
# ---------------------------------------------------------------------------------------------------
def test_chunks_smaller_than_the_halo_are_joined_with_a_warning():
    """A 5x5 kernel reads up to 4 positions past a chunk; interior chunks of 2 along H are joined in pairs
    (the first and last chunk have no far neighbour and stay): warned, pointing at this line, naming the
    axis and the new chunks, and the result is still the single array's."""
    w = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    dx = da.from_array(X, chunks=(3, 4, 2, 12))
    with pytest.warns(fd.ChunkWarning, match=r"conv2d: input axis 2 has chunks \(2, 2, 2, 2, 2, 2\).*"
                                             r"rechunked to \(2, 4, 4, 2\)") as record:
        y = fd.conv2d(dx, w, None, padding=2, **NP)
    assert record[0].filename == __file__
    # input chunks (2, 4, 4, 2), edges 2, 6, 10; output o's window starts at o - 2: the first block owns
    # outputs 0-3 (starts -2..1), the next 4-7 and 8-11; the last chunk (starts 10, 11) owns none: 12 outputs
    assert y.chunks[2] == (4, 4, 4)
    assert_conv_equal(compute(y), fc.conv2d(X, w, None, padding=2, **NP), X, w, None, 1, 2, 1, 1, "zeros", 2)
    with pytest.warns(fd.ChunkWarning, match=r"max_pool2d: input axis 3") as record:
        y = fd.max_pool2d(da.from_array(X, chunks=(3, 4, 12, 1)), 3, 1, **NP)
    assert record[0].filename == __file__
    assert_bitwise(compute(y), fc.max_pool2d(X, 3, 1, **NP))


def test_channel_chunks_that_cut_groups_are_rechunked_with_a_warning():
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    """groups of 2 channels over chunks (3, 1): the chunk edge at 3 moves down to 2."""
    dx = da.from_array(X, chunks=(3, (3, 1), 12, 12))
    with pytest.warns(fd.ChunkWarning, match=r"channel chunks \(3, 1\) cut the convolution's groups \(2 "
                                             r"channels each\); rechunked to \(2, 2\)") as record:
        y = fd.conv2d(dx, w, B[:4], padding=1, groups=2, **NP)
    assert record[0].filename == __file__
    assert y.chunks[1] == (2, 2)
    assert_conv_equal(compute(y), fc.conv2d(X, w, B[:4], padding=1, groups=2, **NP), X, w, B[:4], 1, 1, 1, 2,
                      "zeros", 2)


def test_good_chunks_give_no_warning():
    dx = da.from_array(X, chunks=(1, (1, 3), 4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.conv2d(dx, W, B, padding=1, **NP)
        fd.max_pool2d(dx, 3, 2, 1, **NP)
        fd.adaptive_avg_pool2d(dx, 3, **NP)


# ---------------------------------------------------------------------------------------------------
# Inputs are never modified; import fastconv imports no dask
# ---------------------------------------------------------------------------------------------------
def test_inputs_are_not_modified():
    """The chunks of da.from_array are views of the NumPy array: a call that wrote into its region would
    change X itself."""
    x, w, b = X.copy(), W.copy(), B.copy()
    dx = da.from_array(x, chunks=(1, (1, 3), 5, 7))
    compute(fd.conv2d(dx, w, b, padding=2, padding_mode="reflect", **NP), fd.conv2d(dx, w, b, padding=1, **NP),
            *fd.max_pool2d(dx, 3, 2, 1, return_indices=True, **NP), fd.avg_pool2d(dx, 3, 1, 1, **NP),
            fd.adaptive_max_pool2d(dx, 5, **NP), fd.lp_pool2d(dx, 2, 3, **NP))
    assert_bitwise((x, w, b), (X, W, B))


def test_import_fastconv_does_not_import_dask():
    code = ("import sys, fastconv; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed') or m == 'fastconv.dask'); print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
