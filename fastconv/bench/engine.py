"""The run: verify and time every (case, runner) of a suite and assemble the report (the JSON document)."""
from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Callable, Dict, List, Optional

from .. import _timing
from . import busy, machine
from .cases import Case, case_spec
from .layers import layer_tables
from .report import add_throughput, fmt_time, table_summary
from .runners import (FastconvRunner, Runner, TorchRunner, fastconv_runners, limit_threads, peer_runners,
                      threads_note)
from .suites import build_cases, get_suite, suite_policy, table_batches
from .timing import QUICK_POLICY, Policy, Side, measure_case, summarise
from .verification import reference, verify

SCHEMA = "fastconv-bench/2"
#: the report versions ``fastconv summary`` reads (a /1 report holds forward cases only)
SCHEMAS_READ = ("fastconv-bench/1", SCHEMA)


@dataclasses.dataclass
class Options:
    suite: str = "quick"
    device: str = "cpu"
    backends: Optional[List[str]] = None  # None: the suite's, else every backend of the device
    algos: Optional[List[str]] = None     # None: the suite's, else every conv algorithm (no "auto")
    peers: Optional[List[str]] = None     # None: every peer of the device; []: none
    policy: Policy = QUICK_POLICY         # the suite's settle_s applies when the policy has none
    batch: Optional[int] = None
    max_cases: Optional[int] = None
    filter: Optional[str] = None
    threads: Optional[int] = None         # CPU threads for numba, torch and the BLAS pools (None: their defaults)
    dtype: str = "float32"                # storage dtype of every case (suites.DTYPES)
    table_batch: Optional[Dict[str, int]] = None   # batch per standard-layer table (wins over batch)
    shapes: Optional[str] = None          # directory of the layer tables (None: $FASTCONV_SHAPES, else shipped)
    targets: Optional[dict] = None        # goals per table (targets.check_targets); None: no verdicts
    copy_bytes: int = 256 * 2**20         # buffer of the GPU copy-bandwidth reference
    direction: Optional[str] = None       # forward, backward or both (None: the suite's)
    busy_cores: int = 0                   # child processes keeping this many cores busy while it runs (busy.py)


def _runner_info(r: Runner, why: Optional[str]) -> dict:
    return {"kind": r.kind, "name": r.name, "algo": r.algo, "family": r.family, "device": r.device,
            "available": why is None, "reason": why}


def _references(cases: List[Case], device: str, copy_bytes: int, gpu: Optional[dict],
                log: Callable[[str], None]):
    """(peak, copy bandwidth) the fractions of this run are taken of."""
    pools = any(not c.is_conv for c in cases)
    if device == "gpu":
        if not gpu:
            return None, None
        copy_ref = None
        if pools:
            try:
                copy_ref = machine.gpu_copy_bandwidth(copy_bytes)
                log(f"device-to-device copy: {copy_ref['gbps']:.0f} GB/s ({copy_ref['method']})")
            except Exception as e:  # the reference is reported missing, the run goes on
                copy_ref = {"gbps": None, "error": f"{type(e).__name__}: {e}"}
        return machine.gpu_peak_from_device(gpu), copy_ref
    if not pools:
        return None, None
    bw, mib, n = machine.copy_bandwidth(), machine.CPU_COPY_BYTES / 2**20, machine.CPU_COPY_REPEAT
    peak = {"fp32_gflops": None, "mem_gbps": bw,
            "source": f"measured in this run: numpy.copyto of {mib:.0f} MiB, best of {n}, one thread"}
    copy_ref = {"gbps": bw, "method": "numpy.copyto", "bytes": machine.CPU_COPY_BYTES,
                "how": f"numpy.copyto of {mib:.0f} MiB, (read + write bytes) / time, best of {n}, one thread"}
    return peak, copy_ref


def _run_case(case: Case, live: List[Runner], policy: Policy) -> tuple:
    """The result rows of one case (every runner verified, then the verified ones timed together in rounds:
    :func:`~.timing.measure_case`), the batch it was verified at and how its timing ended."""
    rows, ref, verified = [], None, []
    full_spec = case_spec(case)
    for r in live:
        if not r.runs(case):
            continue
        row = {"case": case.name, "op": case.spec_op, "kind": r.kind, "backend": r.name, "algo": r.algo,
               "status": "ok", "error": None, "verified": None}
        rows.append(row)
        why = r.unsupported(case, full_spec)
        if why:
            row.update(status="unsupported", error=why)
            continue
        row["algo"] = r.algo_for(case, full_spec)
        try:
            if ref is None:
                ref = reference(case)
            row["verified"] = verify(case, r, ref)
        except AssertionError as e:
            row.update(status="verify-failed", error=str(e))
            continue
        except Exception as e:  # a runner that crashes is reported, the run goes on
            _error(row, e)
            continue
        verified.append((row, r))
    timing, arrays = _time_case(case, verified, policy)
    for row, r in verified:
        if row["status"] == "ok" and isinstance(r, FastconvRunner):
            row["impl"] = r.chosen(full_spec, case.padding_operand(arrays, full_spec))
            row["tuned_s"] = r.measured(full_spec)
    return rows, full_spec, (ref.n if ref else None), timing


def _error(row: dict, e: BaseException) -> None:
    row.update(status="error", error=f"{type(e).__name__}: {e}")


def _time_case(case: Case, verified: List[tuple], policy: Policy) -> tuple:
    """Time the verified (row, runner) pairs of ``case`` together on one set of arrays (each runner's device
    copy is freed on return) and fill in their rows; returns the case's timing record (None when nothing
    was timed) and the arrays."""
    if not verified:
        return None, None
    try:
        arrays = case.arrays()       # once per case, shared by its runners
    except Exception as e:
        for row, _ in verified:
            _error(row, e)
        return None, None
    sides, timed = [], []
    for row, r in verified:
        try:
            sides.append(Side(functools.partial(r.function(case), *r.convert(arrays)), r.sample, r.sync))
            timed.append(row)
        except Exception as e:
            _error(row, e)
    results, info = measure_case(sides, policy)
    for row, m in zip(timed, results):
        if m["error"] is not None:
            _error(row, m["error"])
        else:
            row.update(summarise(m["times_s"], policy), first_call_s=m["first_call_s"])
    return info, arrays


def run(opts: Options, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Verify and time every (case, runner) of the suite; returns the report (the JSON document), with the
    run's own wall time in ``wall_s``."""
    done: List[dict] = []
    wall_s = _timing.wall_times(lambda: done.append(_run(opts, log)), 1)[0]
    return dict(done[0], wall_s=wall_s)


def _run(opts: Options, log: Callable[[str], None]) -> dict:
    suite = get_suite(opts.suite)
    direction = opts.direction or suite.direction
    cases = build_cases(opts.suite, opts.device, opts.batch, opts.table_batch, opts.dtype, opts.shapes,
                        direction)
    if opts.filter:
        cases = [c for c in cases if opts.filter in c.name]
    if opts.max_cases:
        cases = cases[: opts.max_cases]
    backends = opts.backends or (list(suite.backends) if suite.backends else None)
    algos = opts.algos or (list(suite.algos) if suite.algos else None)
    policy = suite_policy(suite, opts.policy)
    runners: List[Runner] = list(fastconv_runners(opts.device, backends, algos, direction))
    if opts.peers is None or opts.peers:
        runners += peer_runners(opts.device, opts.peers)
    runner_info, live = [], []
    for r in runners:
        why = r.unavailable()
        runner_info.append(_runner_info(r, why))
        if why is None:
            live.append(r)
        else:
            log(f"skipping {r.label}: {why}")
    if not any(r.kind == "fastconv" for r in live):
        raise RuntimeError("no fastconv backend can run on device {!r}: {}".format(
            opts.device, "; ".join(dict.fromkeys(f"{i['name']}: {i['reason']}" for i in runner_info
                                                 if i["kind"] == "fastconv"))
            or "no backend of the registry has arrays on this device"))

    info = machine.machine_info(opts.device)
    peak, copy_ref = _references(cases, opts.device, opts.copy_bytes, info["gpu"], log)
    results, case_records = [], []
    with busy.busy_cores(opts.busy_cores) as held, \
            limit_threads(opts.threads, live) as threads:   # numba's, torch's and the BLAS pools' counts back after
        if opts.busy_cores:
            log(f"busy machine: {opts.busy_cores} child process(es) spinning, pinned to core(s) "
                f"{', '.join(str(c) for c in held.cores)} (pids {', '.join(map(str, held.pids))})")
        for r, ri in zip(runners, runner_info):
            if ri["available"] and isinstance(r, TorchRunner):
                ri["settings"] = r.settings()
        log(f"fastconv bench: suite {opts.suite} ({direction}), device {opts.device}, {len(cases)} cases, "
            f"runners {', '.join(r.label for r in live)}")
        note = threads_note(threads)
        if note:
            log(note)
        during = []                      # the 1-minute load average after each case
        for i, case in enumerate(cases, 1):
            rows, spec, verify_n, timing = _run_case(case, live, policy)
            load = machine.loadavg()
            if load:
                during.append(load[0])
            add_throughput(case, spec, rows, peak, verify_n, copy_ref)
            results += rows
            case_records.append(dict(case.record(), flops=spec.flops(), bytes=spec.bytes(), verify_n=verify_n,
                                     metric="GFLOP/s" if case.is_conv else "GB/s", timing=timing))
            log(f"[{i}/{len(cases)}] {case.name:<30} {case.describe():<40} " + "  ".join(
                f"{r['backend']}:{r['algo']} " + (fmt_time(r["median_s"]) + ("~" if r.get("noisy") else "")
                                                  if r["status"] == "ok" else r["status"])
                for r in rows))
    info["loadavg_end"] = machine.loadavg()
    info["loadavg_max"] = max(during) if during else None
    busy_record = held.record() if opts.busy_cores else dict(busy.QUIET)
    report = {
        "schema": SCHEMA,
        "machine": info,
        "versions": machine.versions(),
        "settings": {"suite": opts.suite, "device": opts.device, "direction": direction,
                     "policy": dataclasses.asdict(policy),
                     "batch": opts.batch, "filter": opts.filter, "max_cases": opts.max_cases,
                     "threads": threads, "shapes": layer_tables(opts.shapes, suite.tables)[0] if suite.layers else None,
                     "dtype": opts.dtype, "accumulate": "float32" if opts.dtype == "float16" else opts.dtype,
                     "table_batch": table_batches(opts.suite, opts.batch, opts.table_batch) if suite.layers else None,
                     "targets": opts.targets, "busy": busy_record,
                     "ratio": "best peer median time / runner median time (> 1: faster than every peer)",
                     "timing": "CUDA events around each call (fastconv._timing.event_times)" if opts.device == "gpu"
                     else "time.perf_counter around each call, synchronised (fastconv._timing.wall_times)",
                     "statistic": "median"},
        "peak": peak,
        "copy_bandwidth": copy_ref,
        "runners": runner_info,
        "cases": case_records,
        "results": results,
        "failures": sum(r["kind"] == "fastconv" and r["status"] in ("verify-failed", "error") for r in results),
    }
    report["summary"] = table_summary(report, opts.targets)
    return report
