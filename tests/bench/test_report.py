"""fastconv.bench's reports: ratios per row, the per-table summary with and without goals, the goals file,
Markdown, JSON and the plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastconv import bench

from .fakes import GOALS, has, synthetic_report

REPO_GOALS = Path(__file__).resolve().parents[2] / "benchmarks" / "targets.json"


def _entries(targets=None):
    return {(e["table"], e["layer_subset"], e["runner"]): e
            for e in bench.table_summary(synthetic_report(), targets)}


def test_table_summary_from_a_synthetic_report():
    entries = _entries(GOALS)
    assert set(entries) == {("resnet50", None, "cuda:direct"), ("resnet50", None, "cuda:auto"),
                            ("resnet50", None, "cuda:depthwise"), ("mobilenet_v1_dw", None, "cuda:direct"),
                            ("mobilenet_v1_dw", "depthwise", "cuda:direct"), ("mobilenet_v1_dw", None, "cuda:auto"),
                            ("mobilenet_v1_dw", "depthwise", "cuda:auto"), ("pools", None, "cuda:pools")}
    e = entries[("resnet50", None, "cuda:auto")]
    assert e["geomean"] == pytest.approx(1.0) and (e["min"], e["min_layer"]) == (0.5, "resnet50/b")
    assert e["timed"] == e["layers"] == 2 and e["batch"] == [32] and e["dtype"] == "float16"
    assert e["median_peak_fraction"] == pytest.approx(0.3) and e["peer_median_peak_fraction"] == 0.5
    # ratios 0.5 and 2.0: median 1.25, quartiles at a quarter and three quarters of the way between them
    assert (e["median"], e["q1"], e["q3"]) == pytest.approx((1.25, 0.875, 1.625))
    assert e["met"] is False and "no layer < 0.7x" in e["target"]            # geomean 1.0 but a layer at 0.5
    dw = entries[("resnet50", None, "cuda:depthwise")]
    assert (dw["timed"], dw["unsupported"], dw["geomean"], dw["met"]) == (0, 2, None, None)
    assert (dw["median"], dw["q1"], dw["q3"]) == (None, None, None)
    # the depthwise goal is about the depthwise layers only (not the 1x1 in the same table)
    assert entries[("mobilenet_v1_dw", None, "cuda:auto")]["target"] is None
    sub = entries[("mobilenet_v1_dw", "depthwise", "cuda:auto")]
    assert sub["layers"] == 1 and sub["geomean"] == 2.0 and sub["met"] is True
    assert (sub["median"], sub["q1"], sub["q3"]) == (2.0, 2.0, 2.0)
    assert entries[("mobilenet_v1_dw", "depthwise", "cuda:direct")]["met"] is False
    p = entries[("pools", None, "cuda:pools")]
    assert p["geomean"] == pytest.approx(1.5 ** 0.5 * 1.2 ** 0.5) and p["batch"] == [64]
    assert p["median_copy_fraction"] == pytest.approx(0.85) and p["min_copy_fraction"] == 0.8
    assert p["peer_median_copy_fraction"] == pytest.approx(0.55) and p["met"] is True
    text = bench.summary_text(bench.table_summary(synthetic_report(), GOALS))
    assert "NOT met" in text and "mobilenet_v1_dw [depthwise]" in text


def test_without_goals_the_summary_has_ratios_and_no_verdict():
    entries = _entries()
    assert {k[1] for k in entries} == {None}                                 # no subset without a goal about it
    assert len(entries) == 6 and all(e["target"] is None and e["met"] is None for e in entries.values())
    assert entries[("resnet50", None, "cuda:auto")]["geomean"] == pytest.approx(1.0)
    text = bench.summary_text(bench.table_summary(synthetic_report()))
    assert "target" not in text and "median 1.25x (0.88-1.62x)" in text


def test_goals_are_read_from_a_file_and_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTCONV_SHAPES", raising=False)
    path = tmp_path / "goals.json"
    path.write_text(json.dumps(GOALS))
    assert bench.load_targets(str(path)) == GOALS
    repo_goals = bench.load_targets(str(REPO_GOALS))                              # the project's own file is valid
    assert set(repo_goals) <= set(bench.layer_tables()[1])
    for bad, why in (([1], "JSON object"), ({"pools": 1}, "not an object"), ({"pools": {"geomaen": 1}}, "geomaen"),
                     ({"pools": {"geomean": "1"}}, "not a number"), ({"pools": {"layers": "pointwise"}}, "subsets")):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=why):
            bench.load_targets(str(path))
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        bench.load_targets(str(path))


def test_markdown_from_a_synthetic_report():
    md = bench.markdown([synthetic_report()], GOALS)
    for part in ("### NVIDIA H100 80GB HBM3, float16", "driver 580.159.04", "CUDA runtime 13.2",
                 "fp32 FMA peak 66.9 TFLOP/s", "3352 GB/s", "measured copy bandwidth 2900 GB/s", "TF32 off",
                 "| resnet50 (32) | `cuda:auto` | 2/2 | 1.00x | 0.50x (b) | 1.25x (0.88-1.62x) |", "| no |",
                 "| pools (64) | `cuda:pools` | 2/2 |", "85% (80%) / 55%", "mobilenet_v1_dw [depthwise] (32)",
                 "| target | met |"):
        assert part in md, part
    assert md.count("\n| ") == 1 + 8                     # the header and one row per summary entry
    plain = bench.markdown([synthetic_report()])
    assert "| target | met |" not in plain and "| no |" not in plain and "[depthwise]" not in plain
    assert plain.count("\n| ") == 1 + 6 and "| resnet50 (32) | `cuda:auto` | 2/2 | 1.00x | 0.50x (b) |" in plain


def test_ratio_to_the_best_peer_and_its_interquartile_range():
    case = next(c for c in bench.build_cases("quick", "cpu") if c.name == "conv2d:base")
    spec = bench.case_spec(case)

    def row(kind, backend, median, q1, q3):
        return {"kind": kind, "backend": backend, "status": "ok", "median_s": median, "q1_s": q1, "q3_s": q3}
    rows = [row("fastconv", "a", 1.0, 0.8, 1.25), row("peer", "p", 2.0, 1.5, 3.0), row("peer", "slow", 4.0, 3.0, 5.0),
            {"kind": "fastconv", "backend": "b", "status": "unsupported"}]
    bench.report.add_throughput(case, spec, rows, None, 1)
    assert rows[0]["ratio_to_best_peer"] == 2.0                      # the faster peer is the reference
    assert rows[0]["ratio_iqr"] == pytest.approx([1.5 / 1.25, 3.0 / 0.8])
    assert rows[0]["throughput"] == pytest.approx(spec.flops() / 1e9) and rows[0]["unit"] == "GFLOP/s"
    assert rows[3]["ratio_to_best_peer"] is None and rows[3]["ratio_iqr"] is None


def test_json_is_written_whole_with_non_finite_numbers_as_null(tmp_path):
    path = tmp_path / "sub" / "r.json"
    rep = dict(synthetic_report(), wall_s=float("nan"))
    bench.write_json(rep, str(path))
    back = json.loads(path.read_text())
    assert back["wall_s"] is None and back["results"] == rep["results"]
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]     # no temporary file left behind


@pytest.mark.skipif(not has("matplotlib"), reason="matplotlib is not installed")
def test_plot_with_layers_and_a_missing_sweep(tmp_path):
    report = bench.run(bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[],
                                     filter="max_pool2d:", policy=bench.QUICK_POLICY), log=lambda s: None)
    layer = dict(report["cases"][0], name="net/layer", source="layers:net", sweeps={})
    report["cases"].append(layer)
    report["results"].append(dict(report["results"][0], case="net/layer", ratio_to_best_peer=1.5))
    assert bench.plot(report, str(tmp_path / "p.png")) is None
    assert (tmp_path / "p.png").stat().st_size > 1000
    empty = dict(report, cases=[])
    assert bench.plot(empty, str(tmp_path / "e.png")) == "no sweep or layer cases to plot"
