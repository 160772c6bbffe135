"""Backend "cuda": fastconv's CUDA kernels (kernels/*.cu) through ``cupy.RawModule``.

Arrays are CuPy arrays on the current device; kernels run on the current stream. Each kernel file becomes
one RawModule per storage dtype holding every instantiation a plan can ask for; modules are built lazily,
on first use, and memoized per device (CuPy's disk cache keeps the compiled code across processes).
What to launch comes from the kernel families (:mod:`fastconv._cuda`), shared with "cuda-emu"; this module
only compiles, allocates, launches and times.

``algo="auto"`` (and a named algorithm with several variants) is decided by measurement
(:mod:`fastconv._tune`): every supported candidate is timed once per spec and GPU with CUDA events
(median of 3 batches of 4 back-to-back runs) and the winner is kept in memory and in
``$FASTCONV_AUTOTUNE_CACHE`` (default ``~/.cache/fastconv/autotune-cuda.json``). The key names the GPU and
its compute capability, a hash of the kernel sources, the spec and the candidates.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import threading
from typing import Dict, Optional, Tuple

from .. import _config, _cuda, _timing, _tune, _warmup
from .._cuda import plan as P

_modules: Dict[Tuple[int, str, str], object] = {}
_lock = threading.Lock()
_availability: Optional[Tuple[Optional[str]]] = None


def availability() -> Optional[str]:
    """None when CuPy and a CUDA device are usable. Asked once per process: dispatch asks on every call, and
    the answer (a driver query) does not change while a process runs."""
    global _availability
    if _availability is None:
        _availability = (_probe(),)
    return _availability[0]


def _probe() -> Optional[str]:
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
    cands = [os.path.join(_config.get(v), "include") for v in ("CUDA_PATH", "CUDA_HOME") if _config.get(v)]
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
    return ("-std=c++17", f"-I{P.kernels_dir()}") + extra


def _cache_phrase() -> str:
    return f"each kernel file compiles once per dtype and GPU and is cached in {_config.cupy_cache_dir()}"


#: how each module of :data:`_modules` came to be: "compiled" (its build ran past ``_warmup.SLOW_S``: NVRTC)
#: or "cached" (loaded from CuPy's cache in milliseconds); read by ``fastconv warmup``
built: Dict[Tuple[int, str, str], str] = {}


def module(fname: str, dtype: str):
    """The RawModule of one kernel file's ``dtype`` instantiations on the current device (compiled on first
    use: a float32 caller never waits for the float16 and float64 code). A build that runs past
    ``_warmup.SLOW_S`` is NVRTC compiling (a load from CuPy's cache takes milliseconds): said once per
    process (:mod:`fastconv._warmup`)."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), fname, dtype)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            with open(os.path.join(P.kernels_dir(), fname), encoding="utf-8") as f:
                code = f.read()
            exprs = _cuda.name_expressions(fname, (dtype,))
            with _warmup.compiling("cuda", f"kernels of {fname} ({dtype}) with NVRTC", _cache_phrase,
                                   after=_warmup.SLOW_S) as c:
                mod = cupy.RawModule(code=code, options=compile_options(), name_expressions=exprs)
                try:
                    mod.compile()
                except cupy.cuda.compiler.CompileException as e:
                    if "cuda_fp16.h" not in str(e) or not cuda_include_dirs():
                        raise
                    mod = cupy.RawModule(code=code, options=compile_options(True), name_expressions=exprs)
                    mod.compile()
            _modules[key] = mod
            built[key] = "compiled" if c.slow else "cached"
    return mod


_functions: Dict[Tuple[int, str], object] = {}


def function(fname: str, kernel: str):
    """The kernel ``kernel`` (a name expression) of file ``fname`` on the current device, memoized."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), kernel)
    fn = _functions.get(key)
    if fn is None:
        fn = _functions[key] = module(fname, P.dtype_of(kernel)).get_function(kernel)
    return fn


_dummies: Dict[tuple, object] = {}


def _dummy(shape, dtype):
    """One never-accessed buffer per device, shape and dtype (saves an allocation per call)."""
    import cupy
    key = (cupy.cuda.runtime.getDevice(), tuple(shape), dtype)
    buf = _dummies.get(key)
    if buf is None:
        buf = _dummies[key] = cupy.empty(shape, dtype=dtype)
    return buf


def execute(plan: P.Plan, inputs):
    """Run a plan on CuPy ``inputs`` on the current device and stream."""
    import cupy

    def launch(lc: P.Launch, args):
        function(lc.file, lc.kernel)(lc.grid, lc.block, args, shared_mem=lc.shared_mem)

    return P.execute(plan, inputs, lambda shape, dt: cupy.empty(shape, dtype=dt), launch, _dummy)


def implementations():
    return _cuda.implementations("cuda", execute)


# ---------------------------------------------------------------------------------------------------
# Choosing by measurement
# ---------------------------------------------------------------------------------------------------
def _cupy():
    import cupy
    return cupy


def _event_seconds(fn) -> float:
    """Seconds per run: CUDA events around 4 runs queued back to back, median of 3 batches (back-to-back
    runs keep the GPU busy while the host prepares the next launch, which would add the same host time to
    every candidate and blur the differences)."""
    return _timing.median(_timing.event_times(fn, repeat=3, per_batch=4))


TUNER = _tune.Tuner("cuda", persist=True, time_one=_event_seconds, xp=_cupy,
                    unmeasurable=lambda: (_cupy().cuda.memory.OutOfMemoryError,))

_source_hash: Optional[str] = None


def kernels_source_hash() -> str:
    """A hash of every kernel source, so choices made with older kernels are not reused."""
    global _source_hash
    if _source_hash is None:
        h = hashlib.sha256()
        d = P.kernels_dir()
        for name in sorted(os.listdir(d)):
            if name.endswith((".cu", ".cuh")):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
        _source_hash = h.hexdigest()[:16]
    return _source_hash


_device_tags: Dict[int, str] = {}


def device_tag() -> str:
    """GPU name and compute capability of the current device (memoized: the query costs a millisecond)."""
    import cupy
    dev_id = cupy.cuda.runtime.getDevice()
    tag = _device_tags.get(dev_id)
    if tag is None:
        props = cupy.cuda.runtime.getDeviceProperties(dev_id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        tag = _device_tags[dev_id] = f"{name}|sm_{cupy.cuda.Device(dev_id).compute_capability}"
    return tag


def tune_context() -> str:
    """What a measured choice depends on besides the spec and the candidates: the GPU and the kernels."""
    return "|".join([device_tag(), kernels_source_hash(), "index64" if P._force_index64 else ""])


def choose(spec, impls, arrays=None):
    """Among several supported candidates: the measured fastest for this spec on this GPU (see the module
    docstring), measured on the caller's ``arrays`` where they fit; with ``FASTCONV_AUTOTUNE=0``, the
    first in priority order."""
    if not _config.autotune_enabled():
        return impls[0]
    return TUNER.choose(tune_context(), spec, impls, arrays)
