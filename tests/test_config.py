"""Configuration from the environment lives in one module (fastconv/_config.py) with one README table."""
from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import pytest

import fastconv
from fastconv import _config, _dispatch

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = pathlib.Path(fastconv.__file__).resolve().parent


def test_only_the_config_module_reads_the_environment():
    readers = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.environ\b|os\.getenv\b", text) and path.name != "_config.py":
            readers.append(str(path.relative_to(PACKAGE)))
    assert readers == [], f"read the environment through fastconv._config instead: {readers}"


def test_every_variable_named_anywhere_is_in_the_table():
    named = set()
    for pattern in ("fastconv/**/*.py", "tests/**/*.py", "benchmarks/**/*.py", "tools/*", ".ci/run",
                    "benchmarks/*.sh"):
        for path in REPO.glob(pattern):
            if path.is_file():
                named |= set(re.findall(r"\bFASTCONV_[A-Z0-9_]+\b", path.read_text(encoding="utf-8", errors="replace")))
    named.discard("FASTCONV_EMU")        # a preprocessor define of the emulated build, not a variable
    table = {v.name for v in _config.VARS}
    assert named - table == set(), f"add these to fastconv._config.VARS (and the README): {sorted(named - table)}"
    with pytest.raises(KeyError, match="not in fastconv._config.VARS"):
        _config.get("FASTCONV_" + "NO_SUCH_THING")


def test_readme_holds_the_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert _config.markdown() in readme, "README's environment table differs from python -m fastconv._config"


def test_values_are_read_when_asked(monkeypatch):
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    assert not _config.autotune_enabled()
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "1")
    assert _config.autotune_enabled()
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", "")
    assert _config.autotune_path("cuda") is None
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", "/x/y.json")
    assert _config.autotune_path("cuda") == "/x/y.json"
    monkeypatch.delenv("FASTCONV_AUTOTUNE_CACHE")
    assert _config.autotune_path("cuda") == os.path.join(os.path.expanduser("~"), ".cache", "fastconv",
                                                         "autotune-cuda.json")
    monkeypatch.setenv("FASTCONV_EMU_GUARD", "1")
    assert _config.emu_guard() is True
    monkeypatch.setenv("FASTCONV_EMU_GUARD", "start")
    assert _config.emu_guard() == "start"


def test_emu_order_reaches_the_cuda_emu_backend(monkeypatch):
    """FASTCONV_EMU_ORDER is the thread order of every emulated launch the backend makes."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    from fastconv._backends import cuda_emu
    seen = []
    real = cuda_emu.module

    class Recording:
        def __init__(self, mod):
            self.mod = mod

        def get_function(self, name):
            fn = self.mod.get_function(name)

            def call(*a, order=None, **kw):
                seen.append(order)
                return fn(*a, order=order, **kw)
            return call

    monkeypatch.setattr(cuda_emu, "module", lambda fname: Recording(real(fname)))
    x = np.ones((1, 1, 4, 4), np.float32)
    monkeypatch.setenv("FASTCONV_EMU_ORDER", "reverse")
    fastconv.max_pool2d(x, 2, backend="cuda-emu")
    monkeypatch.setenv("FASTCONV_EMU_ORDER", "random")
    fastconv.conv2d(x, np.ones((1, 1, 3, 3), np.float32), backend="cuda-emu", algo="direct")
    monkeypatch.delenv("FASTCONV_EMU_ORDER")
    fastconv.avg_pool2d(x, 2, backend="cuda-emu")
    assert seen == ["reverse", "random", "forward"]
