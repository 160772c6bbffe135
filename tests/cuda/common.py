"""What the CUDA family tests share: targets (the emulator in three thread orders, and the GPU), running a
plan on a target, the conv cases several families run, and the oracle by pool kind.

Expected values come only from the oracle (fastconv._backends.numpy_oracle); tolerances scale with the
reduction length (fastconv.testing).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _config, _cuda, _dispatch
from fastconv._backends import numpy_oracle as oracle
from fastconv._cuda.plan import inputs_for
from fastconv.testing import to_numpy

DTYPES = ("float16", "float32", "float64")
#: (backend, emulator thread order); the GPU has its own order
TARGETS = [("cuda-emu", "forward"), ("cuda-emu", "reverse"), ("cuda-emu", "random"), ("cuda", None)]


def target_id(t):
    return t[0] if t[1] is None else f"{t[0]}-{t[1]}"


def gpu_setup_or_skip(backend, why):
    """On a GPU: honour FASTCONV_CUPY_NO_POOL=1 (plain cudaMalloc per array, so compute-sanitizer sees
    every buffer's real bounds). Without one: skip, or fail when FASTCONV_REQUIRE_GPU=1
    (tools/gpu_validate.sh sets it, so a GPU run can never pass by skipping)."""
    if backend != "cuda":
        return
    if why is not None and _config.flag("FASTCONV_REQUIRE_GPU"):
        pytest.fail(f"FASTCONV_REQUIRE_GPU=1 but backend 'cuda' is unavailable: {why}")
    if why is None and _config.flag("FASTCONV_CUPY_NO_POOL"):
        import cupy
        cupy.cuda.set_allocator(None)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def first_variant(fam, spec) -> str:
    """The variant dispatch would try first for ``spec`` (the first whose predicate admits it)."""
    for v in fam.VARIANTS:
        if not fam.reasons(spec, v):
            return v
    raise AssertionError(f"no variant of {fam.__name__} takes {spec}")


def run_plan(target, spec, plan, arrays, misalign=False, seed=1234):
    """Run a launch plan on the target; NumPy results. ``misalign``: on the GPU, place each input one
    element into its buffer (on the emulator the NumPy arrays passed in are used as they are)."""
    backend, order = target
    inputs = inputs_for(spec, arrays)
    if backend == "cuda-emu":
        from fastconv._backends import cuda_emu
        return cuda_emu.execute(plan, inputs, order=order, seed=seed)
    import cupy

    from fastconv._backends import cuda

    def dev(a):
        if not misalign:
            return cupy.asarray(a)
        buf = cupy.empty(a.size + 1, a.dtype)
        buf[1:] = cupy.asarray(a.ravel())
        return buf[1:].reshape(a.shape)
    out = cuda.execute(plan, {k: dev(v) for k, v in inputs.items()})
    cupy.cuda.get_current_stream().synchronize()
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


def run_family(target, name, spec, arrays, *, variant=None, version=None, seed=1234):
    """Run family ``name``'s plan for ``spec`` (its first admitting variant unless one is named)."""
    fam = _cuda.family(name)
    variant = first_variant(fam, spec) if variant is None else variant
    return run_plan(target, spec, fam.plan(spec, variant, version), arrays, seed=seed)


def public(backend, fn, x, *args, **kw):
    """A public function on ``backend`` with NumPy arrays in and out (CuPy copies for "cuda")."""
    if _dispatch.BACKENDS[backend].array_kind == "cupy":
        import cupy
        x = cupy.asarray(x)
        args = tuple(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
    out = fn(x, *args, backend=backend, **kw)
    return tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)


def pool_ref(spec, x):
    return {"max": oracle.max_pool, "avg": oracle.avg_pool, "adaptive_max": oracle.adaptive_max_pool,
            "adaptive_avg": oracle.adaptive_avg_pool}[spec.kind](spec, x)


# ---------------------------------------------------------------------------------------------------
# Conv cases the direct, im2col and implicit-GEMM families all run
# ---------------------------------------------------------------------------------------------------
#: name -> (x shape, w shape, bias?, conv kwargs, spatial dims). Small, but covering: several tiles and
#: partial tiles in p, q, k and c (direct v2: 8x16 outputs, 8 channels, 4 input channels per stage;
#: GEMM v2: 64x64 tiles, BK 8), stride, asymmetric padding, dilation, groups, depthwise, 1-D, no bias.
CONV_CASES = {
    "basic": ((2, 4, 9, 11), (6, 4, 3, 3), True, dict(padding=1), 2),
    "strided_asym_dilated_groups": ((2, 4, 9, 11), (6, 2, 3, 3), True,
                                    dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2), 2),
    "depthwise": ((1, 4, 10, 10), (8, 1, 3, 3), False, dict(padding=1, groups=4), 2),
    "multi_tile": ((1, 5, 19, 35), (70, 5, 2, 3), True, dict(stride=1, padding=((0, 1), (1, 1))), 2),
    "conv1d": ((2, 3, 20), (5, 3, 5), True, dict(stride=2, padding=2), 1),
}


def conv_problem(case, dtype, seed=0):
    xs, ws, has_b, kw, nd = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
    b = rand(rng, (ws[0],), dtype) if has_b else None
    spec = fastconv.conv_spec(x, w, b, spatial_dims=nd, **kw)
    return spec, (x.reshape(spec.input_shape), w.reshape(spec.weight_shape), b)


def fuzz_examples(ci: int, long: int) -> int:
    """Hypothesis examples per test: FASTCONV_FUZZ_EXAMPLES, else the profile's default."""
    n = _config.get("FASTCONV_FUZZ_EXAMPLES")
    return int(n) if n else (long if fuzz_long() else ci)


def fuzz_long() -> bool:
    return (_config.get("FASTCONV_FUZZ") or "ci") == "long"



def check_version_matches_oracle(target, family: str, version, case: str, dtype: str) -> None:
    """One kernel version of a conv family on one CONV_CASES case against the oracle."""
    spec, arrays = conv_problem(case, dtype)
    out = run_family(target, family, spec, arrays, version=version)
    assert out.dtype == np.dtype(dtype)
    from fastconv.testing import assert_conv_close
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)


def check_int64_instantiations(target, family: str, version, dtype: str) -> None:
    """With 64-bit indexing forced (fixture ``index64``), every launch of the version is the ``long long``
    instantiation and the result still matches the oracle."""
    spec, arrays = conv_problem("strided_asym_dilated_groups", dtype, seed=1)
    fam = _cuda.family(family)
    plan = fam.plan(spec, first_variant(fam, spec), version)
    assert all(", long long" in lc.kernel for lc in plan.launches)
    out = run_family(target, family, spec, arrays, version=version)
    from fastconv.testing import assert_conv_close
    assert_conv_close(out, oracle.conv(spec, *arrays), spec, *arrays)
