"""The first call: what it says when a kernel compiles, ``fastconv warmup`` and ``fastconv --version``.

Two subprocesses share one fresh Numba cache: the first compiles two kernels (max_unpool2d in float32 and
float64, the cheapest: about 3 s together) and must say so in exactly one line; the second runs
``fastconv warmup`` on the same kernels, which load from that cache and must say nothing of compiling.
Everything else runs in this process on kernels other tests compile anyway (numba's max_pool2d in float32,
pool.cu in float32 through tests/cuda/cupy_shim.py as test_backend_shim builds it), or on fakes; nothing
here asserts a speed.
"""
from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastconv import _config, _cuda, _dispatch, _warmup, cli

REPO = Path(__file__).resolve().parents[1]
COMPILE_LINE = "fastconv: compiling"

needs_numba = pytest.mark.skipif(_dispatch.availability("numba") is not None,
                                 reason=f"numba: {_dispatch.availability('numba')}")


def _env(cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTCONV_QUIET", None)      # the conftest's switch: here the line is what is checked
    return env


# ---------------------------------------------------------------------------------------------------
# The line a first compile says, end to end
# ---------------------------------------------------------------------------------------------------
_COMPILE_TWO = """
    import logging, sys
    import numpy as np
    import fastconv as fc
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s|%(message)s")
    x = np.ones((1, 1, 2, 2), np.float32)
    i = np.zeros((1, 1, 2, 2), np.int64)
    fc.max_unpool2d(x, i, 2)
    fc.max_unpool2d(x.astype(np.float64), i, 2)
"""


@needs_numba
def test_first_compile_is_said_once_and_a_warm_cache_says_nothing(tmp_path):
    cache = tmp_path / "numba-cache"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_COMPILE_TWO)], capture_output=True, text=True,
                          env=_env(cache), timeout=600)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith(COMPILE_LINE)]
    assert len(said) == 1, proc.stderr                  # two kernels compiled, one line for the process
    line = said[0]
    assert line.startswith("fastconv: compiling numba kernel max_unpool2d (float32) on its first call")
    assert str(cache) in line and "`fastconv warmup`" in line and "FASTCONV_QUIET=1" in line
    # the logger has each compile, start and end
    logged = [ln for ln in proc.stdout.splitlines() if ln.startswith("fastconv|numba: compil")]
    for dtype in ("float32", "float64"):
        assert f"fastconv|numba: compiling kernel max_unpool2d ({dtype})" in logged
        assert any(re.fullmatch(rf"fastconv\|numba: compiled kernel max_unpool2d \({dtype}\) in \d+\.\d s", ln)
                   for ln in logged), logged

    # a second process: the same kernels, through fastconv warmup, come from the cache and say nothing
    proc = subprocess.run([sys.executable, "-m", "fastconv.cli", "warmup", "--backend", "numba",
                           "--op", "max_unpool2d"], capture_output=True, text=True, env=_env(cache), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert COMPILE_LINE not in proc.stderr
    assert "warmup: numba" in proc.stderr
    for dtype in ("float32", "float64"):       # not a terminal: one plain progress line per run
        assert re.search(rf"^warmup \[\d/4\] numba:max_unpool:direct {dtype} 2-D N=1: 0 compiled, 1 from the "
                         rf"cache, \d+\.\d s$", proc.stderr, re.M), proc.stderr
        assert re.search(rf"^warmup \[\d/4\] numba:max_unpool:direct {dtype} 2-D N=2: nothing new to load",
                         proc.stderr, re.M), proc.stderr
    assert re.search(r"^numba: 4 runs, 2 Numba kernel signatures loaded: 0 compiled, 2 from the cache, in "
                     r"\d+\.\d s; cache: " + re.escape(str(cache)), proc.stdout, re.M), proc.stdout


# ---------------------------------------------------------------------------------------------------
# The line, in this process: once per backend, FASTCONV_QUIET, the Numba event it hangs on
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_notice(monkeypatch):
    """A process that has said nothing yet."""
    monkeypatch.setattr(_warmup, "_said", set())
    monkeypatch.delenv("FASTCONV_QUIET", raising=False)


def _lines(err: str):
    return [ln for ln in err.splitlines() if ln.startswith(COMPILE_LINE)]


def test_the_line_is_said_once_per_backend_and_the_switch_silences_it(fresh_notice, monkeypatch, capsys, caplog):
    where = lambda: "cached in /somewhere"          # noqa: E731
    with caplog.at_level(logging.INFO, logger="fastconv"):
        _warmup.compiling_now("numba", "kernel a (float32)", where)
        _warmup.compiling_now("numba", "kernel b (float32)", where)
        _warmup.compiling_now("cuda-emu", "emulated module pool.cu with g++", where)
    err = capsys.readouterr().err
    assert _lines(err) == [
        "fastconv: compiling numba kernel a (float32) on its first call; cached in /somewhere; `fastconv warmup` "
        "compiles every kernel ahead of time (said once per process; FASTCONV_QUIET=1 hides it)",
        "fastconv: compiling cuda-emu emulated module pool.cu with g++ on its first call; cached in /somewhere; "
        "`fastconv warmup` compiles every kernel ahead of time (said once per process; FASTCONV_QUIET=1 hides it)"]
    assert [r.getMessage() for r in caplog.records] == [
        "numba: compiling kernel a (float32)", "numba: compiling kernel b (float32)",
        "cuda-emu: compiling emulated module pool.cu with g++"]

    monkeypatch.setattr(_warmup, "_said", set())
    monkeypatch.setenv("FASTCONV_QUIET", "1")
    _warmup.compiling_now("numba", "kernel a (float32)", where)
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(_warmup, "_said", set())    # a value the switch does not take: said, with why
    monkeypatch.setenv("FASTCONV_QUIET", "yes")
    _warmup.compiling_now("numba", "kernel a (float32)", where)
    line, = _lines(capsys.readouterr().err)
    assert "FASTCONV_QUIET='yes' is not valid" in line


@needs_numba
def test_numba_compile_events_of_fastconv_kernels_reach_the_line(fresh_notice, capsys):
    """The listener on Numba's compile event (triggered only once the disk cache missed) says fastconv's
    kernels and no one else's; a failing notice never raises into Numba's compile."""
    from numba.core import event

    from fastconv._backends import _numba_common, _numba_pool
    listeners = [ls for ls in event._registered["numba:compile"]
                 if isinstance(ls, _numba_common.CompileListener)]
    assert len(listeners) == 1                      # registered once, at the kernel modules' import
    listener = listeners[0]
    x = np.zeros((1, 1, 2, 2), np.float32)
    from numba import typeof
    foreign = type("D", (), {"py_func": staticmethod(lambda: None)})()     # a dispatcher of another package
    foreign.py_func.__module__ = "somebody_else"
    listener.notify(event.Event("numba:compile", event.EventStatus.START,
                                data={"dispatcher": foreign, "args": (typeof(x),)}))
    assert capsys.readouterr().err == ""
    data = {"dispatcher": _numba_pool.max_pool2d, "args": (typeof(x), typeof(x))}
    listener.notify(event.Event("numba:compile", event.EventStatus.START, data=data))
    listener.notify(event.Event("numba:compile", event.EventStatus.END, data=data))
    line, = _lines(capsys.readouterr().err)
    assert line.startswith("fastconv: compiling numba kernel max_pool2d (float32) on its first call; ")
    assert _numba_common.cache_phrase(_numba_pool.__file__) in line
    listener.notify(event.Event("numba:compile", event.EventStatus.START, data={"args": None}))   # never raises


@needs_numba
def test_an_uncached_numba_says_so_instead_of_a_cache_directory(monkeypatch):
    """Where Numba cannot write its cache (a read-only install), the line says the kernel compiles again in
    every process and how to keep it, instead of naming a cache directory."""
    from fastconv._backends import _numba_common
    monkeypatch.setattr(_numba_common, "cache_location", lambda py_file: (None, "no locator available (a test)"))
    _numba_common.cache_phrase.cache_clear()
    try:
        phrase = _numba_common.cache_phrase("/somewhere/_numba_pool.py")
    finally:
        _numba_common.cache_phrase.cache_clear()
    assert phrase == ("not cached (no locator available (a test)), so it compiles again in every process; set "
                      "NUMBA_CACHE_DIR to a writable directory to keep it")


def test_a_slow_block_is_said_while_it_runs_and_a_fast_one_not(fresh_notice, monkeypatch, capsys):
    """The cuda backend's rule (CuPy decides whether NVRTC runs): a module build still running after
    ``after`` seconds is a compile, said then; one that ends sooner (a cache load) says nothing."""
    import threading
    with _warmup.compiling("cuda", "kernels of pool.cu (float32) with NVRTC", lambda: "cached in C",
                           after=60) as fast:
        pass
    assert not fast.slow and capsys.readouterr().err == ""
    said = threading.Event()
    real = _warmup.compiling_now

    def spy(*args):
        real(*args)
        said.set()
    monkeypatch.setattr(_warmup, "compiling_now", spy)
    with _warmup.compiling("cuda", "kernels of pool.cu (float32) with NVRTC", lambda: "cached in C",
                           after=0.01) as slow:
        assert said.wait(60)                        # said while the block still runs
    assert slow.slow
    line, = _lines(capsys.readouterr().err)
    assert line.startswith("fastconv: compiling cuda kernels of pool.cu (float32) with NVRTC on its first call")


def test_the_cuda_backend_says_an_nvrtc_build_and_counts_it(fresh_notice, monkeypatch, capsys):
    """cuda.module's hook, with a stand-in for CuPy (no GPU needed): a build past SLOW_S is said and counted
    "compiled"; a quick one (CuPy's cache) is neither said nor counted so."""
    import time
    import types

    from fastconv._backends import cuda
    delay = []

    class RawModule:
        def __init__(self, **kw):
            self.kw = kw

        def compile(self):
            time.sleep(delay[0])
    fake = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: 0),
        compiler=types.SimpleNamespace(CompileException=RuntimeError)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cuda, "_modules", {})
    monkeypatch.setattr(cuda, "built", {})
    monkeypatch.setenv("CUPY_CACHE_DIR", "/cupy/cache")
    monkeypatch.setattr(_warmup, "SLOW_S", 0.02)
    delay.append(0.5)
    cuda.module("pool.cu", "float32")
    line, = _lines(capsys.readouterr().err)
    assert line.startswith("fastconv: compiling cuda kernels of pool.cu (float32) with NVRTC on its first call; ")
    assert "/cupy/cache" in line
    monkeypatch.setattr(_warmup, "SLOW_S", 60)
    delay[0] = 0.0
    cuda.module("pool.cu", "float64")
    assert cuda.built == {(0, "pool.cu", "float32"): "compiled", (0, "pool.cu", "float64"): "cached"}
    assert _warmup._CudaLedger().state() == {"pool.cu (float32) on device 0": "compiled",
                                             "pool.cu (float64) on device 0": "cached"}


def test_warmup_of_the_cuda_backend_end_to_end_through_the_cupy_shim(monkeypatch, tmp_path, capsys):
    """``fastconv warmup --backend cuda`` on a selection, CuPy replaced by tests/cuda/cupy_shim.py (RawModule
    over the emulator, NumPy-backed arrays): each run goes through cuda.module, and the summary counts the
    modules (kernel file, dtype) it loaded."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip(f"the emulator is unavailable: {_dispatch.availability('cuda-emu')}")
    from fastconv._backends import cuda

    from .cuda import cupy_shim
    monkeypatch.setitem(sys.modules, "cupy", cupy_shim)
    for memo in ("_modules", "_functions", "_dummies", "built"):
        monkeypatch.setattr(cuda, memo, {})
    monkeypatch.setattr(cuda, "_availability", None)
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path))
    assert cli.main(["warmup", "--backend", "cuda", "--op", "max_pool2d", "--dtype", "float32"]) == 0
    out, err = capsys.readouterr()
    runs = len([i for i in _dispatch.backend_module("cuda").implementations() if i.op == "max_pool"
                and 2 in i.spatial_dims]) * 2         # a batch of one and of two
    assert re.search(rf"^warmup \[1/{runs}\] cuda:max_pool:direct/global float32 2-D N=1: "
                     r"(1 compiled, 0|0 compiled, 1) from the cache", err, re.M), err
    assert re.match(rf"cuda: {runs} runs, 1 CUDA modules \(kernel file, dtype\) loaded: ", out), out
    assert f"cache: CuPy's {tmp_path}" in out
    assert set(cuda.built) == {(0, "pool.cu", "float32")}
    monkeypatch.setattr(cuda, "_availability", None)     # asked again once the shim is gone


def test_the_emulator_says_a_g_plus_plus_build_and_not_a_cache_hit(fresh_notice, monkeypatch, tmp_path, capsys):
    """The emulator's builder wraps only a real build (g++ runs) in the notice: a fake compiler stands
    in for g++, so nothing is built here."""
    from fastconv.emu import _build
    if not _build.available()[0]:
        pytest.skip(f"emulator unavailable: {_build.available()[1]}")
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path))
    monkeypatch.setattr(_build, "runtime_object", lambda backend: str(tmp_path / "rt.o"))

    def fake_compile(cmd, what):
        Path(cmd[cmd.index("-o") + 1]).write_bytes(b"\x7fELF fake")
    monkeypatch.setattr(_build, "_compile", fake_compile)
    path, built = _build.module_library("unit", "k" * 64, "asm", [], [], "emulated module x.cu")
    assert built
    line, = _lines(capsys.readouterr().err)
    assert line.startswith("fastconv: compiling cuda-emu emulated module x.cu with g++ on its first call; ")
    assert str(tmp_path) in line
    monkeypatch.setattr(_warmup, "_said", set())
    assert _build.module_library("unit", "k" * 64, "asm", [], [], "emulated module x.cu") == (path, False)
    assert capsys.readouterr().err == ""            # a cache hit is not a compile


# ---------------------------------------------------------------------------------------------------
# fastconv warmup
# ---------------------------------------------------------------------------------------------------
@needs_numba
def test_every_numba_implementation_gets_a_tiny_problem_in_every_dtype():
    p = _warmup.plan("numba")
    assert p.unfit == []
    impls = _dispatch.backend_module("numba").implementations()
    assert {(it.impl.name, it.spec.dtype) for it in p.items} == {
        (i.name, d) for i in impls for d in ("float32", "float64")}
    assert {it.spec.N for it in p.items} == {1, 2}
    for it in p.items:
        assert _dispatch.reasons(it.impl, it.spec) == []
        assert max(it.spec.in_elems, it.spec.out_elems) <= 4096       # tiny


@needs_numba
def test_numba_kernels_no_run_reached_are_named():
    """Asked for a dtype no kernel compiles for (float16: numba runs it in float32), every kernel launched
    from Python is unreached; helpers compiled into their callers are not asked."""
    from fastconv._backends import _numba_fold, numba_cpu   # noqa: F401  imports the kernel modules (compiles nothing)
    numba_cpu.kernels()
    names = {u.split(" (")[0] for u in _warmup._NumbaLedger().unreached(["float16"])}
    assert {"conv2d_direct", "im2col_pack", "im2col_pack_rows", "im2col_pack_tile", "max_pool2d", "unfold_rows",
            "fold_rows", "conv3d_direct"} <= names
    assert not names & {"_avg_pool_per_window", "col_range", "uaxpy"}     # called by kernels / inline


@needs_numba
def test_warm_runs_reach_the_chunked_kernels_prange_twins():
    """The tiny problems run on one thread, so only the extra all-threads run (``NumbaImpl.warm``) launches
    the CHUNKED kernels' static ``_prange`` twins: warmup compiles them too."""
    from fastconv._backends import numba_cpu
    if numba_cpu._threads() < 2:
        pytest.skip("Numba runs one thread here: the _prange twins never launch")
    k = numba_cpu.kernels()
    ops = ["conv", "conv_input", "conv_weight", "avg_pool", "max_pool"]
    for it in _warmup.plan("numba", ops=ops, dtypes=["float64"]).items:
        _warmup.run_item("numba", it)
    # (the pools' too: a tiny pool is one chunk by CHUNK_MIN_BYTES, except while warming)
    assert numba_cpu.CHUNK_MIN_BYTES > 1 and numba_cpu._chunk_min_bytes() == numba_cpu.CHUNK_MIN_BYTES
    for n in ("conv2d_depthwise_phase", "conv2d_depthwise_input", "conv2d_depthwise_weight_phase",
              "global_avg_pool2d", "avg_pool2x2", "max_pool2x2", "conv2d_planes_chunks"):
        assert any(str(sig[0].dtype) == "float64" for sig in getattr(k, n + "_prange").signatures), n
    assert "conv2d_depthwise_phase_prange" in {u.split(" (")[0] for u in _warmup._NumbaLedger().unreached(["float16"])}


@pytest.mark.parametrize("backend", ["cuda", "cuda-emu"])
def test_the_cuda_plans_reach_every_kernel_file_in_every_dtype(backend):
    """What the CUDA backends compile is one module per kernel file (and dtype, on cuda): the runs reach every
    file in every dtype its family has; what refuses every tiny problem says why (planning needs no GPU)."""
    p = _warmup.plan(backend)
    reached = {(it.impl.family.FILE, it.spec.dtype) for it in p.items}
    assert reached == {(f.FILE, d) for f in _cuda.FAMILIES for d in f.DTYPES}
    for label, why in p.unfit:
        assert why


def test_op_names():
    known = ("conv", "conv_input", "conv_weight", "max_pool", "max_unpool")
    assert _warmup.parse_op("max_pool2d", known) == ("max_pool", 2)
    assert _warmup.parse_op("max_pool", known) == ("max_pool", None)
    assert _warmup.parse_op("conv3d", known) == ("conv", 3)
    assert _warmup.parse_op("conv_transpose1d", known) == ("conv_input", 1)
    assert _warmup.parse_op("conv2d_weight", known) == ("conv_weight", 2)
    assert _warmup.parse_op("max_unpool3d", known) == ("max_unpool", 3)
    with pytest.raises(ValueError, match=r"--op must name an op .* got 'pool2d'"):
        _warmup.parse_op("pool2d", known)


@needs_numba
def test_warmup_of_a_selection_compiles_what_it_says(monkeypatch):
    """In this process (max_pool2d float32, which other tests compile anyway): two runs, a progress line
    each, and afterwards the kernel has its float32 signature."""
    from numba import typeof

    from fastconv._backends import _numba_pool
    out = io.StringIO()
    res = _warmup.warmup("numba", ops=["max_pool2d"], dtypes=["float32"], progress=lambda n: _warmup.Progress(n, out))
    assert res.runs == 4 and not res.failed              # two implementations, a batch of one and of two
    for i, (name, n) in enumerate([("direct/2x2", 1), ("direct/2x2", 2), ("direct", 1), ("direct", 2)], 1):
        assert re.search(rf"^warmup \[{i}/4\] numba:max_pool:{name} float32 2-D N={n}: (\d+ compiled, \d+ from the "
                         r"cache|nothing new to load), "
                         r"\d+\.\d s$", out.getvalue(), re.M), out.getvalue()
    assert res.summary().startswith(f"numba: 4 runs, {len(res.units)} Numba kernel signatures loaded: ")
    a4 = typeof(np.zeros((1, 1, 1, 1), np.float32))     # array(float32, 4d, C): the kernel's x and out
    assert any(sig[:2] == (a4, a4) for sig in _numba_pool.max_pool2d.overloads), \
        list(_numba_pool.max_pool2d.overloads)
    kernels = {f"{d.py_func.__name__}{_warmup._sig_text(s)}" for d in _warmup._numba_dispatchers() for s in d.overloads}
    assert set(res.units) <= kernels                 # what it claims loaded is loaded
    assert all(v in ("compiled", "cached") for v in res.units.values())


def test_progress_bar_on_a_terminal(monkeypatch):
    monkeypatch.setattr(_warmup.shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((60, 20)))

    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    bar = _warmup.Progress(4, out)
    bar.start("numba:conv:direct/blocked float32 2-D")
    bar.finish("numba:conv:direct/blocked float32 2-D", "1 compiled, 0 from the cache, 3.0 s")
    bar.close()
    text = out.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")        # one line, rewritten
    frames = text[:-1].split("\r")[1:]
    assert frames[0] == "[........................] 0/4 numba:conv:direct/blocked float32 2-D"[:59]   # cut at the width
    assert frames[1] == "[######..................] 1/4 numba:conv:direct/blocked float32 2-D"[:59]
    bar = _warmup.Progress(4, out)
    monkeypatch.setattr(_warmup.shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((200, 20)))
    bar.start("numba:conv:direct/blocked float32 2-D")
    bar.finish("numba:conv:direct/blocked float32 2-D", "1 compiled, 0 from the cache, 3.0 s")
    assert out.getvalue().split("\r")[-1] == ("[######..................] 1/4 numba:conv:direct/blocked float32 2-D: "
                                              "1 compiled, 0 from the cache, 3.0 s")


def test_warmup_refuses_an_unavailable_backend(monkeypatch, capsys):
    real = _dispatch.availability
    monkeypatch.setattr(_dispatch, "availability", lambda b: "no GPU here (a test)" if b == "cuda" else real(b))
    assert cli.main(["warmup", "--backend", "cuda"]) == 2
    assert capsys.readouterr().err == "fastconv warmup: backend 'cuda' is not available: no GPU here (a test)\n"
    monkeypatch.setattr(_dispatch, "availability", lambda b: f"{b} is missing (a test)")
    assert cli.main(["warmup"]) == 2
    assert capsys.readouterr().err == ("fastconv warmup: no backend that compiles is available here (numba: numba is "
                                       "missing (a test); cuda: cuda is missing (a test))\n")
    with pytest.raises(SystemExit) as e:               # the oracle compiles nothing
        cli.main(["warmup", "--backend", "numpy"])
    assert e.value.code == 2


@needs_numba
def test_warmup_by_default_warms_what_is_available_and_says_what_it_skips(monkeypatch, capsys):
    real = _dispatch.availability
    monkeypatch.setattr(_dispatch, "availability", lambda b: "no GPU here (a test)" if b == "cuda" else real(b))
    assert cli.main(["warmup", "--op", "max_pool2d", "--dtype", "float32"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warmup: cuda skipped: no GPU here (a test)\nwarmup: numba\nwarmup [1/4] ")
    assert out.startswith("numba: 4 runs, ") and out.count("\n") == 1


@needs_numba
def test_a_failing_run_is_reported_and_the_rest_still_run(monkeypatch, capsys):
    ran = []

    def run_item(backend, item):
        ran.append(item.spec.N)
        if item.spec.N == 1:
            raise RuntimeError("a kernel that does not build (a test)")
    monkeypatch.setattr(_warmup, "run_item", run_item)
    assert cli.main(["warmup", "--backend", "numba", "--op", "max_pool2d", "--dtype", "float32"]) == 1
    out, err = capsys.readouterr()
    assert ran == [1, 2, 1, 2]
    assert "warmup [1/4] numba:max_pool:direct/2x2 float32 2-D N=1: FAILED " in err
    assert "warmup [3/4] numba:max_pool:direct float32 2-D N=1: FAILED " in err
    assert "  FAILED numba:max_pool:direct float32 2-D N=1: RuntimeError: a kernel that does not build (a test)" in out


@needs_numba
def test_warmup_refuses_an_unknown_op_before_running_anything(capsys):
    assert cli.main(["warmup", "--backend", "numba", "--op", "max_pool4d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastconv warmup: --op must name an op of the backend (") and "'max_pool4d'" in err


# ---------------------------------------------------------------------------------------------------
# fastconv --version
# ---------------------------------------------------------------------------------------------------
def test_version(capsys):
    try:
        version = importlib.metadata.version("fastconv")     # the installed package's own metadata
    except importlib.metadata.PackageNotFoundError:
        version = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"fastconv {version}\n"


def test_quiet_is_a_documented_switch(monkeypatch):
    monkeypatch.setenv("FASTCONV_QUIET", "1")
    assert _config.quiet() is True
    monkeypatch.setenv("FASTCONV_QUIET", "2")
    with pytest.raises(ValueError, match="FASTCONV_QUIET='2' is not valid .* takes `0` or `1`"):
        _config.quiet()
