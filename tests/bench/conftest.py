"""Fixtures of the bench tests: a fake backend registered for one test."""
from __future__ import annotations

import pytest

from fastconv import _dispatch
from fastconv._backends import numpy_oracle

from .fakes import register


@pytest.fixture
def fake_backend(monkeypatch):
    """Register backend 'fake' (NumPy arrays) whose conv algos are 'good' (the oracle) and 'bad' (off by 1)."""
    def good(spec, x, w, b=None):
        return numpy_oracle.conv(spec, x, w, b)

    def bad(spec, x, w, b=None):
        return numpy_oracle.conv(spec, x, w, b) + 1

    impls = [_dispatch.FunctionImpl("fake", "conv", "direct", good),
             _dispatch.FunctionImpl("fake", "conv", "im2col", bad),
             _dispatch.FunctionImpl("fake", "max_pool", "direct", numpy_oracle.max_pool)]
    register(monkeypatch, "fake", "numpy", impls)
    return "fake"
