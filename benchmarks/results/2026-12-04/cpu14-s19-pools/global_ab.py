"""The global average pool's static launch (the _prange twin) at 2 threads, back to back, 200 calls: the
kernel before cfbc2a4 (a copy of a19a2c7's fastconv/_backends/_numba_pool.py saved as _numba_pool_old.py in
OLD_DIR, its relative import made absolute) against the current one, twice each."""
import sys, time, os, numpy as np
sys.path.insert(0, os.environ.get("OLD_DIR", "."))
import numba; numba.set_num_threads(int(os.environ.get("NT", "2")))
import fastconv
from fastconv._backends import numba_cpu as nc
from fastconv._spec import pool_spec
import _numba_pool_old as old
k = nc.kernels()
NT = numba.get_num_threads()
for shape in ((16, 2048, 7, 7), (8, 512, 14, 14)):
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    spec = pool_spec("avg", x, shape[2]); geo = k.pool_geometry(spec)
    nchunk = nc._plane_chunks(spec, k.GLOBAL_PLANES)
    out = np.empty(spec.output_layout, np.float32)
    for name, kern in (("old", old.global_avg_pool2d_prange), ("new", k.global_avg_pool2d_prange)) * 2:
        kern(x, out, geo, True, 0, nchunk)
        ts = []
        for _ in range(200):
            t = time.perf_counter(); kern(x, out, geo, True, 0, nchunk); ts.append(time.perf_counter() - t)
        ts = np.array(ts) * 1e6
        print(shape, f"{NT} threads, {nchunk} chunks:", name, "min %.0f q1 %.0f med %.0f q3 %.0f us" % (ts.min(), *np.percentile(ts, [25, 50, 75])),
              "load %.2f" % os.getloadavg()[0])
