"""fastconv.dask's transposed convolutions, max_unpool, unfold and fold: equal to the single-array op.

- The halo arithmetic of a transposed convolution's axis (``_plan.Transposed``) against a 1-D transposed
  convolution written out here as loops (every block the planner accepts gives the whole axis's values), and
  hand-derived plans.
- Each op over several chunkings (chunks smaller than the halo, uneven last chunks, chunked channels and
  groups), strides, paddings, output_padding, dilation, 1-D/2-D/3-D, batched and not: expected values from
  the oracle (``backend="numpy"`` on the whole array; conv_transpose within fastconv.testing's tolerance,
  the copies bitwise). The dask side runs the same backend, so a difference is the blocking's.
- The ChunkWarnings (said where a chunking is changed, and only there) and argument errors: the single-array
  op's own exception and message, raised by the call itself, before any graph is computed.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import fastconv as fc
import fastconv.testing as ft
from fastconv._spec import conv_transpose_spec
from fastconv.dask import _plan

da = pytest.importorskip("dask.array")
fd = pytest.importorskip("fastconv.dask")

NP = {"backend": "numpy"}


def compute(*arrays):
    import dask
    out = dask.compute(*arrays, scheduler="sync")
    return out[0] if len(out) == 1 else out


class no_chunk_warning(warnings.catch_warnings):
    """A block in which a ChunkWarning fails the test."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("error", fd.ChunkWarning)


def chunk_warning(match):
    return pytest.warns(fd.ChunkWarning, match=match)


def said_at_the_call(record):
    """Each ChunkWarning points at the line that called fastconv.dask (the test's), not inside it."""
    assert {r.filename for r in record if issubclass(r.category, fd.ChunkWarning)} == {__file__}


# ---------------------------------------------------------------------------------------------------
# The arithmetic, with no Dask
# ---------------------------------------------------------------------------------------------------
def transposed_1d(x, w, s, d, lo, hi, op):
    """torch's conv_transpose1d on one channel, from its definition: input i's tap t adds to i*s - lo + t*d."""
    out = (len(x) - 1) * s - lo - hi + d * (len(w) - 1) + op + 1
    y = [0.0] * out
    for i, xi in enumerate(x):
        for t, wt in enumerate(w):
            o = i * s - lo + t * d
            if 0 <= o < out:
                y[o] += xi * wt
    return y


AXES = [(n, k, s, d, lo, hi, op) for n in (1, 2, 5) for k in (1, 3) for s in (1, 2, 4) for d in (1, 3)
        for lo, hi in ((0, 0), (1, 2), (5, 0)) for op in sorted({0, max(s, d) - 1})
        if (n - 1) * s - lo - hi + d * (k - 1) + op + 1 >= 1]


def test_transposed_blocks_give_the_whole_axis():
    """Every output range the planner accepts, computed by its call (its input range, padding and
    output_padding), is that range of the whole axis; its output_padding is one the op takes. And plans over
    several chunkings tile the output once, with a block starting where a chunk's first input lands."""
    checked = 0
    for n, k, s, d, lo, hi, op in AXES:
        x = [1.0 + 0.5 * i for i in range(n)]
        w = [1.0 + 2.0 ** -(t + 1) for t in range(k)]
        y = transposed_1d(x, w, s, d, lo, hi, op)
        axis = _plan.Transposed(n, len(y), k, s, d, lo)
        for o0 in range(len(y)):
            for o1 in range(o0 + 1, len(y) + 1):
                try:
                    b = _plan.transposed_block(axis, o0, o1)
                except ValueError:
                    assert (o0, o1) != (0, len(y)), "the whole axis must always be one block"
                    continue
                assert (b.out_lo, b.out_hi) == (o0, o1)
                assert 0 <= b.in_lo < b.in_hi <= n and b.pad_lo >= 0 and b.pad_hi >= 0
                assert 0 <= b.out_pad < max(s, d), b
                got = transposed_1d(x[b.in_lo:b.in_hi], w, s, d, b.pad_lo, b.pad_hi, b.out_pad)
                assert got == y[o0:o1], (n, k, s, d, lo, hi, op, b)
                checked += 1
        for chunks in ((n,), (1,) * n, (n - n // 2, n // 2)):
            chunks = tuple(c for c in chunks if c)
            blocks = _plan.plan_transposed(axis, chunks)
            assert blocks[0].out_lo == 0 and blocks[-1].out_hi == len(y)
            assert all(a.out_hi == b.out_lo for a, b in zip(blocks, blocks[1:]))
            # a block starting where chunk c's first tap lands reads from c - halo (halo's promise), up to
            # the chunk the next block starts at
            owner = {int(c) * s - lo: int(c) for c in np.cumsum(chunks)[:-1]}
            assert {b.out_lo for b in blocks[1:]} <= set(owner)
            firsts = [0] + [owner[b.out_lo] for b in blocks[1:]]
            for b, c, nxt in zip(blocks, firsts, firsts[1:] + [n]):
                assert b.in_lo >= c - axis.halo and b.in_hi <= nxt, (n, k, s, d, lo, chunks, b)
                if c:
                    assert b.in_lo == max(0, c - axis.halo)
    assert checked > 1000


@pytest.mark.parametrize("axis, chunks, want", [
    # k=3, s=2, pad (1, 1): 12 outputs; chunk 2 starts at input 3, whose first tap lands at 3*2 - 1 = 5; its
    # block reads input 2 too (taps at 3, 4, 5: the last is the block's), and crops 2 of the local output
    (_plan.Transposed(6, 12, 3, 2, 1, 1), (3, 3),
     [_plan.TransposedBlock(0, 5, 0, 3, 1, 1, 0), _plan.TransposedBlock(5, 12, 2, 6, 2, 0, 0)]),
    # k=2, s=3, output_padding 2: 7 outputs, inputs land at 0-1 and 3-4; 2 and 5-6 get no input: the
    # blocks' calls add them as output_padding
    (_plan.Transposed(2, 7, 2, 3, 1, 0), (1, 1),
     [_plan.TransposedBlock(0, 3, 0, 1, 0, 0, 1), _plan.TransposedBlock(3, 7, 1, 2, 0, 0, 2)]),
    # pad 4 crops input 0's and 1's first taps: chunk 2's block would start at 1*2 - 4 < 0, so it is the
    # first chunk's: one block
    (_plan.Transposed(4, 4, 3, 2, 1, 4), (1, 3), [_plan.TransposedBlock(0, 4, 0, 4, 4, 1, 0)]),
])
def test_transposed_plans_by_hand(axis, chunks, want):
    assert list(_plan.plan_transposed(axis, chunks)) == want


def test_transposed_block_no_input_reaches():
    """k=1, s=3: outputs 1 and 2 lie between two inputs' taps; no call of its own computes only them, and
    a block holding output 0 or 3 too reads the input whose tap is there."""
    axis = _plan.Transposed(4, 10, 1, 3, 1, 0)
    with pytest.raises(ValueError, match="no input reaches"):
        _plan.transposed_block(axis, 1, 3)
    assert _plan.transposed_block(axis, 1, 4) == _plan.TransposedBlock(1, 4, 0, 2, 1, 0, 0)
    assert axis.halo == 0 and _plan.Transposed(9, 20, 3, 1, 2, 0).halo == 4


# ---------------------------------------------------------------------------------------------------
# conv_transpose1d/2d/3d
# ---------------------------------------------------------------------------------------------------
#: (nd, input shape, out channels per group, kernel, stride, padding, output_padding, groups, dilation,
#:  input chunks, expected warning (a regex) or None, bias?)
TRANSPOSE = {
    "1d-summed-uneven": (1, (2, 3, 9), 2, (3,), 2, 1, 1, 1, 1, (1, (1, 2), (4, 4, 1)), None, True),
    "1d-halo-larger-than-chunks": (1, (1, 4, 10), 1, (3,), 1, ((2, 0),), 0, 2, 2, (1, 2, (3, 3, 4)),
                                   r"axis 2 has chunks \(3, 3, 4\)", True),
    "1d-stride-wider-than-window": (1, (2, 2, 7), 2, (2,), 4, ((3, 1),), 3, 1, 1, (2, 2, (2, 2, 2, 1)), None,
                                    False),
    "1d-dilated-output-padding": (1, (1, 2, 7), 1, (2,), 1, 0, 2, 1, 3, (1, 2, 1), r"axis 2", True),
    "1d-valid-unbatched": (1, (3, 8), 2, (3,), 3, "valid", 2, 1, 1, (3, (3, 5)), None, True),
    "1d-crops-first-chunks": (1, (1, 1, 8), 1, (3,), 2, 5, 1, 1, 1, (1, 1, (1, 1, 2, 4)), None, True),
    "2d-summed-asymmetric": (2, (2, 4, 7, 6), 3, (3, 2), (2, 3), ((1, 2), (0, 1)), (1, 2), 1, (1, 2),
                             (1, (1, 3), (3, 2, 2), (2, 4)), None, True),
    "2d-groups-cut": (2, (1, 4, 5, 5), 2, (2, 2), 2, 0, 1, 2, 1, (1, (1, 3), (2, 3), 5),
                      r"cut the convolution's groups", True),
    "2d-depthwise": (2, (2, 4, 4, 5), 1, (3, 3), 1, 1, 0, 4, 1, (1, (2, 2), (2, 2), (3, 2)), None, False),
    "3d": (3, (1, 2, 4, 5, 3), 2, (2, 3, 1), (1, 2, 1), (1, (0, 2), 0), (0, 1, 0), 1, (2, 1, 1),
           (1, 2, (2, 2), (3, 2), (1, 2)), None, True),
    "3d-grouped-unbatched": (3, (2, 3, 4, 4), 1, (2, 2, 2), 2, 0, 1, 2, 1, (1, (2, 1), (2, 2), (1, 3)), None,
                             True),
}


@pytest.mark.parametrize("case", list(TRANSPOSE))
def test_conv_transpose(case):
    nd, shape, cog, ks, stride, padding, opad, groups, dil, chunks, warn, has_bias = TRANSPOSE[case]
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal(shape).astype(np.float32)
    cin = shape[-nd - 1]
    w = rng.standard_normal((cin, cog) + ks).astype(np.float32)
    b = rng.standard_normal(cog * groups).astype(np.float32) if has_bias else None
    kw = dict(stride=stride, padding=padding, output_padding=opad, groups=groups, dilation=dil)
    fn = getattr(fd, f"conv_transpose{nd}d")
    X = da.from_array(x, chunks=chunks)
    if warn is None:
        with no_chunk_warning():
            y = fn(X, w, b, **kw, **NP)
    else:
        with chunk_warning(warn) as record:
            y = fn(X, w, b, **kw, **NP)
        said_at_the_call(record)
    out = compute(y)
    ref = getattr(fc, f"conv_transpose{nd}d")(x, w, b, **kw, **NP)
    assert out.dtype == ref.dtype == np.float32 and out.shape == ref.shape == y.shape
    ft.assert_grad_close(out, conv_transpose_spec(x, w, b, spatial_dims=nd, **kw), x, w, b)


def test_conv_transpose_output_blocks_follow_the_input_chunks():
    """The block of an input chunk starting at c starts where c's first tap lands, c*stride - pad: input
    chunks (4, 4, 1) with stride 2, pad 1 give 18 outputs cut at 4*2 - 1 = 7 and 8*2 - 1 = 15; an input
    channel chunked in two is summed into one output-channel block; grouped channels keep theirs."""
    x = np.ones((2, 3, 9), np.float32)
    w = np.ones((3, 2, 3), np.float32)
    y = fd.conv_transpose1d(da.from_array(x, chunks=(1, (1, 2), (4, 4, 1))), w, stride=2, padding=1,
                            output_padding=1, **NP)
    assert y.chunks == ((1, 1), (2,), (7, 8, 3))
    g = fd.conv_transpose1d(da.from_array(np.ones((1, 4, 5), np.float32), chunks=(1, (2, 2), 5)),
                            np.ones((4, 3, 2), np.float32), groups=2, **NP)
    assert g.chunks == ((1,), (3, 3), (6,))


def test_conv_transpose_moves_only_the_halo():
    """Chunks (4, 4, 4), kernel 3, stride 1: each block reads its own chunk whole (by key) and the last 2
    inputs of the chunk before, by one slicing task each; the first block reads no other chunk."""
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 12)
    y = fd.conv_transpose1d(da.from_array(x, chunks=(1, 1, 4)), np.ones((1, 1, 3), np.float32), **NP)
    graph = dict(y.__dask_graph__())
    halos = {k: v for k, v in graph.items() if isinstance(k, tuple) and k[0].endswith("-halo")}
    assert len(halos) == 2
    from dask.core import get
    assert [h[0, 0].tolist() for h in get(graph, sorted(halos))] == [[2.0, 3.0], [6.0, 7.0]]
    assert np.array_equal(compute(y), fc.conv_transpose1d(x, np.ones((1, 1, 3), np.float32), **NP))


def test_conv_transpose_float16_sums_partials_in_float32():
    """float16 with chunked input channels: each partial in float32, the sum cast back once (as the single
    array computes float16 in float32). 64 channels of 1.0 * 1.0 plus 2**-11 each: float16 partials would
    round each 2**-11 away."""
    x = np.full((1, 64, 4), 1.0, np.float16)
    x[:, 1:] = np.float16(2.0 ** -11)
    w = np.ones((64, 1, 1), np.float16)
    y = compute(fd.conv_transpose1d(da.from_array(x, chunks=(1, 1, 4)), w, **NP))
    ref = fc.conv_transpose1d(x, w, **NP)
    assert y.dtype == np.float16 and np.array_equal(y, ref)
    assert float(ref[0, 0, 0]) == float(np.float16(1 + 63 * 2.0 ** -11))


def test_conv_transpose_leaves_its_input_alone():
    x = np.random.default_rng(0).standard_normal((1, 2, 6)).astype(np.float32)
    w = np.ones((2, 1, 3), np.float32)
    keep = x.copy(), w.copy()
    compute(fd.conv_transpose1d(da.from_array(x, chunks=(1, 1, 2)), w, stride=2, **NP))
    assert np.array_equal(x, keep[0]) and np.array_equal(w, keep[1])


# ---------------------------------------------------------------------------------------------------
# max_unpool1d/2d/3d
# ---------------------------------------------------------------------------------------------------
#: (nd, input shape of the pool, kernel, stride, output_size (spatial) or None, pool output chunks, warning?)
UNPOOL = {
    "1d-batch-channel-chunks": (1, (3, 4, 9), 2, None, None, (2, (1, 3), 4), False),
    "1d-spatial-chunks": (1, (2, 2, 9), 3, 2, (10,), (1, 2, (1, 3)), True),
    "2d-spatial-chunks": (2, (2, 3, 8, 7), 2, None, (9, 7), (1, (2, 1), (2, 2), (1, 2)), True),
    "2d-unbatched": (2, (3, 6, 6), 3, 2, None, ((1, 2), 2, 2), False),
    "3d": (3, (2, 2, 4, 6, 4), 2, None, None, (1, 1, 2, (1, 2), 2), True),
}


@pytest.mark.parametrize("case", list(UNPOOL))
def test_max_unpool(case):
    nd, shape, k, stride, size, chunks, warn = UNPOOL[case]
    x = np.random.default_rng(len(case)).standard_normal(shape).astype(np.float32)
    v, i = getattr(fc, f"max_pool{nd}d")(x, k, stride, return_indices=True, **NP)
    V, I = da.from_array(v, chunks=chunks), da.from_array(i, chunks=chunks)
    fn = getattr(fd, f"max_unpool{nd}d")
    if warn:
        with chunk_warning(r"joined into one chunk each \(an index names a position anywhere") as record:
            y = fn(V, I, k, stride, output_size=size, **NP)
        said_at_the_call(record)
    else:
        with no_chunk_warning():
            y = fn(V, I, k, stride, output_size=size, **NP)
    ref = getattr(fc, f"max_unpool{nd}d")(v, i, k, stride, output_size=size, **NP)
    out = compute(y)
    assert out.dtype == ref.dtype and out.shape == ref.shape == y.shape
    assert np.array_equal(out, ref)
    # batch and channel chunks map; the spatial axes are one chunk
    lead = 2 if len(shape) == nd + 2 else 1
    assert y.chunks[:lead] == V.chunks[:lead] and all(len(c) == 1 for c in y.chunks[lead:])


def test_max_unpool_takes_what_dask_max_pool_gives():
    """fastconv.dask.max_pool2d's values and indices share their chunks: only the spatial join is said."""
    x = np.random.default_rng(2).standard_normal((2, 2, 8, 8)).astype(np.float32)
    with pytest.warns(fd.ChunkWarning) as record:
        v, i = fd.max_pool2d(da.from_array(x, chunks=(1, 1, 4, 4)), 2, return_indices=True, **NP)
        y = fd.max_unpool2d(v, i, 2, **NP)
    assert [("index names a position anywhere" in str(r.message)) for r in record] == [True]
    ref = fc.max_unpool2d(*fc.max_pool2d(x, 2, return_indices=True, **NP), 2, **NP)
    assert np.array_equal(compute(y), ref)


def test_max_unpool_indices_chunked_otherwise_are_rechunked():
    x = np.random.default_rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)
    v, i = fc.max_pool2d(x, 2, return_indices=True, **NP)
    V, I = da.from_array(v, chunks=(1, 2, 3, 3)), da.from_array(i, chunks=(2, 1, 3, 3))
    with pytest.warns(fd.ChunkWarning) as record:
        y = fd.max_unpool2d(V, I, 2, **NP)
    said_at_the_call(record)
    messages = [str(r.message) for r in record]
    assert any("indices has chunks ((2,), (1, 1, 1, 1), (3,), (3,)) but input has ((1, 1), (2, 2), (3,), (3,))"
               in m for m in messages), messages
    assert np.array_equal(compute(y), fc.max_unpool2d(v, i, 2, **NP))


def test_max_unpool_index_out_of_range_raises_when_computed():
    """Index values are data: the block holding a bad one raises the single-array op's ValueError (naming the
    values of its block: 2 to 4 of channel 1)."""
    v = np.ones((1, 2, 2), np.float32)
    i = np.array([[[0, 1]], [[2, 4]]]).reshape(1, 2, 2)
    with pytest.raises(ValueError, match=re.escape("indices must lie in [0, 4)")):
        fc.max_unpool1d(v, i, 2, **NP)
    y = fd.max_unpool1d(da.from_array(v, chunks=(1, 1, 2)), da.from_array(i, chunks=(1, 1, 2)), 2, **NP)
    with pytest.raises(ValueError, match=re.escape("indices must lie in [0, 4) (flat positions in an output "
                                                   "plane of (4,)), got values from 2 to 4")):
        compute(y)


# ---------------------------------------------------------------------------------------------------
# unfold / fold
# ---------------------------------------------------------------------------------------------------
#: (input shape, kernel_size, dilation, padding, stride, input chunks, spatial chunked?)
UNFOLD = {
    "1d": ((2, 3, 11), (3,), 2, 1, 2, (1, (1, 2), 11), False),
    "1d-spatial": ((2, 2, 11), (2,), 1, ((0, 2),), 3, (2, 1, (5, 6)), True),
    "2d": ((2, 3, 7, 6), (2, 3), (1, 2), 1, (2, 1), (1, (2, 1), (4, 3), 6), True),
    "2d-unbatched": ((4, 5, 5), 2, 1, 0, 1, ((1, 3), 5, 5), False),
    "3d": ((1, 2, 4, 5, 4), (2, 2, 3), 1, (1, 0, (1, 0)), (1, 2, 1), (1, 1, 4, (2, 3), 4), True),
}


def taps(kernel_size, nd):
    return int(np.prod(kernel_size)) if isinstance(kernel_size, tuple) else kernel_size ** nd


@pytest.mark.parametrize("case", list(UNFOLD))
def test_unfold(case):
    shape, ks, dil, pad, stride, chunks, spatial = UNFOLD[case]
    x = np.random.default_rng(len(case)).standard_normal(shape).astype(np.float32)
    kw = dict(dilation=dil, padding=pad, stride=stride)
    X = da.from_array(x, chunks=chunks)
    if spatial:
        with chunk_warning(r"joined into one chunk each \(the output's L axis flattens") as record:
            y = fd.unfold(X, ks, **kw, **NP)
        said_at_the_call(record)
    else:
        with no_chunk_warning():
            y = fd.unfold(X, ks, **kw, **NP)
    ref = fc.unfold(x, ks, **kw, **NP)
    out = compute(y)
    assert out.dtype == ref.dtype and out.shape == ref.shape == y.shape
    assert np.array_equal(out, ref)
    # channel chunk [c0, c1) gives the rows [c0*taps, c1*taps)
    nd = len(ks) if isinstance(ks, tuple) else 2
    cax = 1 if len(shape) == nd + 2 else 0
    assert y.chunks[cax] == tuple(c * taps(ks, nd) for c in X.chunks[cax])


#: (output_size, kernel_size, dilation, padding, stride, channels, batch, row chunks, L chunks, warning,
#:  output channel chunks)
FOLD = {
    "1d": ((11,), (3,), 2, 1, 2, 3, 2, (3, 6), None, None, (1, 2)),
    "2d-rows-cut-a-channel": ((7, 6), (2, 3), (1, 2), 1, (2, 1), 3, 2, (4, 8, 6), None,
                              r"input channel chunks \(4, 8, 6\) cut a channel's 6 rows .*rechunked to \(12, 6\)",
                              (2, 1)),
    "2d-L-chunked": ((5, 5), 2, 1, 0, 1, 2, 1, (4, 4), (7, 9), r"joined into one chunk each \(each output",
                     (1, 1)),
    "2d-unbatched": ((6, 5), (3, 2), 1, (1, 0), 2, 2, None, (6, 6), None, None, (1, 1)),
    "3d": ((4, 5, 4), (2, 2, 3), 1, (1, 0, (1, 0)), (1, 2, 1), 2, 1, (12, 12), (10, 20), r"each output", (1, 1)),
}


@pytest.mark.parametrize("case", list(FOLD))
def test_fold(case):
    size, ks, dil, pad, stride, channels, batch, rows, lchunks, warn, want = FOLD[case]
    kw = dict(dilation=dil, padding=pad, stride=stride)
    nd = len(size)
    image = np.zeros(((batch or 1), channels) + size, np.float32)
    L = fc.unfold(image, ks, **kw, **NP).shape[-1]
    t = taps(ks, nd)
    shape = ((batch,) if batch else ()) + (channels * t, L)
    x = np.random.default_rng(len(case)).standard_normal(shape).astype(np.float32)
    chunks = ((1,) if batch else ()) + (rows, lchunks or L)
    X = da.from_array(x, chunks=chunks)
    if warn:
        with chunk_warning(warn) as record:
            y = fd.fold(X, size, ks, **kw, **NP)
        said_at_the_call(record)
    else:
        with no_chunk_warning():
            y = fd.fold(X, size, ks, **kw, **NP)
    ref = fc.fold(x, size, ks, **kw, **NP)
    out = compute(y)
    assert out.dtype == ref.dtype and out.shape == ref.shape == y.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert y.chunks[1 if batch else 0] == want


# ---------------------------------------------------------------------------------------------------
# Arguments: the single-array op's errors, by the call itself
# ---------------------------------------------------------------------------------------------------
X2 = np.zeros((2, 4, 5, 5), np.float32)
W2 = np.zeros((4, 3, 3, 3), np.float32)
V2, I2 = fc.max_pool2d(np.zeros((2, 4, 6, 6), np.float32), 2, return_indices=True, **NP)
COLS = fc.unfold(X2, 2, **NP)

BAD = {
    "conv_transpose2d output_padding": ("conv_transpose2d", (X2, W2), dict(stride=2, output_padding=2)),
    "conv_transpose2d groups": ("conv_transpose2d", (X2, W2), dict(groups=3)),
    "conv_transpose2d weight": ("conv_transpose2d", (X2, W2[:3]), {}),
    "conv_transpose2d bias": ("conv_transpose2d", (X2, W2, np.zeros(4, np.float32)), {}),
    "conv_transpose2d same": ("conv_transpose2d", (X2, W2), dict(padding="same")),
    "conv_transpose2d padding_mode": ("conv_transpose2d", (X2, W2), dict(padding_mode="reflect")),
    "conv_transpose2d stride": ("conv_transpose2d", (X2, W2), dict(stride=0)),
    "conv_transpose2d empty": ("conv_transpose2d", (X2, W2), dict(padding=9)),
    "conv_transpose2d backend": ("conv_transpose2d", (X2, W2), dict(backend="nope")),
    "conv_transpose2d algo": ("conv_transpose2d", (X2, W2), dict(algo="nope")),
    "conv_transpose1d input dims": ("conv_transpose1d", (X2, W2), {}),
    "conv_transpose3d dtype": ("conv_transpose3d", (X2[None].astype(np.float64), W2[..., None]), {}),
    "max_unpool2d indices shape": ("max_unpool2d", (V2, I2[:, :2]), dict(kernel_size=2)),
    "max_unpool2d indices dtype": ("max_unpool2d", (V2, I2.astype(np.float32)), dict(kernel_size=2)),
    "max_unpool2d output_size": ("max_unpool2d", (V2, I2), dict(kernel_size=2, output_size=(9, 6))),
    "max_unpool2d kernel": ("max_unpool2d", (V2, I2), dict(kernel_size=0)),
    "unfold kernel_size": ("unfold", (X2,), dict(kernel_size=(1, 2, 3, 4))),
    "unfold input dims": ("unfold", (X2,), dict(kernel_size=(2,))),
    "unfold too small": ("unfold", (X2,), dict(kernel_size=6)),
    "fold rows": ("fold", (COLS[:, :15],), dict(output_size=5, kernel_size=2)),
    "fold L": ("fold", (COLS[..., :-1],), dict(output_size=5, kernel_size=2)),
    "fold output_size": ("fold", (COLS,), dict(output_size=(5, 5), kernel_size=(2, 2, 2))),
}


@pytest.mark.parametrize("case", list(BAD))
def test_argument_errors_are_the_single_array_ops(case):
    op, arrays, kw = BAD[case]
    with pytest.raises((ValueError, TypeError)) as ref:
        getattr(fc, op)(*arrays, **kw)
    lazy = tuple(da.from_array(a, chunks=1) if i < (2 if op == "max_unpool2d" else 1) else a
                 for i, a in enumerate(arrays))
    # chunks of 1 everywhere would be rechunked (a ChunkWarning, an error here): the error comes first
    with no_chunk_warning(), pytest.raises(type(ref.value), match=re.escape(str(ref.value))):
        getattr(fd, op)(*lazy, **kw)


@pytest.mark.parametrize("op, args", [
    ("conv_transpose2d", (X2, W2)),
    ("max_unpool2d", (V2, I2, 2)),
    ("unfold", (X2, 2)),
    ("fold", (COLS, 5, 2)),
])
def test_non_dask_input_is_refused(op, args):
    with pytest.raises(TypeError, match=f"fastconv.dask.{op} takes a dask.array.Array as input"):
        getattr(fd, op)(*args)


def test_indices_must_be_a_dask_array():
    with pytest.raises(TypeError, match="takes a dask.array.Array as indices"):
        fd.max_unpool2d(da.from_array(V2), I2, 2)


def test_weight_must_not_be_a_dask_array():
    with pytest.raises(TypeError, match="weight must be a NumPy or CuPy array"):
        fd.conv_transpose2d(da.from_array(X2), da.from_array(W2))
