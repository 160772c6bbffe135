"""The public ops: drop-in for torch.nn.functional's conv and pooling functions, on NumPy and CuPy arrays.

Each function builds its spec (which validates every argument), asks dispatch which implementation runs
it, brings the arrays into the layout backends expect (C-contiguous NCHW, 4-D, float32 for float16 where
the implementation has no half path) and shapes the result back. Inputs are never written to.
"""
from __future__ import annotations

from . import _dispatch, _indices
from ._spec import array_kind, conv_spec, conv_transpose_spec, pool_spec, unpool_spec

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "max_unpool1d", "max_unpool2d"]


def _array_module(kind: str):
    if kind == "cupy":
        import cupy
        return cupy
    import numpy
    return numpy


def _resolve_backend(backend, kind: str) -> str:
    if backend is None:
        return _dispatch.default_backend(kind)
    _dispatch.check_backend_name(backend)
    want = _dispatch.BACKENDS[backend].array_kind
    if want != kind:
        hint = "cupy.asarray(...)" if want == "cupy" else "cupy.asnumpy(...)"
        raise TypeError(f"backend {backend!r} takes {'CuPy' if want == 'cupy' else 'NumPy'} arrays but "
                        f"input is a {kind} array; convert with {hint} or pick another backend")
    return backend


def _execute(spec, kind, backend, algo, arrays):
    """Select, prepare arrays, run, shape back. ``arrays``: what ``spec.ARRAYS`` names, as the user passed
    them (None for an absent optional one); each is viewed in the backend layout ``spec.operands()``."""
    padded = spec.PADDING_OPERAND
    impl = _dispatch.select(spec, backend, algo,
                            weight=arrays[spec.ARRAYS.index(padded)] if padded is not None else None)
    xp = _array_module(kind)
    if spec.N == 0:   # an empty batch: nothing to launch (torch returns an empty result too)
        out = xp.zeros(spec.output_shape, dtype=spec.dtype)
        if getattr(spec, "return_indices", False):
            return out, xp.zeros(spec.output_shape, dtype=xp.int64)
        return out
    run_spec = impl.compute_spec(spec)
    upcast = run_spec.dtype != spec.dtype
    prepared = []
    for name, a, shape in zip(spec.ARRAYS, arrays, spec.operands()):
        if a is None:
            prepared.append(None)
            continue
        if spec.is_index_operand(name):
            prepared.append(xp.ascontiguousarray(a.reshape(shape), dtype=xp.int64))
            continue
        a = xp.ascontiguousarray(a.reshape(shape))
        prepared.append(a.astype(run_spec.dtype) if upcast else a)
    result = impl.run(run_spec, *prepared)
    outs = result if isinstance(result, tuple) else (result,)
    shaped = []
    for i, o in enumerate(outs):
        if i == 0 and upcast:
            o = o.astype(spec.dtype)
        shaped.append(o.reshape(spec.output_shape))
    return tuple(shaped) if isinstance(result, tuple) else shaped[0]


def _check_names(backend, algo, op):
    if backend is not None:
        _dispatch.check_backend_name(backend)
    _dispatch.check_algo(algo, op)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
def _conv(nd, input, weight, bias, stride, padding, dilation, groups, backend, algo):
    _check_names(backend, algo, "conv")
    spec = conv_spec(input, weight, bias, stride, padding, dilation, groups, spatial_dims=nd)
    kind = array_kind(input)
    backend = _resolve_backend(backend, kind)
    return _execute(spec, kind, backend, algo, (input, weight, bias))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algo="auto"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input (N, C, H, W) or unbatched (C, H, W); weight (K, C/groups, R, S); bias (K,) or None.
    padding: int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same' (stride 1; the odd extra
    padding goes bottom/right). Returns an array of the input's type and dtype, (N, K, P, Q).
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, backend, algo)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algo="auto"):
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``: input (N, C, L) or (C, L); weight
    (K, C/groups, kL); padding int, (p,), ((left, right),), 'valid' or 'same'. Runs as 2-D with H = 1."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, backend, algo)


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, backend, algo):
    _check_names(backend, algo, "conv_input")
    spec = conv_transpose_spec(input, weight, bias, stride, padding, output_padding, groups, dilation,
                               spatial_dims=nd)
    kind = array_kind(input)
    backend = _resolve_backend(backend, kind)
    return _execute(spec, kind, backend, algo, (input, weight, bias))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None, algo="auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``: the gradient of conv2d with
    respect to its input (plus bias).

    input (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out/groups, R, S); bias (C_out,) or None.
    padding: int, (ph, pw) or ((top, bottom), (left, right)) (asymmetric, beyond torch), or 'valid';
    output_padding adds rows/columns at the bottom/right and must be < max(stride, dilation). Output
    (N, C_out, H_out, W_out), ``H_out = (H-1)*stride - top - bottom + dilation*(R-1) + output_padding + 1``.
    """
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           backend, algo)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None, algo="auto"):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``: input (N, C_in, L) or
    (C_in, L), weight (C_in, C_out/groups, kL); padding int, (p,) or ((left, right),)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           backend, algo)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def _pool(nd, kind, input, backend, **kw):
    _check_names(backend, "auto", kind + "_pool")
    spec = pool_spec(kind, input, spatial_dims=nd, **kw)
    akind = array_kind(input)
    backend = _resolve_backend(backend, akind)
    return _execute(spec, akind, backend, "auto", (input,))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """As ``torch.nn.functional.max_pool2d``: padding counts as -inf (padding <= kernel_size // 2), a
    window holding NaN gives NaN, indices are int64 flat positions ``h * W + w`` in each (n, c) plane."""
    return _pool(2, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """As ``torch.nn.functional.max_pool1d``; indices are positions along L."""
    return _pool(1, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """As ``torch.nn.functional.avg_pool2d``: with count_include_pad the divisor counts explicit padding
    but not the area ceil_mode adds past it; a non-zero divisor_override replaces both rules."""
    return _pool(2, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, backend=None):
    """As ``torch.nn.functional.avg_pool1d`` (which, like torch, has no divisor_override)."""
    return _pool(1, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def adaptive_avg_pool2d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool2d``: window i spans floor(i*In/Out) to
    ceil((i+1)*In/Out); None in output_size keeps that dimension."""
    return _pool(2, "adaptive_avg", input, backend, output_size_=output_size)


def adaptive_avg_pool1d(input, output_size, *, backend=None):
    return _pool(1, "adaptive_avg", input, backend, output_size_=output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool2d``; NaN and index rules as max_pool2d."""
    return _pool(2, "adaptive_max", input, backend, output_size_=output_size, return_indices=return_indices)


def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    return _pool(1, "adaptive_max", input, backend, output_size_=output_size, return_indices=return_indices)


# ---------------------------------------------------------------------------------------------------
# Unpooling
# ---------------------------------------------------------------------------------------------------
def _max_unpool(nd, input, indices, kernel_size, stride, padding, output_size, backend):
    _check_names(backend, "auto", "max_unpool")
    spec = unpool_spec(input, indices, kernel_size, stride, padding, output_size, spatial_dims=nd)
    kind = array_kind(input)
    if array_kind(indices) != kind:
        raise TypeError(f"indices is a {array_kind(indices)} array but input is a {kind} array; "
                        f"move them to one place first")
    _indices.check_in_range(spec, indices)
    backend = _resolve_backend(backend, kind)
    return _execute(spec, kind, backend, "auto", (input, indices))


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool2d``: zeros of (N, C, H_out, W_out) with ``input`` written at the
    flat positions ``indices`` (int, as max_pool2d returns them) names in each plane;
    ``H_out = (H-1)*stride - 2*padding + kernel_size`` unless ``output_size`` (within one stride of it)
    says otherwise. Indices outside [0, H_out*W_out) raise ValueError; where a plane names one position
    several times, the last in row-major order wins (as torch on the CPU)."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size, backend)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool1d``: input and indices (N, C, L) or (C, L)."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size, backend)
