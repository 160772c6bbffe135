// common.cuh -- what every fastconv kernel file shares: the parameter structs, the accumulation-type
// trait for float/double/__half storage, and the few constants NVRTC lacks.
//
// Compiled three ways from the same text: by CuPy's NVRTC on a GPU, by NVRTC in CI (compile checks),
// and by g++ through fastconv.emu (FASTCONV_EMU=1), whose force-included header maps the CUDA built-ins.
//
// Sections: constants | parameter structs | accumulation trait | fragments | index helpers | convolution geometry |
//           pooling | stride phases

#pragma once

#include <cuda_fp16.h>

// ================================================================ constants
// NVRTC has no <cmath>, so no INFINITY; the emulator gets it from <cmath>.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// ================================================================ parameter structs
// Passed by value to every kernel of a family. All fields are 32-bit ints (every single extent fits;
// products are formed in the kernel's index type). The Python twin is built field by field from the
// spec in fastconv/_cuda/plan.py (CONV_PARAMS_FIELDS / POOL_PARAMS_FIELDS): same names, same order;
// tests/cuda/test_params.py checks offsetof/sizeof on both sides.

struct ConvParams {
  int N, C, H, W;                                   // input  (N, C, H, W)
  int K, R, S;                                      // weight (K, C/groups, R, S)
  int P, Q;                                         // output (N, K, P, Q)
  int stride_h, stride_w;
  int pad_top, pad_bottom, pad_left, pad_right;
  int dil_h, dil_w;
  int groups, C_per_group, K_per_group;
  int has_bias;                                     // 0: the bias pointer is a dummy, never read
};

// 3-D convolutions (conv3d_*.cu): ConvParams' letters with depth, CUTLASS's Conv3dProblemSize names.
struct Conv3dParams {
  int N, C, D, H, W;                                // input  (N, C, D, H, W)
  int K, T, R, S;                                   // weight (K, C/groups, T, R, S)
  int Z, P, Q;                                      // output (N, K, Z, P, Q)
  int stride_d, stride_h, stride_w;
  int pad_front, pad_back, pad_top, pad_bottom, pad_left, pad_right;
  int dil_d, dil_h, dil_w;
  int groups, C_per_group, K_per_group;
  int has_bias;                                     // 0: the bias pointer is a dummy, never read
};

// One struct for every pool kernel, 1-D to 3-D (CUTLASS's Conv3dProblemSize letters): a 2-D problem has
// D = T = Z = 1 (and a 1-D one also H = R = P = 1), so the 2-D kernels read the same fields as the 3-D ones.
// Pads are per side: a window starts at o*stride - pad_before; the average divisor's padded extent ends at
// in + pad_after.
struct PoolParams {
  int N, C, D, H, W;                                // input  (N, C, D, H, W)
  int T, R, S;                                      // window (0 for adaptive pools)
  int Z, P, Q;                                      // output (N, C, Z, P, Q)
  int stride_d, stride_h, stride_w;
  int pad_front, pad_back, pad_top, pad_bottom, pad_left, pad_right;
  int dil_d, dil_h, dil_w;
  int is_adaptive;                                  // windows [floor(i*In/Out), ceil((i+1)*In/Out))
  int count_include_pad;                            // avg: divisor counts explicit padding
  int divisor_override;                             // avg: 0 = none
  int return_indices;                               // max: 0 = the index pointer is a dummy, never written
};

// ================================================================ accumulation trait
// Storage type T, accumulation type Acc<T>::type: float for __half, T otherwise. Kernels load through
// Acc<T>::load and store through Acc<T>::store, so no kernel is written per dtype.
template <typename T>
struct Acc {
  typedef T type;
  static __device__ __forceinline__ T load(T v) { return v; }
  static __device__ __forceinline__ T store(T v) { return v; }
};

template <>
struct Acc<__half> {
  typedef float type;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};

// ================================================================ fragments
// What the register-tiled GEMM kernels (conv_implicit_gemm.cu, conv_dgrad.cu, conv_wgrad.cu) share.
// Four consecutive accumulation-type values. float gets one 16-byte access (tiles are 16-byte aligned and
// read at multiples of 4 elements); other types read element-wise.
template <typename A>
__device__ __forceinline__ void load_frag4(const A* p, A* out) {
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = p[i];
}

struct __align__(16) Float4 {
  float v[4];
};

template <>
__device__ __forceinline__ void load_frag4<float>(const float* p, float* out) {
  const Float4 f = *reinterpret_cast<const Float4*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = f.v[i];
}

// Four consecutive storage-type values written at once (the caller checked the alignment).
template <typename T>
struct __align__(4 * sizeof(T)) Store4 {
  T v[4];
};

// One BK-deep slice of a register-tiled GEMM from shared memory: thread (tm, tn) adds the outer products of
// its TM x TN fragment. Row kk of the A tile starts at as + kk*LDA (LDB for B); a thread reads TM/4 (TN/4)
// groups of 4 consecutive values, spaced BM/(TM/4) (BN/(TN/4)) apart.
template <typename A, int BM, int BN, int BK, int TM, int TN, int LDA, int LDB>
__device__ __forceinline__ void fma_slice(const A* as, const A* bs, int tm, int tn, A (&acc)[TM][TN]) {
#pragma unroll
  for (int kk = 0; kk < BK; ++kk) {
    A af[TM], bf[TN];
#pragma unroll
    for (int i = 0; i < TM / 4; ++i) load_frag4(as + kk * LDA + i * (BM / (TM / 4)) + tm * 4, &af[i * 4]);
#pragma unroll
    for (int j = 0; j < TN / 4; ++j) load_frag4(bs + kk * LDB + j * (BN / (TN / 4)) + tn * 4, &bf[j * 4]);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] += af[i] * bf[j];
  }
}

// Non-finite (Inf or NaN) test that survives any float mode: v - v is 0 only for finite v.
template <typename A>
__device__ __forceinline__ bool not_finite(A v) {
  return !(v - v == A(0));
}

// ================================================================ index helpers
// I is the index type (int or long long), chosen per call by the launcher from the spec.
template <typename I>
__device__ __forceinline__ I global_thread_index() {
  return (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x;
}

// Adaptive pooling window [start, end) of output i: floor(i*In/Out), ceil((i+1)*In/Out).
// The products can pass 2^31 even when every buffer is small (In * Out), so they are 64-bit always.
__device__ __forceinline__ int adaptive_start(int i, int in, int out) {
  return (int)(((long long)i * in) / out);
}
__device__ __forceinline__ int adaptive_end(int i, int in, int out) {
  return (int)(((long long)(i + 1) * in + out - 1) / out);
}

// ================================================================ convolution geometry
// The input row / column of the first tap of output row op / column oq (the window's top-left corner;
// negative inside the padding). Tap (r, s) of that output is r * dil_h rows and s * dil_w columns further.
__device__ __forceinline__ int first_tap_h(const ConvParams& p, int op) { return op * p.stride_h - p.pad_top; }
__device__ __forceinline__ int first_tap_w(const ConvParams& p, int oq) { return oq * p.stride_w - p.pad_left; }
// The same for 3-D problems: the input depth / row / column of the first tap of output depth oz / row op / column oq.
__device__ __forceinline__ int first_tap_d(const Conv3dParams& p, int oz) { return oz * p.stride_d - p.pad_front; }
__device__ __forceinline__ int first_tap_h(const Conv3dParams& p, int op) { return op * p.stride_h - p.pad_top; }
__device__ __forceinline__ int first_tap_w(const Conv3dParams& p, int oq) { return oq * p.stride_w - p.pad_left; }
__device__ __forceinline__ bool conv3d_padded(const Conv3dParams& p) {
  return (p.pad_front | p.pad_back | p.pad_top | p.pad_bottom | p.pad_left | p.pad_right) != 0;
}

// A block of a tiled convolution (direct v2, depthwise) computes one tile_p x tile_q tile of outputs. Its
// grid index (the launcher's) is (outer * tiles_p + tp) * tiles_q + tq, with tiles_p = ceil(P / tile_p)
// and tiles_q = ceil(Q / tile_q); the input patch it stages starts at (h_org, w_org), the first tap of the
// tile's first output.
template <typename I>
struct OutputTile {
  int tp, tq;
  int h_org, w_org;  // input row / column of patch row / column 0
  I outer;           // the rest of the grid index: the family's own block coordinates

  __device__ __forceinline__ OutputTile(const ConvParams& p, int tile_p, int tile_q) {
    const int tiles_q = (p.Q + tile_q - 1) / tile_q;
    const int tiles_p = (p.P + tile_p - 1) / tile_p;
    I blk = blockIdx.x;
    tq = (int)(blk % tiles_q); blk /= tiles_q;
    tp = (int)(blk % tiles_p); blk /= tiles_p;
    outer = blk;
    h_org = first_tap_h(p, tp * tile_p);
    w_org = first_tap_w(p, tq * tile_q);
  }
};

// The dynamic shared memory of a tiled convolution, viewed as the accumulation type A (the launcher sizes
// it): `patches` input patches of patch_h * patch_w values, then the filter values. The kernel declares
// the buffer (extern __shared__ double fastconv_smem[]: one name and type for every instantiation).
template <typename A>
struct PatchSmem {
  int patch_size;  // patch_h * patch_w
  A* patch;
  A* filt;

  __device__ __forceinline__ PatchSmem(double* smem, int patches, int patch_h, int patch_w)
      : patch_size(patch_h * patch_w), patch(reinterpret_cast<A*>(smem)), filt(patch + patches * patch_size) {}
};

// ================================================================ pooling
// What the pool families share: pool.cu and pool_backward.cu (1-D and 2-D problems), pool3d.cu and
// pool3d_backward.cu (3-D). Every rule is written once, over (D, H, W). DIMS (2 or 3, a template argument of
// the kernels) is how many axes the kernel walks: with DIMS = 2 the depth axis is the constant D = T = Z = 1
// of every 1-D and 2-D problem, removed at compile time, so the 2-D kernels compile to 2-D code from the same
// source. Semantics are the oracle's (fastconv/_backends/numpy_oracle.py).

// The taps of one output along one axis: start, count and step. Fixed windows start at o*stride - pad_before
// and take `kernel` taps `dil` apart (some may be outside the input); adaptive windows are contiguous and
// always inside.
struct Taps {
  int start, count, step;
};

__device__ __forceinline__ Taps window_taps(int o, int adaptive, int in, int out, int kernel, int stride,
                                            int pad_before, int dil) {
  Taps t;
  if (adaptive) {
    t.start = adaptive_start(o, in, out);
    t.count = adaptive_end(o, in, out) - t.start;
    t.step = 1;
  } else {
    t.start = o * stride - pad_before;
    t.count = kernel;
    t.step = dil;
  }
  return t;
}

// Output o's taps along depth, rows and columns (depth: the single tap {0, 1, 1} when DIMS == 2).
template <int DIMS>
__device__ __forceinline__ Taps taps_d(const PoolParams& p, int o) {
  if constexpr (DIMS == 3) return window_taps(o, p.is_adaptive, p.D, p.Z, p.T, p.stride_d, p.pad_front, p.dil_d);
  return Taps{0, 1, 1};
}
__device__ __forceinline__ Taps taps_h(const PoolParams& p, int o) {
  return window_taps(o, p.is_adaptive, p.H, p.P, p.R, p.stride_h, p.pad_top, p.dil_h);
}
__device__ __forceinline__ Taps taps_w(const PoolParams& p, int o) {
  return window_taps(o, p.is_adaptive, p.W, p.Q, p.S, p.stride_w, p.pad_left, p.dil_w);
}

// First tap position >= 0 (where a max pool's index starts). In 32-bit unsigned arithmetic: -start (at most
// the before pad) plus step - 1 can pass 2^31 - 1 with per-side pads up to dil*(kernel-1), never 2^32;
// the result lies in [0, step).
__device__ __forceinline__ int first_inbounds(Taps t) {
  if (t.start >= 0) return t.start;
  const unsigned step = (unsigned)t.step;
  return (int)((unsigned)t.start + ((unsigned)-t.start + step - 1) / step * step);
}

// Elements of one input plane (D*H*W) and of one output plane (Z*P*Q), in the index type.
template <int DIMS, typename I>
__device__ __forceinline__ I in_plane(const PoolParams& p) {
  return DIMS == 3 ? (I)p.D * p.H * p.W : (I)p.H * p.W;
}
template <int DIMS, typename I>
__device__ __forceinline__ I out_plane(const PoolParams& p) {
  return DIMS == 3 ? (I)p.Z * p.P * p.Q : (I)p.P * p.Q;
}

// ---------------------------------------------------------------- the max and average rules
// One step of the row-major scan: take v when it is greater than the best so far or is NaN (so a NaN wins,
// the last NaN gives the index, ties keep the first).
template <typename A>
__device__ __forceinline__ void max_take(A v, long long idx, A& best, long long& best_idx) {
  if (v > best || isnan(v)) {
    best = v;
    best_idx = idx;
  }
}

// The average divisor's extent along one axis: an adaptive window's length; a fixed window (dilation 1)
// clipped to the padded extent [-pad_before, in + pad_after) (count_include_pad: ceil_mode's overhang past
// the after-padding never counts; the window never starts before -pad_before) or to the input [0, in).
// In long long: a window's end and in + pad_after pass 2^31 - 1 for positions near it.
__device__ __forceinline__ long long avg_extent(Taps t, int adaptive, int in, int pad_after, int include_pad) {
  if (adaptive) return t.count;
  const long long start = t.start, end = min(start + t.count, (long long)in + pad_after);
  if (include_pad) return end - start;
  return min(end, (long long)in) - max(start, 0LL);
}

// The divisor from the extents (their product, the depth and row extents already multiplied: a gradient
// forms that once per row of windows): divisor_override, else the product.
__device__ __forceinline__ long long avg_divisor_of(const PoolParams& p, long long depth_rows, long long cols) {
  return p.divisor_override != 0 ? (long long)p.divisor_override : depth_rows * cols;
}

// The depth and row extents of windows td, th (depth only when DIMS == 3) and the column extent of tw.
template <int DIMS>
__device__ __forceinline__ long long avg_extent_dh(const PoolParams& p, int adaptive, Taps td, Taps th) {
  const long long rows = avg_extent(th, adaptive, p.H, p.pad_bottom, p.count_include_pad);
  if constexpr (DIMS == 3) return avg_extent(td, adaptive, p.D, p.pad_back, p.count_include_pad) * rows;
  return rows;
}
__device__ __forceinline__ long long avg_extent_w(const PoolParams& p, int adaptive, Taps tw) {
  return avg_extent(tw, adaptive, p.W, p.pad_right, p.count_include_pad);
}

// The divisor of the average-pool output whose windows are td, th, tw. `adaptive` is p.is_adaptive (a kernel
// that knows it at compile time passes it).
template <int DIMS>
__device__ __forceinline__ long long avg_divisor(const PoolParams& p, int adaptive, Taps td, Taps th, Taps tw) {
  return avg_divisor_of(p, avg_extent_dh<DIMS>(p, adaptive, td, th), avg_extent_w(p, adaptive, tw));
}

// ---------------------------------------------------------------- forward: one output's window
// The window of output o (flat over (n, c, z, p, q)): its taps along each axis and the offset of its
// (n, c) input plane.
template <int DIMS, typename I>
struct PoolWindow {
  Taps td, th, tw;
  I plane;

  __device__ __forceinline__ PoolWindow(const PoolParams& p, I o) {
    const int q = (int)(o % p.Q);
    const I rest = o / p.Q;
    th = taps_h(p, (int)(rest % p.P));
    tw = taps_w(p, q);
    td = taps_d<DIMS>(p, DIMS == 3 ? (int)((rest / p.P) % p.Z) : 0);
    plane = o / out_plane<DIMS, I>(p) * in_plane<DIMS, I>(p);
  }

  // The flat plane position (d*H + h)*W + w of the window's first in-bounds tap (a max pool's index
  // before any tap is taken: padding is never selected).
  __device__ __forceinline__ long long first_index(const PoolParams& p) const {
    return ((long long)first_inbounds(td) * p.H + first_inbounds(th)) * p.W + first_inbounds(tw);
  }

  // take(v, idx) for every tap inside the input, row-major over (d, h, w): v the tap's value in the
  // accumulation type, idx its flat position (d*H + h)*W + w in the plane
  template <typename T, typename F>
  __device__ __forceinline__ void scan(const PoolParams& p, const T* __restrict__ x, F take) const {
    const T* in = x + plane;
    for (int t = 0; t < td.count; ++t) {
      const int d = td.start + t * td.step;
      if (DIMS == 3 && (d < 0 || d >= p.D)) continue;
      for (int r = 0; r < th.count; ++r) {
        const int h = th.start + r * th.step;
        if (h < 0 || h >= p.H) continue;
        const I row = ((I)d * p.H + h) * p.W;
        for (int s = 0; s < tw.count; ++s) {
          const int w = tw.start + s * tw.step;
          if (w < 0 || w >= p.W) continue;
          take(Acc<T>::load(in[row + w]), (long long)row + w);
        }
      }
    }
  }
};

// One max-pool output o (thread o of a one-thread-per-output kernel) and one average-pool output.
template <int DIMS, typename T, typename I>
__device__ __forceinline__ void max_pool_output(const PoolParams& p, const T* __restrict__ x, T* __restrict__ y,
                                                long long* __restrict__ indices, I o) {
  typedef typename Acc<T>::type A;
  const PoolWindow<DIMS, I> win(p, o);
  A best = -INFINITY;
  long long best_idx = win.first_index(p);
  win.scan(p, x, [&](A v, long long idx) { max_take(v, idx, best, best_idx); });
  y[o] = Acc<T>::store(best);
  if (p.return_indices) indices[o] = best_idx;
}

template <int DIMS, typename T, typename I>
__device__ __forceinline__ void avg_pool_output(const PoolParams& p, const T* __restrict__ x, T* __restrict__ y,
                                                I o) {
  typedef typename Acc<T>::type A;
  const PoolWindow<DIMS, I> win(p, o);
  A sum = 0;
  win.scan(p, x, [&](A v, long long) { sum += v; });
  y[o] = Acc<T>::store(sum / (A)avg_divisor<DIMS>(p, p.is_adaptive, win.td, win.th, win.tw));
}

// ---------------------------------------------------------------- forward: windows that are the whole plane
// Global pooling (adaptive to 1x1(x1), or a full unpadded undilated window: the launcher's predicate). One
// warp per (n, c) plane, blockDim.x / 32 planes per block; a warp past the last plane leaves whole, before
// any shuffle. Lane l scans elements l, l + 32, ... with the row-major rule (flat order is row-major over
// (d, h, w)), then the lanes combine.

// This thread's plane and lane, and the lane's part of the plane.
template <int DIMS, typename I>
struct WarpPlane {
  int lane;
  I nc;    // the (n, c) plane; N*C or more for a warp past the last plane
  I size;  // elements of the plane

  __device__ __forceinline__ WarpPlane(const PoolParams& p)
      : lane(threadIdx.x % 32), nc((I)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32),
        size(in_plane<DIMS, I>(p)) {}

  // take(v, i) for the lane's elements i = lane, lane + 32, ... of the plane (v in the accumulation type)
  template <typename T, typename F>
  __device__ __forceinline__ void scan(const T* __restrict__ x, F take) const {
    const T* plane = x + nc * size;
#pragma unroll 4
    for (I i = lane; i < size; i += 32) take(Acc<T>::load(plane[i]), i);
  }
};

// Merge two partial max scans (value, flat index) into what one row-major scan over both would keep:
// any NaN wins, the last NaN (largest index) among them; otherwise the greater value, ties the first.
template <typename A>
__device__ __forceinline__ void max_combine(A& v, long long& i, A v2, long long i2) {
  const bool nan1 = isnan(v), nan2 = isnan(v2);
  const bool take = nan2 ? (!nan1 || i2 > i) : (!nan1 && (v2 > v || (v2 == v && i2 < i)));
  if (take) {
    v = v2;
    i = i2;
  }
}

template <int DIMS, typename T, typename I>
__device__ __forceinline__ void max_pool_whole_plane(const PoolParams& p, const T* __restrict__ x,
                                                     T* __restrict__ y, long long* __restrict__ indices) {
  typedef typename Acc<T>::type A;
  const WarpPlane<DIMS, I> wp(p);
  if (wp.nc >= (I)p.N * p.C) return;
  A best = -INFINITY;
  long long best_idx = wp.lane;  // the lane's first element: kept if every one of its elements is -inf
  wp.scan(x, [&](A v, I i) { max_take(v, (long long)i, best, best_idx); });
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const A v2 = __shfl_xor_sync(0xffffffffu, best, off);
    const long long i2 = __shfl_xor_sync(0xffffffffu, best_idx, off);
    max_combine(best, best_idx, v2, i2);
  }
  if (wp.lane == 0) {
    y[wp.nc] = Acc<T>::store(best);
    if (p.return_indices) indices[wp.nc] = best_idx;
  }
}

template <int DIMS, typename T, typename I>
__device__ __forceinline__ void avg_pool_whole_plane(const PoolParams& p, const T* __restrict__ x,
                                                     T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const WarpPlane<DIMS, I> wp(p);
  if (wp.nc >= (I)p.N * p.C) return;
  A sum = 0;
  wp.scan(x, [&](A v, I) { sum += v; });
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  // the window is the whole plane: taps [0, D) x [0, H) x [0, W), as window_taps gives for both launcher cases
  if (wp.lane == 0) {
    const Taps td{0, p.D, 1}, th{0, p.H, 1}, tw{0, p.W, 1};
    y[wp.nc] = Acc<T>::store(sum / (A)avg_divisor<DIMS>(p, p.is_adaptive, td, th, tw));
  }
}

// ---------------------------------------------------------------- gradients: the windows holding a position
// The output windows along one axis whose span holds input position h: [lo, hi) over the outputs.
// Fixed windows: o's taps are o*stride - pad + r*dil, r < kernel (pad the before-side pad), so o*stride
// lies in [h + pad - (kernel-1)*dil, h + pad]. Adaptive windows [floor(o*In/Out), ceil((o+1)*In/Out))
// hold h exactly for o in [floor(h*Out/In), ceil((h+1)*Out/In)) (the same formulas with In and Out swapped).
// Fixed bounds in 32-bit unsigned arithmetic (one 32-bit division each): h + pad < 2^32 (both below 2^31),
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

// The dx element o (flat over (n, c, d, h, w)): its coordinates, the output windows holding it along each
// axis, and the offset of its (n, c) plane in dy / indices (Z x P x Q planes). Average pools pass dil 1.
template <int DIMS, int ADAPTIVE, typename I>
struct GradElement {
  int d, h, w;
  OutRange rd, rp, rq;
  I dy_plane;

  __device__ __forceinline__ GradElement(const PoolParams& p, I o, int dil_d, int dil_h, int dil_w) {
    w = (int)(o % p.W);
    const I rest = o / p.W;
    h = (int)(rest % p.H);
    dy_plane = o / in_plane<DIMS, I>(p) * out_plane<DIMS, I>(p);
    rp = windows_holding<ADAPTIVE>(h, p.H, p.P, p.R, p.stride_h, p.pad_top, dil_h);
    rq = windows_holding<ADAPTIVE>(w, p.W, p.Q, p.S, p.stride_w, p.pad_left, dil_w);
    if constexpr (DIMS == 3) {
      d = (int)((rest / p.H) % p.D);
      rd = windows_holding<ADAPTIVE>(d, p.D, p.Z, p.T, p.stride_d, p.pad_front, dil_d);
    } else {
      d = 0;
      rd = OutRange{0, 1};
    }
  }
};

// dx element o of a max pool: the sum of dy over the outputs whose index names it, in (z, p, q) order.
template <int DIMS, int ADAPTIVE, typename T, typename I>
__device__ __forceinline__ void max_pool_grad_element(const PoolParams& p, const T* __restrict__ dy,
                                                      const long long* __restrict__ indices, T* __restrict__ dx,
                                                      I o) {
  typedef typename Acc<T>::type A;
  const GradElement<DIMS, ADAPTIVE, I> e(p, o, p.dil_d, p.dil_h, p.dil_w);
  const long long me = ((long long)e.d * p.H + e.h) * p.W + e.w;
  A sum = 0;
  for (int oz = e.rd.lo; oz < e.rd.hi; ++oz) {
    if (DIMS == 3 && !is_tap<ADAPTIVE>(e.d, oz, p.stride_d, p.pad_front, p.dil_d)) continue;
    for (int op = e.rp.lo; op < e.rp.hi; ++op) {
      if (!is_tap<ADAPTIVE>(e.h, op, p.stride_h, p.pad_top, p.dil_h)) continue;
      const I row = e.dy_plane + ((I)oz * p.P + op) * p.Q;
      for (int oq = e.rq.lo; oq < e.rq.hi; ++oq) {
        if (!is_tap<ADAPTIVE>(e.w, oq, p.stride_w, p.pad_left, p.dil_w)) continue;
        if (indices[row + oq] == me) sum += Acc<T>::load(dy[row + oq]);
      }
    }
  }
  dx[o] = Acc<T>::store(sum);
}

// dx element o of an average pool: every window holding it adds dy / (that window's divisor), in (z, p, q)
// order.
template <int DIMS, int ADAPTIVE, typename T, typename I>
__device__ __forceinline__ void avg_pool_grad_element(const PoolParams& p, const T* __restrict__ dy,
                                                      T* __restrict__ dx, I o) {
  typedef typename Acc<T>::type A;
  const GradElement<DIMS, ADAPTIVE, I> e(p, o, 1, 1, 1);
  A sum = 0;
  for (int oz = e.rd.lo; oz < e.rd.hi; ++oz) {
    const Taps td = DIMS == 3 ? window_taps(oz, ADAPTIVE, p.D, p.Z, p.T, p.stride_d, p.pad_front, 1)
                              : Taps{0, 1, 1};
    for (int op = e.rp.lo; op < e.rp.hi; ++op) {
      const Taps th = window_taps(op, ADAPTIVE, p.H, p.P, p.R, p.stride_h, p.pad_top, 1);
      const long long dh = avg_extent_dh<DIMS>(p, ADAPTIVE, td, th);   // avg_divisor, hoisted out of the row
      const I row = e.dy_plane + ((I)oz * p.P + op) * p.Q;
      for (int oq = e.rq.lo; oq < e.rq.hi; ++oq) {
        const Taps tw = window_taps(oq, ADAPTIVE, p.W, p.Q, p.S, p.stride_w, p.pad_left, 1);
        sum += Acc<T>::load(dy[row + oq]) / (A)avg_divisor_of(p, dh, avg_extent_w(p, ADAPTIVE, tw));
      }
    }
  }
  dx[o] = Acc<T>::store(sum);
}

// ---------------------------------------------------------------- max_unpool over an owner workspace
// owner (N*C*D*H*W ints): for each output element, the largest plane position of an input element naming it
// (flat over the Z x P x Q plane), or -1. Integer atomicMax makes the claim order-independent, so the write
// pass is exact and reproducible whatever the schedule, and the last in row-major order wins. The launcher
// keeps Z*P*Q <= 2^31 - 1.
template <int DIMS, typename I>
__device__ __forceinline__ void unpool_claim(const PoolParams& p, const long long* __restrict__ indices,
                                             int* __restrict__ owner, I i) {
  const I nc = i / out_plane<DIMS, I>(p);
  atomicMax(owner + nc * in_plane<DIMS, I>(p) + (I)indices[i], (int)(i - nc * out_plane<DIMS, I>(p)));
}

template <int DIMS, typename T, typename I>
__device__ __forceinline__ void unpool_write(const PoolParams& p, const T* __restrict__ x,
                                             const int* __restrict__ owner, T* __restrict__ out, I o) {
  const int src = owner[o];
  out[o] = src < 0 ? Acc<T>::store(0) : x[o / in_plane<DIMS, I>(p) * out_plane<DIMS, I>(p) + src];
}

// ================================================================ stride phases
// What the phase-decomposed data gradients (conv_dgrad.cu, conv3d_dgrad.cu) share.
__device__ __forceinline__ int dgrad_gcd(int a, int b) {
  while (b != 0) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// The taps of one axis that reach the dx positions of phase ph (positions ph, ph + stride, ...): tap r
// reaches position x iff (x + pad - r*dil) % stride == 0, and with x = ph + t*stride that depends on ph only.
// They are r0, r0 + step, ... (count taps, possibly 0), and tap r0 + i*step reads output t + e - i*dd.
struct PhaseAxis {
  int count;   // positions of the phase: ceil((extent - ph) / stride)
  int taps;    // nr: taps reaching the phase
  int r0, step;
  int e, dd;   // output index = t + e - i*dd

  __device__ __forceinline__ PhaseAxis(int ph, int extent, int stride, int pad, int kernel, int dil) {
    count = (extent - ph + stride - 1) / stride;
    const int a = (ph + pad) % stride;
    const int gd = dgrad_gcd(stride, dil);
    step = stride / gd;
    dd = dil / gd;
    taps = 0;
    r0 = 0;
    e = 0;
    const int first_limit = min(kernel, step);  // the first reaching tap, if any, is below step
    for (int r = 0; r < first_limit; ++r) {
      if ((r * dil) % stride == a) {
        r0 = r;
        taps = (kernel - 1 - r) / step + 1;
        e = (ph + pad - r * dil) / stride;     // exact: ph + pad - r*dil is a multiple of stride
        break;
      }
    }
  }
};
