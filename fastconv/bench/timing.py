"""How long the runners of a case are timed, and what is reported of the times.

The clock itself is :mod:`fastconv._timing`'s: a runner's ``sample`` is ``wall_times`` (CPU, with the
runner's synchronisation inside the timed region) or ``event_times`` (GPU, CUDA events).

The runners of one case ("sides") are timed together, in rounds (:func:`measure_case`): first each side's
first call (compilation, autotuning: reported apart) and warm-up, then rounds in which every side makes
``round_calls`` timed calls, the order rotating by one side each round (A B P, B P A, P A B, ...), so that
a burst of outside load lands on every side alike and the ratio of two sides is taken over the same stretch
of time. Rounds go on until every side is steady or the case's budget is spent:

- steady: every side has ``min_repeat`` calls, ``min_time`` seconds are spent, and every side's *spread*
  is at most ``max_spread``. The spread (:func:`spread`) is how well the reported number, the median, is
  known: the half-width of an approximate 95% confidence interval of the median, relative to it,
  ``1.96 * 1.2533 * (IQR / 1.349) / sqrt(n) / median`` (the asymptotic standard error of a sample median,
  with the standard deviation estimated from the interquartile range so that a few outliers do not count).
  It is the median's precision, not the calls' dispersion, that is judged: on a shared 2-core VM single
  sub-millisecond calls of a 2-thread kernel scatter by 20-40% (IQR / median) on a quiet machine, while the
  median of 50 of them is known to a few percent. A burst of outside load that hits many calls widens the
  quartiles and so the interval; since the rounds spread each side's calls over the whole case, it lands on
  every side alike instead of moving one side's median alone.
- after each switch of side, ``rewarm`` untimed calls of the side about to be timed: the first call after
  another runner's is slow (the other runner's threads still spin, caches hold its data), which would bias
  every side by its share of first calls (they are counted in the budget).
- budget: ``max_time`` seconds are spent (every side has at least three calls by then), or every side has
  ``max_repeat`` calls. A side still above ``max_spread`` at the end is *noisy*.

"Seconds spent" are the case's timed seconds (every side's samples, as the clock measured them) plus the
pauses taken between sides, so the budget holds on the wall clock and a test can script it with a fake
sampler.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, List, Optional, Sequence

from .. import _timing


#: the default of Policy.max_spread: a side whose spread stays above it is noisy
MAX_SPREAD = 0.1


@dataclasses.dataclass(frozen=True)
class Policy:
    """Per side: warm-up calls (the first one timed apart). Per case: rounds of ``round_calls`` timed calls of
    every side, until every side has ``min_repeat`` calls, ``min_time`` seconds are spent and every side's
    :func:`spread` is at most ``max_spread`` (steady), or ``max_time`` seconds are spent, or every side has
    ``max_repeat`` calls (the budget; :func:`measure_case` says which). ``settle_s``: a pause before each
    side's warm-up and before each block of timed calls that follows another side's (counted in the budget),
    so that threads another runner left spinning (OpenBLAS, torch's pool) are idle by then."""
    warmup: int
    min_repeat: int
    max_repeat: int
    min_time: float
    max_time: float
    settle_s: float = 0.0
    max_spread: float = MAX_SPREAD
    round_calls: int = 3
    rewarm: int = 0


QUICK_POLICY = Policy(warmup=1, min_repeat=5, max_repeat=200, min_time=0.05, max_time=1.0, rewarm=1)
FULL_POLICY = Policy(warmup=2, min_repeat=10, max_repeat=200, min_time=0.2, max_time=2.0, round_calls=5, rewarm=1)

#: ``sample(fn, repeat) -> seconds per call``, one entry per sample
Sampler = Callable[[Callable[[], object], int], List[float]]


@dataclasses.dataclass
class Side:
    """One runner of a case as the timing sees it: the call, how a call is timed (``sample``) and the
    synchronisation that belongs inside the first call's wall time."""
    call: Callable[[], object]
    sample: Sampler
    sync: Optional[Callable[[], None]] = None


#: 1.96 (two-sided 95%) x 1.2533 (sqrt(pi/2): the standard error of a normal sample's median over that of its
#: mean) / 1.349 (a normal distribution's interquartile range in standard deviations)
_MEDIAN_CI = 1.96 * 1.2533 / 1.349


def spread(times: Sequence[float]) -> Optional[float]:
    """The relative half-width of an approximate 95% confidence interval of the median of ``times``:
    ``_MEDIAN_CI * (q3 - q1) / sqrt(n) / median`` (:func:`quartiles`, exclusive method; module docstring);
    None with fewer than two times or a zero median."""
    if len(times) < 2:
        return None
    q1, med, q3 = quartiles(times)
    return _MEDIAN_CI * (q3 - q1) / math.sqrt(len(times)) / med if med else None


def _steady(times: Sequence[float], policy: Policy) -> bool:
    s = spread(times)
    return s is not None and s <= policy.max_spread


def measure_case(sides: Sequence[Side], policy: Policy) -> tuple:
    """Time ``sides`` together in rotating rounds (module docstring). Returns (one dict per side: the first
    call's wall time ``first_call_s`` with ``sync()`` inside it, every timed call's seconds ``times_s``,
    ``error``: the exception the side raised, after which it was timed no further, else None; and the
    case's ``{"rounds", "stopped": "steady" | "budget" | "max_repeat", "spent_s"}``)."""
    out = [{"first_call_s": None, "times_s": [], "error": None} for _ in sides]
    for s, o in zip(sides, out):
        try:
            if policy.settle_s:
                time.sleep(policy.settle_s)
            o["first_call_s"] = first = _timing.wall_times(s.call, 1, sync=s.sync)[0]
            if first < policy.max_time and policy.warmup > 1:   # a call slower than the budget needs no more
                _timing.wall_times(s.call, policy.warmup - 1, sync=s.sync)
        except Exception as e:  # reported by the caller; the other sides are still timed
            o["error"] = e
    spent, rounds, last, stopped = 0.0, 0, None, "budget"
    while True:
        live = [i for i, o in enumerate(out) if o["error"] is None]
        if not live:
            break
        k, added = rounds % len(live), 0
        for i in live[k:] + live[:k]:
            s, o = sides[i], out[i]
            n = min(policy.round_calls, policy.max_repeat - len(o["times_s"]))
            if n <= 0:
                continue
            if policy.settle_s and last != i:
                time.sleep(policy.settle_s)
                spent += policy.settle_s
            switched = last != i
            last = i
            try:
                if switched and policy.rewarm and len(live) > 1:
                    spent += sum(s.sample(s.call, policy.rewarm))   # untimed: see the module docstring
                t = s.sample(s.call, n)
            except Exception as e:
                o["error"] = e
                continue
            o["times_s"] += t
            spent += sum(t)
            added += len(t)
        rounds += 1
        timed = [out[i]["times_s"] for i in live if out[i]["error"] is None]
        if not timed or not added:
            break
        if (all(len(t) >= policy.min_repeat for t in timed) and spent >= policy.min_time
                and all(_steady(t, policy) for t in timed)):
            stopped = "steady"
            break
        if all(len(t) >= policy.max_repeat for t in timed):
            stopped = "max_repeat"
            break
        if spent >= policy.max_time and all(len(t) >= 3 for t in timed):
            break
    return out, {"rounds": rounds, "stopped": stopped, "spent_s": spent}


def measure(call: Callable[[], object], policy: Policy, sample: Sampler,
            sync: Optional[Callable[[], None]] = None) -> dict:
    """:func:`measure_case` of one call alone: ``{"first_call_s", "times_s"}``; raises what the call
    raised."""
    (m,), _ = measure_case([Side(call, sample, sync)], policy)
    if m["error"] is not None:
        raise m["error"]
    return {"first_call_s": m["first_call_s"], "times_s": m["times_s"]}


def quartiles(values: Sequence[float], method: str = "exclusive") -> List[Optional[float]]:
    """[first quartile, median, third quartile] of ``values`` (``statistics.quantiles``; one value is all
    three; none gives None three times). ``method``: "exclusive" for a sample of a distribution (the timed
    calls), "inclusive" for a whole population, whose quartiles stay within its range (the layers of a
    table)."""
    if len(values) >= 2:
        q = statistics.quantiles(values, n=4, method=method)
        return [q[0], _timing.median(list(values)), q[2]]
    return [values[0] if values else None] * 3


def summarise(times: Sequence[float], policy: Optional[Policy] = None) -> dict:
    """Median, minimum and quartiles of the timed calls, their :func:`spread` and, given the ``policy``,
    whether they are ``noisy`` (spread above ``policy.max_spread``, or too few calls to tell) and the
    ``max_spread`` that was judged by."""
    q1, med, q3 = quartiles(times)
    out = {"median_s": med, "min_s": min(times), "q1_s": q1, "q3_s": q3, "rounds": len(times),
           "spread": spread(times)}
    if policy is not None:
        out.update(noisy=not _steady(times, policy), max_spread=policy.max_spread)
    return out
