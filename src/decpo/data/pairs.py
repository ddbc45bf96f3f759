"""Generic preference pairs: validate records, collect the valid ones, load them from any source that
`decpo.data.readers` reads (a file, a folder, a saved dataset, a Hub dataset), split them into train and eval,
and lay a prompt and answer out as chat messages.

A record is ``{"prompt", "chosen", "rejected", ...extra fields}`` in TRL's *standard* format (three
strings) or *conversational* format (``prompt`` a list of ``{"role", "content"}`` messages, ``chosen`` and
``rejected`` lists of assistant messages). Every record is validated before anything is returned, so a
training run never starts on bad data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decpo.data.errors import DataError
from decpo.data.readers import RawItem, read_source

logger = logging.getLogger(__name__)

PAIR_FIELDS = ("prompt", "chosen", "rejected")
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
ON_ERROR = ("raise", "skip")


def _check_messages(value: list[Any], where: str, field: str) -> None:
    """Check a conversational message list; ``chosen``/``rejected`` must hold assistant messages only."""
    if not value:
        raise DataError("empty message list", where=where, field=field)
    for i, message in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"expected a message dict, got {type(message).__name__}", where=where, field=name)
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES:
            raise DataError(f"role must be one of {MESSAGE_ROLES}, got {role!r}", where=where, field=name)
        if field != "prompt" and role != "assistant":
            raise DataError(f"expected an assistant message, got role {role!r}", where=where, field=name)
        if not isinstance(content, str):
            kind = type(content).__name__
            raise DataError(f"content must be a string, got {kind}", where=where, field=f"{name}.content")
        if not content.strip():
            raise DataError("empty string", where=where, field=f"{name}.content")


def validate_pair(record: dict[str, Any], where: str) -> None:
    """Raise DataError (naming ``where`` and the field) unless ``record`` is a usable preference pair.

    Args:
        record: ``{prompt, chosen, rejected, ...}``, all three strings or all three message lists.
        where: the record's position, e.g. ``"data.jsonl line 3"``.
    """
    if not isinstance(record, dict):
        raise DataError(f"expected a record (dict), got {type(record).__name__}", where=where)
    for field in PAIR_FIELDS:
        if field not in record:
            raise DataError("missing field", where=where, field=field)
        value = record[field]
        if isinstance(value, str):
            if not value.strip():
                raise DataError("empty string", where=where, field=field)
        elif isinstance(value, list):
            _check_messages(value, where, field)
        else:
            kind = type(value).__name__
            raise DataError(f"expected a string or a list of messages, got {kind}", where=where, field=field)
    if len({isinstance(record[f], str) for f in PAIR_FIELDS}) > 1:
        raise DataError(
            "mixes standard (string) and conversational (message list) formats", where=where, field="chosen"
        )
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        chosen, rejected = chosen.strip(), rejected.strip()
    if chosen == rejected:
        raise DataError("chosen and rejected are identical", where=where, field="chosen")


def collect_pairs(
    items: Sequence[RawItem],
    *,
    source: str,
    on_error: str = "raise",
    convert: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Convert (optionally) and validate every raw item; raise on the first bad one or skip bad ones.

    Args:
        items: ``(where, raw record or DataError)`` pairs, as returned by `decpo.data.readers.read_raw`.
        source: the file or dataset named in the skip warning.
        on_error: ``"raise"`` (first bad item raises) or ``"skip"`` (bad items are dropped, one warning on
            logger ``decpo.data`` gives the count and the first reasons; DataError if none is left).
        convert: maps a raw record and its position to a pair record; may raise DataError.
    """
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    records: list[dict[str, Any]] = []
    reasons: list[str] = []
    for where, item in items:
        try:
            if isinstance(item, DataError):
                raise item
            record = convert(item, where) if convert is not None else item
            validate_pair(record, where)
        except DataError as err:
            if on_error == "raise":
                raise
            reasons.append(str(err))
            continue
        records.append(record)
    if reasons:
        logger.warning(
            "%s: skipped %d of %d records; first reasons: %s",
            source,
            len(reasons),
            len(items),
            " | ".join(reasons[:3]),
        )
    if not records:
        raise DataError(f"no valid records left (skipped {len(reasons)}): {reasons[0]}", where=source)
    return records


def load_pairs(
    path: str | Path, *, on_error: str = "raise", split: str | None = None
) -> list[dict[str, Any]]:
    """Load and validate preference pairs from a file, a folder or a Hugging Face Hub dataset.

    Args:
        path: one of
            - a file: ``.jsonl``, ``.json`` (a list of objects), ``.csv`` (columns prompt, chosen, rejected;
              standard format only), their ``.gz`` forms, or ``.parquet``;
            - a folder of such files (the split's files in name order, each read as a file; the splits as
              ``datasets.load_dataset(folder)`` finds them from the file names: see
              `decpo.data.readers._load_data_folder`), or a directory written by ``datasets.Dataset.save_to_disk``
              / ``DatasetDict.save_to_disk``;
            - a Hugging Face Hub dataset id ``org/name``, when no such local path exists, loaded with
              ``datasets.load_dataset`` (needs the Hub, or HF_HUB_OFFLINE=1 and a copy in the datasets cache).
            A folder or a Hub id may end in ``:split`` (``org/name:test``); without one, a folder's only split
            or else ``train``, a Hub dataset's ``train``.
        on_error: ``"raise"`` or ``"skip"``, see :func:`collect_pairs`.
        split: the split, as ``:split`` would name it (not both, unless the same).

    Returns:
        The records, extra fields kept, in file order. Every record is validated as a file's are; an error
        names the file (or ``org/name:split``) and the position in it.
    """
    source, items = read_source(path, split=split)
    return collect_pairs(items, source=source, on_error=on_error)


def split_train_eval(
    records: list[dict[str, Any]], eval_fraction: float = 0.1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split deterministically: the last ``ceil(eval_fraction * n)`` records are eval (the paper's split).

    Returns:
        ``(train, eval)``, new lists holding the same record objects.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n = len(records)
    # round() first so that e.g. 0.1 * 600 = 60.000000000000007 does not become 61.
    n_eval = math.ceil(round(eval_fraction * n, 9))
    if n_eval < 1 or n - n_eval < 1:
        raise DataError(f"cannot split {n} records with eval_fraction={eval_fraction}: a side would be empty")
    return records[: n - n_eval], records[n - n_eval :]


def chat_messages(prompt: str | None = None, answer: str | None = None) -> list[dict[str, str]]:
    """A text prompt and/or answer as the chat messages that ``data.chat_template`` trains on: the user's turn
    holds the prompt as it is, the assistant's turn the answer stripped of surrounding white space (the chat
    template lays out the turns). Training (`decpo.training.run.to_dataset`) and evaluation share it."""
    messages = [] if prompt is None else [{"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages
