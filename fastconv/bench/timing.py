"""How long each (case, runner) is timed, and what is reported of the times.

The clock itself is :mod:`fastconv._timing`'s: a runner's ``sample`` is ``wall_times`` (CPU, with the
runner's synchronisation inside the timed region) or ``event_times`` (GPU, CUDA events).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, List, Optional, Sequence

from .. import _timing


@dataclasses.dataclass(frozen=True)
class Policy:
    """Warm-up calls, then at least ``min_repeat`` timed calls and ``min_time`` seconds of them, at most
    ``max_repeat`` calls or ``max_time`` seconds (with at least three calls). ``settle_s``: a pause before
    the warm-up and again before the timed calls, so that threads another runner left spinning (OpenBLAS,
    torch's pool) are idle by then."""
    warmup: int
    min_repeat: int
    max_repeat: int
    min_time: float
    max_time: float
    settle_s: float = 0.0


QUICK_POLICY = Policy(warmup=1, min_repeat=5, max_repeat=50, min_time=0.05, max_time=0.5)
FULL_POLICY = Policy(warmup=2, min_repeat=10, max_repeat=200, min_time=0.2, max_time=2.0)

#: ``sample(fn, repeat) -> seconds per call``, one entry per sample
Sampler = Callable[[Callable[[], object], int], List[float]]


def measure(call: Callable[[], object], policy: Policy, sample: Sampler,
            sync: Optional[Callable[[], None]] = None) -> dict:
    """Warm-up calls, then timed calls of ``call()`` per ``policy``, one ``sample`` each. Returns the first
    call's wall time (with ``sync()`` inside it; compilation and autotuning show here) and every timed
    call's seconds."""
    if policy.settle_s:
        time.sleep(policy.settle_s)
    first = _timing.wall_times(call, 1, sync=sync)[0]
    if first < policy.max_time and policy.warmup > 1:   # a call slower than the budget needs no more warm-up
        _timing.wall_times(call, policy.warmup - 1, sync=sync)
    if policy.settle_s:
        time.sleep(policy.settle_s)
    times: List[float] = []
    while len(times) < policy.max_repeat:
        times += sample(call, 1)
        spent = sum(times)
        if len(times) >= policy.min_repeat and spent >= policy.min_time:
            break
        if spent >= policy.max_time and len(times) >= 3:
            break
    return {"first_call_s": first, "times_s": times}


def quartiles(values: Sequence[float], method: str = "exclusive") -> List[Optional[float]]:
    """[first quartile, median, third quartile] of ``values`` (``statistics.quantiles``; one value is all
    three; none gives None three times). ``method``: "exclusive" for a sample of a distribution (the timed
    calls), "inclusive" for a whole population, whose quartiles stay within its range (the layers of a
    table)."""
    if len(values) >= 2:
        q = statistics.quantiles(values, n=4, method=method)
        return [q[0], _timing.median(list(values)), q[2]]
    return [values[0] if values else None] * 3


def summarise(times: Sequence[float]) -> dict:
    """Median, minimum and quartiles of the timed calls."""
    q1, med, q3 = quartiles(times)
    return {"median_s": med, "min_s": min(times), "q1_s": q1, "q3_s": q3, "rounds": len(times)}
