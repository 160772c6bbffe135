// conv3d_wgrad.cu -- the weight gradient of a 3-D convolution, NCDHW, as an implicit GEMM per group.
//
// The fields of Conv3dParams describe the FORWARD problem: x (N, C, D, H, W), w (K, C/groups, T, R, S),
// y (N, K, Z, P, Q). These kernels take x and dy (N, K, Z, P, Q) and compute, per group g,
//   dW[m, n] = sum_j dY[m, j] * X[j, n]          m < GEMM_M = K/groups   (filter g*Kg + m)
//                                                 n < GEMM_N = Cg*T*R*S   (tap (c, t, r, s), the order of w[k])
//                                                 j < GEMM_K = N*Z*P*Q    (output position (img, z, p, q))
// with dY[m, j] = dy[img, g*Kg + m, z, p, q] and X[j, n] = x[img, g*Cg + c, z*stride_d - pad_front + t*dil_d,
// p*stride_h - pad_top + r*dil_h, q*stride_w - pad_left + s*dil_w] gathered while a tile is staged (0 in the
// padding), so dw[g*Kg + m, c, t, r, s] = dW[m, n] (no bias: the bias gradient is a plain sum, grad.conv_bias).
// The 2-D kernel (conv_wgrad.cu) with one more dimension in the position and the tap.
//
// Padding: a tap in the padding is staged as 0, which is exact unless dy holds Inf or NaN (Inf * 0 is NaN,
// while fastconv's rule is that a padded tap contributes nothing). A block that staged a non-finite dy in a
// padded problem recomputes its outputs with the exact loop (padded taps skipped), so the rule holds for
// every dy without a host-side check.
//
// Split-K: GEMM_K (every output position of the batch) is long and the output (one filter bank) small. The
// launcher may cut GEMM_K into `splits` chunks (grid y); each chunk writes its partial sums, in the
// accumulation type, to its own slice of a workspace, and conv3d_wgrad_splitk_reduce_v1 adds the slices in
// split order: no atomics, results bitwise reproducible.
//
// Template parameters: T storage (float, double, __half; __half accumulates in float), I index type (int or
// long long, chosen per call), and the tile shape, owned by the launcher (fastconv/_cuda/conv3d_wgrad.py,
// TILES) and passed in the name expression: BM x BN block tile, BK-deep k steps, TM x TN outputs per thread,
// __launch_bounds__ minimum MINB blocks per SM.
//
// Versions:
//   conv3d_wgrad_v1                register-blocked tiles, double-buffered shared memory (one barrier per k
//                                  step), the next tile's global loads issued before the current tile's FMAs; a
//                                  warp stages consecutive positions of a dy plane (coalesced); the position
//                                  (img, z, p, q) of a thread's k offset found by division once per k step
//                                  (against BK * TM * TN / 4 FMAs); optional split-K
//   conv3d_wgrad_splitk_reduce_v1  one thread per dw element: the sum over the splits, in split order
//
// Sections: positions | exact slow path | v1 implicit GEMM | split-K reduction

#include "common.cuh"

// ================================================================ positions
// Output position j of the batch as (img, zpq) and the first tap (d0, h0, w0) of its window (without the
// padding: the staged column's tap offset includes it).
template <typename I>
struct OutPos3d {
  I img, zpq;
  int d0, h0, w0;

  __device__ __forceinline__ OutPos3d(const Conv3dParams& p, I j, I ZPQ, I PQ) {
    img = j / ZPQ;
    zpq = j % ZPQ;
    d0 = (int)(zpq / PQ) * p.stride_d;
    h0 = (int)((zpq % PQ) / p.Q) * p.stride_h;
    w0 = (int)(zpq % p.Q) * p.stride_w;
  }
};

// ================================================================ exact slow path
// One dw value of group g over output positions [j_begin, j_end) by the definition, padded taps skipped (the
// slow path for blocks that staged a non-finite dy). Not inlined: called from every unrolled epilogue slot.
template <typename T, typename I>
__device__ __noinline__ typename Acc<T>::type conv3d_wgrad_exact(const Conv3dParams p, const T* __restrict__ x,
                                                                 const T* __restrict__ dy, int g, int m, int n,
                                                                 I j_begin, I j_end) {
  typedef typename Acc<T>::type A;
  const I PQ = (I)p.P * p.Q;
  const I ZPQ = (I)p.Z * PQ;
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;
  const int TRS = p.T * p.R * p.S;
  const int c = n / TRS, t = (n / (p.R * p.S)) % p.T, r = (n / p.S) % p.R, s = n % p.S;
  A sum = A(0);
  for (I j = j_begin; j < j_end; ++j) {
    const OutPos3d<I> pos(p, j, ZPQ, PQ);
    const int dd = pos.d0 - p.pad_front + t * p.dil_d;
    const int hh = pos.h0 - p.pad_top + r * p.dil_h;
    const int ww = pos.w0 - p.pad_left + s * p.dil_w;
    if ((unsigned)dd >= (unsigned)p.D || (unsigned)hh >= (unsigned)p.H || (unsigned)ww >= (unsigned)p.W) continue;
    sum += Acc<T>::load(dy[(pos.img * p.K + (I)g * p.K_per_group + m) * ZPQ + pos.zpq]) *
           Acc<T>::load(x[(pos.img * p.C + (I)g * p.C_per_group + c) * DHW + ((I)dd * p.H + hh) * p.W + ww]);
  }
  return sum;
}

// ================================================================ v1 implicit GEMM
// Grid (1-D in x, from the launcher): blockIdx.x = (g * m_blocks + bm) * n_blocks + bn, with
// m_blocks = ceil(Kg / BM), n_blocks = ceil(Cg*T*R*S / BN); blockIdx.y = split, covering
// j in [split * k_chunk, min(N*Z*P*Q, (split + 1) * k_chunk)) (k_chunk a multiple of BK).
// Staging: As[j][m] (BK x (BM + 4)) and Bs[j][n] (BK x (BN + 4)), two of each; thread t stages the k offset
// t % BK of rows t / BK + e * (NT / BK) of both tiles, so A and B share one position and a warp's dy loads run
// along a dy plane. Compute and fragments as conv3d_implicit_gemm_v1 (fma_slice).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN, int MINB>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MINB)
conv3d_wgrad_v1(const Conv3dParams p, const long long k_chunk, const T* __restrict__ x, const T* __restrict__ dy,
                T* __restrict__ dw, typename Acc<T>::type* __restrict__ partial) {
  typedef typename Acc<T>::type A;
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int A_PER = BM * BK / NT;
  constexpr int B_PER = BN * BK / NT;
  constexpr int BMP = BM + 4, BNP = BN + 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "fragments are read 4 at a time");
  static_assert(NT % BK == 0 && BM % (NT / BK) == 0 && BN % (NT / BK) == 0, "staging must tile BK x BM, BK x BN");
  __shared__ __align__(16) A As[2][BK][BMP];
  __shared__ __align__(16) A Bs[2][BK][BNP];

  const int tid = threadIdx.x;
  const int Kg = p.K_per_group, Cg = p.C_per_group;
  const int RS = p.R * p.S;
  const int TRS = p.T * RS;
  const int NN = Cg * TRS;                // GEMM_N
  const I PQ = (I)p.P * p.Q;
  const I ZPQ = (I)p.Z * PQ;
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;
  const I J = (I)p.N * ZPQ;               // GEMM_K

  const int n_blocks = (NN + BN - 1) / BN;
  const int m_blocks = (Kg + BM - 1) / BM;
  I blk = blockIdx.x;
  const int bn = (int)(blk % n_blocks); blk /= n_blocks;
  const int bm = (int)(blk % m_blocks);
  const int g = (int)(blk / m_blocks);
  const int m0 = bm * BM, n0 = bn * BN;

  const I j_begin = (I)blockIdx.y * (I)k_chunk;
  const I j_end = min(J, j_begin + (I)k_chunk);
  const bool split = gridDim.y > 1;

  // ---- this thread's k offset and rows / columns
  const int t_k = tid % BK;
  const int t_r = tid / BK;
  const T* dyg = dy + (I)g * Kg * ZPQ;                  // + img*K*ZPQ + m*ZPQ + zpq
  const T* xg = x + (I)g * Cg * DHW;                    // + img*C*DHW + c*DHW + (dd*H + hh)*W + ww
  int b_c[B_PER], b_dd[B_PER], b_dh[B_PER], b_dw[B_PER];  // tap (c, t, r, s) of each staged column
#pragma unroll
  for (int e = 0; e < B_PER; ++e) {
    const int n = min(n0 + t_r + e * (NT / BK), NN - 1);
    b_c[e] = n / TRS;
    b_dd[e] = ((n / RS) % p.T) * p.dil_d - p.pad_front;
    b_dh[e] = ((n / p.S) % p.R) * p.dil_h - p.pad_top;
    b_dw[e] = (n % p.S) * p.dil_w - p.pad_left;
  }

  A a_reg[A_PER], b_reg[B_PER];
  bool bad = false;  // a staged dy was Inf or NaN

  auto load_tiles = [&](I k0) {
    const I j = k0 + t_k;
    const bool j_ok = j < j_end;
    const OutPos3d<I> pos(p, j_ok ? j : 0, ZPQ, PQ);
#pragma unroll
    for (int e = 0; e < A_PER; ++e) {
      const int m = m0 + t_r + e * (NT / BK);
      A v = A(0);
      if (j_ok && m < Kg) v = Acc<T>::load(dyg[(pos.img * p.K + m) * ZPQ + pos.zpq]);
      bad |= not_finite(v);
      a_reg[e] = v;
    }
#pragma unroll
    for (int e = 0; e < B_PER; ++e) {
      const int n = n0 + t_r + e * (NT / BK);
      const int dd = pos.d0 + b_dd[e], hh = pos.h0 + b_dh[e], ww = pos.w0 + b_dw[e];
      A v = A(0);
      if (j_ok && n < NN && (unsigned)dd < (unsigned)p.D && (unsigned)hh < (unsigned)p.H &&
          (unsigned)ww < (unsigned)p.W)
        v = Acc<T>::load(xg[(pos.img * p.C + b_c[e]) * DHW + ((I)dd * p.H + hh) * p.W + ww]);
      b_reg[e] = v;
    }
  };
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int e = 0; e < A_PER; ++e) As[buf][t_k][t_r + e * (NT / BK)] = a_reg[e];
#pragma unroll
    for (int e = 0; e < B_PER; ++e) Bs[buf][t_k][t_r + e * (NT / BK)] = b_reg[e];
  };

  const int tm = tid % (BM / TM), tn = tid / (BM / TM);
  A acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

  load_tiles(j_begin);
  store_tiles(0);
  __syncthreads();
  const I k_steps = (j_end - j_begin + BK - 1) / BK;   // >= 1: the launcher makes no empty split
  for (I ks = 0; ks < k_steps; ++ks) {
    const int buf = (int)(ks & 1);
    const bool more = ks + 1 < k_steps;
    if (more) load_tiles(j_begin + (ks + 1) * BK);  // the next tile's global loads before this tile's FMAs
    fma_slice<A, BM, BN, BK, TM, TN, BMP, BNP>(&As[buf][0][0], &Bs[buf][0][0], tm, tn, acc);
    if (more) store_tiles(buf ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();
  }

  // ---- a block that staged a non-finite dy in a padded problem recomputes its outputs exactly
  const bool exact = __syncthreads_or(bad) && conv3d_padded(p);

  // ---- epilogue: dw[g*Kg + m, n] (or this split's workspace slice, same layout)
  const I total = (I)p.K * NN;
  A* part = partial + (I)blockIdx.y * total;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + (i / 4) * (BM / (TM / 4)) + tm * 4 + (i % 4);
    if (m >= Kg) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + (j / 4) * (BN / (TN / 4)) + tn * 4 + (j % 4);
      if (n >= NN) continue;
      const A v = exact ? conv3d_wgrad_exact<T, I>(p, x, dy, g, m, n, j_begin, j_end) : acc[i][j];
      const I o = ((I)g * Kg + m) * NN + n;
      if (split) part[o] = v;
      else dw[o] = Acc<T>::store(v);
    }
  }
}

// ================================================================ split-K reduction
// dw[o] = sum_{s < splits} partial[s * K*Cg*T*R*S + o], in split order (deterministic).
template <typename T, typename I>
__global__ void conv3d_wgrad_splitk_reduce_v1(const Conv3dParams p, const int splits,
                                              const typename Acc<T>::type* __restrict__ partial,
                                              T* __restrict__ dw) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.K * p.C_per_group * p.T * p.R * p.S;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  A sum = A(0);
  for (int s = 0; s < splits; ++s) sum += partial[(I)s * total + o];
  dw[o] = Acc<T>::store(sum);
}
