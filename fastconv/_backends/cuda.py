"""Backend "cuda": fastconv's CUDA kernels (kernels/*.cu) through ``cupy.RawModule``.

Arrays are CuPy arrays on the current device; kernels run on the current stream. Each kernel file becomes
one RawModule holding every instantiation the launcher (:mod:`._cuda_launch`) can ask for; modules are
built lazily, on first use, and memoized per device (CuPy's disk cache keeps the compiled code across
processes). Launch geometry, parameter structs and index types all come from :mod:`._cuda_launch`, shared
with the emulator backend "cuda-emu".
"""
from __future__ import annotations

import glob
import os
import shutil
import threading
from typing import Dict, Optional, Tuple

from . import _cuda_launch as L

_modules: Dict[Tuple[int, str], object] = {}
_lock = threading.Lock()


def availability() -> Optional[str]:
    try:
        import cupy
    except ImportError as e:
        return f"CuPy is not installed ({e}); install fastconv[cuda12] or fastconv[cuda13]"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device, driver too old
        return f"no usable CUDA device: {type(e).__name__}: {e}"
    if n < 1:
        return "no CUDA device found"
    return None


def cuda_include_dirs() -> Tuple[str, ...]:
    """Directories holding the CUDA headers the kernels include (cuda_fp16.h): $CUDA_PATH, $CUDA_HOME,
    the toolkit of the nvcc on PATH, /usr/local/cuda, and the ``nvidia-cuda-runtime`` wheel's headers."""
    cands = [os.path.join(os.environ[v], "include") for v in ("CUDA_PATH", "CUDA_HOME") if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    cands.append("/usr/local/cuda/include")
    try:
        import nvidia
        for base in getattr(nvidia, "__path__", []):
            cands += sorted(glob.glob(os.path.join(base, "cu*", "include")), reverse=True)
            cands.append(os.path.join(base, "cuda_runtime", "include"))
    except ImportError:
        pass
    out = []
    for d in cands:
        if os.path.isfile(os.path.join(d, "cuda_fp16.h")) and d not in out:
            out.append(d)
    return tuple(out)


def compile_options(with_cuda_headers: bool = False) -> Tuple[str, ...]:
    """NVRTC options: C++17 and the kernels' own include directory (common.cuh). CuPy puts the CUDA
    headers matching its NVRTC on the path itself; only when that fails (cuda_fp16.h not found) are the
    headers found by :func:`cuda_include_dirs` added."""
    extra = tuple(f"-I{d}" for d in cuda_include_dirs()[:1]) if with_cuda_headers else ()
    return ("-std=c++17", f"-I{L.kernels_dir()}") + extra


def module(fname: str, dtype: str):
    """The RawModule of one kernel file's ``dtype`` instantiations on the current device (compiled on first
    use: a float32 caller never waits for the float16 and float64 code)."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), fname, dtype)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            with open(os.path.join(L.kernels_dir(), fname), encoding="utf-8") as f:
                code = f.read()
            exprs = L.name_expressions(fname, (dtype,))
            mod = cupy.RawModule(code=code, options=compile_options(), name_expressions=exprs)
            try:
                mod.compile()
            except cupy.cuda.compiler.CompileException as e:
                if "cuda_fp16.h" not in str(e) or not cuda_include_dirs():
                    raise
                mod = cupy.RawModule(code=code, options=compile_options(True), name_expressions=exprs)
                mod.compile()
            _modules[key] = mod
    return mod


_functions: Dict[Tuple[int, str], object] = {}


def function(fname: str, kernel: str):
    """The kernel ``kernel`` (a name expression) of file ``fname`` on the current device, memoized."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), kernel)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = module(fname, L.dtype_of(kernel)).get_function(kernel)
    return fn


def run_plan(plan: L.Plan, inputs):
    import cupy

    def launch(lc: L.Launch, args):
        function(lc.file, lc.kernel)(lc.grid, lc.block, args, shared_mem=lc.shared_mem)

    return L.execute(plan, inputs, lambda shape, dt: cupy.empty(shape, dtype=dt), launch, _dummy)


_dummies: Dict[tuple, object] = {}


def _dummy(shape, dtype):
    """One never-accessed buffer per device, shape and dtype (saves an allocation per call)."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), tuple(shape), dtype)
    buf = _dummies.get(key)
    if buf is None:
        buf = _dummies[key] = cupy.empty(shape, dtype=dtype)
    return buf


_plans: Dict[tuple, L.Plan] = {}
_PLAN_CACHE_SIZE = 4096


def plan(spec, algo: str, version: Optional[int], variant: Optional[str]) -> L.Plan:
    """The launch plan, memoized per spec (a plan is pure arithmetic on the spec)."""
    key = (spec, algo, version, variant, L._force_index64)
    p = _plans.get(key)
    if p is None:
        p = L.plan_for(spec, algo, version, variant)
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = p
    return p


def run(spec, algo, *arrays, version: Optional[int] = None, variant: Optional[str] = None, **_ignored):
    """Run ``spec`` (conv: x, w, b-or-None; pools: x) with the given kernel version (default: shipped) and
    variant (default: the one measured fastest for this spec on this device, see :func:`choose`)."""
    if variant is None and version is None and L.variants(algo):
        variant = tuned_variant(spec, algo)
    return run_plan(plan(spec, algo, version, variant), L.inputs_for(spec, arrays))


def implementations():
    return L.implementations("cuda", run)


# ---------------------------------------------------------------------------------------------------
# Choosing by measurement (algo="auto", and the tile of algorithms that have several)
# ---------------------------------------------------------------------------------------------------
from . import _autotune  # noqa: E402  (stdlib only; kept beside its one user)

_cache: Optional[_autotune.DiskCache] = None
_cache_lock = threading.Lock()
_source_hash: Optional[str] = None
#: how many times candidates were measured in this process (tests read it)
measure_count = 0


def tune_cache() -> _autotune.DiskCache:
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = _autotune.DiskCache(_autotune.default_path("cuda"))
        return _cache


def reset_tuning() -> None:
    """Forget the in-memory choices and re-read the cache file on next use (tests; a changed env var)."""
    global _cache
    with _cache_lock:
        _cache = None


def kernels_source_hash() -> str:
    """A hash of every kernel source, so choices made with older kernels are not reused."""
    global _source_hash
    if _source_hash is None:
        import hashlib
        h = hashlib.sha256()
        d = L.kernels_dir()
        for name in sorted(os.listdir(d)):
            if name.endswith((".cu", ".cuh")):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
        _source_hash = h.hexdigest()[:16]
    return _source_hash


_device_tags: Dict[int, str] = {}


def _device_tag() -> str:
    """GPU name and compute capability of the current device (memoized: the query costs a millisecond)."""
    import cupy
    dev_id = cupy.cuda.runtime.getDevice()
    tag = _device_tags.get(dev_id)
    if tag is None:
        props = cupy.cuda.runtime.getDeviceProperties(dev_id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        tag = _device_tags[dev_id] = f"{name}|sm_{cupy.cuda.Device(dev_id).compute_capability}"
    return tag


_tune_keys: Dict[tuple, str] = {}


def tune_key(spec, candidates) -> str:
    """The cache key: device, kernel sources, spec and the candidates (memoized per spec and device)."""
    k = (spec, tuple(candidates), L._force_index64, _device_tag())
    key = _tune_keys.get(k)
    if key is None:
        if len(_tune_keys) >= _PLAN_CACHE_SIZE:
            _tune_keys.clear()
        key = _tune_keys[k] = "|".join([k[3], kernels_source_hash(), repr(spec.key()), ",".join(candidates),
                                        "index64" if L._force_index64 else ""])
    return key


def _candidates(spec, algos) -> list:
    """``algo`` or ``algo/variant`` for every supported algorithm and each of its variants."""
    out = []
    for algo in algos:
        vs = L.variants(algo)
        out += [f"{algo}/{v}" for v in vs] if vs else [algo]
    return out


def _split(choice: str):
    algo, _, variant = choice.partition("/")
    return algo, (variant or None)


def _synthetic(spec):
    import cupy
    rng = cupy.random.default_rng(0)
    dt = spec.dtype

    def rand(shape):
        return rng.standard_normal(shape, dtype=cupy.float32).astype(dt)

    if spec.op != "conv":
        return (rand(spec.input_shape),)
    return (rand(spec.input_shape), rand(spec.weight_shape), rand((spec.K,)) if spec.has_bias else None)


def measure(spec, candidates, batches: int = 3, per_batch: int = 4) -> Dict[str, float]:
    """Milliseconds per run of each candidate on synthetic inputs: CUDA events around ``per_batch`` runs
    queued back to back (so the GPU is not left idle while the host prepares the next launch, which would
    add the same host time to every candidate and blur the differences), median over ``batches``."""
    import cupy
    global measure_count
    measure_count += 1
    arrays = _synthetic(spec)
    inputs = L.inputs_for(spec, arrays)
    times = {}
    for cand in candidates:
        algo, variant = _split(cand)
        p = plan(spec, algo, None, variant)
        run_plan(p, inputs)  # compiles on first use, warms the caches
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        samples = []
        for _ in range(batches):
            start.record()
            for _ in range(per_batch):
                run_plan(p, inputs)
            stop.record()
            stop.synchronize()
            samples.append(cupy.cuda.get_elapsed_time(start, stop) / per_batch)
        samples.sort()
        times[cand] = samples[len(samples) // 2]
    return times


def tuned(spec, candidates) -> str:
    """The fastest of ``candidates`` for ``spec`` on this device: from the cache, else measured once."""
    if len(candidates) == 1 or not _autotune.enabled():
        return candidates[0]
    cache = tune_cache()
    key = tune_key(spec, candidates)
    entry = cache.get(key)
    if entry is not None and entry["choice"] in candidates:
        return entry["choice"]
    import cupy
    with _measure_lock:  # one measurement at a time: concurrent ones would time each other
        entry = cache.get(key)
        if entry is not None and entry["choice"] in candidates:
            return entry["choice"]
        try:
            times = measure(spec, candidates)
        except cupy.cuda.memory.OutOfMemoryError:
            # no room for a second copy of the problem: run the default now, measure on a later call
            return candidates[0]
        choice = min(times, key=times.get)
        cache.put(key, {"choice": choice, "ms": times})
        # the same times also answer "which tile of algo A" for each algorithm measured here
        for algo in {_split(c)[0] for c in candidates}:
            own = [c for c in candidates if _split(c)[0] == algo]
            if len(own) > 1 and len(own) < len(candidates):
                sub = {c: times[c] for c in own}
                cache.put(tune_key(spec, own), {"choice": min(sub, key=sub.get), "ms": sub})
    return choice


_measure_lock = threading.Lock()


def tuned_variant(spec, algo: str) -> str:
    return _split(tuned(spec, _candidates(spec, [algo])))[1]


def choose(spec, impls):
    """algo="auto": the measured fastest of the supported algorithms and their variants (cached per spec
    and device, in memory and on disk); with ``FASTCONV_AUTOTUNE=0``, the first supported candidate in
    the backend's priority order (each algorithm at its first variant)."""
    cands = _candidates(spec, [i.algo for i in impls])
    algo, _ = _split(tuned(spec, cands))
    for impl in impls:
        if impl.algo == algo:
            return impl
    return impls[0]
