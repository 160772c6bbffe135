"""The public ``unfold`` and ``fold`` (im2col and col2im as ops), as torch.nn.functional's, and N-D.

Each builds its spec (:mod:`fastconv._spec_fold`, which validates every argument) and runs through
:func:`fastconv.functional._execute` like every other op: dispatch picks the backend's implementation, the
arrays are brought to the backend layout (``spec.operands()``) and the result shaped back
(``spec.output_shape``). Inputs are never written to.
"""
from __future__ import annotations

from ._interop import takes_arrays
from ._spec import array_kind
from ._spec_fold import fold_spec, unfold_spec
from .functional import _check_names, _execute, _resolve_backend

__all__ = ["unfold", "fold"]


@takes_arrays("input")
def unfold(input, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``.

    input (N, C, H, W) or unbatched (C, H, W) -> (N, C*kh*kw, L) (or (C*kh*kw, L)), L = P*Q blocks;
    row ``c*kh*kw + i*kw + j`` holds tap (i, j) of channel c, column ``p*Q + q`` block (p, q); taps in the
    padding are 0. Beyond torch: a kernel_size of 1 or 3 ints makes it 1-D (input (N, C, L)) or 3-D
    (input (N, C, D, H, W); rows ``((c*kd + t)*kh + i)*kw + j``, columns ``(z*P + p)*Q + q``), and padding
    may be per-side ``(before, after)`` pairs. Returns the input's array type and dtype.
    """
    _check_names(backend, "auto", "unfold")
    spec = unfold_spec(input, kernel_size, dilation, padding, stride)
    kind = array_kind(input)
    return _execute(spec, kind, _resolve_backend(backend, kind), "auto", (input,))


@takes_arrays("input")
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """Sum sliding blocks back into an image (col2im), as ``torch.nn.functional.fold``: the adjoint of
    :func:`unfold`.

    input (N, C*prod(kernel_size), L) or unbatched (C*prod(kernel_size), L), L the number of blocks that
    ``output_size`` gives -> (N, C, *output_size) (or (C, *output_size)). Entries that reach the same
    position add up (in a fixed order on every backend: deterministic, no atomics); entries of taps in the
    padding are dropped. Beyond torch: an output_size (or kernel_size) of 1 or 3 ints makes it 1-D or 3-D,
    and padding may be per-side ``(before, after)`` pairs. Returns the input's array type and dtype.
    """
    _check_names(backend, "auto", "fold")
    spec = fold_spec(input, output_size, kernel_size, dilation, padding, stride)
    kind = array_kind(input)
    return _execute(spec, kind, _resolve_backend(backend, kind), "auto", (input,))
