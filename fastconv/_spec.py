"""The problem objects: ``ConvSpec`` and ``PoolSpec``.

A spec is built once, from the user's arguments, by :func:`conv_spec` or :func:`pool_spec`; it is frozen
and is the only description of the problem that flows to dispatch, to a backend and to a kernel launch.
Every rule about arguments (types, ranges, shapes, dtypes) is checked here, before anything runs, and
raises ``TypeError``/``ValueError`` naming the argument.

Letters follow CUTLASS and are the same in the CUDA sources: N C H W input, K output channels, R S filter,
P Q output, ``stride_h/stride_w``, ``pad_*``, ``dil_h/dil_w``, ``groups``. One-dimensional problems are
two-dimensional ones with H = P = R = 1 (``spatial_dims`` remembers what the user passed).

All output-size arithmetic is :func:`output_size`; nothing else computes an output extent.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Sequence, Tuple

INT32_MAX = 2**31 - 1

#: storage dtypes accepted by every public function (float16 is computed in float32 by backends that
#: have no native half path, and always returned as float16).
DTYPES = ("float16", "float32", "float64")


# ---------------------------------------------------------------------------------------------------
# The one output-size formula
# ---------------------------------------------------------------------------------------------------
def output_size(size: int, kernel: int, stride: int = 1, pad_lo: int = 0, pad_hi: int = 0,
                dilation: int = 1, ceil_mode: bool = False) -> int:
    """Number of windows of ``dilation*(kernel-1)+1`` taps, ``stride`` apart, that fit in the padded extent.

    ``ceil_mode`` keeps a last, partial window as long as it *starts* inside the input or the left
    padding (PyTorch's rule). Returns 0 when not even one window fits.
    """
    span = size + pad_lo + pad_hi - (dilation * (kernel - 1) + 1)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


# ---------------------------------------------------------------------------------------------------
# Argument normalisation (shared by specs and the exported shape helpers)
# ---------------------------------------------------------------------------------------------------
def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def _as_tuple(value, n: int, name: str) -> Tuple[int, ...]:
    """An int (repeated ``n`` times) or a sequence of exactly ``n`` ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
        return tuple(_as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    return (_as_int(value, name),) * n


def _positive(values: Tuple[int, ...], name: str) -> Tuple[int, ...]:
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {values if len(values) > 1 else values[0]}")
    return values


def _non_negative(values, name: str):
    flat = [v for pair in values for v in (pair if isinstance(pair, tuple) else (pair,))]
    if any(v < 0 for v in flat):
        raise ValueError(f"{name} must be non-negative, got {values!r}")
    return values


def _pad_pairs(padding, n: int, name: str = "padding") -> Tuple[Tuple[int, int], ...]:
    """int | n ints | n (lo, hi) pairs  ->  n (lo, hi) pairs.  Strings are handled by the caller."""
    if isinstance(padding, (list, tuple)):
        if len(padding) != n:
            hint = " or ((left, right),)" if n == 1 else ""
            raise ValueError(f"{name} must be an int, {n} ints{hint} or {n} (before, after) pairs, got {padding!r}")
        pairs = []
        for i, p in enumerate(padding):
            if isinstance(p, (list, tuple)):
                if len(p) != 2:
                    raise ValueError(f"{name}[{i}] must be an int or a (before, after) pair, got {p!r}")
                pairs.append((_as_int(p[0], f"{name}[{i}][0]"), _as_int(p[1], f"{name}[{i}][1]")))
            else:
                v = _as_int(p, f"{name}[{i}]")
                pairs.append((v, v))
        return _non_negative(tuple(pairs), name)
    v = _as_int(padding, name)
    return _non_negative(((v, v),) * n, name)


# ---------------------------------------------------------------------------------------------------
# Array facts (without importing CuPy)
# ---------------------------------------------------------------------------------------------------
def array_kind(a) -> str:
    """'numpy' or 'cupy' for a supported array; TypeError for anything else."""
    mod = type(a).__module__ or ""
    if type(a).__name__ == "ndarray" and (mod == "numpy" or mod.startswith("cupy")):
        return "numpy" if mod == "numpy" else "cupy"
    raise TypeError("expected a numpy.ndarray or cupy.ndarray")


#: native-byte-order float dtypes by their one-letter code (a C attribute: much cheaper than str(dtype))
_FLOAT_BY_CHAR = {"e": "float16", "f": "float32", "d": "float64"}


def dtype_name(a) -> Optional[str]:
    """'float16' / 'float32' / 'float64' for a supported array dtype, else None (integers, complex,
    non-native byte order such as '>f4')."""
    dt = a.dtype
    return _FLOAT_BY_CHAR.get(dt.char) if dt.isnative else None


def _check_array(a, name: str) -> str:
    try:
        kind = array_kind(a)
    except TypeError:
        raise TypeError(f"{name} must be a numpy.ndarray or cupy.ndarray, got {type(a).__module__}."
                        f"{type(a).__name__}") from None
    if dtype_name(a) is None:
        raise TypeError(f"{name} has dtype {a.dtype}; supported dtypes are {', '.join(DTYPES)} "
                        f"in native byte order")
    return kind


def _same_place(arrays: Sequence[Tuple[str, object]]) -> str:
    """All arrays of one kind and, for CuPy, on one device. Returns the kind."""
    kinds = {name: _check_array(a, name) for name, a in arrays}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n} is {k}" for n, k in kinds.items())
        raise TypeError(f"arguments mix NumPy and CuPy arrays ({desc}); move them to one place first")
    kind = next(iter(kinds.values()))
    if kind == "cupy":
        devices = {name: a.device.id for name, a in arrays}
        if len(set(devices.values())) > 1:
            desc = ", ".join(f"{n} on device {d}" for n, d in devices.items())
            raise ValueError(f"arrays live on different GPUs ({desc})")
    return kind


# ---------------------------------------------------------------------------------------------------
# What both specs share
# ---------------------------------------------------------------------------------------------------
_ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}


class _SpecBase:
    """Members every spec has, derived from its fields (``N C H W``, ``output_shape4``, ``max_elements``)."""

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The shape the user gets back: batched or not, 1-D or 2-D, as the input was."""
        return _user_shape(self.output_shape4, self.spatial_dims, self.batched)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype]

    @property
    def needs_64bit_indexing(self) -> bool:
        """Whether some buffer of the problem holds more than 2^31 - 1 elements."""
        return self.max_elements() > INT32_MAX

    def key(self) -> tuple:
        """Everything the result and the speed depend on: the cache key for tuning."""
        return dataclasses.astuple(self)


# ---------------------------------------------------------------------------------------------------
# ConvSpec
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvSpec(_SpecBase):
    """One convolution problem, cross-correlation as in torch.nn.functional.conv2d, NCHW layout."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dil_h: int
    dil_w: int
    groups: int
    has_bias: bool
    dtype: str
    spatial_dims: int = 2
    batched: bool = True

    op = "conv"

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def C_per_group(self) -> int:
        return self.C // self.groups

    @property
    def K_per_group(self) -> int:
        return self.K // self.groups

    @property
    def weight_shape(self) -> Tuple[int, int, int, int]:
        return (self.K, self.C_per_group, self.R, self.S)

    @property
    def output_shape4(self) -> Tuple[int, int, int, int]:
        return (self.N, self.K, self.P, self.Q)


    # -- predicates (PyTorch's ConvParams style) -------------------------------------------------
    @property
    def is_depthwise(self) -> bool:
        """groups == C: every input channel has its own filters (channel multiplier K/C)."""
        return self.groups == self.C and self.groups > 1

    @property
    def is_strided(self) -> bool:
        return self.stride_h > 1 or self.stride_w > 1

    @property
    def is_dilated(self) -> bool:
        return self.dil_h > 1 or self.dil_w > 1

    @property
    def is_padded(self) -> bool:
        return any((self.pad_top, self.pad_bottom, self.pad_left, self.pad_right))

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, unstrided, unpadded convolution: a plain GEMM over the channels."""
        return self.R == self.S == 1 and not self.is_strided and not self.is_padded

    # -- GEMM view (implicit GEMM / im2col), per group -------------------------------------------
    @property
    def gemm_m(self) -> int:
        return self.N * self.P * self.Q

    @property
    def gemm_n(self) -> int:
        return self.K_per_group

    @property
    def gemm_k(self) -> int:
        return self.C_per_group * self.R * self.S

    def flops(self) -> int:
        """Multiply-adds counted as 2 flops (bias not counted), over all groups."""
        return 2 * self.gemm_m * self.K * self.gemm_k

    def bytes(self) -> int:
        """Compulsory traffic: input, weight and bias read once, output written once."""
        elems = (self.N * self.C * self.H * self.W + self.K * self.C_per_group * self.R * self.S
                 + self.N * self.K * self.P * self.Q + (self.K if self.has_bias else 0))
        return elems * self.itemsize

    def max_elements(self) -> int:
        """The largest element count any buffer of this problem has (im2col workspace of the whole
        batch included), which decides the index width."""
        col = self.C * self.R * self.S * self.N * self.P * self.Q
        return max(self.N * self.C * self.H * self.W, self.N * self.K * self.P * self.Q,
                   self.K * self.C_per_group * self.R * self.S, col)



# ---------------------------------------------------------------------------------------------------
# PoolSpec
# ---------------------------------------------------------------------------------------------------
POOL_KINDS = ("max", "avg", "adaptive_max", "adaptive_avg")


@dataclasses.dataclass(frozen=True)
class PoolSpec(_SpecBase):
    """One pooling problem, NCHW. For adaptive kinds R = S = 0 and the windows follow from H/P, W/Q."""

    kind: str
    N: int
    C: int
    H: int
    W: int
    R: int
    S: int
    P: int
    Q: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dil_h: int
    dil_w: int
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: Optional[int]
    return_indices: bool
    dtype: str
    spatial_dims: int = 2
    batched: bool = True

    @property
    def op(self) -> str:
        return self.kind + "_pool"

    @property
    def is_adaptive(self) -> bool:
        return self.kind.startswith("adaptive")

    @property
    def is_max(self) -> bool:
        return self.kind in ("max", "adaptive_max")

    @property
    def output_shape4(self) -> Tuple[int, int, int, int]:
        return (self.N, self.C, self.P, self.Q)

    def flops(self) -> int:
        """One operation per tap (compare or add); adaptive windows counted exactly."""
        if self.is_adaptive:
            taps_h = sum(_adaptive_len(i, self.H, self.P) for i in range(self.P))
            taps_w = sum(_adaptive_len(j, self.W, self.Q) for j in range(self.Q))
            return self.N * self.C * taps_h * taps_w
        return self.N * self.C * self.P * self.Q * self.R * self.S

    def bytes(self) -> int:
        """Compulsory traffic: input read once, output (and int64 indices) written once."""
        out = self.N * self.C * self.P * self.Q
        return ((self.N * self.C * self.H * self.W + out) * self.itemsize
                + (8 * out if self.return_indices else 0))

    def max_elements(self) -> int:
        return max(self.N * self.C * self.H * self.W, self.N * self.C * self.P * self.Q)



def adaptive_window(i: int, size_in: int, size_out: int) -> Tuple[int, int]:
    """Window ``i`` of an adaptive pool: ``[floor(i*In/Out), ceil((i+1)*In/Out))``."""
    return (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)


def _adaptive_len(i: int, size_in: int, size_out: int) -> int:
    lo, hi = adaptive_window(i, size_in, size_out)
    return hi - lo


def _user_shape(shape4, spatial_dims: int, batched: bool) -> Tuple[int, ...]:
    n, c, p, q = shape4
    shape = (n, c, q) if spatial_dims == 1 else (n, c, p, q)
    return shape if batched else shape[1:]


# ---------------------------------------------------------------------------------------------------
# Building specs from user arguments
# ---------------------------------------------------------------------------------------------------
def _input_dims(x, spatial_dims: int, name: str = "input") -> Tuple[bool, Tuple[int, int, int, int]]:
    """(batched, (N, C, H, W)) for a 1-D or 2-D op's input; H = 1 for 1-D."""
    want = spatial_dims + 2
    if x.ndim not in (want - 1, want):
        names = "(N, C, L) or (C, L)" if spatial_dims == 1 else "(N, C, H, W) or (C, H, W)"
        raise ValueError(f"{name} must be {want}-D {names.split(' or ')[0]} or {want - 1}-D (unbatched) "
                         f"{names.split(' or ')[1]}, got shape {tuple(x.shape)}")
    batched = x.ndim == want
    shape = tuple(x.shape) if batched else (1,) + tuple(x.shape)
    if spatial_dims == 1:
        shape = (shape[0], shape[1], 1, shape[2])
    return batched, shape


def conv_spec(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
              spatial_dims: int = 2) -> ConvSpec:
    """Validate conv arguments (torch.nn.functional.conv{1,2}d semantics) and build the ConvSpec."""
    arrays = [("input", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    _same_place(arrays)
    nd = spatial_dims
    batched, (N, C, H, W) = _input_dims(x, nd)
    if weight.ndim != nd + 2:
        raise ValueError(f"weight must be {nd + 2}-D (out_channels, in_channels/groups, "
                         f"{'kL' if nd == 1 else 'kH, kW'}), got shape {tuple(weight.shape)}")
    for name, a in arrays[1:]:
        if a.dtype != x.dtype:
            raise TypeError(f"{name} dtype {a.dtype} does not match input dtype {x.dtype}")
    K, Cg = int(weight.shape[0]), int(weight.shape[1])
    R, S = (1, int(weight.shape[2])) if nd == 1 else (int(weight.shape[2]), int(weight.shape[3]))
    g = _as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be positive, got {g}")
    if C < 1:
        raise ValueError(f"input must have at least one channel, got shape {tuple(x.shape)}")
    if K < 1 or R < 1 or S < 1:
        raise ValueError(f"weight must have non-zero out_channels and kernel size, got shape {tuple(weight.shape)}")
    if C % g:
        raise ValueError(f"input channels ({C}) must be divisible by groups ({g})")
    if K % g:
        raise ValueError(f"weight out_channels ({K}) must be divisible by groups ({g})")
    if Cg * g != C:
        raise ValueError(f"weight has {Cg} input channels per group but input has {C} channels and "
                         f"groups={g} (expected weight.shape[1] == {C // g})")
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"bias must have shape ({K},) to match weight out_channels, got {tuple(bias.shape)}")

    strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    ks = (S,) if nd == 1 else (R, S)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in strides):
                raise ValueError(f"padding='same' requires stride 1 (as in PyTorch), got stride={stride!r}")
            # total padding d*(k-1); the odd extra goes to the bottom/right
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(ks, dils))
        else:
            raise ValueError(f"padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    else:
        pads = _pad_pairs(padding, nd)
    if nd == 1:
        strides, dils, pads = (1,) + strides, (1,) + dils, ((0, 0),) + pads
    P = output_size(H, R, strides[0], pads[0][0], pads[0][1], dils[0])
    Q = output_size(W, S, strides[1], pads[1][0], pads[1][1], dils[1])
    if P < 1 or Q < 1:
        raise ValueError(_empty_output_message("input", (H, W)[2 - nd:], ks, pads[2 - nd:], dils[2 - nd:]))
    return ConvSpec(N=N, C=C, H=H, W=W, K=K, R=R, S=S, P=P, Q=Q,
                    stride_h=strides[0], stride_w=strides[1],
                    pad_top=pads[0][0], pad_bottom=pads[0][1], pad_left=pads[1][0], pad_right=pads[1][1],
                    dil_h=dils[0], dil_w=dils[1], groups=g, has_bias=bias is not None,
                    dtype=dtype_name(x), spatial_dims=nd, batched=batched)


def _empty_output_message(name, sizes, ks, pads, dils) -> str:
    eff = tuple(d * (k - 1) + 1 for k, d in zip(ks, dils))
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(sizes, pads))
    return (f"{name} is too small for the kernel: padded size {padded} is smaller than the dilated kernel "
            f"size {eff}, so the output would be empty")


def pool_spec(kind: str, x, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None, return_indices=False, output_size_=None, *,
              spatial_dims: int = 2) -> PoolSpec:
    """Validate pooling arguments (torch.nn.functional semantics) and build the PoolSpec."""
    if kind not in POOL_KINDS:
        raise ValueError(f"pool kind must be one of {POOL_KINDS}, got {kind!r}")
    _same_place([("input", x)])
    nd = spatial_dims
    batched, (N, C, H, W) = _input_dims(x, nd)
    if not isinstance(ceil_mode, (bool,)) and not (hasattr(ceil_mode, "dtype") and ceil_mode.dtype == bool):
        raise TypeError(f"ceil_mode must be a bool, got {type(ceil_mode).__name__}")
    if not isinstance(return_indices, bool):
        raise TypeError(f"return_indices must be a bool, got {type(return_indices).__name__}")
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"count_include_pad must be a bool, got {type(count_include_pad).__name__}")
    common = dict(kind=kind, N=N, C=C, H=H, W=W, dtype=dtype_name(x), spatial_dims=nd, batched=batched,
                  return_indices=bool(return_indices))
    sizes = (W,) if nd == 1 else (H, W)
    if kind.startswith("adaptive"):
        out = _adaptive_output(output_size_, sizes, nd)
        P, Q = (1,) + out if nd == 1 else out
        if any(s < 1 for s in sizes):
            raise ValueError(f"input spatial size must be non-zero for adaptive pooling, got {tuple(x.shape)}")
        return PoolSpec(R=0, S=0, P=P, Q=Q, stride_h=0, stride_w=0, pad_h=0, pad_w=0, dil_h=1, dil_w=1,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, **common)

    if kernel_size is None:
        raise TypeError("kernel_size is required")
    ks = _positive(_as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        strides = ks  # torch: stride defaults to kernel_size
    else:
        strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    pads = _as_tuple(padding, nd, "padding")
    if any(p < 0 for p in pads):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    for p, k in zip(pads, ks):
        if p > k // 2:
            raise ValueError(f"padding must be at most half the kernel size (padding <= kernel_size // 2), "
                             f"got padding={padding!r} for kernel_size={kernel_size!r}")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    if kind == "avg" and divisor_override is not None:
        d = _as_int(divisor_override, "divisor_override")
        if d == 0:
            raise ValueError("divisor_override must be non-zero")
        divisor_override = d
    if nd == 1:
        ks, strides, pads, dils = (1,) + ks, (1,) + strides, (0,) + pads, (1,) + dils
    P = output_size(H, ks[0], strides[0], pads[0], pads[0], dils[0], bool(ceil_mode))
    Q = output_size(W, ks[1], strides[1], pads[1], pads[1], dils[1], bool(ceil_mode))
    if P < 1 or Q < 1:
        raise ValueError(_empty_output_message("input", sizes, ks[2 - nd:],
                                               tuple((p, p) for p in pads[2 - nd:]), dils[2 - nd:]))
    return PoolSpec(R=ks[0], S=ks[1], P=P, Q=Q, stride_h=strides[0], stride_w=strides[1],
                    pad_h=pads[0], pad_w=pads[1], dil_h=dils[0], dil_w=dils[1], ceil_mode=bool(ceil_mode),
                    count_include_pad=bool(count_include_pad) if kind == "avg" else True,
                    divisor_override=divisor_override if kind == "avg" else None, **common)


def _adaptive_output(output_size_, sizes, nd) -> Tuple[int, ...]:
    if isinstance(output_size_, (list, tuple)):
        if len(output_size_) != nd:
            raise ValueError(f"output_size must be an int or a sequence of {nd} ints/None, got {output_size_!r}")
        out = tuple(s if o is None else _as_int(o, f"output_size[{i}]")
                    for i, (o, s) in enumerate(zip(output_size_, sizes)))
    elif output_size_ is None:
        raise TypeError("output_size is required (an int, or a tuple whose None entries keep that dimension)")
    else:
        out = (_as_int(output_size_, "output_size"),) * nd
    if any(o < 1 for o in out):
        raise ValueError(f"output_size must be positive, got {output_size_!r}")
    return out


# ---------------------------------------------------------------------------------------------------
# Exported shape helpers (the textbook formulas; same code the specs use)
# ---------------------------------------------------------------------------------------------------
def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output extent of a convolution or pooling window sweep (the formula the specs use).

    Scalar form: ints in, int out; ``padding`` may be an int or an asymmetric ``(before, after)`` pair.
    Per-dimension form: any of ``size``, ``kernel_size``, ``stride``, ``dilation`` a tuple of 1 to 3
    entries (ints broadcast); ``padding`` an int, or per dimension an int or a ``(before, after)`` pair;
    returns a tuple. Returns 0 in a dimension where no window fits.
    """
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {type(ceil_mode).__name__}")
    seqs = {len(a) for a in (size, kernel_size, stride, dilation) if isinstance(a, (list, tuple))}
    if len(seqs) > 1:
        raise ValueError("size, kernel_size, stride and dilation must have the same number of dimensions, "
                         f"got {size!r}, {kernel_size!r}, {stride!r}, {dilation!r}")
    scalar = not seqs
    n = 1 if scalar else seqs.pop()
    if not 1 <= n <= 3:
        raise ValueError(f"conv_output_size supports 1 to 3 dimensions, got {n}")
    if scalar and isinstance(padding, (list, tuple)):
        padding = (tuple(padding),)  # one dimension, asymmetric (before, after)
    sizes = _non_negative(_as_tuple(size, n, "size"), "size")
    ks = _positive(_as_tuple(kernel_size, n, "kernel_size"), "kernel_size")
    ss = _positive(_as_tuple(stride, n, "stride"), "stride")
    ds = _positive(_as_tuple(dilation, n, "dilation"), "dilation")
    ps = _pad_pairs(padding, n)
    out = tuple(output_size(s, k, st, lo, hi, d, ceil_mode)
                for s, k, st, (lo, hi), d in zip(sizes, ks, ss, ps, ds))
    return out[0] if scalar else out


def conv_param_count(in_channels, out_channels, kernel_size, bias=True, groups=1) -> int:
    """Learnable parameters of a conv layer: ``out * (in/groups) * prod(kernel) + (out if bias)``.

    An int ``kernel_size`` means a square 2-D kernel (``5`` is 5x5, as in a Conv2d layer); pass a tuple
    for 1-D ``(k,)`` or 3-D ``(kd, kh, kw)``.
    """
    cin = _as_int(in_channels, "in_channels")
    cout = _as_int(out_channels, "out_channels")
    g = _as_int(groups, "groups")
    if cin < 1 or cout < 1 or g < 1:
        raise ValueError(f"in_channels, out_channels and groups must be positive, got {cin}, {cout}, {g}")
    if cin % g or cout % g:
        raise ValueError(f"in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({g})")
    if isinstance(kernel_size, (list, tuple)):
        if not 1 <= len(kernel_size) <= 3:
            raise ValueError(f"kernel_size must have 1 to 3 entries, got {kernel_size!r}")
        ks = _positive(_as_tuple(kernel_size, len(kernel_size), "kernel_size"), "kernel_size")
    else:
        ks = _positive((_as_int(kernel_size, "kernel_size"),) * 2, "kernel_size")
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
    return cout * (cin // g) * math.prod(ks) + (cout if bias else 0)


def receptive_field(layers):
    """Receptive field, in input pixels, of one output of a stack of layers.

    ``layers`` is a sequence of ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation)``; each
    entry may be an int or a tuple (then the result is a tuple). Uses
    ``rf += dilation*(kernel-1)*jump; jump *= stride``, starting from rf = jump = 1.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("layers must be a non-empty sequence of (kernel_size, stride[, dilation])")
    n = 1
    for layer in layers:
        for v in layer if isinstance(layer, (list, tuple)) else ():
            if isinstance(v, (list, tuple)):
                n = max(n, len(v))
    rf, jump = [1] * n, [1] * n
    for i, layer in enumerate(layers):
        if not isinstance(layer, (list, tuple)) or len(layer) not in (2, 3):
            raise ValueError(f"layers[{i}] must be (kernel_size, stride[, dilation]), got {layer!r}")
        k = _positive(_as_tuple(layer[0], n, f"layers[{i}] kernel_size"), f"layers[{i}] kernel_size")
        s = _positive(_as_tuple(layer[1], n, f"layers[{i}] stride"), f"layers[{i}] stride")
        d = _positive(_as_tuple(layer[2] if len(layer) == 3 else 1, n, f"layers[{i}] dilation"),
                      f"layers[{i}] dilation")
        for j in range(n):
            rf[j] += d[j] * (k[j] - 1) * jump[j]
            jump[j] *= s[j]
    return rf[0] if n == 1 else tuple(rf)
