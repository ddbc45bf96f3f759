"""What a resumed run may trust: a folder's manifest (each file's size and sha256, written last at save), the
checksum of one file, and the append-only JSONL logs a rerun reads back (a torn last line is dropped).

A checkpoint folder is complete only when its manifest exists and every file it lists has the size and
sha256 it records: a kill while saving leaves no manifest, a full disk a short file, a flipped bit another
hash. Files not listed (a stray one) are not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from decpo.errors import DecPOError
from decpo.io import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST = "decpo-manifest.json"
_CHUNK = 1 << 20


class DamagedLogError(DecPOError, ValueError):
    """A line inside an append-only log is not JSON: not a torn end, so nothing of it is dropped silently."""


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """Write ``folder/decpo-manifest.json``: ``{"files": {relative path: {"size", "sha256"}}}`` of every file
    under ``folder`` (itself aside). Call it after every other file of the folder is written."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    path = folder / MANIFEST
    atomic_write_json(path, {"format": 1, "files": files})
    return path


def manifest_problem(folder: str | Path) -> str | None:
    """None when ``folder``'s manifest exists and every file it lists matches it, else what is wrong (naming
    the file)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return f"no {MANIFEST} (interrupted while saving)"
    try:
        files = json.loads(path.read_text())["files"]
        listed = {str(name): (int(v["size"]), str(v["sha256"])) for name, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for name, (size, sha) in listed.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, its manifest says {size} (truncated or rewritten)"
        if file_sha256(file) != sha:
            return f"{name} does not match its sha256 in {MANIFEST} (damaged)"
    return None


def read_jsonl_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of an append-only JSONL log. A torn last line (a kill or a full disk while appending) is
    dropped with a warning; a line before it that is not a JSON object raises `DamagedLogError` naming the
    file and the line. Blank lines are skipped."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as e:
            if i == len(numbered) - 1:
                logger.warning("%s: dropping its torn last line %d (%s)", path, n, e)
                break
            raise DamagedLogError(
                f"{path} line {n} is damaged ({e}); repair or delete that line, or delete the file"
            ) from e
        records.append(record)
    return records
