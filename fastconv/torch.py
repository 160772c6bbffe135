"""PyTorch bridge: fastconv's ops on torch tensors, differentiable through ``torch.autograd``.

Every function has the signature of its ``torch.nn.functional`` namesake plus ``*, backend=None`` (and, for the
convolutions, ``algo="auto"`` and fastconv's ``padding_mode=``), in 1, 2 and 3 spatial dimensions:
``conv{1,2,3}d``, ``conv_transpose{1,2,3}d``, ``max_pool{1,2,3}d`` (``return_indices`` too),
``avg_pool{1,2,3}d``, ``adaptive_avg_pool{1,2,3}d``, ``adaptive_max_pool{1,2,3}d``, ``max_unpool{1,2,3}d`` and
``lp_pool{1,2,3}d``; ``unfold`` and ``fold`` (im2col and col2im, 1-D to 3-D as fastconv's, each the
other's gradient). Each is a ``torch.autograd.Function`` whose forward runs fastconv's op and whose backward
runs ``fastconv.grad`` (or, for the transposed convolution, the forward convolution and the weight gradient
with the roles of input and output swapped), on the backend named (None: fastconv's default for the array
type, ``numba`` on the CPU, ``cuda`` on the GPU). ``algo`` names the algorithm of every convolution the op
runs: the forward and both gradients. The pools take fastconv's per-side padding pairs as well.

``padding_mode`` (``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``) follows torch.nn.Conv*d's rule,
as ``fastconv.conv*d`` does: the input is padded by the mode (fastconv's own ``_padding.pad``), then convolved
without padding. The padding is its own autograd node whose backward is the adjoint of that padding, written
here as slice additions (each border's gradient added back onto the interior positions it copied, in a fixed
order), not torch's ``F.pad`` backward, whose CUDA kernels add with atomics; so the gradient is bitwise
reproducible on every device. The transposed convolutions take only ``"zeros"``, as torch's.

``lp_pool`` is torch's composition ``(prod(kernel) * avg_pool(x ** p)) ** (1/p)`` (``p = +-inf``: the max
pool of ``|x|``, negated for ``-inf``), and its backward is that composition's chain rule written out: the
average pool's gradient between the elementwise rules, with the gradient set to zero where a window's sum of
``x ** p`` is zero (torch's rule; its formula ``sign(s) * relu(|s|)`` masks exactly there). ``p = +-inf``:
the max pool's gradient at the forward's indices, times ``sign(x)``.

Tensors are handed over without copies: CPU tensors as NumPy views (``t.detach().numpy()``, made contiguous
first only if they are not), CUDA tensors through DLPack to CuPy and back (on the tensor's device and torch's
current stream). All tensors of one call must be on one device. Backward computes only the gradients
``ctx.needs_input_grad`` asks for and keeps only what those need (the max pools keep their forward's
indices, not the input; the average pools keep nothing; the lp pools keep their input and either its window
means of ``x ** p`` or, for ``p = +-inf``, the indices). The max pools' gradient goes where the forward's
indices point, as torch's does; ``max_unpool``'s gradient is the gather ``grad_output[indices]``, as torch's
(done by torch on the tensor's device: it is a memory operation, no arithmetic).

Three modules: ``Conv1d``, ``Conv2d`` and ``Conv3d``, ``torch.nn.Conv{1,2,3}d`` (same parameters,
initialisation, state_dict and ``padding_mode``) whose forward runs through fastconv, with ``backend=`` and
``algo=`` keyword arguments.

Double backward is not supported: every backward is ``once_differentiable``, so differentiating a gradient
raises a RuntimeError. float16 is supported as by fastconv (summed in float32); bfloat16 and complex tensors
are refused with a TypeError. ``import fastconv`` does not import this module (nor torch).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch.autograd.function import once_differentiable

from . import _padding
from . import functional as _f
from . import grad as _grad
from ._args import _as_tuple
from ._spec import conv_spec, conv_transpose_spec, output_size
from ._spec_fold import fold_spec, unfold_spec

_NDS = (1, 2, 3)
__all__ = [f"{op}{nd}d" for op in ("conv", "conv_transpose", "max_pool", "avg_pool", "adaptive_avg_pool",
                                   "adaptive_max_pool", "max_unpool", "lp_pool") for nd in _NDS] \
    + ["unfold", "fold", "Conv1d", "Conv2d", "Conv3d"]


# ---------------------------------------------------------------------------------------------------
# Tensors <-> arrays
# ---------------------------------------------------------------------------------------------------
def _device(named) -> torch.device:
    """The one device of the named tensors (None entries skipped); TypeError for a non-tensor,
    ValueError for tensors on different devices."""
    dev, first = None, None
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__module__}.{type(t).__name__}")
        if t.device.type not in ("cpu", "cuda"):
            raise TypeError(f"{name} is on device {t.device}; fastconv.torch takes CPU and CUDA tensors")
        if dev is None:
            dev, first = t.device, name
        elif t.device != dev:
            raise ValueError(f"{name} is on {t.device} but {first} is on {dev}; move them to one device first")
    return dev


@contextlib.contextmanager
def _on(device: torch.device):
    """CuPy work on ``device`` and torch's current stream there (nothing to do on the CPU)."""
    if device.type != "cuda":
        yield
        return
    import cupy
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
        yield


def _array(t: torch.Tensor, name: str):
    """A NumPy (CPU) or CuPy (CUDA) view of ``t``'s data: no copy unless ``t`` is not contiguous."""
    if t.dtype in (torch.bfloat16,) or t.is_complex():
        raise TypeError(f"{name} dtype {t.dtype} is not supported by fastconv (float16, float32, float64)")
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.device.type == "cuda":
        import cupy
        return cupy.from_dlpack(t)
    return t.resolve_conj().resolve_neg().numpy()


def _tensor(a) -> torch.Tensor:
    """The torch tensor over a result array (no copy)."""
    if type(a).__module__ == "numpy":
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


def _placeholder(like, shape):
    """An array of ``shape`` and ``like``'s dtype and kind that holds no memory (every element is one zero):
    the pool gradients read only the input's shape and dtype when they are handed the indices or have
    none to compute, so the forward input need not be kept alive."""
    xp = _f._array_module("cupy" if type(like).__module__.startswith("cupy") else "numpy")
    return xp.broadcast_to(xp.zeros((), dtype=like.dtype), shape)


def _xp(a):
    """NumPy or CuPy, whichever ``a`` belongs to."""
    return _f._array_module("numpy" if type(a).__module__ == "numpy" else "cupy")


def _conv_args(s):
    """The (stride, padding, dilation, groups) arguments of the convolution a spec describes, for its own
    spatial dimensions (padding as per-side pairs)."""
    nd = s.spatial_dims
    return s.strides[3 - nd:], s.pads[3 - nd:], s.dilations[3 - nd:], s.groups


# ---------------------------------------------------------------------------------------------------
# padding_mode: the mode's padding as an autograd node with its adjoint
# ---------------------------------------------------------------------------------------------------
def _along(ndim: int, axis: int, start: int, stop: int):
    """The index selecting ``start:stop`` on ``axis`` of an ``ndim``-D array."""
    idx = [slice(None)] * ndim
    idx[axis] = slice(start, stop)
    return tuple(idx)


def _pad_adjoint(g, pads, mode: str):
    """The adjoint of ``_padding.pad(x, pads, mode)`` applied to ``g`` (the padded shape): per padded
    dimension, the interior slice plus each border's gradient added back where the border copied from --
    reflect: mirrored onto positions 1..lo and L-1-hi..L-2; replicate: summed onto the edge position;
    circular: onto the last lo and first hi positions. Dimensions last to first, before border then after
    border: a fixed order of additions, no atomics. float16 border sums accumulate in float32."""
    xp = _xp(g)
    nd = len(pads)
    for i in reversed(range(nd)):
        lo, hi = pads[i]
        if not (lo or hi):
            continue
        ax = g.ndim - nd + i
        L = g.shape[ax] - lo - hi
        out = g[_along(g.ndim, ax, lo, lo + L)].copy()
        before = g[_along(g.ndim, ax, 0, lo)]
        after = g[_along(g.ndim, ax, lo + L, lo + L + hi)]
        if mode == "reflect":
            out[_along(g.ndim, ax, 1, lo + 1)] += xp.flip(before, axis=ax)
            out[_along(g.ndim, ax, L - 1 - hi, L - 1)] += xp.flip(after, axis=ax)
        elif mode == "circular":
            out[_along(g.ndim, ax, L - lo, L)] += before
            out[_along(g.ndim, ax, 0, hi)] += after
        else:   # replicate
            acc = "float64" if g.dtype == "float64" else "float32"
            for part, at in ((before, 0), (after, L - 1)):
                if part.shape[ax]:
                    out[_along(g.ndim, ax, at, at + 1)] += part.sum(axis=ax, keepdims=True,
                                                                   dtype=acc).astype(g.dtype)
        g = out
    return g


class _Pad(torch.autograd.Function):
    """``x`` padded by ``mode`` (``_padding.pad``, what fastconv.conv*d runs); backward: :func:`_pad_adjoint`."""

    @staticmethod
    def forward(ctx, x, pads, mode):
        dev = _device([("input", x)])
        with _on(dev):
            y = _padding.pad(_array(x, "input"), pads, mode)
        ctx.pads, ctx.mode = pads, mode
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        with _on(dy.device):
            dx = _pad_adjoint(_array(dy, "grad_output"), ctx.pads, ctx.mode)
        return _tensor(dx), None, None


def _mode_padding(nd, x, w, b, stride, padding, dilation, groups, padding_mode):
    """(input, padding) for the zero-padded convolution ``_Conv`` runs: ``padding_mode`` checked; for a
    mode other than zeros, the input padded by the mode through :class:`_Pad` and padding 0 (torch.nn.Conv's
    rule, as fastconv.conv*d; the pads are the spec's, so "same" and per-side pairs work, with the mode's
    limits)."""
    mode = _padding.check_padding_mode(padding_mode)
    if mode == "zeros":
        return x, padding
    dev = _device([("input", x), ("weight", w), ("bias", b)])
    with _on(dev):
        spec = conv_spec(_array(x, "input"), _array(w, "weight"), None if b is None else _array(b, "bias"),
                         stride, padding, dilation, groups, spatial_dims=nd)
    if not spec.is_padded:
        return x, padding
    pads = spec.pads[3 - nd:]
    _padding.check_pads(mode, spec.in_size[3 - nd:], pads)
    return _Pad.apply(x, pads, mode), 0


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
class _Conv(torch.autograd.Function):
    """The zero-padded convolution in ``nd`` dimensions (padding modes are a :class:`_Pad` before it)."""

    @staticmethod
    def forward(ctx, x, w, b, nd, stride, padding, dilation, groups, backend, algo):
        dev = _device([("input", x), ("weight", w), ("bias", b)])
        with _on(dev):
            y = getattr(_f, f"conv{nd}d")(_array(x, "input"), _array(w, "weight"),
                                          None if b is None else _array(b, "bias"), stride, padding, dilation,
                                          groups, backend=backend, algo=algo)
        ctx.args = (stride, padding, dilation, groups)
        ctx.nd, ctx.backend, ctx.algo = nd, backend, algo
        ctx.x_shape, ctx.w_shape, ctx.batched = tuple(x.shape), tuple(w.shape), x.dim() == nd + 2
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_dw else None, w if need_dx else None)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dx = dw = db = None
        kw = dict(backend=ctx.backend, algo=ctx.algo)
        with _on(dy.device):
            g = _array(dy, "grad_output")
            if need_dx:
                g_input = getattr(_grad, f"conv{ctx.nd}d_input")
                dx = _tensor(g_input(ctx.x_shape, _array(w, "weight"), g, *ctx.args, **kw))
            if need_dw:
                g_weight = getattr(_grad, f"conv{ctx.nd}d_weight")
                dw = _tensor(g_weight(_array(x, "input"), ctx.w_shape, g, *ctx.args, **kw))
            if need_db:
                db = _tensor(_grad.conv_bias(g if ctx.batched else g[None]))
        return dx, dw, db, None, None, None, None, None, None, None


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo):
    input, padding = _mode_padding(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    return _Conv.apply(input, weight, bias, nd, stride, padding, dilation, groups, backend, algo)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """As ``torch.nn.functional.conv3d`` (and fastconv.conv3d: per-side padding pairs and ``padding_mode``
    too), differentiable with respect to input, weight and bias."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """As ``torch.nn.functional.conv2d`` (and fastconv.conv2d: asymmetric padding pairs and ``padding_mode``
    too), differentiable with respect to input, weight and bias."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """As ``torch.nn.functional.conv1d`` (plus ``padding_mode``), differentiable with respect to input,
    weight and bias."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


class _ConvTranspose(torch.autograd.Function):
    """y = conv_transpose(x, w) is the input gradient of the convolution C_w whose input has y's shape,
    whose weight is w and whose output has x's shape: y = C_w^T x. So, for the loss gradient g = dL/dy,
    dL/dx = C_w g (the forward convolution of g) and dL/dw = the weight gradient of C_w at input g and
    output gradient x (<g, C_w^T x> = <C_w g, x>). C_w g has, per dimension, at least as many positions as
    x (more only when output_padding >= stride, possible when dilation > stride), and the extra ones are
    positions no x entry sends to, so dL/dx keeps C_w g's leading (Z, P, Q) block and the weight gradient
    sees x extended by zeros to C_w g's size."""

    @staticmethod
    def forward(ctx, x, w, b, nd, stride, padding, output_padding, groups, dilation, backend, algo):
        dev = _device([("input", x), ("weight", w), ("bias", b)])
        with _on(dev):
            xa, wa = _array(x, "input"), _array(w, "weight")
            ba = None if b is None else _array(b, "bias")
            y = getattr(_f, f"conv_transpose{nd}d")(xa, wa, ba, stride, padding, output_padding, groups, dilation,
                                                    backend=backend, algo=algo)
            spec = conv_transpose_spec(xa, wa, ba, stride, padding, output_padding, groups, dilation,
                                       spatial_dims=nd)
        ctx.spec, ctx.backend, ctx.algo = spec, backend, algo
        ctx.w_shape = tuple(w.shape)
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(x if need_dw else None, w if need_dx else None)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        s = ctx.spec
        nd = s.spatial_dims
        args = _conv_args(s)
        # C_w g's size per dimension, and x's (see the class docstring)
        big = tuple(output_size(i, k, st, lo, hi, d) for i, k, st, (lo, hi), d
                    in zip(s.in_size, s.window, s.strides, s.pads, s.dilations))[3 - nd:]
        small = s.out_size[3 - nd:]
        crop = (Ellipsis,) + tuple(slice(0, n) for n in small)
        kw = dict(backend=ctx.backend, algo=ctx.algo)
        dx = dw = db = None
        with _on(dy.device):
            g = _array(dy, "grad_output")
            if need_dx:
                dxa = getattr(_f, f"conv{nd}d")(g, _array(w, "weight"), None, *args, **kw)
                dx = _tensor(dxa if big == small else dxa[crop])
            if need_dw:
                xa = _array(x, "input")
                if big != small:
                    padded = _xp(xa).zeros(xa.shape[:-nd] + big, dtype=xa.dtype)
                    padded[crop] = xa
                    xa = padded
                dw = _tensor(getattr(_grad, f"conv{nd}d_weight")(g, ctx.w_shape, xa, *args, **kw))
            if need_db:
                db = _tensor(_grad.conv_bias(g if s.batched else g[None]))
        return dx, dw, db, None, None, None, None, None, None, None, None


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, padding_mode,
                    backend, algo):
    _padding.check_padding_mode(padding_mode, allowed=("zeros",))
    return _ConvTranspose.apply(input, weight, bias, nd, stride, padding, output_padding, groups, dilation,
                                backend, algo)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """As ``torch.nn.functional.conv_transpose3d``, differentiable with respect to input, weight and bias
    (``padding_mode``: only "zeros", as torch.nn.ConvTranspose3d)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """As ``torch.nn.functional.conv_transpose2d``, differentiable with respect to input, weight and bias."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """As ``torch.nn.functional.conv_transpose1d``, differentiable with respect to input, weight and bias."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
class _Pool(torch.autograd.Function):
    """Every pool: ``kind`` (max, avg, adaptive_max, adaptive_avg), ``nd`` and its forward keyword
    arguments. The max kinds always compute their indices (the gradient goes where they point) and return
    them as a second, non-differentiable output."""

    @staticmethod
    def forward(ctx, x, kind, nd, kw, backend):
        dev = _device([("input", x)])
        fwd = getattr(_f, f"{kind}_pool{nd}d")
        is_max = kind.endswith("max")
        with _on(dev):
            xa = _array(x, "input")
            out = fwd(xa, **kw, **({"return_indices": True} if is_max else {}), backend=backend)
        ctx.kind, ctx.nd, ctx.kw, ctx.backend = kind, nd, kw, backend
        ctx.x_shape = tuple(x.shape)
        if not is_max:
            return _tensor(out)
        y, idx = _tensor(out[0]), _tensor(out[1])
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        return y, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _didx=None):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        fn = getattr(_grad, f"{ctx.kind}_pool{ctx.nd}d")
        kw = dict(ctx.kw)
        if ctx.kind.startswith("adaptive"):
            kw.pop("output_size")        # the gradient takes it from grad_output's shape
        with _on(dy.device):
            g = _array(dy, "grad_output")
            x = _placeholder(g, ctx.x_shape)
            if ctx.kind.endswith("max"):
                kw["indices"] = _array(ctx.saved_tensors[0], "indices")
            dx = fn(g, x, **kw, backend=ctx.backend)
        return _tensor(dx), None, None, None, None


def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend):
    y, idx = _Pool.apply(input, "max", nd, dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                                dilation=dilation, ceil_mode=ceil_mode), backend)
    return (y, idx) if return_indices else y


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """As ``torch.nn.functional.max_pool3d`` (indices flat over each (D, H, W) volume; per-side padding
    pairs too)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """As ``torch.nn.functional.max_pool2d``; with ``return_indices`` also the int64 indices (not
    differentiable), which ``max_unpool2d`` takes."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """As ``torch.nn.functional.max_pool1d``."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """As ``torch.nn.functional.avg_pool3d`` (per-side padding pairs too)."""
    return _Pool.apply(input, "avg", 3, dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                             ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                             divisor_override=divisor_override), backend)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """As ``torch.nn.functional.avg_pool2d``."""
    return _Pool.apply(input, "avg", 2, dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                             ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                             divisor_override=divisor_override), backend)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
               backend=None):
    """As ``torch.nn.functional.avg_pool1d``."""
    return _Pool.apply(input, "avg", 1, dict(kernel_size=kernel_size, stride=stride, padding=padding,
                                             ceil_mode=ceil_mode, count_include_pad=count_include_pad), backend)


def adaptive_avg_pool3d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool3d``."""
    return _Pool.apply(input, "adaptive_avg", 3, dict(output_size=output_size), backend)


def adaptive_avg_pool2d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool2d``."""
    return _Pool.apply(input, "adaptive_avg", 2, dict(output_size=output_size), backend)


def adaptive_avg_pool1d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool1d``."""
    return _Pool.apply(input, "adaptive_avg", 1, dict(output_size=output_size), backend)


def _adaptive_max(nd, input, output_size, return_indices, backend):
    y, idx = _Pool.apply(input, "adaptive_max", nd, dict(output_size=output_size), backend)
    return (y, idx) if return_indices else y


def adaptive_max_pool3d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool3d`` (indices flat over each (D, H, W) volume)."""
    return _adaptive_max(3, input, output_size, return_indices, backend)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool2d``."""
    return _adaptive_max(2, input, output_size, return_indices, backend)


def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool1d``."""
    return _adaptive_max(1, input, output_size, return_indices, backend)


# ---------------------------------------------------------------------------------------------------
# Power-average (Lp) pooling
# ---------------------------------------------------------------------------------------------------
class _LpPool(torch.autograd.Function):
    """``lp_pool`` as torch composes it, with the composition's gradient written out.

    Finite p: u = x**p, s = avg_pool(u) (no padding, count_include_pad), y = (taps*s)**(1/p). Backward, in
    torch's order of products: g_s = (dy * ((1/p) * (taps*s)**(1/p - 1))) * taps, set to 0 where s == 0
    (torch's ``sign(s) * relu(|s|)`` passes no gradient there); g_u = avg_pool's gradient of g_s;
    dx = g_u * (p * x**(p - 1)). Keeps x and s. p = +inf: y = max_pool(|x|); p = -inf: y = -max_pool(-|x|);
    both: dx = sign(x) * max_pool's gradient of dy at the forward's indices (the two negations cancel).
    Keeps x and the indices."""

    @staticmethod
    def forward(ctx, x, nd, p, kernel_size, stride, ceil_mode, backend):
        dev = _device([("input", x)])
        ctx.nd, ctx.p, ctx.backend = nd, p, backend
        ctx.x_shape = tuple(x.shape)
        with _on(dev):
            xa = _array(x, "input")
            y, kept = _f._lp_forward(nd, xa, p, kernel_size, stride, ceil_mode, backend, keep=True)
            if math.isinf(p):
                ctx.kw = dict(kernel_size=kernel_size, stride=stride, padding=0, dilation=1, ceil_mode=ceil_mode)
                ctx.save_for_backward(*((x, _tensor(kept)) if ctx.needs_input_grad[0] else (None, None)))
                return _tensor(y)
            ctx.kw = dict(kernel_size=kernel_size, stride=stride, padding=0, ceil_mode=ceil_mode,
                          count_include_pad=True)
            ctx.taps = math.prod(_as_tuple(kernel_size, nd, "kernel_size"))
            s = kept
        ctx.save_for_backward(*((x, _tensor(s)) if ctx.needs_input_grad[0] else (None, None)))
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        x, saved = ctx.saved_tensors
        p, nd = ctx.p, ctx.nd
        with _on(dy.device):
            g, xa = _array(dy, "grad_output"), _array(x, "input")
            xp = _xp(xa)
            if math.isinf(p):
                gu = getattr(_grad, f"max_pool{nd}d")(g, _placeholder(g, ctx.x_shape), **ctx.kw,
                                                      indices=_array(saved, "indices"), backend=ctx.backend)
                return (_tensor(xp.sign(xa) * gu),) + (None,) * 6
            s = _array(saved, "s")
            with _f._quiet_powers(_f.array_kind(xa)):
                gs = (g * ((1.0 / p) * (s * ctx.taps) ** (1.0 / p - 1.0))) * ctx.taps
                gs = xp.where(s == 0, xp.zeros((), dtype=gs.dtype), gs)
                gu = getattr(_grad, f"avg_pool{nd}d")(gs, _placeholder(g, ctx.x_shape), **ctx.kw,
                                                      backend=ctx.backend)
                dx = gu * (p * xa ** (p - 1.0))
        return (_tensor(xp.ascontiguousarray(dx.astype(xa.dtype, copy=False))),) + (None,) * 6


def _lp_pool(nd, input, norm_type, kernel_size, stride, ceil_mode, backend):
    return _LpPool.apply(input, nd, _f._norm_type(norm_type), kernel_size, stride, ceil_mode, backend)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool3d`` (fastconv.lp_pool3d's values), differentiable in its input."""
    return _lp_pool(3, input, norm_type, kernel_size, stride, ceil_mode, backend)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool2d`` (fastconv.lp_pool2d's values), differentiable in its input: the
    gradient is zero where a window's sum of ``x ** norm_type`` is zero, as torch's."""
    return _lp_pool(2, input, norm_type, kernel_size, stride, ceil_mode, backend)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool1d`` (fastconv.lp_pool1d's values), differentiable in its input."""
    return _lp_pool(1, input, norm_type, kernel_size, stride, ceil_mode, backend)


# ---------------------------------------------------------------------------------------------------
# Unpooling
# ---------------------------------------------------------------------------------------------------
class _MaxUnpool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, indices, nd, kernel_size, stride, padding, output_size, backend):
        dev = _device([("input", x), ("indices", indices)])
        with _on(dev):
            y = getattr(_f, f"max_unpool{nd}d")(_array(x, "input"), _array(indices, "indices"), kernel_size,
                                                stride, padding, output_size, backend=backend)
        ctx.nd = nd
        ctx.save_for_backward(indices if ctx.needs_input_grad[0] else None)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        (idx,) = ctx.saved_tensors
        nd = ctx.nd
        dx = dy.flatten(start_dim=-nd).gather(-1, idx.flatten(start_dim=-nd)).view(idx.shape)
        return (dx,) + (None,) * 7


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool3d``; differentiable with respect to input (the gradient is
    ``grad_output`` gathered at ``indices``, flat over each (D, H, W) volume, as torch's)."""
    return _MaxUnpool.apply(input, indices, 3, kernel_size, stride, padding, output_size, backend)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool2d``; differentiable with respect to input (the gradient is
    ``grad_output`` gathered at ``indices``, as torch's)."""
    return _MaxUnpool.apply(input, indices, 2, kernel_size, stride, padding, output_size, backend)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool1d``."""
    return _MaxUnpool.apply(input, indices, 1, kernel_size, stride, padding, output_size, backend)


# ---------------------------------------------------------------------------------------------------
# Sliding blocks: unfold (im2col) and fold (col2im), each the other's adjoint
# ---------------------------------------------------------------------------------------------------
class _Blocks(torch.autograd.Function):
    """``unfold`` and ``fold`` are adjoint linear maps (fold adds every column entry to the image position
    unfold read it from), so the backward of one is the other on ``grad_output``, with the block geometry
    of the forward's spec (kernel, dilation, per-side pads, stride as tuples of its own dimensions, so a
    3-D fold given an int kernel_size stays 3-D) and, for unfold's, the input's spatial size."""

    @staticmethod
    def forward(ctx, x, op, output_size, kernel_size, dilation, padding, stride, backend):
        dev = _device([("input", x)])
        with _on(dev):
            xa = _array(x, "input")
            if op == "unfold":
                y = _f.unfold(xa, kernel_size, dilation, padding, stride, backend=backend)
                spec = unfold_spec(xa, kernel_size, dilation, padding, stride)
            else:
                y = _f.fold(xa, output_size, kernel_size, dilation, padding, stride, backend=backend)
                spec = fold_spec(xa, output_size, kernel_size, dilation, padding, stride)
        nd = spec.spatial_dims
        ctx.op, ctx.backend = op, backend
        ctx.image = spec.in_size[3 - nd:]
        ctx.geometry = (spec.window[3 - nd:], spec.dilations[3 - nd:], spec.pads[3 - nd:], spec.strides[3 - nd:])
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return (None,) * 8
        with _on(dy.device):
            g = _array(dy, "grad_output")
            if ctx.op == "unfold":
                dx = _f.fold(g, ctx.image, *ctx.geometry, backend=ctx.backend)
            else:
                dx = _f.unfold(g, *ctx.geometry, backend=ctx.backend)
        return (_tensor(dx),) + (None,) * 7


def unfold(input, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """As ``torch.nn.functional.unfold`` (and fastconv.unfold: 1-D and 3-D, per-side padding), differentiable
    in its input (the gradient is :func:`fold` of grad_output)."""
    return _Blocks.apply(input, "unfold", None, kernel_size, dilation, padding, stride, backend)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """As ``torch.nn.functional.fold`` (and fastconv.fold: 1-D and 3-D, per-side padding), differentiable in
    its input (the gradient is :func:`unfold` of grad_output)."""
    return _Blocks.apply(input, "fold", output_size, kernel_size, dilation, padding, stride, backend)


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------
class _FastconvConv:
    """Mixin for torch.nn.Conv{1,2,3}d: the same module (padding_mode included), its forward through
    fastconv."""

    _fn = None

    def _setup(self, backend, algo):
        self.backend, self.algo = backend, algo

    def forward(self, input):
        return type(self)._fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                              padding_mode=self.padding_mode, backend=self.backend, algo=self.algo)

    def extra_repr(self):
        return super().extra_repr() + f", backend={self.backend!r}, algo={self.algo!r}"


class Conv3d(_FastconvConv, torch.nn.Conv3d):
    """``torch.nn.Conv3d(..., backend=None, algo="auto")`` running :func:`conv3d`."""

    _fn = staticmethod(conv3d)

    def __init__(self, *args, backend=None, algo="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(backend, algo)


class Conv2d(_FastconvConv, torch.nn.Conv2d):
    """``torch.nn.Conv2d(..., backend=None, algo="auto")`` running :func:`conv2d`."""

    _fn = staticmethod(conv2d)

    def __init__(self, *args, backend=None, algo="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(backend, algo)


class Conv1d(_FastconvConv, torch.nn.Conv1d):
    """``torch.nn.Conv1d(..., backend=None, algo="auto")`` running :func:`conv1d`."""

    _fn = staticmethod(conv1d)

    def __init__(self, *args, backend=None, algo="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(backend, algo)
