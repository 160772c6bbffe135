"""A busy machine on purpose: child processes that each keep one CPU core busy while a run is timed
(``fastconv bench --busy-cores N``): another process holding cores, as on any laptop or shared
server.

Each child is a separate Python process (``subprocess``, not a fork of this one: a fork would copy the
Numba and OpenMP thread state of a process that has run kernels) that spins in a pure-Python loop at
normal priority, pinned to one core where the OS lets a process choose (Linux: the last ``N`` cores this
process may use), so that "one core busy" means the same core for the whole run. :func:`busy_cores`
starts them before the timing and stops them after it, also when the run raises or is interrupted
(Ctrl-C); a child whose parent dies without stopping it (``kill -9``) notices within milliseconds that
its parent changed and exits, so no spinner outlives the run. What they did is recorded:
:meth:`Busy.record` (the report's ``settings.busy``): how many, their cores, and the CPU seconds each
used over the seconds it ran: the share of its core it got. A child competes at normal priority, as
another user's process would: where one of the run's own threads (or anything else) wants the same core,
the scheduler shares it, so the share is 1.0 only when nothing else wanted that core (on a quiet 2-core
machine with a 2-thread run, expect about 0.5-0.9; on a machine already loaded by others, less).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import List, Optional

#: the child: pin itself (argument: the core, or -1), say it is running, then spin until its parent is gone
CHILD = r"""
import os, sys
core, parent = int(sys.argv[1]), os.getppid()
if core >= 0 and hasattr(os, "sched_setaffinity"):
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        pass
sys.stdout.write("spinning\n")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(20000):
        pass
"""

#: seconds to wait for a child to stop after SIGTERM before it is killed
STOP_TIMEOUT_S = 5.0


def _usable_cores() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds process ``pid`` has used (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Busy:
    """The spinning children of one :func:`busy_cores` block."""

    def __init__(self, n: int):
        self.n = n
        self.procs: List[subprocess.Popen] = []
        self.cores: List[Optional[int]] = []
        self.started = self.stopped = None
        self.cpu_s: List[Optional[float]] = []

    def start(self) -> None:
        usable = _usable_cores()
        pin = hasattr(os, "sched_setaffinity") and self.n < len(usable)
        for i in range(self.n):
            core = usable[-1 - i] if pin else None
            p = subprocess.Popen([sys.executable, "-I", "-S", "-c", CHILD, str(-1 if core is None else core)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
            self.procs.append(p)
            self.cores.append(core)
            if p.stdout.readline().strip() != "spinning":        # it is spinning before anything is timed
                raise RuntimeError(f"--busy-cores: child process {p.pid} did not start (exit {p.wait()})")
        self.started = time.monotonic()

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`) and reap it."""
        if self.stopped is None and self.started is not None:
            self.stopped = time.monotonic()
        self.cpu_s = [_cpu_seconds(p.pid) if p.poll() is None else None for p in self.procs]
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()

    @property
    def pids(self) -> List[int]:
        return [p.pid for p in self.procs]

    def record(self) -> dict:
        """The report's ``settings.busy``: ``cores`` (how many children), ``pinned`` (the core each was
        pinned to, None where not), ``seconds`` (how long they ran), ``held`` (each child's CPU seconds
        over those seconds: the share of its core it got, module docstring; None where unknown) and
        ``how``."""
        wall = (self.stopped - self.started) if self.started is not None and self.stopped is not None else None
        held = [round(c / wall, 3) if c is not None and wall else None for c in self.cpu_s]
        return {"cores": self.n, "pinned": self.cores, "seconds": wall, "held": held,
                "how": "a child Python process per core spinning in a pure-Python loop at normal priority, "
                       "pinned to its core where the OS allows, started before the first case and stopped "
                       "after the last"}


#: the report's ``settings.busy`` of a run without busy children
QUIET = {"cores": 0, "pinned": [], "seconds": None, "held": [], "how": "no busy child process (--busy-cores 0)"}


@contextlib.contextmanager
def busy_cores(n: int):
    """``with busy_cores(n) as busy:`` ``n`` child processes each keep one core busy inside the block and
    are stopped when it ends, however it ends; ``busy.record()`` says what they did (module docstring).
    ``n`` 0: nothing is started. ValueError when ``n`` is negative or not below the number of usable
    cores (a run needs a core of its own)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"busy_cores must be a non-negative integer, got {n!r}")
    usable = len(_usable_cores())
    if n and n >= usable:
        raise ValueError(f"busy_cores={n} would leave the run no core of its own: this process may use "
                         f"{usable} core(s)")
    busy = Busy(n)
    try:
        if n:
            busy.start()
        yield busy
    finally:
        busy.stop()
