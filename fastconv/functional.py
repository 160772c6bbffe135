"""The public ops: drop-in for torch.nn.functional's conv and pooling functions, on NumPy and CuPy arrays.

Each function builds its spec (which validates every argument), asks dispatch which implementation runs
it, brings the arrays into the layout backends expect (C-contiguous, 4-D NCHW for 1-D and 2-D problems, 5-D
NCDHW for 3-D ones, float32 for float16 where the implementation has no half path) and shapes the result back.
Inputs are never written to.

Every array argument may also be any DLPack producer (a torch CPU or CUDA tensor, a JAX array, ...): it is
taken without a copy as the NumPy or CuPy array over its memory, and the result comes back as the first array
argument's type (:mod:`fastconv._interop`).

Beyond torch.nn.functional: ``padding_mode`` on every convolution (torch has it on the nn.Conv modules), per-side
padding pairs for convolutions and pools, ``backend=`` and ``algo=``.
"""
from __future__ import annotations

import math
import numbers

import numpy

from . import _dispatch, _indices, _memo, _padding
from ._interop import takes_arrays
from ._args import _as_tuple, plain
from ._spec import array_kind, conv_spec, conv_transpose_spec, pool_spec, unpool_spec

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d", "lp_pool3d",
           "max_unpool1d", "max_unpool2d", "max_unpool3d"]


_INT64 = numpy.dtype("int64")


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


class _Problem:
    """What one argument signature determines (remembered per signature by :mod:`fastconv._memo`): the
    validated spec, the array kind, the resolved backend and algo, dispatch's :class:`~fastconv._dispatch.Plan`,
    and the layout facts :func:`_run` needs (each operand's backend shape, which is an index array, where
    the padding operand is, the user's output shape). ``pads``/``mode``: a conv's ``padding_mode`` padding,
    applied to the input on every call (None: none)."""

    __slots__ = ("spec", "kind", "backend", "algo", "plan", "operands", "padded_at", "out_shape", "pads",
                 "mode", "fast")

    def __init__(self, spec, kind, backend, algo, pads=None, mode=None):
        self.spec, self.kind, self.backend, self.algo = spec, kind, backend, algo
        self.plan = _dispatch.plan(spec, backend, algo)
        self.operands = tuple((shape, spec.is_index_operand(name))
                              for name, shape in zip(spec.ARRAYS, spec.operands()))
        padded = spec.PADDING_OPERAND
        self.padded_at = spec.ARRAYS.index(padded) if padded is not None else None
        self.out_shape = spec.output_shape
        self.pads, self.mode = pads, mode
        self.fast = None      # set by the first _run where _fast_path applies


def _execute(spec, kind, backend, algo, arrays):
    """Select, prepare arrays, run, shape back. ``arrays``: what ``spec.ARRAYS`` names, as the user passed
    them (None for an absent optional one); each is viewed in the backend layout ``spec.operands()``."""
    return _run(_Problem(spec, kind, backend, algo), arrays)


def _run(prob, arrays):
    """:func:`_execute` for a built (or remembered) problem: the choice is finished here on every call
    (:func:`fastconv._dispatch.select_from`: the data rule reads the padding operand's values), then the
    arrays are brought into the backend layout -- a reshape only where the shape differs, a copy only where
    an array is not C-contiguous or must change dtype -- and the result shaped back."""
    fast = prob.fast
    if fast is not None:
        out = fast(arrays)
        if out is not None:
            return out
    spec = prob.spec
    impl = _dispatch.select_from(prob.plan, spec, prob.backend, prob.algo,
                                 weight=arrays[prob.padded_at] if prob.padded_at is not None else None,
                                 arrays=arrays)
    out_shape = prob.out_shape
    if spec.N == 0:   # an empty batch: nothing to launch (torch returns an empty result too)
        xp = _array_module(prob.kind)
        out = xp.zeros(out_shape, dtype=spec.dtype)
        if getattr(spec, "return_indices", False):
            return out, xp.zeros(out_shape, dtype=xp.int64)
        return out
    run_spec = impl.compute_spec(spec)
    upcast = run_spec is not spec and run_spec.dtype != spec.dtype
    prepared = []
    for a, (shape, is_index) in zip(arrays, prob.operands):
        if a is not None:
            a = plain(a)   # an ndarray subclass (numpy.memmap, ...) as its ndarray view: plain results
            if a.shape != shape:
                a = a.reshape(shape)
            if is_index:
                if a.dtype != _INT64 or not a.flags.c_contiguous:
                    a = _array_module(prob.kind).ascontiguousarray(a, dtype="int64")
            else:
                if not a.flags.c_contiguous:
                    a = _array_module(prob.kind).ascontiguousarray(a)
                if upcast:
                    a = a.astype(run_spec.dtype)
        prepared.append(a)
    result = impl.run(run_spec, *prepared)
    if fast is None and not upcast:
        prob.fast = _fast_path(prob, impl, run_spec, arrays)
    if type(result) is not tuple:
        if upcast:
            result = result.astype(spec.dtype)
        return result if result.shape == out_shape else result.reshape(out_shape)
    shaped = []
    for i, o in enumerate(result):
        if i == 0 and upcast:
            o = o.astype(spec.dtype)
        shaped.append(o if o.shape == out_shape else o.reshape(out_shape))
    return tuple(shaped)


def _fast_path(prob, impl, run_spec, arrays):
    """What a repeat call of ``prob``'s signature runs instead of :func:`_run`'s general path, or None where
    that path must run every time. It applies where the choice cannot change from call to call
    (:func:`fastconv._dispatch.fixed_choice`), to exact ``numpy.ndarray`` operands (what the memo key then
    guarantees for every call of the signature: type, shape, dtype) in the implementation's own dtype. It
    runs ``impl.runner(run_spec)`` straight on the arrays (reshaped where the backend layout differs) and
    hands back to the general path (returns None) for an operand that is not C-contiguous, aligned and
    writeable (what runners may rely on) or, where the data rule could reject ``impl``, for a weight
    holding Inf or NaN (the general path then decides)."""
    if prob.kind != "numpy" or _dispatch.fixed_choice(prob.plan, prob.spec, prob.backend) is not impl:
        return None
    if any(a is not None and type(a) is not numpy.ndarray for a in arrays):
        return None
    if any(a is not None and is_index and a.dtype != _INT64 for a, (_, is_index) in zip(arrays, prob.operands)):
        return None
    go = impl.runner(run_spec)
    spec = prob.spec
    shapes = tuple(shape for shape, _ in prob.operands)
    same = all(a is None or a.shape == s for a, s in zip(arrays, shapes))
    out_shape = prob.out_shape
    rule_at = prob.padded_at if impl.zero_fills_padding else None
    rule = _dispatch.nonfinite_weight_meets_padding

    def fast(arrays):
        for a in arrays:
            if a is not None:
                f = a.flags
                if not (f.c_contiguous and f.aligned and f.writeable):
                    return None
        if rule_at is not None and arrays[rule_at] is not None and rule(spec, arrays[rule_at]):
            return None
        if not same:
            arrays = [a if a is None else a.reshape(s) for a, s in zip(arrays, shapes)]
        result = go(*arrays)
        if type(result) is not tuple:
            return result if result.shape == out_shape else result.reshape(out_shape)
        return tuple(o if o.shape == out_shape else o.reshape(out_shape) for o in result)
    return fast


def _call(key, build, go):
    """One call through the memo (:mod:`fastconv._memo`): ``go(problem)`` on the problem remembered under
    ``key``, else on ``build()``'s (which validates every argument), remembered only once ``go`` has
    returned: a call that raises is never remembered, so it raises the same error every time."""
    prob = _memo.get(key)
    if prob is not None:
        return go(prob)
    prob = build()
    out = go(prob)
    _memo.put(key, prob)
    return out


def _check_names(backend, algo, op):
    if backend is not None:
        _dispatch.check_backend_name(backend)
    _dispatch.check_algo(algo, op)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
@takes_arrays("input", "weight", "bias")
def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo):
    key = _memo.key(("conv", nd), (input, weight, bias),
                    (stride, padding, dilation, groups, padding_mode, backend, algo))

    padded = []      # a miss pads the input to build the spec: its run takes that copy

    def build():
        _check_names(backend, algo, "conv")
        mode = _padding.check_padding_mode(padding_mode)
        spec = conv_spec(input, weight, bias, stride, padding, dilation, groups, spatial_dims=nd)
        kind = array_kind(input)
        resolved = _resolve_backend(backend, kind)
        if mode != "zeros" and spec.is_padded:
            # torch.nn.Conv*d's rule: pad the input by the mode, then convolve without padding
            pads = spec.pads[3 - nd:]
            _padding.check_pads(mode, spec.in_size[3 - nd:], pads)
            padded.append(_padding.pad(input, pads, mode))
            spec = conv_spec(padded[0], weight, bias, stride, 0, dilation, groups, spatial_dims=nd)
            return _Problem(spec, kind, resolved, algo, pads=pads, mode=mode)
        return _Problem(spec, kind, resolved, algo)

    def go(prob):
        if prob.pads is None:
            return _run(prob, (input, weight, bias))
        x = padded[0] if padded else _padding.pad(input, prob.pads, prob.mode)
        return _run(prob, (x, weight, bias))

    return _call(key, build, go)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input (N, C, H, W) or unbatched (C, H, W); weight (K, C/groups, R, S); bias (K,) or None.
    padding: int, (ph, pw), ((top, bottom), (left, right)), 'valid' or 'same' (stride 1; the odd extra
    padding goes bottom/right). padding_mode: "zeros", "reflect", "replicate" or "circular", as
    ``torch.nn.Conv2d``'s (reflect needs each pad < its dimension, circular <= it). Returns an array of the
    input's type and dtype, (N, K, P, Q).
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``: input (N, C, L) or (C, L); weight
    (K, C/groups, kL); padding int, (p,), ((left, right),), 'valid' or 'same'; padding_mode as conv2d's.
    Runs as 2-D with H = 1."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto"):
    """3-D cross-correlation, as ``torch.nn.functional.conv3d``: input (N, C, D, H, W) or (C, D, H, W);
    weight (K, C/groups, T, R, S); padding int, (pd, ph, pw), ((front, back), (top, bottom), (left, right)),
    'valid' or 'same'; padding_mode as conv2d's. Returns (N, K, Z, P, Q)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo)


@takes_arrays("input", "weight", "bias")
def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, padding_mode,
                    backend, algo):
    def build():
        _check_names(backend, algo, "conv_input")
        _padding.check_padding_mode(padding_mode, allowed=("zeros",))
        spec = conv_transpose_spec(input, weight, bias, stride, padding, output_padding, groups, dilation,
                                   spatial_dims=nd)
        kind = array_kind(input)
        return _Problem(spec, kind, _resolve_backend(backend, kind), algo)

    key = _memo.key(("conv_transpose", nd), (input, weight, bias),
                    (stride, padding, output_padding, groups, dilation, padding_mode, backend, algo))
    return _call(key, build, lambda prob: _run(prob, (input, weight, bias)))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``: the gradient of conv2d with
    respect to its input (plus bias).

    input (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out/groups, R, S); bias (C_out,) or None.
    padding: int, (ph, pw) or ((top, bottom), (left, right)) (asymmetric, beyond torch), or 'valid';
    output_padding adds rows/columns at the bottom/right and must be < max(stride, dilation). Output
    (N, C_out, H_out, W_out), ``H_out = (H-1)*stride - top - bottom + dilation*(R-1) + output_padding + 1``.
    padding_mode: only "zeros" (as torch.nn.ConvTranspose2d).
    """
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``: input (N, C_in, L) or
    (C_in, L), weight (C_in, C_out/groups, kL); padding int, (p,) or ((left, right),)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """3-D transposed convolution, as ``torch.nn.functional.conv_transpose3d``: input (N, C_in, D, H, W) or
    (C_in, D, H, W), weight (C_in, C_out/groups, T, R, S); padding int, 3 ints or 3 (before, after) pairs."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation,
                           padding_mode, backend, algo)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
@takes_arrays("input")
def _pool(nd, kind, input, backend, **kw):
    def build():
        _check_names(backend, "auto", kind + "_pool")
        spec = pool_spec(kind, input, spatial_dims=nd, **kw)
        akind = array_kind(input)
        return _Problem(spec, akind, _resolve_backend(backend, akind), "auto")

    key = _memo.key(("pool", nd, kind, tuple(kw)), (input,), (backend, *kw.values()))
    return _call(key, build, lambda prob: _run(prob, (input,)))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """As ``torch.nn.functional.max_pool2d``: padding counts as -inf (padding <= kernel_size // 2), a
    window holding NaN gives NaN, indices are int64 flat positions ``h * W + w`` in each (n, c) plane.
    Beyond torch, padding may be per side, ``((top, bottom), (left, right))``, each side at most
    ``dilation * (kernel_size - 1)`` (ONNX's explicit pads and SAME_UPPER/SAME_LOWER)."""
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
    but not the area ceil_mode adds past it; a non-zero divisor_override replaces both rules. Per-side
    padding ``((top, bottom), (left, right))`` as for max_pool2d (the divisor counts each side's own
    padding)."""
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


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """As ``torch.nn.functional.max_pool3d``: input (N, C, D, H, W) or (C, D, H, W); the rules of max_pool2d
    with one more dimension; indices are flat positions ``(d * H + h) * W + w`` in each (n, c) volume.
    Per-side padding: three (before, after) pairs."""
    return _pool(3, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """As ``torch.nn.functional.avg_pool3d``; the divisor rules of avg_pool2d over (D, H, W) windows."""
    return _pool(3, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override)


def adaptive_avg_pool3d(input, output_size, *, backend=None):
    """As ``torch.nn.functional.adaptive_avg_pool3d``: per dimension, window i spans floor(i*In/Out) to
    ceil((i+1)*In/Out); None in output_size keeps that dimension."""
    return _pool(3, "adaptive_avg", input, backend, output_size_=output_size)


def adaptive_max_pool3d(input, output_size, return_indices=False, *, backend=None):
    """As ``torch.nn.functional.adaptive_max_pool3d``; indices flat over the (D, H, W) plane."""
    return _pool(3, "adaptive_max", input, backend, output_size_=output_size, return_indices=return_indices)


# ---------------------------------------------------------------------------------------------------
# Power-average (Lp) pooling: torch's composition of an average pool, written out
# ---------------------------------------------------------------------------------------------------
def _norm_type(norm_type) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be a real number, got {type(norm_type).__name__} {norm_type!r}")
    p = float(norm_type)
    if p != p or p == 0:
        raise ValueError(f"norm_type must be non-zero and not NaN (the result is raised to 1/norm_type), "
                         f"got {norm_type!r}")
    return p


@takes_arrays("input")
def _lp_pool(nd, input, norm_type, kernel_size, stride, ceil_mode, backend):
    return _lp_forward(nd, input, norm_type, kernel_size, stride, ceil_mode, backend)[0]


def _lp_forward(nd, input, norm_type, kernel_size, stride, ceil_mode, backend, keep=False):
    """torch.nn.functional.lp_pool{1,2,3}d's definition: ``(prod(kernel) * avg_pool(x ** p)) ** (1/p)``
    with no padding, the average pool's divisor rules included (a ceil_mode window cut by the input edge is
    divided by its clipped size, then scaled by the whole window's: torch's result, kept); p = +inf is the
    max pool of |x|, p = -inf minus the max pool of -|x|. Returns ``(y, kept)``: the window means
    ``avg_pool(x ** p)`` for a finite p, the max pool's indices for an infinite one when ``keep`` (else
    None) -- what fastconv.torch's gradient needs, so the rule is written once."""
    p = _norm_type(norm_type)
    if backend is not None:
        _dispatch.check_backend_name(backend)
    if p in (math.inf, -math.inf):
        kind = "max"
        spec = pool_spec(kind, input, kernel_size, stride, 0, 1, ceil_mode, return_indices=keep, spatial_dims=nd)
    else:
        kind = "avg"
        spec = pool_spec(kind, input, kernel_size, stride, 0, ceil_mode=ceil_mode, count_include_pad=True,
                         spatial_dims=nd)
    akind = array_kind(input)
    backend = _resolve_backend(backend, akind)
    xp = _array_module(akind)
    if kind == "max":
        out = _execute(spec, akind, backend, "auto", (xp.abs(input) if p > 0 else -xp.abs(input),))
        y, idx = out if keep else (out, None)
        return (y if p > 0 else -y), idx
    taps = math.prod(_as_tuple(kernel_size, nd, "kernel_size"))
    with _quiet_powers(akind):
        s = _execute(spec, akind, backend, "auto", (input ** p,))
        return (s * taps) ** (1.0 / p), s


def _quiet_powers(kind: str):
    """NumPy's warnings for the powers silenced (a negative base to a fractional power is NaN, an overflow
    inf, as in torch); CuPy does not warn."""
    import contextlib
    import numpy
    return numpy.errstate(invalid="ignore", divide="ignore", over="ignore") if kind == "numpy"         else contextlib.nullcontext()


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool2d``: ``(sum over the window of x**p) ** (1/p)``, computed as torch
    does, ``(kh*kw * avg_pool2d(x**p)) ** (1/p)`` -- so a negative window sum with odd p gives NaN, a
    ceil_mode window cut by the edge is scaled up to the whole window, as in torch, and ``norm_type=inf``
    is the max of |x|. No padding; norm_type 0 or NaN is refused."""
    return _lp_pool(2, input, norm_type, kernel_size, stride, ceil_mode, backend)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool1d`` (see lp_pool2d)."""
    return _lp_pool(1, input, norm_type, kernel_size, stride, ceil_mode, backend)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """As ``torch.nn.functional.lp_pool3d`` (see lp_pool2d)."""
    return _lp_pool(3, input, norm_type, kernel_size, stride, ceil_mode, backend)


# ---------------------------------------------------------------------------------------------------
# Unpooling
# ---------------------------------------------------------------------------------------------------
@takes_arrays("input", "indices")
def _max_unpool(nd, input, indices, kernel_size, stride, padding, output_size, backend):
    def build():
        _check_names(backend, "auto", "max_unpool")
        spec = unpool_spec(input, indices, kernel_size, stride, padding, output_size, spatial_dims=nd)
        kind = array_kind(input)
        if array_kind(indices) != kind:
            raise TypeError(f"indices is a {array_kind(indices)} array but input is a {kind} array; "
                            f"move them to one place first")
        _indices.check_in_range(spec, indices)
        checked.append(True)
        return _Problem(spec, kind, _resolve_backend(backend, kind), "auto")

    checked = []

    def go(prob):
        if not checked:
            _indices.check_in_range(prob.spec, indices)    # values: on every call
        return _run(prob, (input, indices))

    key = _memo.key(("max_unpool", nd), (input, indices), (kernel_size, stride, padding, output_size, backend))
    return _call(key, build, go)


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


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """As ``torch.nn.functional.max_unpool3d``: input and indices (N, C, D, H, W) or (C, D, H, W); indices
    flat over the output's (D, H, W) plane."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size, backend)


# ---------------------------------------------------------------------------------------------------
# fold / unfold live in their own module (their specs are fastconv._spec_fold's); exported here too, as
# torch.nn.functional has them
# ---------------------------------------------------------------------------------------------------
from ._fold import fold, unfold  # noqa: E402  (after the helpers _fold imports from this module)

__all__ += ["unfold", "fold"]
