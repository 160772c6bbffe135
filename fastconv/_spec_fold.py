"""The problem objects of ``unfold`` (im2col) and ``fold`` (col2im): :class:`UnfoldSpec`, :class:`FoldSpec`
and their builders.

Both describe one sliding-block extraction, with the letters of :mod:`fastconv._spec`: the image N C D H W
(D = 1 below 3-D, H = 1 for 1-D), the block (window) T R S, its ``stride_d/h/w``, ``dil_d/h/w`` and per-side
pads, and the grid of blocks Z P Q (``output_size``, the one formula; no ceil_mode). The column matrix is
(N, C*T*R*S, L) with L = Z*P*Q blocks, row ``((c*T + t)*R + r)*S + s``, column ``(z*P + p)*Q + q``:

    col[n, ((c*T + t)*R + r)*S + s, (z*P + p)*Q + q]
        = x[n, c, z*stride_d - pad_front + t*dil_d, p*stride_h - pad_top + r*dil_h, q*stride_w - pad_left + s*dil_w]

and 0 where that position lies in the padding (torch.nn.functional.unfold for 2-D). ``fold`` is its adjoint
(torch.nn.functional.fold): every column entry is added to the image position it was read from; entries whose
position lies in the padding are dropped. A FoldSpec's fields describe that same unfold problem (as a
ConvInputGradSpec's describe the forward convolution): its ``input_shape`` is the image fold returns.

Dimensions: torch's unfold and fold are 2-D only; beyond torch (ONNX's Im2Col/Col2Im are N-D) a kernel_size of
1 or 3 ints (fold: an output_size of 1 or 3 ints) means a 1-D or 3-D problem, an int or 2 ints a 2-D one.
Padding: an int, per-dimension ints or per-side (before, after) pairs (beyond torch). Checks follow torch's
(im2col_shape_check / col2im_shape_check) and raise ValueError/TypeError naming the argument.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

from ._args import _as_tuple, _pad_pairs, _positive, _same_place, dtype_name
from ._spec import _LAYOUT, _SpecBase, _dims3, _input_dims_of, _pads3, _widen, output_size

__all__ = ["UnfoldSpec", "FoldSpec", "unfold_spec", "fold_spec"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnfoldSpec(_SpecBase):
    """``unfold``: x (N, C, [D,] H, W) -> the column matrix (N, C*T*R*S, Z*P*Q) (see the module docstring)."""

    pad_front: int = 0
    pad_back: int = 0
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "unfold"
    ARRAYS = ("x",)

    @property
    def pads(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        return ((self.pad_front, self.pad_back), (self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right))

    @property
    def is_padded(self) -> bool:
        return any(v for pair in self.pads for v in pair)

    @property
    def col_rows(self) -> int:
        """Rows of the column matrix: C*T*R*S (one per channel and tap)."""
        return self.C * self.window_elems

    @property
    def L(self) -> int:
        """Columns of the column matrix: the number of blocks, Z*P*Q."""
        return self.out_elems

    @property
    def col_layout(self) -> Tuple[int, int, int]:
        """The column matrix (N, C*T*R*S, L), the same in the backend layout and for the user (less N when
        unbatched)."""
        return (self.N, self.col_rows, self.L)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.col_layout

    @property
    def output_shape(self) -> Tuple[int, ...]:
        return self.col_layout if self.batched else self.col_layout[1:]

    def operands(self):
        return (self.input_shape,)

    def flops(self) -> int:
        """A copy: no arithmetic."""
        return 0

    def bytes(self) -> int:
        """Compulsory traffic: the image read once, the column matrix written once."""
        return (self.N * self.C * self.in_elems + self.N * self.col_rows * self.L) * self.itemsize

    def max_elements(self) -> int:
        """The larger of the image and the column matrix (which decides the index width)."""
        return max(self.N * self.C * self.in_elems, self.N * self.col_rows * self.L)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldSpec(UnfoldSpec):
    """``fold``, the adjoint of the unfold these fields describe: the column matrix ``cols`` (N, C*T*R*S, Z*P*Q)
    -> the image (N, C, [D,] H, W), ``out[n, c, d, h, w] = sum of the column entries unfold would read from
    (d, h, w)``; entries of taps in the padding are dropped."""

    __hash__, __eq__ = _SpecBase.__hash__, _SpecBase.__eq__

    op = "fold"
    ARRAYS = ("cols",)

    @property
    def output_layout(self) -> Tuple[int, ...]:
        return self.input_shape

    @property
    def output_shape(self) -> Tuple[int, ...]:
        return _SpecBase.output_shape.fget(self)

    def operands(self):
        return (self.col_layout,)

    def flops(self) -> int:
        """One addition per column entry (taps in the padding included: an upper bound)."""
        return self.N * self.col_rows * self.L

    def bytes(self) -> int:
        """Compulsory traffic: the column matrix read once, the image written once."""
        return (self.N * self.col_rows * self.L + self.N * self.C * self.in_elems) * self.itemsize


# ---------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------
def _dims_of(value, name: str):
    """1, 2 or 3 from a tuple argument's length; None for an int (the caller decides)."""
    if isinstance(value, (list, tuple)):
        if len(value) not in (1, 2, 3):
            raise ValueError(f"{name} must be an int or a tuple of 1, 2 or 3 ints (a 1-D, 2-D or 3-D problem), "
                             f"got {value!r}")
        return len(value)
    return None


def _geometry(sizes, kernel_size, dilation, padding, stride, nd: int):
    """Kernel, dilation, stride and per-side pads as ``nd``-tuples, and the number of blocks per dimension
    (possibly < 1: the callers raise with their own message)."""
    ks = _positive(_as_tuple(kernel_size, nd, "kernel_size"), "kernel_size")
    dils = _positive(_as_tuple(dilation, nd, "dilation"), "dilation")
    pads = _pad_pairs(padding, nd)
    strides = _positive(_as_tuple(stride, nd, "stride"), "stride")
    blocks = tuple(output_size(i, k, s, lo, hi, d) for i, k, s, (lo, hi), d in zip(sizes, ks, strides, pads, dils))
    return ks, dils, pads, strides, blocks


def _describe(ks, dils, pads, strides) -> str:
    pad = pads if any(lo != hi for lo, hi in pads) else tuple(lo for lo, _ in pads)
    return f"kernel_size={ks}, dilation={dils}, padding={pad}, stride={strides}"


def _build(cls, x, sizes, N, C, ks, dils, pads, strides, blocks, nd, batched):
    (D, H, W), (T, R, S), (Z, P, Q) = _widen(sizes, 1), _widen(ks, 1), _widen(blocks, 1)
    return cls(N=N, C=C, D=D, H=H, W=W, T=T, R=R, S=S, Z=Z, P=P, Q=Q, **_dims3("stride", _widen(strides, 1)),
               **_dims3("dil", _widen(dils, 1)), **_pads3(_widen(pads, (0, 0))), dtype=dtype_name(x),
               spatial_dims=nd, batched=batched)


def unfold_spec(x, kernel_size, dilation=1, padding=0, stride=1) -> UnfoldSpec:
    """Validate ``unfold`` arguments (torch.nn.functional.unfold's rules, N-D) and build the UnfoldSpec. The
    dimensions follow ``kernel_size``: 1 or 3 ints for 1-D or 3-D, an int or 2 ints for 2-D."""
    _same_place([("input", x)])
    nd = _dims_of(kernel_size, "kernel_size") or 2
    if x.ndim not in (nd + 1, nd + 2):
        full, unb, _ = _LAYOUT[nd]
        raise ValueError(f"input must be {nd + 2}-D {full} or {nd + 1}-D (unbatched) {unb} for a {nd}-D unfold "
                         f"(the dimensions follow kernel_size: an int or 2 ints for 2-D, 1 or 3 ints for 1-D "
                         f"or 3-D), got shape {tuple(x.shape)}")
    batched, N, C, sizes3 = _input_dims_of(x.shape, nd, "input")
    sizes = sizes3[3 - nd:]   # non-zero channels and sizes: _input_dims_of checks
    ks, dils, pads, strides, blocks = _geometry(sizes, kernel_size, dilation, padding, stride, nd)
    if any(b < 1 for b in blocks):
        raise ValueError(f"input of spatial size {sizes} with {_describe(ks, dils, pads, strides)} gives "
                         f"{blocks} sliding blocks, but there must be at least one along every dimension "
                         f"(the padded input must hold the dilated kernel)")
    return _build(UnfoldSpec, x, sizes, N, C, ks, dils, pads, strides, blocks, nd, batched)


def fold_spec(x, output_size, kernel_size, dilation=1, padding=0, stride=1) -> FoldSpec:
    """Validate ``fold`` arguments (torch.nn.functional.fold's rules, N-D) and build the FoldSpec. The
    dimensions follow ``output_size`` (1, 2 or 3 ints), or ``kernel_size`` when output_size is an int."""
    _same_place([("input", x)])
    nd_out, nd_k = _dims_of(output_size, "output_size"), _dims_of(kernel_size, "kernel_size")
    if nd_out is not None and nd_k is not None and nd_out != nd_k:
        raise ValueError(f"kernel_size must have as many entries as output_size ({nd_out}), got "
                         f"kernel_size={kernel_size!r} for output_size={output_size!r}")
    nd = nd_out or nd_k or 2
    sizes = _positive(_as_tuple(output_size, nd, "output_size"), "output_size")
    if x.ndim not in (2, 3):
        raise ValueError(f"input must be 3-D (N, C*prod(kernel_size), L) or 2-D (unbatched) "
                         f"(C*prod(kernel_size), L), got shape {tuple(x.shape)}")
    batched = x.ndim == 3
    N = int(x.shape[0]) if batched else 1
    rows, L = int(x.shape[-2]), int(x.shape[-1])
    if rows < 1 or L < 1:
        raise ValueError(f"input must have non-zero C*prod(kernel_size) and L dimensions (only the batch may be "
                         f"empty), got shape {tuple(x.shape)}")
    ks, dils, pads, strides, blocks = _geometry(sizes, kernel_size, dilation, padding, stride, nd)
    taps = math.prod(ks)
    if rows % taps:
        raise ValueError(f"input.shape[-2] ({rows}) must be divisible by the product of kernel_size "
                         f"({' * '.join(map(str, ks))} = {taps}): the input holds C*prod(kernel_size) rows")
    if any(b < 1 for b in blocks):
        raise ValueError(f"output_size={sizes} with {_describe(ks, dils, pads, strides)} gives {blocks} sliding "
                         f"blocks, but there must be at least one along every dimension")
    if L != math.prod(blocks):
        raise ValueError(f"input.shape[-1] ({L}) must equal the number of sliding blocks that output_size={sizes} "
                         f"with {_describe(ks, dils, pads, strides)} gives: {' * '.join(map(str, blocks))} = "
                         f"{math.prod(blocks)}")
    return _build(FoldSpec, x, sizes, N, rows // taps, ks, dils, pads, strides, blocks, nd, batched)
