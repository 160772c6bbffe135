"""Timing a callable: the one place fastconv reads a clock for a measurement.

- :func:`wall_times` for CPU work (``time.perf_counter`` around each call, with an optional ``sync`` before
  the clock starts and inside the timed region, for work that runs asynchronously);
- :func:`event_times` for GPU work (CUDA events recorded on the current stream around ``per_batch`` calls
  queued back to back, so host launch time, the same for every candidate, does not blur the GPU's time).

Both return seconds per call, one entry per sample, in the order taken; callers summarise (the autotuner
takes a median or a minimum, ``fastconv bench`` reports medians and quartiles).
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional


def wall_times(fn: Callable[[], object], repeat: int, *, budget_s: Optional[float] = None,
               sync: Optional[Callable[[], None]] = None) -> List[float]:
    """Up to ``repeat`` timed calls of ``fn()`` (at least one), stopping early once ``budget_s`` seconds of
    calls are spent."""
    times: List[float] = []
    spent = 0.0
    for _ in range(max(1, repeat)):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if budget_s is not None and spent > budget_s:
            break
    return times


def event_times(fn: Callable[[], object], repeat: int, per_batch: int = 1) -> List[float]:
    """``repeat`` samples of the GPU time of ``per_batch`` calls of ``fn()`` queued back to back between two
    CUDA events on the current stream, each divided by ``per_batch`` (needs CuPy)."""
    import cupy
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    out: List[float] = []
    for _ in range(max(1, repeat)):
        start.record()
        for _ in range(per_batch):
            fn()
        stop.record()
        stop.synchronize()
        out.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3 / per_batch)
    return out


def median(values: List[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
