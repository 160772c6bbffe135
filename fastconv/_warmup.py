"""Compiling ahead of time (``fastconv warmup``), and saying so when a kernel compiles on its first call.

The numba, cuda-emu and cuda backends compile their kernels on first use -- Numba per kernel and signature
(seconds each), the emulator per kernel file with g++, CuPy per kernel file and dtype with NVRTC -- and keep
them in a disk cache, so that only the first process on a machine waits. That wait is said once per process
and backend, in one line on stderr (:func:`compiling_now`; ``FASTCONV_QUIET=1`` turns the line off), naming
what compiles, where it is cached and that ``fastconv warmup`` compiles ahead of time. Every compile is
also logged on the ``fastconv`` logger at INFO (when it starts, and when it ends with its seconds). Nothing
is said at import, and a kernel loaded from a disk cache is not compiling and says nothing. How each
backend tells the two apart:

- numba: Numba's own compile event (``numba.core.event``, kind ``numba:compile``), which Numba triggers
  only once its disk cache has missed (``Dispatcher.compile`` tries ``load_overload`` first): exact, no
  timing and no look at the cache files. The listener lives in ``_backends/_numba_common``.
- cuda-emu: the emulator's builder knows whether g++ runs (a verified ``.so`` in its cache is a hit).
- cuda: CuPy decides inside ``RawModule.compile`` whether NVRTC runs, behind its own cache keys; loading a
  cached module takes milliseconds and NVRTC seconds, so a module build still running after
  :data:`SLOW_S` is a compile (a timer says it then, while it runs; a load never gets that far).

``fastconv warmup`` (:func:`warmup`) runs every implementation of the chosen backends once per dtype it
runs natively and per batch size of :data:`BATCHES` (one image, two: an implementation may run other
kernels for several images), on a tiny problem it supports (:func:`problems_for`: the first of
:func:`problems` whose spec :func:`fastconv._dispatch.reasons` accepts), with the inputs the tuner would
make (:func:`fastconv._tune.synthetic_inputs`): an honest trigger, since Numba compiles per signature and
the call is the one dispatch makes. The implementations come from dispatch (``implementations()`` of each
backend), so a new family is warmed without an edit here; what refuses every tiny problem is reported
with its reasons (tests/test_warmup.py checks that every numba implementation and every CUDA kernel file
is reached). A numba kernel that no run reached is reported as such: it compiles on first use.

What warmup cannot reach: Numba compiles per argument *type*, and a read-only array (``np.load(...,
mmap_mode="r")``) is another type than a writable one, so such a caller compiles its own signatures on
first use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import shutil
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _config

log = logging.getLogger("fastconv")

#: the backends that compile, and those warmed when none is named (cuda-emu is for testing: only by name)
BACKENDS = ("numba", "cuda", "cuda-emu")
DEFAULT_BACKENDS = ("numba", "cuda")
DTYPES = ("float16", "float32", "float64")

#: a cuda module build still running after this many seconds is NVRTC compiling, not a cache load
SLOW_S = 0.5


# ---------------------------------------------------------------------------------------------------
# Saying that a kernel compiles
# ---------------------------------------------------------------------------------------------------
_lock = threading.Lock()
_said: set = set()          # backends whose first compile this process has said
_held = [0]                 # > 0 while fastconv warmup runs: it shows its own progress


def compiling_now(backend: str, what: str, where: Callable[[], str]) -> None:
    """A kernel of ``backend`` starts compiling now (not loading from a cache). Logged at INFO; the first
    of the process for ``backend`` is also said in one line on stderr, unless ``FASTCONV_QUIET=1`` or
    ``fastconv warmup`` runs. ``what``: the kernel (``kernel max_pool2d (float32)``); ``where()``: where it
    is cached (``cached in DIR``, or why it is not), asked only when the line is said. Never raises: a
    notice must not break a compile."""
    try:
        log.info("%s: compiling %s", backend, what)
        with _lock:
            if backend in _said or _held[0]:
                return
            _said.add(backend)
        try:
            if _config.quiet():
                return
            bad = ""
        except ValueError as e:     # a value FASTCONV_QUIET does not take: say the line, and why it shows
            bad = f" [{e}]"
        try:
            place = where()
        except Exception as e:      # where the cache is must not decide whether the kernel compiles
            place = f"cache location unknown ({type(e).__name__}: {e})"
        sys.stderr.write(f"fastconv: compiling {backend} {what} on its first call; {place}; `fastconv warmup` "
                         f"compiles every kernel ahead of time (said once per process; FASTCONV_QUIET=1 hides "
                         f"it){bad}\n")
        sys.stderr.flush()
    except Exception:               # pragma: no cover - stderr closed, logging misconfigured
        pass


_hooked: set = set()


def hook_once(name: str) -> bool:
    """True the first time a compile hook ``name`` asks (a kernel module imported again after a failed
    import must not register a second listener)."""
    with _lock:
        if name in _hooked:
            return False
        _hooked.add(name)
        return True


def compiled(backend: str, what: str, seconds: float) -> None:
    """A compile that :func:`compiling_now` announced has ended (logged at INFO)."""
    try:
        log.info("%s: compiled %s in %.1f s", backend, what, seconds)
    except Exception:               # pragma: no cover
        pass


class Compile:
    """What :func:`compiling` yields: ``slow`` is True once the block counted as a compile."""
    slow = False


@contextlib.contextmanager
def compiling(backend: str, what: str, where: Callable[[], str], after: float = 0.0) -> Iterator[Compile]:
    """Around a block that compiles (``after=0``), or that compiles or loads from a cache: then it counts as
    a compile, and is said (:func:`compiling_now`) while it runs, once it has run ``after`` seconds."""
    c = Compile()
    start = time.perf_counter()

    def announce():
        c.slow = True
        compiling_now(backend, what, where)

    timer = None
    if after > 0:
        timer = threading.Timer(after, announce)
        timer.daemon = True
        timer.start()
    else:
        announce()
    try:
        yield c
    finally:
        if timer is not None:
            timer.cancel()
        if c.slow:
            compiled(backend, what, time.perf_counter() - start)


@contextlib.contextmanager
def _holding():
    """No stderr line while warmup runs (its progress says what compiles)."""
    with _lock:
        _held[0] += 1
    try:
        yield
    finally:
        with _lock:
            _held[0] -= 1


# ---------------------------------------------------------------------------------------------------
# Tiny problems for every implementation
# ---------------------------------------------------------------------------------------------------
def _arrays(dtype: str, *shapes):
    import numpy as np
    return [np.zeros(s, dtype=dtype) for s in shapes]


#: conv problems (input C, spatial sizes; output channels K; kernel; keyword arguments): the general
#: case first, then the shapes specialised kernels want (depthwise 3x3 stride 1 and 2, any depthwise,
#: pointwise), then larger ones for tiled kernels that want more outputs or channels, then a dilated one
_CONV = (
    (4, 6, 4, 3, {"padding": 1}),
    (4, 6, 4, 3, {"padding": 1, "groups": 4}),
    (4, 6, 4, 3, {"padding": 1, "stride": 2, "groups": 4}),
    (4, 6, 4, 5, {"padding": 2, "groups": 4}),
    (16, 4, 16, 3, {"padding": 1, "groups": 16}),          # a block of 16 channels (depthwise-cblock)
    (4, 6, 4, 1, {}),
    (8, 6, 8, 2, {"stride": 2}),
    (16, 8, 64, 3, {"padding": 1}),
    (64, 8, 128, 3, {"padding": 1}),
    (4, 8, 4, 3, {"padding": 2, "dilation": 2}),
)
#: fixed-window pools (kernel, keyword arguments): pairs, any window, global
_POOL = ((2, {"stride": 2}), (3, {"stride": 1, "padding": 1}), (6, {}), (3, {"stride": 2, "ceil_mode": True}))
#: adaptive pools (output size from a 6-wide input): pairs, any window, global
_ADAPTIVE = (3, 4, 1)
#: channels of the pools' 6-wide inputs: 16, two of the global average pool's blocks of 8 planes, so that
#: its warm run (``NumbaImpl.warm``) splits it and launches its parallel twin
POOL_CHANNELS = 16


def _conv_problems(op: str, nd: int, dtype: str, n: int):
    from ._spec import conv_input_spec, conv_spec, conv_weight_spec
    for C, size, K, k, kw in _CONV:
        g = kw.get("groups", 1)
        sizes = (size,) * nd
        x, w = _arrays(dtype, (n, C) + sizes, (K if g == 1 else C, C // g) + (k,) * nd)
        fwd = conv_spec(x, w, spatial_dims=nd, **kw)
        if op == "conv":
            yield fwd
            continue
        dy, = _arrays(dtype, fwd.output_shape)
        if op == "conv_input":
            yield conv_input_spec(x.shape, w, dy, spatial_dims=nd, **kw)
        else:
            yield conv_weight_spec(x, w.shape, dy, spatial_dims=nd, **kw)


def _pool_problems(op: str, nd: int, dtype: str, n: int):
    from ._spec import pool_grad_spec, pool_spec, unpool_spec
    kind = op.replace("_pool", "").replace("_backward", "")
    x, = _arrays(dtype, (n, POOL_CHANNELS) + (6,) * nd)
    if kind.startswith("adaptive"):
        settings = [{"output_size_": (o,) * nd} for o in _ADAPTIVE]
    else:
        settings = [dict(kernel_size=k, **kw) for k, kw in _POOL]
    for args in settings:
        fwd = pool_spec("max" if op == "max_unpool" else kind, x, spatial_dims=nd, **args)
        if op.endswith("_backward"):
            dy, = _arrays(dtype, fwd.output_shape)
            args = {k: v for k, v in args.items() if k != "output_size_"}
            yield pool_grad_spec(kind, dy, x, spatial_dims=nd, **args)
        elif op == "max_unpool":
            if "padding" in args or "ceil_mode" in args:
                continue
            y, = _arrays(dtype, fwd.output_shape)
            idx, = _arrays("int64", fwd.output_shape)
            yield unpool_spec(y, idx, args["kernel_size"], args.get("stride"), spatial_dims=nd)
        else:
            yield fwd


def _fold_problems(op: str, nd: int, dtype: str, n: int):
    from ._spec_fold import fold_spec, unfold_spec
    k, size = (2,) * nd, (4,) * nd
    if op == "unfold":
        x, = _arrays(dtype, (n, 2) + size)
        yield unfold_spec(x, k)
    else:
        cols, = _arrays(dtype, (n, 2 * 2 ** nd, 3 ** nd))
        yield fold_spec(cols, size, k)


#: the batch sizes every implementation is warmed with: an implementation may run other kernels for one
#: image than for several (numba's im2col packs one image by rows, several side by side in a tile)
BATCHES = (1, 2)


def problems(op: str, nd: int, dtype: str, n: int = 1):
    """Tiny specs of dispatch op ``op`` (``conv``, ``max_pool_backward``, ...) with ``nd`` spatial
    dimensions and a batch of ``n``, smallest first; empty for an op it does not know."""
    if op in ("conv", "conv_input", "conv_weight"):
        return _conv_problems(op, nd, dtype, n)
    if op in ("unfold", "fold"):
        return _fold_problems(op, nd, dtype, n)
    if op.endswith(("pool", "pool_backward")) or op == "max_unpool":
        return _pool_problems(op, nd, dtype, n)
    return iter(())


def warm_dims(impl, nd: Optional[int] = None) -> Optional[int]:
    """The problem dimensions to warm ``impl`` with: ``nd`` when it takes it (None when not), else 2
    where it takes 2 (1-D problems run the 2-D kernels with H = 1), else its first."""
    dims = tuple(impl.spatial_dims)
    if nd is not None:
        return nd if nd in dims else None
    return 2 if 2 in dims else dims[0]


def problems_for(impl, dtype: str, nd: Optional[int] = None):
    """([per batch size of :data:`BATCHES`, the first tiny problem of ``impl``'s op, in ``dtype``, ``nd``-D
    or :func:`warm_dims`'s, that ``impl`` supports], None) or, when it supports none, ([], its reasons
    for the first)."""
    from . import _dispatch
    d = warm_dims(impl, nd)
    found, first = [], None
    for n in BATCHES if d is not None else ():
        for spec in problems(impl.op, d, dtype, n):
            why = _dispatch.reasons(impl, spec)
            if not why:
                found.append(spec)
                break
            first = first or why
    return (found, None) if found else ([], ", ".join(first or [f"no tiny {impl.op} problem of {d}-D"]))


# ---------------------------------------------------------------------------------------------------
# What each backend compiles, counted
# ---------------------------------------------------------------------------------------------------
def _numba_dispatchers() -> list:
    """Every Numba dispatcher of fastconv's kernel modules imported so far (inline helpers included:
    they never get a signature of their own)."""
    from ._backends import _numba_common
    seen, out = set(), []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("fastconv._backends._numba") or mod is None:
            continue
        for d in _numba_common.dispatchers(vars(mod)):
            if id(d) not in seen and d.py_func.__module__ == name:
                seen.add(id(d))
                out.append(d)
    return out


def _sig_text(sig) -> str:
    return "(" + ", ".join(str(t) for t in sig) + ")"


class _Ledger:
    """One backend's compile units (Numba: kernel signatures; cuda-emu: kernel files; cuda: kernel files
    per dtype) and how each came to be loaded: ``state()`` maps each loaded unit to "compiled" or "cached"
    ("cached": loaded from the disk cache); a unit loaded before the first state() stays "in memory"."""
    unit = "kernels"
    cache_name = "cache"

    def state(self) -> Dict[str, str]:  # pragma: no cover - interface
        raise NotImplementedError

    def cache(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class _NumbaLedger(_Ledger):
    unit = "Numba kernel signatures"

    def state(self) -> Dict[str, str]:
        out = {}
        for d in _numba_dispatchers():
            stats = d.stats
            for sig in list(d.overloads):
                how = "compiled" if stats.cache_misses.get(sig) else "cached" if stats.cache_hits.get(sig) \
                    else "in memory"
                out[f"{d.py_func.__name__}{_sig_text(sig)}"] = how
        return out

    def cache(self) -> str:
        from ._backends import _numba_common
        path, why = _numba_common.cache_location(_numba_common.__file__)
        return path if why is None else f"none ({why})"

    def unreached(self, dtypes: Sequence[str]) -> List[str]:
        """Kernels launched from Python with no signature of a warmed dtype: no run reached them (larger
        problems do). Those are the kernel index's (``_numba_kernels``: KERNELS, GRAD_KERNELS, KERNELS_3D,
        WINOGRAD_KERNELS, the CHUNKED kernels' ``_prange`` twins)
        and every other dispatcher no kernel calls; a helper that kernels call (inline, or named in another
        kernel's code) compiles into its callers, and their disk cache holds it, so it is not asked."""
        from ._backends import _numba_kernels as k
        ds = _numba_dispatchers()
        launched = (set(k.KERNELS) | set(k.GRAD_KERNELS) | set(k.KERNELS_3D) | set(k.WINOGRAD_KERNELS)
                    | {n + "_prange" for n in k.CHUNKED})
        called = {n for d in ds for n in d.py_func.__code__.co_names if n != d.py_func.__name__}
        out = []
        for d in ds:
            name = d.py_func.__name__
            if name not in launched and (d.targetoptions.get("inline") == "always" or name in called):
                continue
            have = {str(getattr(t, "dtype", "")) for sig in d.overloads for t in sig}
            missing = [dt for dt in dtypes if dt not in have]
            if missing:
                out.append(f"{d.py_func.__name__} ({', '.join(missing)})")
        return sorted(out)


class _EmuLedger(_Ledger):
    unit = "emulated kernel files"

    def __init__(self):
        self._how: Dict[str, str] = {}

    def state(self) -> Dict[str, str]:
        from ._backends import cuda_emu
        for fname, mod in list(cuda_emu._modules.items()):
            if fname not in self._how:
                self._how[fname] = "compiled" if getattr(mod, "compiled", False) else "cached"
        return dict(self._how)

    def cache(self) -> str:
        return _config.emu_cache_dir()


class _CudaLedger(_Ledger):
    unit = "CUDA modules (kernel file, dtype)"

    def state(self) -> Dict[str, str]:
        from ._backends import cuda
        return {f"{fname} ({dtype}) on device {dev}": how for (dev, fname, dtype), how in list(cuda.built.items())}

    def cache(self) -> str:
        return f"CuPy's {_config.cupy_cache_dir()}"


def _ledger(backend: str) -> _Ledger:
    return {"numba": _NumbaLedger, "cuda-emu": _EmuLedger, "cuda": _CudaLedger}[backend]()


# ---------------------------------------------------------------------------------------------------
# Choosing what to warm
# ---------------------------------------------------------------------------------------------------
_OP_FORMS = (
    (re.compile(r"conv(?P<nd>[123])d_(?P<g>input|weight)"), lambda m: f"conv_{m['g']}"),
    (re.compile(r"conv_transpose(?P<nd>[123])d"), lambda m: "conv_input"),
    (re.compile(r"(?P<op>[a-z_]+?)(?P<nd>[123])d"), lambda m: m["op"]),
    (re.compile(r"(?P<op>[a-z_]+)"), lambda m: m["op"]),
)


def parse_op(name: str, known: Sequence[str]) -> Tuple[str, Optional[int]]:
    """``--op NAME`` as (dispatch op, spatial dimensions or None for all): a dispatch op (``max_pool``,
    ``conv_weight``), one with a dimension (``max_pool2d``, ``conv3d``), or a public name
    (``conv_transpose2d``, ``conv2d_input``: grad.conv2d_input). ValueError naming the op otherwise."""
    for pattern, op_of in _OP_FORMS:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        op = op_of(m)
        if op in known:
            nd = m.groupdict().get("nd")
            return op, int(nd) if nd else None
    raise ValueError(f"--op must name an op of the backend ({', '.join(sorted(known))}), optionally with its "
                     f"dimensions (max_pool2d, conv3d), got {name!r}")


@dataclasses.dataclass
class Item:
    """One run of warmup: ``impl`` on ``spec`` (already in the dtype it runs in)."""
    impl: object
    spec: object

    @property
    def label(self) -> str:
        return f"{self.impl.name} {self.spec.dtype} {self.spec.spatial_dims}-D N={self.spec.N}"


@dataclasses.dataclass
class Plan:
    backend: str
    items: List[Item]
    unfit: List[Tuple[str, str]]   # (implementation and dtype, why) that refused every tiny problem
    dtypes: Tuple[str, ...]  # the storage dtypes the runs compile


def plan(backend: str, ops: Optional[Sequence[str]] = None, dtypes: Optional[Sequence[str]] = None) -> Plan:
    """What warming ``backend`` runs: every implementation (of ``ops`` when given: see :func:`parse_op`),
    for each dtype of ``dtypes`` (default every dtype it runs natively) in the dtype it runs that one in."""
    from . import _dispatch
    impls = list(_dispatch.backend_module(backend).implementations())
    known = sorted({i.op for i in impls})
    wanted = [parse_op(o, known) for o in ops] if ops else None
    items, unfit, run_dtypes = [], [], []
    for impl in impls:
        if wanted is None:
            dims = [None]
        else:
            dims = [nd for op, nd in wanted if op == impl.op]
            if not dims:
                continue
            if None in dims:
                dims = [None]
        for dt in dict.fromkeys(impl.compute_dtype(d) for d in (dtypes or impl.dtypes)):
            if dt not in impl.dtypes:
                continue
            for nd in dict.fromkeys(dims):
                if warm_dims(impl, nd) is None:
                    continue                     # --op max_pool3d and a 2-D implementation
                specs, why = problems_for(impl, dt, nd)
                if not specs:
                    unfit.append((f"{impl.name} ({dt})", why))
                    continue
                items += [Item(impl, spec) for spec in specs]
                if dt not in run_dtypes:
                    run_dtypes.append(dt)
    return Plan(backend, items, unfit, tuple(run_dtypes))


def run_item(backend: str, item: Item) -> None:
    """Run one implementation once on its tiny problem, with the inputs the tuner would make; where the
    implementation has a runner of its own (a repeat call's fast path: the numba backend's serial twins
    for problems too small to split), that too."""
    from . import _dispatch, _tune
    kind = _dispatch.BACKENDS[backend].array_kind
    if kind == "cupy":
        import cupy as xp
    else:
        import numpy as xp
    inputs = _tune.synthetic_inputs(item.spec, xp)
    item.impl.run(item.spec, *inputs)
    if type(item.impl).runner is not _dispatch.Impl.runner:
        item.impl.runner(item.spec)(*inputs)
    warm = getattr(item.impl, "warm", None)       # (numba: the launches of problems big enough to split)
    if warm is not None:
        warm(item.spec, *inputs)
    if kind == "cupy":
        xp.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------------
class Progress:
    """A one-line ``\\r`` bar on a terminal; one plain line per finished run elsewhere (a log, a pipe)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def _bar(self, n: int) -> str:
        filled = 24 * n // max(1, self.total)
        return f"[{'#' * filled}{'.' * (24 - filled)}] {n}/{self.total}"

    def start(self, label: str) -> None:
        if self.tty:
            self._line(f"{self._bar(self.done)} {label}")

    def finish(self, label: str, note: str) -> None:
        self.done += 1
        if self.tty:
            self._line(f"{self._bar(self.done)} {label}: {note}")
        else:
            self.stream.write(f"warmup [{self.done}/{self.total}] {label}: {note}\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        cols = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = text[:cols]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self._width = len(text)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------------------------
# Warmup
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """What warming one backend did. ``units``: each compile unit this run loaded, "compiled" or "cached"
    (from the disk cache); ``failed``: (run, error); ``unfit``: (implementation, why) refusing every tiny
    problem (an implementation that never takes a dtype, a variant that no problem of its op reaches);
    ``unreached``: numba kernels the runs did not reach (larger problems reach them, or non-finite values:
    the Winograd weight gradient's direct re-sum)."""
    backend: str
    runs: int
    units: Dict[str, str]
    unit: str
    cache: str
    seconds: float
    failed: List[Tuple[str, str]]
    unfit: List[Tuple[str, str]]
    unreached: List[str]

    @property
    def compiled(self) -> int:
        return sum(1 for v in self.units.values() if v == "compiled")

    @property
    def cached(self) -> int:
        return sum(1 for v in self.units.values() if v == "cached")

    def summary(self) -> str:
        lines = [f"{self.backend}: {self.runs} runs, {len(self.units)} {self.unit} loaded: {self.compiled} "
                 f"compiled, {self.cached} from the cache, in {self.seconds:.1f} s; cache: {self.cache}"]
        if not self.units and self.runs:
            lines[0] += " (everything was already loaded in this process)"
        groups: Dict[str, List[str]] = {}        # refusals with the same reasons are named together
        for label, why in self.unfit:
            groups.setdefault(why, []).append(label)
        for why, labels in groups.items():
            lines.append(f"  not run (refused every tiny problem: {why}): {', '.join(labels)}")
        if self.unreached:
            lines.append(f"  reached only by larger problems or non-finite values (compiled on first use): "
                         f"{', '.join(self.unreached)}")
        for label, err in self.failed:
            lines.append(f"  FAILED {label}: {err}")
        return "\n".join(lines)


def warmup(backend: str, ops=None, dtypes=None, progress: Optional[Callable[[int], Progress]] = None) -> Result:
    """Compile (or load from the disk cache) every kernel ``backend`` may run: see :func:`plan`. The caller
    checks availability. ``progress(total)`` makes the progress display (default: none)."""
    p = plan(backend, ops, dtypes)
    ledger = _ledger(backend)
    before = ledger.state()
    bar = progress(len(p.items)) if progress else None
    failed = []
    start = time.perf_counter()
    with _holding():
        for item in p.items:
            if bar:
                bar.start(item.label)
            t, seen = time.perf_counter(), ledger.state()
            try:
                run_item(backend, item)
                note = ""
            except Exception as e:          # report every failure, warm the rest
                failed.append((item.label, f"{type(e).__name__}: {e}"))
                note = "FAILED "
            new = [v for k, v in ledger.state().items() if k not in seen]
            note += (f"{new.count('compiled')} compiled, {new.count('cached')} from the cache" if new else
                     "nothing new to load")
            note += f", {time.perf_counter() - t:.1f} s"
            if bar:
                bar.finish(item.label, note)
    if bar:
        bar.close()
    after = ledger.state()
    units = {k: v for k, v in after.items() if k not in before}
    unreached = ledger.unreached(p.dtypes) if isinstance(ledger, _NumbaLedger) and not ops else []
    return Result(backend, len(p.items), units, ledger.unit, ledger.cache(), time.perf_counter() - start, failed,
                  p.unfit, unreached)


def main(backends: Optional[Sequence[str]], dtypes: Optional[Sequence[str]], ops: Optional[Sequence[str]],
         stream=None) -> int:
    """``fastconv warmup``: 0 when every run worked, 1 when one failed, 2 for a usage error (an unavailable
    backend named, an unknown op, no backend to warm)."""
    from . import _dispatch
    err = stream if stream is not None else sys.stderr
    if backends:
        chosen = list(dict.fromkeys(backends))
        for b in chosen:
            why = _dispatch.availability(b)
            if why is not None:
                err.write(f"fastconv warmup: backend {b!r} is not available: {why}\n")
                return 2
    else:
        whys = {b: _dispatch.availability(b) for b in DEFAULT_BACKENDS}
        chosen = [b for b, why in whys.items() if why is None]
        for b, why in whys.items():
            if why is not None and chosen:
                err.write(f"warmup: {b} skipped: {why}\n")
        if not chosen:
            err.write("fastconv warmup: no backend that compiles is available here ("
                      + "; ".join(f"{b}: {why}" for b, why in whys.items()) + ")\n")
            return 2
    try:
        for b in chosen:
            plan(b, ops, dtypes)        # an unknown --op is a usage error before anything runs
    except ValueError as e:
        err.write(f"fastconv warmup: {e}\n")
        return 2
    results = []
    for b in chosen:
        err.write(f"warmup: {b}\n")
        err.flush()
        results.append(warmup(b, ops, dtypes, progress=lambda n: Progress(n, err)))
    for r in results:
        print(r.summary())
    return 1 if any(r.failed for r in results) else 0
