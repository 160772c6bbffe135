"""Family ``conv_dgrad``: kernels/conv_dgrad.cu, the input gradient of a convolution and the transposed
convolution (op ``conv_input``; the spec's fields are the forward problem's), in gather form: each dx element
sums the dy * w terms that reach it, a term that does not exist (a tap the stride skips, or whose dy position
falls outside dy) is never multiplied, so the family is exact for any weight.

Versions: v1 one thread per dx element (kept for teaching and tests); v2 (ships) an implicit GEMM per stride
phase (GEMM_M = N * H/stride_h * W/stride_w positions of one phase, GEMM_N = C/groups, GEMM_K = K/groups times
the taps reaching that phase), register-blocked like the forward implicit GEMM, so a strided problem does no
multiply-by-zero for the taps the stride skips. Why an implicit GEMM rather than a tiled gather: dgrad is the
forward's arithmetic with the roles of K and C exchanged, and a tiled gather reuses each staged dy value only
over the channels of one block (direct v2's K_TILE = 8), where a 64 x 64 register-blocked tile reuses each
staged value 64 times. Variants: two square-ish block tiles and a narrow one (``128x16``) for few channels per
group (GEMM_N = C/groups small); the cuda backend measures them. ``gather`` ships v1 as the fallback, under
algo ``direct`` (what it is: ``cuda:conv_input:direct/gather``), a fallback: last in priority, and under
``algo="auto"`` run only for what no tile takes (the phase arithmetic adds a stride to the padded extent, so a stride and padding near 2^30 pass the
tiles' 32-bit coordinates but not v1's): every 1-D and 2-D input gradient has an exact kernel, refused only
past v1's 32-bit limits.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .._spec import INT32_MAX
from .plan import (BLOCK_1D, Kernel, Launch, Plan, blocks, conv_outputs, conv_params, count_limits,
                   extent_limits, field_overflow, Ref, register_tiled_block)

FILE = "conv_dgrad.cu"
ALGO = "implicit_gemm"
OPS = ("conv_input",)
DTYPES = ("float16", "float32", "float64")
ZERO_FILLS_PADDING = False
VERSIONS = (1, 2)

#: conv_dgrad_v2<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads; __launch_bounds__ minimum MINB
#: blocks per SM. BM rows are dx positions of one stride phase, BN columns input channels of one group.
TILES: Dict[str, Tuple[int, ...]] = {
    "128x64": (128, 64, 8, 8, 4, 2),
    "64x64": (64, 64, 8, 4, 4, 2),
    "128x16": (128, 16, 8, 4, 4, 4),
}
#: float64 tiles: the 8x4 register tile of 128x64 in doubles would not fit its register budget
F64_TILES = ("64x64", "128x16")
#: the tiles (v2), then the fallback (v1, see the module docstring), which is a direct gather, not a GEMM
VARIANTS = tuple(TILES) + ("gather",)
VARIANT_ALGOS = {"gather": "direct"}
#: dispatch runs the gather only where no other candidate of the selection takes the problem (Impl.fallback)
FALLBACK_VARIANTS = ("gather",)

V1 = Kernel("conv_dgrad_v1")
_V2 = {name: Kernel("conv_dgrad_v2", t, DTYPES if name in F64_TILES else ("float16", "float32"),
                    block=register_tiled_block(*t[:2], *t[3:5])) for name, t in TILES.items()}
KERNELS = (V1,) + tuple(_V2.values())


def phases(spec) -> Tuple[int, int]:
    """Stride phases (rows, columns) with any dx position: ``min(stride, extent)`` per axis."""
    return min(spec.stride_h, spec.H), min(spec.stride_w, spec.W)


def phase_rows(spec) -> int:
    """dx positions of the largest phase (phase 0): what every phase's m tiles are sized for."""
    return spec.N * blocks(spec.H, spec.stride_h) * blocks(spec.W, spec.stride_w)


def reasons(spec, variant: str = VARIANTS[0]) -> List[str]:
    """The 32-bit limits of the kernels whatever the index type (GEMM_K and GEMM_N counters, a phase's
    positions per image, padded coordinates, the phase arithmetic ph + pad), and the dtypes of the tile."""
    if variant == "gather":
        out = (field_overflow(spec) + extent_limits(spec, V1.name)
               + count_limits({"R*S": (spec.R * spec.S, 1)}, V1.name))
        return out
    if variant not in TILES:
        return [f"conv_dgrad has no variant {variant!r} (variants: {', '.join(VARIANTS)})"]
    out = field_overflow(spec)
    if spec.dtype not in _V2[variant].dtypes:
        out.append(f"dtype {spec.dtype} runs the {' and '.join(F64_TILES)} tiles only")
    if spec.K_per_group * spec.R * spec.S >= 2**30:
        out.append(f"GEMM_K = K/groups*R*S = {spec.K_per_group * spec.R * spec.S} is beyond the kernel's 32-bit "
                   f"k counters (< 2^30)")
    if spec.C_per_group >= 2**30:
        out.append(f"C/groups = {spec.C_per_group} is beyond the kernel's 32-bit n counters (< 2^30)")
    if spec.H * spec.W > INT32_MAX:
        out.append(f"one dx plane holds {spec.H * spec.W} positions, more than a 32-bit int")
    for extent, lo, hi, stride, axis in ((spec.H, spec.pad_top, spec.pad_bottom, spec.stride_h, "row"),
                                         (spec.W, spec.pad_left, spec.pad_right, spec.stride_w, "column")):
        if extent + lo + hi + stride >= INT32_MAX:
            out.append(f"the padded {axis} extent plus the stride ({extent + lo + hi + stride}) reaches 2^31 - 1, "
                       f"beyond the kernel's 32-bit coordinates")
    return out


def plan(spec, variant: str = VARIANTS[0], version: Optional[int] = None) -> Plan:
    if variant not in VARIANTS:
        raise ValueError(f"conv_dgrad variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "gather" and version not in (None, 1):
        raise ValueError(f"conv_dgrad variant 'gather' is kernel version 1, got version={version!r}")
    version = (1 if variant == "gather" else VERSIONS[-1]) if version is None else version
    if version not in VERSIONS:
        raise ValueError(f"no conv_dgrad kernel version {version!r} (versions: {VERSIONS})")
    buffers: list = []
    bias = conv_outputs(spec, buffers)        # y: dx (N, C, H, W); the bias has C entries
    params = conv_params(spec)
    args = (params, Ref("dy"), Ref("w"), bias, Ref("y"))
    if version == 1:
        grid = (blocks(spec.N * spec.C * spec.H * spec.W, BLOCK_1D), 1, 1)
        launch = Launch(FILE, V1.expr(spec), grid, V1.block, 0, args)
    else:
        bm, bn = TILES[variant][:2]
        kern = _V2[variant]
        ph, pw = phases(spec)
        nblocks = spec.groups * ph * pw * blocks(phase_rows(spec), bm) * blocks(spec.C_per_group, bn)
        launch = Launch(FILE, kern.expr(spec), (nblocks, 1, 1), kern.block, 0, args)
    return Plan(tuple(buffers), (launch,), ("y",))
