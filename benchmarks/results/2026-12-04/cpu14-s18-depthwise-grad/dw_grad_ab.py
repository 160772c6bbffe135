"""Depthwise gradient timings: fastconv impl fns vs torch convolution_backward, burst pattern."""
import os, sys, time
import numpy as np
NT = int(os.environ.get("NT", "2"))
import numba; numba.set_num_threads(NT)
import torch; torch.set_num_threads(NT)
import fastconv
from fastconv._backends import numba_cpu as nc
CASES = {  # name: (N, C, H, stride)
    "dw1": (8, 32, 112, 1), "c4_32": (1, 4, 32, 1), "c8_28": (8, 8, 28, 1), "c3_224": (1, 3, 224, 1), "c4_16s2": (2, 4, 16, 2), "c16_32": (1, 16, 32, 1), "c32_8": (2, 32, 8, 1), "c16_112": (1, 16, 112, 1), "c32_16s2": (2, 32, 16, 2), "c16_56": (4, 16, 56, 1), "dw3": (8, 128, 56, 1), "dw2_s2": (8, 64, 112, 2),
    "dw13": (8, 1024, 7, 1), "dw12_s2": (8, 512, 14, 2), "dw7": (8, 512, 14, 1),
    "dw6_s2": (8, 256, 28, 2), "dw5": (8, 256, 28, 1)}
ROUNDS = int(os.environ.get("ROUNDS", "8"))
which = sys.argv[1:] or list(CASES)
rng = np.random.default_rng(0)

def burst(fn, k=5):
    time.sleep(0.3)
    ts = []
    for _ in range(k):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts[1:])

for name in which:
    N, C, H, s = CASES[name]
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32)
    P = (H + 2 - 3) // s + 1
    dy = rng.standard_normal((N, C, P, P), dtype=np.float32)
    wspec = fastconv.grad.conv_weight_spec(x, w.shape, dy, s, 1, 1, C)
    ispec = fastconv.grad.conv_input_spec(x.shape, w, dy, s, 1, 1, C)
    tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
    from torch.nn import grad as tgrad
    def tW(): tgrad.conv2d_weight(tx, tw.shape, tdy, s, 1, 1, C)
    def tI(): tgrad.conv2d_input(tx.shape, tw, tdy, s, 1, 1, C)
    fns = {"fcW": lambda: nc.conv_weight_depthwise(wspec, x, dy), "tW": tW,
           "fcI": lambda: nc.conv_input_depthwise(ispec, dy, w), "tI": tI}
    extra = os.environ.get("EXTRA")
    if extra:
        mod = __import__(extra)
        fns.update(mod.fns(wspec, ispec, x, w, dy))
    for f in fns.values(): f(); f()
    res = {k: [] for k in fns}
    for r in range(ROUNDS):
        ks = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in ks: res[k].append(burst(fns[k]))
    med = {k: np.median(v) * 1e6 for k, v in res.items()}
    print(name, " ".join(f"{k}={v:.0f}us" for k, v in med.items()),
          f"W ratio {med['tW']/med['fcW']:.2f} I ratio {med['tI']/med['fcI']:.2f}", "load", os.getloadavg()[0])
