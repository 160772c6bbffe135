"""pytest-benchmark twin of ``fastconv bench --suite cpu-layers``: each layer of the CPU layer benchmark
(ResNet-50 at N=8 with stride-2 and dilation-2 variants of its 3x3 layers, MobileNet-v1 depthwise at N=8,
pools at N=16) on every runner of the suite (each numba algorithm and auto, torch.nn.functional when
installed), grouped per layer so they sit side by side, with the suite's pause before each side is timed.

    pytest benchmarks/test_cpu_layers.py                          timed
    pytest benchmarks/test_cpu_layers.py --benchmark-disable      each layer once, verified (smoke test)
    pytest benchmarks/test_cpu_layers.py -k res2_3x3              only the tests whose id contains res2_3x3

Every run is checked against the oracle (fastconv.testing's tolerance, at N=1 for big layers) before it is
timed; cases, runners and the check all come from fastconv.bench.
"""
from __future__ import annotations

from fastconv import bench

SUITE = bench.SUITES["cpu-layers"]
ROUNDS, WARMUP = 7, 1          # medians of 7, as the CPU results in README.md


def bench_matrix():
    """The suite's cases and runners on its device (conftest.py parametrizes test_cpu_layer with them)."""
    runners = bench.fastconv_runners(SUITE.device, SUITE.backends, SUITE.algos) + bench.peer_runners(SUITE.device)
    return [(SUITE.device, lambda: bench.build_cases(SUITE.name, SUITE.device), runners)]


def test_cpu_layer(time_case, case, runner):
    time_case(case, runner, ROUNDS, WARMUP, SUITE.settle_s)
