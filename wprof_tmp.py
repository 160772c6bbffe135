import sys, time, numpy as np, fastconv
from fastconv._backends import numba_cpu as nc
from fastconv import _spec
LAYERS = {"res2": (8,64,56,64), "res3": (8,128,28,128), "res4": (8,256,14,256), "res5": (8,512,7,512)}
rng = np.random.default_rng(0)
k = nc.kernels()
for name in sys.argv[1:]:
    N,C,H,K = LAYERS[name]
    x = rng.standard_normal((N,C,H,H)).astype(np.float32); w = rng.standard_normal((K,C,3,3)).astype(np.float32)*0.05
    spec = _spec.conv_spec(x, w, padding=1)
    TH,TW,rows = nc.winograd_plan(spec); geo = k.conv_geometry(spec)
    U = np.empty((36,K,C),np.float32); V=np.empty((36,C,rows*TW),np.float32); M=np.empty((36,K,rows*TW),np.float32)
    out = np.empty(spec.output_layout, np.float32); b=np.zeros(K,np.float32)
    def t(f, n=5):
        f(); ts=[]
        for _ in range(n):
            t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
        return np.median(ts)*1e3
    nch = -(-N*TH//rows)
    print(name, "rows", rows, "chunks", nch, "filter %.2f" % t(lambda: k.winograd_filter(w,U)),
          "input/chunk %.3f" % t(lambda: k.winograd_input(x,0,rows,TH,TW,geo,V)),
          "gemm/chunk %.3f" % t(lambda: np.matmul(U,V,out=M)),
          "output/chunk %.3f" % t(lambda: k.winograd_output(M,b,out,0,rows,TH,TW,x,w,geo)), open('/proc/loadavg').read().split()[:3])
