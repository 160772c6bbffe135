"""Dispatch: which implementation runs a spec, tested apart from running it."""
import types

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv._spec import conv_spec, pool_spec


def _spec(**kw):
    x = np.zeros((1, 4, 8, 8), np.float32)
    w = np.zeros((4, 4, 3, 3), np.float32)
    return conv_spec(x, w, **kw)


class Candidate(_dispatch.Impl):
    def __init__(self, algo, why=(), dtypes=("float32", "float64")):
        self.backend, self.op, self.algo, self.why, self.dtypes = "fake", "conv", algo, list(why), dtypes

    def not_supported_reasons(self, spec):
        return self.why


@pytest.fixture
def fake_backend(monkeypatch):
    """Register a backend 'fake' whose candidates the test sets."""
    mod = types.SimpleNamespace(availability=lambda: None, impls=[])
    mod.implementations = lambda: mod.impls
    monkeypatch.setitem(_dispatch.BACKENDS, "fake", _dispatch.Backend("fake", "numpy", "nowhere", "test double"))
    monkeypatch.setitem(_dispatch._modules, "fake", mod)
    return mod


def test_first_supported_candidate_wins(fake_backend):
    a, b = Candidate("direct", ["too big"]), Candidate("im2col")
    fake_backend.impls = [a, b]
    assert _dispatch.select(_spec(), "fake") is b
    assert _dispatch.select(_spec(), "fake", "im2col") is b


def test_no_candidate_lists_every_reason(fake_backend):
    fake_backend.impls = [Candidate("direct", ["filter larger than shared memory"]),
                          Candidate("im2col", ["groups unsupported"], dtypes=("float64",))]
    with pytest.raises(ValueError) as info:
        _dispatch.select(_spec(), "fake")
    msg = str(info.value)
    assert "fake:conv:direct: filter larger than shared memory" in msg
    assert "fake:conv:im2col: dtype float32 not supported (supports float64), groups unsupported" in msg


def test_explicit_algo_without_implementation(fake_backend):
    fake_backend.impls = [Candidate("direct")]
    with pytest.raises(ValueError, match="has no conv implementation with algo='im2col'"):
        _dispatch.select(_spec(), "fake", "im2col")


def test_choose_hook_decides_among_supported(fake_backend):
    a, b = Candidate("direct"), Candidate("im2col")
    fake_backend.impls = [a, b]
    seen = []
    fake_backend.choose = lambda spec, impls: seen.append(list(impls)) or impls[-1]
    assert _dispatch.select(_spec(), "fake") is b
    assert seen == [[a, b]]
    assert _dispatch.select(_spec(), "fake", "direct") is a     # explicit algo: no choosing


def test_float16_runs_on_float32_implementations(fake_backend):
    fake_backend.impls = [Candidate("direct")]
    x = np.zeros((1, 4, 8, 8), np.float16)
    spec = conv_spec(x, np.zeros((4, 4, 3, 3), np.float16))
    assert _dispatch.reasons(fake_backend.impls[0], spec) == []


def test_unavailable_backend_says_why(fake_backend):
    fake_backend.availability = lambda: "no GPU in this machine"
    with pytest.raises(fc.BackendUnavailable, match="backend 'fake' is not available: no GPU in this machine"):
        _dispatch.select(_spec(), "fake")


def test_backends_report():
    info = fc.backends()
    assert set(info) == {"numpy", "numba", "cuda", "cuda-emu"}
    assert info["numpy"] == {"available": True, "reason": None, "arrays": "numpy",
                             "description": info["numpy"]["description"]}
    for name, entry in info.items():
        assert entry["available"] == (entry["reason"] is None), name
        if not entry["available"]:
            assert entry["reason"].strip(), f"{name} unavailable without a reason"


def test_default_backend_follows_the_array_type(monkeypatch):
    assert _dispatch.default_backend("cupy") == "cuda"
    numba_ok = fc.backends()["numba"]["available"]
    assert _dispatch.default_backend("numpy") == ("numba" if numba_ok else "numpy")
    # without numba, NumPy input falls back to the oracle
    monkeypatch.setattr(_dispatch, "availability", lambda name: "numba is not installed" if name == "numba" else None)
    assert _dispatch.default_backend("numpy") == "numpy"


def test_pool_ops_select_their_own_implementations():
    spec = pool_spec("max", np.zeros((1, 1, 4, 4), np.float32), 2)
    impl = _dispatch.select(spec, "numpy")
    assert (impl.backend, impl.op) == ("numpy", "max_pool")
    with pytest.raises(ValueError, match="algo must be one of 'auto', 'direct'"):
        _dispatch.select(spec, "numpy", "im2col")


def test_every_registered_backend_module_follows_the_protocol():
    for name in _dispatch.BACKENDS:
        reason = _dispatch.availability(name)
        if reason is not None and reason.startswith("cannot import"):
            continue        # a backend whose optional dependency is absent still reports why
        mod = _dispatch.backend_module(name)
        assert callable(mod.availability) and callable(mod.implementations), name
        if reason is None:
            impls = mod.implementations()
            assert {i.op for i in impls} >= {"conv", "max_pool", "avg_pool", "adaptive_max_pool",
                                             "adaptive_avg_pool"}, name
            assert all(i.backend == name for i in impls), name
            assert all(i.algo in _dispatch.ALGOS[1:] for i in impls), name
