// pool.cu -- 2-D max and average pooling, fixed-window and adaptive, NCHW. 1-D pools run as H = 1.
//
// x (N, C, H, W) -> y (N, C, P, Q); max pools optionally write int64 indices (N, C, P, Q), the flat
// position h * W + w of the chosen tap inside its (n, c) plane. Semantics are the oracle's
// (fastconv/_backends/numpy_oracle.py): padding is never selected by max; a value is taken when it is
// greater than the best so far or is NaN (scanning row-major, so NaN wins and the last NaN gives the
// index, ties keep the first); the index starts at the window's first in-bounds tap; avg divides by
// divisor_override, else by the window clipped to the padded input (count_include_pad) or to the input.
// Adaptive windows span [floor(i*In/Out), ceil((i+1)*In/Out)) and take the same code paths.
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type
// (int or long long, chosen per call by the launcher).
//
// Versions:
//   max_pool2d_v1  one thread per output, window scanned from global memory (the loads are reused
//                  across neighbouring threads through L1/L2; no shared-memory staging needed)
//   avg_pool2d_v1  one thread per output, same structure
//
// Sections: window geometry | max pooling | average pooling

#include "common.cuh"

// ================================================================ window geometry
// The taps of one output along one axis: start, count and step. Fixed windows start at
// o*stride - pad and take `kernel` taps `dil` apart (some may be outside the input); adaptive
// windows are contiguous and always inside.
struct Taps {
  int start, count, step;
};

__device__ __forceinline__ Taps window_taps(int o, int adaptive, int in, int out, int kernel, int stride,
                                            int pad, int dil) {
  Taps t;
  if (adaptive) {
    t.start = adaptive_start(o, in, out);
    t.count = adaptive_end(o, in, out) - t.start;
    t.step = 1;
  } else {
    t.start = o * stride - pad;
    t.count = kernel;
    t.step = dil;
  }
  return t;
}

// First tap position >= 0 (the index a max pool starts from).
__device__ __forceinline__ int first_inbounds(Taps t) {
  if (t.start >= 0) return t.start;
  return t.start + (-t.start + t.step - 1) / t.step * t.step;
}

// ================================================================ max pooling
template <typename T, typename I>
__global__ void max_pool2d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y,
                              long long* __restrict__ indices) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.P * p.Q;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int q = (int)(o % p.Q);
  const int op = (int)((o / p.Q) % p.P);
  const I nc = o / ((I)p.P * p.Q);

  const Taps th = window_taps(op, p.is_adaptive, p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const Taps tw = window_taps(q, p.is_adaptive, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  const T* plane = x + nc * p.H * p.W;

  A best = -INFINITY;
  long long best_idx = (long long)first_inbounds(th) * p.W + first_inbounds(tw);
  for (int r = 0; r < th.count; ++r) {
    const int h = th.start + r * th.step;
    if (h < 0 || h >= p.H) continue;
    for (int s = 0; s < tw.count; ++s) {
      const int w = tw.start + s * tw.step;
      if (w < 0 || w >= p.W) continue;
      const A v = Acc<T>::load(plane[(I)h * p.W + w]);
      if (v > best || isnan(v)) {
        best = v;
        best_idx = (long long)h * p.W + w;
      }
    }
  }
  y[o] = Acc<T>::store(best);
  if (p.return_indices) indices[o] = best_idx;
}

// ================================================================ average pooling
template <typename T, typename I>
__global__ void avg_pool2d_v1(const PoolParams p, const T* __restrict__ x, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.P * p.Q;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int q = (int)(o % p.Q);
  const int op = (int)((o / p.Q) % p.P);
  const I nc = o / ((I)p.P * p.Q);

  const Taps th = window_taps(op, p.is_adaptive, p.H, p.P, p.R, p.stride_h, p.pad_h, p.dil_h);
  const Taps tw = window_taps(q, p.is_adaptive, p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dil_w);
  const T* plane = x + nc * p.H * p.W;

  A sum = 0;
  for (int r = 0; r < th.count; ++r) {
    const int h = th.start + r * th.step;
    if (h < 0 || h >= p.H) continue;
    for (int s = 0; s < tw.count; ++s) {
      const int w = tw.start + s * tw.step;
      if (w < 0 || w >= p.W) continue;
      sum += Acc<T>::load(plane[(I)h * p.W + w]);
    }
  }

  long long divisor;
  if (p.divisor_override != 0) {
    divisor = p.divisor_override;
  } else if (p.is_adaptive) {
    divisor = (long long)th.count * tw.count;
  } else {
    // the window clipped to the padded input (ceil_mode's overhang past the padding never counts) ...
    const int h0 = th.start, h1 = min(th.start + p.R, p.H + p.pad_h);
    const int w0 = tw.start, w1 = min(tw.start + p.S, p.W + p.pad_w);
    if (p.count_include_pad) {
      divisor = (long long)(h1 - h0) * (w1 - w0);
    } else {  // ... or to the input itself
      divisor = (long long)(min(h1, p.H) - max(h0, 0)) * (min(w1, p.W) - max(w0, 0));
    }
  }
  y[o] = Acc<T>::store(sum / (A)divisor);
}
