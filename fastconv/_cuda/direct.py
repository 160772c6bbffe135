"""Family ``direct``: kernels/conv2d_direct.cu, direct convolution (any stride, padding, dilation, groups).

Taps in the padding are skipped, so the family is exact for any weight. Versions: v1 naive (one thread per
output, no shared memory), v2 output-tiled with the input patch and the filter slice in shared memory.
Variants: ``""`` ships v2; ``untiled`` ships v1, last in priority and only for what v2 refuses (a tile whose
patch passes the shared memory, from a large stride, dilation or filter): with it, every 1-D and 2-D
convolution has an exact kernel whatever the dtype or the weight (the implicit GEMM has no float64, im2col
multiplies padded zeros in), refused only past its 32-bit limits. Being a fallback (``FALLBACK_VARIANTS``),
dispatch never measures it against a kernel that takes the problem.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .plan import (BLOCK_1D, Kernel, Launch, Plan, acc_itemsize, blocks, conv_outputs, conv_params,
                   count_limits, field_overflow, reach_limits, Ref)

FILE = "conv2d_direct.cu"
ALGO = "direct"
OPS = ("conv",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
#: v2 (tiled) ships as "", v1 as the fallback "untiled": dispatch runs it only where no other candidate of the
#: selection takes the problem (Impl.fallback)
VARIANTS = ("", "untiled")
FALLBACK_VARIANTS = ("untiled",)
VERSIONS = (1, 2)

#: conv2d_direct_v2<T, I, TILE_P, TILE_Q, K_TILE, C_TILE>: a block of TILE_Q x TILE_P threads computes
#: TILE_P x TILE_Q outputs of K_TILE channels, staging C_TILE input channels at a time
TILE = (8, 16, 8, 4)
V1 = Kernel("conv2d_direct_v1")
V2 = Kernel("conv2d_direct_v2", TILE, block=(TILE[1], TILE[0], 1))
KERNELS = (V1, V2)


def reasons(spec, variant: str = "") -> List[str]:
    """32-bit limits of the variant's kernel (never raises; the plan's own limits come on top)."""
    if variant == "untiled":
        return (field_overflow(spec) + reach_limits(spec, 1, 1, V1.name)
                + count_limits({"R*S": (spec.R * spec.S, 1)}, V1.name))
    if variant != "":
        return [f"direct has no variant {variant!r} (variants: {', '.join(map(repr, VARIANTS))})"]
    tp, tq, kt, ct = TILE
    return (field_overflow(spec) + reach_limits(spec, tp, tq, V2.name)
            + count_limits({"K/groups": (spec.K_per_group, kt), "C/groups": (spec.C_per_group, ct)}, V2.name))


def plan(spec, variant: str = "", version: Optional[int] = None) -> Plan:
    if variant not in VARIANTS:
        raise ValueError(f"direct variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
    if variant == "untiled" and version not in (None, 1):
        raise ValueError(f"direct variant 'untiled' is kernel version 1, got version={version!r}")
    version = (1 if variant == "untiled" else VERSIONS[-1]) if version is None else version
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    params = conv_params(spec)
    if version == 1:
        grid = (blocks(spec.N * spec.K * spec.P * spec.Q, BLOCK_1D), 1, 1)
        launch = Launch(FILE, V1.expr(spec), grid, V1.block, 0, (params, Ref("x"), Ref("w"), bias, Ref("y")))
    elif version == 2:
        tp, tq, kt, ct = TILE
        patch_h, patch_w = spec.input_extent_hw(tp, tq)
        smem = ct * (patch_h * patch_w + kt * spec.R * spec.S) * acc_itemsize(spec.dtype)
        nblocks = spec.N * spec.groups * blocks(spec.K_per_group, kt) * blocks(spec.P, tp) * blocks(spec.Q, tq)
        launch = Launch(FILE, V2.expr(spec), (nblocks, 1, 1), V2.block, smem,
                        (params, np.int32(patch_h), np.int32(patch_w), Ref("x"), Ref("w"), bias, Ref("y")))
    else:
        raise ValueError(f"no {ALGO} kernel version {version!r} (versions: {VERSIONS})")
    return Plan(tuple(buffers), (launch,), ("y",))
