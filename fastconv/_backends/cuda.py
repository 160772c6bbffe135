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


def module(fname: str):
    """The RawModule of one kernel file on the current device (compiled on first use)."""
    import cupy
    key = (cupy.cuda.Device().id, fname)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            with open(os.path.join(L.kernels_dir(), fname), encoding="utf-8") as f:
                code = f.read()
            exprs = L.name_expressions(fname)
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


def run_plan(plan: L.Plan, inputs):
    import cupy

    def launch(lc: L.Launch, args):
        fn = module(lc.file).get_function(lc.kernel)
        fn(lc.grid, lc.block, args, shared_mem=lc.shared_mem)

    return L.execute(plan, inputs, lambda shape, dt: cupy.empty(shape, dtype=dt), launch)


def run(spec, algo, *arrays, version: Optional[int] = None, **_ignored):
    """Run ``spec`` (conv: x, w, b-or-None; pools: x) with the given kernel version (default: shipped)."""
    return run_plan(L.plan_for(spec, algo, version), L.inputs_for(spec, arrays))


def implementations():
    return L.implementations("cuda", run)
