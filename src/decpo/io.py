"""Atomic file output: write to a temporary name in the same folder, then rename.

A reader (or a resumed run) never sees a half-written file, and the file gets the mode a plain ``open``
would give it (``0o666`` less the umask), not the ``0o600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


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


def disk_full_error(path: str | Path) -> OSError:
    """The one-line error of a full disk, naming what was being written and what to do (a write's own
    ``[Errno 28] No space left on device`` names no file)."""
    error = OSError(
        f"no space left on the device while writing {path}: free some space there (or choose another output "
        "folder) and rerun the same command, which resumes"
    )
    error.errno = errno.ENOSPC
    return error


def named_write_error(error: OSError, path: str | Path) -> OSError:
    """``error`` raised while writing ``path``, with the path when it names none."""
    if error.errno == errno.ENOSPC:
        return disk_full_error(path)
    if error.filename is None:
        return OSError(error.errno, error.strerror or str(error), str(path))
    return error


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise named_write_error(e, path) from e
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
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise named_write_error(e, path) from e


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
LOCK_FILE = ".decpo.lock"  # the lock of an output folder (`output_lock`), left only by a process that died
START_FILES = frozenset(
    {"config.yaml", "env.json", "primary.json", "reg_weight.json", "stages.json", LOCK_FILE}
)


@contextlib.contextmanager
def removed_if_start_fails(directory: str | Path) -> Iterator[None]:
    """Remove ``directory`` (and the parents made for it) when the body raises, if this call created it and
    it holds nothing but `START_FILES` and empty folders; a folder that existed before, or that a concurrent
    start made and holds (`OutputLocked`), is never touched."""
    directory = Path(directory).absolute()
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        yield
    except OutputLocked:
        raise  # another start made the folder and holds it: its files are not ours to remove
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
    # the path as written: with ``..`` in it (``out/new/../run``), ``mkdir(parents=True)`` also made ``out/new``,
    # a parent of ``out/new/..`` that no resolved path names; ``..`` itself is never removed
    for parent in directory.parents if top is not None else ():
        if parent == top.parent:
            break
        if parent.name == "..":
            continue
        if not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()
    return True


# --- one writer per output ------------------------------------------------------------------------------------


class OutputLocked(OSError):
    """Another live process writes to this output (an `OSError`: the command line prints it in one line)."""


def file_lock_path(output: str | Path) -> Path:
    """The lock file of an output file (``pairs.jsonl``, whose side files share it): ``.<name>.lock`` beside it.
    An output folder's lock is ``<folder>/.decpo.lock`` (`LOCK_FILE`)."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    """The record a lock file holds (`output_lock` writes it), or {} when empty or unreadable."""
    try:
        raw = os.pread(fd, 4096, 0)
        record = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"{holder.get('command', 'decpo')} (pid {holder['pid']} on host {holder.get('host', '?')}, since {since})"


def _try_lock(fd: int, path: Path, what: str, wait: bool) -> bool:
    """Lock ``fd`` (the lock file ``path``): True when locked, False when the file system has no locks (the
    holder named in the file then decides); `OutputLocked` when another process holds it and not ``wait``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        holder = _describe(_read_holder(fd))
        if not wait:
            raise OutputLocked(
                f"{what} is in use by {holder}: one writer at a time; wait for it to finish, or write "
                f"elsewhere (lock file {path})"
            ) from None
        logger.info("%s is in use by %s: waiting for it", what, holder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    holder = _read_holder(fd)
    here = holder.get("host") == socket.gethostname()
    if holder.get("pid") and holder["pid"] != os.getpid() and (not here or _pid_alive(int(holder["pid"]))):
        raise OutputLocked(f"{what} is in use by {_describe(holder)} (file system without locks: {path})")
    return False


@contextlib.contextmanager
def output_lock(path: str | Path, what: str, command: str = "decpo", wait: bool = False) -> Iterator[None]:
    """Hold the advisory lock file ``path`` (``<folder>/.decpo.lock``, or `file_lock_path` of an output file)
    for the body, so that one process at a time writes to that output; the file names the holder (pid, host,
    ``command``, since when) and is removed at the end.

    Another live holder: `OutputLocked` naming it (``wait``: wait for it instead, as a shared cache entry does).
    The kernel drops the lock of a process that dies, so a stale lock file (a dead pid) is simply taken over.
    ``what`` names the output in messages. Creates the folder that holds the lock file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            locked = _try_lock(fd, path, what, wait)
            # a holder that just finished removed the file (and another may have made it anew): lock the file
            # that is there now
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    old = _read_holder(fd)
    if old.get("pid"):
        logger.info("%s: taking over the lock left by %s, which no longer holds it", what, _describe(old))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    try:
        yield
    finally:
        if locked or _read_holder(fd).get("pid") == os.getpid():
            path.unlink(missing_ok=True)  # while still holding it: a waiting process then locks a fresh file
        os.close(fd)
