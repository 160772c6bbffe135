"""Family ``pool_backward`` (kernels/pool_backward.cu, fastconv/_cuda/pool_backward.py): the pool gradients and
max_unpool against the oracle.

Through backend "cuda-emu" in all three thread orders and through backend "cuda" when a GPU is present. The
max gradients take the indices of the oracle's own forward (numpy_oracle.max_pool / adaptive_max_pool with
return_indices). Cases: overlapping windows (stride < kernel, so one position collects several windows'
dy), dilation, padding (per side too, beyond torch), ceil_mode, every divisor rule, adaptive sizes that do
not divide the input and that exceed it, ties and NaN in the forward's input (the index rule), NaN in dy,
1-D, float16/32/64, the int64 instantiations; max_unpool with indices repeated inside a plane (the last in
row-major order wins, checked against a loop written here), output_size, both versions. Expected values come
only from the oracle or the rule written out by hand.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.grad
from fastconv import _cuda, _dispatch
from fastconv._backends import numpy_oracle as oracle
from fastconv._spec import INT32_MAX, pool_grad_spec, unpool_spec
from fastconv.testing import assert_within, to_numpy

from .common import DTYPES, fuzz_examples, public, rand, run_family, run_plan
from .test_backend_shim import cuda as cuda_shim  # noqa: F401  (the fixture: backend "cuda" over the shim)

FAMILY = _cuda.family("pool_backward")
_ACC_EPS = {"float16": np.finfo(np.float32).eps, "float32": np.finfo(np.float32).eps,
            "float64": np.finfo(np.float64).eps}


# ---------------------------------------------------------------------------------------------------
# Reference and tolerance (the oracle in float64)
# ---------------------------------------------------------------------------------------------------
def reference(spec, *arrays):
    """The oracle's op for ``spec`` in float64 (index arrays passed as they are)."""
    wide = dataclasses.replace(spec, dtype="float64")
    return getattr(oracle, spec.op)(wide, *(a if spec.is_index_operand(n) else a.astype(np.float64)
                                            for n, a in zip(spec.ARRAYS, arrays)))


def windows_per_position(spec) -> int:
    """At most how many windows cover one input position (the length of a dx element's sum)."""
    if spec.is_adaptive:
        return (-(-spec.P // spec.H) + 1) * (-(-spec.Q // spec.W) + 1)
    return (-(-(spec.R - 1) * spec.dil_h // spec.stride_h) + 1) * (-(-(spec.S - 1) * spec.dil_w // spec.stride_w) + 1)


def assert_grad_matches(out, spec, *arrays):
    """A pool gradient within n * eps_acc * (the oracle on |dy|) of the oracle, plus one rounding of the
    stored result (n: the windows covering a position, + 1 for the division); max_unpool exactly.
    (fastconv.testing.assert_grad_close builds the same bound but without the abs below, so a negative
    divisor_override gives it a negative tolerance; swap this for it once that is fixed.)"""
    out = to_numpy(out)
    assert out.dtype == np.dtype(spec.dtype) and out.shape == spec.output_layout
    ref = reference(spec, *arrays)
    if spec.op == "max_unpool":
        tol = 0.0
    else:
        absed = tuple(a if spec.is_index_operand(n) else np.abs(a.astype(np.float64))
                      for n, a in zip(spec.ARRAYS, arrays))
        mag = reference(spec, *absed)
        mag = np.where(np.isfinite(mag), np.abs(mag), 0.0)   # abs: a negative divisor_override
        n = windows_per_position(spec) + 1
        tol = 2 * n * _ACC_EPS[spec.dtype] * mag + float(np.finfo(spec.dtype).eps) * mag + np.finfo(spec.dtype).tiny
    assert_within(out.astype(np.float64), ref, tol, spec)


# ---------------------------------------------------------------------------------------------------
# Pool gradients
# ---------------------------------------------------------------------------------------------------
#: name -> (kind, x shape, pool kwargs, spatial dims, specials): specials "x" puts NaN, ties and -inf in
#: the forward's input (max kinds: the index rule), "dy" puts NaN and inf in dy
GRAD_CASES = {
    "max_k3s2p1": ("max", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1), 2, "x"),
    "max_overlap_s1": ("max", (1, 2, 7, 8), dict(kernel_size=3, stride=1, padding=1), 2, "x"),
    "max_ceil_dilated": ("max", (1, 2, 11, 9), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1),
                                                    dilation=(2, 1), ceil_mode=True), 2, "x"),
    "max_dilated_s1": ("max", (1, 2, 9, 10), dict(kernel_size=3, stride=1, padding=1, dilation=(2, 3)), 2, "x"),
    "max_no_overlap": ("max", (2, 2, 8, 8), dict(kernel_size=2), 2, ""),
    "max_dy_nan": ("max", (1, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), 2, "dy"),
    "max_1d": ("max", (2, 3, 17), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True), 1, "x"),
    "max_1d_dilated": ("max", (2, 2, 19), dict(kernel_size=3, stride=1, padding=1, dilation=3), 1, "x"),
    "avg_include_pad_ceil": ("avg", (2, 3, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), 2, ""),
    "avg_exclude_pad_ceil": ("avg", (2, 3, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                        count_include_pad=False), 2, ""),
    "avg_divisor_override": ("avg", (1, 2, 8, 7), dict(kernel_size=(2, 3), stride=1, padding=(1, 1),
                                                       divisor_override=5), 2, ""),
    "avg_override_negative_ceil": ("avg", (1, 2, 9, 8), dict(kernel_size=3, stride=2, ceil_mode=True,
                                                             divisor_override=-3), 2, ""),
    "avg_overlap_s1_exclude": ("avg", (1, 2, 6, 7), dict(kernel_size=(3, 4), stride=1, padding=(1, 2),
                                                         count_include_pad=False), 2, "dy"),
    "avg_1d": ("avg", (2, 3, 16), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), 1, ""),
    # per-side padding (beyond torch): windows wholly in the padding (dilation) send nothing; ceil_mode's
    # last window passing the after-side padding is not counted by the divisor
    "max_per_side_dilated_ceil": ("max", (1, 2, 9, 7), dict(kernel_size=(3, 2), stride=1, dilation=(2, 3),
                                                            padding=((4, 0), (0, 3)), ceil_mode=True), 2, "x"),
    "max_per_side_overlap": ("max", (2, 2, 7, 8), dict(kernel_size=3, stride=1, padding=((0, 2), (2, 1))), 2, "x"),
    "avg_per_side_include_pad_ceil": ("avg", (2, 2, 6, 7), dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)),
                                                                ceil_mode=True), 2, "dy"),
    "avg_per_side_exclude_pad": ("avg", (1, 2, 5, 6), dict(kernel_size=(3, 2), stride=1, padding=((0, 2), (1, 0)),
                                                           count_include_pad=False), 2, ""),
    "avg_per_side_1d": ("avg", (2, 3, 9), dict(kernel_size=4, stride=3, padding=((3, 1),), ceil_mode=True), 1, ""),
    "adaptive_max_nondividing": ("adaptive_max", (2, 3, 10, 7), dict(output_size_=(4, 3)), 2, "x"),
    "adaptive_max_upsample": ("adaptive_max", (1, 2, 3, 5), dict(output_size_=(7, 8)), 2, "x"),
    "adaptive_max_1d": ("adaptive_max", (2, 2, 11), dict(output_size_=4), 1, "x"),
    "adaptive_avg_nondividing": ("adaptive_avg", (2, 3, 10, 7), dict(output_size_=(3, 5)), 2, ""),
    "adaptive_avg_upsample": ("adaptive_avg", (1, 2, 3, 4), dict(output_size_=(5, 9)), 2, "dy"),
    "adaptive_avg_1d": ("adaptive_avg", (2, 3, 13), dict(output_size_=5), 1, ""),
}


def _special_x(x, rng):
    """NaN (several in some windows), ties and -inf runs, a whole plane of ties and one of -inf."""
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)] = 1.5
    flat[rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)] = -np.inf
    plane = x.reshape(x.shape[0] * x.shape[1], -1)
    plane[0] = -np.inf
    if plane.shape[0] > 1:
        plane[1] = 1.5
    return x


def grad_problem(kind, xshape, kw, nd, specials, dtype, seed=4):
    """(grad spec, (dy, [indices]) in the backend layout): indices from the oracle's forward."""
    rng = np.random.default_rng(seed)
    x = rand(rng, xshape, dtype)
    if specials == "x":
        x = _special_x(x, rng)
    is_max = kind in ("max", "adaptive_max")
    fwd = fastconv.pool_spec(kind, x, spatial_dims=nd, return_indices=is_max, **kw)
    dy = rand(rng, fwd.output_shape, dtype)
    if specials == "dy":
        flat = dy.reshape(-1)
        k = min(2, flat.size)
        flat[rng.choice(flat.size, size=k, replace=False)] = (np.nan, np.inf)[:k]
    gkw = {k: v for k, v in kw.items() if k != "output_size_"}
    spec = pool_grad_spec(kind, dy, x, spatial_dims=nd, **gkw)
    arrays = (dy.reshape(spec.operands()[0]),)
    if is_max:
        forward = oracle.max_pool if kind == "max" else oracle.adaptive_max_pool
        _, idx = forward(fwd, x.reshape(fwd.input_shape))
        arrays += (idx.reshape(spec.operands()[1]),)
    return spec, arrays


def _case(name, dtype, seed=4):
    return grad_problem(*GRAD_CASES[name], dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_pool_gradient_matches_oracle(target, case, dtype):
    spec, arrays = _case(case, dtype)
    assert spec.op == GRAD_CASES[case][0] + "_pool_backward"
    assert_grad_matches(run_family(target, "pool_backward", spec, arrays), spec, *arrays)


def test_cases_reach_what_they_claim():
    """The overlap cases really send several windows' dy to one position, and the ties/NaN cases really
    give indices shared between windows (otherwise the accumulation would go untested)."""
    for case in ("max_k3s2p1", "max_overlap_s1", "max_dilated_s1", "adaptive_max_upsample", "max_1d_dilated"):
        spec, (dy, idx) = _case(case, "float32")
        counts = np.stack([np.bincount(p, minlength=spec.H * spec.W) for p in idx.reshape(spec.N * spec.C, -1)])
        assert counts.max() >= 2, case
    assert windows_per_position(_case("avg_overlap_s1_exclude", "float32")[0]) >= 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_ceil_dilated", "avg_exclude_pad_ceil", "adaptive_max_upsample",
                                  "adaptive_avg_nondividing"])
def test_pool_gradient_int64_index_instantiations(target, index64, case, dtype):
    spec, arrays = _case(case, dtype, seed=5)
    assert all(", long long" in lc.kernel for lc in FAMILY.plan(spec).launches)
    assert_grad_matches(run_family(target, "pool_backward", spec, arrays), spec, *arrays)


# ---------------------------------------------------------------------------------------------------
# max_unpool
# ---------------------------------------------------------------------------------------------------
def unpool_by_hand(spec, x, idx):
    """The rule written out: zeros, then every element of every plane in row-major order written at its
    index (so the last of repeated indices stays)."""
    out = np.zeros((spec.N * spec.C, spec.H * spec.W), dtype=x.dtype)
    xs, ids = x.reshape(spec.N * spec.C, -1), idx.reshape(spec.N * spec.C, -1)
    for plane in range(spec.N * spec.C):
        for j in range(ids.shape[1]):
            out[plane, ids[plane, j]] = xs[plane, j]
    return out.reshape(spec.output_layout)


#: name -> (x shape, unpool kwargs, spatial dims, where the indices come from)
UNPOOL_CASES = {
    # indices of an overlapping max pool (k3 s2 p1, ties in its input): repeats inside planes
    "from_overlapping_pool": ((2, 3, 5, 5), dict(kernel_size=3, stride=2, padding=1, output_size=(9, 10)), 2, "pool"),
    # random indices with many repeats, default output size
    "repeated_random": ((2, 3, 4, 5), dict(kernel_size=2), 2, "random"),
    # every element of a plane names the same position (the most contended claim)
    "all_same_index": ((1, 2, 6, 7), dict(kernel_size=2, stride=2), 2, "same"),
    # output_size above the default, NaN and inf among the values
    "output_size_nan": ((1, 2, 3, 4), dict(kernel_size=3, stride=2, output_size=(8, 10)), 2, "random-nan"),
    "unpool_1d": ((2, 3, 9), dict(kernel_size=3, stride=2, padding=1), 1, "random"),
}


def unpool_problem(case, dtype, seed=7):
    xshape, kw, nd, source = UNPOOL_CASES[case]
    rng = np.random.default_rng(seed)
    x = rand(rng, xshape, dtype)
    probe = unpool_spec(x, np.zeros(xshape, np.int64), spatial_dims=nd, **kw)
    HW = probe.H * probe.W
    if source == "pool":
        src = _special_x(rand(rng, probe.output_shape, dtype), rng)
        fwd = fastconv.pool_spec("max", src, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                                 return_indices=True, spatial_dims=nd)
        assert fwd.output_shape == tuple(xshape)
        _, idx = oracle.max_pool(fwd, src.reshape(fwd.input_shape))
        idx = idx.reshape(xshape)
    elif source == "same":
        idx = np.full(xshape, HW // 2 + 1, np.int64)
    else:
        idx = rng.integers(0, min(HW, max(2, x.size // (xshape[0] * xshape[1] * 2))), size=xshape, dtype=np.int64)
        idx = np.where(rng.random(xshape) < 0.5, idx, rng.integers(0, HW, size=xshape))
    if source == "random-nan":
        x.reshape(-1)[:3] = (np.nan, np.inf, -np.inf)
    spec = unpool_spec(x, idx, spatial_dims=nd, **kw)
    return spec, (x.reshape(spec.operands()[0]), idx.reshape(spec.operands()[1]))


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(UNPOOL_CASES))
def test_max_unpool_matches_oracle_and_the_rule(target, case, dtype, version):
    spec, (x, idx) = unpool_problem(case, dtype)
    counts = np.stack([np.bincount(p, minlength=spec.H * spec.W) for p in idx.reshape(spec.N * spec.C, -1)])
    assert counts.max() >= 2, "every unpool case repeats an index inside a plane"
    out = run_family(target, "pool_backward", spec, (x, idx), version=version)
    assert_grad_matches(out, spec, x, idx)
    hand = unpool_by_hand(spec, x, idx)
    assert np.array_equal(out, hand, equal_nan=True)


def test_max_unpool_ships_v2_three_launches():
    spec, _ = unpool_problem("repeated_random", "float32")
    names = [lc.kernel.split("<")[0] for lc in FAMILY.plan(spec).launches]
    assert names == ["max_unpool2d_init_v2", "max_unpool2d_claim_v2", "max_unpool2d_write_v2"]
    assert [lc.kernel.split("<")[0] for lc in FAMILY.plan(spec, version=1).launches] == ["max_unpool2d_v1"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_max_unpool_int64_index_instantiations(target, index64, dtype, version):
    spec, (x, idx) = unpool_problem("from_overlapping_pool", dtype, seed=8)
    assert all(", long long" in lc.kernel for lc in FAMILY.plan(spec, version=version).launches)
    out = run_family(target, "pool_backward", spec, (x, idx), version=version)
    assert np.array_equal(out, unpool_by_hand(spec, x, idx), equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# Bitwise reproducible whatever the schedule
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["max_overlap_s1", "avg_overlap_s1_exclude", "adaptive_avg_upsample", "unpool"])
def test_results_do_not_depend_on_the_thread_order(which):
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    if which == "unpool":
        spec, arrays = unpool_problem("all_same_index", "float32")
    else:
        spec, arrays = _case(which, "float32")
    outs = [run_plan(("cuda-emu", order), spec, FAMILY.plan(spec), arrays, seed=seed)
            for order, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2))]
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()


# ---------------------------------------------------------------------------------------------------
# A small derandomized fuzz over the pool gradients
# ---------------------------------------------------------------------------------------------------
@st.composite
def grad_problems(draw):
    kind = draw(st.sampled_from(["max", "avg", "adaptive_max", "adaptive_avg"]))
    nd = draw(st.sampled_from([1, 2]))
    sizes = tuple(draw(st.integers(1, 12)) for _ in range(nd))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + sizes
    if kind.startswith("adaptive"):
        kw = dict(output_size_=tuple(draw(st.integers(1, 14)) for _ in range(nd)))
    else:
        k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
        dil = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if kind == "max" else (1,) * nd
        if draw(st.booleans()):     # per-side (beyond torch): each side up to dil*(k-1)
            pad = tuple((draw(st.integers(0, d * (kk - 1))), draw(st.integers(0, d * (kk - 1))))
                        for kk, d in zip(k, dil))
        else:
            pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        kw = dict(kernel_size=k, stride=tuple(draw(st.integers(1, 3)) for _ in range(nd)), padding=pad,
                  ceil_mode=draw(st.booleans()))
        if kind == "max":
            kw["dilation"] = dil
        else:
            kw["count_include_pad"] = draw(st.booleans())
            if nd == 2 and draw(st.booleans()):
                kw["divisor_override"] = draw(st.sampled_from([-2, 1, 3, 7]))
        try:
            fastconv.pool_spec(kind, np.zeros(shape, np.float32), spatial_dims=nd, **kw)
        except ValueError:
            kw["kernel_size"] = tuple(1 for _ in range(nd))
            kw["padding"] = 0
            kw.pop("dilation", None)
    dtype = draw(st.sampled_from(DTYPES))
    specials = draw(st.sampled_from(["", "x" if "max" in kind else "dy"]))
    return kind, shape, kw, nd, specials, dtype, draw(st.integers(0, 2**16))


@settings(max_examples=fuzz_examples(ci=30, long=1000), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(grad_problems())
def test_pool_gradient_fuzz(problem):
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    kind, shape, kw, nd, specials, dtype, seed = problem
    spec, arrays = grad_problem(kind, shape, kw, nd, specials, dtype, seed=seed)
    out = run_plan(("cuda-emu", "random"), spec, FAMILY.plan(spec), arrays, seed=seed)
    assert_grad_matches(out, spec, *arrays)


@st.composite
def unpool_problems(draw):
    nd = draw(st.sampled_from([1, 2]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + tuple(draw(st.integers(1, 6)) for _ in range(nd))
    k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    kw = dict(kernel_size=k, stride=tuple(draw(st.integers(1, 3)) for _ in range(nd)))
    return shape, kw, nd, draw(st.sampled_from(DTYPES)), draw(st.integers(1, 8)), draw(st.integers(0, 2**16))


@settings(max_examples=fuzz_examples(ci=20, long=500), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(unpool_problems())
def test_max_unpool_fuzz(problem):
    """Random indices drawn from few positions (many repeats) through both versions: the rule by hand."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    shape, kw, nd, dtype, spread, seed = problem
    rng = np.random.default_rng(seed)
    x = rand(rng, shape, dtype)
    probe = unpool_spec(x, np.zeros(shape, np.int64), spatial_dims=nd, **kw)
    idx = rng.integers(0, min(spread, probe.H * probe.W), size=shape)
    spec = unpool_spec(x, idx, spatial_dims=nd, **kw)
    arrays = (x.reshape(spec.operands()[0]), idx.reshape(spec.operands()[1]))
    hand = unpool_by_hand(spec, *arrays)
    for version in (1, 2):
        out = run_plan(("cuda-emu", "random"), spec, FAMILY.plan(spec, version=version), arrays, seed=seed)
        assert np.array_equal(out, hand, equal_nan=True), version


# ---------------------------------------------------------------------------------------------------
# Limits, versions, names
# ---------------------------------------------------------------------------------------------------
def _fake(shape, dtype="float32"):
    return np.broadcast_to(np.zeros((), dtype), shape)


def test_reasons_and_versions():
    spec, _ = _case("avg_1d", "float32")
    assert FAMILY.reasons(spec) == []
    dilated = dataclasses.replace(spec, dil_w=2)          # not reachable from the API: a guard
    assert any("undilated" in r for r in FAMILY.reasons(dilated))
    with pytest.raises(ValueError, match="no avg_pool_backward kernel version 2"):
        FAMILY.plan(spec, version=2)
    with pytest.raises(ValueError, match="one variant"):
        FAMILY.plan(spec, "any")
    # a plane of more than 2^31 - 1 pooled elements does not fit the unpool owner's int32 positions
    big = unpool_spec(_fake((1, 1, 2**16, 2**15 + 1)), _fake((1, 1, 2**16, 2**15 + 1), "int64"), kernel_size=1)
    assert big.P * big.Q > INT32_MAX
    assert any("32-bit owner workspace" in r for r in FAMILY.reasons(big))
    ok = unpool_spec(_fake((1, 1, 2**16, 2**15 - 1)), _fake((1, 1, 2**16, 2**15 - 1), "int64"), kernel_size=1)
    assert FAMILY.reasons(ok) == []
    # a row whose windows reach past 2^31 - 1: refused like the forward pool
    long_row = pool_grad_spec("max", _fake((1, 1, 2**30)), _fake((1, 1, 2**31 - 2)), kernel_size=5, stride=2,
                              padding=2, ceil_mode=True, spatial_dims=1)
    assert any("32-bit" in r for r in FAMILY.reasons(long_row))


def test_implementations_are_named_and_selected():
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    for case in ("max_k3s2p1", "avg_1d", "adaptive_max_1d", "adaptive_avg_upsample"):
        spec, _ = _case(case, "float32")
        assert _dispatch.select(spec, "cuda-emu").name == f"cuda-emu:{spec.op}:direct"
    spec, _ = unpool_problem("repeated_random", "float16")
    assert _dispatch.select(spec, "cuda-emu").name == "cuda-emu:max_unpool:direct"


# ---------------------------------------------------------------------------------------------------
# Backend "cuda"'s own launch path (kernel loading, buffers, int32 workspace) over the CuPy shim
# ---------------------------------------------------------------------------------------------------
def test_plans_through_the_cuda_backend_module(cuda_shim):
    """The "cuda" backend's execute (RawModule compile, cupy.empty buffers, launches) runs these plans here
    through tests/cuda/cupy_shim.py; on a GPU the target fixture runs them for real."""
    from . import cupy_shim
    for kind, spec, arrays in ([("grad",) + _case(c, "float32") for c in ("max_ceil_dilated", "avg_exclude_pad_ceil",
                                                                          "adaptive_max_upsample")]
                               + [("unpool",) + unpool_problem("from_overlapping_pool", "float16")]):
        out = cuda_shim.execute(FAMILY.plan(spec), {n: cupy_shim.asarray(a) for n, a in zip(spec.ARRAYS, arrays)})
        assert type(out) is cupy_shim.ndarray
        assert_grad_matches(out.get(), spec, *arrays)
        if kind == "unpool":
            assert np.array_equal(out.get(), unpool_by_hand(spec, *arrays), equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# The public API end to end
# ---------------------------------------------------------------------------------------------------
def _public_grad(backend, name, dy, x, *args, **kw):
    out = public(backend, getattr(fastconv.grad, name), dy, x, *args, **kw)
    ref = public("numpy", getattr(fastconv.grad, name), dy, x, *args, **kw)
    return out, ref


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_pool_gradients(backend, dtype):
    rng = np.random.default_rng(11)
    x = _special_x(rand(rng, (2, 3, 9, 8), dtype), rng)
    x1 = rand(rng, (3, 14), dtype)                                       # unbatched 1-D
    calls = [
        ("max_pool2d", x, (3, 2, 1), dict(ceil_mode=True), fastconv.max_pool2d),
        ("max_pool1d", x1, (3, 1, 1), dict(dilation=2), fastconv.max_pool1d),
        ("avg_pool2d", x, (3, 2, 1), dict(ceil_mode=True, count_include_pad=False), fastconv.avg_pool2d),
        ("avg_pool2d", x, ((2, 3), 1, (1, 1)), dict(divisor_override=4), fastconv.avg_pool2d),
        ("avg_pool1d", x1, (4, 3, 2), dict(ceil_mode=True), fastconv.avg_pool1d),
    ]
    for name, inp, args, kw, forward in calls:
        y = forward(inp, *args, backend="numpy", **kw)
        dy = rand(rng, y.shape, dtype)
        out, ref = _public_grad(backend, name, dy, inp, *args, **kw)
        assert out.dtype == np.dtype(dtype) and out.shape == inp.shape, name
        # float16 runs here with float accumulation and one rounding; the oracle's is from float64
        tol = (8 * _ACC_EPS[dtype] + float(np.finfo(dtype).eps)) * 8 * np.abs(dy.astype(np.float64)).max()
        assert_within(out.astype(np.float64), ref.astype(np.float64), tol, SimpleNamespace(dtype=dtype))
        if name.startswith("max"):   # with the forward's indices passed in
            _, idx = forward(inp, *args, backend="numpy", return_indices=True, **kw)
            if _dispatch.BACKENDS[backend].array_kind == "cupy":
                import cupy
                idx = cupy.asarray(idx)
            out2 = public(backend, getattr(fastconv.grad, name), dy, inp, *args, indices=idx, **kw)
            assert np.array_equal(out2, out, equal_nan=True)
    for name, size, forward in (("adaptive_max_pool2d", (4, 11), fastconv.adaptive_max_pool2d),
                                ("adaptive_avg_pool2d", (5, 3), fastconv.adaptive_avg_pool2d),
                                ("adaptive_max_pool1d", 20, fastconv.adaptive_max_pool1d),
                                ("adaptive_avg_pool1d", 5, fastconv.adaptive_avg_pool1d)):
        inp = x if name.endswith("2d") else x1
        dy = rand(rng, forward(inp, size, backend="numpy").shape, dtype)
        out, ref = _public_grad(backend, name, dy, inp)
        assert out.dtype == np.dtype(dtype) and out.shape == inp.shape, name
        tol = (8 * _ACC_EPS[dtype] + float(np.finfo(dtype).eps)) * 8 * np.abs(dy.astype(np.float64)).max()
        assert_within(out.astype(np.float64), ref.astype(np.float64), tol, SimpleNamespace(dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_max_unpool(backend, dtype):
    rng = np.random.default_rng(12)
    src = _special_x(rand(rng, (2, 3, 9, 10), dtype), rng)
    y, idx = fastconv.max_pool2d(src, 3, 2, 1, return_indices=True, backend="numpy")
    out = public(backend, fastconv.max_unpool2d, y, idx, 3, 2, 1, output_size=src.shape[-2:])
    ref = fastconv.max_unpool2d(y, idx, 3, 2, 1, output_size=src.shape[-2:], backend="numpy")
    assert out.dtype == np.dtype(dtype) and out.shape == src.shape
    assert np.array_equal(out, ref, equal_nan=True)
    x1 = rand(rng, (3, 6), dtype)
    i1 = rng.integers(0, 4, size=(3, 6))                                 # unbatched, heavy repeats
    out1 = public(backend, fastconv.max_unpool1d, x1, i1, 2)
    assert np.array_equal(out1, fastconv.max_unpool1d(x1, i1, 2, backend="numpy"), equal_nan=True)
