"""Every environment variable fastconv reads, in one table; nothing else in the package reads ``os.environ``.

Values are read when asked for (never cached at import), so a test or a user can change one mid-process.
README.md's "Environment variables" table is this table: ``python -m fastconv._config`` prints it as Markdown.

``scope`` says who reads the variable: ``library`` (the package itself), ``tests`` (the test suite and the
benchmarks under pytest), or ``other`` (variables of the tools fastconv drives -- the compiler, Numba, CuPy,
BLAS -- that fastconv reads too, to find a toolkit or to report a setting).

Every variable has a parser, and every read goes through it (:func:`get` and :func:`value`): a value the
variable does not take raises ValueError naming the variable, the value and the values it takes, wherever
it is read. An unset or empty variable means its default (``FASTCONV_AUTOTUNE_CACHE`` alone gives the empty
value a meaning: memory only).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from typing import Callable, Optional, Tuple


# ---------------------------------------------------------------------------------------------------
# Parsers: the raw string -> what it means; a value the variable does not take raises ValueError(why)
# ---------------------------------------------------------------------------------------------------
def _switch(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError("not 0 or 1")
    return raw == "1"


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError("not one of the listed values")
        return raw
    return parse


def _integer(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            raise ValueError("not an integer")
        n = int(raw)
        if not lo <= n <= hi:
            raise ValueError(f"out of range [{lo}, {hi}]")
        return n
    return parse


def _integers(raw: str) -> Tuple[int, ...]:
    """OpenMP's form: one positive integer, or a comma-separated list of them (threads per nesting level)."""
    return tuple(_integer(1, 2**31 - 1)(part) for part in raw.split(","))


#: the longest emulator timeout that means a time: the runtime's watchdog waits on std::chrono's
#: nanosecond clock (int64: 9.2e9 s), so longer values, and ``inf``, mean no timeout (none is 0 below)
EMU_TIMEOUT_MAX = 1e9


def _watchdog_seconds(t: float) -> float:
    """The one rule for an emulator timeout: a number >= 0; 0, ``inf`` and anything from EMU_TIMEOUT_MAX
    on mean none (0, what the runtime's watchdog takes as none)."""
    if math.isnan(t) or t < 0:
        raise ValueError("not a number >= 0")
    return 0.0 if t >= EMU_TIMEOUT_MAX else t


def _seconds(raw: str) -> float:
    try:
        t = float(raw)
    except ValueError:
        raise ValueError("not a number") from None
    return _watchdog_seconds(t)


def _directory(raw: str) -> str:
    """A directory path (need not exist yet: it is created on use); an existing non-directory is refused."""
    if os.path.exists(raw) and not os.path.isdir(raw):
        raise ValueError("exists and is not a directory")
    return raw


def _existing_directory(raw: str) -> str:
    if not os.path.isdir(raw):
        raise ValueError("is not a directory")
    return raw


def _file(raw: str) -> str:
    """A file path (need not exist yet); an existing directory is refused. Empty: see the variable."""
    if raw and os.path.isdir(raw):
        raise ValueError("is a directory")
    return raw


def _program(raw: str) -> str:
    if shutil.which(raw) is None:
        raise ValueError("not found on PATH, or not executable")
    return raw


_ARCH = re.compile(r"sm_\d{2,3}")


def _archs(raw: str) -> str:
    raw = raw.strip()
    if raw != "all" and not all(_ARCH.fullmatch(a.strip()) for a in raw.split(",")):
        raise ValueError("not `all` or a list of sm_XX")
    return raw


@dataclasses.dataclass(frozen=True)
class Var:
    name: str
    scope: str        # "library", "tests" or "other"
    default: str      # what an unset variable means, in words
    doc: str
    takes: str        # the values it takes, in words (error messages and the README)
    parse: Callable[[str], object]   # raw -> meaning; raises ValueError(why) for a value it does not take


def _name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", raw):
        raise ValueError("not a name (letters, digits, underscores)")
    return raw


_POSITIVE = "a positive integer"
_THREADS = "a positive integer (or, as OpenMP reads it, a comma-separated list of them)"

VARS: Tuple[Var, ...] = (
    Var("FASTCONV_AUTOTUNE", "library", "`1`: measure",
        "`0`: `algo=\"auto\"` measures nothing and runs the first supported implementation in priority order",
        "`0` or `1`", _switch),
    Var("FASTCONV_AUTOTUNE_CACHE", "library", "`~/.cache/fastconv/autotune-cuda.json`",
        "file of the `cuda` backend's measured choices; empty: keep them in memory only",
        "a file path (not a directory), or empty", _file),
    Var("FASTCONV_SHAPES", "library", "the tables shipped in `fastconv/bench/shapes`",
        "directory of standard layer shape tables (`*.csv`) for `fastconv bench`",
        "an existing directory", _existing_directory),
    Var("FASTCONV_EMU_CACHE", "library", "`~/.cache/fastconv/emu`", "where the emulator keeps built kernels",
        "a directory path (created if missing; not a file)", _directory),
    Var("FASTCONV_EMU_ORDER", "library", "`forward`",
        "thread order of emulated launches: `forward`, `reverse`, `random` or `all` (every order, compared)",
        "`forward`, `reverse`, `random` or `all`", _choice("forward", "reverse", "random", "all")),
    Var("FASTCONV_EMU_GUARD", "library", "`0`",
        "`1`: emulated kernels run on guarded copies of their buffers (`start`: guard page before each)",
        "`0`, `1`, `end` (as `1`) or `start`", _choice("0", "1", "end", "start")),
    Var("FASTCONV_EMU_TIMEOUT", "library", "none", "seconds after which an emulated launch fails",
        "a number of seconds >= 0 (`0`, `inf` or anything from `1e9` on: none)", _seconds),
    Var("FASTCONV_EMU_WORKERS", "library", "all cores", "OS threads an emulated launch runs its blocks on",
        "an integer from 0 (all cores) to 2147483647", _integer(0, 2**31 - 1)),
    Var("FASTCONV_EMU_FIBERS", "library", "`asm` on x86-64, else `ucontext`", "the emulator's fiber switch",
        "`asm` or `ucontext`", _choice("asm", "ucontext")),
    Var("FASTCONV_QUIET", "library", "`0`: say it",
        "`1`: no line on stderr when a kernel compiles on its first call in a process (the `fastconv` logger "
        "still records each compile at INFO)", "`0` or `1`", _switch),
    Var("FASTCONV_MEMO", "library", "`1`: remember",
        "`0`: the ops remember nothing per argument signature (each call validates its arguments and asks "
        "every implementation its reasons again; for debugging: results are the same)", "`0` or `1`", _switch),
    Var("FASTCONV_FUZZ", "tests", "`ci`", "`long`: the fuzz tests' long profile (random seeds, bigger shapes)",
        "`ci` or `long`", _choice("ci", "long")),
    Var("FASTCONV_FUZZ_EXAMPLES", "tests", "per profile", "hypothesis examples per fuzz test",
        _POSITIVE, _integer(1, 2**31 - 1)),
    Var("FASTCONV_COMPILE_ARCHS", "tests", "`sm_70,sm_90`",
        "architectures `tests/cuda/test_compile.py` compiles every kernel file for with NVRTC: `all` for every "
        "claimed one (sm_70, sm_75, sm_80, sm_86, sm_90), or a comma-separated list; the default covers both "
        "NVRTCs (CUDA 12's for sm_70, CUDA 13's) at the oldest and newest targets",
        "`all` or a comma-separated list of `sm_XX`", _archs),
    Var("FASTCONV_REQUIRE_GPU", "tests", "`0`", "`1`: a missing GPU fails the CUDA tests instead of skipping",
        "`0` or `1`", _switch),
    Var("FASTCONV_CUPY_NO_POOL", "tests", "`0`",
        "`1`: CuPy allocates every array with cudaMalloc (so compute-sanitizer sees each buffer's bounds)",
        "`0` or `1`", _switch),
    Var("FASTCONV_BENCH_FULL", "tests", "`0`", "`1`: `pytest benchmarks` runs the full suite instead of quick, "
        "and with `--benchmark-disable` verifies the CPU layers on every runner (else numba's auto only)",
        "`0` or `1`", _switch),
    Var("FASTCONV_BENCH_THREADS", "tests", "library defaults",
        "CPU threads for numba and torch in `pytest benchmarks`", _POSITIVE, _integer(1, 2**31 - 1)),
    Var("CXX", "other", "`g++`", "the C++ compiler the emulator builds kernels with",
        "a program on PATH, or a path to one", _program),
    Var("NUMBA_CACHE_DIR", "other", "`__pycache__` beside the package",
        "Numba's kernel cache (shown by `fastconv info`); where none is writable, the numba backend runs "
        "uncached and says so once", "a directory path (created if missing; not a file)", _directory),
    Var("NUMBA_NUM_THREADS", "other", "all cores",
        "Numba's thread count; a value Numba refuses makes the numba backend unavailable (the reason names it)",
        _POSITIVE, _integer(1, 2**31 - 1)),
    Var("CUPY_CACHE_DIR", "other", "`~/.cupy/kernel_cache`", "CuPy's kernel cache (shown by `fastconv info`)",
        "a directory path (created if missing; not a file)", _directory),
    Var("CUDA_PATH", "other", "unset", "a CUDA toolkit whose headers NVRTC may need (also `CUDA_HOME`)",
        "a directory path (not a file)", _directory),
    Var("CUDA_HOME", "other", "unset", "as `CUDA_PATH`", "a directory path (not a file)", _directory),
    Var("OPENBLAS_NUM_THREADS", "other", "all cores",
        "threads of NumPy's BLAS: numba's 3-D im2col GEMMs, and the 1-D/2-D ones where the BLAS is not "
        "OpenBLAS (with OpenBLAS, fastconv's GEMM workers set 1 while they run); recorded by `fastconv bench`",
        _THREADS, _integers),
    Var("OPENBLAS_CORETYPE", "other", "OpenBLAS's own choice for the CPU",
        "the kernel family of NumPy's OpenBLAS (numba's im2col and Winograd GEMMs), read by OpenBLAS once, when "
        "NumPy is imported; `fastconv bench` records it beside the family in use (README, Threads on the CPU)",
        "an OpenBLAS core name (`Haswell`, `SkylakeX`, `Zen`, ...)", _name),
    Var("OMP_NUM_THREADS", "other", "all cores", "as `OPENBLAS_NUM_THREADS`, for OpenMP builds of BLAS and for torch",
        _THREADS, _integers),
    Var("MKL_NUM_THREADS", "other", "all cores", "as `OPENBLAS_NUM_THREADS`, for MKL builds of NumPy",
        _THREADS, _integers),
)

_BY_NAME = {v.name: v for v in VARS}


def _var(name: str) -> Var:
    v = _BY_NAME.get(name)
    if v is None:
        raise KeyError(f"{name} is not in fastconv._config.VARS; add it there (with its README row) first")
    return v


def _parsed(v: Var, raw: str):
    try:
        return v.parse(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {v.name}={raw!r} is not valid ({e}); {v.name} takes "
                         f"{v.takes}") from None


def get(name: str) -> Optional[str]:
    """The variable's value now, or None when unset (an empty value is returned as ""), after checking it:
    a value the variable does not take raises ValueError naming it and the values it takes."""
    v = _var(name)
    raw = os.environ.get(name)
    if raw:
        _parsed(v, raw)
    return raw


def value(name: str):
    """What the variable's value means (its parser's result: a bool, an int, a float, a path, ...), or
    None when unset or empty; ValueError naming it when it holds a value it does not take."""
    v = _var(name)
    raw = os.environ.get(name)
    return _parsed(v, raw) if raw else None


def flag(name: str, default: bool = False) -> bool:
    """A 0/1 switch: unset or empty gives ``default``; anything but 0 or 1 raises ValueError."""
    b = value(name)
    return default if b is None else b


# ---------------------------------------------------------------------------------------------------
# The library's own settings, by meaning (callers ask these, not get())
# ---------------------------------------------------------------------------------------------------
def autotune_enabled() -> bool:
    return flag("FASTCONV_AUTOTUNE", True)


def memo_enabled() -> bool:
    """FASTCONV_MEMO (default on): the ops remember each argument signature's problem (:mod:`fastconv._memo`)."""
    return flag("FASTCONV_MEMO", True)


def autotune_path(backend: str) -> Optional[str]:
    """The file a backend's measured choices live in; None: memory only (FASTCONV_AUTOTUNE_CACHE="")."""
    env = get("FASTCONV_AUTOTUNE_CACHE")
    if env is not None:
        return env or None
    return os.path.join(os.path.expanduser("~"), ".cache", "fastconv", f"autotune-{backend}.json")


def emu_cache_dir() -> str:
    return value("FASTCONV_EMU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastconv", "emu")


def cupy_cache_dir() -> str:
    """Where CuPy keeps compiled kernels (``$CUPY_CACHE_DIR``, else CuPy's own default)."""
    return get("CUPY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache")


def emu_order() -> str:
    return value("FASTCONV_EMU_ORDER") or "forward"


def emu_guard():
    """False, True (guard page after each buffer) or "start"/"end" as given."""
    g = value("FASTCONV_EMU_GUARD") or False
    return {"0": False, "1": True}.get(g, g)


def emu_timeout() -> float:
    """Seconds; 0 means none (also for ``inf`` and anything from :data:`EMU_TIMEOUT_MAX`)."""
    return value("FASTCONV_EMU_TIMEOUT") or 0.0


def emu_timeout_seconds(timeout) -> float:
    """A launch's ``timeout=`` argument as the emulator's watchdog takes it (0: none), by the variable's rule:
    a number >= 0; ``inf`` and anything from :data:`EMU_TIMEOUT_MAX` mean none."""
    try:
        return _watchdog_seconds(float(timeout))
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds >= 0 (0, inf or from {EMU_TIMEOUT_MAX:g} on: "
                         f"none), got {timeout!r}") from None


def emu_workers() -> int:
    return value("FASTCONV_EMU_WORKERS") or 0


def quiet() -> bool:
    """FASTCONV_QUIET=1: compiling on a first call is not said on stderr (see :mod:`fastconv._warmup`)."""
    return flag("FASTCONV_QUIET")


def markdown() -> str:
    """The README's table."""
    rows = ["| variable | read by | unset means | what it does | takes |", "|---|---|---|---|---|"]
    rows += [f"| `{v.name}` | {v.scope} | {v.default} | {v.doc} | {v.takes} |" for v in VARS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
