"""The oracle in 1-D, 2-D and 3-D against the N-D naive loops (tests/naive_nd.py) and hand-derived values:
3-D convolutions and their gradients, 3-D pools and their gradients, per-side pool padding, max_unpool3d,
padding modes and lp pools. Kept small: the naive loops are scalar Python."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import grad as G

from . import naive_nd

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _rand(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


@st.composite
def conv_cases(draw, nd=3):
    g = draw(st.integers(1, 2))
    cg, kg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    sizes = []
    for k, d, (lo, hi) in zip(ks, dil, pads):
        lo_size = max(1, d * (k - 1) + 1 - lo - hi)
        sizes.append(draw(st.integers(lo_size, lo_size + 3)))
    return dict(N=draw(st.integers(1, 2)), C=g * cg, K=g * kg, groups=g, ks=ks, dil=dil, pads=pads,
                stride=stride, sizes=tuple(sizes), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _conv_arrays(c):
    x = _rand(c["seed"], (c["N"], c["C"]) + c["sizes"])
    w = _rand(c["seed"] + 1, (c["K"], c["C"] // c["groups"]) + c["ks"])
    b = _rand(c["seed"] + 2, (c["K"],)) if c["bias"] else None
    return x, w, b


@SETTINGS
@given(conv_cases())
def test_conv3d_oracle_matches_naive_loops(c):
    x, w, b = _conv_arrays(c)
    got = fc.conv3d(x, w, b, c["stride"], c["pads"], c["dil"], c["groups"], backend="numpy")
    want = naive_nd.conv(x, w, b, c["stride"], c["pads"], c["dil"], c["groups"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(conv_cases())
def test_conv3d_gradients_match_naive_loops(c):
    x, w, _ = _conv_arrays(c)
    y = naive_nd.conv(x, w, None, c["stride"], c["pads"], c["dil"], c["groups"])
    dy = _rand(c["seed"] + 3, y.shape)
    args = (c["stride"], c["pads"], c["dil"], c["groups"])
    np.testing.assert_allclose(G.conv3d_input(x.shape, w, dy, *args, backend="numpy"),
                               naive_nd.conv_input(dy, w, x.shape, *args), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G.conv3d_weight(x, w.shape, dy, *args, backend="numpy"),
                               naive_nd.conv_weight(x, dy, w.shape, *args), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(conv_cases(), st.data())
def test_conv_transpose3d_is_the_input_gradient_with_output_padding(c, data):
    """conv_transpose3d(dy, w) with output_padding: the input gradient of a forward whose input is that
    much larger (outputs no dy reaches get only the bias)."""
    x, w, _ = _conv_arrays(c)
    dy = _rand(c["seed"] + 3, naive_nd.conv(x, w, None, c["stride"], c["pads"], c["dil"], c["groups"]).shape)
    opad = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(c["stride"], c["dil"]))
    sizes = tuple((i - 1) * s - lo - hi + d * (k - 1) + o + 1 for i, s, (lo, hi), d, k, o
                  in zip(dy.shape[2:], c["stride"], c["pads"], c["dil"], c["ks"], opad))
    assume(min(sizes) >= 1)     # the padding may remove the whole output (refused: tests/test_grad_validation.py)
    wt = w  # (K, C/g, ...) is the transposed conv's (in_channels, out_channels/groups, ...)
    bias = _rand(c["seed"] + 4, (c["C"],))
    got = fc.conv_transpose3d(dy, wt, bias, c["stride"], c["pads"], opad, c["groups"], c["dil"], backend="numpy")
    want = naive_nd.conv_input(dy, w, (c["N"], c["C"]) + sizes, c["stride"], c["pads"], c["dil"], c["groups"])
    np.testing.assert_allclose(got, want + bias[None, :, None, None, None], rtol=1e-12, atol=1e-12)


@st.composite
def pool_cases(draw, nd=3, per_side=True, dilation=True):
    ks = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if dilation else (1,) * nd
    if per_side:
        pads = tuple((draw(st.integers(0, d * (k - 1))), draw(st.integers(0, d * (k - 1)))) for k, d in zip(ks, dil))
    else:
        pads = tuple((p, p) for p in (draw(st.integers(0, k // 2)) for k in ks))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    sizes = []
    for k, d, (lo, hi) in zip(ks, dil, pads):
        lo_size = max(1, d * (k - 1) + 1 - lo - hi)
        sizes.append(draw(st.integers(lo_size, lo_size + 3)))
    return dict(ks=ks, dil=dil, pads=pads, stride=stride, sizes=tuple(sizes), N=draw(st.integers(1, 2)),
                C=draw(st.integers(1, 2)), ceil=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                special=draw(st.booleans()))


def _pool_input(c):
    x = _rand(c["seed"], (c["N"], c["C"]) + c["sizes"]).round(0)     # rounded: ties happen
    if c["special"]:
        flat = x.reshape(-1)
        rng = np.random.default_rng(c["seed"] + 9)
        flat[rng.integers(0, flat.size, 2)] = np.nan
        flat[rng.integers(0, flat.size, 1)] = -np.inf
    return x


@SETTINGS
@given(pool_cases(), st.sampled_from([2, 3]))
def test_max_pool_per_side_matches_naive_loops(c, nd):
    c = dict(c, ks=c["ks"][3 - nd:], dil=c["dil"][3 - nd:], pads=c["pads"][3 - nd:], stride=c["stride"][3 - nd:],
             sizes=c["sizes"][3 - nd:])
    x = _pool_input(c)
    fn = fc.max_pool3d if nd == 3 else fc.max_pool2d
    got, idx = fn(x, c["ks"], c["stride"], c["pads"], c["dil"], c["ceil"], True, backend="numpy")
    want, widx = naive_nd.max_pool(x, c["ks"], c["stride"], c["pads"], c["dil"], c["ceil"])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, widx)


@SETTINGS
@given(pool_cases(dilation=False), st.sampled_from([2, 3]), st.booleans(), st.sampled_from([None, 3, -2]))
def test_avg_pool_per_side_matches_naive_loops(c, nd, cip, div):
    c = dict(c, ks=c["ks"][3 - nd:], pads=c["pads"][3 - nd:], stride=c["stride"][3 - nd:], sizes=c["sizes"][3 - nd:],
             special=False)
    x = _pool_input(c)
    if nd == 3:
        got = fc.avg_pool3d(x, c["ks"], c["stride"], c["pads"], c["ceil"], cip, div, backend="numpy")
    else:
        got = fc.avg_pool2d(x, c["ks"], c["stride"], c["pads"], c["ceil"], cip, div, backend="numpy")
    want = naive_nd.avg_pool(x, c["ks"], c["stride"], c["pads"], c["ceil"], cip, div)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    dy = _rand(c["seed"] + 5, want.shape)
    gfn = G.avg_pool3d if nd == 3 else G.avg_pool2d
    np.testing.assert_allclose(gfn(dy, x, c["ks"], c["stride"], c["pads"], c["ceil"], cip, div, backend="numpy"),
                               naive_nd.avg_pool_backward(dy, x.shape, c["ks"], c["stride"], c["pads"], c["ceil"],
                                                          cip, div), rtol=1e-13, atol=1e-13)


@SETTINGS
@given(pool_cases(per_side=False))
def test_max_pool3d_gradient_matches_naive_loops(c):
    x = _pool_input(dict(c, special=False))
    y, idx = naive_nd.max_pool(x, c["ks"], c["stride"], c["pads"], c["dil"], c["ceil"])
    dy = _rand(c["seed"] + 5, y.shape)
    got = G.max_pool3d(dy, x, c["ks"], c["stride"], c["pads"], c["dil"], c["ceil"], backend="numpy")
    # windows wholly in the padding (dilation) send nothing: their naive index is past the plane or unrelated
    live = np.isfinite(y)
    np.testing.assert_allclose(got, naive_nd.to_indices(np.where(live, dy, 0.0), np.where(live, idx, 0), x.shape),
                               rtol=1e-13, atol=1e-13)


@SETTINGS
@given(st.tuples(*[st.integers(1, 5)] * 3), st.tuples(*[st.integers(1, 4)] * 3), st.integers(0, 2**16),
       st.booleans())
def test_adaptive_pools3d_match_naive_loops(sizes, outs, seed, special):
    x = _pool_input(dict(seed=seed, N=1, C=2, sizes=sizes, special=special))
    np.testing.assert_allclose(fc.adaptive_avg_pool3d(x, outs, backend="numpy"),
                               naive_nd.adaptive_pool(x, outs, "avg"), rtol=1e-13, atol=1e-13)
    got, idx = fc.adaptive_max_pool3d(x, outs, True, backend="numpy")
    want, widx = naive_nd.adaptive_pool(x, outs, "max")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, widx)
    if not special:
        dy = _rand(seed + 1, want.shape)
        np.testing.assert_allclose(G.adaptive_avg_pool3d(dy, x, backend="numpy"),
                                   naive_nd.adaptive_avg_pool_backward(dy, x.shape), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(G.adaptive_max_pool3d(dy, x, backend="numpy"),
                                   naive_nd.to_indices(dy, widx, x.shape), rtol=1e-13, atol=1e-13)


def test_max_unpool3d_matches_naive_loops_and_last_write_wins():
    x = _rand(0, (2, 2, 2, 3, 2))
    idx = np.random.default_rng(1).integers(0, 4 * 5 * 3, x.shape)
    idx[0, 0, 0, 0, 0] = idx[0, 0, 1, 2, 1] = 7          # repeated: the later (row-major) write wins
    got = fc.max_unpool3d(x, idx, 2, output_size=(4, 5, 3), backend="numpy")
    np.testing.assert_array_equal(got, naive_nd.max_unpool(x, idx, (4, 5, 3)))
    assert got[0, 0].reshape(-1)[7] == x[0, 0, 1, 2, 1]


# --- padding modes -----------------------------------------------------------------------------------------
def test_padding_modes_by_hand_1d():
    """[a b c d] = [1 2 3 4] padded by 2 each side: the three rules written out, then convolved with the
    2-tap kernel [1, 10] (so y[i] = u[i] + 10 * u[i+1] over the padded signal u)."""
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 10.0]]])
    padded = {"reflect": [3, 2, 1, 2, 3, 4, 3, 2], "replicate": [1, 1, 1, 2, 3, 4, 4, 4],
              "circular": [3, 4, 1, 2, 3, 4, 1, 2], "zeros": [0, 0, 1, 2, 3, 4, 0, 0]}
    for mode, u in padded.items():
        want = [u[i] + 10 * u[i + 1] for i in range(len(u) - 1)]
        np.testing.assert_array_equal(fc.conv1d(x, w, padding=2, padding_mode=mode, backend="numpy")[0, 0], want)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_modes_match_naive_padding(mode, nd):
    sizes = (4, 3, 5)[3 - nd:]
    pads = ((1, 2), (2, 0), (3, 1))[3 - nd:]
    x = _rand(nd, (2, 3) + sizes)
    w = _rand(nd + 1, (4, 3) + (2, 3, 2)[3 - nd:])
    fn = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}[nd]
    got = fn(x, w, padding=pads, stride=2, padding_mode=mode, backend="numpy")
    want = naive_nd.conv(naive_nd.pad(x, pads, mode), w, None, (2,) * nd, ((0, 0),) * nd, (1,) * nd, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # 'same' padding by the mode: the output keeps the input's size
    same = fn(x, w, padding="same", padding_mode=mode, backend="numpy")
    assert same.shape[2:] == sizes


def test_padding_mode_limits_follow_torch():
    x = np.ones((1, 1, 3, 4))
    w = np.ones((1, 1, 1, 1))
    with pytest.raises(ValueError, match="reflect"):
        fc.conv2d(x, w, padding=3, padding_mode="reflect")       # 3 >= H = 3
    fc.conv2d(x, w, padding=3, padding_mode="circular")          # 3 <= 3: allowed
    with pytest.raises(ValueError, match="circular"):
        fc.conv2d(x, w, padding=4, padding_mode="circular")
    fc.conv2d(x, w, padding=9, padding_mode="replicate")
    with pytest.raises(ValueError, match="padding_mode"):
        fc.conv2d(x, w, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding_mode"):
        fc.conv_transpose2d(x, w, padding_mode="reflect")
    before = x.copy()
    fc.conv2d(x, w, padding=1, padding_mode="reflect")
    np.testing.assert_array_equal(x, before)


# --- lp pools ---------------------------------------------------------------------------------------------
def test_lp_pool_by_hand():
    """p = 2 over [3, 4] is 5; p = 1 is the plain sum; ceil_mode's cut window [5] is scaled to the whole
    window as torch does: (2 * 5**2 / 1) ** 0.5; p = inf is max |x|; p = 3 with a negative sum is NaN."""
    x = np.array([[[3.0, 4.0, 5.0]]])
    np.testing.assert_allclose(fc.lp_pool1d(x, 2, 2, backend="numpy")[0, 0], [5.0])
    np.testing.assert_allclose(fc.lp_pool1d(x, 1, 2, backend="numpy")[0, 0], [7.0])
    np.testing.assert_allclose(fc.lp_pool1d(x, 2, 2, ceil_mode=True, backend="numpy")[0, 0], [5.0, math.sqrt(50.0)])
    np.testing.assert_array_equal(fc.lp_pool1d(-x, math.inf, 2, stride=1, backend="numpy")[0, 0], [4.0, 5.0])
    assert np.isnan(fc.lp_pool1d(-x, 3, 2, backend="numpy")[0, 0, 0])


@SETTINGS
@given(pool_cases(per_side=False, dilation=False), st.sampled_from([1, 2, 3, 1.5]), st.sampled_from([1, 2, 3]))
def test_lp_pools_match_the_rule(c, p, nd):
    x = np.abs(_rand(c["seed"], (c["N"], c["C"]) + c["sizes"][3 - nd:])) if p == 1.5 else \
        _rand(c["seed"], (c["N"], c["C"]) + c["sizes"][3 - nd:])
    ks, stride = c["ks"][3 - nd:], c["stride"][3 - nd:]
    if any(s < k for s, k in zip(x.shape[2:], ks)):
        return
    fn = {1: fc.lp_pool1d, 2: fc.lp_pool2d, 3: fc.lp_pool3d}[nd]
    got = fn(x, p, ks if nd > 1 else ks[0], stride, c["ceil"], backend="numpy")
    np.testing.assert_allclose(got, naive_nd.lp_pool(x, p, ks, stride, c["ceil"]), rtol=1e-12, atol=1e-12)


def test_lp_pool_rejects_bad_norm_type():
    x = np.ones((1, 1, 4))
    for bad in (0, float("nan")):
        with pytest.raises(ValueError, match="norm_type"):
            fc.lp_pool1d(x, bad, 2)
    for bad in ("2", None, True):
        with pytest.raises(TypeError, match="norm_type"):
            fc.lp_pool1d(x, bad, 2)


def test_conv3d_padded_taps_contribute_nothing_by_hand():
    """A 1x1x1 infinite weight over ones with padding 1: outputs whose only tap is padding are 0 (nothing is
    summed), the rest inf -- not NaN from inf * padded zero."""
    x = np.ones((1, 1, 2, 2, 2))
    w = np.full((1, 1, 1, 1, 1), np.inf)
    y = fc.conv3d(x, w, padding=1, backend="numpy")[0, 0]
    want = np.zeros((4, 4, 4))
    want[1:3, 1:3, 1:3] = np.inf
    np.testing.assert_array_equal(y, want)
