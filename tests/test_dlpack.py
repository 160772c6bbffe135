"""Arrays that speak DLPack (issue 15): torch tensors and other ``__dlpack__`` producers through every public op.

Each op is called twice on the same backend and the same data: once on NumPy arrays, once on the producer's
(every array argument converted, contiguous or strided); the results must be bitwise equal and of the
caller's type, and the inputs unchanged. A few ops show that no copy is made on the way in or out (data
pointers). The table of valid calls is test_arguments.CALLS, which must list every public function, so a new op
is covered here too. Fake producers (a NumPy array behind ``__dlpack__``/``__dlpack_device__`` only; one with
``__array_namespace__``; one claiming a CUDA or OpenCL device) cover the generic paths without torch, JAX or a
GPU.
"""
import inspect

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch, functional as F
from tests.test_arguments import CALLS, _NOT_AN_IMAGE, _fn, _img, _unpool_args, _x

try:
    import torch
except ImportError:     # the fake producers' tests still run; the torch ones skip
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _has(backend):
    return _dispatch.availability(backend) is None


def _strided(a):
    """A non-contiguous tensor holding ``a``'s values (the transpose of a contiguous one; 1-D: every other
    element of a longer one)."""
    if a.ndim >= 2:
        return torch.from_numpy(np.ascontiguousarray(a.swapaxes(-1, -2))).transpose(-1, -2)
    return torch.from_numpy(np.repeat(a, 2))[::2]


def _args(name, dtype):
    """The valid call's (args, kwargs) with every float array cast to ``dtype`` (indices stay int64)."""
    nd, make = CALLS[name]
    args, kw = make(_img(nd) if name not in _NOT_AN_IMAGE else None)
    cast = (lambda a: a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a)
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kw.items()}


def _convert(args, kw, make):
    conv = (lambda a: make(a) if isinstance(a, np.ndarray) else a)
    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kw.items()}


def _run(name, args, kw, backend, **extra):
    fn = _fn(name)
    if "backend" in inspect.signature(fn).parameters:
        extra["backend"] = backend
    return fn(*args, **kw, **extra)


def _outs(r):
    return r if isinstance(r, tuple) else (r,)


def _same(got, want, typ=None):
    """Bitwise equal results, ``got`` of the caller's type (torch.Tensor unless ``typ``)."""
    got, want = _outs(got), _outs(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is (typ or torch.Tensor), type(g)
        g = np.asarray(g) if typ else g.numpy()
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


# --- every op, torch CPU tensors, on the oracle ---------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dtype, layout", [("float32", "contiguous"), ("float64", "contiguous"),
                                           ("float16", "contiguous"), ("float32", "strided")])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_op_takes_torch_tensors_on_the_oracle(name, dtype, layout):
    args, kw = _args(name, dtype)
    want = _run(name, args, kw, "numpy")
    make = torch.from_numpy if layout == "contiguous" else _strided
    targs, tkw = _convert(args, kw, lambda a: make(a.copy()))
    before = [t.clone() for t in (*targs, *tkw.values()) if isinstance(t, torch.Tensor)]
    _same(_run(name, targs, tkw, "numpy"), want)
    after = [t for t in (*targs, *tkw.values()) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(b, a) for b, a in zip(before, after)), "an input was written"


#: the compiled backends: one kernel of each kind, those the suite compiles anyway (test_arguments and
#: test_config run the same ones), so the cases cost no new compile
_COMPILED = [(n, "numba") for n in ("conv2d", "max_pool2d", "grad.conv2d_weight", "unfold")]
_COMPILED += [(n, "cuda-emu") for n in ("conv2d", "max_pool2d", "avg_pool2d")]


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name, backend", _COMPILED)
def test_compiled_backends_take_torch_tensors(name, backend, dtype):
    if not _has(backend):
        pytest.skip(f"{backend} unavailable: {_dispatch.availability(backend)}")
    args, kw = _args(name, dtype)
    if name == "conv2d" and backend == "cuda-emu":
        kw["algo"] = "direct"
    if name == "max_pool2d":
        kw["return_indices"] = True       # a tuple back: both elements tensors, the indices int64
    want = _run(name, args, kw, backend)
    _same(_run(name, *_convert(args, kw, lambda a: torch.from_numpy(a.copy())), backend), want)
    _same(_run(name, *_convert(args, kw, lambda a: _strided(a.copy())), backend), want)


# --- no copies: the tensor's memory goes in, the result's comes out ---------------------------------------
def _spy(monkeypatch):
    """Record what functional._run receives and returns (the arrays the backend is handed)."""
    seen = []
    real = F._run

    def run(prob, arrays):
        out = real(prob, arrays)
        seen.append((arrays, out))
        return out
    monkeypatch.setattr(F, "_run", run)
    return seen


def _ptr(a):
    return a.__array_interface__["data"][0]


@needs_torch
def test_the_round_trip_shares_memory(monkeypatch):
    seen = _spy(monkeypatch)
    x, w, b = (torch.from_numpy(a) for a in (_img(2), _x(3, 2, 2, 2), _x(3)))
    y = fc.conv2d(x, w, b, padding=1, backend="numpy")
    (ax, aw, ab), out = seen[-1]
    assert (_ptr(ax), _ptr(aw), _ptr(ab)) == (x.data_ptr(), w.data_ptr(), b.data_ptr()), "an input was copied"
    assert y.data_ptr() == _ptr(out), "the result was copied"
    p, idx = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
    (ax,), (op, oi) = seen[-1]
    assert _ptr(ax) == x.data_ptr()
    assert (p.data_ptr(), idx.data_ptr()) == (_ptr(op), _ptr(oi)) and idx.dtype == torch.int64
    go = torch.from_numpy(_x(1, 3, 5, 5))
    g = fc.grad.conv2d_input(x.shape, w, go, padding=1, backend="numpy")
    (ag, aw, _), out = seen[-1]
    assert (_ptr(ag), _ptr(aw), g.data_ptr()) == (go.data_ptr(), w.data_ptr(), _ptr(out))


# --- mixed arguments, and which one decides the result's type ---------------------------------------------
@needs_torch
def test_mixed_arguments_and_the_first_array_decides():
    x, w = _img(2), _x(3, 2, 2, 2)
    want = fc.conv2d(x, w, backend="numpy")
    _same(fc.conv2d(torch.from_numpy(x), w, backend="numpy"), want)                 # torch input: torch out
    _same(fc.conv2d(x, torch.from_numpy(w), backend="numpy"), want, np.ndarray)     # NumPy input: NumPy out
    y, idx = _unpool_args(2)
    _same(fc.max_unpool2d(torch.from_numpy(y), idx, 2, backend="numpy"), fc.max_unpool2d(y, idx, 2, backend="numpy"))
    _same(fc.max_unpool2d(y, torch.from_numpy(idx), 2, backend="numpy"), fc.max_unpool2d(y, idx, 2, backend="numpy"),
          np.ndarray)
    # the pool gradients: grad_output comes first; a torch.Size is a shape like any tuple
    go = _x(1, 2, 5, 5)
    want = fc.grad.max_pool2d(go, x, 2, stride=1, padding=1, backend="numpy")
    _same(fc.grad.max_pool2d(torch.from_numpy(go), x, 2, stride=1, padding=1, backend="numpy"), want)
    _same(fc.grad.max_pool2d(go, torch.from_numpy(x), 2, stride=1, padding=1, backend="numpy"), want, np.ndarray)
    _same(fc.grad.conv2d_input(torch.from_numpy(x).shape, torch.from_numpy(w), torch.from_numpy(_x(1, 3, 3, 3)),
                               backend="numpy"),
          fc.grad.conv2d_input(x.shape, w, _x(1, 3, 3, 3), backend="numpy"))


@needs_torch
def test_arrays_passed_by_keyword():
    x = _img(2)
    _same(fc.unfold(input=torch.from_numpy(x), kernel_size=2, backend="numpy"), fc.unfold(x, 2, backend="numpy"))
    g = _x(1, 2, 4, 4)
    _same(fc.grad.conv_bias(grad_output=torch.from_numpy(g)), fc.grad.conv_bias(g))


@needs_torch
def test_empty_batches_and_0d_tensors():
    x = np.zeros((0, 2, 4, 4), np.float32)
    _same(fc.conv2d(torch.from_numpy(x), torch.from_numpy(_x(3, 2, 2, 2)), backend="numpy"),
          fc.conv2d(x, _x(3, 2, 2, 2), backend="numpy"))
    _same(fc.max_pool2d(torch.from_numpy(x), 2, return_indices=True, backend="numpy"),
          fc.max_pool2d(x, 2, return_indices=True, backend="numpy"))
    with pytest.raises(ValueError) as want:
        fc.max_pool1d(np.array(1.0, np.float32), 2, backend="numpy")
    with pytest.raises(ValueError) as got:
        fc.max_pool1d(torch.tensor(1.0), 2, backend="numpy")
    assert str(got.value) == str(want.value)


@needs_torch
def test_backend_rules_are_unchanged():
    """A CPU tensor is a NumPy array to the backend rules: a CuPy backend refuses it as it refuses NumPy."""
    with pytest.raises(TypeError, match="backend 'cuda' takes CuPy arrays but input is a numpy array"):
        fc.max_pool2d(torch.ones(1, 1, 4, 4), 2, backend="cuda")


# --- what torch will not export: messages naming the argument and the way out ------------------------------
@needs_torch
@pytest.mark.parametrize("make, words", [
    (lambda s: torch.ones(s, requires_grad=True), r"requires grad.*\.detach\(\).*fastconv\.torch"),
    (lambda s: torch.ones(s, dtype=torch.complex64).conj(), r"conjugate bit.*\.resolve_conj\(\)"),
    # the imaginary part of a conjugate view: a real tensor with the negative bit, which torch exports
    # without the negation (wrong values) -- refused, never computed on
    (lambda s: torch.ones(s, dtype=torch.complex64).conj().imag, r"negative bit.*\.resolve_neg\(\)"),
    (lambda s: torch.ones(s, dtype=torch.bfloat16), r"bfloat16.*\.float\(\)"),
    (lambda s: torch.ones(s).to_sparse(), r"layout torch\.sparse_coo.*\.to_dense\(\)"),
    (lambda s: torch.ones(s, dtype=torch.int32), r"dtype int32; supported dtypes are float16"),
    (lambda s: torch.ones(s, dtype=torch.complex64), r"dtype complex64; supported dtypes are float16"),
    (lambda s: torch.ones(s, device="meta"), r"on device meta; fastconv takes CPU and CUDA"),
], ids=["requires_grad", "conj", "neg", "bfloat16", "sparse", "int32", "complex", "meta"])
def test_tensors_torch_cannot_export_get_a_message(make, words):
    """Each refusal names the argument (input, weight, grad_output alike) and says what to pass."""
    x, w = torch.from_numpy(_img(2)), torch.from_numpy(_x(3, 2, 2, 2))
    with pytest.raises(TypeError, match=r"^input\b.*" + words):
        fc.max_pool2d(make((1, 2, 4, 4)), 2, backend="numpy")
    with pytest.raises(TypeError, match=r"^weight\b.*" + words):
        fc.conv2d(x, make((3, 2, 2, 2)), backend="numpy")
    with pytest.raises(TypeError, match=r"^grad_output\b.*" + words):
        fc.grad.conv2d_input((1, 2, 4, 4), w, make((1, 3, 3, 3)), backend="numpy")


@needs_torch
def test_a_parameter_gets_the_autograd_hint():
    conv = torch.nn.Conv2d(2, 3, 2)
    with pytest.raises(TypeError, match=r"^weight is a torch tensor that requires grad.*fastconv\.torch"):
        fc.conv2d(torch.ones(1, 2, 4, 4), conv.weight, backend="numpy")
    _same(fc.conv2d(torch.ones(1, 2, 4, 4), conv.weight.detach(), backend="numpy"),
          fc.conv2d(np.ones((1, 2, 4, 4), np.float32), conv.weight.detach().numpy(), backend="numpy"))


# --- generic producers (no torch needed for these paths) ---------------------------------------------------
class _Producer:
    """Only the DLPack protocol, over a NumPy array."""

    def __init__(self, a, device=(1, 0)):
        self.a, self.device = a, device

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.device


class _Namespace:
    @staticmethod
    def from_dlpack(x):
        return _NsArray(np.from_dlpack(x))


class _NsArray(_Producer):
    """A producer with an Array-API namespace (as JAX arrays have): results come back through it."""

    def __array_namespace__(self, api_version=None):
        return _Namespace


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", ["numpy", "numba", "cuda-emu"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_generic_producers_read_only_memory_included(backend, dtype):
    """A producer with no way back gets the NumPy result; one with __array_namespace__ gets its own type.
    Read-only exports (numpy.from_dlpack keeps the flag) are read, never written, on every backend and
    through the float16 upcast."""
    if not _has(backend):
        pytest.skip(f"{backend} unavailable: {_dispatch.availability(backend)}")
    x, w = _img(2).astype(dtype), _x(3, 2, 2, 2).astype(dtype)
    kw = dict(padding=1, backend=backend, algo="direct" if backend == "cuda-emu" else "auto")
    want = fc.conv2d(x, w, **kw)
    # a read-only weight on numba is one more Numba specialisation (~5 s of compile), so there the weight is
    # writable; the read-only input is the specialisation test_arguments' memmap case compiles anyway
    got = fc.conv2d(_Producer(_readonly(x)), _Producer(_readonly(w) if backend != "numba" else w.copy()), **kw)
    _same(got, want, np.ndarray)
    got = fc.conv2d(_NsArray(_readonly(x)), w, **kw)
    assert type(got) is _NsArray
    _same(got.a, want, np.ndarray)
    p, idx = fc.max_pool2d(_NsArray(_readonly(x)), 2, return_indices=True, backend=backend)
    assert type(p) is _NsArray and type(idx) is _NsArray
    _same((p.a, idx.a), fc.max_pool2d(x, 2, return_indices=True, backend=backend), np.ndarray)


def test_the_view_of_a_producer_is_not_a_copy(monkeypatch):
    seen = _spy(monkeypatch)
    x = _img(2)
    fc.max_pool2d(_Producer(x), 2, backend="numpy")
    assert _ptr(seen[-1][0][0]) == _ptr(x)


def test_gpu_producers_without_cupy_say_what_to_do():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: the GPU branch is test_gpu_producers_with_cupy's")
    except ImportError:
        pass
    for dev in ((2, 0), (13, 1)):
        with pytest.raises(TypeError, match=r"^weight \(tests\.test_dlpack\._Producer\) lives on the GPU "
                                            r"\(DLPack device cuda.*CuPy is not installed: install the CuPy extra.*"
                                            r"move it to the CPU"):
            fc.conv2d(_img(2), _Producer(_x(3, 2, 2, 2), dev), backend="numpy")


def test_gpu_producers_with_cupy():
    cupy = pytest.importorskip("cupy")
    if not _has("cuda"):
        pytest.skip(f"cuda unavailable: {_dispatch.availability('cuda')}")
    x = cupy.asarray(_img(2))
    got = fc.max_pool2d(_Producer(x, x.__dlpack_device__()), 2)
    assert type(got) is cupy.ndarray
    np.testing.assert_array_equal(cupy.asnumpy(got), fc.max_pool2d(_img(2), 2, backend="numpy"))


def test_other_devices_are_named():
    with pytest.raises(TypeError, match=r"^input \(.*\) lives on DLPack device opencl:0; fastconv takes CPU and "
                                        r"CUDA memory"):
        fc.max_pool2d(_Producer(_img(2), (4, 0)), 2, backend="numpy")
    with pytest.raises(TypeError, match=r"^indices \(.*\) lives on DLPack device 99:3"):
        y, idx = _unpool_args(2)
        fc.max_unpool2d(y, _Producer(idx, (99, 3)), 2, backend="numpy")


def test_objects_without_dlpack_keep_their_hints():
    class Broken(_Producer):
        def __dlpack_device__(self):
            raise RuntimeError("no device")
    with pytest.raises(TypeError, match=r"^input \(.*Broken\) has __dlpack__ but could not say its device: "
                                        r"RuntimeError: no device"):
        fc.avg_pool2d(Broken(_img(2)), 2, backend="numpy")
    with pytest.raises(TypeError, match=r"input must be a numpy.ndarray or cupy.ndarray, got builtins.list; "
                                        r"convert with numpy.asarray"):
        fc.max_pool2d(_img(2).tolist(), 2, backend="numpy")


@pytest.mark.parametrize("lib", ["array_api_strict", "jax.numpy"])
def test_array_api_libraries(lib):
    """Real Array-API producers, where installed (neither is a dependency): their arrays in, theirs out. JAX
    exports read-only buffers, and without jax_enable_x64 it holds the indices as int32 (its own rule)."""
    xp = pytest.importorskip(lib)
    x, w = _img(2), _x(3, 2, 2, 2)
    for backend in ("numpy", "numba"):
        got = fc.conv2d(xp.asarray(x), xp.asarray(w), padding=1, backend=backend)
        assert type(got) is type(xp.asarray(x))
        np.testing.assert_array_equal(np.from_dlpack(got), fc.conv2d(x, w, padding=1, backend=backend))
    p, idx = fc.max_pool2d(xp.asarray(x), 2, return_indices=True, backend="numpy")
    want_p, want_idx = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(np.from_dlpack(p), want_p)
    np.testing.assert_array_equal(np.from_dlpack(idx), want_idx)
