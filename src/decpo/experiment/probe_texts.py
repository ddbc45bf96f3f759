"""What the experiment's probe stage reads: the probe sets (`probe_sets`), their texts from the held-out
pairs (`heldout_records`, `probe_texts`) and the activation sites (`probe_sites`).

Probe sets: the held-out prompts, read at their last token (the paper's probe, and the penalty's position
when ``train.reg_tokens`` is ``prompt_last``); for any other ``train.reg_tokens`` also the held-out prompt +
chosen answer (+ EOS, as TRL appends it), read at its last token, with ``@answer_last`` appended to the site
in probes.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from decpo.config import RunConfig
from decpo.data import DataError
from decpo.names import MLP_UP_PROJ
from decpo.pairs.cache import cached_pairs_path
from decpo.probes.runner import prompt_text
from decpo.training.data import load_records


@dataclass(frozen=True)
class ProbeSet:
    """One set of probe texts and the token the probes read (always the last token of each text)."""

    name: str  # subfolder of probes/ and key of probe_sets.json
    texts: str  # "prompt" (held-out prompts) or "prompt+chosen" (held-out prompt + chosen answer + EOS)
    site_suffix: str  # appended to the site in the merged probes.csv ("" for the held-out prompts)
    position: str  # in words, for the report
    penalty_position: bool  # whether this set reads the token the penalty is computed on


def probe_sets(cfg: RunConfig) -> list[ProbeSet]:
    """The held-out prompts (the paper's probe); plus prompt + chosen answer when the penalty is elsewhere."""
    tokens = cfg.train.reg_tokens
    sets = [
        ProbeSet(
            "heldout_prompts",
            "prompt",
            "",
            "last token of each held-out prompt (the paper's probe)",
            tokens == "prompt_last",
        )
    ]
    if tokens != "prompt_last":
        where = (
            "the penalty's token (train.reg_tokens=last)"
            if tokens == "last"
            else f"its last token; the penalty (train.reg_tokens={tokens}) averages the answer's tokens, so "
            "this is the nearest single-token probe, not the penalty's exact input"
        )
        sets.append(
            ProbeSet(
                "penalty_position",
                "prompt+chosen",
                "@answer_last",
                f"last token of held-out prompt + chosen answer + EOS: {where}",
                tokens == "last",
            )
        )
    return sets


def pairs_file(cfg: RunConfig) -> Path | None:
    """With ``pairs.source``: the pair file the pairs stage builds (`decpo.pairs.sampling.ensure_pairs`), which
    training and the held-out texts read; else None (the pairs come from ``data``)."""
    return cached_pairs_path(cfg) if cfg.pairs.source else None


def heldout_records(cfg: RunConfig) -> list[dict]:
    """The held-out pairs of the training data, as training holds them out (`decpo.training.run.load_records`:
    ``data.eval_path``, the last ``eval_fraction`` of ``data.path`` or of the pairs stage's file, or the
    task's eval split), with the data seed 0 (the same texts for every model and seed) and no
    ``data.max_eval_samples`` cap."""
    heldout_cfg = cfg.replace(**{"train.seed": 0, "data.max_eval_samples": None})
    return load_records(heldout_cfg, pairs_path=pairs_file(heldout_cfg))[1]


def probe_texts(cfg: RunConfig, probe_set: ProbeSet, eos_token: str | None = None) -> list[str]:
    """The texts of ``probe_set``: the first ``experiment.probe_num_texts`` held-out records."""
    texts = []
    for r in heldout_records(cfg):
        text = prompt_text(r["prompt"])
        if probe_set.texts == "prompt+chosen":
            text += prompt_text(r["chosen"])
            if eos_token and not text.endswith(eos_token):
                text += eos_token  # TRL appends EOS to each answer: the penalty's `last` token
        if text.strip():
            texts.append(text)
    texts = texts[: cfg.experiment.probe_num_texts]
    if len(texts) < 2:
        raise DataError(f"the probes need at least 2 held-out texts, found {len(texts)}")
    return texts


def probe_sites(cfg: RunConfig) -> list[str]:
    """The activation sites probed: ``mlp.up_proj`` (the paper's) and the penalty's ``train.reg_site``."""
    return list(dict.fromkeys([MLP_UP_PROJ, cfg.train.reg_site]))
