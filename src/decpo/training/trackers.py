"""Experiment trackers (``train.report_to``): TensorBoard, W&B and the other integrations of transformers,
built before the model loads and writing under the run folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import get_reporting_integration_callbacks

from decpo.config import ConfigError


def report_to(t) -> str | list[str]:
    """``train.report_to`` in the form `TrainingArguments` takes: ``"none"``, ``"all"`` or a list of names."""
    names = list(t.report_to)
    return names[0] if names in (["none"], ["all"]) else names


def tracker_callbacks(t, output_dir: Path) -> list:
    """One callback per tracker of ``train.report_to`` (none: ``[]``), built before the model loads so that
    a tracker that is not installed stops the run at once. TensorBoard writes into
    ``<output_dir>/<train.logging_dir>``, not transformers' default ``runs/<date>_<host>``."""
    try:
        callbacks = [cls() for cls in get_reporting_integration_callbacks(report_to(t))]
    except (RuntimeError, ImportError, ModuleNotFoundError) as e:  # the integration's package is missing
        raise ConfigError(f"train.report_to={list(t.report_to)}: {e} (`pip install decpo[trackers]`)") from e
    for cb in callbacks:
        if isinstance(cb, TensorBoardCallback) and t.logging_dir:
            cb.logging_dir = str(output_dir / Path(t.logging_dir).expanduser())  # an absolute one replaces
    return callbacks


@contextlib.contextmanager
def tracker_env(output_dir: Path) -> Iterator[None]:
    """W&B's files go under the run folder (``<output_dir>/wandb``) unless ``$WANDB_DIR`` says otherwise."""
    saved = os.environ.get("WANDB_DIR")
    if saved is None:
        os.environ["WANDB_DIR"] = str(output_dir)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_DIR", None)
