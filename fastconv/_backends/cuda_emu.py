"""Backend "cuda-emu": fastconv's CUDA kernels (kernels/*.cu) run on the CPU by :mod:`fastconv.emu`.

The same source, name expressions and launch plans as backend "cuda" (:mod:`._cuda_launch`); arrays are
NumPy. Each kernel file is compiled once per process with every instantiation the launcher can ask for
(the emulator keeps built modules on disk, keyed by source and flags). ``order`` (forward, reverse,
random) is the emulator's thread order; tests run every kernel in all three, so a missing
``__syncthreads`` shows up as results that differ between orders.
"""
from __future__ import annotations

import threading
from typing import Dict, Optional

import numpy as np

from . import _cuda_launch as L

_modules: Dict[str, object] = {}
_lock = threading.Lock()


def availability() -> Optional[str]:
    try:
        from fastconv import emu
    except ImportError as e:
        return f"the emulator (fastconv.emu) cannot be imported: {e}"
    ok, reason = emu.available()
    return None if ok else f"the CUDA emulator cannot run here: {reason}"


def module(fname: str):
    """The emulated module of one kernel file, built (or loaded from the disk cache) on first use. Every
    dtype in one build: the tests use them all, and one g++ run is cheaper than three."""
    with _lock:
        mod = _modules.get(fname)
        if mod is None:
            from fastconv.emu import EmuModule
            kdir = L.kernels_dir()
            mod = EmuModule(path=f"{kdir}/{fname}", name_expressions=L.name_expressions(fname),
                            include_dirs=(kdir,))
            _modules[fname] = mod
    return mod


def run_plan(plan: L.Plan, inputs, *, order: str = "forward", seed: int = 0):
    def launch(lc: L.Launch, args):
        fn = module(lc.file).get_function(lc.kernel)
        fn(lc.grid, lc.block, args, shared_mem=lc.shared_mem, order=order, seed=seed)

    return L.execute(plan, inputs, _poisoned, launch)


def _poisoned(shape, dtype):
    """Output and workspace buffers start as NaN (floats) or the most negative integer (indices), so an
    element a kernel forgets to write cannot pass for a result."""
    dtype = np.dtype(dtype)
    fill = np.nan if dtype.kind == "f" else np.iinfo(dtype).min
    return np.full(shape, fill, dtype=dtype)


def run(spec, algo, *arrays, version: Optional[int] = None, variant: Optional[str] = None,
        order: str = "forward", seed: int = 0):
    """Run ``spec`` (conv: x, w, b-or-None; pools: x) with the given kernel version, variant (tile shape)
    and thread order."""
    return run_plan(L.plan_for(spec, algo, version, variant), L.inputs_for(spec, arrays), order=order,
                    seed=seed)


def implementations():
    return L.implementations("cuda-emu", run)
