"""Property-based fuzzing: every public op, on every available backend x algo, against the oracle.

Hypothesis draws the whole argument space -- N (the empty batch included), C, H, W, K, R, S, stride,
padding in every accepted form (int, per-dimension, asymmetric pairs, "valid", "same"), dilation, groups
(depthwise with channel multipliers included), bias, ceil_mode, count_include_pad, divisor_override,
return_indices, dtype, unbatched input, non-contiguous / channels-last / Fortran / read-only memory and
NaN/Inf values -- and compares each backend's result with ``backend="numpy"`` (the oracle, computed on a
contiguous copy) using fastconv.testing's tolerances. It also checks that the result has the input's
array type, dtype and shape, that the input was not modified, and that the output does not alias it.

Backends and algorithms are enumerated from the dispatch registry (``_dispatch.BACKENDS``,
``_dispatch.candidates``), so a backend or algorithm added later is fuzzed without touching this file.
An algorithm that ``select`` says cannot run an example is skipped for that example; each test asserts
that at least one algorithm of its backend ran.

Profiles (environment):
  FASTCONV_FUZZ=ci    (default) a bounded, derandomized run: the same examples every time (CI)
  FASTCONV_FUZZ=long  thousands of examples per op, random seeds, bigger shapes
  FASTCONV_FUZZ_EXAMPLES=N  overrides the number of examples per test in either profile
A failure prints the shrunk example; turn it into an explicit regression test (tests/test_edges.py).
"""
from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import _config, _dispatch
from fastconv._spec import conv_spec, pool_spec
from fastconv.testing import assert_conv_close, assert_pool_close, to_numpy

from .backend_params import refused_for_data

PROFILE = (_config.get("FASTCONV_FUZZ") or "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FASTCONV_FUZZ must be 'ci' or 'long', got {PROFILE!r}")
LONG = PROFILE == "long"
#: examples per test: (numpy-array CPU backends, emulated CUDA); the emulator runs every CUDA thread
_DEFAULT_EXAMPLES = (3000, 1000) if LONG else (100, 80)
_ENV_EXAMPLES = _config.get("FASTCONV_FUZZ_EXAMPLES")
#: largest spatial extent drawn (the CUDA tiles are 8x16 outputs and 64x64 GEMM tiles: long runs cross them)
MAX_EXTENT = 40 if LONG else 10
MAX_CHANNELS = 12 if LONG else 4

DTYPES = ("float32", "float64", "float16")
LAYOUTS = ("contiguous", "noncontiguous", "channels_last", "fortran", "readonly")


def _examples(backend: str) -> int:
    if _ENV_EXAMPLES:
        return int(_ENV_EXAMPLES)
    return _DEFAULT_EXAMPLES[1] if backend.startswith("cuda") else _DEFAULT_EXAMPLES[0]


def _settings(backend: str):
    return settings(max_examples=_examples(backend), deadline=None, derandomize=not LONG,
                    database=None if not LONG else settings.default.database, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _backends():
    """Every registered backend but the oracle; unavailable ones are skipped with their reason."""
    params = []
    for name, info in fc.backends().items():
        if name == "numpy":
            continue
        if info["available"]:
            params.append(pytest.param(name, id=name))
        else:
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"{name}: {info['reason']}")))
    return params


BACKENDS = _backends()


# ---------------------------------------------------------------------------------------------------
# Arrays: values, layouts, array module
# ---------------------------------------------------------------------------------------------------
def _xp(backend):
    if _dispatch.BACKENDS[backend].array_kind == "cupy":
        import cupy
        return cupy
    return np


def _values(rng, shape, dtype, special):
    """Random values; 'ties' gives few distinct values, 'nonfinite' sprinkles NaN, +Inf and -Inf."""
    if special == "ties":
        a = rng.integers(-2, 3, shape).astype(np.float64)
    else:
        a = rng.standard_normal(shape)
    if special == "nonfinite" and a.size:
        u = rng.random(shape)
        a[u < 0.06] = np.nan
        a[(u >= 0.06) & (u < 0.09)] = np.inf
        a[(u >= 0.09) & (u < 0.12)] = -np.inf
    return a.astype(dtype)


def _in_layout(xp, a, layout):
    """``a`` (contiguous, of module xp) as an equal array in the given memory layout."""
    if layout == "contiguous" or a.ndim < 2:
        return a
    if layout == "noncontiguous":                  # every other element of a bigger buffer, last axis
        big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dtype=a.dtype)
        big[..., 1::2] = a
        return big[..., 1::2]
    if layout == "channels_last":                  # channel axis innermost in memory
        c_axis = a.ndim - 3 if a.ndim >= 3 else 0
        order = [i for i in range(a.ndim) if i != c_axis] + [c_axis]
        inverse = np.argsort(order)
        return xp.ascontiguousarray(a.transpose(order)).transpose(tuple(int(i) for i in inverse))
    if layout == "fortran":
        return xp.asfortranarray(a)
    if layout == "readonly":
        if xp is not np:
            return a                               # CuPy arrays have no read-only flag
        b = a.copy()
        b.setflags(write=False)
        return b
    raise ValueError(layout)


def _as_backend(backend, layout, *arrays):
    xp = _xp(backend)
    out = []
    for i, a in enumerate(arrays):
        if a is None:
            out.append(None)
            continue
        b = xp.asarray(a) if xp is not np else a.copy()
        out.append(_in_layout(xp, b, layout if i == 0 else "contiguous"))
    return out


def _finite(a):
    return None if a is None else np.where(np.isfinite(a), a, 0).astype(a.dtype)


def _check_untouched_and_unaliased(backend, before, arg, outs):
    np.testing.assert_array_equal(to_numpy(arg), before, err_msg="the input was modified")
    xp = _xp(backend)
    for o in outs:
        if xp is np:
            assert not np.shares_memory(o, arg), "the output aliases the input"
        else:
            assert o.data.ptr != arg.data.ptr, "the output aliases the input"


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw, nd):
    """Arguments of one conv1d/conv2d call: shapes, keyword arguments in any accepted spelling, values."""
    g = draw(st.integers(1, 3))
    cg = draw(st.sampled_from([1, 1, 2, 3]))          # cg == 1 with g > 1: depthwise
    kg = draw(st.integers(1, 3))                      # channel multiplier when depthwise
    C, K = g * cg, g * kg
    if C > 3 * MAX_CHANNELS:
        C, K = g, g * kg
    ks = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    big_dil = draw(st.integers(0, 9)) == 0           # now and then a dilation far past the input
    dil = tuple(draw(st.integers(1, 12 if big_dil else 3)) for _ in range(nd))
    pad_form = draw(st.sampled_from(["int", "per_dim", "asym", "valid", "same"]))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if pad_form != "same" else (1,) * nd
    if pad_form == "int":
        p = draw(st.integers(0, 4))
        padding, pairs = p, ((p, p),) * nd
    elif pad_form == "per_dim":
        ps = tuple(draw(st.integers(0, 4)) for _ in range(nd))
        padding, pairs = ps, tuple((p, p) for p in ps)
    elif pad_form == "asym":
        pairs = tuple((draw(st.integers(0, 5)), draw(st.integers(0, 5))) for _ in range(nd))
        padding = pairs
    elif pad_form == "valid":
        padding, pairs = "valid", ((0, 0),) * nd
    else:
        padding = "same"
        pairs = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(ks, dil))
    sizes = []
    for k, d, (lo, hi) in zip(ks, dil, pairs):
        lo_size = max(1, d * (k - 1) + 1 - lo - hi)    # at least one window
        sizes.append(draw(st.integers(lo_size, max(lo_size, MAX_EXTENT) + 2)))
    N = draw(st.sampled_from([1, 1, 2, 2, 3, 0]))
    unbatched = N == 1 and draw(st.integers(0, 4)) == 0
    xshape = ((C,) if unbatched else (N, C)) + tuple(sizes)
    wshape = (K, C // g) + ks
    kw = dict(padding=padding, groups=g)
    # every spelling: ints where both dimensions agree, tuples/lists otherwise, defaults left out
    if any(s != 1 for s in stride) or draw(st.booleans()):
        kw["stride"] = stride[0] if len(set(stride)) == 1 and draw(st.booleans()) else stride
    if any(d != 1 for d in dil) or draw(st.booleans()):
        kw["dilation"] = dil[0] if len(set(dil)) == 1 and draw(st.booleans()) else list(dil)
    return dict(nd=nd, xshape=xshape, wshape=wshape, bias=draw(st.booleans()), kw=kw,
                dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(LAYOUTS)),
                special=draw(st.sampled_from(["none", "none", "nonfinite", "inf_weight"])),
                seed=draw(st.integers(0, 2**32 - 1)))


def _conv_arrays(c):
    rng = np.random.default_rng(c["seed"])
    x = _values(rng, c["xshape"], c["dtype"], "nonfinite" if c["special"] == "nonfinite" else "none")
    w = _values(rng, c["wshape"], c["dtype"], "none")
    if c["special"] == "inf_weight":
        w.reshape(-1)[rng.integers(w.size)] = rng.choice([np.inf, -np.inf, np.nan])
    b = _values(rng, (c["wshape"][0],), c["dtype"], "none") if c["bias"] else None
    return x, w, b


@st.composite
def pool_cases(draw, kind, nd):
    """Arguments of one pooling call (kind: max, avg, adaptive_max, adaptive_avg)."""
    N = draw(st.sampled_from([1, 2, 2, 3, 0]))
    C = draw(st.integers(1, MAX_CHANNELS))
    unbatched = N == 1 and draw(st.integers(0, 4)) == 0
    kw = {}
    if kind.startswith("adaptive"):
        sizes = tuple(draw(st.integers(1, MAX_EXTENT + 2)) for _ in range(nd))
        out = tuple(draw(st.integers(1, 8)) for _ in range(nd))
        if nd == 2 and draw(st.integers(0, 3)) == 0:
            out = (out[0], None) if draw(st.booleans()) else (None, out[1])
        kw["output_size"] = out[0] if len(set(out)) == 1 and out[0] is not None and draw(st.booleans()) else out
        if kind == "adaptive_max":
            kw["return_indices"] = draw(st.booleans())
    else:
        ks = tuple(draw(st.integers(1, 4)) for _ in range(nd))
        pads = tuple(draw(st.integers(0, k // 2)) for k in ks)
        dil = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if kind == "max" else (1,) * nd
        stride = None if draw(st.integers(0, 3)) == 0 else tuple(draw(st.integers(1, 4)) for _ in range(nd))
        sizes = []
        for k, d, p in zip(ks, dil, pads):
            lo_size = max(1, d * (k - 1) + 1 - 2 * p)
            sizes.append(draw(st.integers(lo_size, max(lo_size, MAX_EXTENT) + 2)))
        sizes = tuple(sizes)
        kw["kernel_size"] = ks[0] if len(set(ks)) == 1 and draw(st.booleans()) else ks
        if stride is not None:
            kw["stride"] = stride[0] if len(set(stride)) == 1 and draw(st.booleans()) else stride
        if any(pads) or draw(st.booleans()):
            kw["padding"] = pads[0] if len(set(pads)) == 1 and draw(st.booleans()) else pads
        kw["ceil_mode"] = draw(st.booleans())
        if kind == "max":
            if any(d != 1 for d in dil) or draw(st.booleans()):
                kw["dilation"] = dil[0] if len(set(dil)) == 1 and draw(st.booleans()) else dil
            kw["return_indices"] = draw(st.booleans())
        else:
            kw["count_include_pad"] = draw(st.booleans())
            if nd == 2 and draw(st.booleans()):
                kw["divisor_override"] = draw(st.sampled_from([1, 2, 3, 7, -1, -4]))
    xshape = ((C,) if unbatched else (N, C)) + sizes
    return dict(kind=kind, nd=nd, xshape=xshape, kw=kw, dtype=draw(st.sampled_from(DTYPES)),
                layout=draw(st.sampled_from(LAYOUTS)),
                special=draw(st.sampled_from(["none", "ties", "nonfinite"])),
                seed=draw(st.integers(0, 2**32 - 1)))


POOL_FNS = {("max", 2): fc.max_pool2d, ("max", 1): fc.max_pool1d, ("avg", 2): fc.avg_pool2d,
            ("avg", 1): fc.avg_pool1d, ("adaptive_max", 2): fc.adaptive_max_pool2d,
            ("adaptive_max", 1): fc.adaptive_max_pool1d, ("adaptive_avg", 2): fc.adaptive_avg_pool2d,
            ("adaptive_avg", 1): fc.adaptive_avg_pool1d}


# ---------------------------------------------------------------------------------------------------
# Running one example on one backend
# ---------------------------------------------------------------------------------------------------
def _supported(spec, backend, algo) -> bool:
    try:
        _dispatch.select(spec, backend, algo)
    except ValueError:           # no implementation of that algo supports this example
        return False
    return True


def check_conv(backend, c, ran):
    fn = fc.conv2d if c["nd"] == 2 else fc.conv1d
    x, w, b = _conv_arrays(c)
    spec = conv_spec(x, w, b, spatial_dims=c["nd"], **c["kw"])
    ref = fn(x, w, b, backend="numpy", **c["kw"])
    algos = sorted({i.algo for i in _dispatch.candidates(spec, backend)}) + ["auto"]
    for algo in algos:
        if not _supported(spec, backend, algo):
            ran["skipped:" + algo] += 1
            continue
        xb, wb, bb = _as_backend(backend, c["layout"], x, w, b)
        before = to_numpy(xb).copy()
        if refused_for_data(spec, backend, algo, w):    # a non-finite weight meets padding: refused, checked
            with pytest.raises(ValueError, match="a weight is Inf or NaN and the problem is padded"):
                fn(xb, wb, bb, backend=backend, algo=algo, **c["kw"])
            ran["refused:" + algo] += 1
            continue
        out = fn(xb, wb, bb, backend=backend, algo=algo, **c["kw"])
        assert type(out) is type(xb), f"{backend}/{algo} returned {type(out)} for {type(xb)} input"
        assert str(out.dtype) == c["dtype"] and out.shape == ref.shape == spec.output_shape
        _check_untouched_and_unaliased(backend, before, xb, [out])
        # non-finite inputs: the values themselves are compared exactly; the bound comes from the finite part
        assert_conv_close(out, ref, spec, _finite(x), _finite(w), _finite(b))
        ran[algo] += 1


def check_pool(backend, c, ran):
    fn = POOL_FNS[(c["kind"], c["nd"])]
    x = _values(np.random.default_rng(c["seed"]), c["xshape"], c["dtype"], c["special"])
    skw = dict(c["kw"])
    if "output_size" in skw:
        skw["output_size_"] = skw.pop("output_size")
    spec = pool_spec(c["kind"], x, spatial_dims=c["nd"], **skw)
    if not _supported(spec, backend, "auto"):
        ran["skipped:auto"] += 1
        return
    ref = fn(x, backend="numpy", **c["kw"])
    (xb,) = _as_backend(backend, c["layout"], x)
    before = to_numpy(xb).copy()
    out = fn(xb, backend=backend, **c["kw"])
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == (2 if spec.return_indices else 1)
    assert type(outs[0]) is type(xb) and str(outs[0].dtype) == c["dtype"]
    assert all(o.shape == spec.output_shape for o in outs)
    _check_untouched_and_unaliased(backend, before, xb, outs)
    assert_pool_close(out, ref, spec, x)
    ran[_dispatch.select(spec, backend, "auto").algo] += 1


def _assert_ran(backend, what, ran):
    runs = {k: v for k, v in ran.items() if not k.startswith(("skipped:", "refused:"))}
    assert sum(runs.values()) > 0, f"no {what} example ran on {backend} (skips: {dict(ran)})"
    algos = {i.algo for i in _dispatch.backend_module(backend).implementations()} if what == "conv" else set()
    never = sorted(a for a in algos if a not in runs)
    if never:
        warnings.warn(f"{backend}: conv algo(s) {never} supported none of the {what} examples", stacklevel=2)


# ---------------------------------------------------------------------------------------------------
# The tests: one hypothesis run per backend and op family
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nd", [2, 1], ids=["conv2d", "conv1d"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_conv(backend, nd):
    ran = collections.Counter()

    @_settings(backend)
    @given(conv_cases(nd))
    def run(c):
        with np.errstate(invalid="ignore", over="ignore"):   # Inf - Inf in sums: NaN is the expected value
            check_conv(backend, c, ran)

    run()
    _assert_ran(backend, "conv", ran)


POOL_KINDS = [(k, nd) for k in ("max", "avg", "adaptive_max", "adaptive_avg") for nd in (2, 1)]


@pytest.mark.parametrize("kind, nd", POOL_KINDS, ids=[f"{k}{nd}d" for k, nd in POOL_KINDS])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_pool(backend, kind, nd):
    ran = collections.Counter()
    # 1-D pools share the 2-D kernels (H = 1): fewer examples buy the same coverage
    n = _examples(backend) if nd == 2 or _ENV_EXAMPLES else max(10, _examples(backend) // 2)

    @settings(_settings(backend), max_examples=n)
    @given(pool_cases(kind, nd))
    def run(c):
        with np.errstate(invalid="ignore", over="ignore"):
            check_pool(backend, c, ran)

    run()
    _assert_ran(backend, f"{kind}_pool{nd}d", ran)
