"""The paper's tasks as preference pairs, read from a user-supplied data directory.

Layout of the data directory (``--data-dir`` or env ``DECPO_DATA_DIR``)::

    sycophancy/generate_dataset.json        CAA A/B items (train 90% / eval 10%)
    sycophancy/test_dataset_ab.json         CAA A/B test items
    reframing/reframing_dataset.csv         Sharma et al. 2023 (train 90% / eval = test 10%)
    toxicity/harmless-base_test.jsonl.gz    hh-rlhf harmless pairs (train 90% / eval = test 10%)
    toxicity/challenging_prompts.jsonl      RealToxicityPrompts challenging prompts (evaluation)
    toxicity/toxicity_pairwise.jsonl        optional: Lee et al. 2024 pairs
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from decpo.data.errors import DataError
from decpo.data.pairs import collect_pairs, split_train_eval
from decpo.data.readers import RawItem, read_raw
from decpo.data.reading import HELD_OUT_SPLIT, make_reading
from decpo.data.synthetic import make_synthetic
from decpo.names import did_you_mean

logger = logging.getLogger(__name__)

TASKS = ("synthetic", "sycophancy", "reframing", "toxicity", "toxicity_pairwise", "reading")
SPLITS = ("train", "eval", "test")
DATA_DIR_ENV = "DECPO_DATA_DIR"
EVAL_FRACTION = 0.1

# Relative path inside the data directory -> where to download the public original.
DATA_FILES = {
    "sycophancy/generate_dataset.json": (
        "github.com/nrimsky/CAA, datasets/generate/sycophancy/generate_dataset.json"
    ),
    "sycophancy/test_dataset_ab.json": (
        "github.com/nrimsky/CAA, datasets/test/sycophancy/test_dataset_ab.json"
    ),
    "reframing/reframing_dataset.csv": (
        "github.com/behavioral-data/Cognitive-Reframing, data/reframing_dataset.csv"
    ),
    "toxicity/harmless-base_test.jsonl.gz": "github.com/anthropics/hh-rlhf, harmless-base/test.jsonl.gz",
    "toxicity/challenging_prompts.jsonl": (
        "RealToxicityPrompts challenging prompts, e.g. github.com/AI-secure/DecodingTrust, "
        "data/toxicity/user_prompts/toxic.jsonl"
    ),
}
PAIRWISE_FILE = "toxicity/toxicity_pairwise.jsonl"
_ASSISTANT = "\n\nAssistant:"


def _layout_help() -> str:
    lines = [f"  {rel}  (from {origin})" for rel, origin in DATA_FILES.items()]
    return (
        f"set data.data_dir=<folder> (decpo train/run/sweep), --data-dir <folder> (decpo eval/pairs/probe) or the "
        f"environment variable {DATA_DIR_ENV}; the folder is laid out as:\n"
        + "\n".join(lines)
        + f"\n  {PAIRWISE_FILE}  (optional: Lee et al. 2024 pairs with prompt_text, unpert_gen_text, "
        "pert_gen_text)"
    )


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: the argument, else env ``DECPO_DATA_DIR``; DataError if neither or missing."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        raise DataError(f"no data directory given; {_layout_help()}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}; {_layout_help()}")
    return path


def _data_file(relative: str, data_dir: str | Path | None) -> Path:
    """``<data_dir>/<relative>``, or a DataError naming the expected path and where to download it."""
    path = resolve_data_dir(data_dir) / relative
    if not path.is_file():
        origin = DATA_FILES.get(relative)
        source = f" (download it from {origin})" if origin else ""
        raise DataError(f"data file not found: {path}{source}; {_layout_help()}")
    return path


def _split(records: list[dict[str, Any]], split: str, task: str) -> list[dict[str, Any]]:
    """Train = first 90%, eval = test = last 10%; stamp ``split`` on each record."""
    train, held_out = split_train_eval(records, EVAL_FRACTION)
    chosen = train if split == "train" else held_out
    return [{**record, "split": split} for record in chosen]


def _field(raw: dict[str, Any], name: str, where: str) -> str:
    """A required string field of a raw record."""
    if name not in raw:
        raise DataError("missing field", where=where, field=name)
    value = raw[name]
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", where=where, field=name)
    return value


def _sycophancy_pair(raw: dict[str, Any], where: str) -> dict[str, Any]:
    question = _field(raw, "question", where)
    chosen = _field(raw, "answer_not_matching_behavior", where).strip()
    rejected = _field(raw, "answer_matching_behavior", where).strip()
    letter = re.fullmatch(r"\((A|B)\)", chosen)
    if letter is None:
        raise DataError(
            f"expected '(A)' or '(B)', got {chosen!r}", where=where, field="answer_not_matching_behavior"
        )
    return {
        "prompt": f"{question}\n\nAnswer:",
        "chosen": f" {chosen}",
        "rejected": f" {rejected}",
        "task": "sycophancy",
        "chosen_letter": letter[1],
    }


def _reframing_pair(raw: dict[str, Any], where: str) -> dict[str, Any]:
    situation = _field(raw, "situation", where).strip()
    return {
        "prompt": f"Situation: {situation}\nThought:",
        "chosen": " " + _field(raw, "reframe", where).strip(),
        "rejected": " " + _field(raw, "thought", where).strip(),
        "task": "reframing",
        "situation": situation,
        "thinking_traps": raw.get("thinking_traps_addressed", "") or "",
    }


def _pairwise_pair(raw: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "prompt": _field(raw, "prompt_text", where),
        "chosen": _field(raw, "unpert_gen_text", where),
        "rejected": _field(raw, "pert_gen_text", where),
        "task": "toxicity_pairwise",
    }


def _split_dialogues(items: list[RawItem], source: str) -> list[RawItem]:
    """hh-rlhf: cut each pair at the last ``"\\n\\nAssistant:"``, the prompt being the common prefix.

    Pairs whose two sides do not share that prefix, or whose chosen/rejected reply is empty, are a known
    quirk of the data: they are dropped and counted in one warning, whatever ``on_error`` says.
    """
    out: list[RawItem] = []
    no_prefix = empty = 0
    for where, raw in items:
        if isinstance(raw, DataError):
            out.append((where, raw))
            continue
        try:
            chosen, rejected = _field(raw, "chosen", where), _field(raw, "rejected", where)
        except DataError as err:
            out.append((where, err))
            continue
        cut = chosen.rfind(_ASSISTANT) + len(_ASSISTANT)
        prompt = chosen[:cut]
        if cut < len(_ASSISTANT) or rejected[: rejected.rfind(_ASSISTANT) + len(_ASSISTANT)] != prompt:
            no_prefix += 1
            continue
        pair = {"prompt": prompt, "chosen": chosen[cut:], "rejected": rejected[cut:], "task": "toxicity"}
        if not pair["chosen"].strip() or not pair["rejected"].strip():
            empty += 1
            continue
        out.append((where, pair))
    if no_prefix or empty:
        logger.warning(
            "%s: dropped %d of %d pairs (%d without a common prefix up to the last '\\n\\nAssistant:', "
            "%d with an empty reply)",
            source,
            no_prefix + empty,
            len(items),
            no_prefix,
            empty,
        )
    return out


def load_task(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    seed: int = 0,
    on_error: str = "raise",
    synthetic_answer: str = "option",
) -> list[dict[str, Any]]:
    """Load one split of a task as validated pair records ``{prompt, chosen, rejected, task, split, ...}``.

    Args:
        name: one of :data:`TASKS`.
        split: ``"train"``, ``"eval"`` or ``"test"`` (``"transfer"`` too for ``synthetic``). Except for
            sycophancy's own test file, train is the first 90% of the file and eval = test the last 10%.
            ``reading`` has ``"train"``, ``"dev"``, ``"test"`` and ``"transfer"``; its ``"eval"`` (the
            held-out set of training, its probes and pairs) is ``"dev"``, never ``"test"``.
        data_dir: the data directory (see :func:`resolve_data_dir`); not needed for ``synthetic`` and
            ``reading``.
        path: a file read instead of the default one for this split (required for ``toxicity_pairwise``
            unless ``<data_dir>/toxicity/toxicity_pairwise.jsonl`` exists).
        seed: seed of the synthetic and reading tasks (the file-based tasks are deterministic and ignore it).
        on_error: ``"raise"`` or ``"skip"`` bad records, see :func:`decpo.data.pairs.collect_pairs`.
        synthetic_answer: the synthetic and reading tasks' answer format, ``"option"`` or ``"letter"``
            (see :func:`decpo.data.synthetic.make_synthetic`, :func:`decpo.data.reading.make_reading`).
    """
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; expected one of {TASKS}")
    if name == "synthetic":
        return make_synthetic(split, seed=seed, answer=synthetic_answer)
    if name == "reading":
        return make_reading(HELD_OUT_SPLIT if split == "eval" else split, seed=seed, answer=synthetic_answer)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for task {name!r}; expected one of {SPLITS}")

    if name == "sycophancy":
        relative = (
            "sycophancy/test_dataset_ab.json" if split == "test" else "sycophancy/generate_dataset.json"
        )
    elif name == "reframing":
        relative = "reframing/reframing_dataset.csv"
    elif name == "toxicity":
        relative = "toxicity/harmless-base_test.jsonl.gz"
    else:
        relative = PAIRWISE_FILE
    file = Path(path) if path is not None else _data_file(relative, data_dir)
    items = read_raw(file)
    source = str(file)

    if name == "sycophancy":
        records = collect_pairs(items, source=source, on_error=on_error, convert=_sycophancy_pair)
        if split == "test":
            return [{**record, "split": "test"} for record in records]
        return _split(records, split, name)
    if name == "reframing":
        records = collect_pairs(items, source=source, on_error=on_error, convert=_reframing_pair)
        train, held_out = split_train_eval(records, EVAL_FRACTION)
        shared = {r["situation"] for r in train} & {r["situation"] for r in held_out}
        if shared:
            # The original file is grouped by situation so that eval situations are unseen in training.
            logger.warning("%s: %d situations appear in both train and eval", source, len(shared))
        return _split(records, split, name)
    if name == "toxicity":
        records = collect_pairs(_split_dialogues(items, source), source=source, on_error=on_error)
        return _split(records, split, name)
    records = collect_pairs(items, source=source, on_error=on_error, convert=_pairwise_pair)
    return _split(records, split, name)


def _toxicity(value: Any, where: str, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"expected a number or null, got {type(value).__name__}", where=where, field=field)
    return float(value)


RTP_FILE = "toxicity/challenging_prompts.jsonl"


def load_rtp_prompts(
    data_dir: str | Path | None = None, limit: int | None = None, path: str | Path | None = None
) -> list[dict[str, Any]]:
    """RealToxicityPrompts prompts: ``{prompt, prompt_toxicity, continuation, continuation_toxicity, where}``.

    Reads ``path``, or else ``<data_dir>/toxicity/challenging_prompts.jsonl`` (RealToxicityPrompts schema:
    ``{"prompt": {"text", "toxicity", ...}, "continuation": {"text", "toxicity", ...}}``); the two
    Perspective scores are None where null or absent, ``continuation`` is "" where absent; ``where`` is the
    file and line. ``limit`` keeps the first ``limit`` prompts.
    """
    file = Path(path) if path is not None else _data_file(RTP_FILE, data_dir)
    out: list[dict[str, Any]] = []
    for where, raw in read_raw(file):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(raw, DataError):
            raise raw
        prompt = raw.get("prompt")
        if not isinstance(prompt, dict):
            raise DataError("expected an object with 'text'", where=where, field="prompt")
        text = _field(prompt, "text", where)
        if not text.strip():
            raise DataError("empty string", where=where, field="prompt.text")
        continuation = raw.get("continuation") or {}
        if not isinstance(continuation, dict):
            raise DataError("expected an object with 'text'", where=where, field="continuation")
        out.append(
            {
                "prompt": text,
                "prompt_toxicity": _toxicity(prompt.get("toxicity"), where, "prompt.toxicity"),
                "continuation": continuation.get("text") or "",
                "continuation_toxicity": _toxicity(
                    continuation.get("toxicity"), where, "continuation.toxicity"
                ),
                "where": where,
            }
        )
    return out
