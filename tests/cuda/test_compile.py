"""Every kernels/*.cu compiles for the GPUs we claim, without a GPU.

- NVRTC from PyPI (fastconv/_cuda/offline.py: CUDA 13's, and CUDA 12's for sm_70, which CUDA 13 dropped)
  compiles each file to a cubin for each claimed architecture with exactly the name expressions the backends
  use, and every expression resolves to a lowered (mangled) name. With fastconv[nvrtc] installed, an
  architecture no installed NVRTC can target fails the test; with no NVRTC at all it is skipped, saying so.
  CI compiles for sm_70 and sm_90 (both NVRTCs, the oldest and newest targets), each with one instantiation
  per kernel, dtype and index type (every instantiation goes through nvcc's ptxas below);
  FASTCONV_COMPILE_ARCHS=all compiles for every claimed architecture, sm_90 with every instantiation.
- Where ``nvcc`` is on PATH, ``ptxas -v`` reports registers, shared memory and spills for every kernel
  instantiation on sm_90; the test fails on any spill and on a block (the family's own block size for that
  kernel) that could not launch for lack of registers. Run with ``-s`` to see the table.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil

import pytest

from fastconv import _config, _cuda
from fastconv._cuda import offline as nvrtc
from fastconv._cuda.offline import arch_expressions, ptxas_report, threads_of
from fastconv._cuda.plan import kernels_dir

KERNELS_DIR = kernels_dir()
FILES = sorted(_cuda.files())
#: the architectures fastconv claims (README)
ARCHS = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def _compiled_archs():
    """The architectures this run compiles for (FASTCONV_COMPILE_ARCHS): CI's bounded default is sm_70 and
    sm_90, i.e. both NVRTCs (CUDA 12's, the only one for sm_70, and CUDA 13's) at the oldest and newest
    targets; ``all`` (the long profile, run before a kernel change lands) every claimed one."""
    v = (_config.get("FASTCONV_COMPILE_ARCHS") or "sm_70,sm_90").strip()
    if v == "all":
        return ARCHS
    archs = tuple(a.strip() for a in v.split(",") if a.strip())
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise ValueError(f"FASTCONV_COMPILE_ARCHS must be 'all' or a comma-separated list of {', '.join(ARCHS)}, "
                         f"got {v!r}")
    return archs


COMPILED = _compiled_archs()


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


# Every compile is started on first use, on a thread per core: NVRTC (through ctypes) and nvcc (a
# subprocess) release the GIL, so on CI's two cores the compiles take about half the wall time; each test
# then waits for its own.
_pool: "concurrent.futures.ThreadPoolExecutor | None" = None
_jobs: dict = {}


def _nvrtc_full(arch) -> bool:
    """Whether NVRTC compiles every instantiation for ``arch`` (else the last-listed tile of each kernel).
    The full set goes to sm_90; in the CI profile, where nvcc's ptxas pass (test_ptxas_no_spills_sm90)
    already compiles every sm_90 instantiation, NVRTC compiles sm_90's reduced set like the other
    architectures' instead of the same instantiations a second time (the long profile compiles both)."""
    if arch != nvrtc.FULL_ARCH:
        return False
    return COMPILED == ARCHS or shutil.which("nvcc") is None


def _nvrtc_job(fname, arch):
    compiler = nvrtc.for_arch(arch)
    with open(os.path.join(KERNELS_DIR, fname), encoding="utf-8") as f:
        src = f.read()
    exprs = arch_expressions(fname, arch, _nvrtc_full(arch))
    return compiler, exprs, compiler.compile(src, fname, arch, exprs, (KERNELS_DIR,))


def _start_all():
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        if shutil.which("nvcc"):   # the slowest first: ptxas over every sm_90 instantiation
            for fname in FILES:
                _jobs[("ptxas", fname)] = _pool.submit(ptxas_report, fname, "sm_90")
        for arch in COMPILED:
            if nvrtc.installed() and nvrtc.for_arch(arch) is not None:
                for fname in FILES:
                    _jobs[(fname, arch)] = _pool.submit(_nvrtc_job, fname, arch)


def start_compiles_early(items) -> None:
    """Called by tests/conftest.py once the run is collected: start every job now when this file's compile
    tests are in the run and would start them anyway (each job is submitted once; see :func:`_start_all`)."""
    names = {getattr(i, "originalname", "") for i in items if getattr(i, "module", None) is not None
             and i.module.__name__ == __name__}
    if not names & {"test_nvrtc_compiles_every_instantiation", "test_ptxas_no_spills_sm90"}:
        return
    if nvrtc.installed() or shutil.which("nvcc"):
        _start_all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fname", FILES)
def test_nvrtc_compiles_every_instantiation(fname, arch):
    if arch not in COMPILED:
        pytest.skip(f"{arch} is compiled in the long profile only (FASTCONV_COMPILE_ARCHS=all; this run: "
                    f"{', '.join(COMPILED)})")
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
@pytest.mark.parametrize("fname", FILES)
def test_ptxas_no_spills_sm90(fname):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH, so ptxas -v cannot report registers and spills here")
    _start_all()
    report = _jobs[("ptxas", fname)].result()
    assert len(report) == len(_cuda.name_expressions(fname)), f"expected every instantiation, got {list(report)}"
    print(f"\nptxas -v, sm_90, {fname}:")
    print(f"  {'kernel':70s} {'regs':>4s} {'smem':>6s} {'stack':>5s} {'spill st/ld':>11s}")
    bad = []
    for name, r in sorted(report.items()):
        print(f"  {name.split('(')[0]:70s} {r['regs']:4d} {r['smem']:6d} {r['stack']:5d} "
              f"{r['spill_stores']:5d}/{r['spill_loads']:<5d}")
        if r["spill_stores"] or r["spill_loads"]:
            bad.append(f"{name}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads")
        threads = threads_of(name)
        if r["regs"] * threads > 65536:
            bad.append(f"{name}: {r['regs']} registers x {threads} threads exceed the 64K register file")
    assert not bad, "\n".join(bad)
