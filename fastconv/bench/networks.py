"""Whole networks and tiny calls: the cases of suites ``cpu-networks`` and ``cpu-tiny``.

A *network* is a case of its own kind (:class:`NetworkCase`): a fixed sequence of layers run as one timed
call on each side, as users run them, one op after the other on the previous op's output:

- fastconv: ``fastconv.conv2d`` / ``fastconv.max_pool2d`` (the runner's backend and, for the convolutions,
  its algorithm), ReLU as ``np.maximum(y, 0, out=y)``, the residual add as ``np.add(y, x, out=y)``;
- torch: ``F.conv2d`` / ``F.max_pool2d`` under ``torch.no_grad()``, ReLU as ``torch.relu_(y)``, the add as
  ``y.add_(x)``. torch's own in-place ReLU, not NumPy's on the tensor's NumPy view: it is the program a
  torch user writes, it keeps torch inside its own thread pool (the thread fight between libraries is what
  a network case is meant to show, and only fastconv's side has it), and it is no slower than NumPy's
  one-threaded ``maximum``, so the choice does not favour fastconv.

The networks (each :data:`NETWORKS` entry is its exact definition; N is the batch):

- ``lenet5`` (N=64, 1x32x32): conv 1->6 5x5, ReLU, max pool 2, conv 6->16 5x5, ReLU, max pool 2. The
  fully connected layers are left out on both sides (they would be the same NumPy matmuls on both and
  say nothing about fastconv).
- ``vgg16_block`` (N=8, 64x56x56): a VGG block: conv 64->64 3x3 p1, ReLU, conv 64->64 3x3 p1, ReLU, max
  pool 2 (3.7 GFLOP). Its convolutions have the shape of ResNet-50's ``res2_3x3``; VGG-16 itself has no
  64-channel stage at 56x56 (the real stages follow).
- ``vgg16_stage2`` (N=1, 64x112x112): VGG-16's real second stage, rows ``conv2_1`` and ``conv2_2`` of the
  ``vgg16`` shape table: conv 64->128 3x3 p1, ReLU, conv 128->128 3x3 p1, ReLU, max pool 2 (5.5 GFLOP per
  image). One image, because at N=8 it is 44 GFLOP, about a second per call per side, which the
  15-minute CPU benchmark run (``benchmarks/cpu_issue14.py``) cannot afford quiet and busy.
- ``resnet50_bottleneck`` (N=8, 256x56x56): ResNet-50's stage-2 identity block (``res2_1x1_256to64``,
  ``res2_3x3``, ``res2_1x1_64to256``): conv 256->64 1x1, ReLU, conv 64->64 3x3 p1, ReLU, conv 64->256 1x1,
  + the block's input, ReLU. No pool (the block has none); no batch norm (inference folds it into the
  convolutions' weights and biases).
- ``small_cnn`` (N=64, 1x28x28): a small CNN as a new user writes it: conv 1->16 3x3 p1, ReLU, max pool 2,
  conv 16->32 3x3 p1, ReLU, max pool 2.
- ``lenet5`` at N=1 (suite ``cpu-tiny``): a whole LeNet forward of one image, where per-call overhead is
  everything.

Every convolution has a bias. Weights are drawn standard normal and scaled by 1/sqrt(fan-in), biases by
0.1, so activations keep their scale through the network.

Verification (:func:`~.verification.verify_network`): each layer of the runner's sequence is run on the
oracle's output of the layers before it (the oracle: the same sequence on fastconv's ``numpy`` backend) and
checked against the oracle's output of that layer with :mod:`fastconv.testing`'s tolerance for that layer
(convolutions: ``conv_tolerance`` of that layer's spec and operands; max pools: exact; ReLU and the add:
exact, they round once in float32 on every side); then the whole timed call is checked to return exactly
what its layers, chained, return (fastconv's results are bitwise deterministic), so the call that is
timed is the sequence that was checked. A peer's convolution layer gets the peers' wider tolerance, as
single ops do.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .._spec import conv_spec, pool_spec
from .cases import Case


@dataclasses.dataclass(frozen=True)
class Layer:
    """One step of a network: ``conv`` (K output channels, an R x R filter, stride, padding; with bias),
    ``relu``, ``max_pool`` (a ``kernel`` x ``kernel`` window, stride = kernel) or ``add_input`` (adds the
    network's input: a residual block's identity path)."""
    kind: str
    K: int = 0
    R: int = 0
    stride: int = 1
    padding: int = 0
    kernel: int = 0

    def describe(self, C: int) -> str:
        if self.kind == "conv":
            return (f"conv {C}->{self.K} {self.R}x{self.R}" + (f" s{self.stride}" if self.stride != 1 else "")
                    + (f" p{self.padding}" if self.padding else ""))
        if self.kind == "max_pool":
            return f"maxpool {self.kernel}"
        return {"relu": "relu", "add_input": "+x"}[self.kind]


def conv(K, R, stride=1, padding=0) -> Layer:
    return Layer("conv", K=K, R=R, stride=stride, padding=padding)


RELU, ADD_INPUT = Layer("relu"), Layer("add_input")


def max_pool(k) -> Layer:
    return Layer("max_pool", kernel=k)


@dataclasses.dataclass(frozen=True)
class Network:
    """A network's exact definition: its input (C, H, W), default batch and layers."""
    name: str
    input: Tuple[int, int, int]
    N: int
    layers: Tuple[Layer, ...]
    doc: str


NETWORKS: Dict[str, Network] = {n.name: n for n in (
    Network("lenet5", (1, 32, 32), 64,
            (conv(6, 5), RELU, max_pool(2), conv(16, 5), RELU, max_pool(2)),
            "LeNet-5's convolutional part (the fully connected layers left out on both sides)"),
    Network("vgg16_block", (64, 56, 56), 8,
            (conv(64, 3, padding=1), RELU, conv(64, 3, padding=1), RELU, max_pool(2)),
            "a VGG block: two 3x3 64-channel convolutions and a max pool at 56x56"),
    Network("vgg16_stage2", (64, 112, 112), 1,
            (conv(128, 3, padding=1), RELU, conv(128, 3, padding=1), RELU, max_pool(2)),
            "VGG-16's stage 2 (conv2_1, conv2_2 of the vgg16 table) and its max pool"),
    Network("resnet50_bottleneck", (256, 56, 56), 8,
            (conv(64, 1), RELU, conv(64, 3, padding=1), RELU, conv(256, 1), ADD_INPUT, RELU),
            "ResNet-50 stage-2 identity bottleneck (res2_1x1_256to64, res2_3x3, res2_1x1_64to256)"),
    Network("small_cnn", (1, 28, 28), 64,
            (conv(16, 3, padding=1), RELU, max_pool(2), conv(32, 3, padding=1), RELU, max_pool(2)),
            "a small CNN as a new user writes it (28x28, 1->16->32 channels)"),
)}


class NetworkSpec:
    """The problem a network case is, as the engine reads a spec: ``op`` "network", ``flops()`` (its
    convolutions' multiply-adds x 2; pools, ReLU and the add are not counted), ``bytes()`` (every layer's
    compulsory traffic, ReLU and the add read and write their tensor once), ``output_shape`` and
    ``layers``: per layer, (Layer, its ConvSpec / PoolSpec or None, its input shape)."""
    op = "network"
    PADDING_OPERAND = None

    def __init__(self, layers: List[tuple], output_shape: Tuple[int, ...], dtype):
        self.layers, self.output_shape, self.dtype = layers, output_shape, np.dtype(dtype)
        self._itemsize = self.dtype.itemsize

    def flops(self) -> int:
        return sum(s.flops() for layer, s, _ in self.layers if layer.kind == "conv")

    def bytes(self) -> int:
        out = 0
        for layer, s, shape in self.layers:
            out += s.bytes() if s is not None else (2 + (layer.kind == "add_input")) * math.prod(shape) * self._itemsize
        return out

    def max_elements(self) -> int:
        return max(math.prod(shape) for _, _, shape in self.layers)

    @property
    def op_specs(self) -> List[tuple]:
        """(layer index, Layer, spec) of the layers that are fastconv ops (convolutions and pools)."""
        return [(i, layer, s) for i, (layer, s, _) in enumerate(self.layers) if s is not None]


@dataclasses.dataclass
class NetworkCase(Case):
    """A network run as one call (module docstring). ``shape`` is the input's; ``network`` its definition.
    Arrays: the input, then each convolution's weight and bias in order."""
    network: Optional[Network] = None

    is_network = True

    @property
    def is_conv(self) -> bool:       # GFLOP/s and the conv runners (with their algorithm), as a convolution
        return True

    @property
    def spec_op(self) -> str:
        return "network"

    @property
    def array_names(self) -> Tuple[str, ...]:
        names = ["x"]
        for i, layer in enumerate(self.network.layers):
            if layer.kind == "conv":
                names += [f"w{i}", f"b{i}"]
        return tuple(names)

    def _shapes(self, n: Optional[int] = None):
        """Per layer (Layer, its input shape, its weight shape or None), and the output shape."""
        shape = ((n,) + self.shape[1:]) if n else self.shape
        out = []
        for layer in self.network.layers:
            if layer.kind == "conv":
                w = (layer.K, shape[1], layer.R, layer.R)
                out.append((layer, shape, w))
                H = (shape[2] + 2 * layer.padding - layer.R) // layer.stride + 1
                W = (shape[3] + 2 * layer.padding - layer.R) // layer.stride + 1
                shape = (shape[0], layer.K, H, W)
            elif layer.kind == "max_pool":
                out.append((layer, shape, None))
                shape = shape[:2] + (shape[2] // layer.kernel, shape[3] // layer.kernel)
            else:
                out.append((layer, shape, None))
        return out, shape

    def arrays(self, n: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        layers, _ = self._shapes(n)
        out = [self._cast(rng.standard_normal(layers[0][1], dtype=np.float32))]
        for layer, _, w in layers:
            if layer.kind == "conv":
                wt = rng.standard_normal(w, dtype=np.float32) * np.float32(1 / math.sqrt(math.prod(w[1:])))
                out += [self._cast(wt), self._cast(np.float32(0.1) * rng.standard_normal(w[0], dtype=np.float32))]
        return tuple(out)

    def spec(self, arrays) -> NetworkSpec:
        """The network's spec on ``arrays`` (:meth:`arrays`' order), through the same spec builders as the
        single ops, so a layer fastconv would refuse is refused here."""
        return self._spec(arrays[0].shape[0], arrays[0].dtype)

    def _spec(self, n: int, dtype) -> NetworkSpec:
        layers, shape = self._shapes(n)
        zero = np.zeros((), dtype=dtype)
        out = []
        for layer, s_in, w in layers:
            x = np.broadcast_to(zero, s_in)
            if layer.kind == "conv":
                s = conv_spec(x, np.broadcast_to(zero, w), np.broadcast_to(zero, w[:1]), layer.stride,
                              layer.padding, 1, 1, spatial_dims=2)
            elif layer.kind == "max_pool":
                s = pool_spec("max", x, kernel_size=layer.kernel, stride=None, padding=0, dilation=1,
                              ceil_mode=False, count_include_pad=True, spatial_dims=2)
            else:
                s = None
            out.append((layer, s, s_in))
        return NetworkSpec(out, shape, dtype)

    def full_spec(self) -> NetworkSpec:
        return self._spec(self.N, self.dtype)

    def steps(self, ops: "Ops") -> List[Callable]:
        """One callable per layer, ``step(y, x, params) -> y`` (``x``: the network's input, ``params``:
        the weights and biases in :meth:`arrays`' order after the input), with ``ops``' implementations."""
        out, p = [], 0
        for layer in self.network.layers:
            if layer.kind == "conv":
                out.append(_conv_step(ops, layer, p))
                p += 2
            elif layer.kind == "max_pool":
                out.append(lambda y, x, params, k=layer.kernel: ops.max_pool(y, k))
            elif layer.kind == "relu":
                out.append(lambda y, x, params: ops.relu(y))
            else:
                out.append(lambda y, x, params: ops.add(y, x))
        return out

    def program(self, ops: "Ops") -> Callable:
        """The whole network as one call ``f(x, *params)``: :meth:`steps` chained."""
        steps = self.steps(ops)

        def call(x, *params):
            with ops.context():
                y = x
                for step in steps:
                    y = step(y, x, params)
                return y
        return call

    def function(self, backend: str, algo: str = "auto") -> Callable:
        return self.program(FastconvOps(backend, algo))

    def padding_operand(self, arrays, spec):
        return None

    def describe(self) -> str:
        parts, C = [], self.shape[1]
        for layer in self.network.layers:
            parts.append(layer.describe(C))
            C = layer.K if layer.kind == "conv" else C
        dims = "x".join(str(s) for s in self.shape[2:])
        return f"N{self.N} C{self.shape[1]} {dims}: " + ", ".join(parts)

    def record(self) -> dict:
        out = super().record()
        out["network"] = {"name": self.network.name, "doc": self.network.doc,
                          "layers": [dataclasses.asdict(layer) for layer in self.network.layers]}
        return out


def _conv_step(ops, layer: Layer, p: int) -> Callable:
    return lambda y, x, params: ops.conv(y, params[p], params[p + 1], layer.stride, layer.padding)


class _NoContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Ops:
    """How one side runs each kind of layer (:class:`FastconvOps`, :class:`TorchOps`)."""

    def context(self):
        return _NoContext()


class FastconvOps(Ops):
    """fastconv's ops on one backend (and conv algorithm); ReLU and the add in NumPy, in place."""

    def __init__(self, backend: str, algo: str = "auto"):
        self.backend, self.algo = backend, algo

    def conv(self, y, w, b, stride, padding):
        import fastconv
        return fastconv.conv2d(y, w, b, stride=stride, padding=padding, backend=self.backend, algo=self.algo)

    def max_pool(self, y, k):
        import fastconv
        return fastconv.max_pool2d(y, k, backend=self.backend)

    def relu(self, y):
        return np.maximum(y, 0, out=y)

    def add(self, y, x):
        return np.add(y, x, out=y)


class TorchOps(Ops):
    """torch.nn.functional's ops, ReLU and the add in place (torch's own), under ``torch.no_grad()``."""

    def context(self):
        import torch
        return torch.no_grad()

    def conv(self, y, w, b, stride, padding):
        import torch.nn.functional as F
        return F.conv2d(y, w, b, stride=stride, padding=padding)

    def max_pool(self, y, k):
        import torch.nn.functional as F
        return F.max_pool2d(y, k)

    def relu(self, y):
        import torch
        return torch.relu_(y)

    def add(self, y, x):
        return y.add_(x)


def network_case(name: str, table: str, n: Optional[int] = None, kind: str = "networks") -> NetworkCase:
    """The case of network ``name`` (:data:`NETWORKS`) at batch ``n`` (default its own), in summary table
    ``table`` of source kind ``kind``."""
    net = NETWORKS[name]
    n = n or net.N
    return NetworkCase(f"{table}/{name}", "network", (n,) + net.input, {},
                       None, {}, f"{kind}:{table}", network=net)


#: LeNet-5's convolution and pool layers as single ops: (name, input (C, H, W), op, weight or kwargs)
LENET_OPS = (("conv1", (1, 32, 32), (6, 1, 5, 5)), ("pool1", (6, 28, 28), None),
             ("conv2", (6, 14, 14), (16, 6, 5, 5)), ("pool2", (16, 10, 10), None))


def tiny_cases(batch: Optional[int] = None) -> List[Case]:
    """Suite cpu-tiny: tiny calls (table ``tiny_calls``: a (1,3,8,8) input with a (4,3,3,3)
    weight, a (1,4,8,8) 2x2 max pool), LeNet-5's convolutions and pools as single calls at N=1
    (``lenet_ops_n1``) and N=64 (``lenet_ops_n64``), and the whole LeNet-5 forward at N=1 (``lenet_n1``).
    ``batch`` replaces every batch (tests)."""
    def n(default):
        return batch or default

    out = [Case("tiny_calls/conv_3to4", "conv2d", (n(1), 3, 8, 8), {}, (4, 3, 3, 3), {}, "tiny:tiny_calls"),
           Case("tiny_calls/maxpool_2", "max_pool2d", (n(1), 4, 8, 8), {"kernel_size": 2}, None, {},
                "tiny:tiny_calls")]
    for N, table in ((1, "lenet_ops_n1"), (64, "lenet_ops_n64")):
        for name, chw, w in LENET_OPS:
            shape = (n(N),) + chw
            if w:
                out.append(Case(f"{table}/{name}", "conv2d", shape, {}, w, {}, f"tiny:{table}"))
            else:
                out.append(Case(f"{table}/{name}", "max_pool2d", shape, {"kernel_size": 2}, None, {},
                                f"tiny:{table}"))
    out.append(network_case("lenet5", "lenet_n1", n(1), kind="tiny"))
    return out


def network_cases(batch: Optional[int] = None) -> List[Case]:
    """Suite cpu-networks: LeNet-5, the VGG block and the ResNet-50 bottleneck (table
    ``networks``), the small CNN and VGG-16's real stage 2 (table ``more_networks``), each at its own batch
    unless ``batch`` is given."""
    return [network_case(name, "more_networks" if name in MORE_NETWORKS else "networks", batch)
            for name in NETWORKS]


#: the networks of table ``more_networks`` (the rest: table ``networks``)
MORE_NETWORKS = ("small_cnn", "vgg16_stage2")


#: the case builders of the suites that have one (Suite.builder)
BUILDERS = {"tiny": tiny_cases, "networks": network_cases}
