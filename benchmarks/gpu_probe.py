"""A quick GPU probe for kernel work: every variant of one CUDA algorithm on the standard layers, next to
cuDNN (PyTorch, TF32 off), medians of CUDA-event timings, plus the per-call host cost of the public API.

    python benchmarks/gpu_probe.py --algo implicit_gemm --table resnet50 --batch 32 [--dtype float32]
    python benchmarks/gpu_probe.py --overhead

The table is read as ``fastconv bench`` reads it (``--shapes DIR``, else ``$FASTCONV_SHAPES``, else the tables
shipped with fastconv); GPU times are ``fastconv._timing.event_times`` medians.

This is a working tool for kernel development (a quick look at which tile wins where); the numbers that go
into the README come from ``fastconv bench``. Results are verified against PyTorch before they are timed
(the test suite verifies against the oracle). Prints one JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from fastconv import _timing, bench


def _median_ms(fn, reps=10, warmup=2):
    """Median GPU milliseconds of ``fn()`` (CUDA events) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return _timing.median(_timing.event_times(fn, reps)) * 1e3


def _torch_setup():
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch


def probe_layers(args):
    import cupy

    import fastconv
    from fastconv import _dispatch
    torch = _torch_setup()
    import torch.nn.functional as F
    rows = bench.layer_tables(args.shapes, [args.table])[1][args.table]
    ratios = []
    for row in rows:
        if args.filter and args.filter not in row["name"]:
            continue
        C, H, W = int(row["C"]), int(row["H"]), int(row["W"])
        K, R, S, g = int(row["K"]), int(row["R"]), int(row["S"]), int(row["groups"])
        st, pd, dl = int(row["stride"]), int(row["pad"]), int(row["dilation"])
        rng = cupy.random.default_rng(0)
        x = rng.standard_normal((args.batch, C, H, W), dtype=cupy.float32).astype(args.dtype)
        w = (rng.standard_normal((K, C // g, R, S), dtype=cupy.float32) / math.sqrt(C // g * R * S)).astype(args.dtype)
        b = rng.standard_normal((K,), dtype=cupy.float32).astype(args.dtype)
        spec = fastconv.conv_spec(x, w, b, st, pd, dl, g)
        tx, tw, tb = (torch.from_dlpack(a) for a in (x, w, b))
        ref = F.conv2d(tx, tw, tb, st, pd, dl, g)
        t_torch = _median_ms(lambda: F.conv2d(tx, tw, tb, st, pd, dl, g))
        out = {"layer": row["name"], "gflop": spec.flops() / 1e9, "torch_ms": t_torch}
        # every variant of the algorithm (the Impls dispatch chooses among), each timed on its own
        variants = [i.variant or i.algo for i in _dispatch.candidates(spec, "cuda", args.algo)]
        for impl in _dispatch.candidates(spec, "cuda", args.algo):
            v = impl.variant or impl.algo
            reasons = _dispatch.reasons(impl, spec)
            if reasons:
                out[f"{v}_ms"] = None
                out.setdefault("reason", {})[v] = reasons
                continue
            y = impl.run(spec, x, w, b)
            err = float(cupy.abs(y.astype(cupy.float32) - cupy.asarray(ref.float())).max())
            scale = float(cupy.abs(cupy.asarray(ref.float())).max())
            out[f"{v}_err"] = err / max(scale, 1e-30)
            out[f"{v}_ms"] = _median_ms(lambda: impl.run(spec, x, w, b))
        best = min((out[f"{v}_ms"] for v in variants if out.get(f"{v}_ms")), default=None)
        if best:
            out["best_ratio"] = t_torch / best
            out["best_tflops"] = spec.flops() / best / 1e9
            ratios.append(out["best_ratio"])
        out["torch_tflops"] = spec.flops() / t_torch / 1e9
        print(json.dumps(out), flush=True)
    if ratios:
        print(json.dumps({"table": args.table, "algo": args.algo, "dtype": args.dtype, "batch": args.batch,
                          "geomean_best_ratio": math.exp(sum(map(math.log, ratios)) / len(ratios)),
                          "min_best_ratio": min(ratios)}), flush=True)


def probe_overhead(args):
    """Host microseconds per public call on a tiny problem (GPU time negligible), fastconv vs PyTorch."""
    import cupy

    import fastconv
    torch = _torch_setup()
    import torch.nn.functional as F
    x = cupy.ones((1, 8, 8, 8), cupy.float32)
    w = cupy.ones((8, 8, 3, 3), cupy.float32)
    tx, tw = torch.from_dlpack(x), torch.from_dlpack(w)
    out = {}
    for name, fn in [("fastconv_conv2d", lambda: fastconv.conv2d(x, w, padding=1)),
                     ("torch_conv2d", lambda: F.conv2d(tx, tw, padding=1)),
                     ("fastconv_max_pool2d", lambda: fastconv.max_pool2d(x, 2)),
                     ("torch_max_pool2d", lambda: F.max_pool2d(tx, 2))]:
        for _ in range(50):
            fn()
        n = 2000
        t = _timing.wall_times(lambda: [fn() for _ in range(n)], 1, sync=cupy.cuda.Device().synchronize)[0]
        out[name + "_us"] = t / n * 1e6
    print(json.dumps(out), flush=True)
    if args.profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(2000):
            fastconv.conv2d(x, w, padding=1)
        pr.disable()
        pstats.Stats(pr, stream=sys.stdout).sort_stats("tottime").print_stats(25)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algo", default="implicit_gemm")
    ap.add_argument("--table", default="resnet50")
    ap.add_argument("--shapes", metavar="DIR", help="the layer tables' directory (default: as fastconv bench)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--filter")
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    probe_overhead(args) if args.overhead else probe_layers(args)


if __name__ == "__main__":
    main()
