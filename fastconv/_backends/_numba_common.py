"""What every Numba kernel of the ``numba`` backend shares: compile options, the geometry records, the
uint64 index helpers and the tolerance of a corrupted disk cache.

Geometry records. A kernel takes the problem's geometry as one namedtuple and reads it by field name
(``geo.stride_h``), never by position: a plain tuple fails to type, so a field order cannot drift between
the builder and a kernel. Each record's fields are named after the spec's fields and are built from the
spec by one function each (:func:`conv_geometry`, :func:`pool_geometry`, :func:`adaptive_windows`); the
fields both records carry come first, in the same order. Numba types a record as a named tuple of its
class, which its disk cache pickles by reference to this module, so cached kernels load in a new
process like any other.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import re
import time
import types
import warnings
from typing import Optional, Tuple

import numpy as np
from numba import njit
from numba.core import event as _numba_event

from .. import _warmup
from .._spec import adaptive_window


# ---------------------------------------------------------------------------------------------------
# Numba's disk cache: on where it can be written, off (said once) where it cannot
# ---------------------------------------------------------------------------------------------------
def cache_location(py_file: str) -> Tuple[Optional[str], Optional[str]]:
    """(the directory Numba caches kernels of ``py_file`` in, None) or (None, why it cannot cache them),
    asked of Numba's own cache-locator search (NUMBA_CACHE_DIR, ``__pycache__`` beside the file,
    ``~/.cache/numba``) with a probe function bearing that file name: exactly what ``@njit(cache=True)``
    does at decoration, where a read-only install with no writable cache directory raises "no locator
    available"."""
    from numba.core.caching import FunctionCache
    ns: dict = {}
    exec(compile("def fastconv_cache_probe():\n    pass\n", py_file, "exec"), ns)
    try:
        return FunctionCache(ns["fastconv_cache_probe"]).cache_path, None
    except RuntimeError as e:
        return None, str(e)
    except Exception:       # a Numba whose cache is built differently: leave caching on, as before
        return "unknown", None


_warned = []


@functools.lru_cache(maxsize=None)
def cache_for(py_file: str) -> bool:
    """The ``cache=`` option for kernels defined in ``py_file``: True where Numba can write its cache for
    that file, else False, said once per process (RuntimeWarning). Uncached rather than cached in a
    temporary directory: a private one would be gone with the process (Numba already keeps compiled
    kernels in memory), and a shared one (``/tmp``) would load pickled code any local user could plant."""
    why = cache_location(py_file)[1]
    if why is not None and not _warned:
        _warned.append(why)
        warnings.warn(f"fastconv: Numba cannot cache compiled kernels here ({why}); the numba backend runs "
                      f"uncached, compiling each kernel on first use in every process (seconds each). Set "
                      f"NUMBA_CACHE_DIR to a writable directory to keep them", RuntimeWarning, stacklevel=2)
    return why is None


#: whether the kernel modules of this directory (the numba backend's) use Numba's disk cache
CACHE = cache_for(__file__)

#: beside the cached kernels: per kernel module, the digest of the sources its kernels were compiled from
SOURCES_STAMP = "fastconv-numba-sources.json"

#: the files whose source a compiled kernel can hold: the kernel modules, and the Winograd matrices they
#: freeze as constants (numba_cpu.py and the rest of this directory are plain Python, read at run time)
KERNEL_SOURCES = ("_numba_", "_winograd_")

_RELATIVE_IMPORT = re.compile(r"^from \.(\w+) import", re.M)


def source_digests(src_dir: str) -> dict:
    """Per KERNEL_SOURCES module of ``src_dir``: the sha256 of its source and of every kernel source it
    imports from, directly or through another (the code its compiled kernels can hold)."""
    texts = {}
    for name in sorted(os.listdir(src_dir)):
        if name.endswith(".py") and name.startswith(KERNEL_SOURCES):
            with open(os.path.join(src_dir, name), "rb") as f:
                texts[name[:-3]] = f.read()
    digests = {}
    for module in texts:
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            if m in seen or m not in texts:
                continue
            seen.add(m)
            todo += _RELATIVE_IMPORT.findall(texts[m].decode("utf-8", "replace"))
        h = hashlib.sha256()
        for m in sorted(seen):
            h.update(m.encode() + b"\0" + texts[m] + b"\0")
        digests[module] = h.hexdigest()
    return digests


def drop_stale_caches(src_dir: str, cache_dir: Optional[str]) -> list:
    """Delete, in ``cache_dir``, the cached kernels of every kernel module of ``src_dir`` whose sources
    changed since they were cached; returns those modules. Numba checks a cached kernel against the file
    that defines it only, but these kernels inline helpers of other files here (``ucopy`` of this one in
    every kernel) and compile in the kernels they call (``im2col_pack`` in the gradient's tile packing):
    an edited helper would leave the other files' kernels cached with the old code, and tests would pass
    against it. So the digests of :func:`source_digests` are kept in ``cache_dir`` (SOURCES_STAMP), and
    for a module whose digest is missing or differs, every ``<module>.*.nbi`` / ``.nbc`` goes (its
    kernels compile again on first use). An installed release never differs: its files change only with
    a new install, which Numba's own check already sees."""
    if not cache_dir or not os.path.isdir(cache_dir):
        return []
    digests = source_digests(src_dir)
    stamp = os.path.join(cache_dir, SOURCES_STAMP)
    try:
        with open(stamp) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        kept = {}
    stale = sorted(m for m, d in digests.items() if kept.get(m) != d)
    if not stale:
        return []
    prefixes = tuple(m + "." for m in stale)
    for f in os.listdir(cache_dir):
        if f.startswith(prefixes) and f.endswith((".nbi", ".nbc")):
            try:
                os.remove(os.path.join(cache_dir, f))
            except OSError:     # another process removed it first, or the directory is not ours to change
                pass
    try:
        with open(stamp, "w") as f:
            json.dump(digests, f, indent=1, sort_keys=True)
    except OSError:
        pass
    return stale


if CACHE:
    drop_stale_caches(os.path.dirname(os.path.abspath(__file__)), cache_location(__file__)[0])


# ---------------------------------------------------------------------------------------------------
# Saying that a kernel compiles (fastconv._warmup): Numba's compile event, which Numba triggers only
# once the kernel's disk cache has missed, so a kernel loaded from the cache says nothing
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def cache_phrase(py_file: str) -> str:
    """Where the kernels of ``py_file`` are cached, in words, for the first-compile line."""
    path, why = cache_location(py_file)
    if why is not None:
        return (f"not cached ({why}), so it compiles again in every process; set NUMBA_CACHE_DIR to a writable "
                f"directory to keep it")
    return f"each kernel compiles once per dtype (seconds) and is cached in {path}"


def _kernel_text(dispatcher, args) -> str:
    """``kernel max_pool2d (float32)``: the kernel and the floating dtypes of its array arguments (the
    storage dtype it compiles for; index and window arrays are int64 in every signature)."""
    dtypes = list(dict.fromkeys(str(a.dtype) for a in args if hasattr(a, "dtype") and hasattr(a, "ndim")))
    floats = [d for d in dtypes if d.startswith("float")]
    return f"kernel {dispatcher.py_func.__name__} ({', '.join(floats or dtypes) or 'no arrays'})"


class CompileListener(_numba_event.Listener):
    """Numba's ``numba:compile`` events of fastconv's kernels to :mod:`fastconv._warmup` (the line on the
    first compile of a process, the log of each). Never raises: Numba aborts a compile whose listener does."""

    def __init__(self):
        self._started = {}

    @staticmethod
    def _ours(event):
        d = (event.data or {}).get("dispatcher") if isinstance(event.data, dict) else None
        py_func = getattr(d, "py_func", None)
        return d if getattr(py_func, "__module__", "").startswith("fastconv.") else None

    def on_start(self, event):
        try:
            d = self._ours(event)
            if d is not None:
                what = _kernel_text(d, event.data.get("args") or ())
                self._started[id(event.data)] = (what, time.perf_counter())
                _warmup.compiling_now("numba", what, lambda: cache_phrase(d.py_func.__code__.co_filename))
        except Exception:       # pragma: no cover - a notice must not break a compile
            pass

    def on_end(self, event):
        try:
            what, t0 = self._started.pop(id(event.data), (None, 0.0))
            if what is not None:
                _warmup.compiled("numba", what, time.perf_counter() - t0)
        except Exception:       # pragma: no cover
            pass


if _warmup.hook_once("numba"):
    _numba_event.register("numba:compile", CompileListener())

# error_model="numpy": integer division needs no zero check (divisors are validated positive sizes).
# Pools run with fastmath off (the NaN rule needs IEEE compares); conv kernels allow only "contract"
# (a*b+c fused into one FMA, one rounding instead of two), never reassociation or finite-math.
JIT = dict(parallel=True, cache=CACHE, fastmath=False, nogil=True, error_model="numpy")
JIT_CONV = dict(JIT, fastmath={"contract"})
JIT_SERIAL = dict(JIT, parallel=False)
JIT_CONV_SERIAL = dict(JIT_CONV, parallel=False)
INLINE = dict(inline="always", cache=CACHE)


# ---------------------------------------------------------------------------------------------------
# Geometry records (one definition each, built from the spec by one function each)
# ---------------------------------------------------------------------------------------------------
#: a conv's geometry: the spec's fields of these names, and the padded input extent the whole (P, Q)
#: output reads (``spec.input_extent_hw()``: the phase-split depthwise kernel's buffer)
ConvGeometry = collections.namedtuple(
    "ConvGeometry", "R S stride_h stride_w pad_top pad_left dil_h dil_w groups P Q extent_h extent_w")

#: a fixed-window pool's geometry: the spec's fields of these names (per-side pads: windows start at
#: ``p*stride_h - pad_top``; the after-side pads bound the avg divisor, count_include_pad)
PoolGeometry = collections.namedtuple(
    "PoolGeometry", "R S stride_h stride_w pad_top pad_bottom pad_left pad_right dil_h dil_w")

#: an adaptive pool's windows: output row i reads input rows [row_lo[i], row_hi[i]), column j input
#: columns [col_lo[j], col_hi[j]) (int64 arrays, from ``fastconv._spec.adaptive_window``)
AdaptiveWindows = collections.namedtuple("AdaptiveWindows", "row_lo row_hi col_lo col_hi")

#: the 3-D records (kernels of ``_numba_3d`` / ``_numba_3d_pool``): the 2-D records' fields with the
#: depth dimension's (T, stride_d, pad_front/back, dil_d, Z) added, the spec's fields of these names
Conv3dGeometry = collections.namedtuple(
    "Conv3dGeometry", "T R S stride_d stride_h stride_w pad_front pad_top pad_left dil_d dil_h dil_w groups Z P Q")
Pool3dGeometry = collections.namedtuple(
    "Pool3dGeometry", "T R S stride_d stride_h stride_w pad_front pad_back pad_top pad_bottom pad_left pad_right "
                      "dil_d dil_h dil_w")
#: an adaptive 3-D pool's windows: AdaptiveWindows plus output slice i's input depths [dep_lo[i], dep_hi[i])
AdaptiveWindows3d = collections.namedtuple("AdaptiveWindows3d", "dep_lo dep_hi row_lo row_hi col_lo col_hi")


def _from_spec(record, spec, **derived):
    """``record`` with every field taken from the spec's attribute of that name, except ``derived``."""
    return record(**{f: int(getattr(spec, f)) for f in record._fields if f not in derived}, **derived)


# The records are pure functions of the spec: built once per spec (a call of a small problem spends more
# building them than in the kernel): kept on the spec object itself (a call through fastconv._memo reuses
# its spec, so this is one dictionary lookup), and for equal specs built anew in a bounded LRU.
def _per_spec(build):
    attr = f"_{build.__name__}_"
    shared = functools.lru_cache(maxsize=1024)(build)

    @functools.wraps(build)
    def get(spec):
        rec = spec.__dict__.get(attr)
        if rec is None:
            rec = shared(spec)
            object.__setattr__(spec, attr, rec)
        return rec
    get.cache_clear = shared.cache_clear
    get.cache_info = shared.cache_info
    return get


@_per_spec
def conv_geometry(spec) -> ConvGeometry:
    extent_h, extent_w = spec.input_extent_hw()
    return _from_spec(ConvGeometry, spec, extent_h=extent_h, extent_w=extent_w)


@_per_spec
def pool_geometry(spec) -> PoolGeometry:
    return _from_spec(PoolGeometry, spec)


def _window_bounds(size_in, size_out):
    """[lo, hi) of each adaptive window along one axis: two read-only int64 arrays."""
    win = np.array([adaptive_window(i, size_in, size_out) for i in range(size_out)], dtype=np.int64)
    arrays = [np.ascontiguousarray(win[:, 0]), np.ascontiguousarray(win[:, 1])]
    for a in arrays:
        a.flags.writeable = False      # shared by every call of the spec: never written
    return arrays


@_per_spec
def adaptive_windows(spec) -> AdaptiveWindows:
    return AdaptiveWindows(*_window_bounds(spec.H, spec.P), *_window_bounds(spec.W, spec.Q))


@_per_spec
def conv3d_geometry(spec) -> Conv3dGeometry:
    return _from_spec(Conv3dGeometry, spec)


@_per_spec
def pool3d_geometry(spec) -> Pool3dGeometry:
    return _from_spec(Pool3dGeometry, spec)


@_per_spec
def adaptive_windows3d(spec) -> AdaptiveWindows3d:
    return AdaptiveWindows3d(*_window_bounds(spec.D, spec.Z), *_window_bounds(spec.H, spec.P),
                             *_window_bounds(spec.W, spec.Q))


# ---------------------------------------------------------------------------------------------------
# Ranges of taps and outputs
# ---------------------------------------------------------------------------------------------------
@njit(**INLINE)
def col_range(off, stride, size, out_len):
    """Output columns q < out_len whose tap ``q*stride + off`` lies in [0, size): returns [lo, hi) with
    0 <= lo <= hi <= out_len (callers fill [0, lo) and [hi, out_len), so lo must not pass out_len)."""
    lo = 0 if off >= 0 else min(out_len, (-off + stride - 1) // stride)
    if size - 1 - off < 0:
        return lo, lo
    hi = min(out_len, (size - 1 - off) // stride + 1)
    return lo, max(lo, hi)


@njit(**INLINE)
def tap_ranges(k, dil, pad, stride, size, out_len):
    """Per tap s of a ``k``-tap window: the output positions [lo[s], hi[s]) whose tap s is in bounds."""
    lo = np.empty(k, dtype=np.int64)
    hi = np.empty(k, dtype=np.int64)
    for s in range(k):
        lo[s], hi[s] = col_range(s * dil - pad, stride, size, out_len)
    return lo, hi


# ---------------------------------------------------------------------------------------------------
# Flat-index helpers
# ---------------------------------------------------------------------------------------------------
# Vectorisation note: Numba wraps negative indices, so ``a[q + off]`` with a signed ``off`` costs a
# compare-and-select per element and LLVM leaves the loop scalar (measured: 5-6x slower; 1.6 vs 8.8
# GFMA/s for one axpy). Inner loops therefore index flat arrays with uint64 (these helpers: unsigned
# indices need no wraparound) or 2-D arrays with plain loop counters; slices would also do, but building
# a view per short row cost more than the row on 7x7 planes.
@njit(**INLINE)
def uaxpy(acc, a0, x, x0, wv, n):
    """acc[a0 : a0 + n] += wv * x[x0 : x0 + n]"""
    ua, ux = np.uint64(a0), np.uint64(x0)
    for i in range(np.uint64(n)):
        acc[ua + i] += wv * x[ux + i]


@njit(**INLINE)
def uaxpy_strided(acc, a0, x, x0, stride, wv, n):
    """acc[a0 : a0 + n] += wv * x[x0 : x0 + n*stride : stride]"""
    ua, ux, st = np.uint64(a0), np.uint64(x0), np.uint64(stride)
    for i in range(np.uint64(n)):
        acc[ua + i] += wv * x[ux + i * st]


_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = (np.uint64(i) for i in range(1, 9))


@njit(**INLINE)
def _copy4(dst, d, src, s):
    """dst[d : d + 4] = src[s : s + 4], all four loaded before any is stored (uint64 offsets), so that
    LLVM's SLP vectoriser makes one vector load and store without an alias check."""
    a0, a1, a2, a3 = src[s], src[s + _U1], src[s + _U2], src[s + _U3]
    dst[d], dst[d + _U1], dst[d + _U2], dst[d + _U3] = a0, a1, a2, a3


@njit(**INLINE)
def _copy8(dst, d, src, s):
    """dst[d : d + 8] = src[s : s + 8], as _copy4."""
    a0, a1, a2, a3 = src[s], src[s + _U1], src[s + _U2], src[s + _U3]
    a4, a5, a6, a7 = src[s + _U4], src[s + _U5], src[s + _U6], src[s + _U7]
    dst[d], dst[d + _U1], dst[d + _U2], dst[d + _U3] = a0, a1, a2, a3
    dst[d + _U4], dst[d + _U5], dst[d + _U6], dst[d + _U7] = a4, a5, a6, a7


@njit(**INLINE)
def _copy_chunks(dst, d, src, s, n):
    """dst[d : d + n] = src[s : s + n] (uint64 arguments) in chunks of 8 values, the last chunk ending at n
    and overlapping the one before it (the same values written twice); 4-chunks likewise for 4 <= n < 8,
    single values below. dst and src must not overlap."""
    if n >= _U8:
        e = n - _U8
        j = np.uint64(0)
        while j < e:
            _copy8(dst, d + j, src, s + j)
            j += _U8
        _copy8(dst, d + e, src, s + e)
    elif n >= _U4:
        _copy4(dst, d, src, s)
        _copy4(dst, d + n - _U4, src, s + n - _U4)
    else:
        for i in range(n):
            dst[d + i] = src[s + i]


@njit(**INLINE)
def ucopy(dst, d0, src, s0, n, stride):
    """dst[d0 : d0 + n] = src[s0 : s0 + n*stride : stride]"""
    ud, us, st = np.uint64(d0), np.uint64(s0), np.uint64(stride)
    if stride == 1:
        for i in range(np.uint64(n)):
            dst[ud + i] = src[us + i]
    else:
        for i in range(np.uint64(n)):
            dst[ud + i] = src[us + i * st]


@njit(**INLINE)
def ucopy_rows(dst, d0, src, s0, n):
    """dst[d0 : d0 + n] = src[s0 : s0 + n] by fixed chunks (``_copy_chunks``); dst and src must not
    overlap (they may be one array, at disjoint ranges). For the hot copies of short rows only (the phase
    layout's rows, 7-28 values): ``ucopy``'s runtime-length loop vectorises only past an alias check and
    leaves a scalar remainder, which on rows of 7 cost 3.5x the chunks (Zen 3: 251 against 71 us per 1.6 MB;
    equal from 100 values on). Not ``ucopy`` everywhere: inlined at every call site the chunks tripled the
    kernels' compile times (the planes kernel's first call 12.8 -> 34.6 s from an empty cache), and called
    instead of inlined they lost the gain."""
    _copy_chunks(dst, np.uint64(d0), src, np.uint64(s0), np.uint64(n))


@njit(**INLINE)
def ufill(dst, d0, n, value):
    """dst[d0 : d0 + n] = value"""
    ud = np.uint64(d0)
    for i in range(np.uint64(n)):
        dst[ud + i] = value


# ---------------------------------------------------------------------------------------------------
# A disk cache that survives a corrupted file
# ---------------------------------------------------------------------------------------------------
def _tolerant(fn):
    fn.fastconv_tolerant = True
    return fn


def tolerate_corrupt_cache(dispatcher) -> None:
    """Make ``dispatcher``'s on-disk cache ignore an index or data file it cannot read.

    Numba writes its cache atomically (a temporary file, then ``os.replace``), so concurrent writers are
    safe; but it reads with bare ``pickle.load``, and one truncated or corrupted ``.nbi``/``.nbc`` file
    (a full disk, a partial copy) makes *every* call of the kernel raise ``EOFError``/``ValueError``/
    ``UnpicklingError`` forever. Here such a file counts as a cache miss: the kernel compiles again and
    the save that follows rewrites the index and the data file.
    """
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None or not hasattr(cache_file, "_load_index") or not hasattr(cache, "load_overload"):
        return  # caching off, or a Numba whose cache is built differently: leave it as it is
    if is_tolerant(dispatcher):
        return  # a helper imported into several kernel modules is wrapped once
    load_index, load_overload = cache_file._load_index, cache.load_overload

    @_tolerant
    def _load_index():
        try:
            return load_index()
        except Exception:   # unreadable index: start a new one (the next save replaces the file)
            return {}

    @_tolerant
    def _load_overload(sig, target_context):
        try:
            return load_overload(sig, target_context)
        except Exception:   # unreadable or unusable data file: compile (the save overwrites it)
            return None

    cache_file._load_index = _load_index
    cache.load_overload = _load_overload


def is_tolerant(dispatcher) -> bool:
    """Whether ``dispatcher``'s cache reads go through :func:`tolerate_corrupt_cache`'s wrappers."""
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    return (getattr(getattr(cache, "load_overload", None), "fastconv_tolerant", False)
            and getattr(getattr(cache_file, "_load_index", None), "fastconv_tolerant", False))


def serial_twin(kernel):
    """``kernel``'s Python function compiled again without ``parallel`` (its prange loops run as range),
    under the name ``<name>_serial``, with its own disk cache entry (Numba names cache files by the
    function's qualified name and first line, so the twin needs a name of its own: a shared one would load
    the parallel code). For problems too small to split (``numba_cpu.SERIAL_MAX_FLOPS``): a parallel
    kernel on one thread still enters Numba's threading layer, which costs microseconds a call, tens while
    another OpenMP pool in the process (PyTorch's) spins."""
    fn = kernel.py_func
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__doc__ = f"``{fn.__name__}`` without parallel loops (``serial_twin``)."
    opts = dict(kernel.targetoptions)
    for k in ("parallel", "nopython"):     # (njit implies nopython and warns when told)
        opts.pop(k, None)
    return njit(**dict(opts, parallel=False, cache=CACHE))(twin)


def dispatchers(namespace: dict) -> list:
    """The Numba dispatchers with a disk cache among a module's globals."""
    return [obj for obj in namespace.values() if hasattr(obj, "py_func") and hasattr(obj, "_cache")]


def tolerate_corrupt_caches(namespace: dict) -> None:
    """Every kernel module ends with ``tolerate_corrupt_caches(globals())``: each of its dispatchers
    (kernels and inline helpers alike) survives a corrupted cache file."""
    for dispatcher in dispatchers(namespace):
        tolerate_corrupt_cache(dispatcher)


tolerate_corrupt_caches(globals())
