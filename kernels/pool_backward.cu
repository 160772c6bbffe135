// pool_backward.cu -- gradients of the 2-D pools (max, average, fixed-window and adaptive) and max_unpool,
// NCHW. 1-D problems run as H = 1.
//
// The PoolParams are the *forward* pool's (kernels/common.cuh): input N C H W, window R S, output P Q.
//   pool gradients: dy (N, C, P, Q) [+ the forward's int64 indices (N, C, P, Q)] -> dx (N, C, H, W)
//   max_unpool:     x (N, C, P, Q), int64 indices (N, C, P, Q) -> out (N, C, H, W) (H x W the unpooled size)
// Semantics are the oracle's (fastconv/_backends/numpy_oracle.py):
//   max kinds  dx[i] = sum of dy over the outputs whose index is i (windows sharing a maximum each add);
//   avg kinds  every input position a window covers gets dy / divisor of that window (the forward's
//              divisor: divisor_override, else the window clipped to the padded input (count_include_pad;
//              ceil_mode's overhang past the after-side padding never counts) or to the input; adaptive:
//              the window's area); windows start at o*stride - pad_top (pad_left);
//   max_unpool zeros, with x written at the index each element names in its plane; where a plane names
//              one position several times the last element in row-major (p, q) order wins.
// Gather form throughout: one thread per output element reads what reaches it, in a fixed order, so
// results are bitwise reproducible and no floating-point atomics are needed. Index values are checked by
// the public functions before any launch (in [0, H*W) and, for the pool gradients, inside their window).
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/pool_backward.py), and for the pool
// gradients ADAPTIVE, which the launcher passes in the name expression.
//
// Versions:
//   max_pool2d_backward_v1  one thread per dx element; loops over the output windows whose span holds
//                           it (a range of p and of q computed from h and w, not a scan of P x Q) and adds
//                           dy where the forward's index names this element; ADAPTIVE = 1 for adaptive
//                           windows (a template argument, so each instantiation has one window rule)
//   avg_pool2d_backward_v1  one thread per dx element; the same ranges, each window adding dy / divisor
//   max_unpool2d_v1         one thread per (n, c) plane: zero the plane, then write x in row-major order
//                           (the last write wins by construction; teaching only: N*C threads in all)
//   max_unpool2d_*_v2       the shipped unpool, three launches over an int owner workspace (N*C*H*W):
//                           init_v2 sets every owner to -1; claim_v2, one thread per input element,
//                           takes its target with an integer atomicMax of its plane position p*Q + q (the
//                           largest, i.e. the last in row-major order, wins whatever the schedule);
//                           write_v2, one thread per output element, writes x[owner] or 0
//
// The window ranges, both gradient rules and the unpool claim are common.cuh's (pooling), shared with the
// 3-D kernels (pool3d_backward.cu); this file's problems have D = T = Z = 1.
//
// Sections: v1 pool gradients | v1 max_unpool | v2 max_unpool

#include "common.cuh"

// ================================================================ v1 pool gradients
// ADAPTIVE (the launcher's, from the spec) selects the window rule at compile time.
template <typename T, typename I, int ADAPTIVE>
__global__ void max_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy,
                                       const long long* __restrict__ indices, T* __restrict__ dx) {
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  max_pool_grad_element<2, ADAPTIVE>(p, dy, indices, dx, o);
}

template <typename T, typename I, int ADAPTIVE>
__global__ void avg_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy, T* __restrict__ dx) {
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  avg_pool_grad_element<2, ADAPTIVE>(p, dy, dx, o);
}

// ================================================================ v1 max_unpool
// One thread per (n, c) plane, in order: the last element naming a position writes it last.
template <typename T, typename I>
__global__ void max_unpool2d_v1(const PoolParams p, const T* __restrict__ x, const long long* __restrict__ indices,
                                T* __restrict__ out) {
  const I planes = (I)p.N * p.C;
  const I nc = global_thread_index<I>();
  if (nc >= planes) return;
  const I HW = (I)p.H * p.W, PQ = (I)p.P * p.Q;
  T* dst = out + nc * HW;
  const T zero = Acc<T>::store(0);
  for (I i = 0; i < HW; ++i) dst[i] = zero;
  const T* src = x + nc * PQ;
  const long long* idx = indices + nc * PQ;
  for (I j = 0; j < PQ; ++j) dst[idx[j]] = src[j];
}

// ================================================================ v2 max_unpool
// The owner workspace of common.cuh (unpool_claim, unpool_write): init sets every owner to -1.
template <typename T, typename I>
__global__ void max_unpool2d_init_v2(const PoolParams p, int* __restrict__ owner) {
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  owner[o] = -1;
}

template <typename T, typename I>
__global__ void max_unpool2d_claim_v2(const PoolParams p, const long long* __restrict__ indices,
                                      int* __restrict__ owner) {
  const I total = (I)p.N * p.C * p.P * p.Q;
  const I i = global_thread_index<I>();
  if (i >= total) return;
  unpool_claim<2>(p, indices, owner, i);
}

template <typename T, typename I>
__global__ void max_unpool2d_write_v2(const PoolParams p, const T* __restrict__ x, const int* __restrict__ owner,
                                      T* __restrict__ out) {
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  unpool_write<2>(p, x, owner, out, o);
}
