"""The numba backend's two general direct convs, each run by name against the NumPy oracle: ``planes``
(``_numba_planes.conv2d_planes``: zero-padded phase-split planes, four output channels at a time, taps in
threes) and ``blocked`` (``conv2d_direct``, the exact one). Since ``planes`` comes first, ``algo="direct"``
and the rule for small problems run it, so the rest of the suite sees ``blocked`` only where the data rule
sends a problem there: these tests keep both covered.

Shapes are picked to reach every branch of ``planes``: output channels per group not a multiple of four
(a short block), R*S with every remainder mod 3 (the one-tap tail), strides (phases), dilation,
asymmetric padding, groups, several runs of output channels per group (N*groups below the thread count)
and tiles of the flat output (longer than ``LT``). Expected values: the oracle, within
``fastconv.testing``'s bound.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch
from fastconv.testing import assert_conv_close

numba = pytest.importorskip("numba")
from fastconv._backends import numba_cpu  # noqa: E402

NAMES = ("numba:conv:direct/planes", "numba:conv:direct/blocked")

#: (x shape, w shape, stride, padding, dilation, groups)
CASES = [
    ((1, 3, 8, 8), (4, 3, 3, 3), 1, 0, 1, 1),            # the tiny call
    ((1, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),         # LeNet's conv2 at N=1: runs of channels
    ((2, 4, 9, 11), (6, 4, 3, 3), 1, 1, 1, 1),           # a short block (6 = 4 + 2)
    ((2, 4, 9, 9), (6, 2, 3, 3), 1, 1, 1, 2),            # groups
    ((2, 3, 10, 9), (5, 3, 2, 2), 2, 1, 1, 1),           # R*S = 4: a one-tap tail; stride phases
    ((1, 2, 11, 13), (3, 2, 1, 5), (2, 3), ((1, 0), (2, 1)), 1, 1),   # R*S = 5, asymmetric everything
    ((2, 5, 12, 12), (7, 5, 3, 3), 1, 2, 2, 1),          # dilation
    ((1, 4, 13, 12), (4, 4, 3, 2), (1, 2), (0, 1), (2, 1), 1),
    ((1, 2, 40, 41), (5, 2, 3, 3), 1, 1, 1, 1),          # a flat output longer than LT: several tiles
    ((3, 6, 7, 7), (10, 3, 1, 1), 1, 0, 1, 2),            # 1x1 (taps: only the tail)
    ((2, 4, 1, 17), (4, 4, 1, 3), 1, (0, 1), 1, 1),      # a 1-D conv in the 4-D layout
]


def _impl(name):
    (impl,) = [i for i in numba_cpu.implementations() if i.name == name]
    return impl


def _problem(case, dtype, seed=0):
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    spec = fastconv.conv_spec(x, w, b, stride, padding, dilation, groups)
    ref = fastconv.conv2d(x, w, b, stride, padding, dilation, groups, backend="numpy")
    return spec, x, w, b, ref


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_the_oracle(name, dtype, case):
    spec, x, w, b, ref = _problem(case, dtype)
    impl = _impl(name)
    assert _dispatch.reasons(impl, spec) == []
    keep = x.copy(), w.copy(), b.copy()
    out = impl.run(spec, x, w, b)
    assert out.dtype == np.dtype(dtype) and out.shape == ref.shape
    assert_conv_close(out, ref, spec, x, w, b)
    for a, k in zip((x, w, b), keep):
        np.testing.assert_array_equal(a, k)          # inputs untouched
    if name == NAMES[0]:
        assert_conv_close(impl.run(spec, x, w, None), ref - b[None, :, None, None], spec, x, w, None)


def test_the_plans_runs_split_a_group_only_for_few_images():
    one = _problem(CASES[1], "float32")[0]
    many = fastconv.conv_spec(np.zeros((8, 6, 14, 14), np.float32), np.zeros((16, 6, 5, 5), np.float32))
    numba.set_num_threads(2)
    assert numba_cpu.planes_plan(one)[1] == 2 and numba_cpu.planes_plan(many)[1] == 1


def test_the_thread_count_does_not_change_a_bit():
    spec, x, w, b, _ = _problem(CASES[1], "float32", seed=3)
    impl = _impl(NAMES[0])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = impl.run(spec, x, w, b)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(impl.run(spec, x, w, b), one)


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_inputs_give_the_oracles_pattern(value):
    # zeros are multiplied in only where a tap is in the padding: an Inf/NaN input spreads exactly as the
    # definition says (the positions its taps reach), whatever the computed-and-dropped columns read
    spec, x, w, b, _ = _problem(CASES[2], "float32", seed=5)
    x[0, 1, 0, 0] = value
    x[1, 3, 8, 10] = value
    ref = fastconv.conv2d(x, w, b, 1, 1, backend="numpy")
    out = _impl(NAMES[0]).run(spec, x, w, b)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-4, atol=1e-4)


def test_a_non_finite_weight_in_a_padded_problem_runs_the_exact_kernel():
    spec, x, w, b, _ = _problem(CASES[2], "float32", seed=6)
    assert _dispatch.select(spec, "numba", "direct", weight=w).name == NAMES[0]
    w[1, 2, 0, 0] = np.inf
    assert _dispatch.select(spec, "numba", "direct", weight=w).name == NAMES[1]
    ref = fastconv.conv2d(x, w, b, 1, 1, backend="numpy")
    out = fastconv.conv2d(x, w, b, 1, 1, algo="direct")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))


def test_mostly_unused_padded_planes_are_a_reason():
    x = np.zeros((1, 2, 2, 2), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w, None, 50, 60)     # 3x3 outputs 50 apart: a padded plane of ~103^2 values
    assert any("phase-split buffer" in r for r in _dispatch.reasons(_impl(NAMES[0]), spec))
    assert _dispatch.reasons(_impl(NAMES[1]), spec) == []
