"""The numba backend's Winograd F(4x4, 3x3) conv (``numba:conv:winograd/f4x4``): its matrices against the
1-D definition, its results against the oracle within ``fastconv.testing``'s bound (which takes the
Winograd bound for exactly these problems), its reasons, its workspace, its kernels' records and warmup."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

numba = pytest.importorskip("numba")
hypothesis = pytest.importorskip("hypothesis")

import fastconv  # noqa: E402
from fastconv import _dispatch, _spec, _warmup, grad, testing  # noqa: E402
from fastconv._backends import _winograd_f4x4 as mats  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._backends import numpy_oracle as oracle  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAME = "numba:conv:winograd/f4x4"
PHASES = "numba:conv:winograd/f4x4-phases"


def _impl(name=NAME):
    (impl,) = [i for i in numba_cpu.implementations() if i.name == name]
    return impl


def _rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------
# The matrices
# ---------------------------------------------------------------------------------------------------
def test_f43_matrices_compute_the_1d_correlation():
    """A^T [(G g) * (B^T d)] equals y[i] = sum_r g[r] d[i + r] (a loop, float64) on random vectors, and
    the 2-D nesting equals the 4x4 valid correlation of a 6x6 tile."""
    rng = _rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        y = [sum(g[r] * d[i + r] for r in range(3)) for i in range(4)]
        np.testing.assert_allclose(mats.AT @ ((mats.G @ g) * (mats.BT @ d)), y, rtol=1e-12, atol=1e-12)
        d2, g2 = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
        Y = [[sum(g2[r, s] * d2[i + r, j + s] for r in range(3) for s in range(3)) for j in range(4)]
             for i in range(4)]
        got = mats.AT @ ((mats.G @ g2 @ mats.G.T) * (mats.BT @ d2 @ mats.BT.T)) @ mats.AT.T
        np.testing.assert_allclose(got, Y, rtol=1e-12, atol=1e-12)


def test_factored_kernels_apply_the_matrices():
    """The kernels' factored 1-D transforms (bt6, at6, g3, run as Python) equal the matrices'."""
    from fastconv._backends import _numba_winograd as wk
    rng = _rng(1)
    for _ in range(10):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        np.testing.assert_allclose(wk.bt6.py_func(*d), mats.BT @ d, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(wk.at6.py_func(*d), mats.AT @ d, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(wk.g3.py_func(*g), mats.G @ g, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------------------------------------
# Against the oracle
# ---------------------------------------------------------------------------------------------------
def _check(x, w, b, name=NAME, **kw):
    xc, wc = x.copy(), w.copy()
    spec = _spec.conv_spec(x, w, b, **kw)
    assert _dispatch.select(spec, "numba", "winograd", weight=w).name == name
    out = fastconv.conv2d(x, w, b, backend="numba", algo="winograd", **kw)
    ref = oracle.conv64(spec, x.astype(np.float64), w.astype(np.float64),
                        None if b is None else b.astype(np.float64)).reshape(out.shape)
    assert out.dtype == x.dtype
    testing.assert_conv_close(out, ref, spec, x, w, b)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(w, wc)
    return out, ref


_pads = st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                  st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                            st.tuples(st.integers(0, 2), st.integers(0, 2))))


@settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 3), C=st.integers(1, 7), K=st.integers(1, 6), H=st.integers(1, 13), W=st.integers(1, 13),
       pad=_pads, bias=st.booleans(), dtype=st.sampled_from(["float32", "float64", "float16"]),
       seed=st.integers(0, 2**16))
def test_matches_the_oracle(N, C, K, H, W, pad, bias, dtype, seed):
    pairs = [(pad, pad)] * 2 if isinstance(pad, int) else [p if isinstance(p, tuple) else (p, p) for p in pad]
    (pt, pb), (pl, pr) = pairs
    hypothesis.assume(H + pt + pb >= 3 and W + pl + pr >= 3)
    rng = _rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    _check(x, w, b, padding=pad)


def test_adversarial_magnitudes_and_several_chunks(monkeypatch):
    """Mixed signs and magnitudes over 1e-3..1e3 (where the direct bound does not hold for Winograd: the
    bound in use is the Winograd one), and chunks of one tile row, so the last chunk is partial."""
    monkeypatch.setattr(numba_cpu, "WINOGRAD_CHUNK_BYTES", 1)
    rng = _rng(3)
    x = (np.sign(rng.standard_normal((3, 5, 10, 9))) * 10.0 ** rng.uniform(-3, 3, (3, 5, 10, 9))).astype(np.float32)
    w = (np.sign(rng.standard_normal((4, 5, 3, 3))) * 10.0 ** rng.uniform(-3, 3, (4, 5, 3, 3))).astype(np.float32)
    spec = _spec.conv_spec(x, w, padding=1)
    assert numba_cpu.winograd_plan(spec)[2] == 1
    _check(x, w, None, padding=1)


@pytest.mark.parametrize("shape, whole, workers", [
    ((2, 32, 6, 6, 32), True, 1),      # small images, many channels: the whole batch, on the caller
    ((2, 40, 9, 9, 37), True, 2),      # the same on the GEMM workers, uneven blocks of channels
    ((4, 8, 24, 23, 8), False, 2),     # large images, few channels: chunks of tile rows on the workers
])
@pytest.mark.parametrize("small_blocks", [False, True])
def test_both_plans_on_the_caller_and_the_workers(shape, whole, workers, small_blocks, monkeypatch):
    """The whole-batch plan (V by blocks of input channels, then U, the GEMMs and the outputs per block of
    output channels; ``small_blocks``: blocks of 3 channels, as WINOGRAD_BLOCK_BYTES makes for many input
    channels) and the chunked one each match the oracle, with bias and an uneven padding."""
    N, C, H, W, K = shape
    if small_blocks:
        monkeypatch.setattr(numba_cpu, "WINOGRAD_BLOCK_BYTES", 36 * C * 4 * 3)
    if workers > 1 and numba_cpu.gemm_workers(_spec.conv_spec(np.zeros(shape[:4], np.float32),
                                                              np.zeros((K, C, 3, 3), np.float32))) < 2:
        pytest.skip("needs 2 Numba threads and OpenBLAS")
    rng = _rng(11)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    spec = _spec.conv_spec(x, w, b, padding=((1, 2), (0, 1)))
    assert numba_cpu._winograd_whole_batch(spec) is whole
    assert numba_cpu.gemm_workers(spec) == workers
    if whole:
        blocks = numba_cpu._winograd_kblocks(spec)
        assert [k for blk in blocks for k in range(*blk)] == list(range(K))
        assert max(k1 - k0 for k0, k1 in blocks) == (3 if small_blocks else -(-K // len(blocks)))
    _check(x, w, b, padding=((1, 2), (0, 1)))


@settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 2), C=st.integers(1, 4), K=st.integers(1, 4), H=st.integers(1, 12), W=st.integers(1, 12),
       pads=st.tuples(*[st.integers(0, 4)] * 4), dil=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_dilated_convs_by_their_phases_match_the_oracle(N, C, K, H, W, pads, dil, bias, seed):
    """A dilated 3x3 conv runs winograd/f4x4-phases (its phase images stacked, one undilated Winograd conv):
    every padding and dilation, phases of unequal lengths and leads, within the bound of its phases."""
    pt, pb, pl, pr = pads
    hypothesis.assume(dil != (1, 1))
    hypothesis.assume(H + pt + pb >= 3 * dil[0] and W + pl + pr >= 3 * dil[1])     # every phase has outputs
    rng = _rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if bias else None
    _check(x, w, b, name=PHASES, padding=((pt, pb), (pl, pr)), dilation=dil)


def test_dilation_past_the_output_is_refused_by_reason():
    """A dilation larger than the output along an axis would stack phases without outputs (10^12 of them for
    the dilation below): refused by a reason, before any phase is counted; the direct kernels take it."""
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    spec = _spec.conv_spec(x, w, None, 1, 10**6, 10**6)
    assert _dispatch.reasons(_impl(PHASES), spec) == [
        "dilation (1000000, 1000000) against a 6x6 output: a phase without outputs (a dilation at "
        "most the output's size along each dilated axis)"]
    with pytest.raises(ValueError, match="a phase without outputs"):
        fastconv.conv2d(x, w, padding=10**6, dilation=10**6, backend="numba", algo="winograd")
    ok = _spec.conv_spec(x, w, None, 1, 2, 2)          # P = Q = 6 >= 2
    assert _dispatch.reasons(_impl(PHASES), ok) == []


def test_dilated_phases_give_the_definitions_nonfinite_pattern():
    """Inf and NaN inputs in a dilated, padded conv: the oracle's pattern. A non-finite weight meeting the
    padding makes dispatch refuse the phases (their zeros stand for the padding and meet the weight)."""
    rng = _rng(12)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x[0, 1, 4, 5], x[1, 2, 0, 0], x[1, 0, 7, 3] = np.inf, np.nan, -np.inf
    out, ref = _check(x, w, None, name=PHASES, padding=2, dilation=2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    w[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="f4x4-phases"):
        fastconv.conv2d(x[:, :, :8], w, padding=2, dilation=2, backend="numba", algo="winograd")


def test_public_layouts_noncontiguous_and_unbatched():
    rng = _rng(4)
    x = rng.standard_normal((2, 3, 11, 14)).astype(np.float32)[:, :, :, ::2]      # non-contiguous
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    got = fastconv.conv2d(x, w, padding=1, backend="numba", algo="winograd")
    ref = fastconv.conv2d(x, w, padding=1, backend="numpy")
    spec = _spec.conv_spec(x, w, padding=1)
    testing.assert_conv_close(got, ref, spec, x, w)
    one = fastconv.conv2d(x[0], w, padding=1, backend="numba", algo="winograd")   # unbatched
    assert one.shape == ref.shape[1:]
    np.testing.assert_array_equal(one, got[0])


def test_nonfinite_values_give_the_definitions_pattern():
    """An Inf or NaN in the input or the weight (padded problem) gives exactly the oracle's NaN/Inf pattern:
    the tiles they spread into are summed again directly, padded taps never meeting the weight."""
    rng = _rng(5)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x[0, 1, 4, 5] = np.inf
    x[1, 0, 0, 0] = np.nan
    _check(x, w, None, padding=1)
    x2 = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    w2 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w2[1, 0, 0, 0] = np.inf
    out, ref = _check(x2, w2, None, padding=1)
    assert np.isfinite(out[0, 1, 0, :]).all() and np.isinf(out[0, 1, 1:, 1:]).all()   # the tap in the padding


def test_the_winograd_bound_is_what_conv_tolerance_uses_exactly_for_its_problems():
    rng = _rng(6)
    x = rng.standard_normal((1, 4, 8, 8))
    w = rng.standard_normal((2, 4, 3, 3))
    spec = _spec.conv_spec(x, w, padding=1)
    assert testing.winograd_applies(spec)
    np.testing.assert_array_equal(testing.conv_tolerance(spec, x, w), np.maximum(
        testing._direct_tolerance(spec, x, w), testing.winograd_tolerance(spec, x, w)))
    dilated = _spec.conv_spec(x, w, padding=2, dilation=2)
    assert testing.winograd_applies(dilated)
    np.testing.assert_array_equal(testing.conv_tolerance(dilated, x, w), np.maximum(
        testing._direct_tolerance(dilated, x, w), testing.winograd_tolerance(dilated, x, w)))
    for kw, ww in (({"stride": 2}, w), ({}, w[:, :, :2, :2]), ({"groups": 2}, w[:, :2])):
        other = _spec.conv_spec(x, ww, padding=1, **kw)
        assert not testing.winograd_applies(other)
        np.testing.assert_array_equal(testing.conv_tolerance(other, x, ww), testing._direct_tolerance(other, x, ww))


def test_the_bound_is_the_absolute_computation_of_one_tile():
    """winograd_tolerance's magnitude, for one 4x4 tile, equals the formula written out with the matrices'
    absolute values (n = C + 20, slack 2, float64)."""
    rng = _rng(7)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((1, 2, 3, 3))
    spec = _spec.conv_spec(x, w)
    B, G, A = np.abs(mats.BT), np.abs(mats.G), np.abs(mats.AT)
    mag = sum(A @ ((G @ np.abs(w[0, c]) @ G.T) * (B @ np.abs(x[0, c]) @ B.T)) @ A.T for c in range(2))
    u = np.finfo(np.float64).eps
    expect = 2 * (2 + 20) * u * mag + u * mag + np.finfo(np.float64).tiny
    np.testing.assert_allclose(testing.winograd_tolerance(spec, x, w)[0, 0], expect, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Reasons, selection, workspace
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, wshape, xshape, why", [
    ({"stride": 2}, (2, 3, 3, 3), (1, 3, 8, 8), "stride (2, 2): Winograd tiles need stride 1"),
    ({}, (2, 3, 5, 5), (1, 3, 8, 8), "a 5x5 filter: F(4x4, 3x3) takes 3x3 only"),
    ({"groups": 3}, (3, 1, 3, 3), (1, 3, 8, 8), "groups=3"),
])
def test_unsupported_problems_are_refused_with_their_reason(kw, wshape, xshape, why):
    x, w = np.zeros(xshape, np.float32), np.zeros(wshape, np.float32)
    spec = _spec.conv_spec(x, w, padding=1, **kw)
    assert any(r.startswith(why) for r in _dispatch.reasons(_impl(), spec))
    with pytest.raises(ValueError, match=re.escape(f"{NAME}: {why}")):
        fastconv.conv2d(x, w, padding=1, backend="numba", algo="winograd", **kw)


def test_other_problems_and_backends_refuse_winograd_by_name():
    x1, w1 = np.zeros((1, 3, 9), np.float32), np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="a 1x3 filter"):
        fastconv.conv1d(x1, w1, backend="numba", algo="winograd")
    x3, w3 = np.zeros((1, 2, 5, 5, 5), np.float32), np.zeros((2, 2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="3-D problems not supported"):
        fastconv.conv3d(x3, w3, backend="numba", algo="winograd")
    x, w = np.zeros((1, 2, 6, 6), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    for backend in ("numpy", "cuda-emu"):
        with pytest.raises(ValueError, match="has no conv implementation with algo='winograd'"):
            fastconv.conv2d(x, w, backend=backend, algo="winograd")
    pool = _spec.pool_spec("max", x, 2)
    with pytest.raises(ValueError, match="algo must be one of 'auto', 'direct', got 'winograd'"):
        _dispatch.select(pool, "numba", "winograd")
    assert "winograd" in _dispatch.ALGOS


def test_the_workspace_cap_refuses():
    """A batch too large to transform at once goes in chunks, which need the whole U (36 x 2048 x 2048
    values, 604 MB); for small images U is made per block of output channels and stays small."""
    x = np.broadcast_to(np.zeros((), np.float32), (1, 2048, 256, 256))     # shapes only: nothing allocated
    w = np.broadcast_to(np.zeros((), np.float32), (2048, 2048, 3, 3))
    spec = _spec.conv_spec(x, w, padding=1)
    r = _dispatch.reasons(_impl(), spec)
    assert len(r) == 1 and "passes the backend's cap" in r[0] and "transformed filter U" in r[0]


def test_workspace_matches_what_a_run_allocates(monkeypatch):
    """NumbaImpl.workspace(spec) names the bytes conv_winograd allocates (the in-kernel per-thread tile rows
    through reserve), float16 counted in float32 as it runs."""
    seen = {}
    real_ws, real_reserve = numba_cpu.workspace, numba_cpu.reserve

    def spy_ws(what, shape, dtype, zero=False):
        a = real_ws(what, shape, dtype, zero)
        seen[what] = a.nbytes
        return a

    def spy_reserve(nbytes, what):
        seen[what] = nbytes
        return real_reserve(nbytes, what)

    monkeypatch.setattr(numba_cpu, "workspace", spy_ws)
    monkeypatch.setattr(numba_cpu, "reserve", spy_reserve)
    rng = _rng(8)
    for dtype in ("float32", "float16"):
        seen.clear()
        x = rng.standard_normal((2, 5, 9, 11)).astype(dtype)
        w = rng.standard_normal((3, 5, 3, 3)).astype(dtype)
        fastconv.conv2d(x, w, padding=1, backend="numba", algo="winograd")
        ws = _impl().workspace(_spec.conv_spec(x, w, padding=1))
        assert sorted(seen.values()) == sorted(ws.values()), (seen, ws)


def test_auto_and_rule_choice():
    """The rule (small problems, FASTCONV_AUTOTUNE=0) runs a direct kernel; auto may measure winograd."""
    x, w = np.zeros((1, 4, 8, 8), np.float32), np.zeros((4, 4, 3, 3), np.float32)
    spec = _spec.conv_spec(x, w, padding=1)
    supported = [i for i in _dispatch.candidates(spec, "numba") if not _dispatch.reasons(i, spec)]
    assert NAME in [i.name for i in supported]
    assert numba_cpu.rule_choice(supported).algo == "direct"


def test_kernels_take_their_records_and_run_in_parallel():
    k = numba_cpu.kernels()
    rng = _rng(9)
    for dtype in ("float32", "float64"):
        fastconv.conv2d(rng.standard_normal((1, 2, 5, 5)).astype(dtype),
                        rng.standard_normal((2, 2, 3, 3)).astype(dtype), padding=1, backend="numba", algo="winograd")
        x, dy = rng.standard_normal((1, 2, 5, 5)).astype(dtype), rng.standard_normal((1, 2, 5, 5)).astype(dtype)
        x[0, 0, 2, 2] = np.inf          # the weight gradient's direct re-sum too
        grad.conv2d_weight(x, (2, 2, 3, 3), dy, padding=1, backend="numba", algo="winograd")
    for name, (record, parallel) in k.WINOGRAD_KERNELS.items():
        kernel = getattr(k, name)
        assert {str(s[0].dtype) for s in kernel.signatures} >= {"float32", "float64"}, name
        assert kernel.targetoptions.get("parallel") is parallel, name
        params = list(inspect.signature(kernel.py_func).parameters)
        if record is None:
            assert "geo" not in params
            continue
        pos = params.index("geo")
        for sig in kernel.signatures:
            assert isinstance(sig[pos], numba.types.BaseNamedTuple) and sig[pos].instance_class is record, name
    assert "_numba_winograd" in k.MODULES


def test_warmup_reaches_the_winograd_kernels():
    p = _warmup.plan("numba", ops=["conv"])
    items = [it for it in p.items if it.impl.name == NAME]
    assert {it.spec.dtype for it in items} == {"float32", "float64"}
    assert {it.spec.N for it in items} == {1, 2}
