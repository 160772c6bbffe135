"""fastconv: convolution and pooling for NumPy and CuPy arrays (see README.md)."""
from setuptools import setup

setup(
    name="fastconv",
    version="0.1.0",
    description="Convolution and pooling for NumPy and CuPy arrays with torch.nn.functional semantics: "
                "hand-written CUDA kernels, a Numba CPU backend and a NumPy oracle",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # kernels/ sits at the top of the repository and is installed as fastconv.kernels
    packages=["fastconv", "fastconv._backends", "fastconv.bench", "fastconv.dask", "fastconv.emu", "fastconv.kernels"],
    package_dir={"fastconv.kernels": "kernels"},
    package_data={"fastconv.kernels": ["*.cu", "*.cuh"],
                  "fastconv.bench": ["shapes/*.csv", "shapes/README.md"],
                  "fastconv.emu": ["runtime/*.h", "runtime/*.cpp", "runtime/*.S", "runtime/include/*", "*.md"]},
    install_requires=["numpy>=1.24", "numba>=0.59"],
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=13"],
        "test": ["pytest>=7", "hypothesis>=6.80", "pytest-benchmark>=4"],
        # compile every .cu with NVRTC in CI without a GPU: CUDA 13 for sm_75..sm_90, CUDA 12 for sm_70
        # (dropped by CUDA 13), each with its own release's headers (cuda_fp16.h)
        "nvrtc": ["nvidia-cuda-nvrtc>=13", "nvidia-cuda-runtime>=13",
                  "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12"],
        # threadpoolctl: `fastconv bench --threads N` limits the BLAS pools (OpenBLAS, MKL, BLIS) too
        "bench": ["matplotlib>=3.7", "threadpoolctl>=3.0"],
        # examples/train_lenet.py trains on sklearn.datasets.load_digits (shipped with scikit-learn)
        "examples": ["scikit-learn>=1.2"],
        # fastconv.dask: the ops over dask arrays, on a dask.distributed cluster
        "dask": ["dask[array]>=2024.1", "distributed>=2024.1"],
        # fastconv.torch, the autograd bridge (CPU tensors; CUDA tensors need a CUDA build and a CuPy extra)
        "torch": ["torch>=2.1"],
    },
    entry_points={"console_scripts": ["fastconv=fastconv.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Environment :: GPU :: NVIDIA CUDA",
        "Topic :: Scientific/Engineering",
    ],
)
