"""Family ``conv3d_implicit_gemm``: kernels/conv3d_implicit_gemm.cu, 3-D convolution as an implicit GEMM
(GEMM_M = N*Z*P*Q, GEMM_N = K/groups, GEMM_K = C/groups*T*R*S, the column matrix never stored).

Padded taps are staged as zeros, but a block that staged a non-finite weight of a padded problem recomputes
its outputs with the exact loop inside the kernel, so the family is exact for any weight (ZERO_FILLS_PADDING
is False: dispatch never has to look at the weight). Variants: two block tiles; float64 runs the 64x64 one
(its 4x4 register tile of doubles fits the register budget). The best variant depends on the problem and the
GPU: the cuda backend measures them, and conv3d_direct.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .plan import (Kernel, Launch, Plan, blocks, conv3d_params, conv_outputs, extent_limits, field_overflow, Ref,
                   register_tiled_block)

FILE = "conv3d_implicit_gemm.cu"
ALGO = "implicit_gemm"
OPS = ("conv",)
SPATIAL_DIMS = (3,)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1,)

#: conv3d_implicit_gemm_v1<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; __launch_bounds__
#: minimum MINB blocks per SM. BM rows are output positions, BN columns filters of one group.
TILES: Dict[str, Tuple[int, ...]] = {
    "128x64": (128, 64, 8, 8, 4, 2),
    "64x64": (64, 64, 8, 4, 4, 2),
}
#: float64 tiles: the 8x4 register tile of 128x64 in doubles would not fit its register budget
F64_TILES = ("64x64",)
VARIANTS = tuple(f"3d-{t}" for t in TILES)

_GEMM = {name: Kernel("conv3d_implicit_gemm_v1", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                      block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
KERNELS = tuple(_GEMM.values())


def _tile(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"conv3d_implicit_gemm variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant[len("3d-"):]


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernel whatever the index type (its GEMM_K and GEMM_N counters with room for a
    tile, padded input coordinates) and the dtypes of the tile."""
    if variant not in VARIANTS:
        return [f"conv3d_implicit_gemm has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    kern = _GEMM[_tile(variant)]
    out = field_overflow(spec) + extent_limits(spec, kern.name)
    if spec.dtype not in kern.dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join('3d-' + t for t in F64_TILES)} tiles only")
    if spec.gemm_k >= 2**30:
        out.append(f"GEMM_K = C/groups*T*R*S = {spec.gemm_k} taps per output is beyond the kernel's 32-bit k "
                   f"counters (< 2^30)")
    if spec.gemm_n >= 2**30:
        out.append(f"K/groups = {spec.gemm_n} is beyond the kernel's 32-bit n counters (< 2^30)")
    return out


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv3d_implicit_gemm kernel version {version!r} (versions: {VERSIONS})")
    tname = _tile(variant)
    bm, bn = TILES[tname][:2]
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    gemm = _GEMM[tname]
    nblocks = spec.groups * blocks(spec.gemm_m, bm) * blocks(spec.gemm_n, bn)
    launch = Launch(FILE, gemm.expr(spec), (nblocks, 1, 1), gemm.block, 0,
                    (conv3d_params(spec), Ref("x"), Ref("w"), bias, Ref("y")))
    return Plan(tuple(buffers), (launch,), ("y",))
