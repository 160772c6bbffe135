#!/usr/bin/env python3
"""Mutation check: apply realistic single edits to the sources one at a time and report which tests kill them.

    python tools/mutate.py                  every mutant below, each against the tests meant to catch it
    python tools/mutate.py --list           the mutants, without running anything
    python tools/mutate.py 1 3              only mutants 1 and 3
    python tools/mutate.py --all-tests 2    mutant 2 against the whole suite (minutes)

Not run in CI: each mutant costs a test run (and, for a .cu or Numba edit, a recompile). Run it from a
checkout with no uncommitted edits to the files it mutates; each file is restored when its run ends
(also on Ctrl-C or SIGTERM). Exit status 0 when every mutant was killed, 1 when some survived.

A mutant is *killed* when its tests fail (or crash: an out-of-bounds write that aborts the interpreter
counts, but the README's guarantee is that it fails a named test). The test that failed is printed.
Add a mutant here whenever a test is written for a class of defect, so the list says what the suite is
known to catch.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the kernels' last blocks past 2^31 elements, built with every signed overflow trapped: what index-width
#: mutants (a dropped (I) cast) fail
_OVERFLOW_TEST = "tests/cuda/test_index_width.py::test_last_blocks_past_2_pow_31_compute_no_signed_overflow"

#: (file, the exact text, its replacement, the tests meant to catch it, what the edit does); the text must
#: occur in the file (the first occurrence is replaced)
MUTANTS = [
    ("kernels/pool.cu", "if (o >= total) return;\n  max_pool_output<2>",
     "if (o > total) return;\n  max_pool_output<2>", ["tests/cuda/test_pool.py"],
     "max_pool2d_v1 writes one output past the end (bounds check off by one)"),
    ("kernels/im2col_gemm.cu", "w + (I)k * kd_len", "w + k * kd_len", [_OVERFLOW_TEST],
     "conv_gemm_v1's weight row offset computed in int: wraps past 2^31 elements"),
    ("kernels/conv_dgrad.cu", "w[((I)kk * p.C_per_group + cg) * RS + r * p.S + s]",
     "w[(kk * p.C_per_group + cg) * RS + r * p.S + s]", [_OVERFLOW_TEST],
     "conv_dgrad_v1's weight offset computed in int: wraps for a weight past 2^31 elements"),
    ("kernels/pool_backward.cu", "const I total = (I)p.N * p.C * p.H * p.W;\n  const I o = global_thread_index<I>();\n"
     "  if (o >= total) return;\n  max_pool_grad_element", "const I total = p.N * p.C * p.H * p.W;\n"
     "  const I o = global_thread_index<I>();\n  if (o >= total) return;\n  max_pool_grad_element", [_OVERFLOW_TEST],
     "max_pool2d_backward_v1's element count computed in int: wraps past 2^31 elements"),
    ("kernels/pool.cu", "const I at = (I)h * p.W + tw[j].start;", "const I at = h * p.W + tw[j].start;",
     [_OVERFLOW_TEST], "max/avg_pool2d_v2's row offset in the plane computed in int: wraps for a plane past 2^31"),
    ("fastconv/_backends/_numba_pool.py", "v = xf[base + row + s * dw]", "v = xf[base + row + s]",
     ["tests/test_edges.py", "tests/test_numba_backend.py"],
     "numba max pool, per-output branch (window wider than the output row): the column dilation dropped"),
    ("fastconv/_backends/_numba_pool.py", "row = (hs + r * dh) * W + ws", "row = (hs + r) * W + ws",
     ["tests/test_edges.py", "tests/test_numba_backend.py"],
     "numba max pool, per-output branch: the row dilation dropped"),
    ("fastconv/_spec.py", "    if (out - 1) * stride >= size + pad_lo:\n        out -= 1",
     "    if (out - 1) * stride > size + pad_lo:\n        out -= 1", ["tests/test_spec.py"],
     "ceil_mode keeps a last window that starts in the right padding (PyTorch drops it)"),
    ("fastconv/_backends/numpy_oracle.py", "d, h, w = with_pad if spec.count_include_pad else inside",
     "d, h, w = inside if spec.count_include_pad else with_pad", ["tests/test_oracle.py", "tests/test_oracle_nd.py"],
     "the oracle's average pool divides by the wrong count (count_include_pad inverted)"),
    ("fastconv/dask/_plan.py", "        return Block(o0, o1, in_lo, in_hi, in_lo - start, end - in_hi)",
     "        return Block(o0, o1, in_lo, in_hi, 0, end - in_hi)", ["tests/dask/test_plan.py"],
     "fastconv.dask: a block at the array's left edge loses its padding (pads only the true edges, wrongly)"),
    ("fastconv/dask/_graph.py", "a == edge and b == edge + c", "a == edge", ["tests/dask/test_ops.py"],
     "fastconv.dask: a chunk's first part is taken whole (the halo slice reads the whole neighbour chunk)"),
    ("fastconv/dask/_ops.py", "    if upcast:\n        region, w = ", "    if False:\n        region, w = ",
     ["tests/dask/test_ops.py"], "fastconv.dask: float16 partial results over channel chunks summed in float16"),
    ("fastconv/dask/_ops.py", 'need = getattr(axis, "reach", 0)', 'need = getattr(axis, "halo", 0)',
     ["tests/dask/test_plan.py", "tests/dask/test_stack.py", "tests/dask/test_ops.py"],
     "fastconv.dask: chunks are joined only below extent - stride, so a block can read two chunks past its own"),
]


def _run(tests, timeout):
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result within {timeout} s", time.perf_counter() - t
    out = p.stdout + p.stderr
    failed = re.findall(r"^FAILED (\S+)", out, re.M) or re.findall(r"^ERROR (\S+)", out, re.M)
    if p.returncode == 0:
        return "survived", "every test passed", time.perf_counter() - t
    if failed:
        return "killed", failed[0], time.perf_counter() - t
    return "killed", f"rc {p.returncode} with no test named (a crash?): {out.strip().splitlines()[-1:]}", \
        time.perf_counter() - t


def _kernels_tested() -> str:
    """The kernels/ directory the tests compile (fastconv.kernels as this interpreter imports it from ROOT):
    an editable install of another checkout maps it there, and a mutant of ROOT's kernels would then survive
    untested."""
    code = "from fastconv._cuda.plan import kernels_dir; print(kernels_dir())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return os.path.realpath(out.stdout.strip()) if out.returncode == 0 else f"? ({out.stderr.strip()[-200:]})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("which", nargs="*", type=int, help="mutant numbers (1-based; default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--all-tests", action="store_true", help="run the whole suite (tests benchmarks) per mutant")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per mutant (default 1800)")
    args = ap.parse_args(argv)
    # a kill (timeout, a CI job cancelled) restores the mutated file too: SIGTERM unwinds like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = args.which or list(range(1, len(MUTANTS) + 1))
    if args.list:
        for i, (path, _, _, tests, what) in enumerate(MUTANTS, 1):
            print(f"{i}. {path}: {what}\n   tests: {' '.join(tests)}")
        return 0
    if any(MUTANTS[i - 1][0].startswith("kernels/") for i in chosen):
        tested = _kernels_tested()
        if tested != os.path.realpath(os.path.join(ROOT, "kernels")):
            print(f"the tests compile the kernels in {tested}, not {ROOT}/kernels (an editable install of another "
                  f"checkout?): reinstall this one (pip install -e {ROOT}) to mutate its kernels", file=sys.stderr)
            return 2
    survived = 0
    for i in chosen:
        path, old, new, tests, what = MUTANTS[i - 1]
        full = os.path.join(ROOT, path)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        if dirty:
            print(f"{i}. {path}: has uncommitted edits; commit or stash them first", file=sys.stderr)
            return 2
        with open(full, encoding="utf-8") as f:
            original = f.read()
        if old not in original:
            print(f"{i}. {path}: the text to mutate is no longer there; update MUTANTS", file=sys.stderr)
            return 2
        try:
            with open(full, "w", encoding="utf-8") as f:
                f.write(original.replace(old, new, 1))
            verdict, detail, secs = _run(["tests", "benchmarks", "--benchmark-disable"] if args.all_tests
                                         else tests, args.timeout)
        finally:
            with open(full, "w", encoding="utf-8") as f:
                f.write(original)
        survived += verdict != "killed"
        print(f"{i}. {verdict:8s} {secs:6.1f} s  {path}: {what}\n   {detail}", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
