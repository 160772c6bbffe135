// conv3d_dgrad.cu -- the input gradient of a 3-D convolution (also the transposed convolution), NCDHW.
//
// The fields of Conv3dParams describe the FORWARD problem: x (N, C, D, H, W), w (K, C/groups, T, R, S),
// y (N, K, Z, P, Q). These kernels take dy (N, K, Z, P, Q), w and an optional bias b (C) and compute, in gather
// form,
//   dx[n, g*Cg + c, d, h, w] = b[g*Cg + c] + sum over k < Kg, t, r, s of dy[n, g*Kg + k, z, p, q] * w[g*Kg + k, c, t, r, s]
//   with z = (d + pad_front - t*dil_d) / stride_d, p = (h + pad_top - r*dil_h) / stride_h,
//        q = (w + pad_left - s*dil_w) / stride_w,
// a term existing only where the three divisions are exact and (z, p, q) lies in [0, Z) x [0, P) x [0, Q): the
// terms of the forward sum whose tap landed on (d, h, w), sent back. A term that does not exist is never
// multiplied (no zero meets an Inf weight), so the result is exact for every weight. Z, P, Q need not be the
// forward output size of D, H, W (a transposed convolution with output_padding has positions no dy reaches:
// they get the bias only).
//
// Template parameters: T storage (float, double, __half; __half accumulates in float), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/conv3d_dgrad.py).
//
// Versions:
//   conv3d_dgrad_v1  one thread per dx element: the taps (t, r, s) that reach it, found per axis (a tap whose
//                    window start would be negative ends that axis' loop), then the group's filters k; all
//                    reads from global memory, summed in that fixed order
//
// Sections: v1 gather

#include "common.cuh"

// ================================================================ v1 gather
// The output index o of tap `tap` along one axis for input position x: (x + pad - tap*dil) / stride when that
// is exact and in [0, out); -1 when the tap does not reach x; -2 when it and every later tap fall before the
// first output (x + pad - tap*dil < 0), so the caller's loop can stop.
__device__ __forceinline__ int dgrad3d_reach(int x, int pad, int tap, int dil, int stride, int out) {
  const int a = x + pad - tap * dil;
  if (a < 0) return -2;
  if (a % stride != 0) return -1;
  const int o = a / stride;
  return o < out ? o : -1;
}

template <typename T, typename I>
__global__ void conv3d_dgrad_v1(const Conv3dParams p, const T* __restrict__ dy, const T* __restrict__ w,
                                const T* __restrict__ b, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;
  const I total = (I)p.N * p.C * DHW;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int x = (int)(o % p.W);
  const int h = (int)((o / p.W) % p.H);
  const int d = (int)((o / HW) % p.D);
  const int c = (int)((o / DHW) % p.C);
  const I n = o / ((I)p.C * DHW);
  const int g = c / p.C_per_group, cg = c % p.C_per_group;
  const I PQ = (I)p.P * p.Q;
  const I ZPQ = (I)p.Z * PQ;
  const int TRS = p.T * p.R * p.S;
  const T* dyg = dy + (n * p.K + (I)g * p.K_per_group) * ZPQ;              // + k*ZPQ + (z*P + q)*Q + q
  const T* wg = w + ((I)g * p.K_per_group * p.C_per_group + cg) * TRS;      // + k*Cg*TRS + tap

  A acc = A(0);
  for (int t = 0; t < p.T; ++t) {
    const int oz = dgrad3d_reach(d, p.pad_front, t, p.dil_d, p.stride_d, p.Z);
    if (oz == -2) break;
    if (oz < 0) continue;
    for (int r = 0; r < p.R; ++r) {
      const int op = dgrad3d_reach(h, p.pad_top, r, p.dil_h, p.stride_h, p.P);
      if (op == -2) break;
      if (op < 0) continue;
      for (int s = 0; s < p.S; ++s) {
        const int oq = dgrad3d_reach(x, p.pad_left, s, p.dil_w, p.stride_w, p.Q);
        if (oq == -2) break;
        if (oq < 0) continue;
        const I pos = ((I)oz * p.P + op) * p.Q + oq;
        const int tap = (t * p.R + r) * p.S + s;
        for (int k = 0; k < p.K_per_group; ++k)
          acc += Acc<T>::load(dyg[(I)k * ZPQ + pos]) * Acc<T>::load(wg[(I)k * p.C_per_group * TRS + tap]);
      }
    }
  }
  if (p.has_bias) acc += Acc<T>::load(b[c]);
  dx[o] = Acc<T>::store(acc);
}
