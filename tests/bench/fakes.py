"""Stand-ins for the bench tests: a fake CuPy (NumPy arrays dressed as cupy.ndarray, events that count),
small shape tables, goals and a synthetic report whose every summary figure is known by hand."""
from __future__ import annotations

import dataclasses
import types

import numpy as np

from fastconv import _dispatch, bench

#: the goals fastconv's own benchmarks are checked against (benchmarks/targets.json), written out here so
#: that the tests do not move when the project changes its goals
GOALS = {"resnet50": {"geomean": 1.0, "min": 0.7},
         "mobilenet_v1_dw": {"geomean": 1.5, "layers": "depthwise"},
         "pools": {"geomean": 1.2, "median_copy_fraction": 0.85}}

H100_PROPS = {"name": b"NVIDIA H100 80GB HBM3", "totalGlobalMem": 80 * 2**30, "major": 9, "minor": 0,
              "multiProcessorCount": 132, "clockRate": 1980000, "memoryClockRate": 2619000,
              "memoryBusWidth": 5120}


def write_tables(d):
    """resnet50 (one 3x3 layer), pools (one max pool) and a table named extra (one 1x1 layer)."""
    (d / "resnet50.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\nl1,4,8,8,4,3,3,1,1,1,1\n")
    (d / "pools.csv").write_text("name,C,H,W,kind,kernel,stride,pad\nmp,4,8,8,max,2,2,0\n")
    (d / "extra.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\ne1,4,8,8,4,1,1,1,0,1,1\n")


def write_cpu_tables(d):
    """The three tables suite cpu-layers reads: resnet50 (a 3x3 and a 1x1 layer), mobilenet_v1_dw (one
    depthwise layer) and pools (a max and an avg pool), all tiny."""
    (d / "resnet50.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\n"
                                    "c3,4,8,8,4,3,3,1,1,1,1\nc1,4,8,8,8,1,1,1,0,1,1\n")
    (d / "mobilenet_v1_dw.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\ndw,4,8,8,4,3,3,1,1,1,4\n")
    (d / "pools.csv").write_text("name,C,H,W,kind,kernel,stride,pad\nmp,4,8,8,max,2,2,0\nap,4,8,8,avg,2,2,0\n")


class _FakeCupyArray(np.ndarray):
    device = types.SimpleNamespace(id=0)

    def get(self):
        return np.array(self).view(np.ndarray)


_FakeCupyArray.__module__ = "cupy"
_FakeCupyArray.__name__ = "ndarray"


def fake_cupy(log):
    """A module that passes for CuPy: arrays are NumPy, events log "record"/"event-sync" and 0.5 ms apart."""
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


def synthetic_report():
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


def register(monkeypatch, name, array_kind, impls):
    """Put backend ``name`` with these Impls into the registry for the length of one test."""
    mod = types.SimpleNamespace(availability=lambda: None, implementations=lambda: impls)
    monkeypatch.setitem(_dispatch.BACKENDS, name, _dispatch.Backend(name, array_kind, f"{name}.module", "test"))
    monkeypatch.setitem(_dispatch._modules, name, mod)


def has(mod: str) -> bool:
    """Whether ``mod`` can be imported here."""
    try:
        __import__(mod)
        return True
    except ImportError:
        return False
