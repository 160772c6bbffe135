"""Build cache, option handling, source rewriting and the ucontext fiber backend."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule, build_stats
from fastconv.emu import _build, _module

SRC = textwrap.dedent("""
    extern "C" __global__ void fill(float* out, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) out[i] = VALUE;
    }
""")


def _fill(mod, n=10):
    out = np.zeros(n, np.float32)
    mod.get_function("fill")(1, 32, (out, np.int32(n)))
    return out


@pytest.fixture
def fresh_cache(emu_cache, tmp_path, monkeypatch):
    """An empty module cache that shares the session's compiled runtime (saves ~3 s a test)."""
    EmuModule(code=SRC, options=("-DVALUE=0.0f",))  # make sure the session cache has a runtime
    for name in os.listdir(emu_cache):
        if name.startswith("runtime-"):
            shutil.copy(os.path.join(emu_cache, name), tmp_path / name)
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path))
    return tmp_path


def test_cache_hits_in_process_and_on_disk(fresh_cache):
    m1 = EmuModule(code=SRC, options=("-DVALUE=3.0f",))
    assert m1.compiled and (_fill(m1) == 3).all()
    m2 = EmuModule(code=SRC, options=("-DVALUE=3.0f",))
    assert not m2.compiled and m2.path == m1.path
    _module._forget_loaded()  # as in a new process: must come from disk
    before = build_stats()["module_builds"]
    m3 = EmuModule(code=SRC, options=("-DVALUE=3.0f",))
    assert not m3.compiled and build_stats()["module_builds"] == before
    assert (_fill(m3) == 3).all()


def test_changed_source_or_flags_recompile(fresh_cache):
    m1 = EmuModule(code=SRC, options=("-DVALUE=1.0f",))
    m2 = EmuModule(code=SRC, options=("-DVALUE=2.0f",))
    m3 = EmuModule(code=SRC.replace("VALUE", "VALUE + 1"), options=("-DVALUE=2.0f",))
    assert m2.compiled and m3.compiled and len({m1.path, m2.path, m3.path}) == 3
    assert (_fill(m1) == 1).all() and (_fill(m2) == 2).all() and (_fill(m3) == 3).all()


def test_changed_header_recompiles(fresh_cache, tmp_path):
    (tmp_path / "value.h").write_text("#define VALUE 4.0f\n")
    (tmp_path / "k.cu").write_text('#include "value.h"\n' + SRC)
    m1 = EmuModule(path=tmp_path / "k.cu")
    (tmp_path / "value.h").write_text("#define VALUE 5.0f\n")
    m2 = EmuModule(path=tmp_path / "k.cu")
    assert m2.compiled and (_fill(m1) == 4).all() and (_fill(m2) == 5).all()


def test_corrupted_cache_entry_is_rebuilt(fresh_cache):
    m1 = EmuModule(code=SRC, options=("-DVALUE=6.0f",))
    path = m1.path
    data = open(path, "rb").read()
    # replace (new inode) rather than overwrite: the loaded copy in this process stays intact
    with open(path + ".bad", "wb") as f:
        f.write(data[: len(data) // 2])
    os.replace(path + ".bad", path)
    _module._forget_loaded()
    before = build_stats()["rebuilt_corrupt"]
    m2 = EmuModule(code=SRC, options=("-DVALUE=6.0f",))
    assert m2.compiled and build_stats()["rebuilt_corrupt"] == before + 1
    assert open(path, "rb").read() != data[: len(data) // 2]
    # a fresh process loads the rebuilt file
    code = ("import numpy as np; from fastconv.emu import EmuModule; import sys;"
            f"m = EmuModule(code={SRC!r}, options=('-DVALUE=6.0f',));"
            "o = np.zeros(4, np.float32); m.get_function('fill')(1, 4, (o, np.int32(4)));"
            "sys.exit(0 if (not m.compiled and (o == 6).all()) else 1)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_compile_error_is_reported(fresh_cache):
    with pytest.raises(EmuError, match=r"fastconv-emu code>:4:\d+: error: .undeclared_name"):
        EmuModule(code=SRC.replace("VALUE", "undeclared_name"))


def test_fastconv_emu_define_and_nvrtc_options(fresh_cache):
    src = SRC.replace("VALUE", "(FASTCONV_EMU == 1 ? 7.0f : 0.0f)")
    m = EmuModule(code=src, options=("-std=c++17", "--use_fast_math", "-lineinfo", "-arch=sm_80"))
    assert (_fill(m) == 7).all()


def test_unparsable_dynamic_shared_declaration_raises(fresh_cache):
    src = 'extern "C" __global__ void k(float* o) { extern __shared__ float s[4]; o[0] = s[0]; }'
    with pytest.raises(EmuError, match=r"cannot emulate this dynamic shared memory declaration"):
        EmuModule(code=src)
    src = 'extern __shared__ float s[];\nextern "C" __global__ void k(float* o) { o[0] = s[0]; }'
    with pytest.raises(EmuError, match=r"code>:1: file-scope 'extern __shared__'"):
        EmuModule(code=src)


def test_shared_initializer_raises(fresh_cache):
    src = 'extern "C" __global__ void k(float* o) { __shared__ float s = 1.0f; o[0] = s; }'
    with pytest.raises(EmuError, match="initializers are not allowed"):
        EmuModule(code=src)


def test_ucontext_backend_reduction(kernel_path):
    mod = EmuModule(path=kernel_path("reduction.cu"), fibers="ucontext")
    assert mod.backend == "ucontext"
    x = np.random.default_rng(9).integers(-50, 50, 1024).astype(np.float32)
    for order in ("forward", "reverse", "random"):
        out = np.zeros(4, np.float32)
        mod.get_function("block_sum")(4, 256, (x, out, np.int32(1024)), order=order)
        np.testing.assert_array_equal(out, x.reshape(4, 256).sum(1))
    out = np.zeros(4, np.float32)
    mod.get_function("block_sum_racy")(4, 256, (x, out, np.int32(1024)), order="forward")
    assert not np.array_equal(out, x.reshape(4, 256).sum(1))


def test_concurrent_builds_in_two_processes(fresh_cache):
    # both processes build the same module into the same cache at once; atomic replacement means
    # both load a complete file and a later load hits the cache
    code = ("import numpy as np, sys; from fastconv.emu import EmuModule;"
            f"m = EmuModule(code={SRC!r}, options=('-DVALUE=8.0f',));"
            "o = np.zeros(4, np.float32); m.get_function('fill')(1, 4, (o, np.int32(4)));"
            "sys.exit(0 if (o == 8).all() else 1)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert not [n for n in os.listdir(fresh_cache) if n.startswith(".tmp-")]
    m = EmuModule(code=SRC, options=("-DVALUE=8.0f",))
    assert not m.compiled and (_fill(m) == 8).all()


def test_unwritable_cache_dir_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_EMU_CACHE", "/proc/fastconv-emu-cache")
    with pytest.raises(EmuError, match="FASTCONV_EMU_CACHE"):
        EmuModule(code=SRC, options=("-DVALUE=9.0f",))


def test_corrupted_runtime_object_is_rebuilt(fresh_cache):
    prefix = f"runtime-{_build.default_backend()}-"
    [obj] = [n for n in os.listdir(fresh_cache) if n.startswith(prefix) and n.endswith(".o")]
    with open(fresh_cache / obj, "r+b") as f:
        f.truncate(100)
    before = build_stats()["runtime_builds"]
    m = EmuModule(code=SRC, options=("-DVALUE=10.0f",))
    assert build_stats()["runtime_builds"] == before + 1
    assert (_fill(m) == 10).all()
