"""The problem objects: ``ConvSpec`` and ``PoolSpec`` (and their gradient and unpooling kinds).

A spec is built once, from the user's arguments, by :func:`conv_spec`, :func:`pool_spec` and the other
builders; it is frozen and is the only description of the problem that flows to dispatch, to a backend and
to a kernel launch. Every rule about arguments (types, ranges, shapes, dtypes) is checked here, before
anything runs, and raises ``TypeError``/``ValueError`` naming the argument.

Letters follow CUTLASS (``Conv3dProblemSize``) and are the same in the CUDA sources: N C D H W input, K
output channels, T R S filter, Z P Q output, ``stride_d/h/w``, ``pad_front/back/top/bottom/left/right``,
``dil_d/h/w``, ``groups``. The spec is three-dimensional: a 2-D problem has D = T = Z = 1, a 1-D one also
H = P = R = 1 (``spatial_dims`` remembers what the user passed, and decides the backend layout: 4-D
N C H W arrays for 1-D and 2-D problems, 5-D N C D H W for 3-D ones). The tuple views ``in_size``,
``window``, ``out_size``, ``strides``, ``dilations`` and ``pads`` give the three dimensions in (D, H, W)
order; builders compute every dimension with the same code.

All output-size arithmetic is :func:`output_size`, and its inverse, the input extent a run of outputs
reads, is :func:`input_extent`; nothing else computes either. The specs also carry the vocabulary every
backend shares (``is_depthwise``, ``is_padded``, the GEMM sizes ``gemm_m/n/k``, ``input_extent_hw``), so a
backend asks the spec rather than deriving its own.

Argument normalisation lives in :mod:`fastconv._args`, the exported shape helpers (``conv_output_size``,
``conv_param_count``, ``receptive_field``) in :mod:`fastconv._shapes`.
"""
from __future__ import annotations

import dataclasses
import math
import operator
from typing import List, Optional, Tuple

from ._args import (DTYPES, _as_bool, _as_int, _as_tuple, _fits_int64, _not_an_array_message,  # noqa: F401
                    _pad_pairs, _positive, _same_place, array_kind, dtype_name)

INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------------
# The one output-size formula
# ---------------------------------------------------------------------------------------------------
def output_size(size: int, kernel: int, stride: int = 1, pad_lo: int = 0, pad_hi: int = 0,
                dilation: int = 1, ceil_mode: bool = False) -> int:
    """Number of windows of ``dilation*(kernel-1)+1`` taps, ``stride`` apart, that fit in the padded extent.

    ``ceil_mode`` keeps a last, partial window as long as it *starts* inside the input or the left
    padding (PyTorch's rule). Returns 0 when not even one window fits.
    """
    span = size + pad_lo + pad_hi - input_extent(1, kernel, 1, dilation)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


def input_extent(count: int, kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """How many consecutive input positions (padding included) ``count`` consecutive outputs read: the first
    output's window start to the last output's last tap, ``(count-1)*stride + (kernel-1)*dilation + 1``;
    0 for no outputs. ``input_extent(1, k, s, d)`` is the dilated window itself."""
    if count < 1:
        return 0
    return (count - 1) * stride + (kernel - 1) * dilation + 1


# ---------------------------------------------------------------------------------------------------
# What both specs share
# ---------------------------------------------------------------------------------------------------
_ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}



@dataclasses.dataclass(frozen=True, kw_only=True)
class _SpecBase:
    """The fields every spec has -- the input ``N C H W``, the window ``R S`` (0 for adaptive pools) and its
    ``stride_h/w``, ``dil_h/w``, the output ``P Q``, the storage dtype, and what the user passed (1-D or
    2-D, batched or not) -- and what follows from them (``output_shape``, ``itemsize``, the index width,
    the tuning key, ``input_extent_hw``). Built by keyword only."""

    N: int
    C: int
    D: int = 1
    H: int
    W: int
    T: int = 1
    R: int
    S: int
    Z: int = 1
    P: int
    Q: int
    stride_d: int = 1
    stride_h: int
    stride_w: int
    dil_d: int = 1
    dil_h: int
    dil_w: int
    dtype: str
    spatial_dims: int = 2
    batched: bool = True

    # -- the three dimensions as tuples, (D, H, W) order ---------------------------------------------
    @property
    def in_size(self) -> Tuple[int, int, int]:
        return (self.D, self.H, self.W)

    @property
    def window(self) -> Tuple[int, int, int]:
        return (self.T, self.R, self.S)

    @property
    def out_size(self) -> Tuple[int, int, int]:
        return (self.Z, self.P, self.Q)

    @property
    def strides(self) -> Tuple[int, int, int]:
        return (self.stride_d, self.stride_h, self.stride_w)

    @property
    def dilations(self) -> Tuple[int, int, int]:
        return (self.dil_d, self.dil_h, self.dil_w)

    @property
    def is_3d(self) -> bool:
        """A 3-D problem: its arrays are 5-D (N, C, D, H, W) in the backend layout."""
        return self.spatial_dims == 3

    def _layout(self, n: int, c: int, sizes) -> Tuple[int, ...]:
        """(n, c, *sizes) in the backend layout: 5-D for 3-D problems, 4-D (no depth) otherwise."""
        d, h, w = sizes
        return (n, c, d, h, w) if self.spatial_dims == 3 else (n, c, h, w)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return self._layout(self.N, self.C, self.in_size)

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The shape the user gets back: batched or not, 1-D, 2-D or 3-D, as the input was."""
        return _user_shape(self.output_layout, self.spatial_dims, self.batched)

    @property
    def in_elems(self) -> int:
        """Elements of one input plane (D*H*W)."""
        return self.D * self.H * self.W

    @property
    def out_elems(self) -> int:
        """Elements of one output plane (Z*P*Q)."""
        return self.Z * self.P * self.Q

    @property
    def window_elems(self) -> int:
        """Taps of one window (T*R*S; 0 for adaptive pools)."""
        return self.T * self.R * self.S

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype]

    @property
    def needs_64bit_indexing(self) -> bool:
        """Whether some buffer of the problem holds more than 2^31 - 1 elements."""
        return self.max_elements() > INT32_MAX

    def key(self) -> tuple:
        """Everything the result and the speed depend on (the field values): the cache key for tuning."""
        return self._values()

    # A spec is a dictionary key on every call (each implementation's memoized plan, the tuner's choices):
    # its field values, hash and equality are computed from one tuple built once per spec. Subclasses name
    # __hash__ and __eq__ so the dataclass decorator keeps them. What is cached on the object (its values
    # and hash, its compute-dtype twins, a backend's kernel geometry or thread decision) is named ``_x_``
    # -- no field begins with an underscore -- and left out of pickles (str hashes differ between
    # processes; the rest is rebuilt on use).
    def _values(self) -> tuple:
        v = self.__dict__.get("_values_")
        if v is None:
            cls = type(self)
            get = cls.__dict__.get("_getter_")
            if get is None:
                get = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
                setattr(cls, "_getter_", get)
            v = get(self)
            object.__setattr__(self, "_values_", v)
            object.__setattr__(self, "_hash_", hash((cls.__name__,) + v))
        return v

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash_")
        if h is None:
            self._values()
            h = self.__dict__["_hash_"]
        return h

    def __eq__(self, other) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    #: the arrays ``Impl.run(spec, *arrays)`` takes, by name, in order (absent optional ones are None)
    ARRAYS = ("x",)
    #: the array that meets the padding in a product (padded taps must contribute nothing, so an Inf or NaN
    #: in it decides whether a zero-filling implementation is exact: see fastconv._dispatch)
    PADDING_OPERAND = None

    def operands(self) -> Tuple[Optional[Tuple[int, ...]], ...]:
        """The backend-layout shape (4-D; 5-D for 3-D problems) of each array in :attr:`ARRAYS`; None for
        an absent optional one. Index arrays are int64, every other array has the spec's dtype."""
        return (self.input_shape,)

    @staticmethod
    def is_index_operand(name: str) -> bool:
        return name == "indices"

    def input_extent_hw(self, rows: Optional[int] = None, cols: Optional[int] = None) -> Tuple[int, int]:
        """(height, width) of the padded input that a ``rows x cols`` block of outputs reads (default: the
        whole output, P x Q). Fixed windows only (adaptive pools have R = S = 0)."""
        rows = self.P if rows is None else rows
        cols = self.Q if cols is None else cols
        return (input_extent(rows, self.R, self.stride_h, self.dil_h),
                input_extent(cols, self.S, self.stride_w, self.dil_w))


# ---------------------------------------------------------------------------------------------------
# ConvSpec
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvSpec(_SpecBase):
    """One convolution problem, cross-correlation as in torch.nn.functional.conv{1,2,3}d, NC(D)HW layout:
    K output channels of filters (T x) R x S, asymmetric padding, groups."""

    K: int
    pad_front: int = 0
    pad_back: int = 0
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    groups: int
    has_bias: bool

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "conv"
    ARRAYS = ("x", "w", "b")
    PADDING_OPERAND = "w"

    def operands(self):
        return (self.input_shape, self.weight_shape, (self.K,) if self.has_bias else None)

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def C_per_group(self) -> int:
        return self.C // self.groups

    @property
    def K_per_group(self) -> int:
        return self.K // self.groups

    @property
    def pads(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        return ((self.pad_front, self.pad_back), (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right))

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return self._layout(self.K, self.C_per_group, self.window)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self._layout(self.N, self.K, self.out_size)

    # -- predicates (PyTorch's ConvParams style) -------------------------------------------------
    @property
    def is_depthwise(self) -> bool:
        """Every group reads one input channel (C/groups == 1; channel multiplier K/C). This includes
        C == groups == 1: what the depthwise kernels need is one input channel per filter."""
        return self.C_per_group == 1

    @property
    def is_strided(self) -> bool:
        return self.stride_d > 1 or self.stride_h > 1 or self.stride_w > 1

    @property
    def is_dilated(self) -> bool:
        return self.dil_d > 1 or self.dil_h > 1 or self.dil_w > 1

    @property
    def is_padded(self) -> bool:
        return any((self.pad_front, self.pad_back, self.pad_top, self.pad_bottom, self.pad_left,
                    self.pad_right))

    @property
    def is_pointwise(self) -> bool:
        """A 1x1(x1), unstrided, unpadded convolution: a plain GEMM over the channels."""
        return self.T == self.R == self.S == 1 and not self.is_strided and not self.is_padded

    # -- GEMM view (implicit GEMM / im2col), per group -------------------------------------------
    @property
    def gemm_m(self) -> int:
        return self.N * self.Z * self.P * self.Q

    @property
    def gemm_n(self) -> int:
        return self.K_per_group

    @property
    def gemm_k(self) -> int:
        return self.C_per_group * self.T * self.R * self.S

    def flops(self) -> int:
        """Multiply-adds counted as 2 flops (bias not counted), over all groups."""
        return 2 * self.gemm_m * self.K * self.gemm_k

    def bytes(self) -> int:
        """Compulsory traffic: input, weight and bias read once, output written once."""
        elems = (self.N * self.C * self.in_elems + self.K * self.C_per_group * self.window_elems
                 + self.N * self.K * self.out_elems + (self.K if self.has_bias else 0))
        return elems * self.itemsize

    def max_elements(self) -> int:
        """The largest element count any buffer of this problem has (im2col workspace of the whole
        batch included), which decides the index width."""
        col = self.groups * self.gemm_k * self.gemm_m
        return max(self.N * self.C * self.in_elems, self.N * self.K * self.out_elems,
                   self.K * self.C_per_group * self.window_elems, col)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvInputGradSpec(ConvSpec):
    """The gradient of a convolution with respect to its input, and the transposed convolution.

    The fields describe the *forward* problem (input N C H W, weight K C/groups R S, output P Q); this op
    takes ``dy`` (N, K, P, Q), the forward weight and an optional bias of C channels, and computes
    ``dx[n, c, h, w] = b[c] + sum over (k, r, s, p, q) with p*stride_h - pad_top + r*dil_h == h and
    q*stride_w - pad_left + s*dil_w == w of dy[n, k, p, q] * w[k, c, r, s]`` (the adjoint of the
    forward sum). P and Q need not equal the forward output size of H and W: a transposed convolution with
    ``output_padding`` has outputs (H, W) that no dy position reaches, and they get the bias only."""

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "conv_input"
    ARRAYS = ("dy", "w", "b")
    PADDING_OPERAND = "w"

    def operands(self):
        return (self.dy_layout, self.weight_shape, (self.C,) if self.has_bias else None)

    @property
    def dy_layout(self) -> Tuple[int, ...]:
        return self._layout(self.N, self.K, self.out_size)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.input_shape

    def bytes(self) -> int:
        elems = (self.N * self.C * self.in_elems + self.K * self.C_per_group * self.window_elems
                 + self.N * self.K * self.out_elems + (self.C if self.has_bias else 0))
        return elems * self.itemsize

    # -- the same sum as a forward convolution (stride 1) -----------------------------------------
    def flipped_forward_reasons(self) -> List[str]:
        """Why :meth:`flipped_forward` has no answer for this problem (empty when it has one)."""
        out = []
        if self.is_strided:
            out.append("strided: its input gradient is not a forward convolution of dy (dy's positions are "
                       "stride apart in dx)")
            return out
        if any(lo < 0 or hi < 0 for lo, hi in self._flipped_pads()):
            out.append("a padding wider than the dilated window less one: the flipped forward convolution "
                       "would need negative padding")
        return out

    def _flipped_pads(self):
        """(front, back), (top, bottom), (left, right) of :meth:`flipped_forward`: the dilated window less
        one, less the forward padding before; after, whatever makes the output as large as the input."""
        return tuple(((k - 1) * d - lo, size - out + lo)
                     for k, d, (lo, _), size, out in zip(self.window, self.dilations, self.pads, self.in_size,
                                                         self.out_size))

    def flipped_forward(self) -> ConvSpec:
        """This unstrided input gradient (or transposed convolution) as the forward convolution it equals:
        input dy (N, K, Z, P, Q), weight w' (C, K/groups, T, R, S) with w'[g*C/G + c, k, t, r, s] =
        w[g*K/G + k, c, T-1-t, R-1-r, S-1-s], output (N, C, D, H, W), padding before each axis
        (window - 1)*dilation - pad_before, after it size - out + pad_before (so the output is dx's size),
        the same dilation, groups and bias (C,). Its sum per dx position has exactly the definition's terms:
        dy positions outside (Z, P, Q) are the forward's padding. ValueError where
        :meth:`flipped_forward_reasons` has any."""
        why = self.flipped_forward_reasons()
        if why:
            raise ValueError("no flipped forward convolution: " + "; ".join(why))
        (pf, pk), (pt, pb), (pl, pr) = self._flipped_pads()
        return ConvSpec(N=self.N, C=self.K, D=self.Z, H=self.P, W=self.Q, K=self.C, T=self.T, R=self.R,
                        S=self.S, Z=self.D, P=self.H, Q=self.W, stride_d=1, stride_h=1, stride_w=1,
                        dil_d=self.dil_d, dil_h=self.dil_h, dil_w=self.dil_w, pad_front=pf, pad_back=pk,
                        pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr, groups=self.groups,
                        has_bias=self.has_bias, dtype=self.dtype, spatial_dims=self.spatial_dims,
                        batched=self.batched)

    def flip_weight(self, w):
        """The weight of :meth:`flipped_forward` from this problem's w (K, C/groups, (T,) R, S), in the backend
        layout: a view of w (NumPy or CuPy, as w; its window axes run backwards) where groups is 1, else a
        copy. (The numba kernels read these taps from w itself; the view serves the error bound and tests.)"""
        G, Kg, Cg = self.groups, self.K_per_group, self.C_per_group
        win = tuple(w.shape[2:])
        flipped = w.reshape((G, Kg, Cg) + win).swapaxes(1, 2)[(Ellipsis,) + (slice(None, None, -1),) * len(win)]
        return flipped.reshape((self.C, Kg) + win)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvWeightGradSpec(ConvSpec):
    """The gradient of a convolution with respect to its weight. The fields describe the forward problem;
    this op takes ``x`` (N, C, H, W) and ``dy`` (N, K, P, Q) and computes ``dw[k, c, r, s] = sum over
    (n, p, q) of x[n, g*C/groups + c, p*stride_h - pad_top + r*dil_h, q*stride_w - pad_left + s*dil_w] *
    dy[n, k, p, q]`` over taps inside the input (padded taps contribute nothing, so an Inf in dy never
    meets a padded zero). ``has_bias`` is always False (the bias gradient is ``grad.conv_bias``)."""

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "conv_weight"
    ARRAYS = ("x", "dy")
    PADDING_OPERAND = "dy"

    def operands(self):
        return (self.input_shape, self._layout(self.N, self.K, self.out_size))

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.weight_shape

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The weight's shape as the user passes it: (K, C/groups, kL) for 1-D."""
        return (self.K, self.C_per_group, self.S) if self.spatial_dims == 1 else self.weight_shape


# ---------------------------------------------------------------------------------------------------
# PoolSpec
# ---------------------------------------------------------------------------------------------------
POOL_KINDS = ("max", "avg", "adaptive_max", "adaptive_avg")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolSpec(_SpecBase):
    """One pooling problem, NC(D)HW. For adaptive kinds T = R = S = 0 and the windows follow from D/Z,
    H/P, W/Q. Padding is per side (torch's symmetric padding has equal sides)."""

    kind: str
    pad_front: int = 0
    pad_back: int = 0
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: Optional[int]
    return_indices: bool

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

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
    def pads(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        return ((self.pad_front, self.pad_back), (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right))

    @property
    def is_padded(self) -> bool:
        return any(v for pair in self.pads for v in pair)

    @property
    def is_symmetric_padding(self) -> bool:
        """Each dimension padded equally on both sides (everything torch's own pools can express)."""
        return all(lo == hi for lo, hi in self.pads)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self._layout(self.N, self.C, self.out_size)

    def flops(self) -> int:
        """One operation per tap (compare or add); adaptive windows counted exactly."""
        if self.is_adaptive:
            taps = 1
            for size_in, size_out in zip(self.in_size, self.out_size):
                taps *= sum(_adaptive_len(i, size_in, size_out) for i in range(size_out))
            return self.N * self.C * taps
        return self.N * self.C * self.out_elems * self.window_elems

    def bytes(self) -> int:
        """Compulsory traffic: input read once, output (and int64 indices) written once."""
        out = self.N * self.C * self.out_elems
        return ((self.N * self.C * self.in_elems + out) * self.itemsize
                + (8 * out if self.return_indices else 0))

    def max_elements(self) -> int:
        return max(self.N * self.C * self.in_elems, self.N * self.C * self.out_elems)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolGradSpec(PoolSpec):
    """The gradient of a pool with respect to its input. The fields describe the forward pool (with
    ``return_indices`` False); this op takes ``dy`` (N, C, P, Q) and, for the max kinds, the forward's
    int64 ``indices`` (N, C, P, Q), and returns dx (N, C, H, W):
    - max kinds: ``dx[n, c, i] = sum of dy[n, c, p, q] over the outputs whose index is i`` (the gradient
      goes to the position the forward reports; windows that share a maximum each add theirs);
    - avg kinds: every input position a window covers gets ``dy / divisor`` of that window, with the
      forward's divisor rules (padding taps take nothing)."""

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    @property
    def op(self) -> str:
        return self.kind + "_pool_backward"

    @property
    def ARRAYS(self) -> Tuple[str, ...]:
        return ("dy", "indices") if self.is_max else ("dy",)

    def operands(self):
        out = self._layout(self.N, self.C, self.out_size)
        return (out, out) if self.is_max else (out,)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.input_shape

    def bytes(self) -> int:
        """Compulsory traffic: dy (and the int64 indices) read once, dx written once."""
        out = self.N * self.C * self.out_elems
        return (self.N * self.C * self.in_elems + out) * self.itemsize + (8 * out if self.is_max else 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnpoolSpec(PoolSpec):
    """``max_unpool``: the partial inverse of a max pool. ``kind`` is "max"; the fields describe the max
    pool whose indices are given, so (D x) H x W is the unpooled output and (Z x) P x Q the input. Takes
    ``x`` (N, C, [Z,] P, Q) and int64 ``indices`` of that shape, each in [0, D*H*W); returns
    (N, C, [D,] H, W), zero except ``out[n, c, indices[n, c, ...]] = x[n, c, ...]``; where several
    positions of one plane name the same index, the last in row-major order wins (as torch on the CPU)."""

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "max_unpool"
    ARRAYS = ("x", "indices")

    def operands(self):
        out = self._layout(self.N, self.C, self.out_size)
        return (out, out)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.input_shape

    def flops(self) -> int:
        return self.N * self.C * self.out_elems

    def bytes(self) -> int:
        return (self.N * self.C * (self.in_elems + self.out_elems) * self.itemsize
                + 8 * self.N * self.C * self.out_elems)


def adaptive_window(i: int, size_in: int, size_out: int) -> Tuple[int, int]:
    """Window ``i`` of an adaptive pool: ``[floor(i*In/Out), ceil((i+1)*In/Out))``."""
    return (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)


def _adaptive_len(i: int, size_in: int, size_out: int) -> int:
    lo, hi = adaptive_window(i, size_in, size_out)
    return hi - lo


def _user_shape(layout, spatial_dims: int, batched: bool) -> Tuple[int, ...]:
    """A backend-layout shape (4-D, or 5-D for 3-D problems) as the user sees it: (N, C, L) for 1-D,
    without N when the input was unbatched."""
    shape = (layout[0], layout[1], layout[-1]) if spatial_dims == 1 else tuple(layout)
    return shape if batched else shape[1:]


# ---------------------------------------------------------------------------------------------------
# Building specs from user arguments
# ---------------------------------------------------------------------------------------------------
# Builders work on the user's ``nd`` dimensions as tuples and widen them to the spec's three (D, H, W) at
# the end (:func:`_widen`): every dimension goes through the same code.
_LAYOUT = {1: ("(N, C, L)", "(C, L)", "kL"), 2: ("(N, C, H, W)", "(C, H, W)", "kH, kW"),
           3: ("(N, C, D, H, W)", "(C, D, H, W)", "kD, kH, kW")}


def _check_nd(nd) -> int:
    if nd not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {nd!r}")
    return nd


def _widen(values: tuple, fill) -> tuple:
    """The user's 1 to 3 per-dimension values as (D, H, W), ``fill`` for the dimensions it lacks."""
    return (fill,) * (3 - len(values)) + tuple(values)


def _dims3(prefix: str, values3) -> dict:
    """Spec fields ``<prefix>_d/_h/_w`` from a (D, H, W) triple."""
    return {f"{prefix}_d": values3[0], f"{prefix}_h": values3[1], f"{prefix}_w": values3[2]}


def _pads3(pairs3) -> dict:
    (f, b), (t, bo), (l, r) = pairs3
    return dict(pad_front=f, pad_back=b, pad_top=t, pad_bottom=bo, pad_left=l, pad_right=r)


def _input_dims(x, spatial_dims: int, name: str = "input"):
    """(batched, N, C, (D, H, W)) for an op's input array."""
    return _input_dims_of(x.shape, spatial_dims, name)


def _input_dims_of(shape, spatial_dims: int, name: str = "input"):
    """(batched, N, C, (D, H, W)) for an op's input shape: D = 1 below 3-D, H = 1 for 1-D."""
    nd = _check_nd(spatial_dims)
    want = nd + 2
    if len(shape) not in (want - 1, want):
        full, unb, _ = _LAYOUT[nd]
        raise ValueError(f"{name} must be {want}-D {full} or {want - 1}-D (unbatched) {unb}, got shape "
                         f"{tuple(shape)}")
    batched = len(shape) == want
    shape = tuple(int(v) for v in shape) if batched else (1,) + tuple(int(v) for v in shape)
    if shape[1] < 1 or any(v < 1 for v in shape[2:]):
        raise ValueError(f"{name} must have non-zero channels and spatial sizes (only the batch may be empty, "
                         f"as in torch), got shape {tuple(shape if batched else shape[1:])}")
    return batched, shape[0], shape[1], _widen(shape[2:], 1)


def _conv_pads(padding, nd: int, ks, strides, dils, stride) -> Tuple[Tuple[int, int], ...]:
    """A conv's padding argument as ``nd`` (before, after) pairs: ints, pairs, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in strides):
                raise ValueError(f"padding='same' requires stride 1 (as in PyTorch), got stride={stride!r}")
            # total padding d*(k-1); the odd extra goes to the end (bottom/right/back), as torch
            return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(ks, dils))
        raise ValueError(f"padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    return _pad_pairs(padding, nd)


def _conv_geometry(x_shape, w_shape, bias_shape, stride, padding, dilation, groups, nd: int, *,
                   input_name: str = "input", weight_name: str = "weight") -> dict:
    """Check a convolution's shapes and arguments (torch.nn.functional.conv{1,2,3}d semantics) and return
    the ConvSpec fields they determine (all but dtype). ``input_name``/``weight_name``: what the caller
    calls the arrays (or shapes) whose shapes these are, for the messages."""
    batched, N, C, sizes = _input_dims_of(x_shape, nd, input_name)
    if len(w_shape) != nd + 2:
        raise ValueError(f"{weight_name} must be {nd + 2}-D (out_channels, in_channels/groups, "
                         f"{_LAYOUT[nd][2]}), got shape {tuple(w_shape)}")
    K, Cg = int(w_shape[0]), int(w_shape[1])
    ks = tuple(int(v) for v in w_shape[2:])
    g = _as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be positive, got {g}")
    if K < 1 or any(k < 1 for k in ks):
        raise ValueError(f"{weight_name} must have non-zero out_channels and kernel size, got shape "
                         f"{tuple(w_shape)}")
    if C % g:
        raise ValueError(f"{input_name} channels ({C}) must be divisible by groups ({g})")
    if K % g:
        raise ValueError(f"{weight_name} out_channels ({K}) must be divisible by groups ({g})")
    if Cg * g != C:
        raise ValueError(f"{weight_name} has {Cg} input channels per group but {input_name} has {C} channels "
                         f"and groups={g} (expected {weight_name}.shape[1] == {C // g})")
    if bias_shape is not None and tuple(bias_shape) != (K,):
        raise ValueError(f"bias must have shape ({K},) to match {weight_name} out_channels, got "
                         f"{tuple(bias_shape)}")
    strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    pads = _conv_pads(padding, nd, ks, strides, dils, stride)
    user_sizes = sizes[3 - nd:]
    _check_padded(user_sizes, pads, ks, dils)
    outs = tuple(output_size(i, k, s, lo, hi, d) for i, k, s, (lo, hi), d in zip(user_sizes, ks, strides, pads, dils))
    if any(o < 1 for o in outs):
        raise ValueError(_empty_output_message(input_name, user_sizes, ks, pads, dils))
    return _conv_fields(N=N, C=C, sizes=sizes, K=K, ks=_widen(ks, 1), outs=_widen(outs, 1),
                        strides=_widen(strides, 1), dils=_widen(dils, 1), pads=_widen(pads, (0, 0)),
                        groups=g, has_bias=bias_shape is not None, nd=nd, batched=batched)


def _conv_fields(*, N, C, sizes, K, ks, outs, strides, dils, pads, groups, has_bias, nd, batched) -> dict:
    """ConvSpec fields (all but dtype) from (D, H, W) triples."""
    (D, H, W), (T, R, S), (Z, P, Q) = sizes, ks, outs
    return dict(N=N, C=C, D=D, H=H, W=W, K=K, T=T, R=R, S=S, Z=Z, P=P, Q=Q, **_dims3("stride", strides),
                **_dims3("dil", dils), **_pads3(pads), groups=groups, has_bias=has_bias, spatial_dims=nd,
                batched=batched)


def _check_dtypes(x, others) -> None:
    for name, a in others:
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{name} dtype {a.dtype} does not match input dtype {x.dtype}")


def _size_arg(size, name: str) -> Tuple[int, ...]:
    """A shape argument (tuple, list, torch.Size) as a tuple of non-negative ints."""
    if not isinstance(size, (list, tuple)):
        raise TypeError(f"{name} must be a sequence of ints (a shape), got {type(size).__name__} {size!r}")
    out = tuple(_as_int(v, f"{name}[{i}]") for i, v in enumerate(size))
    if any(v < 0 for v in out):
        raise ValueError(f"{name} must not have negative sizes, got {size!r}")
    return out


def _check_grad_output(grad_output, want: Tuple[int, ...], what: str) -> None:
    if tuple(grad_output.shape) != tuple(want):
        raise ValueError(f"grad_output must have the shape of the forward {what}'s output, {tuple(want)}, "
                         f"got {tuple(grad_output.shape)}")


def conv_spec(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
              spatial_dims: int = 2) -> ConvSpec:
    """Validate conv arguments (torch.nn.functional.conv{1,2,3}d semantics) and build the ConvSpec."""
    arrays = [("input", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    _same_place(arrays)
    if weight.ndim != spatial_dims + 2:   # before dtypes, as always
        _conv_geometry(x.shape, weight.shape, None, stride, padding, dilation, groups, spatial_dims)
    _check_dtypes(x, arrays[1:])
    fields = _conv_geometry(x.shape, weight.shape, None if bias is None else bias.shape, stride, padding,
                            dilation, groups, spatial_dims)
    return ConvSpec(dtype=dtype_name(x), **fields)


def _forward_output_shape(spec) -> Tuple[int, ...]:
    """The forward convolution's output as the user sees it (the shape grad_output must have)."""
    return _user_shape(spec._layout(spec.N, spec.K, spec.out_size), spec.spatial_dims, spec.batched)


def conv_input_spec(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                    spatial_dims: int = 2) -> ConvInputGradSpec:
    """Validate ``grad.conv*d_input`` arguments (torch.nn.grad semantics): the forward problem has an
    input of shape ``input_size`` and ``weight``; ``grad_output`` must have its output's shape."""
    _same_place([("weight", weight), ("grad_output", grad_output)])
    size = _size_arg(input_size, "input_size")
    if len(size) != grad_output.ndim:
        raise ValueError(f"input_size must have as many dimensions as grad_output ({grad_output.ndim}: "
                         f"{'(N, C, ...)' if grad_output.ndim == spatial_dims + 2 else 'unbatched (C, ...)'}), "
                         f"got {tuple(size)}")
    _check_dtypes(grad_output, [("weight", weight)])
    fields = _conv_geometry(size, weight.shape, None, stride, padding, dilation, groups, spatial_dims,
                            input_name="input_size")
    spec = ConvInputGradSpec(dtype=dtype_name(grad_output), **fields)
    _check_grad_output(grad_output, _forward_output_shape(spec), "convolution")
    return spec


def conv_weight_spec(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                     spatial_dims: int = 2) -> ConvWeightGradSpec:
    """Validate ``grad.conv*d_weight`` arguments (torch.nn.grad semantics): the forward problem has
    ``input`` and a weight of shape ``weight_size``; ``grad_output`` must have its output's shape."""
    _same_place([("input", input), ("grad_output", grad_output)])
    size = _size_arg(weight_size, "weight_size")
    _check_dtypes(input, [("grad_output", grad_output)])
    fields = _conv_geometry(input.shape, size, None, stride, padding, dilation, groups, spatial_dims,
                            weight_name="weight_size")
    spec = ConvWeightGradSpec(dtype=dtype_name(input), **fields)
    _check_grad_output(grad_output, _forward_output_shape(spec), "convolution")
    return spec


def conv_transpose_spec(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                        *, spatial_dims: int = 2) -> ConvInputGradSpec:
    """Validate ``conv_transpose*d`` arguments (torch.nn.functional semantics, plus asymmetric padding
    pairs as for conv) and build the spec of the convolution whose input gradient it is: input x
    (N, C_in, [D,] H, W) plays the forward output (K = C_in, P = H, ...), weight (C_in, C_out/groups,
    [T,] R, S) the forward weight, and the result (N, C_out, ...) the forward input, with
    ``H_out = (H - 1)*stride - pad_top - pad_bottom + dilation*(R - 1) + output_padding + 1`` per dimension."""
    arrays = [("input", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    _same_place(arrays)
    nd = _check_nd(spatial_dims)
    batched, N, Cin, sizes = _input_dims(x, nd)
    if weight.ndim != nd + 2:
        raise ValueError(f"weight must be {nd + 2}-D (in_channels, out_channels/groups, "
                         f"{_LAYOUT[nd][2]}), got shape {tuple(weight.shape)}")
    _check_dtypes(x, arrays[1:])
    g = _as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be positive, got {g}")
    Kw, Cog = int(weight.shape[0]), int(weight.shape[1])
    ks = tuple(int(v) for v in weight.shape[2:])
    if Cog < 1 or any(k < 1 for k in ks):
        raise ValueError(f"weight must have non-zero out_channels/groups and kernel size, got shape "
                         f"{tuple(weight.shape)}")
    if Cin % g:
        raise ValueError(f"input channels ({Cin}) must be divisible by groups ({g})")
    if Kw != Cin:
        raise ValueError(f"weight.shape[0] ({Kw}) must equal the input channels ({Cin}): a transposed "
                         f"convolution's weight is (in_channels, out_channels/groups, ...)")
    Cout = Cog * g
    if bias is not None and tuple(bias.shape) != (Cout,):
        raise ValueError(f"bias must have shape ({Cout},) to match the output channels "
                         f"(weight.shape[1] * groups), got {tuple(bias.shape)}")
    strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    if isinstance(padding, str):
        if padding != "valid":
            raise ValueError(f"padding of a transposed convolution must be an int, a tuple or 'valid' "
                             f"(torch has no 'same' here), got {padding!r}")
        padding = 0
    pads = _pad_pairs(padding, nd)
    opad = _as_tuple(output_padding, nd, "output_padding")
    for o, s, d in zip(opad, strides, dils):
        if o < 0 or o >= max(s, d):
            raise ValueError(f"output_padding must be non-negative and smaller than stride or dilation "
                             f"(output_padding < max(stride, dilation)), got output_padding={output_padding!r}"
                             f" with stride={stride!r}, dilation={dilation!r}")
    ins = sizes[3 - nd:]
    outs = tuple((i - 1) * s - lo - hi + input_extent(1, k, 1, d) + o
                 for i, s, (lo, hi), k, d, o in zip(ins, strides, pads, ks, dils, opad))
    _fits_int64(list(outs) + [math.prod(outs)], "stride, dilation or output_padding")
    if any(o < 1 for o in outs):
        raise ValueError(f"the transposed convolution's output would be empty (size {outs}): padding "
                         f"{padding!r} removes more than (input - 1) * stride + dilation * (kernel - 1) + "
                         f"output_padding + 1")
    fields = _conv_fields(N=N, C=Cout, sizes=_widen(outs, 1), K=Cin, ks=_widen(ks, 1), outs=sizes,
                          strides=_widen(strides, 1), dils=_widen(dils, 1), pads=_widen(pads, (0, 0)),
                          groups=g, has_bias=bias is not None, nd=nd, batched=batched)
    return ConvInputGradSpec(dtype=dtype_name(x), **fields)


def _check_padded(sizes, pads, ks, dils) -> None:
    """The padded input, the dilated window and the padded plane fit the 64-bit indices kernels compute with."""
    padded = [s + lo + hi for s, (lo, hi) in zip(sizes, pads)]
    _fits_int64(padded + [math.prod(padded)], "padding")
    _fits_int64([input_extent(1, k, 1, d) for k, d in zip(ks, dils)], "dilation")


def _empty_output_message(name, sizes, ks, pads, dils) -> str:
    eff = tuple(input_extent(1, k, 1, d) for k, d in zip(ks, dils))
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(sizes, pads))
    return (f"{name} is too small for the kernel: padded size {padded} is smaller than the dilated kernel "
            f"size {eff}, so the output would be empty")


def _pool_pads(padding, nd: int, ks, dils, kernel_size) -> Tuple[Tuple[int, int], ...]:
    """A pool's padding as ``nd`` (before, after) pairs.

    An int or ``nd`` ints: torch's symmetric padding and its rule, at most half the kernel
    (``padding <= kernel_size // 2``). Per-side pairs (beyond torch, what ONNX's SAME_UPPER/SAME_LOWER and
    explicit ``pads`` need): each side at most ``dilation * (kernel_size - 1)``, so that the first and the
    last window each reach the input."""
    per_side = isinstance(padding, (list, tuple)) and any(isinstance(p, (list, tuple)) for p in padding)
    pairs = _pad_pairs(padding, nd)
    for (lo, hi), k, d in zip(pairs, ks, dils):
        if per_side:
            if max(lo, hi) > d * (k - 1):
                raise ValueError(f"per-side padding must be at most dilation * (kernel_size - 1) on each side "
                                 f"(so every window reaches the input), got padding={padding!r} for "
                                 f"kernel_size={kernel_size!r}")
        elif lo > k // 2:
            raise ValueError(f"padding must be at most half the kernel size (padding <= kernel_size // 2), "
                             f"got padding={padding!r} for kernel_size={kernel_size!r}; per-side pairs "
                             f"((before, after), ...) allow up to dilation * (kernel_size - 1)")
    return pairs


def pool_spec(kind: str, x, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None, return_indices=False, output_size_=None, *,
              spatial_dims: int = 2) -> PoolSpec:
    """Validate pooling arguments (torch.nn.functional semantics) and build the PoolSpec."""
    if kind not in POOL_KINDS:
        raise ValueError(f"pool kind must be one of {POOL_KINDS}, got {kind!r}")
    _same_place([("input", x)])
    nd = _check_nd(spatial_dims)
    batched, N, C, sizes = _input_dims(x, nd)
    ceil_mode = _as_bool(ceil_mode, "ceil_mode")
    return_indices = _as_bool(return_indices, "return_indices")
    count_include_pad = _as_bool(count_include_pad, "count_include_pad")
    common = dict(kind=kind, N=N, C=C, D=sizes[0], H=sizes[1], W=sizes[2], dtype=dtype_name(x),
                  spatial_dims=nd, batched=batched, return_indices=return_indices)
    user_sizes = sizes[3 - nd:]
    if kind.startswith("adaptive"):
        out = _adaptive_output(output_size_, user_sizes, nd)
        Z, P, Q = _widen(out, 1)
        return PoolSpec(T=0, R=0, S=0, Z=Z, P=P, Q=Q, **_dims3("stride", (0, 0, 0)), **_dims3("dil", (1, 1, 1)),
                        **_pads3(((0, 0),) * 3), ceil_mode=False, count_include_pad=True, divisor_override=None,
                        **common)

    if kernel_size is None:
        raise TypeError("kernel_size is required")
    ks = _positive(_as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        strides = ks  # torch: stride defaults to kernel_size
    else:
        strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    pads = _pool_pads(padding, nd, ks, dils, kernel_size)
    _check_padded(user_sizes, pads, ks, dils)
    if kind == "avg" and divisor_override is not None:
        d = _as_int(divisor_override, "divisor_override")
        if d == 0:
            raise ValueError("divisor_override must be non-zero")
        divisor_override = d
    outs = tuple(output_size(i, k, s, lo, hi, d, ceil_mode)
                 for i, k, s, (lo, hi), d in zip(user_sizes, ks, strides, pads, dils))
    if any(o < 1 for o in outs):
        raise ValueError(_empty_output_message("input", user_sizes, ks, pads, dils))
    (T, R, S), (Z, P, Q) = _widen(ks, 1), _widen(outs, 1)
    return PoolSpec(T=T, R=R, S=S, Z=Z, P=P, Q=Q, **_dims3("stride", _widen(strides, 1)),
                    **_dims3("dil", _widen(dils, 1)), **_pads3(_widen(pads, (0, 0))), ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad if kind == "avg" else True,
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


def pool_grad_spec(kind: str, grad_output, input, *, spatial_dims: int = 2, **pool_args) -> PoolGradSpec:
    """Validate a pool gradient's arguments: the forward pool of ``input`` (``pool_args`` as for
    :func:`pool_spec`; adaptive kinds take their output size from ``grad_output``) and a ``grad_output`` of
    its output's shape and dtype."""
    _same_place([("grad_output", grad_output), ("input", input)])
    _check_dtypes(input, [("grad_output", grad_output)])
    if kind.startswith("adaptive"):
        if grad_output.ndim != input.ndim:
            raise ValueError(f"grad_output must have the shape of the forward pool's output (as many "
                             f"dimensions as input, {input.ndim}), got {tuple(grad_output.shape)}")
        pool_args["output_size_"] = tuple(int(v) for v in grad_output.shape[-spatial_dims:])
        if any(v < 1 for v in pool_args["output_size_"]):
            raise ValueError(f"grad_output must have a non-empty spatial shape, got {tuple(grad_output.shape)}")
    fwd = pool_spec(kind, input, spatial_dims=spatial_dims, **pool_args)
    _check_grad_output(grad_output, fwd.output_shape, "pool")
    return PoolGradSpec(**{f.name: getattr(fwd, f.name) for f in dataclasses.fields(PoolSpec)})


def unpool_spec(x, indices, kernel_size, stride=None, padding=0, output_size=None, *,
                spatial_dims: int = 2) -> UnpoolSpec:
    """Validate ``max_unpool*d`` arguments (torch semantics): the output size defaults to
    ``(in - 1)*stride - 2*padding + kernel_size`` and ``output_size`` (the spatial sizes, or the whole
    shape) may move it by less than one stride either way. Index values are checked by the caller (they
    are data)."""
    _same_place([("input", x)])
    nd = _check_nd(spatial_dims)
    batched, N, C, sizes = _input_dims(x, nd)
    _check_indices_array(indices, tuple(x.shape))
    ks = _positive(_as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        strides = ks
    else:
        strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    pads = _as_tuple(padding, nd, "padding")
    if any(p < 0 for p in pads):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    ins = sizes[3 - nd:]
    default = tuple((i - 1) * s - 2 * p + k for i, s, p, k in zip(ins, strides, pads, ks))
    if output_size is None:
        outs = default
    else:
        size = _size_arg(output_size, "output_size")
        if len(size) == nd + 2 or (len(size) == nd + 1 and not batched):
            size = size[-nd:]
        if len(size) != nd:
            raise ValueError(f"output_size must have {nd} (or {nd + 2}) entries, got {output_size!r}")
        for o, d, s in zip(size, default, strides):
            if not d - s < o < d + s:
                raise ValueError(f"output_size {tuple(size)} must lie strictly between default size - "
                                 f"stride and default size + stride (default {default}, stride {strides})")
        outs = size
    _fits_int64(list(outs) + [math.prod(outs)], "stride or kernel_size")
    if any(o < 1 for o in outs):
        raise ValueError(f"the unpooled output would be empty (size {outs})")
    (D, H, W), (T, R, S) = _widen(outs, 1), _widen(ks, 1)
    return UnpoolSpec(kind="max", N=N, C=C, D=D, H=H, W=W, T=T, R=R, S=S, Z=sizes[0], P=sizes[1], Q=sizes[2],
                      **_dims3("stride", _widen(strides, 1)), **_dims3("dil", (1, 1, 1)),
                      **_pads3(tuple((p, p) for p in _widen(pads, 0))),
                      ceil_mode=False, count_include_pad=True, divisor_override=None, return_indices=False,
                      dtype=dtype_name(x), spatial_dims=nd, batched=batched)


def _check_indices_array(indices, shape: Tuple[int, ...], name: str = "indices") -> None:
    """An integer array of ``shape`` in the same place as the data (values are checked separately)."""
    try:
        array_kind(indices)
    except TypeError:
        raise TypeError(_not_an_array_message(indices, name) + " (of integers)") from None
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers (int64, as the forward returns), got dtype {indices.dtype}")
    if tuple(indices.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(indices.shape)}")
