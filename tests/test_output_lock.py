"""One writer per output: the advisory lock (`decpo.io.output_lock`) refuses a second live writer naming its
pid and host, takes over a stale lock, and `decpo train`, `run`, `sweep` and `pairs` take it before any write."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from decpo.cli import main
from decpo.io import LOCK_FILE, OutputLocked, file_lock_path, output_lock

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
HOLDER = """
import sys
from decpo.io import output_lock
with output_lock(sys.argv[1], "the test's output", "holder"):
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
"""


@contextlib.contextmanager
def held(lock: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock file ``lock`` until the block ends."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_writer_naming_pid_and_host(tmp_path):
    lock = tmp_path / "run" / LOCK_FILE
    with held(lock) as holder:
        with pytest.raises(OutputLocked) as refused, output_lock(lock, "output folder run"):
            pytest.fail("the body ran under another's lock")
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert message.startswith("output folder run is in use by holder") and "\n" not in message
        assert json.loads(lock.read_text())["pid"] == holder.pid  # the holder's record is left alone
    assert not lock.exists()  # the holder finished: its lock file is gone
    with output_lock(lock, "output folder run"):  # and the folder is free again
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    lock = tmp_path / LOCK_FILE
    pid = dead_pid()
    record = {"pid": pid, "host": socket.gethostname(), "command": "decpo train", "since": 0}
    lock.write_text(json.dumps(record))  # what a killed holder leaves behind
    with caplog.at_level(logging.INFO, logger="decpo.io"), output_lock(lock, "output folder x"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by decpo train (pid {pid} on host" in caplog.text
    assert not lock.exists()


def test_a_waiting_writer_runs_after_the_holder(tmp_path):
    """``wait``: a shared cache entry's second builder waits for the first instead of failing."""
    lock = file_lock_path(tmp_path / "pairs.jsonl")
    assert lock == tmp_path / ".pairs.jsonl.lock"
    with held(lock) as holder:
        threading.Timer(0.5, holder.stdin.close).start()
        with output_lock(lock, "pairs cache entry", wait=True):
            assert holder.wait(timeout=60) == 0  # it had finished before this body ran
            assert json.loads(lock.read_text())["pid"] == os.getpid()


def _refused(monkeypatch):
    """The work of each command, replaced: a start that gets past the lock fails the test at once."""
    import decpo.evaluation.runner as eval_runner
    import decpo.experiment.recipes as recipes
    import decpo.pairs.sampling as pairs_sampling
    import decpo.probes.runner as probe_runner
    import decpo.training.run as training

    def wrote(*args, **kwargs):
        raise AssertionError("the second writer started its work")

    for module, name in (
        (training, "train"),
        (recipes, "run_experiment"),
        (recipes, "sweep_strength"),
        (pairs_sampling, "build_pairs"),
        (eval_runner, "evaluate"),
        (probe_runner, "probe_models"),
    ):
        monkeypatch.setattr(module, name, wrote)


@pytest.mark.parametrize("command", ["train", "run", "sweep", "pairs", "eval", "probe"])
def test_a_second_command_on_a_held_output_is_refused_before_any_write(
    tmp_path, capsys, monkeypatch, command
):
    _refused(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    if command == "pairs":
        (tmp_path / "prompts.txt").write_text("Once upon a time\n")
        output = out / "pairs.jsonl"
        lock = file_lock_path(output)
        argv = ["pairs", "--model", "tiny-random-llama", "--prompts", str(tmp_path / "prompts.txt")]
        argv += ["--output", str(output)]
    elif command in ("eval", "probe"):
        lock = out / LOCK_FILE
        argv = [command, "--model", "tiny-random-llama", "--output-dir", str(out)]
        argv += ["--task", "synthetic"] if command == "eval" else ["--num-texts", "4"]
    else:
        lock = out / LOCK_FILE
        argv = [command, "--config", SMOKE, "--output-dir", str(out)]
        argv += ["--reg-weights", "0,1"] if command == "sweep" else []
    with held(lock) as holder:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("decpo: error: ") and "\n" not in err and "Traceback" not in err
        assert f"is in use by holder (pid {holder.pid} on host {socket.gethostname()}" in err
        assert [p.name for p in out.iterdir()] == [lock.name]  # nothing written beside the holder's lock


def test_a_refused_start_never_removes_the_holders_new_folder(tmp_path):
    """Two starts on a folder that does not exist yet: both see it missing, the first makes it and holds the
    lock, the second is refused; its clean-up must leave the holder's folder (config, lock) alone."""
    from decpo.io import removed_if_start_fails

    out = tmp_path / "new" / "run"
    refused = removed_if_start_fails(out)  # the second start looks before the first has made anything
    refused.__enter__()
    with output_lock(out / LOCK_FILE, "run folder"):
        (out / "config.yaml").write_text("x: 1\n")  # the holder's start files
        with pytest.raises(OutputLocked):
            try:
                with output_lock(out / LOCK_FILE, "run folder"):
                    pass
            except OutputLocked as e:
                refused.__exit__(type(e), e, e.__traceback__)
                raise
        assert (out / "config.yaml").exists() and (out / LOCK_FILE).exists()
