"""Index width: every offset the CUDA kernels compute fits the integer type it is computed in.

The families pick ``int`` or ``long long`` indexing per call (``fastconv._cuda.plan.index_type``, from
``spec.needs_64bit_indexing``: some buffer holds more than 2^31 - 1 elements). Problems that big cannot be
allocated here, but specs can be built without memory (``np.broadcast_to`` of a scalar has any shape and
no storage), so this file checks, for shapes up to and past 2^31 elements:

- the choice itself: exactly 2^31 - 1 elements gives ``int``, one more gives ``long long``, whichever buffer
  (input, output, weight, im2col workspace) is the big one, and the launched kernels are those
  instantiations; every buffer a plan allocates is counted by ``spec.max_elements()``;
- the arithmetic: a transcription of each kernel's index expressions (kernels/*.cu), evaluated at the
  largest value each takes over its loops, must fit ``int`` where the kernel declares ``int`` and the chosen
  index type where it uses ``I``. Every kernel the launcher can launch must have a transcription here
  (a new kernel fails :func:`test_every_kernel_has_an_index_model` until one is added);
- the real source (the last section): every kernel's long long instantiation, built for the emulator with
  signed-overflow checks, runs the last blocks of the families' own plans for problems past 2^31 elements
  over reserved, unbacked buffers, so a dropped ``(I)`` cast in the .cu text fails
  :func:`test_last_blocks_past_2_pow_31_compute_no_signed_overflow`, naming file:line:column (a new kernel
  fails :func:`test_every_kernel_runs_overflow_checked_in_64_bits` until some problem there launches it).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastconv import _cuda
from fastconv._cuda import plan as L
from fastconv._spec import INT32_MAX, conv_spec, pool_grad_spec, pool_spec, unpool_spec

INT64_MAX = 2**63 - 1
LIMIT = {"int": INT32_MAX, "long long": INT64_MAX}
UINT32_MAX = 2**32 - 1


def fake(shape, dtype="float32"):
    """An array of any shape that takes no memory (every element is the same scalar)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def conv(xshape, wshape, bias=False, **kw):
    nd = len(wshape) - 2
    return conv_spec(fake(xshape), fake(wshape), fake((wshape[0],)) if bias else None, spatial_dims=nd, **kw)


def pool(kind, xshape, **kw):
    return pool_spec(kind, fake(xshape), spatial_dims=len(xshape) - 2, **kw)


def pool_grad(kind, xshape, **kw):
    """The gradient spec of the pool ``pool(kind, xshape, **kw)`` (dy of its output's shape)."""
    dy = fake(pool(kind, xshape, **kw).output_shape)
    kw.pop("output_size_", None)
    return pool_grad_spec(kind, dy, fake(xshape), spatial_dims=len(xshape) - 2, **kw)


def unpool(xshape, **kw):
    return unpool_spec(fake(xshape), fake(xshape, "int64"), spatial_dims=len(xshape) - 2, **kw)


# ---------------------------------------------------------------------------------------------------
# The choice of index type
# ---------------------------------------------------------------------------------------------------
BOUNDARY = {
    # name: (spec with exactly 2^31 - 1 elements in its biggest buffer, spec with one more or above)
    "input": (lambda: conv((1, 1, INT32_MAX), (1, 1, 1)), lambda: conv((2, 1, 2**30), (1, 1, 1))),
    "output": (lambda: conv((1, 1, INT32_MAX - 2), (1, 1, 1), padding=1),
               lambda: conv((1, 1, INT32_MAX - 2), (1, 1, 1), padding=((1, 2),))),
    "output-channels": (lambda: conv((1, 1, 1, 1), (INT32_MAX, 1, 1, 1)),
                        lambda: conv((1, 1, 2**15), (2**16, 1, 1))),
    "weight": (lambda: conv((1, 1, 1), (1, 1, INT32_MAX), padding=((0, INT32_MAX - 1),)),
               lambda: conv((1, 1, 1), (2, 1, 2**30), padding=((0, 2**30 - 1),))),
    "im2col-workspace": (lambda: conv((1, 1, 2**28), (1, 1, 7)), lambda: conv((1, 1, 2**28), (1, 1, 9))),
    "pool-input": (lambda: pool("max", (1, 1, INT32_MAX), kernel_size=2),
                   lambda: pool("avg", (1, 2, 2**30), kernel_size=2)),
    "pool-output": (lambda: pool("adaptive_avg", (1, 1, 1, 1), output_size_=(INT32_MAX, 1)),
                    lambda: pool("adaptive_max", (1, 2, 1, 1), output_size_=(2**30, 1), return_indices=True)),
    "pool-grad-input": (lambda: pool_grad("max", (1, 1, INT32_MAX), kernel_size=2),
                        lambda: pool_grad("avg", (1, 2, 2**30), kernel_size=2)),
    "unpool-output": (lambda: unpool((1, 1, 1), kernel_size=INT32_MAX), lambda: unpool((1, 2, 1), kernel_size=2**30)),
    "pool3d-input": (lambda: pool("max", (1, 1, 1, 1, INT32_MAX), kernel_size=(1, 1, 2)),
                     lambda: pool("avg", (2, 1, 2**10, 2**10, 2**10), kernel_size=2)),
    "pool3d-grad-input": (lambda: pool_grad("avg", (1, 1, 1, 1, INT32_MAX), kernel_size=(1, 1, 2)),
                          lambda: pool_grad("max", (2, 1, 2**10, 2**10, 2**10), kernel_size=2)),
    "unpool3d-output": (lambda: unpool((1, 1, 1, 1, 1), kernel_size=(1, 1, INT32_MAX)),
                        lambda: unpool((1, 2, 1, 1, 1), kernel_size=(2**10, 2**10, 2**10))),
}


@pytest.mark.parametrize("name", list(BOUNDARY))
def test_index_type_switches_above_2_pow_31_elements(name):
    small, big = (f() for f in BOUNDARY[name])
    assert small.max_elements() <= INT32_MAX < big.max_elements()
    if name == "im2col-workspace":   # the workspace alone decides: input and output are below 2^31
        assert max(math.prod(big.input_shape), math.prod(big.output_layout)) <= INT32_MAX
    assert L.index_type(small) == "int" and not small.needs_64bit_indexing
    assert L.index_type(big) == "long long" and big.needs_64bit_indexing
    # above 2^31 every launch is the 64-bit instantiation (below it a kernel may still widen for an
    # intermediate of its own, e.g. a thread's last output index; never the other way round)
    for plan in _plans(big):
        assert all(_itype(lc) == "long long" for lc in plan.launches), [lc.kernel for lc in plan.launches]


def _itype(lc):
    """The index type of a launch, from its name expression ``kernel<T, I, ...>``."""
    return lc.kernel.split("<", 1)[1].rstrip(">").split(",")[1].strip()


def family_reasons(spec, name):
    """[] when some variant of family ``name`` takes ``spec`` (its own limits and its plan's), else the
    reasons of every variant."""
    fam = _cuda.family(name)
    out = []
    for v in fam.VARIANTS:
        why = fam.reasons(spec, v) or fam.plan(spec, v).reasons()
        if not why:
            return []
        out += why
    return out


def _plans(spec):
    """The plans of every kernel version and variant the families can run for ``spec`` (each that its
    family accepts: its limits, then its plan's)."""
    plans = []
    for fam in _cuda.FAMILIES:
        if spec.op not in fam.OPS or (spec.op == "conv" and spec.dtype not in fam.DTYPES):
            continue
        if spec.spatial_dims not in getattr(fam, "SPATIAL_DIMS", (1, 2)):   # as dispatch (Impl.spatial_dims)
            continue
        taken = []
        for v in fam.VARIANTS:            # every tile and split the autotuner may pick, and the fallbacks
            if fam.reasons(spec, v):
                continue
            shipped = fam.plan(spec, v)
            if shipped.reasons():
                continue
            plans.append(shipped)
            taken.append(v)
        if taken:                         # the earlier versions, kept beside the shipped one (once a family)
            plans += [fam.plan(spec, taken[-1], ver) for ver in fam.VERSIONS[:-1]]
    return plans


@pytest.mark.parametrize("name", list(BOUNDARY))
def test_max_elements_counts_every_buffer(name):
    for spec in (f() for f in BOUNDARY[name]):
        sizes = [math.prod(spec.input_shape), math.prod(spec.output_layout)]
        if spec.op == "conv":
            sizes.append(math.prod(spec.weight_shape))
        for plan in _plans(spec):
            sizes += [math.prod(b.shape) for b in plan.buffers]
        assert max(sizes) == spec.max_elements()


def test_field_overflow_is_refused_not_wrapped():
    # a single extent past int32 does not fit the kernels' parameter structs: refused with the reason
    spec = conv((1, 1, 2**31 + 4), (1, 1, 1))
    assert any("32-bit parameter fields" in r for r in family_reasons(spec, "direct"))
    assert any("32-bit parameter fields" in r for r in family_reasons(pool("max", (1, 1, 2**31 + 4), kernel_size=2),
                                                                        "pool"))


# ---------------------------------------------------------------------------------------------------
# The kernels' index arithmetic, transcribed (kernels/*.cu)
# ---------------------------------------------------------------------------------------------------
# Each model returns (expression, largest value, type) for every index expression of one kernel, where
# type is "int" (declared int in the kernel), "I" (the instantiation's index type), "ll" (long long) or
# "u32" (unsigned int).
# Values are maxima over the kernel's loops and threads: every expression is monotone in the loop
# variables, so the maximum sits at their largest values.

def _last_thread(lc):
    return lc.grid[0] * lc.block[0] * lc.block[1] * lc.block[2] - 1


def _conv_window(s, axis_out, stride, pad_lo, kernel, dil, what):
    o_max = axis_out - 1
    return [(f"{what}: out*stride", o_max * stride, "int"),
            (f"{what}: tap*dil", (kernel - 1) * dil, "int"),
            (f"{what}: out*stride - pad + tap*dil", o_max * stride - pad_lo + (kernel - 1) * dil, "int")]


def model_conv2d_direct_v1(s, lc):
    e = [("total N*K*P*Q", s.N * s.K * s.P * s.Q, "I"), ("thread index", _last_thread(lc), "I"),
         ("(n*C + g*Cg + c)*H*W", (s.N * s.C - 1) * s.H * s.W, "I"),
         ("(k*Cg + c)*R*S", (s.K * s.C_per_group - 1) * s.R * s.S, "I"),
         ("h*W + w", s.H * s.W - 1, "I"),
         ("r*S + s (filter tap)", s.R * s.S - 1, "int")]
    e += _conv_window(s, s.P, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _conv_window(s, s.Q, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def model_conv2d_direct_v2(s, lc):
    tp_, tq_, kt, ct = _cuda.family("direct").TILE
    tiles_p, tiles_q = -(-s.P // tp_), -(-s.Q // tq_)
    k_blocks = -(-s.K_per_group // kt)
    patch_h = (tp_ - 1) * s.stride_h + (s.R - 1) * s.dil_h + 1
    patch_w = (tq_ - 1) * s.stride_w + (s.S - 1) * s.dil_w + 1
    h_org = (tiles_p - 1) * tp_ * s.stride_h
    w_org = (tiles_q - 1) * tq_ * s.stride_w
    return [
        ("tiles_q: Q + TILE_Q - 1", s.Q + tq_ - 1, "int"), ("tiles_p: P + TILE_P - 1", s.P + tp_ - 1, "int"),
        ("k_blocks: Kg + K_TILE - 1", s.K_per_group + kt - 1, "int"), ("blockIdx", lc.grid[0] - 1, "I"),
        ("op", tiles_p * tp_ - 1, "int"), ("oq", tiles_q * tq_ - 1, "int"),
        ("tp*TILE_P*stride_h", h_org, "int"), ("tq*TILE_Q*stride_w", w_org, "int"),
        ("k0 + kk", k_blocks * kt - 1, "int"),
        ("(n*C + g*Cg)*H*W", ((s.N - 1) * s.C + (s.groups - 1) * s.C_per_group) * s.H * s.W, "I"),
        ("c0 += C_TILE", ((s.C_per_group - 1) // ct) * ct + ct, "int"),
        ("patch_h*patch_w", patch_h * patch_w, "int"), ("C_TILE*patch_size", ct * patch_h * patch_w, "int"),
        ("h = h_org + ph", h_org - s.pad_top + patch_h - 1, "int"),
        ("w = w_org + pw", w_org - s.pad_left + patch_w - 1, "int"),
        ("((c0+cc)*H + h)*W + w", s.C_per_group * s.H * s.W - 1, "I"),
        ("R*S", s.R * s.S, "int"), ("C_TILE*K_TILE*R*S", ct * kt * s.R * s.S, "int"),
        ("weight offset", s.K * s.C_per_group * s.R * s.S - 1, "I"),
        ("ph*patch_w + pw", patch_h * patch_w - 1, "int"),
        ("output offset", s.N * s.K * s.P * s.Q - 1, "I"),
    ]


def model_im2col_v1(s, lc):
    npq = s.N * s.P * s.Q
    e = [("npq", npq, "I"), ("total C*R*S*npq", s.C * s.R * s.S * npq, "I"), ("thread index", _last_thread(lc), "I"),
         ("R*S", s.R * s.S, "I"), ("input offset", s.N * s.C * s.H * s.W - 1, "I")]
    e += _conv_window(s, s.P, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _conv_window(s, s.Q, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def _store_output(s):
    return [("P*Q", s.P * s.Q, "I"), ("k = g*Kg + m", s.K - 1, "int"),
            ("(n*K + k)*pq + j%pq", s.N * s.K * s.P * s.Q - 1, "I")]


def model_conv_gemm_v1(s, lc):
    npq, kd = s.N * s.P * s.Q, s.C_per_group * s.R * s.S
    return [("npq", npq, "I"), ("total K*npq", s.K * npq, "I"), ("thread index", _last_thread(lc), "I"),
            ("kd_len = Cg*R*S", kd, "int"), ("k*kd_len", (s.K - 1) * kd, "I"),
            ("g*kd_len*npq + j", (s.groups - 1) * kd * npq + npq - 1, "I"), ("kd*npq", (kd - 1) * npq, "I"),
            ] + _store_output(s)


def model_conv_gemm_v2(s, lc):
    bm, bn, bk, tm, tn = _cuda.family("im2col").GEMM_TILE
    npq, M, KD = s.N * s.P * s.Q, s.K_per_group, s.C_per_group * s.R * s.S
    n_blocks, m_blocks = -(-npq // bn), -(-M // bm)
    kd0_last = ((KD - 1) // bk) * bk
    return [("npq", npq, "I"), ("KD = Cg*R*S", KD, "int"), ("n_blocks: (npq - 1)/BN + 1", npq, "I"),
            ("m_blocks: (M - 1)/BM + 1", M, "int"), ("blockIdx", lc.grid[0] - 1, "I"),
            ("g*M*KD", (s.groups - 1) * M * KD, "I"), ("g*KD*npq", (s.groups - 1) * KD * npq, "I"),
            ("m0 + BM - 1", m_blocks * bm - 1, "int"), ("j0 + BN - 1", n_blocks * bn - 1, "I"),
            ("kd0 += BK", kd0_last + bk, "int"), ("kd = kd0 + ak", kd0_last + bk - 1, "int"),
            ("m*KD + kd", M * KD - 1, "I"), ("kd*npq + j", KD * npq - 1, "I"),
            ] + _store_output(s)


def _pool_axis(s, size, out, kernel, stride, pad, dil, what):
    if s.is_adaptive:
        # adaptive_start/end are computed in long long; the window lies inside the input
        return [(f"{what}: (i+1)*In + Out - 1", out * size + out - 1, "ll"), (f"{what}: h", size - 1, "int")]
    start_max = (out - 1) * stride - pad
    return [(f"{what}: o*stride", (out - 1) * stride, "int"), (f"{what}: start", start_max, "int"),
            (f"{what}: r*dil", (kernel - 1) * dil, "int"),
            (f"{what}: start + r*dil", start_max + (kernel - 1) * dil, "int"),
            (f"{what}: first_inbounds -start + step - 1", pad + dil - 1, "u32")]


def _pool_common(s, lc):
    e = [("total N*C*P*Q", s.N * s.C * s.P * s.Q, "I"), ("thread index", _last_thread(lc), "I"),
         ("P*Q", s.P * s.Q, "I"), ("nc*H*W", (s.N * s.C - 1) * s.H * s.W, "I"), ("h*W + w", s.H * s.W - 1, "I")]
    e += _pool_axis(s, s.H, s.P, s.R, s.stride_h, s.pad_top, s.dil_h, "h")
    e += _pool_axis(s, s.W, s.Q, s.S, s.stride_w, s.pad_left, s.dil_w, "w")
    return e


def model_max_pool2d_v1(s, lc):
    return _pool_common(s, lc) + [("best_idx", s.H * s.W - 1, "ll")]


def _avg_divisor(s):
    """avg_divisor (common.cuh): the window's end and the padded input's end per axis, and their product,
    in long long."""
    if s.is_adaptive:
        return [("td.count * th.count * tw.count", s.D * s.H * s.W, "ll")]
    return [("start + T", (s.Z - 1) * s.stride_d - s.pad_front + s.T, "ll"), ("D + pad_back", s.D + s.pad_back, "ll"),
            ("start + R", (s.P - 1) * s.stride_h - s.pad_top + s.R, "ll"), ("H + pad_bottom", s.H + s.pad_bottom, "ll"),
            ("start + S", (s.Q - 1) * s.stride_w - s.pad_left + s.S, "ll"), ("W + pad_right", s.W + s.pad_right, "ll"),
            ("divisor", s.T * s.R * s.S, "ll")]


def model_avg_pool2d_v1(s, lc):
    return _pool_common(s, lc) + _avg_divisor(s)


def _tile_args(lc):
    """The tile template arguments of a launch (those after ``T, I`` in ``kernel<T, I, ...>``)."""
    return [int(a) for a in lc.kernel.split("<", 1)[1].rstrip(">").split(",")[2:]]


def model_conv_implicit_gemm_v1(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    k_chunk, splits = int(lc.args[1]), lc.grid[1]
    PQ, HW, Kg = s.P * s.Q, s.H * s.W, s.K_per_group
    M, KD = s.N * PQ, s.C_per_group * s.R * s.S
    m_blocks, n_blocks = -(-M // bm), -(-Kg // bn)
    # split z walks kd from z*k_chunk in whole BK steps up to min(KD, (z+1)*k_chunk): the last kd it forms
    kd_last = max(z * k_chunk + -(-(min(KD, (z + 1) * k_chunk) - z * k_chunk) // bk) * bk - 1 for z in range(splits))
    e = [("PQ = P*Q", PQ, "I"), ("M = N*PQ", M, "I"), ("RS = R*S", s.R * s.S, "int"), ("KD = Cg*RS", KD, "int"),
         ("HW = H*W", HW, "I"), ("n_blocks: Kg + BN - 1", Kg + bn - 1, "int"),
         ("m_blocks: (M - 1)/BM + 1", M - 1, "I"), ("blockIdx.x", lc.grid[0] - 1, "I"),
         ("m0 = bm*BM", (m_blocks - 1) * bm, "I"), ("am = m0 + a_m, mb + 3", m_blocks * bm - 1, "I"),
         ("n = n0 + b_n + j*(NT/BK)", n_blocks * bn - 1, "int"),
         ("kd_begin = blockIdx.y*k_chunk", (splits - 1) * k_chunk, "int"),
         ("kd_begin + k_chunk", splits * k_chunk, "int"), ("k0 + a_k + i, k0 + b_k", kd_last, "int"),
         ("kd_end - kd_begin + BK - 1", k_chunk + bk - 1, "int"), ("pq = am % PQ", PQ - 1, "int"),
         ("(img*C + g*Cg)*HW", ((s.N - 1) * s.C + (s.groups - 1) * s.C_per_group) * HW, "I"),
         ("c*HW + hh*W + ww", s.C_per_group * HW - 1, "I"),
         ("g*Kg*KD", (s.groups - 1) * Kg * KD, "I"), ("n*KD + kd", Kg * KD - 1, "I"),
         ("k = g*Kg + n", s.K - 1, "int"), ("(img*K + k)*PQ + m%PQ", s.N * s.K * PQ - 1, "I")]
    if splits > 1:
        e.append(("blockIdx.y*M*K (workspace slice)", (splits - 1) * M * s.K, "I"))
    e += _conv_window(s, s.P, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _conv_window(s, s.Q, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def model_splitk_reduce_v1(s, lc):
    splits, total = int(lc.args[1]), s.N * s.K * s.P * s.Q
    return [("total N*K*P*Q", total, "I"), ("thread index", _last_thread(lc), "I"), ("P*Q", s.P * s.Q, "I"),
            ("s*total + o", splits * total - 1, "I")]


def model_depthwise_v1(s, lc):
    ppt = _tile_args(lc)[0]
    tile_p, tile_q, planes, patch_h, patch_w = (int(a) for a in lc.args[1:6])
    tiles_p, tiles_q = -(-s.P // tile_p), -(-s.Q // tile_q)
    NK, RS, patch_size = s.N * s.K, s.R * s.S, patch_h * patch_w
    plane_blocks = -(-NK // planes)
    h_org, w_org = (tiles_p - 1) * tile_p * s.stride_h, (tiles_q - 1) * tile_q * s.stride_w
    dh = (ppt - 1) * s.stride_h + (s.R - 1) * s.dil_h       # a thread's taps below its first output's first
    return [
        ("patch_h*patch_w", patch_size, "int"), ("R*S", RS, "int"), ("planes*patch_size", planes * patch_size, "int"),
        ("tiles_q: Q + tile_q - 1", s.Q + tile_q - 1, "int"), ("tiles_p: P + tile_p - 1", s.P + tile_p - 1, "int"),
        ("blockIdx.x", lc.grid[0] - 1, "I"), ("plane0 = blk*planes", (plane_blocks - 1) * planes, "I"),
        ("NK = N*K", NK, "I"), ("np = plane0 + pl", plane_blocks * planes - 1, "I"),
        ("tp*tile_p*stride_h", h_org, "int"), ("tq*tile_q*stride_w", w_org, "int"),
        ("h = h_org + ph (staging)", h_org - s.pad_top + patch_h - 1, "int"),
        ("w = w_org + pw (staging)", w_org - s.pad_left + patch_w - 1, "int"),
        ("staging i += nthreads", planes * patch_size - 1 + lc.block[0], "int"),
        ("filter i += nthreads", planes * RS - 1 + lc.block[0], "int"),
        ("((np/K)*C + k/Kg)*H*W", (s.N * s.C - 1) * s.H * s.W, "I"), ("h*W + w", s.H * s.W - 1, "I"),
        ("k*RS + rs", s.K * RS - 1, "I"),
        ("items = planes*pgroups*tile_q", planes * (tile_p // ppt) * tile_q, "int"),
        ("compute it += nthreads", planes * (tile_p // ppt) * tile_q - 1 + lc.block[0], "int"),
        ("oq = tq*tile_q + ql", tiles_q * tile_q - 1, "int"), ("op0 = tp*tile_p + pg*PPT", tiles_p * tile_p - ppt, "int"),
        ("pl*patch_size + pg*PPT*stride_h*patch_w + ql*stride_w",
         (planes - 1) * patch_size + (tile_p - ppt) * s.stride_h * patch_w + (tile_q - 1) * s.stride_w, "int"),
        ("op0*stride_h", (s.P - 1) * s.stride_h, "int"), ("oq*stride_w", (s.Q - 1) * s.stride_w, "int"),
        ("dh = j*stride_h + r*dil_h", dh, "int"), ("h0 + dh", (s.P - 1) * s.stride_h - s.pad_top + dh, "int"),
        ("w0 + s*dil_w", (s.Q - 1) * s.stride_w - s.pad_left + (s.S - 1) * s.dil_w, "int"),
        ("dh*patch_w + dw", dh * patch_w + (s.S - 1) * s.dil_w, "int"),
        ("(np*P + op0)*Q + oq", s.N * s.K * s.P * s.Q - 1, "I"), ("j*Q", (ppt - 1) * s.Q, "I"),
    ]


def _pool_v2(s, lc):
    opt = _tile_args(lc)[0]
    per_block = opt * lc.block[0]
    e = [("total N*C*P*Q", s.N * s.C * s.P * s.Q, "I"), ("blockIdx.x*(OPT*blockDim)", (lc.grid[0] - 1) * per_block, "I"),
         ("o = o0 + j*blockDim", lc.grid[0] * per_block - 1, "I"), ("P*Q", s.P * s.Q, "I"),
         ("plane = nc*H*W", (s.N * s.C - 1) * s.H * s.W, "I"), ("h*W + w", s.H * s.W - 1, "I")]
    e += _pool_axis(s, s.H, s.P, s.R, s.stride_h, s.pad_top, s.dil_h, "h")
    e += _pool_axis(s, s.W, s.Q, s.S, s.stride_w, s.pad_left, s.dil_w, "w")
    if s.is_adaptive:
        # r runs to the longest window among a thread's outputs, past a shorter window's own count; the
        # lengths ceil((i+1)In/Out) - floor(i*In/Out) differ by at most 1, so h <= that window's end <= H
        e += [("h = start + r (r < rows)", s.H, "int"), ("w = start + s (s < cols)", s.W, "int")]
    return e


def model_max_pool2d_v2(s, lc):
    return _pool_v2(s, lc) + [("best_idx", s.H * s.W - 1, "ll")]


def model_avg_pool2d_v2(s, lc):
    return _pool_v2(s, lc) + _avg_divisor(s)


def model_pool2d_global_v2(s, lc):
    """The whole-plane bodies (common.cuh, WarpPlane): 2-D kernels have D = 1, 3-D ones walk D*H*W."""
    HW = s.D * s.H * s.W
    return [("nc = blockIdx.x*(blockDim/32) + warp", lc.grid[0] * (lc.block[0] // 32) - 1, "I"),
            ("N*C", s.N * s.C, "I"), ("size = (D*)H*W", HW, "I"), ("nc*size", (s.N * s.C - 1) * HW, "I"),
            ("i += 32 (past the last element)", HW - 1 + 32, "I")] + (_avg_divisor(s) if s.kind == "avg" else [])


def _grad_axis(s, size, out, kernel, stride, pad, dil, what):
    """windows_holding / is_tap (pool_backward.cu) for one axis, over every input position h < size."""
    if s.is_adaptive:
        # adaptive_start(h, Out, In), adaptive_end(h, Out, In), in long long
        return [(f"{what}: h*Out", (size - 1) * out, "ll"),
                (f"{what}: (h+1)*Out + In - 1", size * out + size - 1, "ll"), (f"{what}: h + 1", size, "int"),
                (f"{what}: o range", out, "int")]
    top, reach = size - 1 + pad, (kernel - 1) * dil
    return [(f"{what}: top = h + pad", top, "u32"), (f"{what}: reach = (kernel-1)*dil", reach, "u32"),
            (f"{what}: top - reach + stride - 1", max(0, top - reach) + stride - 1, "u32"),
            (f"{what}: o range", min(top // stride + 1, out), "int"),
            (f"{what}: o*stride", (out - 1) * stride, "int"), (f"{what}: h - o*stride + pad", reach, "int")]


def _pool_grad_common(s, lc):
    e = [("total N*C*H*W", s.N * s.C * s.H * s.W, "I"), ("thread index", _last_thread(lc), "I"),
         ("H*W", s.H * s.W, "I"), ("P*Q", s.P * s.Q, "I"), ("dy plane nc*P*Q", (s.N * s.C - 1) * s.P * s.Q, "I"),
         ("op*Q", (s.P - 1) * s.Q, "I"), ("dy_plane + op*Q + oq", s.N * s.C * s.P * s.Q - 1, "I")]
    e += _grad_axis(s, s.H, s.P, s.R, s.stride_h, s.pad_top, s.dil_h, "h")
    e += _grad_axis(s, s.W, s.Q, s.S, s.stride_w, s.pad_left, s.dil_w, "w")
    return e


def model_max_pool2d_backward_v1(s, lc):
    return _pool_grad_common(s, lc) + [("me = h*W + w", s.H * s.W - 1, "ll")]


def model_avg_pool2d_backward_v1(s, lc):
    e = _pool_grad_common(s, lc)
    # window_taps of each window holding the element (as the forward's), then avg_divisor (common.cuh)
    if s.is_adaptive:
        return e + [("(o+1)*In + Out - 1", max(s.P * s.H + s.P - 1, s.Q * s.W + s.Q - 1), "ll")] + _avg_divisor(s)
    return e + [("o*stride (rows)", (s.P - 1) * s.stride_h, "int"),
                ("o*stride (columns)", (s.Q - 1) * s.stride_w, "int")] + _avg_divisor(s)


def model_max_unpool2d_v1(s, lc):
    return [("N*C", s.N * s.C, "I"), ("thread index", _last_thread(lc), "I"), ("HW = H*W", s.H * s.W, "I"),
            ("PQ = P*Q", s.P * s.Q, "I"), ("nc*HW", (s.N * s.C - 1) * s.H * s.W, "I"),
            ("nc*PQ", (s.N * s.C - 1) * s.P * s.Q, "I"), ("i < HW, j < PQ", max(s.H * s.W, s.P * s.Q), "I")]


def model_max_unpool2d_init_v2(s, lc):
    return [("total N*C*H*W", s.N * s.C * s.H * s.W, "I"), ("thread index", _last_thread(lc), "I")]


def model_max_unpool2d_claim_v2(s, lc):
    return [("PQ = P*Q", s.P * s.Q, "I"), ("total N*C*PQ", s.N * s.C * s.P * s.Q, "I"),
            ("thread index", _last_thread(lc), "I"), ("nc*H*W + index", s.N * s.C * s.H * s.W - 1, "I"),
            ("position i - nc*PQ", s.P * s.Q - 1, "int")]


def model_max_unpool2d_write_v2(s, lc):
    return [("HW = H*W", s.H * s.W, "I"), ("total N*C*HW", s.N * s.C * s.H * s.W, "I"),
            ("thread index", _last_thread(lc), "I"), ("o/HW*PQ + owner", s.N * s.C * s.P * s.Q - 1, "I")]


# -- the 3-D pool kernels (pool3d.cu, pool3d_backward.cu: common.cuh's pooling bodies over (D, H, W)) --------
def _pool3d_axes(s, axis_model):
    return (axis_model(s, s.D, s.Z, s.T, s.stride_d, s.pad_front, s.dil_d, "d")
            + axis_model(s, s.H, s.P, s.R, s.stride_h, s.pad_top, s.dil_h, "h")
            + axis_model(s, s.W, s.Q, s.S, s.stride_w, s.pad_left, s.dil_w, "w"))


def _pool3d_forward(s, lc):
    """PoolWindow (common.cuh): o -> (n*C + c, z, p, q), the volume offset, each tap's (d*H + h)*W + w."""
    DHW, ZPQ = s.D * s.H * s.W, s.Z * s.P * s.Q
    return [("total N*C*Z*P*Q", s.N * s.C * ZPQ, "I"), ("thread index", _last_thread(lc), "I"),
            ("Z*P*Q", ZPQ, "I"), ("D*H*W", DHW, "I"), ("plane = nc*D*H*W", (s.N * s.C - 1) * DHW, "I"),
            ("row = (d*H + h)*W", (s.D * s.H - 1) * s.W, "I"), ("row + w", DHW - 1, "I")] + _pool3d_axes(s, _pool_axis)


def model_max_pool3d_v1(s, lc):
    # first_index: the first in-bounds tap of each axis lies below in + dil (a window wholly in the padding)
    first = ((s.D - 1 + s.dil_d) * s.H + s.H - 1 + s.dil_h) * s.W + s.W - 1 + s.dil_w
    return _pool3d_forward(s, lc) + [("best_idx", s.D * s.H * s.W - 1, "ll"), ("first_index", first, "ll")]


def model_avg_pool3d_v1(s, lc):
    return _pool3d_forward(s, lc) + _avg_divisor(s)


def _pool3d_grad(s, lc):
    """GradElement and the (z, p, q) loops (common.cuh) over every dx element."""
    DHW, ZPQ = s.D * s.H * s.W, s.Z * s.P * s.Q
    return [("total N*C*D*H*W", s.N * s.C * DHW, "I"), ("thread index", _last_thread(lc), "I"),
            ("D*H*W", DHW, "I"), ("Z*P*Q", ZPQ, "I"), ("dy plane nc*Z*P*Q", (s.N * s.C - 1) * ZPQ, "I"),
            ("(oz*P + op)*Q", (s.Z * s.P - 1) * s.Q, "I"), ("dy_plane + (oz*P + op)*Q + oq", s.N * s.C * ZPQ - 1, "I"),
            ] + _pool3d_axes(s, _grad_axis)


def model_max_pool3d_backward_v1(s, lc):
    return _pool3d_grad(s, lc) + [("me = (d*H + h)*W + w", s.D * s.H * s.W - 1, "ll")]


def model_avg_pool3d_backward_v1(s, lc):
    e = _pool3d_grad(s, lc)
    if s.is_adaptive:
        e.append(("(o+1)*In + Out - 1", max(s.Z * s.D + s.Z - 1, s.P * s.H + s.P - 1, s.Q * s.W + s.Q - 1), "ll"))
    else:
        e += [("o*stride (depth)", (s.Z - 1) * s.stride_d, "int"), ("o*stride (rows)", (s.P - 1) * s.stride_h, "int"),
              ("o*stride (columns)", (s.Q - 1) * s.stride_w, "int")]
    return e + _avg_divisor(s)


def model_max_unpool3d_init_v1(s, lc):
    return [("total N*C*D*H*W", s.N * s.C * s.D * s.H * s.W, "I"), ("thread index", _last_thread(lc), "I")]


def model_max_unpool3d_claim_v1(s, lc):
    ZPQ, DHW = s.Z * s.P * s.Q, s.D * s.H * s.W
    return [("ZPQ = Z*P*Q", ZPQ, "I"), ("total N*C*ZPQ", s.N * s.C * ZPQ, "I"), ("thread index", _last_thread(lc), "I"),
            ("nc*D*H*W + index", s.N * s.C * DHW - 1, "I"), ("position i - nc*ZPQ", ZPQ - 1, "int")]


def model_max_unpool3d_write_v1(s, lc):
    DHW = s.D * s.H * s.W
    return [("DHW = D*H*W", DHW, "I"), ("total N*C*DHW", s.N * s.C * DHW, "I"), ("thread index", _last_thread(lc), "I"),
            ("o/DHW*ZPQ + owner", s.N * s.C * s.Z * s.P * s.Q - 1, "I")]


def model_conv_dgrad_v1(s, lc):
    e = [("total N*C*H*W", s.N * s.C * s.H * s.W, "I"), ("thread index", _last_thread(lc), "I"),
         ("H*W, C*H*W", s.C * s.H * s.W, "I"), ("P*Q", s.P * s.Q, "I"), ("R*S", s.R * s.S, "int"),
         ("hp = h + pad_top - r*dil_h", s.H - 1 + s.pad_top, "int"), ("r*dil_h", (s.R - 1) * s.dil_h, "int"),
         ("wq = w + pad_left - s*dil_w", s.W - 1 + s.pad_left, "int"), ("s*dil_w", (s.S - 1) * s.dil_w, "int"),
         ("kk = g*Kg + k", s.K - 1, "int"), ("(n*K + kk)*PQ + op*Q + oq", s.N * s.K * s.P * s.Q - 1, "I"),
         ("((kk*Cg + cg)*RS + r*S + s", s.K * s.C_per_group * s.R * s.S - 1, "I")]
    return e


def _dgrad_phase_axis(extent, stride, pad, kernel, dil, what):
    """PhaseAxis (conv_dgrad.cu) over every phase of one axis: its int intermediates at their largest."""
    phases = min(stride, extent)
    gd = math.gcd(stride, dil)
    step = stride // gd
    return [(f"{what}: count = extent - ph + stride - 1", extent + stride - 1, "int"),
            (f"{what}: ph + pad", phases - 1 + pad, "int"),
            (f"{what}: r*dil (first tap search)", (min(kernel, step) - 1) * dil, "int"),
            (f"{what}: ph + pad - r*dil", max(phases - 1 + pad, (min(kernel, step) - 1) * dil), "int"),
            (f"{what}: r0 + i*step", kernel - 1, "int"),
            (f"{what}: t + e (dy index of tap 0)", -(-extent // stride) - 1 + (phases - 1 + pad) // stride, "int"),
            (f"{what}: i*dd", (kernel - 1) * dil, "int")]


def model_conv_dgrad_v2(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    rows_h, rows_w = -(-s.H // s.stride_h), -(-s.W // s.stride_w)
    rows_max = s.N * rows_h * rows_w
    m_blocks, n_blocks = -(-rows_max // bm), -(-s.C_per_group // bn)
    KD = s.K_per_group * s.R * s.S          # the largest phase's taps at most
    PQ, HW, RS = s.P * s.Q, s.H * s.W, s.R * s.S
    e = [("rows_max = N*ceil(H/sh)*ceil(W/sw)", rows_max, "I"), ("m_blocks: (rows_max - 1)/BM + 1", rows_max, "I"),
         ("n_blocks: Cg + BN - 1", s.C_per_group + bn - 1, "int"), ("blockIdx.x", lc.grid[0] - 1, "I"),
         ("phases = min(sh, H)*min(sw, W)", min(s.stride_h, s.H) * min(s.stride_w, s.W), "int"),
         ("plane = Ha*Wa", rows_h * rows_w, "int"), ("M = N*plane", rows_max, "I"),
         ("m0 = bm*BM", (m_blocks - 1) * bm, "I"), ("am = m0 + a_m, mb + i", m_blocks * bm - 1, "I"),
         ("KD = Kg*nr*ns", KD, "int"), ("tap walk j + step.j, i + step.i + 1", 2 * max(s.R, s.S), "int"),
         ("k0 + a_k + e, k0 + b_k", -(-KD // bk) * bk - 1 + bk, "int"),
         ("RS = R*S, wtap = r*S + s", RS, "int"), ("PQ = P*Q", PQ, "I"), ("HW = H*W", HW, "I"),
         ("(img*K + g*Kg)*PQ", ((s.N - 1) * s.K + (s.groups - 1) * s.K_per_group) * PQ, "I"),
         ("k*PQ + pp*Q + qq", s.K_per_group * PQ - 1, "I"),
         ("g*Kg*Cg*RS", (s.groups - 1) * s.K_per_group * s.C_per_group * RS, "I"),
         ("(k*Cg + c)*RS + wtap", s.K_per_group * s.C_per_group * RS - 1, "I"),
         ("c = n0 + b_n + e*(NT/BK)", n_blocks * bn - 1, "int"), ("cc = g*Cg + c", s.C - 1, "int"),
         ("h = ph + t*stride_h", s.H - 1, "int"), ("w = pw + v*stride_w", s.W - 1, "int"),
         ("(img*C + cc)*HW + h*W + w", s.N * s.C * HW - 1, "I")]
    e += _dgrad_phase_axis(s.H, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _dgrad_phase_axis(s.W, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def model_conv_wgrad_v1(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    k_chunk, splits = int(lc.args[1]), lc.grid[1]
    PQ, HW, RS = s.P * s.Q, s.H * s.W, s.R * s.S
    NN, J, Kg = s.C_per_group * RS, s.N * PQ, s.K_per_group
    m_blocks, n_blocks = -(-Kg // bm), -(-NN // bn)
    # split z walks j from z*k_chunk in whole BK steps up to min(J, (z+1)*k_chunk): the last j it forms
    j_last = max(z * k_chunk + -(-(min(J, (z + 1) * k_chunk) - z * k_chunk) // bk) * bk - 1 for z in range(splits))
    e = [("NN = Cg*R*S", NN, "int"), ("PQ", PQ, "I"), ("HW", HW, "I"), ("J = N*P*Q", J, "I"),
         ("n_blocks: NN + BN - 1", NN + bn - 1, "int"), ("m_blocks: Kg + BM - 1", Kg + bm - 1, "int"),
         ("blockIdx.x", lc.grid[0] - 1, "I"), ("m = m0 + ...", m_blocks * bm - 1, "int"),
         ("n = n0 + ...", n_blocks * bn - 1, "int"),
         ("j_begin = blockIdx.y*k_chunk", (splits - 1) * k_chunk, "I"), ("j_begin + k_chunk", splits * k_chunk, "I"),
         ("k0 + t_k, pos.set(j_begin + t_k)", j_last, "I"), ("k_steps*BK", k_chunk + bk - 1, "I"),
         # OutPos::advance compares against Q - step.q and P - (step.p + carry) instead of forming the sums
         ("Q - step.q", s.Q, "int"), ("step.p + carry", min(s.P, bk // s.Q + 1), "int"),
         ("q (stays below Q)", s.Q - 1, "int"), ("p (stays below P)", s.P - 1, "int"),
         ("g*Kg*PQ + (img*K + m)*PQ + pq", s.N * s.K * PQ - 1, "I"),
         ("g*Cg*HW + (img*C + c)*HW + hh*W + ww", s.N * s.C * HW - 1, "I"),
         ("b_dh = r*dil_h - pad_top", (s.R - 1) * s.dil_h, "int"),
         ("b_dw = s*dil_w - pad_left", (s.S - 1) * s.dil_w, "int"),
         ("total = K*NN", s.K * NN, "I"), ("o = (g*Kg + m)*NN + n", s.K * NN - 1, "I")]
    if splits > 1:
        e.append(("blockIdx.y*total (workspace slice)", (splits - 1) * s.K * NN, "I"))
    e += _conv_window(s, s.P, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _conv_window(s, s.Q, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def model_wgrad_splitk_reduce_v1(s, lc):
    splits, total = int(lc.args[1]), s.K * s.C_per_group * s.R * s.S
    return [("total K*Cg*R*S", total, "I"), ("thread index", _last_thread(lc), "I"),
            ("s*total + o", splits * total - 1, "I")]


def _fold_axes(s):
    """Per axis (depth, height, width): (extent, blocks, kernel, stride, pad before, dilation)."""
    return (("d", s.D, s.Z, s.T, s.stride_d, s.pad_front, s.dil_d),
            ("h", s.H, s.P, s.R, s.stride_h, s.pad_top, s.dil_h),
            ("w", s.W, s.Q, s.S, s.stride_w, s.pad_left, s.dil_w))


def model_unfold_v1(s, lc):
    taps, L_ = s.T * s.R * s.S, s.Z * s.P * s.Q
    e = [("taps = T*R*S", taps, "int"), ("S*R", s.S * s.R, "int"), ("L = Z*P*Q", L_, "I"),
         ("total N*C*taps*L", s.N * s.C * taps * L_, "I"), ("thread index", _last_thread(lc), "I"),
         ("row = o / L", s.N * s.C * taps - 1, "I"), ("Q*P", s.Q * s.P, "I"),
         ("((nc*D + d)*H + h)*W + w", s.N * s.C * s.D * s.H * s.W - 1, "I")]
    for what, _, out, k, stride, pad, dil in _fold_axes(s):
        e += _conv_window(s, out, stride, pad, k, dil, what)
    return e


def model_fold_v1(s, lc):
    taps, L_ = s.T * s.R * s.S, s.Z * s.P * s.Q
    e = [("total N*C*D*H*W", s.N * s.C * s.D * s.H * s.W, "I"), ("thread index", _last_thread(lc), "I"),
         ("W*H*D", s.W * s.H * s.D, "I"), ("L = Z*P*Q", L_, "I"), ("taps = T*R*S", taps, "int"),
         ("nc*taps*L", (s.N * s.C - 1) * taps * L_, "I"), ("(t*R + r)*S + s", taps - 1, "int"),
         ("tap row*L + (z*P + y)*Q + q", taps * L_ - 1, "I")]
    for what, size, out, k, stride, pad, dil in _fold_axes(s):    # block_of_tap
        e += [(f"{what}: x + pad", size - 1 + pad, "int"), (f"{what}: k*dil", (k - 1) * dil, "int"),
              (f"{what}: block", out - 1, "int")]
    return e


MODELS = {"unfold_v1": model_unfold_v1, "fold_v1": model_fold_v1,
          "conv2d_direct_v1": model_conv2d_direct_v1, "conv2d_direct_v2": model_conv2d_direct_v2,
          "im2col_v1": model_im2col_v1, "conv_gemm_v1": model_conv_gemm_v1, "conv_gemm_v2": model_conv_gemm_v2,
          "max_pool2d_v1": model_max_pool2d_v1, "avg_pool2d_v1": model_avg_pool2d_v1,
          "conv_implicit_gemm_v1": model_conv_implicit_gemm_v1, "splitk_reduce_v1": model_splitk_reduce_v1,
          "depthwise_v1": model_depthwise_v1, "max_pool2d_v2": model_max_pool2d_v2,
          "avg_pool2d_v2": model_avg_pool2d_v2, "max_pool2d_global_v2": model_pool2d_global_v2,
          "avg_pool2d_global_v2": model_pool2d_global_v2,
          "max_pool2d_backward_v1": model_max_pool2d_backward_v1,
          "avg_pool2d_backward_v1": model_avg_pool2d_backward_v1, "max_unpool2d_v1": model_max_unpool2d_v1,
          "max_unpool2d_init_v2": model_max_unpool2d_init_v2, "max_unpool2d_claim_v2": model_max_unpool2d_claim_v2,
          "max_unpool2d_write_v2": model_max_unpool2d_write_v2,
          "max_pool3d_v1": model_max_pool3d_v1, "avg_pool3d_v1": model_avg_pool3d_v1,
          "max_pool3d_global_v1": model_pool2d_global_v2, "avg_pool3d_global_v1": model_pool2d_global_v2,
          "max_pool3d_backward_v1": model_max_pool3d_backward_v1,
          "avg_pool3d_backward_v1": model_avg_pool3d_backward_v1, "max_unpool3d_init_v1": model_max_unpool3d_init_v1,
          "max_unpool3d_claim_v1": model_max_unpool3d_claim_v1, "max_unpool3d_write_v1": model_max_unpool3d_write_v1,
          "conv_dgrad_v1": model_conv_dgrad_v1, "conv_dgrad_v2": model_conv_dgrad_v2,
          "conv_wgrad_v1": model_conv_wgrad_v1, "wgrad_splitk_reduce_v1": model_wgrad_splitk_reduce_v1}
# the 3-D convolution kernels (conv3d_*.cu): their models are further down, with the 3-D shapes


def test_every_kernel_has_an_index_model():
    kernels = {k.name for fam in _cuda.FAMILIES for k in fam.KERNELS}
    missing = sorted(kernels - set(MODELS))
    assert not missing, (f"kernels without an index-arithmetic transcription in {__file__}: {missing}; add one "
                         f"(MODELS) so their offsets are checked against the index type")


def overflows(spec):
    """Every (kernel, expression, value, type) that does not fit, over all plans for ``spec``."""
    itype = L.index_type(spec)
    bad = []
    for plan in _plans(spec):
        for lc in plan.launches:
            name = lc.kernel.split("<")[0]
            if name not in MODELS:      # test_every_kernel_has_an_index_model reports it
                continue
            # a launch may widen on its own (a last index past the end): judge it by its own index type,
            # which is never narrower than the spec's
            limit_i = LIMIT[_itype(lc)]
            assert limit_i >= LIMIT[itype], lc.kernel
            for expr, value, kind in MODELS[name](spec, lc):
                limit = {"int": INT32_MAX, "I": limit_i, "ll": INT64_MAX, "u32": UINT32_MAX}[kind]
                if value > limit:
                    bad.append((name, expr, value, "int" if kind == "int" else _itype(lc) if kind == "I" else kind))
    return bad


def test_conv_reasons_never_raise():
    # the direct-v2 patch passes 2^31 (stride 2^28 over a 16-wide tile): a reason, not an OverflowError
    # from the plan's int32 scalars, so select() falls through (to im2col, or to direct's untiled kernel,
    # whose one-output coordinates fit)
    spec = conv((1, 1, 2**28 + 1), (1, 1, 1), stride=2**28)      # 1 GiB of float32, two outputs
    assert any("32-bit" in r for r in _cuda.family("direct").reasons(spec, ""))
    assert not _cuda.family("direct").reasons(spec, "untiled")
    assert not family_reasons(spec, "im2col")


#: shapes whose extents the kernels' 32-bit coordinates and counters cannot hold (a row of ~2^31 padded
#: elements, a filter of ~2^31 taps): refused with a reason by every algorithm, never launched to wrap
REFUSED = {
    "long-row-strided-padded": lambda: conv((1, 1, 2**31 - 3), (1, 1, 3), stride=2, padding=((1, 8),)),
    "huge-filter-64bit": lambda: conv((1, 1, 1, 1), (1, 1, 2**16, 2**15 + 1), padding=((2**15, 2**15), (2**14, 2**14))),
    "pool-long-row-ceil": lambda: pool("avg", (1, 1, 2**31 - 2), kernel_size=5, stride=3, padding=2, ceil_mode=True),
    "pool-long-row-dilated-ceil": lambda: pool("max", (1, 1, 2**31 - 2), kernel_size=3, stride=2**29 + 1, padding=1,
                                               dilation=2**29, ceil_mode=True),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_shapes_beyond_32bit_coordinates_are_refused_with_a_reason(name):
    from fastconv import _dispatch
    spec = REFUSED[name]()
    if spec.op == "conv":
        for algo in ("direct", "im2col", "implicit_gemm", "depthwise"):
            assert family_reasons(spec, algo), algo
        assert any("32-bit" in r for algo in ("direct", "im2col", "implicit_gemm") for r in family_reasons(spec, algo))
    else:
        assert any("32-bit" in r for r in family_reasons(spec, "pool"))
    assert _plans(spec) == []
    with pytest.raises(ValueError, match="32-bit"):
        _dispatch.select(spec, "cuda-emu")


#: the largest shapes, one extent at a time near 2^31 (specs only: nothing is allocated)
EXTREMES = {
    "long-row-int": lambda: conv((1, 1, INT32_MAX), (1, 1, 1)),
    "long-row-3tap": lambda: conv((1, 1, INT32_MAX - 2), (1, 1, 3), bias=True),
    "long-row-64bit": lambda: conv((3, 1, 2**30), (2, 1, 3), padding=1),
    "long-row-strided-padded": lambda: conv((1, 1, 2**31 - 13), (1, 1, 3), stride=2, padding=((1, 8),)),
    "long-row-1x1-padded": lambda: conv((1, 1, 2**31 - 20), (1, 1, 1), padding=((0, 19),)),
    "long-row-dilated": lambda: conv((1, 1, 2**31 - 9), (1, 1, 2), dilation=2**30, padding=((0, 8),), stride=4),
    "huge-filter-64bit": lambda: conv((1, 1, 1, 1), (2, 1, 2**16, 2**15 - 1), padding=((2**15, 2**15), (2**14, 2**14))),
    "many-output-channels": lambda: conv((1, 1, 1, 1), (2**31 - 20, 1, 1, 1)),
    "many-channels": lambda: conv((1, 2**20, 1, 1), (2**10, 2**20, 1, 1)),
    "many-channels-64bit": lambda: conv((1, 2**21, 2, 2), (2**10, 2**21, 1, 1)),
    "big-batch": lambda: conv((2**24, 2, 8, 8), (4, 2, 3, 3), padding=1),
    "big-batch-64bit": lambda: conv((2**26, 2, 8, 8), (4, 2, 3, 3), padding=1, stride=2),
    "depthwise-64bit": lambda: conv((4, 2**16, 128, 128), (2**17, 1, 3, 3), groups=2**16, padding=1),
    "tall-strided-dilated": lambda: conv((1, 1, 2**25, 32), (1, 1, 5, 5), stride=(7, 1), dilation=(2**20, 1)),
    "pool-long-row": lambda: pool("max", (1, 1, 2**31 - 8), kernel_size=4, stride=3, padding=2, dilation=1,
                                  ceil_mode=True, return_indices=True),
    # the avg divisor's W + pad_right passes 2^31 - 1 (computed in long long)
    "pool-long-row-padded": lambda: pool("avg", (1, 1, 2**31 - 2), kernel_size=5, stride=1000, padding=2),
    # a global-pool lane steps 32 past a plane of ~2^31 elements (that launch widens)
    "pool-global-long-plane": lambda: pool("adaptive_max", (1, 1, 1, 2**31 - 1), output_size_=1, return_indices=True),
    "pool-global-many-planes": lambda: pool("avg", (2**31 - 3, 1, 2, 2), kernel_size=2),
    # depthwise blocks of several whole planes: the last block's planes end at 2^31 - 1
    "depthwise-many-planes": lambda: conv((2**27 - 1, 16, 1, 1), (16, 1, 1, 1), groups=16),
    # N*P*Q within a GEMM tile of 2^31 - 1 with int indexing (the tile counts are (n - 1) / tile + 1)
    "big-batch-1x1-int": lambda: conv((2**31 - 33, 1, 1, 1), (1, 1, 1, 1)),
    # every buffer below 2^31 elements but the split-K workspace above (those launches widen)
    "split-k-workspace-64bit": lambda: conv((2**11, 512, 7, 7), (2**14, 512, 3, 3), padding=1),
    "pool-long-row-dilated": lambda: pool("max", (1, 1, 2**31 - 2), kernel_size=3, stride=2**29, padding=1,
                                          dilation=2**29 - 1),
    "pool-big-batch-64bit": lambda: pool("avg", (2**22, 16, 32, 32), kernel_size=3, stride=2, padding=1),
    "adaptive-upsample": lambda: pool("adaptive_max", (1, 1, 3, 2**30), output_size_=(2, 2**30 + 7)),
    "adaptive-avg-64bit": lambda: pool("adaptive_avg", (2**12, 2**10, 32, 32), output_size_=7),
    # pool gradients (one thread per dx element) and max_unpool
    "pool-grad-long-row": lambda: pool_grad("max", (1, 1, 2**31 - 8), kernel_size=4, stride=3, padding=2,
                                            ceil_mode=True),
    "pool-grad-long-row-padded": lambda: pool_grad("avg", (1, 1, 2**31 - 2), kernel_size=5, stride=1000, padding=2),
    "pool-grad-long-row-dilated": lambda: pool_grad("max", (1, 1, 2**31 - 2), kernel_size=3, stride=2**29,
                                                    padding=1, dilation=2**29 - 1),
    # N*C*H*W = 2^31 - 1 with int indexing: the last block's last thread index is exactly 2^31 - 1
    "pool-grad-int-edge": lambda: pool_grad("avg", (1, 1, INT32_MAX), kernel_size=2, stride=1),
    "pool-grad-64bit": lambda: pool_grad("avg", (2**22, 16, 32, 32), kernel_size=3, stride=2, padding=1),
    "pool-grad-adaptive-upsample": lambda: pool_grad("adaptive_max", (1, 1, 3, 2**30), output_size_=(2, 2**30 + 7)),
    "pool-grad-adaptive-avg-64bit": lambda: pool_grad("adaptive_avg", (2**12, 2**10, 32, 32), output_size_=7),
    "pool-grad-adaptive-long-row": lambda: pool_grad("adaptive_avg", (1, 1, 1, INT32_MAX), output_size_=(1, 3)),
    "unpool-64bit": lambda: unpool((2, 1, 2**15, 2**15), kernel_size=2),
    "unpool-long-row": lambda: unpool((1, 1, 2**30 - 1), kernel_size=2),
    "unpool-plane-at-the-limit": lambda: unpool((1, 1, INT32_MAX), kernel_size=1),
    # per-side pool padding up to dil*(k-1): first_inbounds' -start + step - 1 passes 2^31 - 1 (unsigned)
    "pool-per-side-huge-pad": lambda: pool("max", (1, 1, 3, 1), kernel_size=(1, 2), dilation=(1, 2**30 + 1),
                                           padding=((0, 0), (2**30 + 1, 0)), return_indices=True),
    "pool-per-side-long-row": lambda: pool("avg", (1, 1, 2, 2**31 - 16), kernel_size=(1, 4), stride=(1, 3),
                                           padding=((0, 0), (3, 1)), ceil_mode=True),
    # 3-D volumes: N=8, C=64, 128^3 fits int; twice the batch does not
    "pool3d-volume-int": lambda: pool("max", (8, 64, 128, 128, 128), kernel_size=3, stride=2, padding=1,
                                      return_indices=True),
    "pool3d-volume-64bit": lambda: pool("avg", (16, 64, 128, 128, 128), kernel_size=3, stride=2,
                                        padding=((1, 2), (0, 1), (2, 0)), ceil_mode=True),
    "pool3d-adaptive-64bit": lambda: pool("adaptive_max", (16, 64, 128, 128, 128), output_size_=(5, 7, 3),
                                          return_indices=True),
    # a global-pool lane steps 32 past a volume of ~2^31 elements (that launch widens); many volumes
    "pool3d-global-long-volume": lambda: pool("adaptive_max", (1, 1, 2**10, 2**10, 2**11 - 1), output_size_=1,
                                              return_indices=True),
    "pool3d-global-many-volumes": lambda: pool("avg", (2**28 - 1, 1, 2, 2, 2), kernel_size=2),
    "pool3d-long-depth": lambda: pool("max", (1, 1, 2**31 - 8, 1, 1), kernel_size=(4, 1, 1), stride=(3, 1, 1),
                                      padding=((2, 2), (0, 0), (0, 0)), dilation=1, return_indices=True),
    "pool3d-long-depth-dilated-per-side": lambda: pool("max", (1, 1, 2**31 - 2, 1, 1), kernel_size=(3, 1, 1),
                                                       stride=(2**29, 1, 1), dilation=(2**29 - 1, 1, 1),
                                                       padding=((2**30 - 2, 1), (0, 0), (0, 0))),
    "pool3d-grad-volume-64bit": lambda: pool_grad("max", (16, 64, 128, 128, 128), kernel_size=3, stride=2, padding=1),
    "pool3d-grad-avg-int": lambda: pool_grad("avg", (8, 64, 128, 128, 128), kernel_size=(2, 3, 3), stride=1,
                                             padding=((1, 0), (2, 0), (0, 2)), count_include_pad=False),
    "pool3d-grad-adaptive-upsample": lambda: pool_grad("adaptive_avg", (1, 1, 3, 2, 2**28),
                                                       output_size_=(4, 3, 2**28 + 7)),
    "pool3d-grad-long-depth": lambda: pool_grad("avg", (1, 1, 2**31 - 2, 1, 1), kernel_size=(5, 1, 1),
                                                stride=(1000, 1, 1), padding=(2, 0, 0)),
    "unpool3d-64bit": lambda: unpool((2, 1, 2**10, 2**10, 2**10), kernel_size=2),
    "unpool3d-volume-at-the-limit": lambda: unpool((1, 1, 1, 1, INT32_MAX), kernel_size=1),
    # unfold / fold (kernels/fold.cu): a column matrix of exactly 2^31 - 1 elements in int, one past it in
    # long long, a padded row at the coordinates' limit, a dilated strided row, 3-D volumes past 2^31
    "unfold-int-edge": lambda: fold_op("unfold", (1, 1, INT32_MAX), (1,)),
    "fold-int-edge": lambda: fold_op("fold", (1, 1, INT32_MAX // 3), (3,), padding=1),
    "unfold-long-row-padded": lambda: fold_op("unfold", (1, 1, 1, 2**31 - 9), (1, 3), padding=((0, 0), (4, 4))),
    "fold-long-row-padded": lambda: fold_op("fold", (1, 1, 1, 2**31 - 9), (1, 3), padding=((0, 0), (4, 4))),
    "unfold-long-row-dilated": lambda: fold_op("unfold", (1, 1, 2**31 - 20), (2,), dilation=2**30, stride=4,
                                               padding=((0, 8),)),
    "fold-long-row-dilated": lambda: fold_op("fold", (1, 1, 2**31 - 20), (2,), dilation=2**30, stride=4,
                                             padding=((0, 8),)),
    "unfold-3d-64bit": lambda: fold_op("unfold", (8, 64, 128, 128, 128), (3, 3, 3), padding=1),
    "fold-3d-64bit": lambda: fold_op("fold", (8, 64, 128, 128, 128), (3, 3, 3), padding=1, stride=2),
}


def fold_op(op, xshape, kernel_size, **kw):
    """The unfold spec of an image of ``xshape`` (no memory), or the fold spec that returns that image."""
    from fastconv._spec_fold import fold_spec, unfold_spec
    u = unfold_spec(fake(xshape), kernel_size, **kw)
    return u if op == "unfold" else fold_spec(fake(u.output_shape), xshape[2:], kernel_size, **kw)


@pytest.mark.parametrize("name", list(EXTREMES))
def test_offsets_fit_the_index_type_for_the_largest_shapes(name):
    spec = EXTREMES[name]()
    assert _plans(spec), f"{name}: no kernel accepts it; pick a shape the launcher runs"
    assert overflows(spec) == []


@st.composite
def extent(draw, lo=1, bits=31):
    """Log-uniform: small and huge values alike."""
    e = draw(st.integers(0, bits))
    return draw(st.integers(max(lo, 2**e), 2**(e + 1) - 1)) if e < bits else draw(st.integers(2**e // 2, 2**e - 1))


@st.composite
def huge_specs(draw):
    if draw(st.booleans()):
        g = draw(st.sampled_from([1, 1, 2, 4]))
        C, K = g * draw(extent(bits=20)), g * draw(extent(bits=20))
        R, S = draw(st.integers(1, 7)), draw(st.integers(1, 7))
        kw = dict(stride=(draw(extent(bits=8)), draw(extent(bits=8))), dilation=(draw(extent(bits=8)), draw(extent(bits=8))),
                  padding=tuple((draw(st.integers(0, 8)), draw(st.integers(0, 8))) for _ in range(2)), groups=g)
        shape = (draw(extent(bits=26)), C, draw(extent(bits=31)), draw(extent(bits=31)))
        assume(math.prod(shape) < 2**44 and K * (C // g) * R * S < 2**40)
        try:
            return conv(shape, (K, C // g, R, S), bias=draw(st.booleans()), **kw)
        except ValueError:
            assume(False)
    kind = draw(st.sampled_from(["max", "avg", "adaptive_max", "adaptive_avg"]))
    shape = (draw(extent(bits=26)), draw(extent(bits=20)), draw(extent(bits=31)), draw(extent(bits=31)))
    assume(math.prod(shape) < 2**44)
    try:
        if kind.startswith("adaptive"):
            return pool(kind, shape, output_size_=(draw(extent(bits=31)), draw(extent(bits=31))))
        k = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        return pool(kind, shape, kernel_size=k, stride=(draw(extent(bits=10)), draw(extent(bits=10))),
                    padding=(draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
                    dilation=(draw(extent(bits=6)), draw(extent(bits=6))) if kind == "max" else 1,
                    ceil_mode=draw(st.booleans()))
    except ValueError:
        assume(False)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(huge_specs())
def test_offsets_fit_the_index_type_for_random_huge_shapes(spec):
    assume(_plans(spec))
    assert overflows(spec) == []


@st.composite
def huge_pool3d_specs(draw):
    """3-D pools, their gradients and max_unpool3d with log-uniform extents and per-side pads (each side up to
    dil*(k-1), beyond torch) as well as torch's symmetric ones."""
    kind = draw(st.sampled_from(["max", "avg", "adaptive_max", "adaptive_avg", "unpool"]))
    shape = (draw(extent(bits=20)), draw(extent(bits=16))) + tuple(draw(extent(bits=31)) for _ in range(3))
    assume(math.prod(shape) < 2**44)
    grad = draw(st.booleans())
    try:
        if kind == "unpool":
            return unpool(shape, kernel_size=tuple(draw(st.integers(1, 4)) for _ in range(3)))
        if kind.startswith("adaptive"):
            kw = dict(output_size_=tuple(draw(extent(bits=31)) for _ in range(3)))
        else:
            k = tuple(draw(st.integers(1, 5)) for _ in range(3))
            dil = tuple(draw(extent(bits=6)) for _ in range(3)) if kind == "max" else (1, 1, 1)
            if draw(st.booleans()):
                pad = tuple((draw(st.integers(0, d * (kk - 1))), draw(st.integers(0, d * (kk - 1))))
                            for kk, d in zip(k, dil))
            else:
                pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
            kw = dict(kernel_size=k, stride=tuple(draw(extent(bits=10)) for _ in range(3)), padding=pad,
                      dilation=dil, ceil_mode=draw(st.booleans()))
        return pool_grad(kind, shape, **kw) if grad else pool(kind, shape, **kw)
    except ValueError:
        assume(False)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(huge_pool3d_specs())
def test_pool3d_offsets_fit_the_index_type_for_random_huge_shapes(spec):
    assume(_plans(spec))
    assert overflows(spec) == []


# ---------------------------------------------------------------------------------------------------
# The gradient kernels (conv_dgrad.cu, conv_wgrad.cu): the same problems as their forward, as conv_input
# and conv_weight specs (the fields are the forward problem's)
# ---------------------------------------------------------------------------------------------------
def as_grad(spec, op):
    """The conv_input or conv_weight spec of a forward conv spec (same fields; the weight gradient has no
    bias)."""
    import dataclasses

    from fastconv._spec import ConvInputGradSpec, ConvSpec, ConvWeightGradSpec
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ConvSpec)}
    if op == "conv_weight":
        fields["has_bias"] = False
        return ConvWeightGradSpec(**fields)
    return ConvInputGradSpec(**fields)


GRAD_EXTREMES = {
    "long-row-int": lambda: conv((1, 1, INT32_MAX - 2), (1, 1, 3), bias=True),
    "long-row-64bit": lambda: conv((3, 1, 2**30), (2, 1, 3), padding=1),
    "long-row-strided-padded": lambda: conv((1, 1, 2**31 - 13), (1, 1, 3), stride=2, padding=((1, 8),)),
    # padded extent + stride just below 2^31 - 1 (conv_dgrad's phase arithmetic ph + pad)
    "long-row-dilated": lambda: conv((1, 1, 2**31 - 20), (1, 1, 2), dilation=2**30, padding=((0, 8),), stride=4),
    # strides past the extent: one dy position per axis, most phases reached by no tap
    "stride-beyond-extent": lambda: conv((1, 2, 3, 2**28), (2, 2, 1, 1), stride=(2**20, 2**29)),
    "big-batch": lambda: conv((2**24, 2, 8, 8), (4, 2, 3, 3), padding=1),
    "big-batch-64bit": lambda: conv((2**26, 2, 8, 8), (4, 2, 3, 3), padding=1, stride=2),
    "many-channels": lambda: conv((1, 2**20, 1, 1), (2**10, 2**20, 1, 1)),
    "depthwise-64bit": lambda: conv((4, 2**16, 128, 128), (2**17, 1, 3, 3), groups=2**16, padding=1),
    "tall-strided-dilated": lambda: conv((1, 1, 2**25, 32), (1, 1, 5, 5), stride=(7, 1), dilation=(2**20, 1)),
    # GEMM_K of dgrad (K/groups*R*S) and GEMM_N of wgrad (C/groups*R*S) just below the kernels' 2^30
    "huge-filter": lambda: conv((1, 1, 1, 1), (2, 1, 2**14, 2**15 - 1), padding=((2**13, 2**13), (2**14, 2**14))),
    # every buffer below 2^31 elements but the split-K workspace (13 splits of 3e8) above: those launches widen
    "split-k-workspace-64bit": lambda: conv((8, 2**12, 7, 7), (2**13, 2**12, 3, 3), padding=1),
}


@pytest.mark.parametrize("op", ["conv_input", "conv_weight"])
@pytest.mark.parametrize("name", list(GRAD_EXTREMES))
def test_gradient_offsets_fit_the_index_type_for_the_largest_shapes(name, op):
    spec = as_grad(GRAD_EXTREMES[name](), op)
    assert _plans(spec), f"{name}: no kernel accepts it; pick a shape the launcher runs"
    assert overflows(spec) == []


def test_split_k_workspace_widens_the_weight_gradient():
    spec = as_grad(GRAD_EXTREMES["split-k-workspace-64bit"](), "conv_weight")
    assert L.index_type(spec) == "int"
    wgrad = _cuda.family("conv_wgrad")
    assert all(", long long" in lc.kernel for lc in wgrad.plan(spec, "64x64-k16").launches)
    assert all(", int" in lc.kernel for lc in wgrad.plan(spec, "64x64").launches)


@st.composite
def huge_grad_specs(draw):
    """Convolutions as huge_specs draws them, with the padding large enough for any filter (no empty output
    to reject), as a conv_input or conv_weight spec."""
    g = draw(st.sampled_from([1, 1, 2, 4]))
    C, K = g * draw(extent(bits=20)), g * draw(extent(bits=20))
    R, S = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dil = (draw(extent(bits=8)), draw(extent(bits=8)))
    pads = tuple((draw(st.integers(0, 8)) + (k - 1) * d, draw(st.integers(0, 8))) for k, d in zip((R, S), dil))
    shape = (draw(extent(bits=26)), C, draw(extent(bits=31)), draw(extent(bits=31)))
    assume(math.prod(shape) < 2**44 and K * (C // g) * R * S < 2**40 and shape[2] + pads[0][0] < 2**31
           and shape[3] + pads[1][0] < 2**31)
    spec = conv(shape, (K, C // g, R, S), bias=draw(st.booleans()), groups=g, dilation=dil, padding=pads,
                stride=(draw(extent(bits=8)), draw(extent(bits=8))))
    return as_grad(spec, draw(st.sampled_from(["conv_input", "conv_weight"])))


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(huge_grad_specs())
def test_gradient_offsets_fit_the_index_type_for_random_huge_shapes(spec):
    assume(_plans(spec))
    assert overflows(spec) == []


# ---------------------------------------------------------------------------------------------------
# The 3-D convolution kernels (conv3d_direct.cu, conv3d_implicit_gemm.cu, conv3d_dgrad.cu, conv3d_wgrad.cu):
# 3-D volumes pass 2^31 elements quickly (N=16, C=64, 128^3 is 2^31)
# ---------------------------------------------------------------------------------------------------
def _windows3d(s):
    return (_conv_window(s, s.Z, s.stride_d, s.pad_front, s.T, s.dil_d, "d")
            + _conv_window(s, s.P, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
            + _conv_window(s, s.Q, s.stride_w, s.pad_left, s.S, s.dil_w, "w"))


def model_conv3d_direct_v1(s, lc):
    ZPQ, DHW, TRS = s.Z * s.P * s.Q, s.D * s.H * s.W, s.T * s.R * s.S
    return [("PQ", s.P * s.Q, "I"), ("ZPQ", ZPQ, "I"), ("total N*K*ZPQ", s.N * s.K * ZPQ, "I"),
            ("thread index", _last_thread(lc), "I"), ("K*ZPQ", s.K * ZPQ, "I"), ("HW, DHW", DHW, "I"),
            ("TRS = T*R*S", TRS, "int"), ("(n*C + g*Cg + c)*DHW", (s.N * s.C - 1) * DHW, "I"),
            ("(k*Cg + c)*TRS", (s.K * s.C_per_group - 1) * TRS, "I"),
            ("d*HW + h*W + w", DHW - 1, "I"), ("(t*R + r)*S + s", TRS - 1, "int")] + _windows3d(s)


def model_conv3d_implicit_gemm_v1(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    k_chunk, splits = int(lc.args[1]), lc.grid[1]
    ZPQ, DHW, Kg = s.Z * s.P * s.Q, s.D * s.H * s.W, s.K_per_group
    M, KD, TRS = s.N * ZPQ, s.C_per_group * s.T * s.R * s.S, s.T * s.R * s.S
    m_blocks, n_blocks = -(-M // bm), -(-Kg // bn)
    # split z walks kd from z*k_chunk in whole BK steps up to min(KD, (z+1)*k_chunk): the last kd it forms
    kd_last = max(z * k_chunk + -(-(min(KD, (z + 1) * k_chunk) - z * k_chunk) // bk) * bk - 1 for z in range(splits))
    e = [("ZPQ", ZPQ, "I"), ("M = N*ZPQ", M, "I"), ("KD = Cg*T*R*S", KD, "int"), ("HW, DHW", DHW, "I"),
         ("n_blocks: Kg + BN - 1", Kg + bn - 1, "int"), ("m_blocks: (M - 1)/BM + 1", M - 1, "I"),
         ("blockIdx.x", lc.grid[0] - 1, "I"), ("m0 = bm*BM", (m_blocks - 1) * bm, "I"),
         ("am = m0 + a_m, mb + 3", m_blocks * bm - 1, "I"), ("n = n0 + b_n + j*(NT/BK)", n_blocks * bn - 1, "int"),
         ("kd_begin = blockIdx.y*k_chunk", (splits - 1) * k_chunk, "int"),
         ("kd_begin + k_chunk", splits * k_chunk, "int"),
         ("kd_begin + a_k (first tap)", (splits - 1) * k_chunk + bk, "int"),
         ("kd_end - kd_begin + BK - 1", k_chunk + bk - 1, "int"), ("k0 + a_k + i, k0 + b_k", kd_last, "int"),
         # the staged tap's channel runs on past Cg in a last, partial k step (never dereferenced there)
         ("tap c (c*T + t)", (kd_last // TRS + 2) * s.T, "int"),
         ("(img*C + g*Cg)*DHW", ((s.N - 1) * s.C + (s.groups - 1) * s.C_per_group) * DHW, "I"),
         ("(c*D + dd)*HW + hh*W + ww", s.C_per_group * DHW - 1, "I"),
         ("g*Kg*KD", (s.groups - 1) * Kg * KD, "I"), ("n*KD + kd", Kg * KD - 1, "I"),
         ("n*Cg*T*R*S (exact path)", (Kg - 1) * KD, "I"),
         ("k = g*Kg + n", s.K - 1, "int"), ("(img*K + k)*ZPQ + m%ZPQ", s.N * s.K * ZPQ - 1, "I")]
    if splits > 1:
        e.append(("blockIdx.y*M*K (workspace slice)", (splits - 1) * M * s.K, "I"))
    return e + _windows3d(s)


def model_conv3d_splitk_reduce_v1(s, lc):
    splits, total = int(lc.args[1]), s.N * s.K * s.Z * s.P * s.Q
    return [("ZPQ", s.Z * s.P * s.Q, "I"), ("total N*K*ZPQ", total, "I"), ("thread index", _last_thread(lc), "I"),
            ("s*total + o", splits * total - 1, "I")]


def _reach3d(size, pad, kernel, dil, what):
    """dgrad3d_reach (conv3d_dgrad.cu) for one axis: a = x + pad - tap*dil over x < size, tap < kernel."""
    return [(f"{what}: x + pad", size - 1 + pad, "int"), (f"{what}: tap*dil", (kernel - 1) * dil, "int")]


def model_conv3d_dgrad_v1(s, lc):
    ZPQ, DHW, TRS, Kg, Cg = s.Z * s.P * s.Q, s.D * s.H * s.W, s.T * s.R * s.S, s.K_per_group, s.C_per_group
    return [("HW, DHW", DHW, "I"), ("total N*C*DHW", s.N * s.C * DHW, "I"), ("thread index", _last_thread(lc), "I"),
            ("C*DHW", s.C * DHW, "I"), ("PQ, ZPQ", ZPQ, "I"), ("TRS", TRS, "int"),
            ("(n*K + g*Kg)*ZPQ", ((s.N - 1) * s.K + (s.groups - 1) * Kg) * ZPQ, "I"),
            ("(g*Kg*Cg + cg)*TRS", ((s.groups - 1) * Kg * Cg + Cg - 1) * TRS, "I"),
            ("pos = (oz*P + op)*Q + oq", ZPQ - 1, "I"), ("tap = (t*R + r)*S + s", TRS - 1, "int"),
            ("k*ZPQ + pos", Kg * ZPQ - 1, "I"), ("k*Cg*TRS + tap", Kg * Cg * TRS - 1, "I"),
            ("dy offset", s.N * s.K * ZPQ - 1, "I"), ("w offset", s.K * Cg * TRS - 1, "I"),
            ("dx offset o", s.N * s.C * DHW - 1, "I")] + (
        _reach3d(s.D, s.pad_front, s.T, s.dil_d, "d") + _reach3d(s.H, s.pad_top, s.R, s.dil_h, "h")
        + _reach3d(s.W, s.pad_left, s.S, s.dil_w, "w"))


def model_conv3d_dgrad_v2(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    counts = [-(-n // st) for n, st in zip(s.in_size, s.strides)]
    rows_max = s.N * math.prod(counts)
    m_blocks, n_blocks = -(-rows_max // bm), -(-s.C_per_group // bn)
    KD = s.K_per_group * s.T * s.R * s.S          # the largest phase's taps at most
    ZPQ, DHW, TRS, Kg, Cg = s.Z * s.P * s.Q, s.D * s.H * s.W, s.T * s.R * s.S, s.K_per_group, s.C_per_group
    e = [("phases = min(sd, D)*min(sh, H)*min(sw, W)", math.prod(min(st, n) for st, n in zip(s.strides, s.in_size)),
          "int"),
         ("D + stride_d - 1", s.D + s.stride_d - 1, "int"), ("H + stride_h - 1", s.H + s.stride_h - 1, "int"),
         ("W + stride_w - 1", s.W + s.stride_w - 1, "int"),
         ("rows_max = N*Da*Ha*Wa", rows_max, "I"), ("m_blocks: (rows_max - 1)/BM + 1", rows_max, "I"),
         ("n_blocks: Cg + BN - 1", Cg + bn - 1, "int"), ("blockIdx.x", lc.grid[0] - 1, "I"),
         ("hw_count, plane, M = N*plane", rows_max, "I"),
         ("m0 = bm*BM", (m_blocks - 1) * bm, "I"), ("am = m0 + a_m, mb + i", m_blocks * bm - 1, "I"),
         ("KD = Kg*nt*nr*ns", KD, "int"), ("tap walk l + step.l, ... + 1", 2 * max(s.T, s.R, s.S), "int"),
         ("k0 + a_k + e, k0 + b_k", -(-KD // bk) * bk - 1 + bk, "int"),
         ("TRS, wtap = (t*R + r)*S + s", TRS, "int"), ("ZPQ", ZPQ, "I"), ("HW, DHW", DHW, "I"),
         ("(img*K + g*Kg)*ZPQ", ((s.N - 1) * s.K + (s.groups - 1) * Kg) * ZPQ, "I"),
         ("k*ZPQ + (zz*P + pp)*Q + qq", Kg * ZPQ - 1, "I"),
         ("g*Kg*Cg*TRS", (s.groups - 1) * Kg * Cg * TRS, "I"), ("(k*Cg + c)*TRS + wtap", Kg * Cg * TRS - 1, "I"),
         ("c = n0 + b_n + e*(NT/BK)", n_blocks * bn - 1, "int"), ("cc = g*Cg + c", s.C - 1, "int"),
         ("d, h, w = phase + u*stride", max(s.D, s.H, s.W) - 1, "int"),
         ("(img*C + cc)*DHW + (d*H + h)*W + w", s.N * s.C * DHW - 1, "I")]
    e += _dgrad_phase_axis(s.D, s.stride_d, s.pad_front, s.T, s.dil_d, "d")
    e += _dgrad_phase_axis(s.H, s.stride_h, s.pad_top, s.R, s.dil_h, "h")
    e += _dgrad_phase_axis(s.W, s.stride_w, s.pad_left, s.S, s.dil_w, "w")
    return e


def model_conv3d_wgrad_v1(s, lc):
    bm, bn, bk = _tile_args(lc)[:3]
    k_chunk, splits = int(lc.args[1]), lc.grid[1]
    ZPQ, DHW, TRS = s.Z * s.P * s.Q, s.D * s.H * s.W, s.T * s.R * s.S
    NN, J, Kg = s.C_per_group * TRS, s.N * ZPQ, s.K_per_group
    m_blocks, n_blocks = -(-Kg // bm), -(-NN // bn)
    # split z walks j from z*k_chunk in whole BK steps up to min(J, (z+1)*k_chunk): the last j it forms
    j_last = max(z * k_chunk + -(-(min(J, (z + 1) * k_chunk) - z * k_chunk) // bk) * bk - 1 for z in range(splits))
    e = [("RS, TRS", TRS, "int"), ("NN = Cg*TRS", NN, "int"), ("PQ, ZPQ", ZPQ, "I"), ("HW, DHW", DHW, "I"),
         ("J = N*ZPQ", J, "I"), ("n_blocks: NN + BN - 1", NN + bn - 1, "int"),
         ("m_blocks: Kg + BM - 1", Kg + bm - 1, "int"), ("blockIdx.x", lc.grid[0] - 1, "I"),
         ("m = m0 + ...", m_blocks * bm - 1, "int"), ("n = n0 + ...", n_blocks * bn - 1, "int"),
         ("j_begin = blockIdx.y*k_chunk", (splits - 1) * k_chunk, "I"), ("j_begin + k_chunk", splits * k_chunk, "I"),
         ("j = k0 + t_k", j_last, "I"), ("k_steps*BK", k_chunk + bk - 1, "I"),
         ("g*Kg*ZPQ + (img*K + m)*ZPQ + zpq", s.N * s.K * ZPQ - 1, "I"),
         ("g*Cg*DHW + (img*C + c)*DHW + (dd*H + hh)*W + ww", s.N * s.C * DHW - 1, "I"),
         ("total = K*NN", s.K * NN, "I"), ("o = (g*Kg + m)*NN + n", s.K * NN - 1, "I")]
    if splits > 1:
        e.append(("blockIdx.y*total (workspace slice)", (splits - 1) * s.K * NN, "I"))
    return e + _windows3d(s)


def model_conv3d_wgrad_splitk_reduce_v1(s, lc):
    splits, total = int(lc.args[1]), s.K * s.C_per_group * s.T * s.R * s.S
    return [("total K*Cg*T*R*S", total, "I"), ("thread index", _last_thread(lc), "I"),
            ("s*total + o", splits * total - 1, "I")]


MODELS.update({"conv3d_direct_v1": model_conv3d_direct_v1, "conv3d_implicit_gemm_v1": model_conv3d_implicit_gemm_v1,
               "conv3d_splitk_reduce_v1": model_conv3d_splitk_reduce_v1,
               "conv3d_dgrad_v1": model_conv3d_dgrad_v1, "conv3d_dgrad_v2": model_conv3d_dgrad_v2,
               "conv3d_wgrad_v1": model_conv3d_wgrad_v1,
               "conv3d_wgrad_splitk_reduce_v1": model_conv3d_wgrad_splitk_reduce_v1})

CONV3D_EXTREMES = {
    "volume-int": lambda: conv((8, 64, 128, 128, 128), (64, 64, 3, 3, 3), padding=1),        # 2^30 elements
    "volume-64bit": lambda: conv((16, 64, 128, 128, 128), (64, 64, 3, 3, 3), padding=1),     # 2^31 elements
    # the one-thread-per-element kernels' last thread index near 2^31 - 1 (the padded extent plus a stride must
    # stay below it)
    "volume-int-edge": lambda: conv((1, 1, INT32_MAX - 2, 1, 1), (1, 1, 1, 1, 1), bias=True),
    "long-depth-strided-padded": lambda: conv((1, 1, 2**31 - 13, 1, 1), (1, 1, 3, 1, 1), stride=(2, 1, 1),
                                              padding=((1, 8), (0, 0), (0, 0))),
    "long-depth-dilated": lambda: conv((1, 1, 2**31 - 20, 1, 2), (1, 1, 2, 1, 1), dilation=(2**30, 1, 1),
                                       padding=((0, 8), (0, 0), (0, 0)), stride=(4, 1, 1)),
    "long-column-64bit": lambda: conv((3, 1, 1, 1, 2**30), (2, 1, 1, 1, 3), padding=1),
    "many-channels": lambda: conv((1, 2**20, 1, 1, 1), (2**10, 2**20, 1, 1, 1)),
    "depthwise-64bit": lambda: conv((4, 2**12, 32, 64, 64), (2**13, 1, 3, 3, 3), groups=2**12, padding=1),
    "huge-filter": lambda: conv((1, 1, 1, 1, 1), (2, 1, 2**10, 2**10, 2**9 - 1),
                                padding=((2**9, 2**9), (2**9, 2**9), (2**8, 2**8))),
    "big-batch-64bit": lambda: conv((2**22, 2, 4, 8, 8), (4, 2, 3, 3, 3), padding=1, stride=2),
    "stride-beyond-extent": lambda: conv((1, 2, 3, 5, 2**26), (2, 2, 1, 1, 1), stride=(2**20, 7, 2**29)),
    # every buffer below 2^31 elements but the forward's split-K workspace (4 splits of 2^30 outputs)
    "fwd-split-k-workspace-64bit": lambda: conv((2, 8, 64, 64, 64), (2**11, 8, 3, 3, 3), padding=1),
    # every buffer below 2^31 elements but the weight gradient's split-K workspace (16 splits of 2.3e8)
    "split-k-workspace-64bit": lambda: conv((8, 2**11, 7, 7, 7), (2**12, 2**11, 3, 3, 3), padding=1),
}


@pytest.mark.parametrize("op", ["conv", "conv_input", "conv_weight"])
@pytest.mark.parametrize("name", list(CONV3D_EXTREMES))
def test_conv3d_offsets_fit_the_index_type_for_the_largest_shapes(name, op):
    spec = CONV3D_EXTREMES[name]()
    spec = spec if op == "conv" else as_grad(spec, op)
    plans = _plans(spec)
    assert plans, f"{name}: no kernel accepts it; pick a shape the launcher runs"
    assert all(lc.kernel.startswith("conv3d_") for p in plans for lc in p.launches)
    assert overflows(spec) == []


def test_conv3d_index_type_switches_above_2_pow_31_elements():
    # 1x1x1: no im2col workspace beyond the input, so the volume alone decides (2^30 vs 2^31 elements)
    small = conv((8, 64, 128, 128, 128), (64, 64, 1, 1, 1))
    big = conv((16, 64, 128, 128, 128), (64, 64, 1, 1, 1))
    assert L.index_type(small) == "int" and L.index_type(big) == "long long"
    for spec in (big, as_grad(big, "conv_input"), as_grad(big, "conv_weight")):
        assert all(_itype(lc) == "long long" for p in _plans(spec) for lc in p.launches)
    for spec in (small, as_grad(small, "conv_input"), as_grad(small, "conv_weight")):
        # below 2^31 every launch is the int instantiation, but for a split-K workspace that passes it
        for p in _plans(spec):
            wide = max(math.prod(b.shape) for b in p.buffers) > INT32_MAX
            assert all(_itype(lc) == ("long long" if wide else "int") for lc in p.launches), p.launches[0].kernel
    wspec = as_grad(CONV3D_EXTREMES["split-k-workspace-64bit"](), "conv_weight")
    wgrad = _cuda.family("conv3d_wgrad")
    assert L.index_type(wspec) == "int"
    assert all(", long long" in lc.kernel for lc in wgrad.plan(wspec, "3d-64x64-k16").launches)
    assert all(", int" in lc.kernel for lc in wgrad.plan(wspec, "3d-64x64").launches)
    fspec = CONV3D_EXTREMES["fwd-split-k-workspace-64bit"]()
    igemm = _cuda.family("conv3d_implicit_gemm")
    assert L.index_type(fspec) == "int"
    assert all(", long long" in lc.kernel for lc in igemm.plan(fspec, "3d-64x64-k4").launches)
    assert all(", int" in lc.kernel for lc in igemm.plan(fspec, "3d-64x64").launches)


def test_conv3d_padded_extents_past_32bit_coordinates_are_refused():
    spec = conv((1, 1, 2**31 - 3, 1, 1), (1, 1, 3, 1, 1), stride=(2, 1, 1), padding=((1, 8), (0, 0), (0, 0)))
    for s in (spec, as_grad(spec, "conv_input"), as_grad(spec, "conv_weight")):
        assert _plans(s) == []
        assert any("32-bit coordinates" in r for name in ("conv3d_implicit_gemm", "conv3d_direct", "conv3d_dgrad",
                                                          "conv3d_wgrad") for r in family_reasons(s, name))


@st.composite
def huge_conv3d_specs(draw):
    """3-D convolutions with log-uniform extents (padding large enough for any filter, so no empty output), as
    a conv, conv_input or conv_weight spec."""
    g = draw(st.sampled_from([1, 1, 2, 4]))
    C, K = g * draw(extent(bits=18)), g * draw(extent(bits=18))
    ks = tuple(draw(st.integers(1, 5)) for _ in range(3))
    dil = tuple(draw(extent(bits=6)) for _ in range(3))
    pads = tuple((draw(st.integers(0, 4)) + (k - 1) * d, draw(st.integers(0, 4))) for k, d in zip(ks, dil))
    shape = (draw(extent(bits=22)), C) + tuple(draw(extent(bits=31)) for _ in range(3))
    assume(math.prod(shape) < 2**44 and K * (C // g) * math.prod(ks) < 2**40
           and all(n + lo < 2**31 for n, (lo, _) in zip(shape[2:], pads)))
    spec = conv(shape, (K, C // g) + ks, bias=draw(st.booleans()), groups=g, dilation=dil, padding=pads,
                stride=tuple(draw(extent(bits=8)) for _ in range(3)))
    op = draw(st.sampled_from(["conv", "conv_input", "conv_weight"]))
    return spec if op == "conv" else as_grad(spec, op)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(huge_conv3d_specs())
def test_conv3d_offsets_fit_the_index_type_for_random_huge_shapes(spec):
    assume(_plans(spec))
    assert overflows(spec) == []


# ---------------------------------------------------------------------------------------------------
# The real source, run: the kernels' last blocks past 2^31 elements, every signed overflow trapped
# ---------------------------------------------------------------------------------------------------
# The transcriptions above say what the kernels should compute; this runs what they do compute. Each kernel
# file is built for the emulator with g++'s -fsanitize=signed-integer-overflow (EmuModule(check_overflow=True):
# a signed int or long long operation whose result does not fit fails the launch, naming file:line:column,
# its operands and its type). Every plan the families make for a problem past 2^31 elements (or at int's
# edge) runs its launches with the real grid, block and parameters, but only the LAST_BLOCKS last blocks
# of each grid (they hold the largest indices) over buffers of the full size that are reserved, not backed
# (fastconv.emu.Reserved: only the pages those blocks touch are ever backed; an access past a buffer's end
# or before its start faults on a PROT_NONE page). A dropped (I) cast (an int product where the kernel
# needs the index type) wraps there, and the test names the expression. The problems keep each block's
# reduction short (a few thousand taps): the emulator runs them for real.
LAST_BLOCKS = 1

#: problem -> spec; each past 2^31 elements in some buffer (input, output, weight, workspace), or at int's edge
#: (a few: those launch the int instantiations, which must not overflow either). Every instantiation they
#: launch is built (about 10 s of g++ on 2 cores, cold): the int edges of the implicit-GEMM and depthwise
#: families (big-batch-1x1-int, depthwise-many-planes) are left to the transcriptions above for that reason
OVERFLOW_CASES = {
    **{n: EXTREMES[n] for n in (
        "long-row-int", "long-row-3tap", "long-row-64bit", "long-row-strided-padded", "big-batch-64bit",
        "depthwise-64bit", "tall-strided-dilated",
        "pool-big-batch-64bit", "adaptive-avg-64bit", "adaptive-upsample", "pool-global-many-planes",
        "pool-per-side-long-row", "pool-grad-64bit", "pool-grad-adaptive-avg-64bit", "pool-grad-adaptive-upsample",
        "pool-grad-int-edge", "unpool3d-64bit", "pool3d-volume-64bit", "pool3d-adaptive-64bit",
        "pool3d-grad-volume-64bit", "pool3d-grad-adaptive-upsample", "unfold-3d-64bit", "fold-3d-64bit",
        "unfold-long-row-padded", "fold-long-row-padded", "unfold-int-edge")},
    **{f"boundary-{n}": BOUNDARY[n][1] for n in (
        "output-channels", "im2col-workspace", "pool-input", "pool-output", "pool-grad-input", "pool3d-input")},
    # the weight past 2^31: K * Cg*R*S (forward: a short reduction over Cg*R*S, long over K)
    "weight-64bit": lambda: conv((1, 2049, 1, 1), (2**20, 2049, 1, 1)),
    "weight-grouped-64bit": lambda: conv((1, 2050, 1, 1), (2**21, 1025, 1, 1), groups=2),
    "grouped-batch-64bit": lambda: conv((2**24, 4, 8, 8), (4, 2, 3, 3), groups=2, padding=1),
    # a plane past 2^31 elements: the row offset h*W in the plane (the pair variant's aligned loads too)
    "pool-pair-long-plane-64bit": lambda: pool("max", (1, 1, 4, 2**30), kernel_size=2, stride=2),
    "pool-global-max-64bit": lambda: pool("max", (2**30, 1, 2, 2), kernel_size=2, return_indices=True),
    "pool-grad-max-64bit": lambda: pool_grad("max", (2**22, 16, 32, 32), kernel_size=3, stride=2, padding=1),
    "unpool-small-planes-64bit": lambda: unpool((2**16, 2**10, 4, 4), kernel_size=2),
    "pool3d-global-max-64bit": lambda: pool("max", (2**29, 1, 2, 2, 2), kernel_size=2, return_indices=True),
    "pool3d-global-avg-64bit": lambda: pool("avg", (2**29, 1, 2, 2, 2), kernel_size=2),
    "pool3d-grad-avg-64bit": lambda: pool_grad("avg", (16, 64, 128, 128, 128), kernel_size=3, stride=2, padding=1),
    # the data gradient reduces over K*R*S, the weight gradient over N*P*Q: their own big-weight problems
    **{f"conv_input:{n}": (lambda n=n: as_grad(GRAD_EXTREMES[n](), "conv_input")) for n in (
        "long-row-64bit", "long-row-strided-padded", "big-batch-64bit", "depthwise-64bit", "tall-strided-dilated")},
    "conv_input:weight-64bit": lambda: as_grad(conv((1, 2**20, 1, 1), (2049, 2**20, 1, 1)), "conv_input"),
    **{f"conv_weight:{n}": (lambda n=n: as_grad(GRAD_EXTREMES[n](), "conv_weight")) for n in (
        "huge-filter", "split-k-workspace-64bit")},
    "conv_weight:weight-64bit": lambda: as_grad(conv((1, 2049, 1, 1), (2**20, 2049, 1, 1)), "conv_weight"),
    "conv_weight:channels-64bit": lambda: as_grad(conv((1, 2**21, 32, 32), (2, 2**21, 1, 1)), "conv_weight"),
    "conv_weight:grouped-channels-64bit": lambda: as_grad(conv((1, 2**21, 32, 32), (4, 2**20, 1, 1), groups=2),
                                                          "conv_weight"),
    # 3-D convolutions
    **{f"3d:{n}": CONV3D_EXTREMES[n] for n in ("volume-64bit", "big-batch-64bit", "depthwise-64bit",
                                               "long-column-64bit")},
    "3d:weight-64bit": lambda: conv((1, 2049, 1, 1, 1), (2**20, 2049, 1, 1, 1)),
    **{f"3d-conv_input:{n}": (lambda n=n: as_grad(CONV3D_EXTREMES[n](), "conv_input")) for n in (
        "volume-64bit", "big-batch-64bit", "depthwise-64bit")},
    "3d-conv_input:weight-64bit": lambda: as_grad(conv((1, 2**20, 1, 1, 1), (2049, 2**20, 1, 1, 1)), "conv_input"),
    **{f"3d-conv_weight:{n}": (lambda n=n: as_grad(CONV3D_EXTREMES[n](), "conv_weight")) for n in (
        "huge-filter", "split-k-workspace-64bit")},
    "3d-conv_weight:weight-64bit": lambda: as_grad(conv((1, 2049, 1, 1, 1), (2**20, 2049, 1, 1, 1)), "conv_weight"),
    "3d-conv_weight:channels-64bit": lambda: as_grad(conv((1, 2**19, 16, 16, 16), (2, 2**19, 1, 1, 1)),
                                                     "conv_weight"),
}

_overflow_plans = {}
_checked_modules = {}


def overflow_plans(name):
    """The spec of OVERFLOW_CASES[name] and every plan the families make for it (memoized)."""
    if name not in _overflow_plans:
        spec = OVERFLOW_CASES[name]()
        _overflow_plans[name] = (spec, _plans(spec))
    return _overflow_plans[name]


def checked_module(fname):
    """kernels/<fname> built overflow-checked, with every instantiation some case launches (one build per
    file; the emulator's disk cache keeps it)."""
    if fname not in _checked_modules:
        from fastconv.emu import EmuModule
        exprs = sorted({lc.kernel for n in OVERFLOW_CASES for p in overflow_plans(n)[1] for lc in p.launches
                        if lc.file == fname})
        kdir = L.kernels_dir()
        _checked_modules[fname] = EmuModule(path=f"{kdir}/{fname}", name_expressions=exprs, include_dirs=(kdir,),
                                            check_overflow=True)
    return _checked_modules[fname]


def run_last_blocks(spec, plan):
    """Run every launch of ``plan`` on its LAST_BLOCKS last blocks, over reserved buffers of full size; the
    first launch's EmuError as a string (None when every launch ran). Returned, not raised: the buffers are
    unmapped on the way out, and a traceback whose frames hold them would be printed from freed memory."""
    from fastconv.emu import EmuError, Reserved
    shapes = {n: (s, "int64" if spec.is_index_operand(n) else spec.dtype)
              for n, s in zip(spec.ARRAYS, spec.operands()) if s is not None}
    shapes.update({b.name: (b.shape, b.dtype) for b in plan.buffers})
    held, error = {}, None
    try:
        for n, (shape, dtype) in shapes.items():
            held[n] = Reserved(shape, dtype)
        for lc in plan.launches:
            fn = checked_module(lc.file).get_function(lc.kernel)
            n_blocks = math.prod(lc.grid)
            # guard=False: the reserved buffers end at their own PROT_NONE pages (a guarded copy would touch
            # every page); a timeout, so that a case whose blocks do more work than meant fails instead of hanging
            try:
                fn(lc.grid, lc.block, tuple(held[a.name].array if isinstance(a, L.Ref) else a for a in lc.args),
                   shared_mem=lc.shared_mem, guard=False, timeout=120,
                   blocks=(max(0, n_blocks - LAST_BLOCKS), n_blocks))
            except EmuError as e:
                error = f"{e} (grid {lc.grid}, block {lc.block}, its last {LAST_BLOCKS} blocks run)"
                break
    finally:
        for r in held.values():
            r.close()
    return error


def _emu_or_skip():
    from fastconv import emu
    ok, why = emu.available()
    if not ok:
        pytest.skip(f"the CUDA emulator cannot run here: {why}")


@pytest.mark.parametrize("name", list(OVERFLOW_CASES))
def test_last_blocks_past_2_pow_31_compute_no_signed_overflow(name):
    _emu_or_skip()
    spec, plans = overflow_plans(name)
    assert plans, f"{name}: no kernel accepts it; pick a shape the launcher runs"
    assert any(_itype(lc) == "long long" for p in plans for lc in p.launches) or spec.max_elements() > 0.99 * INT32_MAX, \
        f"{name}: neither past 2^31 elements nor at int's edge"
    errors = [e for e in (run_last_blocks(spec, plan) for plan in plans) if e]
    assert not errors, f"{name}: " + "; ".join(errors)


def test_every_kernel_runs_overflow_checked_in_64_bits():
    # a new kernel (or family) fails here until OVERFLOW_CASES has a problem that launches its long long
    # instantiation; the cases' plans are the families' own
    launched = {lc.kernel.split("<")[0] for n in OVERFLOW_CASES for p in overflow_plans(n)[1] for lc in p.launches
                if _itype(lc) == "long long"}
    kernels = {k.name for fam in _cuda.FAMILIES for k in fam.KERNELS}
    assert sorted(kernels - launched) == [], "kernels no OVERFLOW_CASES problem launches in 64 bits"
