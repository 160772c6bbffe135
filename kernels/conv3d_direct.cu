// conv3d_direct.cu -- direct 3-D convolution (cross-correlation, as torch.nn.functional.conv3d), NCDHW.
//
// y[n, k, z, p, q] = b[k] + sum_{c < C/groups, t, r, s} x[n, g*Cg + c, z*stride_d - pad_front + t*dil_d,
//                                                         p*stride_h - pad_top + r*dil_h,
//                                                         q*stride_w - pad_left + s*dil_w] * w[k, c, t, r, s]
// with g = k / (K/groups), over taps inside the input only: a tap in the padding is skipped, not multiplied by
// zero, so an Inf or NaN weight never meets a padded zero (the oracle's rule). This is the exact 3-D path
// dispatch can always fall back on (conv3d_implicit_gemm.cu is exact too, through its own slow path).
// x (N, C, D, H, W), w (K, C/groups, T, R, S), b (K) (a dummy when has_bias == 0), y (N, K, Z, P, Q).
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/conv3d_direct.py).
//
// Versions:
//   conv3d_direct_v1  one thread per output element, the definition's loops (c, t, r, s), all reads from
//                     global memory; taps outside the input are skipped per axis
//
// Sections: v1 naive

#include "common.cuh"

// ================================================================ v1 naive
template <typename T, typename I>
__global__ void conv3d_direct_v1(const Conv3dParams p, const T* __restrict__ x, const T* __restrict__ w,
                                 const T* __restrict__ b, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const I PQ = (I)p.P * p.Q;
  const I ZPQ = (I)p.Z * PQ;
  const I total = (I)p.N * p.K * ZPQ;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int oq = (int)(o % p.Q);
  const int op = (int)((o / p.Q) % p.P);
  const int oz = (int)((o / PQ) % p.Z);
  const int k = (int)((o / ZPQ) % p.K);
  const I n = o / ((I)p.K * ZPQ);
  const int g = k / p.K_per_group;
  const int d0 = first_tap_d(p, oz), h0 = first_tap_h(p, op), w0 = first_tap_w(p, oq);
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;
  const int TRS = p.T * p.R * p.S;

  A acc = A(0);
  for (int c = 0; c < p.C_per_group; ++c) {
    const T* xc = x + (n * p.C + (I)g * p.C_per_group + c) * DHW;
    const T* wc = w + ((I)k * p.C_per_group + c) * TRS;
    for (int t = 0; t < p.T; ++t) {
      const int d = d0 + t * p.dil_d;
      if ((unsigned)d >= (unsigned)p.D) continue;  // padding contributes nothing
      for (int r = 0; r < p.R; ++r) {
        const int h = h0 + r * p.dil_h;
        if ((unsigned)h >= (unsigned)p.H) continue;
        for (int s = 0; s < p.S; ++s) {
          const int ww = w0 + s * p.dil_w;
          if ((unsigned)ww >= (unsigned)p.W) continue;
          acc += Acc<T>::load(xc[(I)d * HW + (I)h * p.W + ww]) * Acc<T>::load(wc[(t * p.R + r) * p.S + s]);
        }
      }
    }
  }
  if (p.has_bias) acc += Acc<T>::load(b[k]);
  y[o] = Acc<T>::store(acc);
}
