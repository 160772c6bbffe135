"""Backend "cuda-emu": fastconv's CUDA kernels (kernels/*.cu) run on the CPU by :mod:`fastconv.emu`.

The same source, name expressions and launch plans as backend "cuda" (:mod:`fastconv._cuda`); arrays are
NumPy. Each kernel file is compiled once per process with every instantiation a plan can ask for (the
emulator keeps built modules on disk, keyed by source and flags). The thread order (forward, reverse,
random) is ``$FASTCONV_EMU_ORDER`` unless :func:`execute` is given one; tests run every kernel in all three,
so a missing ``__syncthreads`` shows up as results that differ between orders. There is no ``choose``:
with several supported candidates the first in priority order runs (measuring emulated kernels would say
nothing about a GPU).
"""
from __future__ import annotations

import threading
from typing import Dict, Optional

import numpy as np

from .. import _config, _cuda
from .._cuda.plan import Plan, execute as execute_plan, kernels_dir

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
            kdir = kernels_dir()
            mod = EmuModule(path=f"{kdir}/{fname}", name_expressions=_cuda.name_expressions(fname),
                            include_dirs=(kdir,))
            _modules[fname] = mod
    return mod


def _poisoned(shape, dtype):
    """Output and workspace buffers start as NaN (floats) or the most negative integer (indices), so an
    element a kernel forgets to write cannot pass for a result."""
    dtype = np.dtype(dtype)
    fill = np.nan if dtype.kind == "f" else np.iinfo(dtype).min
    return np.full(shape, fill, dtype=dtype)


def execute(plan: Plan, inputs, *, order: Optional[str] = None, seed: int = 0):
    """Run a plan on NumPy ``inputs`` (named as :func:`fastconv._cuda.plan.inputs_for` names them) in the
    given thread order (default ``$FASTCONV_EMU_ORDER``, else forward)."""
    order = order or _config.emu_order()

    def launch(lc, args):
        fn = module(lc.file).get_function(lc.kernel)
        fn(lc.grid, lc.block, args, shared_mem=lc.shared_mem, order=order, seed=seed)

    return execute_plan(plan, inputs, _poisoned, launch)


def implementations():
    return _cuda.implementations("cuda-emu", execute)
