"""The ``fastconv`` command.

    fastconv bench --quick                  verify and time a small sweep of every op (about a minute on 2 cores)
    fastconv bench --suite full --json r.json --plot r.png
    fastconv bench --suite layers --table-batch resnet50=32,pools=64 --algo all --targets goals.json
    fastconv bench --suite cpu-layers       the CPU layer benchmark: numba's algorithms beside torch
    fastconv bench --suite cpu-layers --direction backward   the same layers' gradients (conv_input,
                                            conv_weight, pool gradients) beside torch's backward kernels
    fastconv bench --suite cpu-tiny         per-call time of tiny calls and LeNet's ops beside torch
    fastconv bench --suite cpu-networks --busy-cores 1   whole networks, one core kept busy meanwhile
    fastconv summary r32.json r16.json --targets goals.json --markdown r.md   the summary of earlier reports
    fastconv info                           backends (and why one is unavailable), devices, versions, caches
    fastconv warmup                         compile every kernel ahead of time (numba; cuda with a GPU)
    fastconv warmup --backend numba --op max_pool2d --dtype float32   only some of them
    fastconv --version

``fastconv bench`` runs on the GPU when a GPU backend is usable (``--device cpu`` to override), else on the
CPU. Each case is verified against the NumPy oracle before it is timed; the exit status is 1 when a
fastconv backend fails verification, 2 on a usage error or when the results cannot be written. Without
--json/--plot/--out the JSON and the plot go to ``./fastconv-results/`` (:data:`RESULTS_DIR`, created with a
``.gitignore`` of ``*`` so git ignores it), named by device, suite and UTC date and time. See
:mod:`fastconv.bench` for what is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from . import _config, _files


def _bench_parser(sub) -> None:
    from . import bench
    p = sub.add_parser("bench", help="verify and time every backend and its peers over a suite of cases",
                       description="Verify each case against the NumPy oracle, then time every available "
                                   "fastconv backend/algorithm and the peers (torch, cuDNN) side by side. The "
                                   "'vs peer' ratios need a peer: pip install torch (a CUDA build of torch for "
                                   "cuDNN on a GPU).")
    p.add_argument("--quick", action="store_true",
                   help="the quick suite with short timing (about a minute on 2 CPU cores, compilation included)")
    p.add_argument("--suite", choices=bench.SUITE_NAMES,
                   help="; ".join(f"{s.name}: {s.doc}" for s in bench.SUITES.values())
                   + " (default: quick with --quick, else sweep)")
    p.add_argument("--device", choices=("auto",) + bench.DEVICES, default="auto",
                   help="auto (default): the suite's device if it has one, else the GPU when a GPU backend is "
                        "usable, else the CPU")
    p.add_argument("--backend", action="append", metavar="B",
                   help="time only this backend (repeatable; default: the suite's, else every available backend "
                        "of the device except the 'numpy' oracle and the 'cuda-emu' emulator, which run only when "
                        "named)")
    p.add_argument("--algo", action="append", metavar="A",
                   help="time only this conv algorithm (repeatable; 'auto' adds fastconv's own choice, 'all' "
                        "every algorithm a backend implements and 'auto'; an algorithm a backend lacks is "
                        "reported unsupported). Pools take no algorithm: they run what fastconv picks")
    p.add_argument("--peer", action="append", metavar="P", help="only this peer (torch, torch-cuda, cupyx)")
    p.add_argument("--no-peers", action="store_true", help="time no peer")
    p.add_argument("--json", metavar="PATH",
                   help="write the report here (default: <DIR>/<device name>-<suite>-<date and time>.json, DIR "
                        "being --out)")
    p.add_argument("--plot", metavar="PATH", help="draw the PNG here (default: the JSON's name with .png)")
    p.add_argument("--out", metavar="DIR",
                   help=f"the folder of the default JSON and PNG (default ./{RESULTS_DIR}, created on first use "
                        "with a .gitignore inside, so git ignores it wherever you run)")
    p.add_argument("--no-json", action="store_true", help="write no JSON")
    p.add_argument("--no-plot", action="store_true", help="draw no plot")
    p.add_argument("--batch", type=int, metavar="N", help="batch size of every case (default: per suite/device)")
    p.add_argument("--table-batch", metavar="T=N,...",
                   help="batch per standard-layer table, e.g. resnet50=32,pools=64 (wins over --batch and over "
                        "the suite's own batches)")
    p.add_argument("--shapes", metavar="DIR",
                   help="read the standard layer tables (*.csv) from DIR (default: $FASTCONV_SHAPES, else the "
                        "tables shipped with fastconv)")
    p.add_argument("--targets", metavar="FILE",
                   help="goals per table (JSON, see fastconv.bench.targets), checked in the summary; without "
                        "it the summary reports ratios only")
    p.add_argument("--direction", choices=bench.DIRECTIONS,
                   help="forward (default): the ops themselves; backward: their gradients (fastconv.grad: "
                        "conv_input and conv_weight of every convolution, the gradient of every pool) beside "
                        "torch's backward kernels; both: each forward case followed by its gradients")
    p.add_argument("--dtype", choices=bench.DTYPES, default="float32",
                   help="storage dtype: float32 (default) or float16 (fastconv accumulates in float32; the "
                        "peer gets half tensors); verified with fastconv.testing's tolerance for the dtype")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the per-table summary (ratios, peaks, copy bandwidth, and goals with --targets) "
                        "as Markdown")
    p.add_argument("--filter", metavar="TEXT", help="only cases whose name contains TEXT")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for numba, torch and the BLAS pools alike (OpenBLAS, MKL, BLIS, through "
                        "threadpoolctl from the bench extra; without it the run says the BLAS pools were not "
                        "limited). Default: their own defaults, all cores; 1 gives steadier numbers on a machine "
                        "that is busy with other work")
    p.add_argument("--busy-cores", type=int, default=0, metavar="N",
                   help="a busy machine on purpose: N child processes each keep one core busy (a spinning "
                        "loop, pinned to the last N usable cores) from before the first case until after the "
                        "last, also when the run fails or is interrupted; the report's settings.busy, its "
                        "Markdown header and the console say so, with the CPU time each child used. Compare "
                        "with a run without it. Default 0")
    # test-only: cut the case list short
    p.add_argument("--max-cases", type=int, help=argparse.SUPPRESS)


def _summary_parser(sub) -> None:
    p = sub.add_parser("summary", help="the per-table summary of earlier bench reports (JSON)",
                       description="Print the per-table summary (geomean, median and lowest ratio to the peer, "
                                   "peaks, copy bandwidth; with --targets, whether each goal is met) of one or more "
                                   "fastconv bench JSON reports, and write it as Markdown (one section per report).")
    p.add_argument("reports", nargs="+", metavar="JSON", help="reports written by fastconv bench")
    p.add_argument("--targets", metavar="FILE", help="goals per table (JSON) to check the summary against")
    p.add_argument("--markdown", metavar="PATH", help="write the Markdown here (default: print it)")


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="backends and why any is unavailable, devices, versions, cache paths",
                       description="Show what this machine can run: each backend (or why it is unavailable) and "
                                   "its implementations, the CPU and GPU, the benchmark peers, versions and where "
                                   "compiled kernels and measured choices are cached.")
    p.add_argument("--json", action="store_true", help="print the same as JSON")


def _warmup_parser(sub) -> None:
    from . import _warmup
    p = sub.add_parser("warmup", help="compile every kernel ahead of time, so that no first call waits",
                       description="Compile (or load from the disk cache) every kernel a backend may run: each "
                                   "implementation of every family runs once per dtype on a tiny problem. "
                                   "Progress on stderr, a summary on stdout; exit 1 when a run fails.")
    p.add_argument("--backend", action="append", choices=_warmup.BACKENDS, metavar="B",
                   help=f"warm this backend ({', '.join(_warmup.BACKENDS)}; repeatable; default: numba, and "
                        f"cuda when a GPU is usable; cuda-emu, the emulator, only when named)")
    p.add_argument("--dtype", action="append", choices=_warmup.DTYPES, metavar="D",
                   help="only this storage dtype (repeatable; default every dtype each implementation runs; "
                        "float16 warms what it runs in, float32 on the numba backend)")
    p.add_argument("--op", action="append", metavar="NAME",
                   help="only this op (repeatable): a dispatch op (conv, conv_input, conv_weight, max_pool, "
                        "avg_pool_backward, max_unpool, fold, ...), optionally with its dimensions (conv2d, "
                        "max_pool3d), or conv_transpose2d / conv2d_input / conv2d_weight")


def parser() -> argparse.ArgumentParser:
    from . import __version__
    ap = argparse.ArgumentParser(prog="fastconv", description="fastconv: benchmark its convolution and pooling "
                                 "backends against their peers (bench), summarise saved benchmark reports "
                                 "(summary), show what this machine can run (info), or compile every kernel "
                                 "ahead of time (warmup)")
    ap.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{bench,summary,info,warmup}")
    _bench_parser(sub)
    _summary_parser(sub)
    _info_parser(sub)
    _warmup_parser(sub)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.command == "bench":
        return cmd_bench(args, ap)
    if args.command == "summary":
        return cmd_summary(args)
    if args.command == "info":
        return cmd_info(args)
    if args.command == "warmup":
        from . import _warmup
        return _warmup.main(args.backend, args.dtype, args.op)
    ap.print_help()
    return 2


# ---------------------------------------------------------------------------------------------------
# fastconv bench
# ---------------------------------------------------------------------------------------------------
def _targets(path: Optional[str]) -> Optional[dict]:
    """The goals of ``--targets FILE`` (None without it); ValueError or OSError naming the file."""
    from . import bench
    return bench.load_targets(path) if path else None


def _device(args, ap, suite, backends) -> str:
    """--device, else the suite's device, else the device of the named backends, else the default."""
    from . import bench
    device = args.device
    if device == "auto":
        if suite.device:
            device = suite.device
        elif backends:
            devices = {bench.device_of_backend(b) for b in backends}
            if len(devices) > 1:
                ap.error(f"--backend {', '.join(backends)} mixes CPU and GPU backends; run them separately")
            device = devices.pop()
        else:
            device = bench.default_device()
    if suite.device and device != suite.device:
        ap.error(f"suite {suite.name!r} runs on the {suite.device}, not the {device}")
    wrong = [b for b in backends or () if bench.device_of_backend(b) != device]
    if wrong:
        ap.error(f"backend {', '.join(wrong)} does not run on device {device!r}")
    return device


def _note_load(device: str, threads: Optional[int]) -> None:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if device == "cpu" and not threads and load > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores: other work competes for the CPU; "
              "multi-threaded timings (numba, torch) suffer most, --threads 1 gives steadier numbers",
              file=sys.stderr)


#: the folder of the bench's files without --json/--plot/--out (relative to the working directory)
RESULTS_DIR = "fastconv-results"


def _results_dir(path: str) -> bool:
    """Create the default results folder ``path`` if it is missing, with a ``.gitignore`` of ``*`` inside
    (as pytest does for its cache) so that git ignores it in whatever repository it lands; True when it
    was created now."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, exist_ok=True)
    _files.atomic_write(os.path.join(path, ".gitignore"), "# created by fastconv bench: git ignores this folder\n*\n")
    return True


def _stem(args, report, suite: str) -> str:
    """Where the JSON and the plot go without --json/--plot: ``<DIR>/<device name>-<suite>[-<direction>]
    [-busy<N>]-<date>T<hhmmss>[-<dtype>]``, DIR being --out or :data:`RESULTS_DIR`; runs a second or more apart never
    share a name."""
    m = report["machine"]
    name = m["gpu"]["name"] if m.get("gpu") else m["cpu_model"]
    slug = "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()
    while "--" in slug:
        slug = slug.replace("--", "-")
    dtype = "" if args.dtype == "float32" else f"-{args.dtype}"
    direction = report["settings"].get("direction", "forward")
    direction = "" if direction == "forward" else f"-{direction}"
    when = m["date"][:10] + "T" + m["date"][11:19].replace(":", "")
    busy = f"-busy{args.busy_cores}" if getattr(args, "busy_cores", 0) else ""
    return os.path.join(args.out or RESULTS_DIR, f"{slug}-{suite}{direction}{busy}-{when}{dtype}")


def _write_results(args, report, suite: str) -> None:
    """Write the JSON and the plot (--json/--plot, else under --out or the results folder) and say where;
    OSError when they cannot be written."""
    from . import bench
    stem = _stem(args, report, suite)
    if not args.out and (not (args.json or args.no_json) or not (args.plot or args.no_plot)) \
            and _results_dir(RESULTS_DIR):
        print(f"created {RESULTS_DIR}{os.sep} for the results (its .gitignore keeps it out of git)")
    if not args.no_json:
        path = args.json or f"{stem}.json"
        bench.write_json(report, path)
        print(f"JSON: {path}")
    if not args.no_plot:
        path = args.plot or f"{stem}.png"
        why = bench.plot(report, path)
        print(f"plot: {path}" if why is None else f"plot skipped: {why}")


def cmd_bench(args, ap) -> int:
    from . import _dispatch, bench
    suite = bench.get_suite(args.suite or ("quick" if args.quick else "sweep"))
    try:
        table_batch = bench.parse_table_batch(args.table_batch) if args.table_batch else None
        targets = _targets(args.targets)
    except (ValueError, OSError) as e:
        ap.error(str(e))
    if table_batch and not suite.layers:
        ap.error(f"--table-batch applies to the standard layers (suites "
                 f"{', '.join(s.name for s in bench.SUITES.values() if s.layers)}), not {suite.name!r}")
    policy = bench.QUICK_POLICY if args.quick or suite.name == "quick" else bench.FULL_POLICY
    try:
        backends = bench.backends_for("cpu", args.backend) if args.backend else None
    except ValueError as e:
        ap.error(str(e))
    device = _device(args, ap, suite, backends)
    if "cuda-emu" in (backends or []):
        print("note: cuda-emu emulates every GPU thread on the CPU; keep it to a case or two "
              "(--filter / --batch 1)", file=sys.stderr)
    for a in args.algo or []:
        if a not in _dispatch.ALGOS + ("all",):
            ap.error(f"--algo must be one of {', '.join(_dispatch.ALGOS + ('all',))}, got {a!r}")
    peers = [] if args.no_peers else args.peer
    opts = bench.Options(suite=suite.name, device=device, backends=backends, algos=args.algo, peers=peers,
                         policy=policy, batch=args.batch, max_cases=args.max_cases, filter=args.filter,
                         threads=args.threads, dtype=args.dtype, table_batch=table_batch, shapes=args.shapes,
                         targets=targets, direction=args.direction, busy_cores=args.busy_cores)
    if args.busy_cores < 0:
        ap.error(f"--busy-cores must be 0 or more, got {args.busy_cores}")
    if not args.busy_cores:
        _note_load(device, args.threads)
    try:
        report = bench.run(opts)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        print(f"fastconv bench: {e}", file=sys.stderr)
        return 2
    print(bench.table(report))
    print(bench.verified_text(report))
    no_peer = bench.report.no_peer_line(report)
    if no_peer:
        print(no_peer)
    s = bench.summary(report, note=False)
    if s:
        print()
        print(s)
    if report["summary"]:
        print("\nper table:")
        print(bench.summary_text(report["summary"], note=False))
    note = bench.noise_note(report)      # why a geomean above is missing, once
    if note:
        print(note)
    la, lb = report["machine"].get("loadavg_start"), report["machine"].get("loadavg_end")
    print(f"\n{len(report['cases'])} cases in {report['wall_s']:.1f} s on {device}"
          + (f" (load average {la[0]:.1f} at the start, {lb[0]:.1f} at the end, on "
             f"{report['machine']['cpu_cores_usable']} cores)" if la and lb else "")
          + (f"; {bench.report.busy_text(report['settings'])}" if args.busy_cores else ""))
    unwritten = 0
    try:
        _write_results(args, report, suite.name)
    except OSError as e:
        print(f"fastconv bench: cannot write the results ({e}); --out DIR, --json PATH and --plot PATH write "
              "elsewhere", file=sys.stderr)
        unwritten = 2
    if args.markdown:
        bench.write_markdown([report], args.markdown, targets)
        print(f"Markdown: {args.markdown}")
    if report["failures"]:
        print(f"{report['failures']} fastconv result(s) failed verification or crashed; see the table",
              file=sys.stderr)
        return 1
    return unwritten


# ---------------------------------------------------------------------------------------------------
# fastconv summary
# ---------------------------------------------------------------------------------------------------
def cmd_summary(args) -> int:
    from . import bench
    try:
        targets = _targets(args.targets)
    except (ValueError, OSError) as e:
        print(f"fastconv summary: cannot use --targets: {e}", file=sys.stderr)
        return 2
    reports = []
    for path in args.reports:
        try:
            with open(path) as f:
                rep = json.load(f)
        except (OSError, ValueError) as e:
            print(f"fastconv summary: cannot read {path}: {e}", file=sys.stderr)
            return 2
        if rep.get("schema") not in bench.SCHEMAS_READ:
            print(f"fastconv summary: {path} is not a {' or '.join(bench.SCHEMAS_READ)} report", file=sys.stderr)
            return 2
        rep["summary"] = bench.table_summary(rep, targets)   # from the rows: also for reports older than the summary
        reports.append(rep)
        print(f"{path}:")
        print(bench.summary_text(rep["summary"]) or "(no standard-layer tables)")
    if args.markdown:
        bench.write_markdown(reports, args.markdown, targets)
        print(f"Markdown: {args.markdown}")
    else:
        print()
        print(bench.markdown(reports, targets))
    return 0


# ---------------------------------------------------------------------------------------------------
# fastconv info
# ---------------------------------------------------------------------------------------------------
def _unset(name: str) -> str:
    """" (NAME unset)" when the variable is unset or empty, else ""."""
    return "" if _config.get(name) else f" ({name} unset)"


def _numba_cache() -> str:
    """Where the numba backend's kernels are cached, as Numba itself locates it (or why they are not)."""
    from . import _dispatch
    why = _dispatch.availability("numba")
    if why is not None:
        return f"none: the numba backend is unavailable ({why})"
    from ._backends import _numba_common
    path, problem = _numba_common.cache_location(_numba_common.__file__)
    if problem is not None:
        return f"none: kernels compile in every process ({problem}; set NUMBA_CACHE_DIR to a writable directory)"
    return path


def _setting(read) -> str:
    """``read()``, or the error a bad environment value gives (info reports it instead of failing)."""
    try:
        return read()
    except ValueError as e:
        return f"unusable: {e}"


def cache_paths() -> dict:
    """Where compiled code and measured choices are kept: Numba's cache, the emulator's, CuPy's kernel cache,
    the cuda backend's autotune file."""
    def tune():
        t = _config.autotune_path("cuda") or "memory only (FASTCONV_AUTOTUNE_CACHE is empty)"
        if _config.get("FASTCONV_AUTOTUNE_CACHE") is None:     # an empty value is a setting (memory only)
            t += " (FASTCONV_AUTOTUNE_CACHE unset)"
        if not _config.autotune_enabled():
            t += " (measuring off: FASTCONV_AUTOTUNE=0)"
        return t

    def emu():
        from .emu import _build
        why = _build.cache_problem()
        return _config.emu_cache_dir() + _unset("FASTCONV_EMU_CACHE") + (f" (unusable: {why})" if why else "")

    def cupy():
        return _config.cupy_cache_dir() + _unset("CUPY_CACHE_DIR")

    return {"numba": _setting(lambda: _numba_cache() + _unset("NUMBA_CACHE_DIR")),
            "cuda-emu": _setting(emu), "cupy": _setting(cupy), "autotune-cuda": _setting(tune)}


def info() -> dict:
    from . import _dispatch, bench
    backends = {}
    for name, b in _dispatch.backends().items():
        entry = dict(b)
        entry["device"] = bench.device_of_backend(name)
        if b["available"]:
            try:
                impls = _dispatch.backend_module(name).implementations()
                entry["implementations"] = [i.name for i in impls]
            except Exception as e:  # report, never crash info
                entry["implementations"] = f"{type(e).__name__}: {e}"
        backends[name] = entry
    if backends.get("numba", {}).get("available"):
        import numba
        backends["numba"]["threads"] = numba.get_num_threads()
    peers = {}
    for dev in bench.DEVICES:
        for p in bench.peer_runners(dev):
            why = p.unavailable()
            peers[p.name] = {"device": dev, "available": why is None, "reason": why}
    v = bench.versions()
    gpu = bench.gpu_info()
    if gpu:
        gpu["peak"] = bench.gpu_peak(gpu["name"])
    return {"fastconv": v["fastconv"], "location": os.path.dirname(os.path.abspath(__file__)),
            "cpu": {"model": bench.cpu_model(), "cores": os.cpu_count()}, "gpu": gpu,
            "default_bench_device": bench.default_device(), "backends": backends, "peers": peers,
            "versions": v, "caches": cache_paths(), "shapes": _setting(lambda: str(bench.shapes_dir()))}


def cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    v = data["versions"]
    print(f"fastconv {data['fastconv']} (Python {v['python']}) at {data['location']}")
    print(f"CPU: {data['cpu']['model']}, {data['cpu']['cores']} cores")
    g = data["gpu"]
    if g:
        peak = g.get("peak")
        print(f"GPU: {g['name']} ({g['memory_gib']} GiB, compute capability {g['compute_capability']}), "
              f"CUDA runtime {g['cuda_runtime']}, driver {g['cuda_driver']}"
              + (f"; peak {peak['fp32_gflops']:.0f} GFLOP/s fp32, {peak['mem_gbps']:.0f} GB/s ({peak['source']})"
                 if peak else "; peak unknown"))
    else:
        print("GPU: none usable (see the cuda backend below)")
    print(f"fastconv bench runs on: {data['default_bench_device']}")
    print("\nbackends:")
    for name, b in data["backends"].items():
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"  {name:<9} [{b['device']}] {state}")
        print(f"            {b['description']}")
        if isinstance(b.get("implementations"), list):
            print(f"            implementations: {', '.join(b['implementations'])}"
                  + (f"; {b['threads']} threads" if "threads" in b else ""))
    print("\npeers (benchmarks):")
    for name, p in data["peers"].items():
        print(f"  {name:<10} [{p['device']}] " + ("available" if p["available"] else f"unavailable: {p['reason']}"))
    print("\nversions: " + ", ".join(f"{k} {val or '-'}" for k, val in v.items()))
    print("\ncaches:")
    for k, path in data["caches"].items():
        print(f"  {k:<9} {path}")
    print(f"\nstandard layer shapes: {data['shapes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
