"""Cases: one call of a public op with fixed shapes and arguments, and the sweeps that generate them.

A sweep varies one parameter at a time around a base problem (stride, padding, dilation, kernel size,
groups, batch for convs; the matching parameters of every pooling op). Standard-layer cases come from the
shape tables (:mod:`.layers`); which cases a suite runs is :mod:`.suites`' business.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from .._spec import conv_spec, pool_spec

CONV_OPS = ("conv2d", "conv1d")
POOL_OPS = ("max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d")

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
    sits on to its label there (the base case sits on several)."""

    name: str
    op: str
    shape: Tuple[int, ...]
    kwargs: Dict[str, object]
    weight: Optional[Tuple[int, ...]] = None
    sweeps: Dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "sweep"
    dtype: str = "float32"

    @property
    def is_conv(self) -> bool:
        return self.op in CONV_OPS

    @property
    def spatial_dims(self) -> int:
        return 1 if self.op.endswith("1d") else 2

    @property
    def N(self) -> int:
        return self.shape[0]

    @property
    def table(self) -> Optional[str]:
        """The standard-layer table the case comes from (``"resnet50"``, ...), None for sweep cases."""
        return self.source.split(":", 1)[1] if self.source.startswith("layers:") else None

    def arrays(self, n: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, ...]:
        """Inputs of the case's dtype (x, w, b for convs; x for pools), batch ``n`` (default the case's);
        drawn in float32 and rounded, so a float16 case sees the float32 case's values to half precision."""
        rng = np.random.default_rng(seed)
        shape = ((n,) + self.shape[1:]) if n else self.shape
        x = rng.standard_normal(shape, dtype=np.float32)
        if not self.is_conv:
            return (self._cast(x),)
        w = rng.standard_normal(self.weight, dtype=np.float32)
        w *= np.float32(1.0 / math.sqrt(max(1, int(np.prod(self.weight[1:])))))
        b = rng.standard_normal(self.weight[0], dtype=np.float32)
        return self._cast(x), self._cast(w), self._cast(b)

    def _cast(self, a: np.ndarray) -> np.ndarray:
        return a if self.dtype == "float32" else a.astype(self.dtype)

    def spec(self, arrays):
        """The ConvSpec/PoolSpec of this call on ``arrays`` (validates the arguments too)."""
        kw, nd = self.kwargs, self.spatial_dims
        if self.is_conv:
            x, w, b = arrays
            return conv_spec(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                             kw.get("groups", 1), spatial_dims=nd)
        kind = self.op[: -len("_pool1d")]
        if kind.startswith("adaptive"):
            return pool_spec(kind, arrays[0], output_size_=kw["output_size"], spatial_dims=nd)
        return pool_spec(kind, arrays[0], kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                         kw.get("dilation", 1), kw.get("ceil_mode", False), kw.get("count_include_pad", True),
                         spatial_dims=nd)

    def describe(self) -> str:
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
        return {"name": self.name, "op": self.op, "source": self.source, "dtype": self.dtype,
                "input_shape": list(self.shape),
                "weight_shape": list(self.weight) if self.weight else None, "kwargs": _jsonable(self.kwargs),
                "sweeps": dict(self.sweeps), "description": self.describe()}


def case_spec(case: Case):
    """The spec of the case at its own batch size, without allocating its arrays (zero-stride views)."""
    shapes = [case.shape] + ([case.weight, case.weight[:1]] if case.is_conv else [])
    zero = np.zeros((), dtype=case.dtype)
    return case.spec(tuple(np.broadcast_to(zero, s) for s in shapes))


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
