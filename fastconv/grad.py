"""Gradients of every op, mirroring ``torch.nn.grad`` (names, argument order, semantics), on NumPy and CuPy.

Convolutions: ``conv{1,2,3}d_input(input_size, weight, grad_output, ...)`` and
``conv{1,2}d_weight(input, weight_size, grad_output, ...)`` take the forward's arguments (every padding form
the forward accepts: ints, pairs, asymmetric ``((top, bottom), (left, right))``, "valid", "same") and a
``grad_output`` of the forward output's shape; ``conv_bias(grad_output)`` sums over every axis but the
channel axis. Pools: ``max_pool{1,2,3}d``, ``avg_pool{1,2,3}d``, ``adaptive_avg_pool{1,2,3}d`` and
``adaptive_max_pool{1,2,3}d`` take ``(grad_output, input, <the forward's arguments>)`` and return the gradient
with respect to ``input``. The max kinds send each output's gradient to the position its forward reports
(ties and NaN as the forward rules them; windows sharing a position add up); pass the forward's
``indices=`` to skip recomputing them (they are checked: shape, range, inside their window).

Arrays may be DLPack producers (torch tensors, JAX arrays, ...), as for the forward ops (:mod:`fastconv._interop`):
the result takes the first array argument's type (``grad_output`` for the pools and ``conv_bias``, ``input`` for
``conv*_weight``, ``weight`` for ``conv*_input``). Every function takes ``backend=`` (None: by the array type,
as the forward ops) and the convolutions ``algo=``. Results are bitwise reproducible run to run on every
backend (no floating-point atomics).
"""
from __future__ import annotations

from . import _indices, _memo, functional as _f
from ._args import plain
from ._interop import takes_arrays
from ._spec import (array_kind, conv_input_spec, conv_weight_spec, pool_grad_spec, _check_indices_array,
                    _same_place)

__all__ = ["conv1d_input", "conv1d_weight", "conv2d_input", "conv2d_weight", "conv3d_input", "conv3d_weight",
           "conv_bias", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "adaptive_max_pool3d"]


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
@takes_arrays("weight", "grad_output")
def _conv_input(nd, input_size, weight, grad_output, stride, padding, dilation, groups, backend, algo):
    def build():
        _f._check_names(backend, algo, "conv_input")
        spec = conv_input_spec(input_size, weight, grad_output, stride, padding, dilation, groups,
                               spatial_dims=nd)
        kind = array_kind(grad_output)
        return _f._Problem(spec, kind, _f._resolve_backend(backend, kind), algo)

    key = _memo.key(("conv_input", nd), (weight, grad_output),
                    (input_size, stride, padding, dilation, groups, backend, algo))
    return _f._call(key, build, lambda prob: _f._run(prob, (grad_output, weight, None)))


@takes_arrays("input", "grad_output")
def _conv_weight(nd, input, weight_size, grad_output, stride, padding, dilation, groups, backend, algo):
    def build():
        _f._check_names(backend, algo, "conv_weight")
        spec = conv_weight_spec(input, weight_size, grad_output, stride, padding, dilation, groups,
                                spatial_dims=nd)
        kind = array_kind(input)
        return _f._Problem(spec, kind, _f._resolve_backend(backend, kind), algo)

    key = _memo.key(("conv_weight", nd), (input, grad_output),
                    (weight_size, stride, padding, dilation, groups, backend, algo))
    return _f._call(key, build, lambda prob: _f._run(prob, (input, grad_output)))


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 backend=None, algo="auto"):
    """Gradient of ``conv2d`` with respect to its input, as ``torch.nn.grad.conv2d_input``.

    input_size: the forward input's shape (N, C, H, W) (or (C, H, W) with an unbatched grad_output);
    weight (K, C/groups, R, S); grad_output of the forward output's shape. Returns (N, C, H, W)."""
    return _conv_input(2, input_size, weight, grad_output, stride, padding, dilation, groups, backend, algo)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 backend=None, algo="auto"):
    """Gradient of ``conv1d`` with respect to its input, as ``torch.nn.grad.conv1d_input``."""
    return _conv_input(1, input_size, weight, grad_output, stride, padding, dilation, groups, backend, algo)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  backend=None, algo="auto"):
    """Gradient of ``conv2d`` with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    weight_size: the weight's shape (K, C/groups, R, S); input and grad_output as in the forward.
    Taps in the padding contribute nothing (an Inf in grad_output never meets a padded zero)."""
    return _conv_weight(2, input, weight_size, grad_output, stride, padding, dilation, groups, backend, algo)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  backend=None, algo="auto"):
    """Gradient of ``conv1d`` with respect to its weight, as ``torch.nn.grad.conv1d_weight``."""
    return _conv_weight(1, input, weight_size, grad_output, stride, padding, dilation, groups, backend, algo)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 backend=None, algo="auto"):
    """Gradient of ``conv3d`` with respect to its input, as ``torch.nn.grad.conv3d_input``: input_size the
    input's shape (N, C, D, H, W) or (C, D, H, W)."""
    return _conv_input(3, input_size, weight, grad_output, stride, padding, dilation, groups, backend, algo)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  backend=None, algo="auto"):
    """Gradient of ``conv3d`` with respect to its weight, as ``torch.nn.grad.conv3d_weight``: weight_size
    (K, C/groups, T, R, S)."""
    return _conv_weight(3, input, weight_size, grad_output, stride, padding, dilation, groups, backend, algo)


@takes_arrays("grad_output")
def conv_bias(grad_output):
    """Gradient of any convolution (or transposed convolution) with respect to its bias: ``grad_output``
    (N, K, ...) summed over every axis but axis 1, shape (K,), in grad_output's dtype (accumulated in
    float64 for float64, float32 otherwise). For an unbatched grad_output (K, ...) the channel axis is 0:
    pass it as ``grad_output[None]``."""
    _same_place([("grad_output", grad_output)])
    grad_output = plain(grad_output)    # an ndarray subclass: a plain result
    if grad_output.ndim < 2:
        raise ValueError(f"grad_output must be (N, K, ...) with at least 2 dimensions, got shape "
                         f"{tuple(grad_output.shape)}")
    acc = "float64" if grad_output.dtype == "float64" else "float32"
    axes = (0,) + tuple(range(2, grad_output.ndim))
    return grad_output.sum(axis=axes, dtype=acc).astype(grad_output.dtype)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
@takes_arrays("grad_output", "input", "indices")
def _pool_grad(nd, kind, grad_output, input, indices, backend, **kw):
    def build():
        _f._check_names(backend, "auto", kind + "_pool_backward")
        spec = pool_grad_spec(kind, grad_output, input, spatial_dims=nd, **kw)
        akind = array_kind(input)
        return _f._Problem(spec, akind, _f._resolve_backend(backend, akind), "auto")

    def go(prob):
        spec, akind, backend_ = prob.spec, prob.kind, prob.backend
        xp = _f._array_module(akind)
        arrays = (grad_output,)
        idx = indices
        if spec.is_max:
            if idx is None:      # the forward's own indices, from the same backend
                fwd = getattr(_f, f"{kind}_pool{nd}d")
                fkw = dict(kw)
                if kind == "adaptive_max":
                    fkw = {"output_size": spec.out_size[3 - nd:]}
                _, idx = fwd(input, return_indices=True, backend=backend_, **fkw)
            else:
                _check_indices_array(idx, tuple(grad_output.shape))
                if array_kind(idx) != akind:
                    raise TypeError(f"indices is a {array_kind(idx)} array but input is a {akind} array; "
                                    f"move them to one place first")
                _indices.check_in_window(spec, idx, xp)
            # outputs of windows wholly in the padding have no input element to send their gradient to
            dy, idx = _indices.drop_empty_windows(spec, grad_output, idx, xp)
            arrays = (dy, idx)
        elif idx is not None:
            raise TypeError(f"indices= is for the max pools; {kind} pooling takes none")
        return _f._run(prob, arrays)

    key = _memo.key(("pool_grad", nd, kind, tuple(kw)), (grad_output, input, indices), (backend, *kw.values()))
    return _f._call(key, build, go)


def max_pool2d(grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               indices=None, backend=None):
    """Gradient of ``max_pool2d`` with respect to ``input``: each output's gradient added at the position
    its forward index names. ``indices``: the forward's (return_indices=True); recomputed when None."""
    return _pool_grad(2, "max", grad_output, input, indices, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def max_pool1d(grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               indices=None, backend=None):
    """Gradient of ``max_pool1d`` with respect to ``input`` (see :func:`max_pool2d`)."""
    return _pool_grad(1, "max", grad_output, input, indices, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def avg_pool2d(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of ``avg_pool2d`` with respect to ``input``: each window's gradient divided by the
    forward's divisor and spread over its in-bounds taps."""
    return _pool_grad(2, "avg", grad_output, input, None, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                      divisor_override=divisor_override)


def avg_pool1d(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, *, backend=None):
    """Gradient of ``avg_pool1d`` with respect to ``input``."""
    return _pool_grad(1, "avg", grad_output, input, None, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def adaptive_avg_pool2d(grad_output, input, *, backend=None):
    """Gradient of ``adaptive_avg_pool2d`` (output size: grad_output's) with respect to ``input``."""
    return _pool_grad(2, "adaptive_avg", grad_output, input, None, backend)


def adaptive_avg_pool1d(grad_output, input, *, backend=None):
    """Gradient of ``adaptive_avg_pool1d`` with respect to ``input``."""
    return _pool_grad(1, "adaptive_avg", grad_output, input, None, backend)


def adaptive_max_pool2d(grad_output, input, *, indices=None, backend=None):
    """Gradient of ``adaptive_max_pool2d`` (output size: grad_output's) with respect to ``input``."""
    return _pool_grad(2, "adaptive_max", grad_output, input, indices, backend)


def adaptive_max_pool1d(grad_output, input, *, indices=None, backend=None):
    """Gradient of ``adaptive_max_pool1d`` with respect to ``input``."""
    return _pool_grad(1, "adaptive_max", grad_output, input, indices, backend)


def max_pool3d(grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               indices=None, backend=None):
    """Gradient of ``max_pool3d`` with respect to ``input`` (see :func:`max_pool2d`)."""
    return _pool_grad(3, "max", grad_output, input, indices, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def avg_pool3d(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of ``avg_pool3d`` with respect to ``input`` (see :func:`avg_pool2d`)."""
    return _pool_grad(3, "avg", grad_output, input, None, backend, kernel_size=kernel_size, stride=stride,
                      padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                      divisor_override=divisor_override)


def adaptive_avg_pool3d(grad_output, input, *, backend=None):
    """Gradient of ``adaptive_avg_pool3d`` (output size: grad_output's) with respect to ``input``."""
    return _pool_grad(3, "adaptive_avg", grad_output, input, None, backend)


def adaptive_max_pool3d(grad_output, input, *, indices=None, backend=None):
    """Gradient of ``adaptive_max_pool3d`` (output size: grad_output's) with respect to ``input``."""
    return _pool_grad(3, "adaptive_max", grad_output, input, indices, backend)
