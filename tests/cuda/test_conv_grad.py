"""Families ``conv_dgrad`` (op conv_input: the data gradient and conv_transpose; kernels/conv_dgrad.cu) and
``conv_wgrad`` (op conv_weight; kernels/conv_wgrad.cu): every kernel version, tile and split-K variant and
dtype against the oracle (numpy_oracle.conv_input64 / conv_weight64), on the emulator in three thread orders
and on the GPU when there is one; int64 indices; non-finite operands meeting the staged zeros; the plans'
geometry; a small derandomized fuzz; the public API (fastconv.grad, fastconv.conv_transpose*d).

Cases aim at the kernels' edges: stride phases with no tap at all (dx = bias), strides and dilations sharing a
factor (gcd > 1), asymmetric padding, groups and depthwise, 1x1, 1-D, a transposed convolution with
output_padding (dx rows no dy reaches), channel counts and GEMM_K not multiples of the tiles, GEMM_K = N*P*Q
cut into uneven split-K chunks. Expected values come only from the oracle; tolerances scale with the
reduction length (fastconv.testing.grad_tolerance).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv._spec import conv_input_spec, conv_transpose_spec, conv_weight_spec
from fastconv.testing import assert_grad_close

from .common import DTYPES, fuzz_examples, fuzz_long, oracle, public, rand, run_plan

DGRAD = _cuda.family("conv_dgrad")
WGRAD = _cuda.family("conv_wgrad")


# ---------------------------------------------------------------------------------------------------
# Against the oracle with fastconv.testing's gradient tolerance; kernel results are in the backend layout
# ---------------------------------------------------------------------------------------------------
def assert_dgrad_close(out, spec, dy, w, b=None):
    assert out.shape == spec.output_layout and out.dtype == np.dtype(spec.dtype)
    with np.errstate(invalid="ignore"):          # inf - inf where a non-finite weight is involved
        assert_grad_close(out.reshape(spec.output_shape), spec, dy, w, b)


def assert_wgrad_close(out, spec, x, dy):
    assert out.shape == spec.output_layout and out.dtype == np.dtype(spec.dtype)
    with np.errstate(invalid="ignore"):
        assert_grad_close(out.reshape(spec.output_shape), spec, x, dy)


# ---------------------------------------------------------------------------------------------------
# Cases: name -> (forward x shape, w shape, conv kwargs, spatial dims), or a transposed convolution
# ---------------------------------------------------------------------------------------------------
GRAD_CASES = {
    "basic": ((2, 4, 9, 11), (6, 4, 3, 3), dict(padding=1), 2),
    # stride 2 rows with dilation 1, stride 1 columns with dilation 2; asymmetric padding; 2 groups
    "strided_asym_dilated_groups": ((2, 4, 9, 11), (6, 2, 3, 3),
                                    dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2), 2),
    # gcd(stride, dilation) = 2 in rows: half the row phases get no tap at all (dx = 0 there)
    "shared_factor": ((2, 3, 13, 12), (5, 3, 4, 4), dict(stride=(2, 3), dilation=(2, 3), padding=2), 2),
    "depthwise": ((1, 4, 10, 10), (8, 1, 3, 3), dict(padding=1, groups=4), 2),
    # K = 70, C = 19: neither a multiple of any tile; stride 3 > the dilated filter's rows
    "multi_tile": ((1, 19, 17, 23), (70, 19, 2, 3), dict(stride=3, padding=((0, 1), (1, 1)), dilation=2), 2),
    "pointwise_strided": ((2, 17, 9, 9), (33, 17, 1, 1), dict(stride=2), 2),
    "conv1d": ((2, 3, 20), (5, 3, 5), dict(stride=2, padding=2), 1),
}
#: name -> (x (N, C_in, H, W), w (C_in, C_out/groups, R, S), conv_transpose kwargs, spatial dims)
TRANSPOSE_CASES = {
    # output_padding: the last dx row and column are reached by no dy (bias only)
    "transpose_output_padding": ((2, 6, 5, 4), (6, 2, 3, 3),
                                 dict(stride=2, padding=1, output_padding=1, groups=3), 2),
    "transpose_dilated_1d": ((1, 4, 7), (4, 3, 3), dict(stride=3, padding=((2, 0),), output_padding=2, dilation=2), 1),
}
DGRAD_CASES = list(GRAD_CASES) + list(TRANSPOSE_CASES)


def dgrad_problem(case, dtype, seed=0, bias=True):
    """(spec, (dy, w, b)) in the backend layout."""
    rng = np.random.default_rng(seed)
    if case in TRANSPOSE_CASES:
        xs, ws, kw, nd = TRANSPOSE_CASES[case]
        x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
        b = rand(rng, (ws[1] * kw.get("groups", 1),), dtype) if bias else None
        spec = conv_transpose_spec(x, w, b, spatial_dims=nd, **kw)
        return spec, (x.reshape(spec.operands()[0]), w.reshape(spec.weight_shape), b)
    xs, ws, kw, nd = GRAD_CASES[case]
    w = rand(rng, ws, dtype)
    fwd = fastconv.conv_spec(np.zeros(xs, dtype), w, spatial_dims=nd, **kw)
    dy = rand(rng, fwd.output_shape, dtype)
    spec = conv_input_spec(xs, w, dy, spatial_dims=nd, **kw)
    b = None
    if bias:   # the data gradient has no bias; conv_transpose's bias (C,) goes through the same kernels
        spec = dataclasses.replace(spec, has_bias=True)
        b = rand(rng, (spec.C,), dtype)
    return spec, (dy.reshape(spec.operands()[0]), w.reshape(spec.weight_shape), b)


def wgrad_problem(case, dtype, seed=0):
    """(spec, (x, dy)) in the backend layout."""
    rng = np.random.default_rng(seed)
    xs, ws, kw, nd = GRAD_CASES[case]
    x = rand(rng, xs, dtype)
    fwd = fastconv.conv_spec(x, np.zeros(ws, dtype), spatial_dims=nd, **kw)
    dy = rand(rng, fwd.output_shape, dtype)
    spec = conv_weight_spec(x, ws, dy, spatial_dims=nd, **kw)
    return spec, (x.reshape(spec.input_shape), dy.reshape(spec.operands()[1]))


def _dgrad_kernels():
    """(version, variant) of every dgrad kernel: v1, then v2 in every tile ("gather", the fallback, is v1)."""
    return [(1, DGRAD.VARIANTS[0])] + [(2, v) for v in DGRAD.TILES]


def _with_dtypes(kernels, fam):
    """pytest params (kernel..., dtype) for every dtype the kernel's tile has (float64 only on F64_TILES;
    test_float64_runs_only_its_tiles_and_auto_takes_it checks the refusal of the others)."""
    out = []
    for k in kernels:
        version, variant = k if isinstance(k, tuple) else (None, k)
        tile = variant.partition("-k")[0]
        for dt in DTYPES:
            if dt == "float64" and version != 1 and tile not in fam.F64_TILES:
                continue
            out.append(pytest.param(*(k if isinstance(k, tuple) else (k,)), dt,
                                    id="-".join(([f"v{version}"] if version else []) + [variant, dt])))
    return out


# ---------------------------------------------------------------------------------------------------
# conv_dgrad
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", DGRAD_CASES)
@pytest.mark.parametrize("version,variant,dtype", _with_dtypes(_dgrad_kernels(), DGRAD))
def test_dgrad_matches_oracle(target, version, variant, case, dtype):
    spec, arrays = dgrad_problem(case, dtype)
    assert version == 1 or DGRAD.reasons(spec, variant) == []
    out = run_plan(target, spec, DGRAD.plan(spec, variant, version), arrays)
    assert_dgrad_close(out, spec, *arrays)


@pytest.mark.parametrize("version,variant", _dgrad_kernels(), ids=lambda v: f"v{v}" if isinstance(v, int) else v)
def test_dgrad_int64_index(target, index64, version, variant):
    spec, arrays = dgrad_problem("strided_asym_dilated_groups", "float32", seed=1)
    plan = DGRAD.plan(spec, variant, version)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    assert_dgrad_close(run_plan(target, spec, plan, arrays), spec, *arrays)


@pytest.mark.parametrize("version,variant", _dgrad_kernels(), ids=lambda v: f"v{v}" if isinstance(v, int) else v)
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_dgrad_nonfinite_weight_meets_no_missing_term(target, version, variant, bad):
    """Unpadded and strided: the dx border and the positions a stride skips have terms that do not exist
    for some taps. A non-finite weight at such a tap must not reach them (the staged zeros of v2 would give
    NaN; the block's exact recomputation restores the definition)."""
    rng = np.random.default_rng(3)
    w = rand(rng, (5, 3, 3, 3), "float32")
    w[2, 1, 0, 0] = bad                  # tap (0, 0) reaches dx row h only from p = h / 2 (even h)
    dy = rand(rng, (2, 5, 4, 5), "float32")
    spec = conv_input_spec((2, 3, 9, 11), w, dy, stride=2)
    ref = oracle.conv_input64(spec, dy, w)
    assert np.isfinite(ref[:, 1, 1::2, :]).all() and not np.isfinite(ref[:, 1, 0:8:2, 0:10:2]).any()
    assert np.isfinite(ref[:, 0]).all() and np.isfinite(ref[:, 2]).all()
    out = run_plan(target, spec, DGRAD.plan(spec, variant, version), (dy, w, None))
    assert_dgrad_close(out, spec, dy, w)


def test_dgrad_phase_grid_and_tiles_come_from_the_family():
    """One launch: groups x stride phases (at most the dx extent per axis) x m tiles of the largest phase
    x channel tiles; the name expression carries the tile and the block follows from it."""
    spec, _ = dgrad_problem("multi_tile", "float32")   # H, W = 17, 23; stride 3; C = 19
    assert DGRAD.phases(spec) == (3, 3) and DGRAD.phase_rows(spec) == 1 * 6 * 8
    for name, (bm, bn, bk, tm, tn, minb) in DGRAD.TILES.items():
        (lc,) = DGRAD.plan(spec, name).launches
        assert lc.kernel == f"conv_dgrad_v2<float, int, {bm}, {bn}, {bk}, {tm}, {tn}, {minb}>"
        assert lc.block == ((bm // tm) * (bn // tn), 1, 1)
        assert lc.grid[0] == 1 * 9 * -(-48 // bm) * -(-19 // bn)
    big_stride = conv_input_spec((1, 2, 3, 4), np.zeros((2, 2, 1, 1)), np.zeros((1, 2, 1, 1)), stride=8)
    assert DGRAD.phases(big_stride) == (3, 4)           # no phase without a dx position
    (v1,) = DGRAD.plan(spec, version=1).launches
    assert v1.kernel == "conv_dgrad_v1<float, int>" and v1.grid[0] == -(-(19 * 17 * 23) // 256)
    with pytest.raises(ValueError, match="variant must be one of"):
        DGRAD.plan(spec, "32x32")
    assert DGRAD.reasons(spec, "32x32") and WGRAD.reasons(spec, "32x32")     # a reason, never a raise


# ---------------------------------------------------------------------------------------------------
# conv_wgrad
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(GRAD_CASES))
@pytest.mark.parametrize("variant,dtype", _with_dtypes(WGRAD.VARIANTS, WGRAD))
def test_wgrad_matches_oracle(target, variant, case, dtype):
    spec, arrays = wgrad_problem(case, dtype)
    assert WGRAD.reasons(spec, variant) == []
    out = run_plan(target, spec, WGRAD.plan(spec, variant), arrays)
    assert_wgrad_close(out, spec, *arrays)


@pytest.mark.parametrize("variant", WGRAD.VARIANTS)
def test_wgrad_int64_index(target, index64, variant):
    spec, arrays = wgrad_problem("strided_asym_dilated_groups", "float32", seed=1)
    plan = WGRAD.plan(spec, variant)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    assert_wgrad_close(run_plan(target, spec, plan, arrays), spec, *arrays)


@pytest.mark.parametrize("variant", WGRAD.VARIANTS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_wgrad_nonfinite_dy_meeting_padding_is_skipped(target, variant, bad):
    """fastconv's rule: a padded tap contributes nothing, so a non-finite dy at a corner output reaches only
    the weight taps that land inside the input for it; the staged zeros would give NaN at the others, and the
    kernel's exact recomputation restores the oracle's answer (per split for the split-K variants)."""
    spec, (x, dy) = wgrad_problem("basic", "float32", seed=2)
    dy = dy.copy()
    dy[1, 3, 0, 0] = bad         # output (0, 0): taps r = 0 or s = 0 are in the padding
    ref = oracle.conv_weight64(spec, x, dy)
    assert np.isfinite(ref[3, :, 0, :]).all() and not np.isfinite(ref[3, :, 1:, 1:]).any()
    out = run_plan(target, spec, WGRAD.plan(spec, variant), (x, dy))
    assert_wgrad_close(out, spec, x, dy)


def test_wgrad_nan_input_reaches_only_its_taps(target):
    spec, (x, dy) = wgrad_problem("depthwise", "float32", seed=4)
    x = x.copy()
    x[0, 2, 0, 5] = np.nan       # row 0 of channel 2: read by taps r = 0, 1 (pad 1) of filters 4, 5
    ref = oracle.conv_weight64(spec, x, dy)
    assert np.isnan(ref).sum() == 2 * 2 * 3
    out = run_plan(target, spec, WGRAD.plan(spec, WGRAD.VARIANTS[-1]), (x, dy))
    assert_wgrad_close(out, spec, x, dy)


def test_wgrad_split_k_plan_covers_gemm_k_without_empty_splits():
    """GEMM_K = N*P*Q = 2*9*11 = 198 is 13 k steps of 16: k4 -> 4 chunks of 4 steps (the last one short),
    k16 -> 13 chunks of 1 (never an empty split), each followed by the in-order reduction; unsplit, one
    launch writes dw itself."""
    spec, _ = wgrad_problem("basic", "float32")
    for variant, splits, chunk in [("64x64-k4", 4, 64), ("64x64-k16", 13, 16), ("128x64-k4", 4, 64)]:
        main, red = WGRAD.plan(spec, variant).launches
        assert main.grid[1] == splits and int(main.args[1]) == chunk and (splits - 1) * chunk < 198 <= splits * chunk
        assert red.kernel.startswith("wgrad_splitk_reduce_v1<") and int(red.args[1]) == splits
        assert red.grid[0] == -(-(6 * 4 * 3 * 3) // 256)
    (only,) = WGRAD.plan(spec, "64x64").launches
    assert only.grid == (1, 1, 1) and only.kernel == "conv_wgrad_v1<float, int, 64, 64, 16, 4, 4, 2>"
    tiny = conv_weight_spec(np.zeros((1, 1, 2, 2), np.float32), (1, 1, 1, 1), np.zeros((1, 1, 2, 2), np.float32))
    assert len(WGRAD.plan(tiny, "64x64-k16").launches) == 1     # 4 positions: one k step cannot split


def test_float64_runs_only_its_tiles_and_auto_takes_it():
    spec, _ = wgrad_problem("basic", "float64")
    assert any("dtype float64" in r for r in WGRAD.reasons(spec, "128x64"))
    assert WGRAD.reasons(spec, "64x64") == [] and WGRAD.reasons(spec, "64x64-k4") == []
    dspec, _ = dgrad_problem("basic", "float64")
    assert any("dtype float64" in r for r in DGRAD.reasons(dspec, "128x64"))
    assert DGRAD.reasons(dspec, "64x64") == [] and DGRAD.reasons(dspec, "128x16") == []
    if _dispatch.availability("cuda-emu") is None:
        assert _dispatch.select(spec, "cuda-emu").name == "cuda-emu:conv_weight:implicit_gemm/64x64"
        assert _dispatch.select(dspec, "cuda-emu").name == "cuda-emu:conv_input:implicit_gemm/64x64"


def _fake(shape):
    return np.broadcast_to(np.zeros((), np.float32), shape)


def test_extents_beyond_the_kernels_int_counters_are_refused_with_reasons():
    wide = conv_weight_spec(_fake((1, 2**17, 1, 2**13)), (1, 2**17, 1, 2**13), _fake((1, 1, 1, 2**13)),
                            padding=((0, 0), (2**12, 2**12 - 1)))
    assert any("GEMM_N" in r for r in WGRAD.reasons(wide))
    taps = conv_input_spec((1, 1, 1, 2**13), _fake((2**17, 1, 1, 2**13)), _fake((1, 2**17, 1, 2**13)),
                           padding=((0, 0), (2**12, 2**12 - 1)))
    assert any("GEMM_K" in r for r in DGRAD.reasons(taps))
    row = conv_input_spec((1, 1, 1, 2**31 - 2), _fake((1, 1, 1, 1)), _fake((1, 1, 1, 2**30)), stride=2,
                          padding=((0, 0), (0, 1)))
    assert any("32-bit coordinates" in r for r in DGRAD.reasons(row))
    ok, _ = dgrad_problem("basic", "float32")
    assert DGRAD.reasons(ok) == [] and DGRAD.plan(ok).reasons() == []


def test_results_are_bitwise_reproducible_across_thread_orders():
    """No atomics, a fixed summation order: the same plan gives the same bits in every thread order and
    seed (the split-K partial sums are reduced in split order, whichever block finished first)."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("the emulator is unavailable here")
    wspec, warrays = wgrad_problem("multi_tile", "float32", seed=5)
    dspec, darrays = dgrad_problem("shared_factor", "float32", seed=5)
    for spec, fam, variant, arrays in [(wspec, WGRAD, "64x64-k16", warrays), (wspec, WGRAD, "128x64-k4", warrays),
                                       (dspec, DGRAD, "64x64", darrays)]:
        plan = fam.plan(spec, variant)
        runs = [run_plan(("cuda-emu", order), spec, plan, arrays, seed=seed)
                for order, seed in [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]]
        assert all(np.array_equal(runs[0], r) for r in runs[1:]), variant


@pytest.mark.parametrize("guard", ["end", "start"])
def test_no_access_outside_any_buffer(monkeypatch, guard):
    """Guarded buffers (every array argument ends, or starts, at an unmapped page: one element out of bounds
    faults): every kernel on cases with partial tiles, stride phases without taps, output_padding, splits."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("the emulator is unavailable here")
    monkeypatch.setenv("FASTCONV_EMU_GUARD", guard)
    for case in ("multi_tile", "shared_factor", "transpose_output_padding", "conv1d"):
        spec, arrays = dgrad_problem(case, "float32", seed=6)
        for version, variant in _dgrad_kernels():
            out = run_plan(("cuda-emu", "random"), spec, DGRAD.plan(spec, variant, version), arrays)
            assert_dgrad_close(out, spec, *arrays)
    for case in ("multi_tile", "shared_factor", "conv1d"):
        spec, arrays = wgrad_problem(case, "float32", seed=6)
        for variant in WGRAD.VARIANTS:
            out = run_plan(("cuda-emu", "random"), spec, WGRAD.plan(spec, variant), arrays)
            assert_wgrad_close(out, spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_grad_and_conv_transpose(backend, dtype):
    rng = np.random.default_rng(7)
    x, w = rand(rng, (2, 4, 7, 8), dtype), rand(rng, (6, 2, 3, 3), dtype)
    kw = dict(stride=(1, 2), padding=((1, 1), (0, 2)), groups=2)
    dy = rand(rng, fastconv.conv_spec(x, w, **kw).output_shape, dtype)

    dx = public(backend, lambda d, **k: fastconv.grad.conv2d_input(x.shape, w, d, **kw, **k), dy)
    spec = conv_input_spec(x.shape, w, dy, **kw)
    assert dx.shape == x.shape
    assert_dgrad_close(dx, spec, dy, w)

    dw = public(backend, lambda xx, d, **k: fastconv.grad.conv2d_weight(xx, w.shape, d, **kw, **k), x, dy)
    assert dw.shape == w.shape
    assert_wgrad_close(dw, conv_weight_spec(x, w.shape, dy, **kw), x, dy)

    wt, bt = rand(rng, (4, 3, 3, 2), dtype), rand(rng, (6,), dtype)
    tkw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2))
    y = public(backend, fastconv.conv_transpose2d, x, wt, bt, **tkw)
    tspec = conv_transpose_spec(x, wt, bt, **tkw)
    assert y.shape == tspec.output_shape == (2, 6, 14, 16)
    assert_dgrad_close(y, tspec, x, wt, bt)

    x1, w1 = rand(rng, (3, 12), dtype), rand(rng, (4, 3, 3), dtype)       # unbatched 1-D
    dy1 = rand(rng, (4, 12), dtype)
    dx1 = public(backend, lambda d, **k: fastconv.grad.conv1d_input(x1.shape, w1, d, padding="same", **k), dy1)
    s1 = conv_input_spec(x1.shape, w1, dy1, padding="same", spatial_dims=1)
    assert dx1.shape == x1.shape
    assert_dgrad_close(dx1.reshape(s1.output_layout), s1, dy1.reshape(s1.operands()[0]), w1.reshape(s1.weight_shape))
    dw1 = public(backend, lambda xx, d, **k: fastconv.grad.conv1d_weight(xx, w1.shape, d, padding="same", **k), x1, dy1)
    sw1 = conv_weight_spec(x1, w1.shape, dy1, padding="same", spatial_dims=1)
    assert dw1.shape == w1.shape
    assert_wgrad_close(dw1.reshape(sw1.output_layout), sw1, x1.reshape(sw1.input_shape), dy1.reshape(sw1.operands()[1]))


def test_public_names_the_kernel_that_runs(backend):
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    dy = np.ones((1, 3, 3, 3), np.float32)
    # algo="direct" names the gather (a fallback: auto runs it only where no tile takes the problem)
    dx = public(backend, lambda d, **k: fastconv.grad.conv2d_input(x.shape, w, d, **k), dy, algo="direct")
    spec = conv_input_spec(x.shape, w, dy)
    assert _dispatch.select(spec, backend, "direct").name == f"{backend}:conv_input:direct/gather"
    assert_grad_close(dx, spec, dy, w, None)
    for spec in (conv_input_spec(x.shape, w, dy), conv_weight_spec(x, w.shape, dy)):
        assert _dispatch.select(spec, backend).name.startswith(f"{backend}:{spec.op}:implicit_gemm/")


# ---------------------------------------------------------------------------------------------------
# Drawn problems, every kernel (derandomized, bounded)
# ---------------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_LONG = fuzz_long()


@st.composite
def grad_problems(draw):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    C, K = g * draw(st.integers(1, 5)), g * draw(st.integers(1, 20 if _FUZZ_LONG else 6))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kw = dict(stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
              dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
              padding=tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2)), groups=g)
    top = 40 if _FUZZ_LONG else 12
    shape = (draw(st.integers(1, 3)), C, draw(st.integers(1, top)), draw(st.integers(1, top)))
    return (shape, (K, C // g, R, S), kw, draw(st.sampled_from(DTYPES)),
            draw(st.sampled_from(["plain", "plain", "nonfinite"])), draw(st.integers(0, 2**31)))


def _drawn(problem):
    xs, ws, kw, dtype, special, seed = problem
    try:
        fastconv.conv_spec(_fake(xs), _fake(ws), **kw)
    except ValueError:
        assume(False)   # an empty output
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("the emulator is unavailable here")
    return xs, ws, kw, dtype, special, np.random.default_rng(seed)


@settings(max_examples=fuzz_examples(ci=40, long=2000), deadline=None, derandomize=not _FUZZ_LONG, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(grad_problems(), st.sampled_from(_dgrad_kernels()), st.booleans())
def test_dgrad_on_drawn_problems(problem, kernel, bias):
    xs, ws, kw, dtype, special, rng = _drawn(problem)
    version, variant = kernel
    w = rand(rng, ws, dtype)
    dy = rand(rng, fastconv.conv_spec(_fake(xs), _fake(ws), **kw).output_shape, dtype)
    spec = conv_input_spec(xs, w, dy, **kw)
    b = rand(rng, (spec.C,), dtype) if bias else None
    spec = dataclasses.replace(spec, has_bias=bias)
    assume(version == 1 or not DGRAD.reasons(spec, variant))
    if special == "nonfinite":
        w[tuple(rng.integers(0, d) for d in ws)] = rng.choice([np.inf, -np.inf, np.nan])
    out = run_plan(("cuda-emu", "random"), spec, DGRAD.plan(spec, variant, version), (dy, w, b),
                   seed=int(rng.integers(1 << 30)))
    assert_dgrad_close(out, spec, dy, w, b)


@settings(max_examples=fuzz_examples(ci=40, long=2000), deadline=None, derandomize=not _FUZZ_LONG, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(grad_problems(), st.sampled_from(WGRAD.VARIANTS))
def test_wgrad_on_drawn_problems(problem, variant):
    xs, ws, kw, dtype, special, rng = _drawn(problem)
    x = rand(rng, xs, dtype)
    dy = rand(rng, fastconv.conv_spec(_fake(xs), _fake(ws), **kw).output_shape, dtype)
    spec = conv_weight_spec(x, ws, dy, **kw)
    assume(not WGRAD.reasons(spec, variant))
    if special == "nonfinite":
        dy[tuple(rng.integers(0, d) for d in dy.shape)] = rng.choice([np.inf, -np.inf, np.nan])
    out = run_plan(("cuda-emu", "random"), spec, WGRAD.plan(spec, variant), (x, dy), seed=int(rng.integers(1 << 30)))
    assert_wgrad_close(out, spec, x, dy)
