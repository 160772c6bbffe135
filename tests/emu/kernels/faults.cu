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

// spin_on_neighbour: thread 0 spins until thread 1 sets a shared flag. Fine on a GPU with
// independent thread scheduling; the emulator's fibers are never preempted, so it must time out.
extern "C" __global__ void spin_on_neighbour(int* out) {
  __shared__ volatile int flag;
  if (threadIdx.x == 1) flag = 1;
  if (threadIdx.x == 0) {
    flag = 0;
    while (flag == 0) {}
  }
  out[threadIdx.x] = 1;
}

// endless_math: an infinite loop that spends most of its time inside libm
extern "C" __global__ void endless_math(float* out, int n) {
  float v = out[threadIdx.x];
  for (int i = 0; i != n; i += (n < 0 ? 0 : 1)) v = expf(v) * 1e-30f + sinf(v);
  out[threadIdx.x] = v;
}
