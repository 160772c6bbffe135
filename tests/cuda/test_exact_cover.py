"""Every problem the spec builders accept has an exact implementation on both CUDA backends (issue 18, item 1),
and a value beyond a kernel's 32-bit fields is a reason, never NumPy's OverflowError (item 10).

The class behind item 1: a float64 convolution whose weight is Inf meeting the padding could reach no exact
kernel (im2col multiplies padded zeros in, the implicit GEMM has no float64, direct's shared-memory tile did
not fit), so it raised or, before the hand-off rule, ran im2col and gave NaN. The cover test walks a grid of
small but hostile specs (huge stride, dilation and padding, tiny and wide filters, groups, every op, 1-D to
3-D, every dtype) and asks, by reasons only (nothing is launched), that each leaves at least one candidate
that does not multiply padded zeros in -- with ``algo="auto"`` and, for the forward convolution, with
``algo="direct"`` too. A few real emulator launches check the fallbacks against the oracle; they run kernels
the family tests already build (no new instantiation).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch, _spec, _spec_fold
from fastconv._cuda import plan as P
from fastconv._backends import numpy_oracle as oracle
from fastconv.testing import assert_conv_close, assert_grad_close

BACKENDS = ("cuda-emu", "cuda")
#: (kernel, stride, padding, dilation): the issue's cases, then the extremes
GEOMETRIES = ((1, 4, 1, 1), (3, 7, 1, 1), (3, 1, 1, 1), (5, 3, 2, 1), (3, 1, 5, 9), (31, 1, 15, 4),
              (64, 1, 32, 1), (3, 1, 300, 300), (3, 10**6, 1, 1), (3, 1, 10**6, 10**6),
              (1, 10**9, 10**9, 1), (1, 2**40, 0, 2**40), (3, 2**31, 1, 1))
H = 9


def _arr(shape, dtype):
    """A read-only array of ``shape`` that costs no memory (the builders read shapes and dtypes only)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _conv_specs(nd, dtype):
    x = _arr((1, 2) + (H,) * nd, dtype)
    for (k, st, pd, dl), (groups, K) in itertools.product(GEOMETRIES, ((1, 3), (2, 4))):
        k = min(k, 5) if nd == 3 else k
        w = _arr((K, 2 // groups) + (k,) * nd, dtype)
        kw = dict(stride=st, padding=pd, dilation=dl, groups=groups, spatial_dims=nd)
        try:
            spec = fc.conv_spec(x, w, **kw)
        except ValueError:      # an empty output: the builder refuses, nothing to cover
            continue
        dy = _arr(spec.output_shape, dtype)
        yield spec
        yield _spec.conv_input_spec(x.shape, w, dy, **kw)
        yield _spec.conv_weight_spec(x, w.shape, dy, **kw)
    w = _arr((2, 3) + (3,) * nd, dtype)   # a transposed convolution with output padding
    yield _spec.conv_transpose_spec(_arr((1, 2) + (4,) * nd, dtype), w, stride=3, padding=1, output_padding=2,
                                    dilation=2, spatial_dims=nd)


def _pool_specs(nd, dtype):
    x = _arr((1, 2) + (H,) * nd, dtype)
    for (k, st, pd, dl), kind, ceil in itertools.product(GEOMETRIES, ("max", "avg"), (False, True)):
        k = min(k, H)
        args = dict(kernel_size=k, stride=st, padding=min(pd, k // 2), ceil_mode=ceil)
        args.update(dilation=min(dl, 4)) if kind == "max" else args.update(divisor_override=-3)
        try:
            spec = fc.pool_spec(kind, x, spatial_dims=nd, **args)
        except ValueError:
            continue
        dy = _arr(spec.output_shape, dtype)
        yield spec
        yield _spec.pool_grad_spec(kind, dy, x, spatial_dims=nd, **args)
        if kind == "max" and args.get("dilation") == 1:
            yield _spec.unpool_spec(dy, np.zeros(dy.shape, np.int64), k, st, args["padding"], spatial_dims=nd)
    for kind, (size, out) in itertools.product(("adaptive_max", "adaptive_avg"), ((9, 4), (1, 7), (40, 3))):
        xa = _arr((1, 2) + (size,) * nd, dtype)
        spec = fc.pool_spec(kind, xa, output_size_=out, spatial_dims=nd)
        yield spec
        yield _spec.pool_grad_spec(kind, _arr(spec.output_shape, dtype), xa, spatial_dims=nd)
    if nd < 3:   # windows far apart along a long row (free: the arrays are broadcast views)
        xl = _arr((1, 2) + (1,) * (nd - 1) + (2 * 10**6 + 1,), dtype)
        args = dict(kernel_size=(1,) * (nd - 1) + (2,), stride=(1,) * (nd - 1) + (10**6,),
                    dilation=(1,) * (nd - 1) + (10**6,))
        spec = fc.pool_spec("max", xl, spatial_dims=nd, **args)
        yield spec
        yield _spec.pool_grad_spec("max", _arr(spec.output_shape, dtype), xl, spatial_dims=nd, **args)


def _fold_specs(nd, dtype):
    x = _arr((1, 2) + (H,) * nd, dtype)
    for k, st, pd, dl in GEOMETRIES:
        try:
            spec = _spec_fold.unfold_spec(x, (min(k, 5) if nd == 3 else k,) * nd, dl, pd, st)
        except ValueError:
            continue
        yield spec
        yield _spec_fold.fold_spec(_arr(spec.output_shape, dtype), (H,) * nd, spec.window[3 - nd:], dl, pd, st)


def _specs(nd, dtype):
    yield from _conv_specs(nd, dtype)
    yield from _pool_specs(nd, dtype)
    yield from _fold_specs(nd, dtype)


def _exact(spec, backend, algo="auto"):
    """The candidates that take ``spec`` whatever the weight (or dy) holds."""
    return [i for i in _dispatch.candidates(spec, backend, algo)
            if not i.zero_fills_padding and not _dispatch.reasons(i, spec)]


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_every_problem_has_an_exact_implementation(nd):
    """By reasons only: every op, dtype and hostile geometry keeps a candidate that computes the exact rule
    (padded taps contribute nothing) on both CUDA backends; the forward convolution also with algo="direct"."""
    missing, seen, extremes = [], set(), set()
    for dtype in ("float16", "float32", "float64"):
        for spec in _specs(nd, dtype):
            seen.add(spec.op)
            if spec.op == "conv":   # the grid really holds what it claims (the builders refuse none of these)
                extremes |= {"stride 2^40" if max(spec.strides) >= 2**40 else "",
                             "padding 10^6" if max(max(p) for p in spec.pads) >= 10**6 else "",
                             "padding 10^9" if max(max(p) for p in spec.pads) >= 10**9 else "",
                             "dilation 10^6" if max(spec.dilations) >= 10**6 and spec.window_elems > 1 else "",
                             "tile too big" if spec.spatial_dims < 3 and _direct_tile_too_big(spec) else ""}
            for backend in BACKENDS:
                if not _exact(spec, backend):
                    missing.append((backend, spec))
                if spec.op == "conv" and not _exact(spec, backend, "direct"):
                    missing.append((backend + " algo=direct", spec))
    assert seen == {"conv", "conv_input", "conv_weight", "max_pool", "avg_pool", "adaptive_max_pool",
                    "adaptive_avg_pool", "max_pool_backward", "avg_pool_backward", "adaptive_max_pool_backward",
                    "adaptive_avg_pool_backward", "max_unpool", "unfold", "fold"}
    # (a 3-D padding of 10^9 makes a padded volume past 2^63: the builders refuse it)
    assert extremes >= {"stride 2^40", "padding 10^6", "dilation 10^6"} | ({"tile too big", "padding 10^9"}
                                                                          if nd < 3 else set())
    assert not missing, f"{len(missing)} problems without an exact implementation, e.g. {missing[:3]}"


def _direct_tile_too_big(spec) -> bool:
    """The issue's case: the tiled direct kernel's patch does not fit shared memory."""
    from fastconv._cuda import direct
    return not direct.reasons(spec, "") and any("shared memory" in r for r in direct.plan(spec, "").reasons())


def test_the_fallbacks_come_last_and_run_only_where_nothing_else_takes_the_problem():
    """The one-thread-per-output kernels (direct/untiled, conv_input's direct/gather) are the last resort
    (``Impl.fallback``): dispatch picks one only where no other candidate of the selection takes the problem
    (so algo="auto" on the GPU never measures them needlessly), a named algorithm whose only variant is a
    fallback still runs every problem, and their Impl names say which kernel runs."""
    def pick(spec, algo="auto", weight=None):
        return _dispatch.select(spec, "cuda-emu", algo, weight=weight).name

    ordinary = fc.conv_spec(_arr((1, 2, 9, 9), "float64"), _arr((3, 2, 3, 3), "float64"), padding=1)
    two_d = [i.name for i in _dispatch.candidates(ordinary, "cuda-emu") if 2 in i.spatial_dims]
    assert two_d[-1] == "cuda-emu:conv:direct/untiled"
    fallbacks = {i.name for i in _dispatch.candidates(ordinary, "cuda-emu") if i.fallback}
    assert fallbacks == {"cuda-emu:conv:direct/untiled"}
    assert "cuda-emu:conv:direct/untiled" in [i.name for i in _exact(ordinary, "cuda-emu")]   # it could run
    assert pick(ordinary) != "cuda-emu:conv:direct/untiled"
    assert pick(ordinary, "direct") == "cuda-emu:conv:direct"
    hostile = fc.conv_spec(_arr((1, 2, 9, 9), "float64"), _arr((1, 2, 1, 1), "float64"), stride=4, padding=1)
    assert [i.name for i in _exact(hostile, "cuda-emu")] == ["cuda-emu:conv:direct/untiled"]
    inf = np.full((1, 2, 1, 1), np.inf)
    assert pick(hostile, weight=inf) == pick(hostile, "direct") == "cuda-emu:conv:direct/untiled"
    dx = _spec.conv_input_spec((1, 2, 9), _arr((3, 2, 1), "float32"), _arr((1, 3, 3), "float32"), stride=10**9,
                               padding=10**9, spatial_dims=1)
    assert [i.name for i in _exact(dx, "cuda-emu")] == ["cuda-emu:conv_input:direct/gather"]
    assert pick(dx) == pick(dx, "direct") == "cuda-emu:conv_input:direct/gather"
    ordinary_dx = _spec.conv_input_spec((1, 2, 9), _arr((3, 2, 3), "float32"), _arr((1, 3, 9), "float32"), padding=1,
                                        spatial_dims=1)
    assert pick(ordinary_dx) != "cuda-emu:conv_input:direct/gather"
    assert pick(ordinary_dx, "direct") == "cuda-emu:conv_input:direct/gather"   # named: it takes every problem
    d3 = _spec.conv_input_spec((1, 2, 5, 5, 5), _arr((3, 2, 3, 3, 3), "float32"), _arr((1, 3, 5, 5, 5), "float32"),
                               padding=1, spatial_dims=3)
    assert pick(d3) != "cuda-emu:conv_input:direct/3d-gather"
    assert pick(d3, "direct") == "cuda-emu:conv_input:direct/3d-gather"


def _emu_or_skip():
    why = _dispatch.availability("cuda-emu")
    if why is not None:
        pytest.skip(f"cuda-emu unavailable: {why}")


def test_issue_example_float64_inf_weight_meeting_padding():
    """The issue's example: float64, an Inf weight, padding 1, stride 4 (direct's tile needs 56864 bytes of
    shared memory): the oracle's rule, every output 0 + the sum of in-bounds taps, no NaN."""
    _emu_or_skip()
    x = np.ones((1, 2, 9, 9))
    w = np.full((1, 2, 1, 1), np.inf)
    y = fc.conv2d(x, w, stride=4, padding=1, backend="cuda-emu")
    want = oracle.conv(fc.conv_spec(x, w, stride=4, padding=1), x, w, None)
    np.testing.assert_array_equal(y, want)
    assert np.isinf(want).any() and (want == 0).any()     # both the padded and the in-bounds taps are hit


@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_direct_3x3_stride_7_with_an_inf_weight(dtype):
    """float32 and float64 3x3 at stride 7 with algo="direct" (the tile does not fit): the untiled kernel,
    exact for the Inf weight meeting the padding."""
    _emu_or_skip()
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 3, 16, 16)).astype(dtype)
    w = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    w[0, 1, 0, 0] = np.inf
    spec = fc.conv_spec(x, w, stride=7, padding=1)
    assert _dispatch.select(spec, "cuda-emu", "direct", weight=w).name == "cuda-emu:conv:direct/untiled"
    y = fc.conv2d(x, w, stride=7, padding=1, algo="direct", backend="cuda-emu")
    with np.errstate(invalid="ignore"):          # inf - inf in the tolerance where the Inf weight is
        assert_conv_close(y, oracle.conv(spec, x, w, None), spec, x, w)


def test_conv_input_beyond_the_phase_gemm_with_an_inf_weight():
    """A stride and padding of 10^9 (the phase GEMM's coordinates plus a stride pass 32 bits; the direct
    gather's do not), an Inf weight: the oracle's dx."""
    _emu_or_skip()
    rng = np.random.default_rng(18)
    w = rng.standard_normal((3, 2, 2)).astype(np.float32)
    w[1, 0, 1] = np.inf
    dy = rng.standard_normal((1, 3, 3)).astype(np.float32)
    kw = dict(stride=10**9, padding=10**9, spatial_dims=1)
    spec = _spec.conv_input_spec((1, 2, 9), w, dy, **kw)
    dx = fc.grad.conv1d_input((1, 2, 9), w, dy, stride=10**9, padding=10**9, backend="cuda-emu")
    assert not np.isfinite(oracle.conv_input(spec, dy, w, None)).all()   # the Inf reaches dx
    with np.errstate(invalid="ignore"):
        assert_grad_close(dx, spec, dy, w)


def test_stride_and_dilation_past_int32_where_no_result_depends_on_them():
    """A stride along an axis with one output position, a dilation along a one-tap axis: no result depends
    on them (torch computes these), so the kernels get the same problem with 1 there (plan.canonical) instead
    of refusing a value past their 32-bit fields. Conv (direct's untiled kernel through algo="direct"), its
    input gradient and a max pool with indices, against the oracle."""
    _emu_or_skip()
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 1, 3))
    w[0, 0, 0, 0] = np.inf
    kw = dict(stride=(2**40, 2**31), padding=(0, 1), dilation=(2**35, 1))
    spec = fc.conv_spec(x, w, **kw)
    y = fc.conv2d(x, w, algo="direct", backend="cuda-emu", **kw)
    assert (spec.P, spec.Q, spec.R) == (1, 1, 1) and P.canonical(spec).strides == (1, 1, 1)
    with np.errstate(invalid="ignore"):
        assert_conv_close(y, oracle.conv(spec, x, w, None), spec, x, w)
    dy = rng.standard_normal(spec.output_shape)
    dx = fc.grad.conv2d_input(x.shape, w, dy, backend="cuda-emu", **kw)
    with np.errstate(invalid="ignore"):
        assert_grad_close(dx, _spec.conv_input_spec(x.shape, w, dy, **kw), dy, w)
    pspec = fc.pool_spec("max", x, kernel_size=(5, 2), stride=2**33, return_indices=True)
    got, idx = fc.max_pool2d(x, (5, 2), stride=2**33, return_indices=True, backend="cuda-emu")
    want, want_idx = oracle.max_pool(pspec, x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)


def test_conv_weight_with_inf_dy_meeting_padding():
    """The weight gradient of a padded, dilated problem with an Inf in dy: padded taps add nothing."""
    _emu_or_skip()
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 2, 7, 7))
    kw = dict(stride=3, padding=5, dilation=4)
    fwd = fc.conv_spec(x, _arr((2, 2, 3, 3), "float64"), **kw)
    dy = rng.standard_normal(fwd.output_shape)
    dy[0, 1, 0, 0] = np.inf
    spec = _spec.conv_weight_spec(x, (2, 2, 3, 3), dy, **kw)
    assert spec.is_padded and not np.isfinite(dy).all()
    dw = fc.grad.conv2d_weight(x, (2, 2, 3, 3), dy, backend="cuda-emu", **kw)
    with np.errstate(invalid="ignore"):
        assert_grad_close(dw, spec, x, dy)


# ---------------------------------------------------------------------------------------------------
# Item 10: both bounds of every 32-bit field
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("divisor", (-2**31 - 1, 2**31, -2**40, 2**40))
def test_divisor_override_past_int32_is_a_reason_not_an_overflow(divisor):
    x = np.ones((1, 1, 4, 4), np.float32)
    spec = fc.pool_spec("avg", x, kernel_size=2, divisor_override=divisor)
    for backend in BACKENDS:
        cands = [i for i in _dispatch.candidates(spec, backend) if 2 in i.spatial_dims]
        assert cands and all(any("divisor_override" in r and "32-bit" in r for r in _dispatch.reasons(i, spec))
                             for i in cands)
    with pytest.raises(ValueError, match="divisor_override"):
        fc.avg_pool2d(x, 2, divisor_override=divisor, backend="cuda-emu")
    dy = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="divisor_override"):
        fc.grad.avg_pool2d(dy, x, 2, divisor_override=divisor, backend="cuda-emu")


@pytest.mark.parametrize("divisor", (-2**31, 2**31 - 1))
def test_divisor_override_at_the_int32_bounds_runs(divisor):
    _emu_or_skip()
    x = np.full((1, 1, 4, 4), 2.0**30)
    y = fc.avg_pool2d(x, 2, divisor_override=divisor, backend="cuda-emu")
    np.testing.assert_allclose(y, np.full((1, 1, 2, 2), 4 * 2.0**30 / divisor), rtol=1e-12)


def test_the_param_structs_refuse_out_of_range_values_by_name():
    """The struct builder itself names the field (a plan built without its family's reasons never hits NumPy's
    OverflowError)."""
    spec = fc.pool_spec("avg", np.ones((1, 1, 4, 4), np.float32), kernel_size=2, divisor_override=-2**31 - 1)
    with pytest.raises(ValueError, match="divisor_override = -2147483649"):
        P.pool_params(spec)
    assert P.field_overflow(spec) == ["divisor_override = -2147483649 is beyond the kernels' 32-bit parameter "
                                      "fields"]
