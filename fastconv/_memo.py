"""The per-call memo: an op's argument signature -> its validated problem and :class:`fastconv._dispatch.Plan`.

A tiny call (a (1, 3, 8, 8) conv) spends most of its time checking arguments, building the spec and
asking every candidate implementation its reasons; all of that depends only on the arguments' *signature*
(op, each array's type, shape, dtype and device, every other argument's type and value), never on array
values. The public functions look the signature up here first and, on a miss, do all of it and remember
the result once the call has returned (a call that raises is never remembered, so a bad call raises the
same error every time).

What runs on every call, memo or not (it depends on values or on settings read per call): the data rule of
:func:`fastconv._dispatch.select_from` (a non-finite weight meeting the padding), the backend's ``choose``
among several supported candidates (its measured choices, ``FASTCONV_AUTOTUNE``), max_unpool's index range,
the pool gradients' index checks, padding by ``padding_mode``.

The key (:func:`key`): the op and its dimension count; per array its exact type, shape, dtype (and CuPy
device); per other argument its exact type and value, recursively through lists and tuples (so ``True``
and ``1``, ``(1, 1)`` and ``[1, 1]`` are different keys); Numba's thread count of the calling thread
(implementations' workspace caps depend on it). An argument of any other type (an object with
``__index__``, a float subclass, ...) means no memo for that call. What is not in the key, by design: the
backends' availability and module-level constants (asked on the first call of a signature; :func:`clear`
forgets everything).

Bounded (an LRU of :data:`SIZE` entries) and safe to use from several threads at once (one lock, held for
a dictionary operation). ``FASTCONV_MEMO=0`` turns it off (every call does all the work), for debugging.
"""
from __future__ import annotations

import collections
import numbers
import sys
import threading

import numpy

from . import _config

_ndarray = numpy.ndarray

#: the most signatures remembered (least recently used forgotten first)
SIZE = 512

_entries: "collections.OrderedDict" = collections.OrderedDict()
_lock = threading.Lock()

#: hits and misses since the last :func:`clear` (for tests and profiling; counted under the lock)
stats = {"hits": 0, "misses": 0}


class _Unkeyable(Exception):
    """An argument the memo does not key on: that call runs without it."""


#: argument types keyed by value (their equality is their value's; bool apart from int through the type)
_VALUE_TYPES = frozenset((int, bool, float, str, type(None)))

#: argument types whose values key as they are once their types are in the key (not float: -0.0 == 0.0;
#: not tuple: (True, 1) == (1, 1))
_FAST = frozenset((int, bool, str, type(None)))


def _arg(v):
    t = type(v)
    if t in _VALUE_TYPES:
        return (t, v.hex()) if t is float else (t, v)    # -0.0 and 0.0 apart
    if t is tuple or t is list:
        return (t,) + tuple(map(_arg, v))
    if t.__module__ == "numpy" and t.__hash__ is not None and isinstance(v, numbers.Number):
        return (t, v)          # numpy.int64(2), numpy.bool_(True): by value, with their type
    if isinstance(v, tuple) and t.__eq__ is tuple.__eq__ and t.__hash__ is tuple.__hash__:
        return (t,) + tuple(map(_arg, v))     # torch.Size, a named tuple: a tuple that compares as one
    raise _Unkeyable


def _array(a):
    t = type(a)
    if t is _ndarray:
        return (a.shape, a.dtype)
    if a is None:
        return None
    mod = t.__module__
    if mod == "numpy" or mod.startswith("numpy."):
        return (t, a.shape, a.dtype)
    if mod.startswith("cupy"):
        return (t, a.shape, a.dtype, a.device.id)
    raise _Unkeyable        # not an array: the op's own check says so, every call


def enabled() -> bool:
    """FASTCONV_MEMO (default on), read on every call."""
    return _config.memo_enabled()


def _threads():
    """Numba's thread count of the calling thread once the numba backend has started its pool, else None."""
    mod = sys.modules.get("fastconv._backends.numba_cpu")
    return mod.started_threads() if mod is not None else None


def key(op, arrays, args):
    """The memo key of one call: ``op`` (a hashable naming the function, e.g. ``("conv", 2)``), its arrays
    (None for an absent one) and its other arguments in a fixed order; None when the memo is off or an
    argument is not keyable (the call then runs without the memo)."""
    if not enabled():
        return None
    try:
        kinds = tuple(map(type, args))
        if _FAST.issuperset(kinds):       # ints, bools, strings, None: their types and values as they are
            return (op, tuple(map(_array, arrays)), kinds, args, _threads())
        return (op, tuple(map(_array, arrays)), tuple(map(_arg, args)), _threads())
    except _Unkeyable:
        return None


def get(k):
    """The remembered problem for key ``k`` (None for a miss or a None key)."""
    if k is None:
        return None
    with _lock:
        hit = _entries.get(k)
        if hit is None:
            stats["misses"] += 1
        else:
            _entries.move_to_end(k)
            stats["hits"] += 1
    return hit


def put(k, value) -> None:
    """Remember ``value`` under ``k`` (nothing for a None key); the least recently used beyond SIZE go."""
    if k is None:
        return
    with _lock:
        _entries[k] = value
        _entries.move_to_end(k)
        while len(_entries) > SIZE:
            _entries.popitem(last=False)


def clear() -> None:
    """Forget every signature (and reset :data:`stats`)."""
    with _lock:
        _entries.clear()
        stats["hits"] = stats["misses"] = 0


def size() -> int:
    return len(_entries)
