// discovery_helper.cuh -- included by discovery.cu (tests header tracking and -I of the source dir).
#pragma once
__device__ __forceinline__ int helper_value() { return 1; }
