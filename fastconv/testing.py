"""Comparing a backend's result with the oracle's: tolerances that scale with the reduction length.

A sum of n products computed in floating point with unit roundoff u is off by at most about
``n * u * sum(|x_i * w_i|)`` (the classic bound for recursive summation; blocked and pairwise sums do
better). :func:`conv_tolerance` builds exactly that bound from the oracle's ``conv64`` run on absolute
values, so a test neither flakes on long reductions nor hides a wrong tap on short ones.
Used by the test suite and by ``fastconv bench`` to verify every case before timing it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

#: unit roundoff of the accumulation type each storage dtype is computed in
_ACC_EPS = {"float16": np.finfo(np.float32).eps, "float32": np.finfo(np.float32).eps,
            "float64": np.finfo(np.float64).eps}


def to_numpy(a):
    """A NumPy copy of a NumPy or CuPy array."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def conv_tolerance(spec, x, w, b=None, slack: float = 2.0):
    """Elementwise absolute tolerance for a conv result: ``slack * n * eps_acc * conv(|x|,|w|,|b|)`` with
    n = Cg*T*R*S + 1, plus one rounding of the stored result (half an ulp of the output dtype)."""
    from ._backends.numpy_oracle import conv64

    x, w = np.abs(to_numpy(x)), np.abs(to_numpy(w))
    b = None if b is None else np.abs(to_numpy(b))
    mag = conv64(spec, x, w, b)
    n = spec.gemm_k + 1
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * _ACC_EPS[spec.dtype] * mag + store_eps * mag + np.finfo(spec.dtype).tiny


def assert_conv_close(out, ref, spec, x, w, b=None, slack: float = 2.0):
    """Assert a conv result matches the oracle's within :func:`conv_tolerance` (NaN where the oracle has NaN)."""
    out, ref = to_numpy(out).astype(np.float64), to_numpy(ref).astype(np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
    tol = conv_tolerance(spec, x, w, b, slack).reshape(ref.shape)
    assert_within(out, ref, tol, spec)


def pool_tolerance(spec, x):
    """Max pools are exact. Averages: a sum of up to T*R*S terms and one division, in the compute type."""
    if spec.is_max:
        return 0.0
    xa = np.abs(to_numpy(x)).astype(np.float64)
    xa = xa[np.isfinite(xa)]          # non-finite inputs give non-finite outputs, compared exactly
    adaptive = 1
    for size_in, size_out in zip(spec.in_size, spec.out_size):
        adaptive *= int(np.ceil(size_in / size_out) + 1)
    taps = max(spec.window_elems, adaptive)
    scale = float(xa.max()) if xa.size else 0.0
    return (taps + 2) * _ACC_EPS[spec.dtype] * scale + float(np.finfo(spec.dtype).eps) * scale


def assert_pool_close(out, ref, spec, x):
    """Assert a pool result (value, or (value, indices)) matches the oracle's; indices must be identical."""
    if spec.return_indices:
        (out, idx), (ref, ref_idx) = out, ref
        idx, ref_idx = to_numpy(idx), to_numpy(ref_idx)
        assert idx.dtype == np.int64, f"indices dtype {idx.dtype}, expected int64"
        assert idx.shape == ref_idx.shape, f"indices shape {idx.shape} != oracle {ref_idx.shape}"
        bad = np.argwhere(idx != ref_idx)
        assert bad.size == 0, (f"{len(bad)} indices differ from the oracle, first at {tuple(bad[0])}: "
                               f"{idx[tuple(bad[0])]} != {ref_idx[tuple(bad[0])]}")
    out, ref = to_numpy(out).astype(np.float64), to_numpy(ref).astype(np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
    assert_within(out, ref, pool_tolerance(spec, x), spec)


def assert_within(out, ref, tol, spec):
    """Assert ``|out - ref| <= tol`` elementwise where ``ref`` is finite; NaN and infinities must match exactly.
    ``out``/``ref`` are float64 NumPy arrays; ``tol`` broadcasts against them."""
    nan_ref, nan_out = np.isnan(ref), np.isnan(out)
    assert np.array_equal(nan_ref, nan_out), (
        f"NaN pattern differs from the oracle at {np.argwhere(nan_ref != nan_out)[:3].tolist()}")
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]), "infinities differ from the oracle"
    finite = ~nan_ref & ~inf
    with np.errstate(invalid="ignore"):     # inf - inf where both are inf: excluded by `finite`
        err = np.abs(out - ref)
    tol = np.broadcast_to(tol, ref.shape)
    bad = finite & ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{int(bad.sum())} of {ref.size} elements outside tolerance ({spec.dtype}); first "
                             f"at {i}: got {out[i]!r}, oracle {ref[i]!r}, |err| {err[i]:.3g} > tol {tol[i]:.3g}")


# ---------------------------------------------------------------------------------------------------
# Gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
def _windows_per_position(spec) -> int:
    """At most how many pool windows cover one input position."""
    n = 1
    for size_in, size_out, k, stride, dil in zip(spec.in_size, spec.out_size, spec.window, spec.strides,
                                                 spec.dilations):
        n *= (-(-size_out // size_in) + 1) if spec.is_adaptive else (-(-k * dil // stride)) + 1
    return n


def grad_reference(spec, *arrays):
    """The oracle's float64 result of a gradient op (or max_unpool) for ``spec`` (its ``ARRAYS``)."""
    from ._backends import numpy_oracle as o

    arrays = tuple(None if a is None else to_numpy(a) for a in arrays)
    if spec.op == "conv_input":
        return o.conv_input64(spec, *arrays)
    if spec.op == "conv_weight":
        return o.conv_weight64(spec, *arrays)
    fn = getattr(o, spec.op)
    wide = dataclasses.replace(spec, dtype="float64")
    return fn(wide, *(a if spec.is_index_operand(n) or a is None else a.astype(np.float64)
                      for n, a in zip(spec.ARRAYS, arrays)))


def grad_tolerance(spec, *arrays, slack: float = 2.0):
    """Elementwise absolute tolerance for a gradient op's result, built like :func:`conv_tolerance`: the
    oracle run on absolute values (the magnitude of the sum), times the reduction length (conv_input:
    K/groups*R*S; conv_weight: N*P*Q; pool gradients: the windows covering one position) and the
    accumulation type's unit roundoff, plus one rounding of the stored result. max_unpool copies: 0."""
    if spec.op == "max_unpool":
        return 0.0
    absed = tuple(None if a is None else (to_numpy(a) if spec.is_index_operand(n) else np.abs(to_numpy(a)))
                  for n, a in zip(spec.ARRAYS, arrays))
    mag = np.abs(grad_reference(spec, *absed))      # a negative divisor_override makes it negative
    if spec.op == "conv_input":
        n = spec.K_per_group * spec.window_elems + 1
    elif spec.op == "conv_weight":
        n = spec.N * spec.out_elems + 1
    else:
        n = _windows_per_position(spec) + 2
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * _ACC_EPS[spec.dtype] * mag + store_eps * mag + np.finfo(spec.dtype).tiny


def assert_grad_close(out, spec, *arrays, slack: float = 2.0):
    """Assert a gradient op's (or max_unpool's) result matches the oracle's within :func:`grad_tolerance`;
    ``arrays`` are the op's inputs (``spec.ARRAYS``), in the backend layout or the user's."""
    ref = grad_reference(spec, *(None if a is None else to_numpy(a).reshape(s)
                                 for a, s in zip(arrays, spec.operands())))
    out = to_numpy(out).astype(np.float64)
    assert out.shape == tuple(spec.output_shape), f"shape {out.shape} != expected {tuple(spec.output_shape)}"
    ref = ref.reshape(out.shape)
    tol = grad_tolerance(spec, *(None if a is None else to_numpy(a).reshape(s)
                                 for a, s in zip(arrays, spec.operands())), slack=slack)
    assert_within(out, ref, np.reshape(tol, out.shape) if np.ndim(tol) else tol, spec)
