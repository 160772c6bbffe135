"""fastconv.bench runs: backends from the registry, the oracle judging before anything is timed, the timing
policy, and the CPU layer suite end to end (on the oracle backend and tiny tables, so nothing compiles)."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import _dispatch, _timing, bench

from .fakes import has, write_cpu_tables


def _quiet(opts):
    return bench.run(opts, log=lambda s: None)


# ---------------------------------------------------------------------------------------------------
# Backends come from the registry; the oracle judges before anything is timed
# ---------------------------------------------------------------------------------------------------
def test_default_backends_exclude_oracle_and_emulator():
    cpu = bench.backends_for("cpu")
    assert "numpy" not in cpu and "cuda-emu" not in cpu
    assert set(cpu) == {n for n, b in _dispatch.BACKENDS.items()
                        if b.array_kind == "numpy" and n not in ("numpy", "cuda-emu")}
    assert bench.backends_for("cpu", ["cuda-emu"]) == ["cuda-emu"]      # runs when named


def test_new_backend_is_picked_up(fake_backend):
    labels = [r.label for r in bench.fastconv_runners("cpu")]
    assert {"fake:direct", "fake:im2col", "fake:pools"} <= set(labels)


def test_wrong_results_are_reported_and_never_timed(fake_backend):
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[], max_cases=2,
                                  policy=bench.QUICK_POLICY))
    by_algo = {}
    for r in report["results"]:
        by_algo.setdefault(r["algo"], []).append(r)
    assert all(r["status"] == "ok" and r["median_s"] > 0 for r in by_algo["direct"])
    assert all(r["status"] == "verify-failed" and "median_s" not in r for r in by_algo["im2col"])
    assert report["failures"] == 2
    assert "verify-failed" in bench.table(report)


def test_unsupported_pools_are_reported(fake_backend):
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[],
                                  filter="avg_pool2d:base", policy=bench.QUICK_POLICY))
    (row,) = [r for r in report["results"] if r["case"] == "avg_pool2d:base"]
    assert row["status"] == "unsupported" and "avg_pool" in row["error"]
    assert report["failures"] == 0


def test_algo_all_and_algos_a_backend_lacks(fake_backend):
    labels = [r.label for r in bench.fastconv_runners("cpu", ["fake"], ["all"])]
    assert labels == ["fake:direct", "fake:im2col", "fake:auto", "fake:pools"]
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], algos=["depthwise", "auto"],
                                  peers=[], filter="conv2d:base", policy=bench.QUICK_POLICY))
    rows = {r["algo"]: r for r in report["results"]}
    assert rows["depthwise"]["status"] == "unsupported" and "algo='depthwise'" in rows["depthwise"]["error"]
    assert rows["auto"]["status"] == "verify-failed" or rows["auto"]["impl"] == "fake:conv:direct"


def test_a_failing_support_check_is_reported_not_raised(fake_backend, monkeypatch):
    def boom(spec, backend, algo="auto"):
        raise RuntimeError("probe crashed")
    monkeypatch.setattr(_dispatch, "candidates", boom)
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[],
                                  filter="conv2d:base", policy=bench.QUICK_POLICY))
    assert all(r["status"] == "unsupported" and "probe crashed" in r["error"] for r in report["results"])


@pytest.mark.skipif(not has("torch"), reason="torch is not installed")
def test_torch_peer_asymmetric_padding_is_verified():
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], filter="padding=asym",
                                  policy=bench.QUICK_POLICY))
    peer = [r for r in report["results"] if r["backend"] == "torch"]
    assert len(peer) == 2 and all(r["status"] == "ok" for r in peer)   # conv2d and conv1d


def _off_runner(kind, ref, factor):
    """A runner of ``kind`` that returns the oracle's answer plus ``factor`` x the tolerance."""
    class Off(bench.Runner):
        def function(self, case):
            return lambda *a: ref.ref.astype(np.float64) + factor * ref.tol.reshape(ref.ref.shape)
    r = Off()
    r.kind, r.name, r.algo = kind, "off", "x"
    return r


def test_loose_check_is_for_peers_only():
    case = next(c for c in bench.build_cases("quick", "cpu") if c.name == "conv2d:base")
    ref = bench.Reference(case)
    assert bench.verify(case, _off_runner("peer", ref, 2), ref) == "loose"
    with pytest.raises(AssertionError):
        bench.verify(case, _off_runner("fastconv", ref, 2), ref)


def test_fp16_accumulate_allowance_is_for_float16_peers_only():
    for dtype in ("float16", "float32"):
        case = next(c for c in bench.build_cases("quick", "cpu", dtype=dtype) if c.name == "conv2d:base")
        ref = bench.Reference(case)
        assert bench.verify(case, _off_runner("peer", ref, 2), ref) == "loose"
        if dtype == "float16":
            assert bench.verify(case, _off_runner("peer", ref, 100), ref) == "fp16-accumulate"
        else:
            with pytest.raises(AssertionError):
                bench.verify(case, _off_runner("peer", ref, 100), ref)
        with pytest.raises(AssertionError):
            bench.verify(case, _off_runner("fastconv", ref, 100), ref)


def test_float16_cases_are_verified_with_the_float16_tolerance():
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[], dtype="float16",
                                  filter=":base", policy=bench.QUICK_POLICY))
    assert report["settings"]["dtype"] == "float16" and report["settings"]["accumulate"] == "float32"
    assert {c["dtype"] for c in report["cases"]} == {"float16"}
    assert len(report["results"]) >= 4 and report["failures"] == 0
    assert all(r["status"] == "ok" and r["verified"] == "strict" for r in report["results"])


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------
def test_cpu_runner_synchronises_inside_the_timed_call(monkeypatch):
    events = []
    clock = iter(range(100))
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: float(next(clock)))

    class Synced(bench.Runner):
        def sync(self):
            events.append("sync")
    t = Synced().sample(lambda: events.append("call"), 1)
    assert events == ["sync", "call", "sync"]     # the second sync happens before the clock stops
    assert t == [1.0]


def test_measure_warms_up_then_repeats():
    calls = []
    policy = bench.Policy(warmup=2, min_repeat=4, max_repeat=6, min_time=0.0, max_time=1.0, round_calls=2)
    m = bench.measure(lambda: calls.append(1), policy, lambda fn, n: [fn() or 0.001 for _ in range(n)])
    assert len(calls) == 2 + 4 and len(m["times_s"]) == 4      # steady: stops at min_repeat, in rounds of 2
    assert bench.summarise(m["times_s"])["median_s"] == 0.001


def test_measure_pauses_before_the_warm_up_and_before_timing(monkeypatch):
    slept, calls = [], []
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: (slept.append(s), calls.append("sleep")))
    policy = bench.Policy(warmup=1, min_repeat=2, max_repeat=2, min_time=0.0, max_time=1.0, settle_s=0.3)
    bench.measure(lambda: calls.append("call"), policy, lambda fn, n: [fn() or 0.001 for _ in range(n)])
    assert slept == [0.3, 0.3] and calls == ["sleep", "call", "sleep", "call", "call"]


def test_summarise_and_quartiles():
    s = bench.summarise([4.0, 1.0, 3.0, 2.0, 5.0])
    # exclusive method on 1..5: positions (n + 1) / 4 = 1.5 and 4.5
    assert (s["median_s"], s["min_s"], s["q1_s"], s["q3_s"], s["rounds"]) == (3.0, 1.0, 1.5, 4.5, 5)
    assert bench.summarise([2.0])["q1_s"] == bench.summarise([2.0])["q3_s"] == 2.0
    assert bench.quartiles([0.5, 2.0], "inclusive") == [0.875, 1.25, 1.625]     # linear, within the range
    assert bench.quartiles([]) == [None, None, None]


# ---------------------------------------------------------------------------------------------------
# The CPU layer suite end to end
# ---------------------------------------------------------------------------------------------------
def test_cpu_layers_suite_end_to_end(monkeypatch, tmp_path):
    write_cpu_tables(tmp_path)
    slept = []
    monkeypatch.setattr(bench.timing.time, "sleep", slept.append)
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)
    report = _quiet(bench.Options(suite="cpu-layers", device="cpu", backends=["numpy"], shapes=str(tmp_path),
                                  policy=policy))
    st = report["settings"]
    assert st["suite"] == "cpu-layers" and st["policy"]["settle_s"] == 0.3 and st["shapes"] == str(tmp_path)
    assert st["table_batch"] == {"resnet50": 8, "mobilenet_v1_dw": 8, "pools": 16}
    assert len(report["machine"]["loadavg_start"]) == 3 and len(report["machine"]["loadavg_end"]) == 3
    fc = [r for r in report["results"] if r["kind"] == "fastconv"]
    assert {r["algo"] for r in fc if r["case"] == "resnet50/c3"} == {"direct", "auto"}   # every algo and auto
    assert all(r["status"] == "ok" and r["verified"] == "strict" for r in fc) and report["failures"] == 0
    timed = [r for r in report["results"] if r["status"] == "ok"]
    assert len(slept) == 2 * len(timed) and set(slept) == {0.3}        # a pause before each side, twice
    assert {e["table"] for e in report["summary"]} == {"resnet50", "mobilenet_v1_dw", "pools"}
    assert all(e["target"] is None and e["met"] is None for e in report["summary"])
    if not has("torch"):
        return
    for r in fc:
        peer = next(p for p in report["results"] if p["case"] == r["case"] and p["backend"] == "torch")
        assert r["ratio_to_best_peer"] == pytest.approx(peer["median_s"] / r["median_s"])
        assert r["ratio_iqr"] == pytest.approx([peer["q1_s"] / r["q3_s"], peer["q3_s"] / r["q1_s"]])
        assert r["ratio_iqr"][0] <= r["ratio_to_best_peer"] <= r["ratio_iqr"][1]
    e = next(e for e in report["summary"] if e["table"] == "resnet50" and e["runner"] == "numpy:auto")
    ratios = sorted(r["ratio_to_best_peer"] for r in fc if r["case"].startswith("resnet50/") and r["algo"] == "auto")
    assert e["timed"] == len(ratios) == 4 and e["median"] == pytest.approx((ratios[1] + ratios[2]) / 2)
    assert ratios[0] <= e["q1"] <= e["median"] <= e["q3"] <= ratios[-1]
