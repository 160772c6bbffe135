"""The Dask graph of one op (or one stack of ops) over a chunked array: a task per output block, reading its
input chunks plus halo slices of its neighbours.

Layout: every array here is batched, ``(N, C, *spatial)``. An output block is (batch chunk, output-channel
block, one :class:`~fastconv.dask._plan.Block` per spatial axis). Its task gathers the input region the
blocks name -- whole chunks by key, the parts of neighbouring chunks by one small slicing task each (so only
the halo moves between workers) -- joins them, and runs the op's call on it. A convolution whose input
channels are chunked runs one partial call per channel chunk, where that chunk lives, and a task sums them.

Tasks are Dask's documented tuple form; each function carries its constants in a ``functools.partial``, so
Dask never mistakes an argument for a key.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Tuple

from . import _plan


@dataclass(frozen=True)
class Channels:
    """One output-channel block: ``size`` output channels from the input-channel chunks ``sources`` (each
    ``(input chunk index, arg)``; ``arg`` is handed to the call). More than one source: their results are
    summed (a convolution's input-channel chunks)."""

    size: int
    sources: Tuple[Tuple[int, Any], ...]


def _pieces(chunks: Sequence[int], lo: int, hi: int):
    """[(chunk index, slice inside that chunk, whole chunk?)] covering real positions [lo, hi)."""
    out, edge = [], 0
    for i, c in enumerate(chunks):
        a, b = max(lo, edge), min(hi, edge + c)
        if a < b:
            out.append((i, slice(a - edge, b - edge), a == edge and b == edge + c))
        edge += c
    return out


def _join(grid: Tuple[int, ...], pieces):
    """The region from its pieces (row-major over ``grid``, one entry per spatial axis)."""
    if len(pieces) == 1:
        return pieces[0]
    xp = _module(pieces[0])

    def join(axis, items):
        if axis == len(grid):
            return items[0]
        step = len(items) // grid[axis]
        parts = [join(axis + 1, items[i * step:(i + 1) * step]) for i in range(grid[axis])]
        return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=2 + axis)

    return join(0, list(pieces))


def _module(a):
    if (type(a).__module__ or "").startswith("cupy"):
        import cupy
        return cupy
    import numpy
    return numpy


def _compute(call, grid, blocks, arg, first, pieces, *extras):
    return call(_join(grid, pieces), blocks, arg, first, *extras)


def _sum(dtype, *parts):
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total.astype(dtype, copy=False)


def build(x, plans: Sequence[Sequence[_plan.Block]], channels: Sequence[Channels], call: Callable, *,
          name: str, dtype, extras: Sequence[Any] = (), outputs: int = 1, output_dtypes=None,
          partial_dtype=None):
    """The op's output: a dask array (a tuple of ``outputs`` of them when the call returns a tuple).

    ``x``: the batched dask input. ``plans``: the blocks of each spatial axis. ``channels``: the output-channel
    blocks. ``call(region, blocks, arg, first, *extras)``: one block's result from its joined input region
    (``first``: the first, or only, source of its channel block: add the bias there). ``extras``: arrays every
    call gets (the weight, the bias), stored once in the graph. ``partial_dtype``: the dtype of a summed
    block's partial results (float32 for float16 inputs), cast back to ``dtype`` by the sum.
    """
    import dask.array as da
    from dask.array.utils import meta_from_array
    from dask.highlevelgraph import HighLevelGraph

    nd = len(plans)
    layer: dict = {}
    extra_keys = []
    for i, e in enumerate(extras):
        if e is None:
            extra_keys.append(None)
            continue
        key = (f"{name}-extra", i)
        layer[key] = e
        extra_keys.append(key)
    spatial_chunks = x.chunks[2:]
    regions = [[_pieces(spatial_chunks[a], b.in_lo, b.in_hi) for b in plans[a]] for a in range(nd)]
    main = name if outputs == 1 else f"{name}-tuple"
    for nb in range(len(x.chunks[0])):
        for j, ch in enumerate(channels):
            for bidx in itertools.product(*(range(len(p)) for p in plans)):
                blocks = tuple(plans[a][bidx[a]] for a in range(nd))
                axis_pieces = [regions[a][bidx[a]] for a in range(nd)]
                grid = tuple(len(p) for p in axis_pieces)
                parts = []
                for s, (ci, arg) in enumerate(ch.sources):
                    keys = []
                    for combo in itertools.product(*axis_pieces):
                        src = (x.name, nb, ci) + tuple(p[0] for p in combo)
                        if all(p[2] for p in combo):
                            keys.append(src)
                            continue
                        hkey = (f"{name}-halo", nb, ci) + bidx + tuple(p[0] for p in combo)
                        index = (slice(None), slice(None)) + tuple(p[1] for p in combo)
                        layer[hkey] = (_getitem(index), src)
                        keys.append(hkey)
                    task = (functools.partial(_compute, call, grid, blocks, arg, s == 0), keys,
                            *[k for k in extra_keys])
                    if len(ch.sources) == 1:
                        layer[(main, nb, j) + bidx] = task
                    else:
                        pkey = (f"{name}-partial", nb, j, s) + bidx
                        layer[pkey] = task
                        parts.append(pkey)
                if parts:
                    layer[(main, nb, j) + bidx] = (functools.partial(_sum, dtype), *parts)
    chunks = (x.chunks[0], tuple(c.size for c in channels)) + tuple(_plan.sizes(p) for p in plans)
    graph = HighLevelGraph.from_collections(main, layer, dependencies=[x])
    if outputs == 1:
        return da.Array(graph, main, chunks, meta=meta_from_array(x, ndim=2 + nd, dtype=dtype))
    out = []
    dtypes = output_dtypes or (dtype,) * outputs
    for i in range(outputs):
        sub = f"{name}-{i}"
        sel = {(sub,) + k[1:]: (_getitem(i), k) for k in list(layer) if k[0] == main}
        g = HighLevelGraph.from_collections(sub, sel, dependencies=[da.Array(graph, main, chunks,
                                                                               meta=meta_from_array(x))])
        out.append(da.Array(g, sub, chunks, meta=meta_from_array(x, ndim=2 + nd, dtype=dtypes[i])))
    return tuple(out)


def _getitem(index):
    """``a[index]`` as a one-argument function (the index bound, so Dask does not read it as a task)."""
    return functools.partial(_take, index)


def _take(index, a):
    return a[index]
