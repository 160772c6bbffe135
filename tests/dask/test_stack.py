"""fastconv.dask.sequential: random stacks of convolutions, elementwise steps and pools equal to running the
layers one after another on the whole array (the numpy oracle), its refusals, its graph, its warnings."""
from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array", reason="fastconv.dask needs the [dask] extra (dask[array])")

import fastconv as fc  # noqa: E402
import fastconv.dask as fd  # noqa: E402

from .conftest import (NP, SETTINGS, assert_close, axis_blocks, chunking, compute, expected_tasks,  # noqa: E402
                       graph_tasks)

P = functools.partial


def relu(a):
    return np.maximum(a, 0)


def run_layers(layers, x):
    """The stack on one array: each layer's single-array op (a fastconv.dask partial's fastconv twin)."""
    for layer in layers:
        if isinstance(layer, P):
            layer = P(getattr(fc, layer.func.__name__), *layer.args, **layer.keywords)
        x = layer(x)
    return x


@st.composite
def stacks(draw):
    """(input, chunks, layers): 1-D or 2-D, 2-4 layers, each a fastconv (or fastconv.dask) partial with
    random stride, dilation, padding and ceil_mode, or an elementwise step."""
    nd = draw(st.integers(1, 2))
    n = draw(st.integers(10, 24 if nd == 1 else 14))
    c = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), c) + (n,) * nd
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    x = rng.standard_normal(shape).astype(dtype)
    module = draw(st.sampled_from([fc, fd]))
    layers = []
    for _ in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "elementwise", "max", "avg", "lp"]))
        k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        s = tuple(draw(st.integers(1, 2)) for _ in range(nd))
        half = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        if kind == "conv":
            k_out = draw(st.integers(1, 3))
            w = rng.standard_normal((k_out, c) + k).astype(dtype)
            b = rng.standard_normal(k_out).astype(dtype) if draw(st.booleans()) else None
            pad = draw(st.sampled_from([half, tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in k)]))
            layers.append(P(getattr(module, f"conv{nd}d"), weight=w, bias=b, stride=s, padding=pad,
                            dilation=draw(st.sampled_from([1, 2])), **NP))
            c = k_out
        elif kind == "elementwise":
            layers.append(draw(st.sampled_from([relu, np.tanh, np.abs])))
        elif kind == "max":
            layers.append(P(getattr(module, f"max_pool{nd}d"), kernel_size=k, stride=s, padding=half,
                            dilation=draw(st.sampled_from([1, 2])), ceil_mode=draw(st.booleans()), **NP))
        elif kind == "avg":
            kw = {"divisor_override": draw(st.sampled_from([None, 2]))} if nd == 2 else {}
            layers.append(P(getattr(module, f"avg_pool{nd}d"), kernel_size=k, stride=s, padding=half,
                            ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()), **kw, **NP))
        else:
            layers.append(P(getattr(module, f"lp_pool{nd}d"), norm_type=draw(st.sampled_from([1, 2, math.inf])),
                            kernel_size=k, stride=s, ceil_mode=draw(st.booleans()), **NP))
    chunks = tuple(draw(chunking(m)) for m in shape)
    return x, chunks, layers


@SETTINGS
@pytest.mark.filterwarnings("ignore::fastconv.dask.ChunkWarning")
@given(stacks())
def test_sequential_equals_the_layers_one_after_another(stack):
    x, chunks, layers = stack
    assume(any(isinstance(layer, P) for layer in layers))
    try:
        ref = run_layers(layers, x)
    except ValueError:           # a layer's input is too small for its window: no stack to compare
        assume(False)
    y = fd.sequential(layers, da.from_array(x, chunks=chunks))
    assert y.shape == ref.shape
    assert_close(compute(y), ref, x.dtype)


def test_sequential_a_stack_by_hand():
    """conv 3x3 pad 1 -> ReLU -> max pool 2 -> conv 3x3 stride 2 pad 1 -> tanh -> avg pool 3/2 ceil, over
    uneven chunks; unbatched too."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 29, 22)).astype(np.float32)
    w1, b1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    layers = [P(fc.conv2d, weight=w1, bias=b1, padding=1, **NP), relu, P(fc.max_pool2d, kernel_size=2, **NP),
              P(fd.conv2d, weight=w2, stride=2, padding=1, **NP), np.tanh,
              P(fc.avg_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True, **NP)]
    ref = run_layers(layers, x)
    with warnings.catch_warnings():
        # the receptive field is 16 (3, +1 by the pool, +2*2 by the strided conv, +2*4 by the avg pool), so a
        # block reads up to 15 past its chunk: an interior chunk of 15 is used as it is
        warnings.simplefilter("error")
        y = fd.sequential(layers, da.from_array(x, chunks=(1, 3, (7, 15, 7), (9, 13))))
    assert len(y.chunks[2]) > 1 and len(y.chunks[3]) > 1     # (4 x 3 outputs, in blocks on both axes)
    assert_close(compute(y), ref, "float32")
    y = fd.sequential(layers, da.from_array(x[1], chunks=(3, (15, 14), 11)))
    assert_close(compute(y), ref[1], "float32")


def test_sequential_graph_has_a_task_per_block_and_halo_piece():
    """conv 3x3 pad 1 then max pool 2: output o reads input 2o - 1 .. 2o + 2, a window of 4, stride 2, pad 1
    (the stack's receptive field): one task per output block and per halo piece, derived as for one op."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dx = da.from_array(x, chunks=(1, 3, (4, 4, 4), (6, 6)))
    y = fd.sequential([P(fc.conv2d, weight=w, padding=1, **NP), relu, P(fc.max_pool2d, kernel_size=2, **NP)], dx)
    axes = [axis_blocks(12, 4, 2, 1, 1, 1, c) for c in dx.chunks[2:]]
    assert y.chunks[2:] == tuple(tuple(size for size, _, _ in a) for a in axes)
    assert graph_tasks(y, dx) == expected_tasks(axes, 2, 1, summed=False)
    ref = run_layers([P(fc.conv2d, weight=w, padding=1, **NP), relu, P(fc.max_pool2d, kernel_size=2, **NP)], x)
    assert_close(compute(y), ref, "float32")


# ---------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------
X = np.random.default_rng(5).standard_normal((2, 3, 10, 10)).astype(np.float32)
DX = da.from_array(X, chunks=(1, 3, 5, 5))
W = np.random.default_rng(6).standard_normal((4, 3, 3, 3)).astype(np.float32)

REFUSED = {
    "adaptive pool": ([P(fc.adaptive_avg_pool2d, output_size=2)], ValueError,
                      r"^layers\[0\]: fastconv\.functional\.adaptive_avg_pool2d cannot be part of a stack"),
    "adaptive dask pool": ([P(fc.conv2d, weight=W), P(fd.adaptive_max_pool2d, output_size=2)], ValueError,
                           r"^layers\[1\]: fastconv\.dask\.adaptive_max_pool2d cannot be part of a stack"),
    "return_indices": ([P(fc.max_pool2d, kernel_size=2, return_indices=True)], ValueError,
                       r"^layers\[0\]: return_indices=True is not supported inside a stack"),
    "padding_mode": ([P(fc.conv2d, weight=W, padding=1, padding_mode="reflect")], ValueError,
                     r"^layers\[0\]: padding_mode='reflect' is not supported inside a stack"),
    "shape-changing callable": ([P(fc.conv2d, weight=W), lambda a: a[..., ::2]], ValueError,
                                r"^layers\[1\] .* is taken as elementwise but returned shape"),
    "reducing callable": ([lambda a: a.sum(axis=1), P(fc.max_pool2d, kernel_size=2)], ValueError,
                          r"^layers\[0\] .* is taken as elementwise but returned shape"),
    "failing callable": ([P(fc.max_pool2d, kernel_size=2), lambda a: a @ np.ones((3, 3))], TypeError,
                         r"^layers\[1\] .* is taken as elementwise but failed on a \(1, 3, 2, 2\) array"),
    "not callable": ([P(fc.max_pool2d, kernel_size=2), 3], TypeError,
                     r"^layers\[1\] must be a functools\.partial of a fastconv op or an elementwise callable"),
    "unknown keyword": ([P(fc.conv2d, weight=W, kernel=3)], TypeError,
                        r"^layers\[0\]: .*kernel.*\(bind every argument of conv2d but the input\)"),
    "missing weight": ([P(fc.conv2d, padding=1)], TypeError, r"^layers\[0\]: .*weight"),
    "dimensions": ([P(fc.max_pool2d, kernel_size=2), P(fc.conv1d, weight=W[..., 0])], ValueError,
                   r"^layers\[1\] is conv1d but the stack's input has 2 spatial dimension"),
    "empty": ([], ValueError, r"^layers must be a non-empty list"),
    "elementwise only": ([relu, np.tanh], ValueError, r"^layers has no convolution or pool.*map_blocks"),
    "dask weight": ([P(fc.conv2d, weight=da.from_array(W))], TypeError, r"^layers\[0\] weight must be a NumPy"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_sequential_refusals(name):
    layers, error, message = REFUSED[name]
    with pytest.raises(error, match=message):
        fd.sequential(layers, DX)


@pytest.mark.parametrize("layer, single", [
    (P(fc.conv2d, weight=W, stride=0), lambda: fc.conv2d(X, W, stride=0)),
    (P(fc.conv2d, weight=W[:, :2]), lambda: fc.conv2d(X, W[:, :2])),
    (P(fc.max_pool2d, kernel_size=3, padding=2), lambda: fc.max_pool2d(X, 3, padding=2)),
    (P(fc.avg_pool2d, kernel_size=11), lambda: fc.avg_pool2d(X, 11)),
    (P(fc.lp_pool2d, norm_type=0, kernel_size=2), lambda: fc.lp_pool2d(X, 0, 2)),
    (P(fc.max_pool2d, kernel_size=2, backend="tpu"), lambda: fc.max_pool2d(X, 2, backend="tpu")),
    (P(fc.conv2d, weight=W, algo="fastest"), lambda: fc.conv2d(X, W, algo="fastest")),
    (P(fc.conv2d, weight=W, backend="cuda"), lambda: fc.conv2d(X, W, backend="cuda")),
])
def test_sequential_bad_layer_arguments_raise_the_single_array_error(layer, single):
    with pytest.raises((TypeError, ValueError)) as want:
        single()
    with pytest.raises(want.type) as got:
        fd.sequential([layer], DX)
    assert str(got.value) == str(want.value)


def test_sequential_refuses_a_numpy_input_pointing_at_something_that_exists():
    """The message names what to call instead: every fastconv function it names exists."""
    with pytest.raises(TypeError, match=r"takes a dask\.array\.Array as x") as e:
        fd.sequential([P(fc.max_pool2d, kernel_size=2)], X)
    for name in re.findall(r"fastconv\.(\w+)", str(e.value)):
        assert name == "dask" or hasattr(fc, name), f"the message points at fastconv.{name}: {e.value}"


# ---------------------------------------------------------------------------------------------------
# Warnings point at the caller's line
# ---------------------------------------------------------------------------------------------------
def test_sequential_chunk_warnings_point_at_the_callers_line():
    layers = [P(fc.conv2d, weight=W, padding=1, **NP), relu, P(fc.max_pool2d, kernel_size=2, **NP)]
    dx = da.from_array(X, chunks=(1, (1, 2), 5, 5))
    with pytest.warns(fd.ChunkWarning, match=r"sequential: channel chunks \(1, 2\) joined into one") as record:
        y = fd.sequential(layers, dx)
    assert [w.filename for w in record] == [__file__]
    assert_close(compute(y), run_layers(layers, X), "float32")
    with pytest.warns(fd.ChunkWarning, match=r"sequential: input axis 3 has chunks \(1, 1, 1") as record:
        y = fd.sequential(layers, da.from_array(X, chunks=(1, 3, 10, 1)))
    assert [w.filename for w in record] == [__file__]
    assert_close(compute(y), run_layers(layers, X), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.sequential(layers, da.from_array(X, chunks=(1, 3, 5, (3, 3, 4))))


def test_sequential_pools_only_map_channel_chunks():
    """A stack without a convolution keeps the input's channel chunks: every chunk's channels come out."""
    layers = [P(fc.max_pool2d, kernel_size=3, stride=2, padding=1, **NP), relu,
              P(fc.avg_pool2d, kernel_size=2, **NP)]
    y = fd.sequential(layers, da.from_array(X, chunks=(1, (1, 2), 5, 5)))
    assert y.chunks[1] == (1, 2)
    assert_close(compute(y), run_layers(layers, X), "float32")


def test_sequential_joins_chunks_shorter_than_what_a_block_reads():
    """conv 3x3 pad 1 then max pool 2: output o reads input 2o - 1 .. 2o + 2. Over chunks of 2, output 2
    starts in [2, 4) at 3 and reads up to 6: 3 positions past its chunk, into the chunk after next. Chunks
    that short are joined (with a warning), as for one op."""
    layers = [P(fc.conv2d, weight=W, padding=1, **NP), relu, P(fc.max_pool2d, kernel_size=2, **NP)]
    with pytest.warns(fd.ChunkWarning, match=r"input axis 3 has chunks \(2, 2, 2, 2, 2\)"):
        y = fd.sequential(layers, da.from_array(X, chunks=(1, 3, 10, 2)))
    assert_close(compute(y), run_layers(layers, X), "float32")
