"""Family ``pool3d``: kernels/pool3d.cu, 3-D max (int64 indices flat over the (D, H, W) volume, the NaN
rule) and average (every divisor rule, per-side pads) pooling, fixed-window and adaptive.

The kernels are the 2-D family's v1 bodies (kernels/common.cuh, written over (D, H, W)) behind 3-D entry
points, so 1-D and 2-D problems stay with the tuned 2-D family (``pool``) and a 3-D one runs here. One
variant, ``3d``, so what dispatch returns says what runs (``cuda:max_pool:direct/3d``); one version, v1:
one thread per output.
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
VARIANTS = ("3d",)

MAX_V1, AVG_V1 = Kernel("max_pool3d_v1"), Kernel("avg_pool3d_v1")
KERNELS = (MAX_V1, AVG_V1)


def check_variant(variant: str, family: str = "pool3d") -> None:
    if variant not in VARIANTS:
        raise ValueError(f"{family} has one variant ({VARIANTS[0]!r}), got {variant!r}")


def window_reach_limits(spec, kernel: str) -> List[str]:
    """The 32-bit coordinate limits of a fixed-window 3-D pool (adaptive windows lie inside the input):
    rows and columns as every family checks them (:func:`.plan.reach_limits`), and depth the same way."""
    if spec.is_adaptive:
        return []
    out = reach_limits(spec, 1, 1, kernel)
    reach = max(spec.Z, input_extent(spec.Z, spec.T, spec.stride_d, spec.dil_d))
    if reach > INT32_MAX:
        out.append(f"{kernel} forms depth coordinates up to {reach} (stride {spec.stride_d}, window reach "
                   f"{input_extent(1, spec.T, 1, spec.dil_d)}), beyond its 32-bit ints")
    return out


def reasons(spec, variant: str = "3d") -> List[str]:
    """The kernels' 32-bit limits (never raises for a valid variant)."""
    check_variant(variant)
    return field_overflow(spec) or window_reach_limits(spec, "the 3-D pool kernels")


def plan(spec, variant: str = "3d", version: Optional[int] = None) -> Plan:
    """The launch computing a 3-D pool (max kinds also write int64 indices when ``spec.return_indices``):
    one thread per output (at most spec.max_elements(), so with int indexing the last thread's index is
    at most 2^31 - 1: BLOCK_1D divides 2^31)."""
    check_variant(variant)
    version = VERSIONS[-1] if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no 3-D pool kernel version {version!r} (versions: {VERSIONS})")
    kernel = MAX_V1 if spec.is_max else AVG_V1
    total = spec.N * spec.C * spec.out_elems
    buffers = [Buffer("y", spec.output_layout, spec.dtype)]
    args = (pool_params(spec), Ref("x"), Ref("y"))
    results = ("y",)
    if spec.is_max:
        idx = "indices" if spec.return_indices else "indices_dummy"
        buffers.append(Buffer(idx, spec.output_layout if spec.return_indices else (1,), "int64"))
        args += (Ref(idx),)
        results = ("y", "indices") if spec.return_indices else ("y",)
    launch = Launch(FILE, kernel.expr(spec), (blocks(total, BLOCK_1D), 1, 1), kernel.block, 0, args)
    return Plan(tuple(buffers), (launch,), results)
