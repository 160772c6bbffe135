"""Family ``pool``: kernels/pool.cu, max (int64 indices, the NaN rule) and average (every divisor rule)
pooling, fixed-window and adaptive, with per-side padding; 1-D pools run as H = 1 (3-D ones: family
``pool3d``, from the same common.cuh bodies).

Variants of the shipped v2 kernels, each taking only the specs its predicate admits: ``global`` (every
window is the whole plane: one warp per plane), ``pair`` (window rows of two adjacent taps at stride 2,
no horizontal padding or dilation, W even: one aligned pair load per row) and ``any``. Versions: v1 one
thread per output (kept for teaching and tests; it ignores the variant), v2 (ships) several outputs per
thread.
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, field_overflow, pool_params, reach_limits, Ref

FILE = "pool.cu"
ALGO = "direct"
OPS = ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1, 2)
VARIANTS = ("global", "pair", "any")

#: max_pool2d_v2 / avg_pool2d_v2<T, I, OPT, PAIR>: OPT outputs per thread; PAIR = 1 for width-2 stride-2 rows
V2_TILES = {"any": (4, 0), "pair": (4, 1)}
KERNELS = tuple(Kernel(f"{k}_v1") for k in ("max_pool2d", "avg_pool2d")) \
    + tuple(Kernel(f"{k}_v2", t) for k in ("max_pool2d", "avg_pool2d") for t in V2_TILES.values()) \
    + tuple(Kernel(f"{k}_global_v2") for k in ("max_pool2d", "avg_pool2d"))
_BY = {(k.name, k.tile): k for k in KERNELS}


def _mismatch(spec, variant: str) -> Optional[str]:
    """Why ``variant``'s predicate does not admit ``spec`` (None when it does)."""
    if variant == "global":
        whole = spec.is_adaptive or ((spec.R, spec.S) == (spec.H, spec.W) and not spec.is_padded
                                     and spec.dil_h == spec.dil_w == 1)
        if not (spec.P == spec.Q == 1 and whole):
            return ("variant global needs every window to be the whole plane (a 1x1 output of an unpadded, "
                    "undilated full window)")
    elif variant == "pair":
        if spec.is_adaptive or not (spec.S == spec.stride_w == 2 and spec.pad_left == spec.pad_right == 0
                                    and spec.dil_w == 1 and spec.W % 2 == 0):
            return ("variant pair needs fixed windows of width 2 at stride 2, no horizontal padding or "
                    "dilation, W even")
    elif variant != "any":
        raise ValueError(f"pool variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return None


def reasons(spec, variant: str = "any") -> List[str]:
    out = field_overflow(spec)
    if not out and not spec.is_adaptive:  # adaptive windows lie inside the input
        out = reach_limits(spec, 1, 1, "the pool kernels")
    why = _mismatch(spec, variant)
    return out + ([why] if why else [])


def plan(spec, variant: str = "any", version: Optional[int] = None) -> Plan:
    """The launch computing a pool (max kinds also write int64 indices when ``spec.return_indices``)."""
    version = VERSIONS[-1] if version is None else version
    total = spec.N * spec.C * spec.P * spec.Q
    kind = "max_pool2d" if spec.is_max else "avg_pool2d"
    itype = None
    if version == 1:
        kernel, grid = _BY[(f"{kind}_v1", ())], (blocks(total, BLOCK_1D), 1, 1)
    elif version == 2:
        why = _mismatch(spec, variant)
        if why:
            raise ValueError(f"{why}; this spec does not qualify")
        if variant == "global":
            kernel, grid = _BY[(f"{kind}_global_v2", ())], (blocks(spec.N * spec.C, BLOCK_1D // 32), 1, 1)
            if spec.H * spec.W + 31 > INT32_MAX:  # a lane's plane index steps 32 past the end of the plane
                itype = "long long"
        else:
            kernel = _BY[(f"{kind}_v2", V2_TILES[variant])]
            opt = kernel.tile[0]
            grid = (blocks(total, opt * BLOCK_1D), 1, 1)
            if total + opt * BLOCK_1D > INT32_MAX:  # a thread's last output index passes the end
                itype = "long long"
    else:
        raise ValueError(f"no pool kernel version {version!r} (versions: {VERSIONS})")
    buffers = [Buffer("y", spec.output_layout, spec.dtype)]
    args = (pool_params(spec), Ref("x"), Ref("y"))
    results = ("y",)
    if spec.is_max:
        idx = "indices" if spec.return_indices else "indices_dummy"
        buffers.append(Buffer(idx, spec.output_layout if spec.return_indices else (1,), "int64"))
        args += (Ref(idx),)
        results = ("y", "indices") if spec.return_indices else ("y",)
    launch = Launch(FILE, kernel.expr(spec, itype), grid, kernel.block, 0, args)
    return Plan(tuple(buffers), (launch,), results)
