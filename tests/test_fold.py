"""unfold and fold (fastconv._fold, fastconv._spec_fold): im2col and col2im as ops, 1-D to 3-D, every backend.

- the oracle (numpy_oracle.unfold / fold) against naive nested loops written here (which also compute the
  number of blocks by their own formula), and against values written out by hand;
- every other backend (numba, cuda-emu; cuda where there is a GPU) against the oracle: unfold exactly, fold
  within n * eps * fold(|cols|) (n: the taps of a block), and numba's fold bitwise (it sums in the oracle's
  order and type); fold(unfold(x)) == x times the number of (tap, block) pairs reading each position (the rule
  counted here by loops);
- torch.nn.functional.unfold / fold where PyTorch is installed (2-D, batched and not, dilation, stride,
  padding);
- the empty batch, non-contiguous and read-only inputs (never modified, outputs never alias them), NaN/Inf
  in the padding's dropped fold entries, the specs' shapes and counts, the dispatch names;
- bad input rejected with ValueError/TypeError naming the argument, before dispatch is asked.
The CUDA kernels themselves (three thread orders, int64 instantiations, the struct layout) are in
tests/cuda/test_fold.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _config, _dispatch
from fastconv._backends import numpy_oracle as oracle
from fastconv._fold import fold, unfold
from fastconv._spec_fold import FoldSpec, UnfoldSpec, fold_spec, unfold_spec
from fastconv.testing import assert_within, to_numpy

from .backend_params import to_backend

_ACC_EPS = {"float16": np.finfo(np.float32).eps, "float32": np.finfo(np.float32).eps,
            "float64": np.finfo(np.float64).eps}
DTYPES = ("float32", "float64", "float16")

#: name -> (input shape as the user passes it, unfold/fold keyword arguments, spatial dims)
CASES = {
    "2d": ((2, 3, 6, 7), dict(kernel_size=3), 2),
    "2d_strided_dilated_padded": ((2, 2, 7, 9), dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 2),
                                                      stride=(2, 3)), 2),
    "2d_asymmetric_padding": ((1, 2, 5, 6), dict(kernel_size=(3, 2), padding=((2, 0), (1, 3)), stride=(1, 2)), 2),
    "2d_unbatched": ((3, 6, 5), dict(kernel_size=2, stride=2, padding=1), 2),
    "2d_padding_wider_than_kernel": ((1, 1, 3, 4), dict(kernel_size=2, padding=3, stride=2), 2),
    "2d_stride_beyond_kernel": ((1, 2, 9, 10), dict(kernel_size=2, stride=(4, 3)), 2),
    "1d": ((2, 3, 11), dict(kernel_size=(3,), stride=(2,), padding=((2, 1),), dilation=(2,)), 1),
    "1d_unbatched": ((2, 9), dict(kernel_size=(4,), padding=(1,)), 1),
    "3d": ((1, 2, 4, 5, 6), dict(kernel_size=(2, 2, 3), padding=((1, 0), 1, (0, 2)), stride=(1, 2, 2),
                                 dilation=(2, 1, 1)), 3),
    "3d_unbatched": ((2, 3, 4, 5), dict(kernel_size=(3, 1, 2), stride=(2, 1, 1), padding=(1, 0, 1)), 3),
}


def _image(case, dtype="float64", seed=0):
    shape, kw, nd = CASES[case]
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype), kw, nd


def _sizes(x, nd):
    return tuple(x.shape[-nd:])


# ---------------------------------------------------------------------------------------------------
# Naive loops (the definition, one element at a time) and the rule fold(unfold(x)) obeys
# ---------------------------------------------------------------------------------------------------
def _per_dim(v, nd):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd


def _geometry(kw, nd):
    """(kernel, dilation, (before, after) pads, stride) per dimension, widened to 3 (D, H, W) with 1s / 0s."""
    pads = tuple(p if isinstance(p, (list, tuple)) else (p, p) for p in _per_dim(kw.get("padding", 0), nd))
    widen = lambda t, fill: (fill,) * (3 - nd) + tuple(t)                         # noqa: E731
    return (widen(_per_dim(kw["kernel_size"], nd), 1), widen(_per_dim(kw.get("dilation", 1), nd), 1),
            widen(pads, (0, 0)), widen(_per_dim(kw.get("stride", 1), nd), 1))


def _blocks(size, k, dil, pad, stride):
    """Block starts -pad_before, -pad_before + stride, ... whose last tap stays inside the padded extent."""
    n, start = 0, -pad[0]
    while start + (k - 1) * dil <= size - 1 + pad[1]:
        n, start = n + 1, start + stride
    return n


def _as5(x, nd, batched):
    x = x if batched else x[None]
    return x.reshape(x.shape[:2] + (1,) * (3 - nd) + x.shape[2:])


def naive_unfold(x5, ks, dils, pads, strides):
    N, C, D, H, W = x5.shape
    (T, R, S), (dd, dh, dw), (sd, sh, sw) = ks, dils, strides
    Z, P, Q = (_blocks(n, k, d, p, s) for n, k, d, p, s in zip((D, H, W), ks, dils, pads, strides))
    col = np.zeros((N, C * T * R * S, Z * P * Q))
    for n in range(N):
        for c in range(C):
            for t in range(T):
                for r in range(R):
                    for s in range(S):
                        for z in range(Z):
                            for p in range(P):
                                for q in range(Q):
                                    d = z * sd - pads[0][0] + t * dd
                                    h = p * sh - pads[1][0] + r * dh
                                    w = q * sw - pads[2][0] + s * dw
                                    if 0 <= d < D and 0 <= h < H and 0 <= w < W:
                                        col[n, ((c * T + t) * R + r) * S + s, (z * P + p) * Q + q] = x5[n, c, d, h, w]
    return col, (Z, P, Q)


def naive_fold(col, size3, ks, dils, pads, strides):
    (D, H, W), (T, R, S), (dd, dh, dw), (sd, sh, sw) = size3, ks, dils, strides
    Z, P, Q = (_blocks(n, k, d, p, s) for n, k, d, p, s in zip(size3, ks, dils, pads, strides))
    N, C = col.shape[0], col.shape[1] // (T * R * S)
    out = np.zeros((N, C, D, H, W))
    for n in range(N):
        for c in range(C):
            for t in range(T):
                for r in range(R):
                    for s in range(S):
                        for z in range(Z):
                            for p in range(P):
                                for q in range(Q):
                                    d = z * sd - pads[0][0] + t * dd
                                    h = p * sh - pads[1][0] + r * dh
                                    w = q * sw - pads[2][0] + s * dw
                                    if 0 <= d < D and 0 <= h < H and 0 <= w < W:
                                        out[n, c, d, h, w] += col[n, ((c * T + t) * R + r) * S + s, (z * P + p) * Q + q]
    return out


def reads_per_position(size3, ks, dils, pads, strides):
    """How many (tap, block) pairs read each image position: the product over the axes of the pairs (k, o)
    with o*stride - pad_before + k*dil == position (0 <= o < blocks, 0 <= k < kernel)."""
    per_axis = []
    for n, k, d, p, s in zip(size3, ks, dils, pads, strides):
        blocks = _blocks(n, k, d, p, s)
        count = np.zeros(n, dtype=np.int64)
        for o in range(blocks):
            for j in range(k):
                pos = o * s - p[0] + j * d
                if 0 <= pos < n:
                    count[pos] += 1
        per_axis.append(count)
    return per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]


# ---------------------------------------------------------------------------------------------------
# The oracle against naive loops and hand-derived values
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_oracle_matches_naive_loops(case):
    x, kw, nd = _image(case)
    batched = x.ndim == nd + 2
    geo = _geometry(kw, nd)
    want_col, blocks = naive_unfold(_as5(x, nd, batched), *geo)
    spec = unfold_spec(x, **kw)
    assert spec.out_size == blocks and spec.spatial_dims == nd and spec.batched == batched
    col = unfold(x, backend="numpy", **kw)
    assert col.shape == (want_col.shape if batched else want_col.shape[1:])
    np.testing.assert_array_equal(col.reshape(want_col.shape), want_col)
    # fold of an arbitrary column matrix (not an unfold's), then the oracle's fold64 itself
    cols = np.random.default_rng(1).standard_normal(col.shape)
    want = naive_fold(cols.reshape(want_col.shape), _as5(x, nd, batched).shape[2:], *geo)
    out = fold(cols, _sizes(x, nd), backend="numpy", **kw)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.reshape(want.shape), want, rtol=1e-13, atol=1e-13)
    fspec = fold_spec(cols, _sizes(x, nd), **kw)
    np.testing.assert_allclose(oracle.fold64(fspec, cols).reshape(want.shape), want, rtol=1e-13, atol=1e-13)


def test_hand_derived_values():
    # 2-D: a 2x3 image, 2x2 kernel: two blocks, rows (tap (i, j)) [x[i, j], x[i, j+1]]
    x = np.array([[[[1., 2., 3.], [4., 5., 6.]]]])
    np.testing.assert_array_equal(unfold(x, 2, backend="numpy"), [[[1, 2], [2, 3], [4, 5], [5, 6]]])
    # 1-D, kernel 2, padding 1: blocks start at -1, 0, 1, 2; tap 0 reads [pad, 1, 2, 3], tap 1 [1, 2, 3, pad]
    x1 = np.array([[[1., 2., 3.]]])
    np.testing.assert_array_equal(unfold(x1, (2,), padding=1, backend="numpy"), [[[0, 1, 2, 3], [1, 2, 3, 0]]])
    # its fold: position 0 gets tap 0 of block 1 and tap 1 of block 0; column entries of the padding
    # (tap 0 of block 0, tap 1 of block 3) are dropped, whatever they hold
    cols = np.array([[[np.inf, 10., 20., 30.], [1., 2., 3., np.nan]]])
    np.testing.assert_array_equal(fold(cols, (3,), (2,), padding=1, backend="numpy"), [[[11., 22., 33.]]])
    # stride 2, dilation 2 over 5 positions with per-side padding (0, 1): blocks start at 0 and 2, taps at +0,
    # +2; block 1's second tap reads position 4
    x5 = np.array([[[1., 2., 3., 4., 5.]]])
    np.testing.assert_array_equal(unfold(x5, (2,), dilation=2, stride=2, padding=((0, 1),), backend="numpy"),
                                  [[[1, 3], [3, 5]]])
    np.testing.assert_array_equal(fold(np.array([[[1., 2.], [3., 4.]]]), (5,), (2,), dilation=2, stride=2,
                                       padding=((0, 1),), backend="numpy"), [[[1, 0, 5, 0, 4]]])
    # 3-D: a 2x1x2 volume, kernel (2, 1, 1): one block per (h, w); rows t = 0, 1
    x3 = np.array([[[[[1., 2.]], [[3., 4.]]]]])
    np.testing.assert_array_equal(unfold(x3, (2, 1, 1), backend="numpy"), [[[1, 2], [3, 4]]])
    # two channels: channel c's rows are c*taps + tap
    xc = np.array([[[1., 2.], [3., 4.]]])                # (1, 2, 2): C = 2, L = 2
    np.testing.assert_array_equal(unfold(xc, (2,), backend="numpy"), [[[1], [2], [3], [4]]])


# ---------------------------------------------------------------------------------------------------
# Every backend against the oracle
# ---------------------------------------------------------------------------------------------------
def _backends():
    params = []
    for name, info in fastconv.backends().items():
        if name == "numpy":
            continue
        mark = () if info["available"] else pytest.mark.skip(reason=f"{name}: {info['reason']}")
        params.append(pytest.param(name, id=name, marks=mark))
    return params


def _run(backend, fn, a, *args, **kw):
    (a,) = to_backend(backend, a)
    out = fn(a, *args, backend=backend, **kw)
    assert type(out).__module__.split(".")[0] == type(a).__module__.split(".")[0]   # the input's array type
    return to_numpy(out)


def fold_tolerance(spec, cols):
    """n * eps_acc * fold(|cols|) + one rounding of the stored result, n = the taps of a block (at most that
    many entries reach one position)."""
    mag = oracle.fold64(spec, np.abs(to_numpy(cols).astype(np.float64)))
    mag = np.where(np.isfinite(mag), mag, 0.0)
    return (2 * (spec.window_elems + 1) * _ACC_EPS[spec.dtype] + float(np.finfo(spec.dtype).eps)) * mag \
        + np.finfo(spec.dtype).tiny


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", _backends())
def test_backend_matches_oracle(backend, case, dtype):
    x, kw, nd = _image(case, dtype)
    col = _run(backend, unfold, x, **kw)
    ref = unfold(x, backend="numpy", **kw)
    assert col.dtype == np.dtype(dtype) and col.shape == ref.shape
    np.testing.assert_array_equal(col, ref)                       # a copy: exact
    cols = np.random.default_rng(2).standard_normal(ref.shape).astype(dtype)
    out = _run(backend, fold, cols, _sizes(x, nd), **kw)
    want = fold(cols, _sizes(x, nd), backend="numpy", **kw)
    assert out.dtype == np.dtype(dtype) and out.shape == x.shape
    spec = fold_spec(cols, _sizes(x, nd), **kw)
    assert_within(out.astype(np.float64).reshape(spec.output_layout),
                  oracle.fold64(spec, cols).reshape(spec.output_layout),
                  fold_tolerance(spec, cols.reshape(spec.operands()[0])), spec)
    if backend == "numba" and dtype != "float16":     # the oracle's order and type, one rounding
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["numpy"] + _backends())
def test_fold_of_unfold_is_the_image_times_its_reads(backend, case):
    x, kw, nd = _image(case)
    x = np.random.default_rng(3).integers(-8, 9, size=x.shape).astype(np.float32)   # sums exact
    batched = x.ndim == nd + 2
    counts = reads_per_position(_as5(x, nd, batched).shape[2:], *_geometry(kw, nd))
    out = _run(backend, fold, _run(backend, unfold, x, **kw), _sizes(x, nd), **kw)
    want = _as5(x, nd, batched) * counts
    np.testing.assert_array_equal(out.reshape(want.shape), want)


@pytest.mark.parametrize("backend", ["numpy"] + _backends())
def test_dropped_padding_entries_never_reach_the_image(backend):
    """Column entries of taps in the padding hold Inf and NaN: fold drops them (nothing is multiplied, so
    nothing else can turn them into a result), and the in-bounds sums are exact small integers."""
    kw = dict(kernel_size=(3, 2), padding=((2, 1), (1, 1)), stride=(1, 2))
    x = np.ones((1, 2, 4, 5), np.float32)
    spec = unfold_spec(x, **kw)
    inside = unfold(x, backend="numpy", **kw) == 1                # 1 where the tap is in bounds, 0 in padding
    rng = np.random.default_rng(4)
    cols = rng.integers(-4, 5, size=inside.shape).astype(np.float32)
    cols[~inside] = rng.choice([np.inf, -np.inf, np.nan], size=int((~inside).sum()))
    out = _run(backend, fold, cols, (4, 5), **kw)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, fold(np.where(inside, cols, 0), (4, 5), backend="numpy", **kw))
    assert spec.is_padded


@pytest.mark.parametrize("backend", ["numpy"] + _backends())
def test_empty_batch_layouts_and_inputs_left_alone(backend):
    kw = dict(kernel_size=(2, 3), padding=1, stride=(2, 1))
    empty = np.zeros((0, 3, 5, 6), np.float32)
    e = _run(backend, unfold, empty, **kw)
    assert e.shape == (0, 18, unfold_spec(empty, **kw).L)
    assert _run(backend, fold, e, (5, 6), **kw).shape == (0, 3, 5, 6)
    base = np.random.default_rng(5).standard_normal((2, 6, 5, 3)).astype(np.float64)
    x = base.transpose(0, 3, 2, 1)[:, :, ::-1]                     # (2, 3, 5, 6), non-contiguous, reversed rows
    x.flags.writeable = False
    before = x.copy()
    col = _run(backend, unfold, x, **kw)
    np.testing.assert_array_equal(col, unfold(np.ascontiguousarray(x), backend="numpy", **kw))
    cols = np.asfortranarray(col)
    cols.flags.writeable = False
    out = _run(backend, fold, cols, (5, 6), **kw)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(out, fold(np.ascontiguousarray(col), (5, 6), backend="numpy", **kw), rtol=1e-12)
    assert not np.shares_memory(col, x) and not np.shares_memory(out, cols)


# ---------------------------------------------------------------------------------------------------
# Against PyTorch (2-D; torch's unfold and fold take no other dimensions and no per-side pads)
# ---------------------------------------------------------------------------------------------------
TORCH_CASES = [((2, 3, 6, 7), dict(kernel_size=3)),
               ((2, 2, 7, 9), dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3))),
               ((3, 6, 5), dict(kernel_size=2, stride=2, padding=1)),                       # unbatched
               ((1, 1, 3, 4), dict(kernel_size=2, padding=3, stride=2)),
               ((1, 2, 9, 10), dict(kernel_size=(3, 2), stride=(4, 3), dilation=2))]


@pytest.mark.parametrize("xshape,kw", TORCH_CASES, ids=[f"torch{i}" for i in range(len(TORCH_CASES))])
def test_matches_torch(xshape, kw):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check is skipped")
    F = torch.nn.functional
    x = np.random.default_rng(6).standard_normal(xshape)
    want = F.unfold(torch.from_numpy(x), **kw).numpy()
    size = xshape[-2:]
    for backend in ("numpy", "numba"):
        col = unfold(x, backend=backend, **kw)
        np.testing.assert_array_equal(col, want)
        np.testing.assert_allclose(fold(col, size, backend=backend, **kw),
                                   F.fold(torch.from_numpy(col), size, **kw).numpy(), rtol=1e-12, atol=1e-12)
    # fold of an arbitrary column matrix, and output_size given as an int where it is square
    cols = np.random.default_rng(7).standard_normal(want.shape)
    np.testing.assert_allclose(fold(cols, size, backend="numpy", **kw),
                               F.fold(torch.from_numpy(cols), size, **kw).numpy(), rtol=1e-12, atol=1e-12)


def test_int_output_size_and_kernel_decide_two_dimensions():
    cols = np.random.default_rng(8).standard_normal((1, 2 * 9, 16))
    spec = fold_spec(cols, 6, 3)
    assert (spec.spatial_dims, spec.in_size, spec.window, spec.out_size) == (2, (1, 6, 6), (1, 3, 3), (1, 4, 4))
    np.testing.assert_array_equal(fold(cols, 6, 3, backend="numpy"), fold(cols, (6, 6), (3, 3), backend="numpy"))
    assert fold_spec(np.zeros((1, 3, 4)), (6,), 3).spatial_dims == 1            # a 1-tuple output_size: 1-D
    assert fold_spec(np.zeros((1, 2 * 8, 1)), 2, (2, 2, 2)).spatial_dims == 3    # a 3-tuple kernel: 3-D


# ---------------------------------------------------------------------------------------------------
# Specs and dispatch
# ---------------------------------------------------------------------------------------------------
def test_specs_shapes_and_counts():
    x = np.zeros((2, 3, 4, 5, 6), np.float32)
    u = unfold_spec(x, (2, 2, 3), padding=((1, 0), 1, (0, 2)), stride=(1, 2, 2))
    assert isinstance(u, UnfoldSpec) and u.op == "unfold" and u.ARRAYS == ("x",) and u.is_3d
    assert (u.D, u.H, u.W, u.T, u.R, u.S) == (4, 5, 6, 2, 2, 3)
    assert u.pads == ((1, 0), (1, 1), (0, 2)) and u.is_padded
    # blocks: depth (4 + 1 - 2)//1 + 1 = 4, height (5 + 2 - 2)//2 + 1 = 3, width (6 + 2 - 3)//2 + 1 = 3
    assert u.out_size == (4, 3, 3) and u.L == 36 and u.col_rows == 3 * 12
    assert u.operands() == ((2, 3, 4, 5, 6),) and u.output_layout == u.output_shape == (2, 36, 36)
    assert u.flops() == 0 and u.bytes() == (2 * 3 * 120 + 2 * 36 * 36) * 4
    assert u.max_elements() == max(2 * 3 * 120, 2 * 36 * 36)
    cols = np.zeros((36, 36), np.float64)                          # unbatched
    f = fold_spec(cols, (4, 5, 6), (2, 2, 3), padding=((1, 0), 1, (0, 2)), stride=(1, 2, 2))
    assert isinstance(f, FoldSpec) and f.op == "fold" and f.ARRAYS == ("cols",) and not f.batched
    assert f.operands() == ((1, 36, 36),) and f.output_layout == (1, 3, 4, 5, 6) and f.output_shape == (3, 4, 5, 6)
    assert f.flops() == 36 * 36 and f.bytes() == (36 * 36 + 3 * 120) * 8
    assert f.out_size == u.out_size and f.window == u.window
    # 1-D: the backend layout is 4-D with H = 1, the user's shapes 3-D / 2-D
    one = unfold_spec(np.zeros((3, 10), np.float16), (3,))
    assert one.input_shape == (1, 3, 1, 10) and one.output_shape == (9, 8) and one.dtype == "float16"
    f1 = fold_spec(np.zeros((2, 9, 8)), (10,), (3,))
    assert f1.output_layout == (2, 3, 1, 10) and f1.output_shape == (2, 3, 10)
    # frozen, hashable, equal by value
    k = (2, 2, 2)
    assert unfold_spec(x, k) == unfold_spec(x.copy(), k) and hash(unfold_spec(x, k)) == hash(unfold_spec(x, k))
    assert unfold_spec(x, k) != unfold_spec(x, k, stride=2)


def test_dispatch_names_every_backend():
    x = np.zeros((1, 2, 5, 5, 5), np.float32)
    for spec in (unfold_spec(x, (2, 2, 2)), fold_spec(np.zeros((1, 16, 64), np.float32), (5, 5, 5), (2, 2, 2))):
        for backend in ("numpy", "numba", "cuda-emu"):
            if _dispatch.availability(backend) is not None:
                continue
            assert _dispatch.select(spec, backend).name == f"{backend}:{spec.op}:direct"
            assert _dispatch.select(spec, backend, "direct").name == f"{backend}:{spec.op}:direct"
        with pytest.raises(ValueError, match="algo must be one of 'auto', 'direct'"):
            _dispatch.select(spec, "numpy", "im2col")


# ---------------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the argument, before dispatch is asked
# ---------------------------------------------------------------------------------------------------
X = np.zeros((2, 3, 5, 6), np.float32)
COLS = np.zeros((2, 12, 20), np.float32)          # C = 3, 2x2 kernel, output (5, 6): 4 * 5 blocks
BAD = [
    ("unfold-list", lambda: unfold([[1.0]], 2), TypeError, "input must be a numpy.ndarray or cupy.ndarray"),
    ("unfold-int-dtype", lambda: unfold(np.zeros((1, 1, 3, 3), np.int64), 2), TypeError, "input has dtype int64"),
    ("unfold-ndim", lambda: unfold(np.zeros((2, 3, 5, 6, 7), np.float32), 2), ValueError,
     r"input must be 4-D \(N, C, H, W\) or 3-D \(unbatched\)"),
    ("unfold-3d-kernel-3d-input", lambda: unfold(X[0], (2, 2, 2)), ValueError, "input must be 5-D"),
    ("unfold-1d-kernel-4d-input", lambda: unfold(X, (2,)), ValueError, "input must be 3-D"),
    ("unfold-kernel-4-ints", lambda: unfold(X, (2, 2, 2, 2)), ValueError,
     "kernel_size must be an int or a tuple of 1, 2 or 3"),
    ("unfold-kernel-zero", lambda: unfold(X, (0, 2)), ValueError, "kernel_size must be positive"),
    ("unfold-kernel-float", lambda: unfold(X, 2.0), TypeError, "kernel_size must be an int"),
    ("unfold-dilation", lambda: unfold(X, 2, dilation=0), ValueError, "dilation must be positive"),
    ("unfold-stride", lambda: unfold(X, 2, stride=(1, 0)), ValueError, "stride must be positive"),
    ("unfold-stride-length", lambda: unfold(X, 2, stride=(1, 1, 1)), ValueError,
     "stride must be an int or a sequence of 2"),
    ("unfold-padding-negative", lambda: unfold(X, 2, padding=-1), ValueError, "padding must be non-negative"),
    ("unfold-padding-pair", lambda: unfold(X, 2, padding=((1, 2, 3), 0)), ValueError,
     r"padding\[0\] must be an int or a \(before, after\) pair"),
    ("unfold-padding-string", lambda: unfold(X, 2, padding="same"), TypeError, "padding must be an int"),
    ("unfold-no-channels", lambda: unfold(np.zeros((2, 0, 5, 6), np.float32), 2), ValueError, "non-zero channels"),
    ("unfold-empty-plane", lambda: unfold(np.zeros((2, 3, 0, 6), np.float32), 1, padding=1), ValueError,
     "non-zero channels and spatial sizes"),
    ("unfold-kernel-too-big", lambda: unfold(X, 7), ValueError, r"gives \(0, 0\) sliding blocks"),
    ("unfold-backend", lambda: unfold(X, 2, backend="gpu"), ValueError, "backend must be None or one of"),
    ("unfold-backend-kind", lambda: unfold(X, 2, backend="cuda"), TypeError, "backend 'cuda' takes CuPy arrays"),
    ("fold-list", lambda: fold([[1.0]], 2, 1), TypeError, "input must be a numpy.ndarray"),
    ("fold-ndim", lambda: fold(np.zeros((2, 3, 4, 5), np.float32), (5, 6), 2), ValueError,
     r"input must be 3-D \(N, C\*prod\(kernel_size\), L\) or 2-D"),
    ("fold-1d-input", lambda: fold(np.zeros(20, np.float32), (5, 6), 2), ValueError, "input must be 3-D"),
    ("fold-sizes-disagree", lambda: fold(COLS, (5, 6), (2, 2, 2)), ValueError,
     "kernel_size must have as many entries as output_size"),
    ("fold-output-size-4", lambda: fold(COLS, (5, 6, 7, 8), 2), ValueError,
     "output_size must be an int or a tuple of 1, 2 or 3"),
    ("fold-output-size-zero", lambda: fold(COLS, (0, 6), 2), ValueError, "output_size must be positive"),
    ("fold-output-size-float", lambda: fold(COLS, (5.0, 6), 2), TypeError, r"output_size\[0\] must be an int"),
    ("fold-rows", lambda: fold(np.zeros((2, 13, 20), np.float32), (5, 6), 2), ValueError,
     r"input.shape\[-2\] \(13\) must be divisible by the product of kernel_size \(2 \* 2 = 4\)"),
    ("fold-blocks", lambda: fold(np.zeros((2, 12, 21), np.float32), (5, 6), 2), ValueError,
     r"input.shape\[-1\] \(21\) must equal the number of sliding blocks .* 4 \* 5 = 20"),
    ("fold-no-blocks", lambda: fold(COLS, (1, 6), 2), ValueError,
     r"output_size=\(1, 6\) .* gives \(0, 5\) sliding blocks"),
    ("fold-empty-rows", lambda: fold(np.zeros((2, 0, 20), np.float32), (5, 6), 2), ValueError, "non-zero C"),
    ("fold-empty-L", lambda: fold(np.zeros((2, 12, 0), np.float32), (5, 6), 2), ValueError, "non-zero C"),
    ("fold-kernel-zero", lambda: fold(COLS, (5, 6), 0), ValueError, "kernel_size must be positive"),
    ("fold-padding", lambda: fold(COLS, (5, 6), 2, padding=(-1, 0)), ValueError, "padding must be non-negative"),
    ("fold-stride", lambda: fold(COLS, (5, 6), 2, stride=0), ValueError, "stride must be positive"),
    ("fold-dilation", lambda: fold(COLS, (5, 6), 2, dilation=(1, None)), TypeError, r"dilation\[1\] must be an int"),
]


@pytest.mark.parametrize("call,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument(monkeypatch, call, exc, match):
    def never(*a, **k):
        raise AssertionError("dispatch was asked before the arguments were checked")
    monkeypatch.setattr(_dispatch, "select", never)
    with pytest.raises(exc, match=match):
        call()


def test_good_input_reaches_dispatch():
    """The checks above are not vacuous: the same calls with valid arguments run."""
    assert unfold(X, 2, backend="numpy").shape == (2, 12, 20)
    assert fold(COLS, (5, 6), 2, backend="numpy").shape == (2, 3, 5, 6)


# ---------------------------------------------------------------------------------------------------
# Numba: the kernels run in parallel and survive a corrupted disk cache
# ---------------------------------------------------------------------------------------------------
def test_numba_kernels_are_parallel_and_tolerate_a_corrupt_cache():
    pytest.importorskip("numba")
    import numba
    from fastconv._backends import _numba_common, _numba_fold
    unfold(X, 2, backend="numba")
    fold(COLS, (5, 6), 2, backend="numba")
    for kernel in (_numba_fold.unfold_rows, _numba_fold.fold_rows):
        assert kernel.signatures and kernel.targetoptions.get("parallel") is True
        for sig in kernel.signatures:       # the geometry travels as its record, read by field name
            assert isinstance(sig[2], numba.types.BaseNamedTuple) and sig[2].instance_class is _numba_fold.FoldGeometry
    dispatchers = _numba_common.dispatchers(vars(_numba_fold))
    assert len(dispatchers) >= 2 and all(_numba_common.is_tolerant(d) for d in dispatchers)
    # Numba's parfor diagnostics count each kernel's prange: those of this process's own compile (an empty
    # Numba cache, as in CI), else (loaded from the disk cache, which keeps none) of a fresh copy of
    # fold_rows (one kernel only: a parallel compile costs seconds; unfold_rows's prange has the same shape)
    for kernel in (_numba_fold.unfold_rows, _numba_fold.fold_rows):
        meta = kernel.get_metadata(kernel.signatures[0])
        if meta is not None and "parfor_diagnostics" in meta:
            assert meta["parfor_diagnostics"].count_parfors() >= 1, kernel.py_func.__name__
            continue
        if kernel is _numba_fold.fold_rows:
            f32, geo = numba.float32[::1], numba.typeof(_numba_fold.fold_geometry(unfold_spec(X, 2)))
            fresh = numba.njit(parallel=True, error_model="numpy")(kernel.py_func)
            fresh.compile((f32, f32, geo, numba.int64))
            assert fresh.get_metadata(fresh.signatures[0])["parfor_diagnostics"].count_parfors() >= 1


# ---------------------------------------------------------------------------------------------------
# Fuzz: random 1-D to 3-D problems, numba (and cuda-emu) against the oracle
# ---------------------------------------------------------------------------------------------------
_LONG = (_config.get("FASTCONV_FUZZ") or "ci") == "long"
_EXAMPLES = int(_config.get("FASTCONV_FUZZ_EXAMPLES") or (400 if _LONG else 25))


@st.composite
def problems(draw):
    nd = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 9 if _LONG else 6)) for _ in range(nd))
    ks = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dils = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    strides = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    pads = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(nd))
    shape = ((draw(st.integers(0, 2)),) if draw(st.booleans()) else ()) + (draw(st.integers(1, 3)),) + sizes
    kw = dict(kernel_size=ks, dilation=dils, stride=strides, padding=pads)
    try:
        unfold_spec(np.zeros(shape, np.float32), **kw)
    except ValueError:
        assume(False)
    return shape, kw, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=_EXAMPLES, deadline=None, derandomize=not _LONG, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(problems())
def test_fuzz_against_the_oracle(problem):
    shape, kw, dtype, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    nd = len(kw["kernel_size"])
    ref = unfold(x, backend="numpy", **kw)
    cols = rng.standard_normal(ref.shape).astype(dtype)
    spec = fold_spec(cols, shape[-nd:], **kw)
    want = oracle.fold64(spec, cols).reshape(spec.output_layout)
    tol = fold_tolerance(spec, cols.reshape(spec.operands()[0]))
    for backend in ("numba", "cuda-emu"):
        if _dispatch.availability(backend) is not None:
            continue
        np.testing.assert_array_equal(unfold(x, backend=backend, **kw), ref)
        out = fold(cols, shape[-nd:], backend=backend, **kw)
        assert out.shape == x.shape and out.dtype == np.dtype(dtype)
        assert_within(out.astype(np.float64).reshape(spec.output_layout), want, tol, spec)
    assert math.prod(ref.shape) == spec.N * spec.col_rows * spec.L
