"""Parametrisation shared by the all-backend test files: every registered backend x algorithm, and moving
test arrays to the backend's array type. Unavailable backends stay in the list as one skipped case that
says why, so a missing GPU or Numba is visible in the report rather than silently absent."""
from __future__ import annotations

import pytest

import fastconv as fc
from fastconv import _dispatch


def backend_algos(op: str = "conv", *, oracle: bool = True, auto: bool = True):
    """``pytest.param(backend, algo)`` for every backend and every algorithm it offers for ``op``
    (plus "auto" when ``auto``); the oracle backend "numpy" only when ``oracle``."""
    params = []
    for name, info in fc.backends().items():
        if name == "numpy" and not oracle:
            continue
        if not info["available"]:
            params.append(pytest.param(name, "auto", id=f"{name}-unavailable",
                                       marks=pytest.mark.skip(reason=f"{name}: {info['reason']}")))
            continue
        algos = sorted({i.algo for i in _dispatch.backend_module(name).implementations() if i.op == op})
        params += [pytest.param(name, a, id=f"{name}-{a}") for a in algos + (["auto"] if auto else [])]
    return params


def to_backend(backend: str, *arrays):
    """The arrays as the backend takes them (CuPy copies for CuPy backends; None stays None)."""
    if _dispatch.BACKENDS[backend].array_kind == "cupy":
        import cupy
        return tuple(None if a is None else cupy.asarray(a) for a in arrays)
    return arrays


def refused_for_data(spec, backend: str, algo: str, weight) -> bool:
    """Whether ``algo`` takes ``spec``'s shapes but dispatch refuses it for this weight: a padded problem
    whose weight holds Inf/NaN, and only implementations that multiply padded taps as zeros (im2col)."""
    if algo == "auto" or spec.op != "conv":
        return False
    try:
        _dispatch.select(spec, backend, algo)
    except ValueError:
        return False            # refused on shapes alone: the caller's own skip applies
    try:
        _dispatch.select(spec, backend, algo, weight=weight)
    except ValueError as e:
        assert "a weight is Inf or NaN and the problem is padded" in str(e), e
        return True
    return False


def conv_or_refused(backend: str, algo: str, spec, weight, call):
    """``call(algo)``, except where :func:`refused_for_data`: then the public call must raise the refusal
    (a ValueError naming the rule, before any kernel runs) and ``call("auto")`` gives the result dispatch
    runs for it, which the caller checks as usual."""
    if refused_for_data(spec, backend, algo, to_numpy_weight(weight)):
        with pytest.raises(ValueError, match="a weight is Inf or NaN and the problem is padded"):
            call(algo)
        return call("auto")
    return call(algo)


def to_numpy_weight(w):
    from fastconv.testing import to_numpy
    return to_numpy(w)
