"""Barriers, thread order, race exposure, misuse detection and shared-memory poisoning."""
import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule

ORDERS = ("forward", "reverse", "random")


@pytest.fixture(scope="module")
def red(kernel_path):
    return EmuModule(path=kernel_path("reduction.cu"))


@pytest.fixture(scope="module")
def bar(kernel_path):
    return EmuModule(path=kernel_path("barriers.cu"))


@pytest.fixture(scope="module")
def poison(kernel_path):
    return EmuModule(path=kernel_path("smem_poison.cu"))


def _data(n=256 * 8 - 37):
    # small integers: every partial sum is exact in float32, so any race changes the result
    return np.random.default_rng(5).integers(-50, 50, n).astype(np.float32)


def _block_sums(x, block=256):
    pad = np.zeros(-len(x) % block, np.float64)
    return np.concatenate([x.astype(np.float64), pad]).reshape(-1, block).sum(1)


@pytest.mark.parametrize("order", ORDERS)
def test_reduction_correct_in_every_order(red, order):
    x = _data()
    out = np.zeros(8, np.float32)
    red.get_function("block_sum")(8, 256, (x, out, np.int32(len(x))), order=order, seed=11)
    np.testing.assert_array_equal(out, _block_sums(x))


@pytest.mark.parametrize("order", ORDERS)
def test_dynamic_shared_reduction(red, order):
    x = _data()
    out = np.zeros(16, np.float32)
    red.get_function("block_sum_dyn")(16, 128, (x, out, np.int32(len(x))), shared_mem=128 * 4, order=order)
    np.testing.assert_array_equal(out, _block_sums(x, 128))


def test_missing_syncthreads_shows_up_as_order_dependence(red):
    x = _data()
    expect = _block_sums(x)
    results = {}
    for order, seed in [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]:
        out = np.zeros(8, np.float32)
        red.get_function("block_sum_racy")(8, 256, (x, out, np.int32(len(x))), order=order, seed=seed)
        results[(order, seed)] = out
    # forward order runs thread 0 to the end before thread 64 adds buf[192] into buf[64]: wrong.
    # Reverse order happens to be a valid sequential schedule of this tree (every reader runs
    # after all higher threads finished), so it gives the right sum -- hence the three orders.
    assert not np.array_equal(results[("forward", 0)], expect)
    np.testing.assert_array_equal(results[("reverse", 0)], expect)
    assert not np.array_equal(results[("random", 1)], expect)
    assert not np.array_equal(results[("random", 2)], expect)
    assert len({r.tobytes() for r in results.values()}) >= 3


def test_random_order_is_reproducible(red):
    x = _data()
    a, b = np.zeros(8, np.float32), np.zeros(8, np.float32)
    f = red.get_function("block_sum_racy")
    f(8, 256, (x, a, np.int32(len(x))), order="random", seed=7, workers=2)
    f(8, 256, (x, b, np.int32(len(x))), order="random", seed=7, workers=1)
    np.testing.assert_array_equal(a, b)  # per-block seeds: independent of the worker count


@pytest.mark.parametrize("kernel,message", [
    ("sync_in_branch", "returned while others wait"),
    ("sync_two_sites", "different call sites"),
])
def test_divergent_barrier_is_an_error(bar, kernel, message):
    out = np.zeros(64, np.float32)
    with pytest.raises(EmuError, match=message):
        bar.get_function(kernel)(2, 64, (out,))


def test_return_before_syncthreads_is_an_error(bar):
    out = np.zeros(64, np.float32)
    f = bar.get_function("return_before_sync")
    f(1, 64, (out, np.int32(64)))  # every thread reaches the barrier: fine
    assert (out == 1).all()
    with pytest.raises(EmuError, match=r"returned while others wait.*__syncthreads line"):
        f(1, 64, (out, np.int32(40)))


def test_syncthreads_count_and_or(bar):
    out = np.zeros(4, np.int32)
    bar.get_function("sync_count")(1, 100, (out,))
    np.testing.assert_array_equal(out, [34, 1, 1, 0])


def test_trap(bar):
    with pytest.raises(EmuError, match=r"__trap\(\) at line \d+ in block \(0,0,0\) thread \(3,0,0\)"):
        bar.get_function("trap")(1, 32, (np.zeros(32, np.float32),))


def test_module_usable_after_failed_launch(bar):
    out = np.zeros(64, np.float32)
    with pytest.raises(EmuError):
        bar.get_function("sync_two_sites")(4, 64, (out,), workers=2)
    out = np.zeros(4, np.int32)
    bar.get_function("sync_count")(1, 100, (out,))
    assert out[0] == 34


def test_dynamic_shared_memory_is_poisoned(poison):
    out = np.zeros(3 * 64, np.float32)
    out64 = np.zeros(3)
    poison.get_function("read_dynamic_first")(3, 64, (out, out64), shared_mem=64 * 4)
    assert np.isnan(out).all()
    assert np.isnan(out64).all()


def test_static_shared_memory_is_poisoned_in_every_block(poison):
    out = np.zeros(4 * 32, np.float32)
    poison.get_function("read_static_first")(4, 32, (out,), workers=1)
    assert np.isnan(out).all()  # also blocks 1..3, which run after block 0 wrote 7.0


def test_dynamic_shared_memory_alignment(poison):
    out = np.ones(1, np.uint64)
    poison.get_function("align_dynamic")(1, 1, (out,), shared_mem=37)
    assert out[0] == 0


def test_device_assert_fails_the_launch(bar):
    x = np.zeros(64, np.int32)
    f = bar.get_function("device_assert")
    f(1, 64, (x,))
    x[40] = -1
    with pytest.raises(EmuError, match=r"assertion `x\[threadIdx.x\] >= 0' failed at .*barriers.cu:\d+ "
                                       r"in block \(0,0,0\) thread \(40,0,0\)"):
        f(1, 64, (x,))


def test_order_from_environment(red, monkeypatch):
    x = _data()
    f = red.get_function("block_sum_racy")
    outs = {}
    for order in ("forward", "reverse"):
        outs[order] = np.zeros(8, np.float32)
        f(8, 256, (x, outs[order], np.int32(len(x))), order=order)
    monkeypatch.setenv("FASTCONV_EMU_ORDER", "forward")
    env_out = np.zeros(8, np.float32)
    f(8, 256, (x, env_out, np.int32(len(x))))
    np.testing.assert_array_equal(env_out, outs["forward"])
    monkeypatch.setenv("FASTCONV_EMU_ORDER", "reverse")
    f(8, 256, (x, env_out, np.int32(len(x))))
    np.testing.assert_array_equal(env_out, outs["reverse"])
    monkeypatch.setenv("FASTCONV_EMU_ORDER", "sideways")
    with pytest.raises(ValueError, match="FASTCONV_EMU_ORDER='sideways'.*takes `forward`, `reverse`"):
        f(8, 256, (x, env_out, np.int32(len(x))))


def test_concurrent_launches_from_python_threads(red):
    # each launch has its own workers, fibers and thread-local shared memory
    import threading
    x = _data()
    expect = _block_sums(x)
    f = red.get_function("block_sum")
    failures = []

    def run(i):
        for _ in range(5):
            out = np.zeros(8, np.float32)
            f(8, 256, (x, out, np.int32(len(x))), order=("forward", "reverse", "random")[i % 3], workers=2)
            if not np.array_equal(out, expect):
                failures.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_shared_memory_limit_as_on_the_gpu(poison):
    f = poison.get_function("big_static")
    out = np.zeros(32, np.float32)
    f(1, 32, (out,), shared_mem=8 * 1024)  # 40 + 8 KiB: exactly the default 48 KiB
    assert (out == 3).all()
    with pytest.raises(EmuError, match=r"40960 bytes of static and 12288 bytes of dynamic shared memory, "
                                       r"more than the 49152"):
        f(1, 32, (out,), shared_mem=12 * 1024)
    with pytest.raises(EmuError, match="more than max_dynamic_shared_size_bytes=49152"):
        f(1, 32, (out,), shared_mem=64 * 1024)
    assert f.max_dynamic_shared_size_bytes == 48 * 1024
    with pytest.raises(EmuError, match="more than a block can have"):
        f.max_dynamic_shared_size_bytes = 300 * 1024
    f.max_dynamic_shared_size_bytes = 100 * 1024  # the opt-in belongs to the kernel (cudaFuncSetAttribute)
    try:
        poison.get_function("big_static")(1, 32, (out,), shared_mem=64 * 1024)
        assert (out == 3).all()
    finally:
        del poison._lib.max_dynamic_smem["big_static"]


def test_order_all_flags_the_missing_barrier(red):
    x = _data()
    out = np.zeros(8, np.float32)
    red.get_function("block_sum")(8, 256, (x, out, np.int32(len(x))), order="all", seed=3)
    np.testing.assert_array_equal(out, _block_sums(x))
    out[:] = -1
    with pytest.raises(EmuError, match=r"block_sum_racy: results depend on the thread order .*argument 1 "
                                       r"\(`float\*`\): \d of 8 elements differ, first at flat index \d: "
                                       r"forward=.*, reverse=.*, random="):
        red.get_function("block_sum_racy")(8, 256, (x, out, np.int32(len(x))), order="all", seed=3)
    np.testing.assert_array_equal(x, _data())  # inputs untouched
