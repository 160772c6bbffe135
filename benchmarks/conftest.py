"""pytest-benchmark suites of fastconv against its peers, built from fastconv.bench (see test_suite.py and
test_cpu_layers.py).

    pytest benchmarks/ --benchmark-disable        every case once, verified against the oracle (CI smoke test)
    pytest benchmarks/                            timed; groups put fastconv and its peers for a case side by side
    pytest benchmarks/test_cpu_layers.py -k res2  only the CPU layers whose test id contains res2
    FASTCONV_BENCH_FULL=1 pytest benchmarks/      the full sweep and the standard layers instead of the quick list
    FASTCONV_BENCH_FULL=1 pytest benchmarks/ --benchmark-disable   the same once each, on every runner (the
                                                  smoke run's subset, see smoke_only, is for CI's time)
    FASTCONV_BENCH_THREADS=1 pytest benchmarks/   numba and torch on the same number of CPU threads
"""
from __future__ import annotations

import time

import pytest

from fastconv import _config, bench


def pytest_report_header(config):
    suite = "full" if _config.flag("FASTCONV_BENCH_FULL") else "quick"
    smoke = " (smoke run: a module's smoke_runner subset only)" if smoke_only(config) else ""
    return (f"fastconv benchmarks: suite {suite!r}{smoke} (FASTCONV_BENCH_FULL=1 for the full sweep and layers, "
            f"and every runner), CPU threads: {_config.get('FASTCONV_BENCH_THREADS') or 'library defaults'}")


def smoke_only(config) -> bool:
    """An untimed run (``--benchmark-disable``, CI's smoke test) without FASTCONV_BENCH_FULL=1: a module
    that defines ``smoke_runner(runner) -> bool`` runs only the runners it keeps. A timed run always runs
    every runner (side by side is what it is for)."""
    return bool(config.getoption("benchmark_disable", False)) and not _config.flag("FASTCONV_BENCH_FULL")


def pytest_generate_tests(metafunc):
    """A test taking ``case`` and ``runner`` gets one param per (case, runner) of its module's
    ``bench_matrix()``: [(device, cases() -> the cases, runners)], case by case. An unavailable runner is one
    skipped param that says why, and so is one its module's ``smoke_runner`` leaves out of a smoke run (see
    smoke_only); ``cases()`` is called only when some runner of the device is available."""
    if not {"case", "runner"} <= set(metafunc.fixturenames):
        return
    keep = getattr(metafunc.module, "smoke_runner", None) if smoke_only(metafunc.config) else None
    out = []
    for device, cases, runners in metafunc.module.bench_matrix():
        live = []
        for runner in runners:
            why = runner.unavailable()
            if not why and keep is not None and not keep(runner):
                why = "not in the smoke run (--benchmark-disable): FASTCONV_BENCH_FULL=1 runs every runner"
            if why:
                out.append(pytest.param(None, runner, id=f"{device}-{runner.label}",
                                        marks=pytest.mark.skip(reason=f"{runner.label}: {why}")))
            else:
                live.append(runner)
        if keep is not None and not live and any(not r.unavailable() for r in runners):
            raise ValueError(f"{metafunc.module.__name__}.smoke_runner keeps none of the available {device} "
                             "runners: the smoke run would check nothing")
        for c in cases() if live else ():
            out += [pytest.param(c, r, id=f"{device}-{c.name}-{r.label}") for r in live if r.runs(c)]
    metafunc.parametrize("case,runner", out)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    n = _config.get("FASTCONV_BENCH_THREADS")
    if n:
        runners = bench.fastconv_runners("cpu") + bench.peer_runners("cpu")
        bench.set_threads(int(n), [r for r in runners if r.unavailable() is None])


@pytest.fixture(scope="session")
def bench_references():
    """Oracle answers, one per case, shared by every runner of that case."""
    return {}


@pytest.fixture(scope="session")
def bench_peaks():
    """Per device: the peak the fraction in extra_info is taken of (filled lazily, see _peak)."""
    return {}


def _peak(case, runner, bench_peaks):
    """GFLOP/s or GB/s the fraction of peak refers to, and where it comes from, or (None, None)."""
    if runner.device not in bench_peaks:
        peak = None
        if runner.device == "gpu":
            info = bench.gpu_info()
            peak = bench.gpu_peak_from_device(info) if info else None
        else:
            peak = {"fp32_gflops": None, "mem_gbps": bench.copy_bandwidth(),
                    "source": "numpy.copyto bandwidth measured in this session"}
        bench_peaks[runner.device] = peak
    peak = bench_peaks[runner.device]
    if not peak:
        return None, None
    value = peak["fp32_gflops"] if case.is_conv else peak["mem_gbps"]
    return value, (peak["source"] if value else None)


@pytest.fixture
def time_case(benchmark, bench_references, bench_peaks):
    """``time_case(case, runner, rounds, warmup, settle_s=0)``: skip when the runner does not support the
    case, verify it against the oracle (raises AssertionError: a wrong answer is never timed), then time it
    with pytest-benchmark, grouped by case, with GFLOP/s or GB/s and the fraction of peak in extra_info.
    ``settle_s``: a pause before the warm-up and again before the timed rounds (the suite's Policy)."""
    def run(case, runner, rounds, warmup, settle_s=0.0):
        spec = bench.case_spec(case)
        why = runner.unsupported(case, spec)
        if why:
            pytest.skip(f"{runner.label} does not run {case.name}: {why}")
        ref = bench_references.get((runner.device, case.name))
        if ref is None:
            ref = bench_references[(runner.device, case.name)] = bench.Reference(case)
        bench.verify(case, runner, ref)

        args = runner.convert(case.arrays())
        fn, sync = runner.function(case), runner.sync

        def call():
            fn(*args)
            sync()                               # GPU work finishes inside the timed call

        benchmark.group = case.name
        benchmark.extra_info.update(case=case.name, description=case.describe(), op=case.op,
                                    spec_op=case.spec_op, kind=runner.kind,
                                    backend=runner.name, algo=runner.algo_for(case, spec), device=runner.device,
                                    flops=spec.flops(), bytes=spec.bytes(), verify_n=ref.n)
        if settle_s and not getattr(benchmark, "disabled", False):
            time.sleep(settle_s)
            for _ in range(warmup):
                call()
            time.sleep(settle_s)
            warmup = 0
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)
        stats = getattr(benchmark, "stats", None)
        if getattr(benchmark, "disabled", False) or stats is None:
            return
        throughput = (spec.flops() if case.is_conv else spec.bytes()) / stats.stats.median / 1e9
        peak, source = _peak(case, runner, bench_peaks)
        benchmark.extra_info.update({"GFLOP/s" if case.is_conv else "GB/s": throughput,
                                     "peak_fraction": throughput / peak if peak else None, "peak_source": source})
    return run
