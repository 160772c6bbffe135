"""Every case of the quick suite (or, with FASTCONV_BENCH_FULL=1, the full sweep and the standard layers) on
every fastconv backend x algorithm of the registry and on each peer, one test per (case, runner); with the
gradients of each op's base case (with FASTCONV_BENCH_FULL=1, of every case: conv_input, conv_weight, the
pool gradients), which a backend without them skips with the reason.

Each test verifies the runner against the NumPy oracle before timing it; ``benchmark.group`` is the case,
so pytest-benchmark prints fastconv and its peers for one case side by side. ``extra_info`` holds the
case, GFLOP/s (convs) or GB/s (pools) and the fraction of the device's peak where one is known (GPU: the
device's limits, as ``fastconv bench`` computes them; CPU pools: copy bandwidth measured in this session;
CPU convs: none). GPU calls synchronise inside the timed function. A runner that is not available here
(no GPU, no torch) is one skipped test with the reason; nothing here asserts a speed.
"""
from __future__ import annotations

from fastconv import _config, bench

SUITE = "full" if _config.flag("FASTCONV_BENCH_FULL") else "quick"
ROUNDS, WARMUP = (20, 2) if SUITE == "full" else (5, 1)


def cases(device):
    """The suite's cases and their gradients: every gradient with FASTCONV_BENCH_FULL=1, else those of the
    base case of each op (the quick list stays short)."""
    out = bench.build_cases(SUITE, device, direction="both")
    if SUITE == "full":
        return out
    return [c for c in out if c.grad is None or c.forward().name.endswith(":base")]


def bench_matrix():
    """(device, its cases, its runners) for every device (conftest.py parametrizes test_case with it)."""
    return [(d, lambda d=d: cases(d), bench.fastconv_runners(d, direction="both") + bench.peer_runners(d))
            for d in bench.DEVICES]


def test_case(time_case, case, runner):
    time_case(case, runner, ROUNDS, WARMUP)
