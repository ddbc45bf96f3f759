"""The logging set-up shared by the command line and the job workers: one format, third-party chatter quiet,
and dependency warnings a user cannot act on silenced."""

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
