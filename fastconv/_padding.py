"""``padding_mode``: the convolution's padding filled by reflection, replication or wrap-around.

torch.nn.Conv{1,2,3}d's semantics are the rule (torch has the keyword on the modules only; fastconv puts it
on every convolution function): the input is padded explicitly by the mode, then convolved with no
padding. So a mode never reaches a kernel: the spec that runs is an unpadded convolution of the padded
input, on every backend alike. The padding itself is the conv's (ints, per-side pairs or "same", as
validated by the spec builder), and each mode has torch's limits:

- ``"reflect"``   mirror without repeating the edge (``[c b | a b c d | c b]``); each pad < that dimension;
- ``"replicate"`` repeat the edge (``[a a | a b c d | d d]``); any pad;
- ``"circular"``  wrap around (``[c d | a b c d | a b]``); each pad <= that dimension;
- ``"zeros"``     the convolution's own zero padding (no copy).
"""
from __future__ import annotations

from typing import Sequence, Tuple

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(mode, allowed: Sequence[str] = PADDING_MODES) -> str:
    if not isinstance(mode, str) or mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(repr(m) for m in PADDING_MODES)}, got {mode!r}")
    if mode not in allowed:
        raise ValueError(f"padding_mode {mode!r} is not supported here (only {', '.join(map(repr, allowed))}, "
                         f"as in torch)")
    return mode


def check_pads(mode: str, sizes: Tuple[int, ...], pads: Tuple[Tuple[int, int], ...]) -> None:
    """torch's limits on each dimension's pads for ``mode`` (``sizes``, ``pads``: the spatial dimensions)."""
    for i, (size, (lo, hi)) in enumerate(zip(sizes, pads)):
        if mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(f"padding_mode='reflect' needs each padding smaller than its input dimension, got "
                             f"padding {(lo, hi)} for spatial dimension {i} of size {size}")
        if mode == "circular" and max(lo, hi) > size:
            raise ValueError(f"padding_mode='circular' needs each padding at most its input dimension (it would "
                             f"wrap around more than once), got padding {(lo, hi)} for spatial dimension {i} of "
                             f"size {size}")
        if mode == "replicate" and size == 0 and (lo or hi):
            raise ValueError(f"padding_mode='replicate' cannot pad an empty spatial dimension {i}")


def pad(x, pads: Tuple[Tuple[int, int], ...], mode: str):
    """A padded copy of ``x`` (NumPy or CuPy; batched or not), ``pads`` for its trailing spatial axes."""
    xp = _array_module(x)
    widths = ((0, 0),) * (x.ndim - len(pads)) + tuple(pads)
    return xp.pad(x, widths, mode=_NUMPY_MODE[mode])


def _array_module(x):
    if (type(x).__module__ or "").startswith("cupy"):
        import cupy
        return cupy
    import numpy
    return numpy
