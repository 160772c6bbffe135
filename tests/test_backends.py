"""The oracle test matrix: every available backend x algo against backend="numpy", through the public API.

New backends join by registering in fastconv._dispatch; nothing here names them. Backends that are not
available on this machine are reported as skipped with their reason. CuPy backends get CuPy arrays.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch
from fastconv._spec import conv_spec, pool_spec
from fastconv.testing import assert_conv_close, assert_pool_close, to_numpy

from .backend_params import backend_algos, conv_or_refused, to_backend

DTYPES = ["float32", "float64", "float16"]


def _backend_algos(op):
    return backend_algos(op, oracle=False)   # the oracle is the judge, not a defendant


_to_backend = to_backend


# ---------------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------------
# name: (x shape, w shape, bias, kwargs)
CONV_CASES = {
    "3x3-pad1": ((2, 3, 9, 10), (4, 3, 3, 3), True, dict(padding=1)),
    "no-bias-valid": ((1, 4, 7, 7), (5, 4, 3, 3), False, dict(padding="valid")),
    "stride2-asym-pad": ((2, 3, 11, 9), (4, 3, 3, 3), True, dict(stride=2, padding=((1, 0), (2, 1)))),
    "stride3x1": ((1, 2, 10, 10), (3, 2, 3, 2), True, dict(stride=(3, 1), padding=(1, 0))),
    "dilation2": ((1, 3, 12, 12), (4, 3, 3, 3), True, dict(dilation=2, padding=2)),
    "same-dilated-even": ((1, 2, 9, 8), (3, 2, 4, 2), True, dict(padding="same", dilation=(2, 3))),
    "groups2": ((2, 4, 8, 8), (6, 2, 3, 3), True, dict(groups=2, padding=1)),
    "depthwise": ((2, 6, 9, 9), (6, 1, 3, 3), True, dict(groups=6, padding=1, stride=2)),
    "depthwise-mult2": ((1, 3, 8, 8), (6, 1, 3, 3), False, dict(groups=3, padding=1)),
    "1x1": ((2, 8, 5, 5), (7, 8, 1, 1), True, dict()),
    "5x5-stride2": ((1, 3, 13, 13), (4, 3, 5, 5), True, dict(stride=2, padding=2)),
    "kernel-equals-padded-input": ((1, 2, 3, 4), (3, 2, 5, 6), True, dict(padding=1)),
    "padding-larger-than-kernel": ((1, 2, 3, 3), (2, 2, 2, 2), True, dict(padding=3)),
    "hw-1": ((3, 4, 1, 1), (5, 4, 1, 1), True, dict()),
    "huge-dilation": ((1, 2, 12, 12), (2, 2, 2, 2), True, dict(dilation=10, padding=(0, 1))),
    "many-channels": ((1, 40, 6, 6), (24, 40, 3, 3), True, dict(padding=1)),
}
CONV1D_CASES = {
    "1d-basic": ((2, 3, 20), (4, 3, 5), True, dict(padding=2)),
    "1d-stride-dil-asym": ((1, 4, 17), (6, 2, 3), False, dict(stride=2, dilation=2, padding=((2, 1),), groups=2)),
}
UNBATCHED_CASES = {
    "unbatched-2d": ((3, 7, 7), (2, 3, 3, 3), True, dict(padding=1)),
    "unbatched-1d": ((3, 9), (2, 3, 4), True, dict(padding="same")),
}


def _conv_inputs(xs, ws, bias, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    return x, w, b


def _skip_unless_supported(backend, algo, spec):
    """Specialised algorithms take part of the problem space: "depthwise" only one input channel per group
    (its own tests: tests/cuda/test_depthwise.py), "implicit_gemm" float16/float32 storage. Skip, with the
    implementation's own reasons, exactly where dispatch would refuse it."""
    if algo == "auto":
        return
    impls = [i for i in _dispatch.candidates(spec, backend, algo)]
    if impls and all(_dispatch.reasons(i, spec) for i in impls):     # no variant of the algo takes it
        why = [f"{i.name}: {', '.join(_dispatch.reasons(i, spec))}" for i in impls]
        pytest.skip(f"{backend}:{algo} does not take this case: {'; '.join(why)}")


def _check_conv(backend, algo, case, dtype, fn):
    xs, ws, bias, kw = case
    x, w, b = _conv_inputs(xs, ws, bias, dtype)
    nd = len(ws) - 2
    spec = conv_spec(x, w, b, spatial_dims=nd, **kw)
    _skip_unless_supported(backend, algo, spec)
    ref = fn(x, w, b, backend="numpy", **kw)
    xb, wb, bb = _to_backend(backend, x, w, b)
    out = fn(xb, wb, bb, backend=backend, algo=algo, **kw)
    assert type(out) is type(xb), f"{backend} returned {type(out)} for {type(xb)} input"
    assert str(out.dtype) == dtype and out.shape == ref.shape
    assert_conv_close(out, ref, spec, x, w, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("backend, algo", _backend_algos("conv"))
def test_conv2d_matches_oracle(backend, algo, case, dtype):
    _check_conv(backend, algo, CONV_CASES[case], dtype, fc.conv2d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV1D_CASES) + list(UNBATCHED_CASES))
@pytest.mark.parametrize("backend, algo", _backend_algos("conv"))
def test_conv1d_and_unbatched_match_oracle(backend, algo, case, dtype):
    c = {**CONV1D_CASES, **UNBATCHED_CASES}[case]
    _check_conv(backend, algo, c, dtype, fc.conv1d if len(c[1]) == 3 else fc.conv2d)


@pytest.mark.parametrize("backend, algo", _backend_algos("conv"))
def test_conv_nan_and_inf_propagate(backend, algo):
    x, w, b = _conv_inputs((1, 2, 6, 6), (3, 2, 3, 3), True, "float32")
    x[0, 1, 2, 3] = np.nan
    x[0, 0, 4, 1] = np.inf
    ref = fc.conv2d(x, w, b, padding=1, backend="numpy")
    _skip_unless_supported(backend, algo, conv_spec(x, w, b, padding=1))
    xb, wb, bb = _to_backend(backend, x, w, b)
    out = to_numpy(fc.conv2d(xb, wb, bb, padding=1, backend=backend, algo=algo))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))


@pytest.mark.parametrize("weight_value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("backend, algo", _backend_algos("conv"))
def test_nonfinite_weight_never_meets_padding(backend, algo, weight_value):
    """fastconv's rule (the oracle's): taps in the padding contribute nothing, so a non-finite weight
    poisons only outputs whose window has that tap inside the input (PyTorch's zero padding gives NaN)."""
    x, w, b = _conv_inputs((1, 2, 5, 6), (3, 2, 3, 3), True, "float32")
    w[1, 0, 0, 0] = weight_value
    ref = fc.conv2d(x, w, b, padding=1, backend="numpy")
    _skip_unless_supported(backend, algo, conv_spec(x, w, b, padding=1))
    assert np.isfinite(ref[0, 1, 0, 0]) and not np.isfinite(ref[0, 1, 1, 1])   # the rule bites here
    xb, wb, bb = _to_backend(backend, x, w, b)
    out = conv_or_refused(backend, algo, conv_spec(x, w, b, padding=1), w,
                          lambda a: fc.conv2d(xb, wb, bb, padding=1, backend=backend, algo=a))
    assert_conv_close(out, ref, conv_spec(x, w, b, padding=1), x, np.nan_to_num(w, posinf=0, neginf=0), b)


@pytest.mark.parametrize("backend, algo", _backend_algos("conv"))
def test_empty_batch(backend, algo):
    x, w, _ = _conv_inputs((0, 2, 6, 6), (3, 2, 3, 3), False, "float32")
    _skip_unless_supported(backend, algo, conv_spec(x, w, padding=1))
    xb, wb = _to_backend(backend, x, w)
    assert fc.conv2d(xb, wb, padding=1, backend=backend, algo=algo).shape == (0, 3, 6, 6)


# ---------------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------------
# name: (function, input shape, kwargs)
POOL_CASES = {
    "max-2x2": (fc.max_pool2d, (2, 3, 8, 8), dict(kernel_size=2)),
    "max-3s2p1-idx": (fc.max_pool2d, (2, 3, 11, 10), dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    "max-ceil-idx": (fc.max_pool2d, (1, 2, 10, 9), dict(kernel_size=3, stride=2, ceil_mode=True, return_indices=True)),
    "max-dilated-idx": (fc.max_pool2d, (1, 2, 12, 11), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1),
                                                            dilation=(2, 3), return_indices=True)),
    "max-all-pad-window": (fc.max_pool2d, (1, 1, 1, 1), dict(kernel_size=2, stride=1, padding=1, dilation=2,
                                                             return_indices=True)),
    "avg-3s2p1": (fc.avg_pool2d, (2, 3, 11, 10), dict(kernel_size=3, stride=2, padding=1)),
    "avg-exclude-pad-ceil": (fc.avg_pool2d, (1, 2, 10, 9), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                                count_include_pad=False)),
    "avg-include-pad-ceil": (fc.avg_pool2d, (1, 2, 10, 9), dict(kernel_size=(3, 2), stride=2, padding=(1, 1),
                                                                ceil_mode=True)),
    "avg-divisor-override": (fc.avg_pool2d, (1, 2, 9, 9), dict(kernel_size=3, stride=2, padding=1, divisor_override=-5)),
    "adaptive-avg-uneven": (fc.adaptive_avg_pool2d, (2, 3, 11, 7), dict(output_size=(4, 3))),
    "adaptive-avg-global": (fc.adaptive_avg_pool2d, (2, 5, 7, 7), dict(output_size=1)),
    "adaptive-avg-upsample": (fc.adaptive_avg_pool2d, (1, 2, 3, 4), dict(output_size=(5, None))),
    "adaptive-max-idx": (fc.adaptive_max_pool2d, (2, 3, 10, 9), dict(output_size=(3, 4), return_indices=True)),
    "max1d-idx": (fc.max_pool1d, (2, 3, 17), dict(kernel_size=4, stride=3, padding=2, dilation=1, ceil_mode=True,
                                                 return_indices=True)),
    "avg1d": (fc.avg_pool1d, (2, 3, 17), dict(kernel_size=4, stride=3, padding=2, count_include_pad=False)),
    "adaptive-max1d": (fc.adaptive_max_pool1d, (2, 3, 13), dict(output_size=5, return_indices=True)),
    "adaptive-avg1d": (fc.adaptive_avg_pool1d, (2, 3, 13), dict(output_size=5)),
    "unbatched-max": (fc.max_pool2d, (3, 8, 8), dict(kernel_size=3, stride=1, padding=1, return_indices=True)),
}


def _pool_input(shape, dtype, nan, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype) if nan == "ties" else rng.standard_normal(shape).astype(dtype)
    if nan == "nan":
        x[rng.random(shape) < 0.1] = np.nan
        x[rng.random(shape) < 0.05] = -np.inf
    return x


def _pool_spec_of(fn, x, kw):
    name = fn.__name__                       # e.g. adaptive_max_pool2d -> kind adaptive_max, 2-D
    nd = 1 if name.endswith("1d") else 2
    kind = name[:-len("_pool2d")]
    kw = dict(kw)
    if "output_size" in kw:
        kw["output_size_"] = kw.pop("output_size")
    return pool_spec(kind, x, spatial_dims=nd, **kw)


@pytest.mark.parametrize("values", ["random", "ties", "nan"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(POOL_CASES))
@pytest.mark.parametrize("backend, algo", [p for p in _backend_algos("max_pool") if p.values[1] == "auto"
                                           or p.id.endswith("unavailable")])
def test_pools_match_oracle(backend, algo, case, dtype, values):
    fn, shape, kw = POOL_CASES[case]
    x = _pool_input(shape, dtype, values)
    spec = _pool_spec_of(fn, x, kw)
    ref = fn(x, backend="numpy", **kw)
    (xb,) = _to_backend(backend, x)
    out = fn(xb, backend=backend, **kw)
    first = out[0] if isinstance(out, tuple) else out
    assert type(first) is type(xb) and str(first.dtype) == dtype
    assert_pool_close(out, ref, spec, x)
