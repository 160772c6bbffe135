// im2col_gemm.cu -- 2-D convolution as im2col + a hand-written tiled GEMM (no cuBLAS), NCHW.
//
// im2col writes the column matrix of the whole batch, one row per filter tap and one column per output
// position:  col[(c*R + r)*S + s, (n*P + p)*Q + q] = x[n, c, p*stride_h - pad_top + r*dil_h,
//                                                        q*stride_w - pad_left + s*dil_w]   (0 outside)
// (C*R*S rows, N*P*Q columns; group g owns the contiguous rows of its Cg = C/groups channels).
// Then per group g (batched over groups in the grid) the GEMM
//   Y_g[m, j] = sum_kd W_g[m, kd] * col_g[kd, j]          m < K/groups, kd < Cg*R*S, j < N*P*Q
// with W_g = w[g*Kg : (g+1)*Kg] viewed row-major (Kg, Cg*R*S), and an epilogue that adds the bias and
// scatters column j = (n, p, q) to y[n, g*Kg + m, p, q].
// A padded tap is a stored zero here, so an Inf weight that meets padding would give NaN (as in every
// im2col implementation, PyTorch's included); dispatch never returns this family for a padded problem
// whose weight holds Inf or NaN (the family declares that it multiplies padded taps as zeros), so another
// algorithm runs it.
//
// Template parameters: T storage (float, double, __half with float accumulation: tiles are staged
// in shared memory already converted to the accumulation type), I index type (int or long long, chosen
// per call), and for the tiled GEMM the tile shape, owned by the launcher (fastconv/_cuda/im2col.py)
// and passed in the name expression.
//
// Versions:
//   im2col_v1     one thread per column-matrix element (coalesced writes)
//   conv_gemm_v1  naive GEMM: one thread per output element, operands from global memory
//   conv_gemm_v2  tiled GEMM: BM x BN block tile, BK-deep shared-memory tiles of both operands,
//                 TM x TN outputs per thread in registers ((BM/TM) * (BN/TN) threads per block)
//
// Sections: im2col | GEMM epilogue | v1 naive GEMM | v2 tiled GEMM

#include "common.cuh"

// ================================================================ im2col
template <typename T, typename I>
__global__ void im2col_v1(const ConvParams p, const T* __restrict__ x, T* __restrict__ col) {
  const I npq = (I)p.N * p.P * p.Q;
  const I total = (I)p.C * p.R * p.S * npq;
  const I i = global_thread_index<I>();
  if (i >= total) return;
  const I j = i % npq;
  const I row = i / npq;
  const int s = (int)(row % p.S);
  const int r = (int)((row / p.S) % p.R);
  const int c = (int)(row / ((I)p.R * p.S));
  const int q = (int)(j % p.Q);
  const int op = (int)((j / p.Q) % p.P);
  const I n = j / ((I)p.P * p.Q);
  const int h = first_tap_h(p, op) + r * p.dil_h;
  const int w = first_tap_w(p, q) + s * p.dil_w;
  T v = Acc<T>::store(0);
  if (h >= 0 && h < p.H && w >= 0 && w < p.W) v = x[((n * p.C + c) * p.H + h) * p.W + w];
  col[i] = v;
}

// ================================================================ GEMM epilogue
// Output element (g, m, j) of the grouped GEMM -> y[n, g*Kg + m, p, q], bias added.
template <typename T, typename I>
__device__ __forceinline__ void store_output(const ConvParams& p, const T* __restrict__ b, T* __restrict__ y,
                                             int g, int m, I j, typename Acc<T>::type acc) {
  const I pq = (I)p.P * p.Q;
  const I n = j / pq;
  const int k = g * p.K_per_group + m;
  if (p.has_bias) acc += Acc<T>::load(b[k]);
  y[(n * p.K + k) * pq + j % pq] = Acc<T>::store(acc);
}

// ================================================================ v1 naive GEMM
// One thread per (g, m, j): index o = (g * Kg + m) * NPQ + j.
template <typename T, typename I>
__global__ void conv_gemm_v1(const ConvParams p, const T* __restrict__ w, const T* __restrict__ col,
                             const T* __restrict__ b, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const I npq = (I)p.N * p.P * p.Q;
  const I total = (I)p.K * npq;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const I j = o % npq;
  const int k = (int)(o / npq);
  const int g = k / p.K_per_group, m = k % p.K_per_group;
  const int kd_len = p.C_per_group * p.R * p.S;
  const T* a_row = w + (I)k * kd_len;                 // W_g[m, :]
  const T* b_col = col + (I)g * kd_len * npq + j;     // col_g[:, j]
  A acc = 0;
  for (int kd = 0; kd < kd_len; ++kd) acc += Acc<T>::load(a_row[kd]) * Acc<T>::load(b_col[(I)kd * npq]);
  store_output<T, I>(p, b, y, g, m, j, acc);
}

// ================================================================ v2 tiled GEMM
// Grid (1-D, from the launcher): blockIdx.x = (g * m_blocks + bm) * n_blocks + bn, with
// m_blocks = ceil(Kg / BM), n_blocks = ceil(N*P*Q / BN). Block: (BM/TM) * (BN/TN) threads, 1-D.
// Shared tiles As[BK][BM] (W transposed, so a thread's TM rows are contiguous) and Bs[BK][BN];
// out-of-range elements are staged as zeros, so the inner loop has no bounds checks.
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN>
__global__ void conv_gemm_v2(const ConvParams p, const T* __restrict__ w, const T* __restrict__ col,
                             const T* __restrict__ b, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  constexpr int NT = (BM / TM) * (BN / TN);
  __shared__ A As[BK][BM];
  __shared__ A Bs[BK][BN];

  const I npq = (I)p.N * p.P * p.Q;
  const int M = p.K_per_group;
  const int KD = p.C_per_group * p.R * p.S;
  const I n_blocks = (npq - 1) / BN + 1;   // npq, M >= 1; npq + BN - 1 would pass 2^31 - 1 near the top
  const int m_blocks = (M - 1) / BM + 1;
  I blk = blockIdx.x;
  const I bn = blk % n_blocks; blk /= n_blocks;
  const int bm = (int)(blk % m_blocks);
  const int g = (int)(blk / m_blocks);

  const T* Wg = w + ((I)g * M) * KD;          // (M, KD) row-major
  const T* Bg = col + ((I)g * KD) * npq;      // (KD, npq) row-major
  const int m0 = bm * BM;
  const I j0 = bn * BN;

  const int tid = threadIdx.x;
  const int ty = tid / (BN / TN), tx = tid % (BN / TN);

  A acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int jj = 0; jj < TN; ++jj) acc[i][jj] = 0;

  for (int kd0 = 0; kd0 < KD; kd0 += BK) {
    // stage W tile (BM x BK), transposed; consecutive threads read consecutive kd of one row
#pragma unroll
    for (int i = tid; i < BM * BK; i += NT) {
      const int am = i / BK, ak = i % BK;
      const int m = m0 + am, kd = kd0 + ak;
      As[ak][am] = (m < M && kd < KD) ? Acc<T>::load(Wg[(I)m * KD + kd]) : A(0);
    }
    // stage col tile (BK x BN); consecutive threads read consecutive columns (coalesced)
#pragma unroll
    for (int i = tid; i < BK * BN; i += NT) {
      const int bk = i / BN, bj = i % BN;
      const int kd = kd0 + bk;
      const I j = j0 + bj;
      Bs[bk][bj] = (kd < KD && j < npq) ? Acc<T>::load(Bg[(I)kd * npq + j]) : A(0);
    }
    __syncthreads();

#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      A a_reg[TM], b_reg[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a_reg[i] = As[kk][ty * TM + i];
#pragma unroll
      for (int jj = 0; jj < TN; ++jj) b_reg[jj] = Bs[kk][tx * TN + jj];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int jj = 0; jj < TN; ++jj) acc[i][jj] += a_reg[i] * b_reg[jj];
    }
    __syncthreads();  // the next step overwrites the tiles
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + ty * TM + i;
    if (m >= M) break;
#pragma unroll
    for (int jj = 0; jj < TN; ++jj) {
      const I j = j0 + tx * TN + jj;
      if (j < npq) store_output<T, I>(p, b, y, g, m, j, acc[i][jj]);
    }
  }
}
