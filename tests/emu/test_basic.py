"""Emulator basics: indexing, grid-stride loops, templates, half, structs, IEEE semantics."""
import ctypes

import numpy as np
import pytest

from fastconv.emu import EmuModule


@pytest.fixture(scope="module")
def vec(kernel_path):
    return EmuModule(path=kernel_path("vector_add.cu"))


@pytest.fixture(scope="module")
def misc(kernel_path):
    return EmuModule(path=kernel_path("misc.cu"), name_expressions=("scale<float>", "scale<double>"))


def _ab(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def test_finds_extern_c_kernels(vec):
    assert set(vec.kernel_names) == {"vadd_plain", "vadd_stride", "vadd_3d"}


@pytest.mark.parametrize("n,block", [(1, 32), (1000, 128), (1024, 256), (77, 1024)])
def test_vadd_plain_guard(vec, n, block):
    a, b = _ab(n)
    out = np.full(n + 8, -1.0, np.float32)  # tail past n must stay untouched
    grid = (n + block - 1) // block
    vec.get_function("vadd_plain")(grid, block, (a, b, out, np.int32(n)))
    np.testing.assert_array_equal(out[:n], a + b)
    assert (out[n:] == -1.0).all()


@pytest.mark.parametrize("grid,block", [(1, 1), (3, 64), (2, (8, 4))])
def test_vadd_grid_stride(vec, grid, block):
    n = 5003
    a, b = _ab(n, 1)
    out = np.zeros(n, np.float32)
    vec.get_function("vadd_stride")(grid, block, (a, b, out, np.int32(n)), workers=2)
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("block", [(8, 4, 2), (16, 2, 1), (3, 5, 7)])
def test_vadd_3d(vec, block):
    D, H, W = 5, 9, 17
    a, b = (x.reshape(D, H, W) for x in _ab(D * H * W, 2))
    out = np.zeros((D, H, W), np.float32)
    grid = tuple((s + t - 1) // t for s, t in zip((W, H, D), block))
    vec.get_function("vadd_3d")(grid, block, (a, b, out, np.int32(D), np.int32(H), np.int32(W)))
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("dtype,name", [(np.float32, "scale<float>"), (np.float64, "scale<double>")])
def test_template_name_expressions(misc, dtype, name):
    n = 300
    x = np.arange(n, dtype=dtype) / 7
    out = np.zeros(n, dtype)
    misc.get_function(name)(3, 128, (x, out, dtype(2.5), np.int32(n)))
    np.testing.assert_array_equal(out, dtype(2.5) * x)


def test_template_without_name_expression_is_reported(misc):
    with pytest.raises(Exception, match="name_expressions"):
        misc.get_function("scale<int>")


def test_histogram_atomics_many_blocks(misc):
    rng = np.random.default_rng(3)
    n = 100_000
    x = rng.integers(0, 1 << 20, n).astype(np.int32)
    bins = np.zeros(16, np.int32)
    total = np.zeros(1, np.float32)
    misc.get_function("histogram")(64, 128, (x, np.int32(n), bins, total), workers=2)
    np.testing.assert_array_equal(bins, np.bincount(x & 15, minlength=16))
    assert total[0] == n  # exact: every partial sum is an integer below 2**24


def test_half_roundtrip(misc):
    n = 1000
    x = (np.random.default_rng(4).standard_normal(n) * 100).astype(np.float16)
    out_h = np.zeros(n, np.float16)
    out_f = np.zeros(n, np.float32)
    misc.get_function("half_roundtrip")(8, 128, (x, out_h, out_f, np.float32(0.37), np.int32(n)))
    expect_f = x.astype(np.float32) * np.float32(0.37)
    np.testing.assert_array_equal(out_f, expect_f)
    np.testing.assert_array_equal(out_h, expect_f.astype(np.float16))  # round to nearest even


PARAMS_DTYPE = np.dtype({"names": ["N", "C", "H", "W", "alpha", "beta", "stride", "tag"],
                         "formats": [np.int32] * 4 + [np.float32, np.float64, np.int64, np.int16]},
                        align=True)


class ParamsC(ctypes.Structure):
    _fields_ = [("N", ctypes.c_int), ("C", ctypes.c_int), ("H", ctypes.c_int), ("W", ctypes.c_int),
                ("alpha", ctypes.c_float), ("beta", ctypes.c_double), ("stride", ctypes.c_longlong),
                ("tag", ctypes.c_short)]


EXPECTED_FIELDS = [2, 3, 5, 7, 0.25, -1.5, 1 << 40, -9]


@pytest.mark.parametrize("kind", ["numpy", "ctypes", "bytes"])
def test_struct_by_value(misc, kind):
    values = tuple(EXPECTED_FIELDS)
    if kind == "numpy":
        arg = np.array(values, dtype=PARAMS_DTYPE)[()]
    elif kind == "ctypes":
        arg = ParamsC(*values)
    else:
        arg = np.array(values, dtype=PARAMS_DTYPE).tobytes()
    out = np.zeros(9)
    misc.get_function("struct_fields")(1, 1, (arg, out))
    np.testing.assert_array_equal(out[:8], EXPECTED_FIELDS)
    assert out[8] == PARAMS_DTYPE.itemsize == ctypes.sizeof(ParamsC)


def test_struct_size_mismatch(misc):
    packed = np.dtype(PARAMS_DTYPE.descr[:0] + [(n, PARAMS_DTYPE.fields[n][0]) for n in PARAMS_DTYPE.names])
    arg = np.zeros((), dtype=packed)[()]  # unaligned twin: wrong size
    with pytest.raises(TypeError, match="struct is 48 bytes"):
        misc.get_function("struct_fields")(1, 1, (arg, np.zeros(9)))


def test_ieee_semantics(misc):
    x = np.array([np.nan, 1.0, 0.0], np.float32)
    out = np.zeros(13, np.float32)
    with np.errstate(all="ignore"):
        misc.get_function("ieee")(1, 1, (x, out))
    assert out[0] == 1 and out[1] == 1 and out[2] == 1
    assert out[3] == np.inf and out[4] == -np.inf
    assert np.isnan(out[5]) and np.isnan(out[6]) and np.isnan(out[7])
    assert out[8] == 0 and out[9] == -np.inf and np.isnan(out[10]) and out[11] == 1 and out[12] == 0.5


def test_half_atomics(misc):
    h = np.zeros(1, np.float16)
    h2 = np.zeros(2, np.float16)
    misc.get_function("half_atomics")(4, 64, (h, h2.view(np.uint32)), workers=2)
    assert h[0] == 128 and h2[0] == 64 and h2[1] == 256  # all exact in binary16
