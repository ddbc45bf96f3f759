"""Generic preference pairs: read JSONL / JSON / CSV (optionally gzipped) or a saved dataset, validate, split.

A record is ``{"prompt", "chosen", "rejected", ...extra fields}`` in TRL's *standard* format (three
strings) or *conversational* format (``prompt`` a list of ``{"role", "content"}`` messages, ``chosen`` and
``rejected`` lists of assistant messages). Every record is validated before anything is returned, so a
training run never starts on bad data.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decpo.data.errors import DataError

logger = logging.getLogger("decpo.data")

PAIR_FIELDS = ("prompt", "chosen", "rejected")
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
ON_ERROR = ("raise", "skip")

# A raw item: its position ("data.jsonl line 3") and the parsed object, or the error met while parsing it
# (kept, not raised, so that on_error="skip" can skip that one item).
RawItem = tuple[str, "dict[str, Any] | DataError"]

_SURROGATE = re.compile("[\udc80-\udcff]")
_UTF8_BOM = b"\xef\xbb\xbf"


def _suffix(path: Path) -> str:
    """The supported suffix ``path`` ends with, or a DataError listing the supported ones."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise DataError(
        f"unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}, "
        "or a directory written by datasets.Dataset.save_to_disk",
        where=str(path),
    )


def _read_bytes(path: Path, suffix: str) -> bytes:
    """The file's bytes, gunzipped when the suffix says so; DataError when empty or unreadable."""
    try:
        data = path.read_bytes()
        if suffix.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read file: {exc}", where=str(path)) from exc
    if not data.strip():
        raise DataError("empty file (no records)", where=str(path))
    return data


def _decode(path: Path, data: bytes) -> str:
    """Decode a whole file as UTF-8, naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"non-UTF-8 bytes ({exc.reason})", where=f"{path} line {line}") from exc


def _read_jsonl(path: Path, data: bytes) -> list[RawItem]:
    items: list[RawItem] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        if not raw.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            items.append((where, DataError(f"non-UTF-8 bytes ({exc.reason})", where=where)))
            continue
        except json.JSONDecodeError as exc:
            items.append((where, DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", where=where)))
            continue
        if not isinstance(obj, dict):
            obj = DataError(f"expected a JSON object, got {type(obj).__name__}", where=where)
        items.append((where, obj))
    return items


def _read_json(path: Path, data: bytes) -> list[RawItem]:
    try:
        obj = json.loads(_decode(path, data))
    except json.JSONDecodeError as exc:
        where = f"{path} line {exc.lineno}"
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", where=where) from exc
    if not isinstance(obj, list):
        raise DataError(f"expected a JSON list of objects, got {type(obj).__name__}", where=str(path))
    items: list[RawItem] = []
    for index, item in enumerate(obj):
        where = f"{path} item {index}"
        if not isinstance(item, dict):
            item = DataError(f"expected a JSON object, got {type(item).__name__}", where=where)
        items.append((where, item))
    return items


def _read_csv(path: Path, data: bytes) -> list[RawItem]:
    # surrogateescape keeps bad bytes as lone surrogates, so that only the rows holding them fail.
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    items: list[RawItem] = []
    last_line = 1
    try:
        for number, row in enumerate(reader, start=1):
            where = f"{path} row {number} (line {last_line + 1})"
            last_line = reader.line_num
            # Short rows give None for the missing columns, long rows put the extras under the key None.
            record = {k: v for k, v in row.items() if k is not None and v is not None}
            bad = next((k for k, v in record.items() if _SURROGATE.search(v)), None)
            if bad is not None or (
                reader.fieldnames and any(_SURROGATE.search(f) for f in reader.fieldnames)
            ):
                items.append((where, DataError("non-UTF-8 bytes", where=where, field=bad)))
            else:
                items.append((where, record))
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", where=f"{path} line {reader.line_num}") from exc
    return items


def read_raw(path: str | Path) -> list[RawItem]:
    """Parse a JSONL / JSON / CSV file (optionally ``.gz``) into positioned raw items, without validation.

    Errors that concern the whole file (unsupported type, empty file, a JSON document that does not parse,
    non-UTF-8 bytes in a JSON document) raise DataError at once; errors that concern one item are returned
    in its place.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", where=str(path))
    suffix = _suffix(path)
    data = _read_bytes(path, suffix)
    kind = suffix.removesuffix(".gz")
    if kind == ".jsonl":
        items = _read_jsonl(path, data)
    elif kind == ".json":
        items = _read_json(path, data)
    else:
        items = _read_csv(path, data)
    if not items:
        raise DataError("empty file (no records)", where=str(path))
    return items


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
        items: ``(where, raw record or DataError)`` pairs, as returned by :func:`read_raw`.
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


def _load_saved_dataset(path: Path) -> list[RawItem]:
    import datasets  # lazy: a heavy import, needed only for this input kind

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"not a directory written by datasets save_to_disk: {exc}", where=str(path)) from exc
    if isinstance(data, datasets.DatasetDict):
        raise DataError(
            f"holds a DatasetDict with splits {sorted(data)}; pass the split's own directory", where=str(path)
        )
    rows = data.to_list()
    if not rows:
        raise DataError("empty dataset (no records)", where=str(path))
    return [(f"{path} item {i}", row) for i, row in enumerate(rows)]


def load_pairs(path: str | Path, *, on_error: str = "raise") -> list[dict[str, Any]]:
    """Load and validate preference pairs from a file or a ``save_to_disk`` directory.

    Args:
        path: ``.jsonl``, ``.json`` (a list of objects), ``.csv`` (columns prompt, chosen, rejected; standard
            format only), their ``.gz`` forms, or a directory written by ``datasets.Dataset.save_to_disk``.
        on_error: ``"raise"`` or ``"skip"``, see :func:`collect_pairs`.

    Returns:
        The records, extra fields kept, in file order.
    """
    path = Path(path)
    items = _load_saved_dataset(path) if path.is_dir() else read_raw(path)
    return collect_pairs(items, source=str(path), on_error=on_error)


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
