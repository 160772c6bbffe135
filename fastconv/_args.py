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


#: the range of every integer argument: what a 64-bit index holds (torch's rule too: its arguments are int64)
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _as_int(value, name: str) -> int:
    """An integer argument (Python or NumPy integers; bools refused) within the int64 range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or type(value).__name__ == "bool_":
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must fit in 64 bits ({INT64_MIN} to {INT64_MAX}), got {v}")
    return v


def _as_bool(value, name: str) -> bool:
    """A boolean argument: Python or NumPy booleans; anything else (ints, arrays, None) is a TypeError naming it."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def _fits_int64(values, what: str) -> None:
    """Derived extents (padded sizes, output sizes, their products) must fit the 64-bit indices every backend
    computes with; ``what`` names the arguments that made them."""
    for v in values:
        if v > INT64_MAX:
            raise ValueError(f"{what} too large: it makes an extent of {v}, beyond the 64-bit range of indices "
                             f"({INT64_MAX})")


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


#: an array type -> ("numpy" or "cupy", its ndarray base class), or None for types fastconv does not take;
#: filled on first sight of each type (a dict lookup per call: the tiny-call path stays cheap)
_KIND_BY_TYPE: dict = {}


def _kind_of_type(t):
    hit = _KIND_BY_TYPE.get(t, False)
    if hit is not False:
        return hit
    hit = None
    for c in t.__mro__:           # ndarray itself or a subclass of it (numpy.memmap, numpy.matrix, ...)
        mod = c.__module__ or ""
        if c.__name__ == "MaskedArray" and mod.startswith("numpy.ma"):
            hit = "masked"
            break
        if c.__name__ == "ndarray" and (mod == "numpy" or mod.startswith("cupy")):
            hit = ("numpy" if mod == "numpy" else "cupy", c)
            break
    _KIND_BY_TYPE[t] = hit
    return hit


def array_kind(a) -> str:
    """'numpy' or 'cupy' for a supported array (ndarray subclasses included); TypeError for anything else."""
    hit = _kind_of_type(type(a))
    if hit is None or hit == "masked":
        raise TypeError("expected a numpy.ndarray or cupy.ndarray")
    return hit[0]


def plain(a):
    """``a`` as its plain ndarray base class: a view, never a copy (a numpy.memmap or numpy.matrix becomes the
    numpy.ndarray over the same memory), so that results are plain arrays and subclass methods never run."""
    base = _kind_of_type(type(a))[1]
    return a if type(a) is base else a.view(base)


def _not_an_array_message(a, name: str) -> str:
    t = type(a)
    hit = _kind_of_type(t)
    if hit == "masked":
        return (f"{name} is a numpy.ma.MaskedArray: fastconv would ignore its mask; pass {name}.filled(value) "
                f"(masked entries replaced by value) or {name}.data (the mask dropped) instead")
    what = f"{t.__module__}.{t.__name__}"
    hint = ""
    if hasattr(a, "__dlpack__"):
        # the ops take DLPack producers (fastconv._interop); what still gets here is a function that reads an
        # array's shape and dtype itself (the spec builders), or a producer passed where no op converts it
        hint = ("; fastconv's ops (fastconv.conv2d, fastconv.grad.*, ...) take it as it is, through DLPack, but "
                "here convert it with numpy.from_dlpack(...) (CPU memory) or cupy.from_dlpack(...) (GPU memory)")
        if t.__module__.startswith("torch"):
            hint += "; for autograd use fastconv.torch, whose functions take tensors"
    elif hasattr(a, "__array__") or hasattr(a, "__array_interface__"):
        hint = "; convert with numpy.asarray(...) (or cupy.asarray(...) for GPU data) first"
    elif isinstance(a, (list, tuple)) or isinstance(a, numbers.Number):
        hint = "; convert with numpy.asarray(...) first"
    return f"{name} must be a numpy.ndarray or cupy.ndarray, got {what}{hint}"


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
        raise TypeError(_not_an_array_message(a, name)) from None
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
