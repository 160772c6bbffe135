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
// Sections: window ranges | average divisor | v1 pool gradients | v1 max_unpool | v2 max_unpool

#include "common.cuh"

// ================================================================ window ranges
// The output windows along one axis whose span holds input position h: [lo, hi) over the outputs.
// Fixed windows: o's taps are o*stride - pad + r*dil, r < kernel, so o*stride lies in
// [h + pad - (kernel-1)*dil, h + pad]. Adaptive windows [floor(o*In/Out), ceil((o+1)*In/Out)) hold h
// exactly for o in [floor(h*Out/In), ceil((h+1)*Out/In)) (the same formulas with In and Out swapped).
// Fixed bounds in 32-bit unsigned arithmetic (one 32-bit division each): h + pad < 2^32 (pad <= kernel/2),
// and when h + pad > (kernel-1)*dil their difference is at most h (pad <= (kernel-1)*dil), so adding
// stride - 1 stays below 2^32.
struct OutRange {
  int lo, hi;
};

template <int ADAPTIVE>
__device__ __forceinline__ OutRange windows_holding(int h, int in, int out, int kernel, int stride, int pad,
                                                    int dil) {
  OutRange r;
  if constexpr (ADAPTIVE) {
    r.lo = adaptive_start(h, out, in);
    r.hi = adaptive_end(h, out, in);
  } else {
    const unsigned top = (unsigned)h + (unsigned)pad;                // o*stride <= top
    const unsigned reach = (unsigned)(kernel - 1) * (unsigned)dil;   // o*stride >= top - reach
    r.lo = top <= reach ? 0 : (int)((top - reach + (unsigned)stride - 1) / (unsigned)stride);
    r.hi = (int)min(top / (unsigned)stride + 1, (unsigned)out);
  }
  return r;
}

// Whether input position h is one of output o's taps (o from windows_holding's range): always for adaptive
// windows and dilation 1, otherwise when its offset in the window, in [0, (kernel-1)*dil], is a multiple
// of dil. (The offset lies in that range, so this only skips index loads: a max gradient's index is inside
// its window anyway.)
template <int ADAPTIVE>
__device__ __forceinline__ bool is_tap(int h, int o, int stride, int pad, int dil) {
  if (ADAPTIVE || dil == 1) return true;
  return ((h - o * stride) + pad) % dil == 0;
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
// The forward's divisor of an average-pool output, axis by axis: the window clipped to the padded input
// (count_include_pad; ceil_mode's overhang past the padding never counts) or to the input; adaptive
// windows their own length. The same rule as avg_divisor in pool.cu (whose fixed windows have dilation 1,
// as every average pool here). In int: the window's end o*stride - pad + kernel is within the launcher's
// reach limit, and where in + pad would pass 2^31 - 1 the window ends before it.
template <int ADAPTIVE>
__device__ __forceinline__ int avg_extent(int o, int in, int out, int kernel, int stride, int pad,
                                          int include_pad) {
  if constexpr (ADAPTIVE) {
    return adaptive_end(o, in, out) - adaptive_start(o, in, out);
  } else {
    int start = o * stride - pad;
    int end = start + kernel;
    if (end - pad > in) end = in + pad;
    if (!include_pad) {
      start = max(start, 0);
      end = min(end, in);
    }
    return end - start;
  }
}

// ================================================================ v1 pool gradients
// ADAPTIVE (the launcher's, from the spec) selects the window rule at compile time.
template <typename T, typename I, int ADAPTIVE>
__global__ void max_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy,
                                       const long long* __restrict__ indices, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const GradElement<I> e(p, o);
  const OutRange rp = windows_holding<ADAPTIVE>(e.h, p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const OutRange rq = windows_holding<ADAPTIVE>(e.w, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  const long long me = (long long)e.h * p.W + e.w;
  A sum = 0;
  for (int op = rp.lo; op < rp.hi; ++op) {
    if (!is_tap<ADAPTIVE>(e.h, op, p.stride_h, p.pad_h, p.dil_h)) continue;
    for (int oq = rq.lo; oq < rq.hi; ++oq) {
      if (!is_tap<ADAPTIVE>(e.w, oq, p.stride_w, p.pad_w, p.dil_w)) continue;
      const I at = e.dy_plane + (I)op * p.Q + oq;
      if (indices[at] == me) sum += Acc<T>::load(dy[at]);
    }
  }
  dx[o] = Acc<T>::store(sum);
}

template <typename T, typename I, int ADAPTIVE>
__global__ void avg_pool2d_backward_v1(const PoolParams p, const T* __restrict__ dy, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const GradElement<I> e(p, o);
  const OutRange rp = windows_holding<ADAPTIVE>(e.h, p.H, p.P, p.R, p.stride_h, p.pad_h, 1);
  const OutRange rq = windows_holding<ADAPTIVE>(e.w, p.W, p.Q, p.S, p.stride_w, p.pad_w, 1);
  A sum = 0;
  for (int op = rp.lo; op < rp.hi; ++op) {
    const long long rows = avg_extent<ADAPTIVE>(op, p.H, p.P, p.R, p.stride_h, p.pad_h, p.count_include_pad);
    for (int oq = rq.lo; oq < rq.hi; ++oq) {
      const long long div = p.divisor_override != 0
          ? (long long)p.divisor_override
          : rows * avg_extent<ADAPTIVE>(oq, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.count_include_pad);
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
