"""EmuModule / EmuFunction: the subset of cupy.RawModule / RawKernel that launchers use."""
import ctypes
import os

import numpy as np

from .. import _config
from . import _build, _guard, _source
from ._errors import EmuError

# parameter kinds, as in cuda_emu.h
K_PTR, K_SINT, K_UINT, K_FLOAT, K_HALF, K_STRUCT, K_VOID = range(1, 8)
ORDERS = {"forward": 0, "reverse": 1, "random": 2}
# Shared memory per block: 48 KiB (static + dynamic) unless the kernel opts in to more with
# max_dynamic_shared_size_bytes (cudaFuncAttributeMaxDynamicSharedMemorySize); then up to what an
# H100 block can have (227 KiB). Same failure as on the GPU, caught on the CPU.
DEFAULT_SMEM = 48 * 1024
MAX_SMEM_OPT_IN = 227 * 1024
DEFAULT_STACK = 64 * 1024


class _Param(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("size", ctypes.c_int), ("align", ctypes.c_int),
                ("pointee_kind", ctypes.c_int), ("pointee_size", ctypes.c_int),
                ("pointee_const", ctypes.c_int), ("type_name", ctypes.c_char_p)]


class _Desc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("fn", ctypes.c_void_p), ("invoke", ctypes.c_void_p),
                ("nparams", ctypes.c_int), ("params", ctypes.POINTER(_Param))]


def _type_name(pretty):
    """'constexpr const char* emu_type_name() [with T = const float*]' -> 'const float*'."""
    start = pretty.find("T = ")
    return pretty[start + 4:pretty.rindex("]")] if start >= 0 and pretty.endswith("]") else pretty


class _Library:
    """A loaded module .so and its kernel descriptors."""

    def __init__(self, path):
        self.path = path
        self.dll = _build.load(path)
        n = ctypes.c_int()
        self.dll.emu_kernels.restype = ctypes.POINTER(_Desc)
        self.dll.emu_kernels.argtypes = [ctypes.POINTER(ctypes.c_int)]
        table = self.dll.emu_kernels(ctypes.byref(n))
        self.kernels = {}
        self.max_dynamic_smem = {}  # kernel name -> opted-in max_dynamic_shared_size_bytes
        for i in range(n.value):
            d = table[i]
            params = [(p.kind, p.size, p.align, p.pointee_kind, p.pointee_size, bool(p.pointee_const),
                       _type_name(p.type_name.decode())) for p in (d.params[j] for j in range(d.nparams))]
            self.kernels[d.name.decode()] = (ctypes.addressof(d), params)
        self.launch = self.dll.emu_launch
        self.launch.restype = ctypes.c_int
        self.launch.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
            ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_ulonglong,
            ctypes.c_double, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p, ctypes.c_ulonglong,
            ctypes.c_ulonglong, ctypes.c_ulonglong]
        if self.dll.emu_runtime_version() != _build.RUNTIME_VERSION:
            raise OSError(f"{path} was built with emulator runtime {self.dll.emu_runtime_version()}")
        self.dll.emu_fiber_backend.restype = ctypes.c_char_p
        self.backend = self.dll.emu_fiber_backend().decode()


_loaded = {}  # cache key -> _Library, for this process


def _forget_loaded():
    """Drop the in-process module memo (tests use it to exercise the on-disk cache)."""
    with _build.lock:
        _loaded.clear()


class EmuModule:
    """CPU stand-in for ``cupy.RawModule``: compiles CUDA C with g++ and runs it on fibers.

    Exactly one of ``path`` / ``code``. ``options`` are NVRTC-style (``-DNAME=V``, ``-Idir``,
    ``-std=c++17``; GPU-only options such as ``-lineinfo`` or ``--use_fast_math`` are ignored,
    anything unknown raises). ``name_expressions`` name template instantiations
    (``"k<float>"``); non-template ``__global__`` kernels are found in the source.
    ``fibers`` picks the context switch: "asm" (x86-64) or "ucontext" (portable); default from
    $FASTCONV_EMU_FIBERS or the platform. ``check_overflow``: build with g++'s
    ``-fsanitize=signed-integer-overflow``, so that a signed integer operation in kernel code whose result
    does not fit its type fails the launch (EmuError naming the operands, the type, file:line:column, the
    block and the thread) instead of wrapping; a separate build (and cache entry) from the plain one.
    """

    def __init__(self, path=None, code=None, options=(), name_expressions=(), include_dirs=(), fibers=None,
                 check_overflow=False):
        if (path is None) == (code is None):
            raise TypeError("EmuModule needs exactly one of path= or code=")
        if path is not None:
            path = os.path.abspath(os.fspath(path))
            with open(path) as f:
                code = f.read()
            filename, here = path, os.path.dirname(path)
        else:
            filename, here = "<fastconv-emu code>", None
        if isinstance(options, str) or isinstance(name_expressions, str) or isinstance(include_dirs, str):
            raise TypeError("options, name_expressions and include_dirs must be sequences of strings")
        for ne in name_expressions:
            if not isinstance(ne, str) or any(c in ne for c in ';{}"\n\\'):
                raise EmuError(f"invalid name expression {ne!r}")
        backend = fibers or _build.default_backend()
        flags, opt_incs = _build.translate_options(tuple(options))
        incs = [os.path.abspath(os.fspath(d)) for d in (*include_dirs, *opt_incs)]
        if here:
            incs.insert(0, here)
        names = list(_source.find_kernels(code))
        names += [n for n in name_expressions if n not in names]
        headers = _build.included_files(code, here, incs)
        cflags = _build.OVERFLOW_CHECK_FLAGS if check_overflow else ()
        key = _build.module_key(code, filename, headers, flags, incs, names, backend, cflags)
        self.name_expressions = tuple(name_expressions)
        self.compiled = False
        with _build.lock:
            lib = _loaded.get(key)
            if lib is None:
                unit = _build.generate_unit(_source.rewrite_source(code, filename), filename, names)
                label = f"emulated module {os.path.basename(filename)}" + (" (overflow-checked)" if cflags else "")
                so, self.compiled = _build.module_library(unit, key, backend, flags, incs, label, cflags)
                try:
                    lib = _Library(so)
                except (OSError, AttributeError):
                    # unloadable although its checksum matched (e.g. built by another toolchain): rebuild
                    os.unlink(so)
                    _build.stats["rebuilt_corrupt"] += 1
                    so, self.compiled = _build.module_library(unit, key, backend, flags, incs, label, cflags)
                    try:
                        lib = _Library(so)
                    except (OSError, AttributeError) as e:
                        raise EmuError(f"cannot load freshly built {so}: {e}") from e
                _loaded[key] = lib
        self._lib = lib
        self.backend = lib.backend
        self.path = lib.path

    @property
    def kernel_names(self):
        return tuple(self._lib.kernels)

    def get_function(self, name):
        if name not in self._lib.kernels:
            raise EmuError(f"no kernel {name!r} in this module; known: {sorted(self._lib.kernels)} "
                           f"(template kernels need name_expressions=[{name!r}])")
        desc, params = self._lib.kernels[name]
        return EmuFunction(self._lib, name, desc, params)


def _dims(v, what):
    if isinstance(v, (int, np.integer)):
        v = (v,)
    v = tuple(v)
    if not 1 <= len(v) <= 3 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {v!r}")
    if any(x < 1 or x >= 2 ** 32 for x in v):
        raise ValueError(f"{what} dimensions must be >= 1, got {v!r}")
    return (ctypes.c_uint * 3)(*(tuple(int(x) for x in v) + (1, 1))[:3])


def _block_range(blocks, grid):
    """``blocks=`` as the runtime takes it: (first, end) linear block indices, (0, 0) for the whole grid."""
    if blocks is None:
        return (0, 0)
    if isinstance(blocks, range):
        if blocks.step != 1:
            raise ValueError(f"blocks must be a range with step 1, got {blocks!r}")
        blocks = (blocks.start, blocks.stop)
    g = tuple(_dims(grid, "grid"))
    total = g[0] * g[1] * g[2]
    ok = (isinstance(blocks, tuple) and len(blocks) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in blocks))
    if not ok:
        raise TypeError(f"blocks must be None, a range or a (start, stop) tuple of ints, got {blocks!r}")
    start, stop = int(blocks[0]), int(blocks[1])
    if not 0 <= start < stop <= total:
        raise ValueError(f"blocks=({start}, {stop}) is not a non-empty range of the grid's {total} blocks")
    return (start, stop)


def _scalar_name(kind, size):
    return {K_SINT: f"int{size * 8}", K_UINT: f"uint{size * 8}", K_FLOAT: f"float{size * 8}",
            K_HALF: "float16"}.get(kind, f"{size}-byte struct")


def _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"{obj.dtype} array"
    if isinstance(obj, np.generic):
        return f"numpy {obj.dtype} scalar"
    return f"Python {type(obj).__name__}"


class EmuFunction:
    """One kernel of an EmuModule; call it like ``cupy.RawKernel``."""

    def __init__(self, lib, name, desc, params):
        self._lib, self.name, self._desc, self.params = lib, name, desc, params
        self.last_switches = 0
        self._timeout = 0.0
        self._blocks = (0, 0)   # (first, end) linear block indices of the current call; end 0: the whole grid

    @property
    def max_dynamic_shared_size_bytes(self):
        """As on cupy.RawKernel: dynamic shared memory the kernel may be launched with; setting it
        above the 48 KiB default is the opt-in a GPU needs for bigger blocks."""
        return self._lib.max_dynamic_smem.get(self.name, DEFAULT_SMEM)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        value = int(value)
        if not 0 <= value <= MAX_SMEM_OPT_IN:
            raise EmuError(f"max_dynamic_shared_size_bytes={value} is more than a block can have "
                           f"({MAX_SMEM_OPT_IN} bytes)")
        self._lib.max_dynamic_smem[self.name] = value  # a property of the kernel, as cudaFuncSetAttribute

    def _pack(self, args):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(p[6] for p in self.params)}), got {len(args)}")
        blobs = []
        for i, (a, p) in enumerate(zip(args, self.params)):
            blobs.append(self._pack_one(i, a, p))
        keep, ptrs = [], (ctypes.c_void_p * max(1, len(blobs)))()
        for i, (b, p) in enumerate(zip(blobs, self.params)):
            align = max(16, p[2])
            buf = ctypes.create_string_buffer(len(b) + align)
            addr = (ctypes.addressof(buf) + align - 1) & ~(align - 1)
            ctypes.memmove(addr, b, len(b))
            keep.append(buf)
            ptrs[i] = addr
        return ptrs, keep

    def _pack_one(self, i, a, p):
        kind, size, _align, pkind, psize, _pconst, tname = p
        where = f"{self.name}: argument {i} (parameter type `{tname}`)"
        if kind == K_PTR:
            if a is None:
                return (0).to_bytes(8, "little")
            if isinstance(a, ctypes.c_void_p):  # raw address, unchecked
                return (a.value or 0).to_bytes(8, "little")
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where}: expected a numpy array (device pointer), got {_describe(a)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{where}: array must be C-contiguous")
            dk, ds = a.dtype.kind, a.dtype.itemsize
            ok = {K_FLOAT: dk == "f" and ds == psize,
                  K_HALF: (dk == "f" and ds == 2) or (dk in "iu" and ds == 2),
                  K_SINT: dk in "iub" and ds == psize,
                  K_UINT: dk in "iub" and ds == psize,
                  K_PTR: dk in "iu" and ds == 8}.get(pkind, True)
            if not ok:
                raise TypeError(f"{where}: got a {a.dtype} array")
            return a.ctypes.data.to_bytes(8, "little")
        if kind == K_STRUCT:
            if isinstance(a, np.ndarray) and a.shape == () and a.dtype.names:
                a = a[()]
            if isinstance(a, np.void):
                b = a.tobytes()
            elif isinstance(a, ctypes.Structure):
                b = bytes(a)
            elif isinstance(a, (bytes, bytearray, memoryview)):
                b = bytes(a)
            else:
                raise TypeError(f"{where}: expected a numpy structured scalar, ctypes.Structure or bytes, "
                                f"got {_describe(a)}")
            if len(b) != size:
                raise TypeError(f"{where}: struct is {size} bytes in C, got {len(b)} bytes")
            return b
        want = _scalar_name(kind, size)
        if isinstance(a, np.ndarray) or not isinstance(a, np.generic):
            hint = f"; pass np.{want}(...)" if not isinstance(a, np.ndarray) else ""
            raise TypeError(f"{where}: expected a numpy {want} scalar, got {_describe(a)}{hint}")
        dk, ds = a.dtype.kind, a.dtype.itemsize
        ok = {K_SINT: dk in "iub", K_UINT: dk in "iub", K_FLOAT: dk == "f", K_HALF: dk == "f"}[kind] and ds == size
        if not ok:
            raise TypeError(f"{where}: expected a numpy {want} scalar, got {_describe(a)}")
        return a.tobytes()

    def __call__(self, grid, block, args, *, shared_mem=0, order=None, seed=0, workers=None, stack_size=None,
                 guard=None, timeout=None, blocks=None):
        """Launch synchronously.

        ``order``: the order in which threads run between barriers: "forward", "reverse",
        "random" (seeded by ``seed``), or "all": run all three on the same inputs and raise
        EmuError if any output array differs between them (default $FASTCONV_EMU_ORDER or
        forward). ``workers``: OS threads (default $FASTCONV_EMU_WORKERS or all cores).
        ``stack_size``: bytes per CUDA thread (default 64 KiB). ``guard``: False, True (= "end")
        or "start": run on guarded copies of the array arguments so that an out-of-bounds access
        fails the launch (default $FASTCONV_EMU_GUARD or False). ``timeout``: seconds after which
        a launch that is still running fails instead of hanging (infinite loops, spin-waits on
        another thread; default $FASTCONV_EMU_TIMEOUT or none; 0, inf and anything from 1e9 s on mean none).
        ``blocks``: ``(start, stop)`` (or a ``range``): run only the blocks whose linear index
        ``x + gridDim.x * (y + gridDim.y * z)`` lies in [start, stop); blockIdx and gridDim stay those of
        the whole grid (default: every block). What a kernel's last blocks compute can then be checked
        on a grid far too big to run.
        """
        order = order or _config.emu_order()
        if guard is None:
            guard = _config.emu_guard()
        if timeout is None:
            timeout = _config.emu_timeout()
        self._timeout = _config.emu_timeout_seconds(timeout)   # 0: none; what the watchdog can represent
        self._blocks = _block_range(blocks, grid)
        if order == "all":
            self._all_orders(grid, block, args, shared_mem, seed, workers, stack_size, guard)
        else:
            self._guarded(grid, block, args, shared_mem, order, seed, workers, stack_size, guard)

    def _guarded(self, grid, block, args, shared_mem, order, seed, workers, stack_size, guard):
        if not guard:
            self._launch(grid, block, args, shared_mem, order, seed, workers, stack_size)
            return
        self._pack(args)  # check the arguments before copying anything
        guarded = _guard.GuardedArgs(args, self.params, guard)
        try:
            self._launch(grid, block, guarded.args, shared_mem, order, seed, workers, stack_size)
        except EmuError as e:
            raise EmuError(guarded.explain(str(e))) from None
        finally:
            guarded.close(copy_back=True)

    def _all_orders(self, grid, block, args, shared_mem, seed, workers, stack_size, guard):
        """Forward, reverse and random order on the same inputs; outputs must agree bytewise.

        Differences mean the result depends on how threads interleave: a missing __syncthreads
        or another race -- or floating-point atomics, whose summation order legitimately varies.
        """
        self._pack(args)
        outs = [(i, a) for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.flags.writeable and a.size]
        before = [a.copy() for _, a in outs]
        results = {}
        for order in ("forward", "reverse", "random"):
            for (_, a), b in zip(outs, before):
                np.copyto(a, b)
            self._guarded(grid, block, args, shared_mem, order, seed, workers, stack_size, guard)
            results[order] = [a.copy() for _, a in outs]
        problems = []
        for k, (i, a) in enumerate(outs):
            rows = {o: r[k].reshape(-1).view(np.uint8).reshape(a.size, a.itemsize) for o, r in results.items()}
            differ = np.zeros(a.size, bool)
            for o in ("reverse", "random"):
                differ |= (rows[o] != rows["forward"]).any(axis=1)
            if differ.any():
                j = int(np.flatnonzero(differ)[0])
                vals = ", ".join(f"{o}={results[o][k].reshape(-1)[j]!r}" for o in results)
                problems.append(f"argument {i} (`{self.params[i][6]}`): {int(differ.sum())} of {a.size} elements "
                                f"differ, first at flat index {j}: {vals}")
        for (_, a), r in zip(outs, results["forward"]):
            np.copyto(a, r)
        if problems:
            raise EmuError(f"{self.name}: results depend on the thread order (a missing __syncthreads or "
                           f"another race; float atomics also do this): " + "; ".join(problems))

    def _launch(self, grid, block, args, shared_mem, order, seed, workers, stack_size):
        g, b = _dims(grid, "grid"), _dims(block, "block")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {sorted(ORDERS) + ['all']}, got {order!r}")
        if workers is None:
            workers = _config.emu_workers()
        stack_size = DEFAULT_STACK if stack_size is None else int(stack_size)
        if int(shared_mem) < 0:
            raise ValueError("shared_mem must be >= 0")
        if int(shared_mem) > self.max_dynamic_shared_size_bytes:
            raise EmuError(f"{self.name}: shared_mem={int(shared_mem)} is more than max_dynamic_shared_size_bytes="
                           f"{self.max_dynamic_shared_size_bytes} (a GPU launch fails the same way)")
        limit = MAX_SMEM_OPT_IN if self.name in self._lib.max_dynamic_smem else DEFAULT_SMEM
        ptrs, keep = self._pack(args)
        err = ctypes.create_string_buffer(4096)
        switches = ctypes.c_ulonglong()
        rc = self._lib.launch(self._desc, ptrs, g, b, int(shared_mem), limit, ORDERS[order], int(seed) & (2 ** 64 - 1),
                              int(workers), stack_size, self._timeout, ctypes.byref(switches), err, len(err),
                              *self._blocks)
        del keep
        self.last_switches = switches.value
        if rc != 0:
            raise EmuError(f"{self.name}: {err.value.decode(errors='replace')}")
