"""Memory of the numba backend (issue 18, items 3 and 4): workspaces bounded by the output and the window,
never by the padded input or by stride x dilation; a workspace that cannot be had is a clean MemoryError
naming its bytes before any kernel runs; the autotuner needs no more memory than the calls it tunes.

Expected values come from the oracle (``backend="numpy"``) or are written out by hand. Nothing here
asserts a time.
"""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("numba")

import fastconv as fc  # noqa: E402
from fastconv import _dispatch, _tune  # noqa: E402
from fastconv import grad as fg  # noqa: E402
from fastconv._backends import numba_cpu  # noqa: E402
from fastconv._spec import conv_input_spec, conv_weight_spec, pool_grad_spec  # noqa: E402
from fastconv._spec_fold import fold_spec, unfold_spec  # noqa: E402

from . import naive_nd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _supported_numba_impls(spec):
    return [i for i in _dispatch.candidates(spec, "numba") if not _dispatch.reasons(i, spec)]


# ---------------------------------------------------------------------------------------------------
# Workspaces over extreme specs: bounded by the (tiny) output, results equal to naive loops'
# ---------------------------------------------------------------------------------------------------
def _vals(*shape):
    """Small exact integers (sums of products stay exact in float64)."""
    return (np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 7) - 3


BIG = 10**6

#: name -> (nd, x shape, w shape, groups, padding, stride, dilation); each output holds a few values
CONVS = {
    # the issue's example, and its dilation twin (depthwise: the phase-split kernel is a candidate)
    "2d_pad_stride": (2, (1, 1, 6, 6), (1, 1, 3, 3), 1, 20000, 20000, 1),
    "2d_dilation": (2, (1, 2, 6, 6), (4, 1, 3, 3), 2, BIG, 1, BIG),
    "2d_dense_stride": (2, (1, 2, 6, 5), (3, 2, 3, 2), 1, (20000, 1), (20000, 1), 1),
    "1d_dilation": (1, (1, 2, 7), (2, 1, 3), 2, BIG, 1, BIG),
    "1d_stride": (1, (1, 2, 7), (3, 2, 3), 1, 50000, 50000, 1),
    "3d_stride": (3, (1, 1, 4, 4, 4), (2, 1, 3, 3, 3), 1, 10**5, 10**5, 1),
    "3d_dilation": (3, (1, 2, 3, 4, 4), (2, 2, 3, 3, 3), 1, 10**5, 1, 10**5),
}
_CONV_FNS = {1: (fc.conv1d, fg.conv1d_input, fg.conv1d_weight), 2: (fc.conv2d, fg.conv2d_input, fg.conv2d_weight),
             3: (fc.conv3d, fg.conv3d_input, fg.conv3d_weight)}


def _t(v, nd):
    return tuple(v) if isinstance(v, tuple) else (v,) * nd


def _conv_case(name, op):
    """(call(algo), expected, spec) of one extreme conv case and op; expected from tests/naive_nd.py."""
    nd, xs, ws, groups, pad, stride, dil = CONVS[name]
    x, w = _vals(*xs), _vals(*ws)
    kw = dict(padding=pad, stride=stride, dilation=dil, groups=groups)
    pads, st, dl = tuple((p, p) for p in _t(pad, nd)), _t(stride, nd), _t(dil, nd)
    fwd, f_in, f_w = _CONV_FNS[nd]
    spec = fc.conv_spec(x, w, None, stride, pad, dil, groups, spatial_dims=nd)
    dy = _vals(*spec.output_shape)
    if op == "conv":
        return (lambda algo: fwd(x, w, backend="numba", algo=algo, **kw),
                naive_nd.conv(x, w, None, st, pads, dl, groups), spec)
    if op == "conv_input":
        return (lambda algo: f_in(x.shape, w, dy, backend="numba", algo=algo, **kw),
                naive_nd.conv_input(dy, w, x.shape, st, pads, dl, groups),
                conv_input_spec(x.shape, w, dy, stride, pad, dil, groups, spatial_dims=nd))
    return (lambda algo: f_w(x, w.shape, dy, backend="numba", algo=algo, **kw),
            naive_nd.conv_weight(x, dy, w.shape, st, pads, dl, groups),
            conv_weight_spec(x, w.shape, dy, stride, pad, dil, groups, spatial_dims=nd))


@pytest.mark.parametrize("op", ["conv", "conv_input", "conv_weight"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_workspace_bounded_by_the_output_on_extreme_specs(name, op):
    """Every numba implementation that takes the problem says a workspace of a few KiB (the outputs hold a
    few values, the padded input up to 10^12), and both algorithms give the naive loops' result."""
    call, expected, spec = _conv_case(name, op)
    impls = _supported_numba_impls(spec)
    assert {i.algo for i in impls} == {"direct", "im2col"}
    for impl in impls:
        assert impl.workspace_bytes(spec) <= 64 << 10, (impl.name, impl.workspace(spec))
    for algo in ("direct", "im2col"):
        np.testing.assert_array_equal(call(algo), expected)


def _pool_cases():
    x2, x3 = _vals(1, 2, 6, 6), _vals(1, 1, 4, 5, 6)
    kw = dict(stride=BIG, padding=1, ceil_mode=True)
    p2 = ((1, 1),) * 2
    y2, i2 = naive_nd.max_pool(x2, (3, 3), (BIG, BIG), p2, (1, 1), True)
    dy2 = _vals(*y2.shape)
    cols = np.zeros((1, 2 * 4, 9))            # unfold: blocks start at -1e4, 0, 1e4 per axis; only the
    cols[0, :, 4] = x2[0][:, [0, 0, 5, 5], [0, 5, 0, 5]].reshape(-1)   # middle one (4) meets the input
    folded = np.zeros((1, 2, 6, 6))
    folded[0, :, :2, :2] = _vals(1, 8, 9)[0, :, 4].reshape(2, 2, 2)   # fold: the middle block's 2x2 taps
    return {
        "max_pool2d": (lambda: fc.max_pool2d(x2, 3, **kw, backend="numba"), y2,
                       fc.pool_spec("max", x2, 3, **kw)),
        "avg_pool1d": (lambda: fc.avg_pool1d(x2[0], 3, **kw, backend="numba"),
                       naive_nd.avg_pool(x2[0], (3,), (BIG,), ((1, 1),), True, True, None),
                       fc.pool_spec("avg", x2[0], 3, **kw, spatial_dims=1)),
        "max_pool3d": (lambda: fc.max_pool3d(x3, 3, stride=BIG, padding=1, dilation=2, backend="numba"),
                       naive_nd.max_pool(x3, (3,) * 3, (BIG,) * 3, ((1, 1),) * 3, (2,) * 3, False)[0],
                       fc.pool_spec("max", x3, 3, BIG, 1, 2, spatial_dims=3)),
        "max_pool2d_backward": (lambda: fg.max_pool2d(dy2, x2, 3, **kw, backend="numba"),
                                naive_nd.to_indices(dy2, i2, x2.shape),
                                pool_grad_spec("max", dy2, x2, kernel_size=3, **kw)),
        "avg_pool2d_backward": (lambda: fg.avg_pool2d(dy2, x2, 3, **kw, backend="numba"),
                                naive_nd.avg_pool_backward(dy2, x2.shape, (3, 3), (BIG, BIG), p2, True, True, None),
                                pool_grad_spec("avg", dy2, x2, kernel_size=3, **kw)),
        "unfold": (lambda: fc.unfold(x2, 2, padding=10**4, stride=10**4, dilation=5, backend="numba"), cols,
                   unfold_spec(x2, 2, 5, 10**4, 10**4)),
        "fold": (lambda: fc.fold(_vals(1, 8, 9), (6, 6), 2, padding=10**4, stride=10**4, backend="numba"), folded,
                 fold_spec(_vals(1, 8, 9), (6, 6), 2, 1, 10**4, 10**4)),
    }


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool1d", "max_pool3d", "max_pool2d_backward",
                                  "avg_pool2d_backward", "unfold", "fold"])
def test_pool_and_fold_workspace_bounded_on_extreme_specs(name):
    call, expected, spec = _pool_cases()[name]
    impls = _supported_numba_impls(spec)
    assert impls
    for impl in impls:
        assert impl.workspace_bytes(spec) <= 64 << 10, (impl.name, impl.workspace(spec))
    out = call()
    np.testing.assert_array_equal(out[0] if isinstance(out, tuple) else out, expected)


def test_issue_example_refuses_the_phase_kernel_by_reason():
    """The issue's example: the phase-split kernel would need stride_h*stride_w*Hq*Wq ~ 1.6e9 values per
    plane; it says why it does not take the problem, and the exact clipped kernel runs."""
    x, w = np.ones((1, 1, 6, 6), np.float32), np.ones((1, 1, 3, 3), np.float32)
    spec = fc.conv_spec(x, w, None, 20000, 20000)
    phase = next(i for i in _dispatch.candidates(spec, "numba") if i.variant == "depthwise-phase")
    assert any("phase-split buffer" in r for r in _dispatch.reasons(phase, spec))
    assert _dispatch.select(spec, "numba", "direct").name == "numba:conv:direct/depthwise"
    expected = np.zeros((1, 1, 3, 3), np.float32)
    expected[0, 0, 1, 1] = 9          # only the middle window meets the input: all 9 of its taps
    np.testing.assert_array_equal(fc.conv2d(x, w, padding=20000, stride=20000), expected)


def test_phase_kernel_still_takes_dense_problems():
    """The bound refuses only wasteful buffers: a padded 3x3 depthwise conv on a plain plane keeps it."""
    x, w = np.ones((2, 4, 16, 16), np.float32), np.ones((4, 1, 3, 3), np.float32)
    for kw in (dict(padding=1), dict(padding=1, stride=2), dict(padding=2, dilation=2)):
        spec = fc.conv_spec(x, w, None, kw.get("stride", 1), kw["padding"], kw.get("dilation", 1), 4)
        phase = next(i for i in _dispatch.candidates(spec, "numba") if i.variant == "depthwise-phase")
        assert _dispatch.reasons(phase, spec) == []
        # per thread: one padded plane (at most 20 x 20) and one accumulator of the output rows
        assert phase.workspace_bytes(spec) <= numba_cpu._threads() * 2 * (20 * 20) * 4


# ---------------------------------------------------------------------------------------------------
# Inherently large workspaces: im2col in bands (a measured peak), or refused past the cap
# ---------------------------------------------------------------------------------------------------
def _peak_beyond(call, *known):
    """Peak bytes NumPy allocated during ``call()`` beyond the arrays it returned."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outs = out if isinstance(out, tuple) else (out,)
    return peak - sum(o.nbytes for o in outs)


@pytest.mark.parametrize("op", ["conv", "conv_weight", "conv_input"])
def test_im2col_workspace_is_a_band_of_one_image(op, monkeypatch):
    """One image whose column matrix (2.25 MiB) is over twice IMAGE_COL_BYTES (made 1 MiB here): im2col
    builds it in bands of output rows, so the run allocates at most a band (+ what it declares) besides
    its output, and equals the oracle."""
    monkeypatch.setattr(numba_cpu, "IMAGE_COL_BYTES", 1 << 20, raising=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 32, 128), dtype=np.float32)
    w = rng.standard_normal((4, 16, 3, 3), dtype=np.float32)
    spec = fc.conv_spec(x, w, None, 1, 1)
    dy = rng.standard_normal(spec.output_shape, dtype=np.float32)
    call, spec = {
        "conv": (lambda: fc.conv2d(x, w, padding=1, algo="im2col"), spec),
        "conv_weight": (lambda: fg.conv2d_weight(x, w.shape, dy, padding=1, algo="im2col"),
                        conv_weight_spec(x, w.shape, dy, 1, 1)),
        "conv_input": (lambda: fg.conv2d_input(x.shape, w, dy, padding=1, algo="im2col"),
                       conv_input_spec(x.shape, w, dy, 1, 1)),
    }[op]
    out = call()                      # loads the kernels first: loading allocates Python objects too
    # per GEMM worker a band's columns and a GEMM result; two runs of bands per worker at most, each
    # after the first with its partial dw
    workers, dw = numba_cpu.gemm_workers(spec), spec.K_per_group * spec.gemm_k * 4
    band = workers * ((1 << 20) + dw) + (2 * workers - 1) * dw
    assert spec.gemm_k * spec.P * spec.Q * 4 > 2 * (1 << 20)      # the whole image's columns: 2.25 MiB
    assert workers * (1 << 20) < spec.gemm_k * spec.P * spec.Q * 4
    assert _peak_beyond(call) <= band + (128 << 10)
    impl = _dispatch.select(spec, "numba", "im2col")
    declared = impl.workspace_bytes(spec)
    assert declared <= band
    assert _peak_beyond(call) <= declared + (128 << 10)
    ref = {"conv": lambda: fc.conv2d(x, w, padding=1, backend="numpy"),
           "conv_weight": lambda: fg.conv2d_weight(x, w.shape, dy, padding=1, backend="numpy"),
           "conv_input": lambda: fg.conv2d_input(x.shape, w, dy, padding=1, backend="numpy")}[op]()
    scale = np.abs(ref).max()
    np.testing.assert_allclose(out, ref, atol=1e-4 * scale, rtol=0)


def test_im2col_past_the_cap_is_refused_by_reason():
    """A 1-D conv whose single output row has a 660 MiB column matrix: every im2col variant refuses it by
    reason (naming the bytes and the cap), ``algo="auto"`` picks the direct kernel, an explicit
    ``algo="im2col"`` is a ValueError listing the reason before anything runs."""
    x = np.empty((1, 64, 300000), np.float32)        # never touched: no memory is used
    w = np.empty((4, 64, 9), np.float32)
    dy = np.empty((1, 4, 300000 - 8), np.float32)
    for spec in (fc.conv_spec(x, w, None, spatial_dims=1), conv_weight_spec(x, w.shape, dy, spatial_dims=1),
                 conv_input_spec(x.shape, w, dy, spatial_dims=1)):
        for impl in _dispatch.candidates(spec, "numba", "im2col"):
            if impl.capped and spec.spatial_dims in impl.spatial_dims:
                assert any("WORKSPACE_CAP" in r and "bytes" in r for r in _dispatch.reasons(impl, spec)), impl
        assert _dispatch.select(spec, "numba").algo == "direct"
        with pytest.raises(ValueError, match="WORKSPACE_CAP"):
            _dispatch.select(spec, "numba", "im2col")


def test_every_capped_workspace_is_within_the_cap_or_refused():
    """Over a spread of shapes, a capped implementation either refuses or declares at most the cap."""
    for shape, wshape, kw in [((1, 64, 300000), (4, 64, 9), {}), ((2, 3, 7, 9), (4, 3, 3, 3), dict(padding=1)),
                              ((1, 8, 64, 64, 64), (8, 8, 3, 3, 3), dict(padding=1)),
                              ((1, 512, 200, 200), (8, 512, 3, 3), dict(padding=1))]:
        x, w = np.empty(shape, np.float32), np.empty(wshape, np.float32)
        nd = len(shape) - 2
        spec = fc.conv_spec(x, w, None, 1, kw.get("padding", 0), spatial_dims=nd)
        for impl in _dispatch.candidates(spec, "numba"):
            if getattr(impl, "capped", False) and not _dispatch.reasons(impl, spec):
                assert impl.workspace_bytes(spec) <= numba_cpu.WORKSPACE_CAP, (impl.name, shape)


# ---------------------------------------------------------------------------------------------------
# What cannot be allocated: one helper, a MemoryError naming the bytes and the purpose
# ---------------------------------------------------------------------------------------------------
def test_workspace_helper_names_bytes_and_purpose():
    with pytest.raises(MemoryError, match=r"cannot allocate 9223372036854775804 bytes .*for the thing"):
        numba_cpu.workspace("the thing", (2**61 - 1, 1), np.float32)
    with pytest.raises(MemoryError, match=r"1152921504606846976 bytes .*for in-kernel rows"):
        numba_cpu.reserve(2**60, "in-kernel rows")
    numba_cpu.reserve(numba_cpu.PROBE_BYTES - 1, "small")        # below the probe size: nothing to try


# ---------------------------------------------------------------------------------------------------
# The autotuner's memory (item 4)
# ---------------------------------------------------------------------------------------------------
def _tuned_problem():
    """A conv above MEASURE_MIN_FLOPS with four supported candidates (planes and blocked direct, packed
    im2col, Winograd F(4x4, 3x3))."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 64, 64), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    spec = fc.conv_spec(x, w, None, 1, 1)
    assert spec.flops() >= numba_cpu.MEASURE_MIN_FLOPS
    assert [i.name for i in _supported_numba_impls(spec)] == ["numba:conv:direct/planes",
                                                               "numba:conv:direct/blocked",
                                                               "numba:conv:im2col/packed",
                                                               "numba:conv:winograd/f4x4"]
    return x, w, spec


def test_tuning_needs_no_more_memory_than_the_calls_it_tunes():
    """The first ``algo="auto"`` call (measuring every candidate) allocates no more, at its peak, than the
    hungriest candidate's own call: the caller's arrays are measured on, never copied."""
    x, w, spec = _tuned_problem()
    algos = ("direct", "im2col", "winograd")      # "direct": planes and blocked, measured
    for algo in algos:
        fc.conv2d(x, w, padding=1, algo=algo)               # kernels loaded: their first call is not measured
    own = max(_peak_beyond(lambda a=algo: fc.conv2d(x, w, padding=1, algo=a)) for algo in algos)
    numba_cpu.TUNER.reset()
    before = numba_cpu.TUNER.measure_count
    tuned = _peak_beyond(lambda: fc.conv2d(x, w, padding=1))
    assert numba_cpu.TUNER.measure_count == before + 1
    assert tuned <= own + (64 << 10), (tuned, own)


def test_synthetic_inputs_are_made_in_the_target_dtype():
    """Where the caller's arrays cannot be used (float64 problem, float32 arrays given), the synthetic
    input is made directly in float64: the peak is the arrays themselves, no float32 twin."""
    x = np.zeros((2, 8, 32, 32))
    spec = fc.conv_spec(x, np.zeros((4, 8, 3, 3)), None)
    tracemalloc.start()
    try:
        arrays = _tune.synthetic_inputs(spec, np, given=(x.astype(np.float32), None, None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    made = sum(a.nbytes for a in arrays if a is not None)
    assert arrays[0].dtype == np.float64 and arrays[0].shape == spec.input_shape
    assert peak <= made + (64 << 10) + x.nbytes // 2          # the given float32 copy, made above, only
    same = _tune.synthetic_inputs(spec, np, given=(x, None, None))
    assert same[0].base is x or same[0] is x                     # the caller's array, viewed, not copied


def test_a_candidate_without_memory_is_skipped_and_nothing_is_remembered(monkeypatch):
    """A candidate whose run raises MemoryError while being measured is skipped: the call still returns
    the oracle's result (the other candidate ran), and no choice is remembered, so a later call measures
    again; with every candidate failing, the rule's (first) candidate is chosen."""
    x, w, spec = _tuned_problem()
    def no_memory(*args):
        raise MemoryError("no room")
    for impl in numba_cpu.implementations():        # every candidate but the blocked direct one runs out
        if impl.name in ("numba:conv:direct/planes", "numba:conv:im2col/packed", "numba:conv:winograd/f4x4"):
            monkeypatch.setattr(impl, "_fn", no_memory)
    numba_cpu.TUNER.reset()
    out = fc.conv2d(x, w, padding=1)
    np.testing.assert_allclose(out, fc.conv2d(x, w, padding=1, backend="numpy"), atol=1e-3, rtol=0)
    assert numba_cpu.TUNER.cache().entries() == {}
    impls = _supported_numba_impls(spec)
    before = numba_cpu.TUNER.measure_count
    assert numba_cpu.choose(spec, impls).name == "numba:conv:direct/blocked"
    assert numba_cpu.TUNER.measure_count == before + 1            # measured again: nothing was remembered

    class Failing:
        algo, name = "x", "fake:conv:x"

        def __init__(self, name):
            self.name = name

        def compute_spec(self, s):
            return s

        def run(self, *args):
            raise MemoryError

    tuner = _tune.Tuner("test", persist=False, time_one=lambda f: 1.0, xp=lambda: np,
                        unmeasurable=lambda: (MemoryError,))
    fakes = [Failing("fake:a"), Failing("fake:b")]
    assert tuner.choose("ctx", spec, fakes) is fakes[0]
    assert tuner.cache().entries() == {}


# ---------------------------------------------------------------------------------------------------
# The issue's examples under an address-space limit (one subprocess)
# ---------------------------------------------------------------------------------------------------
_LIMITED = textwrap.dedent(r"""
    import resource, sys
    import numpy as np
    import fastconv as fc
    from fastconv import grad as fg

    def vm():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    def limited(budget):
        resource.setrlimit(resource.RLIMIT_AS, (vm() + budget, resource.RLIM_INFINITY))

    def unlimited():
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def report(name, fn):
        try:
            fn()
            print(name, "ok")
        except BaseException as e:
            print(name, type(e).__name__, str(e).replace("\n", " ")[:300])
        unlimited()

    one = np.ones((1, 1, 6, 6), np.float32)
    k3 = np.ones((1, 1, 3, 3), np.float32)
    big = np.ones((1, 4, 1024, 2048), np.float32)          # 32 MiB in, 32 MiB out; im2col: a 32 MiB band
                                                           # (before: 96 MiB of columns, 64 MiB of copies)
    wb = np.ones((4, 4, 1, 3), np.float32)
    x1, dy1 = np.ones((1, 1, 100000), np.float32), np.ones((1, 1, 95001), np.float32)
    # warm up: every kernel loaded (or compiled) and every thread started before the limit
    fc.conv2d(one, k3, padding=1); fc.conv2d(one, k3, padding=1, stride=2)
    fc.conv2d(big[:, :, :8, :64], wb, padding=(0, 1), algo="direct")
    fc.conv2d(big[:, :, :8, :64], wb, padding=(0, 1), algo="im2col")
    fc.conv2d(big[:, :, :128, :256], wb, padding=(0, 1), algo="im2col")   # big enough for the GEMM workers
    fg.conv1d_weight(x1[:, :, :200], (1, 1, 50), dy1[:, :, :151])

    def phase():
        out = fc.conv2d(one, k3, padding=20000, stride=20000)
        assert out[0, 0, 1, 1] == 9 and out.sum() == 9, out

    def dilated():
        out = fc.conv2d(one, k3, padding=10**6, dilation=10**6)
        assert out.shape == (1, 1, 6, 6) and (out == 1).all(), out

    def check_big(out):
        assert out.shape == (1, 4, 1024, 2048) and out[0, 0, 5, 5] == 12 and out[0, 0, 5, 0] == 8

    limited(1 << 30); report("phase_example", phase)
    limited(1 << 30); report("dilation_example", dilated)
    limited(96 << 20)
    report("direct_under_limit", lambda: check_big(fc.conv2d(big, wb, padding=(0, 1), algo="direct")))
    limited(96 << 20); report("auto_under_limit", lambda: check_big(fc.conv2d(big, wb, padding=(0, 1))))
    limited(1 << 30); report("lanes_too_big", lambda: fg.conv1d_weight(x1, (1, 1, 5000), dy1))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status, sets RLIMIT_AS")
def test_issue_examples_under_an_address_space_limit():
    """The issue's runs under RLIMIT_AS: the padding/stride and dilation examples succeed with the
    hand-derived result; the default (tuning) call fits wherever ``algo="direct"`` does; a workspace that
    cannot fit is a MemoryError naming its bytes and purpose (no Numba SystemError)."""
    res = subprocess.run([sys.executable, "-c", _LIMITED], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    assert lines["phase_example"] == "ok"
    assert lines["dilation_example"] == "ok"
    assert lines["direct_under_limit"] == "ok"
    assert lines["auto_under_limit"] == "ok"
    kind, msg = lines["lanes_too_big"].split(" ", 1)
    assert kind == "MemoryError" and "bytes" in msg and "lane accumulators" in msg, lines["lanes_too_big"]
