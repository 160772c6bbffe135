"""Family ``pool`` (kernels/pool.cu, fastconv/_cuda/pool.py): max, avg and adaptive pools against the oracle.

Through backend "cuda-emu" in all three thread orders and through backend "cuda" when a GPU is present.
The shipped v2 kernels through every variant ("any", "pair", "global") and v1, which stays beside them:
NaN, ties, -inf planes, every divisor rule, ceil_mode, dilation, per-side padding (beyond torch), a
misaligned input for the paired loads, int64 indices. Expected values come only from the oracle.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv.testing import assert_pool_close

from .common import DTYPES, first_variant, pool_ref, rand, run_family, run_plan

FAMILY = _cuda.family("pool")


# ---------------------------------------------------------------------------------------------------
# Shipped kernels, chosen by variant, on the cases of every rule
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
    # per-side padding (beyond torch): windows start at o*stride - pad_before; ceil_mode's last window
    # passing the after-side padding (H + pad_bottom, W + pad_right) is not counted by the divisor
    "max_per_side_idx": ("max", (2, 3, 7, 8), dict(kernel_size=3, stride=2, padding=((0, 1), (2, 1)),
                                                   return_indices=True), 2, ((0, 0, 3, 3), (1, 2, 0, 7))),
    "max_per_side_empty_windows": ("max", (1, 2, 9, 7), dict(kernel_size=(3, 2), stride=1, dilation=(2, 3),
                                                             padding=((4, 0), (0, 3)), ceil_mode=True,
                                                             return_indices=True), 2, ()),
    "avg_include_pad_per_side_ceil": ("avg", (2, 2, 6, 7), dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)),
                                                                ceil_mode=True), 2, ()),
    "avg_exclude_pad_per_side": ("avg", (1, 2, 5, 6), dict(kernel_size=(3, 2), stride=(1, 2), padding=((0, 2), (1, 0)),
                                                           count_include_pad=False), 2, ()),
    "avg_per_side_1d": ("avg", (2, 3, 9), dict(kernel_size=4, stride=3, padding=((3, 1),), ceil_mode=True), 1, ()),
    "adaptive_max": ("adaptive_max", (2, 3, 10, 7), dict(output_size_=(4, 3), return_indices=True), 2,
                     ((1, 2, 5, 5),)),
    "adaptive_avg": ("adaptive_avg", (2, 3, 10, 7), dict(output_size_=(3, 5)), 2, ()),
    "adaptive_avg_1d": ("adaptive_avg", (2, 3, 13), dict(output_size_=5), 1, ()),
}


def _pool_problem(case, dtype):
    kind, xs, kw, nd, nans = POOL_CASES[case]
    x = rand(np.random.default_rng(4), xs, dtype)
    for pos in nans:
        x[pos[:x.ndim]] = np.nan
    spec = fastconv.pool_spec(kind, x, spatial_dims=nd, **kw)
    return spec, x.reshape(spec.input_shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_matches_oracle(target, case, dtype):
    spec, x = _pool_problem(case, dtype)
    out = run_family(target, "pool", spec, (x,))
    assert_pool_close(out, pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_ceil_dilated", "avg_exclude_pad_ceil", "adaptive_max"])
def test_pool_int64_index_instantiations(target, index64, case, dtype):
    spec, x = _pool_problem(case, dtype)
    assert ", long long" in FAMILY.plan(spec, first_variant(FAMILY, spec)).launches[0].kernel
    assert_pool_close(run_family(target, "pool", spec, (x,)), pool_ref(spec, x), spec, x)


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
    # per-side padding: rows only for pair (its columns take none), both axes for any
    "max_pair_rows_per_side": ("max", (1, 2, 9, 10), dict(kernel_size=(3, 2), stride=2, padding=((2, 0), (0, 0)),
                                                          ceil_mode=True, return_indices=True), 2, "pair"),
    "avg_pair_rows_per_side_ceil": ("avg", (2, 2, 6, 8), dict(kernel_size=(3, 2), stride=2,
                                                              padding=((2, 0), (0, 0)), ceil_mode=True), 2, "pair"),
    "avg_any_per_side_ceil": ("avg", (2, 3, 6, 7), dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)),
                                                        ceil_mode=True), 2, "any"),
    "max_any_per_side_dilated": ("max", (1, 2, 9, 7), dict(kernel_size=(3, 2), stride=1, dilation=(2, 3),
                                                           padding=((4, 0), (0, 3)), return_indices=True), 2, "any"),
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
    x = _special_values(rand(rng, xs, dtype), kind, rng)
    spec = fastconv.pool_spec(kind, x, spatial_dims=nd, **kw)
    return spec, x.reshape(spec.input_shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL2_CASES))
def test_pool_v2_matches_oracle(target, case, dtype):
    spec, x = _pool2_problem(case, dtype)
    assert first_variant(FAMILY, spec) == POOL2_CASES[case][-1]
    plan = FAMILY.plan(spec, POOL2_CASES[case][-1])
    assert "_v2<" in plan.launches[0].kernel
    assert_pool_close(run_plan(target, spec, plan, (x,)), pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("version,path", [(1, "any"), (2, "any")], ids=["v1", "v2_any"])
@pytest.mark.parametrize("case", [c for c in POOL2_CASES if POOL2_CASES[c][-1] != "any"])
def test_pool_other_kernels_on_special_paths(target, case, version, path):
    """The spec the pair/global kernels take also runs through v1 and the general v2 kernel (float32)."""
    spec, x = _pool2_problem(case, "float32")
    plan = FAMILY.plan(spec, path, version)
    assert_pool_close(run_plan(target, spec, plan, (x,)), pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_pair_misaligned_input(target, kind, dtype):
    """A contiguous view that starts one element into its buffer: the pair kernel falls back to plain loads."""
    rng = np.random.default_rng(9)
    base = rand(rng, (2 * 3 * 6 * 8 + 1,), dtype)
    x = _special_values(base[1:].reshape(2, 3, 6, 8), kind, rng)
    assert x.flags.c_contiguous and x.ctypes.data % (2 * x.itemsize) != 0
    kw = dict(kernel_size=2, return_indices=True) if kind == "max" else dict(kernel_size=2)
    spec = fastconv.pool_spec(kind, x, **kw)
    assert first_variant(FAMILY, spec) == "pair"
    out = run_plan(target, spec, FAMILY.plan(spec, "pair"), (x,), misalign=True)
    assert_pool_close(out, pool_ref(spec, x), spec, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["max_pair_ceil_idx", "max_global_idx", "avg_exclude_pad_ceil", "adaptive_avg_1x1"])
def test_pool_v2_int64_index_instantiations(target, index64, case, dtype):
    spec, x = _pool2_problem(case, dtype, seed=5)
    plan = FAMILY.plan(spec, first_variant(FAMILY, spec))
    assert ", long long" in plan.launches[0].kernel
    assert_pool_close(run_plan(target, spec, plan, (x,)), pool_ref(spec, x), spec, x)


def test_pool_variant_predicates():
    """Each v2 variant takes exactly the specs its predicate admits (the shapes of the standard pool
    layers); dispatch tries them in order global, pair, any, so the first admitting one is what runs
    when nothing is measured."""
    def spec(kind, c, h, k, s, p, **kw):
        return fastconv.pool_spec(kind, np.zeros((1, c, h, h), np.float32), kernel_size=k, stride=s, padding=p, **kw)
    assert FAMILY.VARIANTS == ("global", "pair", "any")
    assert first_variant(FAMILY, spec("max", 64, 112, 3, 2, 1)) == "any"          # resnet stem
    assert first_variant(FAMILY, spec("avg", 2048, 7, 7, 7, 0)) == "global"       # resnet global average
    assert first_variant(FAMILY, spec("max", 64, 224, 2, 2, 0)) == "pair"         # vgg
    assert first_variant(FAMILY, spec("avg", 6, 28, 2, 2, 0)) == "pair"           # lenet
    assert first_variant(FAMILY, spec("max", 1, 7, 2, 2, 0)) == "any"             # W odd: no pairs
    assert first_variant(FAMILY, spec("avg", 1, 7, 7, 7, 1, count_include_pad=False)) == "any"  # padded: not global
    stem = spec("max", 64, 112, 3, 2, 1)
    assert "variant pair needs" in FAMILY.reasons(stem, "pair")[0]
    assert "variant global needs" in FAMILY.reasons(stem, "global")[0]
    with pytest.raises(ValueError, match="variant pair needs"):
        FAMILY.plan(stem, "pair")
    # a whole-plane window of width 2 at stride 2 qualifies for both special kernels
    both = spec("max", 3, 2, 2, 2, 0)
    assert FAMILY.reasons(both, "global") == [] and FAMILY.reasons(both, "pair") == []


def test_pool_variants_are_named_implementations():
    """Dispatch returns the variant that runs: one Impl per op and variant, named by it."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    x = np.zeros((1, 2, 8, 8), np.float32)
    assert _dispatch.select(fastconv.pool_spec("max", x, 2), "cuda-emu").name == "cuda-emu:max_pool:direct/pair"
    assert _dispatch.select(fastconv.pool_spec("avg", x, 8), "cuda-emu").name == "cuda-emu:avg_pool:direct/global"
    assert _dispatch.select(fastconv.pool_spec("adaptive_avg", x, output_size_=3), "cuda-emu").name \
        == "cuda-emu:adaptive_avg_pool:direct/any"
