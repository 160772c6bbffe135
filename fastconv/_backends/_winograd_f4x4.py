"""The Winograd F(4x4, 3x3) transform matrices, for the numba kernels (``_numba_winograd``, which apply
them factored) and for ``fastconv.testing.winograd_tolerance`` (which applies their absolute values);
NumPy only, so the error bound needs no Numba.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), section 4.3: F(4, 3)
from the interpolation points 0, 1, -1, 2, -2 and infinity (the matrices NNPACK and oneDNN use). With
d six inputs and g three taps, ``AT @ ((G @ g) * (BT @ d))`` is the correlation
``y[i] = sum_r g[r] * d[i + r]`` for i < 4; the 2-D algorithm nests it on both axes:
``Y = AT [(G g G^T) * (BT d BT^T)] AT^T``.
"""
import numpy as np

BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)
for _m in (BT, G, AT):
    _m.flags.writeable = False
