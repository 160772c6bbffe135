// smem_poison.cu -- emulator test kernels: shared memory read before it is written.
// read_dynamic_first:  copies dynamic shared memory (never written) to out
// read_static_first:   copies a static __shared__ array (never written) to out, then writes it
//                      so that the next block would see stale values if poisoning were missing
// align_dynamic:       reports the address alignment of an __align__(16) dynamic buffer

extern "C" __global__ void read_dynamic_first(float* out, double* out64) {
  extern __shared__ float dyn[];
  out[blockIdx.x * blockDim.x + threadIdx.x] = dyn[threadIdx.x];
  if (threadIdx.x == 0) out64[blockIdx.x] = reinterpret_cast<double*>(dyn)[1];
}

extern "C" __global__ void read_static_first(float* out) {
  __shared__ float st[32], other[4];
  __shared__ int counter;
  int t = threadIdx.x;
  out[blockIdx.x * blockDim.x + t] = st[t];
  __syncthreads();
  st[t] = 7.0f;
  if (t == 0) { counter = 1; other[0] = 1.0f; }
}

extern "C" __global__ void align_dynamic(unsigned long long* out) {
  extern __shared__ __align__(16) unsigned char raw[];
  out[0] = (unsigned long long)(raw) % 16;
}

// big_static: 40 KiB of static shared memory plus whatever dynamic memory the launch gives
extern "C" __global__ void big_static(float* out) {
  __shared__ float big[10240];
  extern __shared__ float dyn2[];
  big[threadIdx.x] = 1.0f;
  dyn2[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = big[threadIdx.x] + dyn2[threadIdx.x];
}
