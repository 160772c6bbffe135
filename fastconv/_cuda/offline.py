"""Compiling the kernel families without a GPU: NVRTC through ctypes, and ``ptxas -v`` through nvcc.

Used by the compile checks in CI (tests/cuda/test_compile.py) and by benchmarks/ptxas_occupancy.py; needs
``fastconv[nvrtc]`` (NVRTC from PyPI) or a CUDA toolkit, and ``nvcc`` on PATH for the ptxas report.

NVRTC: two majors from PyPI sit side by side: CUDA 13 (``nvidia-cuda-nvrtc``, in ``nvidia/cu13``) and CUDA 12
(``nvidia-cuda-nvrtc-cu12``, in ``nvidia/cuda_nvrtc``), each with the CUDA headers of its own release
(``nvidia-cuda-runtime`` / ``nvidia-cuda-runtime-cu12``). CUDA 13 dropped Volta, so sm_70 is compiled by
NVRTC 12. The NVRTC C API is tiny and stable, so calling it directly needs no binding package.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import tempfile
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple

from .. import _spawn
from . import by_file, name_expressions
from .plan import kernels_dir

#: where each major's library and matching headers live inside site-packages/nvidia
_LAYOUT = {12: ("cuda_nvrtc/lib/libnvrtc.so.12", "cuda_runtime/include"),
           13: ("cu13/lib/libnvrtc.so.13", "cu13/include")}


def _nvidia_dirs():
    try:
        import nvidia
    except ImportError:
        return []
    return list(getattr(nvidia, "__path__", []))


class NVRTC:
    """One loaded NVRTC library and the CUDA include directory that matches it."""

    def __init__(self, lib_path: str, include_dir: Optional[str]):
        self.path, self.include_dir = lib_path, include_dir
        lib = ctypes.CDLL(lib_path)
        c_p, c_char_pp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)
        lib.nvrtcCreateProgram.argtypes = [ctypes.POINTER(c_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                           c_char_pp, c_char_pp]
        lib.nvrtcAddNameExpression.argtypes = [c_p, ctypes.c_char_p]
        lib.nvrtcCompileProgram.argtypes = [c_p, ctypes.c_int, c_char_pp]
        lib.nvrtcGetProgramLogSize.argtypes = [c_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [c_p, ctypes.c_char_p]
        lib.nvrtcGetLoweredName.argtypes = [c_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(c_p)]
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetNumSupportedArchs.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcGetSupportedArchs.argtypes = [ctypes.POINTER(ctypes.c_int)]
        self.lib = lib
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        self.version = (major.value, minor.value)

    def _ok(self, err: int) -> None:
        if err != 0:
            raise RuntimeError(f"NVRTC call failed: {self.lib.nvrtcGetErrorString(err).decode()}")

    def supported_archs(self) -> set:
        n = ctypes.c_int()
        self._ok(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)))
        arr = (ctypes.c_int * n.value)()
        self._ok(self.lib.nvrtcGetSupportedArchs(arr))
        return {f"sm_{a}" for a in arr}

    def compile(self, source: str, filename: str, arch: str, name_expressions: Sequence[str] = (),
                include_dirs: Sequence[str] = ()) -> Tuple[bool, str, Dict[str, str]]:
        """Compile for ``arch`` ("sm_90" gives a cubin, "compute_90" PTX). Returns (ok, log, lowered names)."""
        prog = ctypes.c_void_p()
        self._ok(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), filename.encode(), 0, None, None))
        try:
            for e in name_expressions:
                self._ok(self.lib.nvrtcAddNameExpression(prog, e.encode()))
            incs = list(include_dirs) + ([self.include_dir] if self.include_dir else [])
            opts = [f"--gpu-architecture={arch}", "-std=c++17"] + [f"-I{d}" for d in incs]
            arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
            err = self.lib.nvrtcCompileProgram(prog, len(opts), arr)
            size = ctypes.c_size_t()
            self._ok(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
            buf = ctypes.create_string_buffer(size.value)
            self._ok(self.lib.nvrtcGetProgramLog(prog, buf))
            log = buf.value.decode(errors="replace").strip()
            if err != 0:
                return False, log, {}
            lowered = {}
            for e in name_expressions:
                name = ctypes.c_char_p()
                self._ok(self.lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(name)))
                lowered[e] = name.value.decode()
            return True, log, lowered
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def __repr__(self):
        return f"<NVRTC {self.version[0]}.{self.version[1]} {self.path}>"


@lru_cache(maxsize=None)
def installed() -> Dict[int, NVRTC]:
    """{major: NVRTC} for every NVRTC whose library and matching cuda_fp16.h are installed from PyPI."""
    found = {}
    for base in _nvidia_dirs():
        for major, (lib_rel, inc_rel) in _LAYOUT.items():
            lib = os.path.join(base, lib_rel)
            inc = os.path.join(base, inc_rel)
            if major in found or not os.path.isfile(lib):
                continue
            if not os.path.isfile(os.path.join(inc, "cuda_fp16.h")):
                continue     # NVRTC without its headers cannot compile the half-precision kernels
            found[major] = NVRTC(lib, inc)
    # a toolkit's NVRTC (e.g. /usr/local/cuda on a GPU machine) where PyPI's is absent
    for cand in sorted(glob.glob("/usr/local/cuda/lib64/libnvrtc.so.*")):
        tail = cand.rsplit(".so.", 1)[1]
        if tail.isdigit() and int(tail) not in found and os.path.isfile("/usr/local/cuda/include/cuda_fp16.h"):
            found[int(tail)] = NVRTC(cand, "/usr/local/cuda/include")
    return found


def extra_installed() -> bool:
    """Whether fastconv[nvrtc]'s CUDA 12 NVRTC is installed (then every claimed arch must compile)."""
    from importlib import metadata
    try:
        metadata.distribution("nvidia-cuda-nvrtc-cu12")
        return True
    except metadata.PackageNotFoundError:
        return False


def for_arch(arch: str) -> Optional[NVRTC]:
    """The newest installed NVRTC that can target ``arch`` ("sm_70"), or None."""
    for major in sorted(installed(), reverse=True):
        if arch in installed()[major].supported_archs():
            return installed()[major]
    return None

# ---------------------------------------------------------------------------------------------------
# What to compile, and ptxas -v
# ---------------------------------------------------------------------------------------------------
#: the architecture whose compile uses every instantiation; the others compile one per kernel, dtype and
#: index type, at the kernel's last-listed tile (what differs between architectures is whether the source
#: compiles, not the tile constants; compiling every tile for every architecture cost CI minutes)
FULL_ARCH = "sm_90"


def arch_expressions(fname: str, arch: str, full: Optional[bool] = None) -> Tuple[str, ...]:
    """The name expressions compiled for ``arch``: all of them on :data:`FULL_ARCH` (or wherever ``full``
    says so), else the last-listed tile of each kernel."""
    if arch == FULL_ARCH if full is None else full:
        return name_expressions(fname)
    last = {}
    for k in by_file(fname).KERNELS:
        last[k.name] = k
    return tuple(e for k in last.values() for e in k.expressions())


def threads_of(instantiation: str) -> int:
    """Threads per block of a demangled instantiation (``void conv_gemm_v2<float, int, 64, ...>(...)``),
    from its family's Kernel (the largest a plan launches it with)."""
    name = instantiation.split("<")[0].split(" ")[-1]
    targs = instantiation.split("<", 1)[1].split(">")[0].split(",")
    tile = tuple(int(a) for a in targs[2:])
    from . import FAMILIES
    for fam in FAMILIES:
        for k in fam.KERNELS:
            if k.name == name and k.tile == tile:
                return k.threads
    raise KeyError(instantiation)


def instantiation_unit(fname: str) -> str:
    """A translation unit that makes nvcc instantiate every name expression of ``fname``."""
    refs = ",\n".join(f"  (void*)&{e}" for e in name_expressions(fname))
    return f'#include "{fname}"\nvoid* fastconv_instantiations[] = {{\n{refs}\n}};\n'


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(fname: str, arch: str):
    """{demangled kernel: dict(regs, smem, stack, spill_stores, spill_loads)} from ``nvcc -Xptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, f"inst_{fname}")
        with open(unit, "w") as f:
            f.write(instantiation_unit(fname))
        cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-I", kernels_dir(),
               "-o", os.path.join(tmp, f"{fname}.cubin"), unit]
        proc = _spawn.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{proc.stderr}")
    out, cur = {}, None
    for line in proc.stderr.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = dict(regs=0, smem=0, stack=0, spill_stores=0, spill_loads=0)
            out[m.group(1)] = cur
            continue
        if cur is None:
            continue
        m = _SPILL.search(line)
        if m:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = _USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    if shutil.which("c++filt") and out:
        names = _spawn.run(["c++filt"], input="\n".join(out), capture_output=True, text=True).stdout.split("\n")
        out = {n: v for n, v in zip(names, out.values())}
    return out
