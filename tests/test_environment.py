"""Environment and process state (issue 18 items 6-8): every environment variable is parsed in one place
and a bad value is refused naming it; a read-only install runs Numba uncached and says so once; a failed
or interrupted lazy import is retried cleanly; an unusable backend says why wherever it matters."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import _config, _dispatch, cli

PACKAGE = pathlib.Path(fc.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------
# Item 8: every variable of the table refuses a value it does not take, naming itself and what it takes
# ---------------------------------------------------------------------------------------------------
def _a_file(tmp_path):
    p = tmp_path / "a-file"
    p.write_text("")
    return str(p)


#: one value each variable must refuse (a callable: built in tmp_path). A variable added to
#: _config.VARS without an entry here fails test_every_variable_refuses_a_bad_value.
BAD = {
    "FASTCONV_AUTOTUNE": "yes",
    "FASTCONV_MEMO": "off",
    "FASTCONV_AUTOTUNE_CACHE": lambda tmp: str(tmp),          # a directory, not a file
    "FASTCONV_SHAPES": _a_file,
    "FASTCONV_EMU_CACHE": _a_file,
    "FASTCONV_EMU_ORDER": "sideways",
    "FASTCONV_EMU_GUARD": "both",
    "FASTCONV_EMU_TIMEOUT": "abc",
    "FASTCONV_EMU_WORKERS": "1.5",
    "FASTCONV_EMU_FIBERS": "threads",
    "FASTCONV_QUIET": "yes",
    "FASTCONV_FUZZ": "short",
    "FASTCONV_FUZZ_EXAMPLES": "0",
    "FASTCONV_COMPILE_ARCHS": "sm70",
    "FASTCONV_REQUIRE_GPU": "true",
    "FASTCONV_CUPY_NO_POOL": "2",
    "FASTCONV_BENCH_FULL": "on",
    "FASTCONV_BENCH_THREADS": "-1",
    "CXX": "no-such-compiler-fastconv",
    "NUMBA_CACHE_DIR": _a_file,
    "NUMBA_NUM_THREADS": "0",
    "CUPY_CACHE_DIR": _a_file,
    "CUDA_PATH": _a_file,
    "CUDA_HOME": _a_file,
    "OPENBLAS_NUM_THREADS": "four",
    "OPENBLAS_CORETYPE": "Sky lake",
    "OMP_NUM_THREADS": "4,0",
    "MKL_NUM_THREADS": "1e3",
}


@pytest.mark.parametrize("var", _config.VARS, ids=lambda v: v.name)
def test_every_variable_refuses_a_bad_value(var, monkeypatch, tmp_path):
    assert var.name in BAD, f"give {var.name} a value it refuses in BAD (and a parser in _config.VARS)"
    bad = BAD[var.name]
    bad = bad(tmp_path) if callable(bad) else bad
    monkeypatch.setenv(var.name, bad)
    for read in (_config.value, _config.get):
        with pytest.raises(ValueError) as e:
            read(var.name)
        msg = str(e.value)
        assert f"{var.name}={bad!r}" in msg and var.takes in msg, msg
    monkeypatch.delenv(var.name)
    assert _config.value(var.name) is None and _config.get(var.name) is None


@pytest.mark.parametrize("value, meaning", [("0", 0.0), ("2.5", 2.5), ("inf", 0.0), ("1e12", 0.0),
                                            ("1e9", 0.0), ("999999999", 999999999.0)])
def test_emu_timeout_values(value, meaning, monkeypatch):
    """0, inf and anything the runtime's nanosecond watchdog cannot wait for (from 1e9 s on) mean none."""
    monkeypatch.setenv("FASTCONV_EMU_TIMEOUT", value)
    assert _config.emu_timeout() == meaning
    assert _config.emu_timeout_seconds(float(value)) == meaning
    for bad in (-1, float("nan"), "soon"):
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            _config.emu_timeout_seconds(bad)


def test_emu_workers_values(monkeypatch):
    for value, meaning in (("0", 0), ("3", 3)):
        monkeypatch.setenv("FASTCONV_EMU_WORKERS", value)
        assert _config.emu_workers() == meaning
    monkeypatch.setenv("FASTCONV_EMU_WORKERS", str(2**31))
    with pytest.raises(ValueError, match=r"FASTCONV_EMU_WORKERS='2147483648'.*out of range"):
        _config.emu_workers()


def test_emu_cache_that_is_a_file_makes_cuda_emu_unavailable(monkeypatch, tmp_path):
    """Availability reflects what a launch needs: a cache path that is a file (or lies under one) makes
    cuda-emu unavailable, naming the path; a call on it says the same before any kernel runs."""
    if shutil.which("g++") is None:
        pytest.skip("no g++: cuda-emu is unavailable for another reason")
    f = _a_file(tmp_path)
    for path in (f, os.path.join(f, "sub")):
        monkeypatch.setenv("FASTCONV_EMU_CACHE", path)
        why = _dispatch.availability("cuda-emu")
        assert why is not None and repr(path) in why and "FASTCONV_EMU_CACHE" in why, why
        assert not fc.backends()["cuda-emu"]["available"]
        assert repr(path) in cli.cache_paths()["cuda-emu"]
        with pytest.raises(fc.BackendUnavailable, match="FASTCONV_EMU_CACHE"):
            fc.max_pool1d(np.ones((1, 1, 4), np.float32), 2, backend="cuda-emu")
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path / "fresh" / "emu"))
    assert _dispatch.availability("cuda-emu") is None


def _python(code: str, *, cwd=None, env=None, timeout=240) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last, returned here."""
    full = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_numba_num_threads_zero_says_why_numba_is_unusable():
    """NUMBA_NUM_THREADS=0 (Numba refuses it at import): NumPy input falls back to the numpy backend saying
    so once, and an algorithm only numba has fails saying why numba is unusable."""
    out = _python("""
        import json, warnings
        import numpy as np
        import fastconv as fc
        x, w = np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            y = fc.conv2d(x, w)
            fc.conv2d(x, w)
        try:
            fc.conv2d(x, w, algo="im2col")
            err = None
        except ValueError as e:
            err = str(e)
        print(json.dumps({"sum": float(y.sum()), "warnings": [str(m.message) for m in seen],
                          "reason": fc.backends()["numba"]["reason"], "error": err}))
        """, env={"NUMBA_NUM_THREADS": "0"})
    assert out["sum"] == 81.0
    assert out["reason"] is not None and "NUMBA_NUM_THREADS='0'" in out["reason"], out
    assert len(out["warnings"]) == 1 and "NUMBA_NUM_THREADS='0'" in out["warnings"][0], out
    assert out["error"] is not None and "numba backend is unusable" in out["error"] \
        and "NUMBA_NUM_THREADS='0'" in out["error"], out


def test_numba_not_installed_falls_back_quietly(monkeypatch, recwarn):
    """Numba absent is the documented fallback (numpy backend), not a fault: no warning, the reason says
    how to install it. (None in sys.modules is how Python spells "this import fails".)"""
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setattr(_dispatch, "_warned_fallback", set())
    assert _dispatch.availability("numba").startswith("numba is not installed")
    assert _dispatch.default_backend("numpy") == "numpy"
    assert not [w for w in recwarn if "fastconv" in str(w.message)]


# ---------------------------------------------------------------------------------------------------
# Item 6: a read-only install with no writable cache anywhere runs Numba uncached and says so once
# ---------------------------------------------------------------------------------------------------
def test_read_only_install_runs_numba_uncached(tmp_path):
    """A copy of the package where no cache can be written: every ``__pycache__`` is a file (as root can
    write anywhere, a file in the way is what stops Numba's in-tree locator, as a read-only directory
    does), HOME is a file (no ~/.cache/numba), NUMBA_CACHE_DIR and XDG_CACHE_HOME unset. Numba calls work,
    uncached, with one warning; backends() and fastconv info's cache line agree."""
    shutil.copytree(PACKAGE, tmp_path / "fastconv", ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    for d in [tmp_path / "fastconv", *(p for p in (tmp_path / "fastconv").rglob("*") if p.is_dir())]:
        (d / "__pycache__").write_text("")
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    out = _python("""
        import json, warnings
        import numpy as np
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            import fastconv as fc
            from fastconv import cli
            from fastconv._backends import _numba_common, numba_cpu
            numba_cpu.kernels()                              # every kernel module decorates
            lo_hi = _numba_common.col_range(-1, 2, 5, 4)     # one kernel compiles and runs, uncached
            from fastconv import _indices
            _indices._numba_bad_count()                      # the other directory's kernel decorates
        print(json.dumps({"file": fc.__file__, "numba": fc.backends()["numba"]["available"],
                          "cache": _numba_common.CACHE, "lo_hi": list(lo_hi),
                          "warnings": [str(m.message) for m in seen if "fastconv" in str(m.message)],
                          "info": cli.cache_paths()["numba"]}))
        """, cwd=tmp_path, env={"HOME": str(home), "NUMBA_CACHE_DIR": None, "XDG_CACHE_HOME": None})
    assert out["file"] == str(tmp_path / "fastconv" / "__init__.py")       # the copy ran, not the checkout
    assert out["numba"] is True and out["cache"] is False
    assert out["lo_hi"] == [1, 3]        # outputs q in [1, 3) read taps 2q - 1 in [0, 5): by hand
    assert len(out["warnings"]) == 1 and "runs uncached" in out["warnings"][0] \
        and "NUMBA_CACHE_DIR" in out["warnings"][0], out
    assert out["info"].startswith("none: kernels compile in every process"), out


# ---------------------------------------------------------------------------------------------------
# Item 7: an interrupted lazy import (numba, a kernel module, a backend module, the emulator) is retried
# ---------------------------------------------------------------------------------------------------
def test_interrupted_lazy_imports_are_retried_cleanly():
    """Ctrl-C arrives (a meta-path finder raises KeyboardInterrupt) while each lazy import is under way:
    Numba itself, a numba kernel module, a backend module's package, the emulator's pieces.
    Each interrupted call raises KeyboardInterrupt; the next call works."""
    out = _python("""
        import json, shutil, sys
        import numpy as np
        import fastconv as fc
        from fastconv import _dispatch

        class CtrlC:
            target = None
            def find_spec(self, name, path=None, target=None):
                if name == self.target:
                    self.target = None            # once
                    raise KeyboardInterrupt
                return None

        finder = CtrlC()
        sys.meta_path.insert(0, finder)
        x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        steps = {}

        def step(name, target, call, retry, check):
            finder.target = target
            try:
                call()
                first = "no interrupt"
            except KeyboardInterrupt:
                first = "interrupted"
            try:
                steps[name] = [first, check(retry())]
            except BaseException as e:
                steps[name] = [first, f"{type(e).__name__}: {e}"]

        pool = lambda: fc.max_pool2d(x, 2)
        # the first call is interrupted while it imports Numba; Numba then imports (the kernels do not yet)
        step("numba", "numba.core.config", pool, lambda: _dispatch.availability("numba"),
             lambda why: why is None and sys.modules["numba"].core.config is not None)
        # the next call is interrupted while it imports the kernel modules; the one after that works
        step("kernel module", "fastconv._backends._numba_pool", pool, pool,
             lambda y: y.ravel().tolist() == [5.0, 7.0, 13.0, 15.0])
        # the cuda backend's module (and the _cuda package it shares with cuda-emu): without CuPy the
        # retry must give the reason a fresh process gives, not an import error of fastconv's own modules
        cuda = lambda: _dispatch.availability("cuda")
        step("backend module", "fastconv._cuda.plan", cuda, cuda,
             lambda why: why is None or not why.startswith(("cannot import", "availability check failed")))
        emu = lambda: _dispatch.availability("cuda-emu")
        step("emulator", "fastconv.emu._module", emu, emu,
             lambda why: (why is None) == (shutil.which("g++") is not None))
        print(json.dumps(steps))
        """)
    assert out == {k: ["interrupted", True] for k in ("numba", "kernel module", "backend module", "emulator")}, out


def test_imports_by_name_go_through_the_one_helper():
    """A module imported by name (a backend module, Numba, a kernel module) is imported by
    fastconv._imports.import_module, which cleans up after a failed attempt; nothing else calls importlib's."""
    import re
    callers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "_imports.py"
               and re.search(r"\bimportlib\.import_module\b|\b__import__\(|\bfrom importlib import import_module\b",
                             p.read_text(encoding="utf-8"))]
    assert callers == [], f"import through fastconv._imports.import_module: {callers}"


def test_orphans_are_what_a_failed_import_leaves(monkeypatch):
    """The orphan rule by hand: a module whose parent is missing, or whose parent is itself an orphan."""
    from fastconv import _imports
    fake = {n: object() for n in ("fcx_pkg_gone.child", "fcx_pkg_gone.child.grand", "fcx_kept", "fcx_kept.sub")}
    for name, mod in fake.items():
        monkeypatch.setitem(sys.modules, name, mod)
    assert _imports.orphans() >= {"fcx_pkg_gone.child", "fcx_pkg_gone.child.grand"}
    assert not _imports.orphans() & {"fcx_kept", "fcx_kept.sub"}
    _imports.drop_orphans()
    assert "fcx_pkg_gone.child" not in sys.modules and "fcx_pkg_gone.child.grand" not in sys.modules
    assert "fcx_kept.sub" in sys.modules
