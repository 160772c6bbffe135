"""Every case of the quick suite (or, with FASTCONV_BENCH_FULL=1, the full sweep and the standard layers) on
every fastconv backend x algorithm of the registry and on each peer, one test per (case, runner).

Each test verifies the runner against the NumPy oracle before timing it; ``benchmark.group`` is the case,
so pytest-benchmark prints fastconv and its peers for one case side by side. ``extra_info`` holds the
case, GFLOP/s (convs) or GB/s (pools) and the fraction of the device's peak where one is known (GPU: vendor
spec sheet; CPU pools: copy bandwidth measured in this session; CPU convs: none). GPU calls synchronise
inside the timed function. A runner that is not available here (no GPU, no torch) is one skipped test
with the reason; nothing here asserts a speed.
"""
from __future__ import annotations

import os

import pytest

from fastconv import bench

SUITE = "full" if os.environ.get("FASTCONV_BENCH_FULL") == "1" else "quick"
ROUNDS, WARMUP = (20, 2) if SUITE == "full" else (5, 1)


def _params():
    params = []
    for device in bench.DEVICES:
        cases = None
        for runner in bench.fastconv_runners(device) + bench.peer_runners(device):
            why = runner.unavailable()
            if why:
                params.append(pytest.param(None, runner, id=f"{device}-{runner.label}",
                                           marks=pytest.mark.skip(reason=f"{runner.label}: {why}")))
                continue
            if cases is None:
                cases = bench.build_cases(SUITE, device)
            params += [pytest.param(c, runner, id=f"{device}-{c.name}-{runner.label}")
                       for c in cases if runner.runs(c)]
    return params


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = os.environ.get("FASTCONV_BENCH_THREADS")
    if n:
        runners = bench.fastconv_runners("cpu") + bench.peer_runners("cpu")
        bench.set_threads(int(n), [r for r in runners if r.unavailable() is None])


def _peak(case, runner, bench_peaks):
    """GFLOP/s or GB/s the fraction of peak refers to, or None."""
    if runner.device not in bench_peaks:
        peak = None
        if runner.device == "gpu":
            info = bench.gpu_info()
            peak = bench.gpu_peak(info["name"]) if info else None
        else:
            peak = {"fp32_gflops": None, "mem_gbps": bench.copy_bandwidth(),
                    "source": "numpy.copyto bandwidth measured in this session"}
        bench_peaks[runner.device] = peak
    peak = bench_peaks[runner.device]
    if not peak:
        return None, None
    value = peak["fp32_gflops"] if case.is_conv else peak["mem_gbps"]
    return value, (peak["source"] if value else None)


@pytest.mark.parametrize("case,runner", _params())
def test_case(benchmark, case, runner, bench_references, bench_peaks):
    spec = bench.case_spec(case)
    why = runner.unsupported(case, spec)
    if why:
        pytest.skip(f"{runner.label} does not run {case.name}: {why}")
    ref = bench_references.get((runner.device, case.name))
    if ref is None:
        ref = bench_references[(runner.device, case.name)] = bench.Reference(case)
    bench.verify(case, runner, ref)          # raises AssertionError: never time a wrong answer

    args = runner.convert(case.arrays())
    fn, sync = runner.function(case), runner.sync

    def call():
        fn(*args)
        sync()                               # GPU work finishes inside the timed call

    benchmark.group = case.name
    benchmark.extra_info.update(case=case.name, description=case.describe(), op=case.op, kind=runner.kind,
                                backend=runner.name, algo=runner.algo_for(case, spec), device=runner.device,
                                flops=spec.flops(), bytes=spec.bytes(), verify_n=ref.n)
    benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if getattr(benchmark, "disabled", False) or stats is None:
        return
    median = stats.stats.median
    work = spec.flops() if case.is_conv else spec.bytes()
    throughput = work / median / 1e9
    peak, source = _peak(case, runner, bench_peaks)
    benchmark.extra_info.update({"GFLOP/s" if case.is_conv else "GB/s": throughput,
                                 "peak_fraction": throughput / peak if peak else None, "peak_source": source})
