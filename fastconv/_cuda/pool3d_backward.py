"""Family ``pool3d_backward``: kernels/pool3d_backward.cu, the gradients of the 3-D max, average and
adaptive pools and 3-D max_unpool.

The specs are the forward pool's (:class:`~fastconv._spec.PoolGradSpec`, :class:`~fastconv._spec.UnpoolSpec`):
dx / the unpooled output is N x C x D x H x W, dy / the pooled input N x C x Z x P x Q. The gradients are a
gather (one thread per dx element, a fixed summation order: no floating-point atomics, bitwise
reproducible); max_unpool claims each target with an integer atomicMax of the element's volume position
(the last in row-major order wins whatever the schedule), then writes. The bodies are the 2-D family's
(kernels/common.cuh, written over (D, H, W)). One variant, ``3d`` (``cuda:max_pool_backward:direct/3d``);
one version, v1.
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, field_overflow, pool_params, Ref
from .pool3d import check_variant, window_reach_limits

FILE = "pool3d_backward.cu"
ALGO = "direct"
GRAD_OPS = ("max_pool_backward", "avg_pool_backward", "adaptive_max_pool_backward", "adaptive_avg_pool_backward")
OPS = GRAD_OPS + ("max_unpool",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
SPATIAL_DIMS = (3,)
VARIANTS = ("3d",)
VERSIONS = (1,)

#: max/avg_pool3d_backward_v1<T, I, ADAPTIVE>: one instantiation per window rule (adaptive listed first:
#: NVRTC checks below sm_90 compile the last-listed tile of each kernel, the fixed-window rule)
GRAD_KERNELS = {(kind, adaptive): Kernel(f"{kind}_pool3d_backward_v1", (adaptive,))
                for kind in ("max", "avg") for adaptive in (1, 0)}
UNPOOL_INIT = Kernel("max_unpool3d_init_v1")
UNPOOL_CLAIM = Kernel("max_unpool3d_claim_v1")
UNPOOL_WRITE = Kernel("max_unpool3d_write_v1")
KERNELS = tuple(GRAD_KERNELS.values()) + (UNPOOL_INIT, UNPOOL_CLAIM, UNPOOL_WRITE)


def reasons(spec, variant: str = "3d") -> List[str]:
    """The kernels' 32-bit limits (never raises for a valid variant)."""
    check_variant(variant, "pool3d_backward")
    out = field_overflow(spec)
    if out:
        return out
    if spec.op == "max_unpool":
        if spec.out_elems > INT32_MAX:
            out.append(f"max_unpool3d_claim_v1 keeps a volume position (Z*P*Q = {spec.out_elems}) in its 32-bit "
                       f"owner workspace")
        return out
    out += window_reach_limits(spec, "the 3-D pool gradient kernels")
    if spec.kind == "avg" and spec.dilations != (1, 1, 1):
        out.append("avg_pool3d_backward_v1 takes undilated windows (dilation is not an average-pool argument)")
    return out


def _launch(spec, kernel: Kernel, total: int, args) -> Launch:
    """One thread per element of ``total`` (at most spec.max_elements(), so with int indexing the last
    thread's index is at most 2^31 - 1: BLOCK_1D divides 2^31): the spec's index type."""
    return Launch(FILE, kernel.expr(spec), (blocks(total, BLOCK_1D), 1, 1), kernel.block, 0, args)


def plan(spec, variant: str = "3d", version: Optional[int] = None) -> Plan:
    """The launches of a 3-D pool gradient (dy[, indices] -> dx) or of 3-D max_unpool (x, indices -> y)."""
    check_variant(variant, "pool3d_backward")
    if spec.op not in OPS:
        raise ValueError(f"pool3d_backward has no kernel for op {spec.op!r} (ops: {', '.join(OPS)})")
    version = VERSIONS[-1] if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no 3-D {spec.op} kernel version {version!r} (versions: {VERSIONS})")
    params = pool_params(spec)
    total = spec.N * spec.C * spec.in_elems
    if spec.op == "max_unpool":
        buffers = (Buffer("y", spec.output_layout, spec.dtype), Buffer("owner", (total,), "int32"))
        launches = (_launch(spec, UNPOOL_INIT, total, (params, Ref("owner"))),
                    _launch(spec, UNPOOL_CLAIM, spec.N * spec.C * spec.out_elems,
                            (params, Ref("indices"), Ref("owner"))),
                    _launch(spec, UNPOOL_WRITE, total, (params, Ref("x"), Ref("owner"), Ref("y"))))
        return Plan(buffers, launches, ("y",))
    kernel = GRAD_KERNELS[("max" if spec.is_max else "avg", int(spec.is_adaptive))]
    args = (params, Ref("dy"), Ref("indices"), Ref("dx")) if spec.is_max else (params, Ref("dy"), Ref("dx"))
    return Plan((Buffer("dx", spec.output_layout, spec.dtype),), (_launch(spec, kernel, total, args),), ("dx",))
