"""A stand-in for the parts of CuPy that fastconv's "cuda" backend uses, running kernels on fastconv.emu.

On a machine without a GPU (CI), backend "cuda" (fastconv/_backends/cuda.py) would never run: its kernel
loading, function memos, launch path and autotuner would meet their first caller on a GPU box.
Installed as ``sys.modules["cupy"]`` by a test fixture, this module lets that exact Python code run here:
``RawModule`` compiles the same source with the same name expressions through the emulator, arrays are
a NumPy subclass that fastconv's type checks take for ``cupy.ndarray``, events time with the host clock.

It is a test double, not a CuPy: only what fastconv calls is here, and anything else raises
AttributeError, so a new dependency on CuPy shows up as a failing test rather than a silent pass.
"""
from __future__ import annotations

import time
import types

import numpy as np

__version__ = "0.0-shim"


class ndarray(np.ndarray):
    """A NumPy array that fastconv sees as a cupy.ndarray on device 0."""

    @property
    def device(self):
        return cuda.Device(0)

    def get(self):
        return np.array(self)


ndarray.__module__ = "cupy._core.core"


def _wrap(a):
    return np.asarray(a).view(ndarray)


def asarray(a, dtype=None):
    return _wrap(np.array(a, dtype=dtype, copy=True))


def asnumpy(a):
    return np.array(a)


def empty(shape, dtype=np.float32):
    return _wrap(np.empty(shape, dtype=dtype))


def zeros(shape, dtype=np.float32):
    return _wrap(np.zeros(shape, dtype=dtype))


def ascontiguousarray(a):
    return _wrap(np.ascontiguousarray(a))


float16, float32, float64, int64 = np.float16, np.float32, np.float64, np.int64
isfinite = np.isfinite


# ---------------------------------------------------------------------------------------------------
# cupy.cuda
# ---------------------------------------------------------------------------------------------------
class CompileException(Exception):
    pass


class OutOfMemoryError(MemoryError):
    pass


class _Function:
    def __init__(self, emu_fn):
        self._fn = emu_fn

    def __call__(self, grid, block, args, shared_mem=0):
        self._fn(grid, block, tuple(np.asarray(a) if isinstance(a, ndarray) else a for a in args),
                 shared_mem=shared_mem)


class RawModule:
    """cupy.RawModule(code=..., options=..., name_expressions=...) over fastconv.emu.EmuModule."""
    compiled = []   # (name expressions, options) of every compile, for tests

    def __init__(self, code, options=(), name_expressions=()):
        self._code, self._options, self._exprs = code, tuple(options), tuple(name_expressions)
        self._mod = None

    def compile(self):
        if self._mod is None:
            from fastconv.emu import EmuModule
            incs = [o[2:] for o in self._options if o.startswith("-I")]
            try:
                self._mod = EmuModule(code=self._code, name_expressions=self._exprs, include_dirs=incs)
            except Exception as e:  # an emulator build error stands for an NVRTC one
                raise CompileException(str(e)) from e
            RawModule.compiled.append((self._exprs, self._options))
        return self

    def get_function(self, name):
        self.compile()
        return _Function(self._mod.get_function(name))


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDevice():
        return 0

    @staticmethod
    def getDeviceProperties(dev):
        return {"name": b"fastconv emulated GPU", "multiProcessorCount": 2, "clockRate": 1000000,
                "memoryClockRate": 1000000, "memoryBusWidth": 64, "major": 9, "minor": 0}


class Device:
    def __init__(self, dev_id=0):
        self.id = dev_id
        self.compute_capability = "90"

    def synchronize(self):
        pass


class Event:
    def __init__(self):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_ms(start, stop):
    return (stop.t - start.t) * 1e3


class _Stream:
    def synchronize(self):
        pass


cuda = types.SimpleNamespace(
    runtime=_Runtime, Device=Device, Event=Event, get_elapsed_time=_elapsed_ms,
    get_current_stream=lambda: _Stream(), compiler=types.SimpleNamespace(CompileException=CompileException),
    memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
    set_allocator=lambda *a: None)


# ---------------------------------------------------------------------------------------------------
# cupy.random
# ---------------------------------------------------------------------------------------------------
class _Generator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return _wrap(self._rng.standard_normal(size).astype(dtype))


random = types.SimpleNamespace(default_rng=_Generator)
