"""Every (case, runner) is checked against the NumPy oracle before it is timed.

The tolerance is :mod:`fastconv.testing`'s, the one the test suite uses (it scales with the reduction
length and the dtype). The check runs on the case's own arrays, or on the same arguments with N reduced to
1 when the case is big (the oracle is slow; ``verify_n`` in the JSON says which).

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
