// pool3d_backward.cu -- gradients of the 3-D pools (max, average, fixed-window and adaptive) and 3-D
// max_unpool, NCDHW.
//
// The PoolParams are the *forward* pool's (kernels/common.cuh): input N C D H W, window T R S, output Z P Q.
//   pool gradients: dy (N, C, Z, P, Q) [+ the forward's int64 indices, same shape] -> dx (N, C, D, H, W)
//   max_unpool:     x (N, C, Z, P, Q), int64 indices (same shape) -> out (N, C, D, H, W) (the unpooled size)
// Semantics are the oracle's (fastconv/_backends/numpy_oracle.py), those of pool_backward.cu with a depth
// axis:
//   max kinds  dx[i] = sum of dy over the outputs whose index is i (flat (d*H + h)*W + w in the volume);
//   avg kinds  every input position a window covers gets dy / divisor of that window (the forward's divisor,
//              per-side pads included);
//   max_unpool zeros, with x written at the index each element names in its volume; where a volume names
//              one position several times the last element in row-major (z, p, q) order wins.
// Gather form for the gradients (one thread per dx element reads the windows holding it, in (z, p, q)
// order: no floating-point atomics, bitwise reproducible); max_unpool claims its targets with an integer
// atomicMax of the element's position, which does not depend on the schedule either. Index values are
// checked by the public functions before any launch.
//
// The window ranges, both gradient rules and the unpool claim are common.cuh's (pooling), shared with the
// 2-D kernels (pool_backward.cu). Template parameters: T storage (float, double, __half with float
// accumulation), I index type (int or long long, chosen per call by the launcher,
// fastconv/_cuda/pool3d_backward.py), and for the pool gradients ADAPTIVE (the launcher's, from the spec).
//
// Versions:
//   max_pool3d_backward_v1  one thread per dx element; loops over the output windows whose span holds it
//                           (ranges of z, p and q computed from d, h and w) and adds dy where the forward's
//                           index names this element
//   avg_pool3d_backward_v1  one thread per dx element; the same ranges, each window adding dy / divisor
//   max_unpool3d_*_v1       three launches over an int owner workspace (N*C*D*H*W): init sets every owner
//                           to -1; claim, one thread per input element, takes its target with an integer
//                           atomicMax of its volume position (z*P + p)*Q + q; write, one thread per output
//                           element, writes x[owner] or 0
//
// Sections: v1 pool gradients | v1 max_unpool

#include "common.cuh"

// ================================================================ v1 pool gradients
template <typename T, typename I, int ADAPTIVE>
__global__ void max_pool3d_backward_v1(const PoolParams p, const T* __restrict__ dy,
                                       const long long* __restrict__ indices, T* __restrict__ dx) {
  const I total = (I)p.N * p.C * in_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  max_pool_grad_element<3, ADAPTIVE>(p, dy, indices, dx, o);
}

template <typename T, typename I, int ADAPTIVE>
__global__ void avg_pool3d_backward_v1(const PoolParams p, const T* __restrict__ dy, T* __restrict__ dx) {
  const I total = (I)p.N * p.C * in_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  avg_pool_grad_element<3, ADAPTIVE>(p, dy, dx, o);
}

// ================================================================ v1 max_unpool
template <typename T, typename I>
__global__ void max_unpool3d_init_v1(const PoolParams p, int* __restrict__ owner) {
  const I total = (I)p.N * p.C * in_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  owner[o] = -1;
}

template <typename T, typename I>
__global__ void max_unpool3d_claim_v1(const PoolParams p, const long long* __restrict__ indices,
                                      int* __restrict__ owner) {
  const I total = (I)p.N * p.C * out_plane<3, I>(p);
  const I i = global_thread_index<I>();
  if (i >= total) return;
  unpool_claim<3>(p, indices, owner, i);
}

template <typename T, typename I>
__global__ void max_unpool3d_write_v1(const PoolParams p, const T* __restrict__ x, const int* __restrict__ owner,
                                      T* __restrict__ out) {
  const I total = (I)p.N * p.C * in_plane<3, I>(p);
  const I o = global_thread_index<I>();
  if (o >= total) return;
  unpool_write<3>(p, x, owner, out, o);
}
