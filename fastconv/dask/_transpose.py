"""The other forward ops over dask arrays: transposed convolutions, max_unpool, unfold and fold.

Validation as in :mod:`._ops`: the single-array op's own spec builder checks every argument on a stand-in of
the dask array's shape and dtype, so a bad argument raises the same ValueError or TypeError before any graph
is built; each block then runs the single-array op (``fastconv.conv_transpose2d``, ...) on its region.

- ``conv_transpose*d`` maps spatial chunks with a halo (:class:`._plan.Transposed`: each block reads its
  chunk and the inputs before it whose taps reach into it, and its call's padding and output_padding give
  exactly its outputs), batch chunks block by block, and input-channel chunks as a convolution's: partial
  results summed (groups=1) or whole groups each (grouped; rechunked with a :class:`ChunkWarning` where a
  chunk cuts a group).
- ``max_unpool*d``: an index names a position anywhere in its output plane, so spatial chunks are joined
  (ChunkWarning); batch and channel chunks map. ``indices`` is a dask array of ``input``'s shape; where its
  chunks differ from ``input``'s it is rechunked to them (ChunkWarning). Index values are data: one out of
  range raises the single-array op's ValueError when its block is computed.
- ``unfold``: spatial chunks are joined (the L axis flattens them; ChunkWarning); batch chunks map, and a
  channel chunk ``[c0, c1)`` gives the contiguous output rows ``[c0*prod(k), c1*prod(k))``.
- ``fold``: the L axis is joined (ChunkWarning); batch chunks map, and channel chunks map where they are
  multiples of ``prod(kernel_size)`` (whole channels; rechunked to that with a ChunkWarning otherwise).
"""
from __future__ import annotations

import functools
import itertools
import warnings

from .. import _padding, functional
from .._fold import fold as _fold, unfold as _unfold
from .._spec import conv_transpose_spec, unpool_spec
from .._spec_fold import fold_spec, unfold_spec
from . import _graph, _plan
from ._ops import ChunkWarning, _token, dask_input, fit_groups, fit_spatial, kind_of, small, standin, unbatch


def _dask(x, op: str, name: str = "input"):
    """``x`` checked as :func:`._ops.dask_input` checks it (a dask array of known chunk sizes), any shape."""
    return dask_input(x, max(getattr(x, "ndim", 3) - 2, 1), op, name)


def _standin(x):
    return standin(x.shape, x.dtype, x._meta)


def _join(x, axes, batched: bool, op: str, why: str):
    """The batched ``x`` with each axis of ``axes`` in one chunk (a :class:`ChunkWarning` saying ``why``, with
    the caller's axis numbers, where one was not)."""
    cut = [a for a in axes if len(x.chunks[a]) > 1]
    if not cut:
        return x
    shift = 0 if batched else 1
    warnings.warn(ChunkWarning(
        f"fastconv.dask.{op}: input axes {tuple(a - shift for a in cut)} have chunks "
        f"{tuple(x.chunks[a] for a in cut)}, joined into one chunk each ({why}); chunk the batch or channel "
        f"axes instead"), stacklevel=4)
    return x.rechunk({a: -1 for a in cut})


# ---------------------------------------------------------------------------------------------------
# Transposed convolution
# ---------------------------------------------------------------------------------------------------
def _transpose_call(fn, stride, dilation, backend, algo, upcast, region, blocks, arg, first, weight, bias):
    w0, w1, b0, b1, groups = arg
    w = weight[w0:w1]
    b = bias[b0:b1] if first and bias is not None else None
    if upcast:
        region, w = region.astype("float32"), w.astype("float32")
        b = None if b is None else b.astype("float32")
    pads = tuple((bl.pad_lo, bl.pad_hi) for bl in blocks)
    out_pads = tuple(bl.out_pad for bl in blocks)
    return fn(region, w, b, stride, pads, out_pads, groups, dilation, backend=backend, algo=algo)


def conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, padding_mode,
                   backend, algo):
    op = f"conv_transpose{nd}d"
    x, batched = dask_input(input, nd, op)
    weight, bias = small(weight, "weight"), small(bias, "bias")
    functional._check_names(backend, algo, "conv_input")
    _padding.check_padding_mode(padding_mode, allowed=("zeros",))
    spec = conv_transpose_spec(_standin(input), weight, bias, stride, padding, output_padding, groups, dilation,
                               spatial_dims=nd)
    functional._resolve_backend(backend, kind_of(x))
    # the spec describes the convolution whose input gradient this is: its output (out_size) is this op's
    # input, its input (in_size) this op's output
    sl = slice(3 - nd, 3)
    axes = [_plan.Transposed(n, out, k, s, d, lo) for n, out, k, s, d, (lo, _) in
            zip(spec.out_size[sl], spec.in_size[sl], spec.window[sl], spec.strides[sl], spec.dilations[sl],
                spec.pads[sl])]
    x = fit_spatial(x, axes, op, batched)
    g, cin_g, cout_g = spec.groups, spec.K_per_group, spec.C_per_group
    if g > 1:
        x = fit_groups(x, cin_g, op)
    channels, edge = [], 0
    summed = g == 1 and len(x.chunks[1]) > 1
    if g == 1:
        sources = []
        for ci, c in enumerate(x.chunks[1]):
            sources.append((ci, (edge, edge + c, 0, spec.C, 1)))
            edge += c
        channels.append(_graph.Channels(spec.C, tuple(sources)))
    else:
        for ci, c in enumerate(x.chunks[1]):
            g0, g1 = edge // cin_g, (edge + c) // cin_g
            channels.append(_graph.Channels((g1 - g0) * cout_g,
                                            ((ci, (edge, edge + c, g0 * cout_g, g1 * cout_g, g1 - g0)),)))
            edge += c
    plans = [_plan.plan_transposed(a, x.chunks[2 + i]) for i, a in enumerate(axes)]
    upcast = summed and spec.dtype == "float16"
    call = functools.partial(_transpose_call, getattr(functional, op), stride, dilation, backend, algo, upcast)
    name = f"fastconv-{op}-" + _token(x, weight, bias, stride, padding, output_padding, groups, dilation,
                                        backend, algo)
    out = _graph.build(x, plans, channels, call, name=name, dtype=input.dtype, extras=(weight, bias))
    return unbatch(out, batched)


# ---------------------------------------------------------------------------------------------------
# max_unpool
# ---------------------------------------------------------------------------------------------------
def _unpool_call(fn, kernel_size, stride, padding, output_size, backend, x, indices):
    return fn(x, indices, kernel_size, stride, padding, output_size, backend=backend)


def max_unpool(nd, input, indices, kernel_size, stride, padding, output_size, backend):
    import dask.array as da
    op = f"max_unpool{nd}d"
    x, batched = dask_input(input, nd, op)
    _dask(indices, op, "indices")
    functional._check_names(backend, "auto", "max_unpool")
    spec = unpool_spec(_standin(input), _standin(indices), kernel_size, stride, padding, output_size,
                       spatial_dims=nd)
    if kind_of(indices) != kind_of(x):
        raise TypeError(f"indices is a {kind_of(indices)} array but input is a {kind_of(x)} array; "
                        f"move them to one place first")
    functional._resolve_backend(backend, kind_of(x))
    idx = indices if batched else indices[None]
    if idx.chunks != x.chunks:
        warnings.warn(ChunkWarning(
            f"fastconv.dask.{op}: indices has chunks {indices.chunks} but input has {input.chunks}; indices was "
            f"rechunked to input's. Chunk both alike (as max_pool returns them) to avoid the rechunk"),
            stacklevel=3)
    spatial = range(2, 2 + nd)
    x = _join(x, spatial, batched, op, "an index names a position anywhere in its output plane")
    idx = idx.rechunk(x.chunks)
    outs = spec.in_size[3 - nd:]
    call = functools.partial(_unpool_call, getattr(functional, op), kernel_size, stride, padding, outs, backend)
    name = f"fastconv-{op}-" + _token(x, idx, kernel_size, stride, padding, output_size, backend)
    out = da.map_blocks(call, x, idx, name=name, dtype=input.dtype,
                        chunks=x.chunks[:2] + tuple((o,) for o in outs), meta=x._meta)
    return unbatch(out, batched)


# ---------------------------------------------------------------------------------------------------
# unfold / fold
# ---------------------------------------------------------------------------------------------------
def unfold(input, kernel_size, dilation, padding, stride, backend):
    from dask.array.utils import meta_from_array
    _dask(input, "unfold")
    functional._check_names(backend, "auto", "unfold")
    spec = unfold_spec(_standin(input), kernel_size, dilation, padding, stride)
    functional._resolve_backend(backend, kind_of(input))
    nd = spec.spatial_dims
    x = input if spec.batched else input[None]
    x = _join(x, range(2, 2 + nd), spec.batched, "unfold", "the output's L axis flattens every spatial position")
    taps = spec.window_elems
    call = functools.partial(_unfold, kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride,
                             backend=backend)
    name = "fastconv-unfold-" + _token(x, kernel_size, dilation, padding, stride, backend)
    out = x.map_blocks(call, name=name, dtype=input.dtype, drop_axis=list(range(3, 2 + nd)),
                       chunks=(x.chunks[0], tuple(c * taps for c in x.chunks[1]), (spec.L,)),
                       meta=meta_from_array(x, ndim=3))
    return unbatch(out, spec.batched)


def fold(input, output_size, kernel_size, dilation, padding, stride, backend):
    from dask.array.utils import meta_from_array
    _dask(input, "fold")
    functional._check_names(backend, "auto", "fold")
    spec = fold_spec(_standin(input), output_size, kernel_size, dilation, padding, stride)
    functional._resolve_backend(backend, kind_of(input))
    nd = spec.spatial_dims
    x = input if spec.batched else input[None]
    x = _join(x, (2,), spec.batched, "fold", "each output position sums entries from across the L axis")
    taps = spec.window_elems
    edges = list(itertools.accumulate(x.chunks[1]))
    if any(e % taps for e in edges):
        cut = sorted({e // taps * taps for e in edges} - {0})
        new = tuple(b - a for a, b in zip([0] + cut, cut))
        warnings.warn(ChunkWarning(
            f"fastconv.dask.fold: input channel chunks {x.chunks[1]} cut a channel's {taps} rows "
            f"(prod(kernel_size)); rechunked to {new}. Chunk the input's axis {1 if spec.batched else 0} "
            f"in multiples of {taps} to choose"), stacklevel=3)
        x = x.rechunk({1: new})
    outs = spec.in_size[3 - nd:]
    call = functools.partial(_fold, output_size=outs, kernel_size=kernel_size, dilation=dilation,
                             padding=padding, stride=stride, backend=backend)
    name = "fastconv-fold-" + _token(x, output_size, kernel_size, dilation, padding, stride, backend)
    out = x.map_blocks(call, name=name, dtype=input.dtype, new_axis=list(range(3, 2 + nd)),
                       chunks=(x.chunks[0], tuple(c // taps for c in x.chunks[1])) + tuple((o,) for o in outs),
                       meta=meta_from_array(x, ndim=2 + nd))
    return unbatch(out, spec.batched)


