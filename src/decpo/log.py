"""The logging set-up shared by the command line and the job workers: one format, third-party chatter quiet,
and dependency warnings and log lines a user cannot act on silenced."""

from __future__ import annotations

import logging
import warnings

# libraries whose info-level messages drown decpo's own
QUIET = ("transformers", "datasets", "accelerate", "peft", "trl", "httpx")


# (category, start of the message) of warnings that no setting of decpo's changes: transformers' renaming of
# `gradient_checkpointing` (TRL and the Trainer read the old names themselves), and peft's look-up of the config
# of decpo's in-process tiny model (no file, on the Hub or here, has its name) at each checkpoint
UNACTIONABLE_WARNINGS = (
    (FutureWarning, r"`(is_)?gradient_checkpointing` is deprecated"),
    (UserWarning, r"Could not find a config file in tiny-random-llama - "),
    (UserWarning, r"Unable to fetch remote file due to .* in tiny-random-llama\."),
)


# (logger, start of the message) of library log lines a user cannot act on: DeepSpeed's report of the accelerator
# it detected, at its import through accelerate (decpo picks its device itself; DeepSpeed is only used when asked
# for), and transformers' note that the checkpoints' mtimes are under a second apart (a fast run saves them so;
# it then orders them by step number, which is the right order)
UNACTIONABLE_LOG_LINES = (
    ("DeepSpeed", "Setting accelerator to "),
    ("DeepSpeed", "Setting ds_accelerator to "),
    ("transformers.trainer_utils", "mtime may not be reliable on this filesystem"),
)


class _DropLines(logging.Filter):
    """Drops the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_log_lines() -> None:
    """Drop `UNACTIONABLE_LOG_LINES` on their own loggers (the lines the loggers write themselves, whatever their
    handlers; nothing else of theirs); once per logger, however often it is called."""
    for name in dict.fromkeys(name for name, _ in UNACTIONABLE_LOG_LINES):
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, _DropLines)]
        logger.addFilter(_DropLines(tuple(m for n, m in UNACTIONABLE_LOG_LINES if n == name)))


def quiet_warnings() -> None:
    """Silence `UNACTIONABLE_WARNINGS` (the command line's processes; a library user keeps their own filters)."""
    for category, message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def setup_logging(verbose: bool = False) -> None:
    """Log decpo's INFO lines (DEBUG with ``verbose``) as ``HH:MM:SS LEVEL module: message``."""
    logging.basicConfig(
        level=logging.INFO if not verbose else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_warnings()
    quiet_log_lines()
