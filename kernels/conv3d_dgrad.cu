// conv3d_dgrad.cu -- the input gradient of a 3-D convolution (also the transposed convolution), NCDHW.
//
// The fields of Conv3dParams describe the FORWARD problem: x (N, C, D, H, W), w (K, C/groups, T, R, S),
// y (N, K, Z, P, Q). These kernels take dy (N, K, Z, P, Q), w and an optional bias b (C) and compute, in gather
// form,
//   dx[n, g*Cg + c, d, h, w] = b[g*Cg + c]
//                            + sum over k < Kg, t, r, s of dy[n, g*Kg + k, z, p, q] * w[g*Kg + k, c, t, r, s]
//   with z = (d + pad_front - t*dil_d) / stride_d, p = (h + pad_top - r*dil_h) / stride_h,
//        q = (w + pad_left - s*dil_w) / stride_w,
// a term existing only where the three divisions are exact and (z, p, q) lies in [0, Z) x [0, P) x [0, Q): the
// terms of the forward sum whose tap landed on (d, h, w), sent back. A term that does not exist is never
// multiplied (no zero meets an Inf weight), so the result is exact for every weight. Z, P, Q need not be the
// forward output size of D, H, W (a transposed convolution with output_padding has positions no dy reaches:
// they get the bias only).
//
// Template parameters: T storage (float, double, __half; __half accumulates in float), I index type (int or
// long long, chosen per call by the launcher, fastconv/_cuda/conv3d_dgrad.py), and for v2 the tile shape, owned
// by the launcher (TILES) and passed in the name expression.
//
// Versions:
//   conv3d_dgrad_v1  one thread per dx element: the taps (t, r, s) that reach it, found per axis (a tap whose
//                    window start would be negative ends that axis' loop), then the group's filters k; all
//                    reads from global memory, summed in that fixed order. Kept for teaching and as the tests'
//                    second opinion
//   conv3d_dgrad_v2  conv_dgrad_v2 (conv_dgrad.cu) with a third axis: an implicit GEMM per stride phase. The dx
//                    positions with d % stride_d == pd, h % stride_h == ph, w % stride_w == pw are reached only by
//                    the taps PhaseAxis (common.cuh) lists per axis, so per phase and group the problem is the GEMM
//                      dX[m, c] = sum_kd dY[m, kd] * W[kd, c]   m  < N * Da * Ha * Wa (position of the phase)
//                                                               c  < Cg
//                                                               kd < Kg * nt * nr * ns (tap (k, i, j, l))
//                    with no multiply-by-zero for the taps a stride skips. dY[m, kd] is dy at (z, p, q) when that
//                    lies inside dy, else staged as 0; such a 0 would meet an Inf or NaN weight, so a block that
//                    staged a non-finite weight recomputes its outputs with the exact gather loop. Tiles of dY
//                    and W double-buffered in shared memory (one barrier per k step), the next tile's global
//                    loads issued before the current tile's FMAs (fma_slice), taps advanced incrementally,
//                    4-wide stores for unstrided problems.
//
// Sections: v1 gather | v2 phase taps and exact path | v2 implicit GEMM

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

// ================================================================ v2 phase taps and exact path
// Column kd of a phase's GEMM is tap (k, i, j, l) with kd = ((k * nt + i) * nr + j) * ns + l: filter k, the
// i-th reaching depth tap, j-th row tap, l-th column tap.
struct PhaseTap3d {
  int k, i, j, l;
};

__device__ __forceinline__ PhaseTap3d phase_tap3d_of(int kd, int nt, int nr, int ns) {
  PhaseTap3d t;
  t.l = kd % ns;
  kd /= ns;
  t.j = kd % nr;
  kd /= nr;
  t.i = kd % nt;
  t.k = kd / nt;
  return t;
}

// One dx value of a phase by the definition (the exact path for blocks that staged a non-finite weight): the
// phase's taps in (k, i, j, l) order, a tap whose (z, p, q) falls outside dy skipped. (zb, pb, qb) is the dy
// position of tap i = j = l = 0. Not inlined: called from every unrolled epilogue slot.
template <typename T, typename I>
__device__ __noinline__ typename Acc<T>::type dgrad3d_exact(const Conv3dParams p, const T* __restrict__ dy_img,
                                                            const T* __restrict__ wg, int c, int zb, int pb,
                                                            int qb, const PhaseAxis ad, const PhaseAxis ah,
                                                            const PhaseAxis aw) {
  typedef typename Acc<T>::type A;
  const I PQ = (I)p.P * p.Q;
  const I ZPQ = (I)p.Z * PQ;
  const int TRS = p.T * p.R * p.S;
  A sum = A(0);
  for (int k = 0; k < p.K_per_group; ++k)
    for (int i = 0; i < ad.taps; ++i) {
      const int zz = zb - i * ad.dd;
      if ((unsigned)zz >= (unsigned)p.Z) continue;
      for (int j = 0; j < ah.taps; ++j) {
        const int pp = pb - j * ah.dd;
        if ((unsigned)pp >= (unsigned)p.P) continue;
        for (int l = 0; l < aw.taps; ++l) {
          const int qq = qb - l * aw.dd;
          if ((unsigned)qq >= (unsigned)p.Q) continue;
          const int tap = ((ad.r0 + i * ad.step) * p.R + ah.r0 + j * ah.step) * p.S + aw.r0 + l * aw.step;
          sum += Acc<T>::load(dy_img[(I)k * ZPQ + ((I)zz * p.P + pp) * p.Q + qq]) *
                 Acc<T>::load(wg[((I)k * p.C_per_group + c) * TRS + tap]);
        }
      }
    }
  return sum;
}

// ================================================================ v2 implicit GEMM
// Grid (1-D, from the launcher): blockIdx.x = ((g * phases + phase) * m_blocks + bm) * n_blocks + bn, with
// phases = min(stride_d, D) * min(stride_h, H) * min(stride_w, W) (phase = (pd * ph_count + ph) * pw_count + pw),
// m_blocks = ceil(N * ceil(D/stride_d) * ceil(H/stride_h) * ceil(W/stride_w) / BM) (the largest phase's rows; a
// block past its own phase's rows returns at once) and n_blocks = ceil(Cg / BN).
// Staging: As[kd][m] (BK x BM) and Bs[kd][c] (BK x (BN + 4)), two of each.
//   A: thread t stages row m = t % BM and A_PER consecutive kd from (t / BM) * A_PER: a warp loads 32
//      consecutive dx positions of one tap (consecutive dy elements for an unstrided problem).
//   B: thread t stages kd = t % BK of channels t / BK + e * (NT / BK).
// Compute and fragment layout as conv3d_implicit_gemm_v1 (fma_slice).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN, int MINB>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MINB)
conv3d_dgrad_v2(const Conv3dParams p, const T* __restrict__ dy, const T* __restrict__ w, const T* __restrict__ b,
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
  const int TRS = p.T * p.R * p.S;
  const I ZPQ = (I)p.Z * p.P * p.Q;
  const I HW = (I)p.H * p.W;
  const I DHW = (I)p.D * HW;

  // ---- which group, phase and tile
  const int phases_w = min(p.stride_w, p.W), phases_h = min(p.stride_h, p.H);
  const int phases = min(p.stride_d, p.D) * phases_h * phases_w;
  const I rows_max = (I)p.N * ((p.D + p.stride_d - 1) / p.stride_d) * ((p.H + p.stride_h - 1) / p.stride_h) *
                     ((p.W + p.stride_w - 1) / p.stride_w);
  const I m_blocks = (rows_max - 1) / BM + 1;
  const int n_blocks = (Cg + BN - 1) / BN;
  I blk = blockIdx.x;
  const int bn = (int)(blk % n_blocks); blk /= n_blocks;
  const I bm = blk % m_blocks; blk /= m_blocks;
  const int phase = (int)(blk % phases);
  const int g = (int)(blk / phases);
  const int pw = phase % phases_w, ph = (phase / phases_w) % phases_h, pd = phase / (phases_w * phases_h);

  const PhaseAxis ad(pd, p.D, p.stride_d, p.pad_front, p.T, p.dil_d);
  const PhaseAxis ah(ph, p.H, p.stride_h, p.pad_top, p.R, p.dil_h);
  const PhaseAxis aw(pw, p.W, p.stride_w, p.pad_left, p.S, p.dil_w);
  const I hw_count = (I)ah.count * aw.count;
  const I plane = (I)ad.count * hw_count;   // this phase's positions per image
  const I M = (I)p.N * plane;
  const I m0 = bm * BM;
  if (m0 >= M) return;                      // the whole block: a smaller phase's tail
  const int n0 = bn * BN;
  const int nt = ad.taps, nr = ah.taps, ns = aw.taps;
  const int KD = Kg * nt * nr * ns;         // 0 when no tap reaches the phase: dx is the bias there

  // the phase position (u, v, x) of a row as dy coordinates of its tap (0, 0, 0)
  auto dy_base = [&](I m, I& img, int& zb, int& pb, int& qb) {
    img = m / plane;
    const I tv = m % plane;
    zb = (int)(tv / hw_count) + ad.e;
    pb = (int)((tv % hw_count) / aw.count) + ah.e;
    qb = (int)(tv % aw.count) + aw.e;
  };

  // ---- this thread's A row: one dx position of the phase, fixed for the whole k loop
  const int a_m = tid % BM;
  const int a_k = (tid / BM) * A_PER;
  const I am = m0 + a_m;
  const bool am_ok = am < M;
  I a_img;
  int zb, pb, qb;
  dy_base(am_ok ? am : 0, a_img, zb, pb, qb);
  const T* dya = dy + (a_img * p.K + (I)g * Kg) * ZPQ;

  // ---- this thread's B column block and kd
  const int b_k = tid % BK;
  const int b_n = tid / BK;
  const T* wg = w + (I)g * Kg * Cg * TRS;

  // taps (k, i, j, l) of kd = a_k and kd = b_k, advanced by BK (itself as a tap) per k step without divisions
  PhaseTap3d ta = {0, 0, 0, 0}, tb = {0, 0, 0, 0}, step = {0, 0, 0, 0};
  if (KD > 0) {
    ta = phase_tap3d_of(a_k, nt, nr, ns);
    tb = phase_tap3d_of(b_k, nt, nr, ns);
    step = phase_tap3d_of(BK, nt, nr, ns);
  }

  A a_reg[A_PER], b_reg[B_PER];
  bool bad = false;  // a staged weight was Inf or NaN

  auto load_tiles = [&](int k0) {
    int k = ta.k, i = ta.i, j = ta.j, l = ta.l;
#pragma unroll
    for (int e = 0; e < A_PER; ++e) {
      const int zz = zb - i * ad.dd, pp = pb - j * ah.dd, qq = qb - l * aw.dd;
      A v = A(0);
      if (am_ok && k0 + a_k + e < KD && (unsigned)zz < (unsigned)p.Z && (unsigned)pp < (unsigned)p.P &&
          (unsigned)qq < (unsigned)p.Q)
        v = Acc<T>::load(dya[(I)k * ZPQ + ((I)zz * p.P + pp) * p.Q + qq]);
      a_reg[e] = v;
      if (++l == ns) { l = 0; if (++j == nr) { j = 0; if (++i == nt) { i = 0; ++k; } } }
    }
    const int wtap = ((ad.r0 + tb.i * ad.step) * p.R + ah.r0 + tb.j * ah.step) * p.S + aw.r0 + tb.l * aw.step;
#pragma unroll
    for (int e = 0; e < B_PER; ++e) {
      const int c = n0 + b_n + e * (NT / BK);
      A v = A(0);
      if (c < Cg && k0 + b_k < KD) v = Acc<T>::load(wg[((I)tb.k * Cg + c) * TRS + wtap]);
      bad |= not_finite(v);
      b_reg[e] = v;
    }
  };
  auto advance = [&](PhaseTap3d& t) {
    t.l += step.l; if (t.l >= ns) { t.l -= ns; ++t.j; }
    t.j += step.j; if (t.j >= nr) { t.j -= nr; ++t.i; }
    t.i += step.i; if (t.i >= nt) { t.i -= nt; ++t.k; }
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

  // ---- epilogue: bias, then dx[img, g*Cg + c, pd + u*stride_d, ph + v*stride_h, pw + x*stride_w]
  const bool unstrided = p.stride_d == 1 && p.stride_h == 1 && p.stride_w == 1;  // a phase's rows: the volume
  const bool vec = unstrided && (DHW % 4 == 0) && sizeof(T) * 4 <= 16 &&
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
          I img;
          int z0, p0, q0;
          dy_base(m, img, z0, p0, q0);
          vals[i] = dgrad3d_exact<T, I>(p, dy + (img * p.K + (I)g * Kg) * ZPQ, wg, c, z0, p0, q0, ad, ah, aw);
        }
      }
      if (vec && mb + 3 < M) {
        Store4<T> st;
#pragma unroll
        for (int i = 0; i < 4; ++i) st.v[i] = Acc<T>::store(vals[i] + bias);
        *reinterpret_cast<Store4<T>*>(dx + ((mb / plane) * p.C + cc) * DHW + mb % plane) = st;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const I m = mb + i;
          if (m >= M) break;
          const I img = m / plane;
          const I tv = m % plane;
          const int d = pd + (int)(tv / hw_count) * p.stride_d;
          const int h = ph + (int)((tv % hw_count) / aw.count) * p.stride_h;
          const int x = pw + (int)(tv % aw.count) * p.stride_w;
          dx[(img * p.C + cc) * DHW + ((I)d * p.H + h) * p.W + x] = Acc<T>::store(vals[i] + bias);
        }
      }
    }
  }
}
