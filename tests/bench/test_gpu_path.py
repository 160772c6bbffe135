"""fastconv.bench's GPU code path, exercised without a GPU: a fake CuPy, the device's limits from its
properties, the copy bandwidth, the vendor peaks and the peers."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from fastconv import _dispatch, bench
from fastconv._backends import numpy_oracle

from .fakes import H100_PROPS, fake_cupy, has, register


def test_gpu_path_with_a_fake_cupy(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(log))

    def conv(spec, x, w, b=None):
        assert type(x).__module__ == "cupy"                 # the runner moved the arrays to the "device"
        log.append("kernel")
        return numpy_oracle.conv(spec, np.asarray(x), np.asarray(w), None if b is None else np.asarray(b))

    register(monkeypatch, "fakegpu", "cupy", [_dispatch.FunctionImpl("fakegpu", "conv", "direct", conv)])
    opts = bench.Options(suite="quick", device="gpu", backends=["fakegpu"], max_cases=2,
                         policy=bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0, max_time=1))
    report = bench.run(opts, log=lambda s: None)
    assert report["machine"]["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    assert report["peak"]["fp32_gflops"] == 67000 and "vendor spec sheet" in report["peak"]["source"]
    assert "event_times" in report["settings"]["timing"]
    rows = [r for r in report["results"] if r["backend"] == "fakegpu"]
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == "ok" and r["verified"] == "strict", r["error"]
        assert r["median_s"] == 0.5e-3                     # CUDA-event time, not wall time
        assert r["peak_fraction"] == pytest.approx(r["throughput"] / 67000)
    # each timed call: start event, the kernel, end event, then the end event is waited on
    i = log.index("kernel", log.index("record"))
    assert log[i - 1: i + 3] == ["record", "kernel", "record", "event-sync"]
    peers = {r["name"]: r for r in report["runners"] if r["kind"] == "peer"}
    assert set(peers) == {"torch-cuda", "cupyx"}
    assert not peers["cupyx"]["available"] and "cupyx" in peers["cupyx"]["reason"]


def test_device_limits_from_properties():
    lim = bench.device_limits(H100_PROPS)
    assert lim["fp32_fma_gflops"] == pytest.approx(132 * 128 * 2 * 1.98)       # 66.9 TFLOP/s
    assert lim["hbm_gbps"] == pytest.approx(2.619e9 * 5120 * 2 / 8 / 1e9)     # 3352 GB/s
    assert set(lim["how"]) == {"fp32_fma_gflops", "hbm_gbps"} and "clockRate" in lim["how"]["fp32_fma_gflops"]
    assert lim["inputs"]["fp32_lanes_per_sm"] == 128
    a100 = dict(H100_PROPS, major=8, multiProcessorCount=108, clockRate=1410000, memoryClockRate=1215000)
    assert bench.device_limits(a100)["fp32_fma_gflops"] == pytest.approx(108 * 64 * 2 * 1.41)   # 64 lanes/SM
    assert bench.device_limits({k: v for k, v in H100_PROPS.items() if k != "clockRate"}) is None
    assert bench.device_limits(dict(H100_PROPS, major=99)) is None           # unknown lane count: no guess


def test_gpu_properties_reads_missing_fields_as_attributes(monkeypatch):
    asked = []
    props = {k: v for k, v in H100_PROPS.items() if k not in ("clockRate", "memoryClockRate")}

    def attr(a, dev):
        asked.append(a)
        return {13: 1980000, 36: 2619000}[a]
    rt = types.SimpleNamespace(getDeviceProperties=lambda i: props, deviceGetAttribute=attr)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=rt)))
    got = bench.gpu_properties(0)
    assert sorted(asked) == [13, 36] and got["clockRate"] == 1980000
    assert bench.device_limits(got)["hbm_gbps"] == pytest.approx(3352.32)


def test_gpu_copy_bandwidth_on_a_fake_cupy(monkeypatch):
    log = []
    cp = fake_cupy(log)
    buf = lambda *a, **k: types.SimpleNamespace(                                  # noqa: E731
        data=types.SimpleNamespace(copy_from_device_async=lambda src, n: log.append(("memcpy", n))))
    cp.ones, cp.empty_like = buf, buf
    cp.ElementwiseKernel = lambda *a: (lambda src, dst: log.append("kernel"))
    monkeypatch.setitem(sys.modules, "cupy", cp)
    res = bench.gpu_copy_bandwidth(nbytes=2**20, repeat=4, warmup=1)
    assert log.count(("memcpy", 2**20)) == 5 and log.count("kernel") == 5
    assert log.count("record") == 2 * 2 * 4                  # CUDA events around each timed copy, both methods
    assert res["methods"]["memcpy"]["gbps"] == pytest.approx(2 * 2**20 / 0.5e-3 / 1e9)    # read + write
    assert res["gbps"] == max(m["gbps"] for m in res["methods"].values())
    assert res["bytes"] == 2**20 and "read + write" in res["how"]


def test_gpu_pools_get_the_copy_fraction_and_computed_peaks(monkeypatch):
    log = []
    cp = fake_cupy(log)
    cp.cuda.runtime.getDeviceProperties = lambda i: H100_PROPS
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(bench.machine, "gpu_copy_bandwidth", lambda nbytes: {"gbps": 2000.0, "method": "memcpy",
                                                                             "bytes": nbytes})

    def pool(spec, x):
        return numpy_oracle.max_pool(spec, np.asarray(x))
    register(monkeypatch, "fakegpu", "cupy", [_dispatch.FunctionImpl("fakegpu", "max_pool", "direct", pool)])
    opts = bench.Options(suite="quick", device="gpu", backends=["fakegpu"], peers=[], filter="max_pool2d:base",
                         policy=bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0, max_time=1))
    report = bench.run(opts, log=lambda s: None)
    assert report["copy_bandwidth"]["gbps"] == 2000.0
    assert report["peak"]["fp32_gflops"] == pytest.approx(66908.16) and "computed" in report["peak"]["source"]
    assert report["peak"]["vendor"]["fp32_gflops"] == 67000
    (row,) = [r for r in report["results"] if r["case"] == "max_pool2d:base"]
    assert row["status"] == "ok" and row["impl"] == "fakegpu:max_pool:direct"
    assert row["copy_fraction"] == pytest.approx(row["throughput"] / 2000.0)
    assert row["peak_fraction"] == pytest.approx(row["throughput"] / 3352.32)


@pytest.mark.parametrize("name,gflops,gbps", [
    ("NVIDIA H100 80GB HBM3", 67000, 3350), ("NVIDIA H100 PCIe", 51000, 2000), ("NVIDIA H200", 67000, 4800),
    ("NVIDIA A100-SXM4-80GB", 19500, 2039), ("NVIDIA A100-SXM4-40GB", 19500, 1555)])
def test_gpu_peak_table(name, gflops, gbps):
    peak = bench.gpu_peak(name)
    assert (peak["fp32_gflops"], peak["mem_gbps"]) == (gflops, gbps)
    assert "vendor spec sheet" in peak["source"]
    assert bench.gpu_peak("Some Other GPU") is None


def test_gpu_runners_come_from_registry_and_peers_say_why():
    runners = bench.fastconv_runners("gpu")
    gpu_backends = {n for n, b in _dispatch.BACKENDS.items() if b.array_kind == "cupy"}
    assert {r.name for r in runners} == gpu_backends
    for r in runners:
        assert r.device == "gpu" and (r.unavailable() is None) == (_dispatch.availability(r.name) is None)
    peers = {p.name: p for p in bench.peer_runners("gpu")}
    assert set(peers) == {"torch-cuda", "cupyx"}
    assert "cupyx" in peers["cupyx"].unavailable()


@pytest.mark.skipif(not has("torch"), reason="torch is not installed")
def test_cudnn_peer_turns_tf32_off():
    import torch
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        settings = bench.TorchRunner("gpu").settings()
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        assert settings["allow_tf32"] is False and settings["cudnn_benchmark"] is True
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = old
