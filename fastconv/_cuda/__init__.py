"""fastconv's CUDA kernel families, shared by backends "cuda" (CuPy) and "cuda-emu" (the emulator).

A family is one ``kernels/<file>.cu`` and one module here that owns everything about it; the backends are
thin executors of the plans a family builds and never look inside one. A family module defines:

    FILE                the .cu file
    ALGO, OPS           the algorithm name dispatch knows it by, and the ops it implements
    DTYPES              storage dtypes it has kernels for (float16 upcasts around families without it)
    ZERO_FILLS_PADDING  padded taps are multiplied in as zeros (exact only for finite weights)
    SPATIAL_DIMS        optional, default (1, 2): the problem dimensions its Impls take (dispatch offers
                        nothing else; the 3-D families say (3,), fold (1, 2, 3))
    VARIANTS            the kernels dispatch may run, in priority order ("" for an algorithm with one);
                        each becomes one Impl, named ``<backend>:<op>:<algo>/<variant>``
    VARIANT_ALGOS       optional: the algorithm of a variant that is not ALGO (conv_dgrad's fallback gather
                        is ``direct``, not ``implicit_gemm``), so its name and ``algo=`` say what runs
    VERSIONS            kernel versions plan() builds; the last ships, earlier ones are kept for teaching
                        and tests (reached only through plan(..., version=))
    KERNELS             every templated kernel of the file (:class:`.plan.Kernel`), for compiling
    reasons(spec, variant) -> [str]             why the variant cannot take spec (32-bit limits, predicates);
                                                never raises, builds no plan
    plan(spec, variant, version=None) -> Plan   the launches (geometry, tiles, buffers), computed once

Adding a family: one .cu, one module, one line in :data:`FAMILIES`, one test file (tests/cuda/).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

from .._dispatch import Impl
from . import (conv3d_dgrad, conv3d_direct, conv3d_implicit_gemm, conv3d_wgrad, conv_dgrad, conv_wgrad, depthwise,
               direct, fold, im2col, implicit_gemm, plan, pool, pool3d, pool3d_backward, pool_backward)
from .plan import C_TYPES, inputs_for

#: every family in priority order: with measuring off, ``algo="auto"`` runs the first supported variant of
#: the first family that takes the problem (specialised kernels before general ones)
FAMILIES = (depthwise, implicit_gemm, im2col, direct, pool, pool_backward,
            pool3d, pool3d_backward,   # 3-D pools (SPATIAL_DIMS = (3,)); the 2-D families take 1-D and 2-D
            conv_dgrad,      # conv_input: the data gradient and conv_transpose
            conv_wgrad,      # conv_weight
            fold,            # unfold and fold (1-D to 3-D)
            # 3-D convolutions (SPATIAL_DIMS = (3,): dispatch offers them 3-D problems only)
            conv3d_implicit_gemm, conv3d_direct, conv3d_dgrad, conv3d_wgrad)


def family(name: str):
    """The family by module name ("direct", "im2col", "implicit_gemm", "depthwise", "pool")."""
    for f in FAMILIES:
        if f.__name__.rsplit(".", 1)[1] == name:
            return f
    raise KeyError(f"no CUDA family {name!r} (families: {', '.join(f.__name__.rsplit('.', 1)[1] for f in FAMILIES)})")


def files() -> Tuple[str, ...]:
    return tuple(f.FILE for f in FAMILIES)


def by_file(fname: str):
    for f in FAMILIES:
        if f.FILE == fname:
            return f
    raise KeyError(fname)


def name_expressions(fname: str, dtypes: Sequence[str] = tuple(C_TYPES)) -> Tuple[str, ...]:
    """Every instantiation of every kernel in ``fname`` a plan can ask for (for ``dtypes``)."""
    return tuple(e for k in by_file(fname).KERNELS for e in k.expressions(dtypes))


# ---------------------------------------------------------------------------------------------------
# One Impl per (family, op, variant)
# ---------------------------------------------------------------------------------------------------
_PLAN_MEMO_SIZE = 4096


class KernelImpl(Impl):
    """One variant of one family on one backend. Its support check and its run share one plan, built once
    per spec (memoized; bounded): what the check approved is exactly what runs. The family sees the spec in
    :func:`.plan.canonical` form (the same problem, with the strides and dilations no result depends on
    set to 1)."""

    def __init__(self, backend: str, op: str, fam, variant: str, execute: Callable):
        self.backend, self.op, self.variant = backend, op, variant
        self.algo = getattr(fam, "VARIANT_ALGOS", {}).get(variant, fam.ALGO)
        self.fallback = variant in getattr(fam, "FALLBACK_VARIANTS", ())
        self.family, self.dtypes, self.zero_fills_padding = fam, tuple(fam.DTYPES), fam.ZERO_FILLS_PADDING
        self.spatial_dims = tuple(getattr(fam, "SPATIAL_DIMS", (1, 2)))
        self._execute = execute
        self._memo: Dict[tuple, tuple] = {}

    def _planned(self, spec):
        key = (spec, plan._force_index64)
        hit = self._memo.get(key)
        if hit is None:
            ks = plan.canonical(spec)
            why = list(self.family.reasons(ks, self.variant))
            p = None
            if not why:
                p = self.family.plan(ks, self.variant)
                why = p.reasons()
            if len(self._memo) >= _PLAN_MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = (p if not why else None, why)
        return hit

    def plan(self, spec) -> plan.Plan:
        p, why = self._planned(spec)
        if p is None:
            raise ValueError(f"{self.name} cannot run this problem: {'; '.join(why)}")
        return p

    def not_supported_reasons(self, spec) -> List[str]:
        return list(self._planned(self.compute_spec(spec))[1])   # float16 without a half path: as run

    def run(self, spec, *arrays):
        return self._execute(self.plan(spec), inputs_for(spec, arrays))


_impl_lists: Dict[tuple, list] = {}


def implementations(backend: str, execute: Callable) -> List[KernelImpl]:
    """The Impl list both CUDA backends expose, in priority order; ``execute(plan, inputs)`` runs a plan.
    Built once per backend and executor (dispatch asks for it on every call)."""
    key = (backend, execute)
    impls = _impl_lists.get(key)
    if impls is None:
        impls = _impl_lists[key] = [KernelImpl(backend, op, fam, v, execute)
                                    for fam in FAMILIES for op in fam.OPS for v in fam.VARIANTS]
    return impls
