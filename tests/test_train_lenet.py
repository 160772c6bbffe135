"""examples/train_lenet.py: a short training run prints one well-formed line per epoch and the final
``test accuracy: 0.xxxx`` line, its loss falls and its held-out accuracy beats chance (0.1) by a clear margin;
and the whole network's loss gradient (every layer's weights and biases, through fastconv.grad) equals
torch.autograd's on the same LeNet with the same weights (float64, a tiny batch).

Each check runs on the NumPy oracle and on the default backend (numba), which is skipped, naming the missing
op, where that backend has no implementation of a gradient the example needs."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import fastconv as fc
from fastconv import _dispatch

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_lenet.py"
#: every fastconv op the example runs
OPS = ("conv", "conv_input", "conv_weight", "max_pool", "max_pool_backward")

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the examples extra): the LeNet "
                                      "training example is not tested")


def _require(backend):
    info = fc.backends()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend!r} is not available: {info['reason']}")
    missing = [op for op in OPS if not _dispatch.candidates(types.SimpleNamespace(op=op), backend)]
    if missing:
        pytest.skip(f"backend {backend!r} has no {', '.join(missing)} implementation yet")


BACKENDS = ["numpy", _dispatch.default_backend("numpy")]
EPOCH = re.compile(r"^epoch +(\d+)/(\d+)  loss (\d+\.\d{4})  train accuracy (0\.\d{4}|1\.0000)  "
                   r"test accuracy (0\.\d{4}|1\.0000)  \(\d+\.\d s\)$")


@pytest.mark.parametrize("backend", sorted(set(BACKENDS)))
def test_short_training_run(backend):
    _require(backend)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "2", "--limit", "300", "--batch", "16",
                           "--backend", backend], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("LeNet on digits: 300 training / 360 test images, 2 epochs"), lines[0]
    epochs = [EPOCH.match(line) for line in lines[1:-1]]
    assert all(epochs) and len(epochs) == 2, lines
    assert [int(m.group(1)) for m in epochs] == [1, 2]
    losses = [float(m.group(3)) for m in epochs]
    m = re.fullmatch(r"test accuracy: (0\.\d{4}|1\.0000)", lines[-1])
    assert m, lines[-1]
    accuracy = float(m.group(1))
    assert accuracy == float(epochs[-1].group(5))
    # untrained: loss ln 10 = 2.30 and accuracy 0.1; two short epochs give about 1.3 and 0.75
    assert losses[1] < losses[0] - 0.3 and losses[1] < 2.0, losses
    assert accuracy >= 0.4, accuracy


def _load_example():
    spec = importlib.util.spec_from_file_location("train_lenet", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("backend", sorted(set(BACKENDS)))
def test_gradients_match_torch_autograd(backend):
    """The example's forward and backward (fastconv.grad for every conv and pool, NumPy for the rest) against
    torch's LeNet with the same float64 weights, on 3 random images: loss and every parameter's gradient."""
    _require(backend)
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the gradient check is skipped")
    F = torch.nn.functional
    tl = _load_example()
    params = tl.init_params(seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    for _, b in params.values():
        b[:] = rng.standard_normal(b.shape) * 0.1      # non-zero biases, so their gradients are tested too
    x = rng.standard_normal((3, 1, 32, 32))
    labels = np.array([1, 7, 3])
    loss, grads, _ = tl.loss_and_grads(params, x, labels, backend=backend)

    tp = {k: [torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)]
          for k, (w, b) in params.items()}
    a = torch.tensor(x)
    for name, kind, p in tl.lenet.LAYERS:
        if kind == "conv":
            a = F.relu(F.conv2d(a, *tp[name], stride=p[2]))
        elif kind == "pool":
            a = F.max_pool2d(a, p[0], p[1])
        else:
            a = a.reshape(a.shape[0], -1) @ tp[name][0] + tp[name][1]
            a = a if name == tl.lenet.LAYERS[-1][0] else F.relu(a)
    ref = F.cross_entropy(a, torch.tensor(labels))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    assert set(grads) == set(tp) == {"CONV1", "CONV2", "FC3", "FC4", "softmax"}
    for name, (dw, db) in grads.items():
        for got, want, what in ((dw, tp[name][0].grad, "weight"), (db, tp[name][1].grad, "bias")):
            want = want.numpy()
            assert got.shape == want.shape, (name, what)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{name} {what}")
            assert np.abs(want).max() > 1e-3, f"{name} {what}: a vanishing gradient tests nothing"
