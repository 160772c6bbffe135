"""fastconv's forward convolutions and pools over dask arrays: validate as the single-array op does, plan the
blocks (:mod:`._plan`), build the graph (:mod:`._graph`).

Every op checks its arguments with the single-array op's own spec builder, on a stand-in array of the dask
array's shape and dtype (a broadcast zero: no memory), so a bad argument raises the same ValueError or
TypeError, naming the same argument, before any graph is built. Each block then runs the single-array op
(``fastconv.conv2d``, ...) on its region, with the backend and algorithm the caller named, on whatever
array type the chunks hold (NumPy or CuPy).
"""
from __future__ import annotations

import functools
import sys
import warnings

from .. import _padding, functional
from .._spec import conv_spec, pool_spec
from . import _graph, _plan


class ChunkWarning(UserWarning):
    """fastconv.dask rechunked an input: a chunking that could not be used as it was (a spatial chunk smaller
    than the halo its blocks read, channel chunks that cut a convolution's groups). The message says what
    it did and how to choose the chunks yourself."""


# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------
def dask_input(x, nd: int, op: str, name: str = "input"):
    """``(x batched, batched?)``: ``x`` must be a dask array of known chunk sizes, (N, C, *spatial) or unbatched
    (C, *spatial)."""
    import dask.array as da
    if not isinstance(x, da.Array):
        single = "run the layers one after another" if op == "sequential" else f"call fastconv.{op}"
        raise TypeError(f"fastconv.dask.{op} takes a dask.array.Array as {name}, got {type(x).__name__}; for a "
                        f"NumPy or CuPy array {single}, or wrap it with dask.array.from_array(...)")
    if any(c != c for c in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call {name}.compute_chunk_sizes() "
                         f"first")
    if x.ndim not in (nd + 1, nd + 2):
        return x, True   # the spec builder gives the message (on the stand-in)
    batched = x.ndim == nd + 2
    return (x if batched else x[None]), batched


def small(a, name: str):
    """A weight or bias: a NumPy or CuPy array, sent whole with the graph, never a dask array."""
    import dask.array as da
    if isinstance(a, da.Array):
        raise TypeError(f"{name} must be a NumPy or CuPy array (it is small and goes whole to every task), got a "
                        f"dask array; pass {name}.compute()")
    return a


def standin(shape, dtype, meta):
    """An array of ``shape`` and ``dtype`` that holds no memory (a broadcast zero), of ``meta``'s kind: what the
    spec builders validate instead of the dask array."""
    xp = _graph._module(meta)
    return xp.broadcast_to(xp.zeros((), dtype=dtype), tuple(shape))


def kind_of(x) -> str:
    return "cupy" if (type(x._meta).__module__ or "").startswith("cupy") else "numpy"


def unbatch(out, batched: bool):
    if batched:
        return out
    return tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]


# ---------------------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------------------
def _warn(message: str) -> None:
    """A :class:`ChunkWarning` pointing at the caller's line: the first frame outside fastconv.dask, however
    deep the call (an op, ``sequential``) is inside it."""
    frame, level = sys._getframe(0), 1
    while frame is not None and (frame.f_globals.get("__name__") or "").startswith("fastconv.dask"):
        frame, level = frame.f_back, level + 1
    warnings.warn(ChunkWarning(message), stacklevel=level)


def _merged(chunks, need: int):
    """``chunks`` with each interior chunk smaller than ``need`` joined to the ones after it (what is left at
    the end joins the last chunk). The first and last chunks may be any size: a block reads past its own
    chunk into one neighbour only, and neither end chunk has a neighbour on its far side."""
    out, acc = [chunks[0]], 0
    for c in chunks[1:-1]:
        acc += c
        if acc >= need:
            out.append(acc)
            acc = 0
    out.append(acc + chunks[-1])
    return tuple(out)


def fit_spatial(x, axes, op: str, batched: bool = True):
    """``x`` rechunked (with a :class:`ChunkWarning`) where an interior spatial chunk is shorter than what a
    block reads beyond its own chunk (``axis.reach``): each block then reads its own chunk and at most one
    neighbour. ``batched``: whether the user's array had the batch axis (for the axis numbers said)."""
    shift = 0 if batched else 1
    for a, axis in enumerate(axes):
        chunks = x.chunks[2 + a]
        need = getattr(axis, "reach", 0)
        if len(chunks) < 3 or need < 1 or min(chunks[1:-1]) >= need:
            continue
        new = _merged(chunks, need)
        _warn(
            f"fastconv.dask.{op}: input axis {2 + a - shift} has chunks {chunks}, but an output block reads up "
            f"to {need} position(s) beyond its own chunk; chunks shorter than that (but the first and the "
            f"last) were joined to their neighbours, so that a block reads at most one neighbour: rechunked "
            f"to {new}. Rechunk the input yourself (x.rechunk({{{2 + a - shift}: ...}})) to choose the chunks")
        x = x.rechunk({2 + a: new})
    return x


def fit_groups(x, per_group: int, op: str):
    """``x`` rechunked (with a :class:`ChunkWarning`) so that every channel chunk holds whole groups."""
    chunks = x.chunks[1]
    edges, e = [], 0
    for c in chunks:
        e += c
        edges.append(e)
    if all(e % per_group == 0 for e in edges):
        return x
    cut = sorted({e // per_group * per_group for e in edges} - {0})
    new = tuple(b - a for a, b in zip([0] + cut, cut))
    _warn(
        f"fastconv.dask.{op}: channel chunks {chunks} cut the convolution's groups ({per_group} channels "
        f"each); rechunked to {new}. Rechunk the input's channels to multiples of {per_group} to choose")
    return x.rechunk({1: new})


def one_channel_chunk(x, op: str, why: str):
    if len(x.chunks[1]) == 1:
        return x
    _warn(
        f"fastconv.dask.{op}: channel chunks {x.chunks[1]} joined into one ({why}); chunk the batch or "
        f"spatial axes instead")
    return x.rechunk({1: -1})


def pad_by_mode(x, pads, mode: str):
    """The batched dask array padded by ``mode`` once, at its true edges (dask.array.pad, NumPy's modes), with
    the padding joined to the first and last chunk of each axis."""
    import dask.array as da
    y = da.pad(x, ((0, 0), (0, 0)) + tuple(pads), mode=_padding._NUMPY_MODE[mode])
    chunks = list(x.chunks[:2])
    for c, (lo, hi) in zip(x.chunks[2:], pads):
        chunks.append((c[0] + lo + hi,) if len(c) == 1 else (c[0] + lo,) + c[1:-1] + (c[-1] + hi,))
    return y.rechunk(tuple(chunks))


def _token(*parts) -> str:
    from dask.base import tokenize
    return tokenize(*parts)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
def _conv_call(fn, stride, dilation, backend, algo, upcast, region, blocks, arg, first, weight, bias):
    k0, k1, c0, c1, groups = arg
    w = weight[k0:k1, c0:c1]
    b = bias[k0:k1] if first and bias is not None else None
    if upcast:
        region, w = region.astype("float32"), w.astype("float32")
        b = None if b is None else b.astype("float32")
    pads = tuple((bl.pad_lo, bl.pad_hi) for bl in blocks)
    return fn(region, w, b, stride, pads, dilation, groups, backend=backend, algo=algo)


def out_chunks(value, K: int, groups: int):
    """``out_channel_chunks`` as chunk sizes along the output channels: None (one chunk), an int (chunks of that
    many, the last one shorter) or sizes adding up to K. Only for groups=1: a grouped convolution's output
    channels follow its input-channel chunks, whole groups each."""
    if value is None:
        return (K,)
    if groups != 1:
        raise ValueError(f"out_channel_chunks is for groups=1 only (got groups={groups}): a grouped "
                         f"convolution's output channels follow its input-channel chunks, whole groups each")
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
        raise TypeError(f"out_channel_chunks must be None, an int or a tuple of ints, got "
                        f"{type(value).__name__} {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"out_channel_chunks must be positive, got {value}")
        return tuple(min(value, K - k) for k in range(0, K, value))
    sizes = tuple(value)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes) or sum(sizes) != K:
        raise ValueError(f"out_channel_chunks must be positive ints adding up to the {K} output channels, got "
                         f"{value!r}")
    return sizes


def conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo,
         out_channel_chunks=None):
    op = f"conv{nd}d"
    x, batched = dask_input(input, nd, op)
    weight, bias = small(weight, "weight"), small(bias, "bias")
    functional._check_names(backend, algo, "conv")
    mode = _padding.check_padding_mode(padding_mode)
    meta = x._meta
    spec = conv_spec(standin(input.shape, input.dtype, meta), weight, bias, stride, padding, dilation, groups,
                     spatial_dims=nd)
    functional._resolve_backend(backend, kind_of(x))
    k_chunks = out_chunks(out_channel_chunks, spec.K, spec.groups)
    if mode != "zeros" and spec.is_padded:
        pads = spec.pads[3 - nd:]
        _padding.check_pads(mode, spec.in_size[3 - nd:], pads)
        x = pad_by_mode(x, pads, mode)
        spec = conv_spec(standin(x.shape, x.dtype, meta), weight, bias, stride, 0, dilation, groups,
                         spatial_dims=nd)
    sl = slice(3 - nd, 3)
    axes = [_plan.Window(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in
            zip(spec.in_size[sl], spec.window[sl], spec.strides[sl], spec.dilations[sl], spec.pads[sl])]
    x = fit_spatial(x, axes, op, batched)
    g, cg, kg = spec.groups, spec.C_per_group, spec.K_per_group
    if g > 1:
        x = fit_groups(x, cg, op)
    channels, edge = [], 0
    summed = g == 1 and len(x.chunks[1]) > 1
    if g == 1:
        k0 = 0
        for size in k_chunks:
            sources, edge = [], 0
            for ci, c in enumerate(x.chunks[1]):
                sources.append((ci, (k0, k0 + size, edge, edge + c, 1)))
                edge += c
            channels.append(_graph.Channels(size, tuple(sources)))
            k0 += size
    else:
        for ci, c in enumerate(x.chunks[1]):
            g0, g1 = edge // cg, (edge + c) // cg
            channels.append(_graph.Channels((g1 - g0) * kg, ((ci, (g0 * kg, g1 * kg, 0, cg, g1 - g0)),)))
            edge += c
    plans = [_plan.plan(a, x.chunks[2 + i]) for i, a in enumerate(axes)]
    upcast = summed and spec.dtype == "float16"
    call = functools.partial(_conv_call, getattr(functional, op), stride, dilation, backend, algo, upcast)
    name = f"fastconv-{op}-" + _token(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                                        backend, algo, k_chunks)
    out = _graph.build(x, plans, channels, call, name=name, dtype=input.dtype, extras=(weight, bias))
    return unbatch(out, batched)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def global_indices(idx, region_sizes, in_los, sizes):
    """A pool's indices over its block's region (flat in each plane) as indices over the whole input."""
    rem, coords = idx, []
    for n in reversed(region_sizes):
        coords.append(rem % n)
        rem = rem // n
    out = 0
    for c, lo, n in zip(reversed(coords), in_los, sizes):
        out = out * n + (c + lo)
    return out


def _pool_call(fn, kw, window, sizes, indices, region, blocks, arg, first):
    kw = dict(kw)
    if window:
        if "padding" in kw:
            kw["padding"] = tuple((b.pad_lo, b.pad_hi) for b in blocks)
    else:
        kw["output_size"] = tuple(b.size for b in blocks)
    out = fn(region, **kw)
    if not indices:
        return out
    values, idx = out
    return values, global_indices(idx, region.shape[2:], [b.in_lo for b in blocks], sizes)


_POOLS = {"max": "max_pool", "avg": "avg_pool", "adaptive_max": "adaptive_max_pool",
          "adaptive_avg": "adaptive_avg_pool", "lp": "lp_pool"}


def pool(nd, kind, input, backend, **kw):
    """``kind``: max, avg, adaptive_max, adaptive_avg, lp; ``kw``: the single-array op's keywords."""
    op = f"{_POOLS[kind]}{nd}d"
    x, batched = dask_input(input, nd, op)
    check = "avg" if kind == "lp" else kind
    functional._check_names(backend, "auto", check + "_pool")
    meta = x._meta
    shape_in = standin(input.shape, input.dtype, meta)
    if kind == "lp":
        functional._norm_type(kw["norm_type"])
        spec = pool_spec("avg", shape_in, kw["kernel_size"], kw["stride"], 0, ceil_mode=kw["ceil_mode"],
                         spatial_dims=nd)
    elif kind.startswith("adaptive"):
        spec = pool_spec(kind, shape_in, spatial_dims=nd, output_size_=kw["output_size"],
                         **({"return_indices": kw["return_indices"]} if kind == "adaptive_max" else {}))
    else:
        spec = pool_spec(kind, shape_in, spatial_dims=nd, **kw)
    functional._resolve_backend(backend, kind_of(x))
    sl = slice(3 - nd, 3)
    window = not kind.startswith("adaptive")
    if window:
        axes = [_plan.Window(n, k, s, d, lo, hi, spec.ceil_mode) for n, k, s, d, (lo, hi) in
                zip(spec.in_size[sl], spec.window[sl], spec.strides[sl], spec.dilations[sl], spec.pads[sl])]
    else:
        axes = [_plan.Adaptive(n, o) for n, o in zip(spec.in_size[sl], spec.out_size[sl])]
    x = fit_spatial(x, axes, op, batched)
    plans = [_plan.plan(a, x.chunks[2 + i]) for i, a in enumerate(axes)]
    channels = [_graph.Channels(c, ((ci, None),)) for ci, c in enumerate(x.chunks[1])]
    indices = bool(kw.get("return_indices"))
    call_kw = dict(kw, backend=backend)
    if not window:
        call_kw.pop("output_size")
    call = functools.partial(_pool_call, getattr(functional, op), call_kw, window, spec.in_size[sl], indices)
    name = f"fastconv-{op}-" + _token(x, sorted(kw.items()), backend)
    out = _graph.build(x, plans, channels, call, name=name, dtype=input.dtype, outputs=2 if indices else 1,
                       output_dtypes=(input.dtype, "int64"))
    return unbatch(out, batched)
