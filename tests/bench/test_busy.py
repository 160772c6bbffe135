"""--busy-cores: the spinning children are running while a run is timed and are stopped however it ends;
the report, its Markdown and the console say so. The CPU's ISA in the report. Goals over several tables and
about one op group; a busy run compared with a quiet one."""
from __future__ import annotations

import copy
import os
import time

import pytest

from fastconv import bench, cli
from fastconv.bench import busy, machine, report

from .fakes import synthetic_report

POLICY = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)
TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@TWO_CORES
def test_children_spin_inside_the_block_and_are_gone_after_it():
    with busy.busy_cores(1) as b:
        (pid,) = b.pids
        assert _alive(pid) and b.cores == [sorted(os.sched_getaffinity(0))[-1]]
        assert os.sched_getaffinity(pid) == {b.cores[0]}                 # pinned to its core
        time.sleep(0.2)
    assert not _alive(pid) and b.procs[0].returncode is not None       # stopped and reaped
    rec = b.record()
    assert rec["cores"] == 1 and rec["pinned"] == b.cores and rec["seconds"] >= 0.2
    assert len(rec["held"]) == 1 and rec["held"][0] is not None and rec["held"][0] > 0   # it used CPU time


@TWO_CORES
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_children_are_stopped_when_the_block_raises(error):
    with pytest.raises(error):
        with busy.busy_cores(1) as b:
            pids = b.pids
            raise error()
    assert pids and not any(_alive(p) for p in pids)


@TWO_CORES
def test_a_child_whose_parent_dies_exits_on_its_own(tmp_path):
    """A parent killed without a chance to stop it (SIGKILL) leaves no spinner behind."""
    import signal
    import subprocess
    import sys
    script = ("import sys, time\nfrom fastconv.bench import busy\nb = busy.Busy(1)\nb.start()\n"
              "print(b.pids[0], flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:                       # a child that outlived its parent is not left spinning after the test
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_busy_cores_refuses_what_it_cannot_do():
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError, match="busy_cores must be"):
            with busy.busy_cores(n):
                pass
    usable = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="no core of its own"):
        with busy.busy_cores(usable):
            pass
    with busy.busy_cores(0) as b:          # nothing started
        assert b.pids == []


@TWO_CORES
def test_a_busy_run_records_it_and_stops_its_children(monkeypatch):
    started = []
    start = busy.Busy.start
    monkeypatch.setattr(busy.Busy, "start", lambda self: (start(self), started.extend(self.pids)))
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: None)
    rep = bench.run(bench.Options(suite="cpu-tiny", device="cpu", backends=["numpy"], peers=[],
                                  filter="tiny_calls/conv", policy=POLICY, busy_cores=1), log=lambda s: None)
    assert started and not any(_alive(p) for p in started)
    b = rep["settings"]["busy"]
    assert b["cores"] == 1 and b["pinned"] == [sorted(os.sched_getaffinity(0))[-1]] and len(b["held"]) == 1
    md = bench.markdown([rep])
    assert ", busy: 1 core, " in md.splitlines()[0] and "- BUSY machine: 1 child process kept 1 core busy" in md
    assert rep["machine"]["cpu_isa"] == machine.cpu_isa()["isa"]


@TWO_CORES
def test_a_run_that_fails_stops_its_children(monkeypatch):
    started = []
    start = busy.Busy.start
    monkeypatch.setattr(busy.Busy, "start", lambda self: (start(self), started.extend(self.pids)))

    def boom(*a, **k):
        raise RuntimeError("a case crashed the run")
    monkeypatch.setattr(bench.engine, "_run_case", boom)
    with pytest.raises(RuntimeError, match="crashed the run"):
        bench.run(bench.Options(suite="cpu-tiny", device="cpu", backends=["numpy"], peers=[], max_cases=1,
                                policy=POLICY, busy_cores=1), log=lambda s: None)
    assert started and not any(_alive(p) for p in started)


def test_a_quiet_run_says_so(monkeypatch):
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: None)
    rep = bench.run(bench.Options(suite="cpu-tiny", device="cpu", backends=["numpy"], peers=[],
                                  filter="tiny_calls/conv", policy=POLICY), log=lambda s: None)
    assert rep["settings"]["busy"]["cores"] == 0
    md = bench.markdown([rep])
    assert "busy" not in md.splitlines()[0] and "- quiet run: no busy process started" in md
    assert isinstance(rep["machine"]["loadavg_max"], float) and " after a case, on " in md


def test_cli_busy_cores_is_documented_and_checked(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "--busy-cores N" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--suite", "cpu-tiny", "--busy-cores", "-1", "--no-json", "--no-plot"])
    assert e.value.code == 2 and "--busy-cores must be 0 or more" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The ISA
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, isa, kept", [
    ("fpu sse4_2 avx fma avx2 avx512f avx512bw avx512vl", "AVX-512", ["avx512f", "avx512bw", "avx512vl", "avx2",
                                                                    "fma", "avx", "sse4_2"]),
    ("fpu sse4_1 sse4_2 avx sse4a fma avx2", "AVX2", ["avx2", "fma", "avx", "sse4_2"]),
    ("fpu sse4_2 avx", "AVX", ["avx", "sse4_2"]),
    ("fpu neon asimd", None, []),
])
def test_cpu_isa_from_cpuinfo(tmp_path, flags, isa, kept):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: x\n")
    assert machine.cpu_isa(str(p)) == {"isa": isa, "flags": kept}
    assert machine.cpu_isa(str(tmp_path / "missing")) == {"isa": None, "flags": []}


def test_blas_kernels_are_the_ones_openblas_reports():
    """The kernel family in a report is OpenBLAS's own answer, checked against threadpoolctl's, which asks
    the same library by its own means (skipped where either has nothing to say)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy   # noqa: F401
    told = [d.get("architecture") for d in threadpoolctl.threadpool_info() if d.get("internal_api") == "openblas"]
    if not told:
        pytest.skip("NumPy's BLAS is not OpenBLAS here")
    assert machine.blas_kernels() == told[0]
    assert machine.machine_info("cpu")["blas_kernels"] == told[0]


def test_the_coretype_variable_is_recorded_as_set(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert machine.machine_info("cpu")["blas_coretype_env"] == "Haswell"
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert machine.machine_info("cpu")["blas_coretype_env"] is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Has well")
    with pytest.raises(ValueError, match="OPENBLAS_CORETYPE"):
        machine.machine_info("cpu")


@pytest.mark.parametrize("core, env, isa, expect", [
    ("Haswell", "Haswell", "AVX-512",
     "; NumPy's OpenBLAS: Haswell kernels (AVX2), as OPENBLAS_CORETYPE=Haswell asks, narrower than this CPU's "
     "AVX-512 (OPENBLAS_CORETYPE, set or unset before NumPy is imported, chooses others: README, Threads on the "
     "CPU)"),
    ("Haswell", None, "AVX2", "; NumPy's OpenBLAS: Haswell kernels (AVX2)"),
    ("SkylakeX", None, "AVX-512", "; NumPy's OpenBLAS: SkylakeX kernels (AVX-512)"),
    ("Neoverse", None, None, "; NumPy's OpenBLAS: Neoverse kernels"),
    (None, None, "AVX-512", ""),
])
def test_the_cpu_line_names_the_blas_kernels(core, env, isa, expect):
    rep = synthetic_report()
    rep["machine"].update(cpu_isa=isa or "AVX2", cpu_flags=["avx2"], cpu_model="Some CPU", cpu_cores_usable=2,
                          gpu=None, blas_kernels=core, blas_coretype_env=env)
    line = next(ln for ln in bench.markdown([rep]).splitlines() if ln.startswith("- CPU: "))
    assert line == f"- CPU: Some CPU, {rep['machine']['cpu_isa']} (avx2), 2 usable cores{expect}"


# ---------------------------------------------------------------------------------------------------
# Goals over several tables, and about one op group
# ---------------------------------------------------------------------------------------------------
def test_a_goal_over_several_tables_is_judged_on_their_layers_together():
    rep = synthetic_report()
    goals = {"both": {"tables": ["resnet50", "mobilenet_v1_dw"], "geomean": 1.1, "min": 0.3},
             "grads": {"tables": ["resnet50"], "op": "conv_input", "geomean": 1.0}}
    entries = {(e["table"], e["runner"]): e for e in bench.table_summary(rep, bench.check_targets(goals))}
    # ratios by hand (fakes.synthetic_report): direct 0.5, 2, 0.25, 4 -> geomean 1, min 0.25;
    # auto 2, 0.5, 2, 1 -> geomean 2 ** 0.25 = 1.19, min 0.5
    d, a = entries[("both", "cuda:direct")], entries[("both", "cuda:auto")]
    assert (d["layers"], d["geomean"], d["min"], d["met"]) == (4, pytest.approx(1.0), 0.25, False)
    assert (a["geomean"], a["min"], a["met"]) == (pytest.approx(2 ** 0.25), 0.5, True)
    assert entries[("resnet50", "cuda:direct")]["target"] is None        # the tables themselves: no goal
    assert not any(t == "grads" for t, _ in entries)      # no conv_input rows: no entry for that goal
    assert bench.targets.target_text(goals["grads"], "torch") == "conv_input: geomean >= 1x torch"


def test_goal_keys_are_checked():
    for bad, msg in (({"t": {"tables": "resnet50"}}, "not a list of table names"),
                     ({"t": {"tables": []}}, "not a list of table names"),
                     ({"t": {"op": "convolution"}}, "the op groups are")):
        with pytest.raises(ValueError, match=msg):
            bench.check_targets(bad)
    assert report.goal_for({"t": {"op": "conv_input", "geomean": 1}}, "t", "conv") is None
    assert report.goal_for({"t": {"op": "conv_input", "geomean": 1}}, "t", "conv_input") is not None
    assert report.goal_for({"t": {"geomean": 1}}, "t", "conv_weight") is None
    assert report.goal_for({"t": {"geomean": 1}}, "t", "network") is not None


def test_the_cpu_goals_file_holds_the_goals_of_the_cpu_benchmark():
    path = bench.SHIPPED_SHAPES.parents[2] / "benchmarks" / "targets_cpu.json"
    goals = bench.load_targets(str(path))
    assert goals["cpu_layers"] == {"tables": ["resnet50", "mobilenet_v1_dw"], "geomean": 1.25, "min": 0.8}
    assert goals["pools"] == {"geomean": 3.0, "min": 1.5}
    assert goals["networks"] == {"geomean": 1.25, "min": 1.0}
    assert goals["tiny_calls"] == {"min": 0.5} and goals["lenet_n1"] == {"min": 1.0}
    for op in ("conv_input", "conv_weight"):
        assert goals[f"cpu_layers_{op}"]["op"] == op and goals[f"cpu_layers_{op}"]["geomean"] == 1.0


# ---------------------------------------------------------------------------------------------------
# A busy run against a quiet one
# ---------------------------------------------------------------------------------------------------
def test_busy_comparison():
    quiet = synthetic_report()
    loud = copy.deepcopy(quiet)
    loud["settings"]["busy"] = {"cores": 1, "pinned": [1], "held": [0.97]}
    for r in loud["results"]:
        if r["kind"] == "fastconv" and r["ratio_to_best_peer"] and r["algo"] == "direct":
            r["ratio_to_best_peer"] *= 0.7            # below 0.75x its quiet value: missed
        elif r["kind"] == "fastconv" and r["ratio_to_best_peer"]:
            r["ratio_to_best_peer"] *= 0.8            # within
    rows = bench.report.busy_comparison(quiet, loud)
    assert len(rows) == sum(r["kind"] == "fastconv" and bool(r["ratio_to_best_peer"]) for r in quiet["results"])
    for r in rows:
        assert r["change"] == pytest.approx(0.7 if r["runner"] == "cuda:direct" else 0.8)
        assert r["met"] == (r["runner"] != "cuda:direct")
    md = bench.report.busy_markdown(quiet, loud)
    assert f"{sum(r['met'] for r in rows)} of {len(rows)} rows meet it" in md and "| resnet50/a | `cuda:direct` |" in md
