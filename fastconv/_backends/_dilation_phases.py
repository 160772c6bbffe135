"""A stride-1 dilated convolution as one undilated convolution over its dilation phases (NumPy only, no
Numba: ``fastconv.testing``'s Winograd bound takes the same decomposition as the numba backend's run).

Along an axis with dilation d (input size H, padding pad_lo/pad_hi, a window of R taps, stride 1), the
output p = a + d i (phase a < d) reads the inputs p - pad_lo + d r = rho + d (i + r + o) for the taps
r < R, with rho = (a - pad_lo) mod d and o = (a - pad_lo - rho) / d <= 0: the phase image
x_rho[m] = x[rho + d m] convolved undilated with the same taps, -o zeros before it. The phases of an axis
differ in that lead (by at most 1) and in their lengths, so each phase image is placed in a common
buffer at row ``lead - L`` (L, the smallest lead, is the undilated problem's pad_lo; the rows in between
are explicit zeros, which is what the padding would be) and the buffer is padded after so that every
phase's outputs fit (outputs past a phase's own are computed and dropped). The d_h x d_w phase images of
each image stack along the batch, phase-major: one undilated problem of N d_h d_w images, whose taps meet
exactly the inputs (and zeros for the padding) that the dilated conv's do.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from .. import _spec


@dataclasses.dataclass(frozen=True)
class _Axis:
    d: int
    starts: Tuple[int, ...]     # per output phase a: the input phase rho it reads
    places: Tuple[int, ...]     # per output phase a: where its phase image starts in the buffer
    outs: Tuple[int, ...]       # per output phase a: its output count, len(range(a, P, d))
    size: int                   # the buffer's length
    pad_lo: int
    pad_hi: int


def _axis(size: int, pad_lo: int, pad_hi: int, d: int, taps: int, out: int) -> _Axis:
    starts, leads, lengths, outs = [], [], [], []
    for a in range(d):
        rho = (a - pad_lo) % d
        starts.append(rho)
        leads.append(-((a - pad_lo - rho) // d))
        lengths.append(len(range(rho, size, d)))
        outs.append(len(range(a, out, d)))
    lo = min(leads)
    places = [lead - lo for lead in leads]
    buf = max(p + n for p, n in zip(places, lengths))
    hi = max(0, max(outs) + taps - 1 - buf - lo)
    return _Axis(d, tuple(starts), tuple(places), tuple(outs), buf, lo, hi)


class DilationPhases:
    """The phase decomposition of a stride-1 dilated 2-D conv ``spec`` (see the module docstring):
    ``spec`` the undilated problem over the stacked phase images, ``gather`` builds its input, ``scatter``
    writes its output back into the dilated conv's."""

    def __init__(self, spec):
        self.h = _axis(spec.H, spec.pad_top, spec.pad_bottom, spec.dil_h, spec.R, spec.P)
        self.w = _axis(spec.W, spec.pad_left, spec.pad_right, spec.dil_w, spec.S, spec.Q)
        self.N = spec.N
        h, w = self.h, self.w
        self.spec = dataclasses.replace(
            spec, N=spec.N * h.d * w.d, H=h.size, W=w.size, dil_h=1, dil_w=1, batched=True,
            pad_top=h.pad_lo, pad_bottom=h.pad_hi, pad_left=w.pad_lo, pad_right=w.pad_hi,
            P=_spec.output_size(h.size, spec.R, 1, h.pad_lo, h.pad_hi),
            Q=_spec.output_size(w.size, spec.S, 1, w.pad_lo, w.pad_hi))

    def _phases(self):
        """(stack block, output phase a, b) for every phase pair."""
        for a in range(self.h.d):
            for b in range(self.w.d):
                yield a * self.w.d + b, a, b

    def gather(self, x, out):
        """The stacked phase images of x (N, C, H, W) into ``out`` (the undilated input, zeros where no
        phase image lies)."""
        h, w, N = self.h, self.w, self.N
        out[...] = 0
        for blk, a, b in self._phases():
            src = x[:, :, h.starts[a]::h.d, w.starts[b]::w.d]
            out[blk * N:(blk + 1) * N, :, h.places[a]:h.places[a] + src.shape[2],
                w.places[b]:w.places[b] + src.shape[3]] = src
        return out

    def gather_output(self, dy, out):
        """The dilated conv's dy (N, K, P, Q) placed where :meth:`scatter` takes each phase's outputs from,
        into ``out`` (the undilated problem's output layout), zeros at the outputs past a phase's own (so
        in a weight gradient they add nothing)."""
        h, w, N = self.h, self.w, self.N
        out[...] = 0
        for blk, a, b in self._phases():
            out[blk * N:(blk + 1) * N, :, :h.outs[a], :w.outs[b]] = dy[:, :, a::h.d, b::w.d]
        return out

    def scatter(self, y, out):
        """The undilated problem's output y into the dilated conv's ``out`` (N, K, P, Q)."""
        h, w, N = self.h, self.w, self.N
        for blk, a, b in self._phases():
            out[:, :, a::h.d, b::w.d] = y[blk * N:(blk + 1) * N, :, :h.outs[a], :w.outs[b]]
        return out
