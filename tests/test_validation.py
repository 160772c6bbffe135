"""Bad input raises ValueError/TypeError naming the argument, before any kernel runs, on every backend;
inputs are never modified; odd memory layouts give correct results."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

NUMPY_BACKENDS = [b for b, info in fc.backends().items() if info["available"] and info["arrays"] == "numpy"]


@pytest.fixture(params=NUMPY_BACKENDS)
def backend(request):
    return request.param


def _x(shape=(2, 4, 8, 8), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


X, W, B = _x(), _x((6, 2, 3, 3)), _x((6,))
X1, W1 = _x((2, 4, 10)), _x((6, 4, 3))

CONV_BAD = [
    # (description, kwargs for conv2d, exception, words the message must contain)
    ("input ndim", dict(input=_x((4, 8)), weight=W), ValueError, "input must be 4-D"),
    ("weight ndim", dict(weight=_x((6, 2, 3))), ValueError, "weight must be 4-D"),
    ("groups mismatch", dict(weight=_x((6, 4, 3, 3)), groups=2), ValueError, "expected weight.shape[1] == 2"),
    ("channels not divisible", dict(groups=3, weight=_x((6, 1, 3, 3))), ValueError, "divisible by groups"),
    ("out channels not divisible", dict(weight=_x((5, 1, 3, 3)), groups=4), ValueError, "out_channels (5)"),
    ("zero groups", dict(groups=0), ValueError, "groups must be positive"),
    ("float groups", dict(groups=2.0), TypeError, "groups must be an int"),
    ("zero stride", dict(stride=0), ValueError, "stride must be positive"),
    ("negative stride", dict(stride=(1, -1)), ValueError, "stride must be positive"),
    ("stride length", dict(stride=(1, 1, 1)), ValueError, "stride must be an int or a sequence of 2"),
    ("zero dilation", dict(dilation=0), ValueError, "dilation must be positive"),
    ("float stride", dict(stride=1.5), TypeError, "stride must be an int"),
    ("bool stride", dict(stride=True), TypeError, "stride must be an int"),
    ("negative padding", dict(padding=-1), ValueError, "padding must be non-negative"),
    ("negative asym padding", dict(padding=((0, -1), (0, 0))), ValueError, "padding must be non-negative"),
    ("padding pair length", dict(padding=((0, 1, 2), (0, 0))), ValueError, "padding[0]"),
    ("unknown padding string", dict(padding="full"), ValueError, "'valid' or 'same'"),
    ("same with stride", dict(padding="same", stride=2), ValueError, "padding='same' requires stride 1"),
    ("float padding", dict(padding=1.0), TypeError, "padding must be an int"),
    ("bias shape", dict(bias=_x((5,))), ValueError, "bias must have shape (6,)"),
    ("bias ndim", dict(bias=_x((6, 1))), ValueError, "bias must have shape (6,)"),
    ("weight dtype mismatch", dict(weight=W.astype(np.float64)), TypeError, "weight dtype float64 does not match"),
    ("bias dtype mismatch", dict(bias=B.astype(np.float16)), TypeError, "bias dtype float16 does not match"),
    ("integer input", dict(input=X.astype(np.int32), weight=W.astype(np.int32)), TypeError, "input has dtype int32"),
    ("complex input", dict(input=X.astype(np.complex64)), TypeError, "input has dtype complex64"),
    ("bool weight", dict(weight=W > 0), TypeError, "weight has dtype bool"),
    ("big-endian input", dict(input=X.astype(">f4"), weight=W.astype(">f4")), TypeError, "native byte order"),
    ("list input", dict(input=X.tolist()), TypeError, "input must be a numpy.ndarray"),
    ("scalar weight", dict(weight=1.0), TypeError, "weight must be a numpy.ndarray"),
    ("list bias", dict(bias=[0.0] * 6), TypeError, "bias must be a numpy.ndarray"),
    ("empty output", dict(input=_x((1, 4, 2, 2))), ValueError, "output would be empty"),
    ("empty output dilated", dict(dilation=4), ValueError, "output would be empty"),
    ("zero channels", dict(input=_x((1, 0, 8, 8)), weight=_x((6, 0, 3, 3))), ValueError, "non-zero channels and spatial sizes"),
    ("zero out channels", dict(weight=_x((0, 4, 3, 3))), ValueError, "non-zero out_channels"),
    ("unknown backend", dict(backend="opencl"), ValueError, "backend must be None or one of"),
    ("unknown algo", dict(algo="fft"), ValueError, "algo must be one of 'auto', 'direct', 'im2col', 'implicit_gemm', 'depthwise', 'winograd'"),
]


@pytest.mark.parametrize("desc, kw, exc, words", CONV_BAD, ids=[c[0] for c in CONV_BAD])
def test_conv2d_rejects(backend, desc, kw, exc, words):
    args = dict(input=X, weight=W, bias=None, groups=2, backend=backend)
    args.update(kw)
    with pytest.raises(exc) as info:
        fc.conv2d(**args)
    assert words in str(info.value), f"{desc}: message {str(info.value)!r} lacks {words!r}"


CONV1D_BAD = [
    ("input ndim", dict(input=X), ValueError, "input must be 3-D"),
    ("bare pair padding", dict(padding=(1, 2)), ValueError, "((left, right),)"),
    ("kernel too long", dict(weight=_x((6, 4, 11))), ValueError, "output would be empty"),
    ("stride tuple length", dict(stride=(1, 1)), ValueError, "stride must be an int or a sequence of 1"),
]


@pytest.mark.parametrize("desc, kw, exc, words", CONV1D_BAD, ids=[c[0] for c in CONV1D_BAD])
def test_conv1d_rejects(backend, desc, kw, exc, words):
    args = dict(input=X1, weight=W1, backend=backend)
    args.update(kw)
    with pytest.raises(exc, match=None) as info:
        fc.conv1d(**args)
    assert words in str(info.value)


POOL_BAD = [
    (fc.max_pool2d, dict(kernel_size=0), ValueError, "kernel_size must be positive"),
    (fc.max_pool2d, dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size must be an int or a sequence of 2"),
    (fc.max_pool2d, dict(kernel_size=2.5), TypeError, "kernel_size must be an int"),
    (fc.max_pool2d, dict(kernel_size=3, padding=2), ValueError, "padding <= kernel_size // 2"),
    (fc.max_pool2d, dict(kernel_size=3, padding=-1), ValueError, "padding must be non-negative"),
    (fc.max_pool2d, dict(kernel_size=2, stride=0), ValueError, "stride must be positive"),
    (fc.max_pool2d, dict(kernel_size=2, dilation=0), ValueError, "dilation must be positive"),
    (fc.max_pool2d, dict(kernel_size=9), ValueError, "output would be empty"),
    (fc.max_pool2d, dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode must be a bool"),
    (fc.max_pool2d, dict(kernel_size=2, return_indices=1), TypeError, "return_indices must be a bool"),
    (fc.max_pool2d, dict(input=_x((8, 8)), kernel_size=2), ValueError, "input must be 4-D"),
    (fc.max_pool2d, dict(input=X.astype(np.int64), kernel_size=2), TypeError, "input has dtype int64"),
    (fc.max_pool2d, dict(input=None, kernel_size=2), TypeError, "input must be a numpy.ndarray"),
    (fc.avg_pool2d, dict(kernel_size=2, divisor_override=0), ValueError, "divisor_override must be non-zero"),
    (fc.avg_pool2d, dict(kernel_size=2, divisor_override=1.5), TypeError, "divisor_override must be an int"),
    (fc.avg_pool2d, dict(kernel_size=2, count_include_pad=None), TypeError, "count_include_pad must be a bool"),
    (fc.avg_pool2d, dict(kernel_size=4, padding=3), ValueError, "padding <= kernel_size // 2"),
    (fc.max_pool1d, dict(kernel_size=2), ValueError, "input must be 3-D"),
    (fc.avg_pool1d, dict(input=X1, kernel_size=(2, 2)), ValueError, "sequence of 1"),
    (fc.adaptive_avg_pool2d, dict(output_size=0), ValueError, "output_size must be positive"),
    (fc.adaptive_avg_pool2d, dict(output_size=(2, 2, 2)), ValueError, "sequence of 2"),
    (fc.adaptive_max_pool2d, dict(output_size=2.0), TypeError, "output_size must be an int"),
    (fc.adaptive_max_pool2d, dict(output_size=None), TypeError, "output_size is required"),
    (fc.adaptive_avg_pool1d, dict(output_size=2), ValueError, "input must be 3-D"),
]


@pytest.mark.parametrize("fn, kw, exc, words", POOL_BAD,
                         ids=[f"{p[0].__name__}-{'-'.join(map(str, p[1].values()))[:40]}" for p in POOL_BAD])
def test_pools_reject(backend, fn, kw, exc, words):
    args = dict(input=X)
    args.update(kw)
    with pytest.raises(exc) as info:
        fn(**args, backend=backend)
    assert words in str(info.value), f"message {str(info.value)!r} lacks {words!r}"


def test_errors_come_before_any_kernel(monkeypatch):
    """A spy backend in the registry: bad input must never reach its run()."""
    calls = []

    class Spy(_dispatch.Impl):
        backend, op, algo = "numpy", "conv", "direct"

        def run(self, spec, *arrays):
            calls.append(spec)
            return np.zeros(spec.output_layout, spec.dtype)

    class Module:
        @staticmethod
        def availability():
            return None

        @staticmethod
        def implementations():
            return [Spy()]

    monkeypatch.setitem(_dispatch._modules, "numpy", Module)
    for desc, kw, exc, words in CONV_BAD:
        if "backend" in kw:
            continue
        args = dict(input=X, weight=W, bias=None, groups=2, backend="numpy")
        args.update(kw)
        with pytest.raises(exc):
            fc.conv2d(**args)
    assert calls == []
    fc.conv2d(X, W, groups=2, backend="numpy")      # the spy does run for good input
    assert len(calls) == 1


class FakeCupyArray:
    """Looks like a cupy.ndarray to fastconv's type checks, without CuPy installed."""
    __module__ = "cupy._core.core"

    def __init__(self, a, device=0):
        self._a, self.dtype, self.shape, self.ndim = a, a.dtype, a.shape, a.ndim
        self.device = type("Device", (), {"id": device})()


FakeCupyArray.__name__ = "ndarray"


def test_mixed_numpy_and_cupy_is_rejected():
    with pytest.raises(TypeError, match="mix NumPy and CuPy"):
        fc.conv2d(X, FakeCupyArray(W))
    with pytest.raises(ValueError, match="different GPUs"):
        fc.conv2d(FakeCupyArray(X, 0), FakeCupyArray(W, 1))


def test_backend_array_type_mismatch_is_a_type_error():
    with pytest.raises(TypeError, match="backend 'cuda' takes CuPy arrays"):
        fc.conv2d(X, W, groups=2, backend="cuda")
    with pytest.raises(TypeError, match="backend 'numpy' takes NumPy arrays"):
        fc.max_pool2d(FakeCupyArray(X), 2, backend="numpy")


# --- inputs are never modified; odd layouts are handled -----------------------------------------------------
CALLS = [
    ("conv2d", lambda x, be: fc.conv2d(x, W, B, 2, ((1, 0), (0, 2)), 1, 2, backend=be)),
    ("conv2d-im2col", lambda x, be: fc.conv2d(x, W, B, 1, 1, 2, 2, backend=be, algo="im2col")),
    ("max_pool2d", lambda x, be: fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend=be)),
    ("avg_pool2d", lambda x, be: fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, backend=be)),
    ("adaptive_max_pool2d", lambda x, be: fc.adaptive_max_pool2d(x, (3, 5), return_indices=True, backend=be)),
    ("adaptive_avg_pool2d", lambda x, be: fc.adaptive_avg_pool2d(x, 3, backend=be)),
]


def _supports(call_name, backend):
    if call_name.endswith("im2col"):
        return any(i.algo == "im2col" for i in _dispatch.backend_module(backend).implementations())
    return True


@pytest.mark.parametrize("name, call", CALLS, ids=[c[0] for c in CALLS])
@pytest.mark.parametrize("layout", ["noncontiguous", "readonly", "channels_last", "fortran"])
def test_layouts_give_the_contiguous_result_and_inputs_are_untouched(backend, name, call, layout):
    if not _supports(name, backend):
        pytest.skip(f"backend {backend} has no im2col")
    base = _x((2, 4, 17, 15))
    want = call(np.ascontiguousarray(base), backend)
    if layout == "noncontiguous":
        big = np.zeros((2, 8, 17, 30), np.float32)
        big[:, ::2, :, ::2] = base
        x = big[:, ::2, :, ::2]
    elif layout == "readonly":
        x = base.copy()
        x.setflags(write=False)
    elif layout == "channels_last":
        x = np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        x = np.asfortranarray(base)
    before = x.copy()
    got = call(x, backend)
    np.testing.assert_array_equal(x, before)
    for g, w_ in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(g, w_)
        assert not np.shares_memory(g, x), "output aliases the input"
