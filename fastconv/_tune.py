"""The autotuner: which of several implementations is fastest for a spec, measured once and remembered.

Used by every backend that chooses by measurement (``cudnn.benchmark`` style): ``numba`` and ``cuda``. A
backend owns one :class:`Tuner` and supplies only what is its own: the *context* (what else the choice
depends on: the GPU and the kernel sources, or the thread count), how to make inputs in its array module
and how to time one call. Everything else lives here, once:

- the **key**: ``context | spec.key() | candidate names``, so a choice is reused only for exactly the same
  problem, candidates and machine state;
- the **lock**: one measurement at a time per tuner (concurrent ones would time each other), and a second
  caller waiting for the first finds its answer in the cache;
- the **measurement**: every candidate runs once untimed (compiles, warms caches), then is timed by the
  backend's timer on synthetic inputs of the spec's shape (:func:`synthetic_inputs`), float16 run the way
  the public functions run it (:meth:`fastconv._dispatch.Impl.compute_spec`);
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


def synthetic_inputs(spec, xp) -> tuple:
    """The arrays ``spec.ARRAYS`` names, of ``spec.operands()``'s shapes, in array module ``xp`` (NumPy or
    CuPy): data standard normal in the spec's dtype, seeded; index arrays zero (a valid position of every
    plane); None for an absent optional array."""
    rng = xp.random.default_rng(0)

    def rand(shape):
        return rng.standard_normal(shape, dtype=xp.float32).astype(spec.dtype)

    return tuple(None if shape is None else xp.zeros(shape, dtype=xp.int64) if spec.is_index_operand(name)
                 else rand(shape) for name, shape in zip(spec.ARRAYS, spec.operands()))


class Tuner:
    """One backend's measured choices (see the module docstring).

    ``time_one(fn) -> seconds per call`` times a prepared call; ``xp()`` returns the array module the
    synthetic inputs are made in; ``unmeasurable``: exception types meaning "no room to measure now" (the
    default candidate runs and nothing is remembered, so a later call measures).
    """

    def __init__(self, backend: str, *, persist: bool, time_one: Callable[[Callable[[], object]], float],
                 xp: Callable[[], object], unmeasurable: Callable[[], tuple] = lambda: ()):
        self.backend, self.persist = backend, persist
        self._time_one, self._xp, self._unmeasurable = time_one, xp, unmeasurable
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

    def choose(self, context: str, spec, impls: Sequence):
        """The fastest of ``impls`` for ``spec``: remembered, else measured now; ``impls[0]`` when there is
        only one, when measuring is off, or when there is no room to measure."""
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
                        times = self.measure(spec, impls)
                    except self._unmeasurable():
                        return impls[0]
                    entry = {"choice": min(times, key=times.get), "s": times}
                    cache.put(key, entry)
                    self._remember_per_algo(context, spec, impls, times)
        return by_name[entry["choice"]]

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

    def measure(self, spec, impls: Sequence) -> Dict[str, float]:
        """Seconds per call of each candidate on synthetic inputs, in the given order."""
        self.measure_count += 1
        xp = self._xp()
        times: Dict[str, float] = {}
        arrays_by_dtype: Dict[str, tuple] = {}
        for impl in impls:
            run_spec = impl.compute_spec(spec)
            arrays = arrays_by_dtype.get(run_spec.dtype)
            if arrays is None:
                arrays = arrays_by_dtype[run_spec.dtype] = synthetic_inputs(run_spec, xp)

            def call(impl=impl, run_spec=run_spec, arrays=arrays):
                impl.run(run_spec, *arrays)
            call()                                   # compiles or loads the kernels, warms the caches
            times[impl.name] = self._time_one(call)
        return times
