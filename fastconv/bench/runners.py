"""Runners: fastconv backends (from the registry) and the peers they are measured against.

Backends come from :mod:`fastconv._dispatch`, never from a list here: every registered backend whose arrays
live on the chosen device, with every algorithm its ``implementations()`` offer. ``"numpy"`` (the oracle;
it judges, it is not a contender) and ``"cuda-emu"`` (an emulator: correct and very slow) are left out
unless named. Peers are imported lazily; a missing peer is reported, not an error.

A conv runner runs the forward convolution and both of its gradients with its algorithm, a pool runner
every pool and pool gradient through dispatch; a backend without an implementation of an op reports that
case as unsupported, with the reason. The torch peer computes the gradients with the kernels autograd runs
for them: ``torch.nn.grad.conv{1,2}d_input/_weight`` (``aten.convolution_backward``; cuDNN on the GPU) and
``aten.max_pool2d_with_indices_backward``, ``avg_pool2d_backward``, ``_adaptive_avg_pool2d_backward``,
``adaptive_max_pool2d_backward`` (1-D pools as 2-D pools of height 1, as torch computes them), given the
same forward indices as fastconv; asymmetric padding as in the forward (the padded input's gradient,
cropped; the weight gradient of the padded input).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import _config, _dispatch, _timing
from ..testing import to_numpy
from .cases import Case, case_spec

#: backends never timed unless named: the oracle (the judge) and the emulator (correct but very slow)
EXCLUDED_BY_DEFAULT = ("numpy", "cuda-emu")


def device_of_backend(name: str) -> str:
    return "gpu" if _dispatch.BACKENDS[name].array_kind == "cupy" else "cpu"


class Runner:
    """Something that runs a case on one device. Subclasses set ``kind``, ``name``, ``algo``, ``device``."""

    kind = "fastconv"
    name = ""
    algo = ""
    device = "cpu"
    family = "any"   # the cases it runs: "conv", "pool" or "any"

    def runs(self, case: Case) -> bool:
        return self.family == "any" or (self.family == "conv") == case.is_conv

    @property
    def label(self) -> str:
        return f"{self.name}:{'pools' if self.family == 'pool' else self.algo}"

    def unavailable(self) -> Optional[str]:
        """None when it can run here, else why not."""
        return None

    def unsupported(self, case: Case, spec) -> Optional[str]:
        """None when it runs this case, else why not."""
        return None

    def algo_for(self, case: Case, spec) -> str:
        return self.algo

    def convert(self, arrays):
        return arrays

    def function(self, case: Case) -> Callable:
        raise NotImplementedError

    def network_ops(self):
        """How this runner runs each layer of a network (:class:`~.networks.Ops`)."""
        raise NotImplementedError

    def to_numpy(self, out):
        return to_numpy(out)

    def sync(self) -> None:
        pass

    def sample(self, fn: Callable[[], object], repeat: int) -> List[float]:
        """Seconds per call of ``fn()``, ``repeat`` samples: CUDA events on the GPU (both fastconv's CuPy and
        torch run on the default stream the events are recorded on), else wall time with :meth:`sync` inside
        the timed region."""
        if self.device == "gpu":
            return _timing.event_times(fn, repeat)
        return _timing.wall_times(fn, repeat, sync=self.sync)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class FastconvRunner(Runner):
    kind = "fastconv"

    def __init__(self, backend: str, algo: str, family: str = "conv"):
        self.name, self.algo, self.family = backend, algo, family
        self.device = device_of_backend(backend)
        self.array_kind = _dispatch.BACKENDS[backend].array_kind

    def unavailable(self):
        return _dispatch.availability(self.name)

    def _algo(self, spec) -> str:
        return self.algo if spec.op in _dispatch.CONV_OPS else "auto"

    def _supported_impls(self, spec):
        return _dispatch.without_fallbacks([i for i in _dispatch.candidates(spec, self.name, self._algo(spec))
                                            if not _dispatch.reasons(i, spec)])

    def unsupported(self, case, spec):
        try:
            if case.is_network:          # every op of the network must run, each with its own reasons
                for i, layer, s in spec.op_specs:
                    why = self._unsupported(s)
                    if why:
                        return f"layer {i} ({layer.kind}): {why}"
                return None
            return self._unsupported(spec)
        except Exception as e:  # a backend whose support check fails: reported, the run goes on
            return f"support check failed: {type(e).__name__}: {e}"

    def _unsupported(self, spec):
        cands = _dispatch.candidates(spec, self.name, self._algo(spec))
        if not cands:
            return f"no {spec.op} implementation with algo={self._algo(spec)!r} on backend {self.name!r}"
        if self._supported_impls(spec):
            return None
        return "; ".join(f"{i.name}: {', '.join(_dispatch.reasons(i, spec))}" for i in cands)

    def algo_for(self, case, spec):
        """Pools have no ``algo=`` argument: report the algorithm dispatch picks when only one can. A
        network's convolutions run with the runner's algorithm."""
        if spec.op in _dispatch.CONV_OPS or case.is_network:
            return self.algo
        ok = self._supported_impls(spec)
        return ok[0].algo if len(ok) == 1 else "auto"

    def chosen(self, spec, weight=None) -> Optional[str]:
        """The implementation dispatch runs for ``spec`` with ``algo="auto"`` (asked after the timing, so a
        measured choice is already cached; ``weight``: the spec's padding operand, for the non-finite rule),
        or None when it cannot be asked. A network: its convolutions' and pools' choices in order, joined
        by ``; ``."""
        if spec.op == "network":
            names = [self.chosen(s) if s.op not in _dispatch.CONV_OPS or self.algo == "auto" else
                     f"algo={self.algo}" for _, _, s in spec.op_specs]
            return "; ".join(n or "?" for n in names)
        if spec.op in _dispatch.CONV_OPS and self.algo != "auto":
            return None
        try:
            return _dispatch.select(spec, self.name, "auto", weight=weight).name
        except Exception:
            return None

    def measured(self, spec) -> Optional[Dict[str, float]]:
        """The tuner's seconds per candidate behind :meth:`chosen`'s pick (algo "auto", one op), or None
        where it picked by rule or cannot be asked."""
        if spec.op == "network" or self.algo != "auto":
            return None
        try:
            return _dispatch.measured_times(spec, self.name, "auto")
        except Exception:
            return None

    def convert(self, arrays):
        if self.array_kind == "cupy":
            import cupy
            return tuple(cupy.asarray(a) for a in arrays)
        return arrays

    def function(self, case):
        return case.function(self.name, self.algo if case.is_conv else "auto")

    def network_ops(self):
        from .networks import FastconvOps
        return FastconvOps(self.name, self.algo)

    def sync(self):
        if self.array_kind == "cupy":
            import cupy
            cupy.cuda.get_current_stream().synchronize()


class TorchRunner(Runner):
    """torch.nn.functional, the op of the same name; CPU tensors, or CUDA tensors through cuDNN (fp32, TF32
    off, ``cudnn.benchmark`` on so that cuDNN picks its fastest algorithm during warm-up)."""

    kind = "peer"

    def __init__(self, device: str):
        self.device = device
        self.name = "torch" if device == "cpu" else "torch-cuda"
        self.algo = "aten" if device == "cpu" else "cudnn"

    def unavailable(self):
        try:
            import torch
        except ImportError as e:
            return f"torch is not installed ({e})"
        if self.device == "gpu":
            if not torch.cuda.is_available():
                return f"torch {torch.__version__} has no usable CUDA device"
            if not torch.backends.cudnn.is_available():
                return "torch is built without cuDNN"
        return None

    def settings(self) -> dict:
        import torch
        out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if self.device == "gpu":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
            out.update(cudnn=torch.backends.cudnn.version(), allow_tf32=False, cudnn_benchmark=True,
                       half_note="with float16 tensors cuDNN may use tensor cores and choose its own "
                                 "accumulation precision; allow_tf32=False affects float32 only")
        return out

    def algo_for(self, case, spec):
        return self.algo if case.is_conv else "aten"

    def convert(self, arrays):
        import torch
        self.settings()
        out = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        return tuple(t.cuda() for t in out) if self.device == "gpu" else out

    def function(self, case):
        if case.is_network:
            return case.program(self.network_ops())
        if case.grad is not None:
            return self._backward(case)
        import torch
        import torch.nn.functional as F
        fn, kw = getattr(F, case.op), dict(case.kwargs)
        pad = kw.get("padding")
        if case.is_conv and isinstance(pad, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in pad):
            # torch has no asymmetric padding: F.pad (last dimension first) then an unpadded conv
            flat = tuple(v for pair in reversed(pad) for v in pair)
            kw["padding"] = 0

            def call(x, *rest):
                with torch.no_grad():
                    return fn(F.pad(x, flat), *rest, **kw)
            return call

        def call(*a):
            with torch.no_grad():
                return fn(*a, **kw)
        return call

    def network_ops(self):
        from .networks import TorchOps
        return TorchOps()

    def _backward(self, case):
        """The gradient of the case's forward call, by the kernel autograd runs for it (module docstring)."""
        import torch
        spec = case_spec(case)
        call = (_torch_conv_grad if case.is_conv else _torch_pool_grad)(case, spec)

        def run(*a):
            with torch.no_grad():
                return call(*a)
        return run

    def to_numpy(self, out):
        return out.detach().cpu().numpy()

    def sync(self):
        if self.device == "gpu":
            import torch
            torch.cuda.synchronize()


def _torch_conv_grad(case: Case, spec):
    """conv_input (dy, w) or conv_weight (x, dy) through ``torch.nn.grad``, padding from the spec."""
    import torch.nn.functional as F
    from torch.nn import grad as tgrad
    nd = case.spatial_dims
    pads = ((spec.pad_top, spec.pad_bottom), (spec.pad_left, spec.pad_right))[2 - nd:]
    stride, dil = (spec.stride_h, spec.stride_w)[2 - nd:], (spec.dil_h, spec.dil_w)[2 - nd:]
    symmetric = all(lo == hi for lo, hi in pads)
    padding = tuple(lo for lo, _ in pads) if symmetric else (0,) * nd
    g, rest = spec.groups, tuple(case.shape[1:])
    if case.grad == "input":
        fn = getattr(tgrad, f"conv{nd}d_input")
        if symmetric:
            return lambda dy, w: fn((dy.shape[0],) + rest, w, dy, stride, padding, dil, g)
        # torch has no asymmetric padding: the gradient of the padded input, cropped to the input
        padded = rest[:1] + tuple(n + lo + hi for n, (lo, hi) in zip(rest[1:], pads))
        crop = (Ellipsis,) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(rest[1:], pads))
        return lambda dy, w: fn((dy.shape[0],) + padded, w, dy, stride, padding, dil, g)[crop]
    fn, size = getattr(tgrad, f"conv{nd}d_weight"), tuple(case.weight)
    if symmetric:
        return lambda x, dy: fn(x, size, dy, stride, padding, dil, g)
    flat = tuple(v for pair in reversed(pads) for v in pair)       # F.pad: last dimension first
    return lambda x, dy: fn(F.pad(x, flat), size, dy, stride, padding, dil, g)


def _torch_pool_grad(case: Case, spec):
    """A pool's gradient (dy, x[, indices]) by the 2-D aten backward kernel (1-D: height 1)."""
    import torch
    aten = torch.ops.aten
    one_d = case.spatial_dims == 1

    def four(t):
        return t.unsqueeze(2) if one_d else t

    def back(t):
        return t.squeeze(2) if one_d else t
    k, st = [spec.R, spec.S], [spec.stride_h, spec.stride_w]
    pad, dil = [spec.pad_top, spec.pad_left], [spec.dil_h, spec.dil_w]     # bench cases pad symmetrically
    kind = case.pool_kind
    if kind == "max":
        return lambda dy, x, idx: back(aten.max_pool2d_with_indices_backward(
            four(dy), four(x), k, st, pad, dil, spec.ceil_mode, four(idx)))
    if kind == "avg":
        return lambda dy, x: back(aten.avg_pool2d_backward(four(dy), four(x), k, st, pad, spec.ceil_mode,
                                                           spec.count_include_pad, spec.divisor_override))
    if kind == "adaptive_max":
        return lambda dy, x, idx: back(aten.adaptive_max_pool2d_backward(four(dy), four(x), four(idx)))
    return lambda dy, x: back(aten._adaptive_avg_pool2d_backward(four(dy), four(x)))


class CupyxRunner(Runner):
    """cupyx has no op of the same definition, so this peer only reports why it is absent."""

    kind = "peer"
    name, algo, device = "cupyx", "-", "gpu"
    REASON = ("cupyx has no NCHW convolution or pooling with these semantics: cupyx.scipy.ndimage filters "
              "correlate one whole array with boundary modes (no channel reduction, groups or stride), and "
              "CuPy v14 removed its cuDNN bindings (cupyx.cudnn)")

    def unavailable(self):
        return self.REASON


PEERS = {"cpu": (lambda: TorchRunner("cpu"),), "gpu": (lambda: TorchRunner("gpu"), CupyxRunner)}


def backend_algos(backend: str, ops: Sequence[str] = ("conv",)) -> List[str]:
    """The algorithms a backend implements for the convolution ops ``ops`` (default the forward), from its
    ``implementations()``, in priority order (one entry per algorithm however many variants it has)."""
    algos: List[str] = []
    for impl in _dispatch.backend_module(backend).implementations():
        if impl.op in ops and impl.algo not in algos:
            algos.append(impl.algo)
    return algos


def backends_for(device: str, names: Optional[Sequence[str]] = None) -> List[str]:
    """Registered backends whose arrays live on ``device`` (all of them but EXCLUDED_BY_DEFAULT), or the
    named ones (checked against the registry)."""
    if names:
        for n in names:
            _dispatch.check_backend_name(n)
        return list(names)
    return [n for n in _dispatch.BACKENDS if device_of_backend(n) == device and n not in EXCLUDED_BY_DEFAULT]


def default_device() -> str:
    """"gpu" when a GPU backend of the registry is usable here, else "cpu"."""
    for name in backends_for("gpu"):
        if _dispatch.availability(name) is None:
            return "gpu"
    return "cpu"


def fastconv_runners(device: str, backends: Optional[Sequence[str]] = None,
                     algos: Optional[Sequence[str]] = None, direction: str = "forward") -> List[FastconvRunner]:
    """Per backend: one conv runner per algorithm it implements (filtered by ``algos``; "auto" only when
    asked; "all": every one it implements and "auto"), and one pool runner (pools have no ``algo=``
    argument: dispatch picks). With a ``direction`` other than "forward", the algorithms of the forward and
    of both gradients count, so that every conv case of a backend gets a row even where it has no gradient
    implementation yet. An algorithm named in ``algos`` that a backend does not implement still gets a
    runner, whose cases are reported as unsupported with the reason. Unavailable backends are included:
    they report why."""
    out = []
    every = bool(algos) and "all" in algos
    ops = ("conv",) if direction == "forward" else _dispatch.CONV_OPS
    for b in backends_for(device, backends):
        try:
            offered = backend_algos(b, ops)
        except ImportError:
            offered = []
        chosen = [a for a in offered if not algos or every or a in algos]
        chosen += [a for a in (algos or ()) if a not in chosen and a not in ("auto", "all")]
        if algos and ("auto" in algos or every):
            chosen.append("auto")
        out += [FastconvRunner(b, a, "conv") for a in chosen]
        out.append(FastconvRunner(b, "auto", "pool"))
    return out


def peer_runners(device: str, names: Optional[Sequence[str]] = None) -> List[Runner]:
    peers = [make() for make in PEERS[device]]
    return [p for p in peers if not names or p.name in names]


#: what the report keeps of each pool threadpoolctl finds
POOL_FIELDS = ("user_api", "internal_api", "prefix", "version", "num_threads", "filepath")
#: the BLAS thread variables recorded beside the pools (read, never changed)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _limit_threads(n: Optional[int], runners: Sequence[Runner], undo: list) -> dict:
    """Give numba, torch and the BLAS pools ``n`` threads (when ``n``), appending to ``undo`` what puts each
    back; returns what each runs with now (the report's ``settings.threads``)."""
    out = {"requested": n}
    names = {r.name for r in runners}
    if "numba" in names:
        import numba
        if n:
            before = numba.get_num_threads()
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            undo.append(lambda: numba.set_num_threads(before))
        out["numba"] = numba.get_num_threads()
    if "torch" in names:
        import torch
        if n:
            before_t = torch.get_num_threads()
            torch.set_num_threads(n)
            undo.append(lambda: torch.set_num_threads(before_t))
        out["torch"] = torch.get_num_threads()
    out["blas"] = _limit_blas(n, undo)
    return out


def _limit_blas(n: Optional[int], undo: list) -> dict:
    """The BLAS pools loaded in this process (NumPy's, torch's: OpenBLAS, MKL, BLIS), limited to ``n``
    threads through threadpoolctl (an optional dependency, in the ``bench`` extra) when ``n``: ``limited``,
    ``reason`` (why not, when not), ``pools`` (threadpoolctl's ``threadpool_info()`` afterwards, every pool
    it finds, OpenMP ones included; None without threadpoolctl) and ``env`` (the BLAS thread variables set)."""
    env = {k: _config.get(k) for k in BLAS_ENV if _config.get(k) is not None}
    try:
        import threadpoolctl
    except ImportError:
        return {"limited": False, "pools": None, "env": env,
                "reason": "threadpoolctl is not installed (pip install threadpoolctl, or the bench extra): the "
                          "BLAS pools keep the size they took when NumPy and torch loaded (see env)"}
    if n:
        limiter = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        undo.append(limiter.restore_original_limits)
    pools = [{k: p.get(k) for k in POOL_FIELDS} for p in threadpoolctl.threadpool_info()]
    return {"limited": bool(n), "pools": pools, "env": env,
            "reason": None if n else "no thread count given: the pools' own defaults"}


@contextlib.contextmanager
def limit_threads(n: Optional[int], runners: Sequence[Runner]):
    """``with limit_threads(n, runners) as threads:`` numba (when a runner is numba's), torch (when the
    torch peer runs) and every BLAS pool run with ``n`` threads inside the block and get their own counts
    back after it; ``threads`` is what each runs with inside (see :func:`_limit_blas`). ``n`` None: nothing
    is changed, the counts are recorded."""
    undo: list = []
    try:
        yield _limit_threads(n, runners, undo)
    finally:
        for f in reversed(undo):
            f()


def set_threads(n: Optional[int], runners: Sequence[Runner]) -> dict:
    """:func:`limit_threads` for the rest of the process (a benchmark session): nothing is put back."""
    return _limit_threads(n, runners, [])


def threads_note(threads: dict) -> Optional[str]:
    """The line the run prints when a thread count was asked for and the BLAS pools could not be limited
    (None otherwise)."""
    n, blas = threads.get("requested"), threads.get("blas") or {}
    if not n or blas.get("limited"):
        return None
    others = " and ".join(k for k in ("numba", "torch") if k in threads)
    return (f"note: --threads {n} does not limit the BLAS pools: {blas.get('reason')}"
            + (f" ({others} run with {n})" if others else ""))
