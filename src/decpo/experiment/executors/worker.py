"""What runs inside a job: `run_stage` runs one stage in the worker process and records that it finished
(``done.json``), which the driver reads back with `finished_result` after a restart."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decpo.experiment.executors.base import DONE_FILE
from decpo.io import atomic_write_json
from decpo.log import setup_logging

logger = logging.getLogger(__name__)


def _log_to(log: str) -> None:
    """Send this process's stdout and stderr to the file ``log`` (appending)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)  # launched subprocesses (an N-process training) write there too


def run_stage(
    fn: Callable[[], Any],
    name: str,
    key: str,
    folder: str,
    threads: int | None = None,
    log: str | None = None,
) -> dict[str, Any]:
    """The job: run one stage in this (worker) process; returns its start and end times.

    ``threads``: torch's intra-op threads; None: torch's default (`Resources.threads`). ``log``: send this
    process's stdout and stderr there (Ray; submitit files them itself). Writes ``done.json`` (with ``key``)
    at the end."""
    if log is not None:
        _log_to(log)
    setup_logging(verbose=False)
    if threads:
        import torch  # lazy: torch loads slowly, and only a job with a thread count needs it here

        torch.set_num_threads(threads)
    started = time.time()
    logger.info("%s: started on %s, pid %d (key %s)", name, socket.gethostname(), os.getpid(), key)
    try:
        fn()
    except Exception:
        if log is not None:  # Ray returns the error to the driver without a word in the log
            logger.exception("%s failed", name)
        raise
    ended = time.time()
    result = {"started_at": round(started, 3), "ended_at": round(ended, 3), "host": socket.gethostname()}
    atomic_write_json(Path(folder) / DONE_FILE, {"key": key, **result})
    logger.info("%s: done in %.1f s", name, ended - started)
    return result


def finished_result(folder: Path, key: str) -> dict[str, Any] | None:
    """What a job that finished stage ``key`` wrote in ``folder`` (`run_stage`), or None."""
    path = folder / DONE_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return {k: v for k, v in done.items() if k != "key"} if done.get("key") == key else None
