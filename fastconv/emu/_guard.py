"""Guarded copies of array arguments: out-of-bounds accesses fault on a PROT_NONE page.

With ``guard="end"`` (or True) each array is copied so that its last byte is followed directly by
an inaccessible page: reading or writing even one element past the end faults, and the runtime
turns the fault into an EmuError that names the argument and the element. ``guard="start"`` puts
the first element right after an inaccessible page instead (catches negative indices; the start is
page-aligned). Arrays are copied in before the launch and copied back after it (also when it
failed). Identical arguments (the same array passed twice) share one copy; partially overlapping
arrays are refused, since separate copies would break the aliasing the kernel sees.
"""
import ctypes
import mmap
import re

import numpy as np

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value
MODES = ("end", "start")
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # Python 3.13 names it; Linux's value


class _Region:
    def __init__(self, index, array, param_type, mode):
        self.index, self.array, self.param_type, self.mode = index, array, param_type, mode
        self.nbytes = array.nbytes
        body = max(_PAGE, -(-self.nbytes // _PAGE) * _PAGE)
        self.size = body + 2 * _PAGE
        base = _libc.mmap(None, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if base in (None, _MAP_FAILED):
            raise MemoryError(f"cannot map {self.size} bytes for a guarded copy")
        self.base = base
        _libc.mprotect(base, _PAGE, 0)
        _libc.mprotect(base + _PAGE + body, _PAGE, 0)
        self.data = base + _PAGE if mode == "start" else base + _PAGE + body - self.nbytes
        ctypes.memmove(self.data, array.ctypes.data, self.nbytes)

    def copy_back(self):
        if self.array.flags.writeable:
            ctypes.memmove(self.array.ctypes.data, self.data, self.nbytes)

    def free(self):
        if self.base:
            _libc.munmap(self.base, self.size)
            self.base = 0

    def explain(self, addr):
        """A sentence about addr if it lies in one of this copy's guard pages, else None."""
        item = self.array.itemsize
        end = self.data + self.nbytes
        where = None
        if self.base <= addr < self.base + _PAGE or (self.mode == "end" and self.base <= addr < self.data):
            where = f"{self.data - addr} bytes before its start (element {(addr - self.data) // item})"
        elif end <= addr < self.base + self.size:
            where = f"{addr - end} bytes past its end (element {(addr - self.data) // item})"
        if where is None:
            return None
        return (f"argument {self.index} (`{self.param_type}`, {self.array.dtype} array of "
                f"{self.array.size} elements): access {where}")


class GuardedArgs:
    """Context manager: replaces array arguments with guarded copies for one launch."""

    def __init__(self, args, params, mode):
        if mode is True:
            mode = "end"
        if mode not in MODES:
            raise ValueError(f"guard must be False, True or one of {MODES}, got {mode!r}")
        self.mode, self.regions, self.args = mode, [], list(args)
        by_span = {}
        spans = []
        try:
            for i, (a, p) in enumerate(zip(args, params)):
                if not isinstance(a, np.ndarray) or a.nbytes == 0:
                    continue
                key = (a.ctypes.data, a.nbytes)
                if key in by_span:
                    region = by_span[key]
                else:
                    lo, hi = key[0], key[0] + key[1]
                    for slo, shi, j in spans:
                        if lo < shi and slo < hi:
                            raise ValueError(f"guard: arguments {j} and {i} overlap partially; guarded copies "
                                             f"would break that aliasing")
                    spans.append((lo, hi, i))
                    region = by_span[key] = _Region(i, a, p[6], mode)
                    self.regions.append(region)
                view = np.ctypeslib.as_array((ctypes.c_ubyte * a.nbytes).from_address(region.data))
                self.args[i] = view.view(a.dtype).reshape(a.shape)
        except BaseException:
            self.close()
            raise

    def explain(self, message):
        m = re.search(r"at address (0x[0-9a-fA-F]+|\(nil\))", message)
        if not m:
            return message
        addr = 0 if m.group(1) == "(nil)" else int(m.group(1), 16)
        for r in self.regions:
            why = r.explain(addr)
            if why:
                return f"{message}: {why}"
        if addr == 0:
            return (f"{message} (guarded copies are aligned to their element size only; a 16-byte vector "
                    f"load from one also reports address 0)")
        return message

    def close(self, copy_back=False):
        for r in self.regions:
            if copy_back:
                r.copy_back()
            r.free()
        self.regions = []


#: alignment of a reserved array's start: what cudaMalloc gives (vector loads and stores see a GPU's alignment)
RESERVE_ALIGN = 256


class Reserved:
    """A C-contiguous array of any size (terabytes) over memory that is reserved, not backed: an anonymous
    MAP_NORESERVE mapping whose pages are zero until written, and take memory only once touched. Between
    two PROT_NONE pages: the array starts 256-byte aligned (as cudaMalloc's) as close as that allows before
    the last one, so an access past its end (past the alignment's slack of up to 255 bytes) or before
    its start faults. For launching a kernel's last blocks on a problem too big to allocate
    (``EmuFunction(..., blocks=...)``): only what those blocks touch is ever backed. ``close()`` (or the
    ``with`` block's end) unmaps it; the array must not be used after that."""

    def __init__(self, shape, dtype):
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        self.nbytes = max(1, int(np.prod(shape, dtype=object)) * dtype.itemsize)
        span = -(-self.nbytes // RESERVE_ALIGN) * RESERVE_ALIGN
        body = -(-span // _PAGE) * _PAGE
        self.size = body + 2 * _PAGE
        base = _libc.mmap(None, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        if base in (None, _MAP_FAILED):
            raise MemoryError(f"cannot reserve {self.size} bytes of address space for an array of shape {shape}")
        self.base = base
        _libc.mprotect(base, _PAGE, 0)
        _libc.mprotect(base + _PAGE + body, _PAGE, 0)
        self.data = base + _PAGE + body - span
        count = int(np.prod(shape, dtype=object))
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.data)
        self.array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def close(self):
        if self.base:
            self.array = None
            _libc.munmap(self.base, self.size)
            self.base = 0

    def __enter__(self):
        return self.array

    def __exit__(self, *exc):
        self.close()
