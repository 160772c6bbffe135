"""The CPU benchmark of the CPU-speed goals in one command: every run quiet, then every run again with one
core kept busy by a spinning child process (``fastconv bench --busy-cores 1``), then per run a table of
busy against quiet ratios.

    python benchmarks/cpu_issue14.py                       everything, into benchmarks/results/<date>/cpu14
    python benchmarks/cpu_issue14.py --out DIR --runs tiny,networks --modes quiet     a part of it
    python benchmarks/cpu_issue14.py --dry-run             the commands, with the expected durations

Runs (each ``python -m fastconv.cli bench ... --device cpu --threads 2 --targets benchmarks/targets_cpu.json``,
numba's ``algo="auto"`` beside torch, in a process of its own so that no run inherits another's thread
pools):

    layers     --suite cpu-layers --algo auto              ResNet-50 (N=8, with stride-2 and dilation-2
                                                           variants), MobileNet-v1 depthwise (N=8), pools
                                                           (N=16): the forward and pool goals
    backward   --suite cpu-layers --algo auto --direction backward --quick
                                                           the same layers' gradients (conv_input,
                                                           conv_weight, pool gradients); the quick policy's
                                                           1 s budget per case (81 cases), for the time
    tiny       --suite cpu-tiny                            per-call time of tiny calls, LeNet's ops, a LeNet
                                                           forward at N=1
    networks   --suite cpu-networks                        LeNet-5, a VGG block, a ResNet-50 bottleneck, a
                                                           small CNN, VGG-16's stage 2

Expected durations on a quiet 2-core AMD EPYC (AVX2) with Numba's cache warm (``fastconv warmup`` first;
an empty cache adds a minute or two of compilation to the first runs): layers ~130 s, backward ~180 s,
tiny ~30 s, networks ~60 s, about 7 minutes quiet; the busy runs are bounded by the same per-case budgets
and take about 1.3x as long: about 15 minutes in all (``--dry-run`` adds it up). Measured on the same kind
of machine while other work held it at a load average of 3-8 (so an upper bound): layers 289 s, backward
435 s (compiling the gradient kernels into an empty cache included), tiny 33 s (busy 55 s), networks 66 s
(busy 62 s). Each run is bounded by the policies' budgets (per case: 2 s, the quick policy's 1 s for
backward, cpu-networks' 6 s) more than by the speed of what is measured.

Writes into OUT: ``<run>.json`` / ``.md`` / ``.txt`` (raw report, per-table summary with the goals, console)
and ``<run>-busy1.*`` for the busy runs, ``<run>-busy-vs-quiet.md`` (per row: quiet ratio, busy ratio,
busy / quiet, whether it keeps 0.75x of its quiet value), and ``README.md`` listing it all with the
commands, the wall times and the load averages. Exit status 1 when a fastconv result failed verification in
some run (every run still happens).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = os.path.join("benchmarks", "targets_cpu.json")
COMMON = ["--device", "cpu", "--threads", "2", "--targets", TARGETS, "--no-plot"]
RUNS = {
    "layers": ["--suite", "cpu-layers", "--algo", "auto"],
    "backward": ["--suite", "cpu-layers", "--algo", "auto", "--direction", "backward", "--quick"],
    "tiny": ["--suite", "cpu-tiny"],
    "networks": ["--suite", "cpu-networks"],
}
#: seconds each run takes on a quiet 2-core EPYC with a warm Numba cache (busy: about BUSY_FACTOR x)
EXPECTED_S = {"layers": 130, "backward": 180, "tiny": 30, "networks": 60}
BUSY = ["--busy-cores", "1"]
BUSY_FACTOR = 1.3


def command(run: str, busy: bool, out: str) -> list:
    stem = os.path.join(out, run + ("-busy1" if busy else ""))
    return ([sys.executable, "-m", "fastconv.cli", "bench"] + RUNS[run] + COMMON + (BUSY if busy else [])
            + ["--json", stem + ".json", "--markdown", stem + ".md"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", datetime.date.today().isoformat(), "cpu14"))
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--modes", default="quiet,busy", help="quiet, busy or both (default)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and expected durations only")
    args = ap.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    modes = [m for m in args.modes.split(",") if m]
    bad = [r for r in runs if r not in RUNS] + [m for m in modes if m not in ("quiet", "busy")]
    if bad:
        ap.error(f"unknown run or mode: {', '.join(bad)}")
    plan = [(r, m == "busy") for m in modes for r in runs]
    expected = sum(EXPECTED_S[r] * (BUSY_FACTOR if b else 1) for r, b in plan)
    print(f"{len(plan)} runs, expected about {expected / 60:.0f} minutes (quiet machine, warm Numba cache)")
    if args.dry_run:
        for r, b in plan:
            print(f"~{EXPECTED_S[r] * (BUSY_FACTOR if b else 1):.0f} s  " + " ".join(command(r, b, args.out)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    rc, done = 0, []
    for r, b in plan:
        cmd = command(r, b, args.out)
        stem = os.path.join(args.out, r + ("-busy1" if b else ""))
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        with open(stem + ".txt", "w") as log:
            p = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        rc |= p.returncode != 0
        with open(stem + ".txt") as log:
            tail = log.read().splitlines()
        print("\n".join(line for line in tail if "target" in line or " cases in " in line) or "\n".join(tail[-5:]))
        done.append((r, b, wall, p.returncode, " ".join(cmd[1:])))
    sys.path.insert(0, ROOT)          # this checkout's fastconv, as the runs (cwd ROOT) used
    from fastconv.bench import report as rep
    now = datetime.datetime.now(datetime.timezone.utc)
    index = [f"# CPU benchmark of the CPU-speed goals, {now:%Y-%m-%d %H:%M} UTC\n\n",
             "| run | mode | wall | exit | load average (start, end) | command |\n|---|---|---|---|---|---|\n"]
    for r, b, wall, code, cmd in done:
        path = os.path.join(args.out, r + ("-busy1" if b else "") + ".json")
        load = "-"
        if os.path.exists(path):
            with open(path) as f:
                m = json.load(f)["machine"]
            load = f"{m['loadavg_start'][0]:.1f}, {m['loadavg_end'][0]:.1f}"
        index.append(f"| {r} | {'busy (1 core)' if b else 'quiet'} | {wall:.0f} s | {code} | {load} | `{cmd}` |\n")
    for r in runs:
        q, b = (os.path.join(args.out, r + s + ".json") for s in ("", "-busy1"))
        if os.path.exists(q) and os.path.exists(b):
            with open(q) as f1, open(b) as f2:
                md = rep.busy_markdown(json.load(f1), json.load(f2))
            with open(os.path.join(args.out, r + "-busy-vs-quiet.md"), "w") as f:
                f.write(md)
            index.append(f"\n{r}: `{r}-busy-vs-quiet.md`: " + next(line for line in md.splitlines()
                                                                    if line.startswith("- goal")) + "\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("".join(index))
    print(f"\nwrote {args.out}/README.md; total {sum(d[2] for d in done) / 60:.1f} minutes")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
