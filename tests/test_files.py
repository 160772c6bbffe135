"""Atomic file writes (fastconv/_files.py): readers never see half a file, failures leave the old one."""
from __future__ import annotations

import os
import stat

import pytest

from fastconv._files import atomic_write, replacing


def test_replaces_whole_and_keeps_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(str(path), "one")
    atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_failure_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(str(path), "old")
    with pytest.raises(RuntimeError):
        with replacing(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("the writer died")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_permissions_are_a_plain_files_not_the_temporarys(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write(str(new), "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644          # 0666 & ~umask, as open() gives
        kept = tmp_path / "kept.json"
        kept.write_text("a")
        kept.chmod(0o640)
        atomic_write(str(kept), "b")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640          # a replaced file keeps its mode
    finally:
        os.umask(old)
