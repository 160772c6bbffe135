"""CPU emulator for CUDA C kernels: run the .cu files CuPy's RawModule compiles, on the CPU.

    from fastconv.emu import EmuModule, EmuError, available
    mod = EmuModule(path="k.cu", options=("-DFOO=1",), name_expressions=("k<float>",))
    mod.get_function("k<float>")(grid, block, (x, y, np.int32(n)), shared_mem=0, order="random")

See README.md in this directory for the design, knobs, timings and limitations.
"""
from ._build import available as _available
from ._build import stats as _stats
from ._errors import EmuError
from ._guard import Reserved
from ._module import EmuFunction, EmuModule

__all__ = ["EmuModule", "EmuFunction", "EmuError", "Reserved", "available", "build_stats"]


def available():
    """(ok, reason): whether kernels can be emulated here (Linux, a g++; x86-64 or ucontext)."""
    return _available()


def build_stats():
    """Counters since import: module_builds, runtime_builds, cache_hits, rebuilt_corrupt."""
    return dict(_stats)
