"""Family ``depthwise`` (kernels/depthwise.cu, fastconv/_cuda/depthwise.py) against the NumPy oracle.

Through backend "cuda-emu" in all three thread orders (forward, reverse, random), and through backend "cuda"
with the same cases when a GPU is present. Every variant is run on small shapes that reach its edges: the
fixed 3x3 stride-1 and stride-2 filters and the any-filter one, several planes per block and several tiles
per plane, partial tiles, channel multipliers, asymmetric padding, dilation, 1-D, a tile shrunk to fit
shared memory, Inf/NaN weights meeting the padding, int64 indices. Expected values come only from the
oracle.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv._cuda.plan import MAX_DYNAMIC_SMEM
from fastconv.testing import assert_conv_close

from .common import DTYPES, first_variant, oracle, rand, run_plan

FAMILY = _cuda.family("depthwise")
_rand = rand


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
    assert first_variant(FAMILY, spec) == DW_CASES[case][-1]
    plan = FAMILY.plan(spec, DW_CASES[case][-1])
    out = run_plan(target, spec, plan, arrays)
    assert out.dtype == np.dtype(dtype)
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


def test_depthwise_geometry_covers_its_edges():
    """The cases above reach what they claim: several planes per block, several tiles, a shrunk tile."""
    geo = {c: FAMILY.geometry(_dw_problem(c, "float32")[0]) for c in DW_CASES}
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
    tile_p, tile_q, planes, ph, pw, smem, threads = FAMILY.geometry(spec)
    assert smem <= MAX_DYNAMIC_SMEM
    if dtype == "float64":
        assert tile_p < spec.P  # shrunk from the whole plane
    out = run_plan(target, spec, FAMILY.plan(spec, first_variant(FAMILY, spec)), (x, w, None))
    assert_conv_close(out, oracle.conv(spec, x, w), spec, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["3x3s2_mult2_asym", "any_strided_dilated"])
def test_depthwise_int64_index_instantiations(target, index64, case, dtype):
    spec, arrays = _dw_problem(case, dtype, seed=1)
    plan = FAMILY.plan(spec, first_variant(FAMILY, spec))
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
    out = run_plan(target, spec, FAMILY.plan(spec, first_variant(FAMILY, spec)), (x, w, b))
    with np.errstate(invalid="ignore"):
        assert_conv_close(out, ref, spec, x, w, b)


def test_depthwise_reasons():
    x = np.zeros((1, 4, 8, 8), np.float32)
    spec = fastconv.conv_spec(x, np.zeros((4, 2, 3, 3), np.float32), groups=2)
    for v in FAMILY.VARIANTS:
        reasons = FAMILY.reasons(spec, v)
        assert reasons and "one input channel per group" in reasons[0]
    with pytest.raises(ValueError, match="one input channel per group"):
        FAMILY.plan(spec, "any")
    # a filter and dilation whose patch cannot fit shared memory even as one column
    big = fastconv.conv_spec(np.zeros((1, 1, 130, 140)), np.zeros((1, 1, 31, 31)), dilation=4)
    assert FAMILY.reasons(big, "any") == []
    reasons = FAMILY.plan(big, "any").reasons()
    assert reasons and "shared memory" in reasons[0]
    ok = fastconv.conv_spec(x, np.zeros((8, 1, 3, 3), np.float32), groups=4, padding=1)
    assert FAMILY.reasons(ok, "3x3s1") == [] and FAMILY.reasons(ok, "any") == []
    assert FAMILY.plan(ok, "3x3s1").reasons() == []
    # the fixed variants take exactly their filter and stride
    why = FAMILY.reasons(ok, "3x3s2")
    assert why and "compiled for a 3x3 filter at stride 2" in why[0]
    dil = fastconv.conv_spec(x, np.zeros((8, 1, 3, 3), np.float32), groups=4, padding=2, dilation=2)
    assert FAMILY.reasons(dil, "3x3s1") and FAMILY.reasons(dil, "any") == []


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
    assert _dispatch.select(spec, "cuda-emu", "auto").name == "cuda-emu:conv:depthwise/3x3s1"
    dense = fastconv.conv_spec(x, np.zeros((6, 3, 3, 3), dtype))
    assert _dispatch.select(dense, "cuda-emu", "auto").algo != "depthwise"
