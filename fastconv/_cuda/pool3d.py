"""Family ``pool3d``: kernels/pool3d.cu, 3-D max (int64 indices flat over the (D, H, W) volume, the NaN
rule) and average (every divisor rule, per-side pads) pooling, fixed-window and adaptive.

The kernels are the 2-D family's bodies (kernels/common.cuh, written over (D, H, W)) behind 3-D entry
points, so 1-D and 2-D problems stay with the tuned 2-D family (``pool``) and a 3-D one runs here. Variants,
each taking only the specs its predicate admits and named so that what dispatch returns says what runs:
``3d-global`` (every window is the whole volume, as in the global average pool ending a 3-D network: one warp
per volume, ``cuda:avg_pool:direct/3d-global``) and ``3d`` (any window: one thread per output,
``cuda:max_pool:direct/3d``). One version, v1.
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX, input_extent
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, field_overflow, pool_params, reach_limits, Ref

FILE = "pool3d.cu"
ALGO = "direct"
OPS = ("max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
SPATIAL_DIMS = (3,)
VERSIONS = (1,)
VARIANTS = ("3d-global", "3d")

#: (max?, global?) -> kernel
_KERNELS = {(kind == "max", glob): Kernel(f"{kind}_pool3d{'_global' if glob else ''}_v1")
            for kind in ("max", "avg") for glob in (False, True)}
KERNELS = tuple(_KERNELS.values())


def check_variant(variant: str, family: str = "pool3d", variants=("3d",)) -> None:
    if variant not in variants:
        raise ValueError(f"{family} variant must be one of {', '.join(map(repr, variants))}, got {variant!r}")


def _mismatch(spec, variant: str) -> Optional[str]:
    """Why ``variant``'s predicate does not admit ``spec`` (None when it does)."""
    check_variant(variant, variants=VARIANTS)
    if variant == "3d-global":
        whole = spec.is_adaptive or (spec.window == spec.in_size and not spec.is_padded
                                     and spec.dilations == (1, 1, 1))
        if not (spec.out_size == (1, 1, 1) and whole):
            return ("variant 3d-global needs every window to be the whole volume (a 1x1x1 output of an "
                    "unpadded, undilated full window)")
    return None


def window_reach_limits(spec, kernel: str) -> List[str]:
    """The 32-bit coordinate limits of a fixed-window 3-D pool (adaptive windows lie inside the input):
    rows and columns as every family checks them (:func:`.plan.reach_limits`), and depth the same way."""
    if spec.is_adaptive:
        return []
    out = reach_limits(spec, 1, 1, kernel)
    # depth, where long volumes live, exactly: the kernels form z*stride_d and the tap coordinates
    # z*stride_d - pad_front + t*dil_d, so the largest is the last window's last tap, padding subtracted
    last_start = (spec.Z - 1) * spec.stride_d
    reach = max(spec.Z, last_start + 1, last_start - spec.pad_front + input_extent(1, spec.T, 1, spec.dil_d))
    if reach > INT32_MAX:
        out.append(f"{kernel} forms depth coordinates up to {reach} (stride {spec.stride_d}, window reach "
                   f"{input_extent(1, spec.T, 1, spec.dil_d)}), beyond its 32-bit ints")
    return out


def reasons(spec, variant: str = "3d") -> List[str]:
    """The kernels' 32-bit limits and the variant's predicate (never raises for a valid variant)."""
    why = _mismatch(spec, variant)
    return (field_overflow(spec) or window_reach_limits(spec, "the 3-D pool kernels")) + ([why] if why else [])


def plan(spec, variant: str = "3d", version: Optional[int] = None) -> Plan:
    """The launch computing a 3-D pool (max kinds also write int64 indices when ``spec.return_indices``):
    ``3d`` one thread per output (at most spec.max_elements(), so with int indexing the last thread's index
    is at most 2^31 - 1: BLOCK_1D divides 2^31), ``3d-global`` one warp per (n, c) volume."""
    why = _mismatch(spec, variant)
    if why:
        raise ValueError(f"{why}; this spec does not qualify")
    version = VERSIONS[-1] if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no 3-D pool kernel version {version!r} (versions: {VERSIONS})")
    kernel = _KERNELS[(spec.is_max, variant == "3d-global")]
    itype = None
    if variant == "3d-global":
        grid = (blocks(spec.N * spec.C, BLOCK_1D // 32), 1, 1)
        if spec.in_elems + 31 > INT32_MAX:  # a lane's volume index steps 32 past the end of the volume
            itype = "long long"
    else:
        grid = (blocks(spec.N * spec.C * spec.out_elems, BLOCK_1D), 1, 1)
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
