"""benchmarks/cpu_issue14.py: every command it would run is one ``fastconv bench`` accepts, quiet and busy,
with the CPU goals; nothing is run (--dry-run)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fastconv import cli

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_issue14.py"


def _script():
    spec = importlib.util.spec_from_file_location("cpu_issue14", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_command_is_a_valid_bench_command(capsys):
    mod = _script()
    assert mod.main(["--dry-run", "--out", "OUT"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " -m fastconv.cli bench " in line]
    assert len(lines) == 2 * len(mod.RUNS)
    parser = cli.parser()
    for line in lines:
        argv = line.split(" -m fastconv.cli ", 1)[1].split()
        args = parser.parse_args(argv)
        assert args.device == "cpu" and args.threads == 2 and args.targets.endswith("targets_cpu.json")
        assert args.json.startswith("OUT/") and args.markdown.startswith("OUT/")
        assert (args.busy_cores == 1) == ("-busy1." in args.json)
    suites = {cli.parser().parse_args(["bench"] + a).suite for a in mod.RUNS.values()}
    assert suites == {"cpu-layers", "cpu-tiny", "cpu-networks"}


def test_unknown_runs_are_refused():
    with pytest.raises(SystemExit):
        _script().main(["--dry-run", "--runs", "layers,nonsense"])
