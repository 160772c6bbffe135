// depthwise.cu -- depthwise 2-D convolution (groups == C: one input channel per group), NCHW.
//
// y[n, k, p, q] = b[k] + sum_{r, s} x[n, k / M, p*stride_h - pad_top + r*dil_h, q*stride_w - pad_left + s*dil_w]
//                                   * w[k, 0, r, s]
// with M = K / C the channel multiplier, over taps inside the input only: a tap in the padding contributes
// nothing (the oracle's rule, fastconv/_backends/numpy_oracle.py), so an Inf/NaN weight never meets a
// padded zero. x (N, C, H, W), w (K, 1, R, S), b (K) (a dummy when has_bias == 0), y (N, K, P, Q).
// Any R, S, stride, dilation and asymmetric padding.
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type (int or
// long long, chosen per call by the launcher), and the tile, which the launcher
// (fastconv/_cuda/depthwise.py) owns and passes in the name expression: PPT output rows per thread,
// and FR, FS, FSTRIDE, a filter size and stride fixed at compile time (dilation 1), or 0, 0, 0 for any.
//
// Versions:
//   depthwise_v1  a block owns a tile_p x tile_q output tile of `planes` (n, k) output planes (several
//                 whole planes when a plane is small), stages their input patches with halo and their
//                 filters in shared memory (coalesced, zeros in the padding), then each thread computes
//                 PPT vertically adjacent outputs of one column (lanes run along q: conflict-free reads,
//                 coalesced stores). With a fixed filter the input rows are streamed through registers
//                 and reused by the PPT outputs; a thread whose filter holds Inf/NaN takes the
//                 bounds-checked path that skips padded taps, as does the any-filter instantiation.
//
// Sections: tap loops | v1 shared-memory tiled

#include "common.cuh"

// ================================================================ tap loops
// PPT outputs of one column, every tap bounds-checked (taps in the padding are skipped, never multiplied).
// src: the patch at the thread's first output's first tap; h0/w0: that tap's input coordinates.
template <typename A, int PPT>
__device__ __forceinline__ void depthwise_taps_checked(const ConvParams& p, const A* src, const A* wt,
                                                       int patch_w, int h0, int w0, A (&acc)[PPT]) {
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    for (int r = 0; r < p.R; ++r) {
      const int dh = j * p.stride_h + r * p.dil_h;
      if (h0 + dh < 0 || h0 + dh >= p.H) continue;
      for (int s = 0; s < p.S; ++s) {
        const int dw = s * p.dil_w;
        if (w0 + dw < 0 || w0 + dw >= p.W) continue;
        acc[j] += src[dh * patch_w + dw] * wt[r * p.S + s];
      }
    }
  }
}

// PPT outputs of one column with an FR x FS filter, stride FSTRIDE, dilation 1, reading the staged zeros
// in the padding: each input row is loaded once into registers and feeds every output whose window holds it.
template <typename A, int PPT, int FR, int FS, int FSTRIDE>
__device__ __forceinline__ void depthwise_taps_fixed(const A* src, const A (&wr)[FR * FS], int patch_w,
                                                     A (&acc)[PPT]) {
#pragma unroll
  for (int i = 0; i < (PPT - 1) * FSTRIDE + FR; ++i) {
    A xv[FS];
#pragma unroll
    for (int s = 0; s < FS; ++s) xv[s] = src[i * patch_w + s];
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      const int r = i - j * FSTRIDE;
      if (r < 0 || r >= FR) continue;
#pragma unroll
      for (int s = 0; s < FS; ++s) acc[j] += xv[s] * wr[r * FS + s];
    }
  }
}

// ================================================================ v1 shared-memory tiled
// Block: 1-D, any size (the launcher's). Grid (1-D, OutputTile's with outer = plane_block):
//   blockIdx.x = (plane_block * tiles_p + tp) * tiles_q + tq,
// where plane_block covers output planes [plane_block * planes, +planes) of the N*K (n, k) planes; when
// `planes` > 1 the tile is the whole plane (tiles_p == tiles_q == 1). tile_p is a multiple of PPT.
// Dynamic shared memory (accumulation type A, PatchSmem), from the launcher:
//   planes * patch_h * patch_w input values, then planes * R * S filter values,
// with patch_h/patch_w = (tile-1)*stride + (kernel-1)*dil + 1.
// Items (plane, row group, column) are dealt to the threads round-robin, column fastest; no barrier follows
// the compute loop, so a thread with nothing to store simply moves on.
template <typename T, typename I, int PPT, int FR, int FS, int FSTRIDE>
__global__ void depthwise_v1(const ConvParams p, const int tile_p, const int tile_q, const int planes,
                             const int patch_h, const int patch_w, const T* __restrict__ x,
                             const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  extern __shared__ double fastconv_smem[];  // one name and type for every instantiation
  const PatchSmem<A> sm(fastconv_smem, planes, patch_h, patch_w);
  const int RS = p.R * p.S;

  // which tile of which planes
  const OutputTile<I> tile(p, tile_p, tile_q);
  const int tp = tile.tp, tq = tile.tq;
  const I plane0 = tile.outer * planes;
  const I NK = (I)p.N * p.K;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int h_org = tile.h_org, w_org = tile.w_org;

  // ---- stage the input patches: element i = (plane pl, row ph, column pw), column fastest; each thread
  // walks its elements with mixed-radix counters (one division up front instead of two per element)
  {
    int pl = tid / sm.patch_size, ph = (tid % sm.patch_size) / patch_w, pw = tid % patch_w;
    const int d_pl = nthreads / sm.patch_size, d_ph = (nthreads % sm.patch_size) / patch_w, d_pw = nthreads % patch_w;
    int cur = -1;
    const T* src = x;
    bool plane_ok = false;
    for (int i = tid; i < planes * sm.patch_size; i += nthreads) {
      if (pl != cur) {  // output plane (n, k) reads input plane (n, k / M)
        cur = pl;
        const I np = plane0 + pl;
        plane_ok = np < NK;
        if (plane_ok) src = x + ((np / p.K) * p.C + (int)(np % p.K) / p.K_per_group) * p.H * p.W;
      }
      const int h = h_org + ph, ww = w_org + pw;
      A v = 0;
      if (plane_ok && h >= 0 && h < p.H && ww >= 0 && ww < p.W) v = Acc<T>::load(src[(I)h * p.W + ww]);
      sm.patch[i] = v;
      pw += d_pw;
      if (pw >= patch_w) { pw -= patch_w; ++ph; }
      ph += d_ph;
      if (ph >= patch_h) { ph -= patch_h; ++pl; }
      pl += d_pl;
    }
  }
  // ---- stage the filters of the block's planes: filt[pl * RS + rs] = w[k, 0, rs]
  for (int i = tid; i < planes * RS; i += nthreads) {
    const I np = plane0 + i / RS;
    A v = 0;
    if (np < NK) v = Acc<T>::load(w[(I)(int)(np % p.K) * RS + i % RS]);
    sm.filt[i] = v;
  }
  __syncthreads();

  // ---- compute: item = (plane pl, row group pg, column ql), PPT outputs of column ql per item
  const int pgroups = tile_p / PPT;
  const int items = planes * pgroups * tile_q;
  for (int it = tid; it < items; it += nthreads) {
    const int ql = it % tile_q;
    const int rest = it / tile_q;
    const int pg = rest % pgroups, pl = rest / pgroups;
    const I np = plane0 + pl;
    const int oq = tq * tile_q + ql;
    const int op0 = tp * tile_p + pg * PPT;
    if (np >= NK || oq >= p.Q || op0 >= p.P) continue;

    const A* src = sm.patch + pl * sm.patch_size + pg * PPT * p.stride_h * patch_w + ql * p.stride_w;
    const A* wt = sm.filt + pl * RS;
    A acc[PPT];
#pragma unroll
    for (int j = 0; j < PPT; ++j) acc[j] = 0;
    const int h0 = first_tap_h(p, op0), w0 = first_tap_w(p, oq);
    if constexpr (FR > 0) {
      A wr[FR * FS];
      bool finite = true;
#pragma unroll
      for (int t = 0; t < FR * FS; ++t) {
        wr[t] = wt[t];
        finite = finite && isfinite(wr[t]);
      }
      if (finite) {
        depthwise_taps_fixed<A, PPT, FR, FS, FSTRIDE>(src, wr, patch_w, acc);
      } else {  // an Inf/NaN weight must never meet a padded zero: skip the taps in the padding
        depthwise_taps_checked<A, PPT>(p, src, wt, patch_w, h0, w0, acc);
      }
    } else {
      depthwise_taps_checked<A, PPT>(p, src, wt, patch_w, h0, w0, acc);
    }

    const int k = (int)(np % p.K);
    const A bias = p.has_bias ? Acc<T>::load(b[k]) : A(0);
    T* yp = y + (np * p.P + op0) * p.Q + oq;
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      if (op0 + j < p.P) yp[(I)j * p.Q] = Acc<T>::store(acc[j] + bias);
    }
  }
}
