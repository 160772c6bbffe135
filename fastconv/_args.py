"""Argument normalisation and array facts shared by the spec builders and the exported shape helpers.

Every check raises ``TypeError``/``ValueError`` naming the argument. Nothing here imports CuPy: an array's
kind is read from its type's module.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

#: storage dtypes accepted by every public function (float16 is computed in float32 by backends that
#: have no native half path, and always returned as float16).
DTYPES = ("float16", "float32", "float64")


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def _as_tuple(value, n: int, name: str) -> Tuple[int, ...]:
    """An int (repeated ``n`` times) or a sequence of exactly ``n`` ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
        return tuple(_as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    return (_as_int(value, name),) * n


def _positive(values: Tuple[int, ...], name: str) -> Tuple[int, ...]:
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {values if len(values) > 1 else values[0]}")
    return values


def _non_negative(values, name: str):
    flat = [v for pair in values for v in (pair if isinstance(pair, tuple) else (pair,))]
    if any(v < 0 for v in flat):
        raise ValueError(f"{name} must be non-negative, got {values!r}")
    return values


def _pad_pairs(padding, n: int, name: str = "padding") -> Tuple[Tuple[int, int], ...]:
    """int | n ints | n (lo, hi) pairs  ->  n (lo, hi) pairs.  Strings are handled by the caller."""
    if isinstance(padding, (list, tuple)):
        if len(padding) != n:
            hint = " or ((left, right),)" if n == 1 else ""
            raise ValueError(f"{name} must be an int, {n} ints{hint} or {n} (before, after) pairs, got {padding!r}")
        pairs = []
        for i, p in enumerate(padding):
            if isinstance(p, (list, tuple)):
                if len(p) != 2:
                    raise ValueError(f"{name}[{i}] must be an int or a (before, after) pair, got {p!r}")
                pairs.append((_as_int(p[0], f"{name}[{i}][0]"), _as_int(p[1], f"{name}[{i}][1]")))
            else:
                v = _as_int(p, f"{name}[{i}]")
                pairs.append((v, v))
        return _non_negative(tuple(pairs), name)
    v = _as_int(padding, name)
    return _non_negative(((v, v),) * n, name)


def array_kind(a) -> str:
    """'numpy' or 'cupy' for a supported array; TypeError for anything else."""
    mod = type(a).__module__ or ""
    if type(a).__name__ == "ndarray" and (mod == "numpy" or mod.startswith("cupy")):
        return "numpy" if mod == "numpy" else "cupy"
    raise TypeError("expected a numpy.ndarray or cupy.ndarray")


#: native-byte-order float dtypes by their one-letter code (a C attribute: much cheaper than str(dtype))
_FLOAT_BY_CHAR = {"e": "float16", "f": "float32", "d": "float64"}


def dtype_name(a) -> Optional[str]:
    """'float16' / 'float32' / 'float64' for a supported array dtype, else None (integers, complex,
    non-native byte order such as '>f4')."""
    dt = a.dtype
    return _FLOAT_BY_CHAR.get(dt.char) if dt.isnative else None


def _check_array(a, name: str) -> str:
    try:
        kind = array_kind(a)
    except TypeError:
        raise TypeError(f"{name} must be a numpy.ndarray or cupy.ndarray, got {type(a).__module__}."
                        f"{type(a).__name__}") from None
    if dtype_name(a) is None:
        raise TypeError(f"{name} has dtype {a.dtype}; supported dtypes are {', '.join(DTYPES)} "
                        f"in native byte order")
    return kind


def _same_place(arrays: Sequence[Tuple[str, object]]) -> str:
    """All arrays of one kind and, for CuPy, on one device. Returns the kind."""
    kinds = {name: _check_array(a, name) for name, a in arrays}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n} is {k}" for n, k in kinds.items())
        raise TypeError(f"arguments mix NumPy and CuPy arrays ({desc}); move them to one place first")
    kind = next(iter(kinds.values()))
    if kind == "cupy":
        devices = {name: a.device.id for name, a in arrays}
        if len(set(devices.values())) > 1:
            desc = ", ".join(f"{n} on device {d}" for n, d in devices.items())
            raise ValueError(f"arrays live on different GPUs ({desc})")
    return kind
