"""direct/planes quiet, back to back (20 rounds of 20 calls, median of the round medians): cfbc2a4's static
kernel (OLD_DIR/_numba_planes_old.py, as planes_ab.py), the current kernel's static launch alone, and the
Impl's runner (chunks on _on_workers)."""
import sys, os, time, numpy as np
sys.path.insert(0, os.environ.get("OLD_DIR", "."))
import numba; numba.set_num_threads(2)
import fastconv
from fastconv import _spec
from fastconv._backends import numba_cpu as nc
import _numba_planes_old as old
k = nc.kernels()
impl = next(i for i in nc.implementations() if i.name == "numba:conv:direct/planes")
rng = np.random.default_rng(0)
for xs, ws, st, pd in (((64, 6, 14, 14), (16, 6, 5, 5), 1, 0), ((64, 16, 14, 14), (32, 16, 3, 3), 1, 1)):
    x = rng.standard_normal(xs, dtype=np.float32); w = rng.standard_normal(ws, dtype=np.float32)
    spec = _spec.conv_spec(x, w, None, st, pd)
    geo = k.conv_geometry(spec); nchunk, runs, buf, acc = nc.planes_plan(spec); zero = np.zeros(spec.K, np.float32)
    def f_old():
        out = np.empty(spec.output_layout, np.float32)
        old.conv2d_planes(x, w, zero, out, geo, runs, np.zeros((nchunk, buf), np.float32), np.empty((nchunk, k.KB4, acc // k.KB4), np.float32))
    new = impl.runner(spec)
    def f_static():   # the new kernel's static launch alone
        out = np.empty(spec.output_layout, np.float32)
        k.conv2d_planes(x, w, zero, out, geo, runs, np.zeros((nchunk, buf), np.float32), np.empty((nchunk, k.KB4, acc // k.KB4), np.float32))
    fns = {"old": f_old, "new_static": f_static, "new_runner": lambda: new(x, w, None)}
    res = {n: [] for n in fns}
    for f in fns.values(): f(); f()
    for r in range(20):
        for n, f in fns.items():
            ts = []
            for _ in range(20):
                t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
            res[n].append(np.median(ts))
    print(xs, " ".join(f"{n} {np.median(v)*1e6:.0f}us" for n, v in res.items()), "load %.2f" % os.getloadavg()[0])
