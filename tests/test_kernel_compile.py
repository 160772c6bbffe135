"""Every kernels/*.cu compiles for the GPUs we claim, without a GPU.

- NVRTC from PyPI (``nvidia-cuda-nvrtc`` through ``cuda.bindings.nvrtc``) compiles each file to a cubin for
  each claimed architecture with exactly the name expressions the backends use, and every expression
  resolves to a lowered (mangled) name. An architecture the installed NVRTC cannot target (CUDA 13 dropped
  sm_70) is skipped with that reason.
- Where ``nvcc`` is on PATH, ``ptxas -v`` reports registers, shared memory and spills for every kernel
  instantiation on sm_90; the test fails on any spill and on a block that could not launch for lack of
  registers. Run with ``-s`` to see the table.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib import resources

import pytest

from fastconv._backends import _cuda_launch as L
from fastconv._backends.cuda import cuda_include_dirs

KERNELS_DIR = str(resources.files("fastconv.kernels"))
FILES = sorted(L.KERNELS)
ARCHS = ("sm_70", "sm_75", "sm_80", "sm_90")


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        pytest.skip(f"NVRTC bindings are not installed ({e}); install fastconv[nvrtc]")
    return nvrtc


def _check(nvrtc, result):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC call failed: {err}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def nvrtc_compile(source: str, filename: str, arch: str, name_expressions=(), include_dirs=()):
    """Compile with NVRTC for ``arch`` (e.g. "sm_90"). Returns (ok, log, {expression: lowered name})."""
    nvrtc = _nvrtc()
    prog = _check(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []))
    try:
        for e in name_expressions:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(prog, e.encode()))
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"] + [f"-I{d}".encode() for d in include_dirs]
        err = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
        size = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        log = log.decode(errors="replace").rstrip("\x00 \n")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return False, log, {}
        lowered = {e: _check(nvrtc, nvrtc.nvrtcGetLoweredName(prog, e.encode())).decode() for e in name_expressions}
        return True, log, lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def nvrtc_supported_archs():
    nvrtc = _nvrtc()
    return {f"sm_{a}" for a in _check(nvrtc, nvrtc.nvrtcGetSupportedArchs())}


def nvrtc_version():
    nvrtc = _nvrtc()
    major, minor = _check(nvrtc, nvrtc.nvrtcVersion())
    return f"{major}.{minor}"


def headers():
    """Include directories: the kernels' own and the CUDA headers (cuda_fp16.h); skip when the latter are absent."""
    found = cuda_include_dirs()
    if not found:
        pytest.skip("no CUDA headers (cuda_fp16.h) found: set CUDA_PATH or install nvidia-cuda-runtime")
    return (KERNELS_DIR, found[0])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fname", FILES)
def test_nvrtc_compiles_every_instantiation(fname, arch):
    incs = headers()
    if arch not in nvrtc_supported_archs():
        pytest.skip(f"the installed NVRTC {nvrtc_version()} cannot target {arch} (CUDA 13 removed offline "
                    f"compilation for sm_70 and older); compile it with a CUDA 12 NVRTC")
    with open(os.path.join(KERNELS_DIR, fname), encoding="utf-8") as f:
        src = f.read()
    exprs = L.name_expressions(fname)
    ok, log, lowered = nvrtc_compile(src, fname, arch, exprs, incs)
    assert ok, f"NVRTC failed on {fname} for {arch}:\n{log}"
    assert "warning" not in log.lower(), f"NVRTC warnings on {fname} for {arch}:\n{log}"
    assert set(lowered) == set(exprs) and all(n.startswith("_Z") for n in lowered.values())


# ---------------------------------------------------------------------------------------------------
# ptxas -v: registers, shared memory, spills
# ---------------------------------------------------------------------------------------------------
def instantiation_unit(fname: str) -> str:
    """A translation unit that makes nvcc instantiate every name expression of ``fname``."""
    exprs = L.name_expressions(fname)
    refs = ",\n".join(f"  (void*)&{e}" for e in exprs)
    return f'#include "{fname}"\nvoid* fastconv_instantiations[] = {{\n{refs}\n}};\n'


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(fname: str, arch: str, tmp_path):
    """{demangled kernel: dict(regs, smem, stack, spill_stores, spill_loads)} from ``nvcc -Xptxas -v``."""
    unit = tmp_path / f"inst_{fname}"
    unit.write_text(instantiation_unit(fname))
    cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-I", KERNELS_DIR,
           "-o", str(tmp_path / f"{fname}.cubin"), str(unit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed:\n{proc.stderr}"
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
        names = subprocess.run(["c++filt"], input="\n".join(out), capture_output=True, text=True).stdout.split("\n")
        out = {n: v for n, v in zip(names, out.values())}
    return out


@pytest.mark.parametrize("fname", FILES)
def test_ptxas_no_spills_sm90(fname, tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH, so ptxas -v cannot report registers and spills here")
    report = ptxas_report(fname, "sm_90", tmp_path)
    assert len(report) == len(L.name_expressions(fname)), f"expected every instantiation, got {list(report)}"
    print(f"\nptxas -v, sm_90, {fname}:")
    print(f"  {'kernel':70s} {'regs':>4s} {'smem':>6s} {'stack':>5s} {'spill st/ld':>11s}")
    bad = []
    for name, r in sorted(report.items()):
        print(f"  {name.split('(')[0]:70s} {r['regs']:4d} {r['smem']:6d} {r['stack']:5d} "
              f"{r['spill_stores']:5d}/{r['spill_loads']:<5d}")
        if r["spill_stores"] or r["spill_loads"]:
            bad.append(f"{name}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads")
        kernel = name.split("<")[0].split(" ")[-1]
        threads = 1
        for d in L.block_shape(kernel):
            threads *= d
        if r["regs"] * threads > 65536:
            bad.append(f"{name}: {r['regs']} registers x {threads} threads exceed the 64K register file")
    assert not bad, "\n".join(bad)
