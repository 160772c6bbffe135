import sys, time, numpy as np, torch, fastconv
from fastconv._backends import numba_cpu as nc
LAYERS = {"res2": (8,64,56,64), "res3": (8,128,28,128), "res4": (8,256,14,256), "res5": (8,512,7,512)}
which = sys.argv[1:] or list(LAYERS)
rng = np.random.default_rng(0)
def med(f, reps=7):
    ts=[]
    for _ in range(reps):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return ts
for name in which:
    N,C,H,K = LAYERS[name]
    x = rng.standard_normal((N,C,H,H)).astype(np.float32); w = rng.standard_normal((K,C,3,3)).astype(np.float32)*0.05
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    fns = {"wino": lambda: fastconv.conv2d(x,w,padding=1,backend="numba",algo="winograd"),
           "im2col": lambda: fastconv.conv2d(x,w,padding=1,backend="numba",algo="im2col"),
           "torch": lambda: torch.nn.functional.conv2d(xt,wt,padding=1)}
    for f in fns.values(): f()
    res = {k: [] for k in fns}
    for _ in range(5):
        for k,f in fns.items(): res[k] += med(f, 3)
    m = {k: np.median(v)*1e3 for k,v in res.items()}
    print(name, " ".join(f"{k} {v:.2f}ms" for k,v in m.items()), f"torch/wino {m['torch']/m['wino']:.2f} torch/im2col {m['torch']/m['im2col']:.2f}", open('/proc/loadavg').read().split()[:3], flush=True)
