"""Running an external tool (nvcc, g++, c++filt): the one place fastconv starts a compiler.

Starting a process can fail for reasons that say nothing about the command: the kernel refuses a fork for
a moment (``EAGAIN``, ``ENOMEM``), or, as seen on a sandboxed CI VM while other threads were spawning too,
the child's ``exec`` reports ``EFAULT`` ("Bad address") for a path that exists and runs on the next try.
:func:`run` retries only those errors, a few times with a short pause, and otherwise behaves exactly like
``subprocess.run``: a missing program (``ENOENT``), a permission error and a non-zero exit are never
retried, and the last error is raised unchanged when every attempt failed.
"""
from __future__ import annotations

import errno
import subprocess
import time
from typing import Sequence

#: errno values of a failed process start that are worth one more try
TRANSIENT = frozenset({errno.EFAULT, errno.EAGAIN, errno.ENOMEM, errno.EINTR})
ATTEMPTS = 4
PAUSE_S = 0.2


def run(cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)``, started again when the start itself failed transiently."""
    for attempt in range(ATTEMPTS):
        try:
            return subprocess.run(cmd, **kwargs)
        except OSError as e:
            if e.errno not in TRANSIENT or attempt == ATTEMPTS - 1:
                raise
        time.sleep(PAUSE_S * (attempt + 1))
    raise AssertionError("unreachable")
