// conv3d_implicit_gemm.cu -- 3-D convolution as an implicit GEMM (the column matrix is never stored), NCDHW.
//
// Per group g, the convolution is the GEMM
//   Y[m, n] = sum_kd  X[m, kd] * W[n, kd]        m  < GEMM_M = N*Z*P*Q   (output position (img, z, p, q))
//                                               n  < GEMM_N = K/groups  (filter of group g)
//                                               kd < GEMM_K = Cg*T*R*S  (tap (c, t, r, s) of the window)
// with X[m, kd] = x[img, g*Cg + c, z*stride_d - pad_front + t*dil_d, p*stride_h - pad_top + r*dil_h,
// q*stride_w - pad_left + s*dil_w] (0 outside the input) gathered straight from x while a tile is staged, W the
// filter w[g*Kg + n] viewed row-major as (Kg, Cg*T*R*S), and an epilogue that adds the bias and writes
// y[img, g*Kg + n, z, p, q]. The 2-D kernel (conv_implicit_gemm.cu) with one more dimension in the row and the
// tap: the same staging, register tile (common.cuh's fma_slice) and epilogue.
//
// Template parameters: T storage (float, double, __half; tiles are staged in shared memory already converted
// to the accumulation type, so __half accumulates in float), I index type (int or long long, chosen per call),
// and the tile shape, owned by the launcher (fastconv/_cuda/conv3d_implicit_gemm.py, TILES) and passed in the
// name expression: BM x BN block tile, BK-deep k steps, TM x TN outputs per thread in registers
// ((BM/TM) * (BN/TN) threads), MINB the __launch_bounds__ minimum of resident blocks per SM.
//
// Padding: a tap in the padding is staged as 0, which is exact unless a weight is Inf or NaN (Inf * 0 is
// NaN, while fastconv's rule is that a padded tap contributes nothing). Every block notes whether a weight it
// staged is non-finite; a block that saw one in a padded problem recomputes its outputs with the exact loop
// (padded taps skipped), so the rule holds without a host-side check or a sync.
//
// Split-K: for problems with few output tiles (the small volumes of a network's deep layers), the launcher may
// split GEMM_K into `splits` chunks (grid y). Each chunk writes its partial sums, in the accumulation type, to its
// own slice of a workspace, and conv3d_splitk_reduce_v1 adds the slices in a fixed order plus the bias: no
// atomics, so results are bitwise reproducible.
//
// Versions:
//   conv3d_implicit_gemm_v1  register-blocked tiles, double-buffered shared memory (one barrier per k step),
//                            the next tile's global loads issued before the current tile's FMAs; the tap
//                            (c, t, r, s) of each staged column advanced incrementally (no divisions in the
//                            loop); 4-wide shared-memory fragment reads and 4-wide output stores where the
//                            layout allows; optional split-K
//   conv3d_splitk_reduce_v1  one thread per output: y = bias + sum over the splits, in split order
//
// Sections: GEMM rows and taps | exact slow path | v1 implicit GEMM | split-K reduction

#include "common.cuh"

// ================================================================ GEMM rows and taps
// Row m of group g's GEMM is output position (img, z, p, q): it reads image img's channels of group g from
// the first tap (d0, h0, w0) of its window.
template <typename T, typename I>
struct Gemm3dRow {
  const T* x;  // &x[img, g * Cg, 0, 0, 0]
  int d0, h0, w0;

  __device__ __forceinline__ Gemm3dRow(const Conv3dParams& p, const T* x_all, int g, I m, I ZPQ, I DHW) {
    const I img = m / ZPQ;
    const I zpq = m % ZPQ;
    const I PQ = (I)p.P * p.Q;
    d0 = first_tap_d(p, (int)(zpq / PQ));
    h0 = first_tap_h(p, (int)((zpq % PQ) / p.Q));
    w0 = first_tap_w(p, (int)(zpq % p.Q));
    x = x_all + (img * p.C + (I)g * p.C_per_group) * DHW;
  }
};

// Column kd of the GEMM is filter tap (c, t, r, s) with kd = ((c * T + t) * R + r) * S + s, the order of
// w[k, c, t, r, s].
struct Tap3d {
  int c, t, r, s;
};

__device__ __forceinline__ Tap3d tap3d_of(const Conv3dParams& p, int kd) {
  Tap3d t;
  t.s = kd % p.S;
  kd /= p.S;
  t.r = kd % p.R;
  kd /= p.R;
  t.t = kd % p.T;
  t.c = kd / p.T;
  return t;
}

// ================================================================ exact slow path
// One output of group g over the taps kd in [kd_begin, kd_end) computed by the definition, padded taps skipped
// (the slow path for blocks whose weights are not all finite). Not inlined: it is called from every unrolled
// epilogue slot.
template <typename T, typename I>
__device__ __noinline__ typename Acc<T>::type conv3d_exact_output(const Conv3dParams p, const T* __restrict__ x,
                                                                  const T* __restrict__ wg, int g, I m, int n,
                                                                  int kd_begin, int kd_end) {
  typedef typename Acc<T>::type A;
  const I HW = (I)p.H * p.W;
  const I ZPQ = (I)p.Z * p.P * p.Q;
  const Gemm3dRow<T, I> row(p, x, g, m, ZPQ, (I)p.D * HW);
  const T* wn = wg + (I)n * p.C_per_group * p.T * p.R * p.S;
  A sum = A(0);
  for (int kd = kd_begin; kd < kd_end; ++kd) {  // taps in (c, t, r, s) order, as the tiles take them
    const Tap3d t = tap3d_of(p, kd);
    const int dd = row.d0 + t.t * p.dil_d, hh = row.h0 + t.r * p.dil_h, ww = row.w0 + t.s * p.dil_w;
    if ((unsigned)dd >= (unsigned)p.D || (unsigned)hh >= (unsigned)p.H || (unsigned)ww >= (unsigned)p.W) continue;
    sum += Acc<T>::load(row.x[((I)t.c * p.D + dd) * HW + (I)hh * p.W + ww]) * Acc<T>::load(wn[kd]);
  }
  return sum;
}

// ================================================================ v1 implicit GEMM
// Grid (1-D, from the launcher): blockIdx.x = (g * m_blocks + bm) * n_blocks + bn, with
// m_blocks = ceil(N*Z*P*Q / BM), n_blocks = ceil(Kg / BN): consecutive blocks share an activation tile and
// walk the filters.
// Staging: As[kd][m] (BK x BM) and Bs[kd][n] (BK x (BN + 4); the pad spreads the transposing stores over the
// banks), two of each.
//   A: thread t stages column m = t % BM and A_PER consecutive kd from (t / BM) * A_PER: a warp loads 32
//      consecutive output positions of one tap (coalesced when stride_w is 1).
//   B: thread t stages kd = t % BK of filters t / BK + j * (NT / BK).
// Compute: thread (tm, tn) = (t % (BM/TM), t / (BM/TM)) owns rows tm*4 + {0..3} + i * (BM / (TM/4)) and
// columns tn*4 + {0..3} + j * (BN / (TN/4)) (fma_slice).
// Split-K: blockIdx.y = split; it covers kd in [split * k_chunk, min(KD, (split + 1) * k_chunk)) (k_chunk a
// multiple of BK) and, when gridDim.y > 1, writes bias-free partial sums to partial + split * N*K*Z*P*Q.
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN, int MINB>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MINB)
conv3d_implicit_gemm_v1(const Conv3dParams p, const int k_chunk, const T* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ b, T* __restrict__ y, typename Acc<T>::type* __restrict__ partial) {
  typedef typename Acc<T>::type A;
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int A_PER = BM * BK / NT;              // A elements staged per thread and k step
  constexpr int B_PER = BN * BK / NT;
  constexpr int BNP = BN + 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "fragments are read 4 at a time");
  static_assert(NT % BM == 0 && BK % (NT / BM) == 0 && A_PER * (NT / BM) == BK, "A staging must tile BK x BM");
  static_assert(NT % BK == 0 && BN % (NT / BK) == 0, "B staging must tile BK x BN");
  __shared__ __align__(16) A As[2][BK][BM];
  __shared__ __align__(16) A Bs[2][BK][BNP];

  const int tid = threadIdx.x;
  const I ZPQ = (I)p.Z * p.P * p.Q;
  const I M = (I)p.N * ZPQ;
  const int Kg = p.K_per_group, Cg = p.C_per_group;
  const int KD = Cg * p.T * p.R * p.S;
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;

  const int n_blocks = (Kg + BN - 1) / BN;
  const I m_blocks = (M - 1) / BM + 1;  // M >= 1; M + BM - 1 could pass 2^31 - 1 near the top
  I blk = blockIdx.x;
  const int bn = (int)(blk % n_blocks); blk /= n_blocks;
  const I bm = blk % m_blocks;
  const int g = (int)(blk / m_blocks);
  const I m0 = bm * BM;
  const int n0 = bn * BN;

  const int kd_begin = blockIdx.y * k_chunk;
  const int kd_end = min(KD, kd_begin + k_chunk);
  const bool split = gridDim.y > 1;

  // ---- this thread's A column: one output position, fixed for the whole k loop
  const int a_m = tid % BM;
  const int a_k = (tid / BM) * A_PER;
  const I am = m0 + a_m;
  const bool am_ok = am < M;
  const Gemm3dRow<T, I> row(p, x, g, am_ok ? am : 0, ZPQ, DHW);
  const T* xa = row.x;
  const int d0 = row.d0, h0 = row.h0, w0 = row.w0;
  // tap (c, t, r, s) of kd = kd_begin + a_k, advanced by BK (itself as a tap: step) per k step without divisions
  const Tap3d t0 = tap3d_of(p, kd_begin + a_k), step = tap3d_of(p, BK);
  int tc = t0.c, tt = t0.t, tr = t0.r, ts = t0.s;

  // ---- this thread's B rows
  const int b_k = tid % BK;
  const int b_n = tid / BK;
  const T* wg = w + (I)g * Kg * KD;

  A a_reg[A_PER], b_reg[B_PER];
  bool bad = false;  // a staged weight was Inf or NaN

  auto load_tiles = [&](int k0) {
    int c = tc, t = tt, r = tr, s = ts;
#pragma unroll
    for (int i = 0; i < A_PER; ++i) {
      const int dd = d0 + t * p.dil_d, hh = h0 + r * p.dil_h, ww = w0 + s * p.dil_w;
      A v = A(0);
      if (am_ok && k0 + a_k + i < kd_end && (unsigned)dd < (unsigned)p.D && (unsigned)hh < (unsigned)p.H &&
          (unsigned)ww < (unsigned)p.W)
        v = Acc<T>::load(xa[((I)c * p.D + dd) * HW + (I)hh * p.W + ww]);
      a_reg[i] = v;
      if (++s == p.S) { s = 0; if (++r == p.R) { r = 0; if (++t == p.T) { t = 0; ++c; } } }
    }
#pragma unroll
    for (int j = 0; j < B_PER; ++j) {
      const int n = n0 + b_n + j * (NT / BK);
      const int kd = k0 + b_k;
      A v = A(0);
      if (n < Kg && kd < kd_end) v = Acc<T>::load(wg[(I)n * KD + kd]);
      bad |= not_finite(v);
      b_reg[j] = v;
    }
  };
  auto advance_tap = [&]() {
    ts += step.s; if (ts >= p.S) { ts -= p.S; ++tr; }
    tr += step.r; if (tr >= p.R) { tr -= p.R; ++tt; }
    tt += step.t; if (tt >= p.T) { tt -= p.T; ++tc; }
    tc += step.c;
  };
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int i = 0; i < A_PER; ++i) As[buf][a_k + i][a_m] = a_reg[i];
#pragma unroll
    for (int j = 0; j < B_PER; ++j) Bs[buf][b_k][b_n + j * (NT / BK)] = b_reg[j];
  };

  const int tm = tid % (BM / TM), tn = tid / (BM / TM);
  A acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

  load_tiles(kd_begin);
  store_tiles(0);
  __syncthreads();
  const int k_steps = (kd_end - kd_begin + BK - 1) / BK;  // >= 1: the launcher makes no empty split
  for (int ks = 0; ks < k_steps; ++ks) {
    const int buf = ks & 1;
    const bool more = ks + 1 < k_steps;
    if (more) {  // issue the next tile's global loads before this tile's FMAs
      advance_tap();
      load_tiles(kd_begin + (ks + 1) * BK);
    }
    fma_slice<A, BM, BN, BK, TM, TN, BM, BNP>(&As[buf][0][0], &Bs[buf][0][0], tm, tn, acc);
    if (more) store_tiles(buf ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();
  }

  // ---- a block whose weights hold Inf/NaN in a padded problem recomputes its outputs exactly
  const bool exact = __syncthreads_or(bad) && conv3d_padded(p);
  auto value = [&](int i, int j, I m, int n) -> A {
    return exact ? conv3d_exact_output<T, I>(p, x, wg, g, m, n, kd_begin, kd_end) : acc[i][j];
  };

  // ---- split-K: bias-free partial sums to this split's workspace slice (same layout as y)
  if (split) {
    A* part = partial + (I)blockIdx.y * M * p.K;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + (j / 4) * (BN / (TN / 4)) + tn * 4 + (j % 4);
      if (n >= Kg) continue;
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const I m = m0 + (i / 4) * (BM / (TM / 4)) + tm * 4 + (i % 4);
        if (m < M) part[((m / ZPQ) * p.K + g * Kg + n) * ZPQ + m % ZPQ] = value(i, j, m, n);
      }
    }
    return;
  }

  // ---- epilogue: bias, then y[img, g*Kg + n, z, p, q]; 4 consecutive m share an image when ZPQ % 4 == 0
  const bool vec = (ZPQ % 4 == 0) && sizeof(T) * 4 <= 16 && ((unsigned long long)y % (4 * sizeof(T)) == 0);
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int n = n0 + (j / 4) * (BN / (TN / 4)) + tn * 4 + (j % 4);
    if (n >= Kg) continue;
    const int k = g * Kg + n;
    const A bias = p.has_bias ? Acc<T>::load(b[k]) : A(0);
#pragma unroll
    for (int i4 = 0; i4 < TM / 4; ++i4) {
      const I mb = m0 + i4 * (BM / (TM / 4)) + tm * 4;
      if (mb >= M) continue;
      if (vec && mb + 3 < M) {
        Store4<T> st;
#pragma unroll
        for (int i = 0; i < 4; ++i) st.v[i] = Acc<T>::store(value(i4 * 4 + i, j, mb + i, n) + bias);
        *reinterpret_cast<Store4<T>*>(y + ((mb / ZPQ) * p.K + k) * ZPQ + mb % ZPQ) = st;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const I m = mb + i;
          if (m >= M) break;
          y[((m / ZPQ) * p.K + k) * ZPQ + m % ZPQ] = Acc<T>::store(value(i4 * 4 + i, j, m, n) + bias);
        }
      }
    }
  }
}

// ================================================================ split-K reduction
// y[o] = bias[k] + sum_{s < splits} partial[s * total + o], in split order (deterministic); the bias is added
// after the partial sums, as the unsplit epilogue adds it to the whole sum.
template <typename T, typename I>
__global__ void conv3d_splitk_reduce_v1(const Conv3dParams p, const int splits,
                                        const typename Acc<T>::type* __restrict__ partial, const T* __restrict__ b,
                                        T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const I ZPQ = (I)p.Z * p.P * p.Q;
  const I total = (I)p.N * p.K * ZPQ;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  A parts = A(0);
  for (int s = 0; s < splits; ++s) parts += partial[(I)s * total + o];
  const A bias = p.has_bias ? Acc<T>::load(b[(int)((o / ZPQ) % p.K)]) : A(0);
  y[o] = Acc<T>::store(parts + bias);
}
