"""Family ``implicit_gemm`` (kernels/conv_implicit_gemm.cu, fastconv/_cuda/implicit_gemm.py), every tile
and split-K variant, against the oracle.

Runs through "cuda-emu" in all three thread orders and through "cuda" when a GPU is present (targets and
helpers in tests/cuda/common.py). Cases aim at the kernel's own edges: partial tiles in
m (N*P*Q), n (K/groups) and k (C*R*S), the incremental tap walk across channel boundaries for every R, S,
the 4-wide store path (P*Q % 4 == 0) and the scalar one, and the exact recomputation a block does when its
weights hold Inf/NaN in a padded problem. Expected values come only from the oracle.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv._cuda import plan as P
from fastconv.testing import assert_conv_close

from .common import CONV_CASES, conv_problem, fuzz_examples, fuzz_long, oracle, public, rand, run_family

FAMILY = _cuda.family("implicit_gemm")
TILES = list(FAMILY.VARIANTS)  # every tile, and the split-K variants
IG_DTYPES = FAMILY.DTYPES  # float16 and float32 storage (float64: im2col/direct)
_rand = rand

#: name -> (x shape, w shape, conv kwargs); P*Q noted for the store path
EDGE_CASES = {
    # P*Q = 8*8 = 64 (4-wide stores); K = 70 spans two 64-wide n tiles; C*R*S = 45 (k steps of 8, partial)
    "vec_store_k_tail": ((2, 5, 8, 8), (70, 5, 3, 3), dict(padding=1)),
    # P*Q = 5*7 = 35 (scalar stores, m tiles straddle images); R=2, S=3 walk across channel boundaries
    "odd_pq_rs": ((3, 3, 6, 9), (9, 3, 2, 3), dict(stride=1, padding=((0, 1), (1, 1)), dilation=(2, 1))),
    # 1x1: C*R*S = C, stride 2 gathers every other column
    "pointwise_strided": ((2, 17, 9, 9), (33, 17, 1, 1), dict(stride=2)),
    # a 5x5 filter with S > BK taps per row would need more than one carry per step if handled naively
    "wide_filter": ((1, 2, 12, 13), (4, 2, 5, 11), dict(padding=(2, 5))),
    # M = N*P*Q = 2*15*15 = 450 spans several 128-row tiles; groups with K/groups = 3
    "grouped_many_m": ((2, 6, 15, 15), (9, 2, 3, 3), dict(padding=1, groups=3)),
}


def _edge_problem(case, dtype, seed=0):
    xs, ws, kw = EDGE_CASES[case]
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, xs, dtype), _rand(rng, ws, dtype), _rand(rng, (ws[0],), dtype)
    return fastconv.conv_spec(x, w, b, **kw), (x, w, b)


def run_variant(target, spec, arrays, variant):
    return run_family(target, "implicit_gemm", spec, arrays, variant=variant, seed=99)


@pytest.mark.parametrize("dtype", IG_DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES) + list(EDGE_CASES))
@pytest.mark.parametrize("variant", TILES)
def test_implicit_gemm_matches_oracle(target, variant, case, dtype):
    spec, arrays = (conv_problem if case in CONV_CASES else _edge_problem)(case, dtype)
    out = run_variant(target, spec, arrays, variant)
    assert out.dtype == np.dtype(dtype) and out.shape == spec.output_layout
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


@pytest.mark.parametrize("variant", TILES)
def test_implicit_gemm_int64_index(target, index64, variant):
    spec, arrays = _edge_problem("odd_pq_rs", "float32", seed=1)
    assert ", long long" in FAMILY.plan(spec, variant).launches[0].kernel
    assert_conv_close(run_variant(target, spec, arrays, variant), oracle.conv(spec, *arrays), spec, *arrays)


@pytest.mark.parametrize("variant", TILES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_nonfinite_weight_meeting_padding_is_skipped(target, variant, bad):
    """fastconv's rule: a padded tap contributes nothing, so an Inf/NaN weight whose taps all land in the
    padding leaves the border outputs finite. The staged zeros would give NaN (inf * 0); the kernel's
    exact recomputation must restore the oracle's answer, for every filter of the block."""
    spec, (x, w, b) = _edge_problem("vec_store_k_tail", "float32", seed=2)
    w = w.copy()
    w[3, 1, 0, 0] = bad     # top-left tap: in the padding for output row 0 and column 0
    w[69, 4, 2, 2] = bad    # a filter in the second n tile, bottom-right tap
    ref = oracle.conv(spec, x, w, b)
    assert np.isfinite(ref[:, 3, 0, :]).all() and not np.isfinite(ref[:, 3, 1:, 1:]).all()
    out = run_variant(target, spec, (x, w, b), variant)
    with np.errstate(invalid="ignore"):
        assert_conv_close(out, ref, spec, x, w, b)


def test_nonfinite_weight_without_padding_propagates(target):
    """Unpadded, every tap is real: a NaN weight makes its whole output channel NaN (no recomputation)."""
    spec, (x, w, b) = _edge_problem("pointwise_strided", "float32", seed=3)
    w = w.copy()
    w[5, 0, 0, 0] = np.nan
    ref = oracle.conv(spec, x, w, b)
    assert np.isnan(ref[:, 5]).all() and not np.isnan(np.delete(ref, 5, axis=1)).any()
    assert_conv_close(run_variant(target, spec, (x, w, b), TILES[0]), ref, spec, x, w, b)


def test_nan_input_reaches_only_its_windows(target):
    spec, (x, w, b) = _edge_problem("grouped_many_m", "float32", seed=4)
    x = x.copy()
    x[1, 4, 7, 7] = np.nan
    ref = oracle.conv(spec, x, w, b)
    assert np.isnan(ref).sum() == 3 * 3 * 3  # the group's 3 filters x the 3x3 outputs whose window holds it
    assert_conv_close(run_variant(target, spec, (x, w, b), TILES[-1]), ref, spec, x, w, b)


def test_public_algo_implicit_gemm(backend):
    rng = np.random.default_rng(7)
    x, w, b = _rand(rng, (2, 4, 7, 8), "float32"), _rand(rng, (6, 2, 3, 3), "float32"), _rand(rng, (6,), "float32")
    kw = dict(stride=(1, 2), padding=((1, 1), (0, 2)), groups=2)
    out = public(backend, fastconv.conv2d, x, w, b, algo="implicit_gemm", **kw)
    spec = fastconv.conv_spec(x, w, b, **kw)
    assert_conv_close(out, oracle.conv(spec, x, w, b), spec, x, w, b)


def test_tiles_live_only_in_the_family():
    """The name expression carries the tile; the block size is derived from it, never written twice."""
    x, w = np.zeros((1, 3, 9, 9), np.float32), np.zeros((5, 3, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w)
    for name, tile in FAMILY.TILES.items():
        lc = FAMILY.plan(spec, name).launches[0]
        bm, bn, bk, tm, tn, minb = tile
        assert lc.kernel == f"conv_implicit_gemm_v1<float, int, {bm}, {bn}, {bk}, {tm}, {tn}, {minb}>"
        assert lc.block == ((bm // tm) * (bn // tn), 1, 1)
        assert lc.grid[0] == -(-(1 * 7 * 7) // bm) * -(-5 // bn)


def test_split_k_plan_covers_gemm_k_without_empty_splits():
    """GEMM_K = 5*3*3 = 45 is 6 k steps of 8: k2 -> 2 chunks of 3 steps, k4 -> 3 chunks of 2 (never an empty
    fourth), each followed by the in-order reduction; K = 1 step cannot split and runs one launch."""
    spec, _ = _edge_problem("vec_store_k_tail", "float32")
    for variant, splits, chunk in [("64x64-k2", 2, 24), ("64x64-k4", 3, 16), ("128x64-k4", 3, 16)]:
        main, red = FAMILY.plan(spec, variant).launches
        assert main.grid[1] == splits and int(main.args[1]) == chunk and splits * chunk >= 45
        assert red.kernel.startswith("splitk_reduce_v1<") and int(red.args[1]) == splits
    x, w = np.zeros((1, 3, 9, 9), np.float32), np.zeros((5, 3, 1, 1), np.float32)
    (only,) = FAMILY.plan(fastconv.conv_spec(x, w), "64x64-k4").launches
    assert only.grid[1] == 1
    with pytest.raises(ValueError, match="variant must be one of"):
        FAMILY.plan(spec, "32x32")


def test_float64_is_refused_by_name_and_runs_elsewhere(backend):
    """No float64 implicit-GEMM kernels exist: asking for them is a ValueError naming the dtype, before any
    launch, and algo="auto" runs float64 on another algorithm."""
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"implicit_gemm/\S+: dtype float64 not supported"):
        public(backend, fastconv.conv2d, x, w, algo="implicit_gemm")
    spec = fastconv.conv_spec(x, w)
    assert_conv_close(public(backend, fastconv.conv2d, x, w), oracle.conv(spec, x, w), spec, x, w)


def _fake(shape):
    """An array of any shape that takes no memory (specs only; nothing is launched)."""
    return np.broadcast_to(np.zeros((), np.float32), shape)


def test_split_k_workspace_decides_the_index_width():
    """Output 96 x 4096 x 4096 (1.6e9 elements, int indexing) split 4 ways needs a 6.4e9-element workspace:
    those launches use the 64-bit instantiations; unsplit, the same spec stays 32-bit."""
    spec = fastconv.conv_spec(_fake((1, 64, 4096, 4096)), _fake((96, 64, 1, 1)))
    assert P.index_type(spec) == "int"
    split = FAMILY.plan(spec, "64x64-k4")
    assert split.launches[0].grid[1] == 4
    assert all(", long long" in lc.kernel for lc in split.launches)
    assert all(", int" in lc.kernel for lc in FAMILY.plan(spec, "64x64").launches)


def test_extents_beyond_the_kernels_int_counters_are_refused_with_reasons():
    taps = fastconv.conv_spec(_fake((1, 2**17, 1, 1)), _fake((1, 2**17, 1, 2**13)), padding=((0, 0), (0, 2**13 - 1)))
    assert any("GEMM_K" in r for r in FAMILY.reasons(taps))
    row = fastconv.conv_spec(_fake((1, 1, 1, 2**31 - 2)), _fake((1, 1, 1, 1)), padding=((0, 0), (0, 2)))
    why = FAMILY.reasons(row)
    assert any("output plane" in r for r in why) and any("padded input extent" in r for r in why)
    ok = fastconv.conv_spec(_fake((2, 3, 9, 9)), _fake((4, 3, 3, 3)), padding=1)
    assert FAMILY.reasons(ok) == [] and FAMILY.plan(ok).reasons() == []


# ---------------------------------------------------------------------------------------------------
# Every variant on drawn problems (the public API and the fuzz reach only the first tile on the emulator)
# ---------------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_LONG = fuzz_long()
_VARIANT_EXAMPLES = fuzz_examples(ci=200, long=3000)


@st.composite
def igemm_problems(draw):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    C, K = g * draw(st.integers(1, 6)), g * draw(st.integers(1, 24 if _FUZZ_LONG else 9))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kw = dict(stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
              dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
              padding=tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2)), groups=g)
    top = 40 if _FUZZ_LONG else 14
    shape = (draw(st.integers(1, 3)), C, draw(st.integers(1, top)), draw(st.integers(1, top)))
    dtype = draw(st.sampled_from(IG_DTYPES))
    special = draw(st.sampled_from(["plain", "plain", "nonfinite_w", "nan_x"]))
    seed = draw(st.integers(0, 2**31))
    return shape, (K, C // g, R, S), kw, dtype, special, seed, draw(st.sampled_from(TILES))


@settings(max_examples=_VARIANT_EXAMPLES, deadline=None, derandomize=not _FUZZ_LONG, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(igemm_problems())
def test_every_variant_on_drawn_problems(problem):
    from hypothesis import assume
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("the emulator is unavailable here")
    xs, ws, kw, dtype, special, seed, variant = problem
    rng = np.random.default_rng(seed)
    x, w = _rand(rng, xs, dtype), _rand(rng, ws, dtype)
    b = _rand(rng, (ws[0],), dtype) if seed % 2 else None
    try:
        spec = fastconv.conv_spec(x, w, b, **kw)
    except ValueError:
        assume(False)   # an empty output: not a problem the kernel sees
    if special == "nonfinite_w":
        w[tuple(rng.integers(0, d) for d in ws)] = rng.choice([np.inf, -np.inf, np.nan])
    elif special == "nan_x":
        x[tuple(rng.integers(0, d) for d in xs)] = np.nan
    out = run_family(("cuda-emu", "random"), "implicit_gemm", spec, (x, w, b), variant=variant, seed=seed)
    ref = oracle.conv(spec, x, w, b)
    with np.errstate(invalid="ignore"):
        assert_conv_close(out, ref, spec, x, np.nan_to_num(w, posinf=0, neginf=0) if special == "nonfinite_w" else w, b)
