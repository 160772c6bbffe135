"""The autotuner: which of several implementations is fastest for a spec, measured once and remembered.

Used by every backend that chooses by measurement (``cudnn.benchmark`` style): ``numba`` and ``cuda``. A
backend owns one :class:`Tuner` and supplies only what is its own: the *context* (what else the choice
depends on: the GPU and the kernel sources, or the thread count), how to make inputs in its array module
and how to time one call. Everything else lives here, once:

- the **key**: ``context | spec.key() | candidate names``, so a choice is reused only for exactly the same
  problem, candidates and machine state;
- the **lock**: one measurement at a time per tuner (concurrent ones would time each other), and a second
  caller waiting for the first finds its answer in the cache;
- the **measurement**: every candidate runs untimed first (``warmups`` calls, one unless the backend asks
  for more: compiles, loads, warms caches), then is timed by the
  backend's timer (or, for a tuner made with ``rounds``, in interleaved rounds: each round times every
  candidate once, the order rotating, and a candidate's time is its fastest call, so a burst of outside
  load that slows some calls lands on every candidate alike and cannot make a slow one look fast) on the caller's own arrays where they fit (right dtype, contiguous: read only, as
  every implementation treats its inputs) and otherwise on synthetic inputs of the spec's shape made
  directly in the dtype the candidate runs in (:func:`synthetic_inputs`), float16 run the way the public
  functions run it (:meth:`fastconv._dispatch.Impl.compute_spec`);
- its **memory**: tuning never needs more memory than the candidates' own calls: one candidate runs at
  a time and its output and workspace are freed before the next, no input is copied, and a synthetic
  operand exists only where the caller's array could not be used. A candidate that cannot get its
  memory now (the tuner's ``unmeasurable`` exceptions: ``MemoryError`` on the CPU, CuPy's
  ``OutOfMemoryError`` on a GPU) is skipped; a measurement that skipped any is not remembered (a later
  call measures again), and when none could be measured the first candidate (the backend's priority
  rule) runs;
- the **cache**: in memory, and for tuners made with ``persist=True`` also in a JSON file
  (:class:`DiskCache`) that is read once per process and replaced atomically after merging what other
  processes wrote; a file that cannot be read or parsed is ignored and rebuilt, never trusted.

``FASTCONV_AUTOTUNE=0`` turns measuring off: the first candidate (the backend's priority order) runs.
``FASTCONV_AUTOTUNE_CACHE`` names the file (see :mod:`fastconv._config`).
"""
from __future__ import annotations

import json
import threading
from typing import Callable, Dict, Optional, Sequence

from . import _config
from ._files import atomic_write

#: in an interleaved measurement, a candidate whose fastest call is this many times the leader's is timed
#: no more (a burst of outside load slows calls by tens of percent, not threefold, and the slowest
#: candidates, direct kernels on 1x1 layers, take 20-40x im2col's time)
OUT_OF_RACE = 3.0

FORMAT = 2   # 2: choices are Impl names ("cuda:conv:implicit_gemm/128x64"), times in seconds


def _read(path: Optional[str]) -> Dict[str, dict]:
    """The entries of the file at ``path``; {} when it is missing or unreadable in any way."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("choice"), str)}


class DiskCache:
    """A thread-safe key -> entry map, backed by one JSON file when ``path`` is set (memory only when not)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._lock = threading.Lock()
        self._entries: Optional[Dict[str, dict]] = None

    def _loaded(self) -> Dict[str, dict]:
        if self._entries is None:
            self._entries = _read(self.path)
        return self._entries

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            return self._loaded().get(key)

    def put(self, key: str, entry: dict) -> None:
        with self._lock:
            entries = self._loaded()
            entries[key] = entry
            if not self.path:
                return
            merged = _read(self.path)      # keep what other processes added since we read the file
            merged.update(entries)
            self._entries = merged
            try:
                atomic_write(self.path, json.dumps({"format": FORMAT, "entries": merged}, indent=1,
                                                   sort_keys=True), prefix=".autotune-")
            except OSError:
                pass  # a read-only home still gets the in-memory choice

    def entries(self) -> Dict[str, dict]:
        with self._lock:
            return dict(self._loaded())


def _random(rng, xp, shape, dtype):
    """Standard normal data of ``shape`` made in ``dtype`` itself (no second array of another dtype):
    float32 and float64 directly, float16 through float32 (the generators have no half path)."""
    if dtype in ("float32", "float64"):
        return rng.standard_normal(shape, dtype=getattr(xp, dtype))
    return rng.standard_normal(shape, dtype=xp.float32).astype(dtype)


def synthetic_inputs(spec, xp, given: Optional[Sequence] = None) -> tuple:
    """The arrays ``spec.ARRAYS`` names, of ``spec.operands()``'s shapes, in array module ``xp`` (NumPy or
    CuPy): ``given[i]`` (the caller's array, viewed in the operand's shape) where it is an ``xp`` array
    of the operand's dtype, size and C-contiguous, so the measurement copies nothing; else data standard
    normal in the spec's dtype, seeded; index arrays zero (a valid position of every plane); None for an
    absent optional array."""
    rng = None
    out = []
    for i, (name, shape) in enumerate(zip(spec.ARRAYS, spec.operands())):
        if shape is None:
            out.append(None)
            continue
        dtype = "int64" if spec.is_index_operand(name) else spec.dtype
        a = given[i] if given is not None and i < len(given) else None
        if _usable(a, xp, shape, dtype):
            out.append(a.reshape(shape))
        elif dtype == "int64":
            out.append(xp.zeros(shape, dtype=xp.int64))
        else:
            rng = rng if rng is not None else xp.random.default_rng(0)
            out.append(_random(rng, xp, shape, dtype))
    return tuple(out)


def _usable(a, xp, shape, dtype) -> bool:
    """Whether the caller's array ``a`` can stand for an operand of ``shape`` and ``dtype`` as it is."""
    if a is None or not isinstance(a, xp.ndarray) or str(a.dtype) != dtype:
        return False
    size = 1
    for d in shape:
        size *= d
    return a.size == size and bool(a.flags.c_contiguous)


class Tuner:
    """One backend's measured choices (see the module docstring).

    ``time_one(fn) -> seconds per call`` times a prepared call; ``xp()`` returns the array module the
    synthetic inputs are made in; ``unmeasurable``: exception types meaning "no room to measure now" (the
    default candidate runs and nothing is remembered, so a later call measures).
    """

    def __init__(self, backend: str, *, persist: bool, time_one: Callable[[Callable[[], object]], float],
                 xp: Callable[[], object], unmeasurable: Callable[[], tuple] = lambda: (),
                 rounds: Optional[int] = None, budget_s: float = 0.2, warmups: int = 1):
        self.backend, self.persist = backend, persist
        #: untimed calls of each candidate before its first timed one (compiles, loads, warms caches)
        self._warmups = max(1, warmups)
        self._time_one, self._xp, self._unmeasurable = time_one, xp, unmeasurable
        #: interleaved measurement (see the module docstring): at most ``rounds`` rounds, at least two,
        #: stopping once ``budget_s`` seconds of timed calls are spent; ``time_one`` then times one call
        self._rounds, self._budget_s = rounds, budget_s
        self._cache: Optional[DiskCache] = None
        self._cache_lock = threading.Lock()
        self._measure_lock = threading.Lock()
        self._keys: Dict[tuple, str] = {}
        #: measurements made in this process (tests check a remembered choice is not measured again)
        self.measure_count = 0

    def cache(self) -> DiskCache:
        with self._cache_lock:
            if self._cache is None:
                self._cache = DiskCache(_config.autotune_path(self.backend) if self.persist else None)
            return self._cache

    def reset(self) -> None:
        """Forget the in-memory choices; the file (if any) is read again on next use."""
        with self._cache_lock:
            self._cache = None

    @staticmethod
    def key(context: str, spec, names: Sequence[str]) -> str:
        return "|".join([context, repr(spec.key()), ",".join(names)])

    def _key(self, context: str, spec, names: tuple) -> str:
        """:meth:`key`, memoized (a choice is looked up on every call; building the string costs more)."""
        k = (context, spec, names)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            key = self._keys[k] = self.key(context, spec, names)
        return key

    def choose(self, context: str, spec, impls: Sequence, arrays: Optional[Sequence] = None):
        """The fastest of ``impls`` for ``spec``: remembered, else measured now (on ``arrays``, the
        caller's, where they fit: :func:`synthetic_inputs`); ``impls[0]`` when there is only one, when
        measuring is off, or when there is no room to measure any. A measurement that had to skip a
        candidate for want of memory answers this call only."""
        if len(impls) == 1 or not _config.autotune_enabled():
            return impls[0]
        by_name = {i.name: i for i in impls}
        key = self._key(context, spec, tuple(by_name))
        cache = self.cache()
        entry = cache.get(key)
        if entry is None or entry["choice"] not in by_name:
            with self._measure_lock:
                entry = cache.get(key)
                if entry is None or entry["choice"] not in by_name:
                    try:
                        times = self.measure(spec, impls, arrays)
                    except self._unmeasurable():      # not even the inputs fit: the priority rule
                        return impls[0]
                    if not times:
                        return impls[0]
                    entry = {"choice": min(times, key=times.get), "s": times}
                    if len(times) < len(impls):       # a candidate was skipped: answer now, remember nothing
                        return by_name[entry["choice"]]
                    cache.put(key, entry)
                    self._remember_per_algo(context, spec, impls, times)
        return by_name[entry["choice"]]

    def remembered(self, context: str, spec, impls: Sequence) -> Optional[Dict[str, float]]:
        """The seconds per call behind the remembered choice among ``impls`` for ``spec`` (a copy, by Impl
        name), or None where nothing is remembered: what a benchmark report shows beside a choice."""
        entry = self.cache().get(self._key(context, spec, tuple(i.name for i in impls)))
        return None if entry is None else dict(entry.get("s") or {})

    def _remember_per_algo(self, context, spec, impls, times) -> None:
        """The same times also answer "which variant of algorithm A" (what ``algo="A"`` asks)."""
        algos = {i.algo for i in impls}
        if len(algos) < 2:
            return
        cache = self.cache()
        for algo in algos:
            own = [i.name for i in impls if i.algo == algo]
            if len(own) > 1:
                sub = {n: times[n] for n in own}
                cache.put(self.key(context, spec, own), {"choice": min(sub, key=sub.get), "s": sub})

    def measure(self, spec, impls: Sequence, arrays: Optional[Sequence] = None) -> Dict[str, float]:
        """Seconds per call of each candidate, in the given order, on the caller's ``arrays`` where they
        fit and synthetic inputs elsewhere (:func:`synthetic_inputs`, made once per dtype). A candidate
        whose run raises one of the ``unmeasurable`` exceptions (no memory for its output or workspace
        now) is left out of the result; its partial output is gone before the next candidate runs."""
        self.measure_count += 1
        xp = self._xp()
        times: Dict[str, float] = {}
        calls: Dict[str, Callable] = {}
        arrays_by_dtype: Dict[str, tuple] = {}
        unmeasurable = self._unmeasurable()
        for impl in impls:
            run_spec = impl.compute_spec(spec)
            inputs = arrays_by_dtype.get(run_spec.dtype)
            if inputs is None:
                inputs = arrays_by_dtype[run_spec.dtype] = synthetic_inputs(run_spec, xp, arrays)

            def call(impl=impl, run_spec=run_spec, inputs=inputs):
                impl.run(run_spec, *inputs)             # the result is dropped at once
            try:
                for _ in range(self._warmups):
                    call()                              # compiles or loads the kernels, warms the caches
                if self._rounds:
                    calls[impl.name] = call
                    times[impl.name] = self._time_one(call)    # round 1
                else:
                    times[impl.name] = self._time_one(call)
            except unmeasurable:
                continue
        if self._rounds:
            self._more_rounds(calls, times, unmeasurable)
        return times

    def _more_rounds(self, calls: Dict[str, Callable], times: Dict[str, float], unmeasurable) -> None:
        """Rounds 2.. of an interleaved measurement: each times every candidate once, the order rotating
        by one each round; a candidate keeps its fastest call. A candidate that cannot get its memory in a
        later round keeps the times it has."""
        names = list(calls)
        if not names:           # nothing could be measured: the caller's rule decides
            return
        spent = sum(times.values())
        for r in range(1, self._rounds):
            if r >= 2 and spent > self._budget_s:
                break
            for name in names[r % len(names):] + names[:r % len(names)]:
                if times[name] > OUT_OF_RACE * min(times.values()):
                    continue        # far behind the leader: another call would only cost time
                try:
                    t = self._time_one(calls[name])
                except unmeasurable:
                    continue
                spent += t
                times[name] = min(times[name], t)
