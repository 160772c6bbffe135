import sys, numpy as np, fastconv
from fastconv import testing, _spec
from fastconv._backends import numpy_oracle as o
rng = np.random.default_rng(1)
def data(shape, adv):
    a = rng.standard_normal(shape)
    if adv:
        a = np.sign(a) * 10.0 ** rng.uniform(-3, 3, shape)
    return a.astype(np.float32)
LAYERS = {"res2": (1,64,56,64), "res3": (1,128,28,128), "res4": (1,256,14,256), "res5": (1,512,7,512), "small": (2,3,9,5)}
for name in sys.argv[1:]:
    N,C,H,K = LAYERS[name]
    for adv in (False, True):
        x = data((N,C,H,H), adv); w = data((K,C,3,3), adv); b = data((K,), adv)
        spec = _spec.conv_spec(x, w, b, padding=1)
        ref = o.conv64(spec, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
        td = testing._direct_tolerance(spec, x, w, b); tw = testing.winograd_tolerance(spec, x, w, b)
        line = [name, "adv" if adv else "normal", "wino/direct bound median %.2f" % np.median(tw/td)]
        for algo in ("direct", "im2col", "winograd"):
            y = fastconv.conv2d(x, w, b, padding=1, backend="numba", algo=algo).astype(np.float64)
            err = np.abs(y - ref)
            rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
            line.append(f"{algo}: relL2 {rel:.2e} max err/direct-bound {np.max(err/td):.3f} err/wino-bound {np.max(err/tw):.3f}")
        print(" | ".join(line), flush=True)
