"""Where each output block of a chunked axis reads, and the padding its call adds: the halo arithmetic.

Pure integer arithmetic on one spatial axis (no Dask here), so it is tested by itself against the rule.

An output block ``[o0, o1)`` of a window op (kernel ``k``, stride ``s``, dilation ``d``, padding ``lo``/``hi``
before and after, ``ceil_mode``) reads the padded input from ``o0*s`` to ``(o1-1)*s + d*(k-1) + 1``
(:func:`fastconv._spec.input_extent`), that is real positions ``[o0*s - lo, (o1-1)*s - lo + d*(k-1) + 1)``. The
block's call gets the real positions of that range that exist, ``[in_lo, in_hi)``, and pads what lies past the
array's true edges -- and only there: a block in the middle reads its neighbours' data, never padding. So each
block's call is the single-array op restricted to its outputs, and gives the same values.

The block boundaries follow the input chunks: output ``o`` belongs to the chunk its window starts in, so a block
reads its own chunk from its first window on, plus up to ``d*(k-1)`` positions of the next one
(:attr:`Window.reach`): ``d*(k-1) + 1 - s`` more than its chunk in all (:attr:`Window.halo`, the overlap of
neighbouring blocks' reads; none when the stride is at least the window). Adaptive pools have a window per output that depends on the whole axis
(``[floor(i*In/Out), ceil((i+1)*In/Out))``); a block boundary there must be an output ``o`` with ``o*In``
divisible by ``Out``, so that the block's own adaptive call, over its ``(o1-o0)*In/Out`` positions, has the same
windows: boundaries are snapped to those.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .._spec import input_extent, output_size


@dataclass(frozen=True)
class Window:
    """One spatial axis of a window op: input size ``n``, its ``kernel``, ``stride``, ``dilation``, padding
    ``pad_lo``/``pad_hi`` (zeros, -inf or not counted, as the op's own padding), ``ceil_mode``."""

    n: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    pad_lo: int = 0
    pad_hi: int = 0
    ceil_mode: bool = False

    @property
    def extent(self) -> int:
        """Positions one window spans, ``d*(k-1) + 1``."""
        return input_extent(1, self.kernel, 1, self.dilation)

    @property
    def out(self) -> int:
        return output_size(self.n, self.kernel, self.stride, self.pad_lo, self.pad_hi, self.dilation,
                           self.ceil_mode)

    @property
    def halo(self) -> int:
        """How much neighbouring blocks' reads overlap: the window's extent minus the stride (0 if the stride
        is larger)."""
        return max(0, self.extent - self.stride)

    @property
    def reach(self) -> int:
        """The most a block reads past its own chunk's end, ``d*(k-1)``: its last window may start at the
        chunk's last position (the block then leaves unread the start of its chunk that lies before its first
        window, so it reads ``halo`` more than its chunk in all)."""
        return self.extent - 1

    def start(self, o: int) -> int:
        """The real input position where output ``o``'s window starts (negative inside the left padding)."""
        return o * self.stride - self.pad_lo

    def home(self, c: int) -> int:
        """The first output whose window starts at real position ``c`` or later."""
        return -(-(c + self.pad_lo) // self.stride)


@dataclass(frozen=True)
class Adaptive:
    """One spatial axis of an adaptive pool: input size ``n``, output size ``out``."""

    n: int
    out: int

    @property
    def align(self) -> int:
        """Block boundaries must be multiples of this: ``o*n`` divisible by ``out``."""
        return self.out // math.gcd(self.n, self.out)

    def home(self, c: int) -> int:
        return -(-(c * self.out) // self.n)


@dataclass(frozen=True)
class Block:
    """Outputs ``[out_lo, out_hi)`` of one axis: their call reads real positions ``[in_lo, in_hi)`` and adds
    ``pad_lo``/``pad_hi`` (non-zero only at the array's true edges), with the op's own ``ceil_mode``: only the
    last block can hold ceil_mode's partial window, and then it keeps the op's whole ``pad_hi``, so the
    window's rule (and an average pool's divisor) is the single array's; every other block's windows lie
    inside its range, and ceil_mode changes nothing there."""

    out_lo: int
    out_hi: int
    in_lo: int
    in_hi: int
    pad_lo: int = 0
    pad_hi: int = 0

    @property
    def size(self) -> int:
        return self.out_hi - self.out_lo


def block(axis, o0: int, o1: int) -> Block:
    """The call that computes outputs ``[o0, o1)`` of ``axis`` (a :class:`Window` or :class:`Adaptive`)."""
    if not 0 <= o0 < o1 <= axis.out:
        raise ValueError(f"outputs [{o0}, {o1}) are not inside [0, {axis.out})")
    if o0 == 0 and o1 == axis.out:
        return whole(axis)
    if isinstance(axis, Adaptive):
        if (o0 * axis.n) % axis.out or (o1 * axis.n) % axis.out:
            raise ValueError(f"adaptive block [{o0}, {o1}) is not aligned to {axis.align}")
        return Block(o0, o1, o0 * axis.n // axis.out, o1 * axis.n // axis.out)
    start = axis.start(o0)
    end = axis.start(o1 - 1) + axis.extent
    in_lo, in_hi = max(0, start), min(axis.n, end)
    if in_lo >= in_hi:
        raise ValueError(f"outputs [{o0}, {o1}) read only padding")
    if end <= axis.n + axis.pad_hi:
        return Block(o0, o1, in_lo, in_hi, in_lo - start, end - in_hi)
    # ceil_mode's last, partial window reaches past the padding: that block keeps the whole pad, and needs
    # one whole window before it for its call to run
    if in_hi + axis.pad_hi - start < axis.extent:
        raise ValueError(f"outputs [{o0}, {o1}) hold only ceil_mode's partial window")
    return Block(o0, o1, in_lo, in_hi, in_lo - start, axis.pad_hi)


def whole(axis) -> Block:
    """The whole axis as one block: exactly the single-array call."""
    if isinstance(axis, Adaptive):
        return Block(0, axis.out, 0, axis.n)
    return Block(0, axis.out, 0, axis.n, axis.pad_lo, axis.pad_hi)


def plan(axis, chunks: Sequence[int]) -> Tuple[Block, ...]:
    """The output blocks of ``axis`` over input chunks ``chunks`` (their sizes, summing to ``axis.n``): one per
    input chunk that some output's window starts in (joined to a neighbour where a block's own call could not
    run, or to the adaptive alignment), in order, covering ``[0, axis.out)`` exactly once."""
    if sum(chunks) != axis.n:
        raise ValueError(f"chunks {tuple(chunks)} do not add up to the axis size {axis.n}")
    align = axis.align if isinstance(axis, Adaptive) else 1
    return _blocks(functools.partial(block, axis), _bounds(axis.home, align, chunks, axis.out))


def _bounds(home, align: int, chunks: Sequence[int], out: int):
    """0, the first output of each chunk after the first (``home(edge)``, snapped down to ``align``), out."""
    bounds = {0, out}
    edge = 0
    for c in chunks[:-1]:
        edge += c
        o = home(edge) // align * align
        if 0 < o < out:
            bounds.add(o)
    return sorted(bounds)


def _blocks(make, bounds):
    """``make(a, b)`` for each pair of consecutive ``bounds``; where one raises ValueError (its call could not
    run alone: it reads only padding, or holds only ceil_mode's window past the padding), that block joins
    its neighbour (the first one the next, any other the one before) and the rest is made again. The whole
    axis, one block, always works: it is the single array's call."""
    bounds = list(bounds)
    while True:
        blocks, bad = [], None
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            try:
                blocks.append(make(a, b))
            except ValueError:
                bad = i
                break
        if bad is None:
            return tuple(blocks)
        del bounds[bad + 1 if bad == 0 else bad]


def sizes(blocks: Sequence[Block]) -> Tuple[int, ...]:
    """The output chunk sizes of ``blocks``."""
    return tuple(b.size for b in blocks)


# ---------------------------------------------------------------------------------------------------
# A stack of layers run as one: one halo, the stack's receptive field
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    """One axis of a stack's output block: ``layers[i]`` is layer i's :class:`Block` (None for an elementwise
    layer); the first reads the stack's input, each next one the outputs the one before computed."""

    layers: Tuple[Optional[Block], ...]

    @property
    def in_lo(self) -> int:
        return next(b for b in self.layers if b is not None).in_lo

    @property
    def in_hi(self) -> int:
        return next(b for b in self.layers if b is not None).in_hi

    @property
    def size(self) -> int:
        return next(b for b in reversed(self.layers) if b is not None).size


def stack_block(axes: Sequence[Optional[Window]], o0: int, o1: int) -> Stack:
    """Outputs ``[o0, o1)`` of the last layer of ``axes`` (None: elementwise), traced back layer by layer:
    each layer computes exactly the outputs the next one reads."""
    out = []
    lo, hi = o0, o1
    for axis in reversed(axes):
        if axis is None:
            out.append(None)
            continue
        b = block(axis, lo, hi)
        out.append(b)
        lo, hi = b.in_lo, b.in_hi
    return Stack(tuple(reversed(out)))


def plan_stack(axes: Sequence[Optional[Window]], chunks: Sequence[int]) -> Tuple[Stack, ...]:
    """The output blocks of a stack over input chunks ``chunks``, as :func:`plan`: output ``o`` belongs to the
    chunk where its receptive field starts (``o*J - offset``, the layers' strides and paddings composed)."""
    windows = [a for a in axes if a is not None]
    if sum(chunks) != windows[0].n:
        raise ValueError(f"chunks {tuple(chunks)} do not add up to the axis size {windows[0].n}")

    def start(o):
        for a in reversed(windows):
            o = a.start(o)
        return o

    base, jump = start(0), start(1) - start(0)
    bounds = _bounds(lambda edge: -(-(edge - base) // jump), 1, chunks, windows[-1].out)
    return _blocks(functools.partial(stack_block, axes), bounds)


# ---------------------------------------------------------------------------------------------------
# A transposed convolution: every input spreads over a window of outputs
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transposed:
    """One spatial axis of a transposed convolution: input size ``n``, output size ``out`` (the spec's: it
    holds ``pad_hi`` and ``output_padding``), its ``kernel``, ``stride``, ``dilation`` and the padding
    ``pad_lo`` cropped before the first output.

    Input ``i`` adds ``x[i]*w[t]`` to output ``o = i*s - pad_lo + t*d`` (t in [0, k)): it reaches outputs
    ``[i*s - pad_lo, i*s - pad_lo + e)``, ``e = d*(k-1) + 1`` the window's extent. So outputs ``[o0, o1)`` get
    contributions from the inputs ``i`` with ``o0 - e < i*s - pad_lo < o1``:

    - the last one is ``i1 - 1``, ``i1 = min(n, (o1 - 1 + pad_lo) // s + 1)``;
    - the first is ``ceil((o0 + pad_lo - e + 1) / s)``, the first whose last tap reaches ``o0``.

    A local ``conv_transpose`` over inputs ``[i0, i1)`` puts input ``i``'s tap ``t`` at local position
    ``(i - i0)*s - lo + t*d``; that is global position ``o - o0`` exactly when its padding before is
    ``lo = pad_lo + o0 - i0*s``. The padding must not be negative, so ``i0`` is the first contributing input
    or, where that one's first tap lands after ``o0`` (the stride is wider than the window), the input
    ``(o0 + pad_lo) // s`` before it, whose taps all fall in the cropped ``lo`` (it adds nothing).

    The local call's outputs without padding after end at global ``end = (i1 - 1)*s - pad_lo + e``: past
    ``o1`` they are cropped (padding after ``end - o1``), short of it the missing outputs receive no input
    and are ``output_padding = o1 - end`` (bias only), as in the whole array. That output_padding is always
    one the call takes (``< max(stride, dilation)``): in the middle of the axis ``i1 - 1`` is the last input
    before ``o1``, so ``o1 - end <= s - e < s``; at the end of the axis it is at most the op's own
    output_padding.

    Block boundaries follow the input chunks: the block of the chunk starting at input ``c`` starts where
    that input's first tap lands, ``c*s - pad_lo`` (:meth:`home`). Its call then reads the chunk and the last
    ``(e - 1) // s`` inputs of the chunk before (:attr:`halo`), whose taps reach into the block."""

    n: int
    out: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    pad_lo: int = 0

    @property
    def extent(self) -> int:
        """Outputs one input reaches, ``d*(k-1) + 1``."""
        return input_extent(1, self.kernel, 1, self.dilation)

    @property
    def halo(self) -> int:
        """How many inputs before its own chunk a block reads."""
        return (self.extent - 1) // self.stride

    @property
    def reach(self) -> int:
        """The most a block reads beyond its own chunk (before it): :attr:`halo`."""
        return self.halo

    def home(self, c: int) -> int:
        """The output where input ``c``'s first tap lands."""
        return c * self.stride - self.pad_lo


@dataclass(frozen=True)
class TransposedBlock(Block):
    """A :class:`Block` of a transposed convolution: its call crops ``pad_lo``/``pad_hi`` outputs and adds
    ``out_pad`` (its ``output_padding``) to give exactly outputs ``[out_lo, out_hi)``."""

    out_pad: int = 0


def transposed_block(axis: Transposed, o0: int, o1: int) -> TransposedBlock:
    """The call that computes outputs ``[o0, o1)`` of ``axis`` (see :class:`Transposed` for the arithmetic);
    ValueError where no input reaches them (the block lies in the output_padding, or between the taps of a
    stride wider than the window): such a block cannot be a call of its own. The whole axis always can."""
    if not 0 <= o0 < o1 <= axis.out:
        raise ValueError(f"outputs [{o0}, {o1}) are not inside [0, {axis.out})")
    s, e, lo = axis.stride, axis.extent, axis.pad_lo
    if o0 == 0 and o1 == axis.out:   # the whole axis: the single array's call (padding after less
        i0, i1 = 0, axis.n           # output_padding written as one of them), even where no input reaches it
    else:
        first = -(-(o0 + lo - e + 1) // s)
        i0 = max(0, min(first, (o0 + lo) // s))
        i1 = min(axis.n, (o1 - 1 + lo) // s + 1)
        if i1 <= first:
            raise ValueError(f"no input reaches outputs [{o0}, {o1})")
    end = (i1 - 1) * s - lo + e
    return TransposedBlock(o0, o1, i0, i1, lo + o0 - i0 * s, max(0, end - o1), max(0, o1 - end))


def plan_transposed(axis: Transposed, chunks: Sequence[int]) -> Tuple[TransposedBlock, ...]:
    """The output blocks of ``axis`` over input chunks ``chunks``, as :func:`plan`: one per input chunk whose
    first tap lands inside the output (a block no input reaches joins its neighbour), in order, covering
    ``[0, axis.out)`` exactly once."""
    if sum(chunks) != axis.n:
        raise ValueError(f"chunks {tuple(chunks)} do not add up to the axis size {axis.n}")
    return _blocks(functools.partial(transposed_block, axis), _bounds(axis.home, 1, chunks, axis.out))
