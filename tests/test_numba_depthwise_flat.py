"""numba:conv:direct/depthwise-flat (``_numba_conv.conv2d_depthwise_flat``): depthwise convs with a column
stride of 2 on an even-width input, the plane's column phases made by one flat deinterleave.

Expected values come from the NumPy oracle (``fastconv.testing.assert_conv_close``: the direct-summation
bound) and, bit for bit, from the phase-split kernel, which sums each output in the same order (the bias,
then the taps row-major, padded zeros multiplied in). The kernel's own risk is its wrapped reads: a tap
whose column is outside the input reads the neighbouring row of its copy, which must hold a zero there.
"""
import numpy as np
import pytest

pytest.importorskip("numba")

import fastconv  # noqa: E402
from fastconv import _dispatch, testing  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402

FLAT, PHASE = "depthwise-flat", "depthwise-phase"

#: (N, C, M, H, W, R, S, stride, padding, dilation): MobileNet's stride-2 3x3 layer, asymmetric and
#: one-sided pads (negative shifts only, positive only), dilation, windows of 1, 2, 4 and 5 columns (one
#: phase only; four copies), a row stride of 1, channel multipliers, a single row, a 1-wide output
CASES = [
    (2, 3, 1, 14, 14, 3, 3, 2, 1, 1),
    (3, 2, 2, 9, 10, 3, 3, 2, ((0, 1), (0, 1)), 1),
    (2, 2, 1, 8, 12, 3, 3, 2, ((2, 0), (2, 0)), 1),
    (2, 2, 1, 7, 12, 3, 5, 2, ((1, 1), (0, 0)), 1),
    (1, 3, 1, 11, 12, 3, 3, 2, 2, 2),
    (2, 2, 1, 6, 8, 1, 1, 2, 0, 1),
    (2, 2, 2, 6, 8, 2, 2, 2, 0, (1, 2)),
    (2, 3, 1, 9, 16, 4, 4, 2, ((1, 2), (2, 1)), 1),
    (2, 2, 1, 12, 14, 5, 5, 2, 2, 1),
    (2, 2, 3, 9, 10, 3, 3, (1, 2), 1, 1),
    (2, 4, 1, 1, 6, 1, 3, 2, (0, 1), 1),
    (3, 2, 1, 5, 2, 3, 3, 2, 1, 1),
]


def _problem(case, dtype, seed=0, bias=True):
    N, C, M, H, W, R, S, stride, padding, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C * M, 1, R, S)).astype(dtype)
    b = rng.standard_normal(C * M).astype(dtype) if bias else None
    spec = fastconv.conv_spec(x, w, b, stride, padding, dilation, C)
    return spec, x, w, b


def _impls(spec):
    return {i.variant: i for i in _dispatch.candidates(spec, "numba") if i.variant in (FLAT, PHASE)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_against_the_oracle_and_bitwise_the_phase_kernel(case, dtype):
    spec, x, w, b = _problem(case, dtype, seed=len(case) + case[3])
    impls = _impls(spec)
    assert _dispatch.reasons(impls[FLAT], spec) == [] and _dispatch.reasons(impls[PHASE], spec) == []
    x0, w0 = x.copy(), w.copy()
    out = impls[FLAT].run(spec, x, w, b)
    ref = fastconv.conv2d(x, w, b, stride=case[7], padding=case[8], dilation=case[9], groups=case[1],
                          backend="numpy")
    testing.assert_conv_close(out, ref, spec, x, w, b)
    np.testing.assert_array_equal(out, impls[PHASE].run(spec, x, w, b))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_images_batched_per_task_with_a_short_last_block(monkeypatch):
    """A task holds NB images of a channel; with NB = 2 and N = 5 the last block holds one image (the
    layout is per spec and cached: cleared around the change)."""
    spec, x, w, b = _problem((5, 3, 2, 10, 10, 3, 3, 2, 1, 1), np.float32, seed=3)
    per_image = 3 * spec.input_extent_hw()[0] * (spec.W // 2)      # three copies of one plane's phase rows
    numba_cpu.flat_layout.cache_clear()
    monkeypatch.setattr(numba_cpu, "PHASE_BATCH", 2 * per_image)
    try:
        lay = numba_cpu.flat_layout(spec)[1]
        assert lay[0] == 2 and lay[1] * 3 == per_image
        out = _impls(spec)[FLAT].run(spec, x, w, b)
    finally:
        numba_cpu.flat_layout.cache_clear()
    ref = fastconv.conv2d(x, w, b, stride=2, padding=1, groups=3, backend="numpy")
    testing.assert_conv_close(out, ref, spec, x, w, b)


@pytest.mark.parametrize("column", [0, -1, 1])
def test_a_wrapped_read_never_meets_the_next_rows_values(column):
    """Inf in one input column: in the shifted copies that column sits next to the neighbouring rows'
    first and last outputs, which read a zero there; the pattern of Inf/NaN and the finite values are the
    oracle's (NaN also where the window's Inf terms meet with opposite signs)."""
    spec, x, w, b = _problem((2, 2, 1, 8, 10, 3, 3, 2, 1, 1), np.float64, seed=11)
    x[0, 1, :, column] = np.inf
    x[1, 0, 2:5, column] = -np.inf
    out = _impls(spec)[FLAT].run(spec, x, w, b)
    ref = fastconv.conv2d(x, w, b, stride=2, padding=1, groups=2, backend="numpy")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    finite = np.isfinite(ref)
    assert finite.sum() >= out.size // 2       # (most outputs stay finite: the check above is not vacuous)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-12, atol=1e-12)


def test_reasons_name_what_it_does_not_take():
    def reasons(xshape, wshape, stride, padding, groups):
        x, w = np.zeros(xshape, np.float32), np.zeros(wshape, np.float32)
        spec = fastconv.conv_spec(x, w, None, stride, padding, 1, groups)
        return _dispatch.reasons(_impls(spec)[FLAT], spec)
    assert reasons((1, 2, 10, 10), (2, 1, 3, 3), 2, 1, 2) == []
    assert reasons((1, 2, 10, 10), (2, 1, 3, 3), 1, 1, 2) == [
        "stride (1, 1): this kernel takes a column stride of 2 and a row stride of 1 or 2"]
    assert reasons((1, 2, 10, 10), (2, 1, 3, 3), (3, 2), 1, 2) == [
        "stride (3, 2): this kernel takes a column stride of 2 and a row stride of 1 or 2"]
    assert reasons((1, 2, 10, 9), (2, 1, 3, 3), 2, 1, 2) == [
        "an output row (5 values) is not within one of the input's 2 column phases (9 columns): "
        "depthwise-phase runs it"]
    assert reasons((1, 2, 10, 8), (2, 1, 3, 3), 2, 2, 2) == [         # Q = 5 > 8 / 2
        "an output row (5 values) is not within one of the input's 2 column phases (8 columns): "
        "depthwise-phase runs it"]
    assert reasons((1, 4, 10, 10), (2, 2, 3, 3), 2, 1, 2)[0].startswith("not depthwise")


def test_layout_by_hand():
    """MobileNet's (8, 512, 14, 14) stride-2 layer: column -1 is phase 1 shifted by -1, column 0 phase 0,
    column 1 phase 1; a plane's region is 15 rows (one above the input) of 7; eight images per task."""
    spec = fastconv.conv_spec(np.zeros((8, 512, 14, 14), np.float32), np.zeros((512, 1, 3, 3), np.float32),
                              None, 2, 1, 1, 512)
    _, lay, col_copy, copy_phase, copy_shift, buf, acc = numba_cpu.flat_layout(spec)
    assert list(zip(copy_phase[col_copy], copy_shift[col_copy])) == [(1, -1), (0, 0), (1, 0)]
    assert lay.tolist() == [8, 15 * 7, 1, 8 * 105 + 1]
    assert buf == 1 + 3 * (8 * 105 + 1) and acc == 8 * 105
