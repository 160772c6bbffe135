"""``fastconv.dask.sequential``: a stack of convolutions, pools and elementwise steps over a dask array, run
with one halo, the stack's receptive field, instead of one per layer.

Each layer is written as it would be on a single array: ``functools.partial`` of a fastconv op (or of its
fastconv.dask twin) with every argument but the input bound, or any other callable, taken to be elementwise
(``numpy.tanh``, ``lambda a: numpy.maximum(a, 0)``; it must return an array of its input's shape). Each output
block traces its outputs back through the layers (:func:`fastconv.dask._plan.stack_block`): every layer
computes exactly the part of its output the next layer reads, padded only at the true edges of that layer's
output, so the stack gives the single-array result layer by layer.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .. import functional
from .._shapes import receptive_field
from .._spec import conv_spec, pool_spec
from . import _graph, _ops, _plan

#: the ops a stack takes, by name: (kind, spatial dims)
_OPS = {f"conv{n}d": ("conv", n) for n in (1, 2, 3)}
_OPS.update({f"{k}_pool{n}d": (k, n) for k in ("max", "avg", "lp") for n in (1, 2, 3)})


@dataclass(frozen=True)
class _Layer:
    fn: Callable                  # the single-array op, or the elementwise callable
    kwargs: Any                   # the op's bound arguments (input excluded); None when elementwise
    padded: bool                  # the op takes a padding argument (replaced per block)
    axes: Optional[tuple] = None  # one _plan.Window per spatial axis; None when elementwise


def _parse(i, layer):
    """(single-array op, its arguments but input) for a partial of a fastconv op; (None, None) for an
    elementwise callable."""
    if isinstance(layer, functools.partial):
        name = getattr(layer.func, "__name__", "")
        module = getattr(layer.func, "__module__", "") or ""
        if module in ("fastconv.functional", "fastconv.dask") and name in _OPS:
            fn = getattr(functional, name)
            try:
                bound = inspect.signature(fn).bind(None, *layer.args, **layer.keywords)
            except TypeError as e:
                raise TypeError(f"layers[{i}]: {e} (bind every argument of {name} but the input)") from None
            bound.apply_defaults()
            kwargs = dict(bound.arguments)
            kwargs.pop("input")
            return fn, kwargs
        if module.startswith("fastconv"):
            raise ValueError(f"layers[{i}]: {module}.{name} cannot be part of a stack (only "
                             f"{', '.join(sorted(_OPS))} and elementwise callables); apply it to "
                             f"sequential's result")
    if not callable(layer):
        raise TypeError(f"layers[{i}] must be a functools.partial of a fastconv op or an elementwise callable, "
                        f"got {type(layer).__name__}")
    return None, None


def _layer(i, fn, kwargs, probe, nd):
    """The :class:`_Layer` and its output stand-in, validated by the single-array op's spec builder."""
    name = fn.__name__
    kind, n = _OPS[name]
    if n != nd:
        raise ValueError(f"layers[{i}] is {name} but the stack's input has {nd} spatial dimension(s)")
    sl = slice(3 - nd, 3)
    if kind == "conv":
        if kwargs["padding_mode"] != "zeros":
            raise ValueError(f"layers[{i}]: padding_mode={kwargs['padding_mode']!r} is not supported inside a "
                             f"stack (a mode reads across the whole layer); pad the input with dask.array.pad "
                             f"first, or run that layer by itself with fastconv.dask.{name}")
        weight, bias = _ops.small(kwargs["weight"], f"layers[{i}] weight"), _ops.small(kwargs["bias"], "bias")
        spec = conv_spec(probe, weight, bias, kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                         kwargs["groups"], spatial_dims=nd)
        functional._check_names(kwargs["backend"], kwargs["algo"], "conv")
        ceil = False
        out_c = spec.K
    else:
        functional._check_names(kwargs["backend"], "auto", ("avg" if kind == "lp" else kind) + "_pool")
        if kind == "lp":
            functional._norm_type(kwargs["norm_type"])
            spec = pool_spec("avg", probe, kwargs["kernel_size"], kwargs["stride"], 0,
                             ceil_mode=kwargs["ceil_mode"], spatial_dims=nd)
        else:
            if kind == "max" and kwargs["return_indices"]:
                raise ValueError(f"layers[{i}]: return_indices=True is not supported inside a stack; run that "
                                 f"pool by itself with fastconv.dask.{name}")
            args = {k: v for k, v in kwargs.items() if k != "backend"}
            spec = pool_spec(kind, probe, spatial_dims=nd, **args)
        ceil = spec.ceil_mode
        out_c = spec.C
    axes = tuple(_plan.Window(s, k, st, d, lo, hi, ceil) for s, k, st, d, (lo, hi) in
                 zip(spec.in_size[sl], spec.window[sl], spec.strides[sl], spec.dilations[sl], spec.pads[sl]))
    shape = (spec.N, out_c) + tuple(a.out for a in axes)
    return _Layer(fn, kwargs, kind != "lp", axes), _ops.standin(shape, probe.dtype, probe)


def _elementwise(i, fn, probe, xp):
    """An elementwise layer, checked on a tiny array of the stack's dtype: it must keep the shape."""
    tiny = xp.zeros((1, probe.shape[1]) + (2,) * (probe.ndim - 2), dtype=probe.dtype)
    try:
        out = fn(tiny)
    except Exception as e:   # noqa: BLE001 -- the user's callable: say which layer failed
        raise TypeError(f"layers[{i}] ({fn!r}) is taken as elementwise but failed on a {tiny.shape} array: "
                        f"{type(e).__name__}: {e}") from e
    if getattr(out, "shape", None) != tiny.shape:
        raise ValueError(f"layers[{i}] ({fn!r}) is taken as elementwise but returned shape "
                         f"{getattr(out, 'shape', None)} for a {tiny.shape} input")
    return _Layer(fn, None, False)


def _run(layers, region, blocks, arg, first):
    a = region
    for i, layer in enumerate(layers):
        if layer.axes is None:
            a = layer.fn(a)
            continue
        kw = dict(layer.kwargs)
        if layer.padded:
            kw["padding"] = tuple((b.layers[i].pad_lo, b.layers[i].pad_hi) for b in blocks)
        a = layer.fn(a, **kw)
    return a


def sequential(layers, x):
    """Run ``layers`` in order over the dask array ``x`` with ONE halo, the stack's receptive field
    (:func:`fastconv.receptive_field` of its layers), so a deep stack over a large image costs one halo
    exchange, not one per layer.

    ``layers``: ``functools.partial(fastconv.conv2d, weight=w, bias=b, padding=1)``-style partials of
    ``conv{1,2,3}d``, ``max_pool{1,2,3}d``, ``avg_pool{1,2,3}d`` and ``lp_pool{1,2,3}d`` (of
    :mod:`fastconv` or :mod:`fastconv.dask`), and elementwise callables in between (ReLU, ...). Not in a
    stack: adaptive pools and max pools with ``return_indices`` (they need the whole axis or return two
    arrays), ``padding_mode`` other than "zeros": run those by themselves. A stack with a convolution needs
    the input's channels in one chunk (it is rechunked, with a :class:`ChunkWarning`, if not); batch chunks,
    and the channel chunks of a stack of pools, map block by block. Returns a dask array: the single-array
    stack's result, block by block.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("layers must be a non-empty list of fastconv op partials and elementwise callables")
    parsed = [_parse(i, layer) for i, layer in enumerate(layers)]
    first_op = next((fn for fn, _ in parsed if fn is not None), None)
    if first_op is None:
        raise ValueError("layers has no convolution or pool; map elementwise callables with x.map_blocks")
    nd = _OPS[first_op.__name__][1]
    xb, batched = _ops.dask_input(x, nd, "sequential", "x")
    meta = xb._meta
    xp = _graph._module(meta)
    probe = _ops.standin(xb.shape, xb.dtype, meta)
    stack = []
    for i, ((fn, kwargs), layer) in enumerate(zip(parsed, layers)):
        if fn is None:
            stack.append(_elementwise(i, layer, probe, xp))
        else:
            built, probe = _layer(i, fn, kwargs, probe, nd)
            stack.append(built)
    for layer in stack:
        if layer.kwargs is not None and "backend" in layer.kwargs:
            functional._resolve_backend(layer.kwargs["backend"], _ops.kind_of(xb))
    mixes = any(layer.fn.__name__.startswith("conv") for layer in stack if layer.axes is not None)
    if mixes:
        xb = _ops.one_channel_chunk(xb, "sequential", "a convolution in the stack mixes channels")
    windows = [layer for layer in stack if layer.axes is not None]
    axes_by_dim = [[None if layer.axes is None else layer.axes[a] for layer in stack] for a in range(nd)]
    rf = receptive_field([(tuple(w.axes[a].kernel for a in range(nd)), tuple(w.axes[a].stride for a in range(nd)),
                           tuple(w.axes[a].dilation for a in range(nd))) for w in windows])
    rf = rf if isinstance(rf, tuple) else (rf,)
    reach = [_Reach(r - 1) for r in rf]
    xb = _ops.fit_spatial(xb, reach, "sequential", batched)
    plans = [_plan.plan_stack(axes_by_dim[a], xb.chunks[2 + a]) for a in range(nd)]
    # with a convolution: the one channel chunk gives all output channels; pools only: each chunk its own
    channels = [_graph.Channels(probe.shape[1] if mixes else c, ((ci, None),)) for ci, c in enumerate(xb.chunks[1])]
    name = "fastconv-sequential-" + _ops._token(xb, [(layer.fn, layer.kwargs) for layer in stack])
    out = _graph.build(xb, plans, channels, functools.partial(_run, tuple(stack)), name=name, dtype=xb.dtype)
    return _ops.unbatch(out, batched)


@dataclass(frozen=True)
class _Reach:
    """What :func:`fastconv.dask._ops.fit_spatial` reads of a stack's axis: the most a block reads past its
    chunk, the receptive field minus one (its last output's field may start at the chunk's last position)."""
    reach: int
