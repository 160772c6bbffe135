"""The input gradient (and unstrided transposed conv) as the forward conv it equals
(``ConvInputGradSpec.flipped_forward``), and the numba backend's ``conv_input:winograd/f4x4``, which runs that
forward conv by Winograd: the spec's rule written out, the identity against the oracle's own input gradient,
results against the oracle within ``fastconv.testing``'s bound, the non-finite pattern, reasons, warmup."""
from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")
hypothesis = pytest.importorskip("hypothesis")

import fastconv  # noqa: E402
from fastconv import _dispatch, _spec, _warmup, grad, testing  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._backends import numpy_oracle as oracle  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAME = "numba:conv_input:winograd/f4x4"
PHASES = "numba:conv_input:winograd/f4x4-phases"


def _rng(seed):
    return np.random.default_rng(seed)


def _input_spec(x_shape, w, stride=1, padding=0, dilation=1, groups=1, nd=2):
    fwd = _spec.conv_spec(np.zeros(x_shape, w.dtype), w, None, stride, padding, dilation, groups, spatial_dims=nd)
    return _spec.conv_input_spec(x_shape, w, np.zeros(fwd.output_shape, w.dtype), stride, padding, dilation, groups,
                                 spatial_dims=nd)


# ---------------------------------------------------------------------------------------------------
# The flipped forward problem
# ---------------------------------------------------------------------------------------------------
def test_flipped_forward_follows_the_rule():
    """Sizes, channels and padding as the docstring's rule says, worked out by hand for one problem: x (2, 3,
    9, 7), w (5, 3, 3, 2), padding ((1, 0), (2, 1)), dilation (1, 2): P = 9 + 1 - 2 = 8, Q = 7 + 3 - 2 = 8;
    the flipped padding before is (3 - 1)*1 - 1 = 1 and (2 - 1)*2 - 2 = 0, after 9 - 8 + 1 = 2 and 7 - 8 + 2
    = 1."""
    w = np.zeros((5, 3, 3, 2))
    spec = _input_spec((2, 3, 9, 7), w, padding=((1, 0), (2, 1)), dilation=(1, 2))
    assert (spec.P, spec.Q) == (8, 8)
    f = spec.flipped_forward()
    assert f.op == "conv"
    assert (f.N, f.C, f.H, f.W, f.K, f.R, f.S, f.P, f.Q) == (2, 5, 8, 8, 3, 3, 2, 9, 7)
    assert (f.pad_top, f.pad_bottom, f.pad_left, f.pad_right) == (1, 2, 0, 1)
    assert (f.stride_h, f.stride_w, f.dil_h, f.dil_w, f.groups) == (1, 1, 1, 2, 1)
    assert f.output_layout == spec.output_layout


@pytest.mark.parametrize("x_shape, w_shape, kw, nd", [
    ((2, 4, 9, 7), (6, 4, 3, 3), {"padding": 1}, 2),
    ((1, 4, 8, 9), (6, 2, 3, 2), {"padding": ((2, 0), (1, 1)), "dilation": (2, 1), "groups": 2}, 2),
    ((2, 3, 10, 10), (4, 3, 3, 5), {}, 2),
    ((1, 2, 7, 7), (3, 2, 3, 3), {"padding": 2}, 2),
    ((2, 3, 11), (4, 3, 3), {"padding": 1, "dilation": 2}, 1),
    ((1, 2, 5, 6, 4), (3, 2, 3, 3, 2), {"padding": 1}, 3),
])
def test_flipped_forward_equals_the_oracles_input_gradient(x_shape, w_shape, kw, nd):
    """The oracle's forward conv of dy with the flipped weight equals the oracle's input gradient (float64,
    both from the definition), for groups, dilation, asymmetric padding, 1-D and 3-D."""
    rng = _rng(0)
    w = rng.standard_normal(w_shape)
    x_size = x_shape if nd != 1 else x_shape[:2] + (1,) + x_shape[2:]
    spec = _input_spec(x_shape, w, nd=nd, **kw)
    dy = rng.standard_normal(spec.dy_layout)
    b = rng.standard_normal(spec.C)
    wl = w.reshape(spec.weight_shape)
    f = spec.flipped_forward()
    got = oracle.conv64(f, dy, spec.flip_weight(wl), b)
    ref = oracle.conv_input64(spec, dy, wl, b)
    assert got.shape == ref.shape == tuple(spec.output_layout)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert x_size[:2] == spec.output_layout[:2]


def test_flipped_forward_of_a_transposed_conv_with_output_padding():
    """A transposed conv whose output_padding adds a row and a column that no dy position reaches (stride 1,
    dilation 2): the flipped padding after is what makes the output that large, and the identity holds."""
    rng = _rng(2)
    x = rng.standard_normal((1, 3, 6, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    spec = _spec.conv_transpose_spec(x, w, None, 1, 1, 1, 1, 2)     # padding 1, output_padding 1, dilation 2
    f = spec.flipped_forward()
    assert (spec.H, spec.W) == (6 + 4 - 2 + 1, 5 + 4 - 2 + 1)
    assert (f.pad_top, f.pad_bottom) == (2 * 2 - 1, spec.H - 6 + 1)
    np.testing.assert_allclose(oracle.conv64(f, x, spec.flip_weight(w)), oracle.conv_input64(spec, x, w, None),
                               rtol=1e-12, atol=1e-12)


def test_flip_weight_is_a_view_of_the_flipped_taps():
    """w'[g*Cg + c, k, r, s] = w[g*Kg + k, c, R-1-r, S-1-s], checked entry by entry; a view for one group."""
    rng = _rng(1)
    w = rng.standard_normal((6, 2, 3, 2))          # groups 2: K/G = 3, C/G = 2
    spec = _input_spec((1, 4, 6, 6), w, groups=2)
    wf = spec.flip_weight(w)
    assert wf.shape == (4, 3, 3, 2)
    for g in range(2):
        for c in range(2):
            for k in range(3):
                for r in range(3):
                    for s in range(2):
                        assert wf[g * 2 + c, k, r, s] == w[g * 3 + k, c, 2 - r, 1 - s]
    one = _input_spec((1, 2, 6, 6), w[:4], groups=1)
    assert np.shares_memory(one.flip_weight(w[:4]), w)      # one group: a view


def test_flipped_forward_reasons():
    w = np.zeros((4, 3, 3, 3))
    strided = _input_spec((1, 3, 8, 8), w, stride=2, padding=1)
    assert "strided" in strided.flipped_forward_reasons()[0]
    wide = _input_spec((1, 3, 8, 8), w, padding=3)     # (3 - 1)*1 - 3 < 0
    assert "negative padding" in wide.flipped_forward_reasons()[0]
    assert _input_spec((1, 3, 8, 8), w, padding=3, dilation=2).flipped_forward_reasons() == []
    for spec in (strided, wide):
        with pytest.raises(ValueError, match="no flipped forward"):
            spec.flipped_forward()


# ---------------------------------------------------------------------------------------------------
# numba:conv_input:winograd/f4x4 against the oracle
# ---------------------------------------------------------------------------------------------------
def _check(x_shape, w, dy, name=NAME, **kw):
    wc, dyc = w.copy(), dy.copy()
    spec = _spec.conv_input_spec(x_shape, w, dy, **kw)
    assert _dispatch.select(spec, "numba", "winograd", weight=w).name == name
    out = grad.conv2d_input(x_shape, w, dy, backend="numba", algo="winograd", **kw)
    assert out.dtype == dy.dtype and out.shape == tuple(x_shape)
    testing.assert_grad_close(out, spec, dy, w, None)
    np.testing.assert_array_equal(w, wc)
    np.testing.assert_array_equal(dy, dyc)
    return out


_pads = st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                  st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                            st.tuples(st.integers(0, 2), st.integers(0, 2))))


@settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 3), C=st.integers(1, 6), K=st.integers(1, 6), H=st.integers(1, 12), W=st.integers(1, 12),
       pad=_pads, dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_matches_the_oracle(N, C, K, H, W, pad, dtype, seed):
    pairs = [(pad, pad)] * 2 if isinstance(pad, int) else [p if isinstance(p, tuple) else (p, p) for p in pad]
    (pt, pb), (pl, pr) = pairs
    hypothesis.assume(H + pt + pb >= 3 and W + pl + pr >= 3)
    rng = _rng(seed)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    fwd = _spec.conv_spec(np.zeros((N, C, H, W), dtype), w, padding=pad)
    dy = rng.standard_normal(fwd.output_shape).astype(dtype)
    _check((N, C, H, W), w, dy, padding=pad)


@settings(max_examples=20, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 2), C=st.integers(1, 5), K=st.integers(1, 5), H=st.integers(5, 13), W=st.integers(5, 13),
       dil=st.sampled_from([(2, 2), (2, 1), (1, 3)]), pad=st.integers(1, 3),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_dilated_matches_the_oracle(N, C, K, H, W, dil, pad, dtype, seed):
    """Dilated: the phases variant, padded (an unpadded one is a reason: see test_reasons)."""
    hypothesis.assume(H + 2 * pad > 2 * dil[0] and W + 2 * pad > 2 * dil[1])
    rng = _rng(seed)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    fwd = _spec.conv_spec(np.zeros((N, C, H, W), dtype), w, padding=pad, dilation=dil)
    spec = _spec.conv_input_spec((N, C, H, W), w, np.zeros(fwd.output_shape, dtype), padding=pad, dilation=dil)
    hypothesis.assume(not spec.flipped_forward_reasons() and not numba_cpu._input_winograd_phase_reasons(spec))
    dy = rng.standard_normal(fwd.output_shape).astype(dtype)
    _check((N, C, H, W), w, dy, name=PHASES, padding=pad, dilation=dil)


def test_dilated_nonfinite_weight_is_refused_where_padded_zeros_meet_it():
    """The phases' zeros stand for the flipped conv's padding and meet the weight: with an Inf in a padded
    problem's weight dispatch refuses them (algo="winograd": a ValueError naming them), and auto runs an
    exact kernel, the oracle's pattern; Inf and NaN in dy give the oracle's pattern through the phases."""
    rng = _rng(12)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 11, 10)).astype(np.float32)
    dy[0, 1, 4, 5], dy[1, 2, 0, 0], dy[1, 0, 7, 3] = np.inf, np.nan, -np.inf
    _check((2, 3, 11, 10), w, dy, name=PHASES, padding=2, dilation=2)
    w[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="f4x4-phases"):
        grad.conv2d_input((2, 3, 11, 10), w, dy, padding=2, dilation=2, backend="numba", algo="winograd")
    out = grad.conv2d_input((2, 3, 11, 10), w, dy, padding=2, dilation=2, backend="numba")
    testing.assert_grad_close(out, _spec.conv_input_spec((2, 3, 11, 10), w, dy, padding=2, dilation=2), dy, w, None)


def test_adversarial_magnitudes_need_the_winograd_bound():
    """Mixed signs and magnitudes over 1e-3..1e3: the result holds the Winograd bound of the flipped forward
    conv, which grad_tolerance takes for this problem, and which is wider than the direct one."""
    rng = _rng(3)
    w = (np.sign(rng.standard_normal((4, 5, 3, 3))) * 10.0 ** rng.uniform(-3, 3, (4, 5, 3, 3))).astype(np.float32)
    dy = (np.sign(rng.standard_normal((3, 4, 10, 9))) * 10.0 ** rng.uniform(-3, 3, (3, 4, 10, 9))).astype(np.float32)
    spec = _spec.conv_input_spec((3, 5, 10, 9), w, dy, padding=1)
    assert testing.winograd_applies(spec)
    wino = testing.winograd_tolerance(spec.flipped_forward(), dy, spec.flip_weight(w))
    assert np.array_equal(testing.grad_tolerance(spec, dy, w, None),
                          np.maximum(wino, testing.grad_tolerance(spec, dy, w, None)))
    _check((3, 5, 10, 9), w, dy, padding=1)


def test_conv_transpose_with_bias():
    """conv_transpose2d at stride 1 (bias included) runs it, against the oracle's transposed conv."""
    rng = _rng(4)
    x = rng.standard_normal((2, 5, 7, 8)).astype(np.float32)      # the transposed conv's input: dy
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)      # (in, out, 3, 3) as torch's
    b = rng.standard_normal(3).astype(np.float32)
    xc, wc, bc = x.copy(), w.copy(), b.copy()
    out = fastconv.conv_transpose2d(x, w, b, padding=1, backend="numba", algo="winograd")
    spec = _spec.conv_transpose_spec(x, w, b, padding=1)
    assert _dispatch.select(spec, "numba", "winograd", weight=w).name == NAME
    testing.assert_grad_close(out, spec, x, w, b)
    for a, c in ((x, xc), (w, wc), (b, bc)):
        np.testing.assert_array_equal(a, c)


def test_nonfinite_values_give_the_definitions_pattern():
    """An Inf or NaN in dy or in the weight gives exactly the oracle's pattern: the tiles they spread into
    are summed again with the taps clipped to dy, the definition's terms; no padded zero meets the weight."""
    rng = _rng(5)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    dy[0, 1, 4, 5] = np.inf
    dy[1, 0, 0, 0] = np.nan
    _check((2, 3, 9, 10), w, dy, padding=1)
    w2 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w2[1, 0, 0, 0] = np.inf
    dy2 = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = _check((1, 2, 8, 8), w2, dy2, padding=1)
    # dx[h, w] meets w[k, c, 0, 0] through dy[h + 1, w + 1]: none for the last row and column
    assert np.isinf(out[0, 0, :7, :7]).all() and np.isfinite(out[0, 0, 7, :]).all()
    assert np.isfinite(out[0, 0, :, 7]).all() and np.isfinite(out[0, 1]).all()


def test_reasons():
    impl, = [i for i in numba_cpu.implementations() if i.name == NAME]
    w = np.zeros((4, 4, 3, 3), np.float32)
    assert "strided" in " ".join(_dispatch.reasons(impl, _input_spec((1, 4, 8, 8), w, stride=2, padding=1)))
    grouped = " ".join(_dispatch.reasons(impl, _input_spec((1, 4, 8, 8), w[:, :2], padding=1, groups=2)))
    assert grouped.startswith("its flipped forward convolution:")
    assert _dispatch.reasons(impl, _input_spec((1, 4, 8, 8), w, padding=2, dilation=2))   # dilated: not this one
    phases, = [i for i in numba_cpu.implementations() if i.name == PHASES]
    assert phases.zero_fills_padding and not impl.zero_fills_padding
    assert _dispatch.reasons(phases, _input_spec((1, 4, 8, 8), w, padding=2, dilation=2)) == []
    assert "not dilated" in " ".join(_dispatch.reasons(phases, _input_spec((1, 4, 8, 8), w, padding=1)))
    unpadded = " ".join(_dispatch.reasons(phases, _input_spec((1, 4, 9, 9), w, dilation=2)))
    assert "unpadded, while its flipped forward convolution is padded" in unpadded
    assert _dispatch.reasons(impl, _input_spec((1, 4, 8, 8), np.zeros((4, 4, 5, 5), np.float32), padding=2))
    one_d = " ".join(_dispatch.reasons(impl, _input_spec((1, 4, 8), w[..., 0], padding=1, nd=1)))
    assert "3x3 only" in one_d                                    # the forward Winograd's own reason
    assert _dispatch.reasons(impl, _input_spec((1, 4, 8, 8), w, padding=1)) == []


def test_workspace_is_the_flipped_problems():
    rng = _rng(6)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    spec = _input_spec((2, 3, 12, 11), w, padding=1)
    impl, = [i for i in numba_cpu.implementations() if i.name == NAME]
    fwd, = [i for i in numba_cpu.implementations() if i.name == "numba:conv:winograd/f4x4"]
    assert impl.workspace(spec) == fwd.workspace(spec.flipped_forward()) != {}


@pytest.mark.parametrize("name", [NAME, PHASES])
def test_warmup_reaches_it(name):
    p = _warmup.plan("numba", ops=["conv_input"])
    items = [it for it in p.items if it.impl.name == name]
    assert {it.spec.dtype for it in items} == {"float32", "float64"}
    assert {it.spec.N for it in items} == {1, 2}
