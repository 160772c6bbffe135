"""The Numba kernels of the ``numba`` backend, NCHW (NCDHW for 3-D): the index of the kernel modules.

Imported only by :mod:`fastconv._backends.numba_cpu` (itself imported on first use of the backend), so
``import fastconv`` never imports Numba. Every kernel is ``@njit(cache=True)``, parallel (``prange`` over
disjoint outputs) except the packing kernels, the serial twins and the ``CHUNKED`` kernels (serial chunks,
launched by their ``*_prange`` twins or on ``numba_cpu``'s workers): the first process compiles each (per
dtype) and writes Numba's on-disk cache next to its module (or under ``NUMBA_CACHE_DIR``); later processes
load it, and a corrupted cache file is a cache miss (``_numba_common.tolerate_corrupt_cache``, applied to
every dispatcher of every kernel module). ``prange`` runs on Numba's thread pool, so ``numba.set_num_threads`` /
``NUMBA_NUM_THREADS`` decide how many threads run.

Modules:
- ``_numba_common``  compile options, the geometry records (``ConvGeometry``, ``PoolGeometry``,
                     ``AdaptiveWindows``, each built from the spec by one function), the uint64 index
                     helpers, the corrupted-cache tolerance
- ``_numba_conv``    ``conv2d_direct`` (any conv), ``conv2d_depthwise_phase`` and ``conv2d_depthwise_flat``
                     (C/G == 1, padded zeros multiplied in), ``conv2d_depthwise`` (C/G == 1, taps clipped),
                     ``im2col_pack``
- ``_numba_pool``    ``max_pool2d``, ``avg_pool2d`` (+ ``_avg_pool_per_window``), ``adaptive_pool2d``,
                     ``global_avg_pool2d`` (a 1x1 output: avg_pool2d's, adaptive_avg_pool2d's),
                     ``max_pool2x2`` and ``avg_pool2x2`` (kernel 2, stride 2, no padding, windows whole)
- ``_numba_3d``      3-D convolutions: ``conv3d_direct``, ``vol2col_pack`` (serial), ``conv3d_input_direct``,
                     ``col2vol_add`` (serial), ``conv3d_weight_direct``
- ``_numba_3d_pool``  3-D pools: ``max_pool3d``, ``avg_pool3d``, ``adaptive_pool3d``, ``avg_pool3d_backward``,
                     ``adaptive_avg_pool3d_backward``
- ``_numba_winograd``  Winograd F(4x4, 3x3): ``winograd_filter``, ``winograd_input``, ``winograd_output``
- ``_numba_winograd_weight``  its weight gradient, F(3x3, 4x4): ``winograd_dy``, ``winograd_weight_output``,
                     ``winograd_weight_resum`` (with the forward's ``winograd_input``)
- ``_numba_planes``  ``conv2d_planes_chunks`` (any conv: whole zero-padded planes, padded zeros multiplied in;
                     CHUNKED) and its static launch ``conv2d_planes``
- ``*_serial``       ``max_pool2d``, ``avg_pool2d`` and ``conv2d_planes`` compiled without parallel loops
                     (``_numba_common.serial_twin``), for problems too small to split
- ``*_prange``       the ``CHUNKED`` kernels' chunks in one parallel loop (one chunk per iteration)
- ``_numba_grad``    the gradients: ``conv2d_input_direct``, ``col2im_add`` and ``im2col_pack_tile``
                     (serial), ``conv2d_weight_direct``,
                     ``pool2d_scatter_backward`` (+ ``_disjoint``), ``avg_pool2d_backward`` (+ ``_disjoint``),
                     ``adaptive_avg_pool2d_backward``,
                     ``max_unpool2d``
- ``_numba_depthwise_grad``  depthwise (C/groups == 1) gradients: ``conv2d_depthwise_input``,
                     ``conv2d_depthwise_weight``, ``conv2d_depthwise_weight_phase`` (padded zeros multiplied
                     in; its caller recomputes a NaN result with the exact one), ``conv2d_depthwise_weight_cblock``
                     (16 channels side by side, channel innermost; padded zeros multiplied in, as the phase one)
"""
from __future__ import annotations

from ._numba_3d import col2vol_add, conv3d_direct, conv3d_input_direct, conv3d_weight_direct, vol2col_pack
from ._numba_3d_pool import (adaptive_avg_pool3d_backward, adaptive_pool3d, avg_pool3d, avg_pool3d_backward,
                             max_pool3d)
from ._numba_common import (AdaptiveWindows, AdaptiveWindows3d, Conv3dGeometry, ConvGeometry, Pool3dGeometry,
                            PoolGeometry, adaptive_windows, adaptive_windows3d, conv3d_geometry, conv_geometry,
                            pool3d_geometry, pool_geometry)
from ._numba_conv import (KB, conv2d_depthwise, conv2d_depthwise_flat, conv2d_depthwise_flat_prange,
                          conv2d_depthwise_phase, conv2d_depthwise_phase_prange, conv2d_direct, im2col_pack,
                          im2col_pack_rows)
from ._numba_grad import (CB, KBW, adaptive_avg_pool2d_backward, avg_pool2d_backward, avg_pool2d_backward_disjoint,
                          col2im_add, conv2d_input_direct, conv2d_weight_direct, im2col_pack_tile, max_unpool2d,
                          pool2d_scatter_backward, pool2d_scatter_backward_disjoint)
from ._numba_depthwise_grad import (CBLK, LW, conv2d_depthwise_input, conv2d_depthwise_input_prange,
                                    conv2d_depthwise_weight, conv2d_depthwise_weight_cblock,
                                    conv2d_depthwise_weight_cblock_prange, conv2d_depthwise_weight_phase,
                                    conv2d_depthwise_weight_phase_prange, conv2d_depthwise_weight_prange)
from ._numba_pool import (GLOBAL_PLANES, PLANES, _avg_pool_per_window, adaptive_pool2d, avg_pool2d, avg_pool2d_serial,
                          avg_pool2x2, avg_pool2x2_prange, global_avg_pool2d, global_avg_pool2d_prange, max_pool2d,
                          max_pool2d_serial, max_pool2x2, max_pool2x2_prange)
from ._numba_planes import (KB4, LT, conv2d_planes, conv2d_planes_chunks, conv2d_planes_chunks_prange,
                            conv2d_planes_serial)
from ._numba_winograd import winograd_filter, winograd_input, winograd_output
from ._numba_winograd_weight import winograd_dy, winograd_weight_output, winograd_weight_resum

__all__ = ["AdaptiveWindows", "ConvGeometry", "PoolGeometry", "adaptive_windows", "conv_geometry", "pool_geometry",
           "KB", "conv2d_depthwise", "conv2d_depthwise_phase", "conv2d_direct", "im2col_pack", "im2col_pack_rows",
           "KB4", "LT", "conv2d_planes", "conv2d_planes_serial", "conv2d_planes_chunks", "conv2d_planes_chunks_prange",
           "avg_pool2d_serial", "max_pool2d_serial",
           "PLANES", "_avg_pool_per_window", "adaptive_pool2d", "avg_pool2d", "max_pool2d", "GLOBAL_PLANES",
           "global_avg_pool2d", "max_pool2x2", "avg_pool2x2", "max_pool2x2_prange", "avg_pool2x2_prange",
           "CB", "KBW", "adaptive_avg_pool2d_backward", "avg_pool2d_backward", "col2im_add", "conv2d_input_direct",
           "conv2d_weight_direct", "im2col_pack_tile", "max_unpool2d", "pool2d_scatter_backward",
           "pool2d_scatter_backward_disjoint", "avg_pool2d_backward_disjoint",
           "AdaptiveWindows3d", "Conv3dGeometry", "Pool3dGeometry", "adaptive_windows3d", "conv3d_geometry",
           "pool3d_geometry", "col2vol_add", "conv3d_direct", "conv3d_input_direct", "conv3d_weight_direct",
           "vol2col_pack", "adaptive_avg_pool3d_backward", "adaptive_pool3d", "avg_pool3d", "avg_pool3d_backward",
           "max_pool3d", "conv2d_depthwise_input", "conv2d_depthwise_weight", "conv2d_depthwise_weight_phase", "LW",
           "conv2d_depthwise_weight_cblock", "conv2d_depthwise_weight_cblock_prange", "CBLK",
           "winograd_filter", "winograd_input",
           "winograd_output", "winograd_dy", "winograd_weight_output", "winograd_weight_resum",
           "conv2d_depthwise_phase_prange", "conv2d_depthwise_input_prange", "conv2d_depthwise_flat",
           "conv2d_depthwise_flat_prange",
           "conv2d_depthwise_weight_prange", "conv2d_depthwise_weight_phase_prange", "global_avg_pool2d_prange",
           "MODULES", "CHUNKED", "KERNELS", "GRAD_KERNELS", "KERNELS_3D", "WINOGRAD_KERNELS"]

#: the kernel modules (every dispatcher in them has a corrupted-cache-tolerant disk cache)
MODULES = ("_numba_common", "_numba_conv", "_numba_pool", "_numba_grad", "_numba_3d", "_numba_3d_pool",
           "_numba_depthwise_grad", "_numba_winograd", "_numba_winograd_weight", "_numba_planes")

#: every kernel launched from Python, with the record type its geometry argument (``geo``/``win``) takes
#: (``_avg_pool_per_window``, launched by ``avg_pool2d``, takes the ``PoolGeometry`` that one was given)
KERNELS = {
    "conv2d_direct": ConvGeometry,
    "conv2d_depthwise": ConvGeometry,
    "conv2d_depthwise_phase": ConvGeometry,
    "conv2d_depthwise_flat": ConvGeometry,
    "conv2d_planes": ConvGeometry,
    "conv2d_planes_serial": ConvGeometry,
    "conv2d_planes_chunks": ConvGeometry,
    "im2col_pack": ConvGeometry,
    "im2col_pack_rows": ConvGeometry,
    "max_pool2d": PoolGeometry,
    "max_pool2d_serial": PoolGeometry,
    "avg_pool2d": PoolGeometry,
    "avg_pool2d_serial": PoolGeometry,
    "adaptive_pool2d": AdaptiveWindows,
    "global_avg_pool2d": PoolGeometry,
}

#: the gradient kernels launched from Python: (the record type of their geometry argument, or None for a
#: kernel that takes none; whether it runs a parallel prange). Kept apart from KERNELS, whose tests
#: exercise the forward kernels; tests/test_numba_grad.py checks these the same way.
GRAD_KERNELS = {
    "conv2d_input_direct": (ConvGeometry, True),
    "col2im_add": (ConvGeometry, False),
    "im2col_pack_tile": (ConvGeometry, False),
    "conv2d_weight_direct": (ConvGeometry, True),
    "pool2d_scatter_backward": (None, True),     # live_h/live_w: fastconv._indices.window_bounds
    "pool2d_scatter_backward_disjoint": (None, True),
    "avg_pool2d_backward": (PoolGeometry, True),
    "avg_pool2d_backward_disjoint": (PoolGeometry, True),
    "adaptive_avg_pool2d_backward": (AdaptiveWindows, True),
    "max_unpool2d": (None, True),
    "conv2d_depthwise_input": (ConvGeometry, False),      # (CHUNKED)
    "conv2d_depthwise_weight": (ConvGeometry, False),
    "conv2d_depthwise_weight_phase": (ConvGeometry, False),
    "conv2d_depthwise_weight_cblock": (ConvGeometry, False),
}

#: serial kernels whose work is cut into chunks: each takes ``c0, c1, nchunk`` last and runs chunks
#: [c0, c1) of ``nchunk``. Each has a ``<name>_prange`` launcher running its chunks on Numba's threads
#: (static: quickest on a quiet machine, but a region waits for a thread on a core another process holds);
#: ``numba_cpu._on_workers`` runs the chunks either so or on workers that claim them one at a time
#: (``_cpu_pool.run_chunks``), whichever took less time for the problem lately
CHUNKED = ("conv2d_depthwise_phase", "conv2d_depthwise_flat", "global_avg_pool2d", "conv2d_depthwise_input",
           "conv2d_depthwise_weight", "conv2d_depthwise_weight_phase", "conv2d_depthwise_weight_cblock",
           "max_pool2x2", "avg_pool2x2", "conv2d_planes_chunks")

#: the 3-D kernels launched from Python (forward and gradients): (the record type of their geometry
#: argument, whether it runs a parallel prange), as GRAD_KERNELS; tests/test_numba_3d.py checks them. The
#: 3-D max pool gradient and max_unpool run GRAD_KERNELS' plane kernels on plane-flattening views.
KERNELS_3D = {
    "conv3d_direct": (Conv3dGeometry, True),
    "vol2col_pack": (Conv3dGeometry, False),
    "conv3d_input_direct": (Conv3dGeometry, True),
    "col2vol_add": (Conv3dGeometry, False),
    "conv3d_weight_direct": (Conv3dGeometry, True),
    "max_pool3d": (Pool3dGeometry, True),
    "avg_pool3d": (Pool3dGeometry, True),
    "adaptive_pool3d": (AdaptiveWindows3d, True),
    "avg_pool3d_backward": (Pool3dGeometry, True),
    "adaptive_avg_pool3d_backward": (AdaptiveWindows3d, True),
}

#: the Winograd F(4x4, 3x3) kernels (``numba_cpu.conv_winograd``): (the record type of their geometry
#: argument, or None for a kernel that takes none; whether it runs a parallel prange), as GRAD_KERNELS;
#: tests/test_numba_winograd.py checks them.
WINOGRAD_KERNELS = {
    "winograd_filter": (None, True),
    "winograd_input": (ConvGeometry, True),
    "winograd_output": (ConvGeometry, True),
    "winograd_dy": (None, True),                 # the weight gradient's (numba_cpu.conv_weight_winograd)
    "winograd_weight_output": (None, True),
    "winograd_weight_resum": (ConvGeometry, True),
}
