"""Family ``conv3d_wgrad``: kernels/conv3d_wgrad.cu, the weight gradient of a 3-D convolution (op
``conv_weight``; the spec's fields are the forward problem's) as an implicit GEMM per group: GEMM_M = K/groups,
GEMM_N = C/groups*T*R*S, GEMM_K = N*Z*P*Q, the input taps gathered while a tile is staged.

Padded taps are staged as zeros, but a block that staged a non-finite dy in a padded problem recomputes its
outputs with the exact loop inside the kernel, so the family is exact for any dy. Variants: two block tiles,
and split-K over GEMM_K (the whole batch's output positions: long, while the filter bank is small), the partial
sums reduced in split order by a second kernel (no atomics: bitwise reproducible). The cuda backend measures
them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .conv_wgrad import splitk_plan
from .plan import Kernel, Plan, blocks, conv3d_params, extent_limits, field_overflow, register_tiled_block

FILE = "conv3d_wgrad.cu"
ALGO = "implicit_gemm"
OPS = ("conv_weight",)
SPATIAL_DIMS = (3,)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1,)

#: conv3d_wgrad_v1<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; BM rows are filters, BN columns
#: taps (c, t, r, s), BK output positions per k step; __launch_bounds__ minimum MINB blocks per SM
TILES: Dict[str, Tuple[int, ...]] = {
    "128x64": (128, 64, 16, 8, 4, 2),
    "64x64": (64, 64, 16, 4, 4, 2),
}
#: float64 tiles: 128x64's shared tiles in doubles pass the 48 KiB of static shared memory
F64_TILES = ("64x64",)
#: split-K variants "3d-<tile>-k<splits>": GEMM_K cut in `splits` chunks (grid y), partial sums reduced in order
SPLITS = {"128x64": (4, 16), "64x64": (4, 16)}
VARIANTS = tuple(f"3d-{t}" for t in TILES) + tuple(f"3d-{t}-k{k}" for t, ks in SPLITS.items() for k in ks)

_GEMM = {name: Kernel("conv3d_wgrad_v1", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                      block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
REDUCE = Kernel("conv3d_wgrad_splitk_reduce_v1")
KERNELS = tuple(_GEMM.values()) + (REDUCE,)


def _split(variant: str) -> Tuple[str, int]:
    if variant not in VARIANTS:
        raise ValueError(f"conv3d_wgrad variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    tile, _, ks = variant[len("3d-"):].partition("-k")
    return tile, int(ks or 1)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernel whatever the index type (its m, n counters with room for a tile, padded
    input coordinates, the filter's taps) and the dtypes of the tile."""
    if variant not in VARIANTS:
        return [f"conv3d_wgrad has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    tname, _ = _split(variant)
    kern = _GEMM[tname]
    out = field_overflow(spec) + extent_limits(spec, kern.name)
    if spec.dtype not in kern.dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join('3d-' + t for t in F64_TILES)} tiles only")
    if spec.C_per_group * spec.window_elems >= 2**30:
        out.append(f"GEMM_N = C/groups*T*R*S = {spec.C_per_group * spec.window_elems} is beyond the kernel's "
                   f"32-bit n counters (< 2^30)")
    if spec.K_per_group >= 2**30:
        out.append(f"K/groups = {spec.K_per_group} is beyond the kernel's 32-bit m counters (< 2^30)")
    return out


def splits_of(spec, variant: str) -> Tuple[int, int]:
    """(splits, k steps per split) of a variant for ``spec``: never an empty split."""
    tname, ks = _split(variant)
    steps = blocks(spec.N * spec.out_elems, TILES[tname][2])
    chunk_steps = blocks(steps, ks)
    return blocks(steps, chunk_steps), chunk_steps


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no conv3d_wgrad kernel version {version!r} (versions: {VERSIONS})")
    tname, _ = _split(variant)
    return splitk_plan(spec, FILE, conv3d_params(spec), _GEMM[tname], REDUCE, *splits_of(spec, variant))
