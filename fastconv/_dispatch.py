"""Which implementation runs a spec (selection), kept apart from running it.

Backends are registered here by name with the import path of their module; a module is imported only
when the backend is first asked for, so ``import fastconv`` imports no Numba and no CuPy. Imports and
availability probes go through :mod:`fastconv._imports`: one that fails or is interrupted (Ctrl-C while
Numba or CuPy is being imported) leaves no half-imported module behind, and the next call tries afresh.
A backend module provides:

    availability() -> Optional[str]          None when usable, else the reason it is not
    implementations() -> Sequence[Impl]      its candidates, in priority order
    choose(spec, impls[, arrays]) -> Impl    optional: pick among supported candidates for algo="auto"
                                             (by measurement, :mod:`fastconv._tune`, on the caller's
                                             arrays when :func:`select` is given them); default is the first

Each ``Impl`` is exactly one thing that runs: its name says which (``cuda:conv:implicit_gemm/128x64``),
its ``not_supported_reasons(spec)`` says why it cannot take a spec, and its ``run`` never hands the
problem to something else. :func:`select` asks every candidate and, when none qualifies, raises one error
listing each candidate with its reasons (xformers' habit); what it returns is what runs (PyTorch's
``select_conv_backend``).

Two rules about *data* rather than shapes are applied here, once, for every backend:
- float16: an implementation without a half path runs the problem in float32 (:meth:`Impl.compute_spec`);
- a padded problem whose weight (for the weight gradient: dy; the spec's ``PADDING_OPERAND``) holds Inf
  or NaN: implementations that multiply padded zeros in (``zero_fills_padding``, e.g. im2col) would give
  NaN where fastconv's rule gives the sum of the in-bounds taps, so such an implementation is not
  supported for that call (:func:`select` checks the array only when it would otherwise return one).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import warnings
from typing import Callable, Dict, List, Optional, Sequence

from . import _imports

#: conv algorithms a caller may name; a backend implements a subset (select() says which when it lacks one):
#:   direct         a loop (or tile) per output over the window
#:   im2col         an explicit column matrix and a GEMM over it
#:   implicit_gemm  the same GEMM with the column matrix never stored (CUDA backends)
#:   depthwise      a kernel specialised for groups == C (one input channel per group; CUDA backends)
#:   winograd       Winograd's minimal filtering: transformed tiles and a GEMM per tile position (numba)
ALGOS = ("auto", "direct", "im2col", "implicit_gemm", "depthwise", "winograd")
POOL_ALGOS = ("auto", "direct")
#: the convolution ops (forward, input gradient / transposed convolution, weight gradient): they take ALGOS;
#: every other op (pools, their gradients, max_unpool) takes POOL_ALGOS
CONV_OPS = ("conv", "conv_input", "conv_weight")


class BackendUnavailable(RuntimeError):
    """The named backend cannot run on this machine (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    array_kind: str  # "numpy" or "cupy": the array type its functions take and return
    module: str
    description: str


BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    Backend("numpy", "numpy", "fastconv._backends.numpy_oracle",
            "the NumPy reference oracle, written from the definition, float64 accumulation"),
    Backend("numba", "numpy", "fastconv._backends.numba_cpu",
            "Numba-compiled CPU kernels, parallel over outputs"),
    Backend("cuda", "cupy", "fastconv._backends.cuda",
            "hand-written CUDA kernels (kernels/*.cu) through cupy.RawModule"),
    Backend("cuda-emu", "numpy", "fastconv._backends.cuda_emu",
            "the same CUDA kernels run on the CPU by fastconv's emulator"),
)}


class Impl:
    """One candidate implementation of one op on one backend: exactly one kernel (or kernel sequence).

    Subclasses (or :class:`FunctionImpl`) set ``backend``, ``op``, ``algo``, ``variant`` (which kernel of
    the algorithm: a tile shape, a specialisation; "" when the algorithm has one), ``dtypes`` (the
    storage dtypes handled natively; float16 is upcast to float32 around implementations that lack it) and
    ``zero_fills_padding`` (padded taps are multiplied in as zeros, so exact only for finite weights), and
    implement ``run(spec, *arrays)``. ``spatial_dims``: the problem dimensions it takes (1-D problems are
    2-D ones with H = 1 in the 4-D layout; 3-D problems come in the 5-D layout); dispatch checks it for all.
    ``fallback``: a last resort (an untiled kernel that takes what the tiled ones cannot): dispatch picks it
    only when no other candidate of the selection takes the problem, so ``algo="auto"`` never measures it
    needlessly, while a named algorithm whose only variant is a fallback still runs every problem.
    """

    backend: str = ""
    op: str = ""  # the spec's op: "conv", "conv_input", "conv_weight", "max_pool", "max_pool_backward", ...
    algo: str = "direct"
    variant: str = ""
    dtypes: Sequence[str] = ("float32", "float64")
    zero_fills_padding: bool = False
    spatial_dims: Sequence[int] = (1, 2)
    fallback: bool = False

    @property
    def name(self) -> str:
        """``backend:op:algo[/variant]``, built once (dispatch and the tuner ask on every call)."""
        n = self.__dict__.get("_name")
        if n is None:
            n = f"{self.backend}:{self.op}:{self.algo}" + (f"/{self.variant}" if self.variant else "")
            self.__dict__["_name"] = n
        return n

    def not_supported_reasons(self, spec) -> List[str]:
        return []

    def compute_dtype(self, dtype: str) -> str:
        """The storage dtype this implementation runs a ``dtype`` problem in: float16 becomes float32 where
        it has no half path (the public functions convert the arrays and round the result back once)."""
        return "float32" if dtype == "float16" and "float16" not in self.dtypes else dtype

    def compute_spec(self, spec):
        """``spec`` in :meth:`compute_dtype` (the same object when nothing changes)."""
        dt = self.compute_dtype(spec.dtype)
        if dt == spec.dtype:
            return spec
        memo = spec.__dict__.get("_compute_specs_")    # built once per spec object (a per-call cost else)
        if memo is None:
            memo = {}
            object.__setattr__(spec, "_compute_specs_", memo)
        run = memo.get(dt)
        if run is None:
            run = memo[dt] = dataclasses.replace(spec, dtype=dt)
        return run

    def run(self, spec, *arrays):  # pragma: no cover - interface
        raise NotImplementedError

    def runner(self, spec) -> Callable:
        """``f(*arrays)`` running ``spec`` as :meth:`run` does, for the public functions' repeat calls of
        one signature (``fastconv.functional._fast_path``); an implementation may precompute there what
        :meth:`run` would work out from ``spec`` on every call. ``f`` is only given exact ndarrays of the
        spec's operand shapes and dtype, C-contiguous, aligned and writeable."""
        return functools.partial(self.run, spec)

    def __repr__(self) -> str:
        return f"<Impl {self.name}>"


class FunctionImpl(Impl):
    """An Impl made of plain functions: ``fn(spec, *arrays)`` and optionally ``reasons(spec) -> list``."""

    def __init__(self, backend: str, op: str, algo: str, fn: Callable, *, variant: str = "",
                 reasons: Optional[Callable] = None, dtypes: Sequence[str] = ("float32", "float64"),
                 zero_fills_padding: bool = False, spatial_dims: Sequence[int] = (1, 2)):
        self.backend, self.op, self.algo, self.variant = backend, op, algo, variant
        self.spatial_dims = tuple(spatial_dims)
        self._fn, self._reasons = fn, reasons
        self.dtypes = tuple(dtypes)
        self.zero_fills_padding = zero_fills_padding

    def not_supported_reasons(self, spec) -> List[str]:
        return list(self._reasons(spec)) if self._reasons else []

    def run(self, spec, *arrays):
        return self._fn(spec, *arrays)


_modules: Dict[str, object] = {}
_lock = threading.Lock()


def backend_module(name: str):
    """Import (once) the module of a registered backend. Unknown names raise ValueError."""
    mod = _modules.get(name)      # imported already: no lock (asked several times per call)
    if mod is not None:
        return mod
    check_backend_name(name)
    with _lock:
        mod = _modules.get(name)
        if mod is None:
            mod = _imports.import_module(BACKENDS[name].module)
            _modules[name] = mod
    return mod


def check_backend_name(name) -> None:
    if name not in BACKENDS:
        raise ValueError(f"backend must be None or one of {', '.join(repr(b) for b in BACKENDS)}, got {name!r}")


def check_algo(algo, op: str) -> None:
    valid = ALGOS if op in CONV_OPS else POOL_ALGOS
    if algo not in valid:
        raise ValueError(f"algo must be one of {', '.join(repr(a) for a in valid)}, got {algo!r}")


def availability(name: str) -> Optional[str]:
    """None when backend ``name`` can run here, else why not. A probe that fails (or is interrupted) leaves
    no half-imported module behind (:func:`fastconv._imports.guard_failure`), whatever it imported and
    however it caught the error, so asking again tries afresh."""
    try:
        mod = backend_module(name)
    except ImportError as e:  # a backend whose module or dependency is missing
        return f"cannot import {BACKENDS[name].module}: {e}"
    before = len(sys.modules)
    why = "interrupted"
    try:
        why = mod.availability()
    except Exception as e:  # availability probes must not take the caller down
        why = f"availability check failed: {type(e).__name__}: {e}"
    finally:
        if why is not None:
            _imports.guard_failure(before)
    return why


def backends() -> Dict[str, dict]:
    """Every backend with whether it is available here and, when not, why."""
    out = {}
    for name, b in BACKENDS.items():
        reason = availability(name)
        out[name] = {"available": reason is None, "reason": reason, "arrays": b.array_kind,
                     "description": b.description}
    return out


_warned_fallback = set()


def default_backend(array_kind: str) -> str:
    """NumPy input -> 'numba' (or 'numpy' when Numba is unusable); CuPy input -> 'cuda'.

    Numba installed but unusable (a NUMBA_NUM_THREADS it refuses, a broken install) is said once per
    process and reason (a RuntimeWarning); Numba not installed is the documented default and is not."""
    if array_kind == "cupy":
        return "cuda"
    why = availability("numba")
    if why is None:
        return "numba"
    if not why.startswith(NUMBA_NOT_INSTALLED) and why not in _warned_fallback:
        _warned_fallback.add(why)
        warnings.warn(f"fastconv: the numba backend is unusable ({why}); NumPy input runs on the 'numpy' "
                      f"backend", RuntimeWarning, stacklevel=3)
    return "numpy"


#: how numba's availability() begins its reason when Numba is not installed at all
NUMBA_NOT_INSTALLED = "numba is not installed"


def _fallback_note(backend: str) -> str:
    """For an error on the 'numpy' backend: why NumPy input is there when backend= was not given."""
    if backend != "numpy":
        return ""
    why = availability("numba")
    return "" if why is None else (f" (the 'numpy' backend runs NumPy input when backend= is not given "
                                   f"because the numba backend is unusable: {why})")


def candidates(spec, backend: str, algo: str = "auto") -> List[Impl]:
    """The backend's implementations of ``spec.op`` with the requested algo, in priority order."""
    mod = backend_module(backend)
    return [i for i in mod.implementations() if i.op == spec.op and (algo == "auto" or i.algo == algo)]


def reasons(impl: Impl, spec) -> List[str]:
    """Why ``impl`` cannot run ``spec`` (empty when it can); dtype and dimension support are checked here
    for all."""
    out = []
    if spec.spatial_dims not in impl.spatial_dims:
        out.append(f"{spec.spatial_dims}-D problems not supported (takes "
                   f"{', '.join(f'{d}-D' for d in impl.spatial_dims)})")
        return out
    if impl.compute_dtype(spec.dtype) not in impl.dtypes:
        out.append(f"dtype {spec.dtype} not supported (supports {', '.join(impl.dtypes)})")
    return out + list(impl.not_supported_reasons(spec))


def nonfinite_weight_meets_padding(spec, weight) -> bool:
    """A padded convolution whose ``spec.PADDING_OPERAND`` (the weight for conv and conv_input, dy for
    conv_weight; NumPy or CuPy) holds Inf or NaN: one reduction, only when padded.
    On CuPy this waits for the GPU, so :func:`select` asks only when its answer could change the choice."""
    if not spec.is_padded:
        return False
    xp = type(weight).__module__.split(".")[0]
    if xp == "cupy":
        import cupy
        return not bool(cupy.isfinite(weight).all())
    import numpy
    return not bool(numpy.isfinite(weight).all())


_ZERO_FILL_REASON = ("a weight is Inf or NaN and the problem is padded: this implementation multiplies "
                     "padded taps as zeros (Inf * 0 = NaN), while padded taps must contribute nothing")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`select` learns from the spec alone (names, availability, every candidate's reasons):
    the candidates, those supported (``choosable``: less the fallbacks, what :func:`_choose` picks among)
    and those rejected with their reasons. It depends on no array value, so the public functions
    remember it per argument signature (:mod:`fastconv._memo`); :func:`select_from` finishes the choice
    on every call (the data rule, the backend's ``choose``)."""

    candidates: tuple
    supported: tuple
    choosable: tuple
    rejected: tuple      # ((impl, reasons), ...)


def plan(spec, backend: str, algo: str = "auto") -> Plan:
    """The spec-only part of :func:`select`: checks the names and the backend's availability and asks every
    candidate its reasons. Raises what select raises for a bad name or an unavailable backend."""
    check_backend_name(backend)
    check_algo(algo, spec.op)
    why = availability(backend)
    if why is not None:
        raise BackendUnavailable(f"backend {backend!r} is not available: {why}")
    cands = candidates(spec, backend, algo)
    supported, rejected = [], []
    for impl in cands:
        r = reasons(impl, spec)
        if r:
            rejected.append((impl, r))
        else:
            supported.append(impl)
    return Plan(tuple(cands), tuple(supported), tuple(without_fallbacks(supported)), tuple(rejected))


def select(spec, backend: str, algo: str = "auto", weight=None, arrays=None) -> Impl:
    """The implementation that will run ``spec`` on ``backend``; raises listing every candidate's reasons.

    ``algo="auto"`` considers every algorithm, a named one only its variants; among several supported
    candidates the backend's ``choose`` decides. ``weight``: the spec's ``PADDING_OPERAND`` array (the
    conv weight; dy for the weight gradient), for the data rule on non-finite values in padded problems
    (see the module docstring); the public functions always pass it. ``arrays``: what ``spec.ARRAYS``
    names, as the caller passed them, for a measurement to run on instead of copies (read only). An empty batch (N = 0) is not measured: nothing will run, so the first supported candidate is
    returned. ``select(...)`` is ``select_from(plan(spec, backend, algo), ...)``."""
    return select_from(plan(spec, backend, algo), spec, backend, algo, weight, arrays)


def select_from(p: Plan, spec, backend: str, algo: str = "auto", weight=None, arrays=None) -> Impl:
    """:func:`select` given its :func:`plan`: the backend's ``choose`` among the supported candidates,
    then the data rule on ``weight`` (read on every call: it depends on values), then the error listing
    every candidate's reasons when none is left."""
    chosen = _choose(spec, backend, p.choosable, arrays)
    supported, rejected = p.supported, p.rejected
    if chosen is not None and chosen.zero_fills_padding and weight is not None \
            and nonfinite_weight_meets_padding(spec, weight):
        rejected = rejected + tuple((i, [_ZERO_FILL_REASON]) for i in supported if i.zero_fills_padding)
        supported = [i for i in supported if not i.zero_fills_padding]
        chosen = _choose(spec, backend, without_fallbacks(supported), arrays)
    if chosen is None:
        if not p.candidates:
            raise ValueError(f"backend {backend!r} has no {spec.op} implementation with algo={algo!r}"
                             + _fallback_note(backend))
        groups: Dict[tuple, List[str]] = {}      # candidates with the same reasons are named together
        for impl, r in rejected:
            groups.setdefault(tuple(r), []).append(impl.name)
        lines = "; ".join(f"{', '.join(names)}: {', '.join(r)}" for r, names in groups.items())
        raise ValueError(f"no implementation of {spec.op} on backend {backend!r} supports this problem "
                         f"({lines})" + _fallback_note(backend))
    return chosen


def fixed_choice(p: Plan, spec, backend: str) -> Optional[Impl]:
    """The implementation :func:`select_from` picks for ``spec`` on every call, the data rule apart, or
    None where the pick can change from call to call (the backend measures, or reads a setting, each
    time). One supported candidate is fixed; among several, the backend's ``fixed_choice(spec, impls)``
    says (None where it has none: not fixed)."""
    if spec.N == 0 or not p.choosable:
        return None
    if len(p.choosable) == 1:
        return p.choosable[0]
    fixed = getattr(backend_module(backend), "fixed_choice", None)
    return fixed(spec, p.choosable) if fixed is not None else None


def measured_times(spec, backend: str, algo: str = "auto") -> Optional[Dict[str, float]]:
    """What the backend's tuner measured when it chose among the supported candidates for ``spec`` (seconds
    per call by Impl name: the times behind :func:`select`'s choice), or None where it chose by rule or has
    not measured this spec (nor with this thread count, or on this GPU). Finite data assumed: a choice the
    data rule made among fewer candidates is not looked up."""
    mod = backend_module(backend)
    tuner, context = getattr(mod, "TUNER", None), getattr(mod, "tune_context", None)
    if tuner is None or context is None or spec.N == 0:
        return None
    choosable = plan(spec, backend, algo).choosable
    if len(choosable) < 2:
        return None
    return tuner.remembered(context(), spec, choosable)


def without_fallbacks(supported: List[Impl]) -> List[Impl]:
    """``supported`` less its fallbacks (:attr:`Impl.fallback`) when anything else is in it: what dispatch
    chooses among (and what a benchmark of "every implementation dispatch may run" measures)."""
    rest = [i for i in supported if not i.fallback]
    return rest if rest else supported


def _choose(spec, backend: str, supported: Sequence[Impl], arrays=None) -> Optional[Impl]:
    """Among supported candidates: the backend's ``choose`` (measurement) when there are several (with a
    named algo, several variants of it), else the first."""
    if not supported:
        return None
    if len(supported) > 1 and spec.N > 0:
        choose = getattr(backend_module(backend), "choose", None)
        if choose is not None:
            return choose(spec, supported) if arrays is None else choose(spec, supported, arrays)
    return supported[0]
