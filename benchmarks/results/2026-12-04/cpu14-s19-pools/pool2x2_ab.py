"""2x2 stride-2 pools in one process, 2 threads: ``direct/2x2`` (max_pool2x2 / avg_pool2x2) against the general
``direct`` kernel it replaces, each through its Impl's runner (what fastconv.functional's fast path calls on
a repeat call: the bind, the serial kernel below SERIAL_MAX_FLOPS), and torch's F.max_pool2d / F.avg_pool2d.
Per round and side: a 50 ms pause, one untimed call, then k timed calls (median); 6 rounds, the order
reversed every other round; the table gives the median over rounds."""
import os, time, numpy as np
import numba; numba.set_num_threads(2)
import torch; torch.set_num_threads(2)
from fastconv import _spec, _dispatch
impls = {i.name: i for i in _dispatch.backend_module("numba").implementations()}
rng = np.random.default_rng(0)


def burst(f, k):
    time.sleep(0.05); f(); ts = []
    for _ in range(k):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return np.median(ts)


SHAPES = [(1, 4, 8, 8), (1, 6, 28, 28), (16, 6, 28, 28), (64, 6, 28, 28), (64, 16, 10, 10), (16, 64, 224, 224),
          (16, 256, 56, 56)]
for shp in SHAPES:
    x = rng.standard_normal(shp, dtype=np.float32); tx = torch.from_numpy(x)
    row = []
    for kind in ("max", "avg"):
        spec = _spec.pool_spec(kind, x, 2)
        new = impls[f"numba:{kind}_pool:direct/2x2"].runner(spec)
        old = impls[f"numba:{kind}_pool:direct"].runner(spec)
        tf = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        assert np.array_equal(new(x), old(x), equal_nan=True)
        fns = {"new": lambda: new(x), "old": lambda: old(x), "torch": lambda: tf(tx, 2)}
        k = 5 if x.size > 1e6 else 50
        res = {n: [] for n in fns}
        for r in range(6):
            for n in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                res[n].append(burst(fns[n], k))
        m = {n: np.median(v) * 1e6 for n, v in res.items()}
        row.append(f"{kind}: 2x2 {m['new']:.1f} general {m['old']:.1f} torch {m['torch']:.1f} us "
                   f"(general/2x2 {m['old']/m['new']:.2f}, torch/2x2 {m['torch']/m['new']:.2f})")
    print(shp, " | ".join(row), "load %.2f" % os.getloadavg()[0], flush=True)
