// conv_dgrad.cu -- the input gradient of a 2-D convolution (also the transposed convolution), NCHW.
//
// The fields of ConvParams describe the FORWARD problem: x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q).
// These kernels take dy (N, K, P, Q), w and an optional bias b (C) and compute, in gather form,
//   dx[n, g*Cg + c, h, w] = b[g*Cg + c] + sum over k < Kg, r, s of dy[n, g*Kg + k, p, q] * w[g*Kg + k, c, r, s]
//   with p = (h + pad_top - r*dil_h) / stride_h, q = (w + pad_left - s*dil_w) / stride_w,
// a term existing only where both divisions are exact and (p, q) lies in [0, P) x [0, Q): the terms of the
// forward sum whose tap landed on (h, w), sent back. A term that does not exist is never multiplied (no zero
// meets an Inf weight), so the result is exact for every weight. P, Q need not be the forward output size of
// H, W (a transposed convolution with output_padding has rows that no dy reaches: they get the bias only).
//
// Template parameters: T storage (float, double, __half; __half accumulates in float), I index type (int or
// long long, chosen per call), and for v2 the tile shape, owned by the launcher (fastconv/_cuda/conv_dgrad.py,
// TILES) and passed in the name expression.
//
// Versions:
//   conv_dgrad_v1  one thread per dx element, the definition's loops (taps r, s outer, filters k inner), all
//                  reads from global memory; kept for teaching and as the tests' second opinion
//   conv_dgrad_v2  an implicit GEMM per stride phase, register-blocked like conv_implicit_gemm_v1. The dx
//                  positions with h % stride_h == ph and w % stride_w == pw (phase (ph, pw)) are reached only by
//                  the taps r = r0 + i*(stride_h/gcd(stride_h, dil_h)) (and likewise s), and for them
//                  p = t + e_h - i*(dil_h/gcd) with h = ph + t*stride_h: per phase and group the problem is the GEMM
//                    dX[m, c] = sum_kd dY[m, kd] * W[kd, c]   m  < N * Ha * Wa  (position (n, t, v) of the phase)
//                                                             c  < Cg
//                                                             kd < Kg * nr * ns (tap (k, i, j) of the phase)
//                  with no multiply-by-zero for the taps a stride skips (a strided problem does no wasted FMAs
//                  there; CUTLASS's strided dgrad decomposes the same way). dY[m, kd] is dy at (p, q) when that
//                  lies in [0, P) x [0, Q), else staged as 0; such a 0 would meet an Inf or NaN weight, so a
//                  block that staged a non-finite weight recomputes its outputs with the exact gather loop.
//                  Tiles of dY and W double-buffered in shared memory (one barrier per k step), the next tile's
//                  global loads issued before the current tile's FMAs, taps advanced incrementally, 4-wide
//                  fragment reads, and 4-wide stores for unstrided problems.
//
// Sections: v1 naive gather | v2 phase geometry | v2 implicit GEMM
// (PhaseAxis, the per-axis phase geometry, lives in common.cuh: conv3d_dgrad.cu uses it too)

#include "common.cuh"

// ================================================================ v1 naive gather
template <typename T, typename I>
__global__ void conv_dgrad_v1(const ConvParams p, const T* __restrict__ dy, const T* __restrict__ w,
                              const T* __restrict__ b, T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.C * p.H * p.W;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int ww = (int)(o % p.W);
  const int h = (int)((o / p.W) % p.H);
  const int c = (int)((o / ((I)p.H * p.W)) % p.C);
  const I n = o / ((I)p.C * p.H * p.W);
  const int g = c / p.C_per_group, cg = c % p.C_per_group;
  const I PQ = (I)p.P * p.Q;
  const int RS = p.R * p.S;

  A acc = A(0);
  for (int r = 0; r < p.R; ++r) {
    const int hp = h + p.pad_top - r * p.dil_h;  // p * stride_h, if this tap exists
    if (hp < 0 || hp % p.stride_h != 0) continue;
    const int op = hp / p.stride_h;
    if (op >= p.P) continue;
    for (int s = 0; s < p.S; ++s) {
      const int wq = ww + p.pad_left - s * p.dil_w;
      if (wq < 0 || wq % p.stride_w != 0) continue;
      const int oq = wq / p.stride_w;
      if (oq >= p.Q) continue;
      for (int k = 0; k < p.K_per_group; ++k) {
        const int kk = g * p.K_per_group + k;
        acc += Acc<T>::load(dy[(n * p.K + kk) * PQ + (I)op * p.Q + oq]) *
               Acc<T>::load(w[((I)kk * p.C_per_group + cg) * RS + r * p.S + s]);
      }
    }
  }
  if (p.has_bias) acc += Acc<T>::load(b[c]);
  dx[o] = Acc<T>::store(acc);
}

// ================================================================ v2 phase geometry
// PhaseAxis (common.cuh): the taps of one axis that reach the dx positions of one stride phase.

// Column kd of a phase's GEMM is tap (k, i, j) with kd = (k * nr + i) * ns + j.
struct PhaseTap {
  int k, i, j;
};

__device__ __forceinline__ PhaseTap phase_tap_of(int kd, int nr, int ns) {
  PhaseTap t;
  t.k = kd / (nr * ns);
  t.i = (kd / ns) % nr;
  t.j = kd % ns;
  return t;
}

// One dx value of a phase by the definition (the exact path for blocks that staged a non-finite weight): the
// phase's taps in (k, i, j) order, a tap whose (p, q) falls outside dy skipped. Not inlined: it is called from
// every unrolled epilogue slot.
template <typename T, typename I>
__device__ __noinline__ typename Acc<T>::type dgrad_exact(const ConvParams p, const T* __restrict__ dy_img,
                                                          const T* __restrict__ wg, int c, int pb, int qb,
                                                          const PhaseAxis ah, const PhaseAxis aw) {
  typedef typename Acc<T>::type A;
  const I PQ = (I)p.P * p.Q;
  const int RS = p.R * p.S;
  A sum = A(0);
  for (int k = 0; k < p.K_per_group; ++k)
    for (int i = 0; i < ah.taps; ++i) {
      const int pp = pb - i * ah.dd;
      if ((unsigned)pp >= (unsigned)p.P) continue;
      for (int j = 0; j < aw.taps; ++j) {
        const int qq = qb - j * aw.dd;
        if ((unsigned)qq >= (unsigned)p.Q) continue;
        const int r = ah.r0 + i * ah.step, s = aw.r0 + j * aw.step;
        sum += Acc<T>::load(dy_img[(I)k * PQ + (I)pp * p.Q + qq]) *
               Acc<T>::load(wg[((I)k * p.C_per_group + c) * RS + r * p.S + s]);
      }
    }
  return sum;
}

// ================================================================ v2 implicit GEMM
// Grid (1-D, from the launcher): blockIdx.x = ((g * phases + phase) * m_blocks + bm) * n_blocks + bn, with
// phases = min(stride_h, H) * min(stride_w, W) (phase = ph * min(stride_w, W) + pw), m_blocks =
// ceil(N * ceil(H/stride_h) * ceil(W/stride_w) / BM) (the largest phase's rows; a block past its own phase's
// rows returns at once) and n_blocks = ceil(Cg / BN).
// Staging: As[kd][m] (BK x BM) and Bs[kd][c] (BK x (BN + 4)), two of each.
//   A: thread t stages row m = t % BM and A_PER consecutive kd from (t / BM) * A_PER: a warp loads 32
//      consecutive dx positions of one tap (consecutive dy elements for an unstrided problem).
//   B: thread t stages kd = t % BK of channels t / BK + j * (NT / BK).
// Compute and fragment layout as conv_implicit_gemm_v1: thread (tm, tn) owns rows tm*4 + {0..3} + i*(BM/(TM/4))
// and channels tn*4 + {0..3} + j*(BN/(TN/4)).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN, int MINB>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MINB)
conv_dgrad_v2(const ConvParams p, const T* __restrict__ dy, const T* __restrict__ w, const T* __restrict__ b,
              T* __restrict__ dx) {
  typedef typename Acc<T>::type A;
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int A_PER = BM * BK / NT;
  constexpr int B_PER = BN * BK / NT;
  constexpr int BNP = BN + 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "fragments are read 4 at a time");
  static_assert(NT % BM == 0 && BK % (NT / BM) == 0 && A_PER * (NT / BM) == BK, "A staging must tile BK x BM");
  static_assert(NT % BK == 0 && BN % (NT / BK) == 0, "B staging must tile BK x BN");
  __shared__ __align__(16) A As[2][BK][BM];
  __shared__ __align__(16) A Bs[2][BK][BNP];

  const int tid = threadIdx.x;
  const int Kg = p.K_per_group, Cg = p.C_per_group;
  const int RS = p.R * p.S;
  const I PQ = (I)p.P * p.Q;
  const I HW = (I)p.H * p.W;

  // ---- which group, phase and tile
  const int phases_w = min(p.stride_w, p.W);
  const int phases = min(p.stride_h, p.H) * phases_w;
  const I rows_max = (I)p.N * ((p.H + p.stride_h - 1) / p.stride_h) * ((p.W + p.stride_w - 1) / p.stride_w);
  const I m_blocks = (rows_max - 1) / BM + 1;
  const int n_blocks = (Cg + BN - 1) / BN;
  I blk = blockIdx.x;
  const int bn = (int)(blk % n_blocks); blk /= n_blocks;
  const I bm = blk % m_blocks; blk /= m_blocks;
  const int phase = (int)(blk % phases);
  const int g = (int)(blk / phases);
  const int ph = phase / phases_w, pw = phase % phases_w;

  const PhaseAxis ah(ph, p.H, p.stride_h, p.pad_top, p.R, p.dil_h);
  const PhaseAxis aw(pw, p.W, p.stride_w, p.pad_left, p.S, p.dil_w);
  const int plane = ah.count * aw.count;  // this phase's positions per image
  const I M = (I)p.N * plane;
  const I m0 = bm * BM;
  if (m0 >= M) return;                    // the whole block: a smaller phase's tail
  const int n0 = bn * BN;
  const int nr = ah.taps, ns = aw.taps;
  const int KD = Kg * nr * ns;            // 0 when no tap reaches the phase: dx is the bias there

  // ---- this thread's A row: one dx position of the phase, fixed for the whole k loop
  const int a_m = tid % BM;
  const int a_k = (tid / BM) * A_PER;
  const I am = m0 + a_m;
  const bool am_ok = am < M;
  const I am_c = am_ok ? am : 0;
  const I a_img = am_c / plane;
  const int a_tv = (int)(am_c % plane);
  const int pb = a_tv / aw.count + ah.e, qb = a_tv % aw.count + aw.e;  // dy (p, q) of tap i = j = 0
  const T* dya = dy + (a_img * p.K + (I)g * Kg) * PQ;

  // ---- this thread's B column block and kd
  const int b_k = tid % BK;
  const int b_n = tid / BK;
  const T* wg = w + (I)g * Kg * Cg * RS;

  // taps (k, i, j) of kd = a_k and kd = b_k, advanced by BK (itself as a tap) per k step without divisions
  PhaseTap ta = {0, 0, 0}, tb = {0, 0, 0}, step = {0, 0, 0};
  if (KD > 0) {
    ta = phase_tap_of(a_k, nr, ns);
    tb = phase_tap_of(b_k, nr, ns);
    step = phase_tap_of(BK, nr, ns);
  }

  A a_reg[A_PER], b_reg[B_PER];
  bool bad = false;  // a staged weight was Inf or NaN

  auto load_tiles = [&](int k0) {
    int k = ta.k, i = ta.i, j = ta.j;
#pragma unroll
    for (int e = 0; e < A_PER; ++e) {
      const int pp = pb - i * ah.dd, qq = qb - j * aw.dd;
      A v = A(0);
      if (am_ok && k0 + a_k + e < KD && (unsigned)pp < (unsigned)p.P && (unsigned)qq < (unsigned)p.Q)
        v = Acc<T>::load(dya[(I)k * PQ + (I)pp * p.Q + qq]);
      a_reg[e] = v;
      if (++j == ns) { j = 0; if (++i == nr) { i = 0; ++k; } }
    }
    const int woff = ah.r0 + tb.i * ah.step;  // tap row r of kd = k0 + b_k
    const int wtap = woff * p.S + aw.r0 + tb.j * aw.step;
#pragma unroll
    for (int e = 0; e < B_PER; ++e) {
      const int c = n0 + b_n + e * (NT / BK);
      A v = A(0);
      if (c < Cg && k0 + b_k < KD) v = Acc<T>::load(wg[((I)tb.k * Cg + c) * RS + wtap]);
      bad |= not_finite(v);
      b_reg[e] = v;
    }
  };
  auto advance = [&](PhaseTap& t) {
    t.j += step.j; if (t.j >= ns) { t.j -= ns; ++t.i; }
    t.i += step.i; if (t.i >= nr) { t.i -= nr; ++t.k; }
    t.k += step.k;
  };
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int e = 0; e < A_PER; ++e) As[buf][a_k + e][a_m] = a_reg[e];
#pragma unroll
    for (int e = 0; e < B_PER; ++e) Bs[buf][b_k][b_n + e * (NT / BK)] = b_reg[e];
  };

  const int tm = tid % (BM / TM), tn = tid / (BM / TM);
  A acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

  const int k_steps = (KD + BK - 1) / BK;
  if (k_steps > 0) {
    load_tiles(0);
    store_tiles(0);
    __syncthreads();
  }
  for (int ks = 0; ks < k_steps; ++ks) {
    const int buf = ks & 1;
    const bool more = ks + 1 < k_steps;
    if (more) {  // issue the next tile's global loads before this tile's FMAs
      advance(ta);
      advance(tb);
      load_tiles((ks + 1) * BK);
    }
    fma_slice<A, BM, BN, BK, TM, TN, BM, BNP>(&As[buf][0][0], &Bs[buf][0][0], tm, tn, acc);
    if (more) store_tiles(buf ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();
  }

  // ---- a block that staged an Inf/NaN weight recomputes its outputs exactly (staged zeros met it)
  const bool exact = __syncthreads_or(bad);

  // ---- epilogue: bias, then dx[img, g*Cg + c, ph + t*stride_h, pw + v*stride_w]
  const bool unstrided = p.stride_h == 1 && p.stride_w == 1;   // then a phase's rows are the dx plane's
  const bool vec = unstrided && (HW % 4 == 0) && sizeof(T) * 4 <= 16 &&
                   ((unsigned long long)dx % (4 * sizeof(T)) == 0);
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int c = n0 + (j / 4) * (BN / (TN / 4)) + tn * 4 + (j % 4);
    if (c >= Cg) continue;
    const int cc = g * Cg + c;
    const A bias = p.has_bias ? Acc<T>::load(b[cc]) : A(0);
#pragma unroll
    for (int i4 = 0; i4 < TM / 4; ++i4) {
      const I mb = m0 + i4 * (BM / (TM / 4)) + tm * 4;
      if (mb >= M) continue;
      A vals[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const I m = mb + i;
        vals[i] = acc[i4 * 4 + i][j];
        if (exact && m < M) {
          const I img = m / plane;
          const int tv = (int)(m % plane);
          vals[i] = dgrad_exact<T, I>(p, dy + (img * p.K + (I)g * Kg) * PQ, wg, c, tv / aw.count + ah.e,
                                      tv % aw.count + aw.e, ah, aw);
        }
      }
      if (vec && mb + 3 < M) {
        Store4<T> st;
#pragma unroll
        for (int i = 0; i < 4; ++i) st.v[i] = Acc<T>::store(vals[i] + bias);
        *reinterpret_cast<Store4<T>*>(dx + ((mb / plane) * p.C + cc) * HW + mb % plane) = st;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const I m = mb + i;
          if (m >= M) break;
          const I img = m / plane;
          const int tv = (int)(m % plane);
          const int h = ph + (tv / aw.count) * p.stride_h, x = pw + (tv % aw.count) * p.stride_w;
          dx[(img * p.C + cc) * HW + (I)h * p.W + x] = Acc<T>::store(vals[i] + bias);
        }
      }
    }
  }
}
