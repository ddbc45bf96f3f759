"""The logging set-up shared by the command line and the job workers: one format, third-party chatter quiet."""

from __future__ import annotations

import logging

# libraries whose info-level messages drown decpo's own
QUIET = ("transformers", "datasets", "accelerate", "peft", "trl", "httpx")


def setup_logging(verbose: bool = False) -> None:
    """Log decpo's INFO lines (DEBUG with ``verbose``) as ``HH:MM:SS LEVEL module: message``."""
    logging.basicConfig(
        level=logging.INFO if not verbose else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
