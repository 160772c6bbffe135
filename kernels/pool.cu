// pool.cu -- 2-D max and average pooling, fixed-window and adaptive, NCHW. 1-D pools run as H = 1.
//
// x (N, C, H, W) -> y (N, C, P, Q); max pools optionally write int64 indices (N, C, P, Q), the flat
// position h * W + w of the chosen tap inside its (n, c) plane. Semantics are the oracle's
// (fastconv/_backends/numpy_oracle.py): padding is never selected by max; a value is taken when it is
// greater than the best so far or is NaN (scanning row-major, so NaN wins and the last NaN gives the
// index, ties keep the first); the index starts at the window's first in-bounds tap; avg divides by
// divisor_override, else by the window clipped to the padded input (count_include_pad) or to the input.
// Padding is per side: windows start at o*stride - pad_top (pad_left), the padded extent ends at
// H + pad_bottom (W + pad_right). Adaptive windows span [floor(i*In/Out), ceil((i+1)*In/Out)) and take
// the same code paths. The window geometry and both rules are common.cuh's (pooling), shared with the
// 3-D kernels (pool3d.cu); this file's problems have D = T = Z = 1.
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type
// (int or long long, chosen per call by the launcher), and for the v2 window kernels OPT and PAIR, which
// the launcher (fastconv/_cuda/pool.py) owns and passes in the name expression.
//
// Versions:
//   max_pool2d_v1  one thread per output, window scanned from global memory (the loads are reused
//                  across neighbouring threads through L1/L2; no shared-memory staging needed)
//   avg_pool2d_v1  one thread per output, same structure
//   max_pool2d_v2, avg_pool2d_v2  OPT outputs per thread (blockDim.x apart, so every load and store of
//                  the block stays coalesced) scanned together, the window loop outermost, so OPT
//                  independent loads are in flight per tap; the PAIR = 1 instantiation is for windows
//                  of width 2 at stride 2 (no horizontal padding or dilation, W even) and loads both
//                  taps of a row as one aligned pair
//   max_pool2d_global_v2, avg_pool2d_global_v2  one warp per (n, c) plane for windows that are the
//                  whole plane (global pooling, adaptive 1x1): coalesced strided loads, then a shuffle
//                  reduction (max: a combine that reproduces the row-major scan's choice exactly)
//
// Sections: v1 one output per thread | v2 several outputs per thread | v2 global pooling

#include "common.cuh"

// ================================================================ v1 one output per thread
template <typename T, typename I>
__global__ void max_pool2d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                              long long* __restrict__ indices) {
  const I total = (I)p.N * p.C * p.P * p.Q;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  max_pool_output<2>(p, x, y, indices, o);
}

template <typename T, typename I>
__global__ void avg_pool2d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  const I total = (I)p.N * p.C * p.P * p.Q;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  avg_pool_output<2>(p, x, y, o);
}

// ================================================================ v2 several outputs per thread
// Output j of a thread is o = blockIdx.x * OPT * blockDim.x + j * blockDim.x + threadIdx.x: for each j the
// block's threads touch consecutive outputs, so loads and stores stay coalesced, and the window loop runs
// outermost with the OPT outputs unrolled inside it, so each tap issues OPT independent loads.
// PAIR = 1 (launcher: not adaptive, S == stride_w == 2, pad_left == pad_right == 0, dil_w == 1, W even): a
// row's two taps (h, 2q) and (h, 2q + 1) are one pair, loaded as one aligned access when x itself is aligned (a
// contiguous view may start anywhere; then two plain loads).

// Two adjacent taps, loaded as one access.
template <typename T>
struct alignas(2 * sizeof(T)) TapPair {
  T a, b;
};

template <typename T>
__device__ __forceinline__ bool pair_aligned(const T* x) {
  return reinterpret_cast<unsigned long long>(x) % (2 * sizeof(T)) == 0;
}

template <typename T>
__device__ __forceinline__ TapPair<T> load_pair(const T* at, bool aligned) {
  if (aligned) return *reinterpret_cast<const TapPair<T>*>(at);
  TapPair<T> t;
  t.a = at[0];
  t.b = at[1];
  return t;
}

// The windows and plane of each of a thread's OPT outputs; a dead output (past the end) gets no taps.
template <typename I, int OPT, int PAIR>
struct PoolOutputs {
  Taps td;        // the depth taps (D == Z == 1: the same for every output)
  Taps th[OPT], tw[OPT];
  I plane[OPT];   // offset of the (n, c) input plane
  bool live[OPT];
  int rows, cols; // the largest window among them

  __device__ __forceinline__ PoolOutputs(const PoolParams& p) {
    const I total = (I)p.N * p.C * p.P * p.Q;
    const I o0 = (I)blockIdx.x * (OPT * (I)blockDim.x) + threadIdx.x;
    rows = cols = 0;
#pragma unroll
    for (int j = 0; j < OPT; ++j) {
      const I o = o0 + (I)j * blockDim.x;
      live[j] = o < total;
      const PoolWindow<2, I> win(p, live[j] ? o : 0);
      if (j == 0) td = win.td;
      th[j] = win.th;
      tw[j] = win.tw;
      if (!live[j]) th[j].count = 0;
      plane[j] = win.plane;
      rows = max(rows, th[j].count);
      cols = max(cols, tw[j].count);
    }
  }
  __device__ __forceinline__ I out(int j) const {
    return (I)blockIdx.x * (OPT * (I)blockDim.x) + (I)j * blockDim.x + threadIdx.x;
  }

  // take(j, v, idx) for every tap of output j inside the input, row-major for each j (v, idx as in
  // PoolWindow::scan), the window loop outermost and the OPT outputs unrolled inside it
  template <typename T, typename F>
  __device__ __forceinline__ void scan(const PoolParams& p, const T* __restrict__ x, F take) const {
    const bool aligned = pair_aligned(x);
    for (int r = 0; r < rows; ++r) {
      if constexpr (PAIR) {
#pragma unroll
        for (int j = 0; j < OPT; ++j) {
          const int h = th[j].start + r * th[j].step;
          if (r >= th[j].count || h < 0 || h >= p.H) continue;
          const I at = (I)h * p.W + tw[j].start;
          const TapPair<T> t = load_pair(x + plane[j] + at, aligned);
          take(j, Acc<T>::load(t.a), (long long)at);
          take(j, Acc<T>::load(t.b), (long long)at + 1);
        }
      } else {
        for (int s = 0; s < cols; ++s) {
#pragma unroll
          for (int j = 0; j < OPT; ++j) {
            const int h = th[j].start + r * th[j].step;
            const int w = tw[j].start + s * tw[j].step;
            if (r >= th[j].count || s >= tw[j].count || h < 0 || h >= p.H || w < 0 || w >= p.W) continue;
            take(j, Acc<T>::load(x[plane[j] + (I)h * p.W + w]), (long long)h * p.W + w);
          }
        }
      }
    }
  }
};

template <typename T, typename I, int OPT, int PAIR>
__global__ void max_pool2d_v2(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                              long long* __restrict__ indices) {
  typedef typename Acc<T>::type A;
  const PoolOutputs<I, OPT, PAIR> o(p);
  A best[OPT];
  long long best_idx[OPT];
#pragma unroll
  for (int j = 0; j < OPT; ++j) {
    best[j] = -INFINITY;
    best_idx[j] = (long long)first_inbounds(o.th[j]) * p.W + first_inbounds(o.tw[j]);  // D == 1
  }
  o.scan(p, x, [&](int j, A v, long long idx) { max_take(v, idx, best[j], best_idx[j]); });
#pragma unroll
  for (int j = 0; j < OPT; ++j) {
    if (!o.live[j]) continue;
    y[o.out(j)] = Acc<T>::store(best[j]);
    if (p.return_indices) indices[o.out(j)] = best_idx[j];
  }
}

template <typename T, typename I, int OPT, int PAIR>
__global__ void avg_pool2d_v2(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const PoolOutputs<I, OPT, PAIR> o(p);
  A sum[OPT];
#pragma unroll
  for (int j = 0; j < OPT; ++j) sum[j] = 0;
  o.scan(p, x, [&](int j, A v, long long) { sum[j] += v; });
#pragma unroll
  for (int j = 0; j < OPT; ++j) {
    if (o.live[j]) {
      y[o.out(j)] = Acc<T>::store(sum[j] / (A)avg_divisor<2>(p, p.is_adaptive, o.td, o.th[j], o.tw[j]));
    }
  }
}

// ================================================================ v2 global pooling
// Launcher: the window is the whole plane (P == Q == 1 and adaptive, or R == H, S == W, no padding,
// dilation 1). One warp per (n, c) plane (common.cuh's whole-plane bodies, shared with the 3-D kernels).

template <typename T, typename I>
__global__ void max_pool2d_global_v2(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                                     long long* __restrict__ indices) {
  max_pool_whole_plane<2, T, I>(p, x, y, indices);
}

template <typename T, typename I>
__global__ void avg_pool2d_global_v2(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  avg_pool_whole_plane<2, T, I>(p, x, y);
}
