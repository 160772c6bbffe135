"""Family ``conv3d_direct``: kernels/conv3d_direct.cu, direct 3-D convolution (any stride, padding, dilation,
groups), one thread per output.

Taps in the padding are skipped, so the family is exact for any weight: the 3-D path dispatch always has,
whatever the weight holds. Slower than the implicit GEMM (conv3d_implicit_gemm), which comes first.
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Kernel, Launch, Plan, blocks, conv3d_params, conv_outputs, extent_limits,
                   field_overflow, Ref)

FILE = "conv3d_direct.cu"
ALGO = "direct"
OPS = ("conv",)
SPATIAL_DIMS = (3,)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VARIANTS = ("3d",)
VERSIONS = (1,)

V1 = Kernel("conv3d_direct_v1")
KERNELS = (V1,)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """32-bit limits of the kernel whatever the index type: its parameter fields, its input coordinates
    (padded extents) and the filter's taps per channel (T*R*S, an int)."""
    if variant not in VARIANTS:
        return [f"conv3d_direct has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    out = field_overflow(spec) + extent_limits(spec, V1.name)
    if spec.window_elems > INT32_MAX:
        out.append(f"T*R*S = {spec.window_elems} taps per filter channel are beyond {V1.name}'s 32-bit counters")
    return out


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv3d_direct kernel version {version!r} (versions: {VERSIONS})")
    if variant not in VARIANTS:
        raise ValueError(f"conv3d_direct variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    grid = (blocks(spec.N * spec.K * spec.out_elems, BLOCK_1D), 1, 1)
    launch = Launch(FILE, V1.expr(spec), grid, V1.block, 0,
                    (conv3d_params(spec), Ref("x"), Ref("w"), bias, Ref("y")))
    return Plan(tuple(buffers), (launch,), ("y",))
