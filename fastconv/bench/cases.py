"""Cases: one call of a public op with fixed shapes and arguments, and the sweeps that generate them.

A sweep varies one parameter at a time around a base problem (stride, padding, dilation, kernel size,
groups, batch for convs; the matching parameters of every pooling op). Standard-layer cases come from the
shape tables (:mod:`.layers`); which cases a suite runs is :mod:`.suites`' business.

Every forward case has backward twins (:func:`backward_cases`): a convolution's data gradient
(``fastconv.grad.conv2d_input``, spec op ``conv_input``) and weight gradient (``conv2d_weight``,
``conv_weight``), a pool's gradient (``fastconv.grad.max_pool2d`` ..., ``max_pool_backward`` ...). A twin
keeps the forward case's op, shapes and arguments and names the gradient in ``grad`` ("input" or
"weight"); its name is the forward name with ``:<spec op>`` appended (``resnet50/res2_3x3:conv_input``).
Which directions a run measures is :func:`with_directions`' (``--direction``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .._spec import conv_input_spec, conv_spec, conv_weight_spec, pool_grad_spec, pool_spec

CONV_OPS = ("conv2d", "conv1d")
POOL_OPS = ("max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d")
#: which ops a run measures: the forward calls, their gradients, or both (``--direction``)
DIRECTIONS = ("forward", "backward", "both")
#: the gradients of each family: a convolution's with respect to its input and its weight, a pool's with
#: respect to its input
GRADS = {"conv": ("input", "weight"), "pool": ("input",)}

#: base problem sizes per device and suite (conv: N C HxW K; 1-D: length L; layers: batch)
SIZES = {
    "cpu": {"quick": dict(N=2, C=16, HW=32, K=16, L=512),
            "sweep": dict(N=4, C=32, HW=56, K=32, L=4096),
            "layers_N": 1},
    "gpu": {"quick": dict(N=8, C=64, HW=56, K=64, L=4096),
            "sweep": dict(N=32, C=64, HW=56, K=64, L=16384),
            "layers_N": 32},
}


@dataclasses.dataclass
class Case:
    """One call of a public op. ``shape`` is the input's, ``weight`` the filter's (convs), ``kwargs`` the
    op's keyword arguments (the same names as torch.nn.functional). ``sweeps`` maps each sweep the case
    sits on to its label there (the base case sits on several). ``grad``: None for the forward call, else
    the gradient of that call the case computes, with respect to "input" or (convs) "weight"."""

    name: str
    op: str
    shape: Tuple[int, ...]
    kwargs: Dict[str, object]
    weight: Optional[Tuple[int, ...]] = None
    sweeps: Dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "sweep"
    dtype: str = "float32"
    grad: Optional[str] = None

    #: a whole network run as one call (:class:`~.networks.NetworkCase`), not a single op
    is_network = False

    @property
    def is_conv(self) -> bool:
        """A convolution or one of its gradients (GFLOP/s, conv runners); else a pool or its gradient."""
        return self.op in CONV_OPS

    @property
    def direction(self) -> str:
        return "forward" if self.grad is None else "backward"

    @property
    def spec_op(self) -> str:
        """The op of the case's spec, what the report calls it: conv, conv_input, conv_weight, max_pool,
        max_pool_backward, avg_pool_backward, ..."""
        if self.is_conv:
            return "conv" if self.grad is None else f"conv_{self.grad}"
        return self.pool_kind + "_pool" + ("" if self.grad is None else "_backward")

    @property
    def pool_kind(self) -> str:
        """max, avg, adaptive_max or adaptive_avg (pools only)."""
        return self.op[: -len("_pool1d")]

    @property
    def is_max_pool(self) -> bool:
        return not self.is_conv and self.pool_kind.endswith("max")

    @property
    def array_names(self) -> Tuple[str, ...]:
        """What :meth:`arrays` returns, by the names the specs' ``ARRAYS`` use."""
        if self.grad is None:
            return ("x", "w", "b") if self.is_conv else ("x",)
        if self.is_conv:
            return ("dy", "w") if self.grad == "input" else ("x", "dy")
        return ("dy", "x", "indices") if self.is_max_pool else ("dy", "x")

    def forward(self) -> "Case":
        """The forward call this case is (or whose gradient it computes)."""
        if self.grad is None:
            return self
        return dataclasses.replace(self, name=self.name.rsplit(":", 1)[0], grad=None)

    @property
    def spatial_dims(self) -> int:
        return 1 if self.op.endswith("1d") else 2

    @property
    def N(self) -> int:
        return self.shape[0]

    @property
    def table(self) -> Optional[str]:
        """The standard-layer table the case comes from (``"resnet50"``, ...), None for sweep cases."""
        return table_of(self.source)

    def arrays(self, n: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, ...]:
        """Arguments of the case's call in its dtype, batch ``n`` (default the case's): forward x, w, b for
        convs, x for pools; the data gradient dy, w; the weight gradient x, dy; a pool's gradient dy, x and,
        for the max kinds, the forward's int64 indices (the oracle's). Drawn in float32 and rounded, so a
        float16 case sees the float32 case's values to half precision; a gradient case sees its forward
        case's x and w, and dy (of the forward output's shape) is drawn after them."""
        rng = np.random.default_rng(seed)
        shape = ((n,) + self.shape[1:]) if n else self.shape
        x = self._cast(rng.standard_normal(shape, dtype=np.float32))
        fwd: Tuple[np.ndarray, ...] = (x,)
        if self.is_conv:
            w = rng.standard_normal(self.weight, dtype=np.float32)
            w *= np.float32(1.0 / math.sqrt(max(1, int(np.prod(self.weight[1:])))))
            b = rng.standard_normal(self.weight[0], dtype=np.float32)
            fwd = (x, self._cast(w), self._cast(b))
        if self.grad is None:
            return fwd
        out_shape = case_spec(dataclasses.replace(self.forward(), shape=shape)).output_shape
        dy = self._cast(rng.standard_normal(out_shape, dtype=np.float32))
        if self.is_conv:
            return (dy, fwd[1]) if self.grad == "input" else (x, dy)
        if not self.is_max_pool:
            return dy, x
        import fastconv
        _, idx = getattr(fastconv, self.op)(x, **self.kwargs, return_indices=True, backend="numpy")
        return dy, x, idx

    def _cast(self, a: np.ndarray) -> np.ndarray:
        return a if self.dtype == "float32" else a.astype(self.dtype)

    def _conv_args(self) -> tuple:
        kw = self.kwargs
        return kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1)

    def _pool_args(self) -> dict:
        """The forward pool's arguments as :func:`~fastconv._spec.pool_spec` names them (fixed windows)."""
        kw = self.kwargs
        return dict(kernel_size=kw["kernel_size"], stride=kw.get("stride"), padding=kw.get("padding", 0),
                    dilation=kw.get("dilation", 1), ceil_mode=kw.get("ceil_mode", False),
                    count_include_pad=kw.get("count_include_pad", True))

    def spec(self, arrays):
        """The spec of this call on ``arrays`` (:meth:`arrays`' order; validates the arguments too): ConvSpec,
        PoolSpec, or for a gradient ConvInputGradSpec, ConvWeightGradSpec or PoolGradSpec."""
        kw, nd = self.kwargs, self.spatial_dims
        if self.is_conv:
            if self.grad == "input":
                dy, w = arrays
                return conv_input_spec((dy.shape[0],) + tuple(self.shape[1:]), w, dy, *self._conv_args(),
                                       spatial_dims=nd)
            if self.grad == "weight":
                x, dy = arrays
                return conv_weight_spec(x, self.weight, dy, *self._conv_args(), spatial_dims=nd)
            x, w, b = arrays
            return conv_spec(x, w, b, *self._conv_args(), spatial_dims=nd)
        kind = self.pool_kind
        if self.grad is not None:
            args = {} if kind.startswith("adaptive") else self._pool_args()
            return pool_grad_spec(kind, arrays[0], arrays[1], spatial_dims=nd, **args)
        if kind.startswith("adaptive"):
            return pool_spec(kind, arrays[0], output_size_=kw["output_size"], spatial_dims=nd)
        return pool_spec(kind, arrays[0], **self._pool_args(), spatial_dims=nd)

    def function(self, backend: str, algo: str = "auto") -> Callable[..., object]:
        """The public fastconv call of this case on :meth:`arrays` (``algo`` for the convolutions): the op
        of ``fastconv`` itself, or its gradient in ``fastconv.grad`` (a max pool's with the forward's
        indices, so the forward is not recomputed)."""
        import fastconv
        from fastconv import grad
        kw, nd, b = dict(self.kwargs), self.spatial_dims, backend
        if self.is_conv:
            stride, padding, dilation, groups = self._conv_args()
            conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, backend=b, algo=algo)
            if self.grad == "input":
                fn, rest = getattr(grad, f"conv{nd}d_input"), tuple(self.shape[1:])
                return lambda dy, w: fn((dy.shape[0],) + rest, w, dy, **conv)
            if self.grad == "weight":
                fn, size = getattr(grad, f"conv{nd}d_weight"), tuple(self.weight)
                return lambda x, dy: fn(x, size, dy, **conv)
            fn = getattr(fastconv, self.op)
            return lambda *a: fn(*a, **kw, backend=b, algo=algo)
        if self.grad is None:
            fn = getattr(fastconv, self.op)
            return lambda *a: fn(*a, **kw, backend=b)
        fn = getattr(grad, self.op)          # fastconv.grad names each pool's gradient as the pool
        kw.pop("output_size", None)          # an adaptive pool's gradient takes its output size from dy
        if self.is_max_pool:
            return lambda dy, x, idx: fn(dy, x, **kw, indices=idx, backend=b)
        return lambda dy, x: fn(dy, x, **kw, backend=b)

    def padding_operand(self, arrays, spec):
        """Of :meth:`arrays`, the one ``spec.PADDING_OPERAND`` names (the weight of conv and conv_input, dy of
        conv_weight: dispatch's non-finite-padding rule reads it); None for pools."""
        return dict(zip(self.array_names, arrays)).get(spec.PADDING_OPERAND) if spec.PADDING_OPERAND else None

    def describe(self) -> str:
        """The forward problem in one line (a gradient case's name says which gradient)."""
        kw = self.kwargs
        dims = "x".join(str(s) for s in self.shape[2:])
        if self.is_conv:
            k = "x".join(str(s) for s in self.weight[2:])
            g = kw.get("groups", 1)
            return (f"N{self.N} C{self.shape[1]} {dims} K{self.weight[0]} {k} s{kw.get('stride', 1)} "
                    f"p{_label(kw.get('padding', 0))} d{kw.get('dilation', 1)}" + (f" g{g}" if g != 1 else ""))
        if "output_size" in kw:
            return f"N{self.N} C{self.shape[1]} {dims} -> {kw['output_size']}"
        return (f"N{self.N} C{self.shape[1]} {dims} k{kw['kernel_size']} s{kw.get('stride')} "
                f"p{kw.get('padding', 0)}" + (f" d{kw['dilation']}" if kw.get("dilation", 1) != 1 else "")
                + (" ceil" if kw.get("ceil_mode") else "")
                + (" excl-pad" if kw.get("count_include_pad") is False else ""))

    def record(self) -> dict:
        return {"name": self.name, "op": self.op, "direction": self.direction, "spec_op": self.spec_op,
                "source": self.source, "dtype": self.dtype,
                "input_shape": list(self.shape),
                "weight_shape": list(self.weight) if self.weight else None, "kwargs": _jsonable(self.kwargs),
                "sweeps": dict(self.sweeps), "description": self.describe()}


#: the kinds of source whose cases belong to a summary table, ``<kind>:<table>``: the standard layers
#: (:mod:`.layers`), the CPU tiny calls and the networks (:mod:`.networks`)
TABLE_SOURCES = ("layers", "tiny", "networks")


def table_of(source: str) -> Optional[str]:
    """The summary table of a case's ``source`` (``"layers:resnet50"`` -> ``"resnet50"``), None for sweep
    cases."""
    kind, sep, table = source.partition(":")
    return table if sep and kind in TABLE_SOURCES else None


def case_spec(case: Case):
    """The spec of the case at its own batch size, without allocating its arrays (zero-stride views); a
    network's :class:`~.networks.NetworkSpec`."""
    if case.is_network:
        return case.full_spec()
    zero = np.zeros((), dtype=case.dtype)
    shapes = [case.shape] + ([case.weight, case.weight[:1]] if case.is_conv else [])
    fwd = tuple(np.broadcast_to(zero, s) for s in shapes)
    if case.grad is None:
        return case.spec(fwd)
    dy = np.broadcast_to(zero, case.forward().spec(fwd).output_shape)
    if case.is_conv:
        return case.spec((dy, fwd[1]) if case.grad == "input" else (fwd[0], dy))
    return case.spec((dy, fwd[0]))


def backward_cases(case: Case) -> List[Case]:
    """The gradient twins of a forward case: conv_input and conv_weight of a convolution, the pool
    gradient of a pool (same op, shapes, arguments, sweeps and source)."""
    out = []
    for g in GRADS["conv" if case.is_conv else "pool"]:
        twin = dataclasses.replace(case, grad=g, sweeps=dict(case.sweeps))
        twin.name = f"{case.name}:{twin.spec_op}"
        out.append(twin)
    return out


def with_directions(cases: List[Case], direction: str = "forward") -> List[Case]:
    """``cases`` (forward) as a run of ``direction`` measures them: as they are ("forward"), each replaced
    by its gradients ("backward"), or each followed by its gradients ("both"). A network case has no
    gradient case: it is kept with "both" and left out with "backward"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if direction == "forward":
        return list(cases)
    out: List[Case] = []
    for c in cases:
        if c.is_network:             # a network is measured forward only
            out += [c] if direction == "both" else []
            continue
        out += ([c] if direction == "both" else []) + backward_cases(c)
    return out


def _label(v) -> str:
    if isinstance(v, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in v):
        return "asym"
    return str(v)


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


class Builder:
    """Collects cases; a case generated by two sweeps (the base point) is kept once and remembers both."""

    def __init__(self):
        self.cases: Dict[tuple, Case] = {}

    def add(self, op, sweep, label, shape, kwargs, weight=None, name=None, source="sweep"):
        key = (op, tuple(shape), tuple(weight) if weight else None, repr(sorted(kwargs.items())))
        case = self.cases.get(key)
        if case is None:
            case = Case(name or f"{op}:{sweep}={label}", op, tuple(shape), dict(kwargs),
                        tuple(weight) if weight else None, {}, source)
            self.cases[key] = case
        if sweep != "base":
            case.sweeps.setdefault(sweep, str(label))
        return case


def _conv_sweeps(b: Builder, op: str, sz: dict, quick: bool) -> None:
    """One parameter at a time around a base 3x3 (or 3-tap), stride 1, padding 1, dilation 1 problem."""
    N, C, K = sz["N"], sz["C"], sz["K"]
    sp = (sz["HW"], sz["HW"]) if op == "conv2d" else (sz["L"],)
    nd = len(sp)

    def ks(k):
        return (k,) * nd

    base = dict(stride=1, padding=1, dilation=1, groups=1)

    def add(sweep, label, n=N, k=3, weight=None, **kw):
        args = dict(base, **kw)
        w = weight or (K, C // args["groups"]) + ks(k)
        b.add(op, sweep, label, (n, C) + sp, args, w)

    b.add(op, "base", "", (N, C) + sp, base, (K, C) + ks(3), name=f"{op}:base")
    for s in (1, 2, 3):
        add("stride", s, stride=s)
    asym = ((0, 2), (1, 0)) if nd == 2 else ((0, 2),)
    for p in (0, 1, 2, "same", asym):
        add("padding", _label(p), padding=p)
    for d in (1, 2, 3):
        add("dilation", d, dilation=d)
    for k in ((1, 3, 5, 7) if not quick else (1, 3, 5)):
        add("kernel", k, k=k, padding=k // 2)
    add("groups", "1")
    add("groups", "depthwise", groups=C, weight=(C, 1) + ks(3))
    if not quick:
        add("groups", "4", groups=4)
        for n in (1, N, 4 * N):
            add("batch", n, n=n)


def _pool_sweeps(b: Builder, op: str, sz: dict, quick: bool) -> None:
    N, C = sz["N"], sz["C"]
    nd = 1 if op.endswith("1d") else 2
    sp = (sz["HW"], sz["HW"]) if nd == 2 else (sz["L"],)
    shape = (N, C) + sp
    if op.startswith("adaptive"):
        outs = (1, 7) if nd == 2 else (1, 16)
        b.add(op, "base", "", shape, dict(output_size=outs[-1]), name=f"{op}:base")
        if not quick:
            for o in outs:
                b.add(op, "output", o, shape, dict(output_size=o))
        return
    is_max = op.startswith("max")
    base = dict(kernel_size=3, stride=2, padding=1)
    if is_max:
        base["dilation"] = 1
    b.add(op, "base", "", shape, base, name=f"{op}:base")
    strides = (1, 2, 3) if not quick or op == "max_pool2d" else ()
    for s in strides:
        b.add(op, "stride", s, shape, dict(base, stride=s))
    for p in ((0, 1) if not quick or nd == 2 else ()):
        b.add(op, "padding", p, shape, dict(base, padding=p))
    if is_max and (not quick or op == "max_pool2d"):
        for d in (1, 2, 3):
            b.add(op, "dilation", d, shape, dict(base, dilation=d))
    if not quick:
        for k in (2, 3, 5):
            b.add(op, "kernel", k, shape, dict(base, kernel_size=k))
        b.add(op, "ceil_mode", "True", shape, dict(base, ceil_mode=True, padding=0))
        if not is_max:
            b.add(op, "count_include_pad", "False", shape, dict(base, count_include_pad=False))


def sweep_cases(device: str = "cpu", quick: bool = False) -> List[Case]:
    """The sweep over stride, padding, dilation, kernel size, groups and batch (convs) and the matching
    sweeps of every pooling op, at the device's sizes."""
    sz = SIZES[device]["quick" if quick else "sweep"]
    b = Builder()
    for op in CONV_OPS:
        _conv_sweeps(b, op, sz, quick)
    for op in POOL_OPS:
        _pool_sweeps(b, op, sz, quick)
    return list(b.cases.values())
