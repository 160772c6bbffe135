"""The gradient test matrix: every available backend x every implementation of every gradient op (and of
conv_transpose and max_unpool) against the oracle, through dispatch's own candidate list, so an implementation
joins by being registered. Each implementation runs twice and must give the same bits (no floating-point
atomics anywhere). Unavailable backends are reported as skipped with their reason, and a backend that lacks an
op fails :func:`test_every_backend_implements_every_gradient_op` rather than being skipped.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv._spec import (conv_input_spec, conv_transpose_spec, conv_weight_spec, pool_grad_spec,
                            unpool_spec)
from fastconv.testing import assert_grad_close, to_numpy

from .backend_params import to_backend

GRAD_OPS = ("conv_input", "conv_weight", "max_pool_backward", "avg_pool_backward", "adaptive_max_pool_backward",
            "adaptive_avg_pool_backward", "max_unpool")


def _backends():
    params = []
    for name, info in fc.backends().items():
        if name == "numpy":
            continue
        marks = () if info["available"] else pytest.mark.skip(reason=f"{name}: {info['reason']}")
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("op", GRAD_OPS)
def test_every_backend_implements_every_gradient_op(backend, op):
    impls = [i for i in _dispatch.backend_module(backend).implementations() if i.op == op]
    assert impls, f"backend {backend!r} has no {op} implementation"


# ---------------------------------------------------------------------------------------------------------
# Running every candidate on one problem
# ---------------------------------------------------------------------------------------------------------
def _check_all_candidates(spec, backend, arrays, public_call=None):
    """Every supported candidate of ``spec.op`` on ``backend``: its result (arrays in the backend layout) vs the
    oracle, twice, bitwise equal; then the public call (if given) vs the oracle. Returns how many ran."""
    prepared = []
    for name, a, shape in zip(spec.ARRAYS, arrays, spec.operands()):
        if a is None:
            prepared.append(None)
            continue
        a = np.ascontiguousarray(np.asarray(a).reshape(shape))
        prepared.append(a)
    ran = 0
    # what dispatch may run: a fallback (a v1 kernel, checked in its family's tests) only where nothing else can
    for impl in _dispatch.without_fallbacks([i for i in _dispatch.candidates(spec, backend)
                                             if not _dispatch.reasons(i, spec)]):
        run_spec = impl.compute_spec(spec)
        ins = tuple(None if a is None else (a if spec.is_index_operand(n) else a.astype(run_spec.dtype))
                    for n, a in zip(spec.ARRAYS, prepared))
        ins = to_backend(backend, *ins)
        first = to_numpy(impl.run(run_spec, *ins)).astype(spec.dtype)
        again = to_numpy(impl.run(run_spec, *ins)).astype(spec.dtype)
        assert np.array_equal(first, again, equal_nan=True), f"{impl.name}: two runs differ"
        try:
            assert_grad_close(first.reshape(spec.output_shape), spec, *prepared)
        except AssertionError as e:
            raise AssertionError(f"{impl.name}: {e}") from None
        ran += 1
    if public_call is not None:
        out = public_call(*to_backend(backend, *arrays))
        assert_grad_close(out, spec, *prepared)
    return ran


def _rng_arrays(seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.standard_normal(s).astype(dtype) for s in shapes]


# name: (x shape, w shape, kwargs)
CONV_CASES = {
    "3x3-pad1": ((2, 3, 9, 10), (4, 3, 3, 3), dict(padding=1)),
    "stride2-asym-pad": ((2, 3, 11, 9), (4, 3, 3, 3), dict(stride=2, padding=((1, 0), (2, 1)))),
    "stride3x1-dil2": ((1, 2, 13, 10), (3, 2, 3, 2), dict(stride=(3, 1), padding=(1, 0), dilation=(2, 1))),
    "same-dilated-even": ((1, 2, 9, 8), (3, 2, 4, 2), dict(padding="same", dilation=(2, 3))),
    "groups2": ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=2, padding=1)),
    "depthwise-s2": ((2, 6, 9, 9), (6, 1, 3, 3), dict(groups=6, padding=1, stride=2)),
    "depthwise-mult2": ((1, 3, 8, 8), (6, 1, 3, 3), dict(groups=3, padding=1)),
    "1x1": ((2, 8, 5, 5), (7, 8, 1, 1), dict()),
    "5x5-stride2": ((1, 3, 13, 13), (4, 3, 5, 5), dict(stride=2, padding=2)),
    "kernel-equals-padded-input": ((1, 2, 3, 4), (3, 2, 5, 6), dict(padding=1)),
    "many-channels": ((1, 33, 6, 6), (20, 33, 3, 3), dict(padding=1)),
    "1d": ((2, 3, 20), (4, 3, 5), dict(padding=2, stride=2)),
    "unbatched": ((3, 7, 7), (2, 3, 3, 3), dict(padding=1)),
}
DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_gradients_every_implementation(backend, dtype, case):
    xs, ws, kw = CONV_CASES[case]
    nd = len(ws) - 2
    x, w = _rng_arrays(hash(case) % 1000, dtype, xs, ws)
    y = fc.conv2d(x, w, **kw, backend="numpy") if nd == 2 else fc.conv1d(x, w, **kw, backend="numpy")
    (g,) = _rng_arrays(7, dtype, y.shape)
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))
    gi = fc.grad.conv2d_input if nd == 2 else fc.grad.conv1d_input
    gw = fc.grad.conv2d_weight if nd == 2 else fc.grad.conv1d_weight
    spec = conv_input_spec(x.shape, w, g, *args, spatial_dims=nd)
    ran = _check_all_candidates(spec, backend, (g, w, None),
                                lambda g_, w_, b_: gi(x.shape, w_, g_, *args, backend=backend))
    spec = conv_weight_spec(x, w.shape, g, *args, spatial_dims=nd)
    ran += _check_all_candidates(spec, backend, (x, g),
                                 lambda x_, g_: gw(x_, w.shape, g_, *args, backend=backend))
    assert ran >= 2


# name: (input shape, weight shape (C_in, C_out/g, ...), kwargs)
TRANSPOSE_CASES = {
    "stride2-outpad1-bias": ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "dil3-outpad2": ((1, 2, 4, 4), (2, 2, 2, 3), dict(dilation=3, output_padding=2)),
    "groups2-asym": ((1, 4, 5, 5), (4, 2, 3, 2), dict(groups=2, stride=(2, 1), padding=((1, 0), (0, 1)))),
    "1d": ((2, 3, 7), (3, 2, 4), dict(stride=3, padding=1, output_padding=2)),
}


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
def test_conv_transpose_every_implementation(backend, case):
    xs, ws, kw = TRANSPOSE_CASES[case]
    nd = len(ws) - 2
    x, w, b = _rng_arrays(3, "float32", xs, ws, (ws[1] * kw.get("groups", 1),))
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("output_padding", 0), kw.get("groups", 1),
            kw.get("dilation", 1))
    spec = conv_transpose_spec(x, w, b, *args, spatial_dims=nd)
    ct = fc.conv_transpose2d if nd == 2 else fc.conv_transpose1d
    assert _check_all_candidates(spec, backend, (x, w, b), lambda x_, w_, b_: ct(x_, w_, b_, *args, backend=backend))


def test_nonfinite_values_meet_no_padded_zero_in_gradients():
    """On every available backend: an Inf weight (conv_input) or an Inf in dy (conv_weight) of a padded problem
    gives what the oracle gives (Inf where the terms reach, never a NaN from Inf * a padded zero)."""
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    w[0, 1, 0, 0] = np.inf
    g = np.ones((1, 3, 6, 6), np.float32)
    gi = g.copy()
    gi[0, 2, 0, 0] = np.inf
    for backend, info in fc.backends().items():
        if not info["available"]:
            continue
        ins = to_backend(backend, x, w, g, gi)
        for algo in sorted({i.algo for i in _dispatch.backend_module(backend).implementations()
                            if i.op == "conv_input"}) + ["auto"]:
            out = fc.grad.conv2d_input(x.shape, ins[1], ins[2], padding=1, backend=backend, algo=algo)
            assert_grad_close(out, conv_input_spec(x.shape, w, g, 1, 1), g, w, None)
        spec = conv_weight_spec(x, w.shape, gi, 1, 1)
        out = fc.grad.conv2d_weight(ins[0], w.shape, ins[3], padding=1, backend=backend)
        assert_grad_close(out, spec, x, gi)
        assert not np.isnan(to_numpy(out)).any(), backend


# ---------------------------------------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------------------------------------
# name: (input shape, kind, kwargs)
POOL_CASES = {
    "max-3s2p1": ((2, 3, 9, 10), "max", dict(kernel_size=3, stride=2, padding=1)),
    "max-overlap-ceil-dil": ((1, 2, 11, 9), "max", dict(kernel_size=(3, 2), stride=1, padding=(1, 0), dilation=(2, 1), ceil_mode=True)),
    "max-2x2": ((2, 4, 8, 8), "max", dict(kernel_size=2)),
    "max-1d": ((2, 3, 17), "max", dict(kernel_size=4, stride=3, padding=2, dilation=2, ceil_mode=True)),
    "avg-3s2p1": ((2, 3, 9, 10), "avg", dict(kernel_size=3, stride=2, padding=1)),
    "avg-ceil-nopad-count": ((1, 2, 10, 7), "avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    "avg-override": ((1, 2, 7, 7), "avg", dict(kernel_size=(2, 3), stride=1, divisor_override=5)),
    "avg-1d": ((2, 3, 17), "avg", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    "adaptive_max-7to3": ((2, 3, 7, 9), "adaptive_max", dict(output_size=(3, 4))),
    "adaptive_max-upsample": ((1, 2, 3, 2), "adaptive_max", dict(output_size=(5, 7))),
    "adaptive_avg-7to3": ((2, 3, 7, 9), "adaptive_avg", dict(output_size=(3, 4))),
    "adaptive_avg-global": ((2, 5, 6, 6), "adaptive_avg", dict(output_size=1)),
    "adaptive_avg-upsample-1d": ((1, 2, 3), "adaptive_avg", dict(output_size=5)),
}


def _pool_input(shape, seed, ties):
    rng = np.random.default_rng(seed)
    return (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float64)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pool_gradients_every_implementation(backend, dtype, case):
    shape, kind, kw = POOL_CASES[case]
    nd = len(shape) - 2
    x = _pool_input(shape, 5, ties=kind.endswith("max")).astype(dtype)
    fwd = getattr(fc, f"{kind}_pool{nd}d")
    bwd = getattr(fc.grad, f"{kind}_pool{nd}d")
    extra = dict(return_indices=True) if kind.endswith("max") else {}
    res = fwd(x, **kw, **extra, backend="numpy")
    y, idx = res if extra else (res, None)
    (g,) = _rng_arrays(9, dtype, y.shape)
    spec_kw = dict(kw)
    if kind.startswith("adaptive"):
        spec_kw.pop("output_size")
    spec = pool_grad_spec(kind, g, x, spatial_dims=nd, **spec_kw)
    arrays = (g, idx) if spec.is_max else (g,)
    bkw = {k: v for k, v in kw.items() if k != "output_size"}
    if spec.is_max:
        call = lambda g_, i_: bwd(g_, to_backend(backend, x)[0], **bkw, indices=i_, backend=backend)  # noqa: E731
    else:
        call = lambda g_: bwd(g_, to_backend(backend, x)[0], **bkw, backend=backend)  # noqa: E731
    assert _check_all_candidates(spec, backend, arrays, call)
    if spec.is_max:     # without indices= the backend's own forward supplies them: the same gradient
        out = bwd(*to_backend(backend, g, x), **bkw, backend=backend)
        assert_grad_close(out, spec, g, idx)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", ["overlapping-repeats", "output-size", "1d"])
def test_max_unpool_every_implementation(backend, case):
    shape, kw, out_size = {"overlapping-repeats": ((2, 3, 8, 9), dict(kernel_size=3, stride=1, padding=1), None),
                           "output-size": ((1, 2, 9, 11), dict(kernel_size=2, stride=2), (9, 11)),
                           "1d": ((2, 2, 13), dict(kernel_size=3, stride=2, padding=1), (13,))}[case]
    nd = len(shape) - 2
    x = _pool_input(shape, 11, ties=True).astype(np.float32)
    y, idx = getattr(fc, f"max_pool{nd}d")(x, **kw, return_indices=True, backend="numpy")
    y = y + np.arange(y.size, dtype=np.float32).reshape(y.shape)     # repeats carry different values
    spec = unpool_spec(y, idx, spatial_dims=nd, output_size=out_size, **kw)
    unpool = getattr(fc, f"max_unpool{nd}d")
    assert _check_all_candidates(spec, backend, (y, idx),
                                 lambda y_, i_: unpool(y_, i_, **kw, output_size=out_size, backend=backend))
