// warp.cu -- emulator test kernels for warp-level primitives (one warp per 32 consecutive threads).
// warp_sum_down:  __shfl_down_sync tree reduction, lane 0 writes the warp sum
// warp_sum_xor:   butterfly reduction, every lane writes the warp sum
// warp_vote:      __ballot_sync / __all_sync / __any_sync of x > 0
// warp_scan_up:   inclusive prefix sum with __shfl_up_sync (width 16 segments)
// warp_bcast:     __shfl_sync from lane 3 of each 8-lane segment
// shfl_partial:   a shuffle where some lanes of the warp have returned (must fail)

extern "C" __global__ void warp_sum_down(const float* x, float* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = x[i];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}

extern "C" __global__ void warp_sum_xor(const double* x, double* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  double v = x[i];
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  out[i] = v;
}

extern "C" __global__ void warp_vote(const float* x, unsigned* ballot, int* all, int* any) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int p = x[i] > 0.0f;
  unsigned b = __ballot_sync(0xffffffffu, p);
  int a = __all_sync(0xffffffffu, p);
  int y = __any_sync(0xffffffffu, p);
  __syncwarp();
  if ((threadIdx.x & 31) == 0) { ballot[i / 32] = b; all[i / 32] = a; any[i / 32] = y; }
}

extern "C" __global__ void warp_scan_up(const int* x, int* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = x[i];
  int lane = threadIdx.x & 15;
  for (int d = 1; d < 16; d <<= 1) {
    int u = __shfl_up_sync(0xffffffffu, v, d, 16);
    if (lane >= d) v += u;
  }
  out[i] = v;
}

extern "C" __global__ void warp_bcast(const long long* x, long long* out) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __shfl_sync(0xffffffffu, x[i], 3, 8);
}

extern "C" __global__ void shfl_partial(float* out, int n) {
  int i = threadIdx.x;
  if (i >= n) return;
  float v = __shfl_down_sync(0xffffffffu, out[i], 1);
  out[i] = v;
}
