"""Argument checking before launch: count, pointer vs scalar, scalar width, int vs float."""
import ctypes

import numpy as np
import pytest

from fastconv.emu import EmuModule


@pytest.fixture(scope="module")
def vadd(kernel_path):
    return EmuModule(path=kernel_path("vector_add.cu")).get_function("vadd_plain")


@pytest.fixture(scope="module")
def scale(kernel_path):
    mod = EmuModule(path=kernel_path("misc.cu"), name_expressions=("scale<float>", "scale<double>"))
    return mod.get_function("scale<float>")


def _arrays(n=8, dtype=np.float32):
    return np.ones(n, dtype), np.ones(n, dtype), np.zeros(n, dtype)


def test_descriptor(vadd):
    assert [p[6] for p in vadd.params] == ["const float*", "const float*", "float*", "int"]


def test_wrong_count(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match=r"vadd_plain takes 4 arguments "
                                        r"\(const float\*, const float\*, float\*, int\), got 3"):
        vadd(1, 8, (a, b, o))


def test_python_int_for_int_param(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match=r"argument 3 \(parameter type `int`\): expected a numpy int32 scalar, "
                                        r"got Python int; pass np.int32"):
        vadd(1, 8, (a, b, o, 8))


def test_int64_scalar_for_int_param(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match="expected a numpy int32 scalar, got numpy int64 scalar"):
        vadd(1, 8, (a, b, o, np.int64(8)))


def test_python_float_for_float_param(scale):
    x, _, o = _arrays()
    with pytest.raises(TypeError, match=r"argument 2 \(parameter type `float`\): .*got Python float; pass np.float32"):
        scale(1, 8, (x, o, 2.0, np.int32(8)))


def test_float64_scalar_for_float_param(scale):
    x, _, o = _arrays()
    with pytest.raises(TypeError, match="expected a numpy float32 scalar, got numpy float64 scalar"):
        scale(1, 8, (x, o, np.float64(2.0), np.int32(8)))


def test_int_scalar_for_float_param(scale):
    x, _, o = _arrays()
    with pytest.raises(TypeError, match="expected a numpy float32 scalar, got numpy int32 scalar"):
        scale(1, 8, (x, o, np.int32(2), np.int32(8)))


def test_array_for_int_param(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match=r"argument 3 .*expected a numpy int32 scalar, got int32 array"):
        vadd(1, 8, (a, b, o, np.array([8], np.int32)))


def test_scalar_for_pointer_param(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match=r"argument 0 \(parameter type `const float\*`\): expected a numpy array"):
        vadd(1, 8, (np.float32(1), b, o, np.int32(8)))


def test_float64_array_for_float_pointer(vadd):
    a, b, o = _arrays()
    with pytest.raises(TypeError, match=r"argument 1 .*got a float64 array"):
        vadd(1, 8, (a, b.astype(np.float64), o, np.int32(8)))


def test_non_contiguous_array(vadd):
    a, b, o = _arrays(16)
    with pytest.raises(ValueError, match="C-contiguous"):
        vadd(1, 8, (a[::2], b[:8], o[:8], np.int32(8)))


def test_raw_pointer_and_null_pass(vadd):
    a, b, o = _arrays()
    vadd(1, 8, (ctypes.c_void_p(a.ctypes.data), b, o, np.int32(8)))
    assert (o == 2).all()
    vadd(1, 8, (a, b, o, np.int32(0)))  # null would be fine too: no thread dereferences
    vadd(1, 8, (None, None, None, np.int32(0)))


@pytest.mark.parametrize("grid,block,err", [
    (0, 8, ValueError), (1, (8, 8, 8, 8), TypeError), (1, 2.0, TypeError),
])
def test_bad_geometry(vadd, grid, block, err):
    a, b, o = _arrays()
    with pytest.raises(err):
        vadd(grid, block, (a, b, o, np.int32(8)))


def test_block_too_large(vadd):
    from fastconv.emu import EmuError
    a, b, o = _arrays()
    with pytest.raises(EmuError, match="exceeds CUDA limits"):
        vadd(1, (32, 33), (a, b, o, np.int32(8)))


def test_unknown_option(kernel_path):
    from fastconv.emu import EmuError
    with pytest.raises(EmuError, match="unsupported compiler option"):
        EmuModule(path=kernel_path("vector_add.cu"), options=("--frobnicate",))
