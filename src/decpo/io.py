"""Atomic file output: write to a temporary name in the same folder, then rename.

A reader (or a resumed run) never sees a half-written file, and the file gets the mode a plain ``open``
would give it (``0o666`` less the umask), not the ``0o600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``: no other
    thread sees a changed umask), else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes the file 0o600: results and configs must stay readable by a group on shared clusters
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_writable(directory: str | Path, min_free_bytes: int = 50 * 2**20) -> None:
    """Fail early, before any long work, when an output folder cannot be written or the disk is full."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # a name of its own: the processes of a data-parallel run check the same folder at the same time
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".decpo-write-test.")
        with os.fdopen(fd, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as e:
        raise OSError(f"output directory {directory} is not writable: {e}") from e
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    if free < min_free_bytes:
        raise OSError(f"output directory {directory} has only {free / 2**20:.0f} MiB free")


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object that is the same in every process and session."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# What a start writes before any work (the resolved config, the environment, the declared primary outcome,
# the stage log): a folder that holds nothing else was left by a start that failed.
START_FILES = frozenset({"config.yaml", "env.json", "primary.json", "reg_weight.json", "stages.json"})


@contextlib.contextmanager
def removed_if_start_fails(directory: str | Path) -> Iterator[None]:
    """Remove ``directory`` (and the parents made for it) when the body raises, if this call created it and
    it holds nothing but `START_FILES` and empty folders; a folder that existed before is never touched."""
    directory = Path(directory).absolute()
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        yield
    except Exception:
        if created:
            remove_failed_start(directory, top=created[-1])
        raise


def remove_failed_start(directory: Path, top: Path | None = None) -> bool:
    """Remove ``directory`` when it holds only `START_FILES` and empty folders, then its empty parents up to
    ``top``; True when removed."""
    if not directory.is_dir():
        return False
    if any(not p.is_dir() and p.name not in START_FILES for p in directory.rglob("*")):
        return False
    shutil.rmtree(directory)
    parent = directory.parent
    while top is not None and parent != top.parent and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True
