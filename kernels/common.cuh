// common.cuh -- what every fastconv kernel file shares: the parameter structs, the accumulation-type
// trait for float/double/__half storage, and the few constants NVRTC lacks.
//
// Compiled three ways from the same text: by CuPy's NVRTC on a GPU, by NVRTC in CI (compile checks),
// and by g++ through fastconv.emu (FASTCONV_EMU=1), whose force-included header maps the CUDA built-ins.
//
// Sections: constants | parameter structs | accumulation trait | fragments | index helpers | convolution geometry |
// stride phases

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

struct PoolParams {
  int N, C, H, W;                                   // input  (N, C, H, W)
  int R, S;                                         // window (0 for adaptive pools)
  int P, Q;                                         // output (N, C, P, Q)
  int stride_h, stride_w;
  int pad_h, pad_w;
  int dil_h, dil_w;
  int is_adaptive;                                  // windows [floor(i*H/P), ceil((i+1)*H/P))
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
