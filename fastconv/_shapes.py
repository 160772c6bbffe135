"""The exported shape helpers: ``conv_output_size``, ``conv_param_count``, ``receptive_field``.

The textbook formulas, with the same argument rules as the ops; output sizes come from the one formula,
:func:`fastconv._spec.output_size`.
"""
from __future__ import annotations

import math

from ._args import _as_bool, _as_int, _as_tuple, _non_negative, _pad_pairs, _positive
from ._spec import output_size


def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output extent of a convolution or pooling window sweep (the formula the specs use).

    Scalar form: ints in, int out; ``padding`` may be an int or an asymmetric ``(before, after)`` pair.
    Per-dimension form: any of ``size``, ``kernel_size``, ``stride``, ``dilation`` a tuple of 1 to 3
    entries (ints broadcast); ``padding`` an int, or per dimension an int or a ``(before, after)`` pair;
    returns a tuple. Returns 0 in a dimension where no window fits.
    """
    ceil_mode = _as_bool(ceil_mode, "ceil_mode")
    seqs = {len(a) for a in (size, kernel_size, stride, dilation) if isinstance(a, (list, tuple))}
    if len(seqs) > 1:
        raise ValueError("size, kernel_size, stride and dilation must have the same number of dimensions, "
                         f"got {size!r}, {kernel_size!r}, {stride!r}, {dilation!r}")
    scalar = not seqs
    n = 1 if scalar else seqs.pop()
    if not 1 <= n <= 3:
        raise ValueError(f"conv_output_size supports 1 to 3 dimensions, got {n}")
    if scalar and isinstance(padding, (list, tuple)):
        padding = (tuple(padding),)  # one dimension, asymmetric (before, after)
    sizes = _non_negative(_as_tuple(size, n, "size"), "size")
    ks = _positive(_as_tuple(kernel_size, n, "kernel_size"), "kernel_size")
    ss = _positive(_as_tuple(stride, n, "stride"), "stride")
    ds = _positive(_as_tuple(dilation, n, "dilation"), "dilation")
    ps = _pad_pairs(padding, n)
    out = tuple(output_size(s, k, st, lo, hi, d, ceil_mode)
                for s, k, st, (lo, hi), d in zip(sizes, ks, ss, ps, ds))
    return out[0] if scalar else out


def conv_param_count(in_channels, out_channels, kernel_size, bias=True, groups=1) -> int:
    """Learnable parameters of a conv layer: ``out * (in/groups) * prod(kernel) + (out if bias)``.

    An int ``kernel_size`` means a square 2-D kernel (``5`` is 5x5, as in a Conv2d layer); pass a tuple
    for 1-D ``(k,)`` or 3-D ``(kd, kh, kw)``.
    """
    cin = _as_int(in_channels, "in_channels")
    cout = _as_int(out_channels, "out_channels")
    g = _as_int(groups, "groups")
    if cin < 1 or cout < 1 or g < 1:
        raise ValueError(f"in_channels, out_channels and groups must be positive, got {cin}, {cout}, {g}")
    if cin % g or cout % g:
        raise ValueError(f"in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({g})")
    if isinstance(kernel_size, (list, tuple)):
        if not 1 <= len(kernel_size) <= 3:
            raise ValueError(f"kernel_size must have 1 to 3 entries, got {kernel_size!r}")
        ks = _positive(_as_tuple(kernel_size, len(kernel_size), "kernel_size"), "kernel_size")
    else:
        ks = _positive((_as_int(kernel_size, "kernel_size"),) * 2, "kernel_size")
    bias = _as_bool(bias, "bias")
    return cout * (cin // g) * math.prod(ks) + (cout if bias else 0)


def receptive_field(layers):
    """Receptive field, in input pixels, of one output of a stack of layers.

    ``layers`` is a sequence of ``(kernel_size, stride)`` or ``(kernel_size, stride, dilation)``; each
    entry may be an int or a tuple (then the result is a tuple). Uses
    ``rf += dilation*(kernel-1)*jump; jump *= stride``, starting from rf = jump = 1.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("layers must be a non-empty sequence of (kernel_size, stride[, dilation])")
    n = 1
    for layer in layers:
        for v in layer if isinstance(layer, (list, tuple)) else ():
            if isinstance(v, (list, tuple)):
                n = max(n, len(v))
    rf, jump = [1] * n, [1] * n
    for i, layer in enumerate(layers):
        if not isinstance(layer, (list, tuple)) or len(layer) not in (2, 3):
            raise ValueError(f"layers[{i}] must be (kernel_size, stride[, dilation]), got {layer!r}")
        k = _positive(_as_tuple(layer[0], n, f"layers[{i}] kernel_size"), f"layers[{i}] kernel_size")
        s = _positive(_as_tuple(layer[1], n, f"layers[{i}] stride"), f"layers[{i}] stride")
        d = _positive(_as_tuple(layer[2] if len(layer) == 3 else 1, n, f"layers[{i}] dilation"),
                      f"layers[{i}] dilation")
        for j in range(n):
            rf[j] += d[j] * (k[j] - 1) * jump[j]
            jump[j] *= s[j]
    return rf[0] if n == 1 else tuple(rf)
