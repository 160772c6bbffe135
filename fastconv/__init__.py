"""fastconv: convolution and pooling for NumPy and CuPy arrays, with torch.nn.functional's semantics.

Backends: ``"numpy"`` (the reference oracle), ``"numba"`` (CPU, default for NumPy input), ``"cuda"``
(hand-written CUDA kernels through CuPy, default for CuPy input) and ``"cuda-emu"`` (the same CUDA kernels
run on the CPU). ``import fastconv`` compiles nothing and imports neither Numba nor CuPy.
"""
from ._dispatch import BackendUnavailable, backends
from ._shapes import conv_output_size, conv_param_count, receptive_field
from ._spec import (ConvInputGradSpec, ConvSpec, ConvWeightGradSpec, PoolGradSpec, PoolSpec, UnpoolSpec,
                    conv_spec, pool_spec)
from .functional import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, adaptive_max_pool1d,
                         adaptive_max_pool2d, adaptive_max_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, conv1d,
                         conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d, lp_pool1d,
                         lp_pool2d, lp_pool3d, max_pool1d, max_pool2d, max_pool3d, max_unpool1d, max_unpool2d,
                         max_unpool3d)
from ._fold import fold, unfold
from . import grad

__version__ = "0.1.0"

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "grad",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d", "lp_pool3d",
    "conv_output_size", "conv_param_count", "receptive_field", "backends", "BackendUnavailable",
    "ConvSpec", "PoolSpec", "ConvInputGradSpec", "ConvWeightGradSpec", "PoolGradSpec", "UnpoolSpec",
    "conv_spec", "pool_spec", "unfold", "fold",
]
