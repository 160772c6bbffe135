"""Family ``depthwise``: kernels/depthwise.cu, one input channel per group (C/groups == 1, any channel
multiplier K/C), input patches with halo in shared memory.

Taps in the padding are skipped (a thread whose filter holds Inf/NaN takes the bounds-checked path), so
the family is exact for any weight. Variants: a 3x3 filter at stride 1 or 2 fixed at compile time
(dilation 1: the MobileNet layers), and ``any`` filter, stride and dilation.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .plan import (BLOCK_1D, MAX_DYNAMIC_SMEM, Kernel, Launch, Plan, acc_itemsize, blocks, conv_outputs,
                   conv_params, field_overflow, reach_limits, Ref)

FILE = "depthwise.cu"
ALGO = "depthwise"
OPS = ("conv",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1,)

#: depthwise_v1<T, I, PPT, FR, FS, FSTRIDE>: PPT output rows per thread; a filter size and stride fixed at
#: compile time (dilation 1), or (0, 0, 0) for any filter, stride and dilation. Fixed ones first: a
#: variant that fits the spec exactly comes before the general one.
TILES: Dict[str, Tuple[int, ...]] = {"3x3s1": (4, 3, 3, 1), "3x3s2": (4, 3, 3, 2), "any": (4, 0, 0, 0)}
VARIANTS = tuple(TILES)
KERNELS = tuple(Kernel("depthwise_v1", t) for t in TILES.values())
_KERNEL = dict(zip(TILES, KERNELS))
#: output items (PPT outputs of one column) per block aimed at, items per thread, widest tile
ITEMS, ITEMS_PER_THREAD, MAX_TILE_Q = 512, 2, 128


def reasons(spec, variant: str = "any") -> List[str]:
    if not spec.is_depthwise:
        return field_overflow(spec) + [f"depthwise needs one input channel per group (groups == C); this problem has "
                f"C/groups = {spec.C_per_group} (C = {spec.C}, groups = {spec.groups})"]
    out = field_overflow(spec)
    _, fr, fs, fstride = TILES[variant][:4]
    if fr and ((spec.R, spec.S, spec.dil_h, spec.dil_w) != (fr, fs, 1, 1)
               or (spec.stride_h, spec.stride_w) != (fstride, fstride)):
        out.append(f"variant {variant} is compiled for a {fr}x{fs} filter at stride {fstride}, dilation 1; this "
                   f"problem has {spec.R}x{spec.S}, stride ({spec.stride_h}, {spec.stride_w}), dilation "
                   f"({spec.dil_h}, {spec.dil_w})")
    tile_p, tile_q = geometry(spec)[:2]
    return out + reach_limits(spec, tile_p, tile_q, KERNELS[0].name)


def geometry(spec):
    """The tile: (tile_p, tile_q, planes, patch_h, patch_w, shared bytes, threads).

    A tile row is the whole output row (split evenly when wider than MAX_TILE_Q); rows are added (PPT at a
    time) up to ITEMS items, split evenly over the plane; when one tile is the whole plane, a block takes
    several planes to reach ITEMS. If the patches do not fit shared memory, the tile shrinks (planes, then
    rows, then columns); what still does not fit is refused by Plan.reasons.
    """
    ppt = TILES["any"][0]
    acc = acc_itemsize(spec.dtype)
    tile_q = blocks(spec.Q, blocks(spec.Q, MAX_TILE_Q))
    groups_full = blocks(spec.P, ppt)
    groups = max(1, min(groups_full, ITEMS // tile_q))
    groups = blocks(groups_full, blocks(groups_full, groups))           # balanced over the plane
    planes = 1
    if groups == groups_full and tile_q == spec.Q:
        planes = max(1, min(spec.N * spec.K, ITEMS // (groups * tile_q)))

    def smem(planes, groups, tile_q):
        ph, pw = spec.input_extent_hw(groups * ppt, tile_q)
        return planes * (ph * pw + spec.R * spec.S) * acc

    while smem(planes, groups, tile_q) > MAX_DYNAMIC_SMEM:
        if planes > 1:
            planes = blocks(planes, 2)
        elif groups > 1:
            groups = blocks(groups, 2)
        elif tile_q > 1:
            tile_q = blocks(tile_q, 2)
        else:
            break
    threads = min(BLOCK_1D, 32 * blocks(blocks(planes * groups * tile_q, ITEMS_PER_THREAD), 32))
    ph, pw = spec.input_extent_hw(groups * ppt, tile_q)
    return groups * ppt, tile_q, planes, ph, pw, smem(planes, groups, tile_q), threads


def plan(spec, variant: str = "any", version: Optional[int] = None) -> Plan:
    if version not in (None,) + VERSIONS:
        raise ValueError(f"no {ALGO} kernel version {version!r} (versions: {VERSIONS})")
    if not spec.is_depthwise:
        raise ValueError(f"depthwise needs one input channel per group, got C/groups = {spec.C_per_group}")
    buffers: list = []
    bias = conv_outputs(spec, buffers)
    tile_p, tile_q, planes, patch_h, patch_w, smem, threads = geometry(spec)
    nblocks = blocks(spec.N * spec.K, planes) * blocks(spec.P, tile_p) * blocks(spec.Q, tile_q)
    launch = Launch(FILE, _KERNEL[variant].expr(spec), (nblocks, 1, 1), (threads, 1, 1), smem,
                    (conv_params(spec), np.int32(tile_p), np.int32(tile_q), np.int32(planes), np.int32(patch_h),
                     np.int32(patch_w), Ref("x"), Ref("w"), bias, Ref("y")))
    return Plan(tuple(buffers), (launch,), ("y",))
