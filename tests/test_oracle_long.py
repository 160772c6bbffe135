"""The numpy backend (the oracle) on long windows, issue 18 item 5: its taps are walked in bounded chunks
(numpy_oracle._tap_chunks), so the Python-level work is one pass per chunk, never one per tap, and its
temporaries hold a chunk of taps times the output, never all taps times the output at once.

No test here times anything. The loop structure is counted instead: the lines of numpy_oracle.py that
run during a call (sys.settrace) must not grow with the window, and the chunks the helper yields must be
as many as its written bound says. Results on long windows are checked against the rules written out by
hand (a max pool's value and index are the max / first argmax of the window's slice, or its last NaN; a
1-D convolution is np.dot over the window's in-bounds part), with chunk boundaries forced inside the
windows (CHUNK_ELEMS made tiny), and against torch where it is installed.
"""
import math
import sys
import tracemalloc

import numpy as np
import pytest

import fastconv as fc
from fastconv import grad as G
from fastconv._backends import numpy_oracle as oracle
from fastconv._spec import pool_grad_spec

try:
    import torch
except ImportError:   # the cross-checks below skip
    torch = None

NP = dict(backend="numpy")


def _max_backward(kind, g, x, idx, **pool):
    """The oracle's max pool gradient itself (grad.max_pool1d would first check the indices, with Numba)."""
    spec = pool_grad_spec(kind, g, x, spatial_dims=1, **pool)
    return getattr(oracle, kind + "_pool_backward")(spec, g, idx).reshape(x.shape)


@pytest.fixture(params=["default", "tiny"])
def chunk_elems(request, monkeypatch):
    """Run with the default chunk budget, and with one so small that chunks end inside every window."""
    if request.param == "tiny":
        monkeypatch.setattr(oracle, "CHUNK_ELEMS", 37)
    return oracle.CHUNK_ELEMS


# ---------------------------------------------------------------------------------------------------
# The loop structure, counted
# ---------------------------------------------------------------------------------------------------
def _oracle_lines(fn):
    """How many lines of numpy_oracle.py run while ``fn()`` runs: the oracle's Python-level work."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == oracle.__file__ else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count


def _every_op(k):
    """Every op of the oracle on windows of k taps (1-D, and 2-D/3-D windows of about k taps), with
    padding and a stride of the window's length, so that the outputs stay a few positions whatever k; and
    adaptive pools to k windows of two taps (their windows were once walked one by one)."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((1, 2, 2 * k))
    w = rng.standard_normal((2, 2, k))
    conv = dict(stride=k, padding=k // 2)
    dy = rng.standard_normal(fc.conv1d(x, w, **conv, **NP).shape)
    pool = dict(kernel_size=k, stride=k, padding=k // 2)
    y, idx = fc.max_pool1d(x, **pool, return_indices=True, **NP)
    g = rng.standard_normal(y.shape)
    ya, ia = fc.adaptive_max_pool1d(x, 2, return_indices=True, **NP)
    x2 = rng.standard_normal((1, 2, 4, k // 2))
    unf = dict(kernel_size=(2, k // 2), stride=(2, k // 2), padding=(1, k // 4))
    cols = fc.unfold(x2, **unf, **NP)
    s = round(k ** (1 / 3))
    x3 = rng.standard_normal((1, 1, 2 * s, 2 * s, 2 * s))
    return {
        "conv": lambda: fc.conv1d(x, w, **conv, **NP),
        "conv_input": lambda: G.conv1d_input(x.shape, w, dy, **conv, **NP),
        "conv_weight": lambda: G.conv1d_weight(x, w.shape, dy, **conv, **NP),
        "conv_inf_weight": lambda: fc.conv1d(x, np.where(w > 1, np.inf, w), **conv, **NP),
        "conv_weight_inf_grad": lambda: G.conv1d_weight(x, w.shape, np.where(dy > 1, np.inf, dy), **conv, **NP),
        "max_pool": lambda: fc.max_pool1d(x, **pool, return_indices=True, **NP),
        "avg_pool": lambda: fc.avg_pool1d(x, **pool, count_include_pad=False, **NP),
        "adaptive_max_pool": lambda: fc.adaptive_max_pool1d(x, 2, return_indices=True, **NP),
        "adaptive_avg_pool": lambda: fc.adaptive_avg_pool1d(x, 2, **NP),
        "adaptive_max_pool_k_windows": lambda: fc.adaptive_max_pool1d(x, k, return_indices=True, **NP),
        "adaptive_avg_pool_k_windows": lambda: fc.adaptive_avg_pool1d(x, k, **NP),
        "max_pool_backward": lambda: _max_backward("max", g, x, idx, **pool),
        "avg_pool_backward": lambda: G.avg_pool1d(g, x, **pool, **NP),
        "adaptive_max_pool_backward": lambda: _max_backward("adaptive_max", g[..., :2], x, ia),
        "adaptive_avg_pool_backward": lambda: G.adaptive_avg_pool1d(ya, x, **NP),
        "max_unpool": lambda: fc.max_unpool1d(y, idx, **pool, output_size=x.shape[-1:], **NP),
        "lp_pool": lambda: fc.lp_pool1d(x, 2, k, stride=k, **NP),
        "unfold": lambda: fc.unfold(x2, **unf, **NP),
        "fold": lambda: fc.fold(cols, x2.shape[-2:], **unf, **NP),
        "max_pool3d": lambda: fc.max_pool3d(x3, s, stride=s, padding=s // 2, **NP),
        "avg_pool3d": lambda: fc.avg_pool3d(x3, s, stride=s, padding=s // 2, **NP),
    }


def test_python_work_does_not_grow_with_the_window():
    """The same problems with windows of 8 and of 4096 taps (all in one chunk either way) run the same
    lines of the oracle, give or take a branch: a loop over taps (or adaptive windows) anywhere, 4096
    iterations of at least one line, fails this."""
    short, long_ = _every_op(8), _every_op(4096)
    grown = {}
    for name in short:
        few, many = _oracle_lines(short[name]), _oracle_lines(long_[name])
        if many > few + 20:
            grown[name] = (few, many)
    assert not grown, f"oracle lines run (8 taps, 4096 taps) by the ops whose Python work grows: {grown}"


def _count_chunks(monkeypatch):
    """Record (per_tap, taps of each chunk) of every walk through _tap_chunks."""
    walks, helper = [], oracle._tap_chunks

    def counting(axes, per_tap):
        walk = (per_tap, [])
        walks.append(walk)
        for ch in helper(axes, per_tap):
            walk[1].append(ch.taps)
            yield ch

    monkeypatch.setattr(oracle, "_tap_chunks", counting)
    return walks


def test_chunks_follow_the_written_bound(monkeypatch):
    """With CHUNK_ELEMS = 64 and one output of N*C = 2 rows (a pool costs N*C*Z*P*Q = 2 elements a tap), a
    window of 1000 taps is ceil(1000 / (64 // 2)) = 32 chunks of consecutive taps, in order, each tap
    once; a 2-D window of 7 x 300 taps, split inside its rows, the same way."""
    monkeypatch.setattr(oracle, "CHUNK_ELEMS", 64)
    walks = _count_chunks(monkeypatch)
    fc.max_pool1d(np.zeros((1, 2, 1000)), 1000, **NP)
    fc.avg_pool2d(np.zeros((1, 2, 7, 300)), (7, 300), **NP)
    assert [pt for pt, _ in walks] == [2, 2]
    for (per_tap, chunks), taps in zip(walks, (1000, 2100)):
        step = 64 // per_tap
        assert len(chunks) == math.ceil(taps / step)
        assert all(len(c) <= step for c in chunks)
        np.testing.assert_array_equal(np.concatenate(chunks), np.arange(taps))


def test_taps_reading_only_padding_are_skipped_as_a_range(monkeypatch):
    """A kernel of 2*10**6 + 1 taps padded by 10**6 over 16 inputs: only the 31 taps that meet the input
    for some output are walked (one chunk), and the result is np.dot over each window's in-bounds part."""
    walks = _count_chunks(monkeypatch)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 16)).astype(np.float32)
    w = rng.standard_normal((1, 1, 2 * 10**6 + 1)).astype(np.float32)
    got = fc.conv1d(x, w, padding=10**6, **NP)
    assert len(walks) == 1 and len(walks[0][1]) == 1 and len(walks[0][1][0]) == 31
    x64, w64 = x[0, 0].astype(np.float64), w[0, 0].astype(np.float64)
    # output o reads input position o - 10**6 + i at tap i: the input is taps 10**6 - o .. 10**6 - o + 15
    want = [np.dot(x64, w64[10**6 - o:10**6 - o + 16]) for o in range(16)]
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("op", ["avg_pool", "max_pool", "conv", "conv_input", "conv_weight", "unfold", "fold"])
def test_memory_is_a_chunk_of_taps_times_the_output(monkeypatch, op):
    """256 taps over 257 outputs of 4 rows would be 2.1 MB of float64 gathered at once; with CHUNK_ELEMS =
    8192 the peak traced allocation stays under a quarter of that (the arrays themselves are ~20 kB; unfold's
    output and fold's input are the 2.1 MB column matrix, allowed on top)."""
    monkeypatch.setattr(oracle, "CHUNK_ELEMS", 8192)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 512))
    w = rng.standard_normal((2, 2, 256))
    dy = rng.standard_normal((2, 2, 257))
    cols = rng.standard_normal((2, 2 * 256, 257))
    calls = {
        "avg_pool": lambda: fc.avg_pool1d(x, 256, 1, **NP),
        "max_pool": lambda: fc.max_pool1d(x, 256, 1, return_indices=True, **NP),
        "conv": lambda: fc.conv1d(x, w, **NP),
        "conv_input": lambda: G.conv1d_input(x.shape, w, dy, **NP),
        "conv_weight": lambda: G.conv1d_weight(x, w.shape, dy, **NP),
        "unfold": lambda: fc.unfold(x[:, :, None, :], (1, 256), **NP),
        "fold": lambda: fc.fold(cols, (1, 512), (1, 256), **NP),
    }
    at_once = 256 * 257 * 4 * 8
    tracemalloc.start()
    try:
        calls[op]()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < at_once // 4 + (at_once if op in ("unfold", "fold") else 0), f"{op}: peak {peak} bytes"


# ---------------------------------------------------------------------------------------------------
# Results on long windows, by hand
# ---------------------------------------------------------------------------------------------------
def _windows(size, k, stride, pad, dil=1):
    """Each window's in-bounds input positions and their taps, by the definition."""
    out = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wins = []
    for o in range(out):
        taps = np.arange(k)
        pos = o * stride - pad + taps * dil
        ok = (pos >= 0) & (pos < size)
        wins.append((pos[ok], taps[ok]))
    return wins


def _scan(values, positions):
    """The max pool's rule over one window's in-bounds values: the last NaN, else the first maximum."""
    nan = np.flatnonzero(np.isnan(values))
    at = nan[-1] if nan.size else int(np.argmax(values))
    return values[at], positions[at]


def _hostile_row(rng, n):
    """A row whose maximum appears twice, far apart: a tie, across chunk boundaries when chunks are tiny."""
    row = rng.standard_normal(n)
    row[[n // 5, n // 2 + 3]] = 10.0
    return row


def test_long_max_pool_value_and_index_by_hand(chunk_elems):
    rng = np.random.default_rng(7)
    n, k, stride, pad, dil = 1200, 700, 250, 300, 1
    x = np.stack([_hostile_row(rng, n), rng.standard_normal(n), np.full(n, -np.inf), np.full(n, 10.0)])[None]
    x[0, 1, [100, 450, 460]] = np.nan                # several NaN: the last one in the window wins
    y, idx = fc.max_pool1d(x, k, stride, pad, dil, return_indices=True, **NP)
    for c in range(4):
        for o, (pos, _) in enumerate(_windows(n, k, stride, pad, dil)):
            want_val, want_idx = _scan(x[0, c, pos], pos)
            np.testing.assert_equal(y[0, c, o], want_val)
            assert idx[0, c, o] == want_idx, (c, o)


def test_long_2d_max_pool_breaks_ties_row_major(chunk_elems):
    """A 9 x 400 window over a 9 x 400 plane with the maximum at (2, 390) and (5, 10): the first in row-major
    order wins, whichever chunk each falls in."""
    x = np.zeros((1, 1, 9, 400))
    x[0, 0, 2, 390] = x[0, 0, 5, 10] = 1.0
    y, idx = fc.max_pool2d(x, (9, 400), return_indices=True, **NP)
    assert y[0, 0, 0, 0] == 1.0 and idx[0, 0, 0, 0] == 2 * 400 + 390


def test_long_adaptive_pools_by_hand(chunk_elems):
    rng = np.random.default_rng(8)
    n, out = 1000, 3
    x = np.stack([_hostile_row(rng, n), rng.standard_normal(n)])[None]
    x[0, 1, [10, 20, 700]] = np.nan
    y, idx = fc.adaptive_max_pool1d(x, out, return_indices=True, **NP)
    ya = fc.adaptive_avg_pool1d(x, out, **NP)
    for o in range(out):
        lo, hi = (o * n) // out, -(-((o + 1) * n) // out)
        pos = np.arange(lo, hi)
        for c in range(2):
            want_val, want_idx = _scan(x[0, c, lo:hi], pos)
            np.testing.assert_equal(y[0, c, o], want_val)
            assert idx[0, c, o] == want_idx
            np.testing.assert_allclose(ya[0, c, o], x[0, c, lo:hi].mean(), rtol=1e-12)


@pytest.mark.parametrize("include_pad", [True, False])
def test_long_avg_pool_and_its_gradient_by_hand(chunk_elems, include_pad):
    rng = np.random.default_rng(9)
    n, k, stride, pad = 1000, 600, 130, 250
    x = rng.standard_normal((1, 2, n))
    y = fc.avg_pool1d(x, k, stride, pad, count_include_pad=include_pad, **NP)
    g = rng.standard_normal(y.shape)
    dx = G.avg_pool1d(g, x, k, stride, pad, count_include_pad=include_pad, **NP)
    want_dx = np.zeros_like(x)
    for o, (pos, _) in enumerate(_windows(n, k, stride, pad)):
        start = o * stride - pad
        divisor = min(start + k, n + pad) - start if include_pad else pos.size
        np.testing.assert_allclose(y[0, :, o], x[0][:, pos].sum(axis=1) / divisor, rtol=1e-12)
        want_dx[0][:, pos] += g[0, :, o:o + 1] / divisor
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-15)


def test_long_pool_gradients_by_hand(chunk_elems):
    """max: dy to the forward's index; adaptive avg: dy / window length to every position of the window."""
    rng = np.random.default_rng(10)
    n = 900
    x = rng.standard_normal((1, 2, n))
    y, idx = fc.max_pool1d(x, 500, 200, 250, return_indices=True, **NP)
    g = rng.standard_normal(y.shape)
    want = np.zeros_like(x)
    for c in range(2):
        np.add.at(want[0, c], idx[0, c], g[0, c])
    got = _max_backward("max", g, x, idx, kernel_size=500, stride=200, padding=250)
    np.testing.assert_array_equal(got, want)
    ga = rng.standard_normal((1, 2, 2))
    want = np.zeros_like(x)
    for o in range(2):
        lo, hi = (o * n) // 2, -(-((o + 1) * n) // 2)
        want[0, :, lo:hi] += ga[0, :, o:o + 1] / (hi - lo)
    np.testing.assert_allclose(G.adaptive_avg_pool1d(ga, x, **NP), want, rtol=1e-12)


def _conv_by_hand(x, w, stride, pad, dil):
    """y[n, k, o] = sum over channels and in-bounds taps: np.dot over the window's in-bounds part."""
    N, C, n = x.shape
    K, _, k = w.shape
    wins = _windows(n, k, stride, pad, dil)
    y = np.zeros((N, K, len(wins)))
    for o, (pos, taps) in enumerate(wins):
        for kk in range(K):
            y[:, kk, o] = sum(x[:, c, pos] @ w[kk, c, taps] for c in range(C))
    return y


def test_long_conv_and_its_gradients_by_hand(chunk_elems):
    rng = np.random.default_rng(11)
    n, k, stride, pad, dil = 700, 450, 90, 200, 1
    x = rng.standard_normal((2, 2, n))
    w = rng.standard_normal((3, 2, k))
    args = (stride, pad, dil)
    y = fc.conv1d(x, w, None, *args, **NP)
    np.testing.assert_allclose(y, _conv_by_hand(x, w, *args), rtol=1e-11, atol=1e-11)
    dy = rng.standard_normal(y.shape)
    want_dx, want_dw = np.zeros_like(x), np.zeros_like(w)
    for o, (pos, taps) in enumerate(_windows(n, k, stride, pad, dil)):
        for kk in range(3):
            # the forward term x[n, c, pos] * w[kk, c, tap] sends dy[n, kk, o] * w to dx and dy * x to dw
            want_dx[:, :, pos] += dy[:, kk, o, None, None] * w[kk][:, taps][None]
            want_dw[kk][:, taps] += np.einsum("n,ncp->cp", dy[:, kk, o], x[:, :, pos])
    np.testing.assert_allclose(G.conv1d_input(x.shape, w, dy, *args, **NP), want_dx, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(G.conv1d_weight(x, w.shape, dy, *args, **NP), want_dw, rtol=1e-11, atol=1e-11)


def test_long_conv_inf_weight_and_inf_gradient_never_meet_padding(chunk_elems):
    """An Inf weight at a tap some outputs read in the padding: those outputs stay finite (the rule), the
    others are Inf; the same for an Inf in dy and the weight gradient."""
    rng = np.random.default_rng(12)
    n, k, pad = 300, 280, 200
    x = rng.uniform(0.5, 1.0, (1, 1, n))
    w = rng.standard_normal((1, 1, k))
    w[0, 0, 5] = np.inf
    y = fc.conv1d(x, w, padding=pad, **NP)[0, 0]
    pos5 = np.arange(y.size) - pad + 5                 # where tap 5 reads, per output
    reads = (pos5 >= 0) & (pos5 < n)
    assert np.all(np.isposinf(y[reads])) and np.all(np.isfinite(y[~reads]))
    finite_w = w.copy()
    finite_w[0, 0, 5] = 0.0
    np.testing.assert_allclose(y[~reads], _conv_by_hand(x, finite_w, 1, pad, 1)[0, 0][~reads], rtol=1e-11)
    dy = rng.standard_normal((1, 1, y.size))
    dy[0, 0, 3] = np.inf                               # output 3 reads positions 3 - pad + i: taps >= pad - 3
    dw = G.conv1d_weight(x, w.shape, dy, padding=pad, **NP)[0, 0]
    hit = np.arange(k) >= pad - 3
    assert np.all(np.isposinf(dw[hit])) and np.all(np.isfinite(dw[~hit]))


def test_long_unfold_and_fold_by_hand(chunk_elems):
    rng = np.random.default_rng(13)
    n, k, stride, pad = 800, 500, 150, 120
    x = rng.standard_normal((1, 2, 1, n))
    cols = fc.unfold(x, (1, k), padding=(0, pad), stride=(1, stride), **NP)
    wins = _windows(n, k, stride, pad)
    want = np.zeros((1, 2 * k, len(wins)))
    for o, (pos, taps) in enumerate(wins):
        for c in range(2):
            want[0, c * k + taps, o] = x[0, c, 0, pos]
    np.testing.assert_array_equal(cols, want)
    back = fc.fold(cols, (1, n), (1, k), padding=(0, pad), stride=(1, stride), **NP)
    want_back = np.zeros_like(x)
    for o, (pos, taps) in enumerate(wins):
        want_back[0, :, 0, pos] += cols[0].reshape(2, k, -1)[:, taps, o].T
    np.testing.assert_allclose(back, want_back, rtol=1e-12)


def test_the_issue_examples_at_full_size():
    """The examples of issue 18 item 5 (17 s, 5 s and over 120 s before): max_pool1d over a window of 10**6
    and adaptive_max_pool1d to one output are the row's max and its first argmax."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 2, 10**6)).astype(np.float32)
    for y, idx in (fc.max_pool1d(x, 10**6, return_indices=True, **NP),
                   fc.adaptive_max_pool1d(x, 1, return_indices=True, **NP)):
        np.testing.assert_array_equal(y[0, :, 0], x[0].max(axis=1))
        np.testing.assert_array_equal(idx[0, :, 0], x[0].argmax(axis=1))


# ---------------------------------------------------------------------------------------------------
# Against torch, where installed
# ---------------------------------------------------------------------------------------------------
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@needs_torch
def test_long_windows_match_torch():
    F = torch.nn.functional
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 3, 900))
    x[0, 1, [100, 700]] = np.nan
    x[1, 2, [50, 600]] = 5.0                             # a tie
    tx = torch.from_numpy(x)
    for kw in (dict(kernel_size=600, stride=100, padding=300), dict(kernel_size=300, stride=77, padding=50,
                                                                    dilation=2, ceil_mode=True)):
        y, idx = fc.max_pool1d(x, **kw, return_indices=True, **NP)
        ty, tidx = F.max_pool1d(tx, **kw, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())
    y, idx = fc.adaptive_max_pool1d(x, 4, return_indices=True, **NP)
    ty, tidx = F.adaptive_max_pool1d(tx, 4, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    xf = np.nan_to_num(x)
    txf = torch.from_numpy(xf)
    np.testing.assert_allclose(fc.avg_pool1d(xf, 500, 120, 250, count_include_pad=False, **NP),
                               F.avg_pool1d(txf, 500, 120, 250, count_include_pad=False).numpy(), rtol=1e-12)
    np.testing.assert_allclose(fc.adaptive_avg_pool1d(xf, 3, **NP), F.adaptive_avg_pool1d(txf, 3).numpy(),
                               rtol=1e-12)
    w = rng.standard_normal((2, 3, 400))
    tw = torch.from_numpy(w).requires_grad_()
    txg = txf.clone().requires_grad_()
    ty = F.conv1d(txg, tw, stride=60, padding=200, dilation=2)
    np.testing.assert_allclose(fc.conv1d(xf, w, stride=60, padding=200, dilation=2, **NP), ty.detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(G.conv1d_input(xf.shape, w, dy, stride=60, padding=200, dilation=2, **NP),
                               txg.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(G.conv1d_weight(xf, w.shape, dy, stride=60, padding=200, dilation=2, **NP),
                               tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    x4 = xf.reshape(2, 3, 3, 300)
    cols = fc.unfold(x4, (2, 250), padding=(1, 100), stride=(1, 90), **NP)
    np.testing.assert_array_equal(cols, F.unfold(torch.from_numpy(x4), (2, 250), padding=(1, 100),
                                                 stride=(1, 90)).numpy())
    np.testing.assert_allclose(fc.fold(cols, (3, 300), (2, 250), padding=(1, 100), stride=(1, 90), **NP),
                               F.fold(torch.from_numpy(cols), (3, 300), (2, 250), padding=(1, 100),
                                      stride=(1, 90)).numpy(), rtol=1e-12)
    y3, i3 = fc.max_pool3d(x4[:, :, None], (1, 3, 280), (1, 1, 50), return_indices=True, **NP)
    ty3, ti3 = F.max_pool3d(torch.from_numpy(x4[:, :, None]), (1, 3, 280), (1, 1, 50), return_indices=True)
    np.testing.assert_array_equal(y3, ty3.numpy())
    np.testing.assert_array_equal(i3, ti3.numpy())
