// Empty stand-in: fastconv/emu/runtime/cuda_emu.h (force-included) provides the CUDA built-ins.
#pragma once
