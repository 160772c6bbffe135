// cuda_emu.h -- force-included (g++ -include) into every emulated CUDA translation unit.
//
// Maps CUDA C qualifiers, built-in variables and device intrinsics onto plain C++17 so that a
// .cu file written for NVRTC/CuPy compiles with g++ and runs on the fiber scheduler in
// emu_runtime.cpp. Every CUDA thread is a fiber; a block runs on one OS worker thread.
//
// Sections: qualifiers | built-in variables | runtime entry points | barriers and warp ops |
//           atomics | vector types | half precision | math and bit intrinsics | kernel descriptors
#pragma once
#define FASTCONV_EMU 1

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#define EMU_API extern "C" __attribute__((visibility("default")))
#define EMU_HIDDEN __attribute__((visibility("hidden")))

// ================================================================ qualifiers
#define __global__
#define __device__
#define __host__
// __noinline__ is deliberately not defined: glibc's <sys/cdefs.h> and libstdc++ 13 write the GCC spelling
// __attribute__((__noinline__)) in their own headers, which such a macro breaks (seen with g++ 13 on the
// GPU machine). The Python loader respells __noinline__ in the kernel file itself (_source.py); in an
// included header it fails to compile here, loudly.
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
#define __managed__
// Static __shared__ variables: one copy per OS worker thread, i.e. per running block (a
// block-scope thread_local is implicitly static). `extern __shared__ T name[];` is rewritten by
// the Python loader into a pointer to the per-launch dynamic buffer (see __emu_dynamic_smem).
#define __shared__ thread_local
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif
#define __CUDA_ARCH__ 800

// ================================================================ built-in variables
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
// Per-fiber values: the scheduler rewrites threadIdx on every switch (a fiber never migrates
// between OS threads), blockIdx once per block, blockDim/gridDim once per launch and worker.
extern __thread uint3 threadIdx EMU_HIDDEN;
extern __thread uint3 blockIdx EMU_HIDDEN;
extern __thread dim3 blockDim EMU_HIDDEN;
extern __thread dim3 gridDim EMU_HIDDEN;
constexpr int warpSize = 32;

// ================================================================ runtime entry points
enum {
  EMU_WOP_SYNCWARP = 1, EMU_WOP_SHFL, EMU_WOP_SHFL_UP, EMU_WOP_SHFL_DOWN, EMU_WOP_SHFL_XOR,
  EMU_WOP_ALL, EMU_WOP_ANY, EMU_WOP_BALLOT,
};
enum { EMU_BAR_PLAIN = 0, EMU_BAR_COUNT, EMU_BAR_AND, EMU_BAR_OR };
EMU_HIDDEN int __emu_barrier(int kind, int pred, int line);
EMU_HIDDEN unsigned long long __emu_warp_op(int op, unsigned mask, unsigned long long value, int arg,
                                            int width, int line);
EMU_HIDDEN unsigned __emu_activemask();
EMU_HIDDEN void* __emu_dynamic_smem();
EMU_HIDDEN void __emu_poison_static_smem(void* p, size_t bytes);
[[noreturn]] EMU_HIDDEN void __emu_trap(const char* what, int line);
EMU_HIDDEN void __emu_launch_bounds_(long long max_threads, int line);

// ================================================================ barriers and warp ops
#define __syncthreads() ((void)__emu_barrier(EMU_BAR_PLAIN, 1, __LINE__))
#define __syncthreads_count(p) __emu_barrier(EMU_BAR_COUNT, (p) ? 1 : 0, __LINE__)
#define __syncthreads_and(p) __emu_barrier(EMU_BAR_AND, (p) ? 1 : 0, __LINE__)
#define __syncthreads_or(p) __emu_barrier(EMU_BAR_OR, (p) ? 1 : 0, __LINE__)
#define __trap() __emu_trap("__trap()", __LINE__)
#define __syncwarp(...) __emu_syncwarp_(__LINE__ __VA_OPT__(, ) __VA_ARGS__)
inline void __emu_syncwarp_(int line, unsigned mask = 0xffffffffu) {
  (void)__emu_warp_op(EMU_WOP_SYNCWARP, mask, 0, 0, 32, line);
}

template <class T>
inline T __emu_shfl_(int op, unsigned mask, T var, int arg, int width, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp shuffles move at most 8 trivially copyable bytes");
  unsigned long long v = 0;
  std::memcpy(&v, &var, sizeof(T));
  unsigned long long r = __emu_warp_op(op, mask, v, arg, width, line);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}
#define __shfl_sync(mask, var, lane, ...) \
  __emu_shfl_(EMU_WOP_SHFL, (mask), (var), (lane), __emu_width_(__VA_ARGS__), __LINE__)
#define __shfl_up_sync(mask, var, delta, ...) \
  __emu_shfl_(EMU_WOP_SHFL_UP, (mask), (var), (delta), __emu_width_(__VA_ARGS__), __LINE__)
#define __shfl_down_sync(mask, var, delta, ...) \
  __emu_shfl_(EMU_WOP_SHFL_DOWN, (mask), (var), (delta), __emu_width_(__VA_ARGS__), __LINE__)
#define __shfl_xor_sync(mask, var, lanemask, ...) \
  __emu_shfl_(EMU_WOP_SHFL_XOR, (mask), (var), (lanemask), __emu_width_(__VA_ARGS__), __LINE__)
inline int __emu_width_() { return 32; }
inline int __emu_width_(int w) { return w; }
#define __all_sync(mask, p) ((int)__emu_warp_op(EMU_WOP_ALL, (mask), (p) ? 1 : 0, 0, 32, __LINE__))
#define __any_sync(mask, p) ((int)__emu_warp_op(EMU_WOP_ANY, (mask), (p) ? 1 : 0, 0, 32, __LINE__))
#define __ballot_sync(mask, p) \
  ((unsigned)__emu_warp_op(EMU_WOP_BALLOT, (mask), (p) ? 1 : 0, 0, 32, __LINE__))
#define __activemask() __emu_activemask()

// ================================================================ atomics (real atomics: blocks run concurrently)
#define EMU_ATOMIC_INT_OPS(T)                                                                        \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }               \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }               \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }               \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                 \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }               \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }             \
  inline T atomicCAS(T* a, T cmp, T v) {                                                             \
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);              \
    return cmp;                                                                                      \
  }                                                                                                  \
  inline T atomicMax(T* a, T v) {                                                                    \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
    return old;                                                                                      \
  }                                                                                                  \
  inline T atomicMin(T* a, T v) {                                                                    \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                    \
    while (v < old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
    return old;                                                                                      \
  }
EMU_ATOMIC_INT_OPS(int)
EMU_ATOMIC_INT_OPS(unsigned int)
EMU_ATOMIC_INT_OPS(long long)
EMU_ATOMIC_INT_OPS(unsigned long long)
#undef EMU_ATOMIC_INT_OPS
inline unsigned short atomicCAS(unsigned short* a, unsigned short cmp, unsigned short v) {
  __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
template <class F, class U>
inline F __emu_atomic_float_rmw_(F* a, F v, int op) {
  static_assert(sizeof(F) == sizeof(U), "");
  U* p = reinterpret_cast<U*>(a);
  U old = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    F f;
    std::memcpy(&f, &old, sizeof f);
    F n = op == 0 ? F(f + v) : op == 1 ? v : op == 2 ? (f < v || f != f ? v : f) : (v < f || f != f ? v : f);
    U nu;
    std::memcpy(&nu, &n, sizeof nu);
    if (__atomic_compare_exchange_n(p, &old, nu, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
  }
}
inline float atomicAdd(float* a, float v) { return __emu_atomic_float_rmw_<float, uint32_t>(a, v, 0); }
inline double atomicAdd(double* a, double v) { return __emu_atomic_float_rmw_<double, uint64_t>(a, v, 0); }
inline float atomicExch(float* a, float v) { return __emu_atomic_float_rmw_<float, uint32_t>(a, v, 1); }
#define EMU_ATOMIC_ALIASES(name)                                         \
  template <class... A> inline auto name##_block(A... a) { return name(a...); } \
  template <class... A> inline auto name##_system(A... a) { return name(a...); }
EMU_ATOMIC_ALIASES(atomicAdd)
EMU_ATOMIC_ALIASES(atomicMax)
EMU_ATOMIC_ALIASES(atomicMin)
EMU_ATOMIC_ALIASES(atomicCAS)
EMU_ATOMIC_ALIASES(atomicExch)
#undef EMU_ATOMIC_ALIASES
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ================================================================ vector types
#define EMU_VEC2(T, N, A) struct __attribute__((aligned(A))) N##2 { T x, y; }; \
  inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define EMU_VEC3(T, N) struct N##3 { T x, y, z; }; \
  inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define EMU_VEC4(T, N, A) struct __attribute__((aligned(A))) N##4 { T x, y, z, w; }; \
  inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
EMU_VEC2(float, float, 8) EMU_VEC3(float, float) EMU_VEC4(float, float, 16)
EMU_VEC2(double, double, 16) EMU_VEC3(double, double) EMU_VEC4(double, double, 16)
EMU_VEC2(int, int, 8) EMU_VEC3(int, int) EMU_VEC4(int, int, 16)
EMU_VEC2(unsigned int, uint, 8) EMU_VEC4(unsigned int, uint, 16)
EMU_VEC2(short, short, 4) EMU_VEC4(short, short, 8)
EMU_VEC2(unsigned short, ushort, 4) EMU_VEC4(unsigned short, ushort, 8)
EMU_VEC2(signed char, char, 2) EMU_VEC4(signed char, char, 4)
EMU_VEC2(unsigned char, uchar, 2) EMU_VEC4(unsigned char, uchar, 4)
EMU_VEC2(long long, longlong, 16) EMU_VEC2(unsigned long long, ulonglong, 16)
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4

// ================================================================ half precision (_Float16, IEEE binary16)
typedef _Float16 __half;
typedef _Float16 half;
struct __attribute__((aligned(4))) __half2 { __half x, y; };
typedef __half2 half2;
inline float __half2float(__half h) { return (float)h; }
inline __half __float2half(float f) { return (__half)f; }
inline __half __float2half_rn(float f) { return (__half)f; }
inline __half __double2half(double d) { return (__half)d; }
inline __half __int2half_rn(int i) { return (__half)(float)i; }
inline __half __ushort_as_half(unsigned short u) { __half h; std::memcpy(&h, &u, 2); return h; }
inline unsigned short __half_as_ushort(__half h) { unsigned short u; std::memcpy(&u, &h, 2); return u; }
inline __half __short_as_half(short u) { __half h; std::memcpy(&h, &u, 2); return h; }
inline short __half_as_short(__half h) { short u; std::memcpy(&u, &h, 2); return u; }
inline __half __hadd(__half a, __half b) { return (__half)((float)a + (float)b); }
inline __half __hsub(__half a, __half b) { return (__half)((float)a - (float)b); }
inline __half __hmul(__half a, __half b) { return (__half)((float)a * (float)b); }
inline __half __hdiv(__half a, __half b) { return (__half)((float)a / (float)b); }
inline __half __hneg(__half a) { return -a; }
inline __half __hfma(__half a, __half b, __half c) { return (__half)std::fma((float)a, (float)b, (float)c); }
inline bool __hlt(__half a, __half b) { return (float)a < (float)b; }
inline bool __hgt(__half a, __half b) { return (float)a > (float)b; }
inline bool __hle(__half a, __half b) { return (float)a <= (float)b; }
inline bool __hge(__half a, __half b) { return (float)a >= (float)b; }
inline bool __heq(__half a, __half b) { return (float)a == (float)b; }
inline bool __hisnan(__half a) { return a != a; }
inline __half __hmax(__half a, __half b) { return (__half)std::fmax((float)a, (float)b); }
inline __half __hmin(__half a, __half b) { return (__half)std::fmin((float)a, (float)b); }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{(__half)a, (__half)b}; }
inline __half2 __float2half2_rn(float a) { return __half2{(__half)a, (__half)a}; }
inline float2 __half22float2(__half2 h) { return float2{(float)h.x, (float)h.y}; }
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline __half2 __hadd2(__half2 a, __half2 b) { return __half2{__hadd(a.x, b.x), __hadd(a.y, b.y)}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return __half2{__hmul(a.x, b.x), __hmul(a.y, b.y)}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __half2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
inline __half atomicAdd(__half* a, __half v) { return __emu_atomic_float_rmw_<__half, uint16_t>(a, v, 0); }
inline __half2 atomicAdd(__half2* a, __half2 v) {
  uint32_t* p = reinterpret_cast<uint32_t*>(a);
  uint32_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    __half2 h, n;
    std::memcpy(&h, &old, 4);
    n = __hadd2(h, v);
    uint32_t nu;
    std::memcpy(&nu, &n, 4);
    if (__atomic_compare_exchange_n(p, &old, nu, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return h;
  }
}

// ================================================================ math and bit intrinsics
// No -ffast-math: IEEE semantics (NaN, Inf, signed zero) as CUDA defines them for the _rn forms.
// fmaxf/fminf return the non-NaN operand, like CUDA. The fast approximate CUDA intrinsics
// (__expf, __fdividef, ...) are computed exactly here: results may differ from a GPU in the
// last bits, never in NaN/Inf behaviour. nvcc contracts a*b+c into FMA by default; g++ here
// does not (-std=c++17 implies -ffp-contract=off), so expect ~1 ulp differences.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_ru(float x) { return (int)std::ceil(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline int __mul24(int a, int b) { return (int)((long long)((a << 8) >> 8) * ((b << 8) >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// CUDA's min/max overloads: integers compare, floating point uses fmax/fmin (NaN-ignoring).
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
  else return (C)a < (C)b ? (C)b : (C)a;
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
  else return (C)b < (C)a ? (C)b : (C)a;
}
using std::abs;
using std::fabs; using std::fmax; using std::fmin; using std::sqrt; using std::exp; using std::log;
using std::isnan; using std::isinf; using std::isfinite; using std::signbit; using std::floor; using std::ceil;

// ================================================================ kernel descriptors
// One thunk per kernel unpacks a void** argument array the way cuLaunchKernel does; a
// descriptor of parameter kinds lets Python check arguments before the launch.
enum { EMU_K_PTR = 1, EMU_K_SINT, EMU_K_UINT, EMU_K_FLOAT, EMU_K_HALF, EMU_K_STRUCT, EMU_K_VOID };
struct emu_param {
  int kind, size, align;
  int pointee_kind, pointee_size, pointee_const;
  const char* type_name;
};
struct emu_kernel_desc {
  const char* name;
  void (*fn)();
  void (*invoke)(void (*fn)(), void** args);
  int nparams;
  const emu_param* params;
};
template <class T> struct emu_kind_of {
  static constexpr int value =
      std::is_void<T>::value ? EMU_K_VOID
      : std::is_pointer<T>::value ? EMU_K_PTR
      : std::is_same<T, __half>::value ? EMU_K_HALF
      : std::is_floating_point<T>::value ? EMU_K_FLOAT
      : (std::is_integral<T>::value || std::is_enum<T>::value)
          ? ((std::is_integral<T>::value ? std::is_signed<T>::value
                                         : std::is_signed<std::underlying_type_t<std::conditional_t<
                                               std::is_enum<T>::value, T, std::byte>>>::value)
                 ? EMU_K_SINT : EMU_K_UINT)
      : EMU_K_STRUCT;
};
template <class T> struct emu_size_of { static constexpr int value = (int)sizeof(T); };
template <> struct emu_size_of<void> { static constexpr int value = 0; };
template <> struct emu_size_of<const void> { static constexpr int value = 0; };
template <class T> struct emu_align_of { static constexpr int value = (int)alignof(T); };
template <> struct emu_align_of<void> { static constexpr int value = 0; };
template <> struct emu_align_of<const void> { static constexpr int value = 0; };
// "... [with T = const float*]": Python cuts the C spelling of the type out of the function name.
template <class T> constexpr const char* emu_type_name() { return __PRETTY_FUNCTION__; }
template <class T> emu_param emu_describe() {
  using P = std::remove_pointer_t<T>;
  using Pu = std::remove_cv_t<P>;
  constexpr bool ptr = std::is_pointer<T>::value;
  return emu_param{emu_kind_of<T>::value, (int)sizeof(T), (int)alignof(T),
                   ptr ? emu_kind_of<Pu>::value : 0, ptr ? emu_size_of<Pu>::value : 0,
                   ptr ? (int)std::is_const<P>::value : 0, emu_type_name<T>()};
}
template <class... A, size_t... I>
void emu_invoke_(void (*fn)(), void** args, std::index_sequence<I...>) {
  reinterpret_cast<void (*)(A...)>(fn)(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
template <class... A> void emu_invoke(void (*fn)(), void** args) {
  emu_invoke_<A...>(fn, args, std::index_sequence_for<A...>{});
}
template <class... A> emu_kernel_desc emu_make_desc(const char* name, void (*f)(A...)) {
  static const emu_param params[sizeof...(A) + 1] = {emu_describe<A>()..., emu_param{}};
  return emu_kernel_desc{name, reinterpret_cast<void (*)()>(f), &emu_invoke<A...>, (int)sizeof...(A), params};
}
