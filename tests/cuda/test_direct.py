"""Family ``direct`` (kernels/conv2d_direct.cu, fastconv/_cuda/direct.py): every version and dtype against
the oracle, on the emulator in three thread orders and on the GPU when there is one; int64 indices; padded
taps skipped; the shared-memory limit as a reason."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv.testing import assert_conv_close

from .common import (CONV_CASES, DTYPES, check_int64_instantiations, check_version_matches_oracle, conv_problem,
                     oracle, run_family)

FAMILY = _cuda.family("direct")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("version", FAMILY.VERSIONS, ids=[f"v{v}" for v in FAMILY.VERSIONS])
def test_versions_match_oracle(target, version, case, dtype):
    check_version_matches_oracle(target, "direct", version, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", FAMILY.VERSIONS, ids=[f"v{v}" for v in FAMILY.VERSIONS])
def test_int64_index_instantiations(target, index64, version, dtype):
    check_int64_instantiations(target, "direct", version, dtype)


@pytest.mark.parametrize("version", FAMILY.VERSIONS)
def test_skips_padded_taps_with_inf_weights(target, version):
    """A padded tap contributes nothing (the oracle's rule): an Inf weight at the border gives Inf, not NaN."""
    spec, (x, w, b) = conv_problem("basic", "float32", seed=2)
    w = w.copy()
    w[0, 0, 0, 0] = np.inf
    x = np.abs(x) + 1.0  # positive, so the Inf taps that do land inside give +Inf
    ref = oracle.conv(spec, x, w, b)
    out = run_family(target, "direct", spec, (x, w, b), version=version)
    assert not np.isnan(ref).any() and np.isinf(ref).any()
    with np.errstate(invalid="ignore"):  # inf - inf inside the comparison, where both are inf
        assert_conv_close(out, ref, spec, x, w, b)


def test_rejects_oversized_shared_memory_tile_with_reason():
    """A filter/dilation whose input patch does not fit shared memory is refused by the tiled direct kernel
    (with the reason, from the same plan that would run): algo="direct" runs the untiled kernel (issue 18) and
    algo="auto" a GEMM algorithm, which comes first."""
    x, w = np.zeros((1, 1, 130, 140)), np.zeros((1, 1, 31, 31))
    spec = fastconv.conv_spec(x, w, dilation=4)
    assert FAMILY.reasons(spec) == []                   # no 32-bit limit is passed ...
    reasons = FAMILY.plan(spec).reasons()               # ... but the plan's shared memory is too big
    assert reasons and "shared memory" in reasons[0]
    assert _cuda.family("im2col").reasons(spec) == [] and _cuda.family("im2col").plan(spec).reasons() == []
    if _dispatch.availability("cuda-emu") is None:
        assert _dispatch.select(spec, "cuda-emu", "direct").name == "cuda-emu:conv:direct/untiled"
        assert _dispatch.select(spec, "cuda-emu", "auto").algo in ("im2col", "implicit_gemm")


def test_block_and_tile_come_from_one_place():
    """The v2 name expression carries the tile and the launch's block is the family's (TILE_Q x TILE_P)."""
    spec, _ = conv_problem("multi_tile", "float32")
    (lc,) = FAMILY.plan(spec).launches
    tp, tq, kt, ct = FAMILY.TILE
    assert lc.kernel == f"conv2d_direct_v2<float, int, {tp}, {tq}, {kt}, {ct}>"
    assert lc.block == (tq, tp, 1)
    # 1 image x 1 group x ceil(70/8) channel tiles x ceil(P/8) x ceil(Q/16); P = 19, Q = 35 (pads 0+1, 1+1)
    assert lc.grid[0] == 1 * 1 * 9 * 3 * 3
