"""fastconv.bench's cases: the sweeps, the shape tables (shipped, --shapes, $FASTCONV_SHAPES), per-table
batches and the suites that put them together."""
from __future__ import annotations

import csv
import filecmp
import re
from pathlib import Path

import numpy as np
import pytest

from fastconv import bench

from .fakes import write_cpu_tables, write_tables

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "fastconv" / "bench" / "shapes"


def _sweep_values(cases, op, sweep):
    return {c.sweeps[sweep] for c in cases if c.op == op and sweep in c.sweeps}


@pytest.mark.parametrize("device", bench.DEVICES)
def test_sweep_covers_every_parameter(device):
    cases = bench.build_cases("sweep", device)
    assert {c.op for c in cases} == set(bench.CONV_OPS + bench.POOL_OPS)
    for op in bench.CONV_OPS:
        assert _sweep_values(cases, op, "stride") == {"1", "2", "3"}
        assert _sweep_values(cases, op, "padding") == {"0", "1", "2", "same", "asym"}
        assert _sweep_values(cases, op, "dilation") == {"1", "2", "3"}
        assert _sweep_values(cases, op, "kernel") == {"1", "3", "5", "7"}
        assert {"1", "depthwise"} <= _sweep_values(cases, op, "groups")
    assert len(_sweep_values(cases, "conv2d", "batch")) == 3
    assert _sweep_values(cases, "max_pool2d", "dilation") == {"1", "2", "3"}
    assert len({c.name for c in cases}) == len(cases)
    for c in cases:
        bench.case_spec(c)                      # every case is a valid call


@pytest.mark.parametrize("device", bench.DEVICES)
def test_quick_and_full_cases_are_valid(device):
    quick = bench.build_cases("quick", device)
    assert {c.op for c in quick} == set(bench.CONV_OPS + bench.POOL_OPS)
    for sweep in bench.PLOT_SWEEPS:
        assert len(_sweep_values(quick, "conv2d", sweep)) >= 3
    full = bench.build_cases("full", device)
    assert any(c.source.startswith("layers") for c in full)
    for c in quick + full:
        bench.case_spec(c)


def test_shapes_come_from_the_option_then_the_variable_then_the_package(monkeypatch, tmp_path):
    env, opt = tmp_path / "env", tmp_path / "opt"
    env.mkdir()
    opt.mkdir()
    (env / "tiny.csv").write_text("name,C,H,W,K,R,S,stride,pad,dilation,groups\nl1,4,8,8,4,3,3,1,1,1,1\n")
    (env / "p.csv").write_text("name,C,H,W,kind,kernel,stride,pad\nmp,4,8,8,max,2,2,0\n")
    write_tables(opt)
    monkeypatch.setenv("FASTCONV_SHAPES", str(env))
    names = {c.name: c for c in bench.layer_cases("cpu")}
    assert set(names) == {"tiny/l1", "p/mp"}
    assert names["tiny/l1"].weight == (4, 4, 3, 3) and names["p/mp"].op == "max_pool2d"
    assert {c.name for c in bench.layer_cases("cpu", shapes=str(opt))} == {"resnet50/l1", "pools/mp", "extra/e1"}
    assert bench.shapes_dir(str(opt)) == opt                       # --shapes wins over $FASTCONV_SHAPES

    monkeypatch.delenv("FASTCONV_SHAPES")
    assert bench.shapes_dir() == SHIPPED                           # an installed package has its tables
    src, tables = bench.layer_tables()
    assert src == str(SHIPPED) and set(tables) == {p.stem for p in SHIPPED.glob("*.csv")}
    layers = bench.layer_cases("cpu")
    assert {c.op for c in layers} == {"conv2d", "max_pool2d", "avg_pool2d"}
    assert any(c.name == "resnet50/conv1" for c in bench.layer_cases("gpu"))
    for c in layers:
        bench.case_spec(c)


def test_missing_shapes_are_an_error_that_says_where_to_look(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="FASTCONV_SHAPES"):
        bench.build_cases("layers", "gpu", shapes=str(tmp_path / "missing"))
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="FASTCONV_SHAPES=.*is not a directory"):   # parsed in _config
        bench.build_cases("layers", "gpu")
    with pytest.raises(FileNotFoundError, match=r"no \*\.csv"):
        bench.build_cases("layers", "gpu", shapes=str(tmp_path))
    write_tables(tmp_path)                                          # no mobilenet_v1_dw table
    with pytest.raises(FileNotFoundError, match="mobilenet_v1_dw.csv"):
        bench.build_cases("cpu-layers", "cpu", shapes=str(tmp_path))


def test_the_shipped_tables_are_the_shared_ones():
    shared = REPO.parent / "shared" / "shapes"
    if not shared.is_dir():
        pytest.skip("no shared/shapes beside this checkout")
    names = sorted(p.name for p in shared.glob("*.csv"))
    assert names == sorted(p.name for p in SHIPPED.glob("*.csv"))
    match, mismatch, errors = filecmp.cmpfiles(shared, SHIPPED, names + ["README.md"], shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_per_table_batches(monkeypatch, tmp_path):
    write_tables(tmp_path)
    monkeypatch.setenv("FASTCONV_SHAPES", str(tmp_path))
    n = {c.name: c.N for c in bench.build_cases("layers", "gpu", table_batch={"resnet50": 32, "pools": 64})}
    assert n == {"resnet50/l1": 32, "pools/mp": 64, "extra/e1": bench.SIZES["gpu"]["layers_N"]}
    n = {c.name: c.N for c in bench.build_cases("layers", "gpu", batch=4, table_batch={"resnet50": 2, "pools": 64})}
    assert n == {"resnet50/l1": 2, "pools/mp": 64, "extra/e1": 4}          # --table-batch wins over --batch
    n = {c.name: c.N for c in bench.build_cases("layers", "cpu", table_batch={"pools": 3})}
    assert n == {"resnet50/l1": 1, "pools/mp": 3, "extra/e1": 1}
    with pytest.raises(ValueError, match="nope"):
        bench.build_cases("layers", "cpu", table_batch={"nope": 3})
    assert bench.parse_table_batch("resnet50=32, pools=64") == {"resnet50": 32, "pools": 64}
    for bad in ("resnet50", "resnet50=x", "=3", "pools=0"):
        with pytest.raises(ValueError, match="TABLE=N"):
            bench.parse_table_batch(bad)


def test_gpu_targets_script_runs_the_layers_at_the_goals_batches(monkeypatch):
    """benchmarks/gpu_targets.sh (what suite "targets" was): every standard table at its batch, the goals
    file valid and about tables that exist."""
    monkeypatch.delenv("FASTCONV_SHAPES", raising=False)
    script = (REPO / "benchmarks" / "gpu_targets.sh").read_text()
    assert "--suite layers" in script
    table_batch = bench.parse_table_batch(re.search(r"--table-batch (\S+)", script).group(1))
    assert table_batch == {"resnet50": 32, "mobilenet_v1_dw": 32, "vgg16": 32, "pools": 64}
    n = {}
    for c in bench.build_cases("layers", "gpu", table_batch=table_batch):
        n.setdefault(c.table, set()).add(c.N)
    assert n == {"resnet50": {32}, "mobilenet_v1_dw": {32}, "vgg16": {32}, "pools": {64}}
    goals = re.search(r"--targets (\S+)", script).group(1)
    assert goals == "benchmarks/targets.json"
    assert set(bench.load_targets(str(REPO / goals))) <= set(n)


def test_cpu_layers_suite_is_the_cpu_layer_benchmark(monkeypatch):
    monkeypatch.delenv("FASTCONV_SHAPES", raising=False)
    cases = bench.build_cases("cpu-layers", "cpu")
    with open(SHIPPED / "resnet50.csv", newline="") as f:
        resnet = list(csv.DictReader(f))
    threes = [r["name"] for r in resnet if r["R"] == "3"]
    names = [c.name for c in cases]
    expected = ([f"resnet50/{r['name']}" for r in resnet]
                + [f"resnet50/{n}{v}" for n in threes for v in ("_s2", "_d2")])
    assert names[:len(expected)] == expected
    by_name = {c.name: c for c in cases}
    for n in threes:
        base, s2, d2 = (by_name[f"resnet50/{n}{v}"] for v in ("", "_s2", "_d2"))
        assert (s2.kwargs["stride"], s2.kwargs["padding"], s2.kwargs["dilation"]) == (2, 1, 1)
        assert (d2.kwargs["stride"], d2.kwargs["padding"], d2.kwargs["dilation"]) == (1, 2, 2)
        assert s2.weight == d2.weight == base.weight and s2.shape == d2.shape == base.shape
    assert sum(c.is_conv for c in cases) == 38 and sum(not c.is_conv for c in cases) == 5   # as in the README
    assert {c.table for c in cases} == {"resnet50", "mobilenet_v1_dw", "pools"}
    assert {c.N for c in cases if c.table != "pools"} == {8} and {c.N for c in cases if c.table == "pools"} == {16}
    assert {c.N for c in bench.build_cases("cpu-layers", "cpu", batch=1)} == {1}             # --batch wins
    n = {c.table: c.N for c in bench.build_cases("cpu-layers", "cpu", batch=2, table_batch={"pools": 3})}
    assert n == {"resnet50": 2, "mobilenet_v1_dw": 2, "pools": 3}
    with pytest.raises(ValueError, match="cpu"):
        bench.build_cases("cpu-layers", "gpu")
    with pytest.raises(ValueError, match="suite"):
        bench.build_cases("targets", "gpu")                        # goals are data now (--targets FILE)


def test_cpu_layer_variants_only_for_the_named_tables(tmp_path):
    write_cpu_tables(tmp_path)
    names = [c.name for c in bench.build_cases("cpu-layers", "cpu", shapes=str(tmp_path))]
    assert names == ["resnet50/c3", "resnet50/c1", "resnet50/c3_s2", "resnet50/c3_d2", "mobilenet_v1_dw/dw",
                     "pools/mp", "pools/ap"]


def test_float16_cases():
    case = next(c for c in bench.build_cases("quick", "cpu", dtype="float16") if c.name == "conv2d:base")
    assert all(a.dtype == np.float16 for a in case.arrays(n=1))
    assert bench.case_spec(case).dtype == "float16" and bench.case_spec(case).itemsize == 2
    with pytest.raises(ValueError, match="dtype"):
        bench.build_cases("quick", "cpu", dtype="float64")
