"""The pair file of a run config's ``pairs`` section: its settings and prompts, its content key, and the
one cached build per key in ``$DECPO_CACHE/pairs/<key>/`` that every run with that key shares."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from decpo import __version__
from decpo.config import RunConfig
from decpo.config.sampling import SamplingSettings, scorer_spec
from decpo.data.prompts import load_prompts
from decpo.env import cache_dir
from decpo.io import file_lock_path, output_lock, stable_hash
from decpo.pairs.sampling import build_pairs, entry_problem, prompts_digest, side_files
from decpo.scoring.classifiers import make_scorer

logger = logging.getLogger(__name__)


def settings_from_config(cfg: RunConfig) -> SamplingSettings:
    """The `SamplingSettings` of a `decpo.config.run_config.RunConfig`'s ``pairs`` section (its sampling fields)."""
    p = cfg.pairs
    return SamplingSettings(**{f.name: getattr(p, f.name) for f in dataclasses.fields(SamplingSettings)})


def config_prompts(cfg: RunConfig) -> list[str]:
    """The prompts a run config's ``pairs`` section samples from."""
    p = cfg.pairs
    return [
        r["prompt"] for r in load_prompts(p.source, split=p.split, data_dir=cfg.data.data_dir, limit=p.limit)
    ]


def sampler_model(cfg: RunConfig) -> dict[str, Any]:
    """Which model samples: ``pairs.model``, else the run's own model (name, GGUF file, revision, dtype)."""
    m = cfg.model
    if cfg.pairs.model:
        return {"name": cfg.pairs.model, "gguf_file": None, "revision": None, "dtype": m.dtype}
    return {
        "name": m.model_name_or_path,
        "gguf_file": m.gguf_file,
        "revision": m.model_revision,
        "dtype": m.dtype,
    }


def pairs_key(cfg: RunConfig, prompts: Sequence[str] | None = None) -> str:
    """Content key of a run's pair file: sampler model, settings, prompt texts, decpo version."""
    prompts = config_prompts(cfg) if prompts is None else prompts
    return stable_hash(
        {
            "model": sampler_model(cfg),
            "settings": dataclasses.asdict(settings_from_config(cfg)),
            "source": cfg.pairs.source,
            "prompts": prompts_digest(prompts),
            "decpo": __version__,
        }
    )


def cached_pairs_path(cfg: RunConfig, prompts: Sequence[str] | None = None) -> Path:
    """``$DECPO_CACHE/pairs/<key>/pairs.jsonl``: one build per content key, shared by every run."""
    return cache_dir() / "pairs" / pairs_key(cfg, prompts) / "pairs.jsonl"


def ensure_pairs(cfg: RunConfig, progress: bool = True) -> Path:
    """The run's pair file: reused when a complete build with the same content key exists and its files match
    their checksums, else built (resuming an interrupted build of the same key; a damaged or edited build is
    removed, with a warning, and built again)."""
    prompts = config_prompts(cfg)
    path = cached_pairs_path(cfg, prompts)
    if entry_problem(path) is None:
        logger.info("pairs: reusing %s", path)
        return path
    # one build per entry: a run that needs it while another builds it waits, then reuses it
    with output_lock(file_lock_path(path), f"pairs cache entry {path.parent}", "decpo (pairs)", wait=True):
        problem = entry_problem(path)
        if problem is None:
            logger.info("pairs: reusing %s", path)
            return path
        log_path, summary = side_files(path)
        if summary.is_file():  # a finished build whose files changed since: not trusted, built again
            logger.warning("pairs: not reusing %s: %s; building it again", path, problem)
            for file in (summary, path, log_path):
                file.unlink(missing_ok=True)
        _build(cfg, prompts, path, progress)
    return path


def _build(cfg: RunConfig, prompts: list[str], path: Path, progress: bool) -> None:
    """Sample, score and select the pairs of ``cfg`` into the cache entry ``path``."""
    from decpo.models import load_model, load_tokenizer  # lazy: pulls in torch, transformers

    settings = settings_from_config(cfg)
    scorer = make_scorer(scorer_spec(settings.scorer))  # before the model: a missing scorer fails at once
    m = sampler_model(cfg)
    tokenizer = load_tokenizer(m["name"], m["gguf_file"], cfg.model.trust_remote_code, m["revision"])
    model = load_model(
        m["name"],
        gguf_file=m["gguf_file"],
        dtype=m["dtype"],
        trust_remote_code=cfg.model.trust_remote_code,
        revision=m["revision"],
    )
    build_pairs(
        model,
        tokenizer,
        prompts,
        scorer,
        settings,
        path,
        model_name=m["name"],
        source=str(cfg.pairs.source),
        progress=progress,
    )
