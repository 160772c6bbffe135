"""examples/lenet.py: the design table it prints matches the hand-derived numbers of the issue, the receptive
fields are 14 (CONV2) and 16 (POOL2), and the softmax outputs of its forward pass sum to 1."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lenet.py"

# hand-derived (the table): layer -> (activation shape, activation size, parameters)
EXPECTED = {
    "CONV1": ((28, 28, 8), 6272, 608),
    "POOL1": ((14, 14, 8), 1568, 0),
    "CONV2": ((10, 10, 16), 1600, 3216),
    "POOL2": ((5, 5, 16), 400, 0),
    "FC3": ((120,), 120, 48120),
    "FC4": ((84,), 84, 10164),
    "softmax": ((10,), 10, 850),
}
ROW = re.compile(r"^(\w+)\s+\(([\d, ]+)\)\s+(\d+)\s+(\d+)\s*$")


@pytest.fixture(scope="module")
def output():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--batch", "3"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_design_table(output):
    rows = {}
    for line in output.splitlines():
        m = ROW.match(line)
        if m:
            shape = tuple(int(v) for v in m.group(2).replace(" ", "").strip(",").split(","))
            rows[m.group(1)] = (shape, int(m.group(3)), int(m.group(4)))
    for name, want in EXPECTED.items():
        assert rows.get(name) == want, f"{name}: printed {rows.get(name)}, expected {want}"
    assert rows["input"] == ((32, 32, 3), 3072, 0)


def test_receptive_fields(output):
    assert "one CONV2 output sees 14x14 pixels" in output
    assert "one POOL2 output sees 16x16" in output


def test_softmax_sums_to_one(output):
    sums = [float(v) for v in re.findall(r"softmax sums to ([\d.]+)", output)]
    assert len(sums) == 3
    assert all(abs(s - 1.0) < 1e-5 for s in sums), sums
    diff = float(re.search(r"oracle's forward pass: ([\d.e+-]+)", output).group(1))
    assert diff < 1e-4
