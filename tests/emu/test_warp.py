"""Warp shuffles and votes against NumPy, and warp-level misuse detection."""
import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule


@pytest.fixture(scope="module")
def warp(kernel_path):
    return EmuModule(path=kernel_path("warp.cu"))


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_shfl_down_sum(warp, order):
    x = np.random.default_rng(6).integers(-9, 9, 4 * 128).astype(np.float32)
    out = np.zeros(16, np.float32)
    warp.get_function("warp_sum_down")(4, 128, (x, out), order=order)
    np.testing.assert_array_equal(out, x.reshape(16, 32).sum(1))


def test_shfl_xor_sum_every_lane(warp):
    x = np.random.default_rng(7).standard_normal(2 * 64)
    out = np.zeros_like(x)
    warp.get_function("warp_sum_xor")(2, 64, (x, out))
    np.testing.assert_allclose(out, np.repeat(x.reshape(4, 32).sum(1), 32), rtol=1e-12)


def test_votes(warp):
    x = -np.ones(4 * 32, np.float32)
    x[32:64] = 1                         # warp 1: all positive
    x[64 + np.array([0, 5, 31])] = 2     # warp 2: lanes 0, 5, 31
    ballot, all_, any_ = np.zeros(4, np.uint32), np.zeros(4, np.int32), np.zeros(4, np.int32)
    warp.get_function("warp_vote")(2, 64, (x, ballot, all_, any_))
    expect = [int(sum(1 << lane for lane in range(32) if x[32 * w + lane] > 0)) for w in range(4)]
    np.testing.assert_array_equal(ballot, expect)
    np.testing.assert_array_equal(all_, [0, 1, 0, 0])
    np.testing.assert_array_equal(any_, [0, 1, 1, 0])


def test_shfl_up_scan_width16(warp):
    x = np.random.default_rng(8).integers(0, 100, 96).astype(np.int32)
    out = np.zeros_like(x)
    warp.get_function("warp_scan_up")(1, 96, (x, out))
    np.testing.assert_array_equal(out, np.cumsum(x.reshape(6, 16), axis=1).ravel())


def test_shfl_broadcast_width8_int64(warp):
    x = np.arange(64, dtype=np.int64) * (1 << 33)
    out = np.zeros_like(x)
    warp.get_function("warp_bcast")(1, 64, (x, out))
    np.testing.assert_array_equal(out, np.repeat(x.reshape(8, 8)[:, 3], 8))


def test_shuffle_with_returned_lanes_is_an_error(warp):
    out = np.arange(32, dtype=np.float32)
    f = warp.get_function("shfl_partial")
    f(1, 32, (out, np.int32(32)))
    np.testing.assert_array_equal(out[:31], np.arange(1, 32))
    with pytest.raises(EmuError, match="mask 0xffffffff but the live lanes are 0x0000ffff"):
        f(1, 32, (out, np.int32(16)))


def test_partial_last_warp_reads_poison(warp):
    # block of 48 threads: warp 1 has 16 lanes; the full-mask shuffle is allowed, but lane 15
    # reading lane 16 (absent) gets NaN, never a stale value
    out = np.arange(48, dtype=np.float32)
    warp.get_function("shfl_partial")(1, 48, (out, np.int32(48)))
    np.testing.assert_array_equal(out[32:47], np.arange(33, 48))
    assert np.isnan(out[47])
