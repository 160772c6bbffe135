"""Family ``pool_backward``: kernels/pool_backward.cu, the gradients of the max, average and adaptive pools
and max_unpool; 1-D problems run as H = 1 (3-D ones: family ``pool3d_backward``, from the same common.cuh
bodies).

The specs are the forward pool's (:class:`~fastconv._spec.PoolGradSpec`, :class:`~fastconv._spec.UnpoolSpec`):
dx / the unpooled output is N x C x H x W, dy / the pooled input N x C x P x Q. Every kernel is a gather
(one thread per result element, a fixed summation order): no floating-point atomics, bitwise reproducible.

Versions: the pool gradients have one kernel each (v1, which ships: a thread per dx element loops over the
output windows whose span holds it); ``plan(..., version=2)`` refuses them rather than run v1 under another
name. max_unpool: v1 one thread per plane writing in row-major order (teaching: N*C threads), v2 (ships)
an int32 owner workspace (-1, then an integer atomicMax of each input element's plane position, so the
last in row-major order wins whatever the schedule), then a write pass. One variant.
"""
from __future__ import annotations

from typing import List, Optional

from .._spec import INT32_MAX
from .plan import BLOCK_1D, Buffer, Kernel, Launch, Plan, blocks, field_overflow, pool_params, reach_limits, Ref

FILE = "pool_backward.cu"
ALGO = "direct"
GRAD_OPS = ("max_pool_backward", "avg_pool_backward", "adaptive_max_pool_backward", "adaptive_avg_pool_backward")
OPS = GRAD_OPS + ("max_unpool",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VARIANTS = ("",)
VERSIONS = (1, 2)
#: the version each op ships (the last of VERSIONS it has)
SHIPPED = {**{op: 1 for op in GRAD_OPS}, "max_unpool": 2}

#: max/avg_pool2d_backward_v1<T, I, ADAPTIVE>: one instantiation per window rule
#: (listed adaptive first: NVRTC checks below sm_90 compile the last-listed tile of each kernel, here the
#: fixed-window rule, the one most problems run)
GRAD_KERNELS = {(kind, adaptive): Kernel(f"{kind}_pool2d_backward_v1", (adaptive,))
                for kind in ("max", "avg") for adaptive in (1, 0)}
UNPOOL_V1 = Kernel("max_unpool2d_v1")
UNPOOL_INIT = Kernel("max_unpool2d_init_v2")
UNPOOL_CLAIM = Kernel("max_unpool2d_claim_v2")
UNPOOL_WRITE = Kernel("max_unpool2d_write_v2")
KERNELS = tuple(GRAD_KERNELS.values()) + (UNPOOL_V1, UNPOOL_INIT, UNPOOL_CLAIM, UNPOOL_WRITE)


def reasons(spec, variant: str = "") -> List[str]:
    """The kernels' 32-bit limits (never raises)."""
    out = field_overflow(spec)
    if out:
        return out
    if spec.op == "max_unpool":
        if spec.P * spec.Q > INT32_MAX:
            out.append(f"max_unpool2d_claim_v2 keeps a plane position (P*Q = {spec.P * spec.Q}) in its 32-bit "
                       f"owner workspace")
        return out
    if not spec.is_adaptive:   # adaptive windows lie inside the input
        out += reach_limits(spec, 1, 1, "the pool gradient kernels")
        if spec.kind == "avg" and (spec.dil_h, spec.dil_w) != (1, 1):
            out.append("avg_pool2d_backward_v1 takes undilated windows (dilation is not an average-pool argument)")
    return out


def _launch(spec, kernel: Kernel, total: int, args) -> Launch:
    """One thread per element of ``total`` (at most spec.max_elements(), so with int indexing the last
    thread's index is at most 2^31 - 1: BLOCK_1D divides 2^31): the spec's index type."""
    return Launch(FILE, kernel.expr(spec), (blocks(total, BLOCK_1D), 1, 1), kernel.block, 0, args)


def plan(spec, variant: str = "", version: Optional[int] = None) -> Plan:
    """The launches of a pool gradient (dy[, indices] -> dx) or of max_unpool (x, indices -> y)."""
    if variant != "":
        raise ValueError(f"pool_backward has one variant (''), got {variant!r}")
    if spec.op not in OPS:
        raise ValueError(f"pool_backward has no kernel for op {spec.op!r} (ops: {', '.join(OPS)})")
    version = SHIPPED[spec.op] if version is None else version
    if version not in VERSIONS or (spec.op in GRAD_OPS and version != 1):
        have = (1,) if spec.op in GRAD_OPS else VERSIONS
        raise ValueError(f"no {spec.op} kernel version {version!r} (versions: {have})")
    params = pool_params(spec)
    total = spec.N * spec.C * spec.H * spec.W
    if spec.op == "max_unpool":
        buffers = [Buffer("y", spec.output_layout, spec.dtype)]
        if version == 1:
            launches = [_launch(spec, UNPOOL_V1, spec.N * spec.C, (params, Ref("x"), Ref("indices"), Ref("y")))]
        else:
            buffers.append(Buffer("owner", (total,), "int32"))
            launches = [_launch(spec, UNPOOL_INIT, total, (params, Ref("owner"))),
                        _launch(spec, UNPOOL_CLAIM, spec.N * spec.C * spec.P * spec.Q,
                                (params, Ref("indices"), Ref("owner"))),
                        _launch(spec, UNPOOL_WRITE, total, (params, Ref("x"), Ref("owner"), Ref("y")))]
        return Plan(tuple(buffers), tuple(launches), ("y",))
    buffers = (Buffer("dx", spec.output_layout, spec.dtype),)
    kernel = GRAD_KERNELS[("max" if spec.is_max else "avg", int(spec.is_adaptive))]
    args = (params, Ref("dy"), Ref("indices"), Ref("dx")) if spec.is_max else (params, Ref("dy"), Ref("dx"))
    launch = _launch(spec, kernel, total, args)
    return Plan(buffers, (launch,), ("dx",))
