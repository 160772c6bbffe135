"""The CUDA families through dispatch and the public API, on "cuda-emu" and (when there is one) "cuda":
the registry's protocol, Impl names that say which kernel runs, support checks and runs sharing one plan,
priority order, and every op end to end against the oracle."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv.testing import assert_conv_close, assert_pool_close

from .common import DTYPES, oracle, pool_ref, public, rand


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------
def test_every_family_follows_the_protocol():
    files = set()
    for fam in _cuda.FAMILIES:
        name = fam.__name__.rsplit(".", 1)[1]
        assert _cuda.family(name) is fam and _cuda.by_file(fam.FILE) is fam
        assert fam.FILE.endswith(".cu") and fam.FILE not in files, name
        files.add(fam.FILE)
        assert fam.ALGO in _dispatch.ALGOS[1:] and fam.OPS and set(fam.DTYPES) <= {"float16", "float32", "float64"}
        assert set(getattr(fam, "VARIANT_ALGOS", {})) <= set(fam.VARIANTS)
        assert set(getattr(fam, "VARIANT_ALGOS", {}).values()) <= set(_dispatch.ALGOS[1:])
        assert fam.VARIANTS and len(set(fam.VARIANTS)) == len(fam.VARIANTS) and fam.VERSIONS
        assert isinstance(fam.ZERO_FILLS_PADDING, bool) and callable(fam.reasons) and callable(fam.plan)
        assert _cuda.name_expressions(fam.FILE), name
    import os
    from fastconv._cuda.plan import kernels_dir
    assert files == {f for f in os.listdir(kernels_dir()) if f.endswith(".cu")}   # every .cu has a family


def test_one_impl_per_family_op_and_variant_in_priority_order():
    impls = _cuda.implementations("cuda-emu", lambda plan, inputs: None)
    want = [(getattr(fam, "VARIANT_ALGOS", {}).get(v, fam.ALGO), op, v)
            for fam in _cuda.FAMILIES for op in fam.OPS for v in fam.VARIANTS]
    assert [(i.algo, i.op, i.variant) for i in impls] == want
    names = [i.name for i in impls]
    assert len(set(names)) == len(names)
    assert "cuda-emu:conv:implicit_gemm/128x64" in names and "cuda-emu:conv:im2col" in names
    assert "cuda-emu:max_pool:direct/global" in names
    assert _cuda.implementations("cuda-emu", impls[0]._execute) is impls   # built once


def test_support_check_and_run_share_one_plan():
    """What the check approved is what runs: the plan a run executes is the very object the check built,
    and a refused problem has no plan to run."""
    ran = []
    impls = _cuda.implementations("cuda-emu", lambda plan, inputs: ran.append(plan) or "y")
    direct = next(i for i in impls if i.name == "cuda-emu:conv:direct")
    x, w = np.zeros((1, 2, 9, 9), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    spec = fastconv.conv_spec(x, w, padding=1)
    assert direct.not_supported_reasons(spec) == []
    plan = direct.plan(spec)
    assert direct.run(spec, x, w, None) == "y" and ran == [plan] and direct.plan(spec) is plan
    big = fastconv.conv_spec(np.zeros((1, 1, 130, 140), np.float32), np.zeros((1, 1, 31, 31), np.float32),
                             dilation=4)
    why = direct.not_supported_reasons(big)
    assert why and "shared memory" in why[0]
    with pytest.raises(ValueError, match="cuda-emu:conv:direct cannot run this problem: .*shared memory"):
        direct.run(big, None, None, None)


def test_priority_order_without_measuring(monkeypatch):
    """cuda-emu never measures: the first supported candidate in priority order runs, and its name says
    which kernel (and tile) that is."""
    if _dispatch.availability("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    def pick(x, w, **kw):
        spec = fastconv.conv_spec(np.zeros(x, np.float32), np.zeros(w, np.float32), **kw)
        return _dispatch.select(spec, "cuda-emu").name
    assert pick((1, 4, 8, 8), (4, 1, 3, 3), groups=4, padding=1) == "cuda-emu:conv:depthwise/3x3s1"
    assert pick((1, 4, 8, 8), (4, 1, 3, 3), groups=4, stride=2) == "cuda-emu:conv:depthwise/3x3s2"
    assert pick((1, 4, 8, 8), (4, 1, 5, 5), groups=4) == "cuda-emu:conv:depthwise/any"
    assert pick((1, 4, 8, 8), (6, 4, 3, 3)) == "cuda-emu:conv:implicit_gemm/128x128"
    spec64 = fastconv.conv_spec(np.zeros((1, 4, 8, 8)), np.zeros((6, 4, 3, 3)))
    assert _dispatch.select(spec64, "cuda-emu").name == "cuda-emu:conv:im2col"     # no float64 implicit GEMM
    assert _dispatch.select(spec64, "cuda-emu", "direct").name == "cuda-emu:conv:direct"


# ---------------------------------------------------------------------------------------------------
# The public API end to end
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_conv(backend, algo, dtype):
    rng = np.random.default_rng(5)
    x, w, b = rand(rng, (2, 4, 7, 8), dtype), rand(rng, (6, 2, 3, 3), dtype), rand(rng, (6,), dtype)
    kw = dict(stride=(1, 2), padding=((1, 1), (0, 2)), dilation=1, groups=2)
    out = public(backend, fastconv.conv2d, x, w, b, algo=algo, **kw)
    spec = fastconv.conv_spec(x, w, b, **kw)
    assert out.dtype == np.dtype(dtype) and out.shape == spec.output_shape
    assert_conv_close(out, oracle.conv(spec, x, w, b), spec, x, w, b)
    # unbatched 1-D
    x1, w1 = rand(rng, (3, 12), dtype), rand(rng, (4, 3, 3), dtype)
    out1 = public(backend, fastconv.conv1d, x1, w1, algo=algo, padding="same")
    spec1 = fastconv.conv_spec(x1, w1, padding="same", spatial_dims=1)
    ref1 = oracle.conv(spec1, x1.reshape(spec1.input_shape), w1.reshape(spec1.weight_shape)).reshape(out1.shape)
    assert_conv_close(out1, ref1, spec1, x1.reshape(spec1.input_shape), w1.reshape(spec1.weight_shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_pools(backend, dtype):
    x = rand(np.random.default_rng(6), (2, 3, 9, 8), dtype)
    calls = [
        (fastconv.max_pool2d, "max", dict(kernel_size=3, stride=2, padding=1, return_indices=True), 2),
        (fastconv.avg_pool2d, "avg", dict(kernel_size=2, ceil_mode=True, count_include_pad=False), 2),
        (fastconv.adaptive_avg_pool2d, "adaptive_avg", dict(output_size=(4, None)), 2),
        (fastconv.adaptive_max_pool2d, "adaptive_max", dict(output_size=3, return_indices=True), 2),
        (fastconv.max_pool1d, "max", dict(kernel_size=3, padding=1), 1),
        (fastconv.avg_pool1d, "avg", dict(kernel_size=4, stride=2), 1),
        (fastconv.adaptive_avg_pool1d, "adaptive_avg", dict(output_size=5), 1),
        (fastconv.adaptive_max_pool1d, "adaptive_max", dict(output_size=5, return_indices=True), 1),
    ]
    for fn, kind, kw, nd in calls:
        xi = x if nd == 2 else x[:, :, 0, :]
        out = public(backend, fn, xi, **kw)
        skw = dict(kw)
        if "output_size" in skw:
            skw["output_size_"] = skw.pop("output_size")
        spec = fastconv.pool_spec(kind, xi, spatial_dims=nd, **skw)
        ref = pool_ref(spec, xi.reshape(spec.input_shape))
        ref = tuple(r.reshape(spec.output_shape) for r in ref) if isinstance(ref, tuple) \
            else ref.reshape(spec.output_shape)
        assert_pool_close(out, ref, spec, xi)
