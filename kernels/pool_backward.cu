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
//              ceil_mode's overhang never counts) or to the input; adaptive: the window's area);
//   max_unpool zeros, with x written at the index each element names in its plane; where a plane names
//              one position several times the last element in row-major (p, q) order wins.
// Gather form throughout: one thread per output element reads what reaches it, in a fixed order, so
// results are bitwise reproducible and no floating-point atomics are needed. Index values are checked by
// the public functions before any launch (in [0, H*W) and, for the pool gradients, inside their window).
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/pool_backward.py).
//
// Versions:
//   max_pool2d_backward_v1  one thread per dx element; loops over the output windows whose span holds
//                           it (a range of p and of q computed from h and w, not a scan of P x Q) and adds
//                           dy where the forward's index names this element (fixed and adaptive windows)
//   avg_pool2d_backward_v1  one thread per dx element; the same ranges, each window adding dy / divisor
//   max_unpool2d_v1         one thread per (n, c) plane: zero the plane, then write x in row-major order
//                           (the last write wins by construction; teaching only: N*C threads in all)
//   max_unpool2d_claim_v2   the shipped unpool, three launches: owner[] = -1 (max_unpool2d_init_v2);
//   max_unpool2d_init_v2    every input element claims its target with an integer atomicMax of its
//   max_unpool2d_write_v2   position p*Q + q in the plane (max_unpool2d_claim_v2; order-independent: the
//                           largest position wins whatever the schedule); then one thread per output
//                           element writes x[owner] or 0 (max_unpool2d_write_v2)
//
// Sections: window ranges | average divisor | v1 pool gradients | v1 max_unpool | v2 max_unpool

#include "common.cuh"

// ================================================================ window ranges
// The output windows along one axis whose span holds input position h: [lo, hi) over the outputs, and
// for each o in it the tap offset h - start(o) (a multiple of dil when h is one of o's taps).
// Fixed windows: o's taps are o*stride - pad + r*dil, r < kernel, so o*stride lies in
// [h + pad - (kernel-1)*dil, h + pad]. Adaptive windows [floor(o*In/Out), ceil((o+1)*In/Out)) hold h
// exactly for o in [floor(h*Out/In), ceil((h+1)*Out/In)) (the same formulas with In and Out swapped).
// The bounds are formed in long long (h + pad passes 2^31 - 1 for rows near it); once per thread and axis.
struct OutRange {
  int lo, hi;
};

__device__ __forceinline__ OutRange windows_holding(int h, int adaptive, int in, int out, int kernel,
                                                    int stride, int pad, int dil) {
  OutRange r;
  if (adaptive) {
    r.lo = adaptive_start(h, out, in);
    r.hi = adaptive_end(h, out, in);
    return r;
  }
  const long long top = (long long)h + pad;                          // o*stride <= top
  const long long bottom = top - (long long)(kernel - 1) * dil;      // o*stride >= bottom
  r.lo = bottom <= 0 ? 0 : (int)((bottom + stride - 1) / stride);
  r.hi = (int)min(top / stride + 1, (long long)out);
  return r;
}

// Whether input position h is one of output o's taps (o taken from windows_holding's range): always for
// adaptive windows and dilation 1, otherwise when its offset in the window is a multiple of dil.
__device__ __forceinline__ bool is_tap(int h, int o, int adaptive, int stride, int pad, int dil) {
  if (adaptive || dil == 1) return true;
  return ((h - o * stride) + pad) % dil == 0;   // in [0, (kernel-1)*dil]: no overflow (the launcher's limits)
}

// The dx element of thread o (flat over (n, c, h, w)): its coordinates and the offset of its (n, c)
// plane in dy / indices (P x Q planes).
template <typename I>
struct GradElement {
  int h, w;
  I dy_plane;

  __device__ __forceinline__ GradElement(const PoolParams& p, I o) {
    w = (int)(o % p.W);
    h = (int)((o / p.W) % p.H);
    dy_plane = o / ((I)p.H * p.W) * ((I)p.P * p.Q);
  }
};

// ================================================================ average divisor
// The forward's divisor of average-pool output (op, oq), axis by axis: the window clipped to the padded
// input (count_include_pad; ceil_mode's overhang past the padding never counts) or to the input. Same rule
// as avg_divisor in pool.cu (whose fixed windows have dilation 1, as every average pool here).
__device__ __forceinline__ long long avg_extent(int o, int in, int kernel, int stride, int pad, int include_pad) {
  long long start = (long long)o * stride - pad;
  long long end = min(start + kernel, (long long)in + pad);
  if (!include_pad) {
    start = max(start, 0LL);
    end = min(end, (long long)in);
  }
  return end - start;
}

// ================================================================ v1 pool gradients
template <typename T, typename I>
__global__ void max_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy,
                                       const long long* __restrict__ indices, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const GradElement<I> e(p, o);
  const OutRange rp = windows_holding(e.h, p.is_adaptive, p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const OutRange rq = windows_holding(e.w, p.is_adaptive, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  const long long me = (long long)e.h * p.W + e.w;
  A sum = 0;
  for (int op = rp.lo; op < rp.hi; ++op) {
    if (!is_tap(e.h, op, p.is_adaptive, p.stride_h, p.pad_h, p.dil_h)) continue;
    for (int oq = rq.lo; oq < rq.hi; ++oq) {
      if (!is_tap(e.w, oq, p.is_adaptive, p.stride_w, p.pad_w, p.dil_w)) continue;
      const I at = e.dy_plane + (I)op * p.Q + oq;
      if (indices[at] == me) sum += Acc<T>::load(dy[at]);
    }
  }
  dx[o] = Acc<T>::store(sum);
}

template <typename T, typename I>
__global__ void avg_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const GradElement<I> e(p, o);
  const OutRange rp = windows_holding(e.h, p.is_adaptive, p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const OutRange rq = windows_holding(e.w, p.is_adaptive, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  A sum = 0;
  for (int op = rp.lo; op < rp.hi; ++op) {
    // the window's rows: adaptive, its own length; fixed, the clipped extent (override: unused)
    const long long rows = p.is_adaptive ? (long long)(adaptive_end(op, p.H, p.P) - adaptive_start(op, p.H, p.P))
                                         : avg_extent(op, p.H, p.R, p.stride_h, p.pad_h, p.count_include_pad);
    for (int oq = rq.lo; oq < rq.hi; ++oq) {
      long long div = p.divisor_override;
      if (div == 0) {
        const long long cols = p.is_adaptive
            ? (long long)(adaptive_end(oq, p.W, p.Q) - adaptive_start(oq, p.W, p.Q))
            : avg_extent(oq, p.W, p.S, p.stride_w, p.pad_w, p.count_include_pad);
        div = rows * cols;
      }
      sum += Acc<T>::load(dy[e.dy_plane + (I)op * p.Q + oq]) / (A)div;
    }
  }
  dx[o] = Acc<T>::store(sum);
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
// owner (N*C*H*W ints): for each output element, the largest plane position p*Q + q of an input element
// naming it, or -1. Integer atomicMax makes the claim order-independent, so the write pass is exact and
// reproducible whatever the schedule.
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
  const I PQ = (I)p.P * p.Q;
  const I total = (I)p.N * p.C * PQ;
  const I i = global_thread_index<I>();
  if (i >= total) return;
  const I nc = i / PQ;
  atomicMax(owner + nc * ((I)p.H * p.W) + (I)indices[i], (int)(i - nc * PQ));  // P*Q <= 2^31 - 1: launcher
}

template <typename T, typename I>
__global__ void max_unpool2d_write_v2(const PoolParams p, const T* __restrict__ x, const int* __restrict__ owner,
                                      T* __restrict__ out) {
  const I HW = (I)p.H * p.W;
  const I total = (I)p.N * p.C * HW;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int src = owner[o];
  out[o] = src < 0 ? Acc<T>::store(0) : x[o / HW * ((I)p.P * p.Q) + src];
}
