"""Writing a file so that a reader never sees it half-written: the one place fastconv does it.

The data goes to a temporary file in the target's own directory, which then replaces the target with
``os.replace`` (atomic on POSIX and Windows within one file system). A crash or a full disk leaves the old
file, or none, never a truncated one; the temporary file is removed on any failure.
"""
from __future__ import annotations

import os
import tempfile
from typing import Union


def atomic_write(path: str, data: Union[bytes, str], *, prefix: str = ".fastconv-") -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), creating its directory if needed.
    Raises OSError when the directory cannot be written."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
