"""Writing a file so that a reader never sees it half-written: the one place fastconv does it.

The data goes to a temporary file in the target's own directory, which then replaces the target with
``os.replace`` (atomic on POSIX and Windows within one file system). A crash or a full disk leaves the old
file, or none, never a truncated one; the temporary file is removed on any failure.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Union


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else by setting and
    restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str, *, prefix: str = ".fastconv-", suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` for the caller (or a program it runs) to write; when the block
    ends normally it replaces ``path``, when it raises it is removed. The directory is created if needed;
    OSError when it cannot be written. The new file gets the old one's permissions, or for a new file what
    a plain ``open`` would give (not the temporary file's private 0600)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=d)
    os.close(fd)
    try:
        yield tmp
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path: str, data: Union[bytes, str], *, prefix: str = ".fastconv-") -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8)."""
    with replacing(path, prefix=prefix) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
