// misc.cu -- emulator test kernels: atomics, templates, half precision, struct parameters, IEEE.
// histogram:        atomicAdd(int) into 16 bins from many blocks, plus atomicAdd(float) total
// scale<T>:         out = alpha * x, templated on the element type (name expressions)
// half_roundtrip:   loads __half, converts to float, scales, stores __half and float
// struct_fields:    writes the fields of a by-value parameter struct back out
// ieee:             fmaxf/fminf with NaN, division by zero, INFINITY arithmetic, signed zero
#include <cuda_fp16.h>

extern "C" __global__ void histogram(const int* x, int n, int* bins, float* total) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    atomicAdd(&bins[x[i] & 15], 1);
    atomicAdd(total, 1.0f);
  }
}

template <typename T>
__global__ void scale(const T* __restrict__ x, T* __restrict__ out, T alpha, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = alpha * x[i];
}

extern "C" __global__ void half_roundtrip(const __half* x, __half* out_h, float* out_f, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = __half2float(x[i]) * s;
  out_f[i] = v;
  out_h[i] = __float2half(v);
}

struct Params {
  int N, C, H, W;
  float alpha;
  double beta;
  long long stride;
  short tag;
};

extern "C" __global__ void struct_fields(Params p, double* out) {
  out[0] = p.N; out[1] = p.C; out[2] = p.H; out[3] = p.W;
  out[4] = p.alpha; out[5] = p.beta; out[6] = (double)p.stride; out[7] = p.tag;
  out[8] = sizeof(Params);
}

extern "C" __global__ void ieee(const float* x, float* out) {
  float nan = x[0], one = x[1], zero = x[2];
  out[0] = fmaxf(nan, one);        // 1: fmaxf ignores a NaN operand
  out[1] = fminf(one, nan);        // 1
  out[2] = max(nan, one);          // 1: CUDA's max(float, float) is fmaxf
  out[3] = one / zero;             // +inf
  out[4] = -one / zero;            // -inf
  out[5] = zero / zero;            // nan
  out[6] = INFINITY - INFINITY;    // nan
  out[7] = nan * zero;             // nan (no fast-math: not folded to 0)
  out[8] = (nan == nan) ? 1.0f : 0.0f;  // 0
  out[9] = 1.0f / (-zero);         // -inf: signed zero survives
  out[10] = __fmaf_rn(one, one, NAN);   // nan
  out[11] = isnan(nan) ? 1.0f : 0.0f;   // 1 (no fast-math: isnan not folded)
  out[12] = rsqrtf(one * 4.0f);    // 0.5
}

// half_atomics: every thread adds 0.5 to a __half and (0.25, 1) to a __half2
extern "C" __global__ void half_atomics(__half* h, __half2* h2) {
  atomicAdd(h, __float2half(0.5f));
  atomicAdd(h2, __floats2half2_rn(0.25f, 1.0f));
}
