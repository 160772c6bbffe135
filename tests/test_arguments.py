"""Every public function's arguments, by class (issue 18 items 2, 9, 10, 11): one valid call per function,
then each boolean argument, each integer argument, each input's sizes and each input's array type varied.

The table :data:`CALLS` must list every public function (a test fails when one is added without an entry), so
a new op inherits these checks. Expected behaviour is torch's where torch has a rule (zero-size inputs, the
int64 range) and the issue's where it has none (booleans are Python or NumPy booleans; ndarray subclasses are
taken as their ndarray view; a masked array is refused because its mask would be ignored).
"""
import inspect

import numpy as np
import pytest

import fastconv as fc
from fastconv import grad as G

B = dict(backend="numpy")     # every refusal here happens before dispatch; numpy keeps the valid calls cheap


def _x(*shape, dtype=np.float32):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) % 7 - 3


def _img(nd, n=4):
    return _x(1, 2, *(n,) * nd)


def _unpool_args(nd):
    x = _img(nd)
    y, idx = fc.max_pool1d(x, 2, return_indices=True, **B) if nd == 1 else \
        (fc.max_pool2d if nd == 2 else fc.max_pool3d)(x, 2, return_indices=True, **B)
    return y, idx


#: public function -> (nd, the input's position, a function of the input giving (args, kwargs) of a valid call)
CALLS = {}
for _nd in (1, 2, 3):
    _s = f"{_nd}d"
    CALLS[f"conv{_s}"] = (_nd, lambda x, nd=_nd: ((x, _x(3, 2, *(2,) * nd)), dict(stride=1, padding=1, dilation=1,
                                                                                 groups=1)))
    CALLS[f"conv_transpose{_s}"] = (_nd, lambda x, nd=_nd: ((x, _x(2, 3, *(2,) * nd)),
                                                            dict(stride=2, padding=1, output_padding=1, groups=1,
                                                                 dilation=1)))
    CALLS[f"max_pool{_s}"] = (_nd, lambda x: ((x, 2), dict(stride=1, padding=1, dilation=1, ceil_mode=False,
                                                         return_indices=False)))
    CALLS[f"avg_pool{_s}"] = (_nd, lambda x, nd=_nd: ((x, 2), dict(stride=1, padding=1, ceil_mode=False,
                                                                  count_include_pad=True,
                                                                  **({} if nd == 1 else dict(divisor_override=3)))))
    CALLS[f"adaptive_max_pool{_s}"] = (_nd, lambda x: ((x, 3), dict(return_indices=False)))
    CALLS[f"adaptive_avg_pool{_s}"] = (_nd, lambda x: ((x, 3), {}))
    CALLS[f"lp_pool{_s}"] = (_nd, lambda x: ((x, 2, 2), dict(stride=1, ceil_mode=False)))
    CALLS[f"max_unpool{_s}"] = (_nd, lambda x, nd=_nd: ((_unpool_args(nd)[0] if x is None else x,
                                                         _unpool_args(nd)[1]), dict(kernel_size=2, stride=2,
                                                                                     padding=0)))
    # gradients: the input (or its size) is what varies; grad_output has the forward output's shape
    CALLS[f"grad.conv{_s}_input"] = (_nd, lambda x, nd=_nd: ((x.shape, _x(3, 2, *(2,) * nd), _x(1, 3, *(5,) * nd)),
                                                             dict(stride=1, padding=1, dilation=1, groups=1)))
    CALLS[f"grad.conv{_s}_weight"] = (_nd, lambda x, nd=_nd: ((x, (3, 2, *(2,) * nd), _x(1, 3, *(5,) * nd)),
                                                              dict(stride=1, padding=1, dilation=1, groups=1)))
    CALLS[f"grad.max_pool{_s}"] = (_nd, lambda x, nd=_nd: ((_x(1, 2, *(5,) * nd), x, 2),
                                                           dict(stride=1, padding=1, dilation=1, ceil_mode=False)))
    CALLS[f"grad.avg_pool{_s}"] = (_nd, lambda x, nd=_nd: ((_x(1, 2, *(5,) * nd), x, 2),
                                                           dict(stride=1, padding=1, ceil_mode=False,
                                                                count_include_pad=True,
                                                                **({} if nd == 1 else dict(divisor_override=3)))))
    CALLS[f"grad.adaptive_max_pool{_s}"] = (_nd, lambda x, nd=_nd: ((_x(1, 2, *(3,) * nd), x), {}))
    CALLS[f"grad.adaptive_avg_pool{_s}"] = (_nd, lambda x, nd=_nd: ((_x(1, 2, *(3,) * nd), x), {}))
CALLS["unfold"] = (2, lambda x: ((x, 2), dict(dilation=1, padding=1, stride=1)))
CALLS["fold"] = (2, lambda x: ((_x(1, 8, 25) if x is None else x, (4, 4), 2), dict(dilation=1, padding=1, stride=1)))
CALLS["grad.conv_bias"] = (2, lambda x: ((_img(2) if x is None else x,), {}))
#: where the input is not the first positional argument, or is not an image (fold's input is the columns)
_INPUT_POS = {**{f"grad.{k}_pool{nd}d": 1 for k in ("max", "avg", "adaptive_max", "adaptive_avg") for nd in (1, 2, 3)}}
_NOT_AN_IMAGE = {"fold", "grad.conv_bias"} | {f"max_unpool{nd}d" for nd in (1, 2, 3)}


def _fn(name):
    return getattr(G, name[5:]) if name.startswith("grad.") else getattr(fc, name)


def _call(name, x=None, backend="numpy", **override):
    nd, make = CALLS[name]
    args, kw = make(_img(nd) if x is None and name not in _NOT_AN_IMAGE else x)
    fn = _fn(name)
    extra = {"backend": backend} if "backend" in inspect.signature(fn).parameters else {}
    return fn(*args, **{**kw, **override}, **extra)


def test_the_table_lists_every_public_function():
    public = set(fc.functional.__all__) | {"fold", "unfold"} | {f"grad.{n}" for n in G.__all__}
    assert public == set(CALLS), f"add a valid call for {sorted(public - set(CALLS))} (or drop {sorted(set(CALLS) - public)})"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_valid_call_is_valid(name):
    out = _call(name)
    assert all(isinstance(o, np.ndarray) for o in (out if isinstance(out, tuple) else (out,)))


def _params(kind):
    """(function, parameter) for every public function's parameter of a kind ("bool" or "int")."""
    out = []
    for name in sorted(CALLS):
        nd, make = CALLS[name]
        valid = make(_img(nd) if name not in _NOT_AN_IMAGE else None)[1]
        for p in inspect.signature(_fn(name)).parameters.values():
            if kind == "bool" and isinstance(p.default, bool):
                out.append((name, p.name))
            if kind == "int" and p.name in valid and isinstance(valid[p.name], int) \
                    and not isinstance(valid[p.name], bool):
                out.append((name, p.name))
    return out


BOOL_PARAMS = _params("bool")
INT_PARAMS = _params("int")


def test_the_class_is_not_empty():
    """The walks below cover what the issue names (a table that lost them would pass vacuously)."""
    assert {("max_pool2d", "return_indices"), ("avg_pool1d", "count_include_pad"), ("lp_pool3d", "ceil_mode"),
            ("grad.max_pool2d", "ceil_mode")} <= set(BOOL_PARAMS)
    assert {("conv2d", "stride"), ("avg_pool2d", "divisor_override"), ("conv_transpose3d", "output_padding"),
            ("fold", "padding"), ("grad.conv1d_weight", "groups"), ("max_unpool2d", "kernel_size")} <= set(INT_PARAMS)


# --- item 9: booleans ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, param", BOOL_PARAMS)
def test_numpy_booleans_are_booleans(name, param):
    for v in (True, False):
        want, got = _call(name, **{param: v}), _call(name, **{param: np.bool_(v)})
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("bad", [1, 0, None, "yes", np.array([True, False]), np.array(True), 1.0],
                         ids=["int1", "int0", "None", "str", "bool-array", "0d-array", "float"])
@pytest.mark.parametrize("name, param", BOOL_PARAMS)
def test_anything_else_is_refused_naming_the_boolean(name, param, bad):
    with pytest.raises(TypeError, match=f"{param} must be a bool"):
        _call(name, **{param: bad})


# --- item 10: integers ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [2 ** 63, -2 ** 63 - 1, 10 ** 30], ids=["2^63", "-2^63-1", "10^30"])
@pytest.mark.parametrize("name, param", INT_PARAMS)
def test_integers_past_int64_name_themselves(name, param, value):
    """torch's arguments are int64: past that range, a ValueError naming the argument (never an
    OverflowError from a conversion deep inside)."""
    with pytest.raises(ValueError, match=f"{param}.* must fit in 64 bits"):
        _call(name, **{param: value})
    nd = CALLS[name][0]
    if param not in ("groups", "divisor_override") and not (name == "fold" and param == "output_size"):
        with pytest.raises(ValueError, match=rf"{param}\[{nd - 1}\].* must fit in 64 bits"):
            _call(name, **{param: (1,) * (nd - 1) + (value,)})


@pytest.mark.parametrize("call, names", [
    # each value fits in int64, but the padded input, the output or the padded plane does not
    (lambda: fc.conv1d(_x(1, 1, 4), _x(1, 1, 1), padding=2 ** 62), "padding"),
    (lambda: fc.conv2d(_x(1, 1, 4, 4), _x(1, 1, 1, 1), padding=2 ** 32), "padding"),
    (lambda: fc.max_pool2d(_x(1, 1, 4, 4), 2 ** 33, padding=2 ** 32), "padding"),
    (lambda: fc.conv_transpose1d(_x(1, 1, 4), _x(1, 1, 1), stride=2 ** 62), "stride"),
    (lambda: fc.conv_transpose2d(_x(1, 1, 4, 4), _x(1, 1, 1, 1), stride=2 ** 32), "stride"),
    (lambda: fc.max_unpool1d(_x(1, 1, 4), np.zeros((1, 1, 4), np.int64), 2, stride=2 ** 62), "stride"),
    (lambda: G.conv1d_input((1, 1, 4), _x(1, 1, 1), _x(1, 1, 4), padding=2 ** 62), "padding"),
])
def test_derived_extents_past_int64_name_the_argument(call, names):
    with pytest.raises(ValueError, match=f"{names}.*too large"):
        call()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_huge_strides_and_dilations_within_int64_still_give_the_rule(backend):
    """Large but representable arguments are not refused: a stride past the input takes the first window
    only, as torch (x[..., 0] for a 1x1 kernel)."""
    x = _x(1, 2, 6, 6)
    got = fc.conv2d(x, np.ones((1, 2, 1, 1), np.float32), stride=2 ** 40, backend=backend)
    np.testing.assert_array_equal(got, x[:, :, :1, :1].sum(axis=1, keepdims=True))
    got = fc.max_pool1d(_x(1, 1, 9), 2, stride=2 ** 40, backend=backend)
    np.testing.assert_array_equal(got, _x(1, 1, 9)[..., :2].max(axis=-1, keepdims=True))


# --- item 2: zero-size inputs -----------------------------------------------------------------------
def _zero_sized(name):
    """Inputs of the function's rank with one zero channel or spatial size, with padding and without."""
    nd = CALLS[name][0]
    for axis in range(1, nd + 2):
        shape = [1, 2] + [4] * nd
        shape[axis] = 0
        yield axis, np.ones(shape, np.float32)


@pytest.mark.parametrize("name", sorted(n for n in CALLS if n not in _NOT_AN_IMAGE))
def test_zero_channels_or_sizes_are_refused(name):
    """torch refuses an input with a zero channel or spatial size ("only the batch may be empty"), with or
    without padding; before the fix conv returned bias only and pools returned 0, NaN or -inf with indices
    into an empty plane."""
    kw = {"padding": 0} if "padding" in inspect.signature(_fn(name)).parameters else {}
    for axis, x in _zero_sized(name):
        for extra in ({}, kw):
            with pytest.raises(ValueError, match="non-zero channels and spatial sizes"):
                _call(name, x, **extra)


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "avg_pool3d", "adaptive_max_pool1d", "unfold"])
def test_an_empty_batch_is_still_taken(name):
    nd = CALLS[name][0]
    out = _call(name, _x(0, 2, *(4,) * nd))
    assert out.shape[0] == 0


def test_unpool_with_zero_sizes_is_refused():
    for nd, fn in ((1, fc.max_unpool1d), (2, fc.max_unpool2d), (3, fc.max_unpool3d)):
        x = np.ones((1, 1, 0) + (2,) * (nd - 1), np.float32)
        with pytest.raises(ValueError, match="non-zero channels and spatial sizes"):
            fn(x, np.zeros(x.shape, np.int64), 2, **B)


# --- item 11: array types ---------------------------------------------------------------------------
class _Tagged(np.ndarray):
    """A user's ndarray subclass whose ufuncs would mark their results: a backend must never run them."""

    def __array_finalize__(self, obj):
        self.tag = getattr(obj, "tag", "user")


#: every op on the oracle; on numba the ops whose kernels the suite compiles anyway (the view is taken in
#: functional._execute, before any backend: one kernel of each kind shows it reaches numba as a plain array)
_SUBCLASS_CASES = [(n, "numpy") for n in ("conv1d", "conv2d", "conv3d", "conv_transpose2d", "max_pool2d",
                                          "avg_pool3d", "adaptive_avg_pool2d", "lp_pool2d", "unfold",
                                          "grad.conv2d_weight", "grad.max_pool2d", "grad.conv_bias")]
_SUBCLASS_CASES += [(n, "numba") for n in ("conv2d", "max_pool2d", "grad.conv2d_weight", "unfold")]


@pytest.mark.parametrize("name, backend", _SUBCLASS_CASES)
def test_ndarray_subclasses_are_taken_as_plain_arrays(tmp_path, name, backend):
    """numpy.memmap (what np.load(..., mmap_mode="r") returns) and other ndarray subclasses are ndarrays:
    the result equals the plain array's and is a plain ndarray; the memmap is not written."""
    nd = CALLS[name][0]
    x = _img(nd)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    tagged = x.copy().view(_Tagged)
    want = _call(name, x, backend=backend)
    for sub in (mm, tagged):
        got = _call(name, sub, backend=backend)
        assert type(got) is np.ndarray, f"{type(sub).__name__}: result is {type(got).__name__}"
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.load(path), x)


def test_memmap_indices_and_weights_are_taken():
    y, idx = _unpool_args(2)
    w = _x(3, 2, 2, 2)
    want_u = fc.max_unpool2d(y, idx, 2, **B)
    want_c = fc.conv2d(_img(2), w, **B)
    got_u = fc.max_unpool2d(y.view(_Tagged), idx.view(_Tagged), 2, **B)
    got_c = fc.conv2d(_img(2), w.view(_Tagged), **B)
    assert type(got_u) is np.ndarray and type(got_c) is np.ndarray
    np.testing.assert_array_equal(got_u, want_u)
    np.testing.assert_array_equal(got_c, want_c)


def test_numpy_matrix_is_a_2d_array():
    """An unbatched 1-D problem is 2-D (C, L): a numpy.matrix is taken as its ndarray view."""
    x = _x(2, 6)
    m = np.asmatrix(x)
    w = _x(3, 2, 2)
    got = fc.conv1d(m, w, **B)
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, fc.conv1d(x, w, **B))
    np.testing.assert_array_equal(fc.max_pool1d(m, 2, **B), fc.max_pool1d(x, 2, **B))


def test_masked_arrays_are_refused_because_the_mask_would_be_ignored():
    x = np.ma.masked_array(_img(2), mask=_img(2) > 0)
    for call in (lambda: fc.max_pool2d(x, 2, **B), lambda: fc.conv2d(_img(2), np.ma.masked_array(_x(1, 2, 1, 1)), **B),
                 lambda: fc.max_unpool2d(*_unpool_args(2)[:1], np.ma.masked_array(_unpool_args(2)[1]), 2, **B)):
        with pytest.raises(TypeError, match=r"MaskedArray: fastconv would ignore its mask; pass .*\.filled"):
            call()


def test_other_types_get_a_hint():
    with pytest.raises(TypeError, match=r"input must be a numpy.ndarray or cupy.ndarray, got builtins.list; "
                                        r"convert with numpy.asarray"):
        fc.max_pool2d(_img(2).tolist(), 2, **B)
    # the ops take torch tensors (through DLPack: tests/test_dlpack.py); the spec builders, which read an
    # array's shape and dtype themselves, say how to convert one
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"input must be a numpy.ndarray or cupy.ndarray, got torch.Tensor; "
                                        r"fastconv's ops .* take it as it is, through DLPack, but here convert it "
                                        r"with numpy.from_dlpack\(...\).*fastconv.torch"):
        fc.pool_spec("max", torch.ones(1, 1, 4, 4), 2)


def test_the_shape_helpers_take_the_same_booleans():
    """conv_output_size and conv_param_count had their own check, which refused np.bool_."""
    assert fc.conv_output_size(8, 3, stride=2, ceil_mode=np.bool_(True)) == fc.conv_output_size(8, 3, 2, ceil_mode=True)
    assert fc.conv_param_count(4, 6, 3, bias=np.bool_(False)) == 6 * 4 * 9
    for call, name in ((lambda: fc.conv_output_size(8, 3, ceil_mode=1), "ceil_mode"),
                       (lambda: fc.conv_param_count(4, 6, 3, bias=np.array([True])), "bias")):
        with pytest.raises(TypeError, match=f"{name} must be a bool"):
            call()
