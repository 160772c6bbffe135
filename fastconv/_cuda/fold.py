"""Family ``fold``: kernels/fold.cu, ``unfold`` (im2col) and ``fold`` (col2im) as ops, 1-D to 3-D.

The specs are :class:`~fastconv._spec_fold.UnfoldSpec` and :class:`~fastconv._spec_fold.FoldSpec`: the image
N x C x D x H x W (D = 1 below 3-D), the column matrix N x (C*T*R*S) x (Z*P*Q). Both kernels are gathers (one
thread per result element, a fixed order; fold sums its taps in ascending (t, r, s) order): no atomics,
bitwise reproducible. One kernel each serves every dimension (a 2-D problem has D = T = Z = 1), so the
implementations take 1-D, 2-D and 3-D problems alike.

The family passes its own parameter struct, ``FoldParams`` (defined in fold.cu; twin :data:`FOLD_PARAMS_FIELDS`).
Versions: v1 (ships). One variant.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .._spec import INT32_MAX
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, Ref, _struct, blocks, int32_overflow

FILE = "fold.cu"
ALGO = "direct"
OPS = ("unfold", "fold")
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
SPATIAL_DIMS = (1, 2, 3)
VARIANTS = ("",)
VERSIONS = (1,)

UNFOLD = Kernel("unfold_v1")
FOLD = Kernel("fold_v1")
KERNELS = (UNFOLD, FOLD)

#: the twin of ``struct FoldParams`` in kernels/fold.cu: same names, same order, all int32
FOLD_PARAMS_FIELDS = ("N", "C", "D", "H", "W", "T", "R", "S", "Z", "P", "Q", "stride_d", "stride_h", "stride_w",
                      "pad_front", "pad_top", "pad_left", "dil_d", "dil_h", "dil_w")
FOLD_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in FOLD_PARAMS_FIELDS], align=True)


def fold_params(spec) -> np.ndarray:
    """The ``FoldParams`` struct for ``spec`` (a 0-d structured array, as :mod:`.plan` builds the others)."""
    return _struct(spec, FOLD_PARAMS_FIELDS, FOLD_PARAMS_DTYPE)


def reasons(spec, variant: str = "") -> List[str]:
    """The kernels' 32-bit limits (never raises): every struct field, the padded extent along each axis
    (the coordinates and their intermediates stay below it) and the taps of a block are ints."""
    out = int32_overflow(spec, FOLD_PARAMS_FIELDS)
    if out:
        return out
    for axis, size, (lo, hi) in zip(("depth", "height", "width"), spec.in_size, spec.pads):
        if size + lo + hi > INT32_MAX:
            out.append(f"the padded {axis} ({size} + {lo} + {hi}) is beyond the kernels' 32-bit coordinates")
    if spec.window_elems > INT32_MAX:
        out.append(f"T*R*S = {spec.window_elems} taps per block is beyond the kernels' 32-bit tap counter")
    return out


def plan(spec, variant: str = "", version: Optional[int] = None) -> Plan:
    """One launch: unfold_v1 over the column matrix (x -> col) or fold_v1 over the image (cols -> y)."""
    if variant != "":
        raise ValueError(f"fold has one variant (''), got {variant!r}")
    if spec.op not in OPS:
        raise ValueError(f"fold has no kernel for op {spec.op!r} (ops: {', '.join(OPS)})")
    version = VERSIONS[-1] if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no {spec.op} kernel version {version!r} (versions: {VERSIONS})")
    params = fold_params(spec)
    if spec.op == "unfold":
        kernel, total, args, result = UNFOLD, spec.N * spec.col_rows * spec.L, (params, Ref("x"), Ref("col")), "col"
    else:
        kernel, total, args, result = FOLD, spec.N * spec.C * spec.in_elems, (params, Ref("cols"), Ref("y")), "y"
    # one thread per element of ``total`` (at most spec.max_elements(), so with int indexing the last
    # thread's index is at most 2^31 - 1: BLOCK_1D divides 2^31)
    launch = Launch(FILE, kernel.expr(spec), (blocks(total, BLOCK_1D), 1, 1), kernel.block, 0, args)
    return Plan((Buffer(result, spec.output_layout, spec.dtype),), (launch,), (result,))
