"""CPU benchmark: fastconv's ``numba`` backend (each algo and ``auto``) against torch.nn.functional on the CPU.

Layers: ResNet-50 (``resnet50.csv``) at N=8, stride-2 and dilation-2 variants of its 3x3 layers, the
MobileNet-v1 depthwise layers (``mobilenet_v1_dw.csv``) at N=8, and ``pools.csv`` at N=16; float32.
Every implementation is checked against the NumPy oracle (at N=1, where the oracle is quick) before
anything is timed. Times are medians; ratio = torch time / fastconv time (> 1: fastconv is faster).
GFLOP/s and GB/s come from the spec's own ``flops()`` / ``bytes()``.

Shapes are read from ``$FASTCONV_SHAPES`` or else ``../shared/shapes`` next to the repository root.

    python benchmarks/bench_cpu.py                        # the table
    python benchmarks/bench_cpu.py --json out.json        # and the raw numbers
    python benchmarks/bench_cpu.py --only res2 --repeat 5 # a subset (substring of the layer name)
    python benchmarks/bench_cpu.py --threads 1            # every library on one thread
    python benchmarks/bench_cpu.py --md out.md            # the table as Markdown

``benchmarks/test_cpu_layers.py`` runs the same layers under pytest-benchmark.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--threads" in sys.argv:
    # BLAS pools size themselves when NumPy loads: set their thread count before importing it
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = _n

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fastconv  # noqa: E402
from fastconv._backends import numpy_oracle  # noqa: E402


def shapes_dir() -> Path:
    env = os.environ.get("FASTCONV_SHAPES")
    return Path(env) if env else REPO.parent / "shared" / "shapes"


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvLayer:
    name: str
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int
    pad: int
    dilation: int
    groups: int
    N: int = 8
    kind: str = "conv"


@dataclasses.dataclass(frozen=True)
class PoolLayer:
    name: str
    C: int
    H: int
    W: int
    pool: str  # max | avg
    kernel: int
    stride: int
    pad: int
    N: int = 16
    kind: str = "pool"


def _read(name):
    with open(shapes_dir() / name, newline="") as f:
        return list(csv.DictReader(f))


def conv_layers(n=8):
    layers = []
    for row in _read("resnet50.csv"):
        layers.append(ConvLayer(row["name"], *(int(row[k]) for k in
                                ("C", "H", "W", "K", "R", "S", "stride", "pad", "dilation", "groups")), N=n))
    for base in [l for l in layers if l.R == 3]:
        layers.append(dataclasses.replace(base, name=base.name + "_s2", stride=2))
        layers.append(dataclasses.replace(base, name=base.name + "_d2", dilation=2, pad=2))
    for row in _read("mobilenet_v1_dw.csv"):
        layers.append(ConvLayer("mnv1_" + row["name"], *(int(row[k]) for k in
                                ("C", "H", "W", "K", "R", "S", "stride", "pad", "dilation", "groups")), N=n))
    return layers


def pool_layers(n=16):
    return [PoolLayer(row["name"], int(row["C"]), int(row["H"]), int(row["W"]), row["kind"],
                      int(row["kernel"]), int(row["stride"]), int(row["pad"]), N=n)
            for row in _read("pools.csv")]


def make_inputs(layer, n=None, seed=0):
    rng = np.random.default_rng(seed)
    n = layer.N if n is None else n
    x = rng.standard_normal((n, layer.C, layer.H, layer.W), dtype=np.float32)
    if layer.kind == "pool":
        return (x,)
    w = rng.standard_normal((layer.K, layer.C // layer.groups, layer.R, layer.S), dtype=np.float32)
    w *= 1.0 / math.sqrt(w[0].size)
    b = rng.standard_normal(layer.K, dtype=np.float32)
    return x, w, b


def fastconv_call(layer, algo):
    """A function of the layer's arrays that runs it on the numba backend with ``algo``."""
    if layer.kind == "conv":
        return lambda x, w, b: fastconv.conv2d(x, w, b, layer.stride, layer.pad, layer.dilation, layer.groups,
                                               backend="numba", algo=algo)
    if layer.pool == "max":
        return lambda x: fastconv.max_pool2d(x, layer.kernel, layer.stride, layer.pad, backend="numba")
    return lambda x: fastconv.avg_pool2d(x, layer.kernel, layer.stride, layer.pad, backend="numba")


def torch_call(layer):
    import torch
    import torch.nn.functional as F
    if layer.kind == "conv":
        def f(x, w, b):
            with torch.no_grad():
                return F.conv2d(x, w, b, layer.stride, layer.pad, layer.dilation, layer.groups)
    elif layer.pool == "max":
        def f(x):
            with torch.no_grad():
                return F.max_pool2d(x, layer.kernel, layer.stride, layer.pad)
    else:
        def f(x):
            with torch.no_grad():
                return F.avg_pool2d(x, layer.kernel, layer.stride, layer.pad)
    return f


def spec_of(layer, arrays):
    if layer.kind == "conv":
        x, w, b = arrays
        return fastconv.conv_spec(x, w, b, layer.stride, layer.pad, layer.dilation, layer.groups)
    return fastconv.pool_spec(layer.pool, arrays[0], layer.kernel, layer.stride, layer.pad)


def oracle(layer, arrays):
    spec = spec_of(layer, arrays)
    if layer.kind == "conv":
        x, w, b = arrays
        return numpy_oracle.conv64(spec, x, w, b), numpy_oracle.conv64(spec, abs(x), abs(w), abs(b)), spec
    fn = numpy_oracle.max_pool if layer.pool == "max" else numpy_oracle.avg_pool
    return fn(dataclasses.replace(spec, dtype="float64"), arrays[0]), None, spec


def verify(layer, algo):
    """Check ``algo`` against the oracle at N=1; raises AssertionError with the worst error."""
    arrays = make_inputs(layer, n=1, seed=1)
    ref, mag, spec = oracle(layer, arrays)
    out = fastconv_call(layer, algo)(*arrays)
    if layer.kind == "conv":
        eps = np.finfo(np.float32).eps
        bound = 4 * eps * (spec.gemm_k + 1) * mag + 1e-30
        err = np.abs(out - ref)
        assert (err <= bound).all(), f"{layer.name}/{algo}: error {err.max():.3g} above bound"
    else:
        np.testing.assert_allclose(out, ref.astype(np.float32), rtol=1e-6, atol=1e-6,
                                   err_msg=f"{layer.name}: pool differs from the oracle")


#: pause before each timed series: OpenBLAS's workers spin for about 0.1 s after a GEMM, and whatever is
#: timed next (torch, or a Numba kernel) would share the cores with them (see numba_cpu's docstring).
SETTLE_S = 0.3


def time_median(fn, arrays, repeat, min_time=0.0):
    time.sleep(SETTLE_S)
    fn(*arrays)  # warm-up (compiles, loads, or autotunes: auto's measurement runs im2col's GEMMs too)
    time.sleep(SETTLE_S)
    times = []
    while len(times) < repeat or sum(times) < min_time:
        t0 = time.perf_counter()
        fn(*arrays)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeat:
            break
    return statistics.median(times)


def algos_for(layer):
    return ["direct", "im2col", "auto"] if layer.kind == "conv" else ["auto"]


def run(layers, repeat, with_torch=True, log=print):
    rows = []
    for layer in layers:
        arrays = make_inputs(layer)
        spec = spec_of(layer, arrays)
        row = {"name": layer.name, "kind": layer.kind, "N": layer.N, "flops": spec.flops(),
               "bytes": spec.bytes(), "layer": dataclasses.asdict(layer)}
        for algo in algos_for(layer):
            verify(layer, algo)
        for algo in ["auto"] + [a for a in algos_for(layer) if a != "auto"]:
            row[f"fastconv_{algo}_s"] = time_median(fastconv_call(layer, algo), arrays, repeat)
        if layer.kind == "conv":
            from fastconv._backends import numba_cpu
            impl = fastconv._dispatch.select(spec, "numba", "auto")
            row["auto_choice"] = impl.algo
            del numba_cpu
        if with_torch:
            import torch
            targs = [torch.from_numpy(a) for a in arrays]
            row["torch_s"] = time_median(torch_call(layer), targs, repeat)
            row["ratio"] = row["torch_s"] / row["fastconv_auto_s"]
        rows.append(row)
        log(format_row(row))
    return rows


HEADER = (f"{'layer':<24} {'fc direct':>10} {'fc im2col':>10} {'fc auto':>10} {'pick':>7} {'torch':>10} "
          f"{'auto':>12} {'torch':>12} {'ratio':>6}")


def format_row(row):
    def ms(key):
        return f"{row[key] * 1e3:8.2f}ms" if key in row else f"{'-':>10}"
    if row["kind"] == "conv":
        rate = lambda s: f"{row['flops'] / s / 1e9:7.1f}GF/s"  # noqa: E731
    else:
        rate = lambda s: f"{row['bytes'] / s / 1e9:7.2f}GB/s"  # noqa: E731
    t = row.get("torch_s")
    return (f"{row['name']:<24} {ms('fastconv_direct_s')} {ms('fastconv_im2col_s')} {ms('fastconv_auto_s')} "
            f"{row.get('auto_choice', '-'):>7} {ms('torch_s')} {rate(row['fastconv_auto_s']):>12} "
            f"{rate(t) if t else '-':>12} {row.get('ratio', float('nan')):6.2f}")


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summary(rows):
    out = {}
    for kind in ("conv", "pool"):
        ratios = [r["ratio"] for r in rows if r["kind"] == kind and "ratio" in r]
        if ratios:
            worst = min((r for r in rows if r["kind"] == kind), key=lambda r: r["ratio"])
            out[kind] = {"geomean_ratio": geomean(ratios), "min_ratio": worst["ratio"],
                         "min_layer": worst["name"], "layers": len(ratios)}
    return out


def markdown(env, rows, summ, note=""):
    """The results as a Markdown table (what benchmarks/results/cpu_<date>.md holds)."""
    lines = [f"# CPU benchmark: fastconv `numba` vs torch.nn.functional ({env['date']})", "",
             f"Machine: {env['machine']} (x86-64); Python {env['python']}, NumPy {env['numpy']}, "
             f"Numba {env['numba']} ({env['numba_threads']} threads), PyTorch {env.get('torch')} "
             f"({env.get('torch_threads')} threads); float32. Medians; ratio = torch time / fastconv "
             f"(auto) time, > 1 means fastconv is faster. Conv layers at N=8, pools at N=16.", ""]
    if note:
        lines += [note, ""]
    lines += ["| layer | direct ms | im2col ms | auto ms | auto pick | torch ms | fastconv | torch | ratio |",
              "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        def ms(key):
            return f"{r[key] * 1e3:.2f}" if key in r else "-"
        if r["kind"] == "conv":
            rate = lambda t: f"{r['flops'] / t / 1e9:.1f} GFLOP/s"  # noqa: E731
        else:
            rate = lambda t: f"{r['bytes'] / t / 1e9:.2f} GB/s"  # noqa: E731
        lines.append(f"| {r['name']} | {ms('fastconv_direct_s')} | {ms('fastconv_im2col_s')} | "
                     f"{ms('fastconv_auto_s')} | {r.get('auto_choice', '-')} | {ms('torch_s')} | "
                     f"{rate(r['fastconv_auto_s'])} | {rate(r['torch_s']) if 'torch_s' in r else '-'} | "
                     f"{r.get('ratio', float('nan')):.2f} |")
    lines.append("")
    for kind, s_ in summ.items():
        lines.append(f"- **{kind}**: geometric mean ratio **{s_['geomean_ratio']:.2f}** over {s_['layers']} "
                     f"layers; lowest {s_['min_ratio']:.2f} ({s_['min_layer']})")
    return "\n".join(lines) + "\n"


def environment():
    import numba
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "numpy": np.__version__, "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
           "fastconv": fastconv.__version__}
    try:
        import torch
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--md", help="write the table as Markdown here")
    ap.add_argument("--render", nargs=2, metavar=("JSON", "MD"), help="only turn a saved JSON run into Markdown")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per implementation (median)")
    ap.add_argument("--only", help="only layers whose name contains this")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--threads", type=int, help="threads for every library (Numba, BLAS, PyTorch); "
                    "default: each library's own default")
    args = ap.parse_args(argv)
    if args.render:
        render(*args.render)
        return
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed: no peer column")
            with_torch = False
    if args.threads:
        import numba
        numba.set_num_threads(args.threads)
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    layers = conv_layers() + pool_layers()
    if args.only:
        layers = [l for l in layers if args.only in l.name]
    env = environment()
    print(json.dumps(env))
    print(HEADER)
    rows = run(layers, args.repeat, with_torch)
    summ = summary(rows)
    for kind, s in summ.items():
        print(f"{kind}: geomean ratio {s['geomean_ratio']:.2f} over {s['layers']} layers, "
              f"lowest {s['min_ratio']:.2f} ({s['min_layer']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows, "summary": summ}, f, indent=1)
    if args.md:
        Path(args.md).write_text(markdown(env, rows, summ))


def render(json_path, md_path, note=""):
    """Markdown from a saved JSON run: ``python benchmarks/bench_cpu.py --render run.json out.md``."""
    data = json.loads(Path(json_path).read_text())
    Path(md_path).write_text(markdown(data["environment"], data["rows"], data["summary"], note))


if __name__ == "__main__":
    main()
