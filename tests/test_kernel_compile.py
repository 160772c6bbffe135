"""Every kernels/*.cu compiles for the GPUs we claim, without a GPU.

- NVRTC from PyPI (tests/nvrtc.py: CUDA 13's, and CUDA 12's for sm_70, which CUDA 13 dropped) compiles each
  file to a cubin for each claimed architecture with exactly the name expressions the backends use, and
  every expression resolves to a lowered (mangled) name. With fastconv[nvrtc] installed, an architecture
  no installed NVRTC can target fails the test; with no NVRTC at all it is skipped, saying so.
- Where ``nvcc`` is on PATH, ``ptxas -v`` reports registers, shared memory and spills for every kernel
  instantiation on sm_90; the test fails on any spill and on a block that could not launch for lack of
  registers. Run with ``-s`` to see the table.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from fastconv._backends import _cuda_launch as L

from . import nvrtc

KERNELS_DIR = L.kernels_dir()
FILES = sorted(L.KERNELS)
#: the architectures fastconv claims (README)
ARCHS = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def nvrtc_for(arch: str):
    """The NVRTC that compiles ``arch``; skip only when no NVRTC at all is installed."""
    if not nvrtc.installed():
        pytest.skip("no NVRTC with its CUDA headers is installed; install fastconv[nvrtc]")
    compiler = nvrtc.for_arch(arch)
    if compiler is None:
        have = sorted(nvrtc.installed().values(), key=repr)
        if not nvrtc.extra_installed():
            pytest.skip(f"no installed NVRTC targets {arch} ({have}); CUDA 13 dropped sm_70: "
                        "install fastconv[nvrtc], which adds CUDA 12's NVRTC")
        pytest.fail(f"fastconv[nvrtc] is installed but no NVRTC targets {arch} ({have})")
    return compiler


#: the architecture whose compile uses every instantiation; the others compile one per kernel, dtype and
#: index type, at the kernel's lightest tile (what differs between architectures is whether the source
#: compiles, not the tile constants; compiling every tile for every architecture cost CI minutes)
FULL_ARCH = "sm_90"


def arch_expressions(fname: str, arch: str):
    if arch == FULL_ARCH:
        return L.name_expressions(fname)
    last_tile = {}
    for k, tile in L.KERNELS[fname]:
        last_tile[k] = tile   # tiles are listed heaviest first
    return tuple(L.name_expression(k, L.C_TYPES[dt], it, tile) for k, tile in last_tile.items()
                 for dt in L.kernel_dtypes(k) for it in L.INDEX_TYPES)


# Every compile is started on first use, on a thread per core: NVRTC (through ctypes) and nvcc (a
# subprocess) release the GIL, so on CI's two cores the compiles take about half the wall time; each test
# then waits for its own.
_pool: "concurrent.futures.ThreadPoolExecutor | None" = None
_jobs: dict = {}


def _nvrtc_job(fname, arch):
    compiler = nvrtc.for_arch(arch)
    with open(os.path.join(KERNELS_DIR, fname), encoding="utf-8") as f:
        src = f.read()
    exprs = arch_expressions(fname, arch)
    return compiler, exprs, compiler.compile(src, fname, arch, exprs, (KERNELS_DIR,))


def _start_all():
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        if shutil.which("nvcc"):   # the slowest first: ptxas over every sm_90 instantiation
            for fname in FILES:
                _jobs[("ptxas", fname)] = _pool.submit(ptxas_report, fname, "sm_90")
        for arch in ARCHS:
            if nvrtc.installed() and nvrtc.for_arch(arch) is not None:
                for fname in FILES:
                    _jobs[(fname, arch)] = _pool.submit(_nvrtc_job, fname, arch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fname", FILES)
def test_nvrtc_compiles_every_instantiation(fname, arch):
    nvrtc_for(arch)   # skips or fails, saying why, when no NVRTC can target arch
    _start_all()
    compiler, exprs, (ok, log, lowered) = _jobs[(fname, arch)].result()
    assert ok, f"NVRTC {compiler.version} failed on {fname} for {arch}:\n{log}"
    # NVRTC 12 says sm_70 itself is deprecated; that is about the target, not our code
    ours = [ln for ln in log.splitlines() if "are deprecated and may be removed" not in ln]
    assert not any("warning" in ln.lower() for ln in ours), \
        f"NVRTC {compiler.version} warnings on {fname} for {arch}:\n{log}"
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


def ptxas_report(fname: str, arch: str):
    """{demangled kernel: dict(regs, smem, stack, spill_stores, spill_loads)} from ``nvcc -Xptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, f"inst_{fname}")
        with open(unit, "w") as f:
            f.write(instantiation_unit(fname))
        cmd = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-I", KERNELS_DIR,
               "-o", os.path.join(tmp, f"{fname}.cubin"), unit]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
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
def test_ptxas_no_spills_sm90(fname):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH, so ptxas -v cannot report registers and spills here")
    _start_all()
    report = _jobs[("ptxas", fname)].result()
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
        # the tile shape is what follows the storage and index types in the template arguments
        targs = name.split("<", 1)[1].split(">")[0].split(",")
        tile = tuple(int(a) for a in targs[2:])
        threads = 1
        for d in L.block_shape(kernel, tile):
            threads *= d
        if r["regs"] * threads > 65536:
            bad.append(f"{name}: {r['regs']} registers x {threads} threads exceed the 64K register file")
    assert not bad, "\n".join(bad)
