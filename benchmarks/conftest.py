"""pytest-benchmark suite of fastconv against its peers (see test_suite.py).

    pytest benchmarks/ --benchmark-disable        every case once, verified against the oracle (CI smoke test)
    pytest benchmarks/                            timed; groups put fastconv and its peers for a case side by side
    FASTCONV_BENCH_FULL=1 pytest benchmarks/      the full sweep and the standard layers instead of the quick list
    FASTCONV_BENCH_THREADS=1 pytest benchmarks/   numba and torch on the same number of CPU threads
"""
from __future__ import annotations

import os

import pytest

FULL = os.environ.get("FASTCONV_BENCH_FULL") == "1"
SUITE = "full" if FULL else "quick"


def pytest_report_header(config):
    threads = os.environ.get("FASTCONV_BENCH_THREADS") or "library defaults"
    return (f"fastconv benchmarks: suite {SUITE!r} (FASTCONV_BENCH_FULL=1 for the full sweep and layers), "
            f"CPU threads: {threads}")


@pytest.fixture(scope="session")
def bench_references():
    """Oracle answers, one per case, shared by every runner of that case."""
    return {}


@pytest.fixture(scope="session")
def bench_peaks():
    """Per device: the peak the fraction in extra_info is taken of (filled lazily, see test_suite.py)."""
    return {}
