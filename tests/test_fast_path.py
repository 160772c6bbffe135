"""The repeat-call fast path (fastconv.functional._fast_path, Impl.runner, numba_cpu's bind closures).

What is guarded: a repeat call of one signature gives the oracle's result whatever the arrays' memory
(non-contiguous, read-only, another dtype's signature), each call gets a fresh output, the data rule still
runs on every call, the numba runner's one-thread rule restores the caller's thread count, and the path is
taken at all (else the rest would test the general path twice). Expected values come from the NumPy
oracle (backend="numpy") or from the same call with the memo off (FASTCONV_MEMO=0: no fast path).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv.functional as F
from fastconv import _dispatch, _memo

numba = pytest.importorskip("numba")
from fastconv._backends import numba_cpu  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.delenv("FASTCONV_MEMO", raising=False)
    numba_cpu._threads()
    _memo.clear()
    yield
    _memo.clear()


def _rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _fast_runs(monkeypatch):
    """Counts the numba calls the fast path answered."""
    n = [0]
    real = F._fast_path

    def fast_path(prob, impl, run_spec, arrays):
        fast = real(prob, impl, run_spec, arrays)
        if fast is None:
            return None

        def counted(arrays):
            out = fast(arrays)
            if out is not None and impl.backend == "numba":
                n[0] += 1
            return out
        return counted
    monkeypatch.setattr(F, "_fast_path", fast_path)
    return n


CALLS = {
    "max_pool2d": (lambda x, **kw: F.max_pool2d(x, 2, **kw), (1, 4, 8, 8)),
    "max_pool2d_indices": (lambda x, **kw: F.max_pool2d(x, 3, 2, 1, return_indices=True, **kw), (2, 3, 9, 9)),
    "avg_pool2d": (lambda x, **kw: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False, **kw), (2, 3, 9, 9)),
    "avg_pool2d_divisor": (lambda x, **kw: F.avg_pool2d(x, 2, divisor_override=3, **kw), (1, 2, 6, 6)),
    "max_pool1d": (lambda x, **kw: F.max_pool1d(x, 2, **kw), (2, 3, 10)),
    "conv2d": (lambda x, **kw: F.conv2d(x, _rand((4, 3, 3, 3), seed=1), _rand((4,), seed=2), padding=1, **kw),
               (1, 3, 8, 8)),
    "conv2d_nobias": (lambda x, **kw: F.conv2d(x, _rand((4, 3, 3, 3), seed=1), stride=2, **kw), (2, 3, 9, 9)),
    "conv1d": (lambda x, **kw: F.conv1d(x, _rand((5, 3, 3), seed=1), padding=1, **kw), (2, 3, 12)),
}


def _oracle(call, x):
    return call(x, backend="numpy")


def _same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w)
        return
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_repeat_calls_take_the_fast_path_and_match_the_oracle(monkeypatch, name):
    n = _fast_runs(monkeypatch)
    call, shape = CALLS[name]
    for seed in range(3):
        x = _rand(shape, seed=seed)
        _same(call(x), _oracle(call, x))
    assert n[0] == 2             # the first call builds it; the next two ran on it


@pytest.mark.parametrize("name", sorted(CALLS))
def test_bitwise_the_general_path(monkeypatch, name):
    call, shape = CALLS[name]
    x = _rand(shape, seed=4)
    call(x)
    fast = call(x)
    monkeypatch.setenv("FASTCONV_MEMO", "0")
    general = call(x)
    for f, g in zip(fast if isinstance(fast, tuple) else (fast,), general if isinstance(general, tuple) else (general,)):
        np.testing.assert_array_equal(f, g)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_non_contiguous_and_read_only_inputs_after_a_fast_call(monkeypatch, name):
    n = _fast_runs(monkeypatch)
    call, shape = CALLS[name]
    call(_rand(shape))
    call(_rand(shape, seed=1))
    assert n[0] == 1
    wide = _rand(shape[:-1] + (2 * shape[-1],), seed=2)
    view = wide[..., ::2]                        # same shape and dtype, so the same signature
    assert not view.flags.c_contiguous
    _same(call(view), _oracle(call, np.ascontiguousarray(view)))
    ro = _rand(shape, seed=3)
    ro.flags.writeable = False
    keep = ro.copy()
    _same(call(ro), _oracle(call, keep))
    np.testing.assert_array_equal(ro, keep)
    assert n[0] == 1             # both went the general way


def test_each_call_gets_its_own_output():
    x = _rand((1, 4, 8, 8))
    outs = [F.max_pool2d(x, 2) for _ in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.shares_memory(outs[a], outs[b])
    outs[0][...] = 7.0
    np.testing.assert_array_equal(outs[1], outs[2])
    np.testing.assert_array_equal(outs[1], F.max_pool2d(x, 2, backend="numpy"))


def test_signatures_of_two_dtypes_alternate():
    for _ in range(3):
        for dt in ("float32", "float64"):
            x = _rand((1, 3, 8, 8), dt)
            w = _rand((4, 3, 3, 3), dt, seed=1)
            got = F.conv2d(x, w, padding=1)
            assert got.dtype == np.dtype(dt)
            want = F.conv2d(x, w, padding=1, backend="numpy")
            np.testing.assert_allclose(got, want, rtol=1e-5 if dt == "float32" else 1e-12, atol=1e-5)


def test_the_data_rule_runs_on_fast_path_calls(monkeypatch):
    # im2col multiplies padded zeros in: a non-finite weight must not reach it, even on a repeat call
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    n = _fast_runs(monkeypatch)
    F.conv2d(x, w, padding=1, algo="im2col")
    F.conv2d(x, w, padding=1, algo="im2col")
    assert n[0] == 1
    bad = w.copy()
    bad[0, 0, 1, 1] = np.inf
    with pytest.raises(ValueError) as fast:
        F.conv2d(x, bad, padding=1, algo="im2col")
    monkeypatch.setenv("FASTCONV_MEMO", "0")
    with pytest.raises(ValueError) as general:
        F.conv2d(x, bad, padding=1, algo="im2col")
    assert str(fast.value) == str(general.value)
    assert n[0] == 1


def _spy_launches(monkeypatch):
    """(kernel name, Numba thread count) of every launch through a bind closure."""
    seen = []
    real = numba_cpu._Launch.__call__

    def call(self, *args):
        seen.append((self.kern.py_func.__name__, numba.get_num_threads()))
        return real(self, *args)
    monkeypatch.setattr(numba_cpu._Launch, "__call__", call)
    return seen


def test_small_problems_launch_serial_twins_or_run_on_one_thread(monkeypatch):
    before = numba.get_num_threads()
    if before < 2:
        pytest.skip("needs Numba on more than one thread")
    seen = _spy_launches(monkeypatch)
    n = _fast_runs(monkeypatch)
    x = _rand((1, 4, 8, 8))
    w = _rand((4, 4, 3, 3), seed=1)
    narrow = _rand((1, 2, 3, 9), seed=2)          # a window wider than the output: the per-window kernel
    after = []
    for _ in range(3):
        F.max_pool2d(x, 3, 2, 1)
        F.max_pool2d(x, 2)
        F.conv2d(x, w)
        F.avg_pool2d(narrow, (1, 9))
        after.append(numba.get_num_threads())
    assert n[0] == 8                              # each op's first call ran the general path
    # a twin (or the serial 2x2 pool kernel) needs no thread count; the avg twin's per-window path calls a
    # parallel kernel: on one thread
    assert seen == [("max_pool2d_serial", before), ("max_pool2x2", before), ("conv2d_planes_serial", before),
                    ("avg_pool2d_serial", 1)] * 2
    assert after == [before] * 3


def test_a_launch_uses_the_entry_point_after_its_first_call():
    x = _rand((1, 4, 8, 8))
    for _ in range(3):
        F.max_pool2d(x, 2)
    prob = next(iter(_memo._entries.values()))
    launches = [c.cell_contents for c in _closure_cells(prob.fast) if isinstance(c.cell_contents, numba_cpu._Launch)]
    assert launches and all(la.entry is not None for la in launches)


def _closure_cells(fn, depth=4):
    """Every closure cell reachable from ``fn`` through nested closures (the fast path wraps the runner)."""
    out = []
    for c in fn.__closure__ or ():
        out.append(c)
        v = c.cell_contents
        if depth and callable(v) and getattr(v, "__closure__", None):
            out.extend(_closure_cells(v, depth - 1))
    return out
