"""The pairs a training run reads: train and eval records from the config (a pairs file or a built-in task),
validated before any model loads, and turned into the dataset TRL tokenizes.

Pairs sampled from the model (``pairs.source``) are built by the pairs step (``decpo pairs``, the pairs
stage of ``decpo run``, or ``decpo train`` before it trains); training is handed the file's path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset

from decpo.config import ConfigError, RunConfig
from decpo.data import DataError, chat_messages, load_pairs, load_task, split_train_eval
from decpo.training.launch import world_size

logger = logging.getLogger(__name__)


def _pairs_file(cfg: RunConfig, pairs_path: str | Path | None) -> str | None:
    """The pairs file to read: ``data.path``, or with ``pairs.source`` the built pairs at ``pairs_path``."""
    d = cfg.data
    if not cfg.pairs.source:
        return d.path
    if d.path:
        raise ConfigError(
            "set data.path (your pairs) or pairs.source (pairs sampled from the model), not both"
        )
    if pairs_path is None:
        raise ConfigError(
            f"pairs.source={cfg.pairs.source}: training reads pairs built beforehand; build them with "
            "`decpo pairs` (or let `decpo run` / `decpo train` build them) and pass their path "
            "(train(..., pairs_path=...))"
        )
    return str(pairs_path)


def load_records(cfg: RunConfig, pairs_path: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """Train and eval pairs, validated before any model is loaded.

    With ``pairs.source`` the pairs are read from ``pairs_path`` (the file the pairs step built); without it,
    a `ConfigError` names the step. Training never builds pairs itself.
    """
    d = cfg.data
    path = _pairs_file(cfg, pairs_path)
    if path:
        records = load_pairs(path, on_error=d.on_error)
        if d.eval_path:
            train, evals = records, load_pairs(d.eval_path, on_error=d.on_error)
        else:
            train, evals = split_train_eval(records, d.eval_fraction)
    else:
        kwargs = {
            "data_dir": d.data_dir,
            "seed": cfg.train.seed,
            "on_error": d.on_error,
            "synthetic_answer": d.synthetic_answer,
        }
        train = load_task(d.task, "train", **kwargs)
        evals = load_task(d.task, "eval", **kwargs)
    if d.max_train_samples:
        train = train[: d.max_train_samples]
    t = cfg.train
    needed = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size()
    if t.max_steps > 0 and len(train) > needed:
        # a run of max_steps sees only `needed` pairs: do not tokenize and precompute the rest
        logger.info("using the first %d of %d train pairs (max_steps x global batch)", needed, len(train))
        train = train[:needed]
    if d.max_eval_samples:
        evals = evals[: d.max_eval_samples]
    return train, evals


def to_dataset(records: list[dict], chat_template: bool) -> Dataset:
    """Keep the three TRL columns; wrap in messages when the chat template is asked for."""
    if chat_template and isinstance(records[0]["prompt"], str):
        rows = [
            {
                "prompt": chat_messages(r["prompt"]),
                "chosen": chat_messages(answer=r["chosen"]),
                "rejected": chat_messages(answer=r["rejected"]),
            }
            for r in records
        ]
    else:
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    return Dataset.from_list(rows)


def check_prompt_lengths(tokenizer, records: list[dict], max_length: int, split: str) -> None:
    """Count the pairs whose prompt alone fills ``max_length`` tokens: TRL drops them without a word.

    A logged, counted skip; an error when no pair would be left.
    """
    if not records or not isinstance(records[0]["prompt"], str):
        return
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in records])["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n >= max_length]
    if len(too_long) == len(records):
        raise DataError(
            f"every {split} prompt has {max_length} tokens or more (train.max_length); the longest has "
            f"{max(lengths)}: raise train.max_length"
        )
    if too_long:
        logger.warning(
            "%d of %d %s pairs have a prompt of train.max_length=%d tokens or more and are skipped (first: pair %d, "
            "%d tokens); raise train.max_length to keep them",
            len(too_long),
            len(records),
            split,
            max_length,
            too_long[0],
            lengths[too_long[0]],
        )
