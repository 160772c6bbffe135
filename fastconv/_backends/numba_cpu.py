"""The ``numba`` backend: CPU kernels compiled by Numba, the default for NumPy input.

Implementations, in priority order (kernels in ``_numba_conv`` / ``_numba_pool``, indexed by
``_numba_kernels``); each runs exactly the kernels its name says, and a problem it cannot take exactly is
one of its reasons, never a hand-over to another kernel:
- ``numba:conv:direct/depthwise-flat``: C/groups == 1 with a column stride of 2 (row stride 1 or 2), an
  even input width and an output row within one column phase (MobileNet's stride-2 3x3 layers):
  ``conv2d_depthwise_flat`` (as the phase kernel below, but each plane's two column phases are one flat
  deinterleave of the whole plane, no copy per row, kept in one copy per distinct tap column shift with
  the columns only wrapped reads meet zeroed; the phase kernel's bit-for-bit sums). Padded zeros are
  multiplied in (``zero_fills_padding``); same bound on the padded region as the phase kernel.
- ``numba:conv:direct/depthwise-phase``: C/groups == 1 (depthwise, any channel multiplier):
  ``conv2d_depthwise_phase`` (several images of a channel per task, within ``PHASE_BATCH`` values: their
  planes zero-padded and split into stride phases once, every tap one long axpy over all of them). It multiplies padded zeros in (``zero_fills_padding``): dispatch does not run it for a padded
  problem whose weight holds Inf or NaN; nor where its padded plane would be mostly unused (see
  Workspaces below).
- ``numba:conv:direct/depthwise``: C/groups == 1: ``conv2d_depthwise`` (taps clipped to the input, exact for
  every weight).
- ``numba:conv:direct/planes``: every 1-D/2-D conv whose padded planes are not mostly unused (the phase
  kernel's bound below): ``conv2d_planes_chunks`` (``_numba_planes``: per image, group and run of output
  channels, the input planes zero-padded and split into stride phases once, then four output channels at
  a time take every tap as one long loop over a tile of the flat output plane), its items in chunks on
  :func:`_on_workers` (static ``conv2d_planes`` or claimed chunks), a small problem on its serial twin.
  For few channels and small planes (LeNet's convs, 4.5x faster than ``blocked`` at N=1, 2.6x at N=64 on
  this project's 2-core machine). It multiplies padded zeros in (``zero_fills_padding``).
- ``numba:conv:direct/blocked``: every conv: ``conv2d_direct`` (blocked over output channels, vectorised
  over output columns), exact for every weight.
- ``numba:conv:im2col/pointwise``: a 1x1 unstrided unpadded conv whose image fills a tile: the input is
  the column matrix, BLAS (NumPy's ``matmul``, so no SciPy) computes w[group] @ x[:, group] straight into
  the output, no workspace.
- ``numba:conv:im2col/packed``: every other conv: per tile of images and per group, ``im2col_pack`` builds
  the column matrix col[Cg*R*S, images*P*Q] in Numba, then BLAS computes w[group] @ col straight into the
  output (one image per tile) or into a staging buffer scattered into it (several). A tile holds as many
  whole images as fit in ``TILE_BYTES`` (4 MiB), at least one, so the workspace is one tile's column
  matrix (plus, with several images, their output for one group), reused across the batch, never the
  whole batch's; one image whose column matrix passes ``IMAGE_COL_BYTES`` (2 MiB) is built in bands of
  output rows (``im2col_pack_rows``). The column matrix holds explicit zeros in the padding
  (``zero_fills_padding``).
- ``numba:conv:winograd/f4x4``: a 3x3, stride-1, undilated, ungrouped 1-D/2-D conv (each other shape is a
  reason): Winograd F(4x4, 3x3) (``_numba_winograd``). ``winograd_filter`` makes U[36, K, C] = G w G^T;
  ``winograd_input`` makes V[36, C, T] = B^T d B (zeros in the padding), BLAS computes the 36 GEMMs
  M[j] = U[j] @ V[j], and ``winograd_output`` writes A^T M A + b (only outputs inside P x Q). Two plans
  (``winograd_plan``): in chunks of whole 4x4-tile rows (several images or a band of one, V and M within
  ``WINOGRAD_CHUNK_BYTES``; U whole, made once per call), or, where U is larger than a chunk's V and M
  (small images, many channels: ``_winograd_whole_batch``), V for the whole batch and then U, M and the
  outputs per block of output channels, so U is never whole. A tile whose result is not finite (an Inf/NaN input or weight, which the transforms
  spread over the tile, or an overflow) is summed again directly with the taps clipped, so the
  definition's non-finite pattern holds for every weight (no ``zero_fills_padding``). Its error bound is
  wider than direct summation's (``fastconv.testing.winograd_tolerance``, derived there). Workspace: U and
  one chunk's V and M per GEMM worker (or the batch's V and one block's U and M per worker), per-thread tile
  rows; capped like im2col.
- ``numba:conv:winograd/f4x4-phases``: the same for a dilated conv (a dilation at most the output's size
  along each dilated axis): its d_h x d_w dilation phases (``_dilation_phases``) gathered into one zero
  buffer, stacked along the batch, as one undilated ``winograd/f4x4`` problem, whose outputs are scattered
  back. The buffer's zeros stand for the padding and meet the weight (``zero_fills_padding``). Workspace:
  that problem's, plus the stacked input and output.

Workspaces (every buffer an implementation allocates besides its output; ``NumbaImpl.workspace(spec)``
names each with its bytes, from the same plan functions the run allocates by). The bound:
- direct kernels: per thread a few output rows (conv: KB rows of Q; the input gradient: CB rows of W), the
  weight gradient's KBW x (window) x Q lane accumulators, a pool's output row or a gradient's float64 plane:
  sizes of the output, the operands and the window, never of the padding, the stride or the dilation;
- the phase-split depthwise kernel: per thread one task's padded, phase-split planes (the region its output
  reads, for up to ``PHASE_BATCH`` values of images) and one accumulator (the flat kernel: its copies of
  the column phases, within ``PHASE_BATCH`` values too); the planes kernel: per thread one
  image's group of such planes and KB4 x LT accumulators; both refuse (a reason) a plane over
  ``PHASE_SLACK`` x (input plane + output plane) + ``PHASE_MIN`` values, i.e. wherever padding, stride or
  dilation make most of it unused;
- every im2col variant: one tile (``TILE_BYTES``), a band of one image (``IMAGE_COL_BYTES``, ``BAND_BYTES``)
  or, in 3-D, a band of output slices, at least one output row (3-D: slice); it refuses (a reason) a
  workspace over ``WORKSPACE_CAP`` (256 MiB), so ``algo="auto"`` runs a direct kernel and an explicit
  ``algo="im2col"`` is a ValueError listing the reason.
Python-side workspaces are allocated by :func:`workspace`, and in-kernel scratch of ``PROBE_BYTES``
(16 MiB) or more is tried first by :func:`reserve`: what cannot be had is a ``MemoryError`` naming its
bytes and purpose before any kernel runs (never a Numba ``SystemError``).
- pools: ``max`` (indices, NaN rule), ``avg`` (every divisor rule, float64 accumulation in the oracle's
  tap order), ``adaptive_max``, ``adaptive_avg``; each parallel over (n, c) planes, one Impl each; before
  the avg ones, ``numba:avg_pool:direct/global`` and ``numba:adaptive_avg_pool:direct/global`` (a 1x1
  output: ``global_avg_pool2d``, one float64 sum per plane in the same order, eight planes side by side;
  no workspace); before the general max and avg ones, ``numba:max_pool:direct/2x2`` and
  ``numba:avg_pool:direct/2x2`` (kernel 2, stride 2, no padding, every window whole: ``max_pool2x2`` and
  ``avg_pool2x2``, each output's scan or float64 sum written out, chunks of output rows on the workers;
  the general kernels' results bit for bit; no workspace).

Gradients (kernels in ``_numba_grad``); every one sums each output's terms in a fixed order, no atomics,
so results are bitwise reproducible run to run:
- ``numba:conv_input:direct/gather`` (the input gradient and conv_transpose): ``conv2d_input_direct``, one
  iteration per (n, group, block of CB input channels) gathers the dy*w terms reaching each dx row; taps
  that would read padding are never formed (exact for every weight).
- ``numba:conv_input:im2col/col2im``: per tile (whole images side by side, as the forward's tiles, or a
  band of one image's output rows, ``BAND_BYTES``) and group, BLAS computes col = w[group]^T @ dy, then
  ``col2im_add`` adds each entry at the position its tap reads, dropping taps in the padding: exact for
  every weight (no ``zero_fills_padding``). The bias (C,) is dx's starting value. A pointwise conv (1x1,
  stride 1, no padding) whose small images leave the tiles too few for the workers (the forward's
  ``_whole_batch`` rule) runs the whole batch instead: dy side by side per group, one GEMM per group in
  blocks of the result (``_gemm_blocks``), then each image's dx = bias (or 0) + its columns: col2im's sums.
- ``numba:conv_input:winograd/f4x4``: an unstrided input gradient (and transposed conv) whose flipped
  forward conv (``ConvInputGradSpec.flipped_forward``: dy convolved with the weight transposed and its taps
  reversed, padded by the dilated window less one less the forward padding) the forward
  ``winograd/f4x4`` takes (3x3, undilated, ungrouped; each other shape is a reason): that forward, its
  kernels reading the flipped taps from w as it is (``flip``). Exact for every weight (the forward's direct re-sum of non-finite tiles clips the
  taps to dy); its error bound is the forward's (``fastconv.testing.grad_tolerance``).
  ``numba:conv_input:winograd/f4x4-phases``: the same for a dilated one, by the forward ``f4x4-phases``
  (``zero_fills_padding``; an unpadded problem whose flipped conv is padded is a reason).
- ``numba:conv_input:direct/depthwise-flipped``: an unstrided input gradient whose flipped forward conv
  (``ConvInputGradSpec.flipped_forward``) is depthwise (one output channel per group: a depthwise conv with
  channel multiplier 1) as that forward, by ``conv2d_depthwise_phase`` on a flipped copy of w
  (``zero_fills_padding``; an unpadded problem whose flipped conv is padded is a reason).
- ``numba:conv_weight:direct/depthwise-cblock`` (``conv2d_depthwise_weight_cblock``): depthwise, channel
  multiplier 1, any stride or dilation: CBLK channels side by side with the channel innermost, so each
  (image, output row, tap) is one multiply-add over a contiguous run and a block's 16 sums close at once;
  its padding zeros meet dy, so a NaN result is computed again by the clipped kernel.
- ``numba:conv_input:direct/depthwise`` and ``numba:conv_weight:direct/depthwise`` (kernels in
  ``_numba_depthwise_grad``): C/groups == 1 (any channel multiplier): per plane (dx) or output channel
  (dw), every tap one pass over the plane's rows with flat unsigned indices, several planes per parallel
  chunk (the general kernels' blocks hold one channel there and spent most of their time on row
  overheads); taps clipped to the input (exact for every weight and dy). The weight gradient first runs
  ``conv2d_depthwise_weight_phase`` where the phase-split buffer is not mostly padding: the forward phase
  kernel's padded planes of several images and dy's planes at the same row stride, each tap one long
  update of LW lanes; its zeros meet both operands, so a NaN result is computed again by the clipped
  kernel (exact for every operand either way).
- ``numba:conv_weight:winograd/f4x4``: a 3x3, stride-1, undilated, ungrouped weight gradient (each other
  shape is a reason, the forward's): Winograd F(3x3, 4x4) (``_numba_winograd_weight``), the forward's
  transforms transposed: per chunk of dy's 4x4 tile rows V = B^T x B (the forward's input transform) and
  D = A dy A^T, M[j] (+)= D[j] @ V[j]^T by BLAS for the 36 tile positions, then dw = G^T M G; a (k, c) whose
  M or result is not finite is summed again directly (exact for every operand). Its error bound:
  ``fastconv.testing.winograd_weight_tolerance``. Workspace: one chunk's V and D
  (``WINOGRAD_WEIGHT_CHUNK_BYTES``), M, a GEMM result per worker. ``numba:conv_weight:winograd/f4x4-phases``:
  a dilated one as the undilated one over its dilation phases (x's phase images, dy at each phase's
  outputs), the re-sum on the dilated problem: exact for every operand. Workspace: that problem's, plus the
  phase images and the placed dy.
- ``numba:conv_weight:direct/lanes``: ``conv2d_weight_direct``, one iteration per (group, block of KBW
  output channels, input channel); taps clipped to the input (exact for every dy).
- ``numba:conv_weight:im2col/pack-gemm``: per tile of images and group, the forward's ``im2col_pack``
  builds the column matrix, BLAS adds dy[tile, group] @ col^T to dw (tiles in batch order). The column
  matrix holds zeros in the padding (``zero_fills_padding``: dispatch does not run it for a padded problem
  whose dy holds Inf or NaN). A pointwise conv whose small images leave the tiles too few for the workers
  (the forward's ``_whole_batch`` rule) runs the whole batch instead: dy and x side by side per group, then
  dw[group] = dy_all @ x_all^T as one GEMM over every position, in blocks of dw (``_gemm_blocks``).
- ``max_pool_backward`` and ``adaptive_max_pool_backward`` (dy added at its index, row-major, float64),
  ``avg_pool_backward`` (the forward's divisors, taps in the oracle's order, float64),
  ``adaptive_avg_pool_backward``, ``max_unpool`` (the last write of a repeated index wins): parallel over
  (n, c) planes, the same sums as the oracle's (bitwise equal). Before them, where no two windows share
  an input position (stride >= the dilated window along each axis, disjoint adaptive windows, a 1x1
  adaptive avg output), ``.../direct/disjoint`` (``global`` for the adaptive avg) write each position's
  one term (0.0 + dy, or 0.0 + dy / divisor, in float64, rounded) or 0 straight into dx: the same values,
  no float64 plane. The max one relies on every index lying in its window (``fastconv.grad`` checks it).
  Plane kernels run in ``_plane_chunks`` chunks: a few per thread, none under CHUNK_MIN_BYTES.
3-D problems (5-D arrays; kernels in ``_numba_3d`` / ``_numba_3d_pool``), one Impl per op and algo, each
with ``spatial_dims=(3,)`` and "3d" in its name (the 1-D/2-D Impls above never see a 3-D spec, nor these a
2-D one):
- ``numba:conv:direct/3d``: ``conv3d_direct``, parallel over (n, group, block of output channels, output
  slice), taps clipped to the input (exact for every weight);
- ``numba:conv:im2col/pointwise-3d``: a 1x1x1 unstrided unpadded conv, BLAS straight on the input (x is
  the column matrix), no workspace;
- ``numba:conv:im2col/3d``: every conv, per image, group and band of output depth slices (as many as fit in
  ``TILE_BYTES``, :func:`slices_per_tile`), ``vol2col_pack`` builds the band's column matrix and BLAS
  computes w[group] @ col straight into the output. Zeros in the padding (``zero_fills_padding``);
- ``numba:conv_input:direct/gather-3d`` and ``numba:conv_input:im2col/col2vol-3d`` (BLAS col = w^T @ dy per
  band, then ``col2vol_add`` drops taps in the padding: exact for every weight), the 2-D pair's designs;
- ``numba:conv_weight:direct/lanes-3d`` (exact) and ``numba:conv_weight:im2col/pack-gemm-3d`` (the
  forward's packer, then dw[group] += dy @ col^T band by band; ``zero_fills_padding``);
- pools ``max_pool``/``avg_pool``/``adaptive_*`` ``direct/3d`` (parallel over (n, c, output slice); the
  2-D rules with one more dimension, flat indices ``d*H*W + h*W + w``), their gradients ``direct/3d``
  (per plane, the oracle's sums and order) and ``numba:max_unpool:direct/3d``; the max gradient and
  max_unpool run the 2-D plane kernels on views that flatten (Z, P) and (D, H).
Pool padding is per side everywhere (``pad_front/back/top/bottom/left/right``): windows start at
``p*stride - pad_before``, and the avg divisor's padded extent ends at ``size + pad_after``.

float32 and float64 run natively; float16 runs in float32 (``Impl.compute_spec``).

Threads: every Numba kernel runs on Numba's pool (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``). The
im2col paths (forward, input and weight gradients, 1-D/2-D) run their (tile, group) items on the GEMM workers
of :mod:`._cpu_pool`: as many Python threads as the caller's Numba thread count, each claiming items one at
a time (a worker on a busy core does fewer) and running the serial packing kernel and a BLAS GEMM, with
OpenBLAS set to one thread (process-wide, ``openblas_set_num_threads``) while any such call runs and put back
when the last ends, so OpenBLAS's own pool, whose workers spin for about 0.1 s after each call, stays asleep.
Per worker: its own column matrix (the workspaces below count one per worker). Problems below
``POOL_MIN_FLOPS`` run on the calling thread, and any problem under ``SERIAL_MAX_FLOPS`` runs its Numba
kernels on one thread (see ``NumbaImpl.run``). Where NumPy's BLAS is not OpenBLAS, there is one worker, the
caller, and the GEMMs run on the BLAS's own threads (``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS``). The 3-D im2col paths still call BLAS from the caller with its own threads.

Repeat calls (``NumbaImpl.runner``, for ``fastconv.functional``'s fast path): the blocked and planes convs
and the max and avg pools have a ``bind(spec, serial)`` that works out the kernel, geometry, shapes and
plan once and launches the kernel through Numba's compiled entry point (``_Launch``); below the serial
thresholds it launches the serial twin (``_numba_common.serial_twin``: the same Python function compiled
without ``parallel``), which enters no threading layer (a tiny max pool: 1.4 us against 3.5 us, 5 against
14 right after a torch call whose OpenMP workers still spin).

First call: each kernel compiles on first use per dtype (6-8 s each on this project's 2-core machines)
and is written to Numba's disk cache; a new process loads it (about 0.7 s for the first, which imports
Numba, then 10-20 ms per kernel). ``import fastconv`` compiles nothing and does not import Numba.

Several supported candidates (``algo="auto"``, or a named algo with several supported variants: a
depthwise conv's three ``direct`` kernels) are decided by :func:`choose`, cudnn.benchmark style, for
every op in ``CONV_OPS`` (the conv gradients too; the synthetic inputs follow ``spec.operands()``):
- a problem below ``MEASURE_MIN_FLOPS`` (2 * 10**7 flops: 0.2 ms of work at im2col's speed, 2 ms at the
  direct kernel's), ``FASTCONV_AUTOTUNE=0``, or a pool: measuring (several candidates, several runs
  each) would cost more than it can save, and the first supported ``direct`` candidate runs (no
  workspace, no BLAS call, no packing);
- otherwise :data:`TUNER` runs every supported candidate on the caller's arrays (synthetic data of the
  spec's shape and dtype where an array cannot be used as it is; never a copy of the input)
  (``TUNE_WARMUPS`` untimed runs each, which also compile, then interleaved rounds, each timing every
  candidate once, the order rotating: at most ``TUNE_ROUNDS``, at least two, stopping once
  ``TUNE_BUDGET_S`` are spent; a candidate's time is its fastest call, and one over
  ``_tune.OUT_OF_RACE`` times the leader's is timed no more), one call at a time (its output and
  workspace freed before the next), so tuning needs no more memory than the hungriest candidate's own
  call; a candidate that raises MemoryError is skipped (and the measurement not remembered; with none
  measured the rule's choice runs); the fastest wins and is remembered under the thread count, the spec
  and the candidates' names. The tuner is memory-only: a CPU measurement taken while another process was busy
  should not outlive the process, so a new process measures again (milliseconds per new shape once the kernels
  are in Numba's disk cache; the very first auto call on a machine also compiles every candidate's kernels,
  several seconds each).
"""
from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from .. import _config, _dispatch, _imports, _indices, _timing, _tune
from . import _cpu_pool, _dilation_phases
from .._dispatch import CONV_OPS, FunctionImpl
from .._spec import adaptive_window

DTYPES = ("float32", "float64")

#: below this many flops, a choice between candidates is made by rule instead of measuring (see above).
MEASURE_MIN_FLOPS = 2 * 10**7


def availability() -> Optional[str]:
    """None when Numba imports and runs here, else why not (naming the setting at fault when there is one).
    Imports go through :mod:`fastconv._imports`: an interrupted import is retried cleanly next time."""
    if "numba" not in sys.modules:     # Numba reads it at import (refusing 0 with a message naming nothing)
        try:
            _config.value("NUMBA_NUM_THREADS")
        except ValueError as e:
            return f"numba cannot start: {e}"
    try:
        _imports.import_module("numba")
    except ModuleNotFoundError as e:
        if e.name == "numba":
            return f"{_dispatch.NUMBA_NOT_INSTALLED} ({e}); pip install numba"
        return f"numba cannot be imported: {type(e).__name__}: {e}"       # a dependency is missing
    except Exception as e:      # a broken install, a setting Numba refuses
        return f"numba cannot be imported: {type(e).__name__}: {e}"
    return None


@functools.lru_cache(maxsize=None)
def kernels():
    """The kernel index module (imports Numba; kernels compile, or load from Numba's disk cache, on first
    call). Not remembered until an import succeeds; a failed one leaves nothing half-imported."""
    return _imports.import_module("fastconv._backends._numba_kernels")


@functools.lru_cache(maxsize=None)
def _thread_api():
    """(get, set) of the calling thread's Numba thread count (a thread-local in Numba). Once Numba's pool
    is up these are its own C entry points (``numba.np.ufunc.parallel._get_num_threads`` /
    ``_set_num_threads``): the public ``numba.get_num_threads`` / ``set_num_threads`` take two
    process-wide locks on every call (``_launch_threads``; 2 us and 16 us a get/set pair on this project's
    machines, per call of a tiny op). A Numba without them gets the public functions."""
    numba = _imports.import_module("numba")
    n = numba.get_num_threads()           # starts the pool (what the first kernel launch does anyway)
    try:
        from numba.np.ufunc import parallel
        get, put = parallel._get_num_threads, parallel._set_num_threads
        if parallel._is_initialized and get() == n:
            return get, put
    except (ImportError, AttributeError):
        pass
    return numba.get_num_threads, numba.set_num_threads


def _threads() -> int:
    """Numba's thread count for the calling thread (``numba.set_num_threads``)."""
    return _thread_api()[0]()


def started_threads() -> Optional[int]:
    """:func:`_threads` once Numba's pool is up, else None (asking would start it): a key part of
    :mod:`fastconv._memo` (implementations' workspaces, hence their reasons, depend on it)."""
    global _started
    if not _started:
        parallel = sys.modules.get("numba.np.ufunc.parallel")
        if parallel is None or not getattr(parallel, "_is_initialized", False):
            return None
        _started = True
    return _thread_api()[0]()


_started = False


# ---------------------------------------------------------------------------------------------------
# Convolution: direct kernels
# ---------------------------------------------------------------------------------------------------
def _bias(spec, b, dtype):
    return b if b is not None else np.zeros(spec.K, dtype=dtype)


def _chunks(tasks: int) -> int:
    """Parallel chunks for ``tasks`` independent planes: a few per thread (load balance; the chunked
    kernels' scratch is per worker, :func:`_on_workers`)."""
    return max(1, min(tasks, 4 * _threads()))


def _on_workers(spec, name: str, nchunk: int, run, launch, scratch=None) -> None:
    """The chunks [0, nchunk) of the serial chunked kernel ``run(*s, c0, c1, nchunk)`` (``_numba_kernels.CHUNKED``:
    each chunk's result is fixed by its index, so how they are spread over threads never changes a bit).
    ``scratch(n)``: the kernel's scratch arrays, each with one row per worker, made before any chunk runs.

    On one thread one call runs them all. Else one of two launches (:func:`_launch_path`, per ``spec`` and
    kernel ``name``): ``launch(*scratch(n), m)``, the kernel's ``_prange`` twin running m chunks on
    Numba's n threads, split statically (m = n with scratch: a row each; m = nchunk without); or n
    workers (the caller and pool threads, ``_cpu_pool.run_chunks``) claiming the nchunk chunks one at a
    time. On a quiet machine the first is quicker (on this project's VMs the pool's sleeping threads wake
    0.1-2 ms late; Numba's spin a while: a global average pool 0.35 against 0.47 ms). With another process
    on a core, a static region waits for the thread on that core: for about 0.1 s after a pause every
    region took 8 ms (claimed chunks: 0.7 ms), then 0.4 ms with a 4 ms stall a tick. So the static launch
    runs until it stalls (LAUNCH_STALL_S) twice in a row, then claimed chunks for LAUNCH_HOLD_S."""
    nworkers = min(_threads(), nchunk)
    if nworkers <= 1:
        run(*(a[0] for a in (scratch(1) if scratch else ())), 0, nchunk, nchunk)
        return
    stacked = scratch(nworkers) if scratch else ()
    path, state = _launch_path(spec, name)
    t0 = time.perf_counter()
    if path == 0:
        launch(*stacked, nworkers if stacked else nchunk)
    else:
        rows = [tuple(a[i] for a in stacked) for i in range(nworkers)]
        _cpu_pool.run_chunks(nchunk, lambda ch, s: run(*s, ch, ch + 1, nchunk), rows)
    _launch_took(state, path, time.perf_counter() - t0)


#: seconds a problem's chunked kernel runs on claiming workers after its static launch stalled twice in a
#: row (then the static launch is tried again)
LAUNCH_HOLD_S = 1.0
#: a static launch stalled when it took more than the quickest launch of the problem plus this. A region
#: waiting for a thread on a taken core lost two 4 ms scheduler ticks (8 ms) on this project's VMs; a quiet
#: one now and then one tick (4.1-4.3 ms, twice in a row in a bench run beside PyTorch): with 1 ms here
#: those sent a quiet 0.35 ms depthwise layer to claimed chunks (0.7 ms) half the time. (The line was twice
#: the quickest plus this until 2026-12-04: a 2.3 ms planes conv then took 8 ms busy and never counted one.)
LAUNCH_STALL_S = 5e-3
#: ... or more than LAUNCH_STALL_RATIO times the claimed path's quickest, where that is at least
#: LAUNCH_RATIO_MIN_S: a busy machine's 8 ms static launch against claimed chunks of 4-5 ms (a kernel of 2 ms
#: quiet). Below it a quiet launch that lost one tick would pass the ratio, and claimed chunks (whose
#: workers wake 0.1-2 ms late) would then cost a sub-millisecond kernel up to 2x for LAUNCH_HOLD_S
LAUNCH_STALL_RATIO, LAUNCH_RATIO_MIN_S = 1.5, 2e-3
#: static launches after which the claimed path is measured again while no static launch was quicker than
#: LAUNCH_STALL_S (doubling each time, up to LAUNCH_REPROBE_MAX)
LAUNCH_REPROBE, LAUNCH_REPROBE_MAX = 16, 1024


def _launch_path(spec, name: str):
    """(path, state) for one chunked launch of ``spec``'s kernel ``name``: 0 Numba's static ``prange``,
    1 claimed chunks. ``state``: [quickest static launch, quickest claimed one (None: to be measured), stalls
    in a row, claimed until, static launches since the claimed path was measured, the launches after which
    it is measured again]. The first launch is static, the second claimed (each path's quickest known); then
    static, except until ``state[3]`` or when the claimed path is to be measured again (:func:`_launch_took`)."""
    launches = spec.__dict__.get("_launches_")
    if launches is None:
        launches = {}
        object.__setattr__(spec, "_launches_", launches)
    state = launches.get(name)
    if state is None:
        state = launches[name] = [None, None, 0, 0.0, 0, LAUNCH_REPROBE]
    if state[0] is None:
        return 0, state
    if state[1] is None or time.monotonic() < state[3]:
        return 1, state
    return 0, state


def _launch_took(state, path: int, seconds: float) -> None:
    """Record a launch: each path's quickest; a static launch slower than the quickest of either plus
    LAUNCH_STALL_S is a stall, and so is one slower than LAUNCH_STALL_RATIO x the claimed path's quickest
    where that is itself at least LAUNCH_RATIO_MIN_S (a problem whose claimed chunks take 4 ms on a busy
    machine and whose static launch 8 ms); the second stall in a row sends the problem to claimed chunks for
    LAUNCH_HOLD_S (one slow launch is noise: a pause's first call, a tick lost). While no static launch has
    been quicker than LAUNCH_STALL_S, the claimed path is measured again after LAUNCH_REPROBE static
    launches, then after twice as many, up to LAUNCH_REPROBE_MAX: busy from the first call, both paths'
    first launches may have lost two ticks (8 ms each), and then no static launch could ever be a stall."""
    quickest = state[path]
    state[path] = seconds if quickest is None else min(quickest, seconds)
    if path != 0:
        state[4] = 0
        return
    if state[1] is None:
        return
    line = min(state[0], state[1]) + LAUNCH_STALL_S
    if state[1] >= LAUNCH_RATIO_MIN_S:
        line = min(line, LAUNCH_STALL_RATIO * state[1])
    if seconds > line:
        state[2] += 1
        if state[2] >= 2:
            state[2], state[3] = 0, time.monotonic() + LAUNCH_HOLD_S
        return
    state[2] = 0
    state[4] += 1
    if state[0] >= LAUNCH_STALL_S and state[4] >= state[5]:
        state[1], state[5] = None, min(2 * state[5], LAUNCH_REPROBE_MAX)


# ---------------------------------------------------------------------------------------------------
# Workspaces: every buffer an implementation allocates besides its output
# ---------------------------------------------------------------------------------------------------
#: the most workspace (bytes, all threads together) an implementation that *may* refuse (the phase-split
#: depthwise kernel, every im2col variant) takes; beyond it, its reasons say so and dispatch moves on to
#: an exact direct kernel, whose workspace is a few output rows (or one plane) per thread.
WORKSPACE_CAP = 256 << 20

#: the phase-split depthwise kernel's buffer per plane is the padded region its output reads; it takes a
#: problem only while that region is at most PHASE_SLACK x (input plane + output plane) + PHASE_MIN
#: values, i.e. while padding and the gaps of a large stride or dilation are a small part of it.
PHASE_SLACK, PHASE_MIN = 4, 4096

#: scratch made inside a kernel (Numba cannot raise a clean MemoryError there) of this many bytes or more
#: is first tried from Python (:func:`reserve`), so a workspace that does not fit fails before the kernel
PROBE_BYTES = 16 << 20


def _nbytes(shape, dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * np.dtype(dtype).itemsize


def _memory_error(nbytes: int, what: str) -> MemoryError:
    return MemoryError(f"the numba backend cannot allocate {nbytes} bytes ({nbytes / 2**20:.1f} MiB) for "
                       f"{what}")


def workspace(what: str, shape, dtype, zero: bool = False) -> np.ndarray:
    """A workspace array of ``shape``: the one way an implementation allocates one. What cannot be
    allocated is a MemoryError naming the size in bytes and ``what`` it was for, before any kernel runs."""
    try:
        return (np.zeros if zero else np.empty)(tuple(int(d) for d in shape), dtype=dtype)
    except (MemoryError, ValueError) as e:  # ValueError: a size NumPy cannot even represent
        raise _memory_error(_nbytes(shape, dtype), what) from e


def reserve(nbytes: int, what: str) -> None:
    """Scratch a kernel allocates itself (per-thread rows, planes): when large, try the bytes from Python
    first, so running out is a MemoryError naming them here and not a Numba SystemError in the kernel."""
    if nbytes >= PROBE_BYTES:
        workspace(what, (nbytes,), np.uint8)


def _reserve_for(spec, plan, what: str) -> None:
    """:func:`reserve` the in-kernel scratch a workspace function ``plan`` counts for ``spec``."""
    reserve(sum(plan(spec).values()), what)


def _threads_for(tasks: int) -> int:
    """Threads that can hold their own scratch at once for ``tasks`` parallel iterations."""
    return max(1, min(int(tasks), _threads()))


#: values of one task's phase-split planes in the depthwise phase kernel: as many images of a channel as
#: fit (at least one) go in one task, so that small planes (7x7) make long loops
PHASE_BATCH = 8192


def _phase_extent(spec):
    """(Hq, Wq): one stride phase of the padded region the output reads."""
    extent_h, extent_w = spec.input_extent_hw()
    return -(-extent_h // spec.stride_h), -(-extent_w // spec.stride_w)


def phase_plan(spec):
    """(chunks, images per task, buffer values, accumulator values) of the phase-split depthwise kernel: a
    task is NB images of one channel (NB planes' worth within PHASE_BATCH values, at least one); each chunk
    (one per thread at most) holds one task's zero-padded, phase-split planes and their accumulator."""
    hq, wq = _phase_extent(spec)
    plane = spec.stride_h * spec.stride_w * hq * wq
    nb = max(1, min(spec.N, PHASE_BATCH // plane))
    return _threads_for(phase_tasks(spec, nb)), nb, nb * plane, nb * hq * wq


def phase_tasks(spec, nb: int) -> int:
    """Tasks of the phase-split depthwise kernel: (channel, block of ``nb`` images)."""
    return spec.C * -(-max(1, spec.N) // nb)


def _phase_workspace(spec):
    nchunk, _, buf, acc = phase_plan(spec)
    return {"phase-split planes": nchunk * buf * spec.itemsize, "accumulators": nchunk * acc * spec.itemsize}


def _phase_reasons(spec) -> List[str]:
    return _depthwise_reasons(spec) or _phase_bound_reasons(spec)


def _phase_bound_reasons(spec) -> List[str]:
    """The phase-split kernels' bound: a padded, phase-split plane at most PHASE_SLACK x (input plane +
    output plane) + PHASE_MIN values."""
    hq, wq = _phase_extent(spec)
    buf = spec.stride_h * spec.stride_w * hq * wq
    bound = PHASE_SLACK * (spec.H * spec.W + spec.P * spec.Q) + PHASE_MIN
    if buf > bound:
        return [f"its phase-split buffer ({buf} values per plane: the padded region the output reads) is "
                f"more than {PHASE_SLACK}x the input and output planes (+{PHASE_MIN}): padding, stride or "
                f"dilation make most of it unused"]
    return []


def planes_plan(spec):
    """(chunks, runs of output channels per group, buffer values, accumulator values) of ``conv2d_planes``:
    items (image, group, run); a group's output channels are split into runs only where the images and
    groups alone give the threads too few items (N=1). Each chunk holds one copy of a group's C/G
    phase-split planes and KB4 x min(LT, flat output length) accumulators."""
    extent_h, extent_w = spec.input_extent_hw()
    sh, sw = spec.stride_h, spec.stride_w
    hq, wq = -(-extent_h // sh), -(-extent_w // sw)
    k = kernels()
    blocks = -(-spec.K_per_group // k.KB4)
    items = planes_items(spec, 1)             # (an empty batch is planned, never run)
    runs = max(1, min(blocks, -(-_threads() // items)))
    flat = (spec.P - 1) * wq + spec.Q
    return (_threads_for(items * runs), runs, spec.C_per_group * sh * sw * hq * wq,
            k.KB4 * min(k.LT, flat))


def planes_items(spec, runs: int) -> int:
    """``conv2d_planes_chunks``'s items: (image, group, run of output channels)."""
    return max(1, spec.N * spec.groups) * runs


def _planes_workspace(spec):
    nchunk, _, buf, acc = planes_plan(spec)
    return {"phase-split planes": nchunk * buf * spec.itemsize, "accumulators": nchunk * acc * spec.itemsize}


def conv_planes(spec, x, w, b=None):
    return _bind_conv_planes(spec, launch=_dispatched)(x, w, b)


def _bind_conv_planes(spec, serial=False, launch=None):
    """:func:`conv_planes` with its geometry, plan and zero bias worked out once (the plan under the caller's
    thread count, which the memo key fixes; a one-thread run's chunks are what fits it). ``serial``: one call
    of the serial twin through its entry point; else the items in a few chunks per thread on
    :func:`_on_workers` (the static launch ``conv2d_planes``, one chunk per worker, or claimed chunks)."""
    k = kernels()
    geo = k.conv_geometry(spec)
    with _threads_of_run(spec):
        nchunk, runs, buf, acc = planes_plan(spec)
    layout, dtype, zero = spec.output_layout, np.dtype(spec.dtype), _zero_bias(spec)

    def scratch(n):
        return (workspace("the planes kernel's padded planes", (n, buf), dtype, zero=True),
                workspace("the planes kernel's accumulators", (n, k.KB4, acc // k.KB4), dtype))
    if serial:
        kern = (launch or _Launch)(k.conv2d_planes_serial)

        def go(x, w, b=None):
            out = np.empty(layout, dtype=dtype)
            kern(x, w, zero if b is None else b, out, geo, runs, *scratch(nchunk))
            return out
        go.threadless = True
        return go
    chunks = _chunks(planes_items(spec, runs))

    def go(x, w, b=None):
        out = np.empty(layout, dtype=dtype)
        args = (x, w, zero if b is None else b, out, geo, runs)
        _on_workers(spec, "planes", chunks, lambda *c: k.conv2d_planes_chunks(*args, *c),
                    lambda bufs, accs, m: k.conv2d_planes(*args, bufs, accs), scratch)
        return out
    return go


conv_planes.bind = _bind_conv_planes


def conv_depthwise_phase(spec, x, w, b=None):
    k = kernels()
    _, nb, buf, acc = phase_plan(spec)
    out = np.empty(spec.output_layout, dtype=x.dtype)
    args = (x, w, _bias(spec, b, x.dtype), out, k.conv_geometry(spec), nb)

    def scratch(n):
        return (workspace("the phase-split depthwise kernel's padded planes", (n, buf), x.dtype, zero=True),
                workspace("the phase-split depthwise kernel's accumulators", (n, acc), x.dtype))
    _on_workers(spec, "phase", _chunks(phase_tasks(spec, nb)), lambda *c: k.conv2d_depthwise_phase(*args, *c),
                lambda *c: k.conv2d_depthwise_phase_prange(*args, *c), scratch)
    return out


@functools.lru_cache(maxsize=256)
def flat_layout(spec):
    """The flat depthwise kernel's plan (``_numba_conv.conv2d_depthwise_flat``): (chunks, lay = int64 (NB,
    PL, M0, CB), col_copy, copy_phase, copy_shift, buffer values, accumulator values). Each distinct
    (column phase, shift) of the S tap columns (column s*dil_w - pad_left = stride_w*(q + shift) + phase
    for output column q) is one copy of that phase; a task is NB images of one channel, NB copies' planes
    within PHASE_BATCH values (at least one)."""
    sw, hq, wp = spec.stride_w, spec.input_extent_hw()[0], spec.W // spec.stride_w
    copies, col_copy = [], []
    for s in range(spec.S):
        o = s * spec.dil_w - spec.pad_left
        key = (o % sw, (o - o % sw) // sw)
        if key not in copies:
            copies.append(key)
        col_copy.append(copies.index(key))
    plane = hq * wp
    margin = max(abs(shift) for _, shift in copies)
    nb = max(1, min(spec.N, PHASE_BATCH // (len(copies) * plane)))
    lay = np.array([nb, plane, margin, nb * plane + margin], dtype=np.int64)
    as64 = functools.partial(np.array, dtype=np.int64)
    return (_threads_for(phase_tasks(spec, nb)), lay, as64(col_copy), as64([ph for ph, _ in copies]),
            as64([shift for _, shift in copies]), margin + len(copies) * int(lay[3]), nb * plane)


def _flat_workspace(spec):
    nchunk, *_, buf, acc = flat_layout(spec)
    return {"phase copies": nchunk * buf * spec.itemsize, "accumulators": nchunk * acc * spec.itemsize}


def _flat_reasons(spec) -> List[str]:
    """Depthwise; stride_w 2 and stride_h 1 or 2; an even input width, each column phase at least an
    output row long; and the phase-split kernels' bound on the padded region (one copy's plane)."""
    reasons = _depthwise_reasons(spec)
    if spec.stride_w != 2 or spec.stride_h > 2:
        reasons.append(f"stride ({spec.stride_h}, {spec.stride_w}): this kernel takes a column stride of 2 "
                       f"and a row stride of 1 or 2")
    elif spec.W % 2 or spec.Q > spec.W // 2:
        reasons.append(f"an output row ({spec.Q} values) is not within one of the input's 2 column phases "
                       f"({spec.W} columns): depthwise-phase runs it")
    return reasons or _phase_bound_reasons(spec)


def conv_depthwise_flat(spec, x, w, b=None):
    k = kernels()
    _, lay, col_copy, copy_phase, copy_shift, buf, acc = flat_layout(spec)
    out = np.empty(spec.output_layout, dtype=x.dtype)
    args = (x, w, _bias(spec, b, x.dtype), out, k.conv_geometry(spec), lay, col_copy, copy_phase, copy_shift)

    def scratch(n):
        return (workspace("the flat depthwise kernel's phase copies", (n, buf), x.dtype, zero=True),
                workspace("the flat depthwise kernel's accumulators", (n, acc), x.dtype))
    _on_workers(spec, "flat", _chunks(phase_tasks(spec, int(lay[0]))),
                lambda *c: k.conv2d_depthwise_flat(*args, *c), lambda *c: k.conv2d_depthwise_flat_prange(*args, *c),
                scratch)
    return out


def conv_depthwise(spec, x, w, b=None):
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    k.conv2d_depthwise(x, w, _bias(spec, b, x.dtype), out, k.conv_geometry(spec))
    return out


def _blocked_workspace(spec):
    KB = kernels().KB
    tasks = spec.N * spec.groups * -(-spec.K_per_group // KB)
    return {"per-thread output rows": _threads_for(tasks) * KB * spec.Q * spec.itemsize}


def conv_blocked(spec, x, w, b=None):
    return _bind_conv_blocked(spec, launch=_dispatched)(x, w, b)


def _zero_bias(spec):
    """The K zeros a bind passes for an absent bias: shared by every call of the spec, so never written."""
    zero = np.zeros(spec.K, dtype=spec.dtype)
    zero.flags.writeable = False
    return zero


def _dispatched(kern):
    """The ``launch`` of a bind run once (the Impl's own run): the kernel through its dispatcher."""
    return kern


class _Launch:
    """A kernel called through Numba's compiled entry point for its first call's argument types, past the
    dispatcher's type matching (a few microseconds a call, where a tiny call's whole budget is tens).

    For the ``bind`` closures of :meth:`NumbaImpl.runner` only: every call of one closure passes arguments
    of the same Numba types, because the fast path (``fastconv.functional._fast_path``) hands it the
    user's arrays only when they are exact ndarrays of the memo key's shape and dtype, C-contiguous,
    aligned and writeable, and the closure makes the rest itself. The first call goes through the
    dispatcher, which compiles or loads the kernel; its entry point is then looked up by those types."""

    __slots__ = ("kern", "entry")

    def __init__(self, kern):
        self.kern, self.entry = kern, None

    def __call__(self, *args):
        entry = self.entry
        if entry is not None:
            return entry(*args)
        out = self.kern(*args)
        cres = self.kern.overloads.get(tuple(self.kern.typeof_pyval(a) for a in args))
        if cres is not None:
            self.entry = cres.entry_point
        return out


def _bind_conv_blocked(spec, serial=False, launch=None):
    """:func:`conv_blocked` with its kernel, geometry, zero bias and scratch check worked out once
    (``serial``: it has no serial twin; the runner runs it on one thread)."""
    kern, geo = (launch or _Launch)(kernels().conv2d_direct), kernels().conv_geometry(spec)
    layout, dtype, zero = spec.output_layout, np.dtype(spec.dtype), _zero_bias(spec)
    big = sum(_blocked_workspace(spec).values()) >= PROBE_BYTES   # planned under the caller's threads: at most

    def go(x, w, b=None):
        if big:
            _reserve_for(spec, _blocked_workspace, "the blocked direct kernel's per-thread output rows")
        out = np.empty(layout, dtype=dtype)
        kern(x, w, zero if b is None else b, out, geo)
        return out
    return go


conv_blocked.bind = _bind_conv_blocked


def _depthwise_reasons(spec) -> List[str]:
    if spec.is_depthwise:
        return []
    return [f"not depthwise: {spec.C_per_group} input channels per group (this kernel reads one)"]


# ---------------------------------------------------------------------------------------------------
# Convolution: im2col + BLAS
# ---------------------------------------------------------------------------------------------------
#: bytes of one im2col tile's working set: whole images side by side, as many as fit (at least one),
#: each taking its column matrix and its staged output (Cg*R*S + K/G values per output pixel). Small
#: images give BLAS GEMMs with a short N dimension (7x7 outputs: N = 49), which run well below BLAS's
#: speed on big ones; a tile of several images restores it (measured, 2 threads: 512x4608x49 at
#: 95 GFLOP/s, 4 images side by side at 112). 4 MiB: the two cores' L2 caches.
TILE_BYTES = 4 << 20

#: with several GEMM workers (:mod:`._cpu_pool`), a tile holds fewer images, so that the batch gives each
#: worker about ITEMS_PER_WORKER items to claim (a worker on a busy core claims fewer), but never so few
#: that its GEMM is narrower than TILE_MIN_COLUMNS output pixels (measured on 2 cores, N=8: res5's 1x1
#: 512->2048 on 7x7 took 13.0 ms with the whole batch in one tile, 7.2 ms with tiles of 2 or 4 images, 8.6 ms
#: with one; res4's 3x3 on 14x14 15.7 ms with one image per tile, 17.4 with 2, 20.2 with 4)
ITEMS_PER_WORKER, TILE_MIN_COLUMNS = 4, 128

#: below this many flops a GEMM path runs on the calling thread alone (handing work to the pool costs
#: tens of microseconds)
POOL_MIN_FLOPS = 2 * 10**6


def gemm_workers(spec) -> int:
    """GEMM workers an im2col path of ``spec`` plans for: the caller's Numba thread count where the BLAS
    has per-thread control and the problem is worth splitting, else 1 (:func:`._cpu_pool.workers`)."""
    if spec.flops() < POOL_MIN_FLOPS:
        return 1
    return _cpu_pool.workers(_threads(), spec.N * spec.groups * spec.P)


def images_per_tile(spec) -> int:
    """Whole images per im2col tile: as many as fit TILE_BYTES (at least one) and, with several GEMM
    workers, at most enough for ITEMS_PER_WORKER tiles per worker, but at least TILE_MIN_COLUMNS wide."""
    one = (spec.gemm_k + spec.K_per_group) * spec.P * spec.Q * spec.itemsize
    nb = max(1, min(spec.N, TILE_BYTES // one))
    workers = gemm_workers(spec)
    if workers > 1:
        balance = max(-(-TILE_MIN_COLUMNS // (spec.P * spec.Q)), -(-spec.N // (ITEMS_PER_WORKER * workers)))
        nb = min(nb, balance)
    return nb


def _input_is_column_matrix(spec) -> bool:
    """A pointwise conv whose image fills a tile: each image's input is its own column matrix."""
    return spec.is_pointwise and images_per_tile(spec) == 1


def _gemm_views(spec, w, out):
    """w as [G, K/G, Cg*R*S] and out as [N, G, K/G, P*Q]: the GEMM operands per group."""
    return (w.reshape(spec.groups, spec.K_per_group, spec.gemm_k),
            out.reshape(spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q))


def _bias_views(spec, b):
    """b as [G, K/G, 1]: added to a GEMM's [K/G, columns] result of its group (None without a bias)."""
    return None if b is None else b.reshape(spec.groups, spec.K_per_group, 1)


def conv_im2col_pointwise(spec, x, w, b=None):
    """BLAS straight on the input (no workspace): x viewed as [N, G, Cg, P*Q] is every image's column
    matrix; one GEMM per (image, group), on the GEMM workers."""
    out = np.empty(spec.output_layout, dtype=x.dtype)
    wg, og = _gemm_views(spec, w, out)
    bg = _bias_views(spec, b)
    xg = x.reshape(spec.N, spec.groups, spec.C_per_group, spec.P * spec.Q)

    def one(item, _):
        n, g = item
        np.matmul(wg[g], xg[n, g], out=og[n, g])
        if bg is not None:
            og[n, g] += bg[g]

    _cpu_pool.run([(n, g) for n in range(spec.N) for g in range(spec.groups)], one, lambda: None,
                  gemm_workers(spec))
    return out


#: one image's column matrix larger than this is built and multiplied in bands of output rows (as many
#: rows as fit, at least one), so an im2col workspace is at most a band's (see WORKSPACE_CAP). 2 MiB: a
#: band is multiplied while it is still in the cache, and BLAS streams a narrower B. One BLAS thread,
#: (64 x 576) @ (576 x N): 73 GFLOP/s at N = 3136 (one 56x56 image, 7.2 MB), 99 at N = 784. Whole layers at
#: N=8, in-process A/B against 32 MiB (Zen 4, 2 workers, 2026-12-03): res2's 3x3 dilated 2 16.0 -> 11.7 ms,
#: res2's 3x3 by im2col 17.2 -> 12.6, conv1 (7x7 stride 2 on 224x224) 18.4 -> 14.2; their weight gradients
#: 29.0 -> 24.9, 20.5 -> 17.6, 26.6 -> 22.5; 1, 4 MiB and 512 KiB no better; smaller images unchanged.
IMAGE_COL_BYTES = 2 << 20


def rows_per_image_band(spec) -> int:
    """Output rows per column matrix of the forward and weight-gradient im2col paths with one image per
    tile: all P while the image's column matrix fits IMAGE_COL_BYTES, else as many as fit (at least one)."""
    row = spec.gemm_k * spec.Q * spec.itemsize
    if images_per_tile(spec) > 1 or row * spec.P <= IMAGE_COL_BYTES:
        return spec.P
    return max(1, IMAGE_COL_BYTES // row)


def _im2col_tiles(spec):
    """(n0, m, p0, p1): the tiles of the forward and weight-gradient im2col paths, in batch then row order:
    m whole images side by side (p0, p1 = 0, P), or one image's band of output rows [p0, p1)."""
    nb, rows = images_per_tile(spec), rows_per_image_band(spec)
    for n0 in range(0, spec.N, nb):
        for p0 in range(0, spec.P, rows):
            yield n0, min(nb, spec.N - n0), p0, min(spec.P, p0 + rows)


#: the whole batch's column matrix and GEMM result up to this size are built at once when the tiles
#: would give the GEMM workers too few items (small images: res5's 7x7 at N=8 makes 3 tiles of at least
#: TILE_MIN_COLUMNS for 2 workers); the GEMM is then split into blocks of its result instead (_gemm_blocks)
#:
#: Only the GEMM goes to the workers: the caller packs the whole batch before (one kernel call or NumPy copy
#: per group) and copies the result out after. Each round on the workers wakes their threads, which on this
#: project's VMs start 0.1-2 ms late after an idle spell, and the packing items run 2-5x slower per image on
#: two pool threads than on the caller (traced: 0.2-0.9 ms against 0.08). In-process A/B, a 0.3 s pause
#: then 5 calls, 8 rounds alternating, Zen 4 VM (AVX-512), 2026-12-04: res4's 3x3 stride 2 7.22 -> 6.89 ms,
#: res5's 1x1 stride 2 6.87 -> 5.36, res5's 1x1 512->2048 7.60 -> 7.07, pw13 7.09 -> 7.26 (noise), the
#: pointwise input gradients 6.16 -> 5.77 and 6.12 -> 5.87, the weight gradients unchanged within noise.
BATCH_GEMM_BYTES = 32 << 20


def _whole_batch(spec) -> bool:
    """Whether the forward im2col builds the whole batch's column matrix and splits the GEMM into blocks
    of its result (see BATCH_GEMM_BYTES): several workers, fewer than ITEMS_PER_WORKER tile items per worker,
    and the batch's columns and GEMM result within BATCH_GEMM_BYTES."""
    workers = gemm_workers(spec)
    if workers == 1 or images_per_tile(spec) == 1:
        return False
    tiles = -(-spec.N // images_per_tile(spec)) * spec.groups
    batch = spec.groups * (spec.gemm_k + spec.K_per_group) * spec.N * spec.P * spec.Q * spec.itemsize
    return tiles < ITEMS_PER_WORKER * workers and batch <= BATCH_GEMM_BYTES


def _pointwise_whole_batch(spec) -> bool:
    """Whether a pointwise conv's gradient (conv_input and conv_weight im2col) runs the whole batch as one
    GEMM per group (:func:`_conv_input_pointwise_batch`, :func:`_conv_weight_pointwise_batch`): 1x1, stride
    1, no padding (dx is w^T @ dy with no col2im; x is its own column matrix), small images that give the
    tiles too few items for the workers, as the forward's :func:`_whole_batch` says."""
    return spec.is_pointwise and spec.P == spec.H and spec.Q == spec.W and _whole_batch(spec)


def _batch_workspace(spec, *buffers):
    """The whole batch's buffers side by side, each (name, rows per group) of N*P*Q columns per group."""
    cols = spec.groups * spec.N * spec.P * spec.Q * spec.itemsize
    return {name: rows * cols for name, rows in buffers}


#: blocks per GEMM worker in the whole-batch GEMM: 2, along the longer side of the result. Each block is one
#: BLAS call that packs its share of the operands and streams the other through the cache, so a thin block
#: wastes the micro-kernel: 8 blocks of 32 output channels ran (256 x 2304) @ (2304 x 392) at 148 GFLOP/s on
#: 2 threads, 4 at 173, 2 at 181; and blocks of output channels are thin where there are few of them (64
#: channels over 6272 columns: 76 GFLOP/s in 8 row blocks, 145-156 in 4-8 column blocks). Zen 4 (AVX-512,
#: OpenBLAS SkylakeX kernels), single-threaded BLAS per worker, best of 15 calls, 2026-12-03. Two per worker
#: rather than one leaves a worker on a busy core fewer to do (see _cpu_pool).
GEMM_BLOCKS_PER_WORKER = 2

#: the narrowest block of result columns the whole-batch GEMM makes, and their alignment (the AVX-512
#: kernels' 16 floats)
GEMM_MIN_BLOCK_COLUMNS, GEMM_COLUMN_ALIGN = 64, 16


def _gemm_blocks(spec, rows=None, cols=None):
    """(g, k0, k1, c0, c1): the whole-batch GEMM's items, group g's result rows [k0, k1) by columns [c0, c1)
    of its [rows, cols] result: by default [K/G, N*P*Q] (the forward's); ``rows`` C/G for the input
    gradient's, ``cols`` C/G for the weight gradient's [K/G, C/G]. About GEMM_BLOCKS_PER_WORKER per worker
    over all groups, each group cut along the longer side of its result: rows (at least 16 each) or
    columns (at least GEMM_MIN_BLOCK_COLUMNS each, the cuts aligned to GEMM_COLUMN_ALIGN)."""
    Kg = spec.K_per_group if rows is None else rows
    cols = spec.N * spec.P * spec.Q if cols is None else cols
    want = -(-GEMM_BLOCKS_PER_WORKER * gemm_workers(spec) // spec.groups)
    if Kg >= cols:
        n = max(1, min(want, Kg // 16))
        cuts = [(Kg * i // n, Kg * (i + 1) // n, 0, cols) for i in range(n)]
    else:
        n = max(1, min(want, cols // GEMM_MIN_BLOCK_COLUMNS))
        a = GEMM_COLUMN_ALIGN
        edges = [0] + [min(cols, -(-(cols * i // n) // a) * a) for i in range(1, n)] + [cols]
        cuts = [(0, Kg, c0, c1) for c0, c1 in zip(edges, edges[1:]) if c1 > c0]
    return [(g,) + cut for g in range(spec.groups) for cut in cuts]


def _im2col_workspace(spec):
    """Per GEMM worker: one tile's column matrix (and, with several images, their output for one group);
    or, for the whole batch at once (:func:`_whole_batch`), its column matrix and GEMM result."""
    if spec.op == "conv" and _whole_batch(spec):
        return _batch_workspace(spec, ("column matrix", spec.gemm_k), ("staged output", spec.K_per_group))
    nb, rows, workers = images_per_tile(spec), rows_per_image_band(spec), gemm_workers(spec)
    ws = {"column matrix": workers * spec.gemm_k * nb * rows * spec.Q * spec.itemsize}
    if nb > 1:
        ws["staged output"] = workers * spec.K_per_group * nb * spec.P * spec.Q * spec.itemsize
    return ws


def conv_im2col(spec, x, w, b=None):
    """Per (tile, group) item, on the GEMM workers (:mod:`._cpu_pool`), each with its own column matrix:
    im2col_pack per image (or per band of one image's output rows) into the tile's column matrix, then one
    GEMM straight into the output (one image per tile) or into a staging buffer scattered into it
    (several), the bias added while the tile's output is in cache."""
    N, G, Kg, PQ, Q = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q, spec.Q
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    wg, og = _gemm_views(spec, w, out)
    bg = _bias_views(spec, b)
    geo = k.conv_geometry(spec)
    if _whole_batch(spec):
        _conv_im2col_whole_batch(spec, x, wg, og, bg, geo)
        return out
    nb, rows = images_per_tile(spec), rows_per_image_band(spec)
    items = [(t, g) for t in _im2col_tiles(spec) for g in range(G)]

    def scratch():
        col = workspace("im2col's column matrix", (spec.gemm_k, nb * rows * Q), x.dtype)
        stage = workspace("im2col's staged output", (Kg, nb * PQ), x.dtype) if nb > 1 else None
        return col, stage

    def one(item, s):
        (n0, m, p0, p1), g = item
        col, stage = s
        if nb == 1:
            k.im2col_pack_rows(x, n0, g, geo, col, 0, p0, p1)
            dst = og[n0, g, :, p0 * Q:p1 * Q]
            np.matmul(wg[g], col[:, :(p1 - p0) * Q], out=dst)
            if bg is not None:
                dst += bg[g]
            return
        k.im2col_pack_tile(x, n0, m, g, geo, col)      # one call per tile: each call takes the GIL
        np.matmul(wg[g], col[:, :m * PQ], out=stage[:, :m * PQ])
        if bg is not None:
            stage[:, :m * PQ] += bg[g]
        og[n0:n0 + m, g] = stage[:, :m * PQ].reshape(Kg, m, PQ).transpose(1, 0, 2)

    _cpu_pool.run(items, one, scratch, gemm_workers(spec))
    return out


def _conv_im2col_whole_batch(spec, x, wg, og, bg, geo):
    """The whole batch's column matrix per group, packed by the caller (one kernel call per group), then
    the GEMM in blocks of output channels or of columns (:func:`_gemm_blocks`) into a staged [K/G, N*P*Q]
    result per group on the GEMM workers, then one copy into the output by the caller: one round on the
    workers (see BATCH_GEMM_BYTES)."""
    N, G, Kg, PQ = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q
    k = kernels()
    col = workspace("im2col's column matrix", (G, spec.gemm_k, N * PQ), x.dtype)
    stage = workspace("im2col's staged output", (G, Kg, N * PQ), x.dtype)
    if spec.R == spec.S == 1 and not spec.is_padded:
        # a 1x1 window, unpadded: an image's columns are its planes, subsampled by the stride. One NumPy
        # copy beats the packing kernel's rows of 7-28 values: 8 images of
        # (1024, 7, 7) 0.10 ms against 0.28, of (1024, 14, 14) at stride 2 0.31 against 0.50, one thread
        Cg, P, Q, sh, sw = spec.C_per_group, spec.P, spec.Q, spec.stride_h, spec.stride_w
        planes = x.reshape(N, G, Cg, spec.H, spec.W)[:, :, :, :(P - 1) * sh + 1:sh, :(Q - 1) * sw + 1:sw]
        col.reshape(G, Cg, N, P, Q)[...] = planes.transpose(1, 2, 0, 3, 4)
    else:
        for g in range(G):
            k.im2col_pack_tile(x, 0, N, g, geo, col[g])

    def gemm(item, _):
        g, k0, k1, c0, c1 = item
        dst = stage[g, k0:k1, c0:c1]
        np.matmul(wg[g, k0:k1], col[g, :, c0:c1], out=dst)
        if bg is not None:
            dst += bg[g, k0:k1]

    _cpu_pool.run(_gemm_blocks(spec), gemm, lambda: None, gemm_workers(spec))
    og[...] = stage.reshape(G, Kg, N, PQ).transpose(2, 0, 1, 3)


def _pointwise_reasons(spec) -> List[str]:
    if not spec.is_pointwise:
        return ["not pointwise (1x1, stride 1, no padding): the input is not the column matrix"]
    if not _input_is_column_matrix(spec):
        return [f"{images_per_tile(spec)} images fit one tile: im2col/packed puts them side by side for a "
                f"wider GEMM"]
    return []


def _packed_reasons(spec) -> List[str]:
    if _input_is_column_matrix(spec):
        return ["pointwise with one image per tile: the input is its own column matrix (im2col/pointwise "
                "runs it without a copy)"]
    return []


# ---------------------------------------------------------------------------------------------------
# Convolution: Winograd F(4x4, 3x3) (kernels in _numba_winograd)
# ---------------------------------------------------------------------------------------------------
#: bytes of one Winograd chunk's V and M (36 x (C + K) values per tile): whole tile rows, as many as fit
#: (at least one), several images or a band of one. The 36 GEMMs of a chunk each read a (C x T) slice of V
#: and write a (K x T) slice of M, so the chunk is what the output transform reads back while it is
#: still in cache. Measured on the shared 2-core EPYC at load 2.5 (res2/res3 at N=8, 1, 4, 16 MiB and the
#: whole batch): no size won clearly above the noise, so 4 MiB, the two cores' L2 as im2col's TILE_BYTES.
WINOGRAD_CHUNK_BYTES = 4 << 20


def winograd_plan(spec):
    """(TH, TW, rows): tile rows and columns of one image (4x4 output tiles) and tile rows per chunk: a
    chunk's V and M within WINOGRAD_CHUNK_BYTES shared by the GEMM workers, and with several workers at most
    enough for ITEMS_PER_WORKER chunks each; or the whole batch's (:func:`_winograd_whole_batch`)."""
    TH, TW = -(-spec.P // 4), -(-spec.Q // 4)
    if _winograd_whole_batch(spec):
        return TH, TW, spec.N * TH
    return TH, TW, _winograd_chunk_rows(spec, TH, TW)


def _winograd_chunk_rows(spec, TH, TW):
    per_row = 36 * (spec.C + spec.K) * TW * spec.itemsize
    workers = gemm_workers(spec)
    rows = max(1, min(spec.N * TH, WINOGRAD_CHUNK_BYTES // workers // per_row))
    if workers > 1:
        rows = min(rows, max(1, -(-spec.N * TH // (ITEMS_PER_WORKER * workers))))
    return rows


def _winograd_whole_batch(spec) -> bool:
    """Whether the Winograd path transforms the whole batch's input at once and then, per block of output
    channels, makes that block's part of U, its 36 GEMMs and its outputs: when U (36 K C values, read once
    per chunk's GEMMs) is larger than a chunk's V and M, streaming it once per chunk costs more than the
    chunk's own data (small images with many channels), and the batch's V and M fit BATCH_GEMM_BYTES.
    U is then never whole: each block's stays in the cache for its GEMMs. Measured on the 2-core EPYC
    (AVX-512, 2026-12-02), res5's 3x3 (N=8, 512 channels, 7x7) took 38 ms in chunks, 22 ms of them in the
    GEMMs (8 chunks of 4 tiles, each reading U's 38 MB) against 5-7 ms for the whole batch's; and a
    whole 38 MB U costs 4-5 ms of page faults per call (glibc maps every allocation over 32 MiB afresh)."""
    TH, TW = -(-spec.P // 4), -(-spec.Q // 4)
    isz = spec.itemsize
    chunk = 36 * (spec.C + spec.K) * TW * _winograd_chunk_rows(spec, TH, TW) * isz
    batch = 36 * (spec.C + spec.K) * TW * TH * spec.N * isz
    return 36 * spec.K * spec.C * isz > chunk and batch <= BATCH_GEMM_BYTES


def _blocks(n: int, workers: int, at_most: int = 0):
    """[i0, i1) blocks of range(n), about ITEMS_PER_WORKER per worker (one block with one worker), and
    more where a block would pass ``at_most`` (> 0) items."""
    b = min(n, ITEMS_PER_WORKER * workers) if workers > 1 else 1
    if at_most > 0:
        b = max(b, min(n, -(-n // at_most)))
    return [(n * i // b, n * (i + 1) // b) for i in range(b)]


#: bytes of one block's part of U in the whole-batch Winograd plan: it is made, then read by the block's 36
#: GEMMs, so it should stay in the cache. Measured on the 2-core EPYC (Zen 4, AVX-512, 1 MiB L2 per core),
#: N=8, medians of 45 calls in interleaved rounds, 2026-12-02: res5's 3x3 (512 channels, 7x7) 13.3 ms with
#: blocks of U up to 8 MiB (64 channels, 4.7 MB each), 8.1-8.2 with 1 or 2.5 MiB, 8.6 with 0.5 MiB; res4's
#: (256, 14x14) 7.8, 7.8, 6.9, 7.1 ms; res3's (128, 28x28) 5.9-6.0 for all four.
WINOGRAD_BLOCK_BYTES = 1 << 20


def _winograd_kblocks(spec):
    """The whole-batch plan's blocks of output channels: ITEMS_PER_WORKER per worker, or more, so that a
    block's U is at most WINOGRAD_BLOCK_BYTES."""
    return _blocks(spec.K, gemm_workers(spec), max(1, WINOGRAD_BLOCK_BYTES // (36 * spec.C * spec.itemsize)))


def _winograd_workspace(spec):
    TH, TW, rows = winograd_plan(spec)
    isz, workers = spec.itemsize, gemm_workers(spec)
    inner = 1 if workers > 1 else _threads_for(max(spec.C, spec.K))   # a chunk's transforms: on its worker
    # per parallel chunk: the input's row buffers and gathered tile rows (48 (TW + 1) + 36 rows TW values;
    # the output's passes take 40 rows TW) and the filter's gathered taps (27 C float64), at most one chunk
    # per thread
    per_thread = workers * inner * (48 * (TW + 1) + 40 * rows * TW) * isz + _threads_for(spec.K) * 27 * spec.C * 8
    if _winograd_whole_batch(spec):
        T, kb = rows * TW, max(k1 - k0 for k0, k1 in _winograd_kblocks(spec))
        return {"transformed filter U": workers * 36 * kb * spec.C * isz,
                "transformed input V": 36 * spec.C * T * isz,
                "products M": workers * 36 * kb * T * isz, "per-thread tile rows": per_thread}
    T = workers * rows * TW
    return {"transformed filter U": 36 * spec.K * spec.C * isz,
            "transformed input V": 36 * spec.C * T * isz,
            "products M": 36 * spec.K * T * isz, "per-thread tile rows": per_thread}


def _winograd_reasons(spec) -> List[str]:
    out = _winograd_shape_reasons(spec)
    if spec.dilations[-2:] != (1, 1):
        out.append(f"dilation {spec.dilations[-2:]}: Winograd tiles need dilation 1 (winograd/f4x4-phases "
                   f"runs a dilated conv's phases)")
    return out


def _winograd_phase_reasons(spec) -> List[str]:
    out = _winograd_shape_reasons(spec)
    if spec.dilations[-2:] == (1, 1):
        out.append("not dilated: no phases to split (winograd/f4x4 runs it)")
    elif any(d > n for d, n in zip(spec.dilations[-2:], (spec.P, spec.Q)) if d > 1):
        out.append(f"dilation {spec.dilations[-2:]} against a {spec.P}x{spec.Q} output: a phase without outputs "
                   f"(a dilation at most the output's size along each dilated axis)")
    return out


def _winograd_shape_reasons(spec) -> List[str]:
    out = []
    if (spec.R, spec.S) != (3, 3):
        out.append(f"a {spec.R}x{spec.S} filter: F(4x4, 3x3) takes 3x3 only")
    if spec.strides[-2:] != (1, 1):
        out.append(f"stride {spec.strides[-2:]}: Winograd tiles need stride 1")
    if spec.groups != 1:
        out.append(f"groups={spec.groups}: the elementwise stage is one GEMM per tile position over all "
                   f"input channels (grouped and depthwise convs go to the direct kernels)")
    return out


def conv_winograd_phases(spec, x, w, b=None, flip=False):
    """A stride-1 dilated 3x3 conv as one undilated Winograd conv over its dilation phases stacked along
    the batch (:mod:`._dilation_phases`): the phase images gathered into a zero buffer, :func:`conv_winograd`
    on them, its outputs scattered back. The buffer's zeros between and after the phase images stand for
    the dilated conv's padding and meet the weight (``zero_fills_padding``)."""
    ph = _dilation_phases.DilationPhases(spec)
    xs = ph.gather(x, workspace("the dilation phases' input", ph.spec.input_shape, x.dtype))
    ys = conv_winograd(ph.spec, xs, w, b, flip=flip,
                       out=workspace("the dilation phases' output", ph.spec.output_layout, x.dtype))
    return ph.scatter(ys, np.empty(spec.output_layout, dtype=x.dtype))


def _flipped(spec):
    """``spec.flipped_forward()``, made once per spec (kept on the spec object, as the geometry records)."""
    f = spec.__dict__.get("_flipped_")
    if f is None:
        f = spec.__dict__["_flipped_"] = spec.flipped_forward()
    return f


def _input_winograd_reasons(spec) -> List[str]:
    why = spec.flipped_forward_reasons()
    if why:
        return why
    return [f"its flipped forward convolution: {r}" for r in _winograd_reasons(_flipped(spec))]


def _input_winograd_workspace(spec):
    return _winograd_workspace(_flipped(spec))


def conv_input_winograd(spec, dy, w, b=None):
    """The input gradient of an unstrided 3x3 conv (and the transposed conv) as the forward conv it equals
    (``ConvInputGradSpec.flipped_forward``: dy convolved with the flipped, transposed weight, padded by
    the window less the forward padding), run by :func:`conv_winograd` with ``flip``: its kernels read the
    flipped, transposed taps from w as it is (a copy of a 512x512x3x3 weight took 3 ms, a third of the call;
    a flipped view would compile every Winograd kernel again for its layout). Its non-finite tiles are summed again
    with the taps clipped to dy, which are exactly the definition's terms: exact for every weight."""
    return conv_winograd(_flipped(spec), dy, w, b, flip=True)


def _flipped_padding_reasons(spec) -> List[str]:
    """For an input gradient run as its flipped forward conv by a kernel whose padding zeros meet the weight
    (``zero_fills_padding``): dispatch checks the weight for Inf/NaN only in padded problems, so an unpadded
    one whose flipped conv is padded is refused."""
    if not spec.is_padded and _flipped(spec).is_padded:
        return ["unpadded, while its flipped forward convolution is padded: that padding's zeros would meet the "
                "weight, and dispatch checks the weight for Inf/NaN only in padded problems"]
    return []


def _input_winograd_phase_reasons(spec) -> List[str]:
    why = spec.flipped_forward_reasons()
    if why:
        return why
    out = [f"its flipped forward convolution: {r}" for r in _winograd_phase_reasons(_flipped(spec))]
    return out or _flipped_padding_reasons(spec)


def _input_winograd_phase_workspace(spec):
    return _winograd_phase_workspace(_flipped(spec))


def conv_input_winograd_phases(spec, dy, w, b=None):
    """The dilated counterpart of :func:`conv_input_winograd`: the flipped forward conv, dilated, by
    :func:`conv_winograd_phases`, whose zeros (the flipped conv's padding) meet the weight
    (``zero_fills_padding``; an unpadded problem whose flipped conv is padded is a reason, so dispatch's
    check of padded problems covers every case this runs)."""
    return conv_winograd_phases(_flipped(spec), dy, w, b, flip=True)


#: bytes of one chunk of the Winograd weight gradient's transformed x and dy (36 x (C + K) values per tile):
#: whole tile rows, as many as fit (at least one). Each chunk is two rounds on the GEMM workers (the
#: transforms, then the 36 GEMMs adding into M), so chunks are larger than the forward's
WINOGRAD_WEIGHT_CHUNK_BYTES = 16 << 20


def winograd_weight_plan(spec):
    """(TH, TW, rows): tile rows and columns of one image (4x4 tiles of dy) and tile rows per chunk of the
    Winograd weight gradient (:data:`WINOGRAD_WEIGHT_CHUNK_BYTES`)."""
    TH, TW = -(-spec.P // 4), -(-spec.Q // 4)
    row = 36 * (spec.C + spec.K) * TW * spec.itemsize
    return TH, TW, max(1, min(spec.N * TH, WINOGRAD_WEIGHT_CHUNK_BYTES // row))


def _winograd_weight_workspace(spec):
    TH, TW, rows = winograd_weight_plan(spec)
    T = rows * TW
    return {"the Winograd transformed x and dy (one chunk)": 36 * (spec.C + spec.K) * T * spec.itemsize,
            "the Winograd products M": 36 * spec.K * spec.C * spec.itemsize,
            "per-worker GEMM results": gemm_workers(spec) * spec.K * spec.C * spec.itemsize,
            "non-finite flags": spec.K * spec.C,
            # winograd_input's row buffers and tile rows (winograd_dy's are smaller), per Numba thread
            "per-thread tile rows": _threads() * (12 * 4 * (TW + 1) + 36 * T) * spec.itemsize}


def conv_weight_winograd(spec, x, dy):
    """See :func:`_winograd_weight`."""
    return _winograd_weight(spec, x, dy, spec, x, dy)


def conv_weight_winograd_phases(spec, x, dy):
    """A stride-1 dilated 3x3 weight gradient as the undilated one over its dilation phases stacked along
    the batch (:mod:`._dilation_phases`: x's phase images gathered into a zero buffer, dy placed at each
    phase's outputs, zeros at the outputs past a phase's own): the same sum with zero terms added, by
    :func:`_winograd_weight`, whose direct re-sum of a non-finite (k, c) runs on the dilated problem (the
    definition's terms, not the zeros'): exact for every operand."""
    ph = _dilation_phases.DilationPhases(spec)
    xs = ph.gather(x, workspace("the dilation phases' input", ph.spec.input_shape, x.dtype))
    dys = ph.gather_output(dy, workspace("the dilation phases' dy", ph.spec.operands()[1], dy.dtype))
    return _winograd_weight(ph.spec, xs, dys, spec, x, dy)


def _winograd_weight_phase_workspace(spec):
    ph = _dilation_phases.DilationPhases(spec)
    ws = _winograd_weight_workspace(ph.spec)
    ws["the dilation phases' input"] = _nbytes(ph.spec.input_shape, spec.dtype)
    ws["the dilation phases' dy"] = _nbytes(ph.spec.operands()[1], spec.dtype)
    return ws


def _winograd_weight(spec, x, dy, given, x0, dy0):
    """The weight gradient by Winograd F(3x3, 4x4) (``_numba_winograd_weight``): per chunk of tile rows, in
    order, V = B^T X B (the forward's ``winograd_input``) by blocks of input channels and D = A dY A^T
    (``winograd_dy``) by blocks of output channels, then the 36 GEMMs M[j] (+)= D[j] @ V[j]^T by blocks
    of j (the first chunk writes M, each later one adds its GEMM, so every sum has the same order whatever
    thread ran it); then dw = G^T M G per (k, c) (``winograd_weight_output``) and a direct sum of every
    (k, c) whose M or result is not finite (``winograd_weight_resum``): exact for every x and dy. All
    rounds on the GEMM workers, each Numba kernel on its worker's own thread. ``given``, ``x0``, ``dy0``: the
    problem as the user gave it, which the re-sum runs on (the same as spec, x, dy but for a dilated one's
    phases)."""
    k = kernels()
    C, K = spec.C, spec.K
    TH, TW, rows = winograd_weight_plan(spec)
    workers = gemm_workers(spec)
    geo = k.conv_geometry(spec)
    ws = _winograd_weight_workspace(spec)
    reserve(ws["per-thread tile rows"], "the Winograd kernels' per-thread tile rows")
    tasks = functools.partial(_kernel_chunks, workers)

    buf = workspace("the Winograd transformed x and dy", (36 * (C + K) * rows * TW,), x.dtype)
    M = workspace("the Winograd products", (36, K, C), x.dtype)
    none = lambda: None   # noqa: E731
    jblocks = _blocks(36, workers)
    first = [True]

    def transform(item, _):
        which, i0, i1, gr0, m, V, D = item
        if which == "x":
            k.winograd_input(x, gr0, m, TH, TW, geo, V, 0, i0, i1, tasks(i1 - i0))
        else:
            k.winograd_dy(dy, gr0, m, TH, TW, D, 0, i0, i1, tasks(i1 - i0))

    def gemm(item, tmp):
        j0, j1, V, D = item
        for j in range(j0, j1):
            if first[0]:
                np.matmul(D[j], V[j].T, out=M[j])
            else:
                np.matmul(D[j], V[j].T, out=tmp)
                M[j] += tmp

    for gr0 in range(0, spec.N * TH, rows):
        m = min(rows, spec.N * TH - gr0)
        T = m * TW
        V = buf[:36 * C * T].reshape(36, C, T)
        D = buf[36 * C * T:36 * (C + K) * T].reshape(36, K, T)
        items = ([("x", c0, c1, gr0, m, V, D) for c0, c1 in _blocks(C, workers)]
                 + [("dy", k0, k1, gr0, m, V, D) for k0, k1 in _blocks(K, workers)])
        _cpu_pool.run(items, transform, none, workers)
        _cpu_pool.run([(j0, j1, V, D) for j0, j1 in jblocks], gemm,
                      lambda: workspace("a Winograd GEMM result", (K, C), x.dtype), workers)
        first[0] = False
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    flags = workspace("the non-finite flags", (K, C), np.uint8)

    def output(item, _):
        k0, k1 = item
        k.winograd_weight_output(M, dw, flags, k0, k1, tasks(k1 - k0))

    _cpu_pool.run(_blocks(K, workers), output, none, workers)
    if flags.any():
        k.winograd_weight_resum(x0, dy0, dw, flags, k.conv_geometry(given))
    return dw


def _winograd_phase_workspace(spec):
    ph = _dilation_phases.DilationPhases(spec)
    ws = _winograd_workspace(ph.spec)
    ws["dilation phases' input"] = _nbytes(ph.spec.input_shape, spec.dtype)
    ws["dilation phases' output"] = _nbytes(ph.spec.output_layout, spec.dtype)
    return ws


def _kernel_chunks(workers: int, n: int) -> int:
    """Parallel chunks for a Numba kernel of n tasks in a round on ``workers`` GEMM workers: 1 with several
    (after setting the running worker's own Numba thread count to 1: Numba's count is per thread), else
    :func:`_chunks` (the caller alone runs it Numba-parallel)."""
    if workers > 1:
        _imports.import_module("numba").set_num_threads(1)
        return 1
    return _chunks(n)


def conv_winograd(spec, x, w, b=None, out=None, flip=False):
    """Rounds of items on the GEMM workers (:mod:`._cpu_pool`), every Numba kernel on its worker's own
    thread (so no Numba pool spins while the next round runs). In chunks of tile rows (:func:`winograd_plan`):
    U = G w G^T by blocks of output channels, then per chunk, with its own V and M: V = B^T d B
    (winograd_input), M[j] = U[j] @ V[j] for the 36 tile positions j by single-threaded BLAS, and
    out = A^T M A + b (winograd_output) into the chunk's own output tiles. For the whole batch at once
    (:func:`_winograd_whole_batch`): V by blocks of input channels, then per block of output channels, with
    its own part of U and M: that part of U, its 36 GEMMs against all of V, and its outputs. With one
    worker the caller runs each step Numba-parallel."""
    k = kernels()
    C, K = spec.C, spec.K
    TH, TW, rows = winograd_plan(spec)
    workers = gemm_workers(spec)
    geo = k.conv_geometry(spec)
    ws = _winograd_workspace(spec)
    reserve(ws["per-thread tile rows"], "the Winograd kernels' per-thread tile rows")
    out = np.empty(spec.output_layout, dtype=x.dtype) if out is None else out
    bias = _bias(spec, b, x.dtype)
    tasks = functools.partial(_kernel_chunks, workers)

    none = lambda: None   # noqa: E731
    if _winograd_whole_batch(spec):
        T, kblocks = rows * TW, _winograd_kblocks(spec)
        kb = max(k1 - k0 for k0, k1 in kblocks)
        V = workspace("the Winograd transformed input", (36, C, T), x.dtype)

        def transform_in(item, _):
            c0, c1 = item
            k.winograd_input(x, 0, rows, TH, TW, geo, V, 0, c0, c1, tasks(c1 - c0))

        def scratch():
            return (workspace("the Winograd transformed filter", (36 * kb * C,), x.dtype),
                    workspace("the Winograd products", (36 * kb * T,), x.dtype))

        def block(item, s):
            k0, k1 = item
            Ub = s[0][:36 * (k1 - k0) * C].reshape(36, k1 - k0, C)
            Mb = s[1][:36 * (k1 - k0) * T].reshape(36, k1 - k0, T)
            k.winograd_filter(w, Ub, k0, k1, k0, flip)
            np.matmul(Ub, V, out=Mb)
            k.winograd_output(Mb, bias, out, 0, rows, TH, TW, x, w, geo, flip, 0, k0, k1, k0, tasks(k1 - k0))

        _cpu_pool.run(_blocks(C, workers), transform_in, none, workers)
        _cpu_pool.run(kblocks, block, scratch, workers)
        return out

    U = workspace("the Winograd transformed filter", (36, K, C), x.dtype)

    def filt(item, _):
        tasks(item[1] - item[0])
        k.winograd_filter(w, U, item[0], item[1], 0, flip)

    def scratch():
        return (workspace("the Winograd transformed input", (36 * C * rows * TW,), x.dtype),
                workspace("the Winograd products", (36 * K * rows * TW,), x.dtype))

    def one(gr0, s):
        Vbuf, Mbuf = s
        m = min(rows, spec.N * TH - gr0)
        Vc = Vbuf[:36 * C * m * TW].reshape(36, C, m * TW)
        Mc = Mbuf[:36 * K * m * TW].reshape(36, K, m * TW)
        k.winograd_input(x, gr0, m, TH, TW, geo, Vc, 0, 0, C, tasks(C))
        np.matmul(U, Vc, out=Mc)
        k.winograd_output(Mc, bias, out, gr0, m, TH, TW, x, w, geo, flip, 0, 0, K, 0, tasks(K))

    _cpu_pool.run(_blocks(K, workers), filt, none, workers)
    _cpu_pool.run(list(range(0, spec.N * TH, rows)), one, scratch, workers)
    return out


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
def _pool_out(spec, x):
    out = np.empty(spec.output_layout, dtype=x.dtype)
    # a (1,1,1,1[,1]) dummy keeps the kernel signature fixed when indices are not wanted
    layout = spec.output_layout
    idx = np.empty(layout if spec.return_indices else (1,) * len(layout), dtype=np.int64)
    return out, idx


def _pool_result(spec, out, idx):
    return (out, idx) if spec.return_indices else out


def max_pool(spec, x):
    return _bind_max_pool(spec, launch=_dispatched)(x)


def _bind_max_pool(spec, serial=False, launch=None):
    """:func:`max_pool` with its kernel (``serial``: its serial twin), geometry and shapes worked out once."""
    k = kernels()
    kern, geo = (launch or _Launch)(k.max_pool2d_serial if serial else k.max_pool2d), k.pool_geometry(spec)
    layout, dtype, want = spec.output_layout, np.dtype(spec.dtype), spec.return_indices
    idx_shape = layout if want else (1,) * len(layout)

    def go(x):
        out = np.empty(layout, dtype=dtype)
        idx = np.empty(idx_shape, dtype=np.int64)
        kern(x, out, idx, want, geo)
        return (out, idx) if want else out
    go.threadless = serial
    return go


max_pool.bind = _bind_max_pool


def _avg_divisor(spec) -> int:
    return spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero


def avg_pool(spec, x):
    return _bind_avg_pool(spec, launch=_dispatched)(x)


def _bind_avg_pool(spec, serial=False, launch=None):
    """:func:`avg_pool` with its kernel (``serial``: its serial twin), geometry and divisor worked out once."""
    k = kernels()
    kern, geo = (launch or _Launch)(k.avg_pool2d_serial if serial else k.avg_pool2d), k.pool_geometry(spec)
    layout, dtype, include, div = spec.output_layout, np.dtype(spec.dtype), spec.count_include_pad, _avg_divisor(spec)

    def go(x):
        out = np.empty(layout, dtype=dtype)
        kern(x, out, geo, include, div)
        return out
    go.threadless = serial and spec.Q >= spec.S   # (Q < S: avg_pool2d runs the parallel per-window kernel)
    return go


avg_pool.bind = _bind_avg_pool


def _pool2x2_reasons(spec) -> List[str]:
    """The 2x2 pools (``max_pool2x2``, ``avg_pool2x2``): kernel 2x2, stride 2, no padding, no dilation, and
    every window whole (ceil_mode on an odd size adds a window that overhangs the plane)."""
    out = []
    if (spec.R, spec.S) != (2, 2):
        out.append(f"its window is {spec.R}x{spec.S}, not 2x2")
    if (spec.stride_h, spec.stride_w) != (2, 2):
        out.append(f"its stride is ({spec.stride_h}, {spec.stride_w}), not 2")
    if spec.is_padded:
        out.append("it is padded")
    if (spec.dil_h, spec.dil_w) != (1, 1):
        out.append(f"its dilation is ({spec.dil_h}, {spec.dil_w}), not 1")
    if not out and (spec.P, spec.Q) != (spec.H // 2, spec.W // 2):
        out.append("ceil_mode adds a window that overhangs the plane")
    return out


def _row_chunks(spec) -> int:
    """Parallel chunks of a kernel cut by output rows (the N*C*P rows of ``max_pool2x2``/``avg_pool2x2``):
    :func:`_sized_chunks` of them."""
    return _sized_chunks(spec, spec.N * spec.C * spec.P)


def max_pool_2x2(spec, x):
    """``max_pool2x2``: the 2x2, stride-2 max pool, its output rows in chunks (:func:`_on_workers`)."""
    return _bind_max_pool_2x2(spec)(x)


def _bind_max_pool_2x2(spec, serial=False, launch=None):
    """:func:`max_pool_2x2` with its shapes and chunks worked out once; ``serial``: one call of the kernel
    through its compiled entry point (``_Launch``), on the calling thread."""
    k = kernels()
    layout, dtype, want = spec.output_layout, np.dtype(spec.dtype), spec.return_indices
    idx_shape = layout if want else (1,) * len(layout)
    if serial:
        kern = (launch or _Launch)(k.max_pool2x2)

        def go(x):
            out = np.empty(layout, dtype=dtype)
            idx = np.empty(idx_shape, dtype=np.int64)
            kern(x, out, idx, want, 0, 1, 1)
            return (out, idx) if want else out
        go.threadless = True
        return go
    nchunk = _row_chunks(spec)

    def go(x):
        out = np.empty(layout, dtype=dtype)
        idx = np.empty(idx_shape, dtype=np.int64)
        _on_workers(spec, "max2x2", nchunk, lambda *c: k.max_pool2x2(x, out, idx, want, *c),
                    lambda *c: k.max_pool2x2_prange(x, out, idx, want, *c))
        return (out, idx) if want else out
    return go


max_pool_2x2.bind = _bind_max_pool_2x2


def avg_pool_2x2(spec, x):
    """``avg_pool2x2``: the 2x2, stride-2 average pool (divisor 4 or divisor_override), as max_pool_2x2."""
    return _bind_avg_pool_2x2(spec)(x)


def _bind_avg_pool_2x2(spec, serial=False, launch=None):
    """:func:`avg_pool_2x2` with its shapes, divisor and chunks worked out once (``serial`` as
    :func:`_bind_max_pool_2x2`)."""
    k = kernels()
    layout, dtype = spec.output_layout, np.dtype(spec.dtype)
    div = spec.divisor_override if spec.divisor_override is not None else 4   # (validated non-zero)
    if serial:
        kern = (launch or _Launch)(k.avg_pool2x2)

        def go(x):
            out = np.empty(layout, dtype=dtype)
            kern(x, out, div, 0, 1, 1)
            return out
        go.threadless = True
        return go
    nchunk = _row_chunks(spec)

    def go(x):
        out = np.empty(layout, dtype=dtype)
        _on_workers(spec, "avg2x2", nchunk, lambda *c: k.avg_pool2x2(x, out, div, *c),
                    lambda *c: k.avg_pool2x2_prange(x, out, div, *c))
        return out
    return go


avg_pool_2x2.bind = _bind_avg_pool_2x2


def _global_reasons(spec) -> List[str]:
    """The global pools (one window per plane) take a 1x1 output only."""
    if (spec.P, spec.Q) != (1, 1):
        return [f"its output is {spec.P}x{spec.Q}, not 1x1 (the global path takes one window per plane)"]
    return []


def avg_pool_global(spec, x):
    """``global_avg_pool2d``: a 1x1 output, one float64 sum per plane (the general kernel's numerics)."""
    div = spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero
    return _global_avg(spec, x, kernels().pool_geometry(spec), spec.count_include_pad, div)


def _global_avg(spec, x, geo, count_include_pad, divisor_override):
    """``global_avg_pool2d``'s chunks over the planes of ``x`` (:func:`_on_workers`) into a new output."""
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    args = (x, out, geo, count_include_pad, divisor_override)
    _on_workers(spec, "global", _plane_chunks(spec, k.GLOBAL_PLANES), lambda *c: k.global_avg_pool2d(*args, *c),
                lambda *c: k.global_avg_pool2d_prange(*args, *c))
    return out


def _whole_plane_geometry(spec):
    """The window of adaptive_avg_pool2d to 1x1 (rows [0, H), columns [0, W), its mean over H*W values) as
    avg_pool2d's: kernel (H, W), no padding (divisor H*W)."""
    k = kernels()
    return k.PoolGeometry(R=spec.H, S=spec.W, stride_h=1, stride_w=1, pad_top=0, pad_bottom=0, pad_left=0,
                          pad_right=0, dil_h=1, dil_w=1)


def adaptive_avg_pool_global(spec, x):
    return _global_avg(spec, x, _whole_plane_geometry(spec), True, 0)


def _adaptive_pool(spec, x, is_max):
    k = kernels()
    out, idx = _pool_out(spec, x)
    k.adaptive_pool2d(x, out, idx, spec.return_indices, is_max, k.adaptive_windows(spec))
    return _pool_result(spec, out, idx)


def adaptive_max_pool(spec, x):
    return _adaptive_pool(spec, x, True)


def adaptive_avg_pool(spec, x):
    return _adaptive_pool(spec, x, False)


# ---------------------------------------------------------------------------------------------------
# Convolution gradients: the input gradient (transposed convolution) and the weight gradient
# ---------------------------------------------------------------------------------------------------
def _dx_bias(spec, b, dtype):
    return b if b is not None else np.zeros(spec.C, dtype=dtype)


def conv_input_direct(spec, dy, w, b=None):
    k = kernels()
    _reserve_for(spec, _input_direct_workspace, "the input-gradient direct kernel's per-thread dx rows")
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    k.conv2d_input_direct(dy, w, _dx_bias(spec, b, dy.dtype), dx, k.conv_geometry(spec))
    return dx


def _tile_of_dy(dyg, n0, m, g, stage):
    """dy of images n0..n0+m-1, group g, side by side as [K/G, m*P*Q] (the GEMM operand of a tile)."""
    Kg, PQ = dyg.shape[2], dyg.shape[3]
    stage[:, :m * PQ].reshape(Kg, m, PQ)[...] = dyg[n0:n0 + m, g].transpose(1, 0, 2)
    return stage[:, :m * PQ]


#: bytes of conv_input im2col's column matrix when one image fills a tile: the image's output rows go in
#: bands of this size, so the GEMM writes and col2im_add reads a block that stays in cache (1 MiB: twice
#: a core's L2 on the AMD EPYC machines, well inside the L3 the two cores share).
BAND_BYTES = 1 << 20


def rows_per_band(spec) -> int:
    """Output rows per band of conv_input im2col with one image per tile (all P with several images)."""
    if images_per_tile(spec) > 1:
        return spec.P
    return max(1, min(spec.P, BAND_BYTES // (spec.gemm_k * spec.Q * spec.itemsize)))


def _col2im_workspace(spec):
    """Per GEMM worker: a tile's (or band's) column matrix, and with several images their staged dy; or,
    for a pointwise conv's whole batch at once (:func:`_pointwise_whole_batch`), its dy and dx side by side."""
    if _pointwise_whole_batch(spec):
        return _batch_workspace(spec, ("the whole batch's dy", spec.K_per_group),
                                ("the whole batch's dx", spec.C_per_group))
    nb, workers = images_per_tile(spec), gemm_workers(spec)
    ws = {"column matrix": workers * spec.gemm_k * nb * rows_per_band(spec) * spec.Q * spec.itemsize}
    if nb > 1:
        ws["staged dy"] = workers * spec.K_per_group * nb * spec.P * spec.Q * spec.itemsize
    return ws


def _input_direct_workspace(spec):
    CB = kernels().CB
    tasks = spec.N * spec.groups * -(-spec.C_per_group // CB)
    return {"per-thread dx rows": _threads_for(tasks) * CB * spec.W * spec.itemsize}


def conv_input_im2col(spec, dy, w, b=None):
    """Per (tile, group) item (a tile: several whole images, or one image whose output rows go band by band
    in row order inside the item), on the GEMM workers: dx[tile, group's channels] starts at the bias (or
    zero), then per band col = w[group]^T @ dy[tile, group] by BLAS and col2im_add adds each column entry to
    the input position its tap reads (taps in the padding dropped: exact for every weight). Items write
    disjoint parts of dx."""
    N, G, Kg, P, Q = spec.N, spec.groups, spec.K_per_group, spec.P, spec.Q
    PQ, Cg = P * Q, spec.C_per_group
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    wg = w.reshape(G, Kg, spec.gemm_k)
    dyg = dy.reshape(N, G, Kg, PQ)
    if _pointwise_whole_batch(spec):
        _conv_input_pointwise_batch(spec, dyg, wg, dx.reshape(N, G, Cg, PQ), b)
        return dx
    nb = images_per_tile(spec)
    rows = rows_per_band(spec)
    geo = k.conv_geometry(spec)
    items = [(n0, min(nb, N - n0), g) for n0 in range(0, N, nb) for g in range(G)]

    def scratch():
        buf = workspace("col2im's column matrix", (spec.gemm_k * nb * rows * Q,), dy.dtype)
        stage = workspace("col2im's staged dy", (Kg, nb * PQ), dy.dtype) if nb > 1 else None
        return buf, stage

    def one(item, s):
        n0, m, g = item
        buf, stage = s
        part = dx[n0:n0 + m, g * Cg:(g + 1) * Cg]
        if b is None:
            part[...] = 0
        else:
            part[...] = b[g * Cg:(g + 1) * Cg, None, None]
        wt = wg[g].T
        if nb > 1:
            col = buf.reshape(spec.gemm_k, nb * rows * Q)
            np.matmul(wt, _tile_of_dy(dyg, n0, m, g, stage), out=col[:, :m * PQ])
            k.col2im_add(col, dx, n0, m, g, 0, P, geo)
            return
        for p0 in range(0, P, rows):
            p1 = min(P, p0 + rows)
            band = buf[:spec.gemm_k * (p1 - p0) * Q].reshape(spec.gemm_k, (p1 - p0) * Q)   # contiguous
            np.matmul(wt, dyg[n0, g, :, p0 * Q:p1 * Q], out=band)
            k.col2im_add(band, dx, n0, 1, g, p0, p1, geo)

    _cpu_pool.run(items, one, scratch, gemm_workers(spec))
    return dx


def _conv_input_pointwise_batch(spec, dyg, wg, dxg, b):
    """The pointwise input gradient of the whole batch: dy of every image side by side per group (one copy
    by the caller), then dx_all[group] = w[group]^T @ dy_all[group] by BLAS in blocks of the result
    (:func:`_gemm_blocks`) on the GEMM workers, then dx = (the bias, or zero) + its columns, one pass by
    the caller (see BATCH_GEMM_BYTES). The sums are col2im's (one term per position after the GEMM's)."""
    N, G, Kg, Cg, PQ = spec.N, spec.groups, spec.K_per_group, spec.C_per_group, spec.P * spec.Q
    dyt = workspace("the whole batch's dy", (G, Kg, N * PQ), dyg.dtype)
    res = workspace("the whole batch's dx", (G, Cg, N * PQ), dyg.dtype)
    dyt.reshape(G, Kg, N, PQ)[...] = dyg.transpose(1, 2, 0, 3)
    bias = None if b is None else b.reshape(G, Cg, 1)
    zero = dyg.dtype.type(0)

    def gemm(item, _):
        g, c0, c1, j0, j1 = item
        np.matmul(wg[g, :, c0:c1].T, dyt[g, :, j0:j1], out=res[g, c0:c1, j0:j1])

    _cpu_pool.run(_gemm_blocks(spec, rows=Cg), gemm, lambda: None, gemm_workers(spec))
    np.add(zero if bias is None else bias, res.reshape(G, Cg, N, PQ).transpose(2, 0, 1, 3), out=dxg)


def conv_input_depthwise(spec, dy, w, b=None):
    """dx of a depthwise conv (C/groups == 1): ``conv2d_depthwise_input``, several planes per parallel
    chunk, taps clipped to the input (exact for every weight); no workspace."""
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    args = (dy, w, _dx_bias(spec, b, dy.dtype), dx, k.conv_geometry(spec))
    _on_workers(spec, "input", _chunks(spec.N * spec.C), lambda *c: k.conv2d_depthwise_input(*args, *c),
                lambda *c: k.conv2d_depthwise_input_prange(*args, *c))
    return dx


#: ``depthwise-flipped`` and ``depthwise-cblock`` take problems of at least this many channels (the
#: channel-blocked kernel's block, CBLK): below it they lost to the kernels after them, which a problem too
#: small to measure (MEASURE_MIN_FLOPS) gets by rule (2 threads: a (1, 3, 224, 224) weight gradient 4.9 ms
#: against 0.19, a (8, 8, 28, 28) input gradient 158 us against 57); from it up they won on every MobileNet
#: depthwise layer
FEW_CHANNELS = 16


def _input_depthwise_flipped_reasons(spec) -> List[str]:
    why = spec.flipped_forward_reasons()
    if why:
        return why
    f = _flipped(spec)
    out = [f"its flipped forward convolution: {r}" for r in _phase_reasons(f)]
    if not out and spec.C < FEW_CHANNELS:
        out.append(f"{spec.C} channels: fewer than {FEW_CHANNELS}, where the clipped kernel's long rows are quicker")
    return out or _flipped_padding_reasons(spec)


def _input_depthwise_flipped_workspace(spec):
    return _phase_workspace(_flipped(spec))


def conv_input_depthwise_flipped(spec, dy, w, b=None):
    """The unstrided input gradient (and transposed conv) of a conv with one output channel per group
    (a depthwise conv's with channel multiplier 1) as the forward conv it equals
    (``ConvInputGradSpec.flipped_forward``: dy convolved with the flipped weight, padded by the window less
    the forward padding), which is a depthwise conv: run by the forward's phase kernel
    (:func:`conv_depthwise_phase`) on a flipped copy of w (C*R*S values). The clipped kernel's per-tap
    passes over 7-value rows cost 3x the forward's time on MobileNet's 7x7 and 14x14 planes. The phase
    kernel's zeros (the flipped conv's padding) meet the weight (``zero_fills_padding``; an unpadded problem
    whose flipped conv is padded is a reason, so dispatch's check of padded problems covers every run)."""
    wf = np.ascontiguousarray(spec.flip_weight(w))
    return conv_depthwise_phase(_flipped(spec), dy, wf, b)


def _weight_cblock_reasons(spec) -> List[str]:
    out = _depthwise_reasons(spec)
    if not out and spec.K != spec.C:
        out.append(f"a channel multiplier of {spec.K // spec.C}: this kernel takes one output channel per input "
                   "channel")
    if not out and spec.C < FEW_CHANNELS:
        out.append(f"{spec.C} channels: fewer than {FEW_CHANNELS}, a block of channels, whose other lanes would "
                   "be unused")
    return out or _phase_bound_reasons(spec)       # (its planes are the padded region, split by column phase)


def _weight_cblock_workspace(spec):
    k = kernels()
    return {"per-worker channel-blocked planes": _threads_for(-(-spec.C // k.CBLK)) * k.CBLK
            * (_cblock_x_values(spec) + spec.P * spec.Q * (1 + spec.R * spec.S)) * spec.itemsize}


def _cblock_x_values(spec):
    """Values per channel of ``conv2d_depthwise_weight_cblock``'s x planes: extent_h rows of its sw column
    phases, ceil(extent_w / sw) values each."""
    eh, ew = spec.input_extent_hw()
    return eh * spec.stride_w * -(-ew // spec.stride_w)


def conv_weight_depthwise_cblock(spec, x, dy):
    """dw of a depthwise conv with channel multiplier 1 (``conv2d_depthwise_weight_cblock``): CBLK channels
    side by side, channel innermost, per image one copy of the block's padded x planes and dy planes, then
    each (output row, tap) one multiply-add over a contiguous Q*CBLK run into the tap's row lanes, which
    are summed over q once per block: no loops over short rows, and CBLK sums closed at once (on 7x7 planes
    those were most of the per-plane kernels' time). Blocks of channels in parallel chunks. Its padding
    zeros meet dy, so a NaN result is computed again by the clipped kernel, as
    :func:`conv_weight_depthwise` does: exact for every operand."""
    k = kernels()
    _reserve_for(spec, _weight_cblock_workspace, "the channel-blocked depthwise weight gradient's planes")
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    geo = k.conv_geometry(spec)
    B = k.CBLK

    def scratch(n):
        return (workspace("the channel-blocked x planes", (n, _cblock_x_values(spec) * B), x.dtype, zero=True),
                workspace("the channel-blocked dy planes", (n, spec.P * spec.Q * B), x.dtype),
                workspace("the channel-blocked row lanes", (n, spec.R * spec.S * spec.Q * B), x.dtype))
    _on_workers(spec, "weight-cblock", _chunks(-(-spec.C // B)),
                lambda *c: k.conv2d_depthwise_weight_cblock(x, dy, dw, geo, *c),
                lambda *c: k.conv2d_depthwise_weight_cblock_prange(x, dy, dw, geo, *c), scratch)
    if np.isnan(dw).any():
        return _weight_clipped(spec, x, dy, dw)
    return dw


def _depthwise_lanes_workspace(spec):
    ws = {"per-worker lane accumulators": _threads_for(spec.K) * spec.R * spec.S * spec.Q * spec.itemsize}
    if not _phase_bound_reasons(spec):
        nworkers, _, buf, acc = _weight_phase_plan(spec)
        ws.update({"phase-split planes": nworkers * buf * spec.itemsize,
                   "dy planes": nworkers * acc * spec.itemsize,
                   "per-worker tap lanes": nworkers * spec.R * spec.S * kernels().LW * spec.itemsize})
    return ws


def _weight_phase_plan(spec):
    """The forward phase kernel's plan (images per task, buffer sizes) with one worker per thread over the
    output channels."""
    _, nb, buf, acc = phase_plan(spec)
    return _threads_for(spec.K), nb, buf, acc


def conv_weight_depthwise(spec, x, dy):
    """dw of a depthwise conv (C/groups == 1), output channels in parallel chunks. Where the phase-split
    buffer is not mostly padding (``_phase_bound_reasons``): ``conv2d_depthwise_weight_phase``, every tap
    one long update of a few lanes over the zero-padded planes of several images (small planes: 7x7 rows
    of 7 were one short loop each). Its zeros meet dy and x, so an Inf or NaN among them gives a NaN where
    the clipped sum may not: when dw holds a NaN, it is computed again by ``conv2d_depthwise_weight`` (a lane
    accumulator per tap, taps clipped to the input: exact for every operand), which also runs where the
    phase buffer would be mostly padding. Either way the result is the same run to run."""
    k = kernels()
    _reserve_for(spec, _depthwise_lanes_workspace, "the depthwise weight gradient's lane accumulators")
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    geo = k.conv_geometry(spec)
    nchunk = _chunks(spec.K)
    if not _phase_bound_reasons(spec):
        _, nb, buf, acc = _weight_phase_plan(spec)

        def phase_scratch(n):
            return (workspace("the depthwise weight gradient's padded planes", (n, buf), x.dtype, zero=True),
                    workspace("the depthwise weight gradient's dy planes", (n, acc), x.dtype, zero=True),
                    workspace("the depthwise weight gradient's tap lanes", (n, spec.R * spec.S * k.LW), x.dtype))
        _on_workers(spec, "weight-phase", nchunk, lambda *c: k.conv2d_depthwise_weight_phase(x, dy, dw, geo, nb, *c),
                    lambda *c: k.conv2d_depthwise_weight_phase_prange(x, dy, dw, geo, nb, *c), phase_scratch)
        if not np.isnan(dw).any():
            return dw
    return _weight_clipped(spec, x, dy, dw)


def _weight_clipped(spec, x, dy, dw):
    """dw (into ``dw``) by ``conv2d_depthwise_weight``: taps clipped to the input, exact for every operand."""
    k = kernels()
    geo = k.conv_geometry(spec)

    def scratch(n):
        return (workspace("the depthwise weight gradient's lane accumulators", (n, spec.R * spec.S * spec.Q),
                          x.dtype),)
    _on_workers(spec, "weight", _chunks(spec.K), lambda *c: k.conv2d_depthwise_weight(x, dy, dw, geo, *c),
                lambda *c: k.conv2d_depthwise_weight_prange(x, dy, dw, geo, *c), scratch)
    return dw


def _weight_direct_workspace(spec):
    KBW = kernels().KBW
    tasks = spec.groups * -(-spec.K_per_group // KBW) * spec.C_per_group
    return {"per-thread lane accumulators": _threads_for(tasks) * KBW * spec.window_elems * spec.Q * spec.itemsize}


def conv_weight_direct(spec, x, dy):
    k = kernels()
    _reserve_for(spec, _weight_direct_workspace, "the weight-gradient direct kernel's lane accumulators")
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    k.conv2d_weight_direct(x, dy, dw, k.conv_geometry(spec))
    return dw


def _weight_chunks(spec, tiles: int) -> int:
    """Fixed runs of consecutive tiles whose dw terms are summed apart and then added in order: one per
    GEMM worker and two with several (a worker on a busy core takes fewer), never more than the tiles."""
    workers = gemm_workers(spec)
    return max(1, min(tiles, 1 if workers == 1 else 2 * workers))


def _conv_weight_pointwise_batch(spec, x, dy, dw):
    """The pointwise weight gradient of the whole batch: dy and x of every image side by side per group
    (one copy each, by the caller), then dw[group] = dy_all[group] @ x_all[group]^T by BLAS in blocks of
    dw (:func:`_gemm_blocks`) on the GEMM workers: one GEMM over all N*P*Q positions, so no partial sums to
    add (see BATCH_GEMM_BYTES)."""
    N, G, Kg, Cg, PQ = spec.N, spec.groups, spec.K_per_group, spec.C_per_group, spec.P * spec.Q
    dyt = workspace("the whole batch's dy", (G, Kg, N * PQ), dy.dtype)
    xt = workspace("the whole batch's x", (G, Cg, N * PQ), x.dtype)
    dyt.reshape(G, Kg, N, PQ)[...] = dy.reshape(N, G, Kg, PQ).transpose(1, 2, 0, 3)
    xt.reshape(G, Cg, N, PQ)[...] = x.reshape(N, G, Cg, PQ).transpose(1, 2, 0, 3)
    dwg = dw.reshape(G, Kg, Cg)

    def gemm(item, _):
        g, k0, k1, c0, c1 = item
        np.matmul(dyt[g, k0:k1], xt[g, c0:c1].T, out=dwg[g, k0:k1, c0:c1])

    _cpu_pool.run(_gemm_blocks(spec, cols=Cg), gemm, lambda: None, gemm_workers(spec))


def _weight_im2col_workspace(spec):
    """Per GEMM worker: a tile's column matrix (and staged dy), and one GEMM result; per run of tiles
    after the first, its partial dw; or, for a pointwise conv's whole batch at once
    (:func:`_pointwise_whole_batch`), its dy and x side by side."""
    if _pointwise_whole_batch(spec):
        return _batch_workspace(spec, ("the whole batch's dy", spec.K_per_group),
                                ("the whole batch's x", spec.C_per_group))
    ws = _im2col_workspace(spec)
    if "staged output" in ws:
        ws["staged dy"] = ws.pop("staged output")
    tiles = -(-spec.N // images_per_tile(spec)) * -(-spec.P // rows_per_image_band(spec))
    dw_bytes = spec.K_per_group * spec.gemm_k * spec.itemsize
    if tiles > 1:
        ws["GEMM results"] = gemm_workers(spec) * dw_bytes
    chunks = _weight_chunks(spec, tiles)
    if chunks > 1:
        ws["partial dw"] = (chunks - 1) * spec.groups * dw_bytes
    return ws


def conv_weight_im2col(spec, x, dy):
    """The tiles (several whole images, or bands of one image's output rows) in batch then row order are
    cut into a fixed number of runs (:func:`_weight_chunks`); per (run, group) item, on the GEMM workers:
    for each tile, pack its column matrix, then dw_run[group] += dy[tile, group] @ col^T by BLAS (the
    run's first tile writes). The first run sums into dw, the others into their own partial dw, added to dw
    in run order after all items: the sums do not depend on which worker ran what. The column matrix holds
    zeros in the padding (``zero_fills_padding``: an Inf or NaN in dy would meet them)."""
    N, G, Kg, PQ, Q = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q, spec.Q
    k = kernels()
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    if _pointwise_whole_batch(spec):
        _conv_weight_pointwise_batch(spec, x, dy, dw)
        return dw
    dwg = dw.reshape(G, Kg, spec.gemm_k)
    dyg = dy.reshape(N, G, Kg, PQ)
    nb, rows = images_per_tile(spec), rows_per_image_band(spec)
    geo = k.conv_geometry(spec)
    tiles = list(_im2col_tiles(spec))
    chunks = _weight_chunks(spec, len(tiles))
    bounds = [len(tiles) * c // chunks for c in range(chunks + 1)]
    partial = (workspace("the partial weight gradients", (chunks - 1, G, Kg, spec.gemm_k), x.dtype)
               if chunks > 1 else None)

    def scratch():
        col = workspace("im2col's column matrix", (spec.gemm_k, nb * rows * Q), x.dtype)
        stage = workspace("im2col's staged dy", (Kg, nb * PQ), x.dtype) if nb > 1 else None
        part = workspace("a weight-gradient GEMM result", (Kg, spec.gemm_k), x.dtype) if len(tiles) > 1 else None
        return col, stage, part

    def one(item, s):
        c, g = item
        col, stage, part = s
        acc = dwg[g] if c == 0 else partial[c - 1, g]
        for i in range(bounds[c], bounds[c + 1]):
            n0, m, p0, p1 = tiles[i]
            if nb == 1:
                k.im2col_pack_rows(x, n0, g, geo, col, 0, p0, p1)
                d, cm = dyg[n0, g, :, p0 * Q:p1 * Q], col[:, :(p1 - p0) * Q]
            else:
                k.im2col_pack_tile(x, n0, m, g, geo, col)
                d, cm = _tile_of_dy(dyg, n0, m, g, stage), col[:, :m * PQ]
            if i == bounds[c]:
                np.matmul(d, cm.T, out=acc)
            else:
                np.matmul(d, cm.T, out=part)
                acc += part

    _cpu_pool.run([(c, g) for c in range(chunks) for g in range(G)], one, scratch, gemm_workers(spec))
    for c in range(1, chunks):
        dwg += partial[c - 1]
    return dw


# ---------------------------------------------------------------------------------------------------
# Pool gradients and max_unpool
# ---------------------------------------------------------------------------------------------------
#: the least work (bytes of input and output) a parallel chunk of a plane kernel is given: starting one
#: costs a few microseconds, about the time to move this many bytes
CHUNK_MIN_BYTES = 64 << 10

#: ``warming``: set on a thread for the duration of :meth:`NumbaImpl.warm` (``fastconv warmup``'s tiny
#: problems are then cut into chunks as a large one would be, so their parallel launches compile too)
_WARMING = threading.local()


def _chunk_min_bytes() -> int:
    """CHUNK_MIN_BYTES, or 1 while this thread warms (:meth:`NumbaImpl.warm`)."""
    return 1 if getattr(_WARMING, "on", False) else CHUNK_MIN_BYTES


def _sized_chunks(spec, tasks: int) -> int:
    """Parallel chunks of ``tasks`` independent pieces of a pool-like kernel over all of ``spec``'s input and
    output: a few per thread (``_chunks``), none smaller than CHUNK_MIN_BYTES (a tiny problem runs as one
    chunk)."""
    nbytes = spec.N * spec.C * (spec.in_elems + spec.out_elems) * spec.itemsize
    return max(1, min(_chunks(tasks), nbytes // _chunk_min_bytes()))


def _plane_chunks(spec, planes: int = 1) -> int:
    """Parallel chunks of a plane kernel working on blocks of ``planes`` (n, c) planes: :func:`_sized_chunks`
    of the blocks."""
    return _sized_chunks(spec, -(-spec.N * spec.C // planes))


def max_pool_backward(spec, dy, indices):
    """Shared by max_pool_backward and adaptive_max_pool_backward: dy scattered to its index, except from
    windows holding no input position (``_indices.window_bounds``: their outputs do not depend on x)."""
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    live_h, live_w = _indices.window_bounds(spec)[5::3]       # (start, taps, live) per D, H, W
    k.pool2d_scatter_backward(dy, indices, dx, live_h, live_w, _plane_chunks(spec))
    return dx


def _adaptive_disjoint(size_in: int, size_out: int) -> bool:
    """No two adaptive windows along an axis share a position."""
    wins = [adaptive_window(i, size_in, size_out) for i in range(size_out)]
    return all(a[1] <= b[0] for a, b in zip(wins, wins[1:]))


def _disjoint_reasons(spec) -> List[str]:
    """The disjoint-window gradients: no input position in two windows (each receives one term or none)."""
    if spec.is_adaptive:
        if _adaptive_disjoint(spec.H, spec.P) and _adaptive_disjoint(spec.W, spec.Q):
            return []
        return [f"its adaptive windows ({spec.H}x{spec.W} to {spec.P}x{spec.Q}) overlap"]
    out = []
    for axis, stride, k, dil in (("height", spec.stride_h, spec.R, spec.dil_h),
                                 ("width", spec.stride_w, spec.S, spec.dil_w)):
        if stride < dil * (k - 1) + 1:
            out.append(f"its windows overlap along the {axis} (stride {stride} < window extent {dil * (k - 1) + 1})")
    return out


def max_pool_backward_disjoint(spec, dy, indices):
    """Shared by max_pool_backward and adaptive_max_pool_backward where no two windows overlap (every
    index in its window, as ``fastconv.grad`` checks them): each dy written at its index."""
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    live_h, live_w = _indices.window_bounds(spec)[5::3]       # (start, taps, live) per D, H, W
    k.pool2d_scatter_backward_disjoint(dy, indices, dx, live_h, live_w, _plane_chunks(spec))
    return dx


def avg_pool_backward_disjoint(spec, dy):
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    div = spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero
    k.avg_pool2d_backward_disjoint(dy, dx, k.pool_geometry(spec), spec.count_include_pad, div, _plane_chunks(spec))
    return dx


def adaptive_avg_pool_backward_global(spec, dy):
    """adaptive_avg_pool2d to 1x1: avg_pool2d's gradient of the whole-plane kernel (one window)."""
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    k.avg_pool2d_backward_disjoint(dy, dx, _whole_plane_geometry(spec), True, 0, _plane_chunks(spec))
    return dx


def avg_pool_backward(spec, dy):
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    div = spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero
    k.avg_pool2d_backward(dy, dx, k.pool_geometry(spec), spec.count_include_pad, div, _plane_chunks(spec))
    return dx


def adaptive_avg_pool_backward(spec, dy):
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    k.adaptive_avg_pool2d_backward(dy, dx, k.adaptive_windows(spec), _plane_chunks(spec))
    return dx


def max_unpool(spec, x, indices):
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    k.max_unpool2d(x, indices, out)
    return out


# ---------------------------------------------------------------------------------------------------
# 3-D problems (kernels in _numba_3d and _numba_3d_pool; arrays in the 5-D layout)
# ---------------------------------------------------------------------------------------------------
def slices_per_tile(spec) -> int:
    """Output depth slices per column matrix of the 3-D im2col paths: as many as fit in TILE_BYTES (at
    least one), so the workspace is a band of one image's column matrix, never a whole volume's (a 32^3
    output with 64 channels and a 3x3x3 kernel would need 226 MiB)."""
    one = spec.gemm_k * spec.P * spec.Q * spec.itemsize
    return max(1, min(spec.Z, TILE_BYTES // one))


def _vol2col_workspace(spec):
    return {"column matrix": spec.gemm_k * slices_per_tile(spec) * spec.P * spec.Q * spec.itemsize}


def _weight_vol2col_workspace(spec):
    return dict(_vol2col_workspace(spec), **{"partial dw": spec.K_per_group * spec.gemm_k * spec.itemsize})


def _direct3d_workspace(spec):
    KB = kernels().KB
    tasks = spec.N * spec.groups * -(-spec.K_per_group // KB) * spec.Z
    return {"per-thread output rows": _threads_for(tasks) * KB * spec.Q * spec.itemsize}


def _input_direct3d_workspace(spec):
    CB = kernels().CB
    tasks = spec.N * spec.groups * -(-spec.C_per_group // CB) * spec.D
    return {"per-thread dx rows": _threads_for(tasks) * CB * spec.W * spec.itemsize}


def conv3d_direct(spec, x, w, b=None):
    k = kernels()
    _reserve_for(spec, _direct3d_workspace, "the 3-D direct kernel's per-thread output rows")
    out = np.empty(spec.output_layout, dtype=x.dtype)
    k.conv3d_direct(x, w, _bias(spec, b, x.dtype), out, k.conv3d_geometry(spec))
    return out


def _tiles3d(spec):
    """(n, g, z0, z1): the 3-D im2col paths' tiles, images and groups in order, bands of output slices."""
    zb = slices_per_tile(spec)
    for n in range(spec.N):
        for g in range(spec.groups):
            for z0 in range(0, spec.Z, zb):
                yield n, g, z0, min(spec.Z, z0 + zb)


def conv3d_im2col_pointwise(spec, x, w, b=None):
    """A 1x1x1 unstrided unpadded conv: BLAS straight on the input (no workspace), x viewed as
    [N, G, Cg, D*H*W] being every image's column matrix."""
    N, G, Kg, Cg = spec.N, spec.groups, spec.K_per_group, spec.C_per_group
    out = np.empty(spec.output_layout, dtype=x.dtype)
    og = out.reshape(N, G, Kg, spec.out_elems)
    wg = w.reshape(G, Kg, Cg)
    xg = x.reshape(N, G, Cg, spec.in_elems)
    for g in range(G):
        np.matmul(wg[g], xg[:, g], out=og[:, g])
    if b is not None:
        out += b[:, None, None, None]
    return out


def _pointwise3d_reasons(spec) -> List[str]:
    if spec.is_pointwise:
        return []
    return ["not pointwise (1x1x1, stride 1, no padding): the input is not the column matrix"]


def conv3d_im2col(spec, x, w, b=None):
    """Per image, group and band of output slices: vol2col_pack builds the band's column matrix, BLAS
    computes w[group] @ col straight into the output (the band's columns of each channel are contiguous)."""
    N, G, Kg, PQ = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    wg = w.reshape(G, Kg, spec.gemm_k)
    og = out.reshape(N, G, Kg, spec.Z * PQ)
    geo = k.conv3d_geometry(spec)
    col = workspace("vol2col's column matrix", (spec.gemm_k, slices_per_tile(spec) * PQ), x.dtype)  # the one
    for n, g, z0, z1 in _tiles3d(spec):
        k.vol2col_pack(x, n, g, geo, col, z0, z1)
        np.matmul(wg[g], col[:, :(z1 - z0) * PQ], out=og[n, g, :, z0 * PQ:z1 * PQ])
        if b is not None and g == G - 1 and z1 == spec.Z:
            out[n] += b[:, None, None, None]     # while the image's output is still in cache
    return out


def conv3d_input_direct(spec, dy, w, b=None):
    k = kernels()
    _reserve_for(spec, _input_direct3d_workspace, "the 3-D input-gradient direct kernel's per-thread dx rows")
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    k.conv3d_input_direct(dy, w, _dx_bias(spec, b, dy.dtype), dx, k.conv3d_geometry(spec))
    return dx


def conv3d_input_im2col(spec, dy, w, b=None):
    """Per image, group and band of dy's slices: col = w[group]^T @ dy[n, group, band] by BLAS, then
    col2vol_add adds each entry at the input position its tap reads (taps in the padding dropped: exact
    for every weight). dx starts at the bias (or zero)."""
    N, G, Kg, PQ = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    dx[...] = 0 if b is None else b[:, None, None, None]
    wg = w.reshape(G, Kg, spec.gemm_k)
    dyg = dy.reshape(N, G, Kg, spec.Z * PQ)
    geo = k.conv3d_geometry(spec)
    col = workspace("col2vol's column matrix", (spec.gemm_k, slices_per_tile(spec) * PQ), dy.dtype)
    for n, g, z0, z1 in _tiles3d(spec):
        np.matmul(wg[g].T, dyg[n, g, :, z0 * PQ:z1 * PQ], out=col[:, :(z1 - z0) * PQ])
        k.col2vol_add(col, dx, n, g, z0, z1, geo)
    return dx


def conv3d_weight_direct(spec, x, dy):
    k = kernels()
    _reserve_for(spec, _weight_direct_workspace, "the 3-D weight-gradient direct kernel's lane accumulators")
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    k.conv3d_weight_direct(x, dy, dw, k.conv3d_geometry(spec))
    return dw


def conv3d_weight_im2col(spec, x, dy):
    """Per group, image and band of output slices (in that order): vol2col_pack the band's column matrix,
    then dw[group] += dy[n, group, band] @ col^T by BLAS (the first band writes). The column matrix holds
    zeros in the padding (``zero_fills_padding``)."""
    N, G, Kg, PQ = spec.N, spec.groups, spec.K_per_group, spec.P * spec.Q
    k = kernels()
    dw = np.empty(spec.output_layout, dtype=x.dtype)
    dwg = dw.reshape(G, Kg, spec.gemm_k)
    dyg = dy.reshape(N, G, Kg, spec.Z * PQ)
    geo = k.conv3d_geometry(spec)
    col = workspace("vol2col's column matrix", (spec.gemm_k, slices_per_tile(spec) * PQ), x.dtype)
    part = workspace("the partial weight gradient", (Kg, spec.gemm_k), x.dtype)
    tiles = sorted(_tiles3d(spec), key=lambda tile: tile[1])        # stable: (n, z) ascending per group
    for n, g, z0, z1 in tiles:
        k.vol2col_pack(x, n, g, geo, col, z0, z1)
        m = (z1 - z0) * PQ
        first = n == 0 and z0 == 0
        np.matmul(dyg[n, g, :, z0 * PQ:z1 * PQ], col[:, :m].T, out=dwg[g] if first else part)
        if not first:
            dwg[g] += part
    return dw


def max_pool3d(spec, x):
    k = kernels()
    out, idx = _pool_out(spec, x)
    k.max_pool3d(x, out, idx, spec.return_indices, k.pool3d_geometry(spec))
    return _pool_result(spec, out, idx)


def avg_pool3d(spec, x):
    k = kernels()
    out = np.empty(spec.output_layout, dtype=x.dtype)
    div = spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero
    k.avg_pool3d(x, out, k.pool3d_geometry(spec), spec.count_include_pad, div)
    return out


def _adaptive_pool3d(spec, x, is_max):
    k = kernels()
    out, idx = _pool_out(spec, x)
    k.adaptive_pool3d(x, out, idx, spec.return_indices, is_max, k.adaptive_windows3d(spec))
    return _pool_result(spec, out, idx)


def adaptive_max_pool3d(spec, x):
    return _adaptive_pool3d(spec, x, True)


def adaptive_avg_pool3d(spec, x):
    return _adaptive_pool3d(spec, x, False)


def _undilated_reasons(spec) -> List[str]:
    if spec.is_adaptive or spec.dilations == (1, 1, 1):
        return []
    return [f"dilation {spec.dilations}: average pools take none (torch has no dilation argument for them)"]


def max_pool3d_backward(spec, dy, indices):
    """Shared by the max and adaptive-max kinds: the 2-D scatter kernel on views whose rows are the
    (z, p) output rows and (d, h) input rows (it works on flat planes, row-major); an output sends its dy
    when its window holds input on every axis (``_indices.window_bounds``)."""
    k = kernels()
    N, C, D, H, W = spec.input_shape
    Z, P, Q = spec.out_size
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    live_d, live_h, live_w = _indices.window_bounds(spec)[2::3]      # (start, taps, live) per D, H, W
    live_zp = np.ascontiguousarray((live_d[:, None] & live_h[None, :]).reshape(Z * P))
    k.pool2d_scatter_backward(dy.reshape(N, C, Z * P, Q), indices.reshape(N, C, Z * P, Q),
                              dx.reshape(N, C, D * H, W), live_zp, live_w, _plane_chunks(spec))
    return dx


def avg_pool3d_backward(spec, dy):
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    div = spec.divisor_override if spec.divisor_override is not None else 0  # validated non-zero
    k.avg_pool3d_backward(dy, dx, k.pool3d_geometry(spec), spec.count_include_pad, div, _plane_chunks(spec))
    return dx


def adaptive_avg_pool3d_backward(spec, dy):
    k = kernels()
    dx = np.empty(spec.output_layout, dtype=dy.dtype)
    k.adaptive_avg_pool3d_backward(dy, dx, k.adaptive_windows3d(spec), _plane_chunks(spec))
    return dx


def max_unpool3d(spec, x, indices):
    """The 2-D kernel on plane-flattening views (it writes whole flat planes, indices in row-major order)."""
    k = kernels()
    N, C, D, H, W = spec.input_shape
    Z, P, Q = spec.out_size
    out = np.empty(spec.output_layout, dtype=x.dtype)
    k.max_unpool2d(x.reshape(N, C, Z * P, Q), indices.reshape(N, C, Z * P, Q), out.reshape(N, C, D * H, W))
    return out


# ---------------------------------------------------------------------------------------------------
# The implementations, in priority order
# ---------------------------------------------------------------------------------------------------
def implementations():
    return _IMPLS


#: a run of fewer flops than this (``spec.flops()``: multiply-adds x 2 for convolutions, taps for pools)
#: goes on one thread (:meth:`NumbaImpl.run`): splitting it costs more than it saves (waking the pool for
#: an 8x8 image), and a parallel region needs every thread scheduled before it ends, so on a machine where
#: another process holds a core a tiny parallel run waits for a time slice (measured on this project's
#: 2-core machines with one core busy: a (1,3,8,8) conv 0.2 ms on one thread, 2.3 ms on two)
SERIAL_MAX_FLOPS = 2 * 10**5


def _serial(spec) -> bool:
    """Whether a run of ``spec`` is too small to split (below :data:`SERIAL_MAX_FLOPS`); decided once per
    spec object and threshold (an adaptive pool's ``flops()`` sums its windows)."""
    memo = spec.__dict__.get("_serial_")
    if memo is None or memo[0] != SERIAL_MAX_FLOPS:
        memo = (SERIAL_MAX_FLOPS, spec.flops() < SERIAL_MAX_FLOPS)
        object.__setattr__(spec, "_serial_", memo)
    return memo[1]


def run_threads(spec) -> int:
    """How many of Numba's threads a run of ``spec`` uses: 1 below :data:`SERIAL_MAX_FLOPS`, else all
    (:func:`_threads`)."""
    return 1 if _serial(spec) else _threads()


@contextlib.contextmanager
def _threads_of_run(spec):
    """The calling thread's Numba thread count is :func:`run_threads` inside the block (1 for a small
    problem) and what it was after, whatever happens."""
    if _serial(spec):
        get, put = _thread_api()
        before = get()
        if before > 1:
            put(1)
            try:
                yield
            finally:
                put(before)
            return
    yield


class NumbaImpl(FunctionImpl):
    """A ``numba`` implementation that can say its workspace: :meth:`workspace` names each buffer it
    allocates besides its output (in-kernel per-thread scratch included) with its bytes, from the same plan
    functions its run allocates by. ``capped``: it refuses (a reason) a problem whose workspace passes
    WORKSPACE_CAP, so dispatch moves on to an exact direct kernel.

    :meth:`run` runs a small problem on one thread (:func:`run_threads`): the calling thread's Numba
    thread count is 1 for the run (kernels, their chunking and their per-thread scratch all see it) and
    restored after, whatever happens; the result is the same (every kernel sums each output in a fixed
    order whatever the thread count)."""

    def run(self, spec, *arrays):
        with _threads_of_run(spec):
            return super().run(spec, *arrays)

    def runner(self, spec):
        """:meth:`run` for ``spec`` as one closure: the kernel function's ``bind(spec, serial)`` where it
        has one (the geometry and output shapes worked out once; ``serial``: a problem below
        SERIAL_MAX_FLOPS, for which a bind may launch a kernel's serial twin), and the small-problem thread
        count set without a context manager (a tiny call's overhead is counted in microseconds)."""
        fn = self._fn
        bind = getattr(fn, "bind", None)
        serial = _serial(spec)
        go = bind(spec, serial) if bind is not None else functools.partial(fn, spec)
        if not serial or getattr(go, "threadless", False):
            return go       # (a bind that launches only serial twins needs no thread count)
        get, put = _thread_api()

        def serial(*arrays):
            before = get()
            if before <= 1:
                return go(*arrays)
            put(1)
            try:
                return go(*arrays)
            finally:
                put(before)
        return serial

    def warm(self, spec, *arrays):
        """``fastconv warmup``'s extra run: on all of Numba's threads whatever the problem's size, and with
        chunks of any size (:func:`_chunk_min_bytes`, on this thread only), so that what only a problem big
        enough to split launches (the CHUNKED kernels' ``_prange`` twins, in :func:`_on_workers`) compiles
        ahead too."""
        before = getattr(_WARMING, "on", False)
        _WARMING.on = True
        try:
            return self._fn(spec, *arrays)
        finally:
            _WARMING.on = before

    def __init__(self, op, algo, fn, *, workspace=None, capped=False, **kw):
        super().__init__("numba", op, algo, fn, dtypes=DTYPES, **kw)
        self._workspace, self.capped = workspace, capped

    def workspace(self, spec) -> Dict[str, int]:
        """{what: bytes} of the buffers a run of ``spec`` allocates besides its output, planned under the
        thread count the run has (one for a small problem, as :meth:`run`)."""
        if not self._workspace:
            return {}
        run_spec = self.compute_spec(spec)
        with _threads_of_run(run_spec):
            return dict(self._workspace(run_spec))

    def workspace_bytes(self, spec) -> int:
        return sum(self.workspace(spec).values())

    def not_supported_reasons(self, spec) -> List[str]:
        out = super().not_supported_reasons(spec)
        if not out and self.capped:
            ws = self.workspace(spec)
            total = sum(ws.values())
            if total > WORKSPACE_CAP:
                parts = ", ".join(f"{what} {n}" for what, n in ws.items())
                out.append(f"its workspace of {total} bytes ({parts}) passes the backend's cap of "
                           f"{WORKSPACE_CAP} bytes (numba_cpu.WORKSPACE_CAP)")
        return out


def _impl(op, algo, fn, **kw):
    return NumbaImpl(op, algo, fn, **kw)


def _fold_op(name):
    """unfold / fold (``_numba_fold``, imported on first run: this module imports no Numba)."""
    def run(spec, *arrays):
        from . import _numba_fold
        if name == "fold":
            _reserve_for(spec, _fold_workspace, "fold's per-thread rows")
        return getattr(_numba_fold, name)(spec, *arrays)
    return run


def _pool_workspace(spec):
    """Pools: per thread one output row's values and indices (float64 sums), and the per-row/column window
    tables."""
    return {"per-thread output rows": _threads_for(spec.N * spec.C) * spec.Q * 16,
            "window tables": (spec.Z + spec.P + spec.Q) * 40}


def _plane_workspace(spec):
    """Pool gradients: per thread one float64 plane of dx and one of dy."""
    return {"per-thread float64 planes": _threads_for(spec.N * spec.C) * (spec.in_elems + spec.out_elems) * 8}


def _fold_workspace(spec):
    if spec.op != "fold":
        return {}
    return {"per-thread float64 rows": _threads_for(spec.N * spec.C * spec.D * spec.H) * spec.W * 8,
            "tap tables": (spec.D * spec.T + spec.H * spec.R) * 8}


# direct first: measurement times candidates in this order, so the Numba kernels are timed before this
# measurement's own GEMMs leave OpenBLAS's workers spinning
_IMPLS = [
    _impl("conv", "direct", conv_depthwise_flat, variant="depthwise-flat", reasons=_flat_reasons,
          zero_fills_padding=True, workspace=_flat_workspace, capped=True),
    _impl("conv", "direct", conv_depthwise_phase, variant="depthwise-phase", reasons=_phase_reasons,
          zero_fills_padding=True, workspace=_phase_workspace, capped=True),
    _impl("conv", "direct", conv_depthwise, variant="depthwise", reasons=_depthwise_reasons),
    _impl("conv", "direct", conv_planes, variant="planes", reasons=_phase_bound_reasons, zero_fills_padding=True,
          workspace=_planes_workspace, capped=True),
    _impl("conv", "direct", conv_blocked, variant="blocked", workspace=_blocked_workspace),
    _impl("conv", "im2col", conv_im2col_pointwise, variant="pointwise", reasons=_pointwise_reasons),
    _impl("conv", "im2col", conv_im2col, variant="packed", reasons=_packed_reasons, zero_fills_padding=True,
          workspace=_im2col_workspace, capped=True),
    _impl("conv", "winograd", conv_winograd, variant="f4x4", reasons=_winograd_reasons,
          workspace=_winograd_workspace, capped=True),
    _impl("conv", "winograd", conv_winograd_phases, variant="f4x4-phases", reasons=_winograd_phase_reasons,
          zero_fills_padding=True, workspace=_winograd_phase_workspace, capped=True),
    _impl("max_pool", "direct", max_pool_2x2, variant="2x2", reasons=_pool2x2_reasons),
    _impl("max_pool", "direct", max_pool, workspace=_pool_workspace),
    _impl("avg_pool", "direct", avg_pool_global, variant="global", reasons=_global_reasons),
    _impl("avg_pool", "direct", avg_pool_2x2, variant="2x2", reasons=_pool2x2_reasons),
    _impl("avg_pool", "direct", avg_pool, workspace=_pool_workspace),
    _impl("adaptive_max_pool", "direct", adaptive_max_pool, workspace=_pool_workspace),
    _impl("adaptive_avg_pool", "direct", adaptive_avg_pool_global, variant="global", reasons=_global_reasons),
    _impl("adaptive_avg_pool", "direct", adaptive_avg_pool, workspace=_pool_workspace),
    _impl("conv_input", "direct", conv_input_depthwise_flipped, variant="depthwise-flipped",
          reasons=_input_depthwise_flipped_reasons, zero_fills_padding=True,
          workspace=_input_depthwise_flipped_workspace, capped=True),
    _impl("conv_input", "direct", conv_input_depthwise, variant="depthwise", reasons=_depthwise_reasons),
    _impl("conv_input", "direct", conv_input_direct, variant="gather", workspace=_input_direct_workspace),
    _impl("conv_input", "im2col", conv_input_im2col, variant="col2im", workspace=_col2im_workspace,
          capped=True),
    _impl("conv_input", "winograd", conv_input_winograd, variant="f4x4", reasons=_input_winograd_reasons,
          workspace=_input_winograd_workspace, capped=True),
    _impl("conv_input", "winograd", conv_input_winograd_phases, variant="f4x4-phases",
          reasons=_input_winograd_phase_reasons, zero_fills_padding=True, workspace=_input_winograd_phase_workspace,
          capped=True),
    _impl("conv_weight", "direct", conv_weight_depthwise_cblock, variant="depthwise-cblock",
          reasons=_weight_cblock_reasons, workspace=_weight_cblock_workspace, capped=True),
    _impl("conv_weight", "direct", conv_weight_depthwise, variant="depthwise", reasons=_depthwise_reasons,
          workspace=_depthwise_lanes_workspace),
    _impl("conv_weight", "direct", conv_weight_direct, variant="lanes", workspace=_weight_direct_workspace),
    _impl("conv_weight", "im2col", conv_weight_im2col, variant="pack-gemm", zero_fills_padding=True,
          workspace=_weight_im2col_workspace, capped=True),
    _impl("conv_weight", "winograd", conv_weight_winograd, variant="f4x4", reasons=_winograd_reasons,
          workspace=_winograd_weight_workspace, capped=True),
    _impl("conv_weight", "winograd", conv_weight_winograd_phases, variant="f4x4-phases",
          reasons=_winograd_phase_reasons, workspace=_winograd_weight_phase_workspace, capped=True),
    _impl("max_pool_backward", "direct", max_pool_backward_disjoint, variant="disjoint", reasons=_disjoint_reasons),
    _impl("max_pool_backward", "direct", max_pool_backward, workspace=_plane_workspace),
    _impl("avg_pool_backward", "direct", avg_pool_backward_disjoint, variant="disjoint", reasons=_disjoint_reasons),
    _impl("avg_pool_backward", "direct", avg_pool_backward, workspace=_plane_workspace),
    _impl("adaptive_max_pool_backward", "direct", max_pool_backward_disjoint, variant="disjoint",
          reasons=_disjoint_reasons),
    _impl("adaptive_max_pool_backward", "direct", max_pool_backward, workspace=_plane_workspace),
    _impl("adaptive_avg_pool_backward", "direct", adaptive_avg_pool_backward_global, variant="global",
          reasons=_global_reasons),
    _impl("adaptive_avg_pool_backward", "direct", adaptive_avg_pool_backward, workspace=_plane_workspace),
    _impl("max_unpool", "direct", max_unpool),
    _impl("unfold", "direct", _fold_op("unfold"), spatial_dims=(1, 2, 3)),
    _impl("fold", "direct", _fold_op("fold"), spatial_dims=(1, 2, 3), workspace=_fold_workspace),
    # 3-D problems (never offered a 1-D or 2-D spec, nor the above a 3-D one: Impl.spatial_dims)
    _impl("conv", "direct", conv3d_direct, variant="3d", spatial_dims=(3,), workspace=_direct3d_workspace),
    _impl("conv", "im2col", conv3d_im2col_pointwise, variant="pointwise-3d", reasons=_pointwise3d_reasons,
          spatial_dims=(3,)),
    _impl("conv", "im2col", conv3d_im2col, variant="3d", zero_fills_padding=True, spatial_dims=(3,),
          workspace=_vol2col_workspace, capped=True),
    _impl("max_pool", "direct", max_pool3d, variant="3d", spatial_dims=(3,), workspace=_pool_workspace),
    _impl("avg_pool", "direct", avg_pool3d, variant="3d", reasons=_undilated_reasons, spatial_dims=(3,),
          workspace=_pool_workspace),
    _impl("adaptive_max_pool", "direct", adaptive_max_pool3d, variant="3d", spatial_dims=(3,),
          workspace=_pool_workspace),
    _impl("adaptive_avg_pool", "direct", adaptive_avg_pool3d, variant="3d", spatial_dims=(3,),
          workspace=_pool_workspace),
    _impl("conv_input", "direct", conv3d_input_direct, variant="gather-3d", spatial_dims=(3,),
          workspace=_input_direct3d_workspace),
    _impl("conv_input", "im2col", conv3d_input_im2col, variant="col2vol-3d", spatial_dims=(3,),
          workspace=_vol2col_workspace, capped=True),
    _impl("conv_weight", "direct", conv3d_weight_direct, variant="lanes-3d", spatial_dims=(3,),
          workspace=_weight_direct_workspace),
    _impl("conv_weight", "im2col", conv3d_weight_im2col, variant="pack-gemm-3d", zero_fills_padding=True,
          spatial_dims=(3,), workspace=_weight_vol2col_workspace, capped=True),
    _impl("max_pool_backward", "direct", max_pool3d_backward, variant="3d", spatial_dims=(3,),
          workspace=_plane_workspace),
    _impl("avg_pool_backward", "direct", avg_pool3d_backward, variant="3d", reasons=_undilated_reasons,
          spatial_dims=(3,), workspace=_plane_workspace),
    _impl("adaptive_max_pool_backward", "direct", max_pool3d_backward, variant="3d", spatial_dims=(3,),
          workspace=_plane_workspace),
    _impl("adaptive_avg_pool_backward", "direct", adaptive_avg_pool3d_backward, variant="3d", spatial_dims=(3,),
          workspace=_plane_workspace),
    _impl("max_unpool", "direct", max_unpool3d, variant="3d", spatial_dims=(3,)),
]


# ---------------------------------------------------------------------------------------------------
# Choosing among several supported candidates (see the module docstring)
# ---------------------------------------------------------------------------------------------------
def _time_one(call) -> float:
    """Seconds of one timed call (the tuner interleaves the candidates' calls, see TUNE_ROUNDS)."""
    return _timing.wall_times(call, 1)[0]


#: the tuner times the candidates in interleaved rounds (every candidate once per round, the order
#: rotating) and keeps each one's fastest call: at most TUNE_ROUNDS rounds, at least two, and no more once
#: TUNE_BUDGET_S seconds of calls are spent. Timing each candidate apart let a burst of load on a shared
#: machine (or the threads a previous candidate left spinning) land on one candidate only: the issue's
#: small CNN got `direct` at 15.7 ms where im2col took about 1.5.
TUNE_ROUNDS, TUNE_BUDGET_S = 5, 0.2

#: untimed calls per candidate before timing: two, because a chunked kernel's second call of a problem is
#: its first on claimed chunks (:func:`_on_workers`), which loads the serial kernel and may start the pool's
#: threads (8-19 ms); timed, that call put a depthwise input gradient of 1.3 ms at 16.9 ms, out of the race
TUNE_WARMUPS = 2


#: the backend's measured choices, memory-only (a CPU measurement taken while another process was busy
#: should not outlive the process)
TUNER = _tune.Tuner("numba", persist=False, time_one=_time_one, xp=lambda: np,
                    unmeasurable=lambda: (MemoryError,), rounds=TUNE_ROUNDS, budget_s=TUNE_BUDGET_S,
                    warmups=TUNE_WARMUPS)


def tune_context() -> str:
    """What a measured choice depends on besides the spec and the candidates: the thread count."""
    return f"threads={_threads()}"


def rule_choice(impls):
    """The pick without measuring: the first ``direct`` candidate when one is offered, else the first."""
    for impl in impls:
        if impl.algo == "direct":
            return impl
    return impls[0]


def fixed_choice(spec, impls):
    """:func:`choose`'s pick where it is the same on every call (by rule: pools and problems below
    MEASURE_MIN_FLOPS), else None (it measures, or reads FASTCONV_AUTOTUNE, on each call)."""
    if spec.op not in CONV_OPS or spec.flops() < MEASURE_MIN_FLOPS:
        return rule_choice(impls)
    return None


def choose(spec, impls, arrays=None):
    """Among several supported candidates: by rule for pools, small problems and FASTCONV_AUTOTUNE=0,
    else the measured fastest for this spec and thread count (see the module docstring), measured on the
    caller's ``arrays`` (what ``spec.ARRAYS`` names, as passed to the public function) where they fit."""
    if spec.op not in CONV_OPS or spec.flops() < MEASURE_MIN_FLOPS or not _config.autotune_enabled():
        return rule_choice(impls)
    return TUNER.choose(tune_context(), spec, impls, arrays)
