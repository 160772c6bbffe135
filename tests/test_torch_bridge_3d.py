"""fastconv.torch beyond 2-D zero padding: the 3-D ops, ``padding_mode`` on the convolutions and modules, and
the lp pools. Every function is checked by torch.autograd.gradcheck (float64) on each CPU backend that
implements what it runs, its forward and every gradient against torch's own functions and modules, and the
padding's adjoint against the naive padding loops of tests/naive_nd.py.

A backend without a 3-D implementation of an op is skipped with fastconv's own message (the 3-D kernels land
backend by backend): the skip is taken only when fastconv raises its "no implementation"/"not supported"
ValueError, never by a list written here. Skipped where PyTorch is absent."""
from __future__ import annotations

import contextlib
import io
import math
import re

import numpy as np
import pytest

import fastconv as fc

from . import naive_nd

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the fastconv.torch bridge is not tested")
F = torch.nn.functional
ft = pytest.importorskip("fastconv.torch")

BACKENDS = ("numpy", "numba")
MODES = ("reflect", "replicate", "circular")
_UNIMPLEMENTED = re.compile(r"no implementation of|has no \w+ implementation|-D problems not supported")


@contextlib.contextmanager
def _unless_unimplemented(backend):
    """Skip the test (with fastconv's message) when ``backend`` turns out to lack an implementation the case
    needs; the numpy oracle has every op, so there nothing is skipped."""
    info = fc.backends()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend!r} is not available: {info['reason']}")
    try:
        yield
    except ValueError as e:
        if backend != "numpy" and _UNIMPLEMENTED.search(str(e)):
            pytest.skip(f"backend {backend!r} lacks an implementation: {e}")
        raise


def _rand(*shape, seed=0, positive=False, grad=True):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    if positive:            # away from 0, where x**p has no derivative for p < 1
        t = t.abs() + 0.25
    return t.requires_grad_(grad)


def _torch_padded(x, pads, mode, value=0.0):
    """torch's F.pad with per-dimension (before, after) pairs (F.pad wants the last dimension first)."""
    flat = [v for pair in reversed(pads) for v in pair]
    if mode == "zeros":
        return F.pad(x, flat, mode="constant", value=value)
    return F.pad(x, flat, mode=mode)


# ---------------------------------------------------------------------------------------------------
# Cases: (fastconv.torch function, torch reference, tensor builders, keyword arguments)
# ---------------------------------------------------------------------------------------------------
def _conv_tensors(x, w, bias, groups=1, transpose=False):
    def build(seed):
        k = w[1] * groups if transpose else w[0]
        return [_rand(*x, seed=seed), _rand(*w, seed=seed + 1), _rand(k, seed=seed + 2) if bias else None]
    return build


def _conv_ref(fn):
    """torch.nn.Conv's rule: pad by the mode (F.pad), then the unpadded functional convolution; per-side
    padding pairs (beyond torch) the same way with zeros."""
    nd = int(fn[-2])

    def ref(x, w, b, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
        pairs = isinstance(padding, tuple) and any(isinstance(p, tuple) for p in padding)
        if padding_mode == "zeros" and not pairs:
            return getattr(F, fn)(x, w, b, stride, padding, dilation, groups)
        if padding == "same":       # torch's split: the odd extra padding after
            tot = [d * (k - 1) for d, k in zip(_tup(dilation, nd), w.shape[2:])]
            padding = tuple((t // 2, t - t // 2) for t in tot)
        else:
            padding = tuple(p if isinstance(p, tuple) else (p, p) for p in _tup(padding, nd))
        return getattr(F, fn)(_torch_padded(x, padding, padding_mode), w, b, stride, 0, dilation, groups)
    return ref


def _tup(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _pool_tensors(shape, positive=False):
    return lambda seed: [_rand(*shape, seed=seed, positive=positive)]


def _per_side_avg_ref(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """avg_pool3d with per-side padding written with torch: window sums of the zero-padded input divided
    by the count of the window's taps inside the input (count_include_pad=False) or the whole window."""
    padded = _torch_padded(x, padding, "zeros")
    k = math.prod(kernel_size)
    sums = F.avg_pool3d(padded, kernel_size, stride, divisor_override=1)
    if count_include_pad:
        return sums / k
    counts = F.avg_pool3d(_torch_padded(torch.ones_like(x), padding, "zeros"), kernel_size, stride,
                          divisor_override=1)
    return sums / counts


def _per_side_max_ref(x, kernel_size, stride=None, padding=0):
    return F.max_pool3d(_torch_padded(x, padding, "zeros", value=-math.inf), kernel_size, stride)


PER_SIDE = ((1, 0), (0, 2), (2, 1))
BLOCKS = dict(kernel_size=(2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
CASES = [
    pytest.param("conv3d", _conv_ref("conv3d"), _conv_tensors((2, 4, 4, 5, 4), (4, 2, 3, 2, 3), True, 2),
                 dict(stride=(2, 1, 1), padding=1, dilation=(1, 1, 2), groups=2), id="conv3d-groups-stride-dil"),
    pytest.param("conv3d", _conv_ref("conv3d"), _conv_tensors((3, 4, 4, 5), (2, 3, 2, 3, 2), False),
                 dict(padding=((1, 0), (0, 2), (1, 1))), id="conv3d-per-side-unbatched"),
    pytest.param("conv3d", _conv_ref("conv3d"), _conv_tensors((1, 2, 4, 4, 4), (2, 2, 2, 3, 2), True),
                 dict(padding="same", dilation=(2, 1, 1)), id="conv3d-same"),
    *[pytest.param(f"conv{nd}d", _conv_ref(f"conv{nd}d"),
                   _conv_tensors(((2,) if nd != 2 else ()) + (2,) + (5, 4, 6)[3 - nd:], (3, 2) + (3, 2, 3)[3 - nd:],
                                 True),
                   dict(stride=(2, 1, 1)[3 - nd:], padding=(2, 1, (1, 2))[3 - nd:] if nd > 1 else ((2, 1),),
                        padding_mode=mode), id=f"conv{nd}d-{mode}" + ("-unbatched" if nd == 2 else ""))
      for nd in (1, 2, 3) for mode in MODES],
    pytest.param("conv2d", _conv_ref("conv2d"), _conv_tensors((1, 2, 5, 6), (2, 1, 2, 4), False, 2),
                 dict(padding="same", groups=2, padding_mode="reflect"), id="conv2d-same-even-kernel-reflect"),
    pytest.param("conv_transpose3d", F.conv_transpose3d,
                 _conv_tensors((2, 4, 3, 3, 2), (4, 3, 2, 3, 2), True, 2, transpose=True),
                 dict(stride=(2, 1, 2), padding=(1, 1, 0), output_padding=(1, 0, 1), groups=2), id="tconv3d"),
    # output_padding >= stride (dilation > stride): the input gradient's convolution has one extra plane
    pytest.param("conv_transpose3d", F.conv_transpose3d,
                 _conv_tensors((1, 2, 3, 2, 3), (2, 2, 2, 2, 3), True, transpose=True),
                 dict(stride=1, padding=(0, 0, 1), output_padding=(1, 0, 0), dilation=(2, 1, 1)),
                 id="tconv3d-outpad-over-stride"),
    pytest.param("max_pool3d", F.max_pool3d, _pool_tensors((2, 2, 5, 6, 5)),
                 dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), id="max3d-overlap-ceil"),
    pytest.param("max_pool3d", F.max_pool3d, _pool_tensors((1, 2, 5, 5, 6)),
                 dict(kernel_size=(2, 2, 3), stride=1, dilation=(1, 2, 1)), id="max3d-dilated"),
    pytest.param("max_pool3d", _per_side_max_ref, _pool_tensors((1, 2, 4, 5, 5)),
                 dict(kernel_size=(2, 3, 3), stride=2, padding=PER_SIDE), id="max3d-per-side"),
    pytest.param("avg_pool3d", F.avg_pool3d, _pool_tensors((2, 2, 5, 6, 5)),
                 dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                 id="avg3d-ceil-nopad"),
    pytest.param("avg_pool3d", F.avg_pool3d, _pool_tensors((3, 4, 4, 6)),
                 dict(kernel_size=(2, 2, 3), divisor_override=5), id="avg3d-divisor-unbatched"),
    *[pytest.param("avg_pool3d", _per_side_avg_ref, _pool_tensors((1, 2, 4, 5, 5)),
                   dict(kernel_size=(2, 3, 3), stride=2, padding=PER_SIDE, count_include_pad=cip),
                   id=f"avg3d-per-side-{'count' if cip else 'nocount'}-pad") for cip in (True, False)],
    pytest.param("adaptive_avg_pool3d", F.adaptive_avg_pool3d, _pool_tensors((2, 2, 5, 7, 4)),
                 dict(output_size=(3, 4, None)), id="adaptive-avg3d"),
    pytest.param("adaptive_max_pool3d", F.adaptive_max_pool3d, _pool_tensors((2, 2, 5, 7, 4)),
                 dict(output_size=(2, 3, 3)), id="adaptive-max3d"),
    pytest.param("lp_pool3d", F.lp_pool3d, _pool_tensors((2, 2, 5, 4, 5), positive=True),
                 dict(norm_type=2, kernel_size=2, ceil_mode=True), id="lp3d-p2-ceil"),
    pytest.param("lp_pool3d", F.lp_pool3d, _pool_tensors((1, 2, 4, 4, 5)),
                 dict(norm_type=math.inf, kernel_size=(2, 2, 3), stride=1), id="lp3d-inf"),
    pytest.param("lp_pool2d", F.lp_pool2d, _pool_tensors((2, 3, 6, 7), positive=True),
                 dict(norm_type=3, kernel_size=(2, 3), stride=(2, 2), ceil_mode=True), id="lp2d-p3-ceil"),
    pytest.param("lp_pool2d", F.lp_pool2d, _pool_tensors((2, 3, 5, 6)),
                 dict(norm_type=-math.inf, kernel_size=2, stride=1), id="lp2d-minus-inf"),
    pytest.param("lp_pool1d", F.lp_pool1d, _pool_tensors((2, 3, 9), positive=True),
                 dict(norm_type=1.5, kernel_size=3, stride=2), id="lp1d-p1.5"),
    pytest.param("lp_pool1d", F.lp_pool1d, _pool_tensors((3, 8), positive=True),
                 dict(norm_type=-2, kernel_size=2), id="lp1d-negative-p-unbatched"),
    pytest.param("unfold", F.unfold, _pool_tensors((2, 3, 6, 7)), dict(BLOCKS), id="unfold2d"),
    # (N, C*kh*kw, L): 3 channels, 2x3 taps, 4x5 blocks of a 6x7 image
    pytest.param("fold", F.fold, _pool_tensors((2, 18, 20)), dict(BLOCKS, output_size=(6, 7)), id="fold2d"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn, ref, build, kw", CASES)
def test_gradcheck(fn, ref, build, kw, backend):
    tensors = build(0)
    inputs = tuple(t for t in tensors if t is not None)

    def f(*args):
        it = iter(args)
        return getattr(ft, fn)(*[None if t is None else next(it) for t in tensors], **kw, backend=backend)

    with _unless_unimplemented(backend):
        # fast mode (random projections of the Jacobian) keeps the CI cost small; test_matches_torch checks
        # every gradient element against torch's autograd
        assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("fn, ref, build, kw", CASES)
def test_matches_torch(fn, ref, build, kw):
    """Forward values and every gradient equal torch's (its own op, or the rule written with torch's ops for
    what torch lacks), on the numpy oracle and on numba where it implements the case."""
    ref_in = build(3)
    want = ref(*ref_in, **kw)
    dy = _rand(*want.shape, seed=9, grad=False)
    want_grads = torch.autograd.grad(want, [t for t in ref_in if t is not None], dy)
    for backend in BACKENDS:
        ins = [None if t is None else t.detach().clone().requires_grad_() for t in ref_in]
        try:
            with _unless_unimplemented(backend):
                out = getattr(ft, fn)(*ins, **kw, backend=backend)
                grads = torch.autograd.grad(out, [t for t in ins if t is not None], dy)
        except pytest.skip.Exception:
            assert backend != "numpy"
            continue
        assert out.dtype == want.dtype and out.shape == want.shape, backend
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{backend} forward: {m}")
        for i, (g, r) in enumerate(zip(grads, want_grads)):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12, msg=lambda m: f"{backend} gradient {i}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nd", [1, 3])
def test_unfold_fold_beyond_torch(nd, backend):
    """unfold and fold in 1-D and 3-D with per-side padding (torch's are 2-D only): both pass gradcheck, and
    fold with an int kernel_size stays 3-D in its backward (the geometry comes from the spec)."""
    size, ks, pads = (5, 4, 6)[3 - nd:], (2, 2, 3)[3 - nd:], ((1, 0), (0, 1), (2, 1))[3 - nd:]
    x = _rand(2, 2, *size)
    with _unless_unimplemented(backend):
        assert torch.autograd.gradcheck(
            lambda t: ft.unfold(t, ks, padding=pads, stride=2, backend=backend), (x,), fast_mode=True)
        cols = ft.unfold(x, ks, padding=pads, stride=2, backend=backend).detach().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: ft.fold(t, size, ks, padding=pads, stride=2, backend=backend), (cols,), fast_mode=True)
        if nd == 3:
            cube = ft.unfold(x, (2, 2, 2), backend=backend).detach().requires_grad_()
            (g,) = torch.autograd.grad(ft.fold(cube, size, 2, backend=backend), cube, torch.ones(2, 2, *size,
                                                                                             dtype=x.dtype))
            assert torch.equal(g, torch.ones_like(cube))     # unfold of ones: every tap is inside the image


def test_forward_is_fastconvs_own():
    """The bridge's padded convolution and its lp pools (compositions it runs itself) give fastconv's
    functional results bit for bit."""
    x, w = _rand(2, 3, 5, 6, grad=False), _rand(4, 3, 3, 2, seed=1, grad=False)
    for mode in MODES:
        got = ft.conv2d(x, w, padding=((2, 1), (0, 1)), padding_mode=mode, backend="numpy").numpy()
        want = fc.conv2d(x.numpy(), w.numpy(), padding=((2, 1), (0, 1)), padding_mode=mode, backend="numpy")
        np.testing.assert_array_equal(got, want)
    v = _rand(2, 2, 4, 5, 6, positive=True, grad=False)
    for p in (2, 1.5, math.inf, -math.inf):
        got = ft.lp_pool3d(v, p, (2, 3, 2), stride=(1, 2, 2), ceil_mode=True, backend="numpy").numpy()
        want = fc.lp_pool3d(v.numpy(), p, (2, 3, 2), stride=(1, 2, 2), ceil_mode=True, backend="numpy")
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_lower_precision_keeps_its_dtype(dtype):
    """float32 and float16 tensors through the padding node and the lp pool: results and gradients keep the
    dtype and agree with torch's float64 values to the dtype's precision."""
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=2e-2)
    x64, w64 = _rand(2, 3, 6, 7, positive=True), _rand(4, 3, 3, 2, seed=1)
    x, w = (t.detach().to(dtype).requires_grad_() for t in (x64, w64))
    for got, want, ins, ins64 in [
            (ft.conv2d(x, w, padding=(2, 1), padding_mode="reflect", backend="numpy"),
             F.conv2d(F.pad(x64, (1, 1, 2, 2), mode="reflect"), w64), (x, w), (x64, w64)),
            (ft.lp_pool2d(x, 2, 2, ceil_mode=True, backend="numpy"), F.lp_pool2d(x64, 2, 2, ceil_mode=True),
             (x,), (x64,))]:
        assert got.dtype == dtype
        dy = _rand(*want.shape, seed=2, grad=False)
        grads = torch.autograd.grad(got, ins, dy.to(dtype))
        torch.testing.assert_close(got.double(), want, **tol)
        for g, r in zip(grads, torch.autograd.grad(want, ins64, dy)):
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), r, **tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pads", [((1, 2),), ((2, 0), (1, 3)), ((1, 1), (0, 2), (2, 1))], ids=["1d", "2d", "3d"])
def test_pad_adjoint_is_the_naive_transpose(mode, pads):
    """The padding's backward is exactly the transpose of the padding map: entry i of the adjoint of g is
    <pad(e_i), g>, with pad the naive loop of tests/naive_nd.py (integer-valued g: every sum is exact)."""
    sizes = (3, 4, 3)[:len(pads)]
    rng = np.random.default_rng(1)
    g = rng.integers(-9, 10, size=(1, 2) + tuple(n + lo + hi for n, (lo, hi) in zip(sizes, pads))).astype(float)
    want = np.zeros((1, 2) + sizes)
    for i in np.ndindex(*want.shape):
        e = np.zeros(want.shape)
        e[i] = 1.0
        want[i] = (naive_nd.pad(e, pads, mode) * g).sum()
    got = ft._pad_adjoint(g, pads, mode)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == g.dtype


def test_lp_gradient_is_zero_where_the_window_sum_is():
    """torch sets lp_pool's gradient to zero where a window's sum of x**p is zero (0 ** (1/p - 1) would be
    inf); so does the bridge."""
    x = _rand(1, 1, 6, positive=True)
    with torch.no_grad():
        x[0, 0, 2:4] = 0.0            # the second window (kernel 2, stride 2) sums to zero
    (g,) = torch.autograd.grad(ft.lp_pool1d(x, 2, 2, backend="numpy").sum(), x)
    (g_ref,) = torch.autograd.grad(F.lp_pool1d(x, 2, 2).sum(), x)
    assert torch.equal(g[0, 0, 2:4], torch.zeros(2)) and torch.isfinite(g).all()
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool3d_indices_and_unpool(backend):
    """max_pool3d's indices are torch's (flat over each volume); max_unpool3d of them gives torch's result,
    and its gradient (a gather at the indices) passes gradcheck and equals torch's."""
    x = _rand(2, 2, 4, 6, 5)
    with _unless_unimplemented(backend):
        y, idx = ft.max_pool3d(x, 2, return_indices=True, backend=backend)
        y_ref, idx_ref = F.max_pool3d(x, 2, return_indices=True)
        assert idx.dtype == torch.int64 and torch.equal(idx, idx_ref) and not idx.requires_grad
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        out = ft.max_unpool3d(y, idx, 2, output_size=x.shape[-3:], backend=backend)
        torch.testing.assert_close(out, F.max_unpool3d(y_ref, idx_ref, 2, output_size=x.shape[-3:]), rtol=0, atol=0)
        v = y.detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda t: ft.max_unpool3d(t, idx, 2, output_size=x.shape[-3:],
                                                                     backend=backend), (v,))
        dy = _rand(*out.shape, seed=5, grad=False)
        (g,) = torch.autograd.grad(ft.max_unpool3d(v, idx, 2, output_size=x.shape[-3:], backend=backend), v, dy)
    v_ref = y_ref.detach().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.max_unpool3d(v_ref, idx_ref, 2, output_size=x.shape[-3:]), v_ref, dy)
    assert torch.equal(g, g_ref)


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ("zeros",) + MODES)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_modules_match_torch_modules(nd, mode):
    """fastconv.torch.Conv{1,2,3}d is torch.nn.Conv{1,2,3}d (parameters, state_dict, padding_mode) with
    fastconv's forward: the same output and the same input, weight and bias gradients."""
    torch.manual_seed(nd)
    args = (4, 6, (3, 2, 3)[3 - nd:])
    kw = dict(stride=(1, 2, 1)[3 - nd:], padding=(1, 2, 1)[3 - nd:], groups=2, padding_mode=mode)
    ref = getattr(torch.nn, f"Conv{nd}d")(*args, **kw).double()
    mod = getattr(ft, f"Conv{nd}d")(*args, **kw, backend="numpy").double()
    mod.load_state_dict(ref.state_dict())
    assert isinstance(mod, getattr(torch.nn, f"Conv{nd}d")) and mod.padding_mode == mode
    assert "backend='numpy'" in repr(mod)
    x = _rand(2, 4, *(5, 4, 6)[3 - nd:])
    y, y_ref = mod(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    dy = _rand(*y.shape, seed=4, grad=False)
    got = torch.autograd.grad(y, (x, mod.weight, mod.bias), dy)
    want = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), dy)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_conv3d_module_same_padding_and_state_dict_round_trip():
    """Conv3d's initialisation is torch's (same seed, same parameters), its state_dict round-trips through
    torch.save/torch.load into a fresh fastconv Conv3d and into torch.nn.Conv3d, and padding='same' with a
    padding mode gives torch's module result."""
    kw = dict(kernel_size=(2, 3, 4), padding="same", dilation=(2, 1, 1), padding_mode="replicate", bias=True)
    torch.manual_seed(7)
    mod = ft.Conv3d(2, 3, **kw, backend="numpy").double()
    torch.manual_seed(7)
    ref = torch.nn.Conv3d(2, 3, **kw).double()
    state = mod.state_dict()
    assert list(state) == list(ref.state_dict()) == ["weight", "bias"]
    for k, v in ref.state_dict().items():
        assert torch.equal(state[k], v)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf)
    again = ft.Conv3d(2, 3, **kw, backend="numpy").double()
    again.load_state_dict(loaded)
    other = torch.nn.Conv3d(2, 3, **kw).double()
    other.load_state_dict(loaded)
    x = _rand(1, 2, 4, 5, 6, grad=False)
    assert torch.equal(again(x), mod(x))
    torch.testing.assert_close(mod(x), other(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Bad arguments: refused where torch refuses them, naming the argument, before anything runs
# ---------------------------------------------------------------------------------------------------
def test_bad_arguments():
    x, w = _rand(1, 2, 3, 4, 5), _rand(3, 2, 2, 2, 2, seed=1)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        ft.conv3d(x, w, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding_mode"):          # torch's own constructor refuses it too
        ft.Conv3d(2, 3, 2, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding_mode='reflect' needs each padding smaller"):   # 3 >= D = 3
        ft.conv3d(x, w, padding=3, padding_mode="reflect")
    with pytest.raises(RuntimeError):                              # torch refuses the same padding
        torch.nn.Conv3d(2, 3, 2, padding=3, padding_mode="reflect")(x)
    with pytest.raises(ValueError, match="padding_mode='circular' needs each padding at most"):
        ft.conv1d(x[:, :, 0, 0], w[:, :, 0, 0], padding=6, padding_mode="circular")    # 6 > L = 5
    with pytest.raises(ValueError, match="padding_mode 'reflect' is not supported here"):
        ft.conv_transpose3d(x, _rand(2, 3, 2, 2, 2), padding_mode="reflect")
    with pytest.raises(ValueError, match="weight must be 5-D"):
        ft.conv3d(x, w[..., 0])
    with pytest.raises(ValueError, match="weight must be 5-D"):
        ft.conv_transpose3d(x, w[..., 0])
    with pytest.raises(ValueError, match="padding"):               # more than half the kernel, as torch
        ft.max_pool3d(x, 2, padding=2, backend="numpy")
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool3d(x, 2, padding=2)
    with pytest.raises(ValueError, match="norm_type must be non-zero"):
        ft.lp_pool3d(x, 0, 2)
    with pytest.raises(TypeError, match="norm_type must be a real number"):
        ft.lp_pool2d(x[:, :, 0], "2", 2)
    with pytest.raises(ValueError, match="kernel_size"):
        ft.lp_pool3d(x, 2, (2, 2))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        ft.conv3d(x.detach().numpy(), w, padding=1, padding_mode="reflect")
    with pytest.raises(TypeError, match="on device meta"):
        ft.lp_pool3d(torch.zeros(1, 1, 2, 2, 2, device="meta"), 2, 2)
