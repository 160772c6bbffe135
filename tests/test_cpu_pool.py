"""The numba backend's GEMM workers (fastconv._backends._cpu_pool): every item runs once, a worker that is
held up does not hold up the others' items, errors reach the caller, the pool's BLAS runs one thread per
worker without touching the caller's setting, and the im2col paths give the oracle's results with one
worker or several, the same run to run."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import fastconv
import fastconv.grad as fg
from fastconv import _dispatch, testing
from fastconv._backends import _cpu_pool, numba_cpu
from fastconv._spec import conv_input_spec, conv_transpose_spec, conv_weight_spec

needs_local = pytest.mark.skipif(_cpu_pool.blas_thread_control() is None,
                                 reason="NumPy's BLAS is not OpenBLAS: one worker")


def test_every_item_runs_once_with_its_workers_scratch():
    seen, lock = [], threading.Lock()

    def fn(item, s):
        with lock:
            seen.append((item, id(s)))

    _cpu_pool.run(list(range(50)), fn, lambda: object(), 2)
    assert sorted(i for i, _ in seen) == list(range(50))
    assert len({s for _, s in seen}) <= 2


def test_a_held_up_worker_leaves_the_other_items_to_the_rest():
    """Items are claimed one at a time: while the worker holding item 0 waits, the other worker must run
    every other item (a static split, half the items each, would never finish: the wait times out)."""
    rest_done = threading.Event()
    done = []

    def fn(item, s):
        if item == 0:
            assert rest_done.wait(10), "the other items were not run by the other worker"
        else:
            done.append(item)
            if len(done) == 19:
                rest_done.set()

    _cpu_pool.run(list(range(20)), fn, lambda: None, 2)
    assert sorted(done) == list(range(1, 20))


def test_the_first_error_reaches_the_caller_and_stops_new_items():
    ran = []

    def fn(item, s):
        ran.append(item)
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        _cpu_pool.run(list(range(1000)), fn, lambda: None, 2)
    assert len(ran) < 1000


def test_scratch_is_made_before_any_item():
    """Running out of memory for a worker's scratch is an error before any item ran."""
    ran, made = [], []

    def scratch():
        if len(made) == 1:
            raise MemoryError("no scratch")
        made.append(1)

    with pytest.raises(MemoryError):
        _cpu_pool.run([1, 2, 3], lambda i, s: ran.append(i), scratch, 2)
    assert ran == []


@needs_local
def test_blas_runs_one_thread_during_a_run_and_gets_its_count_back():
    """While the workers run, OpenBLAS's (process-wide) count is 1; after, the count in force before, also
    the count the caller set itself."""
    set_fn, get = _cpu_pool.blas_thread_control()
    before = get()
    try:
        for mine in (2, 3):
            set_fn(mine)
            counts = []
            _cpu_pool.run(list(range(8)), lambda i, s: counts.append(get()), lambda: None, 2)
            assert set(counts) == {1}
            assert get() == mine
    finally:
        set_fn(before)


@needs_local
def test_overlapping_runs_from_several_threads_restore_the_count_once_all_end():
    """Calls running at once from several threads (a dask threaded scheduler): the count stays 1 while any
    runs, also after another has ended, and is the one before the first when the last ends (a restore per
    call would put it back while another call's GEMMs run, or leave 1 for good)."""
    set_fn, get = _cpu_pool.blas_thread_control()
    before = get()
    go, a_done, seen = threading.Barrier(2), threading.Event(), {}

    def call_a():
        _cpu_pool.run([0, 1], lambda i, s: go.wait(10) if i == 0 else None, lambda: None, 2)
        a_done.set()

    def b_item(i, s):
        if i == 0:
            go.wait(10)                        # both calls inside their runs
        else:
            assert a_done.wait(10)             # the other call has ended
            seen["after_a"] = get()

    try:
        set_fn(2)
        threads = [threading.Thread(target=call_a),
                   threading.Thread(target=lambda: _cpu_pool.run([0, 1], b_item, lambda: None, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert seen == {"after_a": 1}
        assert get() == 2
    finally:
        set_fn(before)


def test_one_worker_without_per_thread_blas_control(monkeypatch):
    monkeypatch.setattr(_cpu_pool, "_SETTER", False)
    assert _cpu_pool.workers(8, 100) == 1
    assert _cpu_pool.workers(1, 100) == 1


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 8, 23, 19)).astype(np.float32)
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    return x, w, b, dict(stride=1, padding=1, groups=2)


@needs_local
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_im2col_paths_with_any_number_of_workers(workers, monkeypatch):
    """Forward, input and weight gradients through the workers (tiles small enough for several items per
    worker), against the oracle, and bitwise the same on a second run."""
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    monkeypatch.setattr(numba_cpu, "gemm_workers", lambda spec: workers)
    x, w, b, kw = _problem()
    spec = fastconv.conv_spec(x, w, b, 1, 1, 1, 2)
    assert -(-spec.N // numba_cpu.images_per_tile(spec)) * spec.groups > workers
    out = fastconv.conv2d(x, w, b, algo="im2col", **kw)
    testing.assert_conv_close(out, fastconv.conv2d(x, w, b, backend="numpy", **kw), spec, x, w, b)
    assert np.array_equal(out, fastconv.conv2d(x, w, b, algo="im2col", **kw))
    dy = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    si = conv_input_spec(x.shape, w, dy, 1, 1, 1, 2)
    sw = conv_weight_spec(x, w.shape, dy, 1, 1, 1, 2)
    dx = fg.conv2d_input(x.shape, w, dy, algo="im2col", **kw)
    dw = fg.conv2d_weight(x, w.shape, dy, algo="im2col", **kw)
    testing.assert_grad_close(dx, si, dy, w)
    testing.assert_grad_close(dw, sw, x, dy)
    assert np.array_equal(dx, fg.conv2d_input(x.shape, w, dy, algo="im2col", **kw))
    assert np.array_equal(dw, fg.conv2d_weight(x, w.shape, dy, algo="im2col", **kw))


@needs_local
def test_pointwise_through_the_workers(monkeypatch):
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 6, 40, 40)).astype(np.float32)
    w = rng.standard_normal((10, 3, 1, 1)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    spec = fastconv.conv_spec(x, w, b, 1, 0, 1, 2)
    assert numba_cpu.gemm_workers(spec) > 1 and numba_cpu._input_is_column_matrix(spec)
    out = fastconv.conv2d(x, w, b, groups=2, algo="im2col")
    testing.assert_conv_close(out, fastconv.conv2d(x, w, b, groups=2, backend="numpy"), spec, x, w, b)


def test_small_problems_stay_on_the_caller():
    x = np.ones((1, 2, 5, 5), np.float32)
    spec = fastconv.conv_spec(x, np.ones((3, 2, 3, 3), np.float32), None)
    assert spec.flops() < numba_cpu.POOL_MIN_FLOPS and numba_cpu.gemm_workers(spec) == 1


@needs_local
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("N, K, axis", [(6, 64, "columns"), (2, 256, "rows")])
def test_whole_batch_gemm_split_into_blocks(groups, N, K, axis, monkeypatch):
    """Small images with too few tiles for the workers: the whole batch's columns at once, the GEMM in
    blocks of output channels (more channels than columns) or of columns (fewer); against the oracle, with
    a bias, groups and padding."""
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, 8, 7, 7)).astype(np.float32)
    w = rng.standard_normal((K, 8 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    spec = fastconv.conv_spec(x, w, b, 1, 1, 1, groups)
    assert numba_cpu._whole_batch(spec)
    blocks = numba_cpu._gemm_blocks(spec)
    assert len(blocks) >= 2 * numba_cpu.gemm_workers(spec)
    cut_rows = any(k1 - k0 < spec.K_per_group for _, k0, k1, _, _ in blocks)
    cut_cols = any(c1 - c0 < N * 49 for _, _, _, c0, c1 in blocks)
    assert (cut_rows, cut_cols) == (axis == "rows", axis == "columns")
    out = fastconv.conv2d(x, w, b, padding=1, groups=groups, algo="im2col")
    ref = fastconv.conv2d(x, w, b, padding=1, groups=groups, backend="numpy")
    testing.assert_conv_close(out, ref, spec, x, w, b)


@needs_local
@pytest.mark.parametrize("stride", [1, 2, (3, 2)])
@pytest.mark.parametrize("groups", [1, 2])
def test_whole_batch_1x1_packs_by_copy(stride, groups, monkeypatch):
    """A 1x1 unpadded conv's whole-batch columns are the planes subsampled by the stride (one NumPy copy per
    image and group): odd, unequal plane sides, a bias and groups, against the oracle."""
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 32, 11, 9)).astype(np.float32)
    w = rng.standard_normal((64, 32 // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    spec = fastconv.conv_spec(x, w, b, stride, 0, 1, groups)
    assert numba_cpu._whole_batch(spec) and spec.R == spec.S == 1 and not spec.is_padded
    calls = []
    whole_batch = numba_cpu._conv_im2col_whole_batch
    monkeypatch.setattr(numba_cpu, "_conv_im2col_whole_batch", lambda *a: calls.append(1) or whole_batch(*a))
    x_before = x.copy()
    out = fastconv.conv2d(x, w, b, stride=stride, groups=groups, algo="im2col")
    assert calls, "the whole-batch path did not run"
    ref = fastconv.conv2d(x, w, b, stride=stride, groups=groups, backend="numpy")
    testing.assert_conv_close(out, ref, spec, x, w, b)
    np.testing.assert_array_equal(x, x_before)


@needs_local
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("x_shape, K", [((6, 32, 5, 7), 48), ((2, 64, 3, 5), 128)], ids=["columns", "rows"])
def test_pointwise_input_gradient_of_the_whole_batch(x_shape, K, groups, bias, monkeypatch):
    """A 1x1 conv's input gradient on small images: dy of the whole batch side by side, dx = w^T @ dy in
    blocks, then each image's (bias +) columns; against the oracle's adjoint, as is the tile path's (col2im)
    result, the path checked to run, the inputs untouched. (Not bitwise the tile path's: BLAS may order a
    column's terms differently in a GEMM of another shape, as OpenBLAS's Haswell kernels on a Zen 5 do.)"""
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    rng = np.random.default_rng(7)
    N, C, H, W = x_shape
    w = rng.standard_normal((K, C // groups, 1, 1)).astype(np.float32)
    dy = rng.standard_normal((N, K, H, W)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32) if bias else None
    # with a bias: the transposed conv of dy (its weight is the forward's), whose output starts at the bias
    spec = (conv_transpose_spec(dy, w, b, groups=groups) if bias else conv_input_spec(x_shape, w, dy, groups=groups))
    assert spec.op == "conv_input" and spec.input_shape == x_shape
    assert numba_cpu._pointwise_whole_batch(spec)
    cut = {"rows": any(c1 - c0 < C // groups for _, c0, c1, _, _ in numba_cpu._gemm_blocks(spec, C // groups)),
           "columns": any(j1 - j0 < N * H * W for _, _, _, j0, j1 in numba_cpu._gemm_blocks(spec, C // groups))}
    assert [k for k, v in cut.items() if v] == [("rows" if C // groups >= N * H * W else "columns")]
    calls = []
    batch = numba_cpu._conv_input_pointwise_batch
    monkeypatch.setattr(numba_cpu, "_conv_input_pointwise_batch", lambda *a: calls.append(1) or batch(*a))
    before = (w.copy(), dy.copy())
    impl = _dispatch.select(spec, "numba", "im2col")
    got = impl.run(spec, dy, w, b)
    assert calls, "the whole-batch path did not run"
    testing.assert_grad_close(got, spec, dy, w, b)
    np.testing.assert_array_equal(w, before[0])
    np.testing.assert_array_equal(dy, before[1])
    monkeypatch.setattr(numba_cpu, "_pointwise_whole_batch", lambda spec: False)   # the tile path: col2im
    tiles = impl.run(spec, dy, w, b)
    testing.assert_grad_close(tiles, spec, dy, w, b)


@needs_local
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("x_shape, K", [((6, 16, 5, 7), 128), ((6, 256, 5, 7), 16)], ids=["rows", "columns"])
def test_pointwise_weight_gradient_of_the_whole_batch(x_shape, K, groups, monkeypatch):
    """A 1x1 conv's weight gradient on small images: dy and x of the whole batch side by side, dw = dy @ x^T
    in blocks of dw (cut along its longer side); against the oracle's adjoint, the path checked to run, the
    inputs untouched."""
    monkeypatch.setattr(numba_cpu, "POOL_MIN_FLOPS", 0)
    rng = np.random.default_rng(8)
    N, C, H, W = x_shape
    x = rng.standard_normal(x_shape).astype(np.float32)
    dy = rng.standard_normal((N, K, H, W)).astype(np.float32)
    w_shape = (K, C // groups, 1, 1)
    spec = conv_weight_spec(x, w_shape, dy, groups=groups)
    assert numba_cpu._pointwise_whole_batch(spec)
    Kg, Cg = K // groups, C // groups
    blocks = numba_cpu._gemm_blocks(spec, cols=Cg)
    cut_rows = any(k1 - k0 < Kg for _, k0, k1, _, _ in blocks)
    cut_cols = any(c1 - c0 < Cg for _, _, _, c0, c1 in blocks)
    assert (cut_rows, cut_cols) == ((Kg >= Cg), (Kg < Cg))
    calls = []
    batch = numba_cpu._conv_weight_pointwise_batch
    monkeypatch.setattr(numba_cpu, "_conv_weight_pointwise_batch", lambda *a: calls.append(1) or batch(*a))
    before = (x.copy(), dy.copy())
    got = _dispatch.select(spec, "numba", "im2col").run(spec, x, dy)
    assert calls, "the whole-batch path did not run"
    testing.assert_grad_close(got, spec, x, dy)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(dy, before[1])


@pytest.mark.parametrize("N, C, K, H, groups, workers", [
    (8, 1024, 1024, 7, 1, 2), (8, 256, 256, 14, 1, 2), (8, 64, 64, 7, 1, 2), (8, 64, 64, 7, 1, 3),
    (3, 8, 64, 7, 2, 2), (2, 8, 256, 7, 2, 4), (8, 16, 16, 7, 16, 2), (1, 4, 4, 3, 1, 2), (2, 512, 2048, 7, 1, 2)])
def test_whole_batch_gemm_blocks_cover_the_result_once(N, C, K, H, groups, workers, monkeypatch):
    """Every (group, output channel, column) of the whole-batch GEMM's result is in exactly one block;
    blocks cut one axis, the longer, into about GEMM_BLOCKS_PER_WORKER per worker, rows at least 16, columns
    at least GEMM_MIN_BLOCK_COLUMNS wide and cut at multiples of GEMM_COLUMN_ALIGN."""
    monkeypatch.setattr(numba_cpu, "gemm_workers", lambda spec: workers)
    spec = fastconv.conv_spec(np.zeros((N, C, H, H), np.float32), np.zeros((K, C // groups, 1, 1), np.float32),
                              groups=groups)
    Kg, cols = K // groups, N * H * H
    seen = np.zeros((groups, Kg, cols), np.int64)
    blocks = numba_cpu._gemm_blocks(spec)
    for g, k0, k1, c0, c1 in blocks:
        assert 0 <= k0 < k1 <= Kg and 0 <= c0 < c1 <= cols
        seen[g, k0:k1, c0:c1] += 1
    assert (seen == 1).all()
    per_group = len(blocks) // groups
    want = -(-numba_cpu.GEMM_BLOCKS_PER_WORKER * workers // groups)
    if Kg >= cols:
        assert all(c0 == 0 and c1 == cols for _, _, _, c0, c1 in blocks)
        assert per_group == max(1, min(want, Kg // 16))
        assert per_group == 1 or min(k1 - k0 for _, k0, k1, _, _ in blocks) >= 16
    else:
        assert all(k0 == 0 and k1 == Kg for _, k0, k1, _, _ in blocks)
        assert per_group <= max(1, min(want, cols // numba_cpu.GEMM_MIN_BLOCK_COLUMNS))
        assert per_group >= min(want, cols // numba_cpu.GEMM_MIN_BLOCK_COLUMNS) - 1
        assert all(c0 % numba_cpu.GEMM_COLUMN_ALIGN == 0 for _, _, _, c0, _ in blocks)
        widths = [c1 - c0 for _, _, _, c0, c1 in blocks]
        assert per_group == 1 or min(widths) >= numba_cpu.GEMM_MIN_BLOCK_COLUMNS - numba_cpu.GEMM_COLUMN_ALIGN


# ---------------------------------------------------------------------------------------------------
# run_chunks: the chunks of a serial Numba kernel, the caller among the workers
# ---------------------------------------------------------------------------------------------------
def test_every_chunk_runs_once_with_one_of_the_scratches_the_caller_among_the_workers():
    seen, lock = [], threading.Lock()
    scratches = [object(), object()]

    def fn(ch, s):
        with lock:
            seen.append((ch, s, threading.current_thread() is threading.main_thread()))
        if ch == 0:         # whoever claims chunk 0 stays on it a while: the other worker runs the rest
            threading.Event().wait(0.05)

    for _ in range(20):
        seen.clear()
        _cpu_pool.run_chunks(40, fn, scratches)
        assert sorted(ch for ch, _, _ in seen) == list(range(40))
        assert all(s in scratches for _, s, _ in seen)
        assert any(main for _, _, main in seen)
        if any(not main for _, _, main in seen):
            return
    pytest.fail("no chunk ever ran on a pool thread")


def test_a_held_up_chunk_leaves_the_others_to_the_other_worker():
    """Chunk 0 (the caller's first claim) ends only once every other chunk has run: a second worker ran
    them while the first was held up."""
    done, others = threading.Event(), []

    def fn(ch, s):
        if ch == 0:
            assert done.wait(10), "the other chunks did not run while chunk 0 was held up"
        else:
            others.append(ch)
            if len(others) == 9:
                done.set()

    _cpu_pool.run_chunks(10, fn, [None, None])
    assert sorted(others) == list(range(1, 10))


class _Idle:
    """A pool whose threads never get to run (a worker on a core another process holds)."""
    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args):
        self.submitted.append((fn, args))


def test_the_caller_does_not_wait_for_a_worker_that_never_starts(monkeypatch):
    """Returns once every chunk has run, though the pool thread has not started; when it starts late it
    claims nothing and never touches its scratch."""
    idle = _Idle()
    monkeypatch.setattr(_cpu_pool, "_pool", lambda size: idle)
    ran = []
    _cpu_pool.run_chunks(6, lambda ch, s: ran.append((ch, s)), ["caller's", "worker's"])
    assert ran == [(c, "caller's") for c in range(6)] and len(idle.submitted) == 1
    fn, args = idle.submitted[0]
    fn(*args)                                   # the worker starts after the call returned
    assert len(ran) == 6


def test_no_thread_to_start_leaves_every_chunk_to_the_caller(monkeypatch):
    class NoThreads:
        def submit(self, fn, *args):
            raise RuntimeError("can't start new thread")
    monkeypatch.setattr(_cpu_pool, "_pool", lambda size: NoThreads())
    ran = []
    _cpu_pool.run_chunks(5, lambda ch, s: ran.append(ch), [None, None, None])
    assert ran == list(range(5))


def test_a_chunks_error_reaches_the_caller_after_the_running_ones_end_and_stops_new_claims():
    started, finished, lock = [], [], threading.Lock()

    def fn(ch, s):
        with lock:
            started.append(ch)
        if ch == 1:
            raise ValueError("chunk 1")
        threading.Event().wait(0.002)
        with lock:
            finished.append(ch)

    with pytest.raises(ValueError, match="chunk 1"):
        _cpu_pool.run_chunks(1000, fn, [None, None])
    assert set(finished) == set(started) - {1}          # every other chunk that started had ended
    assert len(started) < 1000


def test_one_worker_or_one_chunk_runs_in_order_on_the_caller():
    for nchunk, scratches in ((7, [None]), (1, [None, None])):
        ran = []
        _cpu_pool.run_chunks(nchunk, lambda ch, s: ran.append((ch, threading.current_thread())), scratches)
        assert ran == [(c, threading.current_thread()) for c in range(nchunk)]
    _cpu_pool.run_chunks(0, lambda ch, s: pytest.fail("ran"), [None, None])


def test_the_call_returns_only_after_every_claimed_chunk_ended():
    """Chunk 1 runs on the pool thread and is still running when the caller runs out of chunks to claim:
    the caller waits for it (its output would be incomplete otherwise)."""
    started, finished = threading.Event(), []

    def fn(ch, s):
        if ch == 0:
            assert started.wait(10), "chunk 1 never started on the pool thread"
        else:
            started.set()
            threading.Event().wait(0.05)
            finished.append(ch)

    _cpu_pool.run_chunks(2, fn, [None, None])
    assert finished == [1]


# ---------------------------------------------------------------------------------------------------
# The chunked Numba kernels (_numba_kernels.CHUNKED) through numba_cpu._on_workers
# ---------------------------------------------------------------------------------------------------
def _depthwise(stride, M=1, H=9, N=3, C=5):
    rng = np.random.default_rng(stride * 10 + M)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = rng.standard_normal((C * M, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(C * M).astype(np.float32)
    kw = dict(stride=stride, padding=1, dilation=1, groups=C)
    dy = rng.standard_normal(fastconv.conv2d(x, w, backend="numpy", **kw).shape).astype(np.float32)
    return x, w, b, dy, kw


def _chunked_ops():
    """(name, kernel, run(), reference check(out)) for every CHUNKED kernel's path."""
    ops = []
    for stride, M in ((1, 1), (2, 2)):
        x, w, b, dy, kw = _depthwise(stride, M)
        args = (kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
        spec = fastconv.conv_spec(x, w, b, *args)
        si, sw = conv_input_spec(x.shape, w, dy, *args), conv_weight_spec(x, w.shape, dy, *args)
        if stride == 2:
            xe = np.random.default_rng(7 + M).standard_normal((3, 5, 10, 10)).astype(np.float32)
            se = fastconv.conv_spec(xe, w, b, *args)
            ops.append((f"forward flat s2 M{M}", "conv2d_depthwise_flat",
                        lambda se=se, xe=xe, w=w, b=b: numba_cpu.conv_depthwise_flat(se, xe, w, b),
                        lambda out, se=se, xe=xe, w=w, b=b, kw=kw: testing.assert_conv_close(
                            out, fastconv.conv2d(xe, w, b, backend="numpy", **kw), se, xe, w, b)))
        ops += [
            (f"forward s{stride} M{M}", "conv2d_depthwise_phase",
             lambda spec=spec, x=x, w=w, b=b: numba_cpu.conv_depthwise_phase(spec, x, w, b),
             lambda out, spec=spec, x=x, w=w, b=b, kw=kw: testing.assert_conv_close(
                 out, fastconv.conv2d(x, w, b, backend="numpy", **kw), spec, x, w, b)),
            (f"input s{stride} M{M}", "conv2d_depthwise_input",
             lambda si=si, dy=dy, w=w: numba_cpu.conv_input_depthwise(si, dy, w),
             lambda out, si=si, dy=dy, w=w: testing.assert_grad_close(out, si, dy, w)),
            (f"weight s{stride} M{M}", "conv2d_depthwise_weight_phase",
             lambda sw=sw, x=x, dy=dy: numba_cpu.conv_weight_depthwise(sw, x, dy),
             lambda out, sw=sw, x=x, dy=dy: testing.assert_grad_close(out, sw, x, dy)),
        ]
    for stride in (1, 2):            # 17 channels: two channel blocks, the second of one channel
        xc, wc, _, dyc, kwc = _depthwise(stride, C=17)
        swc = conv_weight_spec(xc, wc.shape, dyc, kwc["stride"], kwc["padding"], kwc["dilation"], kwc["groups"])
        ops.append((f"weight cblock s{stride}", "conv2d_depthwise_weight_cblock",
                    lambda swc=swc, xc=xc, dyc=dyc: numba_cpu.conv_weight_depthwise_cblock(swc, xc, dyc),
                    lambda out, swc=swc, xc=xc, dyc=dyc: testing.assert_grad_close(out, swc, xc, dyc)))
    x, w, b, dy, kw = _depthwise(1)
    xi = x.copy()
    xi[0, 0, 0, 0] = np.inf          # the phase kernel's zeros meet it: the clipped kernel recomputes dw
    sw = conv_weight_spec(xi, w.shape, dy, 1, 1, 1, 5)
    ops.append(("weight clipped", "conv2d_depthwise_weight", lambda: numba_cpu.conv_weight_depthwise(sw, xi, dy),
                lambda out: np.testing.assert_allclose(out, fg.conv2d_weight(xi, w.shape, dy, padding=1, groups=5,
                                                                             backend="numpy"),
                                                           rtol=1e-5, atol=1e-4)))     # (|terms| sum to ~30)
    xp = np.random.default_rng(5).standard_normal((3, 21, 6, 7)).astype(np.float32)   # 63 planes
    sp = fastconv.pool_spec("avg", xp, (6, 7))
    ops.append(("global avg", "global_avg_pool2d", lambda: numba_cpu.avg_pool_global(sp, xp),
                lambda out: testing.assert_pool_close(out, fastconv.avg_pool2d(xp, (6, 7), backend="numpy"),
                                                      sp, xp)))
    for shape, wshape, kw in (((3, 6, 14, 14), (16, 6, 5, 5), {}),                          # LeNet's conv2
                              ((1, 4, 11, 11), (10, 2, 3, 3), dict(stride=2, padding=1, groups=2))):
        rng = np.random.default_rng(len(shape) + wshape[0])
        xq, wq = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(wshape).astype(np.float32)
        sq = fastconv.conv_spec(xq, wq, None, **kw)
        ops.append((f"planes {shape}", "conv2d_planes_chunks",
                    lambda sq=sq, xq=xq, wq=wq: numba_cpu.conv_planes(sq, xq, wq),
                    lambda out, sq=sq, xq=xq, wq=wq, kw=kw: testing.assert_conv_close(
                        out, fastconv.conv2d(xq, wq, backend="numpy", **kw), sq, xq, wq, None)))
    x2 = np.random.default_rng(6).standard_normal((3, 7, 9, 10)).astype(np.float32)  # 84 output rows
    s2, s2i = fastconv.pool_spec("max", x2, 2), fastconv.pool_spec("max", x2, 2, return_indices=True)
    sa = fastconv.pool_spec("avg", x2, 2)
    want_max, want_idx = fastconv.max_pool2d(x2, 2, return_indices=True, backend="numpy")
    ops += [
        ("max 2x2", "max_pool2x2", lambda: numba_cpu.max_pool_2x2(s2, x2),
         lambda out: np.testing.assert_array_equal(out, want_max)),
        ("max 2x2 indices", "max_pool2x2", lambda: numba_cpu.max_pool_2x2(s2i, x2)[1],
         lambda idx: np.testing.assert_array_equal(idx, want_idx)),
        ("avg 2x2", "avg_pool2x2", lambda: numba_cpu.avg_pool_2x2(sa, x2),
         lambda out: np.testing.assert_array_equal(out, fastconv.avg_pool2d(x2, 2, backend="numpy"))),
    ]
    return ops


@pytest.mark.parametrize("workers", [2, 3])
def test_chunked_kernels_on_the_workers_match_one_call_and_the_oracle(workers, monkeypatch):
    """Each CHUNKED kernel's path on ``workers`` threads, launched by its ``_prange`` twin and as claimed
    chunks on the workers: bitwise the result of one thread (all chunks in one call), close to the oracle;
    the launch asked for ran (run_chunks got a scratch per worker, or was not called), and every chunked
    kernel and every twin was exercised."""
    k = numba_cpu.kernels()
    calls = []
    real = _cpu_pool.run_chunks

    def spy(nchunk, fn, scratches):
        calls.append((nchunk, len(scratches)))
        return real(nchunk, fn, scratches)
    monkeypatch.setattr(_cpu_pool, "run_chunks", spy)
    monkeypatch.setattr(numba_cpu, "CHUNK_MIN_BYTES", 1)     # (the pool's 63 planes in several chunks)
    real_path = numba_cpu._launch_path
    exercised = set()
    for name, kernel, run, check in _chunked_ops():
        monkeypatch.setattr(numba_cpu, "_threads", lambda: 1)
        calls.clear()
        one = run()
        assert calls == [], name
        monkeypatch.setattr(numba_cpu, "_threads", lambda: workers)
        for path in (0, 1):
            monkeypatch.setattr(numba_cpu, "_launch_path", lambda spec, n, path=path: (path, real_path(spec, n)[1]))
            calls.clear()
            many = run()
            if path:
                assert calls and all(n > 1 and s == min(workers, n) for n, s in calls), (name, calls)
            else:
                assert calls == [], name
            assert np.array_equal(one, many), (name, path)
            check(many)
        exercised.add(kernel)
    assert exercised == set(k.CHUNKED)
    assert all(getattr(k, n + "_prange").signatures for n in k.CHUNKED)


class _Spec:
    """Stands in for a spec: the launch record lives in its ``__dict__``."""


def test_a_slower_kernel_that_loses_two_ticks_counts_a_stall(monkeypatch):
    """A 2.3 ms static launch (claimed: 1.9 ms, so the absolute line: 6.9 ms) that takes 8 ms on a busy
    machine (two 4 ms ticks) stalls; one lost tick on a quiet machine (6.4 ms) does not. (The line was
    twice the quickest plus LAUNCH_STALL_S, 8.8 ms, which two lost ticks never crossed.)"""
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: 7.0)
    spec, seq = _Spec(), []
    for t in (0.0023, 0.0023, 0.0064, 0.0023, 0.0064, 0.008, 0.008, 0.008):
        path, state = numba_cpu._launch_path(spec, "k")
        numba_cpu._launch_took(state, path, 0.0019 if path else t)
        seq.append(path)
    assert seq == [0, 1, 0, 0, 0, 0, 0, 1]    # static first, claimed once, then static until two 8 ms in a row


def test_an_unlucky_claimed_measurement_is_taken_again(monkeypatch):
    """Busy from the first call: the static launches and the one claimed launch all took 8 ms (each lost two
    ticks), so no static launch can be a stall. After LAUNCH_REPROBE static launches the claimed path is
    measured again (0.5 ms now); then 8 ms static launches stall. A problem with a quick static launch
    (under LAUNCH_STALL_S) is never re-measured: its claimed path keeps its first time."""
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: 11.0)
    n = numba_cpu.LAUNCH_REPROBE
    spec, seq = _Spec(), []
    claimed = iter([0.008, 0.0005])
    for _ in range(n + 5):
        path, state = numba_cpu._launch_path(spec, "k")
        numba_cpu._launch_took(state, path, next(claimed) if path else 0.008)
        seq.append(path)
    assert seq == [0, 1] + [0] * n + [1, 0, 0]      # ...and the next launch is claimed (held)
    assert numba_cpu._launch_path(spec, "k")[0] == 1
    quick, seq = _Spec(), []
    for _ in range(4 * n):
        path, state = numba_cpu._launch_path(quick, "k")
        numba_cpu._launch_took(state, path, 0.004 if path else 0.0004)
        seq.append(path)
    assert seq == [0, 1] + [0] * (4 * n - 2)


def test_a_static_launch_much_slower_than_slow_claimed_chunks_counts_a_stall(monkeypatch):
    """Busy from the first call, a larger kernel: claimed chunks take 4 or 5 ms, static launches 8 ms (within
    the quickest plus LAUNCH_STALL_S, but 1.6-2x the claimed): stalls. Claimed chunks under
    LAUNCH_RATIO_MIN_S (a small kernel's) are judged by the absolute line only: 1.6x theirs is no stall."""
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: 9.0)
    for claimed, static, want in ((0.005, 0.008, [0, 1, 0, 0, 1]), (0.004, 0.008, [0, 1, 0, 0, 1]),
                                  (0.0015, 0.0024, [0, 1, 0, 0, 0]), (0.0007, 0.0011, [0, 1, 0, 0, 0])):
        spec, seq = _Spec(), []
        for _ in range(5):
            path, state = numba_cpu._launch_path(spec, "k")
            numba_cpu._launch_took(state, path, claimed if path else static)
            seq.append(path)
        assert seq == want, (claimed, static)


def test_a_static_launch_that_stalls_twice_in_a_row_sends_the_problem_to_claimed_chunks(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: now[0])
    spec, other = _Spec(), _Spec()
    seq = []
    stall = 0.001 + numba_cpu.LAUNCH_STALL_S             # the line: the quickest (1 ms) plus the slack

    def launch(static_s, claimed_s=0.0015):         # (claimed under LAUNCH_RATIO_MIN_S: the absolute line)
        path, state = numba_cpu._launch_path(spec, "k")
        numba_cpu._launch_took(state, path, claimed_s if path else static_s)
        seq.append(path)
    launch(0.001)
    launch(0.001)
    assert seq == [0, 1]                       # each path measured once: quickest 1 ms and 1.5 ms
    for t in (0.001, stall * 1.05, 0.001, stall * 1.05, stall * 0.95):
        launch(t)                              # stalls, but never two in a row
    assert seq[2:] == [0] * 5
    launch(stall * 1.05)
    assert seq[-1] == 0                        # (the one before was no stall: this is the first in a row)
    launch(stall * 1.05)
    assert seq[-1] == 0
    for _ in range(3):
        launch(0.008)
    assert seq[-3:] == [1, 1, 1]               # claimed chunks for LAUNCH_HOLD_S...
    assert numba_cpu._launch_path(other, "k")[0] == 0 and numba_cpu._launch_path(spec, "j")[0] == 0  # (its own)
    now[0] += numba_cpu.LAUNCH_HOLD_S
    launch(0.001)
    launch(0.001)
    assert seq[-2:] == [0, 0]                  # ...then static again


def test_stalls_are_judged_against_the_quicker_path_when_every_static_launch_was_slow(monkeypatch):
    """Busy from the first call: every static launch stalls (about 8 ms: two scheduler ticks), the quickest
    too; the claimed launch's 0.7 ms is the yardstick."""
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: 5.0)
    spec, seq = _Spec(), []
    slow = 0.0007 + numba_cpu.LAUNCH_STALL_S + 0.001
    for _ in range(5):
        path, state = numba_cpu._launch_path(spec, "k")
        numba_cpu._launch_took(state, path, 0.0007 if path else slow)
        seq.append(path)
    assert seq == [0, 1, 0, 0, 1]
