"""The training progress bar: named `train` with the run's total steps in a terminal, log lines printed above it
(through tqdm) rather than into its line; no bar out of a terminal, under TQDM_DISABLE or train.disable_tqdm."""

from __future__ import annotations

import io
import logging
import re

import pytest
from transformers import TrainerControl, TrainerState
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from decpo.training.callbacks import QuietProgressCallback

from conftest import make_trainer


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, keeping what is written."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """A function that makes sys.stderr a terminal, progress bars on, with the CLI's console log handler
    (`decpo.log.setup_logging`) on the root logger (called in the test: pytest's capture resets sys.stderr after
    the fixtures); the root's handlers are restored after the test."""
    saved = logging.root.handlers[:]

    def open_terminal() -> Terminal:
        stream = Terminal()
        monkeypatch.setattr("sys.stderr", stream)
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.root.addHandler(handler)
        return stream

    yield open_terminal
    logging.root.handlers = saved


def test_the_bar_is_named_train_and_counts_the_run_s_steps(terminal):
    stream = terminal()
    bar = QuietProgressCallback()
    bar.on_train_begin(None, TrainerState(max_steps=7), TrainerControl())
    try:
        assert bar.training_bar.desc.rstrip(": ") == "train" and bar.training_bar.total == 7
        assert not bar.training_bar.disable
    finally:
        bar.on_train_end(None, TrainerState(max_steps=7), TrainerControl())
    assert re.search(r"train: +0%\|.*\| 0/7", stream.getvalue())


def test_a_log_line_while_the_bar_is_open_prints_on_its_own_line(terminal):
    stream = terminal()
    console = logging.root.handlers[-1]
    state = TrainerState(max_steps=7)
    bar = QuietProgressCallback()
    bar.on_train_begin(None, state, TrainerControl())
    try:
        logging.getLogger("decpo.training.callbacks").warning("step 1/7 | loss 0.69")
    finally:
        bar.on_train_end(None, state, TrainerControl())
    assert logging.root.handlers[-1] is console  # the console handler is back when training ends
    # the terminal's lines, as carriage returns and newlines cut them: the bar was drawn, the log line is one
    # of them, whole, and the bar is drawn again after it (with the console handler writing straight to the
    # stream, the line lands after the bar's text on the bar's line: seen failing so)
    lines = re.split(r"[\r\n]", stream.getvalue())
    line = "WARNING decpo.training.callbacks: step 1/7 | loss 0.69"
    assert line in lines, lines
    at = lines.index(line)
    bar_line = re.compile(r"train: +0%\|.*\| 0/7")
    assert any(bar_line.search(x) for x in lines[:at]) and any(bar_line.search(x) for x in lines[at + 1 :]), (
        lines
    )


@pytest.mark.parametrize("tty, env", [(False, None), (True, "1")])
def test_out_of_a_terminal_or_under_tqdm_disable_no_bar_and_no_handler_replaced(monkeypatch, tty, env):
    # a log redirected to a file gets the log lines, not the bar's redraws
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    saved = logging.root.handlers[:]
    bar = QuietProgressCallback()
    bar.on_train_begin(None, TrainerState(max_steps=3), TrainerControl())
    try:
        assert bar.training_bar.disable and logging.root.handlers == saved
    finally:
        bar.on_train_end(None, TrainerState(max_steps=3), TrainerControl())
    assert stream.getvalue() == ""


def test_disable_tqdm_leaves_no_bar_and_no_print_of_every_log(tmp_path):
    from decpo.training.build import _order_callbacks

    for disable in (True, False):
        trainer = make_trainer(tmp_path, disable_tqdm=disable)
        _order_callbacks(trainer, [], None)
        kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
        assert PrinterCallback not in kinds and ProgressCallback not in kinds
        assert (QuietProgressCallback in kinds) is not disable, kinds
