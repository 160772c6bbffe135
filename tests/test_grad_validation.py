"""Bad arguments of the gradient, transposed-convolution and unpooling ops: a ValueError or TypeError that names
the argument, raised before any kernel runs (the spy backend below records any run), on every array kind;
inputs never written to; unbatched, 1-D, empty-batch and float16 calls shaped as the user passed them."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

F = np.float32


@pytest.fixture
def no_kernel_runs(monkeypatch):
    """Fail the test if any implementation's run is reached."""
    def boom(self, spec, *arrays):
        raise AssertionError(f"{self.name} ran for a call that should have been refused")
    monkeypatch.setattr(_dispatch.FunctionImpl, "run", boom)
    yield


def _z(*shape, dtype=F):
    return np.zeros(shape, dtype=dtype)


# --- conv gradients ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, err, match", [
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 7, 7)), ValueError, "grad_output must have the shape"),
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6, dtype=np.float64)), TypeError, "dtype"),
    (lambda: fc.grad.conv2d_input(8, _z(4, 3, 3, 3), _z(1, 4, 6, 6)), TypeError, "input_size"),
    (lambda: fc.grad.conv2d_input((1, 3, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6)), ValueError, "input_size must have as many dimensions"),
    (lambda: fc.grad.conv2d_input((3, 8), _z(4, 3, 3, 3), _z(4, 6)), ValueError, "input_size must be 4-D"),
    (lambda: fc.grad.conv2d_input((1, 2, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6)), ValueError, "weight has 3 input channels"),
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6), stride=0), ValueError, "stride"),
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6), padding=-1), ValueError, "padding"),
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), _z(1, 4, 6, 6), algo="fft"), ValueError, "algo"),
    (lambda: fc.grad.conv2d_input((1, 3, 8, 8), _z(4, 3, 3, 3), [[0.0]]), TypeError, "grad_output"),
    (lambda: fc.grad.conv2d_weight(_z(1, 3, 8, 8), (4, 3, 3, 3), _z(1, 4, 8, 8)), ValueError, "grad_output must have the shape"),
    (lambda: fc.grad.conv2d_weight(_z(1, 3, 8, 8), (4, 3, 3), _z(1, 4, 6, 6)), ValueError, "weight_size must be 4-D"),
    (lambda: fc.grad.conv2d_weight(_z(1, 3, 8, 8), (4, 3, 3.0, 3), _z(1, 4, 6, 6)), TypeError, r"weight_size\[2\]"),
    (lambda: fc.grad.conv2d_weight(_z(1, 3, 8, 8), (4, 3, 3, 3), _z(1, 4, 6, 6), groups=2), ValueError, "groups"),
    (lambda: fc.grad.conv1d_weight(_z(1, 3, 8), (4, 3, 3), _z(1, 4, 5)), ValueError, "grad_output must have the shape"),
    (lambda: fc.grad.conv2d_weight(_z(1, 3, 8, 8), (4, 3, 3, 3), _z(1, 4, 8, 8), padding="same", stride=2), ValueError, "same"),
    (lambda: fc.grad.conv_bias(_z(4)), ValueError, "grad_output"),
], ids=lambda v: None)
def test_conv_gradient_arguments_are_checked_before_any_kernel(no_kernel_runs, call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("call, err, match", [
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), stride=2, output_padding=2), ValueError, "output_padding"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), output_padding=1), ValueError, "output_padding"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), output_padding=-1), ValueError, "output_padding"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(3, 2, 3, 3)), ValueError, r"weight.shape\[0\]"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), groups=3), ValueError, "divisible by groups"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), _z(4)), ValueError, "bias"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3), padding="same"), ValueError, "padding"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 2, 2), _z(4, 2, 3, 3), padding=3), ValueError, "would be empty"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3)), ValueError, "weight must be 4-D"),
    (lambda: fc.conv_transpose2d(_z(1, 4, 5, 5), _z(4, 2, 3, 3, dtype=np.float64)), TypeError, "dtype"),
    (lambda: fc.conv_transpose1d(_z(1, 4, 5), _z(4, 2, 3), stride=2, dilation=3, output_padding=3), ValueError, "output_padding"),
], ids=lambda v: None)
def test_conv_transpose_arguments_are_checked_before_any_kernel(no_kernel_runs, call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_output_padding_below_dilation_is_allowed():
    """torch's rule is output_padding < max(stride, dilation), so stride 1 with dilation 3 takes 2."""
    out = fc.conv_transpose1d(np.ones((1, 1, 3)), np.ones((1, 1, 2)), dilation=3, output_padding=2, backend="numpy")
    assert out.shape == (1, 1, 2 + 3 + 1 + 2)


# --- pool gradients and unpooling ----------------------------------------------------------------------------
X = _z(1, 2, 6, 6)
IDX = fc.max_pool2d(np.arange(72, dtype=F).reshape(1, 2, 6, 6), 2, return_indices=True, backend="numpy")[1]


@pytest.mark.parametrize("call, err, match", [
    (lambda: fc.grad.max_pool2d(_z(1, 2, 2, 2), X, 2), ValueError, "grad_output must have the shape"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX[..., :2]), ValueError, "indices must have shape"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX.astype(F)), TypeError, "indices must hold integers"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX.tolist()), TypeError, "indices must be"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX + 36), ValueError, r"pooling window .*flat positions in \[0, 36\)"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX - 100), ValueError, "inside each output's pooling window"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3), X, 2, indices=np.zeros_like(IDX)), ValueError, "inside each output's pooling window"),
    (lambda: fc.grad.adaptive_max_pool2d(_z(1, 2, 3, 3), X, indices=np.zeros_like(IDX)), ValueError, "inside each output's"),
    (lambda: fc.grad.max_pool2d(_z(1, 2, 3, 3, dtype=np.float64), X, 2), TypeError, "dtype"),
    (lambda: fc.grad.avg_pool2d(_z(1, 2, 3, 3), X, 2, padding=2), ValueError, "padding"),
    (lambda: fc.grad.avg_pool2d(_z(1, 2, 2, 2), X, 2), ValueError, "grad_output must have the shape"),
    (lambda: fc.grad.adaptive_avg_pool2d(_z(1, 2, 3), X), ValueError, "grad_output"),
    (lambda: fc.grad.adaptive_avg_pool2d(_z(1, 2, 0, 3), X), ValueError, "grad_output"),
    (lambda: fc.grad.adaptive_avg_pool2d(_z(2, 2, 3, 3), X), ValueError, "grad_output must have the shape"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX + 36, 2), ValueError, r"indices must lie in \[0, 36\)"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX, 2, output_size=(8, 8)), ValueError, "output_size"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX, 2, output_size=(6,)), ValueError, "output_size"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX[0], 2), ValueError, "indices must have shape"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX.astype(F), 2), TypeError, "integers"),
    (lambda: fc.max_unpool2d(_z(1, 2, 3, 3), IDX, 0), ValueError, "kernel_size"),
], ids=lambda v: None)
def test_pool_gradient_and_unpool_arguments_are_checked_before_any_kernel(no_kernel_runs, call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_indices_are_not_needed_and_not_accepted_for_avg():
    with pytest.raises(TypeError):
        fc.grad.avg_pool2d(_z(1, 2, 3, 3), X, 2, indices=IDX)


# --- shapes as the user passed them; inputs untouched ---------------------------------------------------------
def test_unbatched_1d_and_empty_batch_shapes():
    w = np.ones((4, 3, 3), F)
    g = np.ones((4, 6), F)
    assert fc.grad.conv1d_input((3, 8), w, g, backend="numpy").shape == (3, 8)
    assert fc.grad.conv1d_weight(np.ones((3, 8), F), w.shape, g, backend="numpy").shape == (4, 3, 3)
    assert fc.conv_transpose1d(np.ones((4, 6), F), w, backend="numpy").shape == (3, 8)
    assert fc.grad.max_pool1d(np.ones((3, 4), F), np.ones((3, 8), F), 2, backend="numpy").shape == (3, 8)
    # an empty batch: the weight gradient of nothing is zero, the input gradient is empty
    w2 = np.ones((4, 3, 3, 3), F)
    dw = fc.grad.conv2d_weight(np.ones((0, 3, 8, 8), F), w2.shape, np.ones((0, 4, 6, 6), F), backend="numpy")
    assert dw.shape == w2.shape and not dw.any()
    assert fc.grad.conv2d_input((0, 3, 8, 8), w2, np.ones((0, 4, 6, 6), F), backend="numpy").shape == (0, 3, 8, 8)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_preserved_and_inputs_not_modified(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    g = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    copies = [a.copy() for a in (x, w, g)]
    kw = dict(stride=2, padding=1, backend="numpy")
    assert fc.grad.conv2d_input(x.shape, w, g, **kw).dtype == dtype
    assert fc.grad.conv2d_weight(x, w.shape, g, **kw).dtype == dtype
    assert fc.conv_transpose2d(g, w, **kw, output_padding=1).dtype == dtype
    gp = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    assert fc.grad.max_pool2d(gp, x, 3, 2, backend="numpy").dtype == dtype
    assert fc.grad.avg_pool2d(gp, x, 3, 2, backend="numpy").dtype == dtype
    for a, c in zip((x, w, g), copies):
        np.testing.assert_array_equal(a, c)


# --- the index rules (fastconv._indices): both implementations of the window check agree with the rule ----------
@pytest.mark.parametrize("kind, kw", [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=(2, 3), stride=1, padding=(1, 1), dilation=(2, 1), ceil_mode=True)),
    ("adaptive_max", dict(output_size_=(4, 3))),
])
@pytest.mark.parametrize("path", ["numba", "arrays"])
def test_window_check_accepts_the_forwards_indices_and_refuses_each_moved_one(kind, kw, path, monkeypatch):
    """The rule written out: an index is accepted iff its (h, w) is one of its window's in-bounds taps. Every
    index of the forward passes; moving one index to each other position of the plane is refused exactly
    when that position is not a tap of its window."""
    from fastconv import _indices
    from fastconv._spec import pool_grad_spec
    if path == "arrays":
        monkeypatch.setattr(_indices, "_numba_usable", lambda: False)
    x = np.random.default_rng(0).standard_normal((1, 1, 7, 6)).astype(F)
    fwd_kw = {k: v for k, v in kw.items() if k != "output_size_"}
    if kind == "max":
        y, idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **fwd_kw)
    else:
        y, idx = fc.adaptive_max_pool2d(x, kw["output_size_"], return_indices=True, backend="numpy")
    spec = pool_grad_spec(kind, y, x, **fwd_kw)
    _indices.check_in_window(spec, idx, np)
    p, q = 1, 1
    if kind == "max":
        rows = {p * spec.stride_h - spec.pad_top + r * spec.dil_h for r in range(spec.R)}
        cols = {q * spec.stride_w - spec.pad_left + s * spec.dil_w for s in range(spec.S)}
    else:
        rows = set(range(p * 7 // 4, -(-(p + 1) * 7 // 4)))
        cols = set(range(q * 6 // 3, -(-(q + 1) * 6 // 3)))
    for pos in range(-1, 7 * 6 + 1):
        moved = idx.copy()
        moved[0, 0, p, q] = pos
        taps = 0 <= pos < 42 and pos // 6 in rows and pos % 6 in cols
        if taps:
            _indices.check_in_window(spec, moved, np)
        else:
            with pytest.raises(ValueError, match="inside each output's pooling window"):
                _indices.check_in_window(spec, moved, np)


def test_window_wholly_in_the_padding_sends_no_gradient():
    """Dilation 2 over a width-1 input with padding 1: both taps of each window fall outside the input, so every
    output is -inf whatever x holds and its gradient is zero; the forward's index (PyTorch's first tap with
    non-negative coordinates, here past the end of the row) is accepted and never followed."""
    x = np.array([[[[1.0], [2.0], [3.0]]]], F)
    kw = dict(kernel_size=(1, 2), padding=(0, 1), dilation=(1, 2))
    y, idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    assert np.all(y == -np.inf)
    g = np.ones_like(y)
    for backend, info in fc.backends().items():
        if info["available"] and backend != "cuda":
            np.testing.assert_array_equal(fc.grad.max_pool2d(g, x, **kw, backend=backend), 0 * x)
            np.testing.assert_array_equal(fc.grad.max_pool2d(g, x, **kw, indices=idx, backend=backend), 0 * x)
