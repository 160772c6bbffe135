"""The benchmark engine behind ``fastconv bench`` and ``benchmarks/``: cases, runners, verification, timing,
JSON and the plot.

One *case* is one call of a public op (``conv2d``, ``conv1d`` or a pooling function) with fixed shapes and
arguments (:mod:`.cases`, :mod:`.layers`), or of its gradient (``--direction backward`` or ``both``): the
data gradient ``fastconv.grad.conv2d_input`` (spec op ``conv_input``) and weight gradient
``fastconv.grad.conv2d_weight`` (``conv_weight``) of a convolution, ``fastconv.grad.max_pool2d`` ...
(``max_pool_backward``, ``avg_pool_backward``, ``adaptive_*_pool_backward``) of a pool, named
``<forward case>:<spec op>``. One *runner* is something that can execute a case: a fastconv
backend with one algorithm, or a *peer* (``torch`` on the CPU, ``torch-cuda``: cuDNN with TF32 off)
(:mod:`.runners`). Every (case, runner) pair is

1. checked for support (dispatch's own reasons; an unsupported pair is reported, not run);
2. verified against the NumPy oracle with :mod:`fastconv.testing`'s tolerances (:mod:`.verification`) -
   a runner that fails is not timed, and the run exits non-zero if it is fastconv's;
3. timed (:mod:`.timing`, on :mod:`fastconv._timing`'s clocks): warm-up calls first (Numba and NVRTC
   compilation, cuDNN autotuning and fastconv's own ``algo="auto"`` measurement stay out of the timing),
   then the case's verified runners together in rotating rounds (a few calls each, the order shifting by
   one runner per round) until every runner's spread (the half-width of a 95% confidence interval of its
   median, relative to the median: 1.96 x 1.2533 x (IQR / 1.349) / sqrt(calls) / median) is at
   most the policy's ``max_spread`` or the case's time budget is spent; the median is reported, and a row
   whose spread stays above ``max_spread`` is flagged ``noisy``. GPU runners are timed with CUDA events,
   CPU runners with the wall clock around a synchronised call.

Throughput, fractions of peak (:mod:`.machine` says what the peaks are) and the ratio to the best peer
(``best peer time / runner time``; > 1: faster than every peer measured) are added per row
(:mod:`.report`). No geomean of ratios is printed (headline, per table, Markdown, ``fastconv summary``)
where more than half of the ratios it would average are noisy (:func:`.report.noise_refused`): the
console says how many, the load average and what to do; the JSON keeps every figure, flagged.

The torch peer runs the gradients with the kernels autograd runs for them: ``torch.nn.grad.conv{1,2}d_input``
and ``_weight`` (``aten.convolution_backward``; cuDNN on the GPU) and the aten pool backward kernels given
the same forward indices as fastconv (:mod:`.runners`). Gradients are verified against the oracle's adjoints
with :func:`fastconv.testing.grad_tolerance`. A backend without an implementation of a gradient reports each
such case as unsupported, with the reason.

Suites (:mod:`.suites`): ``quick`` (a small sweep of every op), ``sweep`` (stride, padding, dilation,
kernel size, groups and batch for conv2d and conv1d, and the matching sweeps for every pooling op),
``layers`` (every standard layer table), ``full`` (``sweep`` + ``layers``) and ``cpu-layers`` (the CPU
layer benchmark: ResNet-50 at N=8 with stride-2 and dilation-2 variants of its 3x3 layers, MobileNet-v1
depthwise at N=8, pools at N=16, every numba algorithm and ``auto`` beside torch, with a pause before each
side is timed), ``cpu-tiny`` (per-call time of tiny calls: a (1,3,8,8) input with a (4,3,3,3) weight, a
(1,4,8,8) max pool, LeNet-5's convolutions and pools at N=1 and N=64, a whole LeNet-5 forward at N=1) and
``cpu-networks`` (whole networks: LeNet-5, a VGG block, a ResNet-50 bottleneck, a small CNN, VGG-16's
stage 2). A *network* is a case of its own (:mod:`.networks`): a fixed sequence of convolutions, ReLUs,
pools and a residual add run as one timed call per side, as users run them, verified layer by layer
against the oracle. A suite may change the timing policy its calls need (``Suite.timing``:
blocks of 50 tiny calls, blocks of 2 network calls). ``--busy-cores N`` runs any suite with N cores kept
busy by spinning child processes (:mod:`.busy`), recorded in ``settings.busy``.
``table_batch`` sets a table's batch in any suite with layers. Sizes depend on the device
(:data:`SIZES`). ``dtype`` float16 runs every case with float16 storage (fastconv accumulates in float32;
the peer gets half tensors) and verifies with the float16 tolerance.

The standard layers are read from :func:`shapes_dir`: ``--shapes DIR``, else ``$FASTCONV_SHAPES``, else the
tables shipped in ``fastconv/bench/shapes``.

:func:`table_summary` condenses a report per standard-layer table and fastconv runner: geometric mean,
median, quartiles and lowest ratio to the peer, median fraction of the fp32 peak, median fraction of the
copy bandwidth (pools); given goals (a targets file, :mod:`.targets`; the library holds none), whether each
is met. :func:`markdown` writes it as a Markdown table.

The JSON document (``SCHEMA`` = "fastconv-bench/2"; ``fastconv summary`` reads /1 reports too, whose cases
are all forward):

    machine   date (UTC), hostname, platform, cpu_model, cpu_isa ("AVX-512", "AVX2", "AVX", "SSE4.2" or null),
              cpu_flags (the vector-ISA flags of /proc/cpuinfo present), cpu_cores, cpu_cores_usable,
              device ("cpu"/"gpu"),
              gpu (name, memory_gib, compute_capability, cuda_runtime, cuda_driver; null on the CPU),
              loadavg_start/loadavg_end (1, 5 and 15-minute load averages; other work on the machine shows here),
              loadavg_max (the highest 1-minute load average seen after a case)
    versions  python, fastconv, numpy, numba, cupy, torch, matplotlib (null when not installed)
    settings  suite, device, direction ("forward", "backward" or "both"), policy (warm-up/repeat/time limits,
              settle_s, max_spread, round_calls, rewarm), batch, table_batch, dtype, accumulate, filter, threads
              ({requested, numba, torch, blas: {limited, reason, pools (threadpoolctl's threadpool_info()
              after limiting: user_api, internal_api, prefix, version, num_threads, filepath; null without
              threadpoolctl), env (the BLAS thread variables set)}}), shapes (the directory read), targets
              (the goals given, or null), busy ({cores, pinned, seconds, held, how}: the child processes
              that kept cores busy during the run, --busy-cores; cores 0 on a quiet run), timing, statistic
              ("median"), ratio (its definition)
    peak      {fp32_gflops, mem_gbps, source[, how, inputs, vendor]} or null
    copy_bandwidth  {gbps, method, bytes, methods, how} (GPU runs with pools; CPU: numpy.copyto) or null
    runners   every runner considered: kind ("fastconv"/"peer"), name, algo, family, device, available,
              reason (why not), settings (torch: threads; torch-cuda: cudnn version, allow_tf32, cudnn_benchmark)
    cases     name, op (the forward op: conv2d, max_pool2d, ...; a gradient case keeps its forward's), direction
              ("forward"/"backward"), spec_op (what is computed: conv, conv_input, conv_weight, max_pool,
              max_pool_backward, ...), source ("sweep", or "<kind>:<table>" with kind layers, tiny or networks: the
              summary table it belongs to), input_shape, weight_shape (the
              forward's), kwargs (the forward op's keyword arguments), sweeps ({sweep: label}), description,
              network (a network case: name, doc, layers: [{kind, K, R, stride, padding, kernel}]; op
              "network"), flops, bytes (the spec's: a gradient's own), metric, verify_n, timing ({rounds, stopped:
              "steady"/"budget"/"max_repeat", spent_s}; null when nothing was timed)
    results   one row per (case, runner): case, op (the case's spec_op), kind, backend, algo, status ("ok", "unsupported",
              "verify-failed", "error"), error, verified ("strict"/"loose"/"fp16-accumulate"), median_s, min_s,
              q1_s, q3_s, rounds (timed calls), spread (95% interval of the median over the median), noisy (spread above
              max_spread, the policy's, also recorded), first_call_s (first warm-up call; compilation
              normally already happened while verifying), verify_n, unit, throughput, peak_fraction,
              copy_fraction (pools), ratio_to_best_peer, ratio_iqr ([best peer q1 / q3, best peer q3 / q1]:
              the ratio while both sides stay within their interquartile ranges), ratio_noisy (the row or
              its best peer noisy), impl (fastconv algo "auto" and pools: the implementation dispatch ran,
              by its name, e.g. ``cuda:conv:implicit_gemm/128x64``; a network's: each op's, joined by "; "), tuned_s
              (beside such an impl: the autotuner's seconds per call of each candidate when it chose, by
              name; null where it chose by rule, for a network, or for a named algo)
    summary   table_summary(): per standard-layer table, fastconv runner and op group: table, layer_subset,
              runner, op (conv, pool, conv_input, conv_weight or pool_backward), dtype, peer, batch, layers, timed, unsupported, failed, geomean, median, q1, q3, min, min_layer,
              max, max_layer, median_peak_fraction, peer_median_peak_fraction, (pools) median_copy_fraction,
              min_copy_fraction, min_copy_layer, peer_median_copy_fraction, target, met (null without targets,
              or when refused), noisy (ratios noisy), refused (null, or why no geomean is printed), noise_note
              (refused entries: the load average and what to do)
    failures  fastconv rows that failed verification or crashed;  wall_s  the whole run

fastconv-bench/2 (from /1): gradient cases; ``settings.direction``, ``cases[].direction``,
``cases[].spec_op``, ``results[].op`` and the summary's ``op`` are new; a summary entry is per op group (a
/1 reader grouping rows by runner alone would mix forward and gradient rows, hence the new version); goals
are checked on the forward groups unless a goal names its ``op``.

Changes within fastconv-bench/2 for the CPU suites (new fields only): ``machine.cpu_isa``,
``machine.cpu_flags``, ``settings.busy``, ``cases[].network``, case and summary op ``network``, sources
``tiny:<table>`` and ``networks:<table>``; summary entries named by a goal over several tables.

Changes within fastconv-bench/2 (readers keep working: new fields only, and ``settings.threads.blas_env``
moved to ``settings.threads.blas.env``): ``results[].spread``, ``noisy``, ``max_spread``, ``ratio_noisy``;
``cases[].timing``; ``settings.policy.max_spread``, ``round_calls``; ``settings.threads.requested`` and
``blas``; the summary's ``noisy`` and ``refused``. The policy's time budget is per case now (its runners
share it, timed in rounds), no longer per runner.

Changes within fastconv-bench/1 (readers of older reports keep working: every field they read is still
there): suite ``targets`` is gone (``layers`` with ``table_batch`` and a targets file replace it);
``settings.targets``, ``settings.policy.settle_s``, ``results[].ratio_iqr`` and the summary's ``median``,
``q1``, ``q3`` are new; ``settings.threads.blas_env`` holds the BLAS thread variables that were set (read
through fastconv._config, never changed); ``settings.shapes`` is always a directory (no "built-in" list);
the summary's ``target`` and ``met`` are null unless goals were given.
"""
from __future__ import annotations

from .cases import (CONV_OPS, DIRECTIONS, GRADS, POOL_OPS, SIZES, Case, backward_cases, case_spec, sweep_cases,
                    with_directions)
from .engine import SCHEMA, SCHEMAS_READ, Options, run
from .layers import SHIPPED_SHAPES, layer_cases, layer_tables, shapes_dir
from .machine import (GPU_PEAKS, copy_bandwidth, cpu_model, device_limits, gpu_copy_bandwidth, gpu_info,
                      gpu_peak, gpu_peak_from_device, gpu_properties, machine_info, versions)
from .plots import PLOT_SWEEPS, plot
from .report import (markdown, noise_note, noise_refused, op_group, summary, summary_text, table,
                     table_summary, verified_text, write_json, write_markdown)
from .runners import (EXCLUDED_BY_DEFAULT, CupyxRunner, FastconvRunner, Runner, TorchRunner, backends_for,
                      default_device, device_of_backend, fastconv_runners, limit_threads, peer_runners,
                      set_threads)
from .suites import (DEVICES, DTYPES, SUITE_NAMES, SUITES, Suite, build_cases, get_suite, parse_table_batch,
                     suite_policy, table_batches)
from .targets import check_targets, load_targets
from .timing import FULL_POLICY, QUICK_POLICY, Policy, Side, measure, measure_case, quartiles, spread, summarise
from .verification import PEER_FP16_ACC_SCALE, PEER_LOOSE_SCALE, Reference, verify

__all__ = [
    "CONV_OPS", "DIRECTIONS", "GRADS", "POOL_OPS", "SIZES", "Case", "backward_cases", "case_spec", "sweep_cases",
    "with_directions",
    "SCHEMA", "SCHEMAS_READ", "Options", "run",
    "SHIPPED_SHAPES", "layer_cases", "layer_tables", "shapes_dir",
    "GPU_PEAKS", "copy_bandwidth", "cpu_model", "device_limits", "gpu_copy_bandwidth", "gpu_info", "gpu_peak",
    "gpu_peak_from_device", "gpu_properties", "machine_info", "versions",
    "PLOT_SWEEPS", "plot",
    "markdown", "noise_note", "noise_refused", "op_group", "summary", "summary_text", "table", "table_summary",
    "verified_text", "write_json", "write_markdown",
    "EXCLUDED_BY_DEFAULT", "CupyxRunner", "FastconvRunner", "Runner", "TorchRunner", "backends_for",
    "default_device", "device_of_backend", "fastconv_runners", "limit_threads", "peer_runners", "set_threads",
    "DEVICES", "DTYPES", "SUITE_NAMES", "SUITES", "Suite", "build_cases", "get_suite", "parse_table_batch",
    "suite_policy", "table_batches",
    "check_targets", "load_targets",
    "FULL_POLICY", "QUICK_POLICY", "Policy", "Side", "measure", "measure_case", "quartiles", "spread", "summarise",
    "PEER_FP16_ACC_SCALE", "PEER_LOOSE_SCALE", "Reference", "verify",
]
