"""Prompt sources for sampling (`decpo pairs`) and generation measures, and their train/eval split.

A source is one of:

* a task name: ``toxicity`` (the RealToxicityPrompts challenging prompts of the data directory) or
  ``reframing`` (the situations of the cognitive-reframing CSV, each once);
* a ``.jsonl`` file: one JSON object a line, RealToxicityPrompts schema (``{"prompt": {"text": ...}}``) or
  ``{"prompt": "..."}`` / ``{"text": "..."}``;
* any other file (``.txt``): one prompt a line, blank lines skipped.

The split never lets a prompt be trained on and evaluated: for ``toxicity`` and prompt files a prompt's
split is a function of its text alone (`prompt_split`: a hash, so a prompt repeated in the file, or found in
another copy of the data, always lands in the same split), about a third ``eval``. The eval split is divided
once more by the text's hash (`eval_part`, other bits of the same digest), about half each:

    dev   the prompts settings are chosen on (``benchmarks/tune.py --task toxicity``: `EvalConfig.split` dev)
    test  the prompts ``decpo run`` and ``decpo eval`` report on (`EvalConfig.split` test, the default)

so train, dev and test are three disjoint sets, each a function of the prompt's text alone.
``reframing`` uses the task's own split (`decpo.data.load_task`), whose eval situations share no situation
with train (it has no dev/test division: ``dev`` and ``test`` are refused for it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from decpo.data.errors import DataError
from decpo.data.tasks import load_rtp_prompts, load_task
from decpo.names import did_you_mean

PROMPT_TASKS = ("toxicity", "reframing")
PROMPT_SPLITS = ("train", "eval", "dev", "test", "all")
EVAL_PARTS = ("dev", "test")  # the eval split's two parts (`eval_part`)
EVAL_BUCKETS = 3  # one bucket of three is eval


def normalize(text: str) -> str:
    """The text a split and an overlap check compare: whitespace collapsed."""
    return " ".join(text.split())


def _digest(text: str) -> bytes:
    return hashlib.sha256(normalize(text).encode("utf-8")).digest()


def prompt_split(text: str) -> str:
    """``"eval"`` for about a third of texts, else ``"train"``; depends on the (normalized) text only."""
    return "eval" if int.from_bytes(_digest(text)[:8], "big") % EVAL_BUCKETS == 0 else "train"


def eval_part(text: str) -> str:
    """The part of the eval split a text falls in: ``"dev"`` for about half, else ``"test"`` (bytes 8-15 of
    the digest `prompt_split` reads 0-7 of, so the parts are independent of the train/eval division);
    depends on the (normalized) text only. Meaningful for texts whose `prompt_split` is ``"eval"``."""
    return EVAL_PARTS[int.from_bytes(_digest(text)[8:16], "big") % 2]


def prompt_part(text: str) -> str:
    """``"train"``, ``"dev"`` or ``"test"``: `prompt_split`, with an eval text's `eval_part`."""
    return "train" if prompt_split(text) == "train" else eval_part(text)


def _in_split(text: str, split: str) -> bool:
    return split in ("all", prompt_split(text), prompt_part(text))


def _from_object(raw: Any, where: str) -> str:
    if isinstance(raw, dict):
        prompt = raw.get("prompt", raw.get("text"))
        if isinstance(prompt, dict):
            prompt = prompt.get("text")
            field = "prompt.text"
        else:
            field = "prompt" if "prompt" in raw else "text"
        if isinstance(prompt, str):
            return prompt
        raise DataError("expected a string in 'prompt', 'prompt.text' or 'text'", where=where, field=field)
    raise DataError(f"expected a JSON object, got {type(raw).__name__}", where=where)


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """``[{prompt, where}]`` from a ``.jsonl`` or a one-prompt-a-line file; DataError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError("prompt file not found", where=str(path)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the prompt file: {e}", where=str(path)) from e
    out = []
    jsonl = path.suffix == ".jsonl"
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        if jsonl:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", where=where) from e
            prompt = _from_object(raw, where)
        else:
            prompt = line
        if not prompt.strip():
            raise DataError("empty prompt", where=where)
        out.append({"prompt": prompt, "where": where})
    if not out:
        raise DataError("no prompts in the file", where=str(path))
    return out


def load_prompts(
    source: str, *, split: str = "all", data_dir: str | Path | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The prompts of ``source`` (see the module docstring) in ``split``; ``limit``: the first N of them."""
    if split not in PROMPT_SPLITS:
        raise DataError(f"unknown prompt split {split!r}; expected one of {PROMPT_SPLITS}")
    if limit is not None and limit < 1:
        raise DataError(f"prompt limit must be >= 1, got {limit}")
    if source == "reframing":
        if split in EVAL_PARTS:
            raise DataError(f"prompt split {split!r}: reframing has no dev/test division (use eval)")
        splits = ("train", "eval") if split == "all" else (split,)
        seen: dict[str, None] = {}
        for s in splits:
            for r in load_task("reframing", s, data_dir=data_dir):
                seen.setdefault(r["prompt"], None)
        records = [{"prompt": p, "where": "reframing situations"} for p in seen]
    else:
        if source == "toxicity":
            records = load_rtp_prompts(data_dir)
        elif Path(source).suffix or Path(source).exists():
            records = read_prompt_file(source)
        else:
            raise DataError(
                f"unknown prompt source {source!r}: expected a task ({', '.join(PROMPT_TASKS)}) or a file"
                f"{did_you_mean(source, PROMPT_TASKS)}"
            )
        records = [r for r in records if _in_split(r["prompt"], split)]
    if not records:
        raise DataError(f"no prompts in split {split!r} of {source}")
    return records[:limit] if limit is not None else records


def check_disjoint(train: list[str], evals: list[str], train_name: str, eval_name: str) -> None:
    """DataError when a training prompt is also an evaluation prompt (whitespace-normalized text)."""
    held_out = {normalize(t) for t in evals}
    shared = [t for t in train if normalize(t) in held_out]
    if shared:
        raise DataError(
            f"{len(shared)} prompt(s) of {train_name} are also evaluated ({eval_name}), e.g. {shared[0][:80]!r}: "
            "a model would be evaluated on prompts it was trained on; use disjoint prompt sets (e.g. the "
            "train split of a source for pairs and its eval split for evaluation)"
        )


__all__ = [
    "EVAL_BUCKETS",
    "EVAL_PARTS",
    "PROMPT_SPLITS",
    "PROMPT_TASKS",
    "check_disjoint",
    "load_prompts",
    "normalize",
    "eval_part",
    "prompt_part",
    "prompt_split",
    "read_prompt_file",
]
