"""Family ``conv3d_dgrad``: kernels/conv3d_dgrad.cu, the input gradient of a 3-D convolution and the
transposed 3-D convolution (op ``conv_input``; the spec's fields are the forward problem's), in gather form:
each dx element sums the dy * w terms that reach it; a term that does not exist (a tap the stride skips, or
whose dy position falls outside dy) is never multiplied, so the family is exact for any weight.

One kernel, one thread per dx element (algo ``direct``: a loop per output over the taps that reach it).
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Kernel, Launch, Plan, blocks, conv3d_params, conv_outputs, extent_limits,
                   field_overflow, Ref)

FILE = "conv3d_dgrad.cu"
ALGO = "direct"
OPS = ("conv_input",)
SPATIAL_DIMS = (3,)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VARIANTS = ("3d",)
VERSIONS = (1,)

V1 = Kernel("conv3d_dgrad_v1")
KERNELS = (V1,)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """32-bit limits of the kernel whatever the index type: its parameter fields, the coordinates
    ``d + pad_front`` (and h, w) it forms, the filter's taps per channel."""
    if variant not in VARIANTS:
        return [f"conv3d_dgrad has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    out = field_overflow(spec) + extent_limits(spec, V1.name)
    if spec.window_elems > INT32_MAX:
        out.append(f"T*R*S = {spec.window_elems} taps per filter channel are beyond {V1.name}'s 32-bit counters")
    return out


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv3d_dgrad kernel version {version!r} (versions: {VERSIONS})")
    if variant not in VARIANTS:
        raise ValueError(f"conv3d_dgrad variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    buffers: list = []
    bias = conv_outputs(spec, buffers)        # y: dx (N, C, D, H, W); the bias has C entries
    grid = (blocks(spec.N * spec.C * spec.in_elems, BLOCK_1D), 1, 1)
    launch = Launch(FILE, V1.expr(spec), grid, V1.block, 0,
                    (conv3d_params(spec), Ref("dy"), Ref("w"), bias, Ref("y")))
    return Plan(tuple(buffers), (launch,), ("y",))
