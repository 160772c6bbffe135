"""Backend "cuda"'s own Python code (fastconv/_backends/cuda.py), run without a GPU.

The kernels themselves are tested through "cuda-emu"; what only "cuda" has -- loading a kernel file as a
RawModule, the function and plan memos, choosing an algorithm and a tile by measurement, the on-disk
autotune cache -- is exercised here with CuPy replaced by tests/cuda/cupy_shim.py (RawModule over the
emulator, NumPy-backed arrays that fastconv takes for CuPy ones). On a GPU the same tests run with the shim,
and the family tests (tests/cuda/test_<family>.py) cover the real CuPy path.
"""
from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _config, _cuda, _dispatch, _tune
from fastconv._backends import numpy_oracle as oracle
from fastconv._cuda import plan as P
from fastconv.testing import assert_conv_close, assert_pool_close

from . import cupy_shim


def _reset(cuda):
    for memo in (cuda._modules, cuda._functions, cuda._device_tags, cuda._dummies):
        memo.clear()
    cuda._availability = None      # asked once per process: once for the shim, once after it
    cuda.TUNER.reset()


def _file_of(kernel):
    return next(f.FILE for f in _cuda.FAMILIES if any(k.name == kernel for k in f.KERNELS))


def _key(cuda, spec, impls):
    return cuda.TUNER.key(cuda.tune_context(), spec, [i.name for i in impls])


@pytest.fixture
def cuda(monkeypatch, tmp_path):
    """fastconv's cuda backend module with CuPy replaced by the shim and a private autotune cache file."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip(f"the emulator is unavailable: {_dispatch.availability('cuda-emu')}")
    monkeypatch.setitem(sys.modules, "cupy", cupy_shim)
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", str(tmp_path / "autotune-cuda.json"))
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    from fastconv._backends import cuda as mod
    _reset(mod)
    cupy_shim.RawModule.compiled.clear()
    yield mod
    _reset(mod)


def _conv_arrays(seed=0, shape=(2, 4, 9, 9), wshape=(6, 4, 3, 3), dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    b = rng.standard_normal(wshape[0]).astype(dtype)
    return x, w, b


def test_shim_arrays_are_taken_for_cupy(cuda):
    a = cupy_shim.asarray(np.zeros((2, 2), np.float32))
    assert fastconv._spec.array_kind(a) == "cupy"
    assert _dispatch.availability("cuda") is None
    with pytest.raises(TypeError, match="backend 'cuda' takes CuPy arrays"):
        fastconv.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), backend="cuda")


@pytest.mark.parametrize("algo", ["implicit_gemm", "im2col", "direct", "auto"])
def test_conv_through_cuda_backend(cuda, algo):
    x, w, b = _conv_arrays()
    kw = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    w = w[:, :2].copy()
    out = fastconv.conv2d(cupy_shim.asarray(x), cupy_shim.asarray(w), cupy_shim.asarray(b), algo=algo, **kw)
    assert type(out) is cupy_shim.ndarray  # the result stays a "CuPy" array
    spec = fastconv.conv_spec(x, w, b, **kw)
    assert_conv_close(out.get(), oracle.conv(spec, x, w, b), spec, x, w, b)


def test_depthwise_and_pools_through_cuda_backend(cuda):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    out = fastconv.conv2d(cupy_shim.asarray(x), cupy_shim.asarray(w), padding=1, groups=4)
    spec = fastconv.conv_spec(x, w, padding=1, groups=4)
    assert_conv_close(out.get(), oracle.conv(spec, x, w), spec, x, w)
    y, idx = fastconv.max_pool2d(cupy_shim.asarray(x), 3, 2, 1, return_indices=True)
    pspec = fastconv.pool_spec("max", x, kernel_size=3, stride=2, padding=1, return_indices=True)
    assert_pool_close((y.get(), idx.get()), oracle.max_pool(pspec, x), pspec, x)
    a = fastconv.adaptive_avg_pool2d(cupy_shim.asarray(x), 1)
    aspec = fastconv.pool_spec("adaptive_avg", x, output_size_=1)
    assert_pool_close(a.get(), oracle.adaptive_avg_pool(aspec, x), aspec, x)


def test_each_kernel_file_compiles_once(cuda):
    x, w, b = (cupy_shim.asarray(a) for a in _conv_arrays())
    for _ in range(3):
        for algo in ("implicit_gemm", "im2col", "direct"):
            fastconv.conv2d(x, w, b, padding=1, algo=algo)
    built = [(_file_of(exprs[0].split("<")[0]), P.dtype_of(exprs[0])) for exprs, _ in cupy_shim.RawModule.compiled]
    assert len(built) == len(set(built)) == 3 and {d for _, d in built} == {"float32"}
    # every float32 instantiation a plan can ask for is in the one compile, with the kernels' include dir
    for (fname, _), (exprs, options) in zip(built, cupy_shim.RawModule.compiled):
        assert f"-I{P.kernels_dir()}" in options
        assert exprs == _cuda.name_expressions(fname, ("float32",))


def test_autotune_measures_once_then_remembers_across_processes(cuda):
    x, w, b = (cupy_shim.asarray(a) for a in _conv_arrays(2))
    spec = fastconv.conv_spec(x, w, b, padding=1)
    before = cuda.TUNER.measure_count
    out = fastconv.conv2d(x, w, b, padding=1)
    assert cuda.TUNER.measure_count == before + 1
    fastconv.conv2d(x, w, b, padding=1)
    assert cuda.TUNER.measure_count == before + 1  # in-memory
    path = _config.autotune_path("cuda")
    entries = json.load(open(path))["entries"]
    supported = _dispatch.without_fallbacks([i for i in cuda.implementations()
                                             if i.op == "conv" and not _dispatch.reasons(i, spec)])
    cands = [i.name for i in supported]       # what dispatch measures: direct/untiled only where none else runs
    algos = {i.algo for i in supported}
    assert len(algos) >= 3 and len(cands) > len(algos)  # several algorithms, several tiles
    entry = entries[_key(cuda, spec, supported)]
    assert set(entry["s"]) == set(cands) and entry["choice"] == min(entry["s"], key=entry["s"].get)
    # the per-algorithm tile choice was derived from the same timings (no second measurement needed)
    ig = [i for i in supported if i.algo == "implicit_gemm"]
    sub = entries[_key(cuda, spec, ig)]
    assert sub["choice"] == min((i.name for i in ig), key=lambda c: entry["s"][c])
    # a new process (fresh memory) reads the file and does not measure
    cuda.TUNER.reset()
    fastconv.conv2d(x, w, b, padding=1)
    assert cuda.TUNER.measure_count == before + 1
    assert_conv_close(out.get(), oracle.conv(spec, x.get(), w.get(), b.get()), spec, x.get(), w.get(), b.get())


def test_explicit_algo_tunes_its_tiles(cuda):
    x, w, b = (cupy_shim.asarray(a) for a in _conv_arrays(3, (1, 3, 11, 7), (5, 3, 2, 3)))
    spec = fastconv.conv_spec(x, w, b)
    before = cuda.TUNER.measure_count
    out = fastconv.conv2d(x, w, b, algo="implicit_gemm")
    assert cuda.TUNER.measure_count == before + 1
    ig = [i for i in cuda.implementations() if i.op == "conv" and i.algo == "implicit_gemm"
          and not _dispatch.reasons(i, spec)]      # the candidates measured (the 3-D tiles take no 2-D problem)
    entry = cuda.TUNER.cache().get(_key(cuda, spec, ig))
    assert entry["choice"] in [f"cuda:conv:implicit_gemm/{v}" for v in _cuda.family("implicit_gemm").VARIANTS]
    assert_conv_close(out.get(), oracle.conv(spec, x.get(), w.get(), b.get()), spec, x.get(), w.get(), b.get())


def test_corrupt_cache_file_is_ignored_and_rebuilt(cuda):
    path = _config.autotune_path("cuda")
    x, w, b = (cupy_shim.asarray(a) for a in _conv_arrays(4))
    for garbage in ("{not json", '{"format": 1, "entries": [1, 2]}', "\x00\x01", '{"format": 999, "entries": {}}'):
        with open(path, "w") as f:
            f.write(garbage)
        cuda.TUNER.reset()
        before = cuda.TUNER.measure_count
        fastconv.conv2d(x, w, b, padding=1)
        assert cuda.TUNER.measure_count == before + 1
        data = json.load(open(path))  # rewritten whole, valid
        assert data["format"] == _tune.FORMAT and data["entries"]


def test_autotune_off_takes_the_priority_order_without_measuring(cuda, monkeypatch):
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    x, w, b = _conv_arrays(5)
    spec = fastconv.conv_spec(x, w, b, padding=1)
    before = cuda.TUNER.measure_count
    impl = _dispatch.select(spec, "cuda", "auto")
    first = next(i for i in cuda.implementations() if i.op == "conv" and not _dispatch.reasons(i, spec))
    assert impl is first and cuda.TUNER.measure_count == before
    assert _dispatch.select(spec, "cuda", "implicit_gemm").name == "cuda:conv:implicit_gemm/128x128"
    out = fastconv.conv2d(*(cupy_shim.asarray(a) for a in (x, w, b)), padding=1, algo="implicit_gemm")
    assert cuda.TUNER.measure_count == before  # the first tile, unmeasured
    assert_conv_close(out.get(), oracle.conv(spec, x, w, b), spec, x, w, b)


def test_concurrent_first_calls_measure_once_and_agree(cuda):
    x, w, b = _conv_arrays(6)
    spec = fastconv.conv_spec(x, w, b, padding=1)
    ref = oracle.conv(spec, x, w, b)
    before = cuda.TUNER.measure_count
    results, errors = [None] * 4, []

    def call(i):
        try:
            results[i] = fastconv.conv2d(*(cupy_shim.asarray(a) for a in (x, w, b)), padding=1).get()
        except Exception as e:  # reported below, with the thread's traceback lost but its message kept
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert cuda.TUNER.measure_count == before + 1
    for r in results:
        assert_conv_close(r, ref, spec, x, w, b)
        assert np.array_equal(r, results[0])  # the same choice, deterministic kernels: bitwise equal


def test_disk_cache_merges_concurrent_writers(tmp_path):
    path = str(tmp_path / "t.json")
    a, b = _tune.DiskCache(path), _tune.DiskCache(path)
    a.get("k0")  # both read the (missing) file first, as two processes would
    b.get("k0")
    a.put("ka", {"choice": "x", "ms": {"x": 1.0}})
    b.put("kb", {"choice": "y", "ms": {"y": 2.0}})
    entries = json.load(open(path))["entries"]
    assert set(entries) == {"ka", "kb"}
    assert _tune.DiskCache(path).get("ka")["choice"] == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".autotune-")]  # no temporary left


def test_disk_cache_in_memory_only_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", "")
    assert _config.autotune_path("cuda") is None
    mem = _tune.DiskCache(None)
    mem.put("k", {"choice": "c"})
    assert mem.get("k")["choice"] == "c"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        c = _tune.DiskCache(str(ro / "sub" / "t.json"))
        c.put("k", {"choice": "c"})  # cannot write: keeps the choice in memory, raises nothing
        assert c.get("k")["choice"] == "c"
    finally:
        ro.chmod(0o700)


def test_never_accessed_buffers_are_shared_not_allocated_per_call(cuda, monkeypatch):
    """No bias, no split-K, no indices: those pointers get one shared buffer per device, shape and dtype."""
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    x, w, _ = (cupy_shim.asarray(a) for a in _conv_arrays(7))
    fastconv.conv2d(x, w, padding=1, algo="implicit_gemm")
    first = dict(cuda._dummies)
    assert list(first) == [(0, (1,), "float32")]  # bias_dummy and partial_dummy share it
    allocated = []
    monkeypatch.setattr(cupy_shim, "empty", lambda shape, dtype=np.float32: allocated.append(shape)
                        or cupy_shim._wrap(np.empty(shape, dtype)))
    out = fastconv.conv2d(x, w, padding=1, algo="implicit_gemm")
    assert allocated == [out.shape] and all(cuda._dummies[k] is v for k, v in first.items())


def test_no_memory_to_measure_runs_the_default_and_measures_later(cuda, monkeypatch):
    """Tuning may need synthetic inputs (where the caller's arrays cannot stand in); without room for them
    the call still runs (first candidate) and nothing is remembered, so a later call measures."""
    x, w, b = _conv_arrays(8)
    spec = fastconv.conv_spec(x, w, b, padding=1)

    def oom(spec, xp, given=None):
        raise cupy_shim.OutOfMemoryError("out of memory allocating the tuning inputs")

    monkeypatch.setattr(_tune, "synthetic_inputs", oom)
    before = cuda.TUNER.measure_count
    out = fastconv.conv2d(*(cupy_shim.asarray(a) for a in (x, w, b)), padding=1)
    assert_conv_close(out.get(), oracle.conv(spec, x, w, b), spec, x, w, b)
    assert cuda.TUNER.cache().entries() == {} and cuda.TUNER.measure_count > before  # tried, remembered nothing
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "cupy", cupy_shim)  # undo() also restored the real (absent) cupy
    tried = cuda.TUNER.measure_count
    fastconv.conv2d(*(cupy_shim.asarray(a) for a in (x, w, b)), padding=1)
    assert cuda.TUNER.measure_count == tried + 1 and cuda.TUNER.cache().entries()


def test_empty_batch_is_not_measured(cuda):
    """N = 0 launches nothing, so nothing is measured for it (the shortcut comes before any tuning)."""
    w = cupy_shim.asarray(np.zeros((6, 4, 3, 3), np.float32))
    before = cuda.TUNER.measure_count
    out = fastconv.conv2d(cupy_shim.asarray(np.zeros((0, 4, 9, 9), np.float32)), w, padding=1)
    assert out.shape == (0, 6, 9, 9) and cuda.TUNER.measure_count == before
    y, idx = fastconv.max_pool2d(cupy_shim.asarray(np.zeros((0, 2, 8, 8), np.float32)), 2, return_indices=True)
    assert y.shape == idx.shape == (0, 2, 4, 4) and cuda.TUNER.measure_count == before


def test_availability_is_asked_once_per_process(cuda, monkeypatch):
    """Dispatch asks on every call; the device query behind the answer runs once."""
    calls = []
    real = cuda._probe
    monkeypatch.setattr(cuda, "_probe", lambda: calls.append(1) or real())
    cuda._availability = None
    x, w, b = (cupy_shim.asarray(a) for a in _conv_arrays(9))
    for _ in range(3):
        assert cuda.availability() is None
        fastconv.conv2d(x, w, b, padding=1, algo="direct")
    assert calls == [1]
