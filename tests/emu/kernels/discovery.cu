// discovery.cu -- emulator test kernels: declaration forms the kernel scanner must find (or skip).
#include "discovery_helper.cuh"

extern "C" {
__global__ void in_linkage_block(int* out) { out[0] = helper_value(); }
}

namespace fc {
namespace detail {
__global__ void __launch_bounds__(128) in_namespace(int* out) { out[0] = 2; }
}  // namespace detail
}  // namespace fc

extern "C" __global__ void __launch_bounds__(64, 2) with_bounds(int* out) {
  // a string with __global__ void fake( in it must not confuse the scanner
  const char* s = "__global__ void fake(";
  out[0] = 3 + (s[0] == '_' ? 0 : 100);
}

template <int V>
__global__ void __launch_bounds__(V * 32) templated(int* out) { out[0] = V; }

/* __global__ void commented_out(int* out) {} */
// __global__ void also_commented(int* out) {}
