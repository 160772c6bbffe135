"""The ``fastconv`` command and the benchmark engine behind it (fastconv.bench).

Fast by construction: the bench runs use the NumPy oracle backend (nothing to compile) and a handful of
cases (the hidden ``--max-cases``); nothing here asserts a speed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from fastconv import _dispatch, bench, cli
from fastconv._backends import numpy_oracle

REPO = Path(__file__).resolve().parents[1]


def _run_cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastconv.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _has(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------------
# fastconv info
# ---------------------------------------------------------------------------------------------------
def test_info_runs_and_names_every_backend():
    proc = _run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for name, b in _dispatch.backends().items():
        assert name in proc.stdout
        if not b["available"]:
            assert b["reason"] in proc.stdout       # why a backend is unavailable is shown
    for word in ("caches:", "numba", "cuda-emu", "versions:", "CPU:"):
        assert word in proc.stdout


def test_info_json():
    data = cli.info()
    assert set(data["backends"]) == set(_dispatch.BACKENDS)
    assert set(data["caches"]) == {"numba", "cuda-emu", "cupy", "autotune-cuda"}
    assert {"numpy", "numba", "cupy", "torch"} <= set(data["versions"])
    json.dumps(data)


def test_info_reports_emulator_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path))
    assert cli.cache_paths()["cuda-emu"] == str(tmp_path)


def test_info_reports_the_autotune_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", str(tmp_path / "t.json"))
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    assert cli.cache_paths()["autotune-cuda"] == str(tmp_path / "t.json")
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", "")
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    assert cli.cache_paths()["autotune-cuda"].startswith("memory only") and "measuring off" in \
        cli.cache_paths()["autotune-cuda"]


# ---------------------------------------------------------------------------------------------------
# fastconv bench, end to end (tiny)
# ---------------------------------------------------------------------------------------------------
def test_bench_quick_writes_json_and_png(tmp_path):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    proc = _run_cli("bench", "--quick", "--backend", "numpy", "--max-cases", "3", "--json", str(js),
                    "--plot", str(png))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[3/3]" in proc.stderr                     # progress lines
    assert "GFLOP/s" in proc.stdout                   # the table
    report = json.loads(js.read_text())
    assert report["schema"] == bench.SCHEMA
    assert {"machine", "versions", "settings", "peak", "runners", "cases", "results", "failures",
            "wall_s"} <= set(report)
    assert {"date", "cpu_model", "cpu_cores", "gpu"} <= set(report["machine"])
    assert {"numpy", "numba", "fastconv"} <= set(report["versions"])
    assert len(report["cases"]) == 3 and report["failures"] == 0
    for c in report["cases"]:
        assert {"name", "op", "input_shape", "kwargs", "sweeps", "flops", "bytes", "metric", "verify_n"} <= set(c)
    rows = [r for r in report["results"] if r["backend"] == "numpy"]
    assert len(rows) == 3
    for r in rows:
        assert r["status"] == "ok"
        assert {"median_s", "min_s", "rounds", "throughput", "unit", "peak_fraction",
                "ratio_to_best_peer", "first_call_s"} <= set(r)
        assert r["median_s"] > 0 and r["rounds"] >= bench.QUICK_POLICY.min_repeat
    if _has("torch"):
        assert any(r["backend"] == "torch" and r["status"] == "ok" for r in report["results"])
        assert all(r["ratio_to_best_peer"] for r in rows)
    if _has("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "plot skipped: matplotlib is not installed" in proc.stdout


def test_bench_gpu_without_gpu_says_why(capsys):
    if bench.default_device() == "gpu":
        pytest.skip("a GPU backend is usable here")
    rc = cli.main(["bench", "--device", "gpu", "--no-json", "--no-plot", "--max-cases", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no fastconv backend can run on device 'gpu'" in err
    assert _dispatch.availability("cuda") in err


def test_bench_rejects_unknown_backend_and_mixed_devices():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "nope"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "numba", "--backend", "cuda"])


# ---------------------------------------------------------------------------------------------------
# Backends come from the registry; the oracle judges before anything is timed
# ---------------------------------------------------------------------------------------------------
def test_default_backends_exclude_oracle_and_emulator():
    cpu = bench.backends_for("cpu")
    assert "numpy" not in cpu and "cuda-emu" not in cpu
    assert set(cpu) == {n for n, b in _dispatch.BACKENDS.items()
                        if b.array_kind == "numpy" and n not in ("numpy", "cuda-emu")}
    assert bench.backends_for("cpu", ["cuda-emu"]) == ["cuda-emu"]      # runs when named


@pytest.fixture
def fake_backend(monkeypatch):
    """Register backend 'fake' (NumPy arrays) whose conv algos are 'good' (the oracle) and 'bad' (off by 1)."""
    def good(spec, x, w, b=None):
        return numpy_oracle.conv(spec, x, w, b)

    def bad(spec, x, w, b=None):
        return numpy_oracle.conv(spec, x, w, b) + 1

    impls = [_dispatch.FunctionImpl("fake", "conv", "direct", good),
             _dispatch.FunctionImpl("fake", "conv", "im2col", bad),
             _dispatch.FunctionImpl("fake", "max_pool", "direct", numpy_oracle.max_pool)]
    mod = types.SimpleNamespace(availability=lambda: None, implementations=lambda: impls)
    monkeypatch.setitem(_dispatch.BACKENDS, "fake", _dispatch.Backend("fake", "numpy", "fake.module", "test"))
    monkeypatch.setitem(_dispatch._modules, "fake", mod)
    return "fake"


def test_new_backend_is_picked_up(fake_backend):
    labels = [r.label for r in bench.fastconv_runners("cpu")]
    assert {"fake:direct", "fake:im2col", "fake:pools"} <= set(labels)


def test_wrong_results_are_reported_and_never_timed(fake_backend):
    opts = bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[], max_cases=2,
                         policy=bench.QUICK_POLICY)
    report = bench.run(opts, log=lambda s: None)
    by_algo = {}
    for r in report["results"]:
        by_algo.setdefault(r["algo"], []).append(r)
    assert all(r["status"] == "ok" and r["median_s"] > 0 for r in by_algo["direct"])
    assert all(r["status"] == "verify-failed" and "median_s" not in r for r in by_algo["im2col"])
    assert report["failures"] == 2
    assert "verify-failed" in bench.table(report)


def test_unsupported_pools_are_reported(fake_backend):
    opts = bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[], filter="avg_pool2d:base",
                         policy=bench.QUICK_POLICY)
    report = bench.run(opts, log=lambda s: None)
    (row,) = [r for r in report["results"] if r["case"] == "avg_pool2d:base"]
    assert row["status"] == "unsupported" and "avg_pool" in row["error"]
    assert report["failures"] == 0


@pytest.mark.skipif(not _has("torch"), reason="torch is not installed")
def test_torch_peer_asymmetric_padding_is_verified():
    opts = bench.Options(suite="quick", device="cpu", backends=["numpy"], filter="padding=asym",
                         policy=bench.QUICK_POLICY)
    report = bench.run(opts, log=lambda s: None)
    peer = [r for r in report["results"] if r["backend"] == "torch"]
    assert len(peer) == 2 and all(r["status"] == "ok" for r in peer)   # conv2d and conv1d


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------
def _sweep_values(cases, op, sweep):
    return {c.sweeps[sweep] for c in cases if c.op == op and sweep in c.sweeps}


@pytest.mark.parametrize("device", bench.DEVICES)
def test_sweep_covers_the_issue(device):
    cases = bench.build_cases("sweep", device)
    assert {c.op for c in cases} == set(bench.CONV_OPS + bench.POOL_OPS)
    for op in bench.CONV_OPS:
        assert _sweep_values(cases, op, "stride") == {"1", "2", "3"}
        assert _sweep_values(cases, op, "padding") == {"0", "1", "2", "same", "asym"}
        assert _sweep_values(cases, op, "dilation") == {"1", "2", "3"}
        assert _sweep_values(cases, op, "kernel") == {"1", "3", "5", "7"}
        assert {"1", "depthwise"} <= _sweep_values(cases, op, "groups")
    assert len(_sweep_values(cases, "conv2d", "batch")) == 3
    assert _sweep_values(cases, "max_pool2d", "dilation") == {"1", "2", "3"}
    assert len({c.name for c in cases}) == len(cases)
    for c in cases:
        bench.case_spec(c)                      # every case is a valid call


@pytest.mark.parametrize("device", bench.DEVICES)
def test_quick_and_full_cases_are_valid(device):
    quick = bench.build_cases("quick", device)
    assert {c.op for c in quick} == set(bench.CONV_OPS + bench.POOL_OPS)
    for sweep in bench.PLOT_SWEEPS:
        assert len(_sweep_values(quick, "conv2d", sweep)) >= 3
    full = bench.build_cases("full", device)
    assert any(c.source.startswith("layers") for c in full)
    for c in quick + full:
        bench.case_spec(c)


def test_shapes_dir_env_and_builtin_fallback(monkeypatch, tmp_path):
    (tmp_path / "tiny.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\nl1,4,8,8,4,3,3,1,1,1,1\n")
    (tmp_path / "p.csv").write_text("name,C,H,W,kind,kernel,stride,pad\nmp,4,8,8,max,2,2,0\n")
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    names = {c.name: c for c in bench.layer_cases("cpu")}
    assert set(names) == {"tiny/l1", "p/mp"}
    assert names["tiny/l1"].weight == (4, 4, 3, 3) and names["p/mp"].op == "max_pool2d"

    monkeypatch.delenv("FASTCONV_SHAPES")
    monkeypatch.setattr(bench, "repo_root", lambda: tmp_path / "installed" / "site-packages")
    assert bench.shapes_dir() is None
    src, tables = bench.layer_tables()
    assert src == "built-in" and tables is bench.BUILTIN_LAYERS
    layers = bench.layer_cases("cpu")
    assert {c.op for c in layers} == {"conv2d", "max_pool2d", "avg_pool2d"}
    for c in layers:
        bench.case_spec(c)


def test_shared_shapes_found_from_checkout():
    d = REPO.parent / "shared" / "shapes"
    if not d.is_dir() or os.environ.get("FASTCONV_SHAPES"):
        pytest.skip("no ../shared/shapes beside this checkout")
    assert bench.shapes_dir() == d
    assert any(c.name == "resnet50/conv1" for c in bench.layer_cases("gpu"))


# ---------------------------------------------------------------------------------------------------
# Timing and the GPU path (exercised without a GPU)
# ---------------------------------------------------------------------------------------------------
def test_wall_timer_synchronises_inside_the_timed_call(monkeypatch):
    events = []
    clock = iter(range(100))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    timer = bench.wall_timer(lambda: events.append("sync"))
    t = timer(lambda: events.append("call"), ())
    assert events == ["sync", "call", "sync"]     # the second sync happens before the clock stops
    assert t == 1.0


def test_measure_warms_up_then_repeats():
    calls = []
    policy = bench.Policy(warmup=2, min_repeat=4, max_repeat=6, min_time=0.0, max_time=1.0)
    m = bench.measure(lambda: calls.append(1), (), lambda fn, a: (fn(*a), 0.001)[1], policy)
    assert len(calls) == 2 + 4 and len(m["times_s"]) == 4
    assert bench.summarise(m["times_s"])["median_s"] == 0.001


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


@pytest.mark.skipif(not _has("torch"), reason="torch is not installed")
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


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib is not installed")
def test_plot_with_layers_and_a_missing_sweep(tmp_path):
    report = bench.run(bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[],
                                     filter="max_pool2d:", policy=bench.QUICK_POLICY), log=lambda s: None)
    layer = dict(report["cases"][0], name="net/layer", source="layers:net", sweeps={})
    report["cases"].append(layer)
    report["results"].append(dict(report["results"][0], case="net/layer", ratio_to_best_peer=1.5))
    assert bench.plot(report, str(tmp_path / "p.png")) is None
    assert (tmp_path / "p.png").stat().st_size > 1000
    empty = dict(report, cases=[])
    assert bench.plot(empty, str(tmp_path / "e.png")) == "no sweep or layer cases to plot"


def test_loose_check_is_for_peers_only():
    case = next(c for c in bench.build_cases("quick", "cpu") if c.name == "conv2d:base")
    ref = bench.Reference(case)

    class Off(bench.Runner):
        """Returns the oracle's answer plus 2x the tolerance."""
        def __init__(self, kind):
            self.kind, self.name, self.algo = kind, "off", "x"

        def function(self, case):
            return lambda *a: ref.ref + 2 * ref.tol.reshape(ref.ref.shape)

    assert bench.verify(case, Off("peer"), ref) == "loose"
    with pytest.raises(AssertionError):
        bench.verify(case, Off("fastconv"), ref)


# ---------------------------------------------------------------------------------------------------
# The GPU code path end to end, on a fake CuPy (NumPy arrays dressed as cupy.ndarray, events that count)
# ---------------------------------------------------------------------------------------------------
class _FakeCupyArray(np.ndarray):
    device = types.SimpleNamespace(id=0)

    def get(self):
        return np.array(self).view(np.ndarray)


_FakeCupyArray.__module__ = "cupy"
_FakeCupyArray.__name__ = "ndarray"


def _fake_cupy(log):
    def dev(a):
        return np.ascontiguousarray(a).view(_FakeCupyArray)

    class Event:
        def __init__(self):
            self.t = None

        def record(self):
            log.append("record")
            self.t = len(log)

        def synchronize(self):
            log.append("event-sync")

    cuda = types.SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: 0.5,       # ms
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: log.append("stream-sync")),
        Device=lambda: types.SimpleNamespace(id=0),
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12080,
            getDeviceProperties=lambda i: {"name": b"NVIDIA H100 80GB HBM3", "totalGlobalMem": 80 * 2**30,
                                           "major": 9, "minor": 0}))
    mod = types.ModuleType("cupy")
    mod.ndarray, mod.cuda, mod.asarray, mod.ascontiguousarray = _FakeCupyArray, cuda, dev, dev
    mod.zeros = lambda *a, **k: np.zeros(*a, **k).view(_FakeCupyArray)
    mod.float16, mod.float32, mod.float64, mod.int64 = np.float16, np.float32, np.float64, np.int64
    return mod


def test_gpu_path_with_a_fake_cupy(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))

    def conv(spec, x, w, b=None):
        assert type(x).__module__ == "cupy"                 # the runner moved the arrays to the "device"
        log.append("kernel")
        return numpy_oracle.conv(spec, np.asarray(x), np.asarray(w), None if b is None else np.asarray(b))

    impls = [_dispatch.FunctionImpl("fakegpu", "conv", "direct", conv)]
    mod = types.SimpleNamespace(availability=lambda: None, implementations=lambda: impls)
    monkeypatch.setitem(_dispatch.BACKENDS, "fakegpu", _dispatch.Backend("fakegpu", "cupy", "x", "test"))
    monkeypatch.setitem(_dispatch._modules, "fakegpu", mod)

    opts = bench.Options(suite="quick", device="gpu", backends=["fakegpu"], max_cases=2,
                         policy=bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0, max_time=1))
    report = bench.run(opts, log=lambda s: None)
    assert report["machine"]["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    assert report["peak"]["fp32_gflops"] == 67000 and "vendor spec sheet" in report["peak"]["source"]
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


# ---------------------------------------------------------------------------------------------------
# The GPU-performance issue's evidence: dtype, per-table batches, device limits, copy bandwidth, summary
# ---------------------------------------------------------------------------------------------------
H100_PROPS = {"name": b"NVIDIA H100 80GB HBM3", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0,
              "multiProcessorCount": 132, "clockRate": 1980000, "memoryClockRate": 2619000,
              "memoryBusWidth": 5120}


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
    cp = _fake_cupy(log)
    buf = lambda *a, **k: types.SimpleNamespace(
        data=types.SimpleNamespace(copy_from_device_async=lambda src, n: log.append(("memcpy", n))))
    cp.ones, cp.empty_like = buf, buf
    cp.ElementwiseKernel = lambda *a: (lambda src, dst: log.append("kernel"))
    monkeypatch.setitem(sys.modules, "cupy", cp)
    res = bench.gpu_copy_bandwidth(nbytes=2**20, repeat=4, warmup=1)
    assert log.count(("memcpy", 2**20)) == 5 and log.count("kernel") == 5
    assert res["methods"]["memcpy"]["gbps"] == pytest.approx(2 * 2**20 / 0.5e-3 / 1e9)    # read + write
    assert res["gbps"] == max(m["gbps"] for m in res["methods"].values())
    assert res["bytes"] == 2**20 and "read + write" in res["how"]


def test_gpu_pools_get_the_copy_fraction_and_computed_peaks(monkeypatch):
    log = []
    cp = _fake_cupy(log)
    cp.cuda.runtime.getDeviceProperties = lambda i: H100_PROPS
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(bench, "gpu_copy_bandwidth", lambda nbytes: {"gbps": 2000.0, "method": "memcpy",
                                                                     "bytes": nbytes})

    def pool(spec, x):
        return numpy_oracle.max_pool(spec, np.asarray(x))
    impls = [_dispatch.FunctionImpl("fakegpu", "max_pool", "direct", pool)]
    mod = types.SimpleNamespace(availability=lambda: None, implementations=lambda: impls)
    monkeypatch.setitem(_dispatch.BACKENDS, "fakegpu", _dispatch.Backend("fakegpu", "cupy", "x", "test"))
    monkeypatch.setitem(_dispatch._modules, "fakegpu", mod)
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


def _write_tables(d):
    (d / "resnet50.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\nl1,4,8,8,4,3,3,1,1,1,1\n")
    (d / "pools.csv").write_text("name,C,H,W,kind,kernel,stride,pad\nmp,4,8,8,max,2,2,0\n")
    (d / "extra.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\ne1,4,8,8,4,1,1,1,0,1,1\n")


def test_per_table_batches_and_the_targets_suite(monkeypatch, tmp_path):
    _write_tables(tmp_path)
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    n = {c.name: c.N for c in bench.build_cases("targets", "gpu")}
    assert n == {"resnet50/l1": 32, "pools/mp": 64, "extra/e1": bench.SIZES["gpu"]["layers_N"]}
    n = {c.name: c.N for c in bench.build_cases("targets", "gpu", batch=4, table_batch={"resnet50": 2})}
    assert n == {"resnet50/l1": 2, "pools/mp": 64, "extra/e1": 4}          # --table-batch wins over --batch
    n = {c.name: c.N for c in bench.build_cases("layers", "cpu", table_batch={"pools": 3})}
    assert n == {"resnet50/l1": 1, "pools/mp": 3, "extra/e1": 1}
    with pytest.raises(ValueError, match="nope"):
        bench.build_cases("layers", "cpu", table_batch={"nope": 3})
    assert bench.parse_table_batch("resnet50=32, pools=64") == {"resnet50": 32, "pools": 64}
    for bad in ("resnet50", "resnet50=x", "=3", "pools=0"):
        with pytest.raises(ValueError, match="TABLE=N"):
            bench.parse_table_batch(bad)
    monkeypatch.delenv("FASTCONV_SHAPES")
    monkeypatch.setattr(bench, "repo_root", lambda: tmp_path / "installed" / "site-packages")
    with pytest.raises(FileNotFoundError, match="FASTCONV_SHAPES"):       # no partial built-in tables
        bench.build_cases("targets", "gpu")


def test_float16_cases_are_verified_with_the_float16_tolerance():
    opts = bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[], dtype="float16",
                         filter=":base", policy=bench.QUICK_POLICY)
    report = bench.run(opts, log=lambda s: None)
    assert report["settings"]["dtype"] == "float16" and report["settings"]["accumulate"] == "float32"
    assert {c["dtype"] for c in report["cases"]} == {"float16"}
    assert len(report["results"]) >= 4 and report["failures"] == 0
    assert all(r["status"] == "ok" and r["verified"] == "strict" for r in report["results"])
    case = next(c for c in bench.build_cases("quick", "cpu", dtype="float16") if c.name == "conv2d:base")
    assert all(a.dtype == np.float16 for a in case.arrays(n=1))
    assert bench.case_spec(case).dtype == "float16" and bench.case_spec(case).itemsize == 2
    with pytest.raises(ValueError, match="dtype"):
        bench.build_cases("quick", "cpu", dtype="float64")


def test_fp16_accumulate_allowance_is_for_float16_peers_only():
    def off_runner(kind, ref, factor):
        class Off(bench.Runner):
            def function(self, case):
                return lambda *a: ref.ref.astype(np.float64) + factor * ref.tol.reshape(ref.ref.shape)
        r = Off()
        r.kind, r.name, r.algo = kind, "off", "x"
        return r

    for dtype in ("float16", "float32"):
        case = next(c for c in bench.build_cases("quick", "cpu", dtype=dtype) if c.name == "conv2d:base")
        ref = bench.Reference(case)
        assert bench.verify(case, off_runner("peer", ref, 2), ref) == "loose"
        if dtype == "float16":
            assert bench.verify(case, off_runner("peer", ref, 100), ref) == "fp16-accumulate"
        else:
            with pytest.raises(AssertionError):
                bench.verify(case, off_runner("peer", ref, 100), ref)
        with pytest.raises(AssertionError):
            bench.verify(case, off_runner("fastconv", ref, 100), ref)


def test_algo_all_and_algos_a_backend_lacks(fake_backend):
    labels = [r.label for r in bench.fastconv_runners("cpu", ["fake"], ["all"])]
    assert labels == ["fake:direct", "fake:im2col", "fake:auto", "fake:pools"]
    opts = bench.Options(suite="quick", device="cpu", backends=["fake"], algos=["depthwise", "auto"], peers=[],
                         filter="conv2d:base", policy=bench.QUICK_POLICY)
    report = bench.run(opts, log=lambda s: None)
    rows = {r["algo"]: r for r in report["results"]}
    assert rows["depthwise"]["status"] == "unsupported" and "algo='depthwise'" in rows["depthwise"]["error"]
    assert rows["auto"]["status"] == "verify-failed" or rows["auto"]["impl"] == "fake:conv:direct"


def test_a_failing_support_check_is_reported_not_raised(fake_backend, monkeypatch):
    def boom(spec, backend, algo="auto"):
        raise RuntimeError("probe crashed")
    monkeypatch.setattr(_dispatch, "candidates", boom)
    report = bench.run(bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[],
                                     filter="conv2d:base", policy=bench.QUICK_POLICY), log=lambda s: None)
    assert all(r["status"] == "unsupported" and "probe crashed" in r["error"] for r in report["results"])


def _synthetic_report():
    """Two fastconv conv algos and a peer on resnet50 and mobilenet (depthwise + a 1x1), pools with a copy
    reference; hand-picked times so every figure of the summary is known."""
    def case(name, op, shape, kwargs):
        return {"name": name, "op": op, "source": f"layers:{name.split('/')[0]}", "input_shape": shape,
                "kwargs": kwargs, "sweeps": {}}
    cases = [case("resnet50/a", "conv2d", [32, 64, 56, 56], {"groups": 1}),
             case("resnet50/b", "conv2d", [32, 64, 56, 56], {"groups": 1}),
             case("mobilenet_v1_dw/dw", "conv2d", [32, 64, 56, 56], {"groups": 64}),
             case("mobilenet_v1_dw/pw", "conv2d", [32, 64, 7, 7], {"groups": 1}),
             case("pools/p1", "max_pool2d", [64, 64, 112, 112], {"kernel_size": 3}),
             case("pools/p2", "avg_pool2d", [64, 64, 7, 7], {"kernel_size": 7}),
             dict(case("sweep", "conv2d", [8, 8, 8, 8], {}), source="sweep")]
    results = []

    def row(c, kind, backend, algo, ratio=None, status="ok", peak=None, copy=None):
        results.append({"case": c, "kind": kind, "backend": backend, "algo": algo, "status": status,
                        "ratio_to_best_peer": ratio, "peak_fraction": peak, "copy_fraction": copy,
                        "error": None if status == "ok" else "why"})
    for c, r_direct, r_auto in (("resnet50/a", 0.5, 2.0), ("resnet50/b", 2.0, 0.5),
                                ("mobilenet_v1_dw/dw", 0.25, 2.0), ("mobilenet_v1_dw/pw", 4.0, 1.0)):
        row(c, "fastconv", "cuda", "direct", r_direct, peak=0.1)
        row(c, "fastconv", "cuda", "auto", r_auto, peak=0.3)
        row(c, "peer", "torch-cuda", "cudnn", 1.0, peak=0.5)
    row("resnet50/a", "fastconv", "cuda", "depthwise", status="unsupported")
    row("resnet50/b", "fastconv", "cuda", "depthwise", status="unsupported")
    row("pools/p1", "fastconv", "cuda", "direct", 1.5, copy=0.9)
    row("pools/p2", "fastconv", "cuda", "direct", 1.2, copy=0.8)
    row("pools/p1", "peer", "torch-cuda", "aten", 1.0, copy=0.6)
    row("pools/p2", "peer", "torch-cuda", "aten", 1.0, copy=0.5)
    row("sweep", "fastconv", "cuda", "direct", 9.0)
    return {"schema": bench.SCHEMA, "cases": cases, "results": results, "failures": 0, "wall_s": 1.0,
            "machine": {"date": "2026-11-23T00:00:00Z", "cpu_model": "x", "cpu_cores_usable": 16,
                        "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "cuda_runtime": 13020,
                                "cuda_driver": 13000, "nvidia_driver": "580.159.04"}},
            "versions": {"fastconv": "0.1.0", "cupy": "14.2.0", "torch": "2.11.0"},
            "settings": {"dtype": "float16", "policy": dataclasses.asdict(bench.FULL_POLICY)},
            "peak": {"fp32_gflops": 66908.16, "mem_gbps": 3352.32, "source": "computed from the CUDA device "
                     "properties", "vendor": {"fp32_gflops": 67000.0, "mem_gbps": 3350.0}},
            "copy_bandwidth": {"gbps": 2900.0, "method": "memcpy", "bytes": 256 * 2**20},
            "runners": [{"kind": "peer", "name": "torch-cuda", "available": True,
                         "settings": {"cudnn": 91900, "allow_tf32": False}}]}


def test_table_summary_from_a_synthetic_report():
    entries = {(e["table"], e["layer_subset"], e["runner"]): e for e in bench.table_summary(_synthetic_report())}
    assert set(entries) == {("resnet50", None, "cuda:direct"), ("resnet50", None, "cuda:auto"),
                            ("resnet50", None, "cuda:depthwise"), ("mobilenet_v1_dw", None, "cuda:direct"),
                            ("mobilenet_v1_dw", "depthwise", "cuda:direct"), ("mobilenet_v1_dw", None, "cuda:auto"),
                            ("mobilenet_v1_dw", "depthwise", "cuda:auto"), ("pools", None, "cuda:pools")}
    e = entries[("resnet50", None, "cuda:auto")]
    assert e["geomean"] == pytest.approx(1.0) and (e["min"], e["min_layer"]) == (0.5, "resnet50/b")
    assert e["timed"] == e["layers"] == 2 and e["batch"] == [32] and e["dtype"] == "float16"
    assert e["median_peak_fraction"] == pytest.approx(0.3) and e["peer_median_peak_fraction"] == 0.5
    assert e["met"] is False and "no layer < 0.7x" in e["target"]            # geomean 1.0 but a layer at 0.5
    dw = entries[("resnet50", None, "cuda:depthwise")]
    assert (dw["timed"], dw["unsupported"], dw["geomean"], dw["met"]) == (0, 2, None, None)
    # the depthwise target is about the depthwise layers only (not the 1x1 in the same table)
    assert entries[("mobilenet_v1_dw", None, "cuda:auto")]["target"] is None
    sub = entries[("mobilenet_v1_dw", "depthwise", "cuda:auto")]
    assert sub["layers"] == 1 and sub["geomean"] == 2.0 and sub["met"] is True
    assert entries[("mobilenet_v1_dw", "depthwise", "cuda:direct")]["met"] is False
    p = entries[("pools", None, "cuda:pools")]
    assert p["geomean"] == pytest.approx(1.5 ** 0.5 * 1.2 ** 0.5) and p["batch"] == [64]
    assert p["median_copy_fraction"] == pytest.approx(0.85) and p["min_copy_fraction"] == 0.8
    assert p["peer_median_copy_fraction"] == pytest.approx(0.55) and p["met"] is True
    text = bench.summary_text(bench.table_summary(_synthetic_report()))
    assert "NOT met" in text and "mobilenet_v1_dw [depthwise]" in text


def test_markdown_from_a_synthetic_report():
    md = bench.markdown([_synthetic_report()])
    for part in ("### NVIDIA H100 80GB HBM3, float16", "driver 580.159.04", "CUDA runtime 13.2",
                 "fp32 FMA peak 66.9 TFLOP/s", "3352 GB/s", "measured copy bandwidth 2900 GB/s", "TF32 off",
                 "| resnet50 (32) | `cuda:auto` | 2/2 | 1.00x | 0.50x (b) |", "| no |",
                 "| pools (64) | `cuda:pools` | 2/2 |", "85% (80%) / 55%", "mobilenet_v1_dw [depthwise] (32)"):
        assert part in md, part
    assert md.count("\n| ") == 1 + 8                     # the header and one row per summary entry


def test_cli_summary_and_markdown_of_saved_reports(tmp_path):
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    bench.write_json(_synthetic_report(), str(js))
    proc = _run_cli("summary", str(js), str(js), "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr
    assert "resnet50 (N=32, float16) cuda:auto: geomean 1.00x" in proc.stdout
    assert md.read_text().count("### NVIDIA H100") == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert _run_cli("summary", str(bad)).returncode == 2


def test_cli_bench_float16_writes_summary_and_markdown(tmp_path, monkeypatch):
    _write_tables(tmp_path)
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    proc = _run_cli("bench", "--suite", "layers", "--backend", "numpy", "--dtype", "float16", "--no-peers",
                    "--table-batch", "resnet50=2,pools=3", "--json", str(js), "--no-plot", "--markdown", str(md))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(js.read_text())
    assert report["settings"]["dtype"] == "float16"
    assert report["settings"]["table_batch"] == {"resnet50": 2, "pools": 3}
    assert {c["name"]: c["input_shape"][0] for c in report["cases"]} == {"resnet50/l1": 2, "pools/mp": 3,
                                                                          "extra/e1": 1}
    assert {e["table"] for e in report["summary"]} == {"resnet50", "pools", "extra"}
    assert "per table:" in proc.stdout and md.read_text().startswith("### ")


def test_cli_rejects_bad_new_options():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "quick", "--table-batch", "pools=64"])     # no layer tables in quick
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "layers", "--table-batch", "pools"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dtype", "float64"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--algo", "fastest"])
