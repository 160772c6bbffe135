"""fastconv.bench's gradient cases (--direction backward/both): the cases and their arrays, the oracle
judging them before anything is timed (a perturbed gradient is flagged, from fastconv or from the peer), a
backend without a gradient reported as unsupported, the summary keeping each op apart, the schema, the CLI.

Everything runs on tiny shape tables and on the NumPy oracle or fake backends, so nothing compiles."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastconv import _dispatch, bench, cli
from fastconv._backends import numpy_oracle

from .fakes import has, register, synthetic_report, write_cpu_tables, write_tables

FAST = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)


def _quiet(opts):
    return bench.run(opts, log=lambda s: None)


def _by_name(cases):
    return {c.name: c for c in cases}


# ---------------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------------
def test_backward_cases_of_the_layer_tables(tmp_path):
    write_tables(tmp_path)          # resnet50/l1: C4 8x8 K4 3x3 s1 p1; pools/mp: C4 8x8 max k2 s2; extra/e1: 1x1
    fwd = bench.build_cases("layers", "cpu", batch=2, shapes=str(tmp_path))
    assert [c.name for c in fwd] == [c.name for c in bench.build_cases("layers", "cpu", batch=2, shapes=str(tmp_path),
                                                                      direction="forward")]
    assert all(c.grad is None and c.direction == "forward" for c in fwd)      # the default is the forward
    back = bench.build_cases("layers", "cpu", batch=2, shapes=str(tmp_path), direction="backward")
    assert sorted(c.name for c in back) == ["extra/e1:conv_input", "extra/e1:conv_weight", "pools/mp:max_pool_backward",
                                            "resnet50/l1:conv_input", "resnet50/l1:conv_weight"]
    both = [c.name for c in bench.build_cases("layers", "cpu", batch=2, shapes=str(tmp_path), direction="both")]
    i = both.index("resnet50/l1")
    assert both[i:i + 3] == ["resnet50/l1", "resnet50/l1:conv_input", "resnet50/l1:conv_weight"]
    assert len(both) == len(fwd) + len(back)

    c = _by_name(back)
    di, dw, mp = c["resnet50/l1:conv_input"], c["resnet50/l1:conv_weight"], c["pools/mp:max_pool_backward"]
    assert (di.op, di.grad, di.spec_op, di.table, di.N) == ("conv2d", "input", "conv_input", "resnet50", 2)
    assert (dw.grad, dw.spec_op, mp.grad, mp.spec_op) == ("weight", "conv_weight", "input", "max_pool_backward")
    assert di.forward().name == "resnet50/l1" and di.forward().grad is None
    # the arrays each public gradient takes, written out by hand: dy has the forward output's shape
    dy, w = di.arrays()
    assert dy.shape == (2, 4, 8, 8) and w.shape == (4, 4, 3, 3)
    x, dy2 = dw.arrays()
    assert x.shape == (2, 4, 8, 8) and dy2.shape == (2, 4, 8, 8)
    dyp, xp, idx = mp.arrays()
    assert dyp.shape == (2, 4, 4, 4) and xp.shape == (2, 4, 8, 8) and idx.dtype == np.int64
    # each index is the position of its 2x2 window's maximum, found here by hand
    for (n, ch, p, q), i in np.ndenumerate(idx):
        win = xp[n, ch, 2 * p:2 * p + 2, 2 * q:2 * q + 2]
        r, s = np.unravel_index(np.argmax(win), (2, 2))
        assert i == (2 * p + r) * 8 + 2 * q + s
    # the gradient case sees its forward case's x and w
    fx, fw, _ = di.forward().arrays()
    assert np.array_equal(fw, w) and np.array_equal(fx, x)
    specs = {n: bench.case_spec(k) for n, k in c.items()}
    assert specs["resnet50/l1:conv_input"].op == "conv_input"
    assert specs["resnet50/l1:conv_weight"].operands() == ((2, 4, 8, 8), (2, 4, 8, 8))
    assert specs["pools/mp:max_pool_backward"].operands() == ((2, 4, 4, 4), (2, 4, 4, 4))
    assert di.padding_operand((dy, w), specs["resnet50/l1:conv_input"]) is w       # the weight meets the padding
    assert dw.padding_operand((x, dy2), specs["resnet50/l1:conv_weight"]) is dy2   # dy does, for the weight gradient
    assert mp.padding_operand((dyp, xp, idx), specs["pools/mp:max_pool_backward"]) is None
    rec = di.record()
    assert (rec["op"], rec["direction"], rec["spec_op"]) == ("conv2d", "backward", "conv_input")
    with pytest.raises(ValueError, match="direction"):
        bench.build_cases("layers", "cpu", shapes=str(tmp_path), direction="sideways")


def test_every_sweep_case_has_valid_gradients():
    cases = bench.build_cases("quick", "cpu", direction="backward")
    ops = {c.spec_op for c in cases}
    assert ops == {"conv_input", "conv_weight", "max_pool_backward", "avg_pool_backward",
                   "adaptive_max_pool_backward", "adaptive_avg_pool_backward"}
    assert {c.op for c in cases} == set(bench.CONV_OPS + bench.POOL_OPS)     # 1-D and 2-D, every pool
    for c in cases:
        assert bench.case_spec(c).op == c.spec_op
        small = c.spec(c.arrays(n=1))              # the drawn arrays pass the public gradient's validation
        assert small.op == c.spec_op and small.N == 1


# ---------------------------------------------------------------------------------------------------
# Verification: a wrong gradient is flagged and never timed
# ---------------------------------------------------------------------------------------------------
def _perturbed(fn):
    """``fn``'s result with its largest element 1 % off."""
    def bad(spec, *arrays):
        out = np.array(fn(spec, *arrays))
        i = np.unravel_index(np.argmax(np.abs(out)), out.shape)
        out[i] *= 1.01
        return out
    return bad


@pytest.fixture
def grad_backends(monkeypatch):
    """'goodgrad' (the oracle's gradients, no avg_pool_backward) and 'badgrad' (each gradient 1 % off in one
    element), both with the oracle's forward conv and max pool."""
    ops = {"conv_input": numpy_oracle.conv_input, "conv_weight": numpy_oracle.conv_weight,
           "max_pool_backward": numpy_oracle.max_pool_backward}
    fwd = [("conv", numpy_oracle.conv), ("max_pool", numpy_oracle.max_pool)]
    for name, wrap in (("goodgrad", lambda f: f), ("badgrad", _perturbed)):
        impls = [_dispatch.FunctionImpl(name, op, "direct", f) for op, f in fwd]
        impls += [_dispatch.FunctionImpl(name, op, "direct", wrap(f)) for op, f in ops.items()]
        register(monkeypatch, name, "numpy", impls)


def test_a_perturbed_gradient_is_flagged_and_never_timed(grad_backends, tmp_path):
    write_cpu_tables(tmp_path)
    report = _quiet(bench.Options(suite="cpu-layers", device="cpu", backends=["goodgrad", "badgrad"], peers=[],
                                  shapes=str(tmp_path), batch=2, direction="backward", policy=FAST, algos=["direct"]))
    assert report["settings"]["direction"] == "backward" and report["schema"] == "fastconv-bench/2"
    rows = {(r["case"], r["backend"]): r for r in report["results"]}
    grads = [c["name"] for c in report["cases"] if c["spec_op"] in ("conv_input", "conv_weight", "max_pool_backward")]
    assert len(grads) == 2 * 5 + 1                            # 5 conv layers (s2/d2 variants too), 1 max pool
    for name in grads:
        good, bad = rows[(name, "goodgrad")], rows[(name, "badgrad")]
        assert good["status"] == "ok" and good["verified"] == "strict" and good["median_s"] > 0, good["error"]
        assert bad["status"] == "verify-failed" and "outside tolerance" in bad["error"] and "median_s" not in bad
        assert good["op"] == bad["op"] == name.rsplit(":", 1)[1]
    assert report["failures"] == len(grads)
    # a backend without an op's implementation: a row that says so, not a crash
    ap = rows[("pools/ap:avg_pool_backward", "goodgrad")]
    assert ap["status"] == "unsupported" and "no avg_pool_backward implementation" in ap["error"]


def test_a_backend_without_gradients_gets_rows_that_say_so(monkeypatch, tmp_path):
    register(monkeypatch, "fwdonly", "numpy", [_dispatch.FunctionImpl("fwdonly", "conv", "direct", numpy_oracle.conv),
                                               _dispatch.FunctionImpl("fwdonly", "conv", "im2col", numpy_oracle.conv)])
    labels = [r.label for r in bench.fastconv_runners("cpu", ["fwdonly"], direction="backward")]
    assert labels == ["fwdonly:direct", "fwdonly:im2col", "fwdonly:pools"]
    write_tables(tmp_path)
    report = _quiet(bench.Options(suite="layers", device="cpu", backends=["fwdonly"], peers=[], shapes=str(tmp_path),
                                  direction="backward", policy=FAST, filter="resnet50"))
    assert {r["status"] for r in report["results"]} == {"unsupported"} and report["failures"] == 0
    errors = {(r["op"], r["algo"]): r["error"] for r in report["results"]}
    assert errors[("conv_weight", "im2col")] == "no conv_weight implementation with algo='im2col' on backend 'fwdonly'"
    assert "no conv_input implementation with algo='direct'" in errors[("conv_input", "direct")]


def _off_runner(kind, ref, factor):
    """A runner of ``kind`` that returns the oracle's answer plus ``factor`` x the tolerance."""
    class Off(bench.Runner):
        def function(self, case):
            return lambda *a: ref.ref.astype(np.float64) + factor * ref.tol.reshape(ref.ref.shape)
    r = Off()
    r.kind, r.name, r.algo = kind, "off", "x"
    return r


@pytest.mark.parametrize("name", ["conv2d:stride=2:conv_input", "conv2d:dilation=2:conv_weight",
                                  "conv1d:padding=asym:conv_weight", "max_pool2d:base:max_pool_backward",
                                  "avg_pool1d:base:avg_pool_backward",
                                  "adaptive_avg_pool2d:base:adaptive_avg_pool_backward"])
def test_the_gradient_tolerance_is_the_boundary(name):
    case = _by_name(bench.build_cases("quick", "cpu", direction="backward"))[name]
    ref = bench.Reference(case)
    assert ref.tol.shape == np.shape(ref.ref) and (ref.tol > 0).all()
    assert bench.verify(case, _off_runner("fastconv", ref, 0.5), ref) == "strict"
    with pytest.raises(AssertionError, match="outside tolerance"):
        bench.verify(case, _off_runner("fastconv", ref, 2), ref)
    assert bench.verify(case, _off_runner("peer", ref, 2), ref) == "loose"     # peers only


def test_the_conv_gradient_tolerance_follows_the_summation_bound():
    """conv_weight sums N*P*Q products per element: the bound written out for a 1x1 convolution, where
    |dw|[k, c] = sum over (n, p, q) of |x[n, c, p, q]| * |dy[n, k, p, q]|."""
    case = _by_name(bench.build_cases("quick", "cpu", direction="backward"))["conv2d:kernel=1:conv_weight"]
    ref = bench.Reference(case)
    x, dy = (a.astype(np.float64) for a in ref.arrays)
    mag = np.einsum("nchw,nkhw->kc", np.abs(x), np.abs(dy))[..., None, None]
    n = ref.spec.N * ref.spec.P * ref.spec.Q + 1
    eps = float(np.finfo(np.float32).eps)
    want = 2.0 * n * eps * mag + eps * mag + np.finfo(np.float32).tiny
    assert np.allclose(ref.tol, want, rtol=1e-12, atol=0)


@pytest.mark.skipif(not has("torch"), reason="torch is not installed")
def test_torch_gradients_are_verified_and_a_perturbed_peer_is_flagged(monkeypatch):
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], direction="backward",
                                  filter="padding=", batch=1, policy=FAST))
    peer = [r for r in report["results"] if r["backend"] == "torch"]
    # conv2d and conv1d at paddings 0, 2, same and asymmetric (padding 1 is the base case), both gradients;
    # max_pool2d and avg_pool2d at padding 0
    assert len(peer) == 2 * 4 * 2 + 2
    assert {r["op"] for r in peer} == {"conv_input", "conv_weight", "max_pool_backward", "avg_pool_backward"}
    assert all(r["status"] == "ok" and r["verified"] == "strict" for r in peer), \
        [(r["case"], r["error"]) for r in peer if r["status"] != "ok"]
    assert report["failures"] == 0

    real = bench.TorchRunner._backward

    def off(self, case):
        fn = real(self, case)
        return lambda *a: fn(*a) * 1.5
    monkeypatch.setattr(bench.TorchRunner, "_backward", off)
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], direction="both",
                                  filter="conv2d:base", policy=FAST))
    rows = {(r["case"], r["backend"]): r for r in report["results"]}
    assert rows[("conv2d:base", "torch")]["status"] == "ok"                        # the forward untouched
    for op in ("conv_input", "conv_weight"):
        assert rows[(f"conv2d:base:{op}", "torch")]["status"] == "verify-failed"
        assert rows[(f"conv2d:base:{op}", "numpy")]["status"] == "ok"
        assert rows[(f"conv2d:base:{op}", "numpy")]["ratio_to_best_peer"] is None   # no verified peer to compare
    assert report["failures"] == 0                                                 # a peer's failure is not ours


# ---------------------------------------------------------------------------------------------------
# The summary keeps each op apart; goals are about the forward
# ---------------------------------------------------------------------------------------------------
def _with_backward(rep):
    """synthetic_report() plus the data gradient of resnet50/a and /b (cuda:auto at 4x and 0.25x the peer)."""
    for name, ratio in (("resnet50/a", 4.0), ("resnet50/b", 0.25)):
        fwd = next(c for c in rep["cases"] if c["name"] == name)
        rep["cases"].append(dict(fwd, name=name + ":conv_input", direction="backward", spec_op="conv_input"))
        rep["results"] += [{"case": name + ":conv_input", "kind": "fastconv", "backend": "cuda", "algo": "auto",
                            "status": "ok", "ratio_to_best_peer": ratio, "peak_fraction": 0.2, "copy_fraction": None,
                            "error": None},
                           {"case": name + ":conv_input", "kind": "peer", "backend": "torch-cuda", "algo": "cudnn",
                            "status": "ok", "ratio_to_best_peer": 1.0, "peak_fraction": 0.4, "copy_fraction": None,
                            "error": None}]
    return rep


def test_summary_keeps_the_gradients_apart_and_goals_on_the_forward():
    goals = {"resnet50": {"geomean": 1.0, "min": 0.7}}
    entries = {(e["table"], e["runner"], e["op"]): e for e in bench.table_summary(_with_backward(synthetic_report()),
                                                                                 goals)}
    fwd, back = entries[("resnet50", "cuda:auto", "conv")], entries[("resnet50", "cuda:auto", "conv_input")]
    assert fwd["geomean"] == pytest.approx(1.0) and fwd["layers"] == 2 and fwd["met"] is False   # as without gradients
    assert back["geomean"] == pytest.approx(1.0) and (back["min"], back["min_layer"]) == (0.25, "resnet50/b:conv_input")
    assert back["layers"] == back["timed"] == 2 and back["median_peak_fraction"] == pytest.approx(0.2)
    assert back["target"] is None and back["met"] is None
    assert ("resnet50", "cuda:direct", "conv_input") not in entries     # no rows, no entry
    assert entries[("pools", "cuda:pools", "pool")]["layers"] == 2
    text = bench.summary_text(bench.table_summary(_with_backward(synthetic_report())))
    assert "cuda:auto conv_input: geomean 1.00x" in text and "cuda:auto: geomean 1.00x" in text
    md = bench.markdown([_with_backward(synthetic_report())])
    assert "| resnet50 (32) | `cuda:auto` conv_input | 2/2 | 1.00x | 0.25x (b:conv_input) |" in md
    assert "conv_input" in bench.summary(_with_backward(synthetic_report()))
    # a fastconv-bench/1 report (no direction, no spec_op) is all forward
    assert {bench.op_group(c) for c in synthetic_report()["cases"]} == {"conv", "pool"}


# ---------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------
def test_cli_bench_backward_and_summary_of_old_and_new_reports(tmp_path, capsys):
    write_tables(tmp_path)
    out = tmp_path / "out"
    rc = cli.main(["bench", "--suite", "layers", "--backend", "numpy", "--shapes", str(tmp_path), "--batch", "1",
                   "--direction", "backward", "--no-peers", "--quick", "--no-plot", "--out", str(out),
                   "--filter", "resnet50"])
    assert rc == 0
    (path,) = out.glob("*.json")
    assert "-layers-backward-" in path.name                      # beside, not over, a forward report's file
    rep = json.loads(path.read_text())
    assert rep["schema"] == bench.SCHEMA == "fastconv-bench/2" and rep["settings"]["direction"] == "backward"
    assert [(c["name"], c["direction"], c["spec_op"]) for c in rep["cases"]] == [
        ("resnet50/l1:conv_input", "backward", "conv_input"), ("resnet50/l1:conv_weight", "backward", "conv_weight")]
    assert {r["status"] for r in rep["results"]} == {"ok"}
    old = tmp_path / "old.json"
    v1 = synthetic_report()
    v1["schema"] = "fastconv-bench/1"
    bench.write_json(v1, str(old))
    capsys.readouterr()
    assert cli.main(["summary", str(old), str(path), "--markdown", str(tmp_path / "s.md")]) == 0
    text = capsys.readouterr().out
    assert "resnet50 (N=1, float32) numpy:direct conv_input: geomean -" in text
    assert "resnet50 (N=32, float16) cuda:auto: geomean 1.00x" in text
    with pytest.raises(SystemExit):
        cli.main(["bench", "--direction", "sideways"])


@pytest.mark.skipif(not has("matplotlib"), reason="matplotlib is not installed")
def test_plot_draws_the_gradient_sweeps(tmp_path):
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[], direction="both",
                                  filter="max_pool2d:", policy=FAST))
    cases = {c["name"]: c for c in report["cases"]}
    assert bench.plots._plot_op(cases["max_pool2d:base"]) == "max_pool2d"
    assert bench.plots._plot_op(cases["max_pool2d:base:max_pool_backward"]) == "max_pool2d max_pool_backward"
    assert bench.plot(report, str(tmp_path / "p.png")) is None
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_gpu_gradient_runs_with_a_fake_cupy(monkeypatch):
    """The GPU path of a gradient case: arrays moved to the "device", CUDA-event times, the missing weight
    gradient a row that says so (the torch-cuda peer is absent here or skipped with its reason)."""
    import sys

    from .fakes import fake_cupy
    log = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(log))

    def conv_input(spec, dy, w, b=None):
        assert type(dy).__module__ == "cupy" and type(w).__module__ == "cupy"
        log.append("kernel")
        return numpy_oracle.conv_input(spec, np.asarray(dy), np.asarray(w))
    register(monkeypatch, "fakegpu", "cupy", [_dispatch.FunctionImpl("fakegpu", "conv_input", "direct", conv_input)])
    report = _quiet(bench.Options(suite="quick", device="gpu", backends=["fakegpu"], filter="conv2d:base",
                                  direction="backward", policy=FAST))
    rows = {r["case"]: r for r in report["results"] if r["backend"] == "fakegpu"}
    assert rows["conv2d:base:conv_input"]["status"] == "ok" and rows["conv2d:base:conv_input"]["median_s"] == 0.5e-3
    assert rows["conv2d:base:conv_weight"]["status"] == "unsupported"
    i = log.index("kernel", log.index("record"))
    assert log[i - 1: i + 3] == ["record", "kernel", "record", "event-sync"]


def test_float16_gradients_are_verified_with_the_float16_tolerance():
    report = _quiet(bench.Options(suite="quick", device="cpu", backends=["numpy"], peers=[], dtype="float16",
                                  direction="backward", filter="2d:base", policy=FAST))
    assert {c["dtype"] for c in report["cases"]} == {"float16"} and len(report["results"]) == 2 + 4
    assert all(r["status"] == "ok" and r["verified"] == "strict" for r in report["results"])
    case = _by_name(bench.build_cases("quick", "cpu", dtype="float16", direction="backward"))["conv2d:base:conv_input"]
    ref = bench.Reference(case)
    assert all(a.dtype == np.float16 for a in ref.arrays)
    with pytest.raises(AssertionError, match="float16"):
        bench.verify(case, _off_runner("fastconv", ref, 2), ref)
