"""Family ``im2col`` (kernels/im2col_gemm.cu, fastconv/_cuda/im2col.py): both GEMM versions and every
dtype against the oracle on every target, int64 indices, NaN inputs; and the one thing it cannot do exactly
(a non-finite weight in a padded problem: padded taps are stored zeros) is a reason dispatch acts on, so
another algorithm runs such a call."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _cuda, _dispatch
from fastconv.testing import assert_conv_close

from .common import (CONV_CASES, DTYPES, check_int64_instantiations, check_version_matches_oracle, conv_problem,
                     oracle, public, run_family)

FAMILY = _cuda.family("im2col")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("version", FAMILY.VERSIONS, ids=[f"v{v}" for v in FAMILY.VERSIONS])
def test_versions_match_oracle(target, version, case, dtype):
    check_version_matches_oracle(target, "im2col", version, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", FAMILY.VERSIONS, ids=[f"v{v}" for v in FAMILY.VERSIONS])
def test_int64_index_instantiations(target, index64, version, dtype):
    check_int64_instantiations(target, "im2col", version, dtype)


@pytest.mark.parametrize("version", [1, 2])
def test_nan_input_propagates(target, version):
    """A NaN input reaches exactly the outputs whose windows hold it, through direct and im2col alike."""
    spec, (x, w, b) = conv_problem("strided_asym_dilated_groups", "float32", seed=3)
    x = x.copy()
    x[1, 2, 4, 5] = np.nan
    ref = oracle.conv(spec, x, w, b)
    assert np.isnan(ref).any()
    assert_conv_close(run_family(target, "direct", spec, (x, w, b), version=version), ref, spec, x, w, b)
    assert_conv_close(run_family(target, "im2col", spec, (x, w, b), version=version), ref, spec, x, w, b)


def test_declares_that_it_multiplies_padded_zeros():
    assert FAMILY.ZERO_FILLS_PADDING
    assert not any(f.ZERO_FILLS_PADDING for f in _cuda.FAMILIES if f is not FAMILY)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nonfinite_weight_in_padded_problem_runs_an_exact_algorithm(backend, dtype):
    """algo="im2col" with an Inf weight in a padded problem is refused with the reason; "auto" runs another
    algorithm and matches the oracle (padded taps contribute nothing); unpadded, im2col takes it."""
    rng = np.random.default_rng(11)
    x = np.abs(rng.standard_normal((1, 2, 9, 9))).astype(dtype) + 1
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    w[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="im2col: a weight is Inf or NaN and the problem is padded"):
        public(backend, fastconv.conv2d, x, w, padding=1, algo="im2col")
    spec = fastconv.conv_spec(x, w, padding=1)
    impl = _dispatch.select(spec, backend, "auto", weight=w)
    assert impl.algo != "im2col"
    ref = oracle.conv(spec, x, w)
    assert not np.isnan(ref).any()
    with np.errstate(invalid="ignore"):
        assert_conv_close(public(backend, fastconv.conv2d, x, w, padding=1), ref, spec, x, w)
    unpadded = fastconv.conv_spec(x, w)
    assert _dispatch.select(unpadded, backend, "im2col", weight=w).algo == "im2col"
    with np.errstate(invalid="ignore"):
        assert_conv_close(public(backend, fastconv.conv2d, x, w, algo="im2col"), oracle.conv(unpadded, x, w),
                          unpadded, x, w)
