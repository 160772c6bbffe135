"""Family ``implicit_gemm``: kernels/conv_implicit_gemm.cu, GEMM_M = N*P*Q, GEMM_N = K/groups,
GEMM_K = C/groups*R*S with the column matrix never stored; float16 and float32 storage.

Padded taps are staged as zeros, but a block that staged a non-finite weight of a padded problem recomputes
its outputs with the exact loop inside the kernel, so the family is exact for any weight. Variants: four
block tiles, and split-K over GEMM_K for problems with few output tiles (partial sums reduced in order by a
second kernel, so no atomics). The best variant depends on the problem and the GPU: the cuda backend
measures them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, conv_outputs, conv_params, field_overflow, Ref,
                   register_tiled_block)

FILE = "conv_implicit_gemm.cu"
ALGO = "implicit_gemm"
OPS = ("conv",)
#: float64 runs im2col or direct (a 64-wide register tile of doubles would also cost the most compile time)
DTYPES = ("float16", "float32")
ZERO_FILLS_PADDING = False
VERSIONS = (1,)

#: conv_implicit_gemm_v1<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; __launch_bounds__
#: minimum MINB blocks per SM (caps registers at 64K / (MINB * threads))
TILES: Dict[str, Tuple[int, ...]] = {
    "128x128": (128, 128, 8, 8, 8, 1),
    "128x64": (128, 64, 8, 8, 4, 2),
    "64x128": (64, 128, 8, 4, 8, 2),
    "64x64": (64, 64, 8, 4, 4, 3),
}
#: split-K variants "<tile>-k<splits>": GEMM_K cut in `splits` chunks (grid y), partial sums reduced in order
SPLITS = {"128x64": (2, 4), "64x64": (2, 4)}
VARIANTS = tuple(TILES) + tuple(f"{t}-k{k}" for t, ks in SPLITS.items() for k in ks)

KERNELS = tuple(Kernel("conv_implicit_gemm_v1", t, DTYPES, block=register_tiled_block(*t[:2], *t[3:5]))
                for t in TILES.values()) + (Kernel("splitk_reduce_v1", (), DTYPES),)
_GEMM = {name: k for name, k in zip(TILES, KERNELS)}
REDUCE = KERNELS[-1]


def _split(variant: str) -> Tuple[str, int]:
    if variant not in VARIANTS:
        raise ValueError(f"implicit_gemm variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    tile, _, ks = variant.partition("-k")
    return tile, int(ks or 1)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """Extents the kernel keeps in 32-bit ints whatever the index type (its GEMM_K and GEMM_N counters, the
    position inside one output plane, padded input coordinates), with room for a tile."""
    out = field_overflow(spec)
    if spec.gemm_k >= 2**30:
        out.append(f"GEMM_K = C/groups*R*S = {spec.gemm_k} taps per output is beyond the kernel's 32-bit k "
                   f"counters (< 2^30)")
    if spec.gemm_n >= 2**30:
        out.append(f"K/groups = {spec.gemm_n} is beyond the kernel's 32-bit n counters (< 2^30)")
    if spec.P * spec.Q > INT32_MAX:
        out.append(f"one output plane holds {spec.P * spec.Q} positions, more than a 32-bit int")
    if spec.H + spec.pad_top + spec.pad_bottom >= INT32_MAX or spec.W + spec.pad_left + spec.pad_right >= INT32_MAX:
        out.append("a padded input extent reaches 2^31 - 1, beyond the kernel's 32-bit coordinates")
    return out


def splits_of(spec, variant: str) -> Tuple[int, int]:
    """(splits, k steps per split) of a variant for ``spec``: never an empty split."""
    tname, ks = _split(variant)
    bk = TILES[tname][2]
    steps = blocks(spec.gemm_k, bk)
    chunk_steps = blocks(steps, ks)
    return blocks(steps, chunk_steps), chunk_steps


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no {ALGO} kernel version {version!r} (versions: {VERSIONS})")
    tname, _ = _split(variant)
    tile = TILES[tname]
    bm, bn, bk = tile[:3]
    splits, chunk_steps = splits_of(spec, variant)
    out_elems = spec.N * spec.K * spec.P * spec.Q
    acc_dt = "float32" if spec.dtype == "float16" else spec.dtype
    # the split-K workspace is the biggest buffer: index it in 64 bits when it needs them
    itype = "long long" if splits * out_elems > INT32_MAX else None
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    params = conv_params(spec)
    partial = "partial" if splits > 1 else "partial_dummy"
    buffers.append(Buffer(partial, (splits * out_elems,) if splits > 1 else (1,), acc_dt))
    nblocks = spec.groups * blocks(spec.gemm_m, bm) * blocks(spec.gemm_n, bn)
    gemm = _GEMM[tname]
    launches = [Launch(FILE, gemm.expr(spec, itype), (nblocks, splits, 1), gemm.block, 0,
                       (params, np.int32(chunk_steps * bk), Ref("x"), Ref("w"), bias, Ref("y"), Ref(partial)))]
    if splits > 1:
        launches.append(Launch(FILE, REDUCE.expr(spec, itype), (blocks(out_elems, BLOCK_1D), 1, 1), REDUCE.block,
                               0, (params, np.int32(splits), Ref("partial"), bias, Ref("y"))))
    return Plan(tuple(buffers), tuple(launches), ("y",))
