"""The numba backend's pool fast paths, each against the NumPy oracle, bitwise (the module docstrings of
``_numba_pool`` and ``_numba_grad`` promise the oracle's float64 sums in its order, rounded once):

- ``numba:avg_pool:direct/global`` and ``numba:adaptive_avg_pool:direct/global`` (``global_avg_pool2d``):
  a 1x1 output, one float64 sum per plane, eight planes side by side, blocks in parallel chunks;
- ``numba:max_pool:direct/2x2`` and ``numba:avg_pool:direct/2x2`` (``max_pool2x2``, ``avg_pool2x2``): kernel 2,
  stride 2, no padding, every window whole; the scan and the sum written out per output, rows in chunks;
- ``numba:avg_pool_backward:direct/disjoint`` and ``numba:adaptive_avg_pool_backward:direct/global``
  (``avg_pool2d_backward_disjoint``): windows sharing no input position, each tap written once;
- ``numba:max_pool_backward:direct/disjoint`` and ``numba:adaptive_max_pool_backward:direct/disjoint``
  (``pool2d_scatter_backward_disjoint``): dy written at its index.

Each path is checked to be the one dispatch picks for the shapes it claims (and not for those it
refuses), so the general kernel cannot silently take over; the kernels are also called directly with
chunk counts that leave remainders. Expected values come only from the oracle (backend="numpy") or by hand.
"""
import numpy as np
import pytest

numba = pytest.importorskip("numba")

import fastconv  # noqa: E402
from fastconv import _dispatch, _indices, grad  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._spec import pool_grad_spec, pool_spec  # noqa: E402


def _rng(seed):
    return np.random.default_rng(seed)


def _input(shape, dtype, seed=0, specials=True):
    """Normal values with -0.0, NaN, +-inf and a tie planted in the first planes (specials)."""
    x = _rng(seed).standard_normal(shape).astype(dtype)
    if specials:
        flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
        flat[0, 0] = -0.0
        flat[1 % len(flat), 1 % flat.shape[1]] = np.nan
        flat[2 % len(flat), 0] = -np.inf
        flat[3 % len(flat), -1] = np.inf
        flat[4 % len(flat), :2] = 7.0
    return x


def assert_bitwise(got, want):
    """Same dtype, shape and bits (NaN where the oracle has NaN: the sum's NaN payload is the platform's)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.itemsize]
    np.testing.assert_array_equal(got[~nan].view(u), want[~nan].view(u))


def _chosen(spec):
    return _dispatch.select(spec, "numba").name


# ---------------------------------------------------------------------------------------------------
# Which path runs
# ---------------------------------------------------------------------------------------------------
X = np.zeros((2, 3, 8, 8), np.float32)

FORWARD_PATHS = [
    (dict(kind="avg", kernel_size=8), "numba:avg_pool:direct/global"),
    (dict(kind="avg", kernel_size=7, stride=7), "numba:avg_pool:direct/global"),       # 8x8 map, 1 window
    (dict(kind="avg", kernel_size=5, padding=2, stride=8), "numba:avg_pool:direct/global"),
    (dict(kind="avg", kernel_size=2, stride=2), "numba:avg_pool:direct/2x2"),
    (dict(kind="avg", kernel_size=2, stride=2, divisor_override=3), "numba:avg_pool:direct/2x2"),
    (dict(kind="avg", kernel_size=2, stride=1), "numba:avg_pool:direct"),
    (dict(kind="avg", kernel_size=2, stride=2, padding=1), "numba:avg_pool:direct"),
    (dict(kind="max", kernel_size=2, stride=2), "numba:max_pool:direct/2x2"),
    (dict(kind="max", kernel_size=2, stride=2, return_indices=True), "numba:max_pool:direct/2x2"),
    (dict(kind="max", kernel_size=2), "numba:max_pool:direct/2x2"),                   # stride = kernel
    (dict(kind="max", kernel_size=(2, 2), stride=(2, 1)), "numba:max_pool:direct"),
    (dict(kind="max", kernel_size=2, stride=2, dilation=2), "numba:max_pool:direct"),
    (dict(kind="max", kernel_size=3, stride=2), "numba:max_pool:direct"),
    (dict(kind="avg", kernel_size=7, stride=1), "numba:avg_pool:direct"),              # 2x2 output
    (dict(kind="adaptive_avg", output_size_=(1, 1)), "numba:adaptive_avg_pool:direct/global"),
    (dict(kind="adaptive_avg", output_size_=(1, 2)), "numba:adaptive_avg_pool:direct"),
]


@pytest.mark.parametrize("case", range(len(FORWARD_PATHS)))
def test_forward_path_taken(case):
    kw, name = FORWARD_PATHS[case]
    kw = dict(kw)
    assert _chosen(pool_spec(kw.pop("kind"), X, **kw)) == name


BACKWARD_PATHS = [
    ("max", dict(kernel_size=2, stride=2), "numba:max_pool_backward:direct/disjoint"),
    ("max", dict(kernel_size=2, stride=3, padding=1), "numba:max_pool_backward:direct/disjoint"),
    ("max", dict(kernel_size=2, stride=(3, 4), dilation=(2, 3)), "numba:max_pool_backward:direct/disjoint"),
    ("max", dict(kernel_size=2, stride=3, dilation=3), "numba:max_pool_backward:direct"),   # extent 4 > 3
    ("max", dict(kernel_size=3, stride=2, padding=1), "numba:max_pool_backward:direct"),
    ("avg", dict(kernel_size=2, stride=2), "numba:avg_pool_backward:direct/disjoint"),
    ("avg", dict(kernel_size=8), "numba:avg_pool_backward:direct/disjoint"),
    ("avg", dict(kernel_size=(2, 3), stride=(2, 2)), "numba:avg_pool_backward:direct"),
    ("adaptive_max", dict(output_size=(4, 2)), "numba:adaptive_max_pool_backward:direct/disjoint"),
    ("adaptive_max", dict(output_size=(3, 2)), "numba:adaptive_max_pool_backward:direct"),    # 8 -> 3 overlap
    ("adaptive_avg", dict(output_size=(1, 1)), "numba:adaptive_avg_pool_backward:direct/global"),
    ("adaptive_avg", dict(output_size=(2, 2)), "numba:adaptive_avg_pool_backward:direct"),
]


@pytest.mark.parametrize("case", range(len(BACKWARD_PATHS)))
def test_backward_path_taken(case):
    kind, kw, name = BACKWARD_PATHS[case]
    kw = dict(kw)
    if kind.startswith("adaptive"):
        out = kw.pop("output_size")
    else:
        out = fastconv.max_pool2d(X, backend="numpy", **kw).shape[2:]
    dy = np.zeros(X.shape[:2] + tuple(out), np.float32)
    spec = pool_grad_spec(kind, dy, X, **kw)
    assert _chosen(spec) == name
    fast = [i for i in _dispatch.candidates(spec, "numba") if i.variant in ("disjoint", "global")]
    if name.endswith("/disjoint") or name.endswith("/global"):
        assert not _dispatch.reasons(fast[0], spec)
    else:   # refused with a reason that says why
        assert any("overlap" in r or "not 1x1" in r for r in _dispatch.reasons(fast[0], spec))


# ---------------------------------------------------------------------------------------------------
# The global average pool (forward)
# ---------------------------------------------------------------------------------------------------
GLOBAL_CASES = [
    ((16, 5, 7, 7), dict(kernel_size=7)),                        # 80 planes: blocks of 8 in chunks
    ((3, 5, 7, 7), dict(kernel_size=7, stride=7)),               # 15 planes: one block and 7 after it
    ((2, 3, 8, 9), dict(kernel_size=7, stride=7)),               # the window misses the last row/columns
    ((2, 5, 5, 6), dict(kernel_size=(5, 6), padding=(2, 3), stride=9)),      # a padded window
    ((2, 5, 5, 5), dict(kernel_size=5, padding=2, stride=6, count_include_pad=False)),
    ((1, 9, 5, 5), dict(kernel_size=5, stride=3, ceil_mode=True)),    # ceil_mode adds no window here
    ((2, 9, 6, 6), dict(kernel_size=6, divisor_override=-7)),
    ((4, 3, 1, 13), dict(kernel_size=(1, 13))),                  # a 1-D-like plane
    ((2, 9, 24, 25), dict(kernel_size=(24, 25))),                # 600 values: two GLOBAL_SEGMENTs
    ((1, 8, 30, 40), dict(kernel_size=(25, 30), stride=30)),     # rows of 30 of 40, 25 rows
]


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.float16), ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(GLOBAL_CASES)))
def test_global_avg_pool(case, dtype):
    shape, kw = GLOBAL_CASES[case]
    x = _input(shape, dtype, case)
    want = fastconv.avg_pool2d(x, backend="numpy", **kw)
    spec = pool_spec("avg", x, **kw)
    assert (spec.P, spec.Q) == (1, 1)
    assert _chosen(spec) == "numba:avg_pool:direct/global"
    assert_bitwise(fastconv.avg_pool2d(x, backend="numba", **kw), want)


@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: d.__name__)
def test_adaptive_avg_pool_to_one(dtype):
    for shape in ((16, 5, 7, 7), (3, 3, 5, 9)):
        x = _input(shape, dtype, 3)
        assert_bitwise(fastconv.adaptive_avg_pool2d(x, 1, backend="numba"),
                       fastconv.adaptive_avg_pool2d(x, 1, backend="numpy"))
        assert_bitwise(fastconv.adaptive_avg_pool2d(x, (1, 1), backend="numba"),
                       fastconv.avg_pool2d(x, shape[2:], backend="numpy"))     # the same sums, by hand's rule
    x1 = _input((2, 9, 11), dtype, 4)
    assert_bitwise(fastconv.adaptive_avg_pool1d(x1, 1, backend="numba"),
                   fastconv.adaptive_avg_pool1d(x1, 1, backend="numpy"))


def test_global_avg_pool_by_hand():
    """The float64 sum in row-major order, rounded once: 2**24 + 1 + 1 + ... is exact in float64 (a float32
    sum would lose each 1), and -0.0 alone sums to 0.0 (0.0 + -0.0)."""
    x = np.zeros((1, 9, 2, 2), np.float32)
    x[:, :, 0, 0] = 2.0**24
    x[:, :, 0, 1] = x[:, :, 1, 0] = x[:, :, 1, 1] = 1.0
    x[0, 8] = -0.0
    got = fastconv.avg_pool2d(x, 2, backend="numba")
    np.testing.assert_array_equal(got[0, :8, 0, 0], np.float32((2.0**24 + 3) / 4))
    assert got[0, 8, 0, 0] == 0 and not np.signbit(got[0, 8, 0, 0])


@pytest.mark.parametrize("nchunk", [1, 2, 3, 7])
@pytest.mark.parametrize("one_call", [True, False])
def test_global_kernel_chunks(nchunk, one_call):
    """The kernel itself with chunk counts that split the 8-plane blocks unevenly (and one chunk): all
    chunks in one call, or one call per chunk, last chunk first (as workers may run them)."""
    k = numba_cpu.kernels()
    x = _input((3, 13, 4, 5), np.float32, nchunk)          # 39 planes: 4 blocks of 8 and 7 after them
    spec = pool_spec("avg", x, kernel_size=(4, 5))
    out = np.full(spec.output_layout, np.nan, np.float32)
    geo = k.pool_geometry(spec)
    for c0, c1 in ([(0, nchunk)] if one_call else [(c, c + 1) for c in reversed(range(nchunk))]):
        k.global_avg_pool2d(x, out, geo, True, 0, c0, c1, nchunk)
    assert_bitwise(out, fastconv.avg_pool2d(x, (4, 5), backend="numpy"))


# ---------------------------------------------------------------------------------------------------
# 2x2 windows, stride 2 (forward)
# ---------------------------------------------------------------------------------------------------
POOL2X2_CASES = [
    ((2, 3, 8, 8), {}),
    ((3, 5, 9, 11), {}),                                 # odd sizes: the last row and column in no window
    ((1, 1, 2, 2), {}),                                  # one window
    ((2, 3, 10, 6), dict(ceil_mode=True)),               # even sizes: ceil_mode adds no window
    ((8, 32, 32, 34), {}),                               # above SERIAL_MAX_FLOPS: chunks on the threads
    ((4, 7, 8), {}),                                     # unbatched (C, H, W)
]


def _pool2x2_input(shape, dtype, seed):
    """_input's specials, plus windows the scan rule decides: two NaNs (the later one is taken), four equal
    values (the first is), all -inf (the first tap's index), -0.0 before 0.0 (0.0 is not greater)."""
    x = _input(shape, dtype, seed)
    planes = x.reshape(-1, x.shape[-2], x.shape[-1])
    windows = ([1.0, np.nan, 5.0, np.nan], [3.0, 3.0, 3.0, 3.0], [-np.inf] * 4, [-0.0, 0.0, -0.0, 0.0])
    for j, vals in enumerate(windows):
        plane = planes[(5 + j) % len(planes)]
        plane[:2, :2] = np.array(vals, dtype).reshape(2, 2)
    return x


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.float16), ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(POOL2X2_CASES)))
def test_pool2x2_max(case, dtype):
    """Values and indices bitwise the oracle's, by the public call twice (the second through the fast
    path's bound runner), with and without indices."""
    shape, kw = POOL2X2_CASES[case]
    x = _pool2x2_input(shape, dtype, case)
    x0 = x.copy()
    assert _chosen(pool_spec("max", x, 2, **kw)) == "numba:max_pool:direct/2x2"
    want, want_idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="numpy", **kw)
    for _ in range(2):
        assert_bitwise(fastconv.max_pool2d(x, 2, backend="numba", **kw), want)
        got, idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="numba", **kw)
        assert_bitwise(got, want)
        assert idx.dtype == want_idx.dtype and np.array_equal(idx, want_idx)
    assert_bitwise(x, x0)                                # the input is never written


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.float16), ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(POOL2X2_CASES)))
def test_pool2x2_avg(case, dtype):
    """Bitwise the oracle's float64 sum in its order / 4, or / divisor_override; the public call twice."""
    shape, kw = POOL2X2_CASES[case]
    x = _pool2x2_input(shape, dtype, case)
    for extra in ({}, dict(divisor_override=3), dict(divisor_override=-7), dict(count_include_pad=False)):
        args = dict(kw, **extra)
        spec = pool_spec("avg", x, 2, **args)
        one = (spec.P, spec.Q) == (1, 1)                   # one window per plane: the global kernel's
        assert _chosen(spec) == ("numba:avg_pool:direct/global" if one else "numba:avg_pool:direct/2x2")
        want = fastconv.avg_pool2d(x, 2, backend="numpy", **args)
        for _ in range(2):
            assert_bitwise(fastconv.avg_pool2d(x, 2, backend="numba", **args), want)


def test_pool2x2_by_hand():
    """One 2x4 plane, two windows, against the rules written out: the avg sum is float64 (2**24 + 1 + 1 + 1
    is exact there, not in float32); the max takes a NaN over anything before it, and the later of two."""
    x = np.array([[[[2.0**24, 1.0, 4.0, np.nan],
                    [1.0, 1.0, np.nan, 9.0]]]], np.float32)
    np.testing.assert_array_equal(fastconv.avg_pool2d(x[..., :2], 2, backend="numba")[0, 0, 0],
                                  [np.float32((2.0**24 + 3) / 4)])
    got, idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="numba")
    assert got[0, 0, 0, 0] == 2.0**24 and idx[0, 0, 0, 0] == 0
    assert np.isnan(got[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6          # row 1, column 2: the later NaN


@pytest.mark.parametrize("nchunk", [1, 2, 3, 7])
def test_pool2x2_kernel_chunks(nchunk):
    """The kernels themselves with chunk counts that split the output rows unevenly, one call per chunk,
    last chunk first (as workers may run them), and with all chunks in one call."""
    k = numba_cpu.kernels()
    x = _pool2x2_input((3, 5, 7, 6), np.float32, nchunk)               # 45 output rows
    want, want_idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="numpy")
    want_avg = fastconv.avg_pool2d(x, 2, backend="numpy")
    for chunks in ([(0, nchunk)], [(c, c + 1) for c in reversed(range(nchunk))]):
        out, idx = np.full(want.shape, np.nan, np.float32), np.full(want.shape, -1, np.int64)
        avg = np.full(want.shape, np.nan, np.float32)
        for c0, c1 in chunks:
            k.max_pool2x2(x, out, idx, True, c0, c1, nchunk)
            k.avg_pool2x2(x, avg, 4, c0, c1, nchunk)
        assert_bitwise(out, want)
        assert np.array_equal(idx, want_idx)
        assert_bitwise(avg, want_avg)


@pytest.mark.parametrize("kw, why", [
    (dict(kernel_size=3, stride=2), "not 2x2"),
    (dict(kernel_size=2, stride=1), "stride"),
    (dict(kernel_size=2, stride=2, padding=1), "padded"),
    (dict(kernel_size=2, stride=2, dilation=(1, 2)), "dilation"),
    (dict(kernel_size=2, stride=2, ceil_mode=True), "overhang"),       # 9x9: a fifth, partial window
])
def test_pool2x2_refuses_with_a_reason(kw, why):
    spec = pool_spec("max", np.zeros((1, 2, 9, 9), np.float32), **kw)
    impl = next(i for i in _dispatch.candidates(spec, "numba") if i.variant == "2x2")
    assert any(why in r for r in _dispatch.reasons(impl, spec))
    assert _chosen(spec) == "numba:max_pool:direct"


# ---------------------------------------------------------------------------------------------------
# Gradients of disjoint windows
# ---------------------------------------------------------------------------------------------------
AVG_DISJOINT = [
    ((2, 3, 8, 8), dict(kernel_size=2, stride=2)),
    ((2, 5, 9, 11), dict(kernel_size=2, stride=2)),              # odd: the last row/column in no window
    ((2, 3, 9, 11), dict(kernel_size=(2, 3), stride=(3, 4))),    # gaps between windows
    ((2, 3, 9, 9), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True)),
    ((2, 3, 9, 9), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False)),
    ((2, 3, 7, 7), dict(kernel_size=2, stride=2, ceil_mode=True, divisor_override=3)),
    ((16, 5, 7, 7), dict(kernel_size=7)),                        # the global pool
    ((2, 3, 6, 6), dict(kernel_size=6, padding=2, stride=7, count_include_pad=False)),
]


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.float16), ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(AVG_DISJOINT)))
def test_avg_pool_backward_disjoint(case, dtype):
    shape, kw = AVG_DISJOINT[case]
    x = np.zeros(shape, dtype)
    dy = _input(fastconv.avg_pool2d(x, backend="numpy", **kw).shape, dtype, case)
    assert _chosen(pool_grad_spec("avg", dy, x, **kw)) == "numba:avg_pool_backward:direct/disjoint"
    assert_bitwise(grad.avg_pool2d(dy, x, backend="numba", **kw), grad.avg_pool2d(dy, x, backend="numpy", **kw))


@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: d.__name__)
def test_adaptive_avg_pool_backward_global(dtype):
    x = np.zeros((3, 7, 5, 6), dtype)
    dy = _input((3, 7, 1, 1), dtype, 5)
    assert_bitwise(grad.adaptive_avg_pool2d(dy, x, backend="numba"), grad.adaptive_avg_pool2d(dy, x, backend="numpy"))
    dy1 = _input((2, 9, 1), dtype, 6)
    x1 = np.zeros((2, 9, 10), dtype)
    assert_bitwise(grad.adaptive_avg_pool1d(dy1, x1, backend="numba"),
                   grad.adaptive_avg_pool1d(dy1, x1, backend="numpy"))


def test_avg_pool_backward_disjoint_by_hand():
    """kernel 2 stride 3 on 1x5: windows [0, 2) and [3, 5); position 2 in none; -0.0 becomes 0.0."""
    x = np.zeros((1, 1, 5), np.float32)
    dy = np.array([[[-0.0, 6.0]]], np.float32)
    got = grad.avg_pool1d(dy, x, 2, 3, backend="numba")
    np.testing.assert_array_equal(got[0, 0], [0.0, 0.0, 0.0, 3.0, 3.0])
    assert not np.signbit(got[0, 0, :3]).any()


MAX_DISJOINT = [
    ((2, 3, 8, 8), dict(kernel_size=2, stride=2)),
    ((2, 5, 9, 11), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ((2, 3, 9, 11), dict(kernel_size=2, stride=3, padding=1)),
    ((2, 3, 13, 14), dict(kernel_size=2, stride=(3, 4), dilation=(2, 3), padding=(1, 0))),
    ((16, 5, 7, 7), dict(kernel_size=7)),                        # global
]


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.float16), ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", range(len(MAX_DISJOINT)))
def test_max_pool_backward_disjoint(case, dtype):
    """Indices of NaN, -inf, ties (the forward's rule) from the oracle; dy with -0.0 (0.0 in the oracle)."""
    shape, kw = MAX_DISJOINT[case]
    x = _input(shape, dtype, case)
    y, idx = fastconv.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    dy = _input(y.shape, dtype, case + 10, specials=False)
    dy.reshape(-1)[0] = -0.0
    assert _chosen(pool_grad_spec("max", dy, x, **kw)) == "numba:max_pool_backward:direct/disjoint"
    assert_bitwise(grad.max_pool2d(dy, x, indices=idx, backend="numba", **kw),
                   grad.max_pool2d(dy, x, indices=idx, backend="numpy", **kw))


def test_adaptive_max_pool_backward_disjoint():
    """The kernel of test_max_pool_backward_disjoint (both dtypes there) on adaptive windows: float32."""
    dtype = np.float32
    x = _input((3, 5, 8, 9), dtype, 8)
    dy = _input((3, 5, 4, 3), dtype, 9, specials=False)
    assert _chosen(pool_grad_spec("adaptive_max", dy, x)) == "numba:adaptive_max_pool_backward:direct/disjoint"
    _, idx = fastconv.adaptive_max_pool2d(x, (4, 3), return_indices=True, backend="numpy")
    assert_bitwise(grad.adaptive_max_pool2d(dy, x, indices=idx, backend="numba"),
                   grad.adaptive_max_pool2d(dy, x, indices=idx, backend="numpy"))


def test_max_pool_backward_disjoint_by_hand():
    """kernel 2 stride 2 on 1x6 [1, 3, nan, 0, -inf, -inf]: maxima at 1, 2 (NaN), 4 (the first -inf)."""
    x = np.array([[[1.0, 3.0, np.nan, 0.0, -np.inf, -np.inf]]], np.float32)
    dy = np.array([[[10.0, -0.0, 40.0]]], np.float32)
    idx = np.array([[[1, 2, 4]]])                                  # the forward's, written by hand
    got = grad.max_pool1d(dy, x, 2, 2, indices=idx, backend="numba")
    np.testing.assert_array_equal(got[0, 0], [0.0, 10.0, 0.0, 0.0, 40.0, 0.0])
    np.testing.assert_array_equal(fastconv.max_pool1d(x, 2, 2, return_indices=True, backend="numpy")[1], idx)
    assert not np.signbit(got).any()


@pytest.mark.parametrize("nchunk", [1, 3, 7])
def test_disjoint_kernels_chunks_and_dead_windows(nchunk):
    """Both disjoint gradient kernels called directly, with chunk counts that split 13 planes unevenly; an
    output marked dead (live False: a window wholly in the padding) sends nothing."""
    k = numba_cpu.kernels()
    x = np.zeros((1, 13, 6, 8), np.float32)
    dy = _input((1, 13, 3, 4), np.float32, nchunk, specials=False)
    spec = pool_grad_spec("avg", dy, x, kernel_size=2, stride=2)
    dx = np.full(x.shape, np.nan, np.float32)
    k.avg_pool2d_backward_disjoint(dy, dx, k.pool_geometry(spec), True, 0, nchunk)
    assert_bitwise(dx, grad.avg_pool2d(dy, x, 2, 2, backend="numpy"))
    _, idx = fastconv.max_pool2d(_input(x.shape, np.float32, 1), 2, 2, return_indices=True, backend="numpy")
    live_h, live_w = _indices.window_bounds(pool_grad_spec("max", dy, x, kernel_size=2, stride=2))[5::3]
    live_w = live_w.copy()
    live_w[1] = False
    dx = np.full(x.shape, np.nan, np.float32)
    k.pool2d_scatter_backward_disjoint(dy, idx, dx, live_h, live_w, nchunk)
    want = np.zeros(x.shape, np.float64).reshape(13, -1)          # by hand: dy at its index, live ones
    for t in range(13):
        for p in range(3):
            for q in (0, 2, 3):
                want[t, idx[0, t, p, q]] += dy[0, t, p, q]
    assert_bitwise(dx, want.astype(np.float32).reshape(x.shape))
