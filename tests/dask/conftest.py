"""Shared helpers of the fastconv.dask tests: chunkings, computing a graph, comparing with the single array.

Expected values always come from the single-array op with ``backend="numpy"`` (the oracle) on the whole,
unchunked array; the dask side runs the same backend, so a difference is the blocking's, not a backend's.
Graphs are computed with Dask's synchronous scheduler (one thread: fast and deterministic) unless a test is
about another scheduler. test_plan.py needs no Dask; every other module skips itself without it.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fastconv.testing as ft

#: few examples, the same ones every run (the suite's CI budget for tests/dask/ is about 25 s)
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

NP = {"backend": "numpy"}


@st.composite
def chunking(draw, n: int):
    """Sizes of the chunks of an axis of ``n`` positions: one chunk, size-1 chunks, or a random cut."""
    kind = draw(st.sampled_from(["one", "ones", "random", "random"]))
    if kind == "one" or n <= 1:
        return (n,)
    if kind == "ones":
        return (1,) * n
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(4, n - 1))))
    sizes = tuple(b - a for a, b in zip([0] + cuts, cuts + [n]))
    return sizes


def compute(*arrays, scheduler="sync"):
    """The NumPy results of dask arrays (one, or a tuple)."""
    import dask
    out = dask.compute(*arrays, scheduler=scheduler)
    return out[0] if len(out) == 1 else out


def numpy_pad_mode(mode: str) -> str:
    """torch's padding_mode as NumPy's np.pad mode (written out here, not read from fastconv)."""
    return {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]


def assert_conv_equal(out, ref, x, w, b, stride, padding, dilation, groups, padding_mode, nd):
    """``out`` equals the oracle's ``ref`` within fastconv.testing's conv tolerance (on the padded input
    for a padding mode: its values are the input's)."""
    from fastconv._spec import conv_spec
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    batched = x.ndim == nd + 2
    xb = x if batched else x[None]
    spec = conv_spec(xb, w, b, stride, padding, dilation, groups, spatial_dims=nd)
    if padding_mode != "zeros":
        pads = ((0, 0), (0, 0)) + tuple(spec.pads[3 - nd:])
        xb = np.pad(xb, pads, mode=numpy_pad_mode(padding_mode))
        spec = conv_spec(xb, w, b, stride, 0, dilation, groups, spatial_dims=nd)
    tol = ft.conv_tolerance(spec, xb, w, b).reshape(spec.output_shape)
    if not batched:
        tol = tol[0]
    ft.assert_within(out.astype(np.float64), ref.astype(np.float64), tol, spec)


def assert_bitwise(out, ref):
    """Same shape, dtype and bits (NaN where NaN)."""
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, o.shape, r.dtype, r.shape)
        assert np.array_equal(o, r, equal_nan=True), f"differs at {np.argwhere(~((o == r) | (o != o)))[:3]}"


def assert_close(out, ref, dtype):
    """Averages and lp pools: relative to the dtype (a block sums the same window in the same order)."""
    assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.dtype, ref.shape)
    tol = {"float16": 2e-3, "float32": 2e-5, "float64": 1e-12}[str(np.dtype(dtype))]
    np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=tol, atol=tol,
                               equal_nan=True)


def graph_tasks(y, x):
    """Tasks in ``y``'s graph that are not ``x``'s own."""
    return len(dict(y.__dask_graph__())) - len(dict(x.__dask_graph__()))


# ---------------------------------------------------------------------------------------------------
# The graph's size, by the rule
# ---------------------------------------------------------------------------------------------------
def axis_blocks(n, k, s, d, lo, hi, chunks):
    """The rule for one axis (no ceil_mode): output o belongs to the chunk its window starts in (outputs
    starting in the left padding to the first). Returns [(outputs, [(chunk, whole?) the block reads],
    how far it reads past its own chunk)]."""
    ext = d * (k - 1) + 1
    out = (n + lo + hi - ext) // s + 1
    edges = np.cumsum((0,) + tuple(chunks))
    owner = [int(np.searchsorted(edges, min(max(0, o * s - lo), n - 1), side="right")) - 1 for o in range(out)]
    groups = []
    for o in range(out):
        if groups and groups[-1][1] == owner[o]:
            groups[-1][0].append(o)
        else:
            groups.append(([o], owner[o]))
    blocks = []
    for outs, home in groups:
        a, b = max(0, outs[0] * s - lo), min(n, outs[-1] * s - lo + ext)
        if len(groups) == 1:
            a, b = 0, n          # one block: the single-array call on the whole axis
        pieces = [(i, a <= edges[i] and edges[i + 1] <= b) for i in range(len(chunks))
                  if max(a, edges[i]) < min(b, edges[i + 1])]
        blocks.append((len(outs), pieces, b - edges[home + 1]))
    return blocks


def expected_tasks(axes, batch_chunks, channel_chunks, summed):
    """One task per output block, one per halo piece (a part of a chunk, one per combination of each axis's
    pieces that is not whole chunks on every axis), and where input channels are summed one partial per
    channel chunk (each with its own halo pieces) plus the sum."""
    total = 0
    for combo in np.ndindex(*[len(a) for a in axes]):
        pieces = [axes[a][i][1] for a, i in enumerate(combo)]
        n_pieces = int(np.prod([len(p) for p in pieces]))
        n_whole = int(np.prod([sum(w for _, w in p) for p in pieces]))
        halo = n_pieces - n_whole
        if summed:
            total += batch_chunks * (channel_chunks + 1 + channel_chunks * halo)
        else:
            total += batch_chunks * channel_chunks * (1 + halo)
    return total
