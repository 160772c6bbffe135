// fold.cu -- unfold (im2col) and fold (col2im) as ops, 1-D to 3-D: NC(D)HW images and (N, C*T*R*S, Z*P*Q)
// column matrices. 1-D and 2-D problems run as D = T = Z = 1 (1-D also H = R = P = 1).
//
//   unfold  col[n, ((c*T + t)*R + r)*S + s, (z*P + p)*Q + q]
//             = x[n, c, z*stride_d - pad_front + t*dil_d, p*stride_h - pad_top + r*dil_h,
//                 q*stride_w - pad_left + s*dil_w], 0 where that position lies in the padding
//   fold    the adjoint: out[n, c, d, h, w] = the sum of the column entries unfold reads from (d, h, w);
//           entries of positions in the padding are dropped
// Semantics are the oracle's (fastconv/_backends/numpy_oracle.py, unfold / fold64). Both are gathers (one
// thread per result element, a fixed order): fold sums its taps (t, r, s) in ascending order in the
// accumulation type, so results are bitwise reproducible and no atomics are needed.
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/fold.py). Coordinates and tap counters are int:
// the launcher refuses problems whose padded extent along an axis, or whose T*R*S, passes 2^31 - 1.
//
// Versions:
//   unfold_v1  one thread per column element (consecutive threads: consecutive blocks q of one row, so the
//              writes coalesce); reads the image or writes 0
//   fold_v1    one thread per image element; walks the taps and adds the column entry of the block each
//              tap reads this element from (a tap whose offset is not a multiple of the stride, or whose
//              block lies outside the grid, reads it from no block)
//
// Sections: parameter struct | tap axis | v1 unfold | v1 fold

#include "common.cuh"

// ================================================================ parameter struct
// The family's own struct, passed by value. All fields 32-bit ints; the Python twin is FOLD_PARAMS_FIELDS in
// fastconv/_cuda/fold.py (same names, same order), built field by field from the spec; tests/cuda/test_fold.py
// checks the layout on both sides. The after-side pads are not needed: the block counts Z, P, Q hold them.
struct FoldParams {
  int N, C, D, H, W;                                // image (N, C, D, H, W)
  int T, R, S;                                      // block (window) T x R x S
  int Z, P, Q;                                      // grid of blocks
  int stride_d, stride_h, stride_w;
  int pad_front, pad_top, pad_left;
  int dil_d, dil_h, dil_w;
};

// ================================================================ tap axis
// Along one axis: the block o whose tap k reads position x, i.e. o*stride == x + pad - k*dil with 0 <= o <
// out, or -1 when there is none. In int: x + pad <= extent + pad - 1 and k*dil <= (kernel-1)*dil, both
// below the padded extent, which the launcher keeps within 2^31 - 1.
__device__ __forceinline__ int block_of_tap(int x, int k, int out, int stride, int pad, int dil) {
  const int off = x + pad - k * dil;
  if (off < 0 || off % stride != 0) return -1;
  const int o = off / stride;
  return o < out ? o : -1;
}

// ================================================================ v1 unfold
template <typename T, typename I>
__global__ void unfold_v1(const FoldParams p, const T* __restrict__ x, T* __restrict__ col) {
  typedef typename Acc<T>::type A;
  const int taps = p.T * p.R * p.S;
  const I L = (I)p.Z * p.P * p.Q;
  const I total = (I)p.N * p.C * taps * L;
  const I o = (I)blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= total) return;
  const I l = o % L;                                // the block, (z*P + pp)*Q + q
  const I row = o / L;                              // (n*C + c)*taps + tap
  const int tap = (int)(row % taps);
  const I nc = row / taps;
  const int q = (int)(l % p.Q);
  const int pp = (int)((l / p.Q) % p.P);
  const int z = (int)(l / ((I)p.Q * p.P));
  const int s = tap % p.S;
  const int r = (tap / p.S) % p.R;
  const int t = tap / (p.S * p.R);
  const int d = z * p.stride_d - p.pad_front + t * p.dil_d;
  const int h = pp * p.stride_h - p.pad_top + r * p.dil_h;
  const int w = q * p.stride_w - p.pad_left + s * p.dil_w;
  T v = Acc<T>::store((A)0);
  if (d >= 0 && d < p.D && h >= 0 && h < p.H && w >= 0 && w < p.W)
    v = x[((nc * p.D + d) * p.H + h) * p.W + w];
  col[o] = v;
}

// ================================================================ v1 fold
template <typename T, typename I>
__global__ void fold_v1(const FoldParams p, const T* __restrict__ col, T* __restrict__ out) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.D * p.H * p.W;
  const I o = (I)blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= total) return;
  const int w = (int)(o % p.W);
  const int h = (int)((o / p.W) % p.H);
  const int d = (int)((o / ((I)p.W * p.H)) % p.D);
  const I nc = o / ((I)p.W * p.H * p.D);
  const I L = (I)p.Z * p.P * p.Q;
  const T* __restrict__ rows = col + nc * (I)(p.T * p.R * p.S) * L;   // this (n, c)'s T*R*S rows
  A acc = 0;
  for (int t = 0; t < p.T; ++t) {
    const int z = block_of_tap(d, t, p.Z, p.stride_d, p.pad_front, p.dil_d);
    if (z < 0) continue;
    for (int r = 0; r < p.R; ++r) {
      const int y = block_of_tap(h, r, p.P, p.stride_h, p.pad_top, p.dil_h);
      if (y < 0) continue;
      const I block_row = ((I)z * p.P + y) * p.Q;
      for (int s = 0; s < p.S; ++s) {
        const int q = block_of_tap(w, s, p.Q, p.stride_w, p.pad_left, p.dil_w);
        if (q < 0) continue;
        acc += Acc<T>::load(rows[(I)((t * p.R + r) * p.S + s) * L + block_row + q]);
      }
    }
  }
  out[o] = Acc<T>::store(acc);
}
