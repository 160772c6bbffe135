"""Building and caching emulated kernel modules.

A module is g++-compiled from the rewritten .cu source plus an appended table of kernel
descriptors, and linked with the runtime object (scheduler and fibers), which is compiled once
per cache directory and fiber backend. Both live in an on-disk cache keyed by a hash of
everything they depend on. Files are written under a temporary name and moved into place with
os.replace; every .so carries a trailer with the SHA-256 of its body, and a file whose trailer
does not match (truncated, corrupted) is rebuilt.
"""
import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time

from .. import _config, _spawn, _warmup
from .._files import atomic_write, replacing
from ._errors import EmuError

RUNTIME_VERSION = 4  # bump with any change to the runtime ABI; also part of every cache key
RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime")
HEADER = os.path.join(RUNTIME_DIR, "cuda_emu.h")
RUNTIME_SRC = os.path.join(RUNTIME_DIR, "emu_runtime.cpp")
STUB_INCLUDE = os.path.join(RUNTIME_DIR, "include")
OVERFLOW_HEADER = os.path.join(RUNTIME_DIR, "overflow_check.h")

CXXFLAGS = ("-O2", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-pthread", "-DFASTCONV_EMU=1")
FIBER_BACKENDS = ("asm", "ucontext")
#: EmuModule(check_overflow=True): compile flags (not link flags: the handlers of runtime/overflow_check.h are
#: the module's own, libubsan is never linked or loaded) that make every signed integer overflow fail the launch.
#: -O1: such builds exist to run a few blocks, and g++ -O2 takes half as long again as -O1 on the kernel files
OVERFLOW_CHECK_FLAGS = ("-O1", "-fsanitize=signed-integer-overflow", "-include", OVERFLOW_HEADER)
_TRAILER_MAGIC = b"FASTCONV-EMU-SHA256:"
_TRAILER_LEN = len(_TRAILER_MAGIC) + 32

# NVRTC options that have no meaning for the emulator. Fast-math style options are ignored on
# purpose: the emulator keeps IEEE semantics so that NaN/Inf behaviour is what tests see.
_IGNORED_OPTIONS = re.compile(
    r"^(-lineinfo|--generate-line-info|-G|--device-debug|-use_fast_math|--use_fast_math|"
    r"(-arch|--gpu-architecture|-maxrregcount|--maxrregcount|-ftz|--ftz|-prec-div|--prec-div|"
    r"-prec-sqrt|--prec-sqrt|-fmad|--fmad|-rdc|--relocatable-device-code|-dopt|--dopt)(=.*)?|"
    r"--restrict|-restrict|--extra-device-vectorization|-default-device|--device-as-default-execution-space|"
    r"-dw|--dw|-w|--disable-warnings)$"
)

lock = threading.RLock()
stats = {"module_builds": 0, "runtime_builds": 0, "cache_hits": 0, "rebuilt_corrupt": 0}


def _cache_error(d, why) -> str:
    return f"cannot use the emulator build cache {d!r} ({why}); set FASTCONV_EMU_CACHE to a writable directory"


def cache_dir():
    """The build cache directory, created if missing; EmuError naming it (and FASTCONV_EMU_CACHE) when it
    cannot be created or written, ValueError naming the variable for a value it does not take."""
    d = _config.emu_cache_dir()
    try:
        os.makedirs(d, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()      # writable (os.access says yes to root, even in /proc)
    except OSError as e:
        raise EmuError(_cache_error(d, e)) from e
    return d


def cache_problem():
    """Why the build cache cannot be used (None when it can): what every launch needs, checked the way a
    launch uses it (so it creates the directory, as a launch would)."""
    try:
        cache_dir()
    except (EmuError, ValueError) as e:
        return str(e)
    return None


def compiler():
    return _config.get("CXX") or "g++"


_compiler_ids = {}


def compiler_id():
    cxx = compiler()
    if cxx not in _compiler_ids:
        path = shutil.which(cxx)
        if path is None:
            raise EmuError(f"C++ compiler {cxx!r} not found (set CXX or install g++)")
        out = _spawn.run([path, "--version"], capture_output=True, text=True).stdout.splitlines()
        _compiler_ids[cxx] = f"{path}: {out[0] if out else '?'}"
    return _compiler_ids[cxx]


def default_backend():
    env = _config.value("FASTCONV_EMU_FIBERS")   # one of FIBER_BACKENDS, or None (ValueError naming it)
    if env:
        return env
    return "asm" if platform.machine() in ("x86_64", "AMD64") else "ucontext"


def available():
    if platform.system() != "Linux":
        return False, f"the CUDA emulator needs Linux (this is {platform.system()})"
    try:
        cid = compiler_id()
    except (EmuError, ValueError) as e:    # ValueError: a CXX value the variable does not take
        return False, str(e)
    why = cache_problem()                  # what every launch needs: a usable build cache
    if why is not None:
        return False, why
    if platform.machine() not in ("x86_64", "AMD64"):
        return True, f"{cid}; ucontext fibers ({platform.machine()})"
    return True, f"{cid}; x86-64 asm fibers"


def translate_options(options):
    """NVRTC-style options -> (g++ flags, include dirs). Unknown options raise."""
    flags, incs = [], []
    for opt in options:
        if not isinstance(opt, str):
            raise TypeError(f"option {opt!r} is not a string")
        if opt.startswith(("-D", "-U")) and len(opt) > 2:
            flags.append(opt)
        elif opt.startswith("-I") and len(opt) > 2:
            incs.append(opt[2:])
        elif re.fullmatch(r"--?std=c\+\+(03|11|14|17)", opt):
            pass  # the emulator always builds as C++17
        elif re.fullmatch(r"--?std=c\+\+20", opt):
            flags.append("-std=c++20")
        elif _IGNORED_OPTIONS.match(opt):
            pass
        else:
            raise EmuError(f"unsupported compiler option for the CUDA emulator: {opt!r}")
    return flags, incs


def _hash_text(*parts):
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def included_files(source, source_dir, include_dirs):
    """Contents of the local headers a source includes, recursively (system headers excluded)."""
    found, todo = {}, [(source, source_dir)]
    pat = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
    while todo:
        text, here = todo.pop()
        for m in pat.finditer(text):
            dirs = ([here] if m.group(1) == '"' and here else []) + list(include_dirs)
            for d in dirs:
                cand = os.path.abspath(os.path.join(d, m.group(2)))
                if os.path.isfile(cand):
                    if cand not in found:
                        try:
                            found[cand] = _read(cand)
                        except OSError:
                            break
                        todo.append((found[cand].decode(errors="replace"), os.path.dirname(cand)))
                    break
    return found


def _compile(cmd, what):
    proc = _spawn.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = proc.stderr.strip()
        if len(msg) > 6000:
            msg = msg[:3000] + "\n...\n" + msg[-3000:]
        raise EmuError(f"building {what} failed:\n$ {' '.join(cmd)}\n{msg}")


def _tmp_name(directory, suffix):
    fd, path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    return path


def _backend_flags(backend):
    if backend not in FIBER_BACKENDS:
        raise EmuError(f"fiber backend {backend!r}; expected one of {FIBER_BACKENDS}")
    return ["-DEMU_UCONTEXT=1"] if backend == "ucontext" else []


def _base_cmd(backend):
    return [compiler(), *CXXFLAGS, *_backend_flags(backend), "-include", HEADER, "-I", STUB_INCLUDE]


def runtime_object(backend):
    """Path of the compiled runtime for this backend, building it if needed."""
    with lock:
        key = _hash_text(RUNTIME_VERSION, compiler_id(), _base_cmd(backend)[1:], _read(HEADER), _read(RUNTIME_SRC))
        d = cache_dir()
        path = os.path.join(d, f"runtime-{backend}-{key[:24]}.o")
        digest_path = path + ".sha256"  # an ELF object cannot carry a trailer like the .so files
        try:
            if _read(digest_path).decode() == hashlib.sha256(_read(path)).hexdigest():
                return path
        except OSError:
            pass
        with replacing(path, prefix=".tmp-", suffix=".o") as tmp:
            _compile([*_base_cmd(backend), "-c", RUNTIME_SRC, "-o", tmp], "the emulator runtime")
            digest = hashlib.sha256(_read(tmp)).hexdigest()
        atomic_write(digest_path, digest, prefix=".tmp-")
        stats["runtime_builds"] += 1
        return path


def _c_string(s):
    return json.dumps(s)  # a JSON string of printable text is a valid C string literal


def generate_unit(rewritten, filename, kernel_names):
    """The rewritten source followed by the kernel descriptor table."""
    entries = "".join(f"  emu_make_desc({_c_string(n)}, &{n}),\n" for n in kernel_names)
    table = (
        f'\n#line 1 "<fastconv-emu kernel table>"\n'
        f"static const emu_kernel_desc __emu_kernel_table[] = {{\n{entries}"
        f"  emu_kernel_desc{{nullptr, nullptr, nullptr, 0, nullptr}}\n}};\n"
        f"EMU_API const emu_kernel_desc* emu_kernels(int* n) {{\n"
        f"  *n = {len(kernel_names)};\n  return __emu_kernel_table;\n}}\n"
    )
    return f"#line 1 {_c_string(filename)}\n{rewritten}\n{table}"


def _verify(path):
    """True when the file's trailer matches its body."""
    try:
        data = _read(path)
    except OSError:
        return False
    if len(data) <= _TRAILER_LEN or data[-_TRAILER_LEN:-32] != _TRAILER_MAGIC:
        return False
    return hashlib.sha256(data[:-_TRAILER_LEN]).digest() == data[-32:]


def module_library(unit, key, backend, flags, include_dirs, label, compile_flags=()):
    """Path of a verified module .so for this translation unit, building it if needed.

    ``compile_flags`` apply to compiling the unit only: with some, it is compiled to an object first and
    linked on its own (so that, e.g., ``-fsanitize=`` does not link the sanitizer's runtime library).
    Returns (path, built) where built tells whether g++ ran.
    """
    with lock:
        d = cache_dir()
        path = os.path.join(d, f"mod-{key[:32]}.so")
        if os.path.exists(path):
            if _verify(path):
                stats["cache_hits"] += 1
                return path, False
            stats["rebuilt_corrupt"] += 1
        what, t0 = f"{label} with g++", time.perf_counter()
        _warmup.compiling_now("cuda-emu", what, lambda: f"each kernel file builds once (seconds) and is cached in {d}")
        rt = runtime_object(backend)
        src = _tmp_name(d, ".cpp")
        try:
            with open(src, "w") as f:
                f.write(unit)
            incs = [a for inc in include_dirs for a in ("-I", inc)]
            with replacing(path, prefix=".tmp-", suffix=".so") as tmp:
                if compile_flags:
                    obj = _tmp_name(d, ".o")
                    try:
                        _compile([*_base_cmd(backend), *flags, *compile_flags, *incs, "-x", "c++", src, "-c",
                                  "-o", obj], label)
                        _compile([compiler(), "-pthread", "-shared", obj, rt, "-Wl,-z,defs", "-o", tmp], label)
                    finally:
                        os.unlink(obj)
                else:
                    _compile([*_base_cmd(backend), *flags, *incs, "-x", "c++", src, "-x", "none", rt,
                              "-shared", "-Wl,-z,defs", "-o", tmp], label)
                body = _read(tmp)
                with open(tmp, "ab") as f:
                    f.write(_TRAILER_MAGIC + hashlib.sha256(body).digest())
        finally:
            os.unlink(src)
        stats["module_builds"] += 1
        _warmup.compiled("cuda-emu", what, time.perf_counter() - t0)
        return path, True


def module_key(source, filename, headers, flags, include_dirs, names, backend, compile_flags=()):
    rt_key = _hash_text(_read(HEADER), _read(RUNTIME_SRC))
    hdrs = sorted((p, hashlib.sha256(b).hexdigest()) for p, b in headers.items())
    parts = [RUNTIME_VERSION, compiler_id(), _base_cmd(backend)[1:], rt_key, source, filename,
             json.dumps(hdrs), json.dumps(list(flags)), json.dumps(list(include_dirs)), json.dumps(list(names))]
    if compile_flags:      # and the text of the headers they force-include (none: the key of a plain build)
        forced = [compile_flags[i + 1] for i, f in enumerate(compile_flags[:-1]) if f == "-include"]
        parts += [json.dumps(list(compile_flags)), *(_read(h) for h in forced)]
    return _hash_text(*parts)


def load(path):
    return ctypes.CDLL(path)
