"""Every (case, runner) is checked against the NumPy oracle before it is timed.

The tolerance is :mod:`fastconv.testing`'s, the one the test suite uses (it scales with the reduction
length and the dtype). The check runs on the case's own arrays, or on the same arguments with N reduced to
1 when the case is big (the oracle is slow; ``verify_n`` in the JSON says which).

A network is checked layer by layer (:func:`verify_network`).

Gradients are judged by the oracle's adjoints (``fastconv.grad.*`` with ``backend="numpy"``) with the same
rule, :func:`fastconv.testing.grad_tolerance`: the oracle's float64 gradient of the absolute values times
the reduction length and the accumulation type's unit roundoff, plus one rounding of the stored result.
"""
from __future__ import annotations

import numpy as np

from .. import testing
from .cases import Case, case_spec

#: verify at the case's own N up to this much work, else on the same arguments with N = 1
VERIFY_FULL_FLOPS = 10**8
VERIFY_FULL_ELEMENTS = 4 * 10**6

#: a peer's convolution that misses the tolerance (cuDNN may pick FFT or Winograd algorithms, whose error
#: does not follow the summation bound) is checked again at this multiple and, if it passes, timed and
#: marked ``verified: "loose"``; fastconv's own results get no such allowance
PEER_LOOSE_SCALE = 4.0
#: a float16 peer convolution that misses even that (cuDNN may accumulate half inputs in half precision on
#: tensor cores) is checked once more with the bound for float16 accumulation: the tolerance scaled by
#: eps(float16) / eps(float32) (= 8192); passing it gives ``verified: "fp16-accumulate"``
PEER_FP16_ACC_SCALE = float(np.finfo(np.float16).eps / np.finfo(np.float32).eps)


def _spec_arrays(case: Case, spec, arrays) -> tuple:
    """A gradient case's arrays as its spec's op takes them (``spec.ARRAYS``, backend layout)."""
    named = dict(zip(case.array_names, arrays))
    return tuple(None if shape is None or name not in named else np.asarray(named[name]).reshape(shape)
                 for name, shape in zip(spec.ARRAYS, spec.operands()))


class Reference:
    """The oracle's answer for one case (computed once, shared by every runner)."""

    def __init__(self, case: Case):
        spec = case_spec(case)
        big = (spec.flops() > VERIFY_FULL_FLOPS) if case.is_conv else (spec.max_elements() > VERIFY_FULL_ELEMENTS)
        self.n = 1 if big and case.N > 1 else case.N
        self.arrays = case.arrays(n=self.n, seed=1)
        self.spec = case.spec(self.arrays)
        self.ref = case.function("numpy")(*self.arrays)
        if case.grad is not None:
            tol = testing.grad_tolerance(self.spec, *_spec_arrays(case, self.spec, self.arrays))
            self.tol = np.reshape(tol, np.shape(self.ref))
        else:
            self.tol = testing.conv_tolerance(self.spec, *self.arrays) if case.is_conv else None

    def check(self, out, scale: float = 1.0) -> None:
        """AssertionError when ``out`` (NumPy) is not the oracle's answer within ``scale`` x the tolerance."""
        if self.tol is None:
            testing.assert_pool_close(out, self.ref, self.spec, self.arrays[0])
            return
        out = np.asarray(out).astype(np.float64)
        ref = np.asarray(self.ref).astype(np.float64)
        assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
        # the same comparison as testing.assert_conv_close, with the tolerance computed once per case
        testing.assert_within(out, ref, scale * self.tol.reshape(ref.shape), self.spec)


def verify(case: Case, runner, ref) -> str:
    """Run ``runner`` on the reference arrays and check the result; returns "strict" or (peers only)
    "loose" or, for float16 convolutions, "fp16-accumulate"; raises AssertionError when the result is
    wrong. A network is checked layer by layer (:func:`verify_network`)."""
    if case.is_network:
        return verify_network(case, runner, ref)
    out = runner.function(case)(*runner.convert(ref.arrays))
    runner.sync()
    out = runner.to_numpy(out)
    return _judge(lambda scale: ref.check(out, scale), case, runner, ref.tol is not None)


def _judge(check, case: Case, runner, widen: bool) -> str:
    """``check(scale)`` at the strict tolerance, then (a peer, ``widen``: a result with a summation
    tolerance) at the peers' wider ones; the label of the first that passes, else the strict failure."""
    try:
        check(1.0)
        return "strict"
    except AssertionError as strict:
        if runner.kind != "peer" or not widen:
            raise
        for scale, label in ((PEER_LOOSE_SCALE, "loose"), (PEER_FP16_ACC_SCALE, "fp16-accumulate")):
            if label == "fp16-accumulate" and case.dtype != "float16":
                break
            try:
                check(scale)
                return label
            except AssertionError:
                pass
        raise strict from None


def reference(case: Case):
    """The oracle's answer for ``case``: :class:`Reference`, or :class:`NetworkReference` for a network."""
    return NetworkReference(case) if case.is_network else Reference(case)


class NetworkReference:
    """The oracle's run of a network (the same sequence on fastconv's ``numpy`` backend): every layer's
    input, output and tolerance (:mod:`fastconv.testing`'s for that layer: a convolution's
    ``conv_tolerance`` on its operands, a max pool's ``pool_tolerance`` (0: exact), 0 for ReLU and the add,
    which round once in float32 on every side). Verified at N=1 when the network is big, as single ops."""

    def __init__(self, case: Case):
        from .networks import FastconvOps
        spec = case_spec(case)
        big = spec.flops() > VERIFY_FULL_FLOPS or spec.max_elements() > VERIFY_FULL_ELEMENTS
        self.n = 1 if big and case.N > 1 else case.N
        self.arrays = case.arrays(n=self.n, seed=1)
        self.spec = case.spec(self.arrays)
        x, params = self.arrays[0], self.arrays[1:]
        self.inputs, self.outputs, self.tols, self.labels = [], [], [], []
        y, p, C = x, 0, x.shape[1]
        for (layer, s, _), step in zip(self.spec.layers, case.steps(FastconvOps("numpy"))):
            self.inputs.append(y)
            out = step(y.copy(), x, params)
            if layer.kind == "conv":
                tol = testing.conv_tolerance(s, y, params[p], params[p + 1]).reshape(out.shape)
                p += 2
            elif s is not None:
                tol = testing.pool_tolerance(s, y)
            else:
                tol = 0.0
            self.labels.append(layer.describe(C))
            C = layer.K if layer.kind == "conv" else C
            self.outputs.append(out)
            self.tols.append(tol)
            y = out
        self.ref = y


def verify_network(case: Case, runner, ref: NetworkReference) -> str:
    """Each layer of the runner's sequence on the oracle's output of the layers before it, against the
    oracle's output of that layer within its tolerance (a peer's convolutions may take the peers' wider
    tolerance: the label says the widest any layer needed); then the whole timed call must return exactly
    what its layers chained return. AssertionError naming the layer when one is wrong."""
    arrays = runner.convert(ref.arrays)
    x, params = arrays[0], arrays[1:]
    ops = runner.network_ops()
    steps = case.steps(ops)
    order = ("strict", "loose", "fp16-accumulate")
    worst = "strict"
    for i, step in enumerate(steps):
        with ops.context():
            out = runner.to_numpy(step(runner.convert((ref.inputs[i].copy(),))[0], x, params))
        runner.sync()
        want, tol = ref.outputs[i], ref.tols[i]

        def check(scale, out=out, want=want, tol=tol):
            got, exp = np.asarray(out).astype(np.float64), np.asarray(want).astype(np.float64)
            assert got.shape == exp.shape, f"shape {got.shape} != oracle {exp.shape}"
            testing.assert_within(got, exp, scale * np.asarray(tol), ref.spec)
        try:
            label = _judge(check, case, runner, np.any(np.asarray(tol) > 0))
        except AssertionError as e:
            raise AssertionError(f"layer {i} ({ref.labels[i]}): {e}") from None
        worst = max(worst, label, key=order.index)
    whole = runner.to_numpy(runner.function(case)(*arrays))
    runner.sync()
    with ops.context():
        y = x
        for step in steps:
            y = step(y, x, params)
    chained = runner.to_numpy(y)
    if whole.shape != chained.shape or not np.array_equal(whole, chained, equal_nan=True):
        raise AssertionError("the timed call does not return what its layers, chained, return "
                             f"(max |difference| {np.nanmax(np.abs(whole.astype(np.float64) - chained)):.3g})"
                             if whole.shape == chained.shape else
                             f"the timed call returns shape {whole.shape}, its layers chained {chained.shape}")
    return worst
