"""Every environment variable fastconv reads, in one table; nothing else in the package reads ``os.environ``.

Values are read when asked for (never cached at import), so a test or a user can change one mid-process.
README.md's "Environment variables" table is this table: ``python -m fastconv._config`` prints it as Markdown.

``scope`` says who reads the variable: ``library`` (the package itself), ``tests`` (the test suite and the
benchmarks under pytest), or ``other`` (variables of the tools fastconv drives -- the compiler, Numba, CuPy,
BLAS -- that fastconv reads too, to find a toolkit or to report a setting).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Var:
    name: str
    scope: str        # "library", "tests" or "other"
    default: str      # what an unset variable means, in words
    doc: str


VARS: Tuple[Var, ...] = (
    Var("FASTCONV_AUTOTUNE", "library", "`1`: measure",
        "`0`: `algo=\"auto\"` measures nothing and runs the first supported implementation in priority order"),
    Var("FASTCONV_AUTOTUNE_CACHE", "library", "`~/.cache/fastconv/autotune-cuda.json`",
        "file of the `cuda` backend's measured choices; empty: keep them in memory only"),
    Var("FASTCONV_SHAPES", "library", "the tables shipped in `fastconv/bench/shapes`",
        "directory of standard layer shape tables (`*.csv`) for `fastconv bench`"),
    Var("FASTCONV_EMU_CACHE", "library", "`~/.cache/fastconv/emu`", "where the emulator keeps built kernels"),
    Var("FASTCONV_EMU_ORDER", "library", "`forward`",
        "thread order of emulated launches: `forward`, `reverse`, `random` or `all` (every order, compared)"),
    Var("FASTCONV_EMU_GUARD", "library", "`0`",
        "`1`: emulated kernels run on guarded copies of their buffers (`start`: guard page before each)"),
    Var("FASTCONV_EMU_TIMEOUT", "library", "none", "seconds after which an emulated launch fails"),
    Var("FASTCONV_EMU_WORKERS", "library", "all cores", "OS threads an emulated launch runs its blocks on"),
    Var("FASTCONV_EMU_FIBERS", "library", "`asm` on x86-64, else `ucontext`", "the emulator's fiber switch"),
    Var("FASTCONV_FUZZ", "tests", "`ci`", "`long`: the fuzz tests' long profile (random seeds, bigger shapes)"),
    Var("FASTCONV_FUZZ_EXAMPLES", "tests", "per profile", "hypothesis examples per fuzz test"),
    Var("FASTCONV_COMPILE_ARCHS", "tests", "`sm_70,sm_90`",
        "architectures `tests/cuda/test_compile.py` compiles every kernel file for with NVRTC: `all` for every "
        "claimed one (sm_70, sm_75, sm_80, sm_86, sm_90), or a comma-separated list; the default covers both "
        "NVRTCs (CUDA 12's for sm_70, CUDA 13's) at the oldest and newest targets"),
    Var("FASTCONV_REQUIRE_GPU", "tests", "`0`", "`1`: a missing GPU fails the CUDA tests instead of skipping"),
    Var("FASTCONV_CUPY_NO_POOL", "tests", "`0`",
        "`1`: CuPy allocates every array with cudaMalloc (so compute-sanitizer sees each buffer's bounds)"),
    Var("FASTCONV_BENCH_FULL", "tests", "`0`", "`1`: `pytest benchmarks` runs the full suite instead of quick"),
    Var("FASTCONV_BENCH_THREADS", "tests", "library defaults",
        "CPU threads for numba and torch in `pytest benchmarks`"),
    Var("CXX", "other", "`g++`", "the C++ compiler the emulator builds kernels with"),
    Var("NUMBA_CACHE_DIR", "other", "`__pycache__` beside the package",
        "Numba's kernel cache (shown by `fastconv info`)"),
    Var("CUPY_CACHE_DIR", "other", "`~/.cupy/kernel_cache`", "CuPy's kernel cache (shown by `fastconv info`)"),
    Var("CUDA_PATH", "other", "unset", "a CUDA toolkit whose headers NVRTC may need (also `CUDA_HOME`)"),
    Var("CUDA_HOME", "other", "unset", "as `CUDA_PATH`"),
    Var("OPENBLAS_NUM_THREADS", "other", "all cores",
        "threads of NumPy's BLAS (numba's im2col GEMM); recorded by `fastconv bench`"),
    Var("OMP_NUM_THREADS", "other", "all cores", "as `OPENBLAS_NUM_THREADS`, for OpenMP builds of BLAS and for torch"),
    Var("MKL_NUM_THREADS", "other", "all cores", "as `OPENBLAS_NUM_THREADS`, for MKL builds of NumPy"),
)

_BY_NAME = {v.name: v for v in VARS}


def get(name: str) -> Optional[str]:
    """The variable's value now, or None when unset (an empty value is returned as "")."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not in fastconv._config.VARS; add it there (with its README row) first")
    return os.environ.get(name)


def flag(name: str, default: bool = False) -> bool:
    """A 0/1 switch: unset or empty gives ``default``; "0" is False, anything else True."""
    v = get(name)
    if not v:
        return default
    return v != "0"


# ---------------------------------------------------------------------------------------------------
# The library's own settings, by meaning (callers ask these, not get())
# ---------------------------------------------------------------------------------------------------
def autotune_enabled() -> bool:
    return flag("FASTCONV_AUTOTUNE", True)


def autotune_path(backend: str) -> Optional[str]:
    """The file a backend's measured choices live in; None: memory only (FASTCONV_AUTOTUNE_CACHE="")."""
    env = get("FASTCONV_AUTOTUNE_CACHE")
    if env is not None:
        return env or None
    return os.path.join(os.path.expanduser("~"), ".cache", "fastconv", f"autotune-{backend}.json")


def emu_cache_dir() -> str:
    return get("FASTCONV_EMU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastconv", "emu")


def emu_order() -> str:
    return get("FASTCONV_EMU_ORDER") or "forward"


def emu_guard():
    """False, True (guard page after each buffer) or "start"/"end" as given."""
    g = get("FASTCONV_EMU_GUARD") or False
    return {"0": False, "1": True}.get(g, g)


def emu_timeout() -> float:
    return float(get("FASTCONV_EMU_TIMEOUT") or 0)


def emu_workers() -> int:
    return int(get("FASTCONV_EMU_WORKERS") or 0)


def markdown() -> str:
    """The README's table."""
    rows = ["| variable | read by | unset means | what it does |", "|---|---|---|---|"]
    rows += [f"| `{v.name}` | {v.scope} | {v.default} | {v.doc} |" for v in VARS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
