"""Arrays that speak DLPack: torch tensors, JAX arrays and other ``__dlpack__`` producers, taken without a copy.

Every public op of :mod:`fastconv.functional` and :mod:`fastconv.grad` (and ``fold``/``unfold``) is entered
through :func:`takes_arrays`, which names its array arguments. NumPy and CuPy arrays (subclasses included) go
straight through: the only cost is one type lookup per array argument. Any other object with
``__dlpack__`` is taken as the array over its memory -- a CPU producer through ``numpy.from_dlpack``, a CUDA
one through ``cupy.from_dlpack`` -- and the op then runs exactly as for that array (default backend by device,
``backend=`` rules unchanged). Other devices, and producers that refuse the export, get a TypeError naming
the argument and saying what to pass instead; an object without ``__dlpack__`` reaches the op's own argument
check, with its hints.

The result takes the type of the **first array argument** in the signature (``input`` for the forward ops,
``conv*_weight``, ``grad_output`` for the pool gradients and ``conv_bias``, ``weight`` for ``conv*_input``,
whose first argument is a shape): a torch tensor there gives torch tensors back (``torch.from_dlpack``, no
copy), another producer with ``__array_namespace__`` (JAX, array-api-strict, ...) gets
``namespace.from_dlpack(result)``, and one with no known way back gets the NumPy or CuPy result itself. A
tuple (``return_indices=True``) is converted element by element; indices stay int64 (unless the namespace
narrows them: JAX without ``jax_enable_x64`` holds them as int32, which max_unpool and the pool gradients
take back).

The arrays taken are views of the caller's memory: fastconv never writes its inputs, and a read-only view
(what a producer that marks its buffer read-only exports, JAX for one) is read like any other array. A CUDA
producer's array is used as a CuPy array is, on the current CuPy device; the DLPack exchange orders the
streams (the consumer passes its stream and the producer makes it wait for its own work).
"""
from __future__ import annotations

import functools
import inspect
import sys

from ._args import _kind_of_type

#: the types that go straight through: None (an absent optional array) and every NumPy/CuPy ndarray type
#: seen so far (:func:`_take` adds them on first sight, so the fast path needs no import and no MRO walk)
NATIVE = {type(None)}

#: DLPack's DLDeviceType codes (dlpack.h) -> a name for messages, and the ones fastconv takes
_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm",
            11: "rocm_host", 12: "ext_dev", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon",
            17: "maia"}
_CPU, _CUDA = (1, 3, 11), (2, 13)   # host memory (plain, CUDA- or ROCm-pinned); CUDA memory (device, managed)


def _what(obj) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__name__}"


def _torch_refusal(t, name: str):
    """A torch tensor that DLPack cannot hand over as it is: the message saying what to pass instead, or None.
    (torch refuses the first two itself, with a message that names neither the argument nor fastconv.torch;
    a negative-bit tensor it would export without the negation: wrong values, so it is refused here.)"""
    if t.device.type not in ("cpu", "cuda"):
        return (f"{name} is a torch tensor on device {t.device}; fastconv takes CPU and CUDA tensors: pass "
                f"{name}.cpu()")
    if t.requires_grad:
        return (f"{name} is a torch tensor that requires grad, which DLPack cannot export: pass "
                f"{name}.detach() (no gradient flows back), or use fastconv.torch, whose functions take such "
                f"tensors and support autograd")
    if t.is_conj():
        return f"{name} is a torch tensor with its conjugate bit set: pass {name}.resolve_conj()"
    if t.is_neg():
        return f"{name} is a torch tensor with its negative bit set: pass {name}.resolve_neg()"
    torch = sys.modules["torch"]
    if t.dtype == torch.bfloat16:
        return (f"{name} has dtype torch.bfloat16, which NumPy cannot hold; supported dtypes are float16, "
                f"float32 and float64: pass {name}.float()")
    if t.layout is not torch.strided:
        return f"{name} is a torch tensor with layout {t.layout}: pass {name}.to_dense()"
    return None


def _device_of(obj, name: str):
    try:
        dev = obj.__dlpack_device__()
        return int(dev[0]), int(dev[1])
    except Exception as e:   # noqa: BLE001  (a producer's own failure, reported as the argument's)
        raise TypeError(f"{name} ({_what(obj)}) has __dlpack__ but could not say its device: "
                        f"{type(e).__name__}: {e}") from e


def _from_dlpack(obj, name: str):
    """The NumPy or CuPy array over ``obj``'s memory (no copy), or a TypeError naming ``name``."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        refusal = _torch_refusal(obj, name)
        if refusal:
            raise TypeError(refusal)
    dev, index = _device_of(obj, name)
    if dev in _CPU:
        import numpy
        xp, where = numpy, "numpy.from_dlpack"
    elif dev in _CUDA:
        try:
            import cupy
        except ImportError:
            raise TypeError(f"{name} ({_what(obj)}) lives on the GPU (DLPack device {_DEVICES[dev]}:{index}) "
                            f"and CuPy is not installed: install the CuPy extra (pip install "
                            f"'fastconv[cuda12]' or 'fastconv[cuda13]', matching your CUDA) or move it to the "
                            f"CPU (tensor.cpu() for torch)") from None
        xp, where = cupy, "cupy.from_dlpack"
    else:
        raise TypeError(f"{name} ({_what(obj)}) lives on DLPack device {_DEVICES.get(dev, dev)}:{index}; "
                        f"fastconv takes CPU and CUDA memory: move it to the CPU first")
    try:
        return xp.from_dlpack(obj)
    except Exception as e:   # noqa: BLE001  (the producer's refusal or an unsupported dtype, named)
        raise TypeError(f"{name} ({_what(obj)}) could not be taken through DLPack ({where}: {type(e).__name__}: "
                        f"{e}); fastconv takes float16, float32 and float64 arrays (int64 indices) in CPU or CUDA "
                        f"memory") from e


def _take(obj, name: str):
    """``obj`` as fastconv takes it: NumPy/CuPy arrays (recorded in :data:`NATIVE`) and objects without
    ``__dlpack__`` unchanged (the op's own check judges them), DLPack producers as the array over their
    memory."""
    hit = _kind_of_type(type(obj))
    if isinstance(hit, tuple):
        NATIVE.add(type(obj))
        return obj
    if hit is not None or not hasattr(obj, "__dlpack__"):   # a masked array, a list, ...: the op's message
        return obj
    return _from_dlpack(obj, name)


def _way_back(like):
    """How a result goes back to ``like``'s type: a function of the NumPy/CuPy result, or None (returned
    as it is)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(like, torch.Tensor):
        return torch.from_dlpack
    ns = getattr(like, "__array_namespace__", None)
    if ns is not None:
        return ns().from_dlpack
    return None


def _give_back(result, back):
    if isinstance(result, tuple):
        return tuple(back(r) for r in result)
    return back(result)


def takes_arrays(*names: str):
    """Decorate an op whose parameters ``names`` are arrays (or None): NumPy/CuPy arrays pass straight
    through; DLPack producers are taken (:func:`_take`) and the result given back as the first array
    argument's type (see the module docstring)."""
    def decorate(fn):
        params = list(inspect.signature(fn).parameters)
        slots = tuple((params.index(n), n) for n in names)

        def slow(args, kw):
            args = list(args)
            first = None
            for i, n in slots:
                a = args[i] if i < len(args) else kw.get(n)
                if a is None:
                    continue
                if first is None:
                    first = a
                taken = _take(a, n)
                if i < len(args):
                    args[i] = taken
                else:
                    kw[n] = taken
            result = fn(*args, **kw)
            if first is None or type(first) in NATIVE:
                return result
            back = _way_back(first)
            return result if back is None else _give_back(result, back)

        at = tuple(i for i, _ in slots)

        @functools.wraps(fn)
        def call(*args, **kw):
            try:
                for i in at:
                    if type(args[i]) not in NATIVE:
                        return slow(args, kw)
            except IndexError:     # an array passed by keyword (fold(input=...)): the general path
                return slow(args, kw)
            return fn(*args, **kw)
        return call
    return decorate
