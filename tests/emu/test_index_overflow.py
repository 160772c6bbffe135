"""What the index-width check of the CUDA kernels (tests/cuda/test_index_width.py) is built from: overflow-checked
modules (a signed integer overflow fails the launch), launches of a block range of a huge grid, and arrays of
any size over reserved, unbacked memory."""
import mmap
import resource

import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule, Reserved

CODE = r"""
template <typename I>
__global__ void offsets(const int* __restrict__ k, long long* __restrict__ out, int kd) {
  const I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
  out[threadIdx.x] = (I)k[threadIdx.x] * kd + i;       // the (I) cast: long long for I = long long
}
__global__ void narrow(const int* __restrict__ k, long long* __restrict__ out, int kd) {
  out[threadIdx.x] = k[threadIdx.x] * kd;               // int * int: wraps past 2^31 - 1 (undefined in C++)
}
__global__ void ops(const int* __restrict__ a, long long* __restrict__ out, int op) {
  const int x = a[0], y = a[1];
  long long r = 0;
  if (op == 0) r = x + y;
  if (op == 1) r = x - y;
  if (op == 2) r = -x;
  if (op == 3) r = x / y;
  if (op == 4) { const long long u = (long long)x << 32; r = u * y; }
  out[0] = r;
}
__global__ void block_ids(unsigned* __restrict__ out, unsigned long long base) {
  // one row per block this launch runs: (blockIdx.x, y, z, gridDim.x * gridDim.y * gridDim.z)
  const unsigned long long b = blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
  unsigned* row = out + 4 * (b - base);
  if (threadIdx.x == 0) {
    row[0] = blockIdx.x; row[1] = blockIdx.y; row[2] = blockIdx.z;
    row[3] = gridDim.x * gridDim.y * gridDim.z;
  }
}
__global__ void touch(float* __restrict__ x, long long i, float v) { x[i] = v; }
"""


@pytest.fixture(scope="module")
def checked():
    return EmuModule(code=CODE, name_expressions=("offsets<int>", "offsets<long long>"), check_overflow=True)


@pytest.fixture(scope="module")
def plain():
    return EmuModule(code=CODE, name_expressions=("offsets<int>", "offsets<long long>"))


def test_an_int_product_past_2_pow_31_fails_the_launch_naming_it(checked):
    k, out = np.array([2**20, 3], np.int32), np.zeros(2, np.int64)
    with pytest.raises(EmuError, match=r"narrow: signed integer overflow: 1048576 \* 2049 does not fit 'int' "
                                       r"\(<fastconv-emu code>:8:37\) at line 8 in block \(0,0,0\) thread \(0,0,0\)"):
        checked.get_function("narrow")(1, 2, (k, out, np.int32(2049)))
    # below 2^31 it computes what it always did
    checked.get_function("narrow")(1, 2, (np.array([2**20, 3], np.int32), out, np.int32(2047)))
    assert out.tolist() == [2**20 * 2047, 3 * 2047]


def test_without_the_check_the_same_product_wraps(plain):
    out = np.zeros(2, np.int64)
    plain.get_function("narrow")(1, 2, (np.array([2**20, 3], np.int32), out, np.int32(2049)))
    assert out[0] == (2**20 * 2049 + 2**31) % 2**32 - 2**31      # what the wrapped int is: no error


def test_the_index_type_decides(checked):
    k, out = np.array([2**20, 5], np.int32), np.zeros(2, np.int64)
    checked.get_function("offsets<long long>")(1, 2, (k, out, np.int32(2049)))
    assert out.tolist() == [2**20 * 2049, 5 * 2049 + 1]
    with pytest.raises(EmuError, match=r"offsets<int>: signed integer overflow: 1048576 \* 2049 does not fit 'int'"):
        checked.get_function("offsets<int>")(1, 2, (k, out, np.int32(2049)))


@pytest.mark.parametrize("op, a, what", [
    (0, (2**31 - 1, 1), r"2147483647 \+ 1 does not fit 'int'"),
    (1, (-2**31, 1), r"-2147483648 - 1 does not fit 'int'"),
    (2, (-2**31, 0), r"-\(-2147483648\) does not fit 'int'"),
    (3, (-2**31, -1), r"-2147483648 / -1 does not fit 'int'"),
    (4, (2**30, 8), r"8 \* 4611686018427387904 does not fit 'long long int'"),
])
def test_every_signed_operation_is_checked(checked, op, a, what):
    out = np.zeros(1, np.int64)
    with pytest.raises(EmuError, match=r"signed integer overflow: " + what):
        checked.get_function("ops")(1, 1, (np.array(a, np.int32), out, np.int32(op)))
    checked.get_function("ops")(1, 1, (np.array((6, 3), np.int32), out, np.int32(op)))
    assert out[0] == [9, 3, -6, 2, (6 << 32) * 3][op]


def test_a_checked_module_is_its_own_build_and_cache_entry(checked, plain):
    from fastconv.emu import _module
    assert checked.path != plain.path
    _module._forget_loaded()
    again = EmuModule(code=CODE, name_expressions=("offsets<int>", "offsets<long long>"), check_overflow=True)
    assert not again.compiled and again.path == checked.path        # from the disk cache


def test_blocks_runs_that_range_of_the_grid_only(plain):
    grid = (5, 4, 3)
    out = np.zeros((4, 4), np.uint32)
    plain.get_function("block_ids")(grid, 32, (out, np.uint64(37)), blocks=(37, 41))
    # linear index x + 5 * (y + 4 * z): 37 = (2, 3, 1), 38 = (3, 3, 1), 39 = (4, 3, 1), 40 = (0, 0, 2)
    assert out.tolist() == [[2, 3, 1, 60], [3, 3, 1, 60], [4, 3, 1, 60], [0, 0, 2, 60]]
    out = np.zeros((1, 4), np.uint32)
    plain.get_function("block_ids")(2**31 - 1, 32, (out, np.uint64(2**31 - 2)), blocks=range(2**31 - 2, 2**31 - 1))
    assert out.tolist() == [[2**31 - 2, 0, 0, 2**31 - 1]]


@pytest.mark.parametrize("blocks, error", [
    ((3, 3), ValueError), ((0, 61), ValueError), ((-1, 2), ValueError), (range(0, 4, 2), ValueError),
    ((1,), TypeError), ((0.0, 2), TypeError), ([0, 2], TypeError)])
def test_blocks_must_be_a_range_of_the_grid(plain, blocks, error):
    with pytest.raises(error, match="blocks"):
        plain.get_function("block_ids")((5, 4, 3), 32, (np.zeros((60, 4), np.uint32), np.uint64(0)), blocks=blocks)


def test_reserved_arrays_take_no_memory_until_touched(plain):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Reserved((2**40,), np.float32) as x:                       # 4 TiB
        assert x.shape == (2**40,) and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
        assert x.ctypes.data % 256 == 0 and x[0] == 0 and x[-1] == 0
        plain.get_function("touch")(1, 1, (x, np.int64(2**40 - 1), np.float32(7)), guard=False)
        assert x[-1] == 7
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 64 * 1024    # KiB: nowhere near 4 TiB


def test_reserved_arrays_end_at_a_page_that_faults(plain):
    n = 3 * mmap.PAGESIZE                   # bytes: three whole pages, between the two guard pages
    r = Reserved((n // 4,), np.float32)
    try:
        touch = plain.get_function("touch")
        touch(1, 1, (r.array, np.int64(n // 4 - 1), np.float32(1)), guard=False)
        for i in (n // 4, -1):
            with pytest.raises(EmuError, match="invalid memory access"):
                touch(1, 1, (r.array, np.int64(i), np.float32(1)), guard=False)
    finally:
        r.close()
    assert r.array is None
