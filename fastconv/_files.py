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


@contextlib.contextmanager
def replacing(path: str, *, prefix: str = ".fastconv-", suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` for the caller (or a program it runs) to write; when the block
    ends normally it replaces ``path``, when it raises it is removed. The directory is created if needed;
    OSError when it cannot be written."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=d)
    os.close(fd)
    try:
        yield tmp
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
