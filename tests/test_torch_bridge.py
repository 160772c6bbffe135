"""fastconv.torch: every op's gradient checked by torch.autograd.gradcheck (float64, finite differences of the
op's own forward) on every CPU backend that implements what the op runs, and its values (forward and backward)
compared with torch.nn.functional and torch's autograd; plus the bridge's own promises: no copies, only the
gradients asked for, only what backward needs kept, no double backward, clear errors, torch optional.

A backend that lacks an op the case needs is skipped with a reason naming the missing op (the gradients
land backend by backend). Skipped where PyTorch is absent."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the fastconv.torch bridge is not tested")
F = torch.nn.functional
ft = pytest.importorskip("fastconv.torch")

CPU_BACKENDS = ("numpy", "numba", "cuda-emu")


def _require(backend, ops):
    """Skip (with the reason) unless ``backend`` is available here and has an implementation of every op."""
    info = fc.backends()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend!r} is not available: {info['reason']}")
    missing = [op for op in ops if not _dispatch.candidates(types.SimpleNamespace(op=op), backend)]
    if missing:
        pytest.skip(f"backend {backend!r} has no {', '.join(missing)} implementation yet")


def _rand(*shape, seed=0, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


# ---------------------------------------------------------------------------------------------------
# Cases: (id, the ops it runs, fastconv.torch function, torch function, tensor builders, keyword arguments).
# Every forward/backward op each case runs is named, so a backend missing one is skipped, not failed.
# ---------------------------------------------------------------------------------------------------
CONV_OPS = ("conv", "conv_input", "conv_weight")


def _conv_case(name, nd, x, w, bias, **kw):
    return pytest.param(f"conv{nd}d", CONV_OPS, (x, w, bias), kw, id=name)


def _tconv_case(name, nd, x, w, bias, **kw):
    return pytest.param(f"conv_transpose{nd}d", CONV_OPS, (x, w, bias), kw, id=name)


def _pool_case(name, fn, kind, x, **kw):
    return pytest.param(fn, (f"{kind}_pool", f"{kind}_pool_backward"), (x,), kw, id=name)


CASES = [
    _conv_case("conv2d-groups-stride-dil-bias", 2, (2, 4, 5, 4), (4, 2, 3, 2), True,
               stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
    _conv_case("conv2d-asym-pad-unbatched", 2, (3, 5, 4), (2, 3, 3, 3), False,
               padding=((2, 0), (0, 1))),
    _conv_case("conv2d-same", 2, (1, 2, 5, 5), (3, 2, 3, 3), True, padding="same", dilation=(1, 2)),
    _conv_case("conv1d-stride-dil", 1, (2, 3, 9), (4, 3, 3), True, stride=2, padding=1, dilation=2),
    _tconv_case("tconv2d-groups-outpad", 2, (2, 4, 3, 3), (4, 3, 3, 2), True,
                stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2),
    # output_padding >= stride (dilation > stride): the input gradient's convolution has one extra row
    _tconv_case("tconv2d-outpad-over-stride", 2, (1, 2, 3, 4), (2, 3, 2, 3), True,
                stride=1, padding=(0, 1), output_padding=(1, 0), dilation=(2, 1)),
    _tconv_case("tconv2d-asym-pad", 2, (2, 2, 3, 4), (2, 2, 3, 3), False,
                stride=2, padding=((2, 0), (0, 1)), output_padding=(0, 1)),
    _tconv_case("tconv1d-unbatched", 1, (2, 5), (2, 3, 3), True, stride=2, padding=1, output_padding=1),
    _pool_case("max2d-overlap-ceil", "max_pool2d", "max", (2, 3, 7, 8),
               kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _pool_case("max2d-dilated", "max_pool2d", "max", (1, 2, 7, 7), kernel_size=2, stride=1, dilation=2),
    _pool_case("max1d", "max_pool1d", "max", (2, 3, 9), kernel_size=3, stride=2, padding=1),
    _pool_case("avg2d-ceil-nopad", "avg_pool2d", "avg", (2, 3, 7, 8),
               kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    _pool_case("avg2d-divisor", "avg_pool2d", "avg", (1, 2, 6, 6), kernel_size=(2, 3), divisor_override=5),
    _pool_case("avg1d-unbatched", "avg_pool1d", "avg", (3, 9), kernel_size=4, stride=3, padding=2),
    _pool_case("adaptive-avg2d", "adaptive_avg_pool2d", "adaptive_avg", (2, 3, 7, 8), output_size=(3, 5)),
    _pool_case("adaptive-avg1d", "adaptive_avg_pool1d", "adaptive_avg", (2, 3, 9), output_size=4),
    _pool_case("adaptive-max2d", "adaptive_max_pool2d", "adaptive_max", (2, 2, 7, 5), output_size=(3, 2)),
    _pool_case("adaptive-max1d", "adaptive_max_pool1d", "adaptive_max", (2, 3, 10), output_size=4),
]


def _case_tensors(fn, shapes, kw, dtype=torch.float64, seed=0):
    if len(shapes) == 1:
        return [_rand(*shapes[0], seed=seed, dtype=dtype)]
    x, w, bias = shapes
    channels = w[1] * kw.get("groups", 1) if fn.startswith("conv_transpose") else w[0]
    return [_rand(*x, seed=seed, dtype=dtype), _rand(*w, seed=seed + 1, dtype=dtype),
            _rand(channels, seed=seed + 2, dtype=dtype) if bias else None]


def _call(mod, fn, tensors, kw, **extra):
    return getattr(mod, fn)(*tensors, **kw, **extra)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fn, ops, shapes, kw", CASES)
def test_gradcheck(fn, ops, shapes, kw, backend):
    _require(backend, ops)
    tensors = _case_tensors(fn, shapes, kw)
    inputs = tuple(t for t in tensors if t is not None)

    def f(*args):
        it = iter(args)
        return _call(ft, fn, [None if t is None else next(it) for t in tensors], kw, backend=backend)

    # fast mode (the Jacobian against random projections) keeps the file's CI cost small; test_matches_torch
    # compares every gradient element with torch's autograd
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


def _torch_op(fn, tensors, kw):
    """torch's op; asymmetric padding ((top, bottom), (left, right)), which torch lacks, as an explicit F.pad
    of a convolution's input, or a crop of a transposed convolution's unpadded output."""
    pad = kw.get("padding")
    asym = isinstance(pad, tuple) and isinstance(pad[0], tuple)
    if asym and fn.startswith("conv_transpose"):
        out = getattr(F, fn)(*tensors, **dict(kw, padding=0))
        crop = tuple(slice(lo, out.shape[d] - hi) for d, (lo, hi) in zip(range(-len(pad), 0), pad))
        return out[(Ellipsis,) + crop]
    if asym and fn.startswith("conv"):
        flat = [v for pair in reversed(pad) for v in pair]       # F.pad: last dimension first
        tensors = [F.pad(tensors[0], flat)] + list(tensors[1:])
        kw = dict(kw, padding=0)
    return getattr(F, fn)(*tensors, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("fn, ops, shapes, kw", CASES)
def test_matches_torch(fn, ops, shapes, kw, dtype):
    """Forward values and every gradient equal torch's own op and autograd (numpy oracle backend and the
    default backend where it has the ops)."""
    backends = ["numpy"] + (["numba"] if all(_dispatch.candidates(types.SimpleNamespace(op=o), "numba")
                                             for o in ops) else [])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    ref_in = _case_tensors(fn, shapes, kw, dtype=dtype, seed=3)
    ref = _torch_op(fn, ref_in, kw)
    dy = _rand(*ref.shape, seed=9, dtype=dtype, grad=False)
    ref_grads = torch.autograd.grad(ref, [t for t in ref_in if t is not None], dy)
    for backend in backends:
        ins = [None if t is None else t.detach().clone().requires_grad_() for t in ref_in]
        out = _call(ft, fn, ins, kw, backend=backend)
        assert out.dtype == ref.dtype and out.shape == ref.shape, backend
        torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{backend} forward: {m}")
        grads = torch.autograd.grad(out, [t for t in ins if t is not None], dy)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            torch.testing.assert_close(g, r, **tol, msg=lambda m: f"{backend} gradient {i}: {m}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("nd", [1, 2])
def test_max_pool_indices_and_unpool(nd, backend):
    """return_indices gives torch's indices; max_unpool of them gives torch's result, and its gradient
    (a gather at the indices) passes gradcheck and equals torch's."""
    _require(backend, ("max_pool", "max_unpool"))
    x = _rand(2, 3, 6, 8)[..., 0, :] if nd == 1 else _rand(2, 3, 6, 8)
    pool, unpool = getattr(ft, f"max_pool{nd}d"), getattr(ft, f"max_unpool{nd}d")
    y, idx = pool(x, 2, return_indices=True, backend=backend)
    y_ref, idx_ref = getattr(F, f"max_pool{nd}d")(x, 2, return_indices=True)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_ref)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    assert not idx.requires_grad
    out = unpool(y, idx, 2, backend=backend)
    torch.testing.assert_close(out, getattr(F, f"max_unpool{nd}d")(y_ref, idx_ref, 2), rtol=0, atol=0)
    v = y.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: unpool(t, idx, 2, backend=backend), (v,))
    dy = _rand(*out.shape, seed=5, grad=False)
    (g,) = torch.autograd.grad(unpool(v, idx, 2, backend=backend), v, dy)
    v_ref = y_ref.detach().requires_grad_()
    (g_ref,) = torch.autograd.grad(getattr(F, f"max_unpool{nd}d")(v_ref, idx_ref, 2), v_ref, dy)
    assert torch.equal(g, g_ref)


def test_max_pool_through_lenet_like_chain():
    """A small chain (conv -> relu -> max pool -> conv_transpose -> sum) differentiates end to end and
    gives torch's gradients for every parameter."""
    x, w1, w2 = _rand(2, 1, 8, 8, seed=1), _rand(3, 1, 3, 3, seed=2), _rand(3, 2, 2, 2, seed=3)

    def net(mod, **kw):
        a = mod.conv2d(x, w1, padding=1, **kw).relu()
        a = mod.max_pool2d(a, 2, **kw)
        return (mod.conv_transpose2d(a, w2, stride=2, **kw) ** 2).sum()

    g = torch.autograd.grad(net(ft, backend="numpy"), (x, w1, w2))
    g_ref = torch.autograd.grad(net(F), (x, w1, w2))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# The bridge's promises
# ---------------------------------------------------------------------------------------------------
def test_cpu_tensors_are_not_copied():
    t = _rand(2, 3, 4, grad=True)
    a = ft._array(t, "input")
    assert a.__array_interface__["data"][0] == t.data_ptr() and a.shape == (2, 3, 4)
    r = np.arange(6.0).reshape(2, 3)
    assert ft._tensor(r).data_ptr() == r.__array_interface__["data"][0]
    # a non-contiguous tensor is made contiguous (one copy) and gives the same result as its copy
    x = _rand(2, 3, 8, 6, grad=False).transpose(2, 3)
    w = _rand(4, 3, 3, 3, seed=1, grad=False)
    assert not x.is_contiguous()
    assert torch.equal(ft.conv2d(x, w, backend="numpy"), ft.conv2d(x.contiguous(), w, backend="numpy"))


def test_inputs_not_modified():
    x, w, b = _rand(2, 3, 6, 6), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2)
    before = [t.detach().clone() for t in (x, w, b)]
    y = ft.conv2d(x, w, b, padding=1, backend="numpy")
    y.backward(torch.ones_like(y))
    for t, c in zip((x, w, b), before):
        assert torch.equal(t.detach(), c)


def test_only_requested_gradients_are_computed(monkeypatch):
    calls = []
    for name in ("conv2d_input", "conv2d_weight", "conv_bias"):
        real = getattr(fc.grad, name)
        monkeypatch.setattr(ft._grad, name, lambda *a, _n=name, _r=real, **k: calls.append(_n) or _r(*a, **k))
    x, w = _rand(1, 2, 5, 5, grad=False), _rand(3, 2, 3, 3, seed=1)
    b = _rand(3, seed=2, grad=False)
    y = ft.conv2d(x, w, b, backend="numpy")
    # only the weight is needed: x is kept (for the weight gradient), w is not
    saved = y.grad_fn.saved_tensors
    assert saved[1] is None and saved[0] is not None
    y.sum().backward()
    assert calls == ["conv2d_weight"]
    assert x.grad is None and w.grad is not None
    calls.clear()
    x.requires_grad_()
    ft.conv2d(x, w.detach(), b, backend="numpy").sum().backward()
    assert calls == ["conv2d_input"]


def test_pools_keep_only_their_indices():
    x = _rand(2, 3, 6, 6)
    y = ft.max_pool2d(x, 2, backend="numpy")
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].dtype == torch.int64 and saved[0].shape == y.shape
    assert len(ft.avg_pool2d(x, 2, backend="numpy").grad_fn.saved_tensors) == 0


def test_double_backward_raises():
    x, w = _rand(1, 2, 5, 5), _rand(3, 2, 3, 3, seed=1)
    (gx,) = torch.autograd.grad(ft.conv2d(x, w, backend="numpy").pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


def test_errors_name_the_argument():
    w = _rand(3, 2, 3, 3)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        ft.conv2d(np.zeros((1, 2, 5, 5)), w)
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        ft.conv2d(_rand(1, 2, 5, 5), w, [0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="input dtype torch.bfloat16 is not supported"):
        ft.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16), 2)
    with pytest.raises(TypeError, match="on device meta"):
        ft.avg_pool2d(torch.zeros(1, 1, 4, 4, device="meta"), 2)
    with pytest.raises(ValueError, match="channels"):      # fastconv's own argument checks still apply
        ft.conv2d(_rand(1, 3, 5, 5), w, backend="numpy")


def test_import_fastconv_does_not_import_torch():
    code = "import sys, fastconv; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# the Conv1d/Conv2d/Conv3d modules, with every padding_mode: tests/test_torch_bridge_3d.py


def test_cuda_tensors():
    """CUDA tensors go through DLPack to CuPy and the cuda backend (needs a GPU, CuPy and a CUDA torch)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch here: the DLPack path is not tested")
    pytest.importorskip("cupy", reason="CuPy is not installed: the DLPack path is not tested")
    _require("cuda", CONV_OPS + ("max_pool", "max_pool_backward"))
    x, w = _rand(2, 3, 8, 8).cuda(), _rand(4, 3, 3, 3, seed=1).cuda()
    y = ft.max_pool2d(ft.conv2d(x, w, padding=1), 2)
    y_ref = F.max_pool2d(F.conv2d(x, w, padding=1), 2)
    torch.testing.assert_close(y, y_ref)
    dy = torch.ones_like(y)
    for g, r in zip(torch.autograd.grad(y, (x, w), dy), torch.autograd.grad(y_ref, (x, w), dy)):
        assert g.device == x.device
        torch.testing.assert_close(g, r)
