"""The 3-D and per-side-padding test matrix: every available backend x every implementation that takes the
problem, for 3-D convolutions (forward, both gradients, conv_transpose3d), 3-D pools and their gradients,
max_unpool3d and per-side padded 2-D pools, against the oracle, through dispatch's own candidate list (an
implementation joins by being registered). Each implementation runs twice and must give the same bits.
A backend that lacks a 3-D op fails :func:`test_every_backend_takes_every_op_in_3d` rather than being skipped.
Then the composite features (padding_mode, lp pools) through the public functions on every backend.
"""
import math

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv._backends import numpy_oracle as oracle
from fastconv._spec import (conv_input_spec, conv_spec, conv_transpose_spec, conv_weight_spec, pool_grad_spec,
                            pool_spec, unpool_spec)
from fastconv.testing import assert_conv_close, assert_grad_close, assert_pool_close, to_numpy

from .backend_params import to_backend

OPS = ("conv", "conv_input", "conv_weight", "max_pool", "avg_pool", "adaptive_max_pool", "adaptive_avg_pool",
       "max_pool_backward", "avg_pool_backward", "adaptive_max_pool_backward", "adaptive_avg_pool_backward",
       "max_unpool")


def _backends():
    params = []
    for name, info in fc.backends().items():
        if name == "numpy":
            continue
        marks = () if info["available"] else pytest.mark.skip(reason=f"{name}: {info['reason']}")
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("op", OPS)
def test_every_backend_takes_every_op_in_3d(backend, op):
    impls = [i for i in _dispatch.backend_module(backend).implementations() if i.op == op and 3 in i.spatial_dims]
    assert impls, f"backend {backend!r} has no 3-D {op} implementation"
    assert all("3d" in i.name or set(i.spatial_dims) >= {1, 2, 3} for i in impls), \
        f"3-D-only implementations say so in their names: {[i.name for i in impls]}"


def _reference(spec, arrays):
    wide = spec if spec.dtype == "float64" else __import__("dataclasses").replace(spec, dtype="float64")
    fn = getattr(oracle, spec.op)
    return fn(wide, *(a if a is None or spec.is_index_operand(n) else a.astype(np.float64)
                      for n, a in zip(spec.ARRAYS, arrays)))


def _compare(out, spec, arrays):
    if spec.op == "conv":
        ref = oracle.conv64(spec, *arrays).reshape(spec.output_shape)
        assert_conv_close(out, ref, spec, *arrays)
    elif spec.op.endswith("_pool"):
        ref = _reference(spec, arrays)
        ref = tuple(r.reshape(spec.output_shape) for r in ref) if spec.return_indices else ref.reshape(spec.output_shape)
        assert_pool_close(out, ref, spec, arrays[0])
    else:
        assert_grad_close(out, spec, *arrays)


def _check_all_candidates(spec, backend, arrays, min_ran=1):
    """Every supported candidate of ``spec.op`` on ``backend`` (arrays in the backend layout) vs the oracle,
    twice, bitwise equal. Returns the names that ran."""
    prepared = [None if a is None else np.ascontiguousarray(np.asarray(a).reshape(s))
                for a, s in zip(arrays, spec.operands())]
    ran = []
    weight = prepared[spec.ARRAYS.index(spec.PADDING_OPERAND)] if spec.PADDING_OPERAND else None
    # what dispatch may run: a fallback (a v1 kernel, checked in its family's tests) only where nothing else can
    for impl in _dispatch.without_fallbacks([i for i in _dispatch.candidates(spec, backend)
                                             if not _dispatch.reasons(i, spec)]):
        if impl.zero_fills_padding and weight is not None and _dispatch.nonfinite_weight_meets_padding(spec, weight):
            continue
        run_spec = impl.compute_spec(spec)
        ins = tuple(None if a is None else (a if spec.is_index_operand(n) else a.astype(run_spec.dtype))
                    for n, a in zip(spec.ARRAYS, prepared))
        ins = to_backend(backend, *ins)
        first, again = impl.run(run_spec, *ins), impl.run(run_spec, *ins)
        outs = first if isinstance(first, tuple) else (first,)
        agains = again if isinstance(again, tuple) else (again,)
        for a, b in zip(outs, agains):
            assert np.array_equal(to_numpy(a), to_numpy(b), equal_nan=True), f"{impl.name}: two runs differ"
        shaped = tuple(to_numpy(o).astype(spec.dtype if i == 0 else np.int64).reshape(spec.output_shape)
                       for i, o in enumerate(outs))
        try:
            _compare(shaped if isinstance(first, tuple) else shaped[0], spec, prepared)
        except AssertionError as e:
            raise AssertionError(f"{impl.name}: {e}") from None
        ran.append(impl.name)
    assert len(ran) >= min_ran, f"no implementation on {backend!r} ran this problem"
    return ran


def _arrays(seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.standard_normal(s).astype(dtype) for s in shapes]


# name: (x shape, w shape, kwargs)
CONV3D_CASES = {
    "3x3x3-pad1": ((2, 3, 5, 6, 4), (4, 3, 3, 3, 3), dict(padding=1)),
    "strided-dilated-asym-groups": ((1, 4, 7, 6, 8), (6, 2, 2, 3, 2),
                                    dict(stride=(2, 1, 3), padding=((1, 0), (2, 1), (0, 2)), dilation=(2, 1, 2),
                                         groups=2)),
    "depthwise": ((1, 4, 5, 5, 5), (8, 1, 3, 3, 3), dict(groups=4, padding=1, stride=2)),
    "1x1x1": ((2, 5, 3, 4, 3), (3, 5, 1, 1, 1), dict()),
    "same-even-kernel": ((1, 2, 4, 5, 6), (3, 2, 2, 4, 3), dict(padding="same")),
    "unbatched": ((3, 4, 4, 4), (2, 3, 2, 2, 2), dict(padding=(1, 0, 1))),
}


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CONV3D_CASES))
def test_conv3d_every_implementation(backend, dtype, case):
    xs, ws, kw = CONV3D_CASES[case]
    x, w, b = _arrays(len(case), dtype, xs, ws, (ws[0],))
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))
    _check_all_candidates(conv_spec(x, w, b, *args, spatial_dims=3), backend, (x, w, b))
    y = fc.conv3d(x, w, None, *args, backend="numpy")
    (g,) = _arrays(7, dtype, y.shape)
    _check_all_candidates(conv_input_spec(x.shape, w, g, *args, spatial_dims=3), backend, (g, w, None))
    _check_all_candidates(conv_weight_spec(x, w.shape, g, *args, spatial_dims=3), backend, (x, g))
    got = fc.conv3d(*to_backend(backend, x, w, b), *args, backend=backend)
    assert_conv_close(got, oracle.conv64(conv_spec(x, w, b, *args, spatial_dims=3), x, w, b).reshape(y.shape),
                      conv_spec(x, w, b, *args, spatial_dims=3), x, w, b)


@pytest.mark.parametrize("backend", _backends())
def test_conv3d_float16(backend):
    x, w = _arrays(3, "float16", (1, 3, 4, 5, 4), (4, 3, 3, 3, 3))
    spec = conv_spec(x, w, None, 1, 1, 1, 1, spatial_dims=3)
    _check_all_candidates(spec, backend, (x, w, None))
    got = fc.conv3d(*to_backend(backend, x, w), padding=1, backend=backend)
    assert to_numpy(got).dtype == np.float16


@pytest.mark.parametrize("backend", _backends())
def test_conv3d_infinite_weight_meets_padding(backend):
    """An Inf weight in a padded problem: exact implementations give the oracle's finite ring (padded taps
    contribute nothing); dispatch never runs one that multiplies padded zeros in."""
    x = np.ones((1, 2, 3, 3, 3), np.float32)
    w = np.ones((2, 2, 3, 3, 3), np.float32)
    w[0, 0, 0, 0, 0] = np.inf
    spec = conv_spec(x, w, None, 1, 1, 1, 1, spatial_dims=3)
    _check_all_candidates(spec, backend, (x, w, None))
    got = to_numpy(fc.conv3d(*to_backend(backend, x, w), padding=1, backend=backend))
    assert_conv_close(got, oracle.conv64(spec, x, w), spec, x, w)
    assert not np.isnan(got).any()


TRANSPOSE3D_CASES = {
    "stride2-outpad1": ((2, 4, 3, 4, 3), (4, 3, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "dil2-groups2-asym": ((1, 4, 3, 3, 4), (4, 2, 2, 3, 2),
                          dict(groups=2, dilation=(2, 1, 1), stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)))),
}


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", list(TRANSPOSE3D_CASES))
def test_conv_transpose3d_every_implementation(backend, case):
    xs, ws, kw = TRANSPOSE3D_CASES[case]
    x, w, b = _arrays(5, "float32", xs, ws, (ws[1] * kw.get("groups", 1),))
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("output_padding", 0), kw.get("groups", 1),
            kw.get("dilation", 1))
    spec = conv_transpose_spec(x, w, b, *args, spatial_dims=3)
    _check_all_candidates(spec, backend, (x, w, b))
    assert_grad_close(fc.conv_transpose3d(*to_backend(backend, x, w, b), *args, backend=backend), spec, x, w, b)


# name: (input shape, kind, kwargs)
POOL_CASES = {
    "max-3-s2-p1": ((2, 3, 6, 7, 5), "max", dict(kernel_size=3, stride=2, padding=1)),
    "max-dil2-ceil": ((1, 2, 7, 6, 8), "max", dict(kernel_size=(2, 3, 2), stride=(2, 1, 3), padding=(1, 1, 0),
                                                  dilation=(2, 1, 2), ceil_mode=True)),
    "max-per-side": ((1, 2, 5, 6, 5), "max", dict(kernel_size=3, stride=2, padding=((0, 2), (1, 0), (2, 1)))),
    "avg-ceil-cip": ((2, 2, 6, 5, 7), "avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "avg-no-cip-per-side": ((1, 3, 5, 6, 6), "avg", dict(kernel_size=(2, 3, 3), stride=2,
                                                         padding=((1, 0), (0, 2), (1, 1)), count_include_pad=False,
                                                         ceil_mode=True)),
    "avg-divisor": ((1, 2, 4, 4, 4), "avg", dict(kernel_size=2, stride=1, padding=1, divisor_override=-3)),
    "adaptive-max": ((2, 2, 5, 7, 6), "adaptive_max", dict(output_size_=(3, 2, 4))),
    "adaptive-avg": ((1, 3, 7, 5, 6), "adaptive_avg", dict(output_size_=(2, 3, 4))),
}


def _pool_input(shape, seed, special):
    x = np.random.default_rng(seed).standard_normal(shape).round(0).astype(np.float32)   # ties happen
    if special:
        flat = x.reshape(-1)
        flat[::7] = -np.inf
        flat[3::11] = np.nan
    return x


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pools3d_every_implementation(backend, case, special):
    xs, kind, kw = POOL_CASES[case]
    x = _pool_input(xs, len(case), special)
    for ri in ([False, True] if kind.endswith("max") else [False]):
        fkw = dict(kw, return_indices=ri) if kind.endswith("max") else kw
        _check_all_candidates(pool_spec(kind, x, spatial_dims=3, **fkw), backend, (x,))
    if special:
        return
    fwd = pool_spec(kind, x, spatial_dims=3, **kw)
    (g,) = _arrays(9, "float32", fwd.output_shape)
    gkw = {k: v for k, v in kw.items() if k != "output_size_"}
    spec = pool_grad_spec(kind, g, x, spatial_dims=3, **gkw)
    if spec.is_max:
        _, idx = oracle.max_pool(__import__("dataclasses").replace(fwd, return_indices=True), x) \
            if kind == "max" else oracle.adaptive_max_pool(__import__("dataclasses").replace(fwd, return_indices=True), x)
        from fastconv import _indices
        g2, idx2 = _indices.drop_empty_windows(spec, g, idx, np)
        _check_all_candidates(spec, backend, (np.asarray(g2), np.asarray(idx2)))
    else:
        _check_all_candidates(spec, backend, (g,))


PER_SIDE_2D_CASES = {
    "max-same-upper": ((2, 3, 7, 8), "max", dict(kernel_size=3, stride=2, padding=((0, 1), (1, 1)))),
    "max-dil-per-side": ((1, 2, 9, 7), "max", dict(kernel_size=(3, 2), stride=1, dilation=(2, 3),
                                                  padding=((4, 0), (0, 3)), ceil_mode=True)),
    "avg-cip-per-side": ((2, 2, 6, 7), "avg", dict(kernel_size=3, stride=2, padding=((2, 0), (0, 2)), ceil_mode=True)),
    "avg-no-cip-per-side": ((1, 2, 5, 6), "avg", dict(kernel_size=(3, 2), stride=(1, 2), padding=((0, 2), (1, 0)),
                                                      count_include_pad=False)),
    "1d-avg-per-side": ((2, 3, 9), "avg", dict(kernel_size=4, stride=3, padding=((3, 1),))),
}


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", list(PER_SIDE_2D_CASES))
def test_per_side_pools_2d_every_implementation(backend, case):
    xs, kind, kw = PER_SIDE_2D_CASES[case]
    nd = len(xs) - 2
    x = _pool_input(xs, len(case), False)
    fkw = dict(kw, return_indices=True) if kind == "max" else kw
    fwd = pool_spec(kind, x, spatial_dims=nd, **fkw)
    _check_all_candidates(fwd, backend, (x,))
    (g,) = _arrays(9, "float32", fwd.output_shape)
    spec = pool_grad_spec(kind, g, x, spatial_dims=nd, **kw)
    if kind == "max":
        _, idx = oracle.max_pool(fwd, x)
        from fastconv import _indices
        g2, idx2 = _indices.drop_empty_windows(spec, g, idx, np)
        _check_all_candidates(spec, backend, (np.asarray(g2), np.asarray(idx2)))
    else:
        _check_all_candidates(spec, backend, (g,))
    fn = getattr(fc, f"{kind}_pool{nd}d")
    got = fn(*to_backend(backend, x), backend=backend, **fkw)
    want = fn(x, backend="numpy", **fkw)
    for a, b in zip(got if kind == "max" else (got,), want if kind == "max" else (want,)):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", _backends())
def test_max_unpool3d_every_implementation(backend):
    x = _pool_input((2, 3, 5, 6, 4), 1, False)
    y, idx = fc.max_pool3d(x, 2, return_indices=True, backend="numpy")
    idx = idx.copy()
    idx[0, 0, 0, 0, 0] = idx[0, 0, 1, 2, 1]                # a repeated index: the last write wins
    spec = unpool_spec(y, idx, 2, output_size=x.shape[2:], spatial_dims=3)
    _check_all_candidates(spec, backend, (y, idx))


# --- composites through the public functions ---------------------------------------------------------------
@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_every_backend(backend, mode):
    x, w, b = _arrays(11, "float32", (2, 3, 4, 5, 6), (4, 3, 3, 2, 3), (4,))
    for fn, xx, ww, pad in ((fc.conv3d, x, w, ((1, 2), (1, 0), (2, 2))), (fc.conv2d, x[:, :, 0], w[:, :, 0], "same"),
                            (fc.conv1d, x[:, :, 0, 0], w[:, :, 0, 0], 2)):
        want = fn(xx, ww, b, padding=pad, padding_mode=mode, backend="numpy")
        got = fn(*to_backend(backend, xx, ww, b), padding=pad, padding_mode=mode, backend=backend)
        np.testing.assert_allclose(to_numpy(got), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("p", [1, 2, 3, math.inf])
def test_lp_pools_every_backend(backend, p):
    (x,) = _arrays(13, "float32", (2, 3, 5, 6, 7))
    for nd, fn, ks in ((3, fc.lp_pool3d, (2, 3, 2)), (2, fc.lp_pool2d, 3), (1, fc.lp_pool1d, 2)):
        xx = x[(slice(None), slice(None)) + (0,) * (3 - nd)]
        want = fn(xx, p, ks, ceil_mode=True, backend="numpy")
        got = fn(*to_backend(backend, xx), p, ks, ceil_mode=True, backend=backend)
        np.testing.assert_allclose(to_numpy(got), want, rtol=2e-5, atol=2e-5, equal_nan=True)
