// conv2d_direct.cu -- direct 2-D convolution (cross-correlation, as torch.nn.functional.conv2d), NCHW.
//
// y[n, k, p, q] = b[k] + sum_{c < C/groups, r, s} x[n, g*Cg + c, p*stride_h - pad_top + r*dil_h,
//                                                  q*stride_w - pad_left + s*dil_w] * w[k, c, r, s]
// with g = k / (K/groups), over taps inside the input only: a tap in the padding contributes nothing
// (it is skipped, not multiplied by zero, so an Inf weight never meets a padded zero -- the oracle's rule).
// x (N, C, H, W), w (K, C/groups, R, S), b (K) (a dummy when has_bias == 0), y (N, K, P, Q).
// Stride, asymmetric padding, dilation and groups (depthwise included) are all runtime parameters.
//
// Template parameters: T storage (float, double, __half with float accumulation), I index type
// (int or long long, chosen per call by the launcher), and for v2 the tile shape, which the launcher
// (fastconv/_cuda/direct.py) owns and passes in the name expression.
//
// Versions:
//   conv2d_direct_v1  naive: one thread per output element, everything read from global memory
//   conv2d_direct_v2  output-tiled: a block computes TILE_P x TILE_Q outputs of K_TILE channels of one
//                     image; per chunk of C_TILE input channels it stages the input patch and the
//                     filter slice in shared memory, each thread accumulates K_TILE outputs in registers
//
// Sections: v1 naive | v2 shared-memory tiled

#include "common.cuh"

// ================================================================ v1 naive
template <typename T, typename I>
__global__ void conv2d_direct_v1(const ConvParams p, const T* __restrict__ x, const T* __restrict__ w,
                                 const T* __restrict__ b, T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  const I total = (I)p.N * p.K * p.P * p.Q;
  const I o = global_thread_index<I>();
  if (o >= total) return;
  const int q = (int)(o % p.Q);
  const int op = (int)((o / p.Q) % p.P);
  const int k = (int)((o / ((I)p.P * p.Q)) % p.K);
  const I n = o / ((I)p.K * p.P * p.Q);
  const int g = k / p.K_per_group;
  const int h_org = first_tap_h(p, op);
  const int w_org = first_tap_w(p, q);

  A acc = 0;
  for (int c = 0; c < p.C_per_group; ++c) {
    const T* xc = x + (n * p.C + (I)g * p.C_per_group + c) * p.H * p.W;
    const T* wc = w + ((I)k * p.C_per_group + c) * p.R * p.S;
    for (int r = 0; r < p.R; ++r) {
      const int h = h_org + r * p.dil_h;
      if (h < 0 || h >= p.H) continue;
      for (int s = 0; s < p.S; ++s) {
        const int ww = w_org + s * p.dil_w;
        if (ww < 0 || ww >= p.W) continue;
        acc += Acc<T>::load(xc[(I)h * p.W + ww]) * Acc<T>::load(wc[r * p.S + s]);
      }
    }
  }
  if (p.has_bias) acc += Acc<T>::load(b[k]);
  y[o] = Acc<T>::store(acc);
}

// ================================================================ v2 shared-memory tiled
// Block: TILE_Q x TILE_P threads (threadIdx.x along q). Grid (1-D, from the launcher; OutputTile):
//   blockIdx.x = (((n * groups + g) * k_blocks + kb) * tiles_p + tp) * tiles_q + tq
// Dynamic shared memory (accumulation type A, PatchSmem), from the launcher:
//   C_TILE * patch_h * patch_w input values, then C_TILE * K_TILE * R * S filter values,
// where patch_h/patch_w = (TILE-1)*stride + (kernel-1)*dil + 1 are computed by the launcher and passed in.
// Out-of-range threads (p >= P or q >= Q) load and pass every barrier but store nothing.
template <typename T, typename I, int TILE_P, int TILE_Q, int K_TILE, int C_TILE>
__global__ void conv2d_direct_v2(const ConvParams p, const int patch_h, const int patch_w,
                                 const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                 T* __restrict__ y) {
  typedef typename Acc<T>::type A;
  extern __shared__ double fastconv_smem[];  // one name and type for every instantiation
  const PatchSmem<A> sm(fastconv_smem, C_TILE, patch_h, patch_w);
  const int RS = p.R * p.S;

  // which tile of which image / group / channel block
  const OutputTile<I> tile(p, TILE_P, TILE_Q);
  const int k_blocks = (p.K_per_group + K_TILE - 1) / K_TILE;
  I blk = tile.outer;
  const int kb = (int)(blk % k_blocks); blk /= k_blocks;
  const int g = (int)(blk % p.groups);
  const I n = blk / p.groups;

  const int tid = threadIdx.y * TILE_Q + threadIdx.x;
  const int nthreads = TILE_P * TILE_Q;
  const int op = tile.tp * TILE_P + threadIdx.y;
  const int oq = tile.tq * TILE_Q + threadIdx.x;
  const bool active = op < p.P && oq < p.Q;
  const int h_org = tile.h_org, w_org = tile.w_org;
  const int k0 = kb * K_TILE;  // first channel of this block, within the group

  A acc[K_TILE];
#pragma unroll
  for (int kk = 0; kk < K_TILE; ++kk) acc[kk] = 0;

  const T* x_group = x + (n * p.C + (I)g * p.C_per_group) * p.H * p.W;
  for (int c0 = 0; c0 < p.C_per_group; c0 += C_TILE) {
    // stage C_TILE input patches (zeros outside the input or past the last channel; never used there)
    for (int i = tid; i < C_TILE * sm.patch_size; i += nthreads) {
      const int cc = i / sm.patch_size;
      const int ph = (i % sm.patch_size) / patch_w, pw = i % patch_w;
      const int h = h_org + ph, ww = w_org + pw;
      A v = 0;
      if (c0 + cc < p.C_per_group && h >= 0 && h < p.H && ww >= 0 && ww < p.W)
        v = Acc<T>::load(x_group[((I)(c0 + cc) * p.H + h) * p.W + ww]);
      sm.patch[i] = v;
    }
    // stage the filter slice w[g*Kg + k0 + kk, c0 + cc, :, :] as filt[(cc * K_TILE + kk) * RS + rs]
    for (int i = tid; i < C_TILE * K_TILE * RS; i += nthreads) {
      const int cc = i / (K_TILE * RS);
      const int kk = (i / RS) % K_TILE;
      const int rs = i % RS;
      A v = 0;
      if (c0 + cc < p.C_per_group && k0 + kk < p.K_per_group)
        v = Acc<T>::load(w[(((I)g * p.K_per_group + k0 + kk) * p.C_per_group + c0 + cc) * RS + rs]);
      sm.filt[i] = v;
    }
    __syncthreads();

    if (active) {
      const int c_count = min(C_TILE, p.C_per_group - c0);
      for (int cc = 0; cc < c_count; ++cc) {
        const A* pc = sm.patch + cc * sm.patch_size;
        const A* fc = sm.filt + cc * K_TILE * RS;
        for (int r = 0; r < p.R; ++r) {
          const int ph = threadIdx.y * p.stride_h + r * p.dil_h;
          const int h = h_org + ph;
          if (h < 0 || h >= p.H) continue;  // padding contributes nothing
          for (int s = 0; s < p.S; ++s) {
            const int pw = threadIdx.x * p.stride_w + s * p.dil_w;
            const int ww = w_org + pw;
            if (ww < 0 || ww >= p.W) continue;
            const A v = pc[ph * patch_w + pw];
#pragma unroll
            for (int kk = 0; kk < K_TILE; ++kk) acc[kk] += v * fc[kk * RS + r * p.S + s];
          }
        }
      }
    }
    __syncthreads();  // the next chunk overwrites patch and filt
  }

  if (active) {
#pragma unroll
    for (int kk = 0; kk < K_TILE; ++kk) {
      const int kg = k0 + kk;
      if (kg >= p.K_per_group) break;
      const int k = g * p.K_per_group + kg;
      A out = acc[kk];
      if (p.has_bias) out += Acc<T>::load(b[k]);
      y[((n * p.K + k) * p.P + op) * p.Q + oq] = Acc<T>::store(out);
    }
  }
}
