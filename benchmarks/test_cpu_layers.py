"""pytest-benchmark twin of bench_cpu.py: each layer of the CPU benchmark, numba (auto) beside
torch.nn.functional (when installed), grouped per layer so the two sit side by side.

    pytest benchmarks/test_cpu_layers.py                          timed (ResNet-50 at N=8, pools at N=16)
    pytest benchmarks/test_cpu_layers.py --benchmark-disable      each layer once, verified (smoke test)
    FASTCONV_CPU_LAYERS=res2 pytest benchmarks/test_cpu_layers.py only layers whose name contains res2

Every fastconv run is checked against the oracle (at N=1) before it is timed.
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("numba")

import bench_cpu  # noqa: E402  (benchmarks/ is on sys.path when pytest collects this directory)

_ONLY = os.environ.get("FASTCONV_CPU_LAYERS", "")
try:
    LAYERS = [l for l in bench_cpu.conv_layers() + bench_cpu.pool_layers() if _ONLY in l.name]
except FileNotFoundError as e:  # shapes not next to the repository and FASTCONV_SHAPES unset
    LAYERS = []
    _MISSING = str(e)


def _ids(layer):
    return layer.name


@pytest.mark.skipif(not LAYERS, reason="no layer shapes found (set FASTCONV_SHAPES)")
@pytest.mark.parametrize("runner", ["numba", "torch"])
@pytest.mark.parametrize("layer", LAYERS, ids=_ids)
def test_cpu_layer(benchmark, layer, runner):
    arrays = bench_cpu.make_inputs(layer)
    spec = bench_cpu.spec_of(layer, arrays)
    benchmark.group = layer.name
    benchmark.extra_info.update(flops=spec.flops(), bytes=spec.bytes())
    if runner == "numba":
        bench_cpu.verify(layer, "auto")
        fn = bench_cpu.fastconv_call(layer, "auto")
    else:
        torch = pytest.importorskip("torch")
        arrays = [torch.from_numpy(a) for a in arrays]
        fn = bench_cpu.torch_call(layer)
    fn(*arrays)  # warm-up: compile / load / autotune outside the timing
    benchmark(fn, *arrays)
