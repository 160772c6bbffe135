"""Optional: the 3-D ops, padding modes and lp pools of the oracle against torch (skipped where PyTorch is
absent): same argument handling, output shapes, values and indices. torch is a second opinion on the
semantics; the oracle, judged by naive loops (tests/test_oracle_nd.py), judges the backends."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check against "
                                            "torch.nn.functional is skipped")
F = torch.nn.functional

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@st.composite
def conv3d_args(draw):
    g = draw(st.integers(1, 2))
    C, K = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 3))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(3))
    padding = draw(st.one_of(st.integers(0, 2), st.sampled_from(["valid", "same"]),
                             st.tuples(*[st.integers(0, 2)] * 3)))
    stride = 1 if padding == "same" else tuple(draw(st.integers(1, 3)) for _ in range(3))
    pad_num = (0,) * 3 if isinstance(padding, str) else (padding,) * 3 if isinstance(padding, int) else padding
    size = tuple(draw(st.integers(lo, lo + 4)) for lo in
                 (max(1, d * (k - 1) + 1 - 2 * p) for k, d, p in zip(ks, dil, pad_num)))
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 2)),) if batched else ()) + (C,) + size
    return dict(shape=shape, wshape=(K, C // g) + ks, bias=draw(st.booleans()), stride=stride, padding=padding,
                dilation=dil, groups=g, seed=draw(st.integers(0, 2**16)),
                mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])))


@SETTINGS
@given(conv3d_args())
def test_conv3d_and_padding_modes_match_torch(a):
    rng = np.random.default_rng(a["seed"])
    x, w = rng.standard_normal(a["shape"]), rng.standard_normal(a["wshape"])
    b = rng.standard_normal(a["wshape"][0]) if a["bias"] else None
    kw = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a["groups"])
    mode = a["mode"]
    pads = (0,) * 3 if a["padding"] == "valid" else None
    if mode == "reflect" and a["padding"] != "valid":
        # torch's limit (pad < size): a case past it must be refused by both
        spec = fc.conv_spec(x, w, b, spatial_dims=3, **kw)
        pads = [p for pair in spec.pads for p in pair]
        if any(max(lo, hi) >= n for (lo, hi), n in zip(spec.pads, spec.in_size)):
            with pytest.raises(ValueError, match="reflect"):
                fc.conv3d(x, w, b, padding_mode=mode, backend="numpy", **kw)
            return
    if mode == "circular" and a["padding"] != "valid":
        spec = fc.conv_spec(x, w, b, spatial_dims=3, **kw)
        if any(max(lo, hi) > n for (lo, hi), n in zip(spec.pads, spec.in_size)):
            with pytest.raises(ValueError, match="circular"):
                fc.conv3d(x, w, b, padding_mode=mode, backend="numpy", **kw)
            return
    conv = torch.nn.Conv3d(x.shape[-4], w.shape[0], w.shape[2:], bias=b is not None, padding_mode=mode,
                           **kw).double()
    with torch.no_grad():
        conv.weight.copy_(_t(w))
        if b is not None:
            conv.bias.copy_(_t(b))
        want = conv(_t(x)).numpy()
    got = fc.conv3d(x, w, b, padding_mode=mode, backend="numpy", **kw)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@st.composite
def pool3d_args(draw):
    ks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(3))
    pad = tuple(draw(st.integers(0, k // 2)) for k in ks)
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    size = tuple(draw(st.integers(lo, lo + 4)) for lo in
                 (max(1, d * (k - 1) + 1 - 2 * p) for k, d, p in zip(ks, dil, pad)))
    return dict(shape=(draw(st.integers(1, 2)), 2) + size, ks=ks, dil=dil, pad=pad, stride=stride,
                ceil=draw(st.booleans()), cip=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(pool3d_args())
def test_pools3d_and_their_gradients_match_torch(a):
    x = np.random.default_rng(a["seed"]).standard_normal(a["shape"]).round(1)
    tx = _t(x).requires_grad_()
    want, widx = F.max_pool3d(tx, a["ks"], a["stride"], a["pad"], a["dil"], a["ceil"], return_indices=True)
    got, idx = fc.max_pool3d(x, a["ks"], a["stride"], a["pad"], a["dil"], a["ceil"], True, backend="numpy")
    np.testing.assert_array_equal(got, want.detach().numpy())
    np.testing.assert_array_equal(idx, widx.numpy())
    g = np.random.default_rng(1).standard_normal(got.shape)
    if np.isfinite(got).all():   # windows wholly in the padding: torch adds their dy at an aliased position
        (tg,) = torch.autograd.grad(want, tx, _t(g))
        np.testing.assert_allclose(fc.grad.max_pool3d(g, x, a["ks"], a["stride"], a["pad"], a["dil"], a["ceil"],
                                                      backend="numpy"), tg.numpy(), rtol=1e-12, atol=1e-12)
    if any(n < k for n, k in zip(x.shape[2:], a["ks"])):
        return   # torch's avg_pool3d refuses an input smaller than the kernel even when padding covers it
    tx = _t(x).requires_grad_()
    want = F.avg_pool3d(tx, a["ks"], a["stride"], a["pad"], a["ceil"], a["cip"])
    got = fc.avg_pool3d(x, a["ks"], a["stride"], a["pad"], a["ceil"], a["cip"], backend="numpy")
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(2).standard_normal(got.shape)
    (tg,) = torch.autograd.grad(want, tx, _t(g))
    np.testing.assert_allclose(fc.grad.avg_pool3d(g, x, a["ks"], a["stride"], a["pad"], a["ceil"], a["cip"],
                                                  backend="numpy"), tg.numpy(), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.tuples(*[st.integers(1, 6)] * 3), st.tuples(*[st.integers(1, 4)] * 3), st.integers(0, 2**16))
def test_adaptive_pools3d_match_torch(size, out, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2) + size).round(1)
    tx = _t(x).requires_grad_()
    want, widx = F.adaptive_max_pool3d(tx, out, return_indices=True)
    got, idx = fc.adaptive_max_pool3d(x, out, True, backend="numpy")
    np.testing.assert_array_equal(got, want.detach().numpy())
    np.testing.assert_array_equal(idx, widx.numpy())
    want = F.adaptive_avg_pool3d(tx, out)
    np.testing.assert_allclose(fc.adaptive_avg_pool3d(x, out, backend="numpy"), want.detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(want.shape)
    (tg,) = torch.autograd.grad(want, tx, _t(g))
    np.testing.assert_allclose(fc.grad.adaptive_avg_pool3d(g, x, backend="numpy"), tg.numpy(), rtol=1e-12,
                               atol=1e-12)


@SETTINGS
@given(conv3d_args(), st.data())
def test_conv3d_gradients_and_transpose_match_torch(a, data):
    if a["padding"] == "same" or a["mode"] != "zeros":
        return
    rng = np.random.default_rng(a["seed"])
    shape = a["shape"] if len(a["shape"]) == 5 else (1,) + a["shape"]   # torch.nn.grad takes batched input only
    x, w = rng.standard_normal(shape), rng.standard_normal(a["wshape"])
    kw = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], groups=a["groups"])
    y = F.conv3d(_t(x), _t(w), **kw)
    g = rng.standard_normal(tuple(y.shape))
    np.testing.assert_allclose(fc.grad.conv3d_input(x.shape, w, g, backend="numpy", **kw),
                               torch.nn.grad.conv3d_input(x.shape, _t(w), _t(g), **kw).numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fc.grad.conv3d_weight(x, w.shape, g, backend="numpy", **kw),
                               torch.nn.grad.conv3d_weight(_t(x), w.shape, _t(g), **kw).numpy(), rtol=1e-10, atol=1e-10)
    opad = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in
                 zip(kw["stride"] if isinstance(kw["stride"], tuple) else (1,) * 3, a["dilation"]))
    try:
        want = F.conv_transpose3d(_t(g), _t(w), None, kw["stride"], kw["padding"] if kw["padding"] != "valid" else 0,
                                  opad, a["groups"], a["dilation"]).numpy()
    except RuntimeError:
        with pytest.raises(ValueError):
            fc.conv_transpose3d(g, w, None, kw["stride"], kw["padding"], opad, a["groups"], a["dilation"],
                                backend="numpy")
        return
    got = fc.conv_transpose3d(g, w, None, kw["stride"], kw["padding"], opad, a["groups"], a["dilation"],
                              backend="numpy")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_max_unpool3d_matches_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5, 7))
    y, idx = F.max_pool3d(_t(x), 2, stride=2, return_indices=True)
    want = F.max_unpool3d(y, idx, 2, stride=2, output_size=x.shape[2:]).numpy()
    np.testing.assert_array_equal(fc.max_unpool3d(y.numpy(), idx.numpy(), 2, stride=2, output_size=x.shape[2:],
                                                  backend="numpy"), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("p", [1, 2, 3, 1.5, math.inf, -math.inf])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_lp_pools_match_torch(nd, p, ceil_mode):
    x = np.random.default_rng(nd).standard_normal((2, 3) + (7, 6, 5)[:nd])
    if p == 1.5:
        x = np.abs(x)
    ks, stride = (3, 2, 2)[:nd], (2, 1, 2)[:nd]
    fn, tfn = getattr(fc, f"lp_pool{nd}d"), getattr(F, f"lp_pool{nd}d")
    k_arg = ks[0] if nd == 1 else ks
    want = tfn(_t(x), p, k_arg, stride, ceil_mode).numpy()
    got = fn(x, p, k_arg, stride, ceil_mode, backend="numpy")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
