"""Family ``conv3d_dgrad``: kernels/conv3d_dgrad.cu, the input gradient of a 3-D convolution and the
transposed 3-D convolution (op ``conv_input``; the spec's fields are the forward problem's), in gather form:
each dx element sums the dy * w terms that reach it; a term that does not exist (a tap the stride skips, or
whose dy position falls outside dy) is never multiplied, so the family is exact for any weight.

Versions: v1 one thread per dx element (kept for teaching and tests); v2 (ships) conv_dgrad's implicit GEMM per
stride phase with a third axis (GEMM_M = N * D/stride_d * H/stride_h * W/stride_w positions of one phase,
GEMM_N = C/groups, GEMM_K = K/groups times the taps reaching that phase), register-blocked, so a strided problem
does no multiply-by-zero for the taps the stride skips; a block that staged a non-finite weight recomputes its
outputs with the exact gather loop. Variants: two square-ish block tiles and a narrow one (``3d-128x16``) for
few channels per group; the cuda backend measures them. ``3d-gather`` ships v1 as the fallback, under algo
``direct`` (``cuda:conv_input:direct/3d-gather``), a fallback: under ``algo="auto"`` run only for what no tile takes (the tiles'
coordinates add a stride to the padded extent): every 3-D input gradient has an exact kernel, refused only past
v1's 32-bit limits.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Kernel, Launch, Plan, blocks, conv3d_params, conv_outputs, extent_limits,
                   field_overflow, Ref, register_tiled_block)

FILE = "conv3d_dgrad.cu"
ALGO = "implicit_gemm"
OPS = ("conv_input",)
SPATIAL_DIMS = (3,)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1, 2)

#: conv3d_dgrad_v2<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; __launch_bounds__ minimum MINB
#: blocks per SM. BM rows are dx positions of one stride phase, BN columns input channels of one group.
TILES: Dict[str, Tuple[int, ...]] = {
    "128x64": (128, 64, 8, 8, 4, 2),
    "64x64": (64, 64, 8, 4, 4, 2),
    "128x16": (128, 16, 8, 4, 4, 4),
}
#: float64 tiles: the 8x4 register tile of 128x64 in doubles would not fit its register budget
F64_TILES = ("64x64", "128x16")
#: the tiles (v2), then the fallback (v1, see the module docstring), which is a direct gather, not a GEMM
VARIANTS = tuple(f"3d-{t}" for t in TILES) + ("3d-gather",)
VARIANT_ALGOS = {"3d-gather": "direct"}
#: dispatch runs the gather only where no other candidate of the selection takes the problem (Impl.fallback)
FALLBACK_VARIANTS = ("3d-gather",)

V1 = Kernel("conv3d_dgrad_v1")
_V2 = {name: Kernel("conv3d_dgrad_v2", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                    block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
KERNELS = (V1,) + tuple(_V2.values())


def phases(spec) -> Tuple[int, int, int]:
    """Stride phases (depth, rows, columns) with any dx position: ``min(stride, extent)`` per axis."""
    return tuple(min(st, n) for st, n in zip(spec.strides, spec.in_size))


def phase_rows(spec) -> int:
    """dx positions of the largest phase (phase 0): what every phase's m tiles are sized for."""
    return spec.N * blocks(spec.D, spec.stride_d) * blocks(spec.H, spec.stride_h) * blocks(spec.W, spec.stride_w)


def _tile(variant: str) -> str:
    if variant not in VARIANTS or variant == "3d-gather":
        raise ValueError(f"conv3d_dgrad variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant[len("3d-"):]


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernels whatever the index type (GEMM_K and GEMM_N counters, padded coordinates
    plus a stride: the phase arithmetic ph + pad), and the dtypes of the tile."""
    if variant == "3d-gather":
        out = field_overflow(spec) + extent_limits(spec, V1.name)
        if spec.window_elems > INT32_MAX:
            out.append(f"T*R*S = {spec.window_elems} taps per filter channel are beyond {V1.name}'s 32-bit "
                       f"counters")
        return out
    if variant not in VARIANTS:
        return [f"conv3d_dgrad has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    kern = _V2[_tile(variant)]
    out = field_overflow(spec) + extent_limits(spec, kern.name, margin=max(spec.strides))
    if spec.dtype not in kern.dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join('3d-' + t for t in F64_TILES)} tiles only")
    if spec.K_per_group * spec.window_elems >= 2**30:
        out.append(f"GEMM_K = K/groups*T*R*S = {spec.K_per_group * spec.window_elems} is beyond the kernel's 32-bit "
                   f"k counters (< 2^30)")
    if spec.C_per_group >= 2**30:
        out.append(f"C/groups = {spec.C_per_group} is beyond the kernel's 32-bit n counters (< 2^30)")
    return out


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if variant == "3d-gather" and version not in (None, 1):
        raise ValueError(f"conv3d_dgrad variant '3d-gather' is kernel version 1, got version={version!r}")
    version = (1 if variant == "3d-gather" else VERSIONS[-1]) if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no conv3d_dgrad kernel version {version!r} (versions: {VERSIONS})")
    tname = None if variant == "3d-gather" else _tile(variant)
    buffers: list = []
    bias = conv_outputs(spec, buffers)        # y: dx (N, C, D, H, W); the bias has C entries
    args = (conv3d_params(spec), Ref("dy"), Ref("w"), bias, Ref("y"))
    if version == 1:
        grid = (blocks(spec.N * spec.C * spec.in_elems, BLOCK_1D), 1, 1)
        launch = Launch(FILE, V1.expr(spec), grid, V1.block, 0, args)
    else:
        bm, bn = TILES[tname][:2]
        kern = _V2[tname]
        pd, ph, pw = phases(spec)
        nblocks = spec.groups * pd * ph * pw * blocks(phase_rows(spec), bm) * blocks(spec.C_per_group, bn)
        launch = Launch(FILE, kern.expr(spec), (nblocks, 1, 1), kern.block, 0, args)
    return Plan(tuple(buffers), (launch,), ("y",))
