"""The ``fastconv`` command and the benchmark engine behind it (fastconv.bench).

Fast by construction: the bench runs use the NumPy oracle backend (nothing to compile) and a handful of
cases (the hidden ``--max-cases``); nothing here asserts a speed.
"""
from __future__ import annotations

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
    assert set(data["caches"]) == {"numba", "cuda-emu", "cupy"}
    assert {"numpy", "numba", "cupy", "torch"} <= set(data["versions"])
    json.dumps(data)


def test_info_reports_emulator_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path))
    assert cli.cache_paths()["cuda-emu"] == str(tmp_path)


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
