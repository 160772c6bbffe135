"""Suites: which cases a run measures, on which device, with which runners by default.

Every decision that depends on the suite is read from its :class:`Suite` here, never from its name
elsewhere.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from .cases import DIRECTIONS, Case, sweep_cases, with_directions
from .layers import layer_cases, layer_tables
from .networks import BUILDERS

DEVICES = ("cpu", "gpu")
#: storage dtypes a run can use (float16: fastconv stores float16 and accumulates in float32; the peer gets
#: half tensors)
DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    doc: str
    sweep: Optional[str] = None                  # "quick" or "sweep": the sweep cases at those sizes
    layers: bool = False                         # the standard layers of the shape tables
    tables: Optional[Tuple[str, ...]] = None     # only these tables (None: every table found)
    variants: Tuple[str, ...] = ()               # tables whose 3x3 layers get stride-2 and dilation-2 copies
    table_batch: Tuple[Tuple[str, int], ...] = ()   # default batch per table (--batch and --table-batch win)
    device: Optional[str] = None                 # the one device it runs on (None: either)
    backends: Optional[Tuple[str, ...]] = None   # default fastconv backends (None: every one of the device)
    algos: Optional[Tuple[str, ...]] = None      # default conv algorithms (None: every one, without "auto")
    settle_s: float = 0.0                        # pause before each runner's warm-up and timed calls
    direction: str = "forward"                   # default of --direction: forward, backward or both
    builder: Optional[str] = None                # cases of their own: a networks.BUILDERS entry
    #: changes to the timing policy that the suite's calls need (their size, not the caller's taste),
    #: applied to the stock policies (QUICK_POLICY, FULL_POLICY: the CLI's); a policy made by hand is
    #: used as it is (see :func:`suite_policy`)
    timing: Tuple[Tuple[str, object], ...] = ()


SUITES: Dict[str, Suite] = {s.name: s for s in (
    Suite("quick", "a small sweep of every op (about a minute on two CPU cores, Numba compilation included)",
          sweep="quick"),
    Suite("sweep", "stride, padding, dilation, kernel size, groups and batch sweeps of conv2d and conv1d, and "
                   "the matching sweeps of every pooling op", sweep="sweep"),
    Suite("layers", "the standard network layers of every shape table (ResNet-50, VGG-16, MobileNet-v1 "
                    "depthwise, pools); --table-batch sets a table's batch", layers=True),
    Suite("full", "sweep + layers", sweep="sweep", layers=True),
    # OpenBLAS's workers spin for about 0.1 s after a GEMM, and whatever is timed next (torch, or a Numba
    # kernel) would share the cores with them (see numba_cpu's docstring): hence the pause
    Suite("cpu-layers", "the CPU layer benchmark: ResNet-50 at N=8 with stride-2 and dilation-2 variants of "
                        "its 3x3 layers, MobileNet-v1 depthwise at N=8, pools at N=16; every numba algorithm "
                        "and auto beside torch, a 0.3 s pause before each side is timed",
          layers=True, tables=("resnet50", "mobilenet_v1_dw", "pools"), variants=("resnet50",),
          table_batch=(("resnet50", 8), ("mobilenet_v1_dw", 8), ("pools", 16)), device="cpu",
          backends=("numba",), algos=("all",), settle_s=0.3),
    # calls of 10 us to 2 ms: blocks of 50 calls after a pause long enough for OpenBLAS's spinning workers
    # (about 0.1 s) to sleep, at least three blocks per side, so that every side is timed in three
    # stretches of the run
    Suite("cpu-tiny", "per-call time of tiny calls: a (1,3,8,8) input with a (4,3,3,3) weight, a "
                      "(1,4,8,8) max pool, LeNet-5's convolutions and pools at N=1 and N=64, and a whole "
                      "LeNet-5 forward at N=1; numba with algo auto beside torch",
          device="cpu", backends=("numba",), algos=("auto",), builder="tiny", settle_s=0.15,
          timing=(("round_calls", 50), ("min_repeat", 150), ("max_repeat", 2000))),
    # one call of a network is 2-200 ms: blocks of 2 calls, at least four blocks per side, a longer
    # budget per case
    Suite("cpu-networks", "whole networks run as users run them, each one timed call per side: "
                          "LeNet-5 N=64, VGG-16 stage 2 N=8, a ResNet-50 bottleneck N=8, a small CNN N=64 "
                          "(conv, ReLU in NumPy / torch.relu_, pool, in sequence; see "
                          "fastconv.bench.networks); numba with algo auto beside torch, a 0.3 s pause "
                          "before each side is timed",
          device="cpu", backends=("numba",), algos=("auto",), builder="networks", settle_s=0.3,
          timing=(("round_calls", 2), ("min_repeat", 8), ("max_time", 6.0))),
)}
SUITE_NAMES = tuple(SUITES)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITE_NAMES)}, got {name!r}")
    return SUITES[name]


def parse_table_batch(text: str) -> Dict[str, int]:
    """``"resnet50=32,pools=64"`` -> {"resnet50": 32, "pools": 64}; ValueError naming the bad item."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"table batch {item!r} is not TABLE=N with N a positive integer")
        out[name.strip()] = int(value)
    return out


def table_batches(suite: str, batch: Optional[int] = None,
                  table_batch: Optional[Dict[str, int]] = None) -> Optional[Dict[str, int]]:
    """The batch per standard-layer table a run uses: the suite's own (unless ``batch`` is given), updated
    by ``table_batch``, which wins over both; None when no table has its own batch."""
    out = {} if batch else dict(get_suite(suite).table_batch)
    out.update(table_batch or {})
    return out or None


def build_cases(suite: str, device: str = "cpu", batch: Optional[int] = None,
                table_batch: Optional[Dict[str, int]] = None, dtype: str = "float32",
                shapes: Optional[str] = None, direction: Optional[str] = None) -> List[Case]:
    """The cases of ``suite``: sweep cases at ``batch`` (except the batch sweep), layer cases (read from
    ``shapes``, see :func:`~.layers.shapes_dir`) at the batch of their table (:func:`table_batches`, else
    ``batch``), the suite's own cases (``builder``: its tiny calls or networks, at their own batches unless
    ``batch`` is given), all in storage dtype ``dtype``; the forward calls, their gradients or both
    (``direction``, default the suite's; see :func:`~.cases.with_directions`)."""
    s = get_suite(suite)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    direction = direction or s.direction
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if s.device and device != s.device:
        raise ValueError(f"suite {suite!r} runs on the {s.device}, not the {device}")
    cases: List[Case] = []
    if s.sweep:
        cases += [dataclasses.replace(c, shape=(batch,) + c.shape[1:]) if batch and "batch" not in c.sweeps
                  else c for c in sweep_cases(device, quick=s.sweep == "quick")]
    if s.builder:
        cases += BUILDERS[s.builder](batch)
    if s.layers:
        known = set(layer_tables(shapes, s.tables)[1])
        unknown = sorted(set(table_batch or {}) - known)
        if unknown:
            raise ValueError(f"--table-batch names {', '.join(unknown)}; the tables are {', '.join(sorted(known))}")
        cases += layer_cases(device, batch, table_batches(suite, batch, table_batch), shapes, s.tables, s.variants)
    if dtype != "float32":
        cases = [dataclasses.replace(c, dtype=dtype) for c in cases]
    return with_directions(cases, direction)


def suite_policy(suite: Suite, policy):
    """The timing policy a run of ``suite`` uses, given ``policy``: the suite's ``timing`` changes applied
    when ``policy`` is a stock one (QUICK_POLICY or FULL_POLICY), and its pause (``settle_s``) when the
    policy has none."""
    from .timing import FULL_POLICY, QUICK_POLICY
    if suite.timing and policy in (QUICK_POLICY, FULL_POLICY):
        policy = dataclasses.replace(policy, **dict(suite.timing))
    if suite.settle_s and not policy.settle_s:
        policy = dataclasses.replace(policy, settle_s=suite.settle_s)
    return policy
