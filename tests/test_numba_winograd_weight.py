"""The numba backend's Winograd F(3x3, 4x4) weight gradient (``numba:conv_weight:winograd/f4x4``): its
transforms against the 1-D definition, its results against the oracle within ``fastconv.testing``'s bound
(which takes the Winograd weight bound for exactly these problems), chunks and workers, the non-finite
pattern, its reasons, its kernels' records and warmup."""
from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")
hypothesis = pytest.importorskip("hypothesis")

from fastconv import _dispatch, _spec, _warmup, grad, testing  # noqa: E402
from fastconv._backends import _winograd_f4x4 as mats  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAME = "numba:conv_weight:winograd/f4x4"
PHASES = "numba:conv_weight:winograd/f4x4-phases"


def _rng(seed):
    return np.random.default_rng(seed)


def _impl(name=NAME):
    (impl,) = [i for i in numba_cpu.implementations() if i.name == name]
    return impl


def test_f34_transforms_compute_the_weight_gradients_correlation():
    """G^T [(A dy) * (B^T d)] equals dw[r] = sum_i dy[i] d[i + r] (a loop, float64) for a 4-value dy and a
    6-value window d, A = (A^T)^T; and the 2-D nesting equals the 3x3 sums of a 4x4 dy tile over a 6x6
    window."""
    rng = _rng(0)
    A = mats.AT.T
    for _ in range(20):
        d, g = rng.standard_normal(6), rng.standard_normal(4)
        dw = [sum(g[i] * d[i + r] for i in range(4)) for r in range(3)]
        np.testing.assert_allclose(mats.G.T @ ((A @ g) * (mats.BT @ d)), dw, rtol=1e-12, atol=1e-12)
        d2, g2 = rng.standard_normal((6, 6)), rng.standard_normal((4, 4))
        dw2 = [[sum(g2[i, j] * d2[i + r, j + s] for i in range(4) for j in range(4)) for s in range(3)]
               for r in range(3)]
        got = mats.G.T @ ((A @ g2 @ A.T) * (mats.BT @ d2 @ mats.BT.T)) @ mats.G
        np.testing.assert_allclose(got, dw2, rtol=1e-12, atol=1e-12)


def test_factored_kernels_apply_the_matrices():
    from fastconv._backends import _numba_winograd_weight as wk
    rng = _rng(1)
    for _ in range(10):
        y, m = rng.standard_normal(4), rng.standard_normal(6)
        np.testing.assert_allclose(wk.a6.py_func(*y), mats.AT.T @ y, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(wk.gt6.py_func(*m), mats.G.T @ m, rtol=1e-13, atol=1e-13)


def _check(x, dy, name=NAME, **kw):
    xc, dyc = x.copy(), dy.copy()
    size = (dy.shape[1], x.shape[1], 3, 3)
    spec = _spec.conv_weight_spec(x, size, dy, **kw)
    assert _dispatch.select(spec, "numba", "winograd", weight=dy).name == name
    out = grad.conv2d_weight(x, size, dy, backend="numba", algo="winograd", **kw)
    assert out.dtype == x.dtype and out.shape == size
    testing.assert_grad_close(out, spec, x, dy)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(dy, dyc)
    return out, spec


def _dy_for(x, K, **kw):
    return _spec.conv_spec(x, np.zeros((K, x.shape[1], 3, 3), x.dtype), **kw).output_shape


_pads = st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                  st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                            st.tuples(st.integers(0, 2), st.integers(0, 2))))


@settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 3), C=st.integers(1, 6), K=st.integers(1, 6), H=st.integers(1, 13), W=st.integers(1, 13),
       pad=_pads, dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_matches_the_oracle(N, C, K, H, W, pad, dtype, seed):
    pairs = [(pad, pad)] * 2 if isinstance(pad, int) else [p if isinstance(p, tuple) else (p, p) for p in pad]
    (pt, pb), (pl, pr) = pairs
    hypothesis.assume(H + pt + pb >= 3 and W + pl + pr >= 3)
    rng = _rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    dy = rng.standard_normal(_dy_for(x, K, padding=pad)).astype(dtype)
    _check(x, dy, padding=pad)


@pytest.mark.parametrize("chunk_bytes", [1, None])
@pytest.mark.parametrize("threads", [1, 2])
def test_chunks_and_workers(chunk_bytes, threads, monkeypatch):
    """One tile row per chunk (each later chunk's GEMMs added to M) or one chunk, on the caller alone or on
    the GEMM workers: within the bound, and the same bits whoever ran which block (the sums' order is
    fixed by the chunks)."""
    if chunk_bytes:
        monkeypatch.setattr(numba_cpu, "WINOGRAD_WEIGHT_CHUNK_BYTES", chunk_bytes)
    rng = _rng(2)
    x = rng.standard_normal((3, 5, 11, 13)).astype(np.float32)
    dy = rng.standard_normal(_dy_for(x, 6, padding=1)).astype(np.float32)
    spec = _spec.conv_weight_spec(x, (6, 5, 3, 3), dy, padding=1)
    TH, TW, rows = numba_cpu.winograd_weight_plan(spec)
    assert rows == (1 if chunk_bytes else 3 * TH)
    monkeypatch.setattr(numba_cpu, "gemm_workers", lambda s: threads)
    if threads > 1 and numba_cpu._threads() < 2:
        pytest.skip("needs 2 Numba threads")
    out, _ = _check(x, dy, padding=1)
    monkeypatch.setattr(numba_cpu, "gemm_workers", lambda s: 1)
    np.testing.assert_array_equal(out, numba_cpu.conv_weight_winograd(spec, x, dy))


def test_adversarial_magnitudes_need_the_winograd_bound():
    """Mixed signs and magnitudes over 1e-3..1e3: within the Winograd bound, which grad_tolerance takes for
    this problem and which is wider here than the direct one somewhere."""
    rng = _rng(3)
    x = (np.sign(rng.standard_normal((2, 4, 10, 9))) * 10.0 ** rng.uniform(-3, 3, (2, 4, 10, 9))).astype(np.float32)
    dy = (np.sign(rng.standard_normal((2, 3, 10, 9))) * 10.0 ** rng.uniform(-3, 3, (2, 3, 10, 9))).astype(np.float32)
    spec = _spec.conv_weight_spec(x, (3, 4, 3, 3), dy, padding=1)
    assert testing.winograd_applies(spec)
    wino = testing.winograd_weight_tolerance(spec, x, dy)
    tol = testing.grad_tolerance(spec, x, dy)
    assert np.array_equal(tol, np.maximum(wino, tol)) and (wino == tol).any()
    _check(x, dy, padding=1)


def test_the_bound_for_one_tile_written_out():
    """N = C = K = 1, a 4x4 dy (one tile), padding 1: Y = |G|^T [(|A| |dy| |A|^T) * (|B^T| |x_win| |B|)] |G|
    with the 6x6 window of the zero-padded x, and n = 1 tile + 1 chunk + 18, float64."""
    rng = _rng(4)
    x, dy = rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 4, 4))
    spec = _spec.conv_weight_spec(x, (1, 1, 3, 3), dy, padding=1)
    win = np.zeros((6, 6))
    win[1:5, 1:5] = np.abs(x[0, 0])
    A, B, G = np.abs(mats.AT.T), np.abs(mats.BT), np.abs(mats.G)
    Y = G.T @ ((A @ np.abs(dy[0, 0]) @ A.T) * (B @ win @ B.T)) @ G
    u = np.finfo(np.float64).eps
    expect = 2 * (1 + 1 + 18) * u * Y + u * Y + np.finfo(np.float64).tiny
    np.testing.assert_allclose(testing.winograd_weight_tolerance(spec, x, dy)[0, 0], expect, rtol=1e-12)


def test_nonfinite_values_give_the_definitions_pattern():
    """An Inf or NaN in x or dy (padded problem) gives exactly the oracle's pattern: the (k, c) they reach
    through the transforms are summed again directly (no padded zero meets dy there)."""
    rng = _rng(5)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    dy = rng.standard_normal(_dy_for(x, 4, padding=1)).astype(np.float32)
    x[0, 1, 0, 0] = np.inf              # a corner: taps (r, s) with r, s < 2 meet it (dy[1 - r, 1 - s])
    out, _ = _check(x, dy, padding=1)
    assert not np.isfinite(out[:, 1, :2, :2]).any()
    assert np.isfinite(out[:, 1, 2, :]).all() and np.isfinite(out[:, 1, :, 2]).all()
    assert np.isfinite(out[:, [0, 2]]).all()
    dy2 = dy.copy()
    dy2[1, 2, 4, 4] = np.nan
    out2, _ = _check(rng.standard_normal(x.shape).astype(np.float32), dy2, padding=1)
    assert np.isnan(out2[2]).all() and np.isfinite(out2[[0, 1, 3]]).all()


@settings(max_examples=25, deadline=None, derandomize=True, database=None, print_blob=True)
@given(N=st.integers(1, 2), C=st.integers(1, 4), K=st.integers(1, 4), H=st.integers(1, 12), W=st.integers(1, 12),
       pads=st.tuples(*[st.integers(0, 4)] * 4), dil=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       seed=st.integers(0, 2**16))
def test_dilated_by_their_phases_match_the_oracle(N, C, K, H, W, pads, dil, seed):
    """A dilated 3x3 weight gradient runs winograd/f4x4-phases: every padding and dilation, phases of unequal
    lengths and leads (dy zero at the outputs past a phase's own), within the bound of its phases."""
    pt, pb, pl, pr = pads
    hypothesis.assume(dil != (1, 1))
    hypothesis.assume(H + pt + pb >= 3 * dil[0] and W + pl + pr >= 3 * dil[1])
    rng = _rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    kw = {"padding": ((pt, pb), (pl, pr)), "dilation": dil}
    dy = rng.standard_normal(_dy_for(x, K, **kw)).astype(np.float32)
    _check(x, dy, name=PHASES, **kw)


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_dilated_nonfinite_values_give_the_definitions_pattern(padding):
    """The phases add zeros the definition has no terms for (the padding, dy past a phase's outputs): an Inf
    in x that meets only such zeros in some taps, or a NaN in dy, gives exactly the oracle's pattern, as the
    re-sum runs on the dilated problem itself."""
    rng = _rng(7)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    kw = {"padding": padding, "dilation": 2}
    dy = 0.5 + np.abs(rng.standard_normal(_dy_for(x, 4, **kw))).astype(np.float32)   # > 0: Inf * dy stays Inf
    x[0, 1, 10, 9] = np.inf           # the last row and column: most taps never reach them
    x[1, 2, 5, 4] = np.inf
    out, _ = _check(x, dy, name=PHASES, **kw)
    assert np.isfinite(out[:, 0]).all() and np.isposinf(out[:, 1]).any() and np.isfinite(out[:, 1]).any()
    dy2 = dy.copy()
    dy2[1, 3, 0, 0] = np.nan          # with padding, taps reading only padding there have no term for it
    out2, _ = _check(rng.standard_normal(x.shape).astype(np.float32), dy2, name=PHASES, **kw)
    assert np.isnan(out2[3]).any() and np.isfinite(out2[3]).any() == (padding > 0)


def test_reasons():
    x = np.zeros((1, 4, 8, 8), np.float32)
    dy = np.zeros((1, 4, 8, 8), np.float32)
    assert _dispatch.reasons(_impl(), _spec.conv_weight_spec(x, (4, 4, 3, 3), dy, padding=1)) == []
    strided = _spec.conv_weight_spec(x, (4, 4, 3, 3), np.zeros((1, 4, 4, 4), np.float32), 2, 1)
    assert "stride" in " ".join(_dispatch.reasons(_impl(), strided))
    dilated = _spec.conv_weight_spec(x, (4, 4, 3, 3), dy, 1, 2, 2)
    assert "dilation" in " ".join(_dispatch.reasons(_impl(), dilated))
    assert _dispatch.reasons(_impl(PHASES), dilated) == []
    assert "not dilated" in " ".join(_dispatch.reasons(_impl(PHASES), _spec.conv_weight_spec(x, (4, 4, 3, 3), dy,
                                                                                             padding=1)))
    assert not _impl(PHASES).zero_fills_padding and not _impl().zero_fills_padding
    grouped = _spec.conv_weight_spec(x, (4, 2, 3, 3), dy, 1, 1, 1, 2)
    assert "groups=2" in " ".join(_dispatch.reasons(_impl(), grouped))
    five = _spec.conv_weight_spec(x, (4, 4, 5, 5), dy, 1, 2)
    assert "5x5" in " ".join(_dispatch.reasons(_impl(), five))


def test_workspace_is_what_it_allocates(monkeypatch):
    """The buffers the run asks numba_cpu.workspace for match the plan's (the per-thread scratch inside the
    kernels aside)."""
    seen = {}
    real = numba_cpu.workspace

    def spy(what, shape, dtype, zero=False):
        a = real(what, shape, dtype, zero)
        seen[what] = seen.get(what, 0) + a.nbytes
        return a
    monkeypatch.setattr(numba_cpu, "workspace", spy)
    monkeypatch.setattr(numba_cpu, "gemm_workers", lambda s: 1)
    rng = _rng(6)
    x = rng.standard_normal((2, 3, 12, 11)).astype(np.float32)
    dy = rng.standard_normal(_dy_for(x, 5, padding=1)).astype(np.float32)
    spec = _spec.conv_weight_spec(x, (5, 3, 3, 3), dy, padding=1)
    numba_cpu.conv_weight_winograd(spec, x, dy)
    ws = _impl().workspace(spec)
    ws.pop("per-thread tile rows")
    assert sorted(seen.values()) == sorted(ws.values()), (seen, ws)


@pytest.mark.parametrize("name", [NAME, PHASES])
def test_warmup_reaches_it(name):
    p = _warmup.plan("numba", ops=["conv_weight"])
    items = [it for it in p.items if it.impl.name == name]
    assert {it.spec.dtype for it in items} == {"float32", "float64"}
    assert {it.spec.N for it in items} == {1, 2}
