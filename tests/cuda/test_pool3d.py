"""Families ``pool3d`` and ``pool3d_backward`` (kernels/pool3d.cu, kernels/pool3d_backward.cu): the 3-D pools,
their gradients and max_unpool3d against the oracle.

Through backend "cuda-emu" in all three thread orders and through backend "cuda" when a GPU is present.
Cases: stride, dilation, ceil_mode, every divisor rule, per-side pads on all three axes (front/back
included), adaptive sizes that do not divide the input and that exceed it, NaN/-inf/inf and ties in the
input (max: the last NaN in (d, h, w) row-major order gives the index, ties keep the first), windows wholly
in the padding (dilation), unbatched input, float16/32/64, the int64-index instantiations; gradients with
overlapping windows (stride < kernel) and NaN/inf in dy; max_unpool3d with repeated indices (the last in
row-major order wins, checked against a loop written here). Expected values come only from the oracle or the
rule written out by hand. Shapes are small: the whole file runs in CI.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.grad
from fastconv import _cuda, _dispatch, _indices
from fastconv._backends import numpy_oracle as oracle
from fastconv._spec import INT32_MAX, pool_grad_spec, pool_spec, unpool_spec
from fastconv.testing import assert_grad_close, assert_pool_close

from .common import DTYPES, first_variant, fuzz_examples, pool_ref, public, rand, run_family, run_plan
from .test_backend_shim import cuda as cuda_shim  # noqa: F401  (the fixture: backend "cuda" over the shim)

FORWARD = _cuda.family("pool3d")
BACKWARD = _cuda.family("pool3d_backward")


def _specials(x, rng):
    """NaN (several in some windows), ties, -inf and +inf runs, a whole volume of -inf and one of ties."""
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)] = 1.5
    flat[rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)] = -np.inf
    flat[rng.choice(flat.size, size=max(1, flat.size // 40), replace=False)] = np.inf
    vol = x.reshape(-1, x.shape[-1] * x.shape[-2] * x.shape[-3])
    vol[0] = -np.inf
    if vol.shape[0] > 1:
        vol[1] = 1.5
    return x


# ---------------------------------------------------------------------------------------------------
# Forward pools
# ---------------------------------------------------------------------------------------------------
#: name -> (kind, x shape, pool kwargs, specials in x)
POOL_CASES = {
    "max_k3s2p1_idx": ("max", (2, 3, 5, 6, 5), dict(kernel_size=3, stride=2, padding=1, return_indices=True), True),
    "max_dilated_ceil": ("max", (1, 2, 7, 6, 8), dict(kernel_size=(2, 3, 2), stride=(2, 1, 3), padding=(1, 1, 0),
                                                      dilation=(2, 1, 2), ceil_mode=True, return_indices=True), True),
    "max_per_side": ("max", (1, 2, 5, 6, 5), dict(kernel_size=3, stride=2, padding=((0, 2), (1, 0), (2, 1)),
                                                  return_indices=True), True),
    # per-side pads up to dil*(k-1): some windows hold no input position (-inf, the first tap's index)
    "max_empty_windows": ("max", (1, 2, 2, 3, 2), dict(kernel_size=2, stride=1, dilation=3,
                                                       padding=((3, 2), (2, 3), (3, 3)), return_indices=True), False),
    "max_no_idx": ("max", (2, 2, 4, 4, 6), dict(kernel_size=2), False),
    "max_unbatched": ("max", (3, 4, 5, 6), dict(kernel_size=(2, 2, 3), stride=(1, 2, 2), padding=(1, 0, 1),
                                                return_indices=True), True),
    "avg_include_pad_ceil": ("avg", (2, 2, 6, 5, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), False),
    "avg_exclude_pad_per_side_ceil": ("avg", (1, 3, 5, 6, 6), dict(kernel_size=(2, 3, 3), stride=2,
                                                                   padding=((1, 0), (0, 2), (1, 1)),
                                                                   count_include_pad=False, ceil_mode=True), False),
    # ceil_mode's last depth and row windows pass the back/bottom padding (6 + 0 < their end 7): not counted
    "avg_include_pad_per_side": ("avg", (1, 2, 6, 6, 4), dict(kernel_size=3, stride=2,
                                                              padding=((2, 0), (2, 0), (0, 2)), ceil_mode=True), False),
    "avg_divisor_override": ("avg", (1, 2, 4, 4, 4), dict(kernel_size=2, stride=1, padding=1, divisor_override=-3),
                             False),
    "avg_nonfinite": ("avg", (1, 2, 4, 5, 4), dict(kernel_size=2, stride=1), True),
    "adaptive_max_nondividing": ("adaptive_max", (2, 2, 5, 7, 6), dict(output_size_=(3, 2, 4), return_indices=True),
                                 True),
    "adaptive_max_upsample": ("adaptive_max", (1, 2, 2, 3, 4), dict(output_size_=(3, 5, 4), return_indices=True),
                              True),
    "adaptive_avg": ("adaptive_avg", (1, 3, 7, 5, 6), dict(output_size_=(2, 3, 4)), False),
    # whole-volume windows (variant 3d-global): volumes of more and fewer than 32 elements
    "adaptive_avg_1x1x1": ("adaptive_avg", (2, 3, 3, 4, 5), dict(output_size_=1), False),
    "adaptive_avg_1x1x1_small": ("adaptive_avg", (1, 3, 1, 2, 3), dict(output_size_=1), True),
    "adaptive_max_1x1x1_idx": ("adaptive_max", (2, 3, 4, 5, 3), dict(output_size_=1, return_indices=True), True),
    "max_global_idx": ("max", (2, 3, 3, 4, 5), dict(kernel_size=(3, 4, 5), return_indices=True), True),
    "avg_global_override": ("avg", (2, 2, 2, 5, 4), dict(kernel_size=(2, 5, 4), divisor_override=7), False),
}
GLOBAL_CASES = ("adaptive_avg_1x1x1", "adaptive_avg_1x1x1_small", "adaptive_max_1x1x1_idx", "max_global_idx",
                "avg_global_override")


def pool_problem(case, dtype, seed=4):
    kind, xs, kw, specials = POOL_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, xs, dtype)
    if specials:
        x = _specials(x, rng)
    spec = pool_spec(kind, x, spatial_dims=3, **kw)
    return spec, x.reshape(spec.input_shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool3d_matches_oracle(target, case, dtype):
    spec, x = pool_problem(case, dtype)
    assert first_variant(FORWARD, spec) == ("3d-global" if case in GLOBAL_CASES else "3d")
    out = run_family(target, "pool3d", spec, (x,))
    assert_pool_close(out, pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("case", GLOBAL_CASES)
def test_pool3d_whole_volume_cases_through_the_general_kernel(target, case):
    spec, x = pool_problem(case, "float32")
    assert_pool_close(run_family(target, "pool3d", spec, (x,), variant="3d"), pool_ref(spec, x), spec, x)


def test_pool3d_variant_predicates():
    def spec(kind, shape, **kw):
        return pool_spec(kind, _fake(shape), spatial_dims=3, **kw)
    assert FORWARD.VARIANTS == ("3d-global", "3d")
    assert first_variant(FORWARD, spec("adaptive_avg", (8, 2048, 4, 7, 7), output_size_=1)) == "3d-global"
    assert first_variant(FORWARD, spec("avg", (8, 512, 2, 7, 7), kernel_size=(2, 7, 7))) == "3d-global"
    assert first_variant(FORWARD, spec("adaptive_avg", (8, 512, 4, 7, 7), output_size_=(2, 1, 1))) == "3d"
    assert first_variant(FORWARD, spec("max", (1, 64, 16, 56, 56), kernel_size=3, stride=2, padding=1)) == "3d"
    # a full window with padding or ceil_mode's second output is not global
    assert first_variant(FORWARD, spec("avg", (1, 2, 3, 3, 3), kernel_size=3, padding=1)) == "3d"
    assert first_variant(FORWARD, spec("max", (1, 2, 3, 4, 4), kernel_size=(3, 4, 4), dilation=(1, 1, 1))) \
        == "3d-global"
    stem = spec("max", (1, 64, 16, 56, 56), kernel_size=3, stride=2, padding=1)
    assert "variant 3d-global needs" in FORWARD.reasons(stem, "3d-global")[0]
    with pytest.raises(ValueError, match="variant 3d-global needs"):
        FORWARD.plan(stem, "3d-global")


def test_cases_reach_what_they_claim():
    """The empty-window case has windows wholly in the padding, and the NaN cases windows holding several
    NaNs (so the 'last NaN' part of the rule is exercised), the per-side cases unequal sides."""
    spec, _ = pool_problem("max_empty_windows", "float32")
    b = _indices.window_bounds(spec)
    assert not (b[2].all() and b[5].all() and b[8].all())
    spec, x = pool_problem("max_k3s2p1_idx", "float64")
    counter = dataclasses.replace(spec, kind="avg", divisor_override=1, return_indices=False)
    nans_per_window = oracle.avg_pool(counter, np.isnan(x).astype(np.float64))
    assert nans_per_window.max() >= 2
    for case in ("max_per_side", "avg_exclude_pad_per_side_ceil", "avg_include_pad_per_side"):
        assert not pool_problem(case, "float32")[0].is_symmetric_padding, case


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_dilated_ceil", "avg_exclude_pad_per_side_ceil", "adaptive_max_upsample",
                                  "adaptive_max_1x1x1_idx"])
def test_pool3d_int64_index_instantiations(target, index64, case, dtype):
    spec, x = pool_problem(case, dtype, seed=5)
    assert ", long long" in FORWARD.plan(spec).launches[0].kernel
    assert_pool_close(run_family(target, "pool3d", spec, (x,)), pool_ref(spec, x), spec, x)


# ---------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------
#: name -> (kind, x shape, pool kwargs, specials): "x" NaN/ties/-inf in the forward's input (max kinds:
#: the index rule), "dy" NaN and inf in dy
GRAD_CASES = {
    "max_overlap_s1": ("max", (1, 2, 4, 5, 4), dict(kernel_size=3, stride=1, padding=1), "x"),
    "max_dilated_ceil_per_side": ("max", (1, 2, 6, 5, 7), dict(kernel_size=(2, 3, 2), stride=(1, 2, 2),
                                                               dilation=(2, 1, 2), padding=((1, 2), (2, 0), (0, 2)),
                                                               ceil_mode=True), "x"),
    "max_empty_windows": ("max", (1, 2, 2, 3, 2), dict(kernel_size=2, stride=1, dilation=3,
                                                       padding=((3, 2), (2, 3), (3, 3))), "dy"),
    "avg_include_pad_per_side_ceil": ("avg", (2, 2, 6, 6, 5), dict(kernel_size=3, stride=2,
                                                                   padding=((2, 0), (1, 1), (0, 2)),
                                                                   ceil_mode=True), ""),
    "avg_exclude_pad_overlap": ("avg", (1, 2, 4, 5, 6), dict(kernel_size=(2, 3, 4), stride=1, padding=(1, 1, 2),
                                                             count_include_pad=False), "dy"),
    "avg_override_negative": ("avg", (1, 2, 5, 4, 5), dict(kernel_size=2, stride=(1, 2, 1), ceil_mode=True,
                                                           divisor_override=-3), ""),
    "adaptive_max_upsample": ("adaptive_max", (1, 2, 2, 3, 4), dict(output_size_=(3, 5, 6)), "x"),
    "adaptive_max_nondividing": ("adaptive_max", (2, 2, 5, 7, 6), dict(output_size_=(3, 2, 4)), "x"),
    "adaptive_avg_nondividing": ("adaptive_avg", (1, 3, 7, 5, 6), dict(output_size_=(2, 3, 4)), "dy"),
    "adaptive_avg_upsample": ("adaptive_avg", (1, 2, 2, 3, 3), dict(output_size_=(4, 4, 5)), ""),
}


def grad_problem(case, dtype, seed=4):
    """(grad spec, (dy, [indices]) in the backend layout): indices from the oracle's forward, with the outputs
    of windows wholly in the padding dropped as the public functions drop them (fastconv._indices)."""
    kind, xs, kw, specials = GRAD_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, xs, dtype)
    if specials == "x":
        x = _specials(x, rng)
    is_max = kind.endswith("max")
    fwd = pool_spec(kind, x, spatial_dims=3, return_indices=is_max, **kw)
    dy = rand(rng, fwd.output_shape, dtype)
    if specials == "dy":
        dy.reshape(-1)[rng.choice(dy.size, size=2, replace=False)] = (np.nan, np.inf)
    spec = pool_grad_spec(kind, dy, x, spatial_dims=3, **{k: v for k, v in kw.items() if k != "output_size_"})
    dy = dy.reshape(spec.operands()[0])
    if not is_max:
        return spec, (dy,)
    _, idx = (oracle.max_pool if kind == "max" else oracle.adaptive_max_pool)(fwd, x.reshape(fwd.input_shape))
    dy, idx = _indices.drop_empty_windows(spec, dy, idx, np)
    return spec, (np.ascontiguousarray(dy), np.ascontiguousarray(idx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_pool3d_gradient_matches_oracle(target, case, dtype):
    spec, arrays = grad_problem(case, dtype)
    assert spec.op == GRAD_CASES[case][0] + "_pool_backward"
    out = run_family(target, "pool3d_backward", spec, arrays)
    assert out.dtype == np.dtype(dtype) and out.shape == spec.output_layout
    assert_grad_close(out.reshape(spec.output_shape), spec, *arrays)


def test_gradient_cases_reach_what_they_claim():
    """Overlapping windows really send several dy to one position (shared indices for max)."""
    for case in ("max_overlap_s1", "adaptive_max_upsample"):
        spec, (_, idx) = grad_problem(case, "float32")
        counts = np.stack([np.bincount(p, minlength=spec.in_elems) for p in idx.reshape(spec.N * spec.C, -1)])
        assert counts.max() >= 2, case


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_dilated_ceil_per_side", "avg_include_pad_per_side_ceil",
                                  "adaptive_avg_nondividing"])
def test_pool3d_gradient_int64_index_instantiations(target, index64, case, dtype):
    spec, arrays = grad_problem(case, dtype, seed=5)
    assert all(", long long" in lc.kernel for lc in BACKWARD.plan(spec).launches)
    out = run_family(target, "pool3d_backward", spec, arrays)
    assert_grad_close(out.reshape(spec.output_shape), spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# max_unpool3d
# ---------------------------------------------------------------------------------------------------
def unpool_by_hand(spec, x, idx):
    """The rule written out: zeros, then every element of every volume in row-major order written at its
    index (so the last of repeated indices stays)."""
    out = np.zeros((spec.N * spec.C, spec.in_elems), dtype=x.dtype)
    xs, ids = x.reshape(spec.N * spec.C, -1), idx.reshape(spec.N * spec.C, -1)
    for plane in range(spec.N * spec.C):
        for j in range(ids.shape[1]):
            out[plane, ids[plane, j]] = xs[plane, j]
    return out.reshape(spec.output_layout)


#: name -> (x shape, unpool kwargs, where the indices come from)
UNPOOL_CASES = {
    # indices of an overlapping max pool (k3 s2 p1, ties in its input): repeats inside volumes
    "from_overlapping_pool": ((2, 2, 3, 3, 3), dict(kernel_size=3, stride=2, padding=1, output_size=(5, 6, 5)), "pool"),
    "repeated_random": ((1, 3, 2, 3, 4), dict(kernel_size=2), "random"),
    "all_same_index": ((1, 2, 3, 2, 3), dict(kernel_size=2, stride=(1, 2, 2)), "same"),
    "unbatched_nan": ((2, 2, 3, 2), dict(kernel_size=(2, 3, 2), stride=2, output_size=(5, 7, 4)), "random-nan"),
}


def unpool_problem(case, dtype, seed=7):
    xshape, kw, source = UNPOOL_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, xshape, dtype)
    probe = unpool_spec(x, np.zeros(xshape, np.int64), spatial_dims=3, **kw)
    vol = probe.in_elems
    if source == "pool":
        src = _specials(rand(rng, probe.output_shape, dtype), rng)
        fwd = pool_spec("max", src, kw["kernel_size"], kw["stride"], kw["padding"], return_indices=True,
                        spatial_dims=3)
        assert fwd.output_shape == tuple(xshape)
        _, idx = oracle.max_pool(fwd, src.reshape(fwd.input_shape))
        idx = idx.reshape(xshape)
    elif source == "same":
        idx = np.full(xshape, vol // 2 + 1, np.int64)
    else:
        idx = rng.integers(0, max(2, vol // 8), size=xshape, dtype=np.int64)
        idx = np.where(rng.random(xshape) < 0.5, idx, rng.integers(0, vol, size=xshape))
    if source == "random-nan":
        x.reshape(-1)[:3] = (np.nan, np.inf, -np.inf)
    spec = unpool_spec(x, idx, spatial_dims=3, **kw)
    return spec, (x.reshape(spec.operands()[0]), idx.reshape(spec.operands()[1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(UNPOOL_CASES))
def test_max_unpool3d_matches_oracle_and_the_rule(target, case, dtype):
    spec, (x, idx) = unpool_problem(case, dtype)
    counts = np.stack([np.bincount(p, minlength=spec.in_elems) for p in idx.reshape(spec.N * spec.C, -1)])
    assert counts.max() >= 2, "every unpool case repeats an index inside a volume"
    out = run_family(target, "pool3d_backward", spec, (x, idx))
    assert np.array_equal(out, unpool_by_hand(spec, x, idx), equal_nan=True)
    assert np.array_equal(out, oracle.max_unpool(spec, x, idx).reshape(out.shape), equal_nan=True)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_max_unpool3d_int64_index_instantiations(target, index64, dtype):
    spec, (x, idx) = unpool_problem("from_overlapping_pool", dtype, seed=8)
    assert all(", long long" in lc.kernel for lc in BACKWARD.plan(spec).launches)
    out = run_family(target, "pool3d_backward", spec, (x, idx))
    assert np.array_equal(out, unpool_by_hand(spec, x, idx), equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# Bitwise reproducible whatever the schedule
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["avg_forward", "max_grad", "avg_grad", "unpool"])
def test_results_do_not_depend_on_the_thread_order(which):
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    if which == "avg_forward":
        spec, arrays = pool_problem("avg_include_pad_per_side", "float32")
        arrays, fam = (arrays,), FORWARD
    elif which == "unpool":
        spec, arrays = unpool_problem("all_same_index", "float32")
        fam = BACKWARD
    else:
        spec, arrays = grad_problem("max_overlap_s1" if which == "max_grad" else "avg_exclude_pad_overlap", "float32")
        fam = BACKWARD
    outs = [run_plan(("cuda-emu", order), spec, fam.plan(spec), arrays, seed=seed)
            for order, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2))]
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()


# ---------------------------------------------------------------------------------------------------
# A small derandomized fuzz: forward and gradient of one random 3-D pool per example
# ---------------------------------------------------------------------------------------------------
@st.composite
def pool3d_problems(draw):
    kind = draw(st.sampled_from(["max", "avg", "adaptive_max", "adaptive_avg"]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + tuple(draw(st.integers(1, 6)) for _ in range(3))
    if kind.startswith("adaptive"):
        kw = dict(output_size_=tuple(draw(st.integers(1, 7)) for _ in range(3)))
    else:
        k = tuple(draw(st.integers(1, 3)) for _ in range(3))
        dil = tuple(draw(st.integers(1, 2)) for _ in range(3)) if kind == "max" else (1, 1, 1)
        if draw(st.booleans()):     # per-side, each side up to dil*(k-1)
            pad = tuple((draw(st.integers(0, d * (kk - 1))), draw(st.integers(0, d * (kk - 1))))
                        for kk, d in zip(k, dil))
        else:
            pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        kw = dict(kernel_size=k, stride=tuple(draw(st.integers(1, 3)) for _ in range(3)), padding=pad,
                  ceil_mode=draw(st.booleans()))
        if kind == "max":
            kw["dilation"] = dil
        else:
            kw["count_include_pad"] = draw(st.booleans())
            if draw(st.booleans()):
                kw["divisor_override"] = draw(st.sampled_from([-2, 1, 5]))
        try:
            pool_spec(kind, np.zeros(shape, np.float32), spatial_dims=3, **kw)
        except ValueError:
            kw = dict(kernel_size=1)
    return kind, shape, kw, draw(st.sampled_from(DTYPES)), draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=fuzz_examples(ci=25, long=1000), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(pool3d_problems())
def test_pool3d_fuzz(problem):
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    kind, shape, kw, dtype, specials, seed = problem
    rng = np.random.default_rng(seed)
    x = rand(rng, shape, dtype)
    if specials:
        x = _specials(x, rng)
    is_max = kind.endswith("max")
    fwd = pool_spec(kind, x, spatial_dims=3, return_indices=is_max, **kw)
    x = x.reshape(fwd.input_shape)
    out = run_plan(("cuda-emu", "random"), fwd, FORWARD.plan(fwd, first_variant(FORWARD, fwd)), (x,), seed=seed)
    assert_pool_close(out, pool_ref(fwd, x), fwd, x)
    dy = rand(rng, fwd.output_layout, dtype)
    spec = pool_grad_spec(kind, dy, x, spatial_dims=3, **{k: v for k, v in kw.items() if k != "output_size_"})
    arrays = (dy,)
    if is_max:
        arrays = tuple(np.ascontiguousarray(a) for a in _indices.drop_empty_windows(spec, dy, pool_ref(fwd, x)[1], np))
    grad = run_plan(("cuda-emu", "random"), spec, BACKWARD.plan(spec), arrays, seed=seed)
    assert_grad_close(grad.reshape(spec.output_shape), spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# Limits, names, dispatch
# ---------------------------------------------------------------------------------------------------
def _fake(shape, dtype="float32"):
    return np.broadcast_to(np.zeros((), dtype), shape)


def test_reasons_and_versions():
    spec, _ = pool_problem("avg_include_pad_ceil", "float32")
    assert FORWARD.reasons(spec) == [] and FORWARD.SPATIAL_DIMS == BACKWARD.SPATIAL_DIMS == (3,)
    with pytest.raises(ValueError, match="variant must be one of"):
        FORWARD.plan(spec, "any")
    with pytest.raises(ValueError, match="variant must be one of"):
        BACKWARD.reasons(spec, "3d-global")
    with pytest.raises(ValueError, match="version 2"):
        FORWARD.plan(spec, version=2)
    gspec, _ = grad_problem("avg_exclude_pad_overlap", "float32")
    assert BACKWARD.reasons(gspec) == []
    assert any("undilated" in r for r in BACKWARD.reasons(dataclasses.replace(gspec, dil_d=2)))
    # depth coordinates past 2^31 - 1 (a long, strided depth with ceil_mode): refused like rows and columns
    deep = pool_spec("max", _fake((1, 1, 2**31 - 2, 1, 1)), kernel_size=(5, 1, 1), stride=(3, 1, 1),
                     padding=((2, 2), (0, 0), (0, 0)), ceil_mode=True, spatial_dims=3)
    assert any("depth coordinates" in r for r in FORWARD.reasons(deep))
    ok = pool_spec("max", _fake((1, 1, 2**31 - 8, 1, 1)), kernel_size=(4, 1, 1), stride=(3, 1, 1),
                   padding=((2, 2), (0, 0), (0, 0)), spatial_dims=3)
    assert FORWARD.reasons(ok) == []
    # a volume of more than 2^31 - 1 pooled elements does not fit the unpool owner's int32 positions
    big = unpool_spec(_fake((1, 1, 2, 2**15, 2**15)), _fake((1, 1, 2, 2**15, 2**15), "int64"), kernel_size=1,
                      spatial_dims=3)
    assert big.out_elems > INT32_MAX
    assert any("32-bit owner workspace" in r for r in BACKWARD.reasons(big))


def test_dispatch_names_what_runs():
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    x = np.zeros((1, 2, 4, 4, 4), np.float32)
    for kind, kw in (("max", dict(kernel_size=2)), ("avg", dict(kernel_size=2)),
                     ("adaptive_max", dict(output_size_=3)), ("adaptive_avg", dict(output_size_=1))):
        spec = pool_spec(kind, x, spatial_dims=3, **kw)
        variant = "3d-global" if spec.out_size == (1, 1, 1) else "3d"
        assert _dispatch.select(spec, "cuda-emu").name == f"cuda-emu:{kind}_pool:direct/{variant}"
        assert _dispatch.select(spec, "cuda-emu", "direct").name == f"cuda-emu:{kind}_pool:direct/{variant}"
        g = pool_grad_spec(kind, _fake(spec.output_shape), x, spatial_dims=3,
                           **{k: v for k, v in kw.items() if k != "output_size_"})
        assert _dispatch.select(g, "cuda-emu").name == f"cuda-emu:{kind}_pool_backward:direct/3d"
    u = unpool_spec(np.zeros((1, 2, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2, 2), np.int64), 2, spatial_dims=3)
    assert _dispatch.select(u, "cuda-emu").name == "cuda-emu:max_unpool:direct/3d"
    # a 2-D problem stays with the 2-D families; a 3-D one is refused by them, saying why
    x2 = np.zeros((1, 2, 8, 8), np.float32)
    assert _dispatch.select(pool_spec("max", x2, kernel_size=3), "cuda-emu").name == "cuda-emu:max_pool:direct/any"
    three_d = pool_spec("max", x, spatial_dims=3, kernel_size=2)
    two_d = [i for i in _dispatch.candidates(three_d, "cuda-emu") if "3d" not in i.name]
    assert len(two_d) == 3 and all("3-D problems not supported" in _dispatch.reasons(i, three_d)[0] for i in two_d)


# ---------------------------------------------------------------------------------------------------
# Backend "cuda"'s own launch path (kernel loading, buffers, the int32 owner workspace) over the CuPy shim
# ---------------------------------------------------------------------------------------------------
def test_plans_through_the_cuda_backend_module(cuda_shim):
    """The "cuda" backend's execute runs these plans here through tests/cuda/cupy_shim.py; on a GPU the
    target fixture runs them for real."""
    from . import cupy_shim
    spec, x = pool_problem("max_per_side", "float32")
    y, idx = cuda_shim.execute(FORWARD.plan(spec), {"x": cupy_shim.asarray(x)})
    assert_pool_close((y.get(), idx.get()), pool_ref(spec, x), spec, x)
    for spec, arrays in (grad_problem("avg_include_pad_per_side_ceil", "float64"),
                         grad_problem("max_overlap_s1", "float16"), unpool_problem("all_same_index", "float16")):
        out = cuda_shim.execute(BACKWARD.plan(spec), {n: cupy_shim.asarray(a) for n, a in zip(spec.ARRAYS, arrays)})
        assert type(out) is cupy_shim.ndarray
        if spec.op == "max_unpool":
            assert np.array_equal(out.get(), unpool_by_hand(spec, *arrays), equal_nan=True)
        else:
            assert_grad_close(out.get().reshape(spec.output_shape), spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# The public API end to end
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_public_3d_pools_and_gradients(backend, dtype):
    rng = np.random.default_rng(11)
    x = _specials(rand(rng, (2, 2, 5, 6, 5), dtype), rng)
    xu = rand(rng, (2, 4, 5, 6), dtype)                                      # unbatched
    for fn, inp, args, kw in ((fastconv.max_pool3d, x, (3, 2, ((1, 0), (1, 1), (0, 2))), dict(return_indices=True)),
                              (fastconv.max_pool3d, xu, (2, 1, 1), dict(dilation=2, ceil_mode=True)),
                              (fastconv.avg_pool3d, xu, (3, 2, 1), dict(ceil_mode=True, count_include_pad=False)),
                              (fastconv.adaptive_max_pool3d, x, ((3, 4, 2),), dict(return_indices=True)),
                              (fastconv.adaptive_avg_pool3d, xu, (2,), {})):
        got = public(backend, fn, inp, *args, **kw)
        want = fn(inp, *args, backend="numpy", **kw)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert g.dtype == w.dtype and g.shape == w.shape, fn.__name__
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=4e-3 if dtype == "float16"
                                       else 1e-6, atol=1e-6, equal_nan=True, err_msg=fn.__name__)
    xf = rand(rng, (2, 2, 5, 6, 5), dtype)
    for name, args, kw in (("max_pool3d", (3, 2, 1), {}), ("avg_pool3d", (3, 2, ((2, 0), (1, 1), (0, 1))),
                                                           dict(ceil_mode=True))):
        y = getattr(fastconv, name)(xf, *args, backend="numpy", **kw)
        dy = rand(rng, y.shape, dtype)
        got = public(backend, getattr(fastconv.grad, name), dy, xf, *args, **kw)
        want = getattr(fastconv.grad, name)(dy, xf, *args, backend="numpy", **kw)
        assert got.dtype == np.dtype(dtype) and got.shape == xf.shape, name
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=4e-3 if dtype == "float16" else 1e-5, atol=4e-3 if dtype == "float16"
                                   else 1e-6, err_msg=name)
    y, idx = fastconv.max_pool3d(xf, 2, return_indices=True, backend="numpy")
    got = public(backend, fastconv.max_unpool3d, y, idx, 2, output_size=xf.shape[-3:])
    assert np.array_equal(got, fastconv.max_unpool3d(y, idx, 2, output_size=xf.shape[-3:], backend="numpy"),
                          equal_nan=True)
