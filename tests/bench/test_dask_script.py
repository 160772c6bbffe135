"""benchmarks/dask_cluster.py, the fastconv.dask cluster benchmark: its quick path end to end on a tiny image
(workers as threads of this process, the NumPy oracle as backend, so nothing compiles and the cluster starts
at once), the halo and task counts it reports against the rule worked out by hand, and its check refusing a
wrong result before anything is timed. Nothing here asserts a time."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "dask_cluster.py")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("dask_cluster", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


#: the tiny run: 48 x 48, tiles 16 (3 x 3 chunks), clusters 1x1 and 2x1 as threads
TINY = ["--quick", "--size", "48", "--tiles", "16", "--in-process", "--backend", "numpy",
        "--budget", "0.02", "--repeat", "1", "--max-repeat", "1"]


@pytest.fixture(scope="module")
def tiny_run(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("dask-results")
    assert script.main(TINY + ["--out", str(out)]) == 0
    (js,) = [p for p in out.iterdir() if p.suffix == ".json"]
    (md,) = [p for p in out.iterdir() if p.suffix == ".md"]
    return json.loads(js.read_text()), md.read_text()


# Halo read of one axis of 48 positions, worked out by hand. Output o belongs to the chunk its window
# (receptive field) starts in; a block [o0, o1) reads the real positions its windows cover.
# conv 3x3 pad 1: output o's window starts at o - 1. Tiles 16: blocks [0,17) [17,33) [33,48) read [0,18)
#   [16,34) [32,48): 18 + 18 + 16 = 52. Tiles 24: [0,25) [25,48) read [0,26) [24,48): 26 + 24 = 50.
# stack conv3 pad1, pool 2, conv3 pad1 (24 outputs): output o starts at 2*(o-1) - 1 = 2o - 3 and its last
#   window ends (exclusive) at 2o + 3. Tiles 16: blocks [0,10) [10,18) [18,24) read [0,23) [17,39) [33,48):
#   23 + 22 + 15 = 60. Tiles 24: [0,14) [14,24) read [0,31) [25,48): 31 + 23 = 54.
PER_AXIS = {("conv", 16): 52, ("conv", 24): 50, ("stack", 16): 60, ("stack", 24): 54}
# Halo slicing tasks: one per (block, combination of the chunks it reads on each axis) that is not a whole
# chunk on every axis (a whole chunk is read by its key). Conv tiles 16, per axis: block 0 reads chunk 0
# whole and [16,18) of chunk 1, block 1 chunk 1 whole and [32,34), block 2 chunk 2 whole: 5 pieces, 25
# combinations, 9 whole: 16 slices; tiles 24: 2 + 1 pieces, 9 - 4 = 5. Stack tiles 16: block 0 reads chunk 0
# whole and [16,23), block 1 [17,32) and [32,39), block 2 [33,48): 5 pieces, and only block (0, 0) reads a
# whole chunk on both axes: 25 - 1 = 24; tiles 24: [0,24) whole and [24,31), then [25,48): 9 - 1 = 8.
HALO_TASKS = {("conv", 16): 16, ("conv", 24): 5, ("stack", 16): 24, ("stack", 24): 8}
# Tasks: output blocks + halo slices + the graph's constants (conv: weight and bias; a stack binds them in
# its layers)
EXTRAS = {"conv": 2, "stack": 0}


def test_tiny_run_rows(tiny_run):
    result, _ = tiny_run
    assert result["settings"]["size"] == 48 and result["settings"]["clusters"] == ["1x1", "2x1"]
    assert result["machine"]["lscpu"]["model"] and result["machine"]["date"]
    for case in ("conv", "stack"):
        rows = result["cases"][case]["rows"]
        singles = [r for r in rows if r["kind"] == "single"]
        dask = [r for r in rows if r["kind"] == "dask"]
        assert [r["threads"] for r in singles] == [1, 2]
        assert sorted((r["workers"], r["tile"]) for r in dask) == [(1, 16), (2, 16)]
        for r in rows:
            assert len(r["times_s"]) >= 1 and r["median_s"] == np.median(r["times_s"])
            assert r["loadavg_before"] is not None
        for r in dask:
            assert 0 <= r["max_err_over_tol"] <= 1
            assert r["vs_single"] == pytest.approx(r["median_s"] / singles[r["workers"] - 1]["median_s"])
            ts = r["task_stream"]      # one more call, as Dask's workers saw it: every output block ran
            assert ts["tasks_run"] >= r["output_blocks"] and ts["compute_s"] > 0


def check_counts(case, tile, halo, counts):
    n = PER_AXIS[case, tile]
    assert halo["read"] == n * n and halo["input"] == 48 * 48
    assert halo["ratio"] == pytest.approx(n * n / 48 ** 2 - 1)
    blocks = (48 // tile) ** 2
    assert counts["output_blocks"] == halo["blocks"] == blocks
    assert counts["halo_tasks"] == HALO_TASKS[case, tile]
    assert counts["tasks"] == blocks + HALO_TASKS[case, tile] + EXTRAS[case]


@pytest.mark.parametrize("case", ["conv", "stack"])
def test_tiny_run_halo_and_tasks(tiny_run, case):
    result, _ = tiny_run
    rows = [r for r in result["cases"][case]["rows"] if r["kind"] == "dask"]
    assert rows
    for r in rows:
        check_counts(case, r["tile"], r["halo_read"], r)


@pytest.mark.parametrize("case", ["conv", "stack"])
@pytest.mark.parametrize("tile", [16, 24])
def test_halo_and_tasks_of_the_plan(script, case, tile):
    """The same counts without a cluster: the plan's arithmetic and the graph fastconv.dask builds."""
    import dask.array as da
    img = np.zeros((1, 1, 48, 48), np.float32)
    x = da.from_array(img, chunks=(1, 1, tile, tile))
    fns = script.layers(case, script.weights(case, 1, 8, 0), "numpy")
    check_counts(case, tile, script.halo(case, img.shape, x.chunks[2:]), script.tasks(script.dask_op(case, fns, x), x))


def test_tiny_run_markdown(tiny_run):
    _, md = tiny_run
    assert "## conv:" in md and "## stack:" in md
    assert md.count("| dask 2 worker(s) x 1 thread(s), tile 16 |") == 2
    assert "AMD" in md or "Intel" in md or "machine:" in md


def test_tolerance_bounds_the_elementwise_rule(script):
    """The per-channel bound is at least fastconv.testing's elementwise tolerance of every output."""
    from fastconv._spec import conv_spec
    from fastconv.testing import conv_tolerance
    img = np.random.default_rng(3).standard_normal((1, 2, 20, 20)).astype(np.float32)
    fns = script.layers("conv", script.weights("conv", 2, 5, 0), "numpy")
    _, mags = script.reference(fns, img)
    bound = script.tolerance("conv", fns, mags)
    w, b = fns[0].keywords["weight"], fns[0].keywords["bias"]
    exact = conv_tolerance(conv_spec(img, w, b, padding=1), img, w, b)
    assert bound.shape == (5,)
    assert (bound >= exact.max(axis=(0, 2, 3))).all() and (bound < 10 * exact.max(axis=(0, 2, 3))).all()


def test_stack_tolerance_by_hand(script, monkeypatch):
    """conv 3x3 (ones) -> ReLU -> max pool -> conv 3x3 (ones), one channel, on an image of ones: the layers'
    inputs peak at 1, 9, 9, 9. conv_tolerance's rule is 2 * n * eps * m + eps * m + tiny with n = 9 + 1 taps
    and m the window's magnitude (9 x its input's): the first conv's bound e1 at input 1, the second's at
    input 9 + e1, plus e1 carried through the second conv's 9 weights of 1."""
    import functools
    import fastconv
    w, b = np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32)
    conv = functools.partial(fastconv.conv2d, weight=w, bias=b, padding=1, backend="numpy")
    fns = [conv, script.relu, functools.partial(fastconv.max_pool2d, kernel_size=2, backend="numpy"), conv]
    _, mags = script.reference(fns, np.ones((1, 1, 8, 8), np.float32))
    assert mags == [1.0, 9.0, 9.0, 9.0]
    eps, tiny = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).tiny)

    def bound(m):
        return 2 * 10 * eps * m + eps * m + tiny

    e1 = bound(9 * 1.0)
    with_winograd = script.tolerance("stack", fns, mags)
    from fastconv import testing
    monkeypatch.setattr(testing, "winograd_applies", lambda spec: False)    # the direct rule alone, by hand
    assert script.tolerance("stack", fns, mags) == pytest.approx([bound(9 * (9 + e1)) + 9 * e1], rel=1e-6)
    assert with_winograd >= script.tolerance("stack", fns, mags)      # the Winograd bound only widens it


def test_wrong_result_fails_before_timing(script, tmp_path, monkeypatch):
    """Each chunk computed alone (no halo: padding at every chunk edge) differs near the chunk edges: the run
    stops there, and writes nothing."""
    def no_halo(case, fns, x):
        return x.map_blocks(lambda blk: script.single(fns, blk), dtype=x.dtype,
                            chunks=x.chunks[:1] + ((8,),) + x.chunks[2:])

    def reduction(y):
        raise RuntimeError("the result reached the timing without being refused")

    monkeypatch.setattr(script, "dask_op", no_halo)
    monkeypatch.setattr(script, "reduction", reduction)
    with pytest.raises(AssertionError, match="differs from the single-array result"):
        script.main(TINY + ["--cases", "conv", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_help_and_bad_cluster(script, capsys):
    with pytest.raises(SystemExit) as ok:
        script.main(["--help"])
    assert ok.value.code == 0 and "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        script.main(["--clusters", "2"])
    assert bad.value.code == 2 and "WORKERSxTHREADS" in capsys.readouterr().err
