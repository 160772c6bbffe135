// barriers.cu -- emulator test kernels for barrier misuse, each must make the launch fail.
// sync_in_branch:      __syncthreads only in the threads of one half of the block
// sync_two_sites:      both halves sync, from different call sites (divergent barrier)
// return_before_sync:  `if (idx >= n) return;` before a __syncthreads (undefined in CUDA)
// sync_count:          __syncthreads_count / _and / _or results (a correct kernel)
// trap:                __trap() in one thread

extern "C" __global__ void sync_in_branch(float* out) {
  if (threadIdx.x < blockDim.x / 2) {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void sync_two_sites(float* out) {
  if (threadIdx.x % 2 == 0) {
    out[threadIdx.x] = 1.0f;
    __syncthreads();
  } else {
    out[threadIdx.x] = 2.0f;
    __syncthreads();
  }
}

extern "C" __global__ void return_before_sync(float* out, int n) {
  __shared__ float s[64];
  int idx = threadIdx.x;
  if (idx >= n) return;
  s[idx] = 1.0f;
  __syncthreads();
  out[idx] = s[(idx + 1) % n];
}

extern "C" __global__ void sync_count(int* out) {
  int c = __syncthreads_count(threadIdx.x % 3 == 0);
  int a = __syncthreads_and(threadIdx.x < 1000);
  int o = __syncthreads_or(threadIdx.x == 5);
  int z = __syncthreads_and(threadIdx.x != 7);
  if (threadIdx.x == 0) { out[0] = c; out[1] = a; out[2] = o; out[3] = z; }
}

extern "C" __global__ void trap(float* out) {
  if (threadIdx.x == 3) __trap();
  out[threadIdx.x] = 1.0f;
}

// warp_vs_block: half of warp 0 waits in a shuffle, the other half at __syncthreads (deadlock)
extern "C" __global__ void warp_vs_block(float* out) {
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  } else {
    __syncthreads();
  }
}

// deep_stack: recursion that needs about depth * 1 KiB of fiber stack
__device__ __noinline__ float deep(volatile float* scratch, int depth) {
  volatile float local[200];
  for (int i = 0; i < 200; ++i) local[i] = scratch[i % 4] + depth;
  return depth == 0 ? local[7] : deep(scratch, depth - 1) + local[depth % 200] * 0.0f;
}
extern "C" __global__ void deep_stack(float* out, int depth) {
  float s[4] = {1, 2, 3, 4};
  out[threadIdx.x] = deep(s, depth);
}

// device_assert: assert() in a kernel fails the launch (like cudaErrorAssert)
#include <cassert>
extern "C" __global__ void device_assert(const int* x) {
  assert(x[threadIdx.x] >= 0);
}
