"""The 3-D convolution families: ``conv3d_implicit_gemm`` and ``conv3d_direct`` (op conv), ``conv3d_dgrad``
(op conv_input: the data gradient and conv_transpose3d) and ``conv3d_wgrad`` (op conv_weight), every kernel,
tile and split-K variant and dtype against the oracle (numpy_oracle.conv64 / conv_input64 / conv_weight64), on
the emulator in three thread orders and on the GPU when there is one; int64 indices; non-finite operands
meeting the padding; the plans' geometry and limits; the Conv3dParams layout; the public API (fastconv.conv3d,
conv_transpose3d, grad.conv3d_input / conv3d_weight) and which kernel dispatch names.

Cases aim at the kernels' edges, kept small for the emulator: stride, dilation and asymmetric padding per axis,
groups and depthwise, 1x1x1 with filters past one tile, output positions past one tile with partial tiles,
strides whose phases no tap reaches (dx = bias), a transposed convolution with output_padding (dx positions no
dy reaches). Expected values come only from the oracle; tolerances scale with the reduction length
(fastconv.testing).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv._cuda import plan as L
from fastconv._spec import conv_input_spec, conv_transpose_spec, conv_weight_spec
from fastconv.testing import assert_conv_close, assert_grad_close

from .common import DTYPES, fuzz_examples, fuzz_long, oracle, public, rand, run_plan

IGEMM = _cuda.family("conv3d_implicit_gemm")
DIRECT = _cuda.family("conv3d_direct")
DGRAD = _cuda.family("conv3d_dgrad")
WGRAD = _cuda.family("conv3d_wgrad")


def _emu_or_skip():
    why = _dispatch.availability("cuda-emu")
    if why is not None:
        pytest.skip(f"the emulator is unavailable here: {why}")


def assert_fwd_close(out, spec, x, w, b):
    assert out.shape == spec.output_layout and out.dtype == np.dtype(spec.dtype)
    with np.errstate(invalid="ignore"):          # inf - inf where a non-finite weight is involved
        assert_conv_close(out, oracle.conv64(spec, x, w, b), spec, x, w, b)


def assert_dgrad_close(out, spec, dy, w, b=None):
    assert out.shape == spec.output_layout and out.dtype == np.dtype(spec.dtype)
    with np.errstate(invalid="ignore"):
        assert_grad_close(out.reshape(spec.output_shape), spec, dy, w, b)


def assert_wgrad_close(out, spec, x, dy):
    assert out.shape == spec.output_layout and out.dtype == np.dtype(spec.dtype)
    with np.errstate(invalid="ignore"):
        assert_grad_close(out.reshape(spec.output_shape), spec, x, dy)


# ---------------------------------------------------------------------------------------------------
# Cases: name -> (x shape, w shape, conv3d kwargs); the forward ones also say whether there is a bias
# ---------------------------------------------------------------------------------------------------
CASES = {
    "basic": ((2, 4, 5, 6, 7), (6, 4, 3, 3, 3), dict(padding=1)),
    # every axis its own stride, dilation and asymmetric padding; 2 groups
    "strided_asym_dilated_groups": ((1, 4, 7, 6, 9), (6, 2, 2, 3, 3),
                                    dict(stride=(2, 1, 2), padding=((1, 0), (0, 2), (2, 1)), dilation=(2, 1, 2),
                                         groups=2)),
    # depthwise with a channel multiplier of 2; strides sharing a factor with the dilation (phases no tap reaches)
    "depthwise_shared_factor": ((1, 3, 6, 5, 7), (6, 1, 3, 3, 3),
                                dict(padding=1, groups=3, stride=(2, 2, 3), dilation=(2, 2, 3))),
    # 1x1x1 with K = 70: past one 64-wide filter tile
    "pointwise": ((2, 5, 3, 4, 4), (70, 5, 1, 1, 1), dict()),
    # 660 output positions: several 64/128-row tiles, the last one partial; GEMM_K = 36, not a multiple of BK
    "multi_tile": ((1, 3, 6, 10, 11), (9, 3, 2, 2, 3), dict(padding=((0, 1), (1, 0), (1, 1)))),
}
#: name -> (x (N, C_in, D, H, W), w (C_in, C_out/groups, T, R, S), conv_transpose3d kwargs)
TRANSPOSE_CASES = {
    # output_padding: the last dx plane, row and column are reached by no dy (bias only)
    "transpose_output_padding": ((2, 6, 3, 4, 3), (6, 2, 3, 2, 3), dict(stride=2, padding=1, output_padding=1,
                                                                         groups=3)),
    "transpose_dilated": ((1, 4, 3, 2, 4), (4, 3, 2, 3, 2), dict(stride=(1, 3, 2), padding=((1, 0), (2, 0), (0, 1)),
                                                                 output_padding=(0, 2, 1), dilation=(2, 2, 1))),
}


def fwd_problem(case, dtype, seed=0, bias=True):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
    b = rand(rng, (ws[0],), dtype) if bias else None
    return fastconv.conv_spec(x, w, b, spatial_dims=3, **kw), (x, w, b)


def dgrad_problem(case, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    if case in TRANSPOSE_CASES:
        xs, ws, kw = TRANSPOSE_CASES[case]
        x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
        b = rand(rng, (ws[1] * kw.get("groups", 1),), dtype) if bias else None
        return conv_transpose_spec(x, w, b, spatial_dims=3, **kw), (x, w, b)
    xs, ws, kw = CASES[case]
    w = rand(rng, ws, dtype)
    dy = rand(rng, fastconv.conv_spec(np.zeros(xs, dtype), w, spatial_dims=3, **kw).output_shape, dtype)
    spec = conv_input_spec(xs, w, dy, spatial_dims=3, **kw)
    b = None
    if bias:   # the data gradient has no bias; conv_transpose3d's bias (C,) goes through the same kernel
        spec = dataclasses.replace(spec, has_bias=True)
        b = rand(rng, (spec.C,), dtype)
    return spec, (dy, w, b)


def wgrad_problem(case, dtype, seed=0):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, xs, dtype)
    dy = rand(rng, fastconv.conv_spec(x, np.zeros(ws, dtype), spatial_dims=3, **kw).output_shape, dtype)
    return conv_weight_spec(x, ws, dy, spatial_dims=3, **kw), (x, dy)


def _params(kernels, fam, dtypes=DTYPES):
    """pytest params (variant, dtype) for every dtype the variant's tile has (float64 only on F64_TILES)."""
    out = []
    for v in kernels:
        tile = v[len("3d-"):].partition("-k")[0]
        for dt in dtypes:
            if dt == "float64" and hasattr(fam, "F64_TILES") and tile not in fam.F64_TILES:
                continue
            out.append(pytest.param(v, dt, id=f"{v}-{dt}"))
    return out


FWD_KERNELS = [(IGEMM, v) for v in IGEMM.VARIANTS] + [(DIRECT, "3d")]


# ---------------------------------------------------------------------------------------------------
# conv: the implicit GEMM and the direct kernel
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fam,variant", [pytest.param(f, v, id=f"{f.ALGO}-{v}") for f, v in FWD_KERNELS])
def test_conv_matches_oracle(target, fam, variant, case):
    spec, (x, w, b) = fwd_problem(case, "float32", bias=case != "depthwise_shared_factor")
    assert fam.reasons(spec, variant) == []
    assert_fwd_close(run_plan(target, spec, fam.plan(spec, variant), (x, w, b)), spec, x, w, b)


@pytest.mark.parametrize("variant,dtype", _params(IGEMM.VARIANTS, IGEMM, ("float16", "float64"))
                         + [pytest.param("3d", dt, id=f"direct-{dt}") for dt in ("float16", "float64")])
@pytest.mark.parametrize("case", ["strided_asym_dilated_groups", "multi_tile"])
def test_conv_half_and_double(variant, dtype, case):
    """float16 storage accumulates in float; float64 runs the 64x64 tile and the direct kernel."""
    _emu_or_skip()
    fam = DIRECT if variant == "3d" else IGEMM
    spec, (x, w, b) = fwd_problem(case, dtype, seed=3)
    out = run_plan(("cuda-emu", "random"), spec, fam.plan(spec, variant), (x, w, b))
    assert_fwd_close(out, spec, x, w, b)


@pytest.mark.parametrize("fam,variant", [pytest.param(f, v, id=f"{f.ALGO}-{v}") for f, v in FWD_KERNELS])
def test_conv_int64_index(target, index64, fam, variant):
    spec, (x, w, b) = fwd_problem("strided_asym_dilated_groups", "float32", seed=1)
    plan = fam.plan(spec, variant)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    assert_fwd_close(run_plan(target, spec, plan, (x, w, b)), spec, x, w, b)


@pytest.mark.parametrize("fam,variant", [pytest.param(f, v, id=f"{f.ALGO}-{v}") for f, v in FWD_KERNELS])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_conv_nonfinite_weight_meeting_padding_is_skipped(target, fam, variant, bad):
    """fastconv's rule: a padded tap contributes nothing. With an Inf weight at tap (0, 0, 0), the outputs
    whose first tap lies in the padding stay finite; the implicit GEMM's staged zeros would give NaN there,
    and its exact recomputation restores the oracle's answer."""
    spec, (x, w, b) = fwd_problem("basic", "float32", seed=2)
    w = w.copy()
    w[4, 1, 0, 0, 0] = bad
    ref = oracle.conv64(spec, x, w, b)
    assert np.isfinite(ref[:, 4, 0]).all() and not np.isfinite(ref[:, 4, 1:, 1:, 1:]).any()
    assert np.isfinite(ref[:, 5]).all()
    assert_fwd_close(run_plan(target, spec, fam.plan(spec, variant), (x, w, b)), spec, x, w, b)


def test_conv_plans_and_reasons():
    spec, _ = fwd_problem("multi_tile", "float32")       # M = 6*10*11 = 660, Kg = 9
    assert spec.gemm_m == 660 and spec.gemm_k == 36
    for tile, (bm, bn, bk, tm, tn, minb) in IGEMM.TILES.items():
        (lc,) = IGEMM.plan(spec, f"3d-{tile}").launches
        assert lc.kernel == f"conv3d_implicit_gemm_v1<float, int, {bm}, {bn}, {bk}, {tm}, {tn}, {minb}>"
        assert lc.block == ((bm // tm) * (bn // tn), 1, 1) and lc.grid == (-(-660 // bm), 1, 1)
        assert lc.args[0].dtype == L.CONV3D_PARAMS_DTYPE and int(lc.args[1]) == 40     # one chunk: all 5 k steps
    # split-K: GEMM_K = 36 is 5 k steps of 8; k2 -> 2 chunks of 3 steps, k4 -> 3 chunks of 2 (never an empty
    # split), each followed by the in-order reduction of N*K*Z*P*Q = 9*660 partial sums
    for variant, splits, chunk in [("3d-128x64-k2", 2, 24), ("3d-64x64-k4", 3, 16)]:
        main, red = IGEMM.plan(spec, variant).launches
        assert main.grid[1] == splits and int(main.args[1]) == chunk and (splits - 1) * chunk < 36 <= splits * chunk
        assert red.kernel == "conv3d_splitk_reduce_v1<float, int>" and int(red.args[1]) == splits
        assert red.grid[0] == -(-(9 * 660) // 256)
    (lc,) = DIRECT.plan(spec).launches
    assert lc.kernel == "conv3d_direct_v1<float, int>" and lc.grid[0] == -(-(9 * 660) // 256)
    spec64, _ = fwd_problem("basic", "float64")
    assert any("dtype float64" in r for r in IGEMM.reasons(spec64, "3d-128x64"))
    assert any("dtype float64" in r for r in IGEMM.reasons(spec64, "3d-128x64-k4"))
    assert IGEMM.reasons(spec64, "3d-64x64") == [] and IGEMM.reasons(spec64, "3d-64x64-k2") == []
    assert DIRECT.reasons(spec64) == []
    for fam in (IGEMM, DIRECT, DGRAD, WGRAD):
        assert fam.reasons(spec, "3d-32x32") and fam.SPATIAL_DIMS == (3,)        # a reason, never a raise
        with pytest.raises(ValueError, match="variant must be one of"):
            fam.plan(spec, "3d-32x32")


def _fake(shape):
    return np.broadcast_to(np.zeros((), np.float32), shape)


def test_extents_beyond_the_kernels_int_counters_are_refused_with_reasons():
    # a depth of 2^31 - 9 padded by 8: the padded extent reaches 2^31 - 1 (every family's coordinates are int)
    deep = fastconv.conv_spec(_fake((1, 1, 2**31 - 9, 1, 1)), _fake((1, 1, 1, 1, 1)), spatial_dims=3,
                              padding=((4, 4), (0, 0), (0, 0)))
    for fam in (IGEMM, DIRECT):
        assert any("padded depth extent" in r for v in fam.VARIANTS for r in fam.reasons(deep, v))
    # GEMM_K = C/groups*T*R*S = 2^30 (implicit GEMM) and GEMM_N of the weight gradient
    big = (1, 2**12, 4, 16, 2**12)          # C/groups*T*R*S = 2^30
    assert any("GEMM_K" in r for r in IGEMM.reasons(fastconv.conv_spec(_fake(big), _fake(big), spatial_dims=3)))
    wspec = conv_weight_spec(_fake(big), big, _fake((1, 1, 1, 1, 1)), spatial_dims=3)
    assert any("GEMM_N" in r for r in WGRAD.reasons(wspec))
    # 2^50 outputs: more blocks than a grid holds (the plan's own reason)
    huge = fastconv.conv_spec(_fake((2**20, 1, 2**10, 2**10, 2**10)), _fake((1, 1, 1, 1, 1)), spatial_dims=3)
    for fam in (IGEMM, DIRECT):
        assert fam.reasons(huge, fam.VARIANTS[0]) == []
        assert any("more than the grid allows" in r for r in fam.plan(huge, fam.VARIANTS[0]).reasons())
    ok, _ = fwd_problem("basic", "float32")
    assert all(IGEMM.reasons(ok, v) == [] for v in IGEMM.VARIANTS) and IGEMM.plan(ok).reasons() == []


# ---------------------------------------------------------------------------------------------------
# conv_input: the data gradient and conv_transpose3d
# ---------------------------------------------------------------------------------------------------
#: the tiled dgrad variants (v2; "3d-gather", the fallback, is v1)
DGRAD_TILED = tuple(f"3d-{t}" for t in DGRAD.TILES)
#: (version, variant) of every dgrad kernel: v1, then v2 in every tile
DGRAD_KERNELS = [pytest.param(1, DGRAD.VARIANTS[0], id="v1")] + [pytest.param(2, v, id=f"v2-{v}")
                                                                  for v in DGRAD_TILED]


@pytest.mark.parametrize("case", list(CASES) + list(TRANSPOSE_CASES))
@pytest.mark.parametrize("version,variant", DGRAD_KERNELS)
def test_dgrad_matches_oracle(target, version, variant, case):
    spec, (dy, w, b) = dgrad_problem(case, "float32", bias=case != "pointwise")
    assert DGRAD.reasons(spec, variant) == []
    out = run_plan(target, spec, DGRAD.plan(spec, variant, version), (dy, w, b))
    assert_dgrad_close(out, spec, dy, w, b)


@pytest.mark.parametrize("version,variant,dtype",
                         [pytest.param(1, "3d-64x64", dt, id=f"v1-{dt}") for dt in ("float16", "float64")]
                         + [pytest.param(2, *p.values, id=f"v2-{p.id}") for p in _params(DGRAD_TILED, DGRAD,
                                                                                       ("float16", "float64"))])
@pytest.mark.parametrize("case", ["depthwise_shared_factor", "transpose_output_padding"])
def test_dgrad_half_and_double(version, variant, dtype, case):
    _emu_or_skip()
    spec, (dy, w, b) = dgrad_problem(case, dtype, seed=3)
    out = run_plan(("cuda-emu", "random"), spec, DGRAD.plan(spec, variant, version), (dy, w, b))
    assert_dgrad_close(out, spec, dy, w, b)


@pytest.mark.parametrize("version,variant", DGRAD_KERNELS)
def test_dgrad_int64_index(target, index64, version, variant):
    spec, (dy, w, b) = dgrad_problem("transpose_dilated", "float32", seed=1)
    plan = DGRAD.plan(spec, variant, version)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    assert_dgrad_close(run_plan(target, spec, plan, (dy, w, b)), spec, dy, w, b)


@pytest.mark.parametrize("version,variant", DGRAD_KERNELS)
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_dgrad_nonfinite_weight_reaches_only_its_terms(target, version, variant, bad):
    """Only terms that exist are multiplied: a non-finite weight reaches exactly the dx positions its tap lands
    on from some dy (the oracle's pattern), never a padded or out-of-range zero (v2 stages those as zeros and
    recomputes the block exactly)."""
    spec, (dy, w, b) = dgrad_problem("strided_asym_dilated_groups", "float32", seed=4)
    w = w.copy()
    w[1, 0, 1, 2, 0] = bad
    ref = oracle.conv_input64(spec, dy, w, b)
    assert 0 < (~np.isfinite(ref)).sum() < ref.size // 4
    out = run_plan(target, spec, DGRAD.plan(spec, variant, version), (dy, w, b))
    assert_dgrad_close(out, spec, dy, w, b)


def test_dgrad_phase_grid_and_plans():
    spec, _ = dgrad_problem("transpose_output_padding", "float32")
    # (in - 1)*stride - 2*pad + (kernel - 1) + output_padding + 1 per axis, C_out = 2 * groups
    assert spec.output_layout == (2, 6, 6, 7, 6) and spec.strides == (2, 2, 2)
    assert DGRAD.phases(spec) == (2, 2, 2) and DGRAD.phase_rows(spec) == 2 * 3 * 4 * 3
    for variant in DGRAD_TILED:
        bm, bn, bk, tm, tn, minb = DGRAD.TILES[variant[3:]]
        (lc,) = DGRAD.plan(spec, variant).launches
        assert lc.kernel == f"conv3d_dgrad_v2<float, int, {bm}, {bn}, {bk}, {tm}, {tn}, {minb}>"
        assert lc.block == ((bm // tm) * (bn // tn), 1, 1)
        assert lc.grid[0] == 3 * 8 * -(-72 // bm) * -(-2 // bn)         # groups x phases x m tiles x c tiles
    (lc,) = DGRAD.plan(spec, version=1).launches
    assert lc.kernel == "conv3d_dgrad_v1<float, int>" and lc.grid[0] == -(-(2 * 6 * 6 * 7 * 6) // 256)
    big_stride = conv_input_spec((1, 2, 2, 3, 4), np.zeros((2, 2, 1, 1, 1)), np.zeros((1, 2, 1, 1, 1)), stride=8,
                                 spatial_dims=3)
    assert DGRAD.phases(big_stride) == (2, 3, 4)          # no phase without a dx position
    spec64, _ = dgrad_problem("basic", "float64")
    assert any("dtype float64" in r for r in DGRAD.reasons(spec64, "3d-128x64"))
    assert DGRAD.reasons(spec64, "3d-64x64") == [] and DGRAD.reasons(spec64, "3d-128x16") == []


# ---------------------------------------------------------------------------------------------------
# conv_weight
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", WGRAD.VARIANTS)
def test_wgrad_matches_oracle(target, variant, case):
    spec, (x, dy) = wgrad_problem(case, "float32")
    assert WGRAD.reasons(spec, variant) == []
    assert_wgrad_close(run_plan(target, spec, WGRAD.plan(spec, variant), (x, dy)), spec, x, dy)


@pytest.mark.parametrize("variant,dtype", _params(["3d-128x64", "3d-64x64", "3d-64x64-k4"], WGRAD,
                                                  ("float16", "float64")))
@pytest.mark.parametrize("case", ["strided_asym_dilated_groups", "depthwise_shared_factor"])
def test_wgrad_half_and_double(variant, dtype, case):
    _emu_or_skip()
    spec, (x, dy) = wgrad_problem(case, dtype, seed=3)
    assert_wgrad_close(run_plan(("cuda-emu", "random"), spec, WGRAD.plan(spec, variant), (x, dy)), spec, x, dy)


@pytest.mark.parametrize("variant", ["3d-64x64", "3d-128x64-k4"])
def test_wgrad_int64_index(target, index64, variant):
    spec, (x, dy) = wgrad_problem("strided_asym_dilated_groups", "float32", seed=1)
    plan = WGRAD.plan(spec, variant)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    assert_wgrad_close(run_plan(target, spec, plan, (x, dy)), spec, x, dy)


@pytest.mark.parametrize("variant", ["3d-64x64", "3d-128x64", "3d-64x64-k16"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_wgrad_nonfinite_dy_meeting_padding_is_skipped(target, variant, bad):
    """A non-finite dy at output (0, 0, 0) reaches only the weight taps landing inside the input for it (t, r,
    s >= 1 with padding 1); the staged zeros would give NaN at the others, and the kernel's exact
    recomputation restores the oracle's answer (per split for split-K)."""
    spec, (x, dy) = wgrad_problem("basic", "float32", seed=2)
    dy = dy.copy()
    dy[1, 3, 0, 0, 0] = bad
    ref = oracle.conv_weight64(spec, x, dy)
    assert np.isfinite(ref[3, :, 0]).all() and not np.isfinite(ref[3, :, 1:, 1:, 1:]).any()
    assert_wgrad_close(run_plan(target, spec, WGRAD.plan(spec, variant), (x, dy)), spec, x, dy)


def test_wgrad_split_k_plan_covers_gemm_k_without_empty_splits():
    """GEMM_K = N*Z*P*Q = 2*5*6*7 = 420 is 27 k steps of 16: k4 -> 4 chunks of 7 steps (the last one short),
    k16 -> 14 chunks of 2 (never an empty split), each followed by the in-order reduction; unsplit, one launch
    writes dw itself."""
    spec, _ = wgrad_problem("basic", "float32")
    for variant, splits, chunk in [("3d-64x64-k4", 4, 112), ("3d-64x64-k16", 14, 32), ("3d-128x64-k4", 4, 112)]:
        main, red = WGRAD.plan(spec, variant).launches
        assert main.grid[1] == splits and int(main.args[1]) == chunk and (splits - 1) * chunk < 420 <= splits * chunk
        assert red.kernel.startswith("conv3d_wgrad_splitk_reduce_v1<") and int(red.args[1]) == splits
        assert red.grid[0] == -(-(6 * 4 * 27) // 256)
    (only,) = WGRAD.plan(spec, "3d-64x64").launches
    assert only.grid == (2, 1, 1) and only.kernel == "conv3d_wgrad_v1<float, int, 64, 64, 16, 4, 4, 2>"
    spec64, _ = wgrad_problem("basic", "float64")
    assert any("dtype float64" in r for r in WGRAD.reasons(spec64, "3d-128x64-k4"))
    assert WGRAD.reasons(spec64, "3d-64x64-k16") == []


# ---------------------------------------------------------------------------------------------------
# Reproducibility and bounds
# ---------------------------------------------------------------------------------------------------
def test_results_are_bitwise_reproducible_across_thread_orders():
    """No atomics, a fixed summation order: the same plan gives the same bits in every thread order and seed
    (split-K partial sums are reduced in split order, whichever block finished first)."""
    _emu_or_skip()
    fspec, farrays = fwd_problem("multi_tile", "float32", seed=5)
    wspec, warrays = wgrad_problem("multi_tile", "float32", seed=5)
    dspec, darrays = dgrad_problem("depthwise_shared_factor", "float32", seed=5)
    for spec, fam, variant, arrays in [(fspec, IGEMM, "3d-128x64", farrays), (fspec, IGEMM, "3d-64x64-k4", farrays),
                                       (wspec, WGRAD, "3d-64x64-k16", warrays),
                                       (wspec, WGRAD, "3d-128x64-k4", warrays), (dspec, DGRAD, "3d-64x64", darrays)]:
        plan = fam.plan(spec, variant)
        runs = [run_plan(("cuda-emu", order), spec, plan, arrays, seed=seed)
                for order, seed in [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]]
        assert all(np.array_equal(runs[0], r) for r in runs[1:]), variant


@pytest.mark.parametrize("guard", ["end", "start"])
def test_no_access_outside_any_buffer(monkeypatch, guard):
    """Guarded buffers (every array argument ends, or starts, at an unmapped page: one element out of bounds
    faults): every kernel on cases with partial tiles, strides past the taps, output_padding, splits."""
    _emu_or_skip()
    monkeypatch.setenv("FASTCONV_EMU_GUARD", guard)
    for case in ("multi_tile", "strided_asym_dilated_groups", "pointwise"):
        spec, arrays = fwd_problem(case, "float32", seed=6)
        for fam, variant in FWD_KERNELS:
            assert_fwd_close(run_plan(("cuda-emu", "random"), spec, fam.plan(spec, variant), arrays), spec, *arrays)
        spec, arrays = wgrad_problem(case, "float32", seed=6)
        for variant in WGRAD.VARIANTS:
            assert_wgrad_close(run_plan(("cuda-emu", "random"), spec, WGRAD.plan(spec, variant), arrays), spec, *arrays)
    for case in ("multi_tile", "depthwise_shared_factor", "transpose_output_padding", "transpose_dilated"):
        spec, arrays = dgrad_problem(case, "float32", seed=6)
        for param in DGRAD_KERNELS:
            version, variant = param.values
            out = run_plan(("cuda-emu", "random"), spec, DGRAD.plan(spec, variant, version), arrays)
            assert_dgrad_close(out, spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# Conv3dParams: the Python twin (plan.py) against the C++ struct (common.cuh), as tests/cuda/test_params.py
# checks ConvParams and PoolParams
# ---------------------------------------------------------------------------------------------------
def _layout_source():
    fields = L.CONV3D_PARAMS_FIELDS
    lines = ['#include "common.cuh"', 'extern "C" __global__ void layout(long long* out) {',
             "  out[0] = sizeof(Conv3dParams);"]
    lines += [f"  out[{i + 1}] = __builtin_offsetof(Conv3dParams, {f});" for i, f in enumerate(fields)]
    lines += ["}", 'extern "C" __global__ void echo(const Conv3dParams p, long long* out) {']
    lines += [f"  out[{i}] = p.{f};" for i, f in enumerate(fields)]
    return "\n".join(lines + ["}"]) + "\n"


def test_conv3d_params_layout_and_round_trip():
    _emu_or_skip()
    from fastconv.emu import EmuModule
    mod = EmuModule(code=_layout_source(), include_dirs=(L.kernels_dir(),))
    fields, dtype = L.CONV3D_PARAMS_FIELDS, L.CONV3D_PARAMS_DTYPE
    out = np.full(len(fields) + 1, -1, dtype=np.int64)
    mod.get_function("layout")((1, 1, 1), (1, 1, 1), (out,))
    assert out[0] == dtype.itemsize and out[1:].tolist() == [dtype.fields[f][1] for f in fields]
    spec, _ = fwd_problem("strided_asym_dilated_groups", "float32")
    echo = np.full(len(fields), -1, dtype=np.int64)
    mod.get_function("echo")((1, 1, 1), (1, 1, 1), (L.conv3d_params(spec), echo))
    want = {f: int(getattr(spec, f)) for f in fields}
    assert dict(zip(fields, echo.tolist())) == want
    assert want["pad_front"] == 1 and want["pad_back"] == 0 and want["dil_d"] == 2 and want["T"] == 2


def test_device_compiler_agrees_on_conv3d_params_layout():
    from .test_compile import nvrtc_for
    compiler = nvrtc_for("sm_90")
    fields, dtype = L.CONV3D_PARAMS_FIELDS, L.CONV3D_PARAMS_DTYPE
    offsets = [dtype.fields[f][1] for f in fields]
    lines = ['#include "common.cuh"', f'static_assert(sizeof(Conv3dParams) == {dtype.itemsize}, "sizeof");',
             f"constexpr Conv3dParams probe{{{', '.join(map(str, offsets))}}};"]
    lines += [f'static_assert(probe.{f} == {off} && sizeof(probe.{f}) == 4, "{f}");' for f, off in zip(fields, offsets)]
    ok, log, _ = compiler.compile("\n".join(lines) + "\n", "conv3d_params.cu", "compute_90", (), (L.kernels_dir(),))
    assert ok, f"NVRTC {compiler.version} disagrees with the Python twin:\n{log}"


# ---------------------------------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_conv3d_gradients_and_transpose(backend, dtype):
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, (2, 4, 5, 4, 6), dtype), rand(rng, (6, 2, 3, 2, 3), dtype), rand(rng, (6,), dtype)
    kw = dict(stride=(1, 2, 1), padding=((1, 0), (1, 1), (0, 2)), dilation=(1, 1, 2), groups=2)
    spec = fastconv.conv_spec(x, w, b, spatial_dims=3, **kw)
    y = public(backend, fastconv.conv3d, x, w, b, **kw)
    assert y.shape == spec.output_shape
    assert_fwd_close(y, spec, x, w, b)

    dy = rand(rng, spec.output_shape, dtype)
    dx = public(backend, lambda d, **k: fastconv.grad.conv3d_input(x.shape, w, d, **kw, **k), dy)
    assert dx.shape == x.shape
    assert_dgrad_close(dx, conv_input_spec(x.shape, w, dy, spatial_dims=3, **kw), dy, w)
    dw = public(backend, lambda xx, d, **k: fastconv.grad.conv3d_weight(xx, w.shape, d, **kw, **k), x, dy)
    assert dw.shape == w.shape
    assert_wgrad_close(dw, conv_weight_spec(x, w.shape, dy, spatial_dims=3, **kw), x, dy)

    wt, bt = rand(rng, (4, 3, 2, 3, 2), dtype), rand(rng, (6,), dtype)
    tkw = dict(stride=2, padding=1, output_padding=(1, 0, 1), groups=2)
    yt = public(backend, fastconv.conv_transpose3d, x, wt, bt, **tkw)
    tspec = conv_transpose_spec(x, wt, bt, spatial_dims=3, **tkw)
    assert yt.shape == tspec.output_shape == (2, 6, 9, 7, 11)
    assert_dgrad_close(yt, tspec, x, wt, bt)


def test_dispatch_names_the_3d_kernels(backend):
    x, w = np.ones((1, 2, 3, 4, 5), np.float32), np.ones((3, 2, 2, 2, 2), np.float32)
    spec = fastconv.conv_spec(x, w, spatial_dims=3, padding=1)
    dy = np.ones(spec.output_shape, np.float32)
    names = {op: _dispatch.select(s, backend).name for op, s in
             [("conv", spec), ("conv_input", conv_input_spec(x.shape, w, dy, spatial_dims=3, padding=1)),
              ("conv_weight", conv_weight_spec(x, w.shape, dy, spatial_dims=3, padding=1))]}
    assert names["conv"].startswith(f"{backend}:conv:") and "3d" in names["conv"]
    assert names["conv_input"].startswith(f"{backend}:conv_input:implicit_gemm/3d-")
    assert names["conv_weight"].startswith(f"{backend}:conv_weight:implicit_gemm/3d-")
    assert _dispatch.select(spec, backend, algo="direct").name == f"{backend}:conv:direct/3d"
    assert _dispatch.select(spec, backend, algo="implicit_gemm").name.startswith(f"{backend}:conv:implicit_gemm/3d-")
    with pytest.raises(ValueError, match="3-D problems not supported"):
        _dispatch.select(spec, backend, algo="im2col")     # the 2-D families never see a 3-D problem
    # a 2-D problem never reaches a 3-D family
    spec2 = fastconv.conv_spec(np.ones((1, 2, 4, 5), np.float32), np.ones((3, 2, 2, 2), np.float32))
    assert "3d" not in _dispatch.select(spec2, backend).name


def test_against_torch():
    """Where torch is installed: the emulated kernels against torch's own conv3d, conv_transpose3d and the
    autograd gradients (float64, so the comparison is about the definition, not rounding)."""
    torch = pytest.importorskip("torch")
    _emu_or_skip()
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, (2, 4, 5, 6, 7), "float64"), rand(rng, (6, 2, 3, 2, 3), "float64"), rand(rng, (6,), "float64")
    kw = dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(1, 2, 1), groups=2)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = F.conv3d(xt, wt, torch.tensor(b), **kw)
    dy = rand(rng, tuple(yt.shape), "float64")
    yt.backward(torch.tensor(dy))
    emu = "cuda-emu"
    np.testing.assert_allclose(fastconv.conv3d(x, w, b, backend=emu, **kw), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fastconv.grad.conv3d_input(x.shape, w, dy, backend=emu, **kw), xt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fastconv.grad.conv3d_weight(x, w.shape, dy, backend=emu, **kw), wt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    wt2 = rand(rng, (4, 3, 3, 2, 3), "float64")
    tkw = dict(stride=(2, 3, 1), padding=(1, 0, 1), output_padding=(1, 2, 0), groups=2, dilation=(1, 1, 2))
    ref = F.conv_transpose3d(torch.tensor(x), torch.tensor(wt2), torch.tensor(b), **tkw).numpy()
    np.testing.assert_allclose(fastconv.conv_transpose3d(x, wt2, b, backend=emu, **tkw), ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Drawn problems, every kernel (derandomized, bounded; FASTCONV_FUZZ=long for more)
# ---------------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_LONG = fuzz_long()
_KERNELS = ([("conv", IGEMM, 1, v) for v in IGEMM.VARIANTS] + [("conv", DIRECT, 1, "3d")]
            + [("conv_input", DGRAD, 1, "3d-64x64")] + [("conv_input", DGRAD, 2, v) for v in DGRAD_TILED]
            + [("conv_weight", WGRAD, 1, v) for v in WGRAD.VARIANTS])


@st.composite
def problems3d(draw):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    C, K = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 12 if _FUZZ_LONG else 5))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    kw = dict(stride=tuple(draw(st.integers(1, 3)) for _ in range(3)),
              dilation=tuple(draw(st.integers(1, 2)) for _ in range(3)),
              padding=tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(3)), groups=g)
    top = 12 if _FUZZ_LONG else 6
    xs = (draw(st.integers(1, 2)), C) + tuple(draw(st.integers(1, top)) for _ in range(3))
    return (xs, (K, C // g) + ks, kw, draw(st.sampled_from(DTYPES)), draw(st.booleans()),
            draw(st.integers(0, 2**31)))


@settings(max_examples=fuzz_examples(ci=24, long=2000), deadline=None, derandomize=not _FUZZ_LONG, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems3d(), st.sampled_from(_KERNELS))
def test_every_kernel_on_drawn_problems(problem, kernel):
    xs, ws, kw, dtype, nonfinite, seed = problem
    op, fam, version, variant = kernel
    try:
        fwd = fastconv.conv_spec(_fake(xs), _fake(ws), spatial_dims=3, **kw)
    except ValueError:
        assume(False)   # an empty output
    _emu_or_skip()
    rng = np.random.default_rng(seed)
    x, w, dy = rand(rng, xs, dtype), rand(rng, ws, dtype), rand(rng, fwd.output_shape, dtype)
    if op == "conv":
        b = rand(rng, (ws[0],), dtype) if nonfinite else None
        spec, arrays, check = fastconv.conv_spec(x, w, b, spatial_dims=3, **kw), (x, w, b), assert_fwd_close
    elif op == "conv_input":
        spec = dataclasses.replace(conv_input_spec(xs, w, dy, spatial_dims=3, **kw), has_bias=nonfinite)
        arrays, check = (dy, w, rand(rng, (xs[1],), dtype) if nonfinite else None), assert_dgrad_close
    else:
        spec, arrays, check = conv_weight_spec(x, ws, dy, spatial_dims=3, **kw), (x, dy), assert_wgrad_close
    assume(not fam.reasons(spec, variant))
    if nonfinite:    # the operand that meets the padding
        a = arrays[1]
        a[tuple(rng.integers(0, d) for d in a.shape)] = rng.choice([np.inf, -np.inf, np.nan])
    out = run_plan(("cuda-emu", "random"), spec, fam.plan(spec, variant, version if fam is DGRAD else None), arrays,
                   seed=int(rng.integers(1 << 30)))
    check(out, spec, *arrays)
