"""How fastconv's CUDA kernels are launched: shared by backend "cuda" (CuPy) and "cuda-emu" (the emulator).

Everything a launch needs is computed here, once, from the spec:

- the parameter structs passed by value (``ConvParams``/``PoolParams`` in kernels/common.cuh), built field
  by field from the spec attributes of the same names as 0-d NumPy structured arrays (what both CuPy and
  the emulator take for a struct-by-value parameter); tests/test_cuda_params.py checks the layout against
  C++;
- the index type per call (``int``, or ``long long`` when ``spec.needs_64bit_indexing``), as CuPy's
  ndimage does;
- the tile shapes of the tiled kernels, which live only here and reach CUDA as template arguments in the
  kernel's name expression (``conv_gemm_v2<float, int, 64, 64, 8, 4, 4>``), so no constant has two homes;
- the launch geometry (grid, block, dynamic shared memory) and the buffers each algorithm needs.

A :class:`Plan` is a list of :class:`Launch` over named buffers; a backend executes it with its own array
module and kernel loader through :func:`execute`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._spec import INT32_MAX

# ---------------------------------------------------------------------------------------------------
# Where the kernel sources are
# ---------------------------------------------------------------------------------------------------
def kernels_dir() -> str:
    """The directory of kernels/*.cu: the installed package ``fastconv.kernels`` (setup.py maps the
    repository's top-level kernels/ there), or, in a source checkout that was never installed, kernels/
    beside the package."""
    try:
        from importlib import resources
        return str(resources.files("fastconv.kernels"))
    except ModuleNotFoundError:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return os.path.join(here, "kernels")


# ---------------------------------------------------------------------------------------------------
# Parameter structs (twins of kernels/common.cuh; same names, same order, all int32)
# ---------------------------------------------------------------------------------------------------
CONV_PARAMS_FIELDS = ("N", "C", "H", "W", "K", "R", "S", "P", "Q", "stride_h", "stride_w",
                      "pad_top", "pad_bottom", "pad_left", "pad_right", "dil_h", "dil_w",
                      "groups", "C_per_group", "K_per_group", "has_bias")
POOL_PARAMS_FIELDS = ("N", "C", "H", "W", "R", "S", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w",
                      "dil_h", "dil_w", "is_adaptive", "count_include_pad", "divisor_override",
                      "return_indices")
CONV_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in CONV_PARAMS_FIELDS], align=True)
POOL_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in POOL_PARAMS_FIELDS], align=True)


def _struct(spec, fields, dtype) -> np.ndarray:
    """A 0-d structured array: CuPy passes a size-one NumPy array by value (it rejects ``np.void``
    scalars), and the emulator takes it too."""
    values = []
    for f in fields:
        v = getattr(spec, f)
        values.append(0 if v is None else int(v))  # divisor_override None -> 0 ("none"); bools -> 0/1
    return np.array(tuple(values), dtype=dtype)


def conv_params(spec) -> np.ndarray:
    """The ``ConvParams`` struct for ``spec``."""
    return _struct(spec, CONV_PARAMS_FIELDS, CONV_PARAMS_DTYPE)


def pool_params(spec) -> np.ndarray:
    """The ``PoolParams`` struct for ``spec`` (divisor_override 0 means none)."""
    return _struct(spec, POOL_PARAMS_FIELDS, POOL_PARAMS_DTYPE)


def _field_overflow(spec, fields) -> List[str]:
    big = [f for f in fields if int(getattr(spec, f) or 0) > INT32_MAX]
    return [f"{', '.join(big)} exceed the kernels' 32-bit parameter fields"] if big else []


# ---------------------------------------------------------------------------------------------------
# Types and name expressions
# ---------------------------------------------------------------------------------------------------
C_TYPES = {"float16": "__half", "float32": "float", "float64": "double"}
INDEX_TYPES = ("int", "long long")

#: private knob for tests: launch the int64-index instantiations even for small problems
_force_index64 = False


def index_type(spec) -> str:
    """``int`` unless some buffer of the problem can hold more than 2^31 - 1 elements."""
    return "long long" if (spec.needs_64bit_indexing or _force_index64) else "int"


def name_expression(kernel: str, ctype: str, itype: str, tile: Sequence[int] = ()) -> str:
    """``kernel<ctype, itype[, tile...]>``, the spelling both CuPy's RawModule and the emulator take."""
    return f"{kernel}<{', '.join([ctype, itype] + [str(t) for t in tile])}>"


# Tile shapes of the tiled kernels: the only place they are written down.
#: conv2d_direct_v2<T, I, TILE_P, TILE_Q, K_TILE, C_TILE>: block TILE_Q x TILE_P threads
DIRECT_V2_TILE = (8, 16, 8, 4)
#: conv_gemm_v2<T, I, BM, BN, BK, TM, TN>: (BM/TM) * (BN/TN) threads
GEMM_V2_TILE = (64, 64, 8, 4, 4)
#: conv_implicit_gemm_v1<T, I, BM, BN, BK, TM, TN, MINB>: (BM/TM) * (BN/TN) threads, __launch_bounds__
#: minimum MINB blocks per SM (caps registers at 64K / (MINB * threads)). Several block tiles, because the
#: best one depends on the problem (a 128x128 tile leaves most SMs idle on a 7x7 layer); the cuda backend
#: times them per spec and device (algo="auto" or "implicit_gemm"), and the first is the default when
#: autotuning is off.
IGEMM_TILES: Dict[str, Tuple[int, ...]] = {
    "128x128": (128, 128, 8, 8, 8, 1),
    "128x64": (128, 64, 8, 8, 4, 2),
    "64x128": (64, 128, 8, 4, 8, 2),
    "64x64": (64, 64, 8, 4, 4, 3),
}
#: split-K variants "<tile>-k<splits>": GEMM_K cut in `splits` chunks (grid y), partial sums reduced in order
IGEMM_SPLITS = {"128x64": (2, 4), "64x64": (2, 4)}
#: depthwise_v1<T, I, PPT, FR, FS, FSTRIDE>: PPT output rows per thread; a filter size and stride fixed at
#: compile time (dilation 1; the MobileNet layers), or (0, 0, 0) for any filter, stride and dilation
DEPTHWISE_TILES: Dict[str, Tuple[int, ...]] = {"any": (4, 0, 0, 0), "3x3s1": (4, 3, 3, 1), "3x3s2": (4, 3, 3, 2)}
#: depthwise_v1 geometry: items (PPT outputs of one column) per block aimed at, items per thread, widest tile
DEPTHWISE_ITEMS, DEPTHWISE_ITEMS_PER_THREAD, DEPTHWISE_MAX_TILE_Q = 512, 2, 128
#: max_pool2d_v2 / avg_pool2d_v2<T, I, OPT, PAIR>: OPT outputs per thread; PAIR = 1 for width-2 stride-2 rows
POOL_V2_TILES: Dict[str, Tuple[int, ...]] = {"any": (4, 0), "pair": (4, 1)}
#: threads per block of the one-thread-per-output kernels
BLOCK_1D = 256
#: dynamic shared memory a block may use without an opt-in attribute (every architecture we claim)
MAX_DYNAMIC_SMEM = 48 * 1024
MAX_GRID_X = INT32_MAX

#: kernel file -> kernels in it and their tile shapes (versions the backends can launch)
KERNELS: Dict[str, Tuple[Tuple[str, Tuple[int, ...]], ...]] = {
    "conv2d_direct.cu": (("conv2d_direct_v1", ()), ("conv2d_direct_v2", DIRECT_V2_TILE)),
    "im2col_gemm.cu": (("im2col_v1", ()), ("conv_gemm_v1", ()), ("conv_gemm_v2", GEMM_V2_TILE)),
    "pool.cu": (("max_pool2d_v1", ()), ("avg_pool2d_v1", ()))
               + tuple((k, t) for k in ("max_pool2d_v2", "avg_pool2d_v2") for t in POOL_V2_TILES.values())
               + (("max_pool2d_global_v2", ()), ("avg_pool2d_global_v2", ())),
    "depthwise.cu": tuple(("depthwise_v1", t) for t in DEPTHWISE_TILES.values()),
    "conv_implicit_gemm.cu": tuple(("conv_implicit_gemm_v1", t) for t in IGEMM_TILES.values())
    + (("splitk_reduce_v1", ()),),
}

#: the versions that ship (what algo="direct" / "im2col" run); the others are kept for teaching and tests
SHIPPED_VERSIONS = {"direct": 2, "im2col": 2, "implicit_gemm": 1, "depthwise": 1, "pool": 2}

#: the launch variants (tile shapes) of an algorithm, in default order; algorithms with one variant have ()
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "implicit_gemm": tuple(IGEMM_TILES) + tuple(f"{t}-k{k}" for t, ks in IGEMM_SPLITS.items() for k in ks)}


def variants(algo: str) -> Tuple[str, ...]:
    return VARIANTS.get(algo, ())


def kernel_file(kernel: str) -> str:
    for fname, kernels in KERNELS.items():
        if any(k == kernel for k, _ in kernels):
            return fname
    raise KeyError(kernel)


#: kernels instantiated for some storage dtypes only (the others: every dtype of C_TYPES). The implicit GEMM
#: is the fast path for float32 and float16 storage; float64 runs im2col/direct (a 64-wide register tile of
#: doubles would also cost the most compile time of any kernel)
KERNEL_DTYPES: Dict[str, Tuple[str, ...]] = {"conv_implicit_gemm_v1": ("float16", "float32"),
                                             "splitk_reduce_v1": ("float16", "float32")}


def kernel_dtypes(kernel: str) -> Tuple[str, ...]:
    return KERNEL_DTYPES.get(kernel, tuple(C_TYPES))


def name_expressions(fname: str, dtypes: Sequence[str] = tuple(C_TYPES)) -> Tuple[str, ...]:
    """Every instantiation of every kernel in ``fname`` the launcher can ask for (for ``dtypes``)."""
    return tuple(name_expression(k, C_TYPES[dt], it, tile)
                 for k, tile in KERNELS[fname] for dt in dtypes if dt in kernel_dtypes(k) for it in INDEX_TYPES)


_DTYPE_OF_CTYPE = {c: d for d, c in C_TYPES.items()}


def dtype_of(expr: str) -> str:
    """The storage dtype of a name expression (its first template argument)."""
    return _DTYPE_OF_CTYPE[expr.split("<", 1)[1].split(",", 1)[0].strip()]


def _tile(kernel: str) -> Tuple[int, ...]:
    return dict(KERNELS[kernel_file(kernel)])[kernel]


def block_shape(kernel: str, tile: Sequence[int] = ()) -> Tuple[int, int, int]:
    """Threads per block of ``kernel`` (a bare kernel name, without template arguments; ``tile`` for the
    kernels that come in several tile shapes)."""
    if kernel == "conv_implicit_gemm_v1":
        bm, bn, _, tm, tn = tile[:5]
        return ((bm // tm) * (bn // tn), 1, 1)
    if kernel == "conv2d_direct_v2":
        tp, tq = DIRECT_V2_TILE[:2]
        return (tq, tp, 1)
    if kernel == "conv_gemm_v2":
        bm, bn, _, tm, tn = GEMM_V2_TILE
        return ((bm // tm) * (bn // tn), 1, 1)
    return (BLOCK_1D, 1, 1)


# ---------------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ref:
    """A named buffer in a plan's argument list ("x", "w", "b", "y", "indices", "col", ...)."""
    name: str


@dataclasses.dataclass(frozen=True)
class Buffer:
    name: str
    shape: Tuple[int, ...]
    dtype: str  # a NumPy dtype name


@dataclasses.dataclass(frozen=True)
class Launch:
    file: str
    kernel: str          # the name expression
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    shared_mem: int
    args: Tuple[Union[Ref, np.generic, np.ndarray], ...]  # buffers, scalars, 0-d param structs


@dataclasses.dataclass(frozen=True)
class Plan:
    buffers: Tuple[Buffer, ...]     # allocated by the backend (uninitialised) before the launches
    launches: Tuple[Launch, ...]
    results: Tuple[str, ...]        # returned: one name -> an array, several -> a tuple

    def reasons(self) -> List[str]:
        """Why this plan cannot launch (grid or shared memory beyond what every claimed GPU allows)."""
        out = []
        for L in self.launches:
            if L.grid[0] > MAX_GRID_X:
                out.append(f"{L.kernel.split('<')[0]} needs {L.grid[0]} blocks, more than the grid allows "
                           f"({MAX_GRID_X})")
            if L.shared_mem > MAX_DYNAMIC_SMEM:
                out.append(f"{L.kernel.split('<')[0]} needs {L.shared_mem} bytes of shared memory per block "
                           f"(more than {MAX_DYNAMIC_SMEM}); the filter, stride or dilation is too large for "
                           f"its input tile")
        return out


def _blocks(total: int, per_block: int) -> int:
    return max(1, -(-total // per_block))


def _itemsize_acc(dtype: str) -> int:
    """Bytes of the accumulation type kernels stage in shared memory (float for float16)."""
    return 8 if dtype == "float64" else 4


def conv_plan(spec, algo: str, version: Optional[int] = None, variant: Optional[str] = None) -> Plan:
    """The launches computing ``y = conv(x, w, b)`` with ``algo`` ("direct" or "im2col").

    ``version`` picks a kernel version (default: the shipped one): direct v1 (naive) / v2 (tiled);
    im2col with GEMM v1 (naive) / v2 (tiled); implicit_gemm v1, whose ``variant`` names a tile of
    :data:`IGEMM_TILES` (default: the first).
    """
    version = SHIPPED_VERSIONS[algo] if version is None else version
    T, it, dt = C_TYPES[spec.dtype], index_type(spec), spec.dtype
    params = conv_params(spec)
    bias = Ref("b") if spec.has_bias else Ref("bias_dummy")
    buffers = [Buffer("y", spec.output_shape4, dt)]
    if not spec.has_bias:
        buffers.append(Buffer("bias_dummy", (1,), dt))
    out_elems = spec.N * spec.K * spec.P * spec.Q
    launches = []
    if algo == "direct" and version == 1:
        launches.append(Launch("conv2d_direct.cu", name_expression("conv2d_direct_v1", T, it), (
            _blocks(out_elems, BLOCK_1D), 1, 1), block_shape("conv2d_direct_v1"), 0,
            (params, Ref("x"), Ref("w"), bias, Ref("y"))))
    elif algo == "direct" and version == 2:
        tp, tq, kt, ct = tile = _tile("conv2d_direct_v2")
        patch_h = (tp - 1) * spec.stride_h + (spec.R - 1) * spec.dil_h + 1
        patch_w = (tq - 1) * spec.stride_w + (spec.S - 1) * spec.dil_w + 1
        smem = ct * (patch_h * patch_w + kt * spec.R * spec.S) * _itemsize_acc(dt)
        nblocks = (spec.N * spec.groups * _blocks(spec.K_per_group, kt) * _blocks(spec.P, tp)
                   * _blocks(spec.Q, tq))
        launches.append(Launch("conv2d_direct.cu", name_expression("conv2d_direct_v2", T, it, tile),
                               (nblocks, 1, 1), block_shape("conv2d_direct_v2"), smem,
                               (params, np.int32(patch_h), np.int32(patch_w), Ref("x"), Ref("w"), bias,
                                Ref("y"))))
    elif algo == "im2col" and version in (1, 2):
        npq = spec.N * spec.P * spec.Q
        buffers.append(Buffer("col", (spec.C * spec.R * spec.S, npq), dt))
        launches.append(Launch("im2col_gemm.cu", name_expression("im2col_v1", T, it),
                               (_blocks(spec.C * spec.R * spec.S * npq, BLOCK_1D), 1, 1), block_shape("im2col_v1"), 0,
                               (params, Ref("x"), Ref("col"))))
        gemm_args = (params, Ref("w"), Ref("col"), bias, Ref("y"))
        if version == 1:
            launches.append(Launch("im2col_gemm.cu", name_expression("conv_gemm_v1", T, it),
                                   (_blocks(out_elems, BLOCK_1D), 1, 1), block_shape("conv_gemm_v1"), 0, gemm_args))
        else:
            bm, bn, bk, tm, tn = tile = _tile("conv_gemm_v2")
            nblocks = spec.groups * _blocks(spec.K_per_group, bm) * _blocks(npq, bn)
            launches.append(Launch("im2col_gemm.cu", name_expression("conv_gemm_v2", T, it, tile),
                                   (nblocks, 1, 1), block_shape("conv_gemm_v2"), 0, gemm_args))
    elif algo == "implicit_gemm" and version == 1:
        variant = variant or VARIANTS["implicit_gemm"][0]
        if variant not in VARIANTS["implicit_gemm"]:
            raise ValueError(f"implicit_gemm variant must be one of {', '.join(VARIANTS['implicit_gemm'])}, "
                             f"got {variant!r}")
        tname, _, ks = variant.partition("-k")
        tile = IGEMM_TILES[tname]
        bm, bn, bk = tile[:3]
        kd = spec.C_per_group * spec.R * spec.S
        steps = _blocks(kd, bk)
        chunk_steps = _blocks(steps, int(ks or 1))
        splits = _blocks(steps, chunk_steps)  # no empty split
        acc_dt = "float32" if dt == "float16" else dt
        if splits * out_elems > INT32_MAX:  # the split-K workspace is the biggest buffer: index it in 64 bits
            it = "long long"
        if splits > 1:
            buffers.append(Buffer("partial", (splits * out_elems,), acc_dt))
        else:
            buffers.append(Buffer("partial_dummy", (1,), acc_dt))
        nblocks = spec.groups * _blocks(spec.N * spec.P * spec.Q, bm) * _blocks(spec.K_per_group, bn)
        launches.append(Launch("conv_implicit_gemm.cu", name_expression("conv_implicit_gemm_v1", T, it, tile),
                               (nblocks, splits, 1), block_shape("conv_implicit_gemm_v1", tile), 0,
                               (params, np.int32(chunk_steps * bk), Ref("x"), Ref("w"), bias, Ref("y"),
                                Ref("partial" if splits > 1 else "partial_dummy"))))
        if splits > 1:
            launches.append(Launch("conv_implicit_gemm.cu", name_expression("splitk_reduce_v1", T, it),
                                   (_blocks(out_elems, BLOCK_1D), 1, 1), block_shape("splitk_reduce_v1"), 0,
                                   (params, np.int32(splits), Ref("partial"), bias, Ref("y"))))
    elif algo == "depthwise" and version == 1:
        if spec.C_per_group != 1:
            raise ValueError(f"depthwise needs one input channel per group, got C/groups = {spec.C_per_group}")
        tile = DEPTHWISE_TILES[depthwise_variant(spec)]
        tile_p, tile_q, planes, patch_h, patch_w, smem, threads = _depthwise_geometry(spec)
        nblocks = _blocks(spec.N * spec.K, planes) * _blocks(spec.P, tile_p) * _blocks(spec.Q, tile_q)
        launches.append(Launch("depthwise.cu", name_expression("depthwise_v1", T, it, tile), (nblocks, 1, 1),
                               (threads, 1, 1), smem,
                               (params, np.int32(tile_p), np.int32(tile_q), np.int32(planes), np.int32(patch_h),
                                np.int32(patch_w), Ref("x"), Ref("w"), bias, Ref("y"))))
    else:
        raise ValueError(f"no conv kernel for algo={algo!r} version={version!r}")
    return Plan(tuple(buffers), tuple(launches), ("y",))


def depthwise_variant(spec) -> str:
    """The depthwise_v1 instantiation for ``spec``: a fixed 3x3 filter and stride when the spec has exactly
    those (and dilation 1), else the one for any filter."""
    if (spec.R, spec.S, spec.dil_h, spec.dil_w) == (3, 3, 1, 1) and spec.stride_h == spec.stride_w \
            and f"3x3s{spec.stride_h}" in DEPTHWISE_TILES:
        return f"3x3s{spec.stride_h}"
    return "any"


def _depthwise_tile(spec) -> Tuple[int, int]:
    """depthwise_v1's output tile (tile_p, tile_q), without the int32 scalars of a plan."""
    return _depthwise_geometry(spec)[:2]


def _depthwise_geometry(spec):
    """depthwise_v1's tile: (tile_p, tile_q, planes, patch_h, patch_w, shared bytes, threads).

    A tile row is the whole output row (split evenly when wider than DEPTHWISE_MAX_TILE_Q); rows are added
    (PPT at a time) up to DEPTHWISE_ITEMS items, split evenly over the plane; when one tile is the whole
    plane, a block takes several planes to reach DEPTHWISE_ITEMS. If the patches do not fit shared memory,
    the tile shrinks (planes, then rows, then columns); what still does not fit is refused by Plan.reasons.
    """
    ppt = DEPTHWISE_TILES["any"][0]
    acc = _itemsize_acc(spec.dtype)
    tiles_q = _blocks(spec.Q, DEPTHWISE_MAX_TILE_Q)
    tile_q = _blocks(spec.Q, tiles_q)
    groups_full = _blocks(spec.P, ppt)
    groups = max(1, min(groups_full, DEPTHWISE_ITEMS // tile_q))
    groups = _blocks(groups_full, _blocks(groups_full, groups))           # balanced over the plane
    planes = 1
    if groups == groups_full and tile_q == spec.Q:
        planes = max(1, min(spec.N * spec.K, DEPTHWISE_ITEMS // (groups * tile_q)))

    def patch(groups, tile_q):
        return ((groups * ppt - 1) * spec.stride_h + (spec.R - 1) * spec.dil_h + 1,
                (tile_q - 1) * spec.stride_w + (spec.S - 1) * spec.dil_w + 1)

    def smem(planes, groups, tile_q):
        ph, pw = patch(groups, tile_q)
        return planes * (ph * pw + spec.R * spec.S) * acc

    while smem(planes, groups, tile_q) > MAX_DYNAMIC_SMEM:
        if planes > 1:
            planes = _blocks(planes, 2)
        elif groups > 1:
            groups = _blocks(groups, 2)
        elif tile_q > 1:
            tile_q = _blocks(tile_q, 2)
        else:
            break
    items = planes * groups * tile_q
    threads = min(BLOCK_1D, 32 * _blocks(_blocks(items, DEPTHWISE_ITEMS_PER_THREAD), 32))
    ph, pw = patch(groups, tile_q)
    return groups * ppt, tile_q, planes, ph, pw, smem(planes, groups, tile_q), threads


def conv_reasons(spec, algo: str) -> List[str]:
    """Why the shipped ``algo`` kernels cannot run ``spec`` (empty when they can). Never raises: the
    32-bit limits are checked before a plan (whose int32 scalars they bound) is built."""
    reasons = _field_overflow(spec, CONV_PARAMS_FIELDS)
    if algo == "depthwise" and spec.C_per_group != 1:
        return reasons + [f"depthwise needs one input channel per group (groups == C); this problem has "
                          f"C/groups = {spec.C_per_group} (C = {spec.C}, groups = {spec.groups})"]
    if algo == "implicit_gemm":
        reasons += _implicit_gemm_limits(spec)
    elif algo == "direct":
        tp, tq, kt, ct = DIRECT_V2_TILE
        reasons += _reach_limits(spec, spec.P, spec.Q, spec.R, spec.S, tp, tq, "conv2d_direct_v2")
        reasons += _count_limits({"K/groups": (spec.K_per_group, kt), "C/groups": (spec.C_per_group, ct)},
                                 "conv2d_direct_v2")
    elif algo == "im2col":
        bk = GEMM_V2_TILE[2]
        reasons += _reach_limits(spec, spec.P, spec.Q, spec.R, spec.S, 1, 1, "im2col_v1")
        reasons += _count_limits({"GEMM_K = C/groups*R*S": (spec.C_per_group * spec.R * spec.S, bk)}, "conv_gemm_v2")
    elif algo == "depthwise":
        reasons += _reach_limits(spec, spec.P, spec.Q, spec.R, spec.S, *_depthwise_tile(spec), "depthwise_v1")
    return reasons or conv_plan(spec, algo).reasons()


def _reach_limits(spec, P, Q, R, S, tile_p, tile_q, kernel) -> List[str]:
    """The row and column coordinates a kernel keeps in 32-bit ints (output positions counted in whole
    tiles, and input coordinates up to one past the last tap of the last tile's last output, padding
    included) must fit: a refusal for absurd extents (a single row of ~2^31 elements) that spares the
    kernels 64-bit coordinate arithmetic."""
    out = []
    for axis, o, tile, stride, k, dil in (("row", P, tile_p, spec.stride_h, R, spec.dil_h),
                                          ("column", Q, tile_q, spec.stride_w, S, spec.dil_w)):
        last = _blocks(o, tile) * tile - 1                    # the last output position of the last tile
        reach = max(o + tile - 1, last * stride + (k - 1) * dil + 1)
        if reach > INT32_MAX:
            out.append(f"{kernel} forms {axis} coordinates up to {reach} (outputs in tiles of {tile}, stride "
                       f"{stride}, filter reach {(k - 1) * dil + 1}), beyond its 32-bit ints")
    return out


def _count_limits(counts: Dict[str, Tuple[int, int]], kernel) -> List[str]:
    """Loop counts a kernel walks in whole tiles of 32-bit ints: each rounded up to its tile must fit."""
    return [f"{name} = {n} rounded up to {kernel}'s tile of {tile} is beyond its 32-bit counters"
            for name, (n, tile) in counts.items() if n + tile - 1 > INT32_MAX]


def _implicit_gemm_limits(spec) -> List[str]:
    """Extents conv_implicit_gemm_v1 keeps in 32-bit ints whatever the index type (its GEMM_K and GEMM_N
    counters, the position inside one output plane, padded input coordinates), with room for a tile."""
    out = []
    kd = spec.C_per_group * spec.R * spec.S
    if kd >= 2**30:
        out.append(f"GEMM_K = C/groups*R*S = {kd} taps per output is beyond the kernel's 32-bit k counters (< 2^30)")
    if spec.K_per_group >= 2**30:
        out.append(f"K/groups = {spec.K_per_group} is beyond the kernel's 32-bit n counters (< 2^30)")
    if spec.P * spec.Q > INT32_MAX:
        out.append(f"one output plane holds {spec.P * spec.Q} positions, more than a 32-bit int")
    if spec.H + spec.pad_top + spec.pad_bottom >= INT32_MAX or spec.W + spec.pad_left + spec.pad_right >= INT32_MAX:
        out.append("a padded input extent reaches 2^31 - 1, beyond the kernel's 32-bit coordinates")
    return out


def pool_path(spec) -> str:
    """Which v2 pool kernel runs ``spec``, by exact predicates on it: "global" when every window is the
    whole plane, "pair" when every window row is two adjacent taps at stride 2 with no horizontal padding
    (W even), else "any"."""
    if spec.P == 1 and spec.Q == 1 and (spec.is_adaptive or (
            (spec.R, spec.S) == (spec.H, spec.W) and spec.pad_h == spec.pad_w == 0 and spec.dil_h == spec.dil_w == 1)):
        return "global"
    if not spec.is_adaptive and spec.S == spec.stride_w == 2 and spec.pad_w == 0 and spec.dil_w == 1 \
            and spec.W % 2 == 0:
        return "pair"
    return "any"


def pool_plan(spec, version: Optional[int] = None, path: Optional[str] = None) -> Plan:
    """The launch computing a pool (max kinds also write int64 indices when ``spec.return_indices``).

    ``version`` 1: one thread per output; 2 (shipped): the kernel :func:`pool_path` names, or ``path``
    ("any" runs every spec; "pair" and "global" only those pool_path gives them).
    """
    version = SHIPPED_VERSIONS["pool"] if version is None else version
    T, it, dt = C_TYPES[spec.dtype], index_type(spec), spec.dtype
    params = pool_params(spec)
    total = spec.N * spec.C * spec.P * spec.Q
    kind = "max_pool2d" if spec.is_max else "avg_pool2d"
    if version == 1:
        kernel, tile, grid = f"{kind}_v1", (), (_blocks(total, BLOCK_1D), 1, 1)
    elif version == 2:
        path = path or pool_path(spec)
        if path not in ("any", pool_path(spec)):
            raise ValueError(f"pool path {path!r} does not apply to this spec ({pool_path(spec)!r} does)")
        if path == "global":
            kernel, tile, grid = f"{kind}_global_v2", (), (_blocks(spec.N * spec.C, BLOCK_1D // 32), 1, 1)
            if spec.H * spec.W + 31 > INT32_MAX:  # a lane's plane index steps 32 past the end of the plane
                it = "long long"
        else:
            kernel, tile = f"{kind}_v2", POOL_V2_TILES[path]
            grid = (_blocks(total, tile[0] * BLOCK_1D), 1, 1)
            if total + tile[0] * BLOCK_1D > INT32_MAX:  # a thread's last output index passes the end
                it = "long long"
    else:
        raise ValueError(f"no pool kernel version {version!r}")
    block = (BLOCK_1D, 1, 1)
    buffers = [Buffer("y", spec.output_shape4, dt)]
    args = (params, Ref("x"), Ref("y"))
    results = ("y",)
    if spec.is_max:
        idx = "indices" if spec.return_indices else "indices_dummy"
        buffers.append(Buffer(idx, spec.output_shape4 if spec.return_indices else (1,), "int64"))
        args += (Ref(idx),)
        results = ("y", "indices") if spec.return_indices else ("y",)
    launch = Launch("pool.cu", name_expression(kernel, T, it, tile), grid, block, 0, args)
    return Plan(tuple(buffers), (launch,), results)


def pool_reasons(spec) -> List[str]:
    reasons = _field_overflow(spec, POOL_PARAMS_FIELDS)
    if not reasons and not spec.is_adaptive:  # adaptive windows lie inside the input
        reasons = _reach_limits(spec, spec.P, spec.Q, spec.R, spec.S, 1, 1, "the pool kernels")
    return reasons or pool_plan(spec).reasons()


# ---------------------------------------------------------------------------------------------------
# Running a plan
# ---------------------------------------------------------------------------------------------------
def execute(plan: Plan, inputs: Dict[str, object], empty: Callable, launch: Callable,
            dummy: Optional[Callable] = None):
    """Allocate the plan's buffers with ``empty(shape, dtype)``, run each launch through
    ``launch(Launch, args)`` (args with every :class:`Ref` replaced by its array) and return the results.
    Buffers named ``*_dummy`` stand for pointers the kernels never touch (no bias, no split-K workspace, no
    indices); a backend may pass ``dummy(shape, dtype)`` to hand out one shared buffer for them."""
    bufs = dict(inputs)
    for b in plan.buffers:
        bufs[b.name] = (dummy or empty)(b.shape, b.dtype) if b.name.endswith("_dummy") else empty(b.shape, b.dtype)
    for L in plan.launches:
        launch(L, tuple(bufs[a.name] if isinstance(a, Ref) else a for a in L.args))
    out = tuple(bufs[n] for n in plan.results)
    return out if len(out) > 1 else out[0]


OPS = ("conv", "max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool")
#: dtypes every kernel handles natively (float16 storage, float32 accumulation)
DTYPES = tuple(C_TYPES)


def nonfinite_weight_meets_padding(spec, w) -> bool:
    """A padded problem whose weights hold Inf or NaN (NumPy or CuPy ``w``; one reduction, only when padded)."""
    return spec.is_padded and not bool(np.isfinite(w).all())


_impl_lists: Dict[tuple, list] = {}


def implementations(backend: str, run: Callable):
    """The Impl list both CUDA backends expose: ``run(spec, algo, *arrays)`` runs the shipped kernels.
    Built once per backend (dispatch asks for it on every call)."""
    impls = _impl_lists.get((backend, run))
    if impls is None:
        impls = _impl_lists[(backend, run)] = _build_implementations(backend, run)
    return impls


def _build_implementations(backend: str, run: Callable):
    from .._dispatch import FunctionImpl

    def conv_impl(algo, dtypes=DTYPES):
        def fn(spec, *arrays):
            if algo == "im2col" and nonfinite_weight_meets_padding(spec, arrays[1]) \
                    and not conv_reasons(spec, "direct"):
                # the column matrix holds explicit zeros in the padding and Inf * 0 is NaN; fastconv's rule
                # is that padded taps contribute nothing, which the direct kernel keeps (as numba does)
                return run(spec, "direct", *arrays)
            return run(spec, algo, *arrays)
        return FunctionImpl(backend, "conv", algo, fn, reasons=_memo(lambda spec: conv_reasons(spec, algo)),
                            dtypes=dtypes)

    # priority order (algo="auto" without measuring takes the first that supports the spec)
    impls = [conv_impl("implicit_gemm", kernel_dtypes("conv_implicit_gemm_v1")), conv_impl("im2col"),
             conv_impl("direct")]
    impls.insert(0, conv_impl("depthwise"))  # specialised: first for the specs it takes (groups == C)
    for op in OPS[1:]:
        impls.append(FunctionImpl(backend, op, "direct", lambda spec, *a: run(spec, "direct", *a),
                                  reasons=_memo(pool_reasons), dtypes=DTYPES))
    return impls


def _memo(reasons: Callable) -> Callable:
    """``reasons(spec)`` remembered per spec (and index-width knob): it builds a plan, and dispatch asks on
    every call. Bounded; a plain dict is safe under the GIL (a race only computes an entry twice)."""
    memo: Dict[tuple, List[str]] = {}

    def cached(spec):
        key = (spec, _force_index64)
        r = memo.get(key)
        if r is None:
            if len(memo) >= 4096:
                memo.clear()
            r = memo[key] = list(reasons(spec))
        return list(r)
    return cached


def plan_for(spec, algo: str = "direct", version: Optional[int] = None, variant: Optional[str] = None) -> Plan:
    return conv_plan(spec, algo, version, variant) if spec.op == "conv" else pool_plan(spec, version)


def inputs_for(spec, arrays) -> Dict[str, object]:
    """Name the arrays functional.py passes: conv (x, w, b-or-None), pools (x,)."""
    if spec.op == "conv":
        x, w, b = (tuple(arrays) + (None,))[:3]
        named = {"x": x, "w": w}
        if b is not None:
            named["b"] = b
        return named
    return {"x": arrays[0]}

