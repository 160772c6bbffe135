"""fastconv.dask on a local Dask cluster beside the single-array op: a large image, a 3x3 convolution and a
3-layer stack, on 1 and 2 workers, with the halo's cost.

Not a test (pytest does not collect it): a measurement to run on a quiet machine.

    python benchmarks/dask_cluster.py                    # 16384 x 16384, tiles 2048 and 4096 (about 20 GiB)
    python benchmarks/dask_cluster.py --quick            # 2048 x 2048, tiles 1024
    python benchmarks/dask_cluster.py --size 8192 --tiles 1024 2048 --clusters 1x1 2x1 1x2 --out DIR

What it does, per case (``conv``: ``conv2d`` 3x3, C_in -> C_out, padding 1; ``stack``: that conv, ReLU,
``max_pool2d`` 2, a 3x3 C_out -> C_out conv, run by ``fastconv.dask.sequential`` with one halo):

1. the image (1, C_in, H, W) float32 is made once, seeded, in this process; the single-array result is
   computed, then the single-array op is timed on 1 thread and on as many threads as the largest cluster
   uses (``numba.set_num_threads``, BLAS pools through threadpoolctl where installed);
2. per cluster ``WxT`` (``distributed.LocalCluster``: W worker processes, T threads each; every worker runs
   Numba and BLAS on one thread, so a worker's parallelism is its Dask threads) and per tile size: the image
   is scattered to the workers tile by tile and persisted there (it is never part of the graph); the
   fastconv.dask result is checked block by block against the single-array result (tolerance below); then
   it is timed;
3. what is timed: the compute of a reduction that keeps one element of every output block
   (``y.map_blocks(corner)``): every block is computed in full on its worker, but only one number per block
   comes back, so the time is the op's and the halo exchange's, not the transfer of the output to this
   process (``y.compute()``: 8 GiB over TCP at the default size) nor a summation (``y.sum()`` adds a pass
   over the output); and ``client.persist`` would be no measurement on a repeat (the blocks of the
   previous repeat may still be held when it asks for them again). Dask fuses each corner with its block's
   task, so a block is not stored on its worker either, as the single-array op's output is not kept. One
   more call runs under Dask's task stream: the seconds the tasks computed and moved data, beside the wall
   time, show what scheduling costs;
4. timing as ``fastconv bench`` times (:mod:`fastconv.bench.timing`): warm-up calls, then timed calls until
   the median is known to ``max_spread`` or the budget is spent; medians, quartiles, spread and ``noisy``
   are reported, with the load average before and after every measurement;
5. the halo's cost from the plan (:mod:`fastconv.dask._plan`, the arithmetic the graph is built from): the
   input elements the output blocks' calls read in all, over the input's elements, minus 1; and the time
   against the single-array time on the same number of threads; the graph's task count (all, halo slices).

``algo="auto"`` measures once per problem shape in each process, so every new worker process autotunes the
block shapes it meets: the check before the timing absorbs that (its seconds are reported, ``verify_s``).

Tolerance: each convolution adds :func:`fastconv.testing.conv_tolerance` evaluated at the largest magnitude
its input holds (the bound of the elementwise rule, per output channel); an error reaching a convolution is
multiplied by the channel's sum of ``|weight|``; ReLU and max pool pass it on unchanged (they are
1-Lipschitz). That bounds each result's distance from the exact one, so the dask result and the single-array
result may differ by twice it; a block outside that fails the run before anything of it is timed.

Writes ``dask-<date>.json`` (every time, the machine, the settings) and ``dask-<date>.md`` (the table) to
``--out`` (default ``./fastconv-results/dask/``). Memory: the image, the single-array result (8 x the
image for C_out=8) held for the check and a second one while the single-array op is timed: about 20 GiB at
16384 x 16384 with 1 -> 8 channels; ``--size 8192`` needs a quarter of that.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

#: a layer of a case: ("conv", kernel, padding), ("relu",), ("max", kernel, stride)
CASES = {
    "conv": (("conv", 3, 1),),
    "stack": (("conv", 3, 1), ("relu",), ("max", 2, 2), ("conv", 3, 1)),
}
CASE_DOC = {"conv": "conv2d 3x3 pad 1, fastconv.dask.conv2d",
            "stack": "conv2d 3x3 pad 1, ReLU, max_pool2d 2, conv2d 3x3 pad 1, fastconv.dask.sequential"}
FULL = dict(size=16384, tiles=(2048, 4096))
QUICK = dict(size=2048, tiles=(1024,))


# ---------------------------------------------------------------------------------------------------
# The cases: weights, the single-array layers, the dask op, the plan
# ---------------------------------------------------------------------------------------------------
def relu(a):
    """ReLU in place: the array is the previous layer's fresh output (on one array and in every block)."""
    return np.maximum(a, 0, out=a)


def weights(case, c_in, c_out, seed):
    """(weight, bias) per conv layer of ``case``, seeded (He-scaled, so the stack's values stay O(1))."""
    rng = np.random.default_rng(seed + 1)
    out, c = [], c_in
    for layer in CASES[case]:
        if layer[0] == "conv":
            k = layer[1]
            w = rng.standard_normal((c_out, c, k, k)).astype(np.float32) * np.float32(np.sqrt(2 / (c * k * k)))
            out.append((w, rng.standard_normal(c_out).astype(np.float32) * np.float32(0.1)))
            c = c_out
    return out


def layers(case, params, backend):
    """The case's layers as single-array callables (what ``fastconv.dask.sequential`` takes)."""
    import fastconv
    out, it = [], iter(params)
    assert CASES[case][0][0] != "relu", "relu works in place: it must follow a layer that made a new array"
    for layer in CASES[case]:
        if layer[0] == "conv":
            w, b = next(it)
            out.append(functools.partial(fastconv.conv2d, weight=w, bias=b, padding=layer[2], backend=backend))
        elif layer[0] == "relu":
            out.append(relu)
        else:
            out.append(functools.partial(fastconv.max_pool2d, kernel_size=layer[1], stride=layer[2],
                                         backend=backend))
    return out


def single(fns, a):
    for fn in fns:
        a = fn(a)
    return a


def dask_op(case, fns, x):
    """The case over the dask array ``x``: one op by its fastconv.dask twin, a stack by ``sequential``."""
    import fastconv.dask as fd
    if len(fns) == 1:
        f = fns[0]
        return fd.conv2d(x, **f.keywords)
    return fd.sequential(fns, x)


def axes(case, n):
    """One spatial axis of ``case`` over ``n`` input positions: a ``_plan.Window`` per layer (None for ReLU)."""
    from fastconv.dask import _plan
    out = []
    for layer in CASES[case]:
        if layer[0] == "relu":
            out.append(None)
            continue
        w = (_plan.Window(n, layer[1], 1, 1, layer[2], layer[2]) if layer[0] == "conv"
             else _plan.Window(n, layer[1], layer[2]))
        out.append(w)
        n = w.out
    return out


def halo(case, shape, chunks):
    """The input elements the output blocks' calls read, from the plan (:func:`_plan.plan` of a single op,
    :func:`_plan.plan_stack` of a stack): ``{"read", "input", "ratio": read / input - 1, "blocks"}``."""
    from fastconv.dask import _plan
    n, c = shape[:2]
    read, blocks = n * c, 1
    for a, (size, ch) in enumerate(zip(shape[2:], chunks)):
        ax = axes(case, size)
        plan = (_plan.plan(ax[0], ch) if len(ax) == 1 else _plan.plan_stack(ax, ch))
        read *= sum(b.in_hi - b.in_lo for b in plan)
        blocks *= len(plan)
    total = int(np.prod(shape))
    return {"read": int(read), "input": total, "ratio": read / total - 1, "blocks": blocks}


def tasks(y, x):
    """The op's graph: every task but the input's chunks, and of those the halo slices."""
    keys = [k for k in dict(y.__dask_graph__()) if not (isinstance(k, tuple) and k[0] == x.name)]
    names = [k[0] if isinstance(k, tuple) else k for k in keys]
    return {"tasks": len(keys), "halo_tasks": sum(1 for s in names if str(s).endswith("-halo")),
            "output_blocks": int(np.prod(y.numblocks))}


# ---------------------------------------------------------------------------------------------------
# Reference and tolerance
# ---------------------------------------------------------------------------------------------------
def reference(fns, img):
    """The single-array result and the largest magnitude each layer's input holds."""
    a, mags = img, []
    for fn in fns:
        mags.append(max(float(a.max()), -float(a.min())))      # max |a| without an |a| the size of a
        a = fn(a)
    return a, mags


def tolerance(case, fns, mags):
    """Per output channel: the bound the module docstring describes (``conv_tolerance`` at each conv's
    largest input magnitude, carried through the layers)."""
    from fastconv._spec import conv_spec
    from fastconv.testing import conv_tolerance
    err = 0.0
    tol = None
    for fn, mag in zip(fns, mags):
        if not (isinstance(fn, functools.partial) and fn.func.__name__.startswith("conv")):
            continue      # ReLU, max pool: |f(a) - f(b)| <= max |a - b|
        w, b = fn.keywords["weight"], fn.keywords["bias"]
        # the largest magnitude over one window, and over 6x6 so that a 3x3 conv has one whole Winograd tile
        # (4x4 outputs: conv_tolerance widens to the Winograd bound where numba's winograd takes the problem)
        size = tuple(max(k, 6) if w.shape[2:] == (3, 3) else k for k in w.shape[2:])
        x = np.full((1, w.shape[1]) + size, mag + err, dtype=np.float32)
        own = conv_tolerance(conv_spec(x, w, b), x, w, b).max(axis=(0, 2, 3))
        tol = own + err * np.abs(w).astype(np.float64).sum(axis=(1, 2, 3))
        err = float(tol.max())
    return tol


#: how many bytes of output blocks one fetch of :func:`verify` brings to this process
VERIFY_BATCH_BYTES = 256 * 2**20


def verify(client, y, ref, tol):
    """Every block of ``y`` fetched (a batch of at most :data:`VERIFY_BATCH_BYTES` at a time) and compared
    with ``ref``; returns the largest |error| / tolerance, raises AssertionError outside it."""
    import itertools
    edges = [np.cumsum((0,) + c) for c in y.chunks]
    worst, batch, nbytes = 0.0, [], 0
    blocks = list(itertools.product(*(range(n) for n in y.numblocks)))
    for k, idx in enumerate(blocks):
        sl = tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, idx))
        batch.append((idx, sl))
        nbytes += ref[sl].nbytes
        if nbytes < VERIFY_BATCH_BYTES and k + 1 < len(blocks):
            continue
        got = client.gather(client.compute([y.blocks[i] for i, _ in batch]))
        for (i, s), g in zip(batch, got):
            worst = max(worst, _compare(i, g, ref[s], tol[s[1]].reshape(1, -1, 1, 1)))
        batch, nbytes = [], 0
    return worst


def _compare(idx, got, want, tol):
    if got.shape != want.shape:
        raise AssertionError(f"block {idx}: shape {got.shape}, expected {want.shape}")
    err = np.abs(got.astype(np.float64) - want)
    if not np.isfinite(got).all() or (err > tol).any():
        i = tuple(np.argwhere(~(err <= tol))[0])
        raise AssertionError(f"block {idx} differs from the single-array result at {i} (block-relative): "
                             f"got {got[i]!r}, expected {want[i]!r}, tolerance {tol[0, i[1], 0, 0]:.3g}")
    return float((err / tol).max())


# ---------------------------------------------------------------------------------------------------
# Cluster and data
# ---------------------------------------------------------------------------------------------------
#: each worker's Numba and BLAS pools: one thread, so a worker's parallelism is its Dask threads
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def parse_cluster(s):
    try:
        w, t = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cluster is WORKERSxTHREADS (2x1: two workers of one thread), "
                                         f"got {s!r}") from None
    if w < 1 or t < 1:
        raise argparse.ArgumentTypeError(f"workers and threads must be positive, got {s!r}")
    return w, t


@contextlib.contextmanager
def cluster(workers, threads, in_process):
    """A LocalCluster of ``workers`` processes (``in_process``: threads of this process, for tests) with
    ``threads`` Dask threads each, and a client of it."""
    from distributed import Client, LocalCluster
    kw = dict(n_workers=workers, threads_per_worker=threads, processes=not in_process, dashboard_address=":0")
    if not in_process:
        kw["env"] = dict(WORKER_ENV)
    with LocalCluster(**kw) as c, Client(c) as client:
        yield client


def scatter(client, img, tile):
    """``img`` as a dask array of ``tile`` x ``tile`` chunks held on the workers: each tile is sent to one
    worker by ``client.scatter`` (the scheduler spreads them), never as part of a graph."""
    import dask.array as da
    from dask.base import tokenize
    from distributed import wait
    name = "image-" + tokenize(img.shape, img.dtype, tile, time.time())
    h, w = img.shape[2:]
    rows, cols = range(0, h, tile), range(0, w, tile)
    parts = {(name, 0, 0, i, j): img[:, :, r:r + tile, c:c + tile] for i, r in enumerate(rows)
             for j, c in enumerate(cols)}
    futures = client.scatter(list(parts.values()))
    chunks = ((img.shape[0],), (img.shape[1],), tuple(min(tile, h - r) for r in rows),
              tuple(min(tile, w - c) for c in cols))
    x = da.Array(dict(zip(parts, futures)), name, chunks, dtype=img.dtype, meta=np.empty((0,) * 4, img.dtype))
    x = client.persist(x)
    wait(x)
    return x


def task_stream(client, call):
    """One more call of ``call`` under :func:`distributed.get_task_stream`: the seconds the tasks spent
    computing (summed over tasks, all workers), transferring data between workers and (de)serializing it,
    and the number of tasks that ran: what the wall time holds besides scheduling."""
    from distributed import get_task_stream
    with get_task_stream(client) as ts:
        call()
    out = {"tasks_run": len(ts.data)}
    for action in ("compute", "transfer", "deserialize", "disk-read", "disk-write"):
        out[f"{action}_s"] = sum(s["stop"] - s["start"] for d in ts.data for s in d["startstops"]
                                 if s["action"] == action)
    return out


def corner(block):
    return block[:1, :1, :1, :1].copy()


def reduction(y):
    """One element of every output block: the blocks are computed in full where they live, one number each
    comes back."""
    return y.map_blocks(corner, chunks=tuple((1,) * n for n in y.numblocks), dtype=y.dtype)


# ---------------------------------------------------------------------------------------------------
# Machine, threads, timing
# ---------------------------------------------------------------------------------------------------
def lscpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("Flags", "").split())
    isa = [f for f in ("avx512f", "avx512_bf16", "avx2", "fma", "sse4_2", "asimd", "sve") if f in flags]
    from fastconv.bench import machine
    return {"model": fields.get("Model name") or machine.cpu_model(), "isa": isa,
            "cpus": fields.get("CPU(s)"), "threads_per_core": fields.get("Thread(s) per core"),
            "sockets": fields.get("Socket(s)")}


def machine_info():
    from fastconv.bench import machine
    info = machine.machine_info("cpu")
    info["lscpu"] = lscpu()
    info["versions"] = dict(machine.versions(), dask=machine.package_version("dask"),
                            distributed=machine.package_version("distributed"),
                            threadpoolctl=machine.package_version("threadpoolctl"))
    info["env"] = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                  "MKL_NUM_THREADS")}
    return info


@contextlib.contextmanager
def threads(n):
    """Numba and the BLAS pools on ``n`` threads in this process (BLAS only where threadpoolctl is
    installed); yields what each runs with."""
    got = {}
    undo = []
    try:
        import numba
        before = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        undo.append(lambda: numba.set_num_threads(before))
        got["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(n)
        undo.append(limits.restore_original_limits)
        got["blas"] = n
    except ImportError:
        got["blas"] = "library default (no threadpoolctl)"
    try:
        yield got
    finally:
        for u in reversed(undo):
            u()


def policy(args):
    from fastconv.bench.timing import Policy
    return Policy(warmup=args.warmup, min_repeat=args.repeat, max_repeat=max(args.repeat, args.max_repeat),
                  min_time=0.0, max_time=args.budget, round_calls=1)


def timed(call, pol):
    """:func:`fastconv.bench.timing.measure` on the wall clock, summarised, with the load average around it."""
    from fastconv import _timing
    from fastconv.bench import machine, timing
    load0 = machine.loadavg()
    m = timing.measure(call, pol, lambda fn, n: _timing.wall_times(fn, n))
    return dict(timing.summarise(m["times_s"], pol), first_call_s=m["first_call_s"], times_s=m["times_s"],
                loadavg_before=load0, loadavg_after=machine.loadavg())


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------
def run_case(case, img, args, pol, log):
    fns = layers(case, weights(case, args.channels[0], args.channels[1], args.seed), args.backend)
    t0 = time.perf_counter()
    ref, mags = reference(fns, img)
    ref_s = time.perf_counter() - t0
    tol = 2 * tolerance(case, fns, mags)     # both results within the bound of the exact one
    rows = []
    single_threads = sorted({1, max(w * t for w, t in args.clusters)})
    single_by_threads = {}
    for n in single_threads:
        with threads(n) as got:
            r = timed(lambda: single(fns, img), pol)
        single_by_threads[n] = r["median_s"]
        rows.append(dict(case=case, run=f"single array, {got.get('numba', n)} thread(s)", kind="single", threads=n,
                         threads_set=got, **r))
        log(rows[-1])
    for workers, per_worker in args.clusters:
        t0 = time.perf_counter()
        with cluster(workers, per_worker, args.in_process) as client:
            start_s = time.perf_counter() - t0
            for tile in args.tiles:
                x = scatter(client, img, tile)
                with warnings.catch_warnings():
                    from fastconv.dask import ChunkWarning
                    warnings.simplefilter("error", ChunkWarning)    # a rechunk would not be the plan measured
                    y = dask_op(case, fns, x)
                t0 = time.perf_counter()
                worst = verify(client, y, ref, tol)
                verify_s = time.perf_counter() - t0
                red = reduction(y)
                def call():
                    return client.compute(red).result()
                r = timed(call, pol)
                r["task_stream"] = task_stream(client, call)
                total = workers * per_worker
                single_s = single_by_threads.get(total)
                plan = halo(case, img.shape, x.chunks[2:])
                row = dict(case=case, run=f"dask {workers} worker(s) x {per_worker} thread(s), tile {tile}",
                           kind="dask", workers=workers, threads_per_worker=per_worker, threads=total, tile=tile,
                           in_process=args.in_process, cluster_start_s=start_s, verify_s=verify_s,
                           max_err_over_tol=worst, halo_read=plan, **tasks(y, x), **r)
                row["vs_single"] = (r["median_s"] / single_s) if single_s else None
                one = next((q for q in rows if q.get("kind") == "dask" and q["tile"] == tile
                            and q["workers"] * q["threads_per_worker"] == 1), None)
                row["speedup_vs_1x1"] = (one["median_s"] / r["median_s"]) if one else None
                rows.append(row)
                log(row)
                del x, y, red
    return rows, {"reference_s": ref_s, "tolerance_per_channel": tol.tolist(), "layer_input_max": mags}


def markdown(result):
    m, s = result["machine"], result["settings"]
    cpu = m["lscpu"]
    out = [f"# fastconv.dask on a local cluster, {m['date']}", "",
           f"- machine: {cpu['model']} ({', '.join(cpu['isa']) or 'ISA unknown'}), {m['cpu_cores_usable']} usable "
           f"of {m['cpu_cores']} CPUs, host {m['hostname']}; load average at start "
           f"{' '.join(f'{v:.2f}' for v in m['loadavg_start'] or [])}, at end "
           f"{' '.join(f'{v:.2f}' for v in result['loadavg_end'] or [])}",
           f"- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
           f"- image (1, {s['channels'][0]}, {s['size']}, {s['size']}) float32, seed {s['seed']}; "
           f"{s['channels'][0]} -> {s['channels'][1]} channels; backend {s['backend'] or 'default'}",
           f"- workers: {'threads of this process' if s['in_process'] else 'processes'}, Numba and BLAS on one "
           f"thread each; timed: compute of one element per output block (every block computed in full where "
           f"it lives, one number each comes back); warm-up {s['policy']['warmup']}, then {s['policy']['min_repeat']}"
           f" to {s['policy']['max_repeat']} calls or {s['policy']['max_time']} s; spread: the half-width of the "
           f"median's 95% interval, relative", ""]
    for case, info in result["cases"].items():
        out += [f"## {case}: {CASE_DOC[case]}", "",
                "| run | median s | q1-q3 s | spread | vs single (same threads) | x 1x1 | blocks | tasks | "
                "halo tasks | halo read | task compute s | transfer s | err/tol | load before-after |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in info["rows"]:
            load = f"{r['loadavg_before'][0]:.2f}-{r['loadavg_after'][0]:.2f}" if r["loadavg_before"] else ""
            noisy = " (noisy)" if r.get("noisy") else ""
            if r["kind"] == "single":
                out.append(f"| {r['run']} | {r['median_s']:.4g}{noisy} | {r['q1_s']:.4g}-{r['q3_s']:.4g} | "
                           f"{r['spread'] or 0:.1%} | | | | | | | | | | {load} |")
                continue
            vs = f"{r['vs_single']:.2f}x" if r["vs_single"] else ""
            ts = r["task_stream"]
            sp = f"{r['speedup_vs_1x1']:.2f}x" if r["speedup_vs_1x1"] else ""
            out.append(f"| {r['run']} | {r['median_s']:.4g}{noisy} | {r['q1_s']:.4g}-{r['q3_s']:.4g} | "
                       f"{r['spread'] or 0:.1%} | {vs} | {sp} | {r['output_blocks']} | {r['tasks']} | "
                       f"{r['halo_tasks']} | {r['halo_read']['ratio']:.3%} | {ts['compute_s']:.4g} | "
                       f"{ts['transfer_s']:.3g} | "
                       f"{r['max_err_over_tol']:.2g} | {load} |")
        out.append("")
    out += ["vs single: the dask median over the single-array median on as many threads as the cluster has "
            "(> 1: slower); x 1x1: the 1-worker, 1-thread median over this one (same tile); halo read: input "
            "elements the blocks' calls read, from the plan, over the input's elements, minus 1; task compute s, "
            "transfer s: of one more call, the seconds its tasks computed (summed over the workers) and moved data "
            "between workers (Dask's task stream), what the median holds besides scheduling; err/tol: the "
            "largest |dask - single array| over the tolerance (the script's docstring), 0 when bitwise equal.",
            ""]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.splitlines()[:2]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK['size']} x {QUICK['size']}, tiles {QUICK['tiles']}, short budgets: a check that it "
                         f"all works, not a measurement (about 2 minutes on a busy 2-core VM, most of it every "
                         f"new worker process autotuning its block shapes)")
    ap.add_argument("--size", type=int, help=f"the image's height and width (default {FULL['size']})")
    ap.add_argument("--tiles", type=int, nargs="+", help=f"chunk sizes (default {FULL['tiles']})")
    ap.add_argument("--channels", type=int, nargs=2, default=(1, 8), metavar=("C_IN", "C_OUT"))
    ap.add_argument("--clusters", type=parse_cluster, nargs="+", default=[(1, 1), (2, 1)],
                    metavar="WxT", help="local clusters: W worker processes of T threads (default 1x1 2x1)")
    ap.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    ap.add_argument("--backend", default=None, help="fastconv backend of every call (default: fastconv's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first is reported apart)")
    ap.add_argument("--repeat", type=int, default=5, help="at least this many timed calls")
    ap.add_argument("--max-repeat", type=int, default=20)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of timed calls per measurement")
    ap.add_argument("--in-process", action="store_true",
                    help="workers as threads of this process (starts at once; for tests, not a measurement)")
    ap.add_argument("--out", default=os.path.join(".", "fastconv-results", "dask"), help="results directory")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else FULL
    args.size = args.size or base["size"]
    args.tiles = args.tiles or list(base["tiles"])
    if args.quick:
        args.warmup, args.repeat = min(args.warmup, 1), min(args.repeat, 3)
        args.budget = min(args.budget, 1.0)
    for name, v in (("--size", args.size), ("--warmup", args.warmup), ("--repeat", args.repeat)):
        if v < 1:
            ap.error(f"{name} must be positive, got {v}")
    if any(t < 1 for t in args.tiles) or min(args.channels) < 1:
        ap.error("--tiles and --channels must be positive")

    from fastconv._files import atomic_write
    started = time.perf_counter()
    info = machine_info()
    pol = policy(args)

    def log(row):
        print(f"{row['case']:6s} {row['run']:44s} median {row['median_s']:.4g} s  spread "
              f"{row['spread'] or 0:.1%}" + (f"  halo read {row['halo_read']['ratio']:.3%}, {row['tasks']} tasks; "
                                            f"checked in {row['verify_s']:.1f} s" if row["kind"] == "dask" else ""),
              flush=True)

    print(f"# {info['date']}; {info['lscpu']['model']} ({', '.join(info['lscpu']['isa'])}); load average "
          f"{info['loadavg_start']}; image {args.size}^2, tiles {args.tiles}, clusters "
          f"{['%dx%d' % c for c in args.clusters]}", flush=True)
    img = np.random.default_rng(args.seed).standard_normal((1, args.channels[0], args.size, args.size),
                                                           dtype=np.float32)
    cases = {}
    for case in args.cases:
        rows, extra = run_case(case, img, args, pol, log)
        cases[case] = dict(extra, rows=rows, doc=CASE_DOC[case])
    from fastconv.bench import machine
    result = {"machine": info, "loadavg_end": machine.loadavg(), "wall_s": time.perf_counter() - started,
              "settings": {"size": args.size, "tiles": args.tiles, "channels": list(args.channels),
                           "clusters": ["%dx%d" % c for c in args.clusters], "backend": args.backend,
                           "seed": args.seed, "in_process": args.in_process, "worker_env": WORKER_ENV,
                           "timed": "compute of one element of every output block (map_blocks(corner))",
                           "policy": {k: getattr(pol, k) for k in ("warmup", "min_repeat", "max_repeat",
                                                                   "max_time", "max_spread")}},
               "cases": cases}
    stem = os.path.join(args.out, "dask-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))
    atomic_write(stem + ".json", json.dumps(result, indent=1, default=str))
    atomic_write(stem + ".md", markdown(result))
    print(f"# {result['wall_s']:.0f} s; wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
