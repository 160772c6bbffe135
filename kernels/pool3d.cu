// pool3d.cu -- 3-D max and average pooling, fixed-window and adaptive, NCDHW.
//
// x (N, C, D, H, W) -> y (N, C, Z, P, Q); max pools optionally write int64 indices (N, C, Z, P, Q), the flat
// position (d*H + h)*W + w of the chosen tap inside its (n, c) volume. Semantics are the oracle's
// (fastconv/_backends/numpy_oracle.py), those of the 2-D kernels (pool.cu) with a depth axis: padding is
// never selected by max; a value is taken when it is greater than the best so far or is NaN, scanning the
// window row-major over (d, h, w) (so a NaN wins, the last NaN gives the index, ties keep the first); the
// index starts at the window's first in-bounds tap; avg divides by divisor_override, else by the window
// clipped to the padded input [-pad_before, in + pad_after) per axis (count_include_pad) or to the input.
// Pads are per side (front/back, top/bottom, left/right). Adaptive windows span
// [floor(i*In/Out), ceil((i+1)*In/Out)) along each axis and take the same code paths.
//
// The window, the scan and both rules are common.cuh's (pooling): the 2-D kernels' v1 bodies, which are
// written over (D, H, W). Template parameters: T storage (float, double, __half with float accumulation),
// I index type (int or long long, chosen per call by the launcher, fastconv/_cuda/pool3d.py).
//
// Versions:
//   max_pool3d_v1  one thread per output, window scanned from global memory (neighbouring threads share
//                  their loads through L1/L2)
//   avg_pool3d_v1  one thread per output, same structure
//   max_pool3d_global_v1, avg_pool3d_global_v1  one warp per (n, c) volume for windows that are the whole
//                  volume (global pooling, adaptive 1x1x1): coalesced strided loads, then a shuffle
//                  reduction (max: a combine that reproduces the row-major scan's choice exactly); the 2-D
//                  family's global kernels, over D*H*W
//
// Sections: v1 one output per thread | v1 global pooling

#include "common.cuh"

// ================================================================ v1 one output per thread
template <typename T, typename I>
__global__ void max_pool3d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                              long long* __restrict__ indices) {
  const I total = (I)p.N * p.C * out_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  max_pool_output<3>(p, x, y, indices, o);
}

template <typename T, typename I>
__global__ void avg_pool3d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  const I total = (I)p.N * p.C * out_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  avg_pool_output<3>(p, x, y, o);
}

// ================================================================ v1 global pooling
// Launcher: the window is the whole volume (Z == P == Q == 1 and adaptive, or T == D, R == H, S == W, no
// padding, dilation 1).
template <typename T, typename I>
__global__ void max_pool3d_global_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                                     long long* __restrict__ indices) {
  max_pool_whole_plane<3, T, I>(p, x, y, indices);
}

template <typename T, typename I>
__global__ void avg_pool3d_global_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  avg_pool_whole_plane<3, T, I>(p, x, y);
}
