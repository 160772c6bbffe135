"""fastconv.dask on a real Dask cluster: a distributed.LocalCluster of 2 worker processes, started by the test,
computing convolutions, pools and a stack equal to the single-array op. The graph's functions and constants
travel to the workers by pickle, and each block runs the single-array op there."""
from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array", reason="fastconv.dask needs the [dask] extra (dask[array])")
distributed = pytest.importorskip("distributed", reason="the cluster tests need distributed (the [dask] extra)")

import fastconv as fc  # noqa: E402
import fastconv.dask as fd  # noqa: E402

from .conftest import NP, assert_bitwise, assert_close, assert_conv_equal  # noqa: E402
from .test_ops import image, window_args  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        # dashboard_address=None still starts the scheduler's HTTP server, on another port if 8787 is taken
        warnings.filterwarnings("ignore", r"Port \d+ is already in use", UserWarning)
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as c:
        yield c


def on_cluster(client, *arrays):
    """Compute ``arrays`` on the cluster; the tasks must have run in its worker processes."""
    with distributed.get_task_stream(client) as stream:
        out = client.compute(list(arrays), sync=True)
    workers = {t["worker"] for t in stream.data}
    assert workers and workers <= set(client.scheduler_info()["workers"]), workers
    return out[0] if len(out) == 1 else tuple(out)


RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 4, 19, 17)).astype(np.float32)
W = RNG.standard_normal((3, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
DX = da.from_array(X, chunks=(2, (1, 3), (10, 9), 17))


def test_ops_on_a_cluster(client):
    """Input-channel chunks summed; strided, dilated, padding_mode applied once at the true edges; max pool
    values and indices; an adaptive pool: one round trip to the cluster."""
    convs = [dict(padding=1), dict(stride=2, padding=(2, 1), dilation=2, padding_mode="circular")]
    outs = on_cluster(client, *[fd.conv2d(DX, W, B, **kw, **NP) for kw in convs],
                      *fd.max_pool2d(DX, 3, 2, 1, ceil_mode=True, return_indices=True, **NP),
                      fd.adaptive_max_pool2d(DX, (5, 4), **NP))
    for out, kw in zip(outs, convs):
        assert_conv_equal(out, fc.conv2d(X, W, B, **kw, **NP), X, W, B, kw.get("stride", 1), kw["padding"],
                          kw.get("dilation", 1), 1, kw.get("padding_mode", "zeros"), 2)
    values, idx, adaptive = outs[2:]
    assert_bitwise((values, idx), fc.max_pool2d(X, 3, 2, 1, ceil_mode=True, return_indices=True, **NP))
    assert_bitwise(adaptive, fc.adaptive_max_pool2d(X, (5, 4), **NP))


def test_sequential_on_a_cluster(client):
    w2 = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
    layers = [functools.partial(fc.conv2d, weight=W, bias=B, padding=1, **NP), np.tanh,
              functools.partial(fc.max_pool2d, kernel_size=2, **NP),
              functools.partial(fd.conv2d, weight=w2, stride=2, padding=1, **NP)]
    ref = X
    for layer in layers:
        ref = layer(ref) if not isinstance(layer, functools.partial) else functools.partial(
            getattr(fc, layer.func.__name__), *layer.args, **layer.keywords)(ref)
    dx = da.from_array(X, chunks=(1, 4, 10, (9, 8)))
    assert_close(on_cluster(client, fd.sequential(layers, dx)), ref, "float32")


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(st.data())
def test_random_cases_on_a_cluster(client, data):
    """Random 1-3-D convolutions, max and average pools over random chunkings (test_ops' strategies),
    computed on the cluster's worker processes, equal to the single-array op on the whole array."""
    nd = data.draw(st.integers(1, 3), "nd")
    op = data.draw(st.sampled_from(["conv", "max", "avg"]), "op")
    x, chunks, _ = data.draw(image(nd, dtypes=("float32", "float64")), "x")
    dx = da.from_array(x, chunks=chunks)
    if op == "conv":
        k = tuple(data.draw(st.integers(1, 3)) for _ in range(nd))
        rng = np.random.default_rng(x.size)
        w = rng.standard_normal((2, x.shape[-nd - 1]) + k).astype(x.dtype)
        kw = dict(stride=data.draw(st.sampled_from([1, 2])), padding=data.draw(st.integers(0, 2)),
                  dilation=data.draw(st.sampled_from([1, 2])), **NP)
        single, dask_call = (lambda: getattr(fc, f"conv{nd}d")(x, w, None, **kw),
                             lambda: getattr(fd, f"conv{nd}d")(dx, w, None, **kw))
    else:
        k, s, pad, d = window_args(data.draw, nd, (lambda kk, dd: dd * (kk - 1)) if op == "max" else
                                   (lambda kk, dd: kk - 1))
        kw = dict(kernel_size=k, stride=s, padding=pad, ceil_mode=data.draw(st.booleans()), **NP)
        if op == "max":
            kw["dilation"] = d
        single, dask_call = (lambda: getattr(fc, f"{op}_pool{nd}d")(x, **kw),
                             lambda: getattr(fd, f"{op}_pool{nd}d")(dx, **kw))
    try:
        ref = single()
    except ValueError:   # an argument the op refuses: test_ops checks the dask op refuses it the same way
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fd.ChunkWarning)
        y = dask_call()
    out = on_cluster(client, y)
    if op == "max":
        assert_bitwise(out, ref)
    elif op == "avg":
        assert_close(out, ref, str(x.dtype))
    else:
        assert_conv_equal(out, ref, x, w, None, kw["stride"], kw["padding"], kw["dilation"], 1, "zeros", nd)
