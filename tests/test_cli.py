"""The ``fastconv`` command: info, bench and summary from the command line (the engine behind bench is
tested in tests/bench/).

Fast by construction: the bench runs use the NumPy oracle backend (nothing to compile) and a handful of
cases (the hidden ``--max-cases``); nothing here asserts a speed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import _dispatch, bench, cli

from .bench.fakes import GOALS, has, synthetic_report, write_cpu_tables, write_tables

REPO = Path(__file__).resolve().parents[1]


def _run_cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastconv.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


# ---------------------------------------------------------------------------------------------------
# fastconv info
# ---------------------------------------------------------------------------------------------------
def test_info_runs_and_names_every_backend():
    proc = _run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for name, b in _dispatch.backends().items():
        assert name in proc.stdout
        if not b["available"]:
            assert b["reason"] in proc.stdout       # why a backend is unavailable is shown
    for word in ("caches:", "numba", "cuda-emu", "versions:", "CPU:"):
        assert word in proc.stdout
    for impl in _dispatch.backend_module("numpy").implementations():
        assert impl.name in proc.stdout             # implementations by their dispatch names


def test_info_json():
    data = cli.info()
    assert set(data["backends"]) == set(_dispatch.BACKENDS)
    assert set(data["caches"]) == {"numba", "cuda-emu", "cupy", "autotune-cuda"}
    assert {"numpy", "numba", "cupy", "torch"} <= set(data["versions"])
    assert data["backends"]["numpy"]["implementations"] == [
        i.name for i in _dispatch.backend_module("numpy").implementations()]
    json.dumps(data)


def test_info_shows_where_the_shapes_come_from(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCONV_SHAPES", raising=False)
    assert cli.info()["shapes"] == str(REPO / "fastconv" / "bench" / "shapes")
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    assert cli.info()["shapes"] == str(tmp_path)


def test_info_reports_emulator_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_EMU_CACHE", str(tmp_path))
    assert cli.cache_paths()["cuda-emu"] == str(tmp_path)


def test_info_reports_the_autotune_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", str(tmp_path / "t.json"))
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    assert cli.cache_paths()["autotune-cuda"] == str(tmp_path / "t.json")
    monkeypatch.setenv("FASTCONV_AUTOTUNE_CACHE", "")
    monkeypatch.setenv("FASTCONV_AUTOTUNE", "0")
    assert cli.cache_paths()["autotune-cuda"].startswith("memory only") and "measuring off" in \
        cli.cache_paths()["autotune-cuda"]


# ---------------------------------------------------------------------------------------------------
# fastconv bench, end to end (tiny)
# ---------------------------------------------------------------------------------------------------
def test_bench_quick_writes_json_and_png(tmp_path):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    # conv1d: the oracle's cheapest convolutions, so that even a busy machine times min_repeat calls of each
    proc = _run_cli("bench", "--quick", "--backend", "numpy", "--filter", "conv1d", "--max-cases", "3",
                    "--json", str(js), "--plot", str(png))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[3/3]" in proc.stderr                     # progress lines
    assert "GFLOP/s" in proc.stdout                   # the table
    report = json.loads(js.read_text())
    assert report["schema"] == bench.SCHEMA
    assert {"machine", "versions", "settings", "peak", "runners", "cases", "results", "failures",
            "wall_s"} <= set(report)
    assert {"date", "cpu_model", "cpu_cores", "gpu"} <= set(report["machine"])
    assert {"numpy", "numba", "fastconv"} <= set(report["versions"])
    assert len(report["cases"]) == 3 and report["failures"] == 0
    for c in report["cases"]:
        assert {"name", "op", "input_shape", "kwargs", "sweeps", "flops", "bytes", "metric", "verify_n"} <= set(c)
    rows = [r for r in report["results"] if r["backend"] == "numpy"]
    assert len(rows) == 3
    for r in rows:
        assert r["status"] == "ok"
        assert {"median_s", "min_s", "rounds", "throughput", "unit", "peak_fraction",
                "ratio_to_best_peer", "first_call_s"} <= set(r)
        assert r["median_s"] > 0 and r["rounds"] >= bench.QUICK_POLICY.min_repeat
    if has("torch"):
        assert any(r["backend"] == "torch" and r["status"] == "ok" for r in report["results"])
        assert all(r["ratio_to_best_peer"] for r in rows)
    if has("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "plot skipped: matplotlib is not installed" in proc.stdout


def test_bench_gpu_without_gpu_says_why(capsys):
    if bench.default_device() == "gpu":
        pytest.skip("a GPU backend is usable here")
    rc = cli.main(["bench", "--device", "gpu", "--no-json", "--no-plot", "--max-cases", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no fastconv backend can run on device 'gpu'" in err
    assert _dispatch.availability("cuda") in err


def test_bench_rejects_unknown_backend_and_mixed_devices():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "nope"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "numba", "--backend", "cuda"])


def test_cli_summary_and_markdown_of_saved_reports(tmp_path):
    js, md, goals = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "goals.json"
    bench.write_json(synthetic_report(), str(js))
    goals.write_text(json.dumps(GOALS))
    proc = _run_cli("summary", str(js), str(js), "--markdown", str(md), "--targets", str(goals))
    assert proc.returncode == 0, proc.stderr
    assert "resnet50 (N=32, float16) cuda:auto: geomean 1.00x" in proc.stdout
    assert "target geomean >= 1x torch-cuda, no layer < 0.7x: NOT met" in proc.stdout
    assert md.read_text().count("### NVIDIA H100") == 2 and "| target | met |" in md.read_text()
    plain = _run_cli("summary", str(js))                              # no goals: ratios, no verdict
    assert plain.returncode == 0, plain.stderr
    assert "resnet50 (N=32, float16) cuda:auto: geomean 1.00x" in plain.stdout and "target" not in plain.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert _run_cli("summary", str(bad)).returncode == 2
    assert _run_cli("summary", str(js), "--targets", str(bad.with_name("missing.json"))).returncode == 2


def test_cli_bench_float16_writes_summary_and_markdown(tmp_path, monkeypatch):
    write_tables(tmp_path)
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    proc = _run_cli("bench", "--suite", "layers", "--backend", "numpy", "--dtype", "float16", "--no-peers",
                    "--table-batch", "resnet50=2,pools=3", "--json", str(js), "--no-plot", "--markdown", str(md))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(js.read_text())
    assert report["settings"]["dtype"] == "float16"
    assert report["settings"]["table_batch"] == {"resnet50": 2, "pools": 3}
    assert {c["name"]: c["input_shape"][0] for c in report["cases"]} == {"resnet50/l1": 2, "pools/mp": 3,
                                                                          "extra/e1": 1}
    assert {e["table"] for e in report["summary"]} == {"resnet50", "pools", "extra"}
    assert "per table:" in proc.stdout and md.read_text().startswith("### ")
    assert report["settings"]["targets"] is None and "| target |" not in md.read_text()


def test_cli_bench_layers_with_goals_and_a_shapes_directory(tmp_path):
    shapes, goals, js = tmp_path / "shapes", tmp_path / "goals.json", tmp_path / "r.json"
    shapes.mkdir()
    write_tables(shapes)
    goals.write_text(json.dumps(GOALS))
    proc = _run_cli("bench", "--suite", "layers", "--backend", "numpy", "--shapes", str(shapes), "--targets",
                    str(goals), "--table-batch", "resnet50=2", "--json", str(js), "--no-plot")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(js.read_text())
    assert report["settings"]["shapes"] == str(shapes) and report["settings"]["targets"] == GOALS
    (e,) = [e for e in report["summary"] if e["table"] == "resnet50"]
    assert e["target"].startswith("geomean >= 1x") and "target geomean >= 1x" in proc.stdout


def test_cli_cpu_layers_runs_on_the_cpu(tmp_path):
    write_cpu_tables(tmp_path)
    js = tmp_path / "r.json"
    proc = _run_cli("bench", "--suite", "cpu-layers", "--backend", "numpy", "--shapes", str(tmp_path), "--quick",
                    "--filter", "pools/", "--no-peers", "--json", str(js), "--no-plot")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(js.read_text())
    assert report["settings"]["device"] == "cpu" and report["settings"]["policy"]["settle_s"] == 0.3
    assert [c["name"] for c in report["cases"]] == ["pools/mp", "pools/ap"]
    assert {c["input_shape"][0] for c in report["cases"]} == {16}
    assert "load average" in proc.stdout


def test_cli_rejects_bad_new_options():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "quick", "--table-batch", "pools=64"])     # no layer tables in quick
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "layers", "--table-batch", "pools"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dtype", "float64"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--algo", "fastest"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "targets"])                                # goals are --targets FILE now
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "cpu-layers", "--device", "gpu"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--suite", "layers", "--targets", "/nonexistent/goals.json"])
