"""LeNet-style CNN, the classic small network used to teach convolution, run with fastconv's ops.

    input 32x32x3 -> CONV1 (f=5, s=1, 8 filters) -> max POOL1 (2x2, s=2) -> CONV2 (f=5, s=1, 16 filters)
    -> max POOL2 (2x2, s=2) -> FC3 120 -> FC4 84 -> softmax 10

It prints the design table (activation shape, activation size and parameter count per layer), computed
with ``fastconv.conv_output_size`` and ``fastconv.conv_param_count`` only (a fully connected layer is a
1x1 convolution of a 1x1 input, so its parameters are ``conv_param_count(inputs, outputs, 1)``), and the
receptive field of one CONV2 and one POOL2 output on the input image (``fastconv.receptive_field``).
Then it runs the forward pass on a batch with random weights (fixed seed): convolutions and pools through
fastconv, ReLU after each convolution and FC layer, the FC layers as plain matmuls, a softmax at the end;
checks every activation has the shape the table predicts, and repeats the pass on the NumPy oracle.

    python examples/lenet.py [--batch 4] [--backend numba]
"""
from __future__ import annotations

import argparse

import numpy as np

import fastconv

# (name, kind, parameters): conv (filters, f, stride), pool (f, stride), fc (units)
LAYERS = [
    ("CONV1", "conv", (8, 5, 1)),
    ("POOL1", "pool", (2, 2)),
    ("CONV2", "conv", (16, 5, 1)),
    ("POOL2", "pool", (2, 2)),
    ("FC3", "fc", (120,)),
    ("FC4", "fc", (84,)),
    ("softmax", "fc", (10,)),
]
INPUT = (32, 32, 3)  # H, W, C


def design_table(layers=LAYERS, input_hwc=INPUT):
    """[(name, activation shape, activation size, parameters)], shapes as (H, W, C) or (units,)."""
    h, w, c = input_hwc
    rows = [("input", (h, w, c), h * w * c, 0)]
    units = None
    for name, kind, p in layers:
        if kind == "conv":
            k, f, s = p
            params = fastconv.conv_param_count(c, k, f)
            h, w, c = fastconv.conv_output_size(h, f, s), fastconv.conv_output_size(w, f, s), k
            rows.append((name, (h, w, c), h * w * c, params))
        elif kind == "pool":
            f, s = p
            h, w = fastconv.conv_output_size(h, f, s), fastconv.conv_output_size(w, f, s)
            rows.append((name, (h, w, c), h * w * c, 0))
        else:
            fan_in = units if units is not None else h * w * c
            units = p[0]
            rows.append((name, (units,), units, fastconv.conv_param_count(fan_in, units, 1)))
    return rows


def receptive_fields(layers=LAYERS):
    """{layer name: receptive field on the input} for every conv/pool layer, via fastconv.receptive_field."""
    out, stack = {}, []
    for name, kind, p in layers:
        if kind == "conv":
            stack.append((p[1], p[2]))
        elif kind == "pool":
            stack.append((p[0], p[1]))
        else:
            break
        out[name] = fastconv.receptive_field(stack)
    return out


def init_weights(rows, seed=0):
    """Random weights (He-style scale) for every layer with parameters; each layer's input is the previous
    row of the design table."""
    rng = np.random.default_rng(seed)
    weights = {}
    for (name, kind, p), prev in zip(LAYERS, rows):
        if kind == "conv":
            k, f, _ = p
            c = prev[1][2]
            shape, fan_in = (k, c, f, f), c * f * f
        elif kind == "fc":
            shape, fan_in = (prev[2], p[0]), prev[2]
        else:
            continue
        w = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        weights[name] = (w, np.zeros(shape[0] if kind == "conv" else shape[1], np.float32))
    return weights


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def forward(x, weights, rows, backend=None):
    """The forward pass on NCHW ``x``; checks each activation's shape against the design table."""
    a = x
    for (name, kind, p), (_, shape, _size, _) in zip(LAYERS, rows[1:]):
        if kind == "conv":
            w, b = weights[name]
            a = np.maximum(fastconv.conv2d(a, w, b, stride=p[2], backend=backend), 0)
            got = (a.shape[2], a.shape[3], a.shape[1])
        elif kind == "pool":
            a = fastconv.max_pool2d(a, p[0], p[1], backend=backend)
            got = (a.shape[2], a.shape[3], a.shape[1])
        else:
            w, b = weights[name]
            a = a.reshape(a.shape[0], -1) @ w + b          # an FC layer is a plain matmul
            a = softmax(a) if name == "softmax" else np.maximum(a, 0)
            got = (a.shape[1],)
        assert got == shape, f"{name}: activation {got} but the design table says {shape}"
    return a


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--backend", default=None, help="fastconv backend (default: fastconv's choice, numba)")
    args = ap.parse_args(argv)

    rows = design_table()
    print("LeNet design table (computed with fastconv.conv_output_size / conv_param_count)")
    print(f"{'layer':<8} {'activation shape':<18} {'activation size':>15} {'parameters':>10}")
    for name, shape, size, params in rows:
        print(f"{name:<8} {str(shape):<18} {size:>15} {params:>10}")
    print(f"{'total':<8} {'':<18} {'':>15} {sum(r[3] for r in rows):>10}")

    rf = receptive_fields()
    print(f"\nreceptive field on the input image: one CONV2 output sees {rf['CONV2']}x{rf['CONV2']} pixels, "
          f"one POOL2 output sees {rf['POOL2']}x{rf['POOL2']}")

    rng = np.random.default_rng(42)
    x = rng.standard_normal((args.batch, INPUT[2], INPUT[0], INPUT[1])).astype(np.float32)
    weights = init_weights(rows)
    probs = forward(x, weights, rows, backend=args.backend)
    oracle = forward(x, weights, rows, backend="numpy")
    print(f"\nforward pass on a batch of {args.batch} (backend {args.backend or 'default'}): "
          f"output {probs.shape}, predicted classes {probs.argmax(axis=1).tolist()}")
    for i, p in enumerate(probs):
        print(f"  image {i}: softmax sums to {p.sum():.6f}, max probability {p.max():.4f}")
    print(f"max |difference| from the NumPy oracle's forward pass: {np.abs(probs - oracle).max():.2e}")


if __name__ == "__main__":
    main()
