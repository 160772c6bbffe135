"""Family ``conv3d_implicit_gemm``: kernels/conv3d_implicit_gemm.cu, 3-D convolution as an implicit GEMM
(GEMM_M = N*Z*P*Q, GEMM_N = K/groups, GEMM_K = C/groups*T*R*S, the column matrix never stored).

Padded taps are staged as zeros, but a block that staged a non-finite weight of a padded problem recomputes
its outputs with the exact loop inside the kernel, so the family is exact for any weight (ZERO_FILLS_PADDING
is False: dispatch never has to look at the weight). Variants: two block tiles; float64 runs the 64x64 one
(its 4x4 register tile of doubles fits the register budget); and split-K over GEMM_K for problems with few
output tiles (a deep layer's small volume: 2 x 4^3 positions are one 128-row tile), the partial sums reduced
in split order by a second kernel, so no atomics. The best variant depends on the problem and the GPU: the
cuda backend measures them, and conv3d_direct.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, conv3d_params, conv_outputs, extent_limits,
                   field_overflow, Ref, register_tiled_block)

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
#: split-K variants "3d-<tile>-k<splits>": GEMM_K cut in `splits` chunks (grid y), partial sums reduced in order
SPLITS = {"128x64": (2, 4), "64x64": (2, 4)}
VARIANTS = tuple(f"3d-{t}" for t in TILES) + tuple(f"3d-{t}-k{k}" for t, ks in SPLITS.items() for k in ks)

_GEMM = {name: Kernel("conv3d_implicit_gemm_v1", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                      block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
REDUCE = Kernel("conv3d_splitk_reduce_v1")
KERNELS = tuple(_GEMM.values()) + (REDUCE,)


def _split(variant: str) -> Tuple[str, int]:
    if variant not in VARIANTS:
        raise ValueError(f"conv3d_implicit_gemm variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    tile, _, ks = variant[len("3d-"):].partition("-k")
    return tile, int(ks or 1)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernel whatever the index type (its GEMM_K and GEMM_N counters with room for a
    tile, padded input coordinates) and the dtypes of the tile."""
    if variant not in VARIANTS:
        return [f"conv3d_implicit_gemm has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    kern = _GEMM[_split(variant)[0]]
    out = field_overflow(spec) + extent_limits(spec, kern.name)
    if spec.dtype not in kern.dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join('3d-' + t for t in F64_TILES)} tiles only")
    if spec.gemm_k >= 2**30:
        out.append(f"GEMM_K = C/groups*T*R*S = {spec.gemm_k} taps per output is beyond the kernel's 32-bit k "
                   f"counters (< 2^30)")
    if spec.gemm_n >= 2**30:
        out.append(f"K/groups = {spec.gemm_n} is beyond the kernel's 32-bit n counters (< 2^30)")
    return out


def splits_of(spec, variant: str) -> Tuple[int, int]:
    """(splits, k steps per split) of a variant for ``spec``: never an empty split."""
    tname, ks = _split(variant)
    steps = blocks(spec.gemm_k, TILES[tname][2])
    chunk_steps = blocks(steps, ks)
    return blocks(steps, chunk_steps), chunk_steps


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv3d_implicit_gemm kernel version {version!r} (versions: {VERSIONS})")
    tname, _ = _split(variant)
    bm, bn, bk = TILES[tname][:3]
    splits, chunk_steps = splits_of(spec, variant)
    out_elems = spec.N * spec.K * spec.out_elems
    acc_dt = "float32" if spec.dtype == "float16" else spec.dtype
    # the split-K workspace is the biggest buffer: index it in 64 bits when it needs them
    itype = "long long" if splits * out_elems > INT32_MAX else None
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    partial = "partial" if splits > 1 else "partial_dummy"
    buffers.append(Buffer(partial, (splits * out_elems,) if splits > 1 else (1,), acc_dt))
    params = conv3d_params(spec)
    gemm = _GEMM[tname]
    nblocks = spec.groups * blocks(spec.gemm_m, bm) * blocks(spec.gemm_n, bn)
    launches = [Launch(FILE, gemm.expr(spec, itype), (nblocks, splits, 1), gemm.block, 0,
                       (params, np.int32(chunk_steps * bk), Ref("x"), Ref("w"), bias, Ref("y"), Ref(partial)))]
    if splits > 1:
        launches.append(Launch(FILE, REDUCE.expr(spec, itype), (blocks(out_elems, BLOCK_1D), 1, 1), REDUCE.block,
                               0, (params, np.int32(splits), Ref("partial"), bias, Ref("y"))))
    return Plan(tuple(buffers), tuple(launches), ("y",))
