"""Family ``fold`` (kernels/fold.cu, fastconv/_cuda/fold.py): unfold_v1 and fold_v1 against the oracle.

Through backend "cuda-emu" in all three thread orders and through backend "cuda" when a GPU is present: every
case in float16/32/64 and in the int64 instantiations (unfold exactly; fold within n * eps * fold(|cols|), in
float64 bitwise, as it sums in the oracle's order); results that do not depend on the thread order; the
``FoldParams`` layout against its Python twin (g++ through the emulator, and NVRTC); the 32-bit limits as
reasons; the index type at 2^31 - 1 elements of either buffer; the public API and backend "cuda"'s launch path
over the CuPy shim. Expected values come only from the oracle (numpy_oracle.unfold / fold64).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv._backends import numpy_oracle as oracle
from fastconv._cuda import fold as F
from fastconv._cuda import plan as L
from fastconv._spec import INT32_MAX
from fastconv._spec_fold import fold_spec, unfold_spec
from fastconv.testing import assert_within

from .common import DTYPES, public, rand, run_family, run_plan
from .test_backend_shim import cuda as cuda_shim  # noqa: F401  (the fixture: backend "cuda" over the shim)

FAMILY = _cuda.family("fold")
_ACC_EPS = {"float16": np.finfo(np.float32).eps, "float32": np.finfo(np.float32).eps,
            "float64": np.finfo(np.float64).eps}

#: name -> (image shape as the user passes it, unfold/fold arguments): strides below, at and beyond the
#: kernel (taps reading a position from several blocks, from one, from none), dilation, per-side padding
#: wider than the kernel, 1-D, 3-D, unbatched, and a column matrix spanning several thread blocks
CASES = {
    "2d_overlap": ((2, 3, 7, 6), dict(kernel_size=3, padding=1)),
    "2d_strided_dilated_asym": ((1, 2, 9, 8), dict(kernel_size=(2, 3), stride=(2, 3), dilation=(3, 1),
                                                   padding=((2, 0), (1, 4)))),
    "2d_stride_beyond_kernel": ((1, 2, 9, 11), dict(kernel_size=2, stride=(3, 4), padding=((0, 1), 2))),
    "1d": ((2, 3, 13), dict(kernel_size=(4,), stride=(3,), padding=((3, 1),), dilation=(2,))),
    "3d": ((1, 2, 5, 4, 6), dict(kernel_size=(3, 2, 2), stride=(2, 1, 2), padding=((1, 2), 0, (1, 0)),
                                 dilation=(1, 2, 1))),
    "3d_unbatched": ((2, 3, 4, 5), dict(kernel_size=(2, 2, 3), padding=1)),
}


def _problem(case, dtype, seed=0):
    """(unfold spec, x in the backend layout, fold spec, a column matrix in the backend layout)."""
    shape, kw = CASES[case]
    nd = len(kw["kernel_size"]) if isinstance(kw["kernel_size"], tuple) else 2
    rng = np.random.default_rng(seed)
    x = rand(rng, shape, dtype)
    u = unfold_spec(x, **kw)
    cols = rand(rng, u.output_shape, dtype)
    f = fold_spec(cols, shape[-nd:], **kw)
    return u, x.reshape(u.input_shape), f, cols.reshape(f.operands()[0])


def assert_fold_matches(out, spec, cols):
    """Within 2 * (taps + 1) * eps_acc * fold(|cols|) plus one rounding of the stored result."""
    assert out.dtype == np.dtype(spec.dtype) and out.shape == spec.output_layout
    ref = oracle.fold64(spec, cols)
    mag = oracle.fold64(spec, np.abs(cols.astype(np.float64)))
    tol = (2 * (spec.window_elems + 1) * _ACC_EPS[spec.dtype] + float(np.finfo(spec.dtype).eps)) * mag \
        + np.finfo(spec.dtype).tiny
    assert_within(out.astype(np.float64), ref, tol, spec)
    if spec.dtype == "float64":     # the oracle's order and type: bitwise
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_kernels_match_oracle(target, case, dtype):
    u, x, f, cols = _problem(case, dtype)
    col = run_family(target, "fold", u, (x,))
    assert col.dtype == np.dtype(dtype) and col.shape == u.output_layout
    np.testing.assert_array_equal(col, oracle.unfold(u, x))
    assert_fold_matches(run_family(target, "fold", f, (cols,)), f, cols)


def test_cases_reach_what_they_claim():
    u, _, _, _ = _problem("2d_stride_beyond_kernel", "float32")
    assert u.stride_h > u.R and u.stride_w > u.S and u.is_padded
    u, _, _, _ = _problem("2d_overlap", "float32")
    assert u.N * u.col_rows * u.L > 2 * L.BLOCK_1D       # several thread blocks
    u, _, f, _ = _problem("3d", "float32")
    assert u.is_3d and f.is_3d and u.pad_front != u.pad_back
    assert f.spatial_dims == 3 and not _problem("3d_unbatched", "float32")[2].batched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["2d_strided_dilated_asym", "3d"])
def test_int64_index_instantiations(target, index64, case, dtype):
    u, x, f, cols = _problem(case, dtype, seed=1)
    for spec in (u, f):
        assert all(", long long>" in lc.kernel for lc in FAMILY.plan(spec).launches)
    np.testing.assert_array_equal(run_family(target, "fold", u, (x,)), oracle.unfold(u, x))
    assert_fold_matches(run_family(target, "fold", f, (cols,)), f, cols)


@pytest.mark.parametrize("case", ["2d_overlap", "3d"])
def test_results_do_not_depend_on_the_thread_order(case):
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    u, x, f, cols = _problem(case, "float32", seed=2)
    orders = ("forward", "reverse", "random")
    outs = [run_plan(("cuda-emu", order), f, FAMILY.plan(f), (cols,), seed=9) for order in orders]
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
    col = [run_plan(("cuda-emu", order), u, FAMILY.plan(u), (x,), seed=9) for order in orders]
    assert all(np.array_equal(o, col[0]) for o in col[1:])


# ---------------------------------------------------------------------------------------------------
# FoldParams: the struct fold.cu declares against its Python twin
# ---------------------------------------------------------------------------------------------------
def _probe_source() -> str:
    fields = F.FOLD_PARAMS_FIELDS
    lines = ['#include "fold.cu"', 'extern "C" __global__ void layout_FoldParams(long long* out) {',
             "  out[0] = sizeof(FoldParams);"]
    lines += [f"  out[{i + 1}] = __builtin_offsetof(FoldParams, {f});" for i, f in enumerate(fields)]
    lines += ["}", 'extern "C" __global__ void echo_FoldParams(const FoldParams p, long long* out) {']
    lines += [f"  out[{i}] = p.{f};" for i, f in enumerate(fields)]
    return "\n".join(lines + ["}"]) + "\n"


def test_params_layout_matches_cxx_and_round_trips():
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    from fastconv.emu import EmuModule
    mod = EmuModule(code=_probe_source(), include_dirs=(L.kernels_dir(),))
    fields, dtype = F.FOLD_PARAMS_FIELDS, F.FOLD_PARAMS_DTYPE
    out = np.full(len(fields) + 1, -1, dtype=np.int64)
    mod.get_function("layout_FoldParams")((1, 1, 1), (1, 1, 1), (out,))
    assert out[0] == dtype.itemsize and out[1:].tolist() == [dtype.fields[f][1] for f in fields]
    u, _, _, _ = _problem("3d", "float32")
    params = F.fold_params(u)
    echo = np.full(len(fields), -1, dtype=np.int64)
    mod.get_function("echo_FoldParams")((1, 1, 1), (1, 1, 1), (params, echo))
    assert dict(zip(fields, echo.tolist())) == {f: int(getattr(u, f)) for f in fields}
    distinct = np.array(tuple(100 + i for i in range(len(fields))), dtype=dtype)   # every field its own value
    mod.get_function("echo_FoldParams")((1, 1, 1), (1, 1, 1), (distinct, echo))
    assert echo.tolist() == [100 + i for i in range(len(fields))]


def test_device_compiler_agrees_on_params_layout():
    from .test_compile import nvrtc_for
    compiler = nvrtc_for("sm_90")
    fields, dtype = F.FOLD_PARAMS_FIELDS, F.FOLD_PARAMS_DTYPE
    offsets = [dtype.fields[f][1] for f in fields]
    lines = ['#include "fold.cu"', f'static_assert(sizeof(FoldParams) == {dtype.itemsize}, "sizeof");',
             f"constexpr FoldParams probe{{{', '.join(map(str, offsets))}}};"]
    lines += [f'static_assert(probe.{f} == {o} && sizeof(probe.{f}) == 4, "FoldParams.{f}");'
              for f, o in zip(fields, offsets)]
    ok, log, _ = compiler.compile("\n".join(lines) + "\n", "fold_layout_probe.cu", "compute_90", (),
                                  (L.kernels_dir(),))
    assert ok, f"NVRTC {compiler.version} disagrees with FOLD_PARAMS_FIELDS:\n{log}"


# ---------------------------------------------------------------------------------------------------
# Limits, versions, index type (specs of arrays that take no memory)
# ---------------------------------------------------------------------------------------------------
def fake(shape, dtype="float32"):
    return np.broadcast_to(np.zeros((), dtype), shape)


def test_reasons_plans_and_versions():
    u, _, f, _ = _problem("2d_overlap", "float32")
    assert FAMILY.reasons(u) == [] and FAMILY.reasons(f) == []
    assert FAMILY.OPS == ("unfold", "fold") and FAMILY.SPATIAL_DIMS == (1, 2, 3) and not FAMILY.ZERO_FILLS_PADDING
    assert [lc.kernel for lc in FAMILY.plan(u).launches] == ["unfold_v1<float, int>"]
    assert [lc.kernel for lc in FAMILY.plan(f).launches] == ["fold_v1<float, int>"]
    with pytest.raises(ValueError, match="one variant"):
        FAMILY.plan(u, "x")
    with pytest.raises(ValueError, match="no unfold kernel version 2"):
        FAMILY.plan(u, "", 2)
    # the padded extent along an axis, the taps of a block and each struct field stay 32-bit: reasons
    long_row = unfold_spec(fake((1, 1, 1, 2**31 - 8)), (1, 3), padding=((0, 0), (4, 4)))
    assert any("padded width" in r for r in FAMILY.reasons(long_row))
    huge_block = unfold_spec(fake((1, 1, 2**16, 2**16)), (2**16, 2**15 + 1), padding=((0, 0), (2**14, 2**14)))
    assert any("tap counter" in r for r in FAMILY.reasons(huge_block))
    wide = unfold_spec(fake((1, 1, 2**31 + 4)), (1,))
    assert any("32-bit parameter fields" in r for r in FAMILY.reasons(wide))
    with pytest.raises(ValueError, match="32-bit"):
        _dispatch.select(long_row, "cuda-emu")
    ok = unfold_spec(fake((1, 1, 1, 2**31 - 9)), (1, 3), padding=((0, 0), (4, 4)))
    assert FAMILY.reasons(ok) == []


def _index_types(spec):
    return {lc.kernel.split("<", 1)[1].split(",")[1].strip(" >") for lc in FAMILY.plan(spec).launches}


@pytest.mark.parametrize("op", ["unfold", "fold"])
def test_index_type_switches_at_2_pow_31_elements(op):
    """The column matrix or the image, whichever is the bigger: 2^31 - 1 elements index in int, more in long
    long; max_elements counts every operand and buffer of the plan."""
    def spec_of(xshape, k, **kw):
        u = unfold_spec(fake(xshape), k, **kw)
        if op == "unfold":
            return u
        return fold_spec(fake(u.output_shape), xshape[-len(k):] if isinstance(k, tuple) else xshape[-2:], k, **kw)
    pairs = [(spec_of((1, 1, INT32_MAX), (1,)), spec_of((2, 1, 2**30), (1,))),              # image and col alike
             (spec_of((1, 1, INT32_MAX // 3), (3,), padding=1), spec_of((1, 1, 2**29 + 1), (4,), padding=2))]
    for small, big in pairs:
        for spec in (small, big):
            sizes = [math.prod(s) for s in spec.operands() + (spec.output_layout,)]
            sizes += [math.prod(b.shape) for b in FAMILY.plan(spec).buffers]
            assert max(sizes) == spec.max_elements()
        assert small.max_elements() <= INT32_MAX < big.max_elements()
        assert _index_types(small) == {"int"} and _index_types(big) == {"long long"}
    # the column matrix alone past 2^31 (the image far below): 4 taps of a 2^29 + 1 row with padding 2
    big = pairs[1][1]
    assert math.prod(big.input_shape) < INT32_MAX < big.N * big.col_rows * big.L


# ---------------------------------------------------------------------------------------------------
# The public API, and backend "cuda"'s launch path over the CuPy shim
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_unfold_and_fold(backend, dtype):
    rng = np.random.default_rng(13)
    for shape, kw in (((2, 3, 7, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=((1, 2), 1), dilation=(1, 2))),
                      ((3, 10), dict(kernel_size=(3,), stride=(2,), padding=(1,))),
                      ((1, 2, 3, 4, 5), dict(kernel_size=(2, 2, 2), padding=1))):
        x = rand(rng, shape, dtype)
        nd = len(kw["kernel_size"])
        col = public(backend, fastconv.unfold, x, **kw)
        ref = fastconv.unfold(x, backend="numpy", **kw)
        assert col.dtype == np.dtype(dtype) and col.shape == ref.shape
        np.testing.assert_array_equal(col, ref)
        out = public(backend, fastconv.fold, col, shape[-nd:], **kw)
        spec = fold_spec(col, shape[-nd:], **kw)
        assert out.shape == x.shape
        assert_fold_matches(out.reshape(spec.output_layout), spec, col.reshape(spec.operands()[0]))
        assert _dispatch.select(spec, backend).name == f"{backend}:fold:direct"


def test_plans_through_the_cuda_backend_module(cuda_shim):
    """The "cuda" backend's execute (RawModule compile, cupy.empty buffers, launches) runs both plans here
    through tests/cuda/cupy_shim.py; on a GPU the target fixture runs them for real."""
    from . import cupy_shim
    u, x, f, cols = _problem("3d", "float16")
    col = cuda_shim.execute(FAMILY.plan(u), {"x": cupy_shim.asarray(x)})
    assert type(col) is cupy_shim.ndarray
    np.testing.assert_array_equal(col.get(), oracle.unfold(u, x))
    out = cuda_shim.execute(FAMILY.plan(f), {"cols": cupy_shim.asarray(cols)})
    assert_fold_matches(out.get(), f, cols)
    y = fastconv.fold(cupy_shim.asarray(cols), (5, 4, 6), **CASES["3d"][1])     # backend "cuda" by array type
    assert type(y) is cupy_shim.ndarray and y.shape == (1, 2, 5, 4, 6)
