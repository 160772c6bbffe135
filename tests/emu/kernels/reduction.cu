// reduction.cu -- emulator test kernels: per-block sum of 256 floats through shared memory.
// block_sum:       classic tree reduction with a __syncthreads after every step
// block_sum_racy:  the same with the barrier inside the loop deliberately missing
// block_sum_dyn:   block_sum on dynamic shared memory (extern __shared__)
#define BLOCK 256

extern "C" __global__ void block_sum(const float* x, float* out, int n) {
  __shared__ float buf[BLOCK];
  int i = blockIdx.x * BLOCK + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

extern "C" __global__ void block_sum_racy(const float* x, float* out, int n) {
  __shared__ float buf[BLOCK];
  int i = blockIdx.x * BLOCK + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    // missing __syncthreads(): a thread may read buf[t + s] before its owner updated it
  }
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

extern "C" __global__ void block_sum_dyn(const float* x, float* out, int n) {
  extern __shared__ float dbuf[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  dbuf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) dbuf[threadIdx.x] += dbuf[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = dbuf[0];
}
