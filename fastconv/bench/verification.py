"""Every (case, runner) is checked against the NumPy oracle before it is timed.

The tolerance is :mod:`fastconv.testing`'s, the one the test suite uses (it scales with the reduction
length and the dtype). The check runs on the case's own arrays, or on the same arguments with N reduced to
1 when the case is big (the oracle is slow; ``verify_n`` in the JSON says which).

Gradients are judged by the oracle's adjoints (``fastconv.grad.*`` with ``backend="numpy"``) with the same
rule, :func:`grad_tolerance`: ``slack * n * eps_acc * |op|(|a|, |b|)`` plus one rounding of the stored
result, where ``|op|`` is the oracle's float64 gradient of the absolute values and n the longest sum one
result element is made of (conv_input: K/groups * R * S + 1; conv_weight: N * P * Q + 1; a pool gradient:
the most windows that cover one position, + 1 for the division).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import testing
from .._backends import numpy_oracle
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


def _window_overlap(spec) -> int:
    """The most windows of a pool that cover one input position (an upper bound)."""
    if spec.is_adaptive:
        return (-(-spec.P // spec.H) + 1) * (-(-spec.Q // spec.W) + 1)
    ext_h, ext_w = spec.dil_h * (spec.R - 1) + 1, spec.dil_w * (spec.S - 1) + 1
    return -(-ext_h // spec.stride_h) * -(-ext_w // spec.stride_w)


def grad_tolerance(case: Case, spec, arrays, slack: float = 2.0) -> np.ndarray:
    """Elementwise absolute tolerance of a gradient case's result on ``arrays`` (the module docstring)."""
    a = [np.abs(np.asarray(v, dtype=np.float64)) if v.dtype.kind == "f" else v for v in arrays]
    if spec.op == "conv_input":
        mag, n = numpy_oracle.conv_input64(spec, a[0], a[1]), spec.K_per_group * spec.R * spec.S + 1
    elif spec.op == "conv_weight":
        mag, n = numpy_oracle.conv_weight64(spec, a[0], a[1]), spec.N * spec.P * spec.Q + 1
    else:
        oracle = getattr(numpy_oracle, spec.op)
        mag = oracle(dataclasses.replace(spec, dtype="float64"), a[0], *a[2:])   # dy[, indices]
        n = _window_overlap(spec) + 1
    mag = np.asarray(mag, dtype=np.float64).reshape(spec.output_shape)
    acc_eps = testing._ACC_EPS[spec.dtype]
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * acc_eps * mag + store_eps * mag + np.finfo(spec.dtype).tiny


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
            self.tol = grad_tolerance(case, self.spec, self.arrays)
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


def verify(case: Case, runner, ref: Reference) -> str:
    """Run ``runner`` on the reference arrays and check the result; returns "strict" or (peers only)
    "loose" or, for float16 convolutions, "fp16-accumulate"; raises AssertionError when the result is
    wrong."""
    out = runner.function(case)(*runner.convert(ref.arrays))
    runner.sync()
    out = runner.to_numpy(out)
    try:
        ref.check(out)
        return "strict"
    except AssertionError as strict:
        if runner.kind != "peer" or ref.tol is None:
            raise
        for scale, label in ((PEER_LOOSE_SCALE, "loose"), (PEER_FP16_ACC_SCALE, "fp16-accumulate")):
            if label == "fp16-accumulate" and case.dtype != "float16":
                break
            try:
                ref.check(out, scale)
                return label
            except AssertionError:
                pass
        raise strict from None
