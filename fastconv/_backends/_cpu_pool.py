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
time until none is left, so a thread on a busy core simply does fewer of them. Each pool thread sets
OpenBLAS's thread count *for itself* to 1 (``openblas_set_num_threads_local``, OpenBLAS >= 0.3.27, found in
the BLAS library NumPy loaded): the GEMMs run where they are called, BLAS's own pool never wakes, and the
caller's thread, the user's other threads and NumPy's global setting are left as they are. The caller only
waits; it runs items itself only where no pool thread can be started (an address-space limit).

The result does not depend on which thread ran which item (an item's output region and its arithmetic are
fixed by the item), so it is the same run to run and for any number of workers.

Where the BLAS has no per-thread control (MKL, BLIS, Accelerate, an older OpenBLAS), :func:`workers` is 1
and the caller runs every item itself with the BLAS's own threads, as before this pool existed.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

_LOCK = threading.Lock()
_SETTER: "Optional[object]" = None      # the ctypes function, False when there is none, None: not looked up
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


def local_thread_setter():
    """OpenBLAS's ``openblas_set_num_threads_local`` (sets the calling thread's BLAS thread count) from the
    BLAS NumPy loaded, or None where there is none. Looked up once."""
    global _SETTER
    if _SETTER is None:
        import numpy   # noqa: F401  (loads NumPy's BLAS, so that it is in the map)
        found = False
        for path in _loaded_openblas_paths():
            try:
                fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local")
            except (OSError, AttributeError):
                continue
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
            found = fn
            break
        _SETTER = found
    return _SETTER or None


def _one_blas_thread():
    setter = local_thread_setter()
    if setter is not None:
        setter(1)


def _pool(size: int) -> ThreadPoolExecutor:
    """The process's worker pool, grown (never shrunk) to ``size`` threads; created on first use."""
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE < size:
            old = _POOL
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fastconv-gemm",
                                       initializer=_one_blas_thread)
            _POOL_SIZE = size
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def workers(threads: int, items: int) -> int:
    """Workers :func:`run` uses for ``items`` items when the caller runs with ``threads`` threads: at most
    one per item, and 1 (the caller alone, with the BLAS's own threads) where the BLAS has no per-thread
    thread control."""
    if threads <= 1 or items <= 1 or local_thread_setter() is None:
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
        for s in left[:1]:      # then the caller drains too, with the BLAS's own threads
            drain(s)
        for f in futures:
            f.result()
    finally:
        with claim:     # interrupted while waiting: no worker starts another item
            state["next"] = len(items)
    if state["error"] is not None:
        raise state["error"]
