"""Every (kernel, version, dtype) of kernels/*.cu against the NumPy oracle.

Through backend "cuda-emu" (the kernels run on the CPU by fastconv.emu) in all three thread orders --
forward, reverse, random -- so a missing ``__syncthreads`` shows up as a wrong or order-dependent result;
and through backend "cuda" (CuPy) with the same cases when a GPU is present (skipped, saying so, when
not). Both int32 and int64 index instantiations run (int64 forced on small shapes through the launcher's
private knob). Expected values come only from the oracle; tolerances scale with the reduction length
(fastconv.testing).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch
from fastconv._backends import _cuda_launch as L
from fastconv._backends import numpy_oracle as oracle
from fastconv.testing import assert_conv_close, assert_pool_close, to_numpy

DTYPES = ("float16", "float32", "float64")
#: (backend, emulator thread order); the GPU has its own order
TARGETS = [("cuda-emu", "forward"), ("cuda-emu", "reverse"), ("cuda-emu", "random"), ("cuda", None)]
#: every conv kernel version: (algo, version)
CONV_VERSIONS = [("direct", 1), ("direct", 2), ("im2col", 1), ("im2col", 2)]


def _target_id(t):
    return t[0] if t[1] is None else f"{t[0]}-{t[1]}"


def _gpu_setup_or_skip(backend, why):
    """On a GPU: honour FASTCONV_CUPY_NO_POOL=1 (plain cudaMalloc per array, so compute-sanitizer sees
    every buffer's real bounds). Without one: skip, or fail when FASTCONV_REQUIRE_GPU=1
    (tools/gpu_validate.sh sets it, so a GPU run can never pass by skipping)."""
    if backend != "cuda":
        return
    if why is not None and os.environ.get("FASTCONV_REQUIRE_GPU") == "1":
        pytest.fail(f"FASTCONV_REQUIRE_GPU=1 but backend 'cuda' is unavailable: {why}")
    if why is None and os.environ.get("FASTCONV_CUPY_NO_POOL") == "1":
        import cupy
        cupy.cuda.set_allocator(None)


@pytest.fixture(scope="module", params=TARGETS, ids=_target_id)
def target(request):
    backend, order = request.param
    why = _dispatch.availability(backend)
    _gpu_setup_or_skip(backend, why)
    if why is not None:
        if backend == "cuda":
            pytest.skip(f"no GPU here, so backend 'cuda' is not tested on this machine ({why}); "
                        f"the same kernels ran through 'cuda-emu'")
        pytest.skip(f"backend {backend!r} unavailable: {why}")
    return request.param


@pytest.fixture(scope="module", params=["cuda-emu", "cuda"])
def backend(request):
    """A backend name, for the public-API tests (thread orders are covered by the kernel tests)."""
    why = _dispatch.availability(request.param)
    _gpu_setup_or_skip(request.param, why)
    if why is not None:
        pytest.skip(f"backend {request.param!r} unavailable here ({why})")
    return request.param


def run_kernels(target, spec, algo, version, arrays):
    """Run one kernel version on the target; NumPy results."""
    backend, order = target
    if backend == "cuda-emu":
        from fastconv._backends import cuda_emu
        return cuda_emu.run(spec, algo, *arrays, version=version, order=order, seed=1234)
    import cupy

    from fastconv._backends import cuda
    out = cuda.run(spec, algo, *[None if a is None else cupy.asarray(a) for a in arrays], version=version)
    cupy.cuda.get_current_stream().synchronize()
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------
#: name -> (x shape, w shape, bias?, conv kwargs, spatial dims). Small, but covering: several tiles and
#: partial tiles in p, q, k and c (direct v2: 8x16 outputs, 8 channels, 4 input channels per stage;
#: GEMM v2: 64x64 tiles, BK 8), stride, asymmetric padding, dilation, groups, depthwise, 1-D, no bias.
CONV_CASES = {
    "basic": ((2, 4, 9, 11), (6, 4, 3, 3), True, dict(padding=1), 2),
    "strided_asym_dilated_groups": ((2, 4, 9, 11), (6, 2, 3, 3), True,
                                    dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2), 2),
    "depthwise": ((1, 4, 10, 10), (8, 1, 3, 3), False, dict(padding=1, groups=4), 2),
    "multi_tile": ((1, 5, 19, 35), (70, 5, 2, 3), True, dict(stride=1, padding=((0, 1), (1, 1))), 2),
    "conv1d": ((2, 3, 20), (5, 3, 5), True, dict(stride=2, padding=2), 1),
}


def _conv_problem(case, dtype, seed=0):
    xs, ws, has_b, kw, nd = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x, w = _rand(rng, xs, dtype), _rand(rng, ws, dtype)
    b = _rand(rng, (ws[0],), dtype) if has_b else None
    spec = fastconv.conv_spec(x, w, b, spatial_dims=nd, **kw)
    return spec, (x.reshape(spec.input_shape), w.reshape(spec.weight_shape), b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("algo,version", CONV_VERSIONS, ids=[f"{a}_v{v}" for a, v in CONV_VERSIONS])
def test_conv_versions_match_oracle(target, algo, version, case, dtype):
    spec, arrays = _conv_problem(case, dtype)
    out = run_kernels(target, spec, algo, version, arrays)
    assert out.dtype == np.dtype(dtype)
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo,version", CONV_VERSIONS, ids=[f"{a}_v{v}" for a, v in CONV_VERSIONS])
def test_conv_int64_index_instantiations(target, monkeypatch, algo, version, dtype):
    monkeypatch.setattr(L, "_force_index64", True)
    spec, arrays = _conv_problem("strided_asym_dilated_groups", dtype, seed=1)
    plan = L.conv_plan(spec, algo, version)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    out = run_kernels(target, spec, algo, version, arrays)
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


@pytest.mark.parametrize("version", [1, 2])
def test_direct_skips_padded_taps_with_inf_weights(target, version):
    """A padded tap contributes nothing (the oracle's rule): an Inf weight at the border gives Inf, not NaN."""
    spec, (x, w, b) = _conv_problem("basic", "float32", seed=2)
    w = w.copy()
    w[0, 0, 0, 0] = np.inf
    x = np.abs(x) + 1.0  # positive, so the Inf taps that do land inside give +Inf
    ref = oracle.conv(spec, x, w, b)
    out = run_kernels(target, spec, "direct", version, (x, w, b))
    assert not np.isnan(ref).any() and np.isinf(ref).any()
    with np.errstate(invalid="ignore"):  # inf - inf inside the comparison, where both are inf
        assert_conv_close(out, ref, spec, x, w, b)


@pytest.mark.parametrize("version", [1, 2])
def test_nan_input_propagates(target, version):
    """A NaN input reaches exactly the outputs whose windows hold it, through direct and im2col alike."""
    spec, (x, w, b) = _conv_problem("strided_asym_dilated_groups", "float32", seed=3)
    x = x.copy()
    x[1, 2, 4, 5] = np.nan
    ref = oracle.conv(spec, x, w, b)
    assert np.isnan(ref).any()
    assert_conv_close(run_kernels(target, spec, "direct", version, (x, w, b)), ref, spec, x, w, b)
    assert_conv_close(run_kernels(target, spec, "im2col", version, (x, w, b)), ref, spec, x, w, b)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
#: name -> (kind, x shape, pool kwargs, spatial dims, NaN positions)
POOL_CASES = {
    "max_k3s2p1_idx": ("max", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1, return_indices=True), 2, ()),
    "max_ceil_dilated": ("max", (1, 2, 11, 9), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1),
                                                    dilation=(2, 1), ceil_mode=True, return_indices=True), 2, ()),
    "max_nan": ("max", (1, 2, 8, 8), dict(kernel_size=3, stride=2, padding=1, return_indices=True), 2,
                ((0, 0, 3, 3), (0, 0, 3, 4), (0, 1, 0, 0), (0, 1, 7, 7))),
    "max_1d": ("max", (2, 3, 17), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True,
                                       return_indices=True), 1, ()),
    "max_no_idx": ("max", (2, 2, 7, 7), dict(kernel_size=2), 2, ()),
    "avg_include_pad_ceil": ("avg", (2, 3, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), 2, ()),
    "avg_exclude_pad_ceil": ("avg", (2, 3, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                        count_include_pad=False), 2, ()),
    "avg_divisor_override": ("avg", (1, 2, 8, 7), dict(kernel_size=(2, 3), stride=1, padding=(1, 1),
                                                       divisor_override=5), 2, ()),
    "avg_1d": ("avg", (2, 3, 16), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), 1, ()),
    "adaptive_max": ("adaptive_max", (2, 3, 10, 7), dict(output_size_=(4, 3), return_indices=True), 2,
                     ((1, 2, 5, 5),)),
    "adaptive_avg": ("adaptive_avg", (2, 3, 10, 7), dict(output_size_=(3, 5)), 2, ()),
    "adaptive_avg_1d": ("adaptive_avg", (2, 3, 13), dict(output_size_=5), 1, ()),
}


def _pool_problem(case, dtype):
    kind, xs, kw, nd, nans = POOL_CASES[case]
    x = _rand(np.random.default_rng(4), xs, dtype)
    for pos in nans:
        x[pos[:x.ndim]] = np.nan
    spec = fastconv.pool_spec(kind, x, spatial_dims=nd, **kw)
    return spec, x.reshape(spec.input_shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_matches_oracle(target, case, dtype):
    spec, x = _pool_problem(case, dtype)
    ref = {"max": oracle.max_pool, "avg": oracle.avg_pool, "adaptive_max": oracle.adaptive_max_pool,
           "adaptive_avg": oracle.adaptive_avg_pool}[spec.kind](spec, x)
    out = run_kernels(target, spec, "direct", None, (x,))
    assert_pool_close(out, ref, spec, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_ceil_dilated", "avg_exclude_pad_ceil", "adaptive_max"])
def test_pool_int64_index_instantiations(target, monkeypatch, case, dtype):
    monkeypatch.setattr(L, "_force_index64", True)
    spec, x = _pool_problem(case, dtype)
    assert ", long long" in L.pool_plan(spec).launches[0].kernel
    ref = {"max": oracle.max_pool, "avg": oracle.avg_pool,
           "adaptive_max": oracle.adaptive_max_pool}[spec.kind](spec, x)
    assert_pool_close(run_kernels(target, spec, "direct", None, (x,)), ref, spec, x)


# ---------------------------------------------------------------------------------------------------
# Through the public API and dispatch
# ---------------------------------------------------------------------------------------------------
def _public(backend, fn, x, *args, **kw):
    if backend == "cuda":
        import cupy
        x = cupy.asarray(x)
        args = tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
    out = fn(x, *args, backend=backend, **kw)
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_conv(backend, algo, dtype):
    rng = np.random.default_rng(5)
    x, w, b = _rand(rng, (2, 4, 7, 8), dtype), _rand(rng, (6, 2, 3, 3), dtype), _rand(rng, (6,), dtype)
    kw = dict(stride=(1, 2), padding=((1, 1), (0, 2)), dilation=1, groups=2)
    out = _public(backend, fastconv.conv2d, x, w, b, algo=algo, **kw)
    spec = fastconv.conv_spec(x, w, b, **kw)
    assert out.dtype == np.dtype(dtype) and out.shape == spec.output_shape
    assert_conv_close(out, oracle.conv(spec, x, w, b), spec, x, w, b)
    # unbatched 1-D
    x1, w1 = _rand(rng, (3, 12), dtype), _rand(rng, (4, 3, 3), dtype)
    out1 = _public(backend, fastconv.conv1d, x1, w1, algo=algo, padding="same")
    spec1 = fastconv.conv_spec(x1, w1, padding="same", spatial_dims=1)
    ref1 = oracle.conv(spec1, x1.reshape(spec1.input_shape), w1.reshape(spec1.weight_shape)).reshape(out1.shape)
    assert_conv_close(out1, ref1, spec1, x1.reshape(spec1.input_shape), w1.reshape(spec1.weight_shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_pools(backend, dtype):
    x = _rand(np.random.default_rng(6), (2, 3, 9, 8), dtype)
    calls = [
        (fastconv.max_pool2d, "max", dict(kernel_size=3, stride=2, padding=1, return_indices=True), 2),
        (fastconv.avg_pool2d, "avg", dict(kernel_size=2, ceil_mode=True, count_include_pad=False), 2),
        (fastconv.adaptive_avg_pool2d, "adaptive_avg", dict(output_size=(4, None)), 2),
        (fastconv.adaptive_max_pool2d, "adaptive_max", dict(output_size=3, return_indices=True), 2),
        (fastconv.max_pool1d, "max", dict(kernel_size=3, padding=1), 1),
        (fastconv.avg_pool1d, "avg", dict(kernel_size=4, stride=2), 1),
        (fastconv.adaptive_avg_pool1d, "adaptive_avg", dict(output_size=5), 1),
        (fastconv.adaptive_max_pool1d, "adaptive_max", dict(output_size=5, return_indices=True), 1),
    ]
    for fn, kind, kw, nd in calls:
        xi = x if nd == 2 else x[:, :, 0, :]
        out = _public(backend, fn, xi, **kw)
        skw = dict(kw)
        if "output_size" in skw:
            skw["output_size_"] = skw.pop("output_size")
        spec = fastconv.pool_spec(kind, xi, spatial_dims=nd, **skw)
        ref = {"max": oracle.max_pool, "avg": oracle.avg_pool, "adaptive_max": oracle.adaptive_max_pool,
               "adaptive_avg": oracle.adaptive_avg_pool}[kind](spec, xi.reshape(spec.input_shape))
        ref = tuple(r.reshape(spec.output_shape) for r in ref) if isinstance(ref, tuple) \
            else ref.reshape(spec.output_shape)
        assert_pool_close(out, ref, spec, xi)


def test_direct_rejects_oversized_shared_memory_tile_with_reason():
    """A filter/dilation whose input patch does not fit shared memory is refused by direct (with the reason)
    and algo="auto" falls through to a GEMM algorithm."""
    x, w = np.zeros((1, 1, 130, 140)), np.zeros((1, 1, 31, 31))
    spec = fastconv.conv_spec(x, w, dilation=4)
    reasons = L.conv_reasons(spec, "direct")
    assert reasons and "shared memory" in reasons[0]
    assert L.conv_reasons(spec, "im2col") == []
    if _dispatch.availability("cuda-emu") is None:
        with pytest.raises(ValueError, match="shared memory"):
            _dispatch.select(spec, "cuda-emu", "direct")
        assert _dispatch.select(spec, "cuda-emu", "auto").algo in ("im2col", "implicit_gemm")
