"""Suites cpu-tiny and cpu-networks: the networks' definitions (written out by hand here), their verification
(a wrong layer anywhere in the fastconv sequence fails it, naming the layer), and both suites end to end on
the oracle backend at tiny batches, so nothing compiles."""
from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from fastconv import bench
from fastconv.bench import networks
from fastconv.bench.networks import ADD_INPUT, RELU, Network, NetworkCase, conv, max_pool

from .fakes import has


def _quiet(opts):
    return bench.run(opts, log=lambda s: None)


POLICY = bench.Policy(warmup=1, min_repeat=3, max_repeat=3, min_time=0.0, max_time=1.0)


# ---------------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------------
def _conv_flops(N, C, K, R, P):
    return 2 * N * K * C * R * R * P * P


def test_networks_are_the_documented_ones():
    cases = {c.name: c for c in bench.build_cases("cpu-networks", "cpu")}
    assert list(cases) == ["networks/lenet5", "networks/vgg16_block", "more_networks/vgg16_stage2",
                           "networks/resnet50_bottleneck", "more_networks/small_cnn"]
    # (input shape, output shape, flops) worked out by hand from the layer lists in the module docstring
    want = {
        "networks/lenet5": ((64, 1, 32, 32), (64, 16, 5, 5),
                            _conv_flops(64, 1, 6, 5, 28) + _conv_flops(64, 6, 16, 5, 10)),
        "networks/vgg16_block": ((8, 64, 56, 56), (8, 64, 28, 28), 2 * _conv_flops(8, 64, 64, 3, 56)),
        "more_networks/vgg16_stage2": ((1, 64, 112, 112), (1, 128, 56, 56),
                                       _conv_flops(1, 64, 128, 3, 112) + _conv_flops(1, 128, 128, 3, 112)),
        "networks/resnet50_bottleneck": ((8, 256, 56, 56), (8, 256, 56, 56),
                                         _conv_flops(8, 256, 64, 1, 56) + _conv_flops(8, 64, 64, 3, 56)
                                         + _conv_flops(8, 64, 256, 1, 56)),
        "more_networks/small_cnn": ((64, 1, 28, 28), (64, 32, 7, 7),
                                    _conv_flops(64, 1, 16, 3, 28) + _conv_flops(64, 16, 32, 3, 14)),
    }
    for name, (shape, out, flops) in want.items():
        c = cases[name]
        spec = bench.case_spec(c)
        assert c.shape == shape and spec.output_shape == out and spec.flops() == flops, name
        assert c.is_network and c.spec_op == "network" and c.direction == "forward"
    assert [layer.kind for layer in cases["networks/resnet50_bottleneck"].network.layers] == \
        ["conv", "relu", "conv", "relu", "conv", "add_input", "relu"]


def _rows(table):
    with open(bench.SHIPPED_SHAPES / f"{table}.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_network_layers_are_the_shape_tables_rows():
    """VGG-16's stage 2 is rows conv2_1, conv2_2 of vgg16.csv; the bottleneck res2's three rows."""
    def convs(name):
        case = networks.network_case(name, "t")
        layers, _ = case._shapes()
        return [(s[1], s[2], s[3], w[0], w[2], layer.stride, layer.padding) for layer, s, w in layers
                if layer.kind == "conv"]

    def row(r):
        return tuple(int(r[k]) for k in ("C", "H", "W", "K", "R", "stride", "pad"))
    vgg, res = _rows("vgg16"), _rows("resnet50")
    assert convs("vgg16_stage2") == [row(vgg["conv2_1"]), row(vgg["conv2_2"])]
    assert convs("resnet50_bottleneck") == [row(res["res2_1x1_256to64"]), row(res["res2_3x3"]),
                                            row(res["res2_1x1_64to256"])]
    assert convs("vgg16_block") == [row(res["res2_3x3"])] * 2


def test_tiny_suite_cases():
    cases = {c.name: c for c in bench.build_cases("cpu-tiny", "cpu")}
    conv3, pool = cases["tiny_calls/conv_3to4"], cases["tiny_calls/maxpool_2"]
    assert (conv3.op, conv3.shape, conv3.weight, conv3.kwargs) == ("conv2d", (1, 3, 8, 8), (4, 3, 3, 3), {})
    assert (pool.op, pool.shape, pool.kwargs) == ("max_pool2d", (1, 4, 8, 8), {"kernel_size": 2})
    for n in (1, 64):
        t = f"lenet_ops_n{n}"
        assert (cases[f"{t}/conv1"].shape, cases[f"{t}/conv1"].weight) == ((n, 1, 32, 32), (6, 1, 5, 5))
        assert cases[f"{t}/pool1"].shape == (n, 6, 28, 28)
        assert (cases[f"{t}/conv2"].shape, cases[f"{t}/conv2"].weight) == ((n, 6, 14, 14), (16, 6, 5, 5))
        assert cases[f"{t}/pool2"].shape == (n, 16, 10, 10)
    assert cases["lenet_n1/lenet5"].is_network and cases["lenet_n1/lenet5"].shape == (1, 1, 32, 32)
    assert {c.table for c in cases.values()} == {"tiny_calls", "lenet_ops_n1", "lenet_ops_n64", "lenet_n1"}
    assert all(c.shape[0] == 2 for c in bench.build_cases("cpu-tiny", "cpu", batch=2))


def test_networks_have_no_gradient_cases():
    assert bench.build_cases("cpu-networks", "cpu", direction="backward") == []
    both = bench.build_cases("cpu-tiny", "cpu", direction="both")
    assert [c.name for c in both if c.is_network] == ["lenet_n1/lenet5"]
    assert any(c.name == "tiny_calls/conv_3to4:conv_input" for c in both)


def test_suite_timing_applies_to_the_stock_policies_only():
    tiny = bench.get_suite("cpu-tiny")
    p = bench.suite_policy(tiny, bench.FULL_POLICY)
    assert (p.round_calls, p.min_repeat, p.max_repeat, p.settle_s) == (50, 150, 2000, 0.15)
    assert p.max_time == bench.FULL_POLICY.max_time
    assert bench.suite_policy(tiny, POLICY) == dataclasses.replace(POLICY, settle_s=0.15)   # by hand: as given
    net = bench.suite_policy(bench.get_suite("cpu-networks"), bench.QUICK_POLICY)
    assert (net.round_calls, net.min_repeat, net.max_time, net.settle_s) == (2, 8, 6.0, 0.3)


# ---------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------
#: every kind of layer, small: conv (3x3, padded), ReLU, 1x1 conv back to the input's channels, the
#: residual add, ReLU, max pool
TINY = Network("tiny", (4, 8, 8), 2, (conv(6, 3, padding=1), RELU, conv(4, 1), ADD_INPUT, RELU, max_pool(2)), "t")


def _tiny_case():
    return NetworkCase("t/tiny", "network", (2, 4, 8, 8), {}, None, {}, "networks:t", network=TINY)


def test_network_verifies_layer_by_layer_on_the_oracle():
    case = _tiny_case()
    ref = bench.verification.reference(case)
    assert len(ref.outputs) == len(TINY.layers) and ref.outputs[-1].shape == (2, 4, 4, 4)
    # the oracle's chain written out with NumPy by hand (the convolution by its definition)
    x, w0, b0, w1, b1 = ref.arrays
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((2, 6, 8, 8))
    for r in range(3):
        for s in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + 8, s:s + 8], w0[:, :, r, s])
    y = np.maximum(y + b0[None, :, None, None], 0)
    y = np.maximum(np.einsum("nchw,kc->nkhw", y, w1[:, :, 0, 0]) + b1[None, :, None, None] + x, 0)
    y = y.reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_allclose(ref.ref, y, rtol=1e-5, atol=1e-5)
    assert bench.verify(case, bench.FastconvRunner("numpy", "auto"), ref) == "strict"
    if has("torch"):
        assert bench.verify(case, bench.TorchRunner("cpu"), ref) in ("strict", "loose")


def test_a_wrong_convolution_fails_verification(fake_backend):
    """Backend 'fake' runs algo 'direct' as the oracle and 'im2col' off by one: the first conv layer fails."""
    case = _tiny_case()
    ref = bench.verification.reference(case)
    assert bench.verify(case, bench.FastconvRunner("fake", "direct"), ref) == "strict"
    with pytest.raises(AssertionError, match=r"layer 0 \(conv 4->6 3x3 p1\)"):
        bench.verify(case, bench.FastconvRunner("fake", "im2col"), ref)


_CONV, _POOL = networks.FastconvOps.conv, networks.FastconvOps.max_pool


@pytest.mark.parametrize("layer, wrong, where", [
    ("relu", lambda self, y: y, r"layer 1 \(relu\)"),                                     # ReLU left out
    ("add", lambda self, y, x: y, r"layer 3 \(\+x\)"),                                    # identity path lost
    ("conv", lambda self, y, w, b, stride, padding: _CONV(self, y, w, b, stride, 0),     # padding lost
     r"layer 0 \(conv 4->6 3x3 p1\): shape"),
    ("conv", lambda self, y, w, b, stride, padding: _CONV(self, y, w, None, stride, padding),   # bias lost
     r"layer 0 \(conv 4->6 3x3 p1\): \d+ of \d+ elements outside tolerance"),
    ("max_pool", lambda self, y, k: _POOL(self, y, 1), r"layer 5 \(maxpool 2\): shape"),   # window lost
])
def test_a_wrong_layer_in_the_fastconv_sequence_fails_verification(monkeypatch, layer, wrong, where):
    case = _tiny_case()
    ref = bench.verification.reference(case)          # the oracle's run, before the sequence is broken
    monkeypatch.setattr(networks.FastconvOps, layer, wrong)
    with pytest.raises(AssertionError, match=where):
        bench.verify(case, bench.FastconvRunner("numpy", "auto"), ref)


@pytest.mark.parametrize("change, message", [(lambda y: y[..., :3, :3], "timed call returns shape"),
                                             (lambda y: y + 1, "does not return what its layers, chained")])
def test_a_timed_call_that_is_not_its_layers_chained_fails_verification(monkeypatch, change, message):
    case = _tiny_case()
    ref = bench.verification.reference(case)
    timed = bench.FastconvRunner.function
    monkeypatch.setattr(bench.FastconvRunner, "function",
                        lambda self, c: (lambda f: lambda *a: change(f(*a)))(timed(self, c)))
    with pytest.raises(AssertionError, match=message):
        bench.verify(case, bench.FastconvRunner("numpy", "auto"), ref)


# ---------------------------------------------------------------------------------------------------
# End to end (oracle backend, tiny batches)
# ---------------------------------------------------------------------------------------------------
def test_cpu_networks_suite_end_to_end(monkeypatch):
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: None)
    targets = bench.load_targets(str(bench.SHIPPED_SHAPES.parents[2] / "benchmarks" / "targets_cpu.json"))
    report = _quiet(bench.Options(suite="cpu-networks", device="cpu", backends=["numpy"], batch=1,
                                  filter="lenet5", policy=POLICY, targets=targets))
    assert [c["name"] for c in report["cases"]] == ["networks/lenet5"]
    rec = report["cases"][0]
    assert rec["op"] == "network" and rec["spec_op"] == "network" and rec["network"]["name"] == "lenet5"
    assert [layer["kind"] for layer in rec["network"]["layers"]] == ["conv", "relu", "max_pool"] * 2
    fc = [r for r in report["results"] if r["kind"] == "fastconv"]
    assert [(r["backend"], r["algo"], r["status"], r["verified"]) for r in fc] == [("numpy", "auto", "ok", "strict")]
    assert fc[0]["impl"].count(";") == 3 and fc[0]["median_s"] > 0           # four fastconv ops, each named
    assert report["settings"]["policy"]["round_calls"] == POLICY.round_calls   # a hand-made policy as given
    (entry,) = [e for e in report["summary"] if e["table"] == "networks"]
    assert entry["op"] == "network" and entry["runner"] == "numpy:auto"
    if has("torch"):
        assert entry["target"] == "geomean >= 1.25x torch, no layer < 1x" and entry["met"] in (True, False, None)
        peer = next(r for r in report["results"] if r["kind"] == "peer")
        assert peer["status"] == "ok" and fc[0]["ratio_to_best_peer"] == pytest.approx(
            peer["median_s"] / fc[0]["median_s"])
    md = bench.markdown([report], targets)
    assert "| networks (1) | `numpy:auto` |" in md


def test_cpu_tiny_suite_end_to_end(monkeypatch):
    monkeypatch.setattr(bench.timing.time, "sleep", lambda s: None)
    report = _quiet(bench.Options(suite="cpu-tiny", device="cpu", backends=["numpy"], peers=[],
                                  filter="tiny_calls", policy=POLICY))
    assert [(r["case"], r["algo"], r["status"]) for r in report["results"]] == [
        ("tiny_calls/conv_3to4", "auto", "ok"), ("tiny_calls/maxpool_2", "direct", "ok")]
    assert {(e["table"], e["op"]) for e in report["summary"]} == {("tiny_calls", "conv"), ("tiny_calls", "pool")}
