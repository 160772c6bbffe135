"""fastconv.bench on a noisy machine, with synthetic timers (no test here reads a real speed): the runners
of a case are timed in rotating rounds, until they are steady or the case's budget is spent; noisy rows are
flagged; no geomean is printed from mostly noisy rows; --threads limits the BLAS pools (threadpoolctl) or
says it could not; the console counts the rows verified against the oracle."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import types

import pytest

from fastconv import bench, cli

from .fakes import has, synthetic_report


def _quiet(opts, log=None):
    return bench.run(opts, log=log or (lambda s: None))


def _scripted(log, name, times):
    """A sampler that logs (name, n) and returns the next n of ``times`` (an iterator), calling nothing."""
    def sample(fn, n):
        log.append((name, n))
        return [next(times) for _ in range(n)]
    return sample


def _steady(seed=0, base=1e-3):
    rng = random.Random(seed)
    while True:
        yield base * (1 + 0.01 * rng.random())


def _bursty(seed=0, base=1e-3, every=3):
    """Mostly ``base`` (with 1% jitter), every ``every``-th call 10x slower: a machine busy with other work
    (every=3: a third of the calls, more than the quarter the quartiles ignore, in every round)."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        yield base * (10 if i % every == 0 else 1) * (1 + 0.01 * rng.random())


# ---------------------------------------------------------------------------------------------------
# The schedule and the stopping rule (timing.measure_case)
# ---------------------------------------------------------------------------------------------------
def test_rounds_rotate_the_order_of_the_sides():
    log = []
    sides = [bench.timing.Side(lambda s=s: log.append(s), _scripted(log, s, _steady())) for s in "ABP"]
    policy = bench.Policy(warmup=2, min_repeat=4, max_repeat=4, min_time=0.0, max_time=10.0, round_calls=2)
    out, info = bench.timing.measure_case(sides, policy)
    # first call and warm-up per side (timed apart), then rounds of two calls per side, rotating by one
    assert log == ["A", "A", "B", "B", "P", "P",
                   ("A", 2), ("B", 2), ("P", 2),
                   ("B", 2), ("P", 2), ("A", 2)]
    assert info["rounds"] == 2 and info["stopped"] == "steady"
    assert all(len(o["times_s"]) == 4 and o["first_call_s"] >= 0 and o["error"] is None for o in out)


def test_steady_times_stop_as_soon_as_the_minimum_is_met():
    log = []
    sides = [bench.timing.Side(lambda: None, _scripted(log, s, _steady(i))) for i, s in enumerate("AP")]
    policy = bench.Policy(warmup=1, min_repeat=5, max_repeat=10**6, min_time=0.01, max_time=10.0)
    out, info = bench.timing.measure_case(sides, policy)
    # 2 rounds of 3 calls reach min_repeat 5 and 6 x 2 x ~1 ms >= min_time 0.01 s, far below the budget
    assert (info["stopped"], info["rounds"]) == ("steady", 2) and info["spent_s"] < 0.02
    assert all(not bench.summarise(o["times_s"], policy)["noisy"] for o in out)


def test_noisy_times_run_to_the_budget_and_are_flagged():
    log = []
    sides = [bench.timing.Side(lambda: None, _scripted(log, "A", _steady())),
             bench.timing.Side(lambda: None, _scripted(log, "P", _bursty()))]
    policy = bench.Policy(warmup=1, min_repeat=5, max_repeat=10**6, min_time=0.01, max_time=0.5)
    out, info = bench.timing.measure_case(sides, policy)
    assert info["stopped"] == "budget"
    one_round = 3 * 1.01e-3 + 3 * 10.1e-3                     # the most one round can add
    assert policy.max_time <= info["spent_s"] < policy.max_time + one_round
    assert info["spent_s"] == pytest.approx(sum(sum(o["times_s"]) for o in out))
    a, p = (bench.summarise(o["times_s"], policy) for o in out)
    assert a["rounds"] == p["rounds"] == 3 * info["rounds"]            # interleaved: the same number of calls
    assert not a["noisy"] and a["spread"] < 0.02 and a["max_spread"] == policy.max_spread
    assert p["noisy"] and p["spread"] > policy.max_spread
    # a few outliers are not noise: the median and the quartiles ignore them
    few = [next(t) for t in [_bursty(every=10)] for _ in range(200)]
    assert not bench.summarise(few, policy)["noisy"]


def test_each_switch_of_side_is_followed_by_untimed_rewarm_calls():
    log = []
    sides = [bench.timing.Side(lambda: None, _scripted(log, s, iter([1e-3] * 12))) for s in "AP"]
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0, rewarm=1)
    out, info = bench.timing.measure_case(sides, policy)
    assert log == [("A", 1), ("A", 3), ("P", 1), ("P", 3)]      # one untimed call before each block
    assert all(len(o["times_s"]) == 3 for o in out)            # ... that is not among the timed calls
    assert info["spent_s"] == pytest.approx(8e-3)               # ... but counts in the budget
    (alone,) = [bench.timing.Side(lambda: None, _scripted(log := [], "A", iter([1e-3] * 6)))]
    bench.timing.measure_case([alone], policy)
    assert log == [("A", 3)]                                    # one side never switches: nothing to absorb


def test_the_spread_is_the_precision_of_the_median_not_the_scatter_of_calls():
    policy = bench.Policy(warmup=1, min_repeat=5, max_repeat=50, min_time=0.0, max_time=1.0)
    scattered = [1e-3 * (1 + 0.3 * ((7 * i) % 11) / 10) for i in range(200)]   # calls scattered by ~30%
    q1, med, q3 = bench.quartiles(scattered)
    assert (q3 - q1) / med > 0.1                                  # the calls scatter by more than 10% ...
    assert not bench.summarise(scattered, policy)["noisy"]       # ... but the median of 200 is known
    assert bench.summarise(scattered[:5], policy)["noisy"]       # the median of 5 such calls is not


def test_a_failing_side_is_dropped_and_the_others_timed():
    log = []

    def boom(fn, n):
        raise RuntimeError("lost the device")
    sides = [bench.timing.Side(lambda: None, boom), bench.timing.Side(lambda: None, _scripted(log, "P", _steady()))]
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)
    out, info = bench.timing.measure_case(sides, policy)
    assert isinstance(out[0]["error"], RuntimeError) and out[0]["times_s"] == []
    assert out[1]["error"] is None and len(out[1]["times_s"]) == 3 and log == [("P", 3)]


def test_settle_pauses_before_each_switch_of_side_count_in_the_budget(monkeypatch):
    slept, log = [], []
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: (slept.append(s), log.append("sleep")))
    sides = [bench.timing.Side(lambda s=s: log.append(s), _scripted(log, s, iter([1e-3] * 3))) for s in "AP"]
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0, settle_s=0.25)
    _, info = bench.timing.measure_case(sides, policy)
    assert log == ["sleep", "A", "sleep", "P", "sleep", ("A", 3), "sleep", ("P", 3)]
    assert info["spent_s"] == pytest.approx(6e-3 + 2 * 0.25)     # the two pauses inside the rounds count


# ---------------------------------------------------------------------------------------------------
# A run with a fake backend and a fake peer: the rows' spread and flags, the schedule, the verified count
# ---------------------------------------------------------------------------------------------------
class _Peer(bench.Runner):
    """A peer that computes the oracle's answer; ``sample`` is set per test."""
    kind, name, algo = "peer", "fakepeer", "x"

    def function(self, case):
        return case.function("numpy")


def _with_peer(monkeypatch, peer):
    monkeypatch.setattr(bench.engine, "peer_runners", lambda device, names=None: [peer])


def test_a_run_interleaves_flags_noisy_rows_and_counts_verified(fake_backend, monkeypatch):
    log = []
    streams = {"fake:direct": _steady(), "fakepeer:x": _bursty()}
    monkeypatch.setattr(bench.Runner, "sample",
                        lambda self, fn, n: _scripted(log, self.label, streams[self.label])(fn, n))
    _with_peer(monkeypatch, _Peer())
    policy = bench.Policy(warmup=1, min_repeat=5, max_repeat=10**6, min_time=0.01, max_time=0.2)
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], filter="conv2d:base",
                                  policy=policy))
    rows = {f"{r['backend']}:{r['algo']}": r for r in report["results"]}
    assert rows["fake:im2col"]["status"] == "verify-failed" and "spread" not in rows["fake:im2col"]
    fc, peer = rows["fake:direct"], rows["fakepeer:x"]
    assert not fc["noisy"] and peer["noisy"] and fc["max_spread"] == peer["max_spread"] == 0.1
    # the 95% interval of the median, written out: 1.96 * sqrt(pi/2) * (IQR / 1.349) / sqrt(n) / median
    assert fc["spread"] == pytest.approx(1.96 * math.sqrt(math.pi / 2) * (fc["q3_s"] - fc["q1_s"]) / 1.349
                                         / math.sqrt(fc["rounds"]) / fc["median_s"], rel=1e-4)
    assert fc["ratio_noisy"] is True                      # the ratio is as noisy as its noisier side
    assert fc["ratio_to_best_peer"] == pytest.approx(peer["median_s"] / fc["median_s"])
    (case,) = report["cases"]
    assert case["timing"]["stopped"] == "budget" and fc["rounds"] == peer["rounds"] == 3 * case["timing"]["rounds"]
    # the verified runners only, alternating round by round
    assert log[:4] == [("fake:direct", 3), ("fakepeer:x", 3), ("fakepeer:x", 3), ("fake:direct", 3)]
    assert report["settings"]["policy"]["max_spread"] == 0.1
    table = bench.table(report)
    peer_line = next(line for line in table.splitlines() if "fakepeer" in line)
    assert peer_line.endswith("noisy") and "1 noisy row(s)" in table
    assert bench.verified_text(report).splitlines() == [
        "fastconv: 1/2 verified against the NumPy oracle",
        "  not verified: conv2d:base fake:im2col (verify-failed)",
        "peers: 1/1 verified against the NumPy oracle"]


def test_the_bench_command_prints_the_verified_count(capsys):
    rc = cli.main(["bench", "--quick", "--backend", "numpy", "--no-peers", "--filter", "max_pool1d:base",
                   "--max-cases", "1", "--no-json", "--no-plot"])
    out = capsys.readouterr().out
    assert rc == 0 and "fastconv: 1/1 verified against the NumPy oracle" in out.splitlines()


# ---------------------------------------------------------------------------------------------------
# No geomean from noise
# ---------------------------------------------------------------------------------------------------
def _noisy_report():
    """The synthetic report with cuda:auto's conv ratios noisy on 3 of 4 cases (resnet50's both) and
    cuda:direct's on 2 of 5, on a loaded machine."""
    rep = synthetic_report()
    noisy = {("cuda", "auto"): {"resnet50/a", "resnet50/b", "mobilenet_v1_dw/dw"},
             ("cuda", "direct"): {"resnet50/a", "sweep"}}
    for r in rep["results"]:
        if r["kind"] == "fastconv" and r["status"] == "ok":
            r["ratio_noisy"] = r["case"] in noisy.get((r["backend"], r["algo"]), ())
    rep["machine"].update(loadavg_start=[3.0, 2.0, 1.0], loadavg_end=[2.5, 2.0, 1.0])
    return rep


def test_the_headline_geomean_is_refused_when_most_rows_are_noisy():
    lines = bench.summary(_noisy_report()).splitlines()
    auto = next(line for line in lines if line.startswith("cuda:auto") and " conv " in line)
    assert auto.endswith("no geomean vs best peer: 3 of 4 cases are noisy") and "x" not in auto.split("peer")[1]
    direct = next(line for line in lines if line.startswith("cuda:direct") and " conv " in line)
    by_hand = math.exp(sum(map(math.log, (0.5, 2.0, 0.25, 4.0, 9.0))) / 5)   # noisy rows stay in the average
    assert f"geomean vs best peer {by_hand:.2f}x over 5 cases (min 0.25x, max 9.00x; 2 noisy)" in direct
    assert lines[-1].startswith("noisy: the 95% confidence interval of the row's median") and "load average 3.0 at the start, 2.5 at " \
        "the end, on 16 cores" in lines[-1] and "--threads 1" in lines[-1] and "quiet machine" in lines[-1]
    # the advice leaves out what the run already did, and suggests a longer budget after --quick's
    rep = _noisy_report()
    rep["settings"].update(threads={"requested": 1}, policy=dataclasses.asdict(bench.QUICK_POLICY))
    note = bench.summary(rep).splitlines()[-1]
    assert "--threads" not in note and note.endswith("a quiet machine or a longer budget (a suite without --quick)")
    # half noisy is not most: printed
    rep = _noisy_report()
    next(r for r in rep["results"] if r["case"] == "mobilenet_v1_dw/dw" and r["algo"] == "auto")["ratio_noisy"] = False
    text = bench.summary(rep)
    assert "cuda:auto          conv  geomean vs best peer" in text and "(min 0.50x, max 2.00x; 2 noisy)" in text
    assert "noisy: the" not in text                                        # nothing refused, no note
    assert "no geomean" not in bench.summary(synthetic_report())           # a report without noise flags


def test_the_per_table_summary_and_markdown_refuse_too_and_keep_the_numbers():
    from .fakes import GOALS
    entries = {(e["table"], e["layer_subset"], e["runner"]): e
               for e in bench.table_summary(_noisy_report(), GOALS)}
    e = entries[("resnet50", None, "cuda:auto")]
    assert (e["noisy"], e["timed"]) == (2, 2) and e["refused"] == "2 of 2 layers are noisy"
    assert "load average 3.0 at the start" in e["noise_note"]
    assert e["geomean"] == pytest.approx(1.0) and e["met"] is None          # kept, but not judged
    d = entries[("resnet50", None, "cuda:direct")]
    assert (d["noisy"], d["refused"], d["met"]) == (1, None, False)          # 1 of 2: judged as before
    text = bench.summary_text(bench.table_summary(_noisy_report(), GOALS))
    line = next(t for t in text.splitlines() if t.startswith("resnet50 ") and "cuda:auto" in t)
    assert "no geomean vs torch-cuda, 2/2 layers timed: 2 of 2 layers are noisy" in line and "not judged" in line
    assert "geomean 1.00x" not in line
    notes = [t for t in text.splitlines() if t.startswith("noisy: the")]
    assert len(notes) == 1 and notes[0] == e["noise_note"] and text.endswith(notes[0])     # once, after the lines
    assert "noisy: the" not in bench.summary_text(bench.table_summary(_noisy_report(), GOALS), note=False)
    md = bench.markdown([_noisy_report()], GOALS)
    assert "| resnet50 (32) | `cuda:auto` | 2/2 | none: 2/2 noisy | - | - |" in md and "\nnoisy: the" in md
    assert "rows noisy" not in md                          # the synthetic rows carry no noisy flag of their own
    rep = _noisy_report()
    for r in rep["results"]:
        r["noisy"] = r.get("ratio_noisy") is True
    assert "- the runners of a case timed together in alternating rounds; 5 of 17 rows noisy (the 95% " \
        in bench.markdown([rep])


def test_the_bench_command_prints_the_refusals_and_the_note_once(monkeypatch, capsys):
    rep = _noisy_report()
    rep["summary"] = bench.table_summary(rep)
    for r in rep["results"]:                                # what the table reads of a timed row
        r.update(median_s=1e-3, throughput=1.0, unit="GFLOP/s")
    monkeypatch.setattr(bench, "run", lambda opts: rep)
    assert cli.main(["bench", "--quick", "--no-json", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "no geomean vs best peer: 3 of 4 cases are noisy" in out and "no geomean vs torch-cuda" in out
    assert out.count("noisy: the 95% confidence interval") == 1 and bench.noise_note(rep) in out
    assert bench.noise_note(dict(synthetic_report(), summary=[])) is None


def test_the_summary_command_follows_the_same_rule(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_noisy_report()))
    assert cli.main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    line = next(t for t in out.splitlines() if t.startswith("resnet50 ") and "cuda:auto" in t)
    assert "no geomean vs torch-cuda" in line and "2 of 2 layers are noisy" in line
    assert "none: 2/2 noisy" in out


# ---------------------------------------------------------------------------------------------------
# --threads: numba, torch and the BLAS pools
# ---------------------------------------------------------------------------------------------------
def _blas_threads():
    import threadpoolctl
    return {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}


@pytest.mark.skipif(not has("threadpoolctl"), reason="threadpoolctl is not installed")
def test_threads_limit_the_blas_pools_during_the_timed_calls(fake_backend, monkeypatch):
    import threadpoolctl
    before, seen, limits = _blas_threads(), [], []
    real = threadpoolctl.threadpool_limits
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda **kw: (limits.append(kw), real(**kw))[1])

    class Watching(_Peer):
        def function(self, case):
            oracle = case.function("numpy")
            return lambda *a: (seen.append(_blas_threads()), oracle(*a))[1]

        def sample(self, fn, n):
            return [(fn(), 1e-3)[1] for _ in range(n)]
    _with_peer(monkeypatch, Watching())
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], filter="conv2d:base",
                                  policy=policy, threads=1))
    assert limits == [{"limits": 1, "user_api": "blas"}]
    assert len(seen) == 1 + 1 + 3 and all(s == {1} for s in seen)     # verify, first call, three timed
    blas = report["settings"]["threads"]["blas"]
    assert blas["limited"] is True and blas["reason"] is None
    pools = [p for p in blas["pools"] if p["user_api"] == "blas"]
    assert pools and all(p["num_threads"] == 1 and p["internal_api"] and "version" in p for p in pools)
    assert _blas_threads() == before                                   # put back after the run
    # without --threads nothing is limited, what the pools run with is still recorded
    free = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], filter="conv2d:base",
                                policy=policy))["settings"]["threads"]["blas"]
    assert free["limited"] is False and {p["num_threads"] for p in free["pools"] if p["user_api"] == "blas"} == before


def test_without_threadpoolctl_the_report_says_the_blas_pools_were_not_limited(fake_backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)       # import threadpoolctl raises ImportError
    messages = []
    policy = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["fake"], peers=[], filter="conv2d:base",
                                  policy=policy, threads=1), log=messages.append)
    blas = report["settings"]["threads"]["blas"]
    assert blas["limited"] is False and blas["pools"] is None and "threadpoolctl is not installed" in blas["reason"]
    note = [m for m in messages if m.startswith("note: --threads 1")]
    assert note == ["note: --threads 1 does not limit the BLAS pools: " + blas["reason"]]    # no numba, no torch


@pytest.mark.skipif(not (has("numba") and has("torch")), reason="needs numba and torch")
def test_limit_threads_sets_numba_and_torch_and_puts_them_back(monkeypatch):
    import numba
    import torch
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    runners = [types.SimpleNamespace(name="numba"), types.SimpleNamespace(name="torch")]
    before = (numba.get_num_threads(), torch.get_num_threads())
    with bench.runners.limit_threads(1, runners) as threads:
        assert (numba.get_num_threads(), torch.get_num_threads()) == (1, 1)
        assert (threads["numba"], threads["torch"], threads["requested"]) == (1, 1, 1)
        note = bench.runners.threads_note(threads)
        assert "does not limit the BLAS pools: threadpoolctl is not installed" in note
        assert note.endswith("(numba and torch run with 1)")
    assert (numba.get_num_threads(), torch.get_num_threads()) == before
