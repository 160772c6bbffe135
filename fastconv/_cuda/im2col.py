"""Family ``im2col``: kernels/im2col_gemm.cu, an explicit column matrix of the whole batch and a GEMM.

The column matrix stores padded taps as zeros, which the GEMM multiplies in: exact only for finite
weights (``ZERO_FILLS_PADDING``; dispatch does not return this family for a padded problem whose weight
holds Inf or NaN). Versions: the GEMM v1 naive (kept for teaching and tests), v2 (ships) 64x64 block tiles,
4x4 outputs per thread.
"""
from __future__ import annotations

from typing import List, Optional

from .plan import (BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, conv_outputs, conv_params, count_limits,
                   field_overflow, reach_limits, Ref, register_tiled_block)

FILE = "im2col_gemm.cu"
ALGO = "im2col"
OPS = ("conv",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = True
VARIANTS = ("",)
#: the GEMM's version (im2col_v1 packs the column matrix in both)
VERSIONS = (1, 2)

#: conv_gemm_v2<T, I, BM, BN, BK, TM, TN>: (BM/TM) * (BN/TN) threads per block
GEMM_TILE = (64, 64, 8, 4, 4)
IM2COL = Kernel("im2col_v1")
GEMM_V1 = Kernel("conv_gemm_v1")
GEMM_V2 = Kernel("conv_gemm_v2", GEMM_TILE, block=register_tiled_block(*GEMM_TILE[:2], *GEMM_TILE[3:5]))
KERNELS = (IM2COL, GEMM_V1, GEMM_V2)


def reasons(spec, variant: str = "") -> List[str]:
    return (field_overflow(spec) + reach_limits(spec, 1, 1, IM2COL.name)
            + count_limits({"GEMM_K = C/groups*R*S": (spec.gemm_k, GEMM_TILE[2])}, GEMM_V2.name))


def plan(spec, variant: str = "", version: Optional[int] = None) -> Plan:
    version = VERSIONS[-1] if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no {ALGO} kernel version {version!r} (versions: {VERSIONS})")
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    params = conv_params(spec)
    rows = spec.groups * spec.gemm_k                                  # C*R*S
    buffers.append(Buffer("col", (rows, spec.gemm_m), spec.dtype))
    launches = [Launch(FILE, IM2COL.expr(spec), (blocks(rows * spec.gemm_m, BLOCK_1D), 1, 1), IM2COL.block, 0,
                       (params, Ref("x"), Ref("col")))]
    gemm_args = (params, Ref("w"), Ref("col"), bias, Ref("y"))
    if version == 1:
        grid = (blocks(spec.N * spec.K * spec.P * spec.Q, BLOCK_1D), 1, 1)
        launches.append(Launch(FILE, GEMM_V1.expr(spec), grid, GEMM_V1.block, 0, gemm_args))
    else:
        bm, bn = GEMM_TILE[:2]
        nblocks = spec.groups * blocks(spec.gemm_n, bm) * blocks(spec.gemm_m, bn)
        launches.append(Launch(FILE, GEMM_V2.expr(spec), (nblocks, 1, 1), GEMM_V2.block, 0, gemm_args))
    return Plan(tuple(buffers), tuple(launches), ("y",))
