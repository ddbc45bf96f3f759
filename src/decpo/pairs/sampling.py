"""Preference pairs from a model's own samples, ranked by a scorer (`decpo pairs`).

For each prompt: sample ``num_samples`` continuations (temperature, top-p; optionally the greedy one as
well), score each continuation with a text scorer (`decpo.scoring.classifiers`), and keep one pair: the
best *valid* sample as ``chosen`` (valid: `decpo.scoring.fluency.is_valid`, so an empty or looping text
is never taught as the good answer) and the worst sample as ``rejected``, when their score gap exceeds
``min_gap``; otherwise the prompt is skipped and counted with its reason.

Files, for ``--output pairs/tox.jsonl``:

    pairs/tox.jsonl          TRL-format pairs: prompt, chosen, rejected, plus each record's scores
    pairs/tox.samples.jsonl  the log: a header line (the settings), then one line per prompt with every
                             sample, its score and validity; appended a whole batch at a time (fsync)
    pairs/tox.summary.json   counts, score distributions, model, sampling settings, seed, and the sha256
                             of the pairs file and of the log (`entry_problem` checks a cached build)

Resumable: a rerun with the same settings reads the log, drops a half-written last line and the lines of
a batch the log holds only part of, and continues with that batch; no prompt is dropped, sampled twice or
written twice. A rerun with other settings is refused (the
differing settings are named). Deterministic for a seed: each batch's sampling RNG is seeded from the seed
and the batch's first prompt index, so an interrupted and resumed build gives the same file as an
uninterrupted one (for the same batch size, which the settings hold).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from decpo import __version__
from decpo.config.sampling import PREFER, SamplingSettings
from decpo.data.errors import DataError
from decpo.integrity import file_sha256, read_jsonl_log
from decpo.io import atomic_write_json, atomic_write_text, stable_hash
from decpo.scoring.fluency import is_valid

logger = logging.getLogger(__name__)

SKIP_REASONS = ("gap", "no_valid_sample")

# --- pure selection -------------------------------------------------------------------------------------


def select_pair(
    texts: Sequence[str], scores: Sequence[float], valid: Sequence[bool], *, prefer: str, min_gap: float
) -> tuple[int, int] | str:
    """``(chosen index, rejected index)``, or the reason the prompt is skipped (one of ``SKIP_REASONS``).

    ``chosen``: the best-scoring valid sample; ``rejected``: the worst-scoring non-blank sample (valid or not:
    a loop may be the worst answer). Ties go to the lowest index. Skipped when no sample is valid, or when the two scores differ by ``min_gap`` or
    less, or the two texts are the same after stripping (gap 0).
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
    if not (len(texts) == len(scores) == len(valid)) or not texts:
        raise ValueError("texts, scores and valid must be non-empty and of one length")
    sign = 1.0 if prefer == "low" else -1.0  # sign * score: lower is better
    candidates = [i for i in range(len(texts)) if valid[i]]
    if not candidates:
        return "no_valid_sample"
    chosen = min(candidates, key=lambda i: (sign * scores[i], i))
    nonblank = [i for i in range(len(texts)) if texts[i].strip()]
    rejected = min(nonblank, key=lambda i: (-sign * scores[i], i))
    if abs(scores[chosen] - scores[rejected]) <= min_gap or texts[chosen].strip() == texts[rejected].strip():
        return "gap"
    return chosen, rejected


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean and quantiles (0, 10, 25, 50, 75, 90, 100 %) of ``values``."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    out: dict[str, float | int] = {"n": int(a.size), "mean": round(float(a.mean()), 4)}
    for q in (0, 10, 25, 50, 75, 90, 100):
        out[f"p{q}"] = round(float(np.percentile(a, q)), 4)
    return out


def side_files(output: Path) -> tuple[Path, Path]:
    """``(samples log, summary)`` beside ``output``."""
    stem = output.name.removesuffix(".jsonl")
    return output.with_name(f"{stem}.samples.jsonl"), output.with_name(f"{stem}.summary.json")


def prompts_digest(prompts: Sequence[str]) -> str:
    """The content hash of a prompt list (a pair log's header, a run's pair-file key)."""
    return stable_hash(list(prompts))


def entry_problem(output: Path) -> str | None:
    """None when the build at ``output`` is complete and its files are the ones its summary was written with
    (their sha256), else what is wrong, naming the file."""
    log_path, summary_path = side_files(output)
    if not (output.is_file() and summary_path.is_file()):
        return "not built"
    try:
        recorded = json.loads(summary_path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{summary_path.name} is unreadable or has no checksums ({type(e).__name__}: {e})"
    for key, path in (("pairs", output), ("log", log_path)):
        if not path.is_file() or file_sha256(path) != recorded.get(key):
            return f"{path.name} does not match the sha256 in {summary_path.name} (damaged or edited)"
    return None


# --- the log --------------------------------------------------------------------------------------------


def _read_log(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt lines of an existing log up to its last whole batch, after checking its header: a torn last
    line is cut off, and so are the lines of an unfinished batch (the log is rewritten without them), so that
    the build goes on with that batch."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # a line cut by a kill: drop it, it is sampled again
        with open(path, "r+b") as f:
            f.truncate(end)
        data = data[:end]
    lines = data.decode("utf-8").splitlines()
    if not lines:
        return []
    try:
        old = json.loads(lines[0])["header"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(
            "not a pair log (no header line); delete it or choose another --output", where=str(path)
        ) from e
    if old != header:
        diff = sorted(k for k in set(old) | set(header) if old.get(k) != header.get(k))
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {header.get(k)!r}" for k in diff)
        raise DataError(
            f"an unfinished or finished build with other settings is here ({changes}); rerun with the same "
            "settings to resume, or delete it / choose another --output",
            where=str(path),
        )
    records = read_jsonl_log(path)[1:]  # a damaged line: an error naming it
    for n, r in enumerate(records):
        if r.get("index") != n:
            raise DataError(
                f"line {n + 2}: expected prompt index {n}, found {r.get('index')}", where=str(path)
            )
    whole = _whole_batches(len(records), header["n_prompts"], header["batch_size"])
    written = sum(1 for line in lines[1:] if line.strip())
    if whole < written:  # part of a batch (or a damaged last line): sampled again, as a whole
        logger.warning(
            "%s: dropping the %d line(s) of the unfinished batch from prompt %d; it is sampled again",
            path,
            written - whole,
            whole,
        )
        kept = [lines[0], *(json.dumps(r, sort_keys=True) for r in records[:whole])]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return records[:whole]


def _whole_batches(done: int, n_prompts: int, batch_size: int) -> int:
    """How many of the ``done`` prompts of a log belong to whole batches (batches of ``batch_size``, the last
    one shorter)."""
    return n_prompts if done >= n_prompts else done - done % batch_size


def _append_lines(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


# --- the build ------------------------------------------------------------------------------------------


def _sample_batch(
    model, tokenizer, prompts: list[str], s: SamplingSettings, batch_seed: int
) -> list[list[tuple[str, bool]]]:
    """Per prompt: ``[(text, greedy?)]``, the greedy one first when asked for."""
    import torch  # lazy: loads slowly; the rest of this module (and pairs.cache, for stage keys) is light

    from decpo.inference.generation import generate  # lazy: pulls in torch

    kw = {
        "max_new_tokens": s.max_new_tokens,
        "batch_size": len(prompts),
        "progress": False,
        "max_prompt_tokens": s.max_prompt_tokens,
    }
    out: list[list[tuple[str, bool]]] = [[] for _ in prompts]
    if s.include_greedy:
        for i, text in enumerate(generate(model, tokenizer, prompts, **kw)):
            out[i].append((text, True))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(batch_seed)
        sampled = generate(
            model,
            tokenizer,
            prompts,
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            num_return_sequences=s.num_samples,
            **kw,
        )
    for j, text in enumerate(sampled):
        out[j // s.num_samples].append((text, False))
    return out


def build_pairs(
    model,
    tokenizer,
    prompts: Sequence[str],
    scorer,
    settings: SamplingSettings,
    output: str | Path,
    *,
    model_name: str,
    source: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample, score and pair every prompt (see the module docstring); returns the summary."""
    from decpo.inference.generation import batches  # lazy: pulls in torch

    output = Path(output)
    if not prompts:
        raise DataError(f"no prompts to sample from {source}")
    log_path, summary_path = side_files(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = {
        **dataclasses.asdict(settings),
        "prefer": settings.resolved_prefer,
        "scorer": getattr(scorer, "name", settings.scorer),
        "model": model_name,
        "source": source,
        "n_prompts": len(prompts),
        "prompts_sha": prompts_digest(prompts),
    }
    done = _read_log(log_path, header)
    if not done:
        atomic_write_text(log_path, json.dumps({"header": header}, sort_keys=True) + "\n")
    elif len(done) < len(prompts):
        logger.info("%s: resuming after %d of %d prompts", log_path, len(done), len(prompts))
    t0 = time.perf_counter()
    todo = [b for b in batches(len(prompts), settings.batch_size) if b.start >= len(done)]
    bar = tqdm(total=len(prompts), initial=len(done), desc="sample pairs", disable=not progress)
    for idx in todo:
        batch = [prompts[i] for i in idx]
        seed = settings.seed * 1_000_003 + idx.start
        per_prompt = _sample_batch(model, tokenizer, batch, settings, seed)
        flat = [text for samples in per_prompt for text, _ in samples]
        scores = [float(x) for x in scorer.score(flat)]
        if len(scores) != len(flat) or any(math.isnan(x) for x in scores):
            raise DataError(
                f"scorer {header['scorer']!r} returned {len(scores)} scores (or NaN) for {len(flat)} texts"
            )
        lines, k = [], 0
        for i, samples in zip(idx, per_prompt, strict=True):
            rows = []
            for text, greedy in samples:
                rows.append({"text": text, "score": scores[k], "valid": is_valid(text), "greedy": greedy})
                k += 1
            lines.append({"index": i, "prompt": prompts[i], "samples": rows})
        _append_lines(log_path, lines)
        done.extend(lines)
        bar.update(len(idx))
    bar.close()
    return _finish(done, header, output, summary_path, wall_s=time.perf_counter() - t0)


def _finish(records: list[dict], header: dict, output: Path, summary_path: Path, *, wall_s: float) -> dict:
    """Pairs and summary from the complete log, both written atomically."""
    pairs, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    all_scores, chosen_s, rejected_s, gaps, valid = [], [], [], [], []
    for r in records:
        samples = r["samples"]
        texts = [x["text"] for x in samples]
        scores = [x["score"] for x in samples]
        ok = [x["valid"] for x in samples]
        all_scores += scores
        valid += [float(v) for v in ok]
        picked = select_pair(texts, scores, ok, prefer=header["prefer"], min_gap=header["min_gap"])
        if isinstance(picked, str):
            skipped[picked] += 1
            continue
        c, j = picked
        chosen_s.append(scores[c])
        rejected_s.append(scores[j])
        gaps.append(abs(scores[c] - scores[j]))
        pairs.append(
            {
                "prompt": r["prompt"],
                "chosen": texts[c],
                "rejected": texts[j],
                "chosen_score": scores[c],
                "rejected_score": scores[j],
                "chosen_greedy": samples[c]["greedy"],
                "rejected_greedy": samples[j]["greedy"],
                "scores": scores,
                "prompt_index": r["index"],
            }
        )
    if not pairs:
        raise DataError(
            f"no pair kept from {len(records)} prompts (skipped: {skipped}); lower --min-gap or sample more",
            where=str(output),
        )
    atomic_write_text(output, "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs))
    summary = {
        "prompts": len(records),
        "pairs": len(pairs),
        "skipped": skipped,
        "valid_share": round(sum(valid) / len(valid), 4),
        "scores": {
            "all_samples": distribution(all_scores),
            "chosen": distribution(chosen_s),
            "rejected": distribution(rejected_s),
            "gap": distribution(gaps),
        },
        "settings": header,
        "files": {"pairs": str(output), "log": str(side_files(output)[0])},
        "sha256": {"pairs": file_sha256(output), "log": file_sha256(side_files(output)[0])},
        "wall_time_s_this_call": round(wall_s, 1),
        "decpo": __version__,
    }
    atomic_write_json(summary_path, summary)
    return summary


__all__ = [
    "build_pairs",
    "distribution",
    "entry_problem",
    "prompts_digest",
    "select_pair",
    "side_files",
]
