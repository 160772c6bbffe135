// faults.cu -- emulator test kernels that fault; each launch must fail with EmuError, not crash.
// null_write:     thread 5 writes through a null pointer
// int_div:        integer division by a zero argument
// past_the_end:   writes out[i + offset] for i < n (out-of-bounds when offset > 0)
// dyn_overflow:   writes one float past the dynamic shared memory it was given

extern "C" __global__ void null_write(float* out) {
  float* p = threadIdx.x == 5 ? nullptr : out + threadIdx.x;
  *(volatile float*)p = 1.0f;
}

extern "C" __global__ void int_div(int* out, int d) {
  out[threadIdx.x] = (int)threadIdx.x / d;
}

extern "C" __global__ void past_the_end(float* out, int n, int offset) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i + offset] = 1.0f;
}

extern "C" __global__ void dyn_overflow(float* out) {
  extern __shared__ float buf[];
  ((volatile float*)buf)[blockDim.x + threadIdx.x] = 2.0f;
  out[threadIdx.x] = buf[threadIdx.x];
}
