"""Comparing a backend's result with the oracle's: tolerances that scale with the reduction length.

A sum of n products computed in floating point with unit roundoff u is off by at most about
``n * u * sum(|x_i * w_i|)`` (the classic bound for recursive summation; blocked and pairwise sums do
better). :func:`conv_tolerance` builds exactly that bound from the oracle's ``conv64`` run on absolute
values, so a test neither flakes on long reductions nor hides a wrong tap on short ones.
Used by the test suite and by ``fastconv bench`` to verify every case before timing it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

#: unit roundoff of the accumulation type each storage dtype is computed in
_ACC_EPS = {"float16": np.finfo(np.float32).eps, "float32": np.finfo(np.float32).eps,
            "float64": np.finfo(np.float64).eps}


def to_numpy(a):
    """A NumPy copy of a NumPy or CuPy array."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def _direct_tolerance(spec, x, w, b=None, slack: float = 2.0):
    """The direct-summation bound of :func:`conv_tolerance`."""
    from ._backends.numpy_oracle import conv64

    x, w = np.abs(to_numpy(x)), np.abs(to_numpy(w))
    b = None if b is None else np.abs(to_numpy(b))
    mag = conv64(spec, x, w, b)
    n = spec.gemm_k + 1
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * _ACC_EPS[spec.dtype] * mag + store_eps * mag + np.finfo(spec.dtype).tiny


def conv_tolerance(spec, x, w, b=None, slack: float = 2.0):
    """Elementwise absolute tolerance for a conv result: the direct-summation bound
    ``slack * n * eps_acc * conv(|x|,|w|,|b|)`` with n = Cg*T*R*S + 1, plus one rounding of the stored
    result (half an ulp of the output dtype); for a problem the numba backend's Winograd implementation
    takes (:func:`winograd_applies`), the larger of that and :func:`winograd_tolerance`, so a test of
    ``algo="auto"`` holds whichever implementation the measurement picks."""
    tol = _direct_tolerance(spec, x, w, b, slack)
    if winograd_applies(spec):
        tol = np.maximum(tol, winograd_tolerance(spec, x, w, b, slack))
    return tol


def winograd_applies(spec) -> bool:
    """Whether one of the numba backend's ``winograd`` implementations takes ``spec``'s shapes (a 2-D or
    1-D conv, 3x3, stride 1, ungrouped; dilated ones by their phases; an input gradient whose flipped
    forward conv they take; a weight gradient of the same shapes: their reasons,
    ``numba_cpu._winograd_reasons``, ``_winograd_phase_reasons``, ``_input_winograd_reasons`` and
    ``_input_winograd_phase_reasons``, ask nothing else but the workspace cap, which only makes them
    refuse)."""
    from ._backends import numba_cpu
    if spec.spatial_dims not in (1, 2):
        return False
    if spec.op == "conv_input":
        return not (numba_cpu._input_winograd_reasons(spec) and numba_cpu._input_winograd_phase_reasons(spec))
    if spec.op == "conv_weight":
        return not (numba_cpu._winograd_reasons(spec) and numba_cpu._winograd_phase_reasons(spec))
    return spec.op == "conv" and not (numba_cpu._winograd_reasons(spec) and numba_cpu._winograd_phase_reasons(spec))


#: roundings of the Winograd F(4x4, 3x3) kernels along the longest path of one term, besides the C-term
#: sum (``_numba_winograd``'s factored transforms; derived in :func:`winograd_tolerance`)
WINOGRAD_ROUNDINGS = 9 + 4 + 7


def winograd_tolerance(spec, x, w, b=None, slack: float = 2.0):
    """Elementwise absolute error bound of the Winograd F(4x4, 3x3) conv (``numba:conv:winograd/f4x4``):
    ``slack * n * u * Y(|x|, |w|, |b|) + (one rounding of the stored result)`` with

        Y(|x|, |w|, |b|) = |A|^T [ sum_c (|G| |g_kc| |G|^T) * (|B|^T |d_c| |B|) ] |A| + |b_k|

    computed in float64 for every 4x4 output tile (aligned at output (0, 0), the kernels' tiling; d_c the
    tile's 6x6 input window of channel c, zeros outside the input), u the unit roundoff of the compute
    type, and n = C + 20.

    Derivation (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1 and 3.5, applied stage by
    stage as in Lavin & Gray's and Barabasz et al.'s error analyses of bilinear algorithms). A value
    computed through k roundings of relative size at most u is ``exact * (1 + theta_k)`` with
    ``|theta_k| <= gamma_k = k u / (1 - k u)``, and ``(1 + theta_j)(1 + theta_k) = 1 + theta_(j+k)``. Each
    transform is a sum of terms ``coefficient * value``, so its computed result is the exact sum with each
    term perturbed by its own theta_k, k the roundings on that term's path; bounding every term's
    perturbation by the largest k gives ``|computed - exact| <= gamma_k * (|T| |v|)`` componentwise, and
    the perturbed terms carry on into the next stage, where their thetas add. The kernels' paths:
    - filter, U = G g G^T: in float64, per pass (the 1/4, 1/6, 1/12, 1/24 constants rounded: 1, the
      product: 1, two sums: 2) 4, two passes 8, and the rounding to the compute type 1: k = 9;
    - input, V = B^T d B: per pass 2 (each term is at most one difference and one sum; 2x and 4x by
      additions are exact, 5x is 4x + x inside the same difference), two passes: k = 4;
    - the GEMMs, M = sum_c U V: the classic dot-product bound, any summation order: k = C;
    - output, Y = A^T M A + b: per pass 3 (2x, 4x, 8x by additions, exact), two passes 6, the bias 1:
      k = 7.
    A term's path runs through the filter or the input transform (both: their product), the sum and the
    output transform: n = 9 + 4 + C + 7 = C + 20 (``WINOGRAD_ROUNDINGS``), the perturbations of the
    magnitudes being those of the computation on absolute values with |A|, |G|, |B| (a value used twice
    within one pass, d2 in ``4(d0 - d2) + (d4 - d2)``, enters with the same sign both times, so its
    weight is its |B| entry). Every rounding is at most the compute type's u (the float64 ones of the
    filter transform are smaller), underflow aside (the ``tiny`` term) and assuming no overflow: a tile
    whose result is not finite is summed again directly by the kernel, under the direct bound (so where the
    magnitude is not finite, this bound is 0 and conv_tolerance's direct one applies). The stored
    result rounds once more (half an ulp of the output dtype, for float16 after the float32 computation).

    A dilated conv (``winograd/f4x4-phases``) runs as the undilated conv over its dilation phases
    (``_dilation_phases``): its bound is that problem's, on the phase images of |x|, scattered back.
    """
    if spec.dil_h > 1 or spec.dil_w > 1:
        from ._backends import _dilation_phases
        ph = _dilation_phases.DilationPhases(spec)
        xa = np.abs(to_numpy(x)).astype(np.float64).reshape(spec.N, spec.C, spec.H, spec.W)
        xs = ph.gather(xa, np.empty(ph.spec.input_shape))
        sub = winograd_tolerance(ph.spec, xs, w, b, slack).reshape(ph.spec.output_layout)
        return ph.scatter(sub, np.empty(spec.output_layout)).reshape(spec.output_layout)
    from ._backends import _winograd_f4x4 as m

    wa = np.abs(to_numpy(w)).astype(np.float64).reshape(spec.K, spec.C, 3, 3)
    N, C, K, P, Q = spec.N, spec.C, spec.K, spec.P, spec.Q
    TH, TW = -(-P // 4), -(-Q // 4)
    Gm, A = np.abs(m.G), np.abs(m.AT)
    with np.errstate(invalid="ignore"):         # Inf * 0 where an input or weight is not finite
        V = _abs_input_transform(spec, x)
        U = np.einsum("ar,kcrs,bs->abkc", Gm, wa, Gm, optimize=True).reshape(36, K, C)
        M = np.matmul(U, V).reshape(6, 6, K, N, TH, TW)
        Y = np.einsum("ia,abkntu,jb->nktiuj", A, M, A, optimize=True).reshape(N, K, 4 * TH, 4 * TW)[:, :, :P, :Q]
    # a non-finite magnitude means a non-finite input or weight reaches that output through the transforms
    # (|A|, |B|, |G| have the zero patterns of A, B, G), so the kernel's result there is not finite either and
    # its tile is summed again directly: the direct bound (conv_tolerance's other term) is the one that holds
    Y = np.where(np.isfinite(Y), Y, 0.0)
    if b is not None:
        Y = Y + np.abs(to_numpy(b)).astype(np.float64).reshape(1, K, 1, 1)
    Y = Y.reshape(spec.output_layout)
    n = C + WINOGRAD_ROUNDINGS
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * _ACC_EPS[spec.dtype] * Y + store_eps * Y + np.finfo(spec.dtype).tiny


def _abs_input_transform(spec, x):
    """|B|^T |d| |B| of every 4x4 output tile's 6x6 input window d (zeros outside the input), in float64:
    (36, C, N*TH*TW), the tiles numbered as the kernels number them."""
    from ._backends import _winograd_f4x4 as m
    xa = np.abs(to_numpy(x)).astype(np.float64).reshape(spec.N, spec.C, spec.H, spec.W)
    N, C, TH, TW = spec.N, spec.C, -(-spec.P // 4), -(-spec.Q // 4)
    xp = np.zeros((N, C, 4 * TH + 2, 4 * TW + 2))
    h1, w1 = min(spec.H, 4 * TH + 2 - spec.pad_top), min(spec.W, 4 * TW + 2 - spec.pad_left)
    xp[:, :, spec.pad_top:spec.pad_top + h1, spec.pad_left:spec.pad_left + w1] = xa[:, :, :h1, :w1]
    win = np.lib.stride_tricks.sliding_window_view(xp, (6, 6), axis=(2, 3))[:, :, ::4, ::4]  # N C TH TW 6 6
    B = np.abs(m.BT)
    with np.errstate(invalid="ignore"):
        return np.einsum("ai,nctuij,bj->abcntu", B, win, B, optimize=True).reshape(36, C, N * TH * TW)


#: roundings of the Winograd F(3x3, 4x4) weight gradient along the longest path of one term, besides the
#: sum over tiles and chunks (``_numba_winograd_weight``; derived in :func:`winograd_weight_tolerance`)
WINOGRAD_WEIGHT_ROUNDINGS = 4 + 4 + 10


def winograd_weight_tolerance(spec, x, dy, slack: float = 2.0):
    """Elementwise absolute error bound of the Winograd weight gradient (``numba:conv_weight:winograd/f4x4``),
    (K, C, 3, 3): ``slack * n * u * Y(|x|, |dy|) + (one rounding of the stored result)`` with

        Y[k, c] = |G|^T [ sum_t (|A| |dy_t[k]| |A|^T) * (|B|^T |x_t[c]| |B|) ] |G|

    in float64 (t over the batch's 4x4 tiles of dy, dy_t zeros past P x Q, x_t the tile's 6x6 window of x,
    zeros outside the input; A = (A^T)^T, the F(4, 3) matrices), u the compute type's unit roundoff, and
    n = T + chunks + 18 (T the batch's tiles, chunks ``numba_cpu.winograd_weight_plan``'s).

    Derivation as :func:`winograd_tolerance`'s (stage by stage, every term's perturbation bounded by the
    longest path's theta_k): x's transform B^T x B, 2 per pass, k = 4; dy's A dy A^T (``a6``: each term at
    most two sums, the 2x, 4x, 8x by additions exact), k = 4; the products and their sum over the tiles,
    each chunk's GEMM and then its addition to M (one more rounding per chunk after the first), k <= T +
    chunks; G^T M G in float64, per pass at most 5 (a rounded constant, its product and three sums), 10
    more, each at most u; then the stored result rounds once. A (k, c) whose magnitude is not finite (a
    non-finite x or dy reaches it) is summed again directly by the kernel: there this bound is 0 and
    grad_tolerance's direct one applies. A dilated one (``winograd/f4x4-phases``) runs as the undilated one
    over its dilation phases (the same sum with zero terms added): its bound is that problem's."""
    if spec.dil_h > 1 or spec.dil_w > 1:
        from ._backends import _dilation_phases
        ph = _dilation_phases.DilationPhases(spec)
        xs = ph.gather(np.abs(to_numpy(x)).astype(np.float64).reshape(spec.input_shape),
                       np.empty(ph.spec.input_shape))
        dys = ph.gather_output(np.abs(to_numpy(dy)).astype(np.float64).reshape(spec.operands()[1]),
                               np.empty(ph.spec.operands()[1]))
        return winograd_weight_tolerance(ph.spec, xs, dys, slack)
    from ._backends import _winograd_f4x4 as m
    from ._backends.numba_cpu import winograd_weight_plan
    N, C, K, P, Q = spec.N, spec.C, spec.K, spec.P, spec.Q
    TH, TW, rows = winograd_weight_plan(spec)
    dya = np.abs(to_numpy(dy)).astype(np.float64).reshape(N, K, P, Q)
    dp = np.zeros((N, K, 4 * TH, 4 * TW))
    dp[:, :, :P, :Q] = dya
    tiles = dp.reshape(N, K, TH, 4, TW, 4)
    A, Gm = np.abs(m.AT).T, np.abs(m.G)
    with np.errstate(invalid="ignore"):         # Inf * 0 where an input is not finite
        D = np.einsum("ai,nkuivj,bj->abknuv", A, tiles, A, optimize=True).reshape(36, K, N * TH * TW)
        V = _abs_input_transform(spec, x)
        M = np.matmul(D, V.transpose(0, 2, 1)).reshape(6, 6, K, C)
        Y = np.einsum("ar,abkc,bs->kcrs", Gm, M, Gm, optimize=True)
    Y = np.where(np.isfinite(Y), Y, 0.0)
    n = N * TH * TW + -(-N * TH // rows) + WINOGRAD_WEIGHT_ROUNDINGS
    store_eps = float(np.finfo(spec.dtype).eps)
    return slack * n * _ACC_EPS[spec.dtype] * Y + store_eps * Y + np.finfo(spec.dtype).tiny


def assert_conv_close(out, ref, spec, x, w, b=None, slack: float = 2.0):
    """Assert a conv result matches the oracle's within :func:`conv_tolerance` (NaN where the oracle has NaN)."""
    out, ref = to_numpy(out).astype(np.float64), to_numpy(ref).astype(np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
    tol = conv_tolerance(spec, x, w, b, slack).reshape(ref.shape)
    assert_within(out, ref, tol, spec)


def pool_tolerance(spec, x):
    """Max pools are exact. Averages: a sum of up to T*R*S terms and one division, in the compute type."""
    if spec.is_max:
        return 0.0
    xa = np.abs(to_numpy(x)).astype(np.float64)
    xa = xa[np.isfinite(xa)]          # non-finite inputs give non-finite outputs, compared exactly
    adaptive = 1
    for size_in, size_out in zip(spec.in_size, spec.out_size):
        adaptive *= int(np.ceil(size_in / size_out) + 1)
    taps = max(spec.window_elems, adaptive)
    scale = float(xa.max()) if xa.size else 0.0
    return (taps + 2) * _ACC_EPS[spec.dtype] * scale + float(np.finfo(spec.dtype).eps) * scale


def assert_pool_close(out, ref, spec, x):
    """Assert a pool result (value, or (value, indices)) matches the oracle's; indices must be identical."""
    if spec.return_indices:
        (out, idx), (ref, ref_idx) = out, ref
        idx, ref_idx = to_numpy(idx), to_numpy(ref_idx)
        assert idx.dtype == np.int64, f"indices dtype {idx.dtype}, expected int64"
        assert idx.shape == ref_idx.shape, f"indices shape {idx.shape} != oracle {ref_idx.shape}"
        bad = np.argwhere(idx != ref_idx)
        assert bad.size == 0, (f"{len(bad)} indices differ from the oracle, first at {tuple(bad[0])}: "
                               f"{idx[tuple(bad[0])]} != {ref_idx[tuple(bad[0])]}")
    out, ref = to_numpy(out).astype(np.float64), to_numpy(ref).astype(np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
    assert_within(out, ref, pool_tolerance(spec, x), spec)


def assert_within(out, ref, tol, spec):
    """Assert ``|out - ref| <= tol`` elementwise where ``ref`` is finite; NaN and infinities must match exactly.
    ``out``/``ref`` are float64 NumPy arrays; ``tol`` broadcasts against them."""
    nan_ref, nan_out = np.isnan(ref), np.isnan(out)
    assert np.array_equal(nan_ref, nan_out), (
        f"NaN pattern differs from the oracle at {np.argwhere(nan_ref != nan_out)[:3].tolist()}")
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]), "infinities differ from the oracle"
    finite = ~nan_ref & ~inf
    with np.errstate(invalid="ignore"):     # inf - inf where both are inf: excluded by `finite`
        err = np.abs(out - ref)
    tol = np.broadcast_to(tol, ref.shape)
    bad = finite & ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{int(bad.sum())} of {ref.size} elements outside tolerance ({spec.dtype}); first "
                             f"at {i}: got {out[i]!r}, oracle {ref[i]!r}, |err| {err[i]:.3g} > tol {tol[i]:.3g}")


# ---------------------------------------------------------------------------------------------------
# Gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
def _windows_per_position(spec) -> int:
    """At most how many pool windows cover one input position."""
    n = 1
    for size_in, size_out, k, stride, dil in zip(spec.in_size, spec.out_size, spec.window, spec.strides,
                                                 spec.dilations):
        n *= (-(-size_out // size_in) + 1) if spec.is_adaptive else (-(-k * dil // stride)) + 1
    return n


def grad_reference(spec, *arrays):
    """The oracle's float64 result of a gradient op (or max_unpool) for ``spec`` (its ``ARRAYS``)."""
    from ._backends import numpy_oracle as o

    arrays = tuple(None if a is None else to_numpy(a) for a in arrays)
    if spec.op == "conv_input":
        return o.conv_input64(spec, *arrays)
    if spec.op == "conv_weight":
        return o.conv_weight64(spec, *arrays)
    fn = getattr(o, spec.op)
    wide = dataclasses.replace(spec, dtype="float64")
    return fn(wide, *(a if spec.is_index_operand(n) or a is None else a.astype(np.float64)
                      for n, a in zip(spec.ARRAYS, arrays)))


def grad_tolerance(spec, *arrays, slack: float = 2.0):
    """Elementwise absolute tolerance for a gradient op's result, built like :func:`conv_tolerance`: the
    oracle run on absolute values (the magnitude of the sum), times the reduction length (conv_input:
    K/groups*R*S; conv_weight: N*P*Q; pool gradients: the windows covering one position) and the
    accumulation type's unit roundoff, plus one rounding of the stored result; for an input gradient the
    numba backend's Winograd implementation takes (:func:`winograd_applies`), the larger of that and the
    Winograd bound of its flipped forward conv (:func:`winograd_tolerance`). max_unpool copies: 0."""
    if spec.op == "max_unpool":
        return 0.0
    absed = tuple(None if a is None else (to_numpy(a) if spec.is_index_operand(n) else np.abs(to_numpy(a)))
                  for n, a in zip(spec.ARRAYS, arrays))
    mag = np.abs(grad_reference(spec, *absed))      # a negative divisor_override makes it negative
    if spec.op == "conv_input":
        n = spec.K_per_group * spec.window_elems + 1
    elif spec.op == "conv_weight":
        n = spec.N * spec.out_elems + 1
    else:
        n = _windows_per_position(spec) + 2
    store_eps = float(np.finfo(spec.dtype).eps)
    tol = slack * n * _ACC_EPS[spec.dtype] * mag + store_eps * mag + np.finfo(spec.dtype).tiny
    if spec.op == "conv_weight" and winograd_applies(spec):
        # numba's conv_weight:winograd/f4x4: the larger of both bounds
        x, dy = (to_numpy(a) for a in arrays)
        tol = np.maximum(tol, np.reshape(winograd_weight_tolerance(spec, x, dy, slack), np.shape(tol)))
    if spec.op == "conv_input" and winograd_applies(spec):
        # numba's conv_input:winograd/f4x4 runs the flipped forward conv: the larger of both bounds
        dy, w, b = (None if a is None else to_numpy(a) for a in arrays)
        wino = winograd_tolerance(spec.flipped_forward(), dy, spec.flip_weight(w), b, slack)
        tol = np.maximum(tol, np.reshape(wino, np.shape(tol)))
    return tol


def assert_grad_close(out, spec, *arrays, slack: float = 2.0):
    """Assert a gradient op's (or max_unpool's) result matches the oracle's within :func:`grad_tolerance`;
    ``arrays`` are the op's inputs (``spec.ARRAYS``), in the backend layout or the user's."""
    ref = grad_reference(spec, *(None if a is None else to_numpy(a).reshape(s)
                                 for a, s in zip(arrays, spec.operands())))
    out = to_numpy(out).astype(np.float64)
    assert out.shape == tuple(spec.output_shape), f"shape {out.shape} != expected {tuple(spec.output_shape)}"
    ref = ref.reshape(out.shape)
    tol = grad_tolerance(spec, *(None if a is None else to_numpy(a).reshape(s)
                                 for a, s in zip(arrays, spec.operands())), slack=slack)
    assert_within(out, ref, np.reshape(tol, out.shape) if np.ndim(tol) else tol, spec)
