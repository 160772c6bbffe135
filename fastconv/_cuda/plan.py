"""What every CUDA kernel family shares: parameter structs, index width, name expressions, launch plans.

A family module (see :mod:`fastconv._cuda`) turns a spec into a :class:`Plan`: buffers to allocate and
:class:`Launch` es over named buffers (:class:`Ref`). A backend ("cuda" with CuPy, "cuda-emu" with the
emulator) executes a plan through :func:`execute` with its own allocator and kernel loader; it never
looks inside a family.

- The parameter structs passed by value (``ConvParams``, ``Conv3dParams``, ``PoolParams`` in kernels/common.cuh)
  are built field by field from the spec attributes of the same names, as 0-d NumPy structured arrays (what
  both CuPy and the emulator take for a struct-by-value parameter); tests/cuda/test_params.py checks the
  layout against C++ (tests/cuda/test_conv3d.py for Conv3dParams).
- The index type is chosen per call (``int``, or ``long long`` when ``spec.needs_64bit_indexing``), as
  CuPy's ndimage does; a family widens one launch on its own where that launch's indices need it.
- Tile shapes live in the family modules and reach CUDA only as template arguments of the kernel's name
  expression (``conv_gemm_v2<float, int, 64, 64, 8, 4, 4>``), so no constant has two homes.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._spec import INT32_MAX, input_extent

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
POOL_PARAMS_FIELDS = ("N", "C", "D", "H", "W", "T", "R", "S", "Z", "P", "Q", "stride_d", "stride_h", "stride_w",
                      "pad_front", "pad_back", "pad_top", "pad_bottom", "pad_left", "pad_right",
                      "dil_d", "dil_h", "dil_w", "is_adaptive", "count_include_pad", "divisor_override",
                      "return_indices")
#: 3-D convolutions (``spec.is_3d``): the same letters with depth (D, T, Z, stride_d, pad_front/back, dil_d)
CONV3D_PARAMS_FIELDS = ("N", "C", "D", "H", "W", "K", "T", "R", "S", "Z", "P", "Q",
                        "stride_d", "stride_h", "stride_w", "pad_front", "pad_back", "pad_top", "pad_bottom",
                        "pad_left", "pad_right", "dil_d", "dil_h", "dil_w",
                        "groups", "C_per_group", "K_per_group", "has_bias")
CONV_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in CONV_PARAMS_FIELDS], align=True)
POOL_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in POOL_PARAMS_FIELDS], align=True)
CONV3D_PARAMS_DTYPE = np.dtype([(f, np.int32) for f in CONV3D_PARAMS_FIELDS], align=True)


#: the range of the kernels' 32-bit fields (every field of a parameter struct is an int32)
INT32_MIN = -INT32_MAX - 1


def _field_values(spec, fields) -> Dict[str, int]:
    """The struct fields of ``spec`` as ints (divisor_override None -> 0, "none"; bools -> 0/1)."""
    return {f: 0 if getattr(spec, f) is None else int(getattr(spec, f)) for f in fields}


def int32_overflow(spec, fields) -> List[str]:
    """Why ``spec``'s values of ``fields`` cannot be packed in 32-bit fields: each value outside
    [-2^31, 2^31 - 1], either side (a negative divisor_override can pass the lower bound), named with its
    value. Every family's reasons start with this for every field its struct packs."""
    bad = [f"{f} = {v}" for f, v in _field_values(spec, fields).items() if not INT32_MIN <= v <= INT32_MAX]
    return [f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} beyond the kernels' 32-bit parameter fields"] \
        if bad else []


def _struct(spec, fields, dtype) -> np.ndarray:
    """A 0-d structured array: CuPy passes a size-one NumPy array by value (it rejects ``np.void``
    scalars), and the emulator takes it too. A value beyond 32 bits is a ValueError naming the field (the
    families refuse such specs first, through :func:`int32_overflow`), never NumPy's OverflowError."""
    why = int32_overflow(spec, fields)
    if why:
        raise ValueError(why[0])
    return np.array(tuple(_field_values(spec, fields).values()), dtype=dtype)


def conv_params(spec) -> np.ndarray:
    """The ``ConvParams`` struct for ``spec``."""
    return _struct(spec, CONV_PARAMS_FIELDS, CONV_PARAMS_DTYPE)


def conv3d_params(spec) -> np.ndarray:
    """The ``Conv3dParams`` struct for a 3-D ``spec`` (conv, conv_input or conv_weight)."""
    return _struct(spec, CONV3D_PARAMS_FIELDS, CONV3D_PARAMS_DTYPE)


def pool_params(spec) -> np.ndarray:
    """The ``PoolParams`` struct for ``spec`` (divisor_override 0 means none)."""
    return _struct(spec, POOL_PARAMS_FIELDS, POOL_PARAMS_DTYPE)


def params_fields(spec) -> Tuple[str, ...]:
    from .._spec import ConvSpec
    if isinstance(spec, ConvSpec):
        return CONV3D_PARAMS_FIELDS if spec.is_3d else CONV_PARAMS_FIELDS
    return POOL_PARAMS_FIELDS


# ---------------------------------------------------------------------------------------------------
# Types and name expressions
# ---------------------------------------------------------------------------------------------------
C_TYPES = {"float16": "__half", "float32": "float", "float64": "double"}
INDEX_TYPES = ("int", "long long")
_DTYPE_OF_CTYPE = {c: d for d, c in C_TYPES.items()}

#: private knob for tests: launch the int64-index instantiations even for small problems
_force_index64 = False


def index_type(spec) -> str:
    """``int`` unless some buffer of the problem can hold more than 2^31 - 1 elements."""
    return "long long" if (spec.needs_64bit_indexing or _force_index64) else "int"


def name_expression(kernel: str, ctype: str, itype: str, tile: Sequence[int] = ()) -> str:
    """``kernel<ctype, itype[, tile...]>``, the spelling both CuPy's RawModule and the emulator take."""
    return f"{kernel}<{', '.join([ctype, itype] + [str(t) for t in tile])}>"


def dtype_of(expr: str) -> str:
    """The storage dtype of a name expression (its first template argument)."""
    return _DTYPE_OF_CTYPE[expr.split("<", 1)[1].split(",", 1)[0].strip()]


#: threads per block of the one-thread-per-output kernels
BLOCK_1D = 256


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One templated kernel of a family file: its name, a tile (template arguments after T and I), the
    storage dtypes it is instantiated for, and its block of threads (for kernels whose block a plan sizes
    per problem, the largest it uses: what register and occupancy budgets are computed for)."""
    name: str
    tile: Tuple[int, ...] = ()
    dtypes: Tuple[str, ...] = tuple(C_TYPES)
    block: Tuple[int, int, int] = (BLOCK_1D, 1, 1)

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]

    def expressions(self, dtypes: Sequence[str] = tuple(C_TYPES)) -> Tuple[str, ...]:
        return tuple(name_expression(self.name, C_TYPES[dt], it, self.tile)
                     for dt in dtypes if dt in self.dtypes for it in INDEX_TYPES)

    def expr(self, spec, itype: Optional[str] = None) -> str:
        return name_expression(self.name, C_TYPES[spec.dtype], itype or index_type(spec), self.tile)


def register_tiled_block(bm: int, bn: int, tm: int, tn: int) -> Tuple[int, int, int]:
    """The block of a register-tiled GEMM: a BM x BN block tile, each thread owning TM x TN outputs."""
    return ((bm // tm) * (bn // tn), 1, 1)


# ---------------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------------
#: dynamic shared memory a block may use without an opt-in attribute (every architecture we claim)
MAX_DYNAMIC_SMEM = 48 * 1024
MAX_GRID_X = INT32_MAX


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


def blocks(total: int, per_block: int) -> int:
    """Blocks (or tiles) of ``per_block`` covering ``total``: at least one."""
    return max(1, -(-total // per_block))


def acc_itemsize(dtype: str) -> int:
    """Bytes of the accumulation type kernels stage in shared memory (float for float16)."""
    return 8 if dtype == "float64" else 4


def conv_outputs(spec, buffers: list) -> Ref:
    """Add a conv plan's output buffer (and the never-read bias stand-in when there is no bias) to
    ``buffers``; returns the bias argument."""
    buffers.append(Buffer("y", spec.output_layout, spec.dtype))
    if spec.has_bias:
        return Ref("b")
    buffers.append(Buffer("bias_dummy", (1,), spec.dtype))
    return Ref("bias_dummy")


# ---------------------------------------------------------------------------------------------------
# 32-bit limits every family checks (each family adds its own)
# ---------------------------------------------------------------------------------------------------
def field_overflow(spec) -> List[str]:
    """The spec's values beyond its parameter struct's 32-bit fields (both bounds: :func:`int32_overflow`)."""
    return int32_overflow(spec, params_fields(spec))


def canonical(spec):
    """``spec`` with the fields no result depends on set to 1 (the same object when none is): the stride
    along an axis with one output position (only the window at 0 is formed, whatever the stride) and the
    dilation along an axis with a one-tap window (only tap 0 exists). The problem is the same function of the
    same arrays, forward and gradient alike, so the kernels compute it exactly; what changes is that a stride
    or dilation past 2^31 there (``stride=2**40`` over a 5-pixel image: torch computes it) no longer passes
    the 32-bit fields, and that the tiles see the smaller patch. Every family is planned on this form
    (:class:`fastconv._cuda.KernelImpl`). Adaptive pools (stride 0, window 0) are left as they are."""
    if getattr(spec, "is_adaptive", False):
        return spec
    change = {}
    for axis, out, k in zip("dhw", spec.out_size, spec.window):
        if out == 1 and getattr(spec, f"stride_{axis}") != 1:
            change[f"stride_{axis}"] = 1
        if k == 1 and getattr(spec, f"dil_{axis}") != 1:
            change[f"dil_{axis}"] = 1
    return dataclasses.replace(spec, **change) if change else spec


def reach_limits(spec, tile_p: int, tile_q: int, kernel: str) -> List[str]:
    """The row and column coordinates a kernel keeps in 32-bit ints (output positions counted in whole
    tiles, and input coordinates up to one past the last tap of the last tile's last output, padding
    included) must fit: a refusal for absurd extents (a single row of ~2^31 elements) that spares the
    kernels 64-bit coordinate arithmetic."""
    out = []
    for axis, o, tile, stride, k, dil in (("row", spec.P, tile_p, spec.stride_h, spec.R, spec.dil_h),
                                          ("column", spec.Q, tile_q, spec.stride_w, spec.S, spec.dil_w)):
        covered = blocks(o, tile) * tile                # output positions of the whole tiles
        reach = max(o + tile - 1, input_extent(covered, k, stride, dil))
        if reach > INT32_MAX:
            out.append(f"{kernel} forms {axis} coordinates up to {reach} (outputs in tiles of {tile}, stride "
                       f"{stride}, filter reach {input_extent(1, k, 1, dil)}), beyond its 32-bit ints")
    return out


def extent_limits(spec, kernel: str, margin: int = 0) -> List[str]:
    """Kernels that keep input coordinates in 32-bit ints (every coordinate a window reaches lies in
    ``[-pad_before, size + pad_after)``) need each padded extent, plus ``margin`` (a stride a kernel adds
    on top), below 2^31 - 1: a refusal for absurd extents, per axis of ``spec.in_size``."""
    out = []
    for axis, size, (lo, hi) in zip(("depth", "row", "column"), spec.in_size, spec.pads):
        if size + lo + hi + margin >= INT32_MAX:
            out.append(f"{kernel}: the padded {axis} extent{' plus ' + str(margin) if margin else ''} "
                       f"({size + lo + hi + margin}) reaches 2^31 - 1, beyond its 32-bit coordinates")
    return out


def count_limits(counts: Dict[str, Tuple[int, int]], kernel: str) -> List[str]:
    """Loop counts a kernel walks in whole tiles of 32-bit ints: each rounded up to its tile must fit."""
    return [f"{name} = {n} rounded up to {kernel}'s tile of {tile} is beyond its 32-bit counters"
            for name, (n, tile) in counts.items() if n + tile - 1 > INT32_MAX]


# ---------------------------------------------------------------------------------------------------
# Running a plan
# ---------------------------------------------------------------------------------------------------
def inputs_for(spec, arrays) -> Dict[str, object]:
    """Name the arrays the public functions pass by ``spec.ARRAYS`` (conv: x, w, b; conv_input: dy, w, b;
    conv_weight: x, dy; pools: x; pool gradients: dy[, indices]; max_unpool: x, indices); an absent
    optional one (None, or missing at the end) is left out."""
    return {n: a for n, a in zip(spec.ARRAYS, arrays) if a is not None}


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
