"""Kernel discovery, source rewriting, misuse diagnostics and the stack-size knob."""
import numpy as np
import pytest

from fastconv.emu import EmuError, EmuModule
from fastconv.emu import _source


@pytest.fixture(scope="module")
def disc(kernel_path):
    return EmuModule(path=kernel_path("discovery.cu"), name_expressions=("templated<5>",))


def test_discovery(disc):
    assert set(disc.kernel_names) == {"in_linkage_block", "fc::detail::in_namespace", "with_bounds",
                                      "templated<5>"}
    for name, expect in [("in_linkage_block", 1), ("fc::detail::in_namespace", 2), ("with_bounds", 3),
                         ("templated<5>", 5)]:
        out = np.zeros(1, np.int32)
        disc.get_function(name)(1, 1, (out,))
        assert out[0] == expect, name


def test_mask_source_keeps_offsets():
    text = 'a /* x\ny */ b // c\n"str // not comment" \'c\''
    masked = _source.mask_source(text)
    assert len(masked) == len(text) and masked.count("\n") == text.count("\n")
    assert "x" not in masked and "not" not in masked and masked.startswith("a ")


def test_rewrite_keeps_lines_and_poisons_static():
    src = ("__global__ void k(float* o) {\n"
           "  extern __shared__ __align__(16) unsigned char raw[];\n"
           "  __shared__ float a[4][8], b[2];\n"
           "  __shared__ cub::Foo<float, 4>::Storage st;\n"
           "}\n")
    out = _source.rewrite_source(src)
    assert out.count("\n") == src.count("\n")
    lines = out.split("\n")
    assert "unsigned char* raw = reinterpret_cast<unsigned char*>(__emu_dynamic_smem());" in lines[1]
    assert "sizeof(a)" in lines[2] and "sizeof(b)" in lines[2]
    assert "__emu_poison_static_smem((void*)&st, sizeof(st));" in lines[3]


@pytest.fixture(scope="module")
def bar(kernel_path):
    return EmuModule(path=kernel_path("barriers.cu"))


def test_warp_op_vs_barrier_deadlock(bar):
    with pytest.raises(EmuError, match=r"deadlock: 16 thread\(s\) at __syncthreads line \d+.*; "
                                       r"16 thread\(s\) in __shfl_xor_sync line \d+"):
        bar.get_function("warp_vs_block")(1, 32, (np.zeros(32, np.float32),))


def test_stack_size_knob(bar):
    out = np.zeros(32, np.float32)
    f = bar.get_function("deep_stack")
    f(1, 32, (out, np.int32(100)), stack_size=256 * 1024)  # ~100 KiB of frames: needs the bigger stack
    assert (out == 4).all()  # local[7] = scratch[3] + 0 at depth 0
    with pytest.raises(EmuError, match="stack_size"):
        f(1, 32, (out, np.int32(1)), stack_size=100)


def test_macros_and_prototypes():
    src = ("#define MAKE_KERNEL(name, v) \\\n"
           "  __global__ void name(int* out) { __shared__ int s; s = v; out[0] = s; }\n"
           "extern \"C\" __global__ void proto_only(int* out);\n"
           "extern \"C\" MAKE_KERNEL(from_macro, 9)\n")
    assert _source.find_kernels(src) == ["proto_only"]
    with pytest.raises(EmuError, match="proto_only"):  # declared, never defined: a link error
        EmuModule(code=src)
    mod = EmuModule(code=src.replace('extern "C" __global__ void proto_only(int* out);\n', ""),
                    name_expressions=("from_macro",))
    out = np.zeros(1, np.int32)
    mod.get_function("from_macro")(1, 1, (out,))
    assert out[0] == 9
    with pytest.raises(EmuError, match="inside a preprocessor directive"):
        _source.rewrite_source("#define DYN extern __shared__ float d[];\n")


def test_launch_bounds_are_enforced(disc):
    out = np.zeros(1, np.int32)
    disc.get_function("with_bounds")(1, 64, (out,))
    with pytest.raises(EmuError, match=r"launch with 65 threads per block exceeds __launch_bounds__\(64\)"):
        disc.get_function("with_bounds")(1, (13, 5), (out,))
    disc.get_function("templated<5>")(1, 160, (out,))
    with pytest.raises(EmuError, match=r"exceeds __launch_bounds__\(160\)"):
        disc.get_function("templated<5>")(1, 192, (out,))
