"""Choices made by measurement, remembered on disk (cudnn.benchmark, kept across processes).

A :class:`DiskCache` maps a string key, which names everything the choice depends on (device, kernel
sources, the spec), to the winning candidate and the times that made it win. The file is JSON; it is read
once per process, and every new entry is written back by writing a temporary file in the same directory
and ``os.replace``-ing it over the old one, after merging in whatever other processes wrote meanwhile. A
file that cannot be read or parsed (truncated, corrupted, from another version) is ignored and rebuilt,
never trusted: the worst a bad cache can cost is one more measurement.

``FASTCONV_AUTOTUNE=0`` turns measuring off (backends then use their documented default);
``FASTCONV_AUTOTUNE_CACHE`` names the file (default ``~/.cache/fastconv/autotune-<backend>.json``); an
empty value keeps choices in memory only.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import Dict, Optional

FORMAT = 1


def enabled() -> bool:
    return os.environ.get("FASTCONV_AUTOTUNE", "1") != "0"


def default_path(backend: str) -> Optional[str]:
    env = os.environ.get("FASTCONV_AUTOTUNE_CACHE")
    if env is not None:
        return env or None
    return os.path.join(os.path.expanduser("~"), ".cache", "fastconv", f"autotune-{backend}.json")


def _read(path: Optional[str]) -> Dict[str, dict]:
    """The entries of the file at ``path``; {} when it is missing or unreadable in any way."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("choice"), str)}


class DiskCache:
    """A thread-safe key -> entry map backed by one JSON file (see the module docstring)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self._lock = threading.Lock()
        self._entries: Optional[Dict[str, dict]] = None

    def _loaded(self) -> Dict[str, dict]:
        if self._entries is None:
            self._entries = _read(self.path)
        return self._entries

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            return self._loaded().get(key)

    def put(self, key: str, entry: dict) -> None:
        with self._lock:
            entries = self._loaded()
            entries[key] = entry
            if not self.path:
                return
            merged = _read(self.path)      # keep what other processes added since we read the file
            merged.update(entries)
            self._entries = merged
            try:
                d = os.path.dirname(self.path) or "."
                os.makedirs(d, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=d)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump({"format": FORMAT, "entries": merged}, f, indent=1, sort_keys=True)
                    os.replace(tmp, self.path)
                except BaseException:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                    raise
            except OSError:
                pass  # a read-only home still gets the in-memory choice

    def entries(self) -> Dict[str, dict]:
        with self._lock:
            return dict(self._loaded())

    def clear_memory(self) -> None:
        with self._lock:
            self._entries = None
