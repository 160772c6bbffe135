"""fastconv over dask arrays: the same ops, the same results, spread over a Dask cluster.

    import dask.array as da, fastconv.dask as fd
    x = da.from_zarr(...)                          # (N, C, H, W), chunked anywhere
    y = fd.conv2d(x, weight, bias, padding=1)      # lazy: a dask array, chunked like x
    y = fd.sequential([partial(fastconv.conv2d, weight=w1, padding=1), relu,
                       partial(fastconv.max_pool2d, kernel_size=2)], x)   # one halo for the whole stack

Each op has the signature of its single-array twin in :mod:`fastconv` (and so of ``torch.nn.functional``;
``conv1d/2d/3d`` add ``out_channel_chunks=``, the output's channel chunks), takes a ``dask.array.Array`` as ``input`` (NumPy or CuPy chunks; the weight and bias are small NumPy or CuPy
arrays of the same kind, sent whole with the graph) and returns one, lazily. Results equal the single-array op
on the whole array: bitwise for max pools, within :mod:`fastconv.testing`'s tolerance otherwise (a block's
call may take another algorithm or summation order than the whole array's).

- Batch chunks map block by block, and so do channel chunks of pools and of grouped convolutions (rechunked
  to whole groups, with a :class:`ChunkWarning`, where a chunk cuts a group). A convolution's input-channel
  chunks each give a partial result where they live; a task sums them (in float32 for float16 inputs).
- Spatial chunks get a halo: each output block belongs to the chunk its window starts in and reads past it
  only what its windows read, the padding is applied once at the array's true edges (``padding_mode`` too,
  by ``dask.array.pad``), and stride, dilation, ``ceil_mode``, ``count_include_pad`` and adaptive windows
  give the single array's result. A block reads past its chunk into one neighbour only (up to ``d*(k-1)``
  positions; a transposed convolution reads before its chunk): an interior chunk shorter than that is joined
  to its neighbours, with a :class:`ChunkWarning`.
- max_unpool and unfold join the spatial axes, fold its L axis (an index or a column may name any position
  of its plane), with a ChunkWarning; their batch and channel chunks map (:mod:`._transpose`).
- The graph has one task per output block, plus one slicing task per halo piece taken from a neighbouring
  chunk (and, for chunked input channels, one partial per channel chunk).

Requires the ``[dask]`` extra (dask[array], distributed). ``import fastconv`` does not import this module.
"""
from __future__ import annotations

from . import _transpose
from ._ops import ChunkWarning, conv, pool
from ._stack import sequential

__all__ = ["conv1d", "conv2d", "conv3d", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
           "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d",
           "lp_pool3d", "sequential", "ChunkWarning"]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto", out_channel_chunks=None):
    """:func:`fastconv.conv1d` over a dask array. Beyond it, ``out_channel_chunks`` (groups=1): the
    output's channel chunks, an int (chunks of that many) or sizes; default one chunk, every output channel.
    Each output-channel chunk is its own task per block, reading the same input."""
    return conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo,
                out_channel_chunks)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto", out_channel_chunks=None):
    """:func:`fastconv.conv2d` over a dask array (N, C, H, W) or (C, H, W). Beyond it,
    ``out_channel_chunks`` (groups=1): the output's channel chunks, an int (chunks of that many) or sizes; default one chunk, every output channel.
    Each output-channel chunk is its own task per block, reading the same input."""
    return conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo,
                out_channel_chunks)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           backend=None, algo="auto", out_channel_chunks=None):
    """:func:`fastconv.conv3d` over a dask array. Beyond it, ``out_channel_chunks`` (groups=1): the
    output's channel chunks, an int (chunks of that many) or sizes; default one chunk, every output channel.
    Each output-channel chunk is its own task per block, reading the same input."""
    return conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend, algo,
                out_channel_chunks)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """:func:`fastconv.max_pool1d` over a dask array; indices are positions in the whole input."""
    return pool(1, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """:func:`fastconv.max_pool2d` over a dask array; indices are flat positions in the whole input plane."""
    return pool(2, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """:func:`fastconv.max_pool3d` over a dask array; indices are flat positions in the whole input volume."""
    return pool(3, "max", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               *, backend=None):
    """:func:`fastconv.avg_pool1d` over a dask array."""
    return pool(1, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """:func:`fastconv.avg_pool2d` over a dask array."""
    return pool(2, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """:func:`fastconv.avg_pool3d` over a dask array."""
    return pool(3, "avg", input, backend, kernel_size=kernel_size, stride=stride, padding=padding,
                ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override)


def adaptive_avg_pool1d(input, output_size, *, backend=None):
    """:func:`fastconv.adaptive_avg_pool1d` over a dask array. A block boundary must fall where windows do
    not overlap (``o * In`` divisible by ``Out``): where none does, the axis is one block."""
    return pool(1, "adaptive_avg", input, backend, output_size=output_size)


def adaptive_avg_pool2d(input, output_size, *, backend=None):
    """:func:`fastconv.adaptive_avg_pool2d` over a dask array (blocks as adaptive_avg_pool1d's)."""
    return pool(2, "adaptive_avg", input, backend, output_size=output_size)


def adaptive_avg_pool3d(input, output_size, *, backend=None):
    """:func:`fastconv.adaptive_avg_pool3d` over a dask array (blocks as adaptive_avg_pool1d's)."""
    return pool(3, "adaptive_avg", input, backend, output_size=output_size)


def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    """:func:`fastconv.adaptive_max_pool1d` over a dask array (blocks as adaptive_avg_pool1d's)."""
    return pool(1, "adaptive_max", input, backend, output_size=output_size, return_indices=return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    """:func:`fastconv.adaptive_max_pool2d` over a dask array (blocks as adaptive_avg_pool1d's)."""
    return pool(2, "adaptive_max", input, backend, output_size=output_size, return_indices=return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False, *, backend=None):
    """:func:`fastconv.adaptive_max_pool3d` over a dask array (blocks as adaptive_avg_pool1d's)."""
    return pool(3, "adaptive_max", input, backend, output_size=output_size, return_indices=return_indices)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """:func:`fastconv.lp_pool1d` over a dask array."""
    return pool(1, "lp", input, backend, norm_type=norm_type, kernel_size=kernel_size, stride=stride,
                ceil_mode=ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """:func:`fastconv.lp_pool2d` over a dask array."""
    return pool(2, "lp", input, backend, norm_type=norm_type, kernel_size=kernel_size, stride=stride,
                ceil_mode=ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """:func:`fastconv.lp_pool3d` over a dask array."""
    return pool(3, "lp", input, backend, norm_type=norm_type, kernel_size=kernel_size, stride=stride,
                ceil_mode=ceil_mode)


# ---------------------------------------------------------------------------------------------------
# Transposed convolutions, max_unpool, unfold and fold (fastconv/dask/_transpose.py)
# ---------------------------------------------------------------------------------------------------

__all__ += ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "max_unpool1d", "max_unpool2d",
            "max_unpool3d", "unfold", "fold"]


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """:func:`fastconv.conv_transpose1d` over a dask array: spatial chunks with a halo (each output block
    reads its chunk and the inputs before it whose taps reach into it), input-channel chunks as conv1d's."""
    return _transpose.conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation,
                                     padding_mode, backend, algo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """:func:`fastconv.conv_transpose2d` over a dask array (N, C_in, H, W) or (C_in, H, W) (chunks as
    conv_transpose1d's)."""
    return _transpose.conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation,
                                     padding_mode, backend, algo)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     padding_mode="zeros", backend=None, algo="auto"):
    """:func:`fastconv.conv_transpose3d` over a dask array (chunks as conv_transpose1d's)."""
    return _transpose.conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation,
                                     padding_mode, backend, algo)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """:func:`fastconv.max_unpool1d` over dask arrays ``input`` and ``indices`` (of input's shape; rechunked to
    input's chunks, with a :class:`ChunkWarning`, where they differ). Batch and channel chunks map; the
    spatial axis is joined into one chunk (an index may name any output position), with a ChunkWarning."""
    return _transpose.max_unpool(1, input, indices, kernel_size, stride, padding, output_size, backend)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """:func:`fastconv.max_unpool2d` over dask arrays (chunks as max_unpool1d's)."""
    return _transpose.max_unpool(2, input, indices, kernel_size, stride, padding, output_size, backend)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None, *, backend=None):
    """:func:`fastconv.max_unpool3d` over dask arrays (chunks as max_unpool1d's)."""
    return _transpose.max_unpool(3, input, indices, kernel_size, stride, padding, output_size, backend)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """:func:`fastconv.unfold` over a dask array: batch chunks map, channel chunk ``[c0, c1)`` gives output rows
    ``[c0*prod(kernel_size), c1*prod(kernel_size))``; spatial axes are joined into one chunk (the L axis
    flattens them), with a :class:`ChunkWarning`."""
    return _transpose.unfold(input, kernel_size, dilation, padding, stride, backend)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1, *, backend=None):
    """:func:`fastconv.fold` over a dask array (N, C*prod(kernel_size), L): batch chunks map, row chunks that
    are multiples of prod(kernel_size) map to channel chunks (rechunked to such, with a
    :class:`ChunkWarning`, where they are not); the L axis is joined into one chunk, with a ChunkWarning."""
    return _transpose.fold(input, output_size, kernel_size, dilation, padding, stride, backend)
