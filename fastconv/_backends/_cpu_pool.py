"""The numba backend's GEMM workers: one pool of threads for the im2col paths, each running single-threaded
BLAS, no spinning threads left behind.

Why. The im2col paths alternate a Numba packing kernel and a BLAS GEMM. Left to itself, OpenBLAS runs every
GEMM on its own thread pool, whose workers spin for about 0.1 s after each call: the next Numba kernel (or
torch, or the next GEMM's packing) shares the cores with them. And when another process holds one of the
cores, a GEMM split evenly over two threads waits for the thread that is not scheduled: on this project's
2-core machines a (64 x 576) @ (576 x 3136) GEMM repeated for 8 images took 25 ms on one thread and 200 ms on
two with one core busy.

What. :func:`run` hands a list of work items (tiles of images, bands of rows: each packs its own column matrix
and runs its own GEMM into a disjoint part of the output) to ``workers`` threads, which claim items one at a
time until none is left, so a thread on a busy core simply does fewer of them. While any call's workers run,
NumPy's OpenBLAS runs one thread per GEMM (``openblas_set_num_threads(1)``, process-wide: OpenBLAS's
``openblas_set_num_threads_local`` is not per thread in its pthreads builds, as NumPy's wheels are): the
GEMMs run where they are called and BLAS's own pool stays asleep. The count in force before is put back when
the last of the fastconv calls running at once ends (a count of calls under a lock, so concurrent calls from
several threads neither restore too early nor keep 1 for good). A NumPy GEMM another thread of the program
starts meanwhile runs on one thread too. The caller only waits; it runs items itself only where no pool
thread can be started (an address-space limit).

The result does not depend on which thread ran which item (an item's output region and its arithmetic are
fixed by the item), so it is the same run to run and for any number of workers.

Where NumPy's BLAS is not OpenBLAS (MKL, BLIS, Accelerate), :func:`workers` is 1 and the caller runs every
item itself with the BLAS's own threads, as before this pool existed.

:func:`run_chunks` runs the chunks of a serial Numba kernel (no GEMM: the BLAS thread count is left alone)
on the same threads, the caller among them. Numba's own parallel loops (``prange`` on its OpenMP layer) split
their iterations statically, so a region ends only when every one of its threads has run its share: with
another process on one of two cores, that thread waits for the scheduler, and on this project's VMs every
region took 8 ms, whatever its quiet time (a 0.4 ms depthwise layer: 8.0 ms for the first ~100 ms after a
pause, then 0.4 ms with a 4 ms stall every 4 ms tick), where claimed chunks took 0.6-2 ms. The caller
waits for the chunks, not for the workers: one that starts after the last chunk was claimed finds nothing
to do and never touches its scratch.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

_LOCK = threading.Lock()
_SETTER: "Optional[object]" = None      # (set, get) ctypes functions; False: none; None: not looked up
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0


def _loaded_openblas_paths():
    """Paths of the loaded shared libraries whose name says OpenBLAS (NumPy's wheels: scipy_openblas)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:     # not Linux: nothing found, the BLAS keeps its own threads
        return []
    return sorted(p for p in paths if ".so" in p)


#: (set, get) symbol names of OpenBLAS's process-wide thread count, as plain and as scipy-openblas builds
#: (NumPy's wheels) export them
_SYMBOLS = (("openblas_set_num_threads", "openblas_get_num_threads"),
            ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads_64_", "scipy_openblas_get_num_threads_64_"))


def _openblas_functions(names_options):
    """The first of ``names_options`` (tuples of symbol names) that a loaded OpenBLAS exports in full, as a
    tuple of its ctypes functions (restype/argtypes still to set), or None."""
    import numpy   # noqa: F401  (loads NumPy's BLAS, so that it is in the map)
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for names in names_options:
            fns = tuple(getattr(lib, n, None) for n in names)
            if all(f is not None for f in fns):
                return fns
    return None


def blas_thread_control():
    """(set, get) of the thread count of the OpenBLAS NumPy loaded, as ctypes functions, or None where there
    is none. Looked up once."""
    global _SETTER
    if _SETTER is None:
        found = _openblas_functions(_SYMBOLS)
        if found:
            set_fn, get_fn = found
            set_fn.restype, set_fn.argtypes = None, [ctypes.c_int]
            get_fn.restype, get_fn.argtypes = ctypes.c_int, []
        _SETTER = found or False
    return _SETTER or None


#: names of OpenBLAS's ``get_corename`` (the kernel family it picked for this CPU at load time), as plain and
#: as scipy-openblas builds export it
_CORENAME_SYMBOLS = (("openblas_get_corename",), ("scipy_openblas_get_corename64_",),
                     ("scipy_openblas_get_corename",))


def blas_corename() -> Optional[str]:
    """The kernel family NumPy's OpenBLAS chose for this CPU when it was loaded ("Haswell", "SkylakeX",
    "Zen", ...), or None where NumPy's BLAS is not an OpenBLAS that says. OpenBLAS picks it once, from the
    CPU model it knows (``OPENBLAS_CORETYPE`` overrides it, read at load time only): on a CPU newer than
    its table it may pick an older family's kernels, which the benchmark reports show beside the CPU's ISA."""
    found = _openblas_functions(_CORENAME_SYMBOLS)
    if not found:
        return None
    fn, = found
    fn.restype, fn.argtypes = ctypes.c_char_p, []
    core = fn()
    return core.decode("ascii", "replace").strip() if core else None


_held = {"calls": 0, "saved": None}


def _hold_one_blas_thread() -> None:
    """The first of the fastconv calls running at once saves the BLAS thread count and sets 1."""
    set_fn, get_fn = blas_thread_control()
    with _LOCK:
        if _held["calls"] == 0:
            _held["saved"] = get_fn()
            set_fn(1)
        _held["calls"] += 1


def _release_blas_threads() -> None:
    """The last of them puts the saved count back."""
    set_fn, _ = blas_thread_control()
    with _LOCK:
        _held["calls"] -= 1
        if _held["calls"] == 0:
            set_fn(_held["saved"])


def _pool(size: int) -> ThreadPoolExecutor:
    """The process's worker pool, grown (never shrunk) to ``size`` threads; created on first use."""
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE < size:
            old = _POOL
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fastconv-gemm")
            _POOL_SIZE = size
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def workers(threads: int, items: int) -> int:
    """Workers :func:`run` uses for ``items`` items when the caller runs with ``threads`` threads: at most
    one per item, and 1 (the caller alone, with the BLAS's own threads) where the BLAS's thread count cannot
    be set (not OpenBLAS)."""
    if threads <= 1 or items <= 1 or blas_thread_control() is None:
        return 1
    return min(threads, items)


def run(items: Sequence, fn: Callable, scratch: Callable, nworkers: int) -> None:
    """``fn(item, s)`` for every item, with ``s`` the running worker's own ``scratch()`` (its column matrix,
    ...), all made here before any item runs (so running out of memory is a MemoryError before any kernel,
    and the peak does not depend on timing). With ``nworkers`` 1 the caller runs the items in order; else
    ``nworkers`` pool threads claim items until none is left and the caller waits for all. The first
    exception any item raised is raised here, after every worker has stopped (none claims a new item once
    one failed)."""
    scratches = [scratch() for _ in range(max(1, nworkers))]
    if nworkers <= 1:
        for item in items:
            fn(item, scratches[0])
        return
    _hold_one_blas_thread()
    try:
        _run_on_pool(items, fn, scratches, nworkers)
    finally:
        _release_blas_threads()


def _run_on_pool(items, fn, scratches, nworkers) -> None:
    state = {"next": 0, "error": None}
    claim = threading.Lock()

    def drain(s):
        while True:
            with claim:
                i = state["next"]
                if i >= len(items) or state["error"] is not None:
                    return
                state["next"] = i + 1
            try:
                fn(items[i], s)
            except BaseException as e:   # noqa: BLE001 - handed to the caller below
                with claim:
                    if state["error"] is None:
                        state["error"] = e
                return

    futures, left = [], []
    for s in scratches:
        try:
            futures.append(_pool(nworkers).submit(drain, s))
        except RuntimeError:    # no thread can be started (an address-space or thread limit)
            left.append(s)
    try:
        for s in left[:1]:      # then the caller drains too
            drain(s)
        for f in futures:
            f.result()
    finally:
        with claim:     # interrupted while waiting: no worker starts another item
            state["next"] = len(items)
    if state["error"] is not None:
        raise state["error"]


def run_chunks(nchunk: int, fn: Callable, scratches: Sequence) -> None:
    """``fn(ch, s)`` for ``ch`` in ``range(nchunk)``, on ``len(scratches)`` workers, each with its own
    ``s`` (the caller makes them, so that the peak does not depend on timing). The caller is the first
    worker; pool threads are the others. Each worker claims the next chunk until none is left, so a worker
    on a busy core runs fewer; the call returns once every claimed chunk has ended (a worker that never
    got to run claims none). The first exception a chunk raised is raised here, after every running chunk
    has ended; once one failed, no worker claims another."""
    if nchunk <= 0:
        return
    if len(scratches) <= 1 or nchunk == 1:
        for ch in range(nchunk):
            fn(ch, scratches[0])
        return
    state = {"next": 0, "running": 0, "error": None}
    cond = threading.Condition()

    def drain(s):
        while True:
            with cond:
                ch = state["next"]
                if ch >= nchunk:
                    return
                state["next"] = ch + 1
                state["running"] += 1
            try:
                fn(ch, s)
            except BaseException as e:   # noqa: BLE001 - handed to the caller below
                with cond:
                    if state["error"] is None:
                        state["error"] = e
                    state["next"] = nchunk
            finally:
                with cond:
                    state["running"] -= 1
                    if state["running"] == 0:
                        cond.notify_all()

    pool = _pool(len(scratches))
    for s in scratches[1:]:
        try:
            pool.submit(drain, s)
        except RuntimeError:    # no thread can be started: the caller runs the chunks it would have
            break
    try:
        drain(scratches[0])
    finally:
        with cond:      # interrupted: no worker claims another chunk; then wait for the running ones
            state["next"] = nchunk
            cond.wait_for(lambda: state["running"] == 0)
    if state["error"] is not None:
        raise state["error"]
