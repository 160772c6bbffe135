"""The machine a run measures on: CPU and GPU facts, versions, the peaks fractions are taken of, and the
copy bandwidth pools are compared with.

- GPU: fp32 FMA (CUDA cores, no tensor cores) peak and memory bandwidth computed from the device's own
  properties (:func:`device_limits`), with the vendor spec-sheet figures of :data:`GPU_PEAKS` beside them
  (and used when CuPy does not report the properties); the device-to-device copy bandwidth measured in the
  same run (:func:`gpu_copy_bandwidth`);
- CPU pools: the copy bandwidth of this machine measured in the same run (:func:`copy_bandwidth`), so the
  fraction is "of what a plain copy achieves here", not a datasheet number;
- CPU convolutions: none; no honest fp32 peak is measured here.
"""
from __future__ import annotations

import datetime
import os
import platform
from typing import Optional, Tuple

import numpy as np

from .. import _config, _timing

#: fp32 (CUDA cores, no tensor cores) peak GFLOP/s and memory bandwidth GB/s. Source: NVIDIA vendor spec
#: sheets (H100 datasheet: SXM5 67 TFLOPS / 3.35 TB/s, PCIe 51 / 2.0, NVL 60 / 3.9; H200 product brief:
#: SXM 67 / 4.8, NVL 60 / 4.8; A100 datasheet: 19.5 TFLOPS, 80GB SXM 2.039 TB/s, 80GB PCIe 1.935 TB/s,
#: 40GB 1.555 TB/s). Matched by substring of the device name, first match wins (most specific first).
GPU_PEAKS: Tuple[Tuple[str, float, float], ...] = (
    ("H200 NVL", 60000.0, 4800.0),
    ("H200", 67000.0, 4800.0),
    ("H100 NVL", 60000.0, 3900.0),
    ("H100 PCIe", 51000.0, 2000.0),
    ("H100", 67000.0, 3350.0),          # "NVIDIA H100 80GB HBM3" is the SXM5 part
    ("A100 80GB PCIe", 19500.0, 1935.0),
    ("A100-SXM4-80GB", 19500.0, 2039.0),
    ("A100", 19500.0, 1555.0),           # the 40 GB parts
)
PEAK_SOURCE_GPU = "vendor spec sheet (NVIDIA datasheets), fp32 without tensor cores"

#: FP32 lanes (CUDA cores) per SM by compute capability, from NVIDIA's CUDA C Programming Guide (arithmetic
#: instruction throughput table: 32-bit floating-point multiply-add results per clock per SM)
FP32_LANES_PER_SM = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128,
                     (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (10, 3): 128, (12, 0): 128}
#: cudaDeviceAttr numbers of the properties the limits need (CUDA 13 dropped clockRate and memoryClockRate
#: from cudaDeviceProp; the attributes remain)
_DEV_ATTRS = {"clockRate": 13, "multiProcessorCount": 16, "memoryClockRate": 36, "memoryBusWidth": 37}
LIMITS_HOW = {
    "fp32_fma_gflops": "multiProcessorCount x FP32 lanes per SM (by compute capability) x 2 flops per FMA x "
                       "clockRate (the maximum SM clock, kHz) / 1e6",
    "hbm_gbps": "memoryClockRate (kHz) x 1e3 x memoryBusWidth (bits) x 2 (double data rate) / 8 / 1e9",
}
#: the CPU copy reference: buffer size and samples
CPU_COPY_BYTES, CPU_COPY_REPEAT = 64 * 2**20, 5


# ---------------------------------------------------------------------------------------------------
# Peaks
# ---------------------------------------------------------------------------------------------------
def gpu_peak(name: str) -> Optional[dict]:
    """{"fp32_gflops", "mem_gbps", "source", "match"} for a known GPU name, else None."""
    for key, gflops, gbps in GPU_PEAKS:
        if key.lower() in name.lower():
            return {"fp32_gflops": gflops, "mem_gbps": gbps, "source": PEAK_SOURCE_GPU, "match": key}
    return None


def device_limits(props: dict) -> Optional[dict]:
    """The theoretical fp32 FMA peak (GFLOP/s, CUDA cores, no tensor cores) and memory bandwidth (GB/s) of a
    GPU from its CUDA properties (``clockRate``, ``multiProcessorCount``, ``memoryClockRate``,
    ``memoryBusWidth``, ``major``, ``minor``); None when a property is missing or the compute capability's
    lane count is unknown. Says how each number was computed."""
    try:
        cc = (int(props["major"]), int(props["minor"]))
        sms, clock_khz = int(props["multiProcessorCount"]), int(props["clockRate"])
        mem_khz, bus_bits = int(props["memoryClockRate"]), int(props["memoryBusWidth"])
    except (KeyError, TypeError, ValueError):
        return None
    lanes = FP32_LANES_PER_SM.get(cc)
    if not lanes or not sms or not clock_khz or not mem_khz or not bus_bits:
        return None
    return {"fp32_fma_gflops": sms * lanes * 2 * clock_khz / 1e6,
            "hbm_gbps": mem_khz * 1e3 * bus_bits * 2 / 8 / 1e9,
            "how": dict(LIMITS_HOW),
            "inputs": {"compute_capability": f"{cc[0]}.{cc[1]}", "multiProcessorCount": sms,
                       "fp32_lanes_per_sm": lanes, "clockRate_khz": clock_khz, "memoryClockRate_khz": mem_khz,
                       "memoryBusWidth_bits": bus_bits}}


def gpu_properties(device_id: int = 0) -> dict:
    """CuPy's ``getDeviceProperties`` with any of :data:`_DEV_ATTRS` it lacks read as device attributes."""
    import cupy
    rt = cupy.cuda.runtime
    props = dict(rt.getDeviceProperties(device_id))
    for key, attr in _DEV_ATTRS.items():
        if not props.get(key):
            try:
                props[key] = rt.deviceGetAttribute(attr, device_id)
            except Exception:
                pass
    return props


def gpu_peak_from_device(gpu: dict) -> Optional[dict]:
    """The peak fractions are taken of: computed from the device's properties (:func:`device_limits`)
    when CuPy reports them, with the vendor spec-sheet figures beside them; else the spec-sheet figures."""
    vendor = gpu_peak(gpu["name"])
    try:
        limits = device_limits(gpu_properties(gpu.get("id", 0)))
    except Exception:
        limits = None
    if limits is None:
        return vendor
    return {"fp32_gflops": limits["fp32_fma_gflops"], "mem_gbps": limits["hbm_gbps"],
            "source": "computed from the CUDA device properties (see 'how'); fp32 FMA on CUDA cores, no "
                      "tensor cores", "how": limits["how"], "inputs": limits["inputs"], "vendor": vendor}


# ---------------------------------------------------------------------------------------------------
# Copy bandwidth (what a pool, which reads and writes memory once, is compared with)
# ---------------------------------------------------------------------------------------------------
def gpu_copy_bandwidth(nbytes: int = 256 * 2**20, repeat: int = 20, warmup: int = 3) -> dict:
    """Device-to-device copy bandwidth of the current GPU, (read + write bytes) / time: ``cudaMemcpyAsync``
    device to device and a one-line CuPy copy kernel (``y = x``), each on ``nbytes``, timed with CUDA events
    (:func:`fastconv._timing.event_times`), median of ``repeat`` after ``warmup`` calls. ``gbps`` is the
    better of the two (the harder reference)."""
    import cupy
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    kernel = cupy.ElementwiseKernel("T x", "T y", "y = x", "fastconv_bench_copy")
    methods = {"memcpy": lambda: dst.data.copy_from_device_async(src.data, nbytes),
               "copy_kernel": lambda: kernel(src, dst)}
    out = {}
    for name, fn in methods.items():
        for _ in range(warmup):
            fn()
        t = _timing.median(_timing.event_times(fn, repeat))
        out[name] = {"median_s": t, "gbps": 2 * nbytes / t / 1e9}
    best = max(out, key=lambda k: out[k]["gbps"])
    return {"gbps": out[best]["gbps"], "method": best, "bytes": nbytes, "methods": out,
            "how": f"device-to-device copy of {nbytes / 2**20:.0f} MiB, (read + write bytes) / time, CUDA "
                   f"events, median of {repeat} after {warmup} warm-up calls; the better of cudaMemcpyAsync "
                   "and a CuPy elementwise copy kernel"}


def copy_bandwidth(nbytes: int = CPU_COPY_BYTES, repeat: int = CPU_COPY_REPEAT) -> float:
    """GB/s of ``numpy.copyto`` (read + write counted) on ``nbytes``, best of ``repeat``; one thread."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2 * nbytes / min(_timing.wall_times(lambda: np.copyto(dst, src), repeat)) / 1e9


# ---------------------------------------------------------------------------------------------------
# Machine and versions
# ---------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the vector-ISA flags of /proc/cpuinfo a CPU report keeps, widest first (what decides oneDNN's and
#: OpenBLAS's kernels, and Numba's code generation)
ISA_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma", "avx",
             "sse4_2")


def cpu_isa(path: str = "/proc/cpuinfo") -> dict:
    """``{"isa": "AVX-512" | "AVX2" | "AVX" | "SSE4.2" | None, "flags": [the ISA_FLAGS the CPU has]}`` from
    the first ``flags`` line of ``path`` (Linux); None and [] where it cannot be read (another OS)."""
    try:
        with open(path) as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        line = ""
    have = set(line.split(":", 1)[1].split()) if ":" in line else set()
    flags = [f for f in ISA_FLAGS if f in have]
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                                        ("sse4_2", "SSE4.2")) if flag in have), None)
    return {"isa": isa, "flags": flags}


def blas_kernels() -> Optional[str]:
    """The kernel family NumPy's OpenBLAS runs (the im2col paths' GEMMs), e.g. "Haswell" (AVX2) or
    "SkylakeX" (AVX-512), or None where the BLAS does not say (see ``_cpu_pool.blas_corename``)."""
    from .._backends import _cpu_pool
    return _cpu_pool.blas_corename()


def gpu_info() -> Optional[dict]:
    """Name, memory, compute capability, CUDA runtime/driver of the current CuPy device, or None."""
    try:
        import cupy
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    except Exception:
        return None
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "id": dev.id, "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion(), "nvidia_driver": nvidia_driver()}


def nvidia_driver() -> Optional[str]:
    """The NVIDIA driver version (``nvidia-smi``), or None when it cannot be asked."""
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def package_version(*dists: str) -> Optional[str]:
    from importlib import metadata
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def cupy_version() -> Optional[str]:
    from importlib import metadata
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-"):
            return f"{dist.version} ({name})"
    return None


def versions() -> dict:
    import fastconv
    return {"python": platform.python_version(), "fastconv": fastconv.__version__,
            "numpy": np.__version__, "numba": package_version("numba"), "cupy": cupy_version(),
            "torch": package_version("torch"), "matplotlib": package_version("matplotlib")}


def loadavg() -> Optional[list]:
    """The 1, 5 and 15-minute load averages (other work on the machine shows here), or None."""
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def machine_info(device: str) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    isa = cpu_isa()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hostname": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_isa": isa["isa"], "cpu_flags": isa["flags"], "blas_kernels": blas_kernels(),
            "blas_coretype_env": _config.get("OPENBLAS_CORETYPE") or None,
            "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable, "device": device,
            "gpu": gpu_info() if device == "gpu" else None, "loadavg_start": loadavg()}
