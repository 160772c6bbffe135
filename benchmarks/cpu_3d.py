"""3-D layers on the CPU: fastconv's default backend (numba, algo="auto") beside torch (oneDNN) in one process.

Not a test (pytest does not collect it): a measurement to run on a quiet machine.

    python benchmarks/cpu_3d.py [--threads 2] [--rounds 7] [--out FILE]

Each case's result is checked against torch's before it is timed (to float32 accumulation error). The two sides
are interleaved round by round, each after a pause (0.25 s: neither side's spinning worker threads slow the
other), both on the same number of threads; medians and the interquartile spread are reported, and the load
average before and after, since a run taken while another process was busy is noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

#: name: (op, input shape, weight shape or None, kwargs)
CASES = {
    "c3d_conv3a 64->128 3^3 8x28x28": ("conv3d", (1, 64, 8, 28, 28), (128, 64, 3, 3, 3), dict(padding=1)),
    "unet3d 32->32 3^3 32^3": ("conv3d", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1)),
    "unet3d down 32->64 s2": ("conv3d", (1, 32, 32, 32, 32), (64, 32, 3, 3, 3), dict(padding=1, stride=2)),
    "pointwise 64->128 1^3": ("conv3d", (2, 64, 8, 28, 28), (128, 64, 1, 1, 1), dict()),
    "depthwise 64 3^3": ("conv3d", (2, 64, 16, 28, 28), (64, 1, 3, 3, 3), dict(padding=1, groups=64)),
    "max_pool3d 2 s2": ("max_pool3d", (2, 64, 16, 56, 56), None, dict(kernel_size=2, stride=2)),
    "avg_pool3d 3 s2 p1": ("avg_pool3d", (2, 64, 16, 56, 56), None, dict(kernel_size=3, stride=2, padding=1)),
    "global avg 512x4x7x7": ("adaptive_avg_pool3d", (8, 512, 4, 7, 7), None, dict(output_size=1)),
    "conv3d_input unet3d": ("conv3d_input", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1)),
    "conv3d_weight unet3d": ("conv3d_weight", (1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1)),
    "max_pool3d backward": ("max_pool3d_backward", (2, 64, 16, 56, 56), None, dict(kernel_size=2, stride=2)),
}


def _calls(op, shape, wshape, kw, fc, torch):
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    tx = torch.from_numpy(x)
    if op == "conv3d":
        w = rng.standard_normal(wshape).astype(np.float32)
        tw = torch.from_numpy(w)
        return (lambda: fc.conv3d(x, w, **kw)), (lambda: F.conv3d(tx, tw, **kw))
    if op in ("conv3d_input", "conv3d_weight"):
        w = rng.standard_normal(wshape).astype(np.float32)
        tw = torch.from_numpy(w)
        dy = rng.standard_normal(fc.conv_spec(x, w, spatial_dims=3, **kw).output_shape).astype(np.float32)
        tdy = torch.from_numpy(dy)
        if op == "conv3d_input":
            return (lambda: fc.grad.conv3d_input(x.shape, w, dy, **kw)), \
                   (lambda: torch.nn.grad.conv3d_input(x.shape, tw, tdy, **kw))
        return (lambda: fc.grad.conv3d_weight(x, w.shape, dy, **kw)), \
               (lambda: torch.nn.grad.conv3d_weight(tx, w.shape, tdy, **kw))
    if op == "max_pool3d_backward":
        y, idx = fc.max_pool3d(x, return_indices=True, **kw)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ty, tidx = F.max_pool3d(tx, return_indices=True, **kw)
        tdy = torch.from_numpy(dy)
        aten = torch.ops.aten
        k, s = [kw["kernel_size"]] * 3, [kw["stride"]] * 3
        return (lambda: fc.grad.max_pool3d(dy, x, indices=idx, **kw)), \
               (lambda: aten.max_pool3d_with_indices_backward(tdy, tx, k, s, [0] * 3, [1] * 3, False, tidx))
    fn = getattr(fc, op)
    tfn = getattr(F, op)
    return (lambda: fn(x, **kw)), (lambda: tfn(tx, **kw))


def _check(name, ours, theirs):
    """fastconv's result against torch's (a second opinion; the test suite judges backends by the oracle):
    agreement to float32 accumulation error, so a wrong kernel is never timed."""
    a, b = np.asarray(ours()), theirs().numpy()
    scale = float(np.abs(b).max()) or 1.0
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def _time(fn, settle):
    time.sleep(settle)
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--settle", type=float, default=0.25)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    import numba
    import torch
    import fastconv as fc
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    model = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if l.startswith("Model name")), platform.processor())
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    load0 = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {model} ({isa}); {args.threads} threads; "
          f"torch {torch.__version__}, numba {numba.__version__}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; load average before {load0[0]:.2f} {load0[1]:.2f}")
    rows = []
    print(f"{'case':34s} {'fastconv ms':>12s} {'(IQR)':>8s} {'torch ms':>10s} {'(IQR)':>8s} {'ratio':>6s}")
    for name, (op, shape, wshape, kw) in CASES.items():
        ours, theirs = _calls(op, shape, wshape, kw, fc, torch)
        _check(name, ours, theirs)     # compiles, tunes and warms both sides too
        ours(), theirs()
        a, b = [], []
        for _ in range(args.rounds):
            a.append(_time(ours, args.settle))
            b.append(_time(theirs, args.settle))
        qa, qb = statistics.quantiles(a, n=4), statistics.quantiles(b, n=4)
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append(dict(case=name, op=op, fastconv_s=a, torch_s=b, ratio=mb / ma))
        print(f"{name:34s} {ma * 1e3:12.2f} {(qa[2] - qa[0]) * 1e3:8.2f} {mb * 1e3:10.2f} {(qb[2] - qb[0]) * 1e3:8.2f}"
              f" {mb / ma:6.2f}x")
    load1 = os.getloadavg()
    ratios = [r["ratio"] for r in rows]
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(f"# geomean torch/fastconv {geo:.2f}x (>1: fastconv faster), min {min(ratios):.2f}x; "
          f"load average after {load1[0]:.2f} {load1[1]:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(machine=model, isa=isa, threads=args.threads, load_before=load0, load_after=load1,
                           rows=rows, geomean=geo), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
