"""PyTorch bridge: fastconv's ops on torch tensors, differentiable through ``torch.autograd``.

Every function has the signature of its ``torch.nn.functional`` namesake plus ``*, backend=None`` (and, for the
convolutions, ``algo="auto"``): ``conv1d``, ``conv2d``, ``conv_transpose1d``, ``conv_transpose2d``,
``max_pool1d``, ``max_pool2d`` (``return_indices`` too), ``avg_pool1d``, ``avg_pool2d``,
``adaptive_avg_pool1d``, ``adaptive_avg_pool2d``, ``adaptive_max_pool1d``, ``adaptive_max_pool2d``,
``max_unpool1d``, ``max_unpool2d``. Each is a ``torch.autograd.Function`` whose forward runs fastconv's op
and whose backward runs ``fastconv.grad`` (or, for the transposed convolution, the forward convolution and
the weight gradient with the roles of input and output swapped), on the backend named (None: fastconv's
default for the array type, ``numba`` on the CPU, ``cuda`` on the GPU). ``algo`` names the algorithm of
every convolution the op runs: the forward and both gradients.

Tensors are handed over without copies: CPU tensors as NumPy views (``t.detach().numpy()``, made contiguous
first only if they are not), CUDA tensors through DLPack to CuPy and back (on the tensor's device and torch's
current stream). All tensors of one call must be on one device. Backward computes only the gradients
``ctx.needs_input_grad`` asks for and keeps only what those need (the max pools keep their forward's
indices, not the input; the pools keep nothing else). The max pools' gradient goes where the forward's
indices point, as torch's does; ``max_unpool``'s gradient is the gather ``grad_output[indices]``, as torch's
(done by torch on the tensor's device: it is a memory operation, no arithmetic).

Two modules: ``Conv1d`` and ``Conv2d``, ``torch.nn.Conv1d``/``Conv2d`` (same parameters, initialisation and
state_dict) whose forward runs through fastconv, with ``backend=`` and ``algo=`` keyword arguments.

Double backward is not supported: every backward is ``once_differentiable``, so differentiating a gradient
raises a RuntimeError. float16 is supported as by fastconv (summed in float32); bfloat16 and complex tensors
are refused with a TypeError. ``import fastconv`` does not import this module (nor torch).
"""
from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable

from . import functional as _f
from . import grad as _grad
from ._spec import conv_transpose_spec, output_size

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "max_unpool1d", "max_unpool2d", "Conv1d", "Conv2d"]


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


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, nd, stride, padding, dilation, groups, backend, algo):
        dev = _device([("input", x), ("weight", w), ("bias", b)])
        fwd = _f.conv2d if nd == 2 else _f.conv1d
        with _on(dev):
            y = fwd(_array(x, "input"), _array(w, "weight"), None if b is None else _array(b, "bias"),
                    stride, padding, dilation, groups, backend=backend, algo=algo)
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
        g_input = _grad.conv2d_input if ctx.nd == 2 else _grad.conv1d_input
        g_weight = _grad.conv2d_weight if ctx.nd == 2 else _grad.conv1d_weight
        kw = dict(backend=ctx.backend, algo=ctx.algo)
        with _on(dy.device):
            g = _array(dy, "grad_output")
            if need_dx:
                dx = _tensor(g_input(ctx.x_shape, _array(w, "weight"), g, *ctx.args, **kw))
            if need_dw:
                dw = _tensor(g_weight(_array(x, "input"), ctx.w_shape, g, *ctx.args, **kw))
            if need_db:
                db = _tensor(_grad.conv_bias(g if ctx.batched else g[None]))
        return dx, dw, db, None, None, None, None, None, None, None


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algo="auto"):
    """As ``torch.nn.functional.conv2d`` (and fastconv.conv2d: asymmetric padding pairs too), differentiable
    with respect to input, weight and bias."""
    return _Conv.apply(input, weight, bias, 2, stride, padding, dilation, groups, backend, algo)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None, algo="auto"):
    """As ``torch.nn.functional.conv1d``, differentiable with respect to input, weight and bias."""
    return _Conv.apply(input, weight, bias, 1, stride, padding, dilation, groups, backend, algo)


class _ConvTranspose(torch.autograd.Function):
    """y = conv_transpose(x, w) is the input gradient of the convolution C_w whose input has y's shape,
    whose weight is w and whose output has x's shape: y = C_w^T x. So, for the loss gradient g = dL/dy,
    dL/dx = C_w g (the forward convolution of g) and dL/dw = the weight gradient of C_w at input g and
    output gradient x (<g, C_w^T x> = <C_w g, x>). C_w g has P' >= P rows (P: x's rows): more only when
    output_padding >= stride (possible when dilation > stride), and those extra rows are rows no x entry
    sends to, so dL/dx keeps C_w g's first P rows (and Q columns) and the weight gradient sees x extended
    by zero rows/columns to (P', Q')."""

    @staticmethod
    def forward(ctx, x, w, b, nd, stride, padding, output_padding, groups, dilation, backend, algo):
        dev = _device([("input", x), ("weight", w), ("bias", b)])
        fwd = _f.conv_transpose2d if nd == 2 else _f.conv_transpose1d
        with _on(dev):
            xa, wa = _array(x, "input"), _array(w, "weight")
            ba = None if b is None else _array(b, "bias")
            y = fwd(xa, wa, ba, stride, padding, output_padding, groups, dilation, backend=backend, algo=algo)
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
        if nd == 2:
            args = ((s.stride_h, s.stride_w), ((s.pad_top, s.pad_bottom), (s.pad_left, s.pad_right)),
                    (s.dil_h, s.dil_w), s.groups)
        else:
            args = ((s.stride_w,), ((s.pad_left, s.pad_right),), (s.dil_w,), s.groups)
        # the rows/columns of C_w g (see the class docstring)
        P2 = output_size(s.H, s.R, s.stride_h, s.pad_top, s.pad_bottom, s.dil_h)
        Q2 = output_size(s.W, s.S, s.stride_w, s.pad_left, s.pad_right, s.dil_w)
        crop = (Ellipsis,) + ((slice(0, s.P),) if nd == 2 else ()) + (slice(0, s.Q),)
        kw = dict(backend=ctx.backend, algo=ctx.algo)
        dx = dw = db = None
        with _on(dy.device):
            g = _array(dy, "grad_output")
            if need_dx:
                conv = _f.conv2d if nd == 2 else _f.conv1d
                dxa = conv(g, _array(w, "weight"), None, *args, **kw)
                if (P2, Q2) != (s.P, s.Q):
                    dxa = dxa[crop]
                dx = _tensor(dxa)
            if need_dw:
                xa = _array(x, "input")
                if (P2, Q2) != (s.P, s.Q):
                    big = xa.shape[:-nd] + ((P2, Q2) if nd == 2 else (Q2,))
                    xp = _f._array_module("numpy" if type(xa).__module__ == "numpy" else "cupy")
                    padded = xp.zeros(big, dtype=xa.dtype)
                    padded[crop] = xa
                    xa = padded
                g_weight = _grad.conv2d_weight if nd == 2 else _grad.conv1d_weight
                dw = _tensor(g_weight(g, ctx.w_shape, xa, *args, **kw))
            if need_db:
                db = _tensor(_grad.conv_bias(g if s.batched else g[None]))
        return dx, dw, db, None, None, None, None, None, None, None, None


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None, algo="auto"):
    """As ``torch.nn.functional.conv_transpose2d``, differentiable with respect to input, weight and bias."""
    return _ConvTranspose.apply(input, weight, bias, 2, stride, padding, output_padding, groups, dilation,
                                backend, algo)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend=None, algo="auto"):
    """As ``torch.nn.functional.conv_transpose1d``, differentiable with respect to input, weight and bias."""
    return _ConvTranspose.apply(input, weight, bias, 1, stride, padding, output_padding, groups, dilation,
                                backend, algo)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
class _Pool(torch.autograd.Function):
    """Every pool: ``kind`` (max, avg, adaptive_max, adaptive_avg) and its forward keyword arguments. The
    max kinds always compute their indices (the gradient goes where they point) and return them as a
    second, non-differentiable output."""

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


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """As ``torch.nn.functional.max_pool2d``; with ``return_indices`` also the int64 indices (not
    differentiable), which ``max_unpool2d`` takes."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               backend=None):
    """As ``torch.nn.functional.max_pool1d``."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)


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


def adaptive_avg_pool2d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool2d``."""
    return _Pool.apply(input, "adaptive_avg", 2, dict(output_size=output_size), backend)


def adaptive_avg_pool1d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool1d``."""
    return _Pool.apply(input, "adaptive_avg", 1, dict(output_size=output_size), backend)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool2d``."""
    y, idx = _Pool.apply(input, "adaptive_max", 2, dict(output_size=output_size), backend)
    return (y, idx) if return_indices else y


def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool1d``."""
    y, idx = _Pool.apply(input, "adaptive_max", 1, dict(output_size=output_size), backend)
    return (y, idx) if return_indices else y


# ---------------------------------------------------------------------------------------------------
# Unpooling
# ---------------------------------------------------------------------------------------------------
class _MaxUnpool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, indices, nd, kernel_size, stride, padding, output_size, backend):
        dev = _device([("input", x), ("indices", indices)])
        fwd = _f.max_unpool2d if nd == 2 else _f.max_unpool1d
        with _on(dev):
            y = fwd(_array(x, "input"), _array(indices, "indices"), kernel_size, stride, padding, output_size,
                    backend=backend)
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


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool2d``; differentiable with respect to input (the gradient is
    ``grad_output`` gathered at ``indices``, as torch's)."""
    return _MaxUnpool.apply(input, indices, 2, kernel_size, stride, padding, output_size, backend)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool1d``."""
    return _MaxUnpool.apply(input, indices, 1, kernel_size, stride, padding, output_size, backend)


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------
class _FastconvConv:
    """Mixin for torch.nn.Conv{1,2}d: the same module, its forward through fastconv."""

    _fn = None

    def _setup(self, backend, algo):
        if self.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' (fastconv pads with zeros), got {self.padding_mode!r}")
        self.backend, self.algo = backend, algo

    def forward(self, input):
        return type(self)._fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                              backend=self.backend, algo=self.algo)

    def extra_repr(self):
        return super().extra_repr() + f", backend={self.backend!r}, algo={self.algo!r}"


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
