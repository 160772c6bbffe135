"""Backend "cuda": fastconv's CUDA kernels (kernels/*.cu) through ``cupy.RawModule``.

Arrays are CuPy arrays on the current device; kernels run on the current stream. Each kernel file becomes
one RawModule holding every instantiation the launcher (:mod:`._cuda_launch`) can ask for; modules are
built lazily, on first use, and memoized per device (CuPy's disk cache keeps the compiled code across
processes). Launch geometry, parameter structs and index types all come from :mod:`._cuda_launch`, shared
with the emulator backend "cuda-emu".
"""
from __future__ import annotations

import os
import threading
from importlib import resources
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


def kernels_dir() -> str:
    return str(resources.files("fastconv.kernels"))


def compile_options() -> Tuple[str, ...]:
    """NVRTC options: C++17 and the kernels' own include directory (for common.cuh)."""
    return ("-std=c++17", f"-I{kernels_dir()}")


def module(fname: str):
    """The RawModule of one kernel file on the current device (compiled on first use)."""
    import cupy
    key = (cupy.cuda.Device().id, fname)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            with open(os.path.join(kernels_dir(), fname), encoding="utf-8") as f:
                code = f.read()
            mod = cupy.RawModule(code=code, options=compile_options(),
                                 name_expressions=L.name_expressions(fname))
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
