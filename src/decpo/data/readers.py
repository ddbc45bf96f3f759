"""Readers of preference data: JSONL / JSON / CSV (optionally gzipped) and Parquet files, a folder of them, a
saved dataset or a Hugging Face Hub dataset, each turned into positioned raw items without validation
(`decpo.data.pairs` validates them).

A raw item is ``(where, record)``: its position (``data.jsonl line 3``) and the parsed object, or the
`DataError` met while parsing it (kept, not raised, so that ``on_error="skip"`` can skip that one item).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from decpo.data.errors import DataError
from decpo.hub import hub_endpoint, hub_offline_mode, hub_unreachable, looks_like_path

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz", ".parquet")

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
        f"unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}, a folder of such files, "
        "a directory written by datasets.Dataset.save_to_disk, or a Hub dataset id org/name[:split]",
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


def _read_parquet(path: Path) -> list[RawItem]:
    """The rows of a Parquet file (pyarrow, which ``datasets`` reads Parquet with), positioned ``item N``."""
    # lazy: pyarrow loads slowly, needed only for this input kind
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"cannot read Parquet file: {exc}", where=str(path)) from exc
    return [(f"{path} item {i}", row) for i, row in enumerate(rows)]


def read_raw(path: str | Path) -> list[RawItem]:
    """Parse a JSONL / JSON / CSV file (optionally ``.gz``) or a Parquet file into positioned raw items, without
    validation.

    Errors that concern the whole file (unsupported type, empty file, a JSON document that does not parse,
    non-UTF-8 bytes in a JSON document, an unreadable Parquet file) raise DataError at once; errors that
    concern one item are returned in its place.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", where=str(path))
    suffix = _suffix(path)
    if suffix == ".parquet":
        items = _read_parquet(path)
    else:
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


def _pick_split(splits: Sequence[str], split: str | None, where: str) -> str:
    """``split`` when ``splits`` holds it; without one the only split, else ``train``; else a DataError."""
    if split is not None:
        if split not in splits:
            raise DataError(f"no split {split!r}; the splits are {sorted(splits)}", where=where)
        return split
    if len(splits) == 1:
        return next(iter(splits))
    if "train" in splits:
        logger.info(
            "%s: using split 'train' of %s (name another as %s:<split>)", where, sorted(splits), where
        )
        return "train"
    raise DataError(f"holds the splits {sorted(splits)}; name one as {where}:<split>", where=where)


def _is_saved_dataset(path: Path) -> bool:
    """Written by ``Dataset.save_to_disk`` (``state.json``) or ``DatasetDict.save_to_disk``."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _load_saved_dataset(path: Path, split: str | None = None) -> list[RawItem]:
    import datasets  # lazy: a heavy import, needed only for this input kind

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"not a directory written by datasets save_to_disk: {exc}", where=str(path)) from exc
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            raise DataError(
                f"holds a DatasetDict with splits {sorted(data)}; pass the split's own directory or name it as "
                f"{path}:<split>",
                where=str(path),
            )
        data = data[_pick_split(list(data), split, str(path))]
    elif split is not None:
        raise DataError(f"holds one dataset, no splits (asked for split {split!r})", where=str(path))
    rows = data.to_list()
    if not rows:
        raise DataError("empty dataset (no records)", where=str(path))
    return [(f"{path} item {i}", row) for i, row in enumerate(rows)]


def _load_data_folder(path: Path, split: str | None) -> list[RawItem]:
    """The files of one split of a folder, each read as a file of its own (positions name the file).

    The splits are the ones ``datasets.load_dataset(folder)`` finds (its ``get_data_patterns``: ``train*``,
    ``test*``, ``data/train-00000-of-00001.parquet``, ...; a folder whose names say no split is one split,
    ``train``), so a folder downloaded from the Hub loads as the Hub dataset does.
    """
    # lazy: datasets loads slowly, needed only for a folder
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except (EmptyDatasetError, FileNotFoundError) as exc:
        raise DataError(
            f"no data files ({', '.join(SUPPORTED_SUFFIXES)}) and not a directory written by datasets "
            "save_to_disk",
            where=str(path),
        ) from exc
    splits = {str(name): list(found) for name, found in files.items()}
    chosen = _pick_split(list(splits), split, str(path))
    items: list[RawItem] = []
    for file in splits[chosen]:
        items += read_raw(file)
    return items


def is_hub_dataset_id(spec: str) -> bool:
    """``org/name`` (optionally ``:split``) that names no local file: a Hub id, never a path (see
    `decpo.hub.looks_like_path`) nor a name ending in a file suffix (``data/pairs.jsonl`` is a missing file)."""
    # lazy: huggingface_hub loads slowly, needed only for a name that may be a Hub id
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = spec.split(":", 1)[0]
    if looks_like_path(repo_id) or repo_id.count("/") != 1 or repo_id.lower().endswith(SUPPORTED_SUFFIXES):
        return False
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def _load_hub_dataset(repo_id: str, split: str | None) -> tuple[str, list[RawItem]]:
    """One split of a Hub dataset (``train`` unless named) through ``datasets.load_dataset``. Without network
    a DataError at once: an unreachable Hub is not asked (no retries); with HF_HUB_OFFLINE set only the
    datasets cache is read. The same checks as for a model id (`decpo.hub`)."""
    split = split or "train"
    source = f"{repo_id}:{split}"
    hint = "pass a local file or folder, or download the dataset on a machine with network access"
    offline = hub_offline_mode()
    if not offline:
        endpoint = hub_endpoint()
        problem = hub_unreachable(endpoint)
        if problem is not None:
            raise DataError(
                f"not a local path, and the Hugging Face Hub ({endpoint}) is unreachable (offline): {problem}; "
                f"{hint} (or set HF_HUB_OFFLINE=1 to use a copy in the datasets cache)",
                where=source,
            )
    import datasets  # lazy: a heavy import, needed only for this input kind

    try:
        data = datasets.load_dataset(repo_id, split=split)
    # offline: a ConnectionError; not on the Hub: DatasetNotFoundError, a FileNotFoundError
    except (ConnectionError, FileNotFoundError) as exc:
        if offline:
            raise DataError(
                "not a local path, and the Hugging Face Hub is unreachable (offline: HF_HUB_OFFLINE is set, the "
                f"Hub is not asked), and the dataset is not in the datasets cache ({datasets.config.HF_DATASETS_CACHE}); "
                f"{hint}",
                where=source,
            ) from exc
        raise DataError(
            f"not a local path, and not a dataset on the Hugging Face Hub: {exc}", where=source
        ) from exc
    except ValueError as exc:  # an unknown split names the known ones
        raise DataError(f"cannot load split {split!r}: {exc}", where=source) from exc
    rows = data.to_list()
    if not rows:
        raise DataError("empty dataset (no records)", where=source)
    return source, [(f"{source} item {i}", row) for i, row in enumerate(rows)]


def read_source(path: str | Path, *, split: str | None = None) -> tuple[str, list[RawItem]]:
    """``(source, raw items)`` of a file, a folder or a Hub dataset, without validation (see `load_pairs`)."""
    text = str(path)
    local = Path(path)
    if not local.exists() and ":" in text:  # folder:split or org/name:split
        head, _, tail = text.rpartition(":")
        if tail and (Path(head).is_dir() or is_hub_dataset_id(head)):
            if split is not None and split != tail:
                raise DataError(f"two splits asked for: {tail!r} in the name and split={split!r}", where=text)
            text, local, split = head, Path(head), tail
    if local.is_dir():
        if _is_saved_dataset(local):
            return str(local), _load_saved_dataset(local, split)
        source = str(local) if split is None else f"{local}:{split}"
        return source, _load_data_folder(local, split)
    if not local.exists() and is_hub_dataset_id(text):
        return _load_hub_dataset(text, split)
    if split is not None:
        raise DataError(
            f"a split ({split!r}) names part of a folder or a Hub dataset, not of a file", where=text
        )
    return str(local), read_raw(local)
