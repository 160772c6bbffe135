"""The benchmark engine behind ``fastconv bench`` and ``benchmarks/``: cases, runners, verification, timing,
JSON and the plot.

One *case* is one call of a public op (``conv2d``, ``conv1d`` or a pooling function) with fixed shapes and
arguments. One *runner* is something that can execute a case: a fastconv backend with one algorithm, or a
*peer* (``torch`` on the CPU, ``torch-cuda``: cuDNN with TF32 off). Every (case, runner) pair is

1. checked for support (dispatch's own ``not_supported_reasons``; an unsupported pair is reported, not run);
2. verified against the NumPy oracle with :mod:`fastconv.testing`'s tolerances, on the case's own arrays,
   or on the same arguments with N reduced to 1 when the case is big (the oracle is slow; ``verify_n`` in
   the JSON says which) - a runner that fails is not timed, and the run exits non-zero if it is fastconv's;
3. timed: warm-up calls first (Numba compilation, NVRTC compilation, cuDNN autotuning and fastconv's own
   ``algo="auto"`` measurement stay out of the timing), then repeated calls; the median is reported. GPU
   runners are timed with CUDA events recorded around the call and synchronised inside the measurement.

Throughput is ``spec.flops()`` / time (GFLOP/s) for convolutions and ``spec.bytes()`` / time (GB/s) for
pools, from the spec of the case itself (never the reduced verification copy). The fraction of peak:

- GPU: fp32 FMA (CUDA cores, no tensor cores) peak and memory bandwidth computed from the device's own
  properties (:func:`device_limits`: SMs x FP32 lanes per SM x 2 x max SM clock; memory clock x bus width x
  2 / 8; the JSON says how), with the vendor spec-sheet figures of :data:`GPU_PEAKS` beside them (and used
  when CuPy does not report the properties); pools also get the fraction of the device-to-device copy
  bandwidth measured in the same run (:func:`gpu_copy_bandwidth`: cudaMemcpyAsync and a copy kernel on
  256 MiB, CUDA events, median; the better of the two);
- CPU pools: the copy bandwidth of this machine, measured in the same run (``numpy.copyto`` of 64 MiB,
  best of 5, one thread), so the fraction is "of what a plain copy achieves here", not a datasheet number;
- CPU convolutions: ``null``; no honest fp32 peak is measured here.

The ratio to the best peer is ``best peer time / runner time`` (> 1: faster than every peer measured).

Backends come from the registry (:mod:`fastconv._dispatch`), never from a list here: every registered
backend whose arrays live on the chosen device, with every algorithm its ``implementations()`` offer.
``"numpy"`` (the oracle; it judges, it is not a contender) and ``"cuda-emu"`` (an emulator: correct and
very slow) are left out unless named explicitly. Peers are imported lazily; a missing peer is reported,
not an error.

Suites: ``quick`` (a small sweep of every op: about a minute on two CPU cores, Numba compilation
included), ``sweep`` (the full sweep over stride, padding, dilation, kernel size, groups and batch for
conv2d and conv1d, and the matching sweeps for every pooling op), ``layers`` (the standard network
layers), ``full`` (``sweep`` + ``layers``) and ``targets`` (the standard layers at the GPU-performance
issue's batch per table, :data:`TARGET_BATCH`; ``table_batch`` overrides a table's batch in any suite with
layers). Sizes depend on the device (see :data:`SIZES`). ``dtype`` float16 runs every case with float16
storage (fastconv accumulates in float32; the peer gets half tensors) and verifies with
:mod:`fastconv.testing`'s float16 tolerance.

:func:`table_summary` condenses a report per standard-layer table and fastconv runner: geometric-mean and
lowest ratio to the peer, median fraction of the fp32 peak, median fraction of the copy bandwidth (pools)
and the issue's goal (:data:`TARGETS`) met or not; :func:`markdown` writes it as the README table.

The JSON document (``SCHEMA`` = "fastconv-bench/1"):

    machine   date (UTC), hostname, platform, cpu_model, cpu_cores, cpu_cores_usable, device ("cpu"/"gpu"),
              gpu (name, memory_gib, compute_capability, cuda_runtime, cuda_driver; null on the CPU),
              loadavg_start/loadavg_end (other work on the machine shows here)
    versions  python, fastconv, numpy, numba, cupy, torch, matplotlib (null when not installed)
    settings  suite, device, policy (warm-up/repeat/time limits), batch, table_batch, dtype, accumulate,
              filter, threads, shapes, timing, statistic ("median"), ratio (its definition)
    peak      {fp32_gflops, mem_gbps, source[, how, inputs, vendor]} or null
    copy_bandwidth  {gbps, method, bytes, methods, how} (GPU runs with pools; CPU: numpy.copyto) or null
    runners   every runner considered: kind ("fastconv"/"peer"), name, algo, family, device, available,
              reason (why not), settings (torch: threads; torch-cuda: cudnn version, allow_tf32, cudnn_benchmark)
    cases     name, op, source ("sweep" or "layers:<table>"), input_shape, weight_shape, kwargs (the op's
              keyword arguments), sweeps ({sweep: label}), description, flops, bytes, metric, verify_n
    results   one row per (case, runner): case, kind, backend, algo, status ("ok", "unsupported",
              "verify-failed", "error"), error, verified ("strict"/"loose"), median_s, min_s, q1_s, q3_s,
              rounds, first_call_s (first warm-up call; compilation normally already happened while
              verifying), verify_n, unit, throughput, peak_fraction, copy_fraction (pools),
              ratio_to_best_peer, impl (fastconv algo "auto" and pools: the implementation dispatch ran)
    summary   table_summary(): per standard-layer table and fastconv runner
    failures  fastconv rows that failed verification or crashed;  wall_s  the whole run

Standard layers are read from the shapes directory: ``$FASTCONV_SHAPES``, else ``<repo>/../shared/shapes``
(a checkout keeps ``shared/`` beside the repository), else a small built-in list (:data:`BUILTIN_LAYERS`,
a subset of the same tables) so that an installed package still has layers to run.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _dispatch
from ._spec import conv_spec, pool_spec

SCHEMA = "fastconv-bench/1"
SUITES = ("quick", "sweep", "layers", "full", "targets")
DEVICES = ("cpu", "gpu")
#: storage dtypes a run can use (float16: fastconv stores float16 and accumulates in float32; the peer gets
#: half tensors)
DTYPES = ("float32", "float16")
#: suite "targets": the standard layers at the GPU-performance issue's batch size per table
TARGET_BATCH = {"resnet50": 32, "mobilenet_v1_dw": 32, "vgg16": 32, "pools": 64}
#: the issue's goals per table (ratio = peer time / fastconv time; copy = fraction of the measured
#: device-to-device copy bandwidth), checked by :func:`table_summary`; tables without an entry are reported
#: without a target. ``layers``: the goal is about that subset of the table (also summarised on its own)
TARGETS = {
    "resnet50": {"geomean": 1.0, "min": 0.7},
    "mobilenet_v1_dw": {"geomean": 1.5, "layers": "depthwise"},   # its depthwise 3x3 layers (not pw13)
    "pools": {"geomean": 1.2, "median_copy_fraction": 0.85},
}
#: backends never timed unless named: the oracle (the judge) and the emulator (correct but very slow)
EXCLUDED_BY_DEFAULT = ("numpy", "cuda-emu")
CONV_OPS = ("conv2d", "conv1d")
POOL_OPS = ("max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d")
#: the sweeps the plot draws, in this order
PLOT_SWEEPS = ("stride", "padding", "dilation")

#: base problem sizes per device and suite (conv: N C HxW K; 1-D: length L; layers: batch)
SIZES = {
    "cpu": {"quick": dict(N=2, C=16, HW=32, K=16, L=512),
            "sweep": dict(N=4, C=32, HW=56, K=32, L=4096),
            "layers_N": 1},
    "gpu": {"quick": dict(N=8, C=64, HW=56, K=64, L=4096),
            "sweep": dict(N=32, C=64, HW=56, K=64, L=16384),
            "layers_N": 32},
}

#: verify at the case's own N up to this much work, else on the same arguments with N = 1
VERIFY_FULL_FLOPS = 10**8
VERIFY_FULL_ELEMENTS = 4 * 10**6

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


# ---------------------------------------------------------------------------------------------------
# Timing policies
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Policy:
    """Warm-up calls, then at least ``min_repeat`` timed calls and ``min_time`` seconds of them, at most
    ``max_repeat`` calls or ``max_time`` seconds (with at least three calls)."""
    warmup: int
    min_repeat: int
    max_repeat: int
    min_time: float
    max_time: float


QUICK_POLICY = Policy(warmup=1, min_repeat=5, max_repeat=50, min_time=0.05, max_time=0.5)
FULL_POLICY = Policy(warmup=2, min_repeat=10, max_repeat=200, min_time=0.2, max_time=2.0)


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """One call of a public op. ``shape`` is the input's, ``weight`` the filter's (convs), ``kwargs`` the
    op's keyword arguments (the same names as torch.nn.functional). ``sweeps`` maps each sweep the case
    sits on to its label there (the base case sits on several)."""

    name: str
    op: str
    shape: Tuple[int, ...]
    kwargs: Dict[str, object]
    weight: Optional[Tuple[int, ...]] = None
    sweeps: Dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "sweep"
    dtype: str = "float32"

    @property
    def is_conv(self) -> bool:
        return self.op in CONV_OPS

    @property
    def spatial_dims(self) -> int:
        return 1 if self.op.endswith("1d") else 2

    @property
    def N(self) -> int:
        return self.shape[0]

    @property
    def table(self) -> Optional[str]:
        """The standard-layer table the case comes from (``"resnet50"``, ...), None for sweep cases."""
        return self.source.split(":", 1)[1] if self.source.startswith("layers:") else None

    def arrays(self, n: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, ...]:
        """Inputs of the case's dtype (x, w, b for convs; x for pools), batch ``n`` (default the case's);
        drawn in float32 and rounded, so a float16 case sees the float32 case's values to half precision."""
        rng = np.random.default_rng(seed)
        shape = ((n,) + self.shape[1:]) if n else self.shape
        x = rng.standard_normal(shape, dtype=np.float32)
        if not self.is_conv:
            return (self._cast(x),)
        w = rng.standard_normal(self.weight, dtype=np.float32)
        w *= np.float32(1.0 / math.sqrt(max(1, int(np.prod(self.weight[1:])))))
        b = rng.standard_normal(self.weight[0], dtype=np.float32)
        return self._cast(x), self._cast(w), self._cast(b)

    def _cast(self, a: np.ndarray) -> np.ndarray:
        return a if self.dtype == "float32" else a.astype(self.dtype)

    def spec(self, arrays):
        """The ConvSpec/PoolSpec of this call on ``arrays`` (validates the arguments too)."""
        kw, nd = self.kwargs, self.spatial_dims
        if self.is_conv:
            x, w, b = arrays
            return conv_spec(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                             kw.get("groups", 1), spatial_dims=nd)
        kind = self.op[: -len("_pool1d")]
        if kind.startswith("adaptive"):
            return pool_spec(kind, arrays[0], output_size_=kw["output_size"], spatial_dims=nd)
        return pool_spec(kind, arrays[0], kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("ceil_mode", False), kw.get("count_include_pad", True),
                         spatial_dims=nd)

    def describe(self) -> str:
        kw = self.kwargs
        dims = "x".join(str(s) for s in self.shape[2:])
        if self.is_conv:
            k = "x".join(str(s) for s in self.weight[2:])
            g = kw.get("groups", 1)
            return (f"N{self.N} C{self.shape[1]} {dims} K{self.weight[0]} {k} s{kw.get('stride', 1)} "
                    f"p{_label(kw.get('padding', 0))} d{kw.get('dilation', 1)}" + (f" g{g}" if g != 1 else ""))
        if "output_size" in kw:
            return f"N{self.N} C{self.shape[1]} {dims} -> {kw['output_size']}"
        return (f"N{self.N} C{self.shape[1]} {dims} k{kw['kernel_size']} s{kw.get('stride')} "
                f"p{kw.get('padding', 0)}" + (f" d{kw['dilation']}" if kw.get("dilation", 1) != 1 else "")
                + (" ceil" if kw.get("ceil_mode") else "")
                + (" excl-pad" if kw.get("count_include_pad") is False else ""))

    def record(self) -> dict:
        return {"name": self.name, "op": self.op, "source": self.source, "dtype": self.dtype,
                "input_shape": list(self.shape),
                "weight_shape": list(self.weight) if self.weight else None, "kwargs": _jsonable(self.kwargs),
                "sweeps": dict(self.sweeps), "description": self.describe()}


def _label(v) -> str:
    if isinstance(v, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in v):
        return "asym"
    return str(v)


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


class _Builder:
    """Collects cases; a case generated by two sweeps (the base point) is kept once and remembers both."""

    def __init__(self):
        self.cases: Dict[tuple, Case] = {}

    def add(self, op, sweep, label, shape, kwargs, weight=None, name=None, source="sweep"):
        key = (op, tuple(shape), tuple(weight) if weight else None, repr(sorted(kwargs.items())))
        case = self.cases.get(key)
        if case is None:
            case = Case(name or f"{op}:{sweep}={label}", op, tuple(shape), dict(kwargs),
                        tuple(weight) if weight else None, {}, source)
            self.cases[key] = case
        if sweep != "base":
            case.sweeps.setdefault(sweep, str(label))
        return case


def _conv_sweeps(b: _Builder, op: str, sz: dict, quick: bool) -> None:
    """One parameter at a time around a base 3x3 (or 3-tap), stride 1, padding 1, dilation 1 problem."""
    N, C, K = sz["N"], sz["C"], sz["K"]
    sp = (sz["HW"], sz["HW"]) if op == "conv2d" else (sz["L"],)
    nd = len(sp)

    def ks(k):
        return (k,) * nd

    base = dict(stride=1, padding=1, dilation=1, groups=1)

    def add(sweep, label, n=N, k=3, weight=None, **kw):
        args = dict(base, **kw)
        w = weight or (K, C // args["groups"]) + ks(k)
        b.add(op, sweep, label, (n, C) + sp, args, w)

    b.add(op, "base", "", (N, C) + sp, base, (K, C) + ks(3), name=f"{op}:base")
    for s in (1, 2, 3):
        add("stride", s, stride=s)
    asym = ((0, 2), (1, 0)) if nd == 2 else ((0, 2),)
    for p in (0, 1, 2, "same", asym):
        add("padding", _label(p), padding=p)
    for d in (1, 2, 3):
        add("dilation", d, dilation=d)
    for k in ((1, 3, 5, 7) if not quick else (1, 3, 5)):
        add("kernel", k, k=k, padding=k // 2)
    add("groups", "1")
    add("groups", "depthwise", groups=C, weight=(C, 1) + ks(3))
    if not quick:
        add("groups", "4", groups=4)
        for n in (1, N, 4 * N):
            add("batch", n, n=n)


def _pool_sweeps(b: _Builder, op: str, sz: dict, quick: bool) -> None:
    N, C = sz["N"], sz["C"]
    nd = 1 if op.endswith("1d") else 2
    sp = (sz["HW"], sz["HW"]) if nd == 2 else (sz["L"],)
    shape = (N, C) + sp
    if op.startswith("adaptive"):
        outs = (1, 7) if nd == 2 else (1, 16)
        b.add(op, "base", "", shape, dict(output_size=outs[-1]), name=f"{op}:base")
        if not quick:
            for o in outs:
                b.add(op, "output", o, shape, dict(output_size=o))
        return
    is_max = op.startswith("max")
    base = dict(kernel_size=3, stride=2, padding=1)
    if is_max:
        base["dilation"] = 1
    b.add(op, "base", "", shape, base, name=f"{op}:base")
    strides = (1, 2, 3) if not quick or op == "max_pool2d" else ()
    for s in strides:
        b.add(op, "stride", s, shape, dict(base, stride=s))
    for p in ((0, 1) if not quick or nd == 2 else ()):
        b.add(op, "padding", p, shape, dict(base, padding=p))
    if is_max and (not quick or op == "max_pool2d"):
        for d in (1, 2, 3):
            b.add(op, "dilation", d, shape, dict(base, dilation=d))
    if not quick:
        for k in (2, 3, 5):
            b.add(op, "kernel", k, shape, dict(base, kernel_size=k))
        b.add(op, "ceil_mode", "True", shape, dict(base, ceil_mode=True, padding=0))
        if not is_max:
            b.add(op, "count_include_pad", "False", shape, dict(base, count_include_pad=False))


def sweep_cases(device: str = "cpu", quick: bool = False) -> List[Case]:
    """The sweep over stride, padding, dilation, kernel size, groups and batch (convs) and the matching
    sweeps of every pooling op, at the device's sizes."""
    sz = SIZES[device]["quick" if quick else "sweep"]
    b = _Builder()
    for op in CONV_OPS:
        _conv_sweeps(b, op, sz, quick)
    for op in POOL_OPS:
        _pool_sweeps(b, op, sz, quick)
    return list(b.cases.values())


# -- standard layers -----------------------------------------------------------------------------------
#: a subset of ../shared/shapes (same columns), used when no shapes directory is found
BUILTIN_LAYERS = {
    "resnet50": [
        dict(name="conv1", C=3, H=224, W=224, K=64, R=7, S=7, stride=2, pad=3, dilation=1, groups=1),
        dict(name="res2_3x3", C=64, H=56, W=56, K=64, R=3, S=3, stride=1, pad=1, dilation=1, groups=1),
        dict(name="res3_1x1_s2", C=256, H=56, W=56, K=128, R=1, S=1, stride=2, pad=0, dilation=1, groups=1),
        dict(name="res4_3x3", C=256, H=14, W=14, K=256, R=3, S=3, stride=1, pad=1, dilation=1, groups=1),
    ],
    "vgg16": [
        dict(name="conv3_1", C=128, H=56, W=56, K=256, R=3, S=3, stride=1, pad=1, dilation=1, groups=1),
    ],
    "mobilenet_v1_dw": [
        dict(name="dw2_s2", C=64, H=112, W=112, K=64, R=3, S=3, stride=2, pad=1, dilation=1, groups=64),
        dict(name="dw5", C=256, H=28, W=28, K=256, R=3, S=3, stride=1, pad=1, dilation=1, groups=256),
    ],
    "pools": [
        dict(name="resnet_stem_max", C=64, H=112, W=112, kind="max", kernel=3, stride=2, pad=1),
        dict(name="resnet_global_avg", C=2048, H=7, W=7, kind="avg", kernel=7, stride=7, pad=0),
    ],
}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def shapes_dir() -> Optional[Path]:
    """``$FASTCONV_SHAPES``, else ``<repo>/../shared/shapes`` when it exists, else None (built-in list)."""
    env = os.environ.get("FASTCONV_SHAPES")
    if env:
        return Path(env)
    d = repo_root().parent / "shared" / "shapes"
    return d if d.is_dir() else None


def layer_tables() -> Tuple[str, Dict[str, List[dict]]]:
    """(where they came from, {table name: rows}) for the standard layers."""
    d = shapes_dir()
    if d is None:
        return "built-in", BUILTIN_LAYERS
    if not d.is_dir():
        raise FileNotFoundError(f"shapes directory {d} (from $FASTCONV_SHAPES) does not exist")
    tables = {}
    for path in sorted(d.glob("*.csv")):
        with open(path, newline="") as f:
            tables[path.stem] = list(csv.DictReader(f))
    return str(d), tables


def layer_cases(device: str = "cpu", n: Optional[int] = None,
                table_batch: Optional[Dict[str, int]] = None) -> List[Case]:
    """conv2d / max_pool2d / avg_pool2d cases of the standard layers at batch ``table_batch[table]``, else
    ``n``, else the device's default."""
    n = n or SIZES[device]["layers_N"]
    _, tables = layer_tables()
    b = _Builder()
    for table, rows in tables.items():
        n_table = n
        if table_batch and table in table_batch:
            n_table = table_batch[table]
        for row in rows:
            name = f"{table}/{row['name']}"
            C, H, W = int(row["C"]), int(row["H"]), int(row["W"])
            if "K" in row:
                g = int(row["groups"])
                kw = dict(stride=int(row["stride"]), padding=int(row["pad"]), dilation=int(row["dilation"]),
                          groups=g)
                b.add("conv2d", "layer", row["name"], (n_table, C, H, W), kw,
                      (int(row["K"]), C // g, int(row["R"]), int(row["S"])), name=name, source=f"layers:{table}")
            elif "kind" in row:
                op = {"max": "max_pool2d", "avg": "avg_pool2d"}[row["kind"]]
                kw = dict(kernel_size=int(row["kernel"]), stride=int(row["stride"]), padding=int(row["pad"]))
                b.add(op, "layer", row["name"], (n_table, C, H, W), kw, name=name, source=f"layers:{table}")
    return list(b.cases.values())


def table_batches(suite: str, table_batch: Optional[Dict[str, int]] = None) -> Optional[Dict[str, int]]:
    """The batch per standard-layer table a suite uses: :data:`TARGET_BATCH` for ``targets``, updated by
    ``table_batch`` (which wins over ``--batch``); None when no table has its own batch."""
    out = dict(TARGET_BATCH) if suite == "targets" else {}
    out.update(table_batch or {})
    return out or None


def parse_table_batch(text: str) -> Dict[str, int]:
    """``"resnet50=32,pools=64"`` -> {"resnet50": 32, "pools": 64}; ValueError naming the bad item."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"table batch {item!r} is not TABLE=N with N a positive integer")
        out[name.strip()] = int(value)
    return out


def build_cases(suite: str, device: str = "cpu", batch: Optional[int] = None,
                table_batch: Optional[Dict[str, int]] = None, dtype: str = "float32") -> List[Case]:
    """The cases of ``suite``: sweep cases at ``batch`` (except the batch sweep), layer cases at the batch
    of their table (:func:`table_batches`, else ``batch``), all in storage dtype ``dtype``. Suite
    ``targets`` needs the shape tables themselves (the built-in subset would give partial tables)."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}, got {suite!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    cases: List[Case] = []
    if suite in ("quick", "sweep", "full"):
        cases += sweep_cases(device, quick=suite == "quick")
    if suite in ("layers", "full", "targets"):
        if suite == "targets" and shapes_dir() is None:
            raise FileNotFoundError("suite 'targets' needs the standard layer tables (resnet50.csv, "
                                    "mobilenet_v1_dw.csv, pools.csv, vgg16.csv): set FASTCONV_SHAPES to their "
                                    "directory (a checkout finds ../shared/shapes itself)")
        per_table = table_batches(suite, table_batch)
        known = set(layer_tables()[1])
        unknown = sorted(set(table_batch or {}) - known)
        if unknown:
            raise ValueError(f"--table-batch names {', '.join(unknown)}; the tables are {', '.join(sorted(known))}")
        cases += layer_cases(device, batch, per_table)
    if batch and suite not in ("layers", "targets"):
        cases = [dataclasses.replace(c, shape=(batch,) + c.shape[1:]) if c.source == "sweep"
                 and "batch" not in c.sweeps else c for c in cases]
    if dtype != "float32":
        cases = [dataclasses.replace(c, dtype=dtype) for c in cases]
    return cases


# ---------------------------------------------------------------------------------------------------
# Runners: fastconv backends (from the registry) and peers
# ---------------------------------------------------------------------------------------------------
def _device_of_backend(name: str) -> str:
    return "gpu" if _dispatch.BACKENDS[name].array_kind == "cupy" else "cpu"


class Runner:
    """Something that runs a case on one device. Subclasses set ``kind``, ``name``, ``algo``, ``device``."""

    kind = "fastconv"
    name = ""
    algo = ""
    device = "cpu"
    family = "any"   # the cases it runs: "conv", "pool" or "any"

    def runs(self, case: Case) -> bool:
        return self.family == "any" or (self.family == "conv") == case.is_conv

    @property
    def label(self) -> str:
        return f"{self.name}:{'pools' if self.family == 'pool' else self.algo}"

    def unavailable(self) -> Optional[str]:
        """None when it can run here, else why not."""
        return None

    def unsupported(self, case: Case, spec) -> Optional[str]:
        """None when it runs this case, else why not."""
        return None

    def algo_for(self, case: Case, spec) -> str:
        return self.algo

    def convert(self, arrays):
        return arrays

    def function(self, case: Case) -> Callable:
        raise NotImplementedError

    def to_numpy(self, out):
        return out

    def sync(self) -> None:
        pass

    def timer(self) -> Callable[[Callable, tuple], float]:
        """``time(fn, args) -> seconds`` of one call, GPU work included."""
        return wall_timer(self.sync)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def wall_timer(sync: Callable[[], None]) -> Callable[[Callable, tuple], float]:
    """Wall time of one call, with ``sync()`` before the clock starts and inside the timed region."""
    def time_one(fn, args):
        sync()
        t0 = time.perf_counter()
        fn(*args)
        sync()
        return time.perf_counter() - t0
    return time_one


class FastconvRunner(Runner):
    kind = "fastconv"

    def __init__(self, backend: str, algo: str, family: str = "conv"):
        self.name, self.algo, self.family = backend, algo, family
        self.device = _device_of_backend(backend)
        self.array_kind = _dispatch.BACKENDS[backend].array_kind

    def unavailable(self):
        return _dispatch.availability(self.name)

    def _supported_impls(self, spec):
        algo = self.algo if spec.op == "conv" else "auto"
        return [i for i in _dispatch.candidates(spec, self.name, algo) if not _dispatch.reasons(i, spec)]

    def unsupported(self, case, spec):
        try:
            return self._unsupported(spec)
        except Exception as e:  # a backend whose support check fails: reported, the run goes on
            return f"support check failed: {type(e).__name__}: {e}"

    def _unsupported(self, spec):
        algo = self.algo if spec.op == "conv" else "auto"
        cands = _dispatch.candidates(spec, self.name, algo)
        if not cands:
            return f"no {spec.op} implementation with algo={algo!r} on backend {self.name!r}"
        if self._supported_impls(spec):
            return None
        return "; ".join(f"{i.name}: {', '.join(_dispatch.reasons(i, spec))}" for i in cands)

    def algo_for(self, case, spec):
        """Pools have no ``algo=`` argument: report the implementation dispatch picks."""
        if spec.op == "conv":
            return self.algo
        ok = self._supported_impls(spec)
        return ok[0].algo if len(ok) == 1 else "auto"

    def chosen(self, spec) -> Optional[str]:
        """The implementation dispatch runs for ``spec`` with ``algo="auto"`` (after the timing, so a
        measured choice is already cached), or None when it cannot be asked."""
        if spec.op == "conv" and self.algo != "auto":
            return None
        try:
            return _dispatch.select(spec, self.name, "auto").name
        except Exception:
            return None

    def convert(self, arrays):
        if self.array_kind == "cupy":
            import cupy
            return tuple(cupy.asarray(a) for a in arrays)
        return arrays

    def function(self, case):
        import fastconv
        fn, kw, b = getattr(fastconv, case.op), dict(case.kwargs), self.name
        if case.is_conv:
            algo = self.algo
            return lambda *a: fn(*a, **kw, backend=b, algo=algo)
        return lambda *a: fn(*a, **kw, backend=b)

    def sync(self):
        if self.array_kind == "cupy":
            import cupy
            cupy.cuda.get_current_stream().synchronize()

    def timer(self):
        if self.array_kind == "cupy":
            return cupy_event_timer()
        return super().timer()


def cupy_event_timer():
    import cupy

    def time_one(fn, args):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3
    return time_one


class TorchRunner(Runner):
    """torch.nn.functional, the op of the same name; CPU tensors, or CUDA tensors through cuDNN (fp32, TF32
    off, ``cudnn.benchmark`` on so that cuDNN picks its fastest algorithm during warm-up)."""

    kind = "peer"

    def __init__(self, device: str):
        self.device = device
        self.name = "torch" if device == "cpu" else "torch-cuda"
        self.algo = "aten" if device == "cpu" else "cudnn"

    def unavailable(self):
        try:
            import torch
        except ImportError as e:
            return f"torch is not installed ({e})"
        if self.device == "gpu":
            if not torch.cuda.is_available():
                return f"torch {torch.__version__} has no usable CUDA device"
            if not torch.backends.cudnn.is_available():
                return "torch is built without cuDNN"
        return None

    def settings(self) -> dict:
        import torch
        out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if self.device == "gpu":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
            out.update(cudnn=torch.backends.cudnn.version(), allow_tf32=False, cudnn_benchmark=True,
                       half_note="with float16 tensors cuDNN may use tensor cores and choose its own "
                                 "accumulation precision; allow_tf32=False affects float32 only")
        return out

    def unsupported(self, case, spec):
        return None

    def algo_for(self, case, spec):
        return self.algo if case.is_conv else "aten"

    def convert(self, arrays):
        import torch
        self.settings()
        out = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        return tuple(t.cuda() for t in out) if self.device == "gpu" else out

    def function(self, case):
        import torch
        import torch.nn.functional as F
        fn, kw = getattr(F, case.op), dict(case.kwargs)
        pad = kw.get("padding")
        if case.is_conv and isinstance(pad, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in pad):
            # torch has no asymmetric padding: F.pad (last dimension first) then an unpadded conv
            flat = tuple(v for pair in reversed(pad) for v in pair)
            kw["padding"] = 0

            def call(x, *rest):
                with torch.no_grad():
                    return fn(F.pad(x, flat), *rest, **kw)
            return call

        def call(*a):
            with torch.no_grad():
                return fn(*a, **kw)
        return call

    def to_numpy(self, out):
        return out.detach().cpu().numpy()

    def sync(self):
        if self.device == "gpu":
            import torch
            torch.cuda.synchronize()

    def timer(self):
        if self.device != "gpu":
            return super().timer()
        import torch

        def time_one(fn, args):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return time_one


class CupyxRunner(Runner):
    """cupyx has no op of the same definition, so this peer only reports why it is absent."""

    kind = "peer"
    name, algo, device = "cupyx", "-", "gpu"
    REASON = ("cupyx has no NCHW convolution or pooling with these semantics: cupyx.scipy.ndimage filters "
              "correlate one whole array with boundary modes (no channel reduction, groups or stride), and "
              "CuPy v14 removed its cuDNN bindings (cupyx.cudnn)")

    def unavailable(self):
        return self.REASON


PEERS = {"cpu": (lambda: TorchRunner("cpu"),), "gpu": (lambda: TorchRunner("gpu"), CupyxRunner)}


def backend_algos(backend: str) -> List[str]:
    """The algorithms a backend implements, from its ``implementations()`` (conv algos, then "auto" for
    pools, which have no ``algo=`` argument)."""
    algos: List[str] = []
    for impl in _dispatch.backend_module(backend).implementations():
        if impl.op == "conv" and impl.algo not in algos:
            algos.append(impl.algo)
    return algos


def backends_for(device: str, names: Optional[Sequence[str]] = None) -> List[str]:
    """Registered backends whose arrays live on ``device`` (all of them but EXCLUDED_BY_DEFAULT), or the
    named ones (checked against the registry)."""
    if names:
        for n in names:
            _dispatch.check_backend_name(n)
        return list(names)
    return [n for n in _dispatch.BACKENDS if _device_of_backend(n) == device and n not in EXCLUDED_BY_DEFAULT]


def fastconv_runners(device: str, backends: Optional[Sequence[str]] = None,
                     algos: Optional[Sequence[str]] = None) -> List[FastconvRunner]:
    """Per backend: one conv runner per algorithm it implements (filtered by ``algos``; "auto" only when
    asked; "all": every one it implements and "auto"), and one pool runner (pools have no ``algo=``
    argument: dispatch picks). An algorithm named in ``algos`` that a backend does not implement still gets
    a runner, whose cases are reported as unsupported with the reason. Unavailable backends are included:
    they report why."""
    out = []
    every = bool(algos) and "all" in algos
    for b in backends_for(device, backends):
        try:
            offered = backend_algos(b)
        except ImportError:
            offered = []
        chosen = [a for a in offered if not algos or every or a in algos]
        chosen += [a for a in (algos or ()) if a not in chosen and a not in ("auto", "all")]
        if algos and ("auto" in algos or every):
            chosen.append("auto")
        out += [FastconvRunner(b, a, "conv") for a in chosen]
        out.append(FastconvRunner(b, "auto", "pool"))
    return out


def peer_runners(device: str, names: Optional[Sequence[str]] = None) -> List[Runner]:
    peers = [make() for make in PEERS[device]]
    return [p for p in peers if not names or p.name in names]


# ---------------------------------------------------------------------------------------------------
# Device facts and peaks
# ---------------------------------------------------------------------------------------------------
def default_device() -> str:
    """"gpu" when a GPU backend of the registry is usable here, else "cpu"."""
    for name in _dispatch.BACKENDS:
        if _device_of_backend(name) == "gpu" and name not in EXCLUDED_BY_DEFAULT \
                and _dispatch.availability(name) is None:
            return "gpu"
    return "cpu"


def gpu_peak(name: str) -> Optional[dict]:
    """{"fp32_gflops", "mem_gbps", "source", "match"} for a known GPU name, else None."""
    for key, gflops, gbps in GPU_PEAKS:
        if key.lower() in name.lower():
            return {"fp32_gflops": gflops, "mem_gbps": gbps, "source": PEAK_SOURCE_GPU, "match": key}
    return None


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


def gpu_copy_bandwidth(nbytes: int = 256 * 2**20, repeat: int = 20, warmup: int = 3) -> dict:
    """Device-to-device copy bandwidth of the current GPU, (read + write bytes) / time: ``cudaMemcpyAsync``
    device to device and a one-line CuPy copy kernel (``y = x``), each on ``nbytes``, timed with CUDA events,
    median of ``repeat`` after ``warmup`` calls. ``gbps`` is the better of the two (the harder reference)."""
    import cupy
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    kernel = cupy.ElementwiseKernel("T x", "T y", "y = x", "fastconv_bench_copy")
    methods = {"memcpy": lambda: dst.data.copy_from_device_async(src.data, nbytes),
               "copy_kernel": lambda: kernel(src, dst)}
    timer, out = cupy_event_timer(), {}
    for name, fn in methods.items():
        for _ in range(warmup):
            timer(fn, ())
        t = statistics.median([timer(fn, ()) for _ in range(repeat)])
        out[name] = {"median_s": t, "gbps": 2 * nbytes / t / 1e9}
    del src, dst
    best = max(out, key=lambda k: out[k]["gbps"])
    return {"gbps": out[best]["gbps"], "method": best, "bytes": nbytes, "methods": out,
            "how": f"device-to-device copy of {nbytes / 2**20:.0f} MiB, (read + write bytes) / time, CUDA "
                   f"events, median of {repeat} after {warmup} warm-up calls; the better of cudaMemcpyAsync "
                   "and a CuPy elementwise copy kernel"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def copy_bandwidth(nbytes: int = 64 * 2**20, repeat: int = 5) -> float:
    """GB/s of ``numpy.copyto`` (read + write counted) on ``nbytes``, best of ``repeat``; one thread."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


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


def machine_info(device: str) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hostname": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable, "device": device,
            "gpu": gpu_info() if device == "gpu" else None}
    try:
        info["loadavg_start"] = list(os.getloadavg())
    except OSError:
        info["loadavg_start"] = None
    return info


# ---------------------------------------------------------------------------------------------------
# Verification and timing
# ---------------------------------------------------------------------------------------------------
def case_spec(case: Case):
    """The spec of the case at its own batch size, without allocating its arrays (zero-stride views)."""
    shapes = [case.shape] + ([case.weight, case.weight[:1]] if case.is_conv else [])
    zero = np.zeros((), dtype=case.dtype)
    return case.spec(tuple(np.broadcast_to(zero, s) for s in shapes))


class Reference:
    """The oracle's answer for one case (computed once, shared by every runner)."""

    def __init__(self, case: Case):
        import fastconv
        from . import testing
        spec = case_spec(case)
        big = (spec.flops() > VERIFY_FULL_FLOPS) if case.is_conv else (spec.max_elements() > VERIFY_FULL_ELEMENTS)
        self.n = 1 if big and case.N > 1 else case.N
        self.arrays = case.arrays(n=self.n, seed=1)
        self.spec = case.spec(self.arrays)
        fn = getattr(fastconv, case.op)
        self.ref = fn(*self.arrays, **case.kwargs, backend="numpy")
        self.tol = testing.conv_tolerance(self.spec, *self.arrays) if case.is_conv else None

    def check(self, out, scale: float = 1.0) -> None:
        """AssertionError when ``out`` (NumPy) is not the oracle's answer within ``scale`` x the tolerance."""
        from . import testing
        if self.tol is None:
            testing.assert_pool_close(out, self.ref, self.spec, self.arrays[0])
            return
        out = np.asarray(out).astype(np.float64)
        ref = np.asarray(self.ref).astype(np.float64)
        assert out.shape == ref.shape, f"shape {out.shape} != oracle {ref.shape}"
        # the same comparison as testing.assert_conv_close, with the tolerance computed once per case
        testing.assert_within(out, ref, scale * self.tol.reshape(ref.shape), self.spec)


#: a peer's convolution that misses the tolerance (cuDNN may pick FFT or Winograd algorithms, whose error
#: does not follow the summation bound) is checked again at this multiple and, if it passes, timed and
#: marked ``verified: "loose"``; fastconv's own results get no such allowance
PEER_LOOSE_SCALE = 4.0
#: a float16 peer convolution that misses even that (cuDNN may accumulate half inputs in half precision on
#: tensor cores) is checked once more with the bound for float16 accumulation: the tolerance scaled by
#: eps(float16) / eps(float32) (= 8192); passing it gives ``verified: "fp16-accumulate"``
PEER_FP16_ACC_SCALE = float(np.finfo(np.float16).eps / np.finfo(np.float32).eps)


def verify(case: Case, runner: Runner, ref: Reference) -> str:
    """Run ``runner`` on the reference arrays and check the result; returns "strict" or (peers only)
    "loose" or, for float16 convolutions, "fp16-accumulate"; raises AssertionError when the result is
    wrong."""
    out = runner.function(case)(*runner.convert(ref.arrays))
    runner.sync()
    out = runner.to_numpy(out) if runner.kind == "peer" else _to_numpy(out)
    try:
        ref.check(out)
        return "strict"
    except AssertionError as strict:
        if runner.kind != "peer" or ref.tol is None:
            raise
        for scale, label in ((PEER_LOOSE_SCALE, "loose"), (PEER_FP16_ACC_SCALE, "fp16-accumulate")):
            if label == "fp16-accumulate" and case.dtype != "float16":
                break
            try:
                ref.check(out, scale)
                return label
            except AssertionError:
                pass
        raise strict from None


def _to_numpy(a):
    from .testing import to_numpy
    return to_numpy(a)


def measure(fn: Callable, args: tuple, time_one: Callable, policy: Policy) -> dict:
    """Warm-up calls, then timed calls per ``policy``. Returns first-call seconds and every timed call."""
    t0 = time.perf_counter()
    time_one(fn, args)
    first = time.perf_counter() - t0
    if first < policy.max_time:          # a call slower than the whole budget needs no second warm-up
        for _ in range(policy.warmup - 1):
            time_one(fn, args)
    times: List[float] = []
    spent = 0.0
    while len(times) < policy.max_repeat:
        t = time_one(fn, args)
        times.append(t)
        spent += t
        if len(times) >= policy.min_repeat and spent >= policy.min_time:
            break
        if spent >= policy.max_time and len(times) >= 3:
            break
    return {"first_call_s": first, "times_s": times}


def summarise(times: Sequence[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "q1_s": q[0], "q3_s": q[2],
            "rounds": len(times)}


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------
def set_threads(n: Optional[int], runners: Sequence[Runner]) -> dict:
    """Give numba and torch the same CPU thread count (when ``n``); report what each uses. The BLAS pool
    that numba's im2col GEMM runs on is not changed here (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)."""
    out = {}
    names = {r.name for r in runners}
    if "numba" in names:
        import numba
        if n:
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        out["numba"] = numba.get_num_threads()
    if "torch" in names:
        import torch
        if n:
            torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    out["blas_env"] = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ}
    return out


@dataclasses.dataclass
class Options:
    suite: str = "quick"
    device: str = "cpu"
    backends: Optional[List[str]] = None
    algos: Optional[List[str]] = None
    peers: Optional[List[str]] = None     # None: every peer of the device; []: none
    policy: Policy = QUICK_POLICY
    batch: Optional[int] = None
    max_cases: Optional[int] = None
    filter: Optional[str] = None
    threads: Optional[int] = None         # CPU threads for numba and torch alike (None: their defaults)
    dtype: str = "float32"                # storage dtype of every case (DTYPES)
    table_batch: Optional[Dict[str, int]] = None   # batch per standard-layer table (wins over batch)
    copy_bytes: int = 256 * 2**20         # buffer of the GPU copy-bandwidth reference


def run(opts: Options, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Verify and time every (case, runner) of the suite; returns the report (the JSON document)."""
    t_start = time.perf_counter()
    cases = build_cases(opts.suite, opts.device, opts.batch, opts.table_batch, opts.dtype)
    if opts.filter:
        cases = [c for c in cases if opts.filter in c.name]
    if opts.max_cases:
        cases = cases[: opts.max_cases]
    runners: List[Runner] = list(fastconv_runners(opts.device, opts.backends, opts.algos))
    if opts.peers is None or opts.peers:
        runners += peer_runners(opts.device, opts.peers)
    runner_info, live = [], []
    for r in runners:
        why = r.unavailable()
        info = {"kind": r.kind, "name": r.name, "algo": r.algo, "family": r.family, "device": r.device,
                "available": why is None, "reason": why}
        runner_info.append(info)
        if why is None:
            live.append(r)
        else:
            log(f"skipping {r.label}: {why}")
    if not any(r.kind == "fastconv" for r in live):
        raise RuntimeError("no fastconv backend can run on device {!r}: {}".format(
            opts.device, "; ".join(dict.fromkeys(f"{i['name']}: {i['reason']}" for i in runner_info
                                                 if i["kind"] == "fastconv"))
            or "no backend of the registry has arrays on this device"))

    machine = machine_info(opts.device)
    peak = copy_ref = None
    if opts.device == "gpu" and machine["gpu"]:
        peak = gpu_peak_from_device(machine["gpu"])
        if any(not c.is_conv for c in cases):
            try:
                copy_ref = gpu_copy_bandwidth(opts.copy_bytes)
                log(f"device-to-device copy: {copy_ref['gbps']:.0f} GB/s ({copy_ref['method']})")
            except Exception as e:  # the reference is reported missing, the run goes on
                copy_ref = {"gbps": None, "error": f"{type(e).__name__}: {e}"}
    elif any(not c.is_conv for c in cases):
        bw = copy_bandwidth()
        peak = {"fp32_gflops": None, "mem_gbps": bw,
                "source": "measured in this run: numpy.copyto of 64 MiB, best of 5, one thread"}
        copy_ref = {"gbps": bw, "method": "numpy.copyto", "bytes": 64 * 2**20,
                    "how": "numpy.copyto of 64 MiB, (read + write bytes) / time, best of 5, one thread"}
    threads = set_threads(opts.threads, live)

    for r, info in zip(runners, runner_info):
        if info["available"] and isinstance(r, TorchRunner):
            info["settings"] = r.settings()
    log(f"fastconv bench: suite {opts.suite}, device {opts.device}, {len(cases)} cases, runners "
        f"{', '.join(r.label for r in live)}")
    results, failures = [], 0
    for i, case in enumerate(cases, 1):
        rows = []
        ref = arrays = None
        full_spec = case_spec(case)
        for r in live:
            if not r.runs(case):
                continue
            row = {"case": case.name, "kind": r.kind, "backend": r.name, "algo": r.algo, "status": "ok",
                   "error": None, "verified": None}
            why = r.unsupported(case, full_spec)
            if why:
                row.update(status="unsupported", error=why)
                rows.append(row)
                continue
            row["algo"] = r.algo_for(case, full_spec)
            try:
                if ref is None:
                    ref = Reference(case)
                row["verified"] = verify(case, r, ref)
            except AssertionError as e:
                row.update(status="verify-failed", error=str(e))
                failures += r.kind == "fastconv"
                rows.append(row)
                continue
            except Exception as e:  # a runner that crashes is reported, the run goes on
                row.update(status="error", error=f"{type(e).__name__}: {e}")
                failures += r.kind == "fastconv"
                rows.append(row)
                continue
            try:
                if arrays is None:
                    arrays = case.arrays()       # once per case, shared by its runners
                args = r.convert(arrays)
                m = measure(r.function(case), args, r.timer(), opts.policy)
                del args
            except Exception as e:
                row.update(status="error", error=f"{type(e).__name__}: {e}")
                failures += r.kind == "fastconv"
                rows.append(row)
                continue
            row.update(summarise(m["times_s"]), first_call_s=m["first_call_s"])
            if isinstance(r, FastconvRunner):
                row["impl"] = r.chosen(full_spec)
            rows.append(row)
        _throughput(case, full_spec, rows, peak, ref.n if ref else None, copy_ref)
        results += rows
        log(f"[{i}/{len(cases)}] {case.name:<30} {case.describe():<40} " + "  ".join(
            f"{r['backend']}:{r['algo']} " + (_fmt_time(r["median_s"]) if r["status"] == "ok" else r["status"])
            for r in rows))

    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        machine["loadavg_end"] = None
    case_records = []
    for c in cases:
        rec = c.record()
        spec = case_spec(c)
        rec.update(flops=spec.flops(), bytes=spec.bytes(), metric="GFLOP/s" if c.is_conv else "GB/s",
                   verify_n=next((r.get("verify_n") for r in results if r["case"] == c.name), None))
        case_records.append(rec)
    layered = opts.suite in ("layers", "full", "targets")
    shapes_from = layer_tables()[0] if layered else None
    report = {
        "schema": SCHEMA,
        "machine": machine,
        "versions": versions(),
        "settings": {"suite": opts.suite, "device": opts.device, "policy": dataclasses.asdict(opts.policy),
                     "batch": opts.batch, "filter": opts.filter, "max_cases": opts.max_cases,
                     "threads": threads, "shapes": shapes_from, "dtype": opts.dtype,
                     "accumulate": "float32" if opts.dtype == "float16" else opts.dtype,
                     "table_batch": table_batches(opts.suite, opts.table_batch) if layered else None,
                     "ratio": "best peer median time / runner median time (> 1: faster than every peer)",
                     "timing": "CUDA events around each call, synchronised" if opts.device == "gpu"
                     else "time.perf_counter around each call", "statistic": "median"},
        "peak": peak,
        "copy_bandwidth": copy_ref,
        "runners": runner_info,
        "cases": case_records,
        "results": results,
        "failures": failures,
    }
    report["summary"] = table_summary(report)
    report["wall_s"] = time.perf_counter() - t_start
    return report


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


def _throughput(case: Case, spec, rows: List[dict], peak: Optional[dict], verify_n,
                copy_ref: Optional[dict] = None) -> None:
    """Add throughput, fraction of peak, fraction of the measured copy bandwidth (pools) and ratio to the
    best peer to each timed row."""
    work = spec.flops() if case.is_conv else spec.bytes()
    unit = "GFLOP/s" if case.is_conv else "GB/s"
    peak_value = None
    if peak:
        peak_value = peak.get("fp32_gflops") if case.is_conv else peak.get("mem_gbps")
    copy_gbps = copy_ref.get("gbps") if copy_ref and not case.is_conv else None
    peer_times = [r["median_s"] for r in rows if r["kind"] == "peer" and r["status"] == "ok"]
    best_peer = min(peer_times) if peer_times else None
    for r in rows:
        r["verify_n"] = verify_n
        r["unit"] = unit
        if r["status"] != "ok":
            r.update(throughput=None, peak_fraction=None, copy_fraction=None, ratio_to_best_peer=None)
            continue
        tp = work / r["median_s"] / 1e9
        r["throughput"] = tp
        r["peak_fraction"] = tp / peak_value if peak_value else None
        r["copy_fraction"] = tp / copy_gbps if copy_gbps else None
        r["ratio_to_best_peer"] = best_peer / r["median_s"] if best_peer else None


# ---------------------------------------------------------------------------------------------------
# Output: table, JSON, plot
# ---------------------------------------------------------------------------------------------------
def _fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def table(report: dict) -> str:
    """The results as a fixed-width text table."""
    head = (f"{'case':<32} {'backend':<11} {'algo':<7} {'time':>10} {'throughput':>16} {'peak':>6} "
            f"{'vs peer':>8}")
    lines = [head, "-" * len(head)]
    last = None
    for r in report["results"]:
        case = r["case"] if r["case"] != last else ""
        last = r["case"]
        if r["status"] != "ok":
            msg = r["status"] + (f": {r['error'][:60]}" if r.get("error") else "")
            lines.append(f"{case:<32} {r['backend']:<11} {r['algo']:<7} {msg}")
            continue
        tp = f"{r['throughput']:.2f} {r['unit']}"
        pk = f"{100 * r['peak_fraction']:.0f}%" if r["peak_fraction"] is not None else "-"
        ratio = f"{r['ratio_to_best_peer']:.2f}x" if r["ratio_to_best_peer"] is not None else "-"
        loose = {"loose": f" (verified at {PEER_LOOSE_SCALE:g}x tolerance)",
                 "fp16-accumulate": " (verified at the float16-accumulation tolerance)"}.get(r.get("verified"), "")
        lines.append(f"{case:<32} {r['backend']:<11} {r['algo']:<7} {_fmt_time(r['median_s']):>10} "
                     f"{tp:>16} {pk:>6} {ratio:>8}{loose}")
    return "\n".join(lines)


def summary(report: dict) -> str:
    """Geometric-mean ratio to the best peer per fastconv runner (convs and pools apart)."""
    ops = {c["name"]: c["op"] for c in report["cases"]}
    groups: Dict[Tuple[str, str], List[float]] = {}
    for r in report["results"]:
        if r["kind"] == "fastconv" and r.get("ratio_to_best_peer"):
            family = "conv" if ops[r["case"]] in CONV_OPS else "pool"
            groups.setdefault((f"{r['backend']}:{r['algo']}", family), []).append(r["ratio_to_best_peer"])
    lines = []
    for (label, family), vals in sorted(groups.items()):
        gm = math.exp(sum(math.log(v) for v in vals) / len(vals))
        lines.append(f"{label:<18} {family:<5} geomean vs best peer {gm:.2f}x over {len(vals)} cases "
                     f"(min {min(vals):.2f}x, max {max(vals):.2f}x)")
    return "\n".join(lines)


# -- per-table summary (the README table) ------------------------------------------------------------
def _geomean(vals: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _median(vals: Sequence[float]) -> Optional[float]:
    return statistics.median(vals) if vals else None


def _row_label(row: dict, op: str) -> str:
    """The fastconv runner a result row belongs to: ``backend:algo`` for convs, ``backend:pools`` for pools
    (whose row ``algo`` is the implementation dispatch picked)."""
    return f"{row['backend']}:{row['algo'] if op in CONV_OPS else 'pools'}"


def _check_target(target: dict, entry: dict) -> Optional[bool]:
    """Whether ``entry`` meets ``target``: False when a measured figure misses it, None when it cannot be
    told (a layer not timed, no copy-bandwidth reference), else True."""
    checks = {"geomean": entry["geomean"], "min": entry["min"],
              "median_copy_fraction": entry.get("median_copy_fraction")}
    got = [checks[k] >= v if checks[k] is not None else None for k, v in target.items() if k in checks]
    if False in got:
        return False
    if None in got or entry["timed"] < entry["layers"]:
        return None
    return True


def _is_depthwise(case: dict) -> bool:
    g = case.get("kwargs", {}).get("groups", 1)
    return case["op"] in CONV_OPS and g > 1 and g == case["input_shape"][1]


#: named subsets of a table a target can be about
LAYER_SUBSETS = {"depthwise": _is_depthwise}


def _target_text(target: Optional[dict], peer: str) -> Optional[str]:
    if not target:
        return None
    parts = []
    if "geomean" in target:
        parts.append(f"geomean >= {target['geomean']:g}x {peer}")
    if "min" in target:
        parts.append(f"no layer < {target['min']:g}x")
    if "median_copy_fraction" in target:
        parts.append(f"median >= {100 * target['median_copy_fraction']:.0f}% of copy bandwidth")
    return ", ".join(parts)


def table_summary(report: dict) -> List[dict]:
    """Per standard-layer table and fastconv runner (``backend:algo``; ``backend:pools`` for pools): the
    geometric-mean and the lowest ratio to the best peer (with its layer), how many layers were timed,
    unsupported or failed, the median fraction of the fp32 FMA peak (fastconv and peer; convs), the median
    and lowest fraction of the measured copy bandwidth (pools), and the issue's target (:data:`TARGETS`)
    with whether it is met (None when not every layer was timed)."""
    cases = {c["name"]: c for c in report["cases"]}
    tables: Dict[str, List[str]] = {}
    for c in report["cases"]:
        if c.get("source", "").startswith("layers:"):
            tables.setdefault(c["source"].split(":", 1)[1], []).append(c["name"])
    dtype = report.get("settings", {}).get("dtype", "float32")
    out = []
    for table, names in tables.items():
        in_table = set(names)
        rows = [r for r in report["results"] if r["case"] in in_table]
        groups: Dict[str, List[dict]] = {}
        for r in rows:
            if r["kind"] == "fastconv":
                groups.setdefault(_row_label(r, cases[r["case"]]["op"]), []).append(r)
        peers = sorted({r["backend"] for r in rows if r["kind"] == "peer" and r["status"] == "ok"})
        peer = "/".join(peers) or "peer"
        target = TARGETS.get(table)
        subset = target.get("layers") if target else None
        for label, rs_all in groups.items():
            is_conv = not label.endswith(":pools")
            layers_all = [n for n in names if (cases[n]["op"] in CONV_OPS) == is_conv]
            parts = [(None, layers_all)]
            if subset:
                sub = [n for n in layers_all if LAYER_SUBSETS[subset](cases[n])]
                if sub and len(sub) < len(layers_all):
                    parts.append((subset, sub))
            for part, layers in parts:
                rs = [r for r in rs_all if r["case"] in set(layers)]
                entry = _summary_entry(table, label, part, layers, rs, rows, cases, dtype, peer)
                if target and part == subset:
                    entry["target"] = _target_text(target, peer)
                    entry["met"] = _check_target(target, entry)
                out.append(entry)
    return out


def _summary_entry(table, label, part, layers, rs, rows, cases, dtype, peer) -> dict:
    """One :func:`table_summary` entry: the rows ``rs`` of fastconv runner ``label`` on ``layers``."""
    is_conv = not label.endswith(":pools")
    ok = [r for r in rs if r["status"] == "ok" and r.get("ratio_to_best_peer")]
    ratios = [(r["ratio_to_best_peer"], r["case"]) for r in ok]
    peer_rows = [r for r in rows if r["kind"] == "peer" and r["status"] == "ok" and r["case"] in set(layers)]
    lo = min(ratios) if ratios else (None, None)
    hi = max(ratios) if ratios else (None, None)
    entry = {
        "table": table, "layer_subset": part, "runner": label, "dtype": dtype, "peer": peer,
        "batch": sorted({cases[n]["input_shape"][0] for n in layers}),
        "layers": len(layers), "timed": len(ratios),
        "unsupported": sum(r["status"] == "unsupported" for r in rs),
        "failed": sum(r["status"] in ("verify-failed", "error") for r in rs),
        "geomean": _geomean([v for v, _ in ratios]) if ratios else None,
        "min": lo[0], "min_layer": lo[1], "max": hi[0], "max_layer": hi[1],
        "median_peak_fraction": _median([r["peak_fraction"] for r in ok if r.get("peak_fraction") is not None]),
        "peer_median_peak_fraction": _median([r["peak_fraction"] for r in peer_rows
                                              if r.get("peak_fraction") is not None]),
    }
    if not is_conv:
        fr = [(r["copy_fraction"], r["case"]) for r in ok if r.get("copy_fraction") is not None]
        entry["median_copy_fraction"] = _median([f for f, _ in fr])
        entry["min_copy_fraction"], entry["min_copy_layer"] = min(fr) if fr else (None, None)
        entry["peer_median_copy_fraction"] = _median([r["copy_fraction"] for r in peer_rows
                                                      if r.get("copy_fraction") is not None])
    entry["target"], entry["met"] = None, None
    return entry


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if v < 0.1 else f"{100 * v:.0f}%"


def _table_name(e: dict) -> str:
    return e["table"] + (f" [{e['layer_subset']}]" if e.get("layer_subset") else "")


def _met(v: Optional[bool]) -> str:
    return {True: "yes", False: "no", None: "-"}[v]


def summary_text(entries: Sequence[dict]) -> str:
    """One line per :func:`table_summary` entry."""
    lines = []
    for e in entries:
        line = (f"{_table_name(e)} (N={','.join(map(str, e['batch']))}, {e['dtype']}) {e['runner']}: geomean "
                f"{_x(e['geomean'])} vs {e['peer']}, min {_x(e['min'])}"
                + (f" ({e['min_layer'].split('/', 1)[-1]})" if e["min_layer"] else "")
                + f", {e['timed']}/{e['layers']} layers timed")
        if e["unsupported"] or e["failed"]:
            line += f" ({e['unsupported']} unsupported, {e['failed']} failed)"
        if "median_copy_fraction" in e:
            line += (f", median {_pct(e['median_copy_fraction'])} of copy bandwidth "
                     f"(peer {_pct(e.get('peer_median_copy_fraction'))})")
        elif e["median_peak_fraction"] is not None:
            line += (f", median {_pct(e['median_peak_fraction'])} of fp32 peak "
                     f"(peer {_pct(e['peer_median_peak_fraction'])})")
        if e["target"]:
            line += f"; target {e['target']}: " + {True: "met", False: "NOT met", None: "not every layer timed"}[e["met"]]
        lines.append(line)
    return "\n".join(lines)


def _cuda_version(v) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if isinstance(v, int) else "-"


def markdown(reports: Sequence[dict]) -> str:
    """The per-table summary of one or more reports (e.g. a float32 and a float16 run) as Markdown: per
    report the machine, versions and physical limits, then one table row per (table, fastconv runner)."""
    parts = []
    for rep in reports:
        m, v, st = rep["machine"], rep["versions"], rep["settings"]
        g = m.get("gpu") or {}
        peer = next((r.get("settings", {}) for r in rep["runners"] if r["kind"] == "peer" and r["available"]), {})
        dev = g.get("name") or f"{m['cpu_model']} ({m['cpu_cores_usable']} cores)"
        parts.append(f"### {dev}, {st.get('dtype', 'float32')}, {m['date']}\n")
        facts = []
        if g:
            facts.append(f"driver {g.get('nvidia_driver') or '-'} (CUDA driver API {_cuda_version(g.get('cuda_driver'))}), "
                         f"CUDA runtime {_cuda_version(g.get('cuda_runtime'))}, compute capability "
                         f"{g.get('compute_capability')}")
        facts.append(f"fastconv {v.get('fastconv')}, CuPy {v.get('cupy') or '-'}, PyTorch {v.get('torch') or '-'}"
                     + (f", cuDNN {peer['cudnn']}" if peer.get("cudnn") else "")
                     + (", TF32 off" if peer.get("allow_tf32") is False else ""))
        pk = rep.get("peak")
        if pk:
            lim = []
            if pk.get("fp32_gflops"):
                lim.append(f"fp32 FMA peak {pk['fp32_gflops'] / 1000:.1f} TFLOP/s")
            if pk.get("mem_gbps"):
                lim.append(f"memory bandwidth {pk['mem_gbps']:.0f} GB/s")
            vend = pk.get("vendor")
            facts.append("limits: " + ", ".join(lim) + f" ({pk['source'].split(';')[0]}"
                         + (f"; spec sheet: {vend['fp32_gflops'] / 1000:.1f} TFLOP/s, {vend['mem_gbps']:.0f} GB/s"
                            if vend else "") + ")")
        cp = rep.get("copy_bandwidth")
        if cp and cp.get("gbps"):
            facts.append(f"measured copy bandwidth {cp['gbps']:.0f} GB/s ({cp.get('method')}, "
                         f"{cp.get('bytes', 0) / 2**20:.0f} MiB)")
        elif cp:
            facts.append(f"copy bandwidth not measured: {cp.get('error')}")
        facts.append(f"ratio = {' / '.join(sorted({e['peer'] for e in table_summary(rep)})) or 'peer'} "
                     "median time / fastconv median time (> 1: fastconv faster); medians of "
                     f"{st['policy']['min_repeat']}-{st['policy']['max_repeat']} timed calls")
        parts.append("".join(f"- {f}\n" for f in facts))
        entries = table_summary(rep)
        if not entries:
            parts.append("\n(no standard-layer tables in this run)\n")
            continue
        parts.append("\n| table (N) | fastconv | layers timed | geomean ratio | min ratio (layer) | "
                     "median % fp32 peak: fastconv / peer | median % copy BW: fastconv (min) / peer | target | met |\n"
                     "|---|---|---|---|---|---|---|---|---|\n")
        for e in entries:
            copy = "-"
            if "median_copy_fraction" in e:
                copy = (f"{_pct(e['median_copy_fraction'])} ({_pct(e['min_copy_fraction'])}) / "
                        f"{_pct(e.get('peer_median_copy_fraction'))}")
            layer = f" ({e['min_layer'].split('/', 1)[-1]})" if e["min_layer"] else ""
            peakf = "-" if "median_copy_fraction" in e else \
                f"{_pct(e['median_peak_fraction'])} / {_pct(e['peer_median_peak_fraction'])}"
            timed = f"{e['timed']}/{e['layers']}" + (f" ({e['unsupported']} unsupported)" if e["unsupported"] else "") \
                + (f" ({e['failed']} failed)" if e["failed"] else "")
            parts.append(f"| {_table_name(e)} ({','.join(map(str, e['batch']))}) | `{e['runner']}` | {timed} | "
                         f"{_x(e['geomean'])} | {_x(e['min'])}{layer} | {peakf} | {copy} | {e['target'] or '-'} | "
                         f"{_met(e['met'])} |\n")
        parts.append("\n")
    return "".join(parts)


def write_markdown(reports: Sequence[dict], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(markdown(reports))


def write_json(report: dict, path: str) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(clean(report), f, indent=1)
        f.write("\n")


def _order(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _log_ratio_axis(ax) -> None:
    """Log scale with plain tick labels (0.2, 0.5, 1, 2, ...)."""
    from matplotlib import ticker
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot(report: dict, path: str) -> Optional[str]:
    """Draw throughput against stride, padding and dilation per runner (a row per op) and the ratio to the
    best peer (a row per op); plus the ratio per standard layer when there are layers. Returns None, or why
    no plot was drawn (matplotlib missing, nothing to draw)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install matplotlib (or fastconv[bench])"
    ok = [r for r in report["results"] if r["status"] == "ok"]
    ops = []
    for c in report["cases"]:
        if any(s in c["sweeps"] for s in PLOT_SWEEPS) and c["op"] not in ops:
            ops.append(c["op"])
    layers = [c["name"] for c in report["cases"] if c["source"].startswith("layers")]
    if not ops and not layers:
        return "no sweep or layer cases to plot"
    nrows = 2 * len(ops) + (1 if layers else 0)
    fig = plt.figure(figsize=(15, 3.0 * nrows + 0.8))
    grid = fig.add_gridspec(nrows, len(PLOT_SWEEPS))
    labels = sorted({(r["kind"] != "fastconv", f"{r['backend']}:{r['algo']}") for r in ok})
    colors = {lab: plt.cm.tab10(i % 10) for i, (_, lab) in enumerate(labels)}
    for oi, op in enumerate(ops):
        unit = "GFLOP/s" if op in CONV_OPS else "GB/s"
        legend_done = False
        for si, sweep in enumerate(PLOT_SWEEPS):
            ax_t = fig.add_subplot(grid[2 * oi, si])
            ax_r = fig.add_subplot(grid[2 * oi + 1, si])
            on = [c for c in report["cases"] if c["op"] == op and sweep in c["sweeps"]]
            xs = sorted({c["sweeps"][sweep] for c in on}, key=_order)
            ax_t.set_title(f"{op}: {sweep}", fontsize=10)
            if len(xs) < 1:
                ax_t.text(0.5, 0.5, f"no {sweep} sweep in this suite", ha="center", va="center",
                          transform=ax_t.transAxes)
                ax_t.axis("off")
                ax_r.axis("off")
                continue
            for peer, lab in labels:
                pts_t, pts_r = [], []
                for xi, x in enumerate(xs):
                    case = next(c["name"] for c in on if c["sweeps"][sweep] == x)
                    row = next((r for r in ok if r["case"] == case and f"{r['backend']}:{r['algo']}" == lab),
                               None)
                    if row:
                        pts_t.append((xi, row["throughput"]))
                        if not peer and row["ratio_to_best_peer"]:
                            pts_r.append((xi, row["ratio_to_best_peer"]))
                style = dict(color=colors[lab], marker="o", linestyle="--" if peer else "-", label=lab)
                if pts_t:
                    ax_t.plot(*zip(*pts_t), **style)
                if pts_r:
                    ax_r.plot(*zip(*pts_r), **style)
            for ax in (ax_t, ax_r):
                ax.set_xticks(range(len(xs)))
                ax.set_xticklabels(xs)
                ax.grid(alpha=0.3)
            ax_t.set_ylabel(unit)
            ax_r.set_ylabel("vs best peer (x, log)")
            _log_ratio_axis(ax_r)
            ax_r.axhline(1.0, color="gray", linewidth=0.8)
            ax_r.set_xlabel(sweep)
            if not legend_done and ax_t.get_legend_handles_labels()[0]:
                ax_t.legend(fontsize=7)
                legend_done = True
    if layers:
        ax = fig.add_subplot(grid[nrows - 1, :])
        fc = sorted({f"{r['backend']}:{r['algo']}" for r in ok if r["kind"] == "fastconv"})
        width = 0.8 / max(1, len(fc))
        for j, lab in enumerate(fc):
            ys = []
            for name in layers:
                row = next((r for r in ok if r["case"] == name and f"{r['backend']}:{r['algo']}" == lab), None)
                ys.append(row["ratio_to_best_peer"] if row and row["ratio_to_best_peer"] else float("nan"))
            ax.bar([i + j * width for i in range(len(layers))], ys, width, label=lab, color=colors.get(lab))
        ax.axhline(1.0, color="gray", linewidth=0.8)
        _log_ratio_axis(ax)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
        ax.set_xticklabels([n.split("/", 1)[-1] for n in layers], rotation=70, fontsize=7)
        ax.set_ylabel("vs best peer (x, log)")
        ax.set_title("standard layers: speed relative to the best peer (> 1: faster)", fontsize=10)
        ax.legend(fontsize=7)
    m = report["machine"]
    dev = m["gpu"]["name"] if m.get("gpu") else f"{m['cpu_model']} ({m['cpu_cores_usable']} cores)"
    fig.suptitle(f"fastconv bench: suite {report['settings']['suite']} on {dev}, {m['date']}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
