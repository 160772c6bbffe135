"""The depthwise kernel (kernels/depthwise.cu) and the v2 pools (kernels/pool.cu) against the NumPy oracle.

Like tests/test_cuda_kernels.py: through backend "cuda-emu" in all three thread orders (forward, reverse,
random), and through backend "cuda" with the same cases when a GPU is present. Every instantiation the
launcher can pick is run on small shapes that reach its edges: depthwise with the fixed 3x3 stride-1 and
stride-2 filters and the any-filter one, several planes per block and several tiles per plane, partial
tiles, channel multipliers, asymmetric padding, dilation, 1-D, a tile shrunk to fit shared memory, Inf/NaN
weights meeting the padding, int64 indices; pools through the "any", "pair" and "global" v2 kernels (and v1,
which stays beside them), NaN, ties, -inf planes, a misaligned input for the paired loads, int64 indices.
Expected values come only from the oracle.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch
from fastconv._backends import _cuda_launch as L
from fastconv._backends import numpy_oracle as oracle
from fastconv.testing import assert_conv_close, assert_pool_close, to_numpy

from .test_cuda_kernels import DTYPES, target  # noqa: F401  (the shared emulator/GPU target fixture)


def run_plan(target, spec, plan, arrays, misalign=False):
    """Run a launch plan on the target; NumPy results. ``misalign``: on the GPU, place each input one
    element into its buffer (on the emulator the NumPy arrays passed in are used as they are)."""
    backend, order = target
    inputs = L.inputs_for(spec, arrays)
    if backend == "cuda-emu":
        from fastconv._backends import cuda_emu
        return cuda_emu.run_plan(plan, inputs, order=order, seed=1234)
    import cupy

    from fastconv._backends import cuda
    def dev(a):
        if not misalign:
            return cupy.asarray(a)
        buf = cupy.empty(a.size + 1, a.dtype)
        buf[1:] = cupy.asarray(a.ravel())
        return buf[1:].reshape(a.shape)
    out = cuda.run_plan(plan, {k: dev(v) for k, v in inputs.items()})
    cupy.cuda.get_current_stream().synchronize()
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------
# Depthwise
# ---------------------------------------------------------------------------------------------------
#: name -> (x shape, w shape, bias?, conv kwargs, spatial dims, expected variant)
DW_CASES = {
    # several whole planes per block, partial row group (P = 9 is not a multiple of 4)
    "3x3s1_planes": ((2, 3, 9, 13), (3, 1, 3, 3), True, dict(padding=1), 2, "3x3s1"),
    # channel multiplier 2, asymmetric padding, stride 2
    "3x3s2_mult2_asym": ((1, 3, 11, 10), (6, 1, 3, 3), False, dict(stride=2, padding=((1, 0), (0, 2))), 2, "3x3s2"),
    # several tiles in p and q (tile_q 70 of Q 140, tile_p 24 of P 70), no padding
    "3x3s1_tiles": ((1, 2, 72, 143), (2, 1, 3, 3), True, dict(), 2, "3x3s1"),
    # any filter: stride (2, 3), dilation (2, 1), asymmetric padding, multiplier 2
    "any_strided_dilated": ((2, 2, 10, 9), (4, 1, 3, 2), True,
                            dict(stride=(2, 3), dilation=(2, 1), padding=((2, 1), (0, 2))), 2, "any"),
    "any_5x5": ((1, 4, 8, 8), (4, 1, 5, 5), False, dict(padding=2), 2, "any"),
    "3x3_dilated": ((1, 2, 9, 9), (2, 1, 3, 3), True, dict(padding=2, dilation=2), 2, "any"),
    "conv1d": ((2, 4, 30), (8, 1, 5), True, dict(stride=2, padding=2), 1, "any"),
}


def _dw_problem(case, dtype, seed=0):
    xs, ws, has_b, kw, nd, _ = DW_CASES[case]
    rng = np.random.default_rng(seed)
    x, w = _rand(rng, xs, dtype), _rand(rng, ws, dtype)
    b = _rand(rng, (ws[0],), dtype) if has_b else None
    spec = fastconv.conv_spec(x, w, b, groups=xs[1], spatial_dims=nd, **kw)
    return spec, (x.reshape(spec.input_shape), w.reshape(spec.weight_shape), b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(DW_CASES))
def test_depthwise_matches_oracle(target, case, dtype):
    spec, arrays = _dw_problem(case, dtype)
    assert L.depthwise_variant(spec) == DW_CASES[case][-1]
    plan = L.conv_plan(spec, "depthwise")
    out = run_plan(target, spec, plan, arrays)
    assert out.dtype == np.dtype(dtype)
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


def test_depthwise_geometry_covers_its_edges():
    """The cases above reach what they claim: several planes per block, several tiles, a shrunk tile."""
    geo = {c: L._depthwise_geometry(_dw_problem(c, "float32")[0]) for c in DW_CASES}
    assert geo["3x3s1_planes"][2] > 1                                  # planes per block
    spec = _dw_problem("3x3s1_tiles", "float32")[0]
    tile_p, tile_q = geo["3x3s1_tiles"][:2]
    assert tile_p < spec.P and tile_q < spec.Q and spec.P % tile_p and spec.Q % tile_q   # partial tiles


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_depthwise_tile_shrunk_to_fit_shared_memory(target, dtype):
    """A stride-2 plane whose whole-plane patch passes 48 KiB in float64: the tile shrinks and still matches."""
    rng = np.random.default_rng(7)
    x, w = _rand(rng, (1, 1, 112, 60), dtype), _rand(rng, (1, 1, 3, 3), dtype)
    spec = fastconv.conv_spec(x, w, stride=2, padding=1, groups=1)
    tile_p, tile_q, planes, ph, pw, smem, threads = L._depthwise_geometry(spec)
    assert smem <= L.MAX_DYNAMIC_SMEM
    if dtype == "float64":
        assert tile_p < spec.P  # shrunk from the whole plane
    out = run_plan(target, spec, L.conv_plan(spec, "depthwise"), (x, w, None))
    assert_conv_close(out, oracle.conv(spec, x, w), spec, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["3x3s2_mult2_asym", "any_strided_dilated"])
def test_depthwise_int64_index_instantiations(target, monkeypatch, case, dtype):
    monkeypatch.setattr(L, "_force_index64", True)
    spec, arrays = _dw_problem(case, dtype, seed=1)
    plan = L.conv_plan(spec, "depthwise")
    assert ", long long" in plan.launches[0].kernel
    assert_conv_close(run_plan(target, spec, plan, arrays), oracle.conv(spec, *arrays), spec, *arrays)


@pytest.mark.parametrize("case", ["3x3s1_planes", "3x3s2_mult2_asym", "any_strided_dilated"])
def test_depthwise_nonfinite_weights_skip_padded_taps(target, case):
    """Inf and NaN weights at the border never meet a padded zero: Inf (not NaN) where the oracle has Inf,
    NaN only where a NaN weight meets a real input; the other channels stay on the fast path."""
    spec, (x, w, b) = _dw_problem(case, "float32", seed=2)
    x = np.abs(x) + 1.0
    w = w.copy()
    w[0, 0, 0, 0] = np.inf
    w[-1, 0, -1, -1] = np.nan
    ref = oracle.conv(spec, x, w, b)
    assert np.isinf(ref).any() and not np.isnan(ref).all()
    out = run_plan(target, spec, L.conv_plan(spec, "depthwise"), (x, w, b))
    with np.errstate(invalid="ignore"):
        assert_conv_close(out, ref, spec, x, w, b)


def test_depthwise_reasons():
    x = np.zeros((1, 4, 8, 8), np.float32)
    spec = fastconv.conv_spec(x, np.zeros((4, 2, 3, 3), np.float32), groups=2)
    reasons = L.conv_reasons(spec, "depthwise")
    assert reasons and "one input channel per group" in reasons[0]
    with pytest.raises(ValueError, match="one input channel per group"):
        L.conv_plan(spec, "depthwise")
    # a filter and dilation whose patch cannot fit shared memory even as one column
    big = fastconv.conv_spec(np.zeros((1, 1, 130, 140)), np.zeros((1, 1, 31, 31)), dilation=4)
    reasons = L.conv_reasons(big, "depthwise")
    assert reasons and "shared memory" in reasons[0]
    ok = fastconv.conv_spec(x, np.zeros((8, 1, 3, 3), np.float32), groups=4, padding=1)
    assert L.conv_reasons(ok, "depthwise") == []


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_depthwise_public_and_dispatch(dtype):
    """algo="depthwise" through the public API; algo="auto" picks it for a depthwise spec on cuda-emu."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    rng = np.random.default_rng(8)
    x, w, b = _rand(rng, (2, 3, 7, 9), dtype), _rand(rng, (6, 1, 3, 3), dtype), _rand(rng, (6,), dtype)
    kw = dict(stride=1, padding="same", groups=3)
    out = fastconv.conv2d(x, w, b, backend="cuda-emu", algo="depthwise", **kw)
    spec = fastconv.conv_spec(x, w, b, **kw)
    assert out.dtype == np.dtype(dtype) and out.shape == spec.output_shape
    assert_conv_close(out, oracle.conv(spec, x, w, b), spec, x, w, b)
    assert _dispatch.select(spec, "cuda-emu", "auto").algo == "depthwise"
    dense = fastconv.conv_spec(x, np.zeros((6, 3, 3, 3), dtype))
    assert _dispatch.select(dense, "cuda-emu", "auto").algo != "depthwise"


# ---------------------------------------------------------------------------------------------------
# Pools v2
# ---------------------------------------------------------------------------------------------------
#: name -> (kind, x shape, pool kwargs, spatial dims, v2 path)
POOL2_CASES = {
    "max_k3s2p1_idx": ("max", (2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1, return_indices=True), 2, "any"),
    "max_ceil_dilated": ("max", (1, 2, 11, 9), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1),
                                                    dilation=(2, 1), ceil_mode=True, return_indices=True), 2, "any"),
    "max_1d": ("max", (2, 3, 17), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True,
                                       return_indices=True), 1, "any"),
    "avg_exclude_pad_ceil": ("avg", (2, 3, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                        count_include_pad=False), 2, "any"),
    "avg_divisor_override": ("avg", (1, 2, 8, 7), dict(kernel_size=(2, 3), stride=1, padding=(1, 1),
                                                       divisor_override=5), 2, "any"),
    "adaptive_max": ("adaptive_max", (2, 3, 10, 7), dict(output_size_=(4, 3), return_indices=True), 2, "any"),
    "adaptive_avg_1d": ("adaptive_avg", (2, 3, 13), dict(output_size_=5), 1, "any"),
    # pair: 2 wide at stride 2; rows with ceil_mode overhang (H odd), padding and dilation
    "max_pair_ceil_idx": ("max", (2, 3, 9, 12), dict(kernel_size=2, ceil_mode=True, return_indices=True), 2, "pair"),
    "max_pair_rows_pad_dil": ("max", (1, 2, 11, 10), dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 0),
                                                          dilation=(2, 1), return_indices=True), 2, "pair"),
    "avg_pair_ceil_exclude": ("avg", (2, 3, 9, 8), dict(kernel_size=2, ceil_mode=True, count_include_pad=False), 2,
                              "pair"),
    "avg_pair_rows_pad": ("avg", (1, 3, 7, 6), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)), 2, "pair"),
    "max_pair_1d": ("max", (2, 3, 16), dict(kernel_size=2, return_indices=True), 1, "pair"),
    # global: the window is the whole plane; planes of more and fewer than 32 elements
    "avg_global": ("avg", (2, 5, 7, 7), dict(kernel_size=7), 2, "global"),
    "avg_global_override": ("avg", (2, 3, 3, 5), dict(kernel_size=(3, 5), divisor_override=4), 2, "global"),
    "max_global_idx": ("max", (2, 3, 6, 9), dict(kernel_size=(6, 9), return_indices=True), 2, "global"),
    "adaptive_avg_1x1": ("adaptive_avg", (3, 4, 9, 11), dict(output_size_=1), 2, "global"),
    "adaptive_max_1x1_idx": ("adaptive_max", (3, 4, 2, 3), dict(output_size_=1, return_indices=True), 2, "global"),
    "adaptive_max_1d_global": ("adaptive_max", (2, 3, 40), dict(output_size_=1, return_indices=True), 1, "global"),
}


def _special_values(x, kind, rng):
    """Max pools: NaNs (several in some windows), ties, -inf runs and +-0, so the scan rule is exercised."""
    if "max" not in kind:
        return x
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)] = 1.5       # ties
    flat[rng.choice(flat.size, size=max(1, flat.size // 10), replace=False)] = -np.inf
    flat[rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)] = -0.0
    flat[rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)] = 0.0
    plane = x.reshape(-1, x.shape[-1] * (x.shape[-2] if x.ndim == 4 else 1))
    plane[0] = -np.inf                       # a whole plane of -inf: the first index
    if plane.shape[0] > 1:
        plane[1] = 1.5                       # a whole plane of ties: the first index
    return x


def _pool2_problem(case, dtype, seed=4):
    kind, xs, kw, nd, _ = POOL2_CASES[case]
    rng = np.random.default_rng(seed)
    x = _special_values(_rand(rng, xs, dtype), kind, rng)
    spec = fastconv.pool_spec(kind, x, spatial_dims=nd, **kw)
    return spec, x.reshape(spec.input_shape)


def _pool_ref(spec, x):
    return {"max": oracle.max_pool, "avg": oracle.avg_pool, "adaptive_max": oracle.adaptive_max_pool,
            "adaptive_avg": oracle.adaptive_avg_pool}[spec.kind](spec, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL2_CASES))
def test_pool_v2_matches_oracle(target, case, dtype):
    spec, x = _pool2_problem(case, dtype)
    assert L.pool_path(spec) == POOL2_CASES[case][-1]
    plan = L.pool_plan(spec)
    assert "_v2<" in plan.launches[0].kernel
    assert_pool_close(run_plan(target, spec, plan, (x,)), _pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("version,path", [(1, None), (2, "any")], ids=["v1", "v2_any"])
@pytest.mark.parametrize("case", [c for c in POOL2_CASES if POOL2_CASES[c][-1] != "any"])
def test_pool_other_kernels_on_special_paths(target, case, version, path):
    """The spec the pair/global kernels take also runs through v1 and the general v2 kernel (float32)."""
    spec, x = _pool2_problem(case, "float32")
    plan = L.pool_plan(spec, version=version, path=path)
    assert_pool_close(run_plan(target, spec, plan, (x,)), _pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_pair_misaligned_input(target, kind, dtype):
    """A contiguous view that starts one element into its buffer: the pair kernel falls back to plain loads."""
    rng = np.random.default_rng(9)
    base = _rand(rng, (2 * 3 * 6 * 8 + 1,), dtype)
    x = _special_values(base[1:].reshape(2, 3, 6, 8), kind, rng)
    assert x.flags.c_contiguous and x.ctypes.data % (2 * x.itemsize) != 0
    kw = dict(kernel_size=2, return_indices=True) if kind == "max" else dict(kernel_size=2)
    spec = fastconv.pool_spec(kind, x, **kw)
    assert L.pool_path(spec) == "pair"
    out = run_plan(target, spec, L.pool_plan(spec), (x,), misalign=True)
    assert_pool_close(out, _pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_pair_ceil_idx", "max_global_idx", "avg_exclude_pad_ceil", "adaptive_avg_1x1"])
def test_pool_v2_int64_index_instantiations(target, monkeypatch, case, dtype):
    monkeypatch.setattr(L, "_force_index64", True)
    spec, x = _pool2_problem(case, dtype, seed=5)
    plan = L.pool_plan(spec)
    assert ", long long" in plan.launches[0].kernel
    assert_pool_close(run_plan(target, spec, plan, (x,)), _pool_ref(spec, x), spec, x)


def test_pool_path_predicates():
    """The plan picks v2 kernels by exact predicates on the spec: the shapes of the issue's pool layers."""
    def spec(kind, c, h, k, s, p, **kw):
        return fastconv.pool_spec(kind, np.zeros((1, c, h, h), np.float32), kernel_size=k, stride=s, padding=p, **kw)
    assert L.pool_path(spec("max", 64, 112, 3, 2, 1)) == "any"          # resnet stem
    assert L.pool_path(spec("avg", 2048, 7, 7, 7, 0)) == "global"       # resnet global average
    assert L.pool_path(spec("max", 64, 224, 2, 2, 0)) == "pair"         # vgg
    assert L.pool_path(spec("avg", 6, 28, 2, 2, 0)) == "pair"           # lenet
    assert L.pool_path(spec("max", 1, 7, 2, 2, 0)) == "any"             # W odd: no pairs
    assert L.pool_path(spec("avg", 1, 7, 7, 7, 1, count_include_pad=False)) == "any"  # padded: not global
    with pytest.raises(ValueError, match="does not apply"):
        L.pool_plan(spec("max", 64, 112, 3, 2, 1), path="pair")
