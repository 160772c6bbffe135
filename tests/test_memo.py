"""The per-call memo (fastconv._memo) and the numba backend's one-thread rule for small runs.

What is guarded: a remembered problem is only ever reused for a call of the same signature (array types,
shapes, dtypes; every other argument's type and value; Numba's thread count); a call that raises is never
remembered; every check that reads values still runs on a hit (a non-finite weight meeting the padding,
max_unpool's index range, the pool gradients' window check, padding_mode's padding of the new input);
the selection reported is what runs; FASTCONV_MEMO=0 turns it off; results are bitwise the same with and
without it; concurrent calls are safe. Expected values come from the NumPy oracle (backend="numpy") or
from the same call with the memo off.
"""
from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv.functional as F
from fastconv import _dispatch, _memo, grad
from fastconv._spec import conv_spec

numba = pytest.importorskip("numba")
from fastconv._backends import numba_cpu  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.delenv("FASTCONV_MEMO", raising=False)
    numba_cpu._threads()         # Numba's pool up: keys name its thread count from the first call on
    _memo.clear()
    yield
    _memo.clear()


def _rand(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _close(got, want, dtype):
    tol = {"float16": 2e-2, "float32": 1e-4, "float64": 1e-10}[np.dtype(dtype).name]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype("float64"), want.astype("float64"), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------------
# The key: what a hit must have in common with the call that was remembered
# ---------------------------------------------------------------------------------------------------
def test_a_second_call_is_a_hit_and_right():
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    want = F.conv2d(x, w, backend="numpy")
    for _ in range(3):
        _close(F.conv2d(x, w, padding=1, backend="numba"), F.conv2d(x, w, padding=1, backend="numpy"), "float32")
        _close(F.conv2d(x, w), want, "float32")
    assert _memo.stats["hits"] >= 4


@pytest.mark.parametrize("shapes", [
    [((1, 3, 8, 8), "float32"), ((1, 3, 8, 8), "float64"), ((1, 3, 8, 8), "float16")],   # dtype
    [((1, 3, 8, 8), "float32"), ((2, 3, 8, 8), "float32"), ((1, 3, 9, 7), "float32")],  # shape
    [((1, 3, 8, 8), "float32"), ((3, 8, 8), "float32")],                                 # unbatched
])
def test_arrays_shape_and_dtype_are_in_the_key(shapes):
    for shape, dtype in shapes * 2:
        x = _rand(shape, dtype)
        w = _rand((4, 3, 3, 3), dtype, seed=1)
        _close(F.conv2d(x, w, backend="numba"), F.conv2d(x, w, backend="numpy"), dtype)


def test_a_bool_is_not_an_int_and_a_list_is_not_a_tuple():
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    F.conv2d(x, w, stride=1)
    with pytest.raises(TypeError, match="stride must be an int"):
        F.conv2d(x, w, stride=True)                  # True == 1, hash(True) == hash(1): the type tells
    F.max_pool2d(x, [2, 2])
    F.max_pool2d(x, (2, 2))
    with pytest.raises(TypeError, match="kernel_size"):
        F.max_pool2d(x, (True, 2))                   # (True, 2) == (1, 2)
    assert _memo.size() == 3


def test_a_failing_call_is_never_remembered_and_fails_the_same_way_every_time():
    x, w = _rand((1, 3, 8, 8)), _rand((4, 2, 3, 3), seed=1)
    messages = set()
    for _ in range(3):
        with pytest.raises(ValueError) as e:
            F.conv2d(x, w)
        messages.add(str(e.value))
    assert len(messages) == 1 and _memo.size() == 0
    idx = np.full((1, 3, 4, 4), 99, dtype=np.int64)
    with pytest.raises(ValueError, match="indices must lie in"):
        F.max_unpool2d(_rand((1, 3, 4, 4)), idx, 2)
    assert _memo.size() == 0
    # a call that fails only after its problem is built (a value check on the run's way) is not remembered
    x = _rand((1, 2, 8, 8))
    _, idx = F.max_pool2d(x, 2, return_indices=True, backend="numpy")
    _memo.clear()
    idx[0, 0, 0, 0] = 63
    for _ in range(2):
        with pytest.raises(ValueError, match="inside each output's pooling window"):
            grad.max_pool2d(_rand((1, 2, 4, 4)), x, 2, indices=idx, backend="numpy")
    assert _memo.size() == 0


def test_an_argument_of_another_type_runs_without_the_memo():
    class Two(int):
        pass
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    want = F.conv2d(x, w, stride=2, backend="numpy")
    _memo.clear()
    for _ in range(2):
        _close(F.conv2d(x, w, stride=Two(2)), want, "float32")
    assert _memo.size() == 0 and _memo.stats["hits"] == 0


def test_numba_thread_count_is_in_the_key():
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    F.conv2d(x, w)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        F.conv2d(x, w)
        F.conv2d(x, w)
    finally:
        numba.set_num_threads(before)
    keys = {k[-1] for k in list(_memo._entries)}
    assert 1 in keys and (before == 1 or before in keys)


def test_lru_is_bounded(monkeypatch):
    monkeypatch.setattr(_memo, "SIZE", 4)
    x = _rand((1, 2, 12, 12))
    for k in range(2, 8):
        F.max_pool2d(x, k)
    assert _memo.size() == 4
    F.max_pool2d(x, 4)                                       # kept: one of the four most recent
    hits = _memo.stats["hits"]
    F.max_pool2d(x, 2)                                       # forgotten: a miss, remembered again
    assert _memo.stats["hits"] == hits and _memo.size() == 4


def test_memo_off_remembers_nothing_and_on_again_takes_effect(monkeypatch):
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    monkeypatch.setenv("FASTCONV_MEMO", "0")
    F.conv2d(x, w)
    F.conv2d(x, w)
    assert _memo.size() == 0 and _memo.stats == {"hits": 0, "misses": 0}
    monkeypatch.setenv("FASTCONV_MEMO", "1")
    F.conv2d(x, w)
    assert _memo.size() == 1
    monkeypatch.setenv("FASTCONV_MEMO", "2")
    with pytest.raises(ValueError, match="FASTCONV_MEMO"):
        F.conv2d(x, w)


# ---------------------------------------------------------------------------------------------------
# What a hit still does on every call
# ---------------------------------------------------------------------------------------------------
def _spy_runs(monkeypatch):
    """The name of every implementation run, by Impl.run or by a repeat call's fast path."""
    ran = []
    real = _dispatch.FunctionImpl.run
    real_fast = F._fast_path

    def run(self, spec, *arrays):
        ran.append(self.name)
        return real(self, spec, *arrays)

    def fast_path(prob, impl, run_spec, arrays):
        fast = real_fast(prob, impl, run_spec, arrays)
        if fast is None:
            return None

        def spied(arrays):
            out = fast(arrays)
            if out is not None:
                ran.append(impl.name)
            return out
        return spied
    monkeypatch.setattr(_dispatch.FunctionImpl, "run", run)
    monkeypatch.setattr(F, "_fast_path", fast_path)
    return ran


def test_a_non_finite_weight_is_checked_on_every_call(monkeypatch):
    # a padded depthwise conv: the rule picks the phase-split kernel, which multiplies padded zeros in
    x = _rand((1, 4, 6, 6))
    w = _rand((4, 1, 3, 3), seed=1)
    spec = conv_spec(x, w, padding=1, groups=4)
    assert _dispatch.select(spec, "numba", weight=w).zero_fills_padding
    ran = _spy_runs(monkeypatch)
    F.conv2d(x, w, padding=1, groups=4)
    bad = w.copy()
    bad[0, 0, 0, 0] = np.inf
    got = F.conv2d(x, bad, padding=1, groups=4)              # a hit: the same signature
    want = F.conv2d(x, bad, padding=1, groups=4, backend="numpy")
    assert _memo.stats["hits"] >= 1
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert ran[1] == _dispatch.select(spec, "numba", weight=bad).name
    assert ran[0] != ran[1]
    F.conv2d(x, w, padding=1, groups=4)                      # finite again: the remembered choice
    assert ran[-1] == ran[0]


def test_what_runs_is_what_select_reports(monkeypatch):
    ran = _spy_runs(monkeypatch)
    x, w = _rand((2, 3, 9, 9)), _rand((5, 3, 3, 3), seed=1)
    for _ in range(3):
        F.conv2d(x, w, stride=2)
    assert set(ran) == {_dispatch.select(conv_spec(x, w, stride=2), "numba", weight=w).name}
    assert _memo.stats["hits"] == 2


def test_max_unpool_index_range_is_checked_on_every_call():
    x = _rand((1, 2, 4, 4))
    y, idx = F.max_pool2d(_rand((1, 2, 8, 8)), 2, return_indices=True)
    F.max_unpool2d(y, idx, 2)
    bad = idx.copy()
    bad[0, 0, 0, 0] = 64
    with pytest.raises(ValueError, match="indices must lie in"):
        F.max_unpool2d(x, bad, 2)
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="indices must lie in"):
        F.max_unpool2d(x, bad, 2)


def test_pool_gradient_window_check_runs_on_every_call():
    x = _rand((1, 2, 8, 8))
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    dy = _rand(y.shape, seed=2)
    want = grad.max_pool2d(dy, x, 2, backend="numpy")
    _close(grad.max_pool2d(dy, x, 2, indices=idx), want, "float32")
    bad = idx.copy()
    bad[0, 0, 0, 0] = 63                     # in range, outside output (0, 0)'s window
    with pytest.raises(ValueError, match="inside each output's pooling window"):
        grad.max_pool2d(dy, x, 2, indices=bad)
    _close(grad.max_pool2d(dy, x, 2, indices=idx), want, "float32")


def test_padding_mode_pads_each_new_input():
    w = _rand((4, 3, 3, 3), seed=1)
    for seed in range(3):
        x = _rand((1, 3, 8, 8), seed=seed)
        _close(F.conv2d(x, w, padding=1, padding_mode="reflect"),
               F.conv2d(x, w, padding=1, padding_mode="reflect", backend="numpy"), "float32")
    assert _memo.stats["hits"] == 4          # the second and third calls on each backend


def test_backend_choose_is_asked_on_every_call_where_it_can_measure(monkeypatch):
    calls = []
    real = numba_cpu.choose

    def choose(spec, impls, arrays=None):
        calls.append(spec.op)
        return real(spec, impls, arrays)
    monkeypatch.setattr(numba_cpu, "choose", choose)
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)     # the tiny conv is one it would measure
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")               # (by rule: nothing timed in this test)
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    for _ in range(3):
        F.conv2d(x, w)
    assert calls == ["conv"] * 3                 # so FASTCONV_AUTOTUNE and the tuner's state count each call


@pytest.mark.parametrize("autotune", ["0", "1"])
def test_below_the_measuring_threshold_the_fixed_pick_is_chooses(monkeypatch, autotune):
    # where choose picks by rule whatever the settings, the fast path may take its pick once
    monkeypatch.setenv("FASTCONV_AUTOTUNE", autotune)
    x, w = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1)
    spec = conv_spec(x, w, padding=1)
    p = _dispatch.plan(spec, "numba")
    assert len(p.choosable) > 1 and spec.flops() < numba_cpu.MEASURE_MIN_FLOPS
    assert _dispatch.fixed_choice(p, spec, "numba") is numba_cpu.choose(spec, list(p.choosable))
    big = conv_spec(_rand((8, 64, 32, 32)), _rand((64, 64, 3, 3)), padding=1)
    assert big.flops() >= numba_cpu.MEASURE_MIN_FLOPS
    assert _dispatch.fixed_choice(_dispatch.plan(big, "numba"), big, "numba") is None


def test_inputs_are_not_modified():
    x, w, b = _rand((1, 3, 8, 8)), _rand((4, 3, 3, 3), seed=1), _rand((4,), seed=2)
    xc = x[:, :, ::1, 1:]                          # a non-contiguous view
    copies = [a.copy() for a in (x, w, b)]
    for _ in range(3):
        F.conv2d(x, w, b, padding=1)
        F.conv2d(xc, w, b)
        F.max_pool2d(x, 2, return_indices=True)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------------------------------
# Bitwise the same with and without the memo, over random signatures (the memo filled across examples)
# ---------------------------------------------------------------------------------------------------
_ints = st.sampled_from([1, 2, np.int64(1), np.int64(2), True, [1, 1], (1, 2), (2, 1), [2, 2]])


@st.composite
def _calls(draw):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    N = draw(st.integers(0, 2))
    C = draw(st.sampled_from([1, 2, 4]))
    H, W = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    shape = (N, C, H, W) if draw(st.booleans()) else (C, H, W)
    op = draw(st.sampled_from(["conv", "max_pool", "avg_pool"]))
    if op == "conv":
        groups = draw(st.sampled_from([1, C]))
        K = groups * draw(st.integers(1, 2))
        R, S = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        kw = dict(stride=draw(_ints), padding=draw(st.sampled_from([0, 1, (1, 0), [0, 1], "same", True])),
                  groups=groups)
        return op, dtype, shape, (K, C // groups, R, S), kw
    kw = dict(kernel_size=draw(st.sampled_from([1, 2, 3, (2, 1), [1, 2], True])),
              stride=draw(st.sampled_from([None, 1, 2, (1, 2)])), ceil_mode=draw(st.booleans()))
    return op, dtype, shape, None, kw


def _outcome(op, dtype, shape, wshape, kw):
    x = _rand(shape, dtype, seed=3)
    try:
        if op == "conv":
            out = F.conv2d(x, _rand(wshape, dtype, seed=4), **kw)
        else:
            out = getattr(F, op + "2d")(x, **kw)
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return out


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(calls=st.lists(_calls(), min_size=1, max_size=3))
def test_bitwise_same_with_and_without_the_memo(calls):
    import os
    for call in calls + calls:                 # twice: the second time every keyable call is a hit
        os.environ["FASTCONV_MEMO"] = "0"
        try:
            want = _outcome(*call)
        finally:
            del os.environ["FASTCONV_MEMO"]
        got = _outcome(*call)
        if isinstance(want, tuple):
            assert got == want, call
        else:
            assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape, call
            np.testing.assert_array_equal(got, want, err_msg=str(call))


# ---------------------------------------------------------------------------------------------------
# Concurrent calls (a dask threaded scheduler calls ops from several threads)
# ---------------------------------------------------------------------------------------------------
def test_concurrent_calls_with_evictions(monkeypatch):
    monkeypatch.setattr(_memo, "SIZE", 3)             # fewer entries than signatures: constant eviction
    xs = [_rand((1, 3, 6 + i, 8)) for i in range(5)]
    w = _rand((4, 3, 3, 3), seed=1)
    monkeypatch.setenv("FASTCONV_MEMO", "0")
    want = [(F.conv2d(x, w, padding=1), F.max_pool2d(x, 2)) for x in xs]
    monkeypatch.delenv("FASTCONV_MEMO")
    start = threading.Barrier(4)

    def work(t):
        start.wait()
        for r in range(40):
            i = (r + t) % len(xs)
            c, p = F.conv2d(xs[i], w, padding=1), F.max_pool2d(xs[i], 2)
            np.testing.assert_array_equal(c, want[i][0])
            np.testing.assert_array_equal(p, want[i][1])
        return True
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(4)))
    assert _memo.size() <= 3


# ---------------------------------------------------------------------------------------------------
# Small numba runs on one thread
# ---------------------------------------------------------------------------------------------------
def _recording_impl():
    seen = []

    def fn(spec, *arrays):
        seen.append(numba.get_num_threads())
        if arrays and arrays[0] == "boom":
            raise RuntimeError("boom")
        return None
    return numba_cpu.NumbaImpl("conv", "direct", fn), seen


def test_small_problems_run_on_one_thread_and_the_count_is_restored(monkeypatch):
    impl, seen = _recording_impl()
    small = conv_spec(np.empty((1, 3, 8, 8), np.float32), np.empty((4, 3, 3, 3), np.float32))
    big = conv_spec(np.empty((8, 16, 32, 32), np.float32), np.empty((16, 16, 3, 3), np.float32))
    assert small.flops() < numba_cpu.SERIAL_MAX_FLOPS <= big.flops()
    before = numba.get_num_threads()
    impl.run(small)
    impl.run(big)
    assert seen == [1, before]
    assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError):
        impl.run(small, "boom")
    assert numba.get_num_threads() == before
    # the threshold is strict and read on every call (not frozen in the spec)
    monkeypatch.setattr(numba_cpu, "SERIAL_MAX_FLOPS", small.flops())
    impl.run(small)
    monkeypatch.setattr(numba_cpu, "SERIAL_MAX_FLOPS", small.flops() + 1)
    impl.run(small)
    assert seen[-2:] == [before, 1]
    assert numba_cpu.run_threads(small) == 1 and numba_cpu.run_threads(big) == before


def test_a_thread_count_set_by_the_caller_is_kept(monkeypatch):
    impl, seen = _recording_impl()
    big = conv_spec(np.empty((8, 16, 32, 32), np.float32), np.empty((16, 16, 3, 3), np.float32))
    small = conv_spec(np.empty((1, 3, 8, 8), np.float32), np.empty((4, 3, 3, 3), np.float32))
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        impl.run(big)
        impl.run(small)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    assert seen == [1, 1]


def test_one_thread_gives_the_same_bits(monkeypatch):
    x, w = _rand((2, 3, 10, 10), "float64"), _rand((4, 3, 3, 3), "float64", seed=1)
    xp = _rand((2, 4, 10, 10), "float64")
    assert conv_spec(x, w).flops() < numba_cpu.SERIAL_MAX_FLOPS
    one = (F.conv2d(x, w, padding=1), F.max_pool2d(xp, 3, 1, return_indices=True), F.avg_pool2d(xp, 2))
    monkeypatch.setattr(numba_cpu, "SERIAL_MAX_FLOPS", 0)     # every run on all threads
    every = (F.conv2d(x, w, padding=1), F.max_pool2d(xp, 3, 1, return_indices=True), F.avg_pool2d(xp, 2))
    for a, b in zip(one, every):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(u, v)
