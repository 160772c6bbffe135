"""The numba backend's 3-D implementations against the NumPy oracle (and torch where installed): conv3d
(direct/3d, im2col/pointwise-3d and im2col/3d), its input gradient / conv_transpose3d (gather-3d, col2vol-3d), its weight
gradient (lanes-3d, pack-gemm-3d), every 3-D pool, pool gradient and max_unpool3d; the padding rule for
non-finite weights; the 3-D kernels' records and parallel flags; a small derandomized sweep.

Expected values come only from the oracle (fastconv._backends.numpy_oracle), torch, or are written by hand.
Conv tolerances scale with the reduction length: |out - ref| <= 4 * eps * (Cg*T*R*S + 1) * conv64(|x|, |w|,
|b|) (forward; the gradients: fastconv.testing's bound, K/G*T*R*S + 1 or N*Z*P*Q + 1 terms). Max
pools, avg pools and their gradients must match the oracle bitwise (the same float64 sums in the same tap
order); adaptive averages within a float64 summation error rounded once (the oracle sums pairwise).
Every call names its algo, and each test asserts which Impl dispatch ran, so every 3-D Impl is covered.
"""
import numpy as np
import pytest

numba = pytest.importorskip("numba")

import fastconv  # noqa: E402
from fastconv import _dispatch, grad  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._backends import numpy_oracle as oracle  # noqa: E402
from fastconv._spec import conv_input_spec, conv_transpose_spec, conv_weight_spec, pool_grad_spec  # noqa: E402
from fastconv.testing import assert_grad_close  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

DTYPES = (np.float32, np.float64)
ALGOS = ("direct", "im2col")
#: the Impl each (op, algo) must run for a 3-D problem
NAMES = {("conv", "direct"): "numba:conv:direct/3d", ("conv", "im2col"): "numba:conv:im2col/3d",
         ("conv_input", "direct"): "numba:conv_input:direct/gather-3d",
         ("conv_input", "im2col"): "numba:conv_input:im2col/col2vol-3d",
         ("conv_weight", "direct"): "numba:conv_weight:direct/lanes-3d",
         ("conv_weight", "im2col"): "numba:conv_weight:im2col/pack-gemm-3d"}


def _rng(seed):
    return np.random.default_rng(seed)


def _selected(spec, algo, weight=None):
    return _dispatch.select(spec, "numba", algo, weight=weight).name


def check_conv3d(x, w, b, *, algo, **kw):
    out = fastconv.conv3d(x, w, b, backend="numba", algo=algo, **kw)
    spec = fastconv.conv_spec(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                              kw.get("groups", 1), spatial_dims=3)
    if algo != "auto":
        pointwise = algo == "im2col" and spec.is_pointwise
        assert _selected(spec, algo, w) == ("numba:conv:im2col/pointwise-3d" if pointwise else NAMES["conv", algo])
    x5, w5 = x.reshape(spec.input_shape), w.reshape(spec.weight_shape)
    ref = oracle.conv64(spec, x5, w5, b).reshape(spec.output_shape)
    mag = oracle.conv64(spec, np.abs(x5), np.abs(w5), None if b is None else np.abs(b)).reshape(spec.output_shape)
    bound = 4 * np.finfo(x.dtype).eps * (spec.gemm_k + 1) * mag + np.finfo(x.dtype).tiny
    assert out.dtype == x.dtype and out.shape == spec.output_shape
    assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.array_equal(out[np.isinf(ref)], ref[np.isinf(ref)])
    fin = np.isfinite(ref)
    err = np.abs(out.astype(np.float64) - ref)[fin]
    assert (err <= bound[fin]).all(), f"max error {err.max():.3g}"
    return out


# ---------------------------------------------------------------------------------------------------
# conv3d
# ---------------------------------------------------------------------------------------------------
#: name: (x shape, w shape, kwargs)
CONV_CASES = {
    "plain": ((2, 3, 5, 6, 7), (4, 3, 3, 3, 3), {}),
    "stride_pad": ((2, 3, 7, 6, 9), (5, 3, 3, 2, 3), dict(stride=(2, 1, 2), padding=1)),
    "asym_pad_dilation": ((1, 2, 6, 7, 8), (3, 2, 2, 3, 2), dict(padding=((2, 0), (1, 1), (0, 3)),
                                                                 dilation=(2, 1, 3))),
    "groups": ((2, 6, 4, 5, 5), (9, 2, 3, 3, 3), dict(groups=3, padding=1)),
    "depthwise_mult2_s2": ((2, 4, 5, 5, 6), (8, 1, 3, 3, 3), dict(groups=4, stride=2, padding=1)),
    "same_even_kernel": ((1, 2, 5, 6, 4), (3, 2, 2, 3, 4), dict(padding="same")),
    "pointwise": ((2, 8, 3, 4, 5), (6, 8, 1, 1, 1), {}),
    "k_over_block": ((1, 2, 3, 4, 4), (19, 2, 1, 3, 3), dict(padding=(0, 1, 1))),   # K > the direct block (16)
    "pad_only_taps": ((1, 1, 2, 2, 2), (1, 1, 3, 5, 5), dict(padding=(2, 4, 4))),  # windows mostly padding
}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv3d_matches_oracle(case, algo):
    xs, ws, kw = CONV_CASES[case]
    rng = _rng(sum(map(ord, case)))
    dtype = DTYPES[len(case) % 2]                      # each case in one dtype, both dtypes covered
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if len(case) % 3 else None
    check_conv3d(x, w, b, algo=algo, **kw)


@pytest.mark.parametrize("algo", ALGOS)
def test_conv3d_both_dtypes_unbatched_and_tiles(algo, monkeypatch):
    """float32 and float64 on one case; an unbatched (C, D, H, W) input; im2col's depth bands (one slice,
    then two with a partial last band, instead of the whole volume)."""
    rng = _rng(1)
    for dtype in DTYPES:
        x = rng.standard_normal((2, 3, 5, 4, 6)).astype(dtype)
        w = rng.standard_normal((4, 3, 2, 3, 3)).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        check_conv3d(x, w, b, algo=algo, padding=1, stride=(1, 2, 1))
        out = check_conv3d(x[1], w, None, algo=algo, padding=(1, 0, 1))
        assert out.shape == (4, 6, 2, 6)
    spec = fastconv.conv_spec(x, w, b, 1, 1, spatial_dims=3)
    one = spec.gemm_k * spec.P * spec.Q * spec.itemsize
    for slices in (1, 2):
        monkeypatch.setattr(numba_cpu, "TILE_BYTES", slices * one)
        assert numba_cpu.slices_per_tile(spec) == slices
        check_conv3d(x, w, b, algo=algo, padding=1)


def test_conv3d_pointwise_runs_on_both_im2col_impls():
    """A 1x1x1 conv: im2col/pointwise-3d (the input is the column matrix) and im2col/3d (packed, which the
    tuner may pick instead) both give the oracle's result; a strided 1x1x1 conv is not pointwise."""
    rng = _rng(11)
    x = rng.standard_normal((2, 6, 3, 4, 5))
    w = rng.standard_normal((4, 3, 1, 1, 1))
    b = rng.standard_normal(4)
    spec = fastconv.conv_spec(x, w, b, 1, 0, 1, 2, spatial_dims=3)
    ref = oracle.conv64(spec, x, w, b)
    impls = [i for i in _dispatch.candidates(spec, "numba", "im2col") if not _dispatch.reasons(i, spec)]
    assert [i.name for i in impls] == ["numba:conv:im2col/pointwise-3d", NAMES["conv", "im2col"]]
    for impl in impls:
        np.testing.assert_allclose(impl.run(spec, x, w, b), ref, rtol=1e-12, atol=1e-12)
    strided = fastconv.conv_spec(x, w, b, 2, 0, 1, 2, spatial_dims=3)
    assert _selected(strided, "im2col", w) == NAMES["conv", "im2col"]


def test_conv3d_inf_weight_meets_padding():
    """An Inf weight in a padded conv: direct/3d skips padded taps (the oracle's Inf/finite pattern, no NaN);
    dispatch does not run the zero-filling im2col/3d for it (auto), and names the rule when asked for it."""
    x = np.ones((1, 1, 3, 3, 3), np.float32)
    w = np.zeros((2, 1, 3, 3, 3), np.float32)
    w[1, 0, 0, 0, 0] = np.inf
    spec = fastconv.conv_spec(x, w, None, 1, 1, spatial_dims=3)
    ref = oracle.conv(spec, x, w)
    assert np.isinf(ref).any() and np.isfinite(ref).any()
    assert _selected(spec, "auto", w) == "numba:conv:direct/3d"
    for algo in ("direct", "auto"):
        out = fastconv.conv3d(x, w, padding=1, backend="numba", algo=algo)
        np.testing.assert_array_equal(out, ref)
        assert not np.isnan(out).any()
    with pytest.raises(ValueError, match=r"numba:conv:im2col/3d: a weight is Inf or NaN and the problem is padded"):
        fastconv.conv3d(x, w, padding=1, backend="numba", algo="im2col")
    x[0, 0, 1, 1, 1] = np.nan                                  # NaN input: every padded window sees it
    for algo in ALGOS:
        assert np.isnan(fastconv.conv3d(x, np.ones_like(w), padding=1, backend="numba", algo=algo)).all()


def test_conv3d_auto_measures_and_matches(monkeypatch):
    """Above the measuring threshold auto times both 3-D candidates and runs the winner; float16 runs in
    float32 and is rounded back once."""
    rng = _rng(2)
    x = rng.standard_normal((1, 8, 8, 8, 8)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3, 3)).astype(np.float32)
    spec = fastconv.conv_spec(x, w, None, 1, 1, spatial_dims=3)
    monkeypatch.setattr(numba_cpu, "MEASURE_MIN_FLOPS", 0)
    numba_cpu.TUNER.reset()
    before = numba_cpu.TUNER.measure_count
    assert _selected(spec, "auto", w) in (NAMES["conv", "direct"], NAMES["conv", "im2col"])
    assert numba_cpu.TUNER.measure_count == before + 1
    check_conv3d(x, w, None, algo="auto", padding=1)
    h = fastconv.conv3d(x.astype(np.float16), w.astype(np.float16), padding=1, backend="numba", algo="direct")
    assert h.dtype == np.float16
    ref = oracle.conv64(spec, x.astype(np.float16), w.astype(np.float16))
    mag = oracle.conv64(spec, np.abs(x.astype(np.float16)), np.abs(w.astype(np.float16)))
    assert (np.abs(h - ref) <= 2 * np.finfo(np.float16).eps * mag + 1e-3).all()


def test_conv3d_bitwise_on_rerun_and_inputs_untouched():
    rng = _rng(3)
    x = rng.standard_normal((2, 4, 5, 6, 5)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3, 2)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 5, 6, 6)).astype(np.float32)
    copies = [a.copy() for a in (x, w, dy)]
    kw = dict(padding=1, groups=2)
    for algo in ALGOS:
        runs = [(fastconv.conv3d(x, w, backend="numba", algo=algo, **kw),
                 grad.conv3d_input(x.shape, w, dy, backend="numba", algo=algo, **kw),
                 grad.conv3d_weight(x, w.shape, dy, backend="numba", algo=algo, **kw)) for _ in range(2)]
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)
    for a, c in zip((x, w, dy), copies):
        np.testing.assert_array_equal(a, c)


def test_conv3d_family_matches_torch():
    """The same results as torch's conv3d, its two gradients and conv_transpose3d (where torch is installed)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(4)
    x = rng.standard_normal((2, 4, 5, 6, 7))
    w = rng.standard_normal((6, 2, 3, 2, 3))
    b = rng.standard_normal(6)
    kw = dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(1, 2, 1), groups=2)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.conv3d(xt, wt, torch.tensor(b), **kw)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    tw = rng.standard_normal((4, 3, 2, 3, 2))
    tkw = dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), groups=2, dilation=(1, 2, 1))
    ct = F.conv_transpose3d(torch.tensor(x), torch.tensor(tw), torch.tensor(b), **tkw).numpy()
    for algo in ALGOS:
        np.testing.assert_allclose(fastconv.conv3d(x, w, b, backend="numba", algo=algo, **kw), y.detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad.conv3d_input(x.shape, w, dy, backend="numba", algo=algo, **kw),
                                   xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad.conv3d_weight(x, w.shape, dy, backend="numba", algo=algo, **kw),
                                   wt.grad.numpy(), rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(fastconv.conv_transpose3d(x, tw, b, backend="numba", algo=algo, **tkw), ct,
                                   rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# conv3d gradients and conv_transpose3d
# ---------------------------------------------------------------------------------------------------
GRAD_CASES = {
    "pad1": ((2, 3, 4, 5, 6), (4, 3, 3, 3, 3), dict(padding=1)),
    "stride_asym": ((2, 2, 7, 6, 5), (3, 2, 3, 2, 3), dict(stride=(2, 3, 1), padding=((1, 0), (0, 1), (2, 1)))),
    "dilation_groups": ((1, 4, 6, 5, 7), (6, 2, 2, 3, 2), dict(dilation=(2, 1, 3), padding=(1, 1, 2), groups=2)),
    "depthwise": ((2, 3, 5, 5, 4), (3, 1, 3, 3, 3), dict(groups=3, padding=1, stride=2)),
}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_conv3d_gradients_match_oracle(case, algo):
    xs, ws, kw = GRAD_CASES[case]
    rng = _rng(sum(map(ord, case)))
    dtype = DTYPES[len(case) % 2]
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y = oracle.conv(fastconv.conv_spec(x, w, None, spatial_dims=3, **kw), x, w)
    dy = rng.standard_normal(y.shape).astype(dtype)
    si = conv_input_spec(xs, w, dy, spatial_dims=3, **kw)
    assert _selected(si, algo, w) == NAMES["conv_input", algo]
    dx = grad.conv3d_input(xs, w, dy, backend="numba", algo=algo, **kw)
    assert_grad_close(dx, si, dy, w, None)      # fastconv.testing counts K/G*R*S terms
    sw = conv_weight_spec(x, ws, dy, spatial_dims=3, **kw)
    assert _selected(sw, algo, dy) == NAMES["conv_weight", algo]
    dw = grad.conv3d_weight(x, ws, dy, backend="numba", algo=algo, **kw)
    assert_grad_close(dw, sw, x, dy)            # ... and N*P*Q


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_transpose3d_matches_oracle(algo):
    """output_padding: output rows no dy reaches get the bias only; an unbatched input."""
    rng = _rng(5)
    x = rng.standard_normal((2, 4, 3, 4, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=(2, 2, 3), padding=(1, 0, 1), output_padding=(1, 1, 2), groups=2, dilation=(1, 1, 1))
    spec = conv_transpose_spec(x, w, b, spatial_dims=3, **kw)
    assert _selected(spec, algo, w) == NAMES["conv_input", algo]
    out = fastconv.conv_transpose3d(x, w, b, backend="numba", algo=algo, **kw)
    assert_grad_close(out, spec, x, w, b)
    # the last column (w = 8) is no tap's: q*3 - 1 + s <= 7 for q < 3, s < 3, so it holds the bias only
    np.testing.assert_array_equal(out[..., -1], np.broadcast_to(b[:, None, None], out[..., -1].shape))
    one = fastconv.conv_transpose3d(x[1], w, None, backend="numba", algo=algo, **kw)
    s1 = conv_transpose_spec(x[1], w, None, spatial_dims=3, **kw)
    assert_grad_close(one, s1, x[1], w, None)


def test_conv3d_gradient_special_values():
    """conv_input: both algos exact for an Inf weight (padded taps dropped). conv_weight: an Inf in dy of a
    padded problem keeps dispatch off the zero-filling pack-gemm-3d, whose name the refusal gives."""
    rng = _rng(6)
    w = rng.standard_normal((3, 2, 3, 3, 3))
    w[1, 0, 0, 0, 0] = np.inf
    dy = rng.standard_normal((1, 3, 4, 4, 4))
    si = conv_input_spec((1, 2, 4, 4, 4), w, dy, 1, 1, spatial_dims=3)
    ref = oracle.conv_input64(si, dy, w)
    assert np.isinf(ref).any() and np.isfinite(ref).any()
    for algo in ALGOS:
        out = grad.conv3d_input((1, 2, 4, 4, 4), w, dy, padding=1, backend="numba", algo=algo)
        assert_grad_close(out, si, dy, w, None)
    x = rng.standard_normal((1, 2, 4, 4, 4))
    dy[0, 1, 0, 0, 0] = np.inf
    sw = conv_weight_spec(x, (3, 2, 3, 3, 3), dy, 1, 1, spatial_dims=3)
    with pytest.raises(ValueError, match=r"numba:conv_weight:im2col/pack-gemm-3d: a weight is Inf or NaN"):
        grad.conv3d_weight(x, (3, 2, 3, 3, 3), dy, padding=1, backend="numba", algo="im2col")
    assert _selected(sw, "auto", dy) == NAMES["conv_weight", "direct"]
    assert_grad_close(grad.conv3d_weight(x, (3, 2, 3, 3, 3), dy, padding=1, backend="numba"), sw, x, dy)


# ---------------------------------------------------------------------------------------------------
# Pools (bitwise the oracle; adaptive averages within a rounding)
# ---------------------------------------------------------------------------------------------------
def _pool_input(dtype, shape=(2, 3, 6, 7, 8), seed=7):
    x = _rng(seed).standard_normal(shape).astype(dtype)
    x[0, 0, 1, 2, 3] = np.nan                 # a lone NaN
    x[0, 1, 2:4, 3:5, 3:5] = np.nan           # a NaN block: the last NaN in (d, h, w) order gives the index
    x[1, 0, 1, 1, 1] = np.inf
    x[1, 1, :3, :4, :4] = -np.inf             # windows of only -inf: the first in-bounds tap's index
    x[1, 2, 3, 5, :] = 0.5                    # ties: the first in scan order
    x[1, 2, 4, 5, :] = 0.5
    return x


def _equal(got, ref):
    if isinstance(ref, tuple):
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1].dtype == np.int64
        np.testing.assert_array_equal(got[1], ref[1])
    else:
        np.testing.assert_array_equal(got, ref)


def _pool_impl(kind, x, **kw):
    return _dispatch.select(fastconv.pool_spec(kind, x, spatial_dims=3, **kw), "numba").name


MAX_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3, 2), stride=(1, 2, 3), padding=(1, 1, 0), dilation=(2, 1, 2), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=((0, 2), (1, 0), (2, 1)), ceil_mode=True),    # per-side pads
    dict(kernel_size=(2, 2, 5), stride=(1, 1, 4), padding=(0, 1, 2), dilation=(1, 1, 2)),   # Q < S
    dict(kernel_size=(6, 7, 8)),                                                          # global
]


@pytest.mark.parametrize("case", range(len(MAX_CASES)))
def test_max_pool3d_exact(case):
    x = _pool_input(DTYPES[case % 2])
    kw = MAX_CASES[case]
    assert _pool_impl("max", x, **kw) == "numba:max_pool:direct/3d"
    for idx in (True, False):
        _equal(fastconv.max_pool3d(x, backend="numba", return_indices=idx, **kw),
               fastconv.max_pool3d(x, backend="numpy", return_indices=idx, **kw))


def test_max_pool3d_rules_by_hand():
    """One 2x2x2 window: NaN wins and the last NaN (d, h, w order) gives the index; ties keep the first;
    a window of -inf keeps its first in-bounds tap (padding is never selected, even at -inf)."""
    x = np.zeros((1, 1, 2, 2, 2), np.float64)
    x[0, 0, 0, 1, 0] = np.nan                 # flat 2
    x[0, 0, 1, 0, 1] = np.nan                 # flat 5
    out, idx = fastconv.max_pool3d(x, 2, return_indices=True, backend="numba")
    assert np.isnan(out.item()) and idx.item() == 5
    x = np.full((1, 1, 2, 2, 2), 3.0)
    out, idx = fastconv.max_pool3d(x, 2, return_indices=True, backend="numba")
    assert out.item() == 3.0 and idx.item() == 0
    x = np.full((1, 1, 1, 1, 2), -np.inf)
    out, idx = fastconv.max_pool3d(x, (1, 1, 2), stride=1, padding=((0, 0), (0, 0), (1, 1)), return_indices=True,
                                   backend="numba")
    np.testing.assert_array_equal(out.ravel(), [-np.inf] * 3)
    np.testing.assert_array_equal(idx.ravel(), [0, 0, 1])


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    dict(kernel_size=(2, 3, 3), stride=(2, 2, 1), padding=(1, 1, 0), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=((0, 2), (2, 1), (1, 0)), ceil_mode=True),               # per-side
    dict(kernel_size=3, stride=2, padding=((0, 2), (2, 1), (1, 0)), count_include_pad=False),
    dict(kernel_size=(2, 3, 2), padding=(1, 0, 1), divisor_override=-5),
    dict(kernel_size=(2, 3, 9), stride=(1, 2, 5), padding=(0, 1, 4), ceil_mode=True),              # Q < S
]


@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool3d_exact(case):
    x = _pool_input(DTYPES[case % 2])
    kw = AVG_CASES[case]
    assert _pool_impl("avg", x, **kw) == "numba:avg_pool:direct/3d"
    _equal(fastconv.avg_pool3d(x, backend="numba", **kw), fastconv.avg_pool3d(x, backend="numpy", **kw))


def test_avg_pool3d_per_side_divisors_by_hand():
    """Ones along W, kernel 3, stride 3, ceil_mode. W = 4, pads (2 before, 1 after): windows [-2, 1) and
    [1, 4); with count_include_pad the first divides by 3 (2 padding + 1 input), without by 1. W = 5, same
    pads: a third window [4, 7) past the after-padding (ceil_mode's overhang); the padded extent ends at
    5 + 1 = 6, so it divides by 2 (a symmetric bound, 5 + 2, would give 3); without count_include_pad by 1."""
    pad = ((0, 0), (0, 0), (2, 1))
    kw = dict(kernel_size=(1, 1, 3), stride=(1, 1, 3), padding=pad, ceil_mode=True, backend="numba")
    x = np.ones((1, 1, 1, 1, 4), np.float32)
    np.testing.assert_array_equal(fastconv.avg_pool3d(x, **kw).ravel(), np.array([1 / 3, 1.0], np.float32))
    np.testing.assert_array_equal(fastconv.avg_pool3d(x, count_include_pad=False, **kw).ravel(), [1.0, 1.0])
    x = np.ones((1, 1, 1, 1, 5), np.float32)
    np.testing.assert_array_equal(fastconv.avg_pool3d(x, **kw).ravel(), np.array([1 / 3, 1.0, 0.5], np.float32))
    np.testing.assert_array_equal(fastconv.avg_pool3d(x, count_include_pad=False, **kw).ravel(), [1.0, 1.0, 1.0])
    dx = grad.avg_pool3d(np.ones((1, 1, 1, 1, 3), np.float32), x, **kw)        # the same divisors backward
    np.testing.assert_array_equal(dx.ravel(), np.array([1 / 3, 1 / 3, 1 / 3, 1 / 3, 0.5], np.float32))


@pytest.mark.parametrize("output_size", [(3, 4, 3), (1, 1, 1), (6, 7, 8), (4, 9, 5)])
def test_adaptive_pools3d(output_size):
    """Sizes that do not divide the input (overlapping windows), one window, identity, upsampling."""
    x = _pool_input(np.float32)
    spec = fastconv.pool_spec("adaptive_max", x, output_size_=output_size, spatial_dims=3)
    assert _dispatch.select(spec, "numba").name == "numba:adaptive_max_pool:direct/3d"
    for idx in (True, False):
        _equal(fastconv.adaptive_max_pool3d(x, output_size, return_indices=idx, backend="numba"),
               fastconv.adaptive_max_pool3d(x, output_size, return_indices=idx, backend="numpy"))
    xd = _pool_input(np.float64)
    for xi in (x, xd):
        got = fastconv.adaptive_avg_pool3d(xi, output_size, backend="numba")
        ref = fastconv.adaptive_avg_pool3d(xi, output_size, backend="numpy")
        assert got.dtype == xi.dtype
        # both sum in float64 (the oracle pairwise, the kernel in order): a window of n taps differs by at
        # most n * eps64 * max|x|, then one rounding to the storage dtype
        taps = np.prod([-(-i // o) + 1 for i, o in zip(xi.shape[2:], output_size)])
        scale = np.abs(xi[np.isfinite(xi)]).max()
        np.testing.assert_allclose(got, ref, rtol=2 * np.finfo(xi.dtype).eps,
                                   atol=taps * np.finfo(np.float64).eps * scale)      # NaN == NaN here
    aspec = fastconv.pool_spec("adaptive_avg", x, output_size_=output_size, spatial_dims=3)
    assert _dispatch.select(aspec, "numba").name == "numba:adaptive_avg_pool:direct/3d"


def test_pools3d_unbatched_and_float16():
    x = _pool_input(np.float64)[1]
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    _equal(fastconv.max_pool3d(x, return_indices=True, backend="numba", **kw),
           fastconv.max_pool3d(x, return_indices=True, backend="numpy", **kw))
    _equal(fastconv.avg_pool3d(x, backend="numba", **kw), fastconv.avg_pool3d(x, backend="numpy", **kw))
    h = _pool_input(np.float16)
    got = fastconv.avg_pool3d(h, backend="numba", **kw)
    assert got.dtype == np.float16
    _equal(got, fastconv.avg_pool3d(h, backend="numpy", **kw))


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool3d (bitwise the oracle)
# ---------------------------------------------------------------------------------------------------
def _grad_pair(fn, dy, x, **kw):
    got = fn(dy, x, backend="numba", **kw)
    ref = fn(dy, x, backend="numpy", **kw)
    assert got.dtype == ref.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, ref)
    return got


@pytest.mark.parametrize("case", range(len(MAX_CASES)))
def test_max_pool3d_backward(case):
    x = _pool_input(DTYPES[case % 2])
    kw = MAX_CASES[case]
    out, idx = fastconv.max_pool3d(x, return_indices=True, backend="numpy", **kw)
    dy = _rng(case).standard_normal(out.shape).astype(x.dtype)
    spec = pool_grad_spec("max", dy, x, spatial_dims=3, **kw)
    assert _dispatch.select(spec, "numba").name == "numba:max_pool_backward:direct/3d"
    got = _grad_pair(grad.max_pool3d, dy, x, indices=idx, **kw)
    np.testing.assert_array_equal(got, _grad_pair(grad.max_pool3d, dy, x, **kw))     # indices recomputed


def test_max_pool3d_backward_window_wholly_in_padding():
    """Dilation 3 over a depth of 2 with padding 1: the one output slice taps depths -1 and 2, both outside;
    its dy goes nowhere, through the public call and through the Impl itself."""
    x = _rng(8).standard_normal((1, 2, 2, 3, 3))
    kw = dict(kernel_size=(2, 1, 1), stride=1, padding=(1, 0, 0), dilation=(3, 1, 1))
    out, idx = fastconv.max_pool3d(x, return_indices=True, backend="numpy", **kw)
    assert out.shape[2] == 1 and np.isneginf(out).all()
    dy = np.ones_like(out)
    np.testing.assert_array_equal(_grad_pair(grad.max_pool3d, dy, x, indices=idx, **kw), np.zeros_like(x))
    spec = pool_grad_spec("max", dy, x, spatial_dims=3, **kw)
    impl = _dispatch.select(spec, "numba")
    np.testing.assert_array_equal(impl.run(spec, dy, np.ascontiguousarray(idx)), np.zeros_like(x))


@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool3d_backward(case):
    x = _pool_input(DTYPES[case % 2])
    kw = AVG_CASES[case]
    dy = _rng(case).standard_normal(fastconv.avg_pool3d(x, backend="numpy", **kw).shape).astype(x.dtype)
    dy[0, 0, 0, 0, 0] = np.nan
    spec = pool_grad_spec("avg", dy, x, spatial_dims=3, **kw)
    assert _dispatch.select(spec, "numba").name == "numba:avg_pool_backward:direct/3d"
    _grad_pair(grad.avg_pool3d, dy, x, **kw)


@pytest.mark.parametrize("output_size", [(3, 4, 3), (1, 1, 1), (4, 9, 5)])
def test_adaptive_pool3d_backward(output_size):
    x = _pool_input(np.float64)
    dy = _rng(9).standard_normal(x.shape[:2] + output_size)
    spec = pool_grad_spec("adaptive_avg", dy, x, spatial_dims=3)
    assert _dispatch.select(spec, "numba").name == "numba:adaptive_avg_pool_backward:direct/3d"
    _grad_pair(grad.adaptive_avg_pool3d, dy, x)
    xf, dyf = x.astype(np.float32), dy.astype(np.float32)
    _, idx = fastconv.adaptive_max_pool3d(xf, output_size, return_indices=True, backend="numpy")
    spec = pool_grad_spec("adaptive_max", dyf, xf, spatial_dims=3)
    assert _dispatch.select(spec, "numba").name == "numba:adaptive_max_pool_backward:direct/3d"
    got = _grad_pair(grad.adaptive_max_pool3d, dyf, xf, indices=idx)
    np.testing.assert_array_equal(got, _grad_pair(grad.adaptive_max_pool3d, dyf, xf))


def test_max_unpool3d():
    x = _pool_input(np.float32, shape=(2, 3, 5, 7, 7))
    out, idx = fastconv.max_pool3d(x, 3, 2, 1, return_indices=True, backend="numpy")   # overlapping windows
    for size in (None, x.shape[2:]):
        got = fastconv.max_unpool3d(out, idx, 3, 2, 1, output_size=size, backend="numba")
        np.testing.assert_array_equal(got, fastconv.max_unpool3d(out, idx, 3, 2, 1, output_size=size,
                                                                 backend="numpy"))
    np.testing.assert_array_equal(fastconv.max_unpool3d(out[1], idx[1], 3, 2, 1, backend="numba"),
                                  fastconv.max_unpool3d(out[1], idx[1], 3, 2, 1, backend="numpy"))
    # repeated indices: the last in row-major (z, p, q) order wins
    v = np.arange(1.0, 9.0).reshape(1, 1, 2, 2, 2)
    i = np.array([7, 0, 7, 3, 0, 7, 3, 1], np.int64).reshape(1, 1, 2, 2, 2)
    got = fastconv.max_unpool3d(v, i, 2, backend="numba")          # 4 x 4 x 4 output
    want = np.zeros(64)
    want[[0, 1, 3, 7]] = [5.0, 8.0, 7.0, 6.0]
    np.testing.assert_array_equal(got.ravel(), want)


# ---------------------------------------------------------------------------------------------------
# The kernels
# ---------------------------------------------------------------------------------------------------
def test_3d_impls_registered():
    impls = [i for i in numba_cpu.implementations() if 3 in i.spatial_dims]
    assert all(i.spatial_dims == (3,) and "3d" in i.name for i in impls)
    assert {i.op for i in impls} == {"conv", "conv_input", "conv_weight", "max_pool", "avg_pool", "adaptive_max_pool",
                                     "adaptive_avg_pool", "max_pool_backward", "avg_pool_backward",
                                     "adaptive_max_pool_backward", "adaptive_avg_pool_backward", "max_unpool"}
    assert {i.name for i in impls if i.zero_fills_padding} == {NAMES["conv", "im2col"], NAMES["conv_weight", "im2col"]}
    assert [i.name for i in impls if i.op == "conv"] == [NAMES["conv", "direct"], "numba:conv:im2col/pointwise-3d",
                                                         NAMES["conv", "im2col"]]
    assert all(3 not in i.spatial_dims for i in numba_cpu.implementations() if i not in impls)


def test_3d_kernels_take_their_records_and_run_parallel():
    """After the tests above ran every 3-D kernel: each compiled with its record type for the geometry
    argument (by name, never an anonymous tuple), parallel=True except the two packers that alternate
    with BLAS; the records are the spec's fields by name."""
    import inspect
    k = numba_cpu.kernels()
    x = _rng(10).standard_normal((1, 2, 4, 4, 4)).astype(np.float32)
    w = np.ones((2, 2, 3, 3, 3), np.float32)
    for algo in ALGOS:      # every conv kernel once in this process (the tests may run alone)
        fastconv.conv3d(x, w, padding=1, backend="numba", algo=algo)
        grad.conv3d_input(x.shape, w, x, padding=1, backend="numba", algo=algo)
        grad.conv3d_weight(x, w.shape, x, padding=1, backend="numba", algo=algo)
    fastconv.max_pool3d(x, 2, backend="numba")
    grad.avg_pool3d(fastconv.avg_pool3d(x, 2, backend="numba"), x, 2, backend="numba")
    grad.adaptive_avg_pool3d(fastconv.adaptive_avg_pool3d(x, 3, backend="numba"), x, backend="numba")
    for name, (record, parallel) in k.KERNELS_3D.items():
        kernel = getattr(k, name)
        assert kernel.signatures, f"{name} never ran"
        assert kernel.targetoptions.get("parallel") is parallel, name
        params = list(inspect.signature(kernel.py_func).parameters)
        pos = params.index("win" if "win" in params else "geo")
        for sig in kernel.signatures:
            assert isinstance(sig[pos], numba.types.BaseNamedTuple) and sig[pos].instance_class is record, name
    spec = fastconv.conv_spec(np.zeros((1, 14, 30, 40, 50)), np.zeros((14, 1, 2, 3, 4)), None, (5, 6, 7),
                              ((8, 0), (9, 0), (10, 0)), (11, 12, 13), 14, spatial_dims=3)
    # by hand: Z = (30 + 8 - 11*1 - 1) // 5 + 1 = 6, P = (40 + 9 - 12*2 - 1) // 6 + 1 = 5, Q = (60 - 40) // 7 + 1 = 3
    assert k.conv3d_geometry(spec) == (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 6, 5, 3)
    pspec = fastconv.pool_spec("max", np.zeros((1, 1, 40, 40, 50)), (3, 4, 5), (6, 7, 8), ((1, 2), (3, 0), (4, 2)),
                               (9, 10, 11), spatial_dims=3)
    assert k.pool3d_geometry(pspec) == (3, 4, 5, 6, 7, 8, 1, 2, 3, 0, 4, 2, 9, 10, 11)
    assert all(mod in k.MODULES for mod in ("_numba_3d", "_numba_3d_pool"))   # corrupt-cache tolerant


# ---------------------------------------------------------------------------------------------------
# A small derandomized sweep
# ---------------------------------------------------------------------------------------------------
SETTINGS = hypothesis.settings(max_examples=12, deadline=None, derandomize=True, database=None,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])


@st.composite
def conv3d_problems(draw):
    g = draw(st.integers(1, 2))
    cg, kg = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dils = tuple(draw(st.integers(1, 2)) for _ in range(3))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(3))
    sizes = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - lo - hi), 6)) for k, d, (lo, hi) in zip(ks, dils, pads))
    return dict(N=draw(st.integers(1, 2)), C=g * cg, sizes=sizes, K=g * kg, ks=ks, groups=g,
                stride=tuple(draw(st.integers(1, 3)) for _ in range(3)), padding=pads, dilation=dils,
                seed=draw(st.integers(0, 2**16)), dtype=draw(st.sampled_from(DTYPES)))


@SETTINGS
@hypothesis.given(conv3d_problems())
def test_conv3d_family_random_geometries(p):
    rng = _rng(p["seed"])
    x = rng.standard_normal((p["N"], p["C"]) + p["sizes"]).astype(p["dtype"])
    w = rng.standard_normal((p["K"], p["C"] // p["groups"]) + p["ks"]).astype(p["dtype"])
    b = rng.standard_normal(p["K"]).astype(p["dtype"])
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"])
    for algo in ALGOS:
        y = check_conv3d(x, w, b, algo=algo, **kw)
        dy = rng.standard_normal(y.shape).astype(p["dtype"])
        si = conv_input_spec(x.shape, w, dy, spatial_dims=3, **kw)
        assert_grad_close(grad.conv3d_input(x.shape, w, dy, backend="numba", algo=algo, **kw), si, dy, w, None)
        sw = conv_weight_spec(x, w.shape, dy, spatial_dims=3, **kw)
        assert_grad_close(grad.conv3d_weight(x, w.shape, dy, backend="numba", algo=algo, **kw), sw, x, dy)


@st.composite
def pool3d_problems(draw):
    ks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dils = tuple(draw(st.integers(1, 2)) for _ in range(3))
    if draw(st.booleans()):      # per-side pads, each side up to kernel - 1 (the avg pool's bound: no dilation)
        pads = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in ks)
    else:
        pads = tuple((v, v) for v in (draw(st.integers(0, k // 2)) for k in ks))
    sizes = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - lo - hi), 6)) for k, d, (lo, hi) in zip(ks, dils, pads))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 2))) + sizes, kernel_size=ks, dilation=dils,
                stride=tuple(draw(st.integers(1, 3)) for _ in range(3)), padding=pads, ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                dtype=draw(st.sampled_from(DTYPES)))


@SETTINGS
@hypothesis.given(pool3d_problems())
def test_pools3d_random_geometries(p):
    x = _rng(p["seed"]).standard_normal(p["shape"]).astype(p["dtype"])
    x[x > 1.5] = np.nan
    common = dict(kernel_size=p["kernel_size"], stride=p["stride"], padding=p["padding"], ceil_mode=p["ceil_mode"])
    mx = dict(common, dilation=p["dilation"])
    out, idx = fastconv.max_pool3d(x, return_indices=True, backend="numba", **mx)
    _equal((out, idx), fastconv.max_pool3d(x, return_indices=True, backend="numpy", **mx))
    dy = _rng(p["seed"] + 1).standard_normal(out.shape).astype(p["dtype"])
    _grad_pair(grad.max_pool3d, dy, x, indices=idx, **mx)
    av = dict(common, count_include_pad=p["count_include_pad"])
    out = fastconv.avg_pool3d(x, backend="numba", **av)
    _equal(out, fastconv.avg_pool3d(x, backend="numpy", **av))
    _grad_pair(grad.avg_pool3d, _rng(p["seed"] + 2).standard_normal(out.shape).astype(p["dtype"]), x, **av)
