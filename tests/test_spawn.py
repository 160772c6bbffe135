"""fastconv._spawn.run: a process start that failed transiently is tried again; nothing else is."""
import errno
import subprocess
import sys

import pytest

from fastconv import _spawn


def _flaky(monkeypatch, errs):
    """subprocess.run raising the OSErrors in ``errs`` first, then running for real; returns the call log."""
    calls = []
    real = subprocess.run

    def fake(cmd, **kw):
        calls.append(cmd)
        if len(calls) <= len(errs):
            raise OSError(errs[len(calls) - 1], "injected", cmd[0])
        return real(cmd, **kw)

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(_spawn, "PAUSE_S", 0.0)
    return calls


CMD = [sys.executable, "-c", "print(6 * 7)"]


@pytest.mark.parametrize("err", sorted(_spawn.TRANSIENT))
def test_a_transient_start_failure_is_started_again(monkeypatch, err):
    calls = _flaky(monkeypatch, [err, err])
    proc = _spawn.run(CMD, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "42"
    assert len(calls) == 3


def test_every_attempt_failing_raises_the_last_error(monkeypatch):
    calls = _flaky(monkeypatch, [errno.EFAULT] * _spawn.ATTEMPTS)
    with pytest.raises(OSError) as e:
        _spawn.run(CMD)
    assert e.value.errno == errno.EFAULT and len(calls) == _spawn.ATTEMPTS


@pytest.mark.parametrize("err", [errno.ENOENT, errno.EACCES, errno.ENOEXEC])
def test_other_start_failures_are_not_retried(monkeypatch, err):
    calls = _flaky(monkeypatch, [err])
    with pytest.raises(OSError) as e:
        _spawn.run(CMD)
    assert e.value.errno == err and len(calls) == 1


def test_a_failing_command_is_run_once_and_its_status_returned(monkeypatch):
    calls = _flaky(monkeypatch, [])
    proc = _spawn.run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert proc.returncode == 3 and len(calls) == 1


def test_a_missing_program_still_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        _spawn.run(["fastconv-no-such-program-here"])
