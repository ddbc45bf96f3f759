"""The leaf `decpo.io`: atomic writes give the mode the umask allows; a full disk names the file being written."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from decpo.io import append_jsonl, atomic_write_json, atomic_write_text, current_umask


@pytest.fixture
def umask():
    """Set the process's umask for one test, and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(
    ("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"]
)
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})  # a new folder too
    for path in (tmp_path / "a.txt", tmp_path / "sub" / "b.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    # a file replaced keeps no mode of its own: the umask decides again
    umask(0o022)
    atomic_write_text(tmp_path / "a.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write's error names no file

    monkeypatch.setattr("decpo.io.os.fsync", full)
    log = tmp_path / "metrics.jsonl"
    with pytest.raises(OSError, match=f"no space left on the device while writing {log}: free some space"):
        append_jsonl(log, {"step": 1})
    log.unlink()
    target = tmp_path / "results.json"
    with pytest.raises(OSError, match=f"while writing {target}: ") as e:
        atomic_write_json(target, {"a": 1})
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary file left
