// vector_add.cu -- emulator test kernels: element-wise add with 1-D, grid-stride and 3-D indexing.
// vadd_plain:   one thread per element, `if (idx >= n) return;` guard
// vadd_stride:  grid-stride loop
// vadd_3d:      3-D grid and block over a (D, H, W) volume

extern "C" __global__ void vadd_plain(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, int n) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  out[idx] = a[idx] + b[idx];
}

extern "C" __global__ void vadd_stride(const float* a, const float* b, float* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    out[i] = a[i] + b[i];
}

extern "C" __global__ void vadd_3d(const float* a, const float* b, float* out, int D, int H, int W) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  int z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x >= W || y >= H || z >= D) return;
  long long i = ((long long)z * H + y) * W + x;
  out[i] = a[i] + b[i];
}
