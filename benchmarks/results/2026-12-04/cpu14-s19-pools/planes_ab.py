"""direct/planes before 8069f03 (conv2d_planes: a static prange, always; a copy of cfbc2a4's
fastconv/_backends/_numba_planes.py saved as _numba_planes_old.py in OLD_DIR, its relative import made
absolute) and after (the Impl's runner: chunks on numba_cpu._on_workers, the new stall rule), and torch, in
one process at 2 threads. ``busy``: fastconv.bench.busy keeps one core busy for the whole run. Per round
and side: a 0.1 s pause, one untimed call, 10 timed calls; 6 rounds, order reversed every other round;
median and upper quartile over all 60 calls."""
import sys, os, time, contextlib, numpy as np
sys.path.insert(0, os.environ.get("OLD_DIR", "."))
import numba; numba.set_num_threads(2)
import torch; torch.set_num_threads(2)
import fastconv
from fastconv import _spec, _dispatch
from fastconv._backends import numba_cpu as nc
from fastconv.bench import busy as B
import _numba_planes_old as old
k = nc.kernels()
impl = next(i for i in nc.implementations() if i.name == "numba:conv:direct/planes")
rng = np.random.default_rng(0)
CASES = {"lenet_conv2": ((64, 6, 14, 14), (16, 6, 5, 5), {}), "res2_3x3_s2": ((8, 64, 56, 56), (64, 64, 3, 3), dict(stride=2, padding=1)),
         "res2_1x1_64to64": ((8, 64, 56, 56), (64, 64, 1, 1), {}), "small_cnn2": ((64, 16, 14, 14), (32, 16, 3, 3), dict(padding=1))}
def burst(f, k=10):
    time.sleep(0.1); f(); ts = []
    for _ in range(k):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return ts
mode = sys.argv[1]
with (B.busy_cores(1) if mode == "busy" else contextlib.nullcontext()):
    for name in sys.argv[2:] or CASES:
        xs, ws, kw = CASES[name]
        x = rng.standard_normal(xs, dtype=np.float32); w = rng.standard_normal(ws, dtype=np.float32)
        spec = _spec.conv_spec(x, w, None, kw.get("stride", 1), kw.get("padding", 0))
        geo = k.conv_geometry(spec); nchunk, runs, buf, acc = nc.planes_plan(spec); zero = np.zeros(spec.K, np.float32)
        def f_old():
            out = np.empty(spec.output_layout, np.float32)
            old.conv2d_planes(x, w, zero, out, geo, runs, np.zeros((nchunk, buf), np.float32), np.empty((nchunk, k.KB4, acc // k.KB4), np.float32))
            return out
        new = impl.runner(spec)
        f_new = lambda: new(x, w, None)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        f_t = lambda: torch.nn.functional.conv2d(tx, tw, **kw)
        assert np.array_equal(f_old(), f_new())
        fns = {"old": f_old, "new": f_new, "torch": f_t}
        res = {n: [] for n in fns}
        for r in range(6):
            for n in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                res[n] += burst(fns[n])
        m = {n: np.median(v) * 1e3 for n, v in res.items()}
        q3 = {n: np.percentile(v, 75) * 1e3 for n, v in res.items()}
        print(mode, name, " ".join(f"{n} {m[n]:.3f} (q3 {q3[n]:.3f}) ms" for n in fns), f"| old/new {m['old']/m['new']:.2f} torch/new {m['torch']/m['new']:.2f}", "load %.2f" % os.getloadavg()[0], flush=True)
