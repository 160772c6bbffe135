"""Determinism, concurrency and on-disk caches.

- Forward results are bitwise identical run to run on every backend and algo (no atomics or other
  order-dependent reductions in the forward path); on the emulator also across thread orders (forward,
  reverse, random), which is how a float atomic or a race would show on the CPU.
- Several Python threads calling ops at once (first calls included: module builds, kernel loads, the numba
  autotune cache) get the results a single thread gets.
- The on-disk caches (Numba's kernel cache, the emulator's build cache) survive corrupted, truncated and
  half-written files: the entry is ignored and rebuilt, and results stay right.
"""
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv.testing import assert_conv_close, assert_pool_close, to_numpy

from .backend_params import backend_algos, to_backend


def _available(name):
    return fc.backends()[name]["available"]


def _conv_params():
    return backend_algos("conv")


_xp_args = to_backend


def _bits(a):
    a = np.ascontiguousarray(to_numpy(a))
    return a.view(np.uint8).tobytes()


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    return x, w, b


CONV_KW = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)


# ---------------------------------------------------------------------------------------------------
# Bitwise run to run
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, algo", _conv_params())
def test_conv_is_bitwise_reproducible(backend, algo):
    x, w, b = _data()
    for xs, ws, kw in ((x, w, CONV_KW), (x, np.ones((6, 1, 3, 3), np.float32), dict(groups=6, padding=1))):
        spec = fc.conv_spec(xs, ws, None, **kw)
        try:
            _dispatch.select(spec, backend, algo)
        except ValueError:
            continue
        args = _xp_args(backend, xs, ws)
        first = _bits(fc.conv2d(*args, backend=backend, algo=algo, **kw))
        for _ in range(3):
            assert _bits(fc.conv2d(*args, backend=backend, algo=algo, **kw)) == first


POOLS = [
    ("max", lambda x, be: fc.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True, backend=be)),
    ("avg", lambda x, be: fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, backend=be)),
    ("adaptive_avg", lambda x, be: fc.adaptive_avg_pool2d(x, (3, 4), backend=be)),
    ("global_avg", lambda x, be: fc.adaptive_avg_pool2d(x, 1, backend=be)),
    ("adaptive_max", lambda x, be: fc.adaptive_max_pool2d(x, (5, 2), return_indices=True, backend=be)),
]


@pytest.mark.parametrize("name, call", POOLS, ids=[p[0] for p in POOLS])
@pytest.mark.parametrize("backend", [b for b in fc.backends()])
def test_pools_are_bitwise_reproducible(backend, name, call):
    if not _available(backend):
        pytest.skip(f"{backend}: {fc.backends()[backend]['reason']}")
    (x,) = _xp_args(backend, _data()[0])
    outs = [call(x, backend) for _ in range(4)]
    for out in outs[1:]:
        for a, b in zip(out if isinstance(out, tuple) else (out,), outs[0] if isinstance(outs[0], tuple) else (outs[0],)):
            assert _bits(a) == _bits(b)


@pytest.mark.skipif(not _available("cuda-emu"), reason="the CUDA emulator is not available here")
def test_emulated_kernels_do_not_depend_on_thread_order():
    """A float atomic or a race in a forward reduction gives results that depend on which thread runs
    first: every shipped kernel (each variant dispatch can return) must give the same bits in forward,
    reverse and random order."""
    from fastconv._backends import cuda_emu
    from fastconv._cuda.plan import inputs_for
    x, w, b = _data(1)
    conv_spec = fc.conv_spec(x, w, b, **CONV_KW)
    problems = [(conv_spec, (x, w, b))]
    for kind, kw in (("max", dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
                     ("avg", dict(kernel_size=3, stride=2, padding=1)),
                     ("adaptive_avg", dict(output_size_=1)), ("adaptive_max", dict(output_size_=(3, 2)))):
        problems.append((fc.pool_spec(kind, x, **kw), (x,)))
    ran = set()
    for spec, arrays in problems:
        for impl in cuda_emu.implementations():
            if impl.op != spec.op or _dispatch.reasons(impl, spec):
                continue
            results = []
            for order, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)):
                out = cuda_emu.execute(impl.plan(spec), inputs_for(spec, arrays), order=order, seed=seed)
                results.append(b"".join(_bits(o) for o in (out if isinstance(out, tuple) else (out,))))
            assert all(r == results[0] for r in results), f"{impl.name}: results depend on the thread order"
            ran.add((spec.op, impl.algo))
    conv_algos = {i.algo for i in cuda_emu.implementations() if i.op == "conv"}
    assert {a for op, a in ran if op == "conv"} >= conv_algos - {"depthwise"}
    assert len(ran) >= len(conv_algos)


# ---------------------------------------------------------------------------------------------------
# Several Python threads at once
# ---------------------------------------------------------------------------------------------------
def _jobs(backend):
    """(call, check) pairs: different ops and shapes, each checked against the oracle."""
    rng = np.random.default_rng(7)
    jobs = []
    for i in range(6):
        x = rng.standard_normal((2, 4, 9 + i, 8)).astype(np.float32 if i % 2 else np.float64)
        w = rng.standard_normal((6, 2, 3, 2)).astype(x.dtype)
        kw = dict(padding=i % 3, stride=1 + i % 2, groups=2)
        ref = fc.conv2d(x, w, backend="numpy", **kw)
        spec = fc.conv_spec(x, w, **kw)
        jobs.append((lambda x=x, w=w, kw=kw: fc.conv2d(x, w, backend=backend, **kw),
                     lambda out, ref=ref, spec=spec, x=x, w=w: assert_conv_close(out, ref, spec, x, w)))
        pkw = dict(kernel_size=2 + i % 2, stride=2, padding=1, return_indices=True)
        pref = fc.max_pool2d(x, backend="numpy", **pkw)
        pspec = fc.pool_spec("max", x, **pkw)
        jobs.append((lambda x=x, pkw=pkw: fc.max_pool2d(x, backend=backend, **pkw),
                     lambda out, ref=pref, spec=pspec, x=x: assert_pool_close(out, ref, spec, x)))
        aref = fc.adaptive_avg_pool2d(x, (i + 1, 3), backend="numpy")
        aspec = fc.pool_spec("adaptive_avg", x, output_size_=(i + 1, 3))
        jobs.append((lambda x=x, i=i: fc.adaptive_avg_pool2d(x, (i + 1, 3), backend=backend),
                     lambda out, ref=aref, spec=aspec, x=x: assert_pool_close(out, ref, spec, x)))
    return jobs


def _run_threads(jobs, n_threads=4, rounds=2):
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker(t):
        try:
            barrier.wait()
            for r in range(rounds):
                for j, (call, check) in enumerate(jobs):
                    if (j + t + r) % 2 == 0 or t == 0:      # threads overlap on some jobs, not all
                        check(call())
        except BaseException as e:                          # reported by the main thread
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert errors == []


@pytest.mark.skipif(not _available("numba"), reason="numba is not available here")
def test_numba_from_several_threads_at_once(monkeypatch):
    from fastconv._backends import numba_cpu
    numba_cpu.TUNER.reset()
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)     # every auto call measures: the cache races
    _run_threads(_jobs("numba")[:9], rounds=1)
    assert numba_cpu.TUNER.cache().entries()


@pytest.mark.skipif(not _available("cuda-emu"), reason="the CUDA emulator is not available here")
def test_cuda_emu_from_several_threads_at_once(monkeypatch):
    from fastconv._backends import cuda_emu
    monkeypatch.setattr(cuda_emu, "_modules", {})               # first calls race to load the modules
    _run_threads(_jobs("cuda-emu"), rounds=1)


# ---------------------------------------------------------------------------------------------------
# On-disk caches survive bad files
# ---------------------------------------------------------------------------------------------------
_CHILD = """
import sys, numpy as np, fastconv as fc
x = np.random.default_rng(3).standard_normal((2, 3, 9, 8)).astype(np.float32)
y, i = fc.adaptive_max_pool2d(x, (4, 3), return_indices=True, backend=sys.argv[1])
r, ri = fc.adaptive_max_pool2d(x, (4, 3), return_indices=True, backend="numpy")
assert np.array_equal(y, r) and np.array_equal(i, ri), "wrong result"
if sys.argv[1] == "numba":
    from fastconv._backends import numba_cpu
    print("hits", sum(numba_cpu.kernels().adaptive_pool2d.stats.cache_hits.values()))
else:
    from fastconv import emu
    print("rebuilt", emu.build_stats()["rebuilt_corrupt"], "hits", emu.build_stats()["cache_hits"])
"""


def _child(backend, env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]), **env)
    proc = subprocess.run([sys.executable, "-c", _CHILD, backend], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


@pytest.mark.skipif(not _available("numba"), reason="numba is not available here")
def test_numba_disk_cache_survives_corrupt_and_truncated_files(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    _child("numba", env)                                          # compiles and fills the cache
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if "adaptive_pool2d" in f]
    index = [f for f in files if f.endswith(".nbi")]
    data = [f for f in files if f.endswith(".nbc")]
    assert index and data
    for f in index[: len(index) // 2 + 1]:
        open(f, "wb").close()                                     # truncated (an interrupted copy)
    for f in index[len(index) // 2 + 1:]:
        with open(f, "wb") as fh:
            fh.write(b"not a pickle")
    for f in data:
        with open(f, "r+b") as fh:                                # corrupted payload
            fh.seek(len(fh.read()) // 2)
            fh.write(os.urandom(64))
    _child("numba", env)                                          # right results: recompiled, cache rewritten
    assert _child("numba", env)[-1] != "0"                        # and the next process loads from it


@pytest.mark.skipif(not _available("cuda-emu"), reason="the CUDA emulator is not available here")
def test_emulator_cache_survives_corrupt_and_half_written_files(tmp_path):
    from fastconv.emu import _build
    src = _build.cache_dir()
    for name in os.listdir(src):                                  # start from this session's builds
        if name.startswith(("mod-", "runtime-")):
            shutil.copy(os.path.join(src, name), tmp_path / name)
    env = {"FASTCONV_EMU_CACHE": str(tmp_path)}
    _child("cuda-emu", env)                                       # pool module built here if not copied
    mods = [f for f in os.listdir(tmp_path) if f.startswith("mod-") and f.endswith(".so")]
    assert mods
    for name in mods:                                             # a flipped byte, same length
        p = tmp_path / name
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    (tmp_path / ".tmp-abandoned.so").write_bytes(b"\x7fELF half written")   # a writer killed mid-way
    out = _child("cuda-emu", env)
    assert int(out[out.index("rebuilt") + 1]) >= 1
    out = _child("cuda-emu", env)                                 # the rebuilt file is used as is
    assert out[out.index("rebuilt") + 1] == "0" and int(out[out.index("hits") + 1]) >= 1
