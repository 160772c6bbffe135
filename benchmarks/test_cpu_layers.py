"""pytest-benchmark twin of ``fastconv bench --suite cpu-layers``: each layer of the CPU layer benchmark
(ResNet-50 at N=8 with stride-2 and dilation-2 variants of its 3x3 layers, MobileNet-v1 depthwise at N=8,
pools at N=16) on every runner of the suite (each numba algorithm and auto, torch.nn.functional when
installed), grouped per layer so they sit side by side, with the suite's pause before each side is timed.

    pytest benchmarks/test_cpu_layers.py                          timed, every runner
    pytest benchmarks/test_cpu_layers.py --benchmark-disable      each layer once on its default runner,
                                                                  verified (CI's smoke test, see below)
    FASTCONV_BENCH_FULL=1 pytest benchmarks/test_cpu_layers.py --benchmark-disable
                                                                  each layer once on every runner, verified
    pytest benchmarks/test_cpu_layers.py -k res2_3x3              only the tests whose id contains res2_3x3

Every run is checked against the oracle (fastconv.testing's tolerance, at N=1 for big layers) before it is
timed; cases, runners and the check all come from fastconv.bench.

The smoke run (``--benchmark-disable`` without FASTCONV_BENCH_FULL=1) runs each layer on what a user's call
runs, numba with ``algo="auto"`` (a conv) or numba's pools (a pool): one skipped test per runner left out
says so. Left out there, and why that loses no check: numba's ``direct`` and ``im2col`` runners (every
numba conv implementation is checked against the oracle on small shapes that reach it by tests/
test_numba_backend.py -- the blocked, phase-split and pointwise kernels, im2col's tiles of several images
-- the clipped depthwise kernel by its non-finite-weight tests, im2col's bands of one image by
tests/test_workspace.py; and on a layer big enough to be measured, ``auto`` itself runs every supported
candidate at the layer's full size) and torch (checked against the oracle by tests/test_torch_crosscheck*.py;
benchmarks/test_suite.py still runs the torch runner in the smoke run).
"""
from __future__ import annotations

from fastconv import bench

SUITE = bench.SUITES["cpu-layers"]
ROUNDS, WARMUP = 7, 1          # medians of 7, as the CPU results in README.md


def bench_matrix():
    """The suite's cases and runners on its device (conftest.py parametrizes test_cpu_layer with them)."""
    runners = bench.fastconv_runners(SUITE.device, SUITE.backends, SUITE.algos) + bench.peer_runners(SUITE.device)
    return [(SUITE.device, lambda: bench.build_cases(SUITE.name, SUITE.device), runners)]


def smoke_runner(runner) -> bool:
    """The runners of the smoke run (conftest.smoke_only): fastconv's default, ``algo="auto"``, whose pool
    runner is the backend's only one."""
    return runner.kind == "fastconv" and runner.algo == "auto"


def test_cpu_layer(time_case, case, runner):
    time_case(case, runner, ROUNDS, WARMUP, SUITE.settle_s)
