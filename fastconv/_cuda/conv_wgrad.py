"""Family ``conv_wgrad``: kernels/conv_wgrad.cu, the weight gradient of a convolution (op ``conv_weight``; the
spec's fields are the forward problem's) as an implicit GEMM per group: GEMM_M = K/groups, GEMM_N =
C/groups*R*S, GEMM_K = N*P*Q, the input taps gathered while a tile is staged.

Padded taps are staged as zeros, but a block that staged a non-finite dy in a padded problem recomputes its
outputs with the exact loop inside the kernel, so the family is exact for any dy. Variants: two block tiles,
and split-K over GEMM_K (the whole batch's output positions: long, while the filter bank is small), the
partial sums reduced in split order by a second kernel (no atomics: bitwise reproducible). The best variant
depends on the problem and the GPU: the cuda backend measures them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .._spec import INT32_MAX
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, conv_params, field_overflow, Ref, register_tiled_block

FILE = "conv_wgrad.cu"
ALGO = "implicit_gemm"
OPS = ("conv_weight",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1,)

#: conv_wgrad_v1<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; BM rows are filters, BN columns
#: taps (c, r, s), BK output positions per k step; __launch_bounds__ minimum MINB blocks per SM
TILES: Dict[str, Tuple[int, ...]] = {
    "128x64": (128, 64, 16, 8, 4, 2),
    "64x64": (64, 64, 16, 4, 4, 2),
}
#: float64 tiles: 128x64's shared tiles in doubles pass the 48 KiB of static shared memory
F64_TILES = ("64x64",)
#: split-K variants "<tile>-k<splits>": GEMM_K cut in `splits` chunks (grid y), partial sums reduced in order
SPLITS = {"128x64": (4, 16), "64x64": (4, 16)}
VARIANTS = tuple(TILES) + tuple(f"{t}-k{k}" for t, ks in SPLITS.items() for k in ks)

_GEMM = {name: Kernel("conv_wgrad_v1", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                      block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
REDUCE = Kernel("wgrad_splitk_reduce_v1")
KERNELS = tuple(_GEMM.values()) + (REDUCE,)


def _split(variant: str) -> Tuple[str, int]:
    if variant not in VARIANTS:
        raise ValueError(f"conv_wgrad variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    tile, _, ks = variant.partition("-k")
    return tile, int(ks or 1)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernel whatever the index type (its m, n counters, a dy plane's positions,
    padded input coordinates, a k chunk in the int instantiation) and the dtypes of the tile."""
    if variant not in VARIANTS:
        return [f"conv_wgrad has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    tname, _ = _split(variant)
    out = field_overflow(spec)
    if spec.dtype not in _GEMM[tname].dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join(F64_TILES)} tiles only")
    if spec.C_per_group * spec.R * spec.S >= 2**30:
        out.append(f"GEMM_N = C/groups*R*S = {spec.C_per_group * spec.R * spec.S} is beyond the kernel's 32-bit n "
                   f"counters (< 2^30)")
    if spec.K_per_group >= 2**30:
        out.append(f"K/groups = {spec.K_per_group} is beyond the kernel's 32-bit m counters (< 2^30)")
    if spec.P * spec.Q > INT32_MAX:
        out.append(f"one dy plane holds {spec.P * spec.Q} positions, more than a 32-bit int")
    if spec.H + spec.pad_top + spec.pad_bottom >= INT32_MAX or spec.W + spec.pad_left + spec.pad_right >= INT32_MAX:
        out.append("a padded input extent reaches 2^31 - 1, beyond the kernel's 32-bit coordinates")
    return out


def splits_of(spec, variant: str) -> Tuple[int, int]:
    """(splits, k steps per split) of a variant for ``spec``: never an empty split."""
    tname, ks = _split(variant)
    steps = blocks(spec.N * spec.P * spec.Q, TILES[tname][2])
    chunk_steps = blocks(steps, ks)
    return blocks(steps, chunk_steps), chunk_steps


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv_wgrad kernel version {version!r} (versions: {VERSIONS})")
    tname, _ = _split(variant)
    return splitk_plan(spec, FILE, conv_params(spec), _GEMM[tname], REDUCE, *splits_of(spec, variant))


def splitk_plan(spec, file: str, params, gemm: Kernel, reduce: Kernel, splits: int, chunk_steps: int) -> Plan:
    """The launches of a weight-gradient GEMM over ``splits`` chunks of ``chunk_steps`` k steps each (GEMM_N =
    C/groups*T*R*S: the 2-D family and its 3-D twin, conv3d_wgrad, plan alike), and, when split, the reduce
    that adds the partial sums in split order."""
    bm, bn, bk = gemm.tile[:3]
    gemm_n = spec.C_per_group * spec.window_elems
    total = spec.K * gemm_n
    acc_dt = "float32" if spec.dtype == "float16" else spec.dtype
    # the split-K workspace can be the biggest buffer, and the last chunk's end the biggest position:
    # index those launches in 64 bits when they need them
    wide = splits * total > INT32_MAX or splits * chunk_steps * bk > INT32_MAX
    itype = "long long" if wide else None
    partial = "partial" if splits > 1 else "partial_dummy"
    buffers = [Buffer("y", spec.output_layout, spec.dtype),
               Buffer(partial, (splits * total,) if splits > 1 else (1,), acc_dt)]
    nblocks = spec.groups * blocks(spec.K_per_group, bm) * blocks(gemm_n, bn)
    launches = [Launch(file, gemm.expr(spec, itype), (nblocks, splits, 1), gemm.block, 0,
                       (params, np.int64(chunk_steps * bk), Ref("x"), Ref("dy"), Ref("y"), Ref(partial)))]
    if splits > 1:
        launches.append(Launch(file, reduce.expr(spec, itype), (blocks(total, BLOCK_1D), 1, 1), reduce.block, 0,
                               (params, np.int32(splits), Ref("partial"), Ref("y"))))
    return Plan(tuple(buffers), tuple(launches), ("y",))
