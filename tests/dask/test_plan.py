"""fastconv.dask._plan against the rule, with no Dask: the blocks of a chunked axis, and a 1-D window loop
written here from the definition, run per block on its region with its pads, equal to the loop on the whole
axis.

The loop (max, mean with the divisor rules, adaptive windows) and the output count are written out from
torch's definitions, not taken from fastconv: a window of ``k`` taps ``d`` apart starts at ``o*s - pad_lo``;
without ceil_mode it must end inside the padded axis, with ceil_mode one more may run past the end if it
starts inside the input or the left padding; padding is -inf for max and not a tap for mean (the divisor
counts it when count_include_pad, up to the end of the right padding).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fastconv.dask import _plan

from .conftest import SETTINGS, chunking

PLAN_SETTINGS = SETTINGS.__class__(SETTINGS, max_examples=60)


# ---------------------------------------------------------------------------------------------------
# The rule, written out
# ---------------------------------------------------------------------------------------------------
def n_out(n, k, s, d, lo, hi, ceil):
    """How many windows the axis has: torch's pooling_output_shape, written out (ceil_mode rounds up, then
    drops a last window that would start past the input and the left padding)."""
    span = n + lo + hi - (d * (k - 1) + 1)
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + lo:
        out -= 1
    return out


def window_loop(a, kind, k, s, d, lo, hi, ceil, count_include_pad=True, divisor=None):
    """(values, argmax positions or None) of a 1-D window op over ``a``."""
    n = len(a)
    vals, idx = [], []
    for o in range(n_out(n, k, s, d, lo, hi, ceil)):
        start = o * s - lo
        taps = [start + t * d for t in range(k)]
        real = [p for p in taps if 0 <= p < n]
        if kind == "max":
            best = max(real, key=lambda p: (a[p], -p)) if real else None
            vals.append(a[best] if real else -math.inf)
            idx.append(best)
        else:
            total = sum(a[p] for p in real)
            if divisor is not None:
                div = divisor
            elif count_include_pad:
                div = sum(1 for p in taps if -lo <= p < n + hi)
            else:
                div = len(real)
            vals.append(total / div if div else math.nan)
    return np.array(vals, dtype=np.float64), (idx if kind == "max" else None)


def adaptive_loop(a, out, kind):
    n = len(a)
    vals = []
    for i in range(out):
        w = a[(i * n) // out: -(-((i + 1) * n) // out)]
        vals.append(max(w) if kind == "max" else sum(w) / len(w))
    return np.array(vals, dtype=np.float64)


def assert_tiles(blocks, out):
    """The blocks cover [0, out) exactly once, in order, none empty."""
    assert blocks[0].out_lo == 0 and blocks[-1].out_hi == out, blocks
    for a, b in zip(blocks, blocks[1:]):
        assert a.out_hi == b.out_lo, blocks
    assert all(b.out_hi > b.out_lo for b in blocks), blocks


def assert_edges_only(b, n):
    """A block reads real positions only, and pads only at the array's true edges."""
    assert 0 <= b.in_lo < b.in_hi <= n, b
    assert b.pad_lo >= 0 and b.pad_hi >= 0, b
    assert b.pad_lo == 0 or b.in_lo == 0, f"{b}: padding inside the array"
    assert b.pad_hi == 0 or b.in_hi == n, f"{b}: padding inside the array"


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------
@st.composite
def window_axis(draw, n=None):
    n = draw(st.integers(1, 30)) if n is None else n
    k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ceil = draw(st.booleans())
    # pools (the only ops with ceil_mode) pad each side by at most d*(k-1) (fastconv's rule for per-side
    # pairs; torch's symmetric padding allows only k // 2)
    most = d * (k - 1) if ceil else 4
    lo, hi = draw(st.integers(0, most)), draw(st.integers(0, most))
    return n, k, s, d, lo, hi, ceil


# ---------------------------------------------------------------------------------------------------
# One axis
# ---------------------------------------------------------------------------------------------------
@PLAN_SETTINGS
@given(st.data())
def test_window_blocks_match_the_whole_axis(data):
    n, k, s, d, lo, hi, ceil = data.draw(window_axis())
    out = n_out(n, k, s, d, lo, hi, ceil)
    assume(out > 0)
    chunks = data.draw(chunking(n))
    blocks = _plan.plan(_plan.Window(n, k, s, d, lo, hi, ceil), chunks)
    assert_tiles(blocks, out)
    a = np.random.default_rng(n * 131 + k).permutation(n).astype(np.float64) - n / 2
    cip = data.draw(st.booleans())
    whole_max, whole_idx = window_loop(a, "max", k, s, d, lo, hi, ceil)
    whole_mean, _ = window_loop(a, "mean", k, s, d, lo, hi, ceil, cip)
    whole_div, _ = window_loop(a, "mean", k, s, d, lo, hi, ceil, divisor=3)
    for b in blocks:
        assert_edges_only(b, n)
        region = a[b.in_lo:b.in_hi]
        args = (k, s, d, b.pad_lo, b.pad_hi, ceil)
        assert n_out(len(region), *args) == b.size, (b, chunks)
        got_max, got_idx = window_loop(region, "max", *args)
        np.testing.assert_array_equal(got_max, whole_max[b.out_lo:b.out_hi], err_msg=str(b))
        assert [None if i is None else i + b.in_lo for i in got_idx] == whole_idx[b.out_lo:b.out_hi], b
        got_mean, _ = window_loop(region, "mean", *args, cip)
        np.testing.assert_array_equal(got_mean, whole_mean[b.out_lo:b.out_hi], err_msg=str(b))
        got_div, _ = window_loop(region, "mean", *args, divisor=3)
        np.testing.assert_array_equal(got_div, whole_div[b.out_lo:b.out_hi], err_msg=str(b))


@PLAN_SETTINGS
@given(st.integers(1, 30), st.integers(1, 33), st.data())
def test_adaptive_blocks_match_the_whole_axis(n, out, data):
    chunks = data.draw(chunking(n))
    blocks = _plan.plan(_plan.Adaptive(n, out), chunks)
    assert_tiles(blocks, out)
    a = np.random.default_rng(n).permutation(n).astype(np.float64)
    whole = {kind: adaptive_loop(a, out, kind) for kind in ("max", "mean")}
    for b in blocks:
        assert_edges_only(b, n)
        assert b.pad_lo == b.pad_hi == 0
        region = a[b.in_lo:b.in_hi]
        for kind in ("max", "mean"):
            np.testing.assert_array_equal(adaptive_loop(region, b.size, kind), whole[kind][b.out_lo:b.out_hi])


def test_adaptive_blocks_split_where_windows_do_not_overlap():
    """12 -> 4: windows of 3, every multiple of 3 can be a boundary; 10 -> 4: only 5 (o = 2) can be, so a
    chunk edge at 3 or 6 gives that boundary (the first output of the chunk, snapped down), one at 2 none."""
    assert _plan.sizes(_plan.plan(_plan.Adaptive(12, 4), (3, 3, 3, 3))) == (1, 1, 1, 1)
    assert _plan.sizes(_plan.plan(_plan.Adaptive(12, 4), (4, 4, 4))) == (2, 1, 1)
    assert _plan.sizes(_plan.plan(_plan.Adaptive(10, 4), (3, 3, 4))) == (2, 2)
    assert _plan.sizes(_plan.plan(_plan.Adaptive(10, 4), (2, 8))) == (4,)
    assert _plan.sizes(_plan.plan(_plan.Adaptive(10, 4), (5, 5))) == (2, 2)


def test_block_belongs_to_the_chunk_its_window_starts_in():
    """3 taps, stride 1, padding 1 over chunks (4, 4, 4): output o starts at o - 1, so chunk [4, 8) owns
    outputs 5..8 and reads positions 4..9 (two of the next chunk); the first block pads on the left."""
    blocks = _plan.plan(_plan.Window(12, 3, 1, 1, 1, 1), (4, 4, 4))
    assert blocks == (_plan.Block(0, 5, 0, 6, 1, 0), _plan.Block(5, 9, 4, 10, 0, 0),
                      _plan.Block(9, 12, 8, 12, 0, 1))


def test_plan_refuses_chunks_that_do_not_add_up():
    with np.testing.assert_raises_regex(ValueError, "do not add up"):
        _plan.plan(_plan.Window(10, 3), (4, 4))


@PLAN_SETTINGS
@given(st.data())
def test_a_block_reads_at_most_the_window_minus_one_past_its_chunk(data):
    """Each output's window starts in its own chunk (the block it belongs to), so it reads at most
    ``d*(k-1)`` positions past that chunk's end."""
    n, k, s, d, lo, hi, ceil = data.draw(window_axis())
    axis = _plan.Window(n, k, s, d, lo, hi, ceil)
    assume(n_out(n, k, s, d, lo, hi, ceil) > 0)
    chunks = data.draw(chunking(n))
    edges = np.cumsum((0,) + chunks)
    ext = d * (k - 1) + 1
    for b in _plan.plan(axis, chunks):
        for o in range(b.out_lo, b.out_hi):
            start = o * s - lo
            if start < n:      # (a window past the input reads only padding)
                home = int(np.searchsorted(edges, max(0, start), side="right")) - 1
                assert b.in_lo <= max(0, start) and min(n, start + ext) <= b.in_hi, (o, b)
                assert min(n, start + ext) - edges[home + 1] <= d * (k - 1), (o, b, chunks, axis)


def test_window_reach_is_what_a_block_reads_past_its_chunk():
    """Window.reach is "how far past its own chunk a block reads", what fastconv.dask joins shorter chunks to
    (so that each block reads its own chunk and at most the next one); Window.halo is the overlap of
    neighbouring blocks' reads, extent - stride. 3 taps, stride 2 over chunks (5, 5):
    output 2 starts at 4, in the first chunk, and reads 4, 5, 6: two positions of the next chunk, though
    extent - stride is 1. (Over chunks (1, 1) a max pool of 2, stride 2, reads 1 past, its halo says 0.)"""
    axis = _plan.Window(10, 3, 2)
    blocks = _plan.plan(axis, (5, 5))
    assert blocks[0] == _plan.Block(0, 3, 0, 7)
    assert axis.reach == 2 and axis.halo == 1
    assert _plan.Window(2, 2, 2).reach == 1


# ---------------------------------------------------------------------------------------------------
# Stacks
# ---------------------------------------------------------------------------------------------------
@st.composite
def stack_axes(draw):
    """2-3 window layers (max or mean) with an elementwise step somewhere: [(kind, (k, s, d, lo, hi,
    ceil), count_include_pad) or None], and the input size."""
    n = draw(st.integers(8, 40))
    layers, size = [], n
    for _ in range(draw(st.integers(2, 3))):
        if draw(st.booleans()):
            layers.append(None)
        _, k, s, d, lo, hi, ceil = draw(window_axis(n=size))
        out = n_out(size, k, s, d, lo, hi, ceil)
        assume(out > 0)
        layers.append((draw(st.sampled_from(["max", "mean"])), (k, s, d, lo, hi, ceil), draw(st.booleans()),
                       size))
        size = out
    return n, layers


def run_stack(a, layers, pads=None):
    """The stack on ``a``; ``pads[i]``: layer i's (lo, hi) instead of its own (a block's call)."""
    sizes = []
    for i, layer in enumerate(layers):
        if layer is None:
            a = a * a - 1.0
            continue
        kind, (k, s, d, lo, hi, ceil), cip, _ = layer
        if pads is not None:
            lo, hi = pads[i]
        a, _ = window_loop(a, kind, k, s, d, lo, hi, ceil, cip)
        sizes.append(len(a))
    return a, sizes


@PLAN_SETTINGS
@given(stack_axes(), st.data())
def test_stack_blocks_match_the_whole_stack(stack, data):
    n, layers = stack
    axes = [None if layer is None else _plan.Window(layer[3], *layer[1]) for layer in layers]
    chunks = data.draw(chunking(n))
    blocks = _plan.plan_stack(axes, chunks)
    a = np.random.default_rng(n).permutation(n).astype(np.float64) - n / 2
    whole, _ = run_stack(a, layers)
    last = [b.layers[-1] for b in blocks]     # (the last layer is a window: stack_axes ends with one)
    assert_tiles(last, len(whole))
    for b in blocks:
        windows = [(layer, blk) for layer, blk in zip(layers, b.layers) if layer is not None]
        assert all((blk is None) == (layer is None) for layer, blk in zip(layers, b.layers))
        for (layer, blk) in windows:
            assert_edges_only(blk, layer[3])
        # each layer computes exactly what the next one reads
        for (_, blk), (_, nxt) in zip(windows, windows[1:]):
            assert (blk.out_lo, blk.out_hi) == (nxt.in_lo, nxt.in_hi), b
        pads = [None if blk is None else (blk.pad_lo, blk.pad_hi) for blk in b.layers]
        got, sizes = run_stack(a[b.in_lo:b.in_hi], layers, pads)
        assert sizes == [blk.size for _, blk in windows], b
        lo, hi = windows[-1][1].out_lo, windows[-1][1].out_hi
        np.testing.assert_array_equal(got, whole[lo:hi], err_msg=f"{b} over chunks {chunks}")
