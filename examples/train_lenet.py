"""Train the LeNet of examples/lenet.py on scikit-learn's handwritten digits, every convolution and pool (forward
and backward) through fastconv.

    input 32x32x1 -> CONV1 (f=5, 8 filters) -> max POOL (2x2, s=2) -> CONV2 (f=5, 16 filters) -> max POOL
    -> FC 120 -> FC 84 -> softmax 10          (ReLU after every convolution and hidden FC layer)

The layers, their shapes and the initial weights are lenet.py's (``LAYERS``, ``design_table``,
``init_weights``) with one input channel. Data: ``sklearn.datasets.load_digits`` (1797 8x8 grey images, shipped
with scikit-learn, no download), each pixel repeated 4x4 to 32x32, scaled by the training set's mean and
standard deviation, split 80/20 into training and held-out test images (stratified, always the same split).

Convolutions: ``fastconv.conv2d`` forward, ``fastconv.grad.conv2d_weight`` / ``conv2d_input`` /
``conv_bias`` backward; pools: ``fastconv.max_pool2d(return_indices=True)`` forward and
``fastconv.grad.max_pool2d(indices=...)`` backward. The FC layers, ReLU, softmax and cross-entropy are plain
NumPy. Training: minibatch SGD with momentum and weight decay, the learning rate decayed by a cosine over the
run, each training image shifted by a random offset of up to 3 pixels (1437 images overfit otherwise). One
progress line per epoch; the last line reads ``test accuracy: 0.xxxx`` (held-out images).

    python examples/train_lenet.py [--epochs 6] [--batch 32] [--lr 0.02] [--shift 3] [--seed 0]
                                   [--limit N] [--backend numba]

``--limit N`` trains on the first N training images only (a short run: ``--epochs 2 --limit 300 --batch 16``
reaches about 75 % in a few seconds); ``--seed`` draws the initial weights, the batches and the shifts.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lenet  # noqa: E402  (examples/lenet.py: the network's design)

import fastconv  # noqa: E402
import fastconv.grad  # noqa: E402

INPUT = (32, 32, 1)   # H, W, C: the digits are grey
UPSCALE = 4           # 8x8 -> 32x32


def load_data(split_seed: int = 0, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): float32 NCHW images (N, 1, 32, 32) and int labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.images.astype(np.float32)
    x = np.repeat(np.repeat(x, UPSCALE, axis=1), UPSCALE, axis=2)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=test_fraction,
                                              random_state=split_seed, stratify=digits.target)
    mean, std = x_tr.mean(), x_tr.std()
    return ((x_tr - mean) / std).astype(np.float32), y_tr, ((x_te - mean) / std).astype(np.float32), y_te


def init_params(seed: int = 0, dtype=np.float32, last_scale: float = 0.1):
    """{layer name: [weight, bias]} for every layer of lenet.LAYERS with parameters: lenet.init_weights, the
    classifier's weights scaled by ``last_scale`` so that training starts near the uniform prediction (loss
    ln 10) instead of confidently wrong."""
    rows = lenet.design_table(input_hwc=INPUT)
    params = {name: [w.astype(dtype), b.astype(dtype)] for name, (w, b) in lenet.init_weights(rows, seed).items()}
    params[lenet.LAYERS[-1][0]][0] *= dtype(last_scale)
    return params


def forward(params, x, backend=None):
    """Logits (N, 10) and what backward needs, layer by layer."""
    a, tape = x, []
    for name, kind, p in lenet.LAYERS:
        if kind == "conv":
            w, b = params[name]
            z = fastconv.conv2d(a, w, b, stride=p[2], backend=backend)
            tape.append((name, kind, p, a, z > 0))
            a = np.maximum(z, 0)
        elif kind == "pool":
            out, idx = fastconv.max_pool2d(a, p[0], p[1], return_indices=True, backend=backend)
            tape.append((name, kind, p, a, idx))
            a = out
        else:
            w, b = params[name]
            flat = a.reshape(a.shape[0], -1)
            z = flat @ w + b
            last = name == lenet.LAYERS[-1][0]
            tape.append((name, kind, p, a, None if last else z > 0))
            a = z if last else np.maximum(z, 0)
    return a, tape


def cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) and its gradient with respect to the logits."""
    probs = lenet.softmax(logits)
    n = logits.shape[0]
    loss = -np.log(np.maximum(probs[np.arange(n), labels], np.finfo(probs.dtype).tiny)).mean()
    dlogits = probs.copy()
    dlogits[np.arange(n), labels] -= 1
    return float(loss), dlogits / n


def backward(params, tape, dlogits, backend=None):
    """{layer name: [dweight, dbias]} of the loss whose gradient with respect to the logits is ``dlogits``."""
    grads, da = {}, dlogits
    for i, (name, kind, p, a_in, aux) in enumerate(reversed(tape)):
        first = i == len(tape) - 1
        if kind == "fc":
            w, _ = params[name]
            dz = da if aux is None else da * aux
            flat = a_in.reshape(a_in.shape[0], -1)
            grads[name] = [flat.T @ dz, dz.sum(axis=0)]
            da = (dz @ w.T).reshape(a_in.shape)
        elif kind == "pool":
            da = fastconv.grad.max_pool2d(da, a_in, p[0], p[1], indices=aux, backend=backend)
        else:
            w, _ = params[name]
            dz = da * aux
            grads[name] = [fastconv.grad.conv2d_weight(a_in, w.shape, dz, stride=p[2], backend=backend),
                           fastconv.grad.conv_bias(dz)]
            if not first:   # the image needs no gradient
                da = fastconv.grad.conv2d_input(a_in.shape, w, dz, stride=p[2], backend=backend)
    return grads


def shifted(x, rng, max_shift: int):
    """Each image moved by its own random offset of up to ``max_shift`` pixels each way (the exposed border
    is the background value, the images' minimum): data augmentation against overfitting 1437 images."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    m = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (m, m), (m, m)), constant_values=x.min())
    dh, dw = rng.integers(0, 2 * m + 1, size=(2, n))
    return np.stack([padded[i, :, dh[i]:dh[i] + h, dw[i]:dw[i] + w] for i in range(n)])


def loss_and_grads(params, x, labels, backend=None):
    logits, tape = forward(params, x, backend)
    loss, dlogits = cross_entropy(logits, labels)
    return loss, backward(params, tape, dlogits, backend), logits


def accuracy(params, x, labels, backend=None, batch: int = 256) -> float:
    hits = sum(int((forward(params, x[i:i + batch], backend)[0].argmax(axis=1) == labels[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def train(epochs=6, batch=32, lr=0.02, momentum=0.9, weight_decay=1e-4, shift=3, limit=None, backend=None,
          seed=0, log=print):
    """Train and return (params, test accuracy); ``limit``: use only the first ``limit`` training images."""
    x_tr, y_tr, x_te, y_te = load_data()
    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    params = init_params(seed)
    velocity = {k: [np.zeros_like(w), np.zeros_like(b)] for k, (w, b) in params.items()}
    rng = np.random.default_rng(seed)
    steps = epochs * math.ceil(len(x_tr) / batch)
    step, start = 0, time.perf_counter()
    log(f"LeNet on digits: {len(x_tr)} training / {len(x_te)} test images, {epochs} epochs of batch {batch}, "
        f"SGD lr {lr} momentum {momentum} weight decay {weight_decay}, shifts up to {shift} px, "
        f"fastconv backend {backend or 'default'}")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_tr))
        total, hits = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss, grads, logits = loss_and_grads(params, shifted(x_tr[idx], rng, shift), y_tr[idx], backend)
            total += loss * len(idx)
            hits += int((logits.argmax(axis=1) == y_tr[idx]).sum())
            rate = np.float32(lr * 0.5 * (1 + math.cos(math.pi * step / steps)))
            for name, pair in params.items():
                for j in range(2):      # weight decay on the weights (j = 0), not the biases
                    g = grads[name][j] + np.float32(weight_decay) * pair[j] if j == 0 else grads[name][j]
                    v = velocity[name][j]
                    v *= np.float32(momentum)
                    v -= rate * g
                    pair[j] += v
            step += 1
        test_acc = accuracy(params, x_te, y_te, backend)
        log(f"epoch {epoch:>2}/{epochs}  loss {total / len(x_tr):.4f}  train accuracy {hits / len(x_tr):.4f}  "
            f"test accuracy {test_acc:.4f}  ({time.perf_counter() - start:.1f} s)")
    return params, test_acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--shift", type=int, default=3, help="random shifts of up to N pixels (0: none)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default=None, help="fastconv backend (default: fastconv's choice, numba)")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--epochs, --batch and --limit must be positive")
    if args.shift < 0:
        ap.error("--shift must be non-negative")
    _, test_acc = train(args.epochs, args.batch, args.lr, args.momentum, args.weight_decay, args.shift, args.limit,
                        args.backend, args.seed)
    print(f"test accuracy: {test_acc:.4f}")


if __name__ == "__main__":
    main()
