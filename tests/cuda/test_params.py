"""The parameter structs' layout: Python twin (fastconv/_cuda/plan.py) vs C++ (kernels/common.cuh).

Three checks, so field order can never drift silently:
- an emulated probe kernel writes sizeof/offsetof of every field as g++ lays the struct out;
- a kernel that takes the struct by value echoes every field, so what Python packs is what CUDA reads;
- NVRTC compiles static_asserts of every offset for sm_90, so the device compiler agrees too.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch
from fastconv._cuda import plan as L

STRUCTS = {"ConvParams": (L.CONV_PARAMS_FIELDS, L.CONV_PARAMS_DTYPE),
           "PoolParams": (L.POOL_PARAMS_FIELDS, L.POOL_PARAMS_DTYPE)}


def probe_source() -> str:
    lines = ['#include "common.cuh"', ""]
    for struct, (fields, _) in STRUCTS.items():
        lines.append(f'extern "C" __global__ void layout_{struct}(long long* out) {{')
        lines.append(f"  out[0] = sizeof({struct});")
        lines += [f"  out[{i + 1}] = __builtin_offsetof({struct}, {f});" for i, f in enumerate(fields)]
        lines.append("}")
        lines.append(f'extern "C" __global__ void echo_{struct}(const {struct} p, long long* out) {{')
        lines += [f"  out[{i}] = p.{f};" for i, f in enumerate(fields)]
        lines.append("}")
    return "\n".join(lines) + "\n"


def static_assert_source() -> str:
    """Compile-time layout checks that any CUDA compiler accepts (NVRTC 13.0 rejects __builtin_offsetof).

    Aggregate initialisation fills fields in declaration order, so initialising with each Python field's
    byte offset and asserting that every named field holds its own offset pins the order and the names;
    with every field as wide as its Python twin and equal total size, each offset is pinned too."""
    lines = ['#include "common.cuh"']
    for struct, (fields, dtype) in STRUCTS.items():
        offsets = [dtype.fields[f][1] for f in fields]
        lines.append(f'static_assert(sizeof({struct}) == {dtype.itemsize}, "sizeof({struct})");')
        lines.append(f"constexpr {struct} probe_{struct}{{{', '.join(map(str, offsets))}}};")
        for f, off in zip(fields, offsets):
            size = dtype.fields[f][0].itemsize
            lines.append(f'static_assert(probe_{struct}.{f} == {off}, "{struct}.{f} is not at position {off}");')
            lines.append(f'static_assert(sizeof(probe_{struct}.{f}) == {size}, "{struct}.{f} is not {size} bytes");')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def probe():
    why = _dispatch.availability("cuda-emu")
    if why is not None:
        pytest.skip(f"the emulator is unavailable here: {why}")
    from fastconv.emu import EmuModule
    return EmuModule(code=probe_source(), include_dirs=(L.kernels_dir(),))


@pytest.mark.parametrize("struct", list(STRUCTS))
def test_layout_matches_cxx(probe, struct):
    fields, dtype = STRUCTS[struct]
    out = np.full(len(fields) + 1, -1, dtype=np.int64)
    probe.get_function(f"layout_{struct}")((1, 1, 1), (1, 1, 1), (out,))
    assert out[0] == dtype.itemsize, f"sizeof({struct}) is {out[0]} in C++, {dtype.itemsize} in Python"
    py = [dtype.fields[f][1] for f in fields]
    assert out[1:].tolist() == py, f"{struct} offsets: C++ {out[1:].tolist()}, Python {py}"


def _specs():
    x, w, b = np.zeros((2, 6, 13, 17), np.float32), np.zeros((9, 2, 3, 5), np.float32), np.zeros(9, np.float32)
    conv = fastconv.conv_spec(x, w, b, stride=(2, 3), padding=((1, 2), (3, 4)), dilation=(2, 1), groups=3)
    pool = fastconv.pool_spec("avg", x, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), ceil_mode=True,
                              count_include_pad=False, divisor_override=7)
    maxp = fastconv.pool_spec("adaptive_max", x, output_size_=(5, 4), return_indices=True)
    return [("ConvParams", conv, L.conv_params), ("PoolParams", pool, L.pool_params),
            ("PoolParams", maxp, L.pool_params)]


@pytest.mark.parametrize("struct,spec,build", _specs(), ids=["conv", "avg_pool", "adaptive_max_pool"])
def test_struct_by_value_round_trip(probe, struct, spec, build):
    fields, _ = STRUCTS[struct]
    params = build(spec)
    out = np.full(len(fields), -1, dtype=np.int64)
    probe.get_function(f"echo_{struct}")((1, 1, 1), (1, 1, 1), (params, out))
    want = [0 if getattr(spec, f) is None else int(getattr(spec, f)) for f in fields]
    assert dict(zip(fields, out.tolist())) == dict(zip(fields, want))


def test_device_compiler_agrees_on_layout():
    from .test_compile import nvrtc_for
    compiler = nvrtc_for("sm_90")
    ok, log, _ = compiler.compile(static_assert_source(), "layout_probe.cu", "compute_90", (), (L.kernels_dir(),))
    assert ok, f"NVRTC {compiler.version} disagrees with the Python twin:\n{log}"


def test_every_field_comes_from_the_spec():
    """The twin is built from spec attributes of the same names (no hand-kept copy of a value)."""
    for struct, spec, build in _specs():
        fields, _ = STRUCTS[struct]
        params = build(spec)
        for f in fields:
            v = getattr(spec, f)
            assert int(params[f]) == (0 if v is None else int(v)), f"{struct}.{f}"
