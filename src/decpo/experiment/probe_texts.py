"""What the experiment's probe stage reads: the probe sets (`probe_sets`), their texts from the held-out
pairs (`heldout_records`, `probe_records`, `probe_texts`), the activation sites (`probe_sites`) and the
k-sparse probing of the held-out prompts' labelled concepts (`sparse_probing_plan`).

Probe sets: the held-out prompts, read at their last token (the paper's probe, and the penalty's position
when ``train.reg_tokens`` is ``prompt_last``); for any other ``train.reg_tokens`` also the held-out prompt +
chosen answer (+ EOS, as TRL appends it), read at its last token, with ``@answer_last`` appended to the site
in probes.csv.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decpo.config import RunConfig
from decpo.data import DataError
from decpo.names import MLP_UP_PROJ
from decpo.pairs.cache import cached_pairs_path
from decpo.probes.concept_texts import CONCEPT_SOURCES, CONCEPT_TOKEN, concept_items, concept_text_records
from decpo.probes.concepts import CONCEPTS, concept_labels
from decpo.probes.runner import prompt_text
from decpo.probes.sparse_probing import SparseProbeError, check_labels
from decpo.probes.tokens import AnsweredText
from decpo.reports.results import training_data
from decpo.training.data import load_records

logger = logging.getLogger(__name__)

CONCEPT_TEXTS = "concept_texts"  # the probe stage's subfolder for the task's concept texts (`ConceptTexts`)
SPARSE_FOLDS = 5  # the stratified folds of the probe stage's sparse probing (`ProbeOptions.sparse_folds`)


@dataclass(frozen=True)
class ProbeSet:
    """One set of probe texts and the token the probes read (always the last token of each text)."""

    name: str  # subfolder of probes/ and key of probe_sets.json
    texts: str  # "prompt" (held-out prompts) or "prompt+chosen" (held-out prompt + chosen answer + EOS)
    site_suffix: str  # appended to the site in the merged probes.csv ("" for the held-out prompts)
    position: str  # in words, for the report
    penalty_position: bool  # whether this set reads the token the penalty is computed on


@dataclass(frozen=True)
class ConceptTexts:
    """The texts made for the training task's own concepts (`decpo.probes.concept_texts`), probed in a pass of
    their own: the ``texts`` (prompt + answer), the ``labels`` of each kept concept (0/1 per text), where they
    come from, and the ``token`` the probes read (the mean over each answer's tokens)."""

    texts: list[AnsweredText]
    labels: dict[str, list[int]]
    source: str
    token: str = CONCEPT_TOKEN


@dataclass(frozen=True)
class SparsePlan:
    """The probe stage's k-sparse probing: at ``layers`` of the held-out prompts, the ``labels`` of each kept
    concept (0/1 per text), the ``skipped`` concepts with why; ``reason`` says why nothing runs (else "");
    ``concept_texts``: the task's concept texts, probed after the held-out prompts (None: the task has none)."""

    layers: list[int]
    labels: dict[str, list[int]]
    skipped: dict[str, str]
    reason: str
    concept_texts: ConceptTexts | None = None

    def record(self) -> dict:
        """For ``probe_sets.json`` (the report reads it)."""
        ct = self.concept_texts
        return {
            "layers": self.layers,
            "concepts": list(self.labels),
            "skipped": self.skipped,
            "reason": self.reason,
            "folds": SPARSE_FOLDS,
            **(
                {
                    "concept_texts": {
                        "source": ct.source,
                        "n_texts": len(ct.texts),
                        "token": ct.token,
                        "concepts": list(ct.labels),
                    }
                }
                if ct
                else {}
            ),
        }


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


def probe_records(cfg: RunConfig) -> list[dict]:
    """The held-out records the probes read: the first ``experiment.probe_num_texts`` with a non-empty prompt."""
    records = [r for r in heldout_records(cfg) if prompt_text(r["prompt"]).strip()]
    return records[: cfg.experiment.probe_num_texts]


def probe_texts(
    cfg: RunConfig, probe_set: ProbeSet, eos_token: str | None = None, records: list[dict] | None = None
) -> list[str]:
    """The texts of ``probe_set``, one per record of `probe_records` (given as ``records``, or read now)."""
    texts = []
    for r in probe_records(cfg) if records is None else records:
        text = prompt_text(r["prompt"])
        if probe_set.texts == "prompt+chosen":
            text += prompt_text(r["chosen"])
            if eos_token and not text.endswith(eos_token):
                text += eos_token  # TRL appends EOS to each answer: the penalty's `last` token
        texts.append(text)
    if len(texts) < 2:
        raise DataError(f"the probes need at least 2 held-out texts, found {len(texts)}")
    return texts


def sparse_probing_layers(cfg: RunConfig) -> list[int]:
    """The blocks of the probe stage's sparse probing: ``experiment.sparse_probing_layers``, null read as
    ``train.reg_layers``; [] when off."""
    layers = cfg.experiment.sparse_probing_layers
    return list(cfg.train.reg_layers if layers is None else layers)


def concept_task(cfg: RunConfig) -> str | None:
    """The task whose own concept texts (`decpo.probes.concept_texts`) the probes read: the task trained on, or
    ``toxicity`` for pairs sampled on its prompts; None for a user's file or other sampled prompts."""
    if cfg.pairs.source:
        return "toxicity" if cfg.pairs.source == "toxicity" else None
    return None if cfg.data.path else cfg.data.task


def sparse_probing_plan(cfg: RunConfig, records: list[dict]) -> SparsePlan:
    """What the probe stage's k-sparse probing covers (`SparsePlan`): the blocks of
    ``experiment.sparse_probing_layers`` (null: ``train.reg_layers``), the concepts the held-out ``records``
    carry (`decpo.probes.concepts.concept_labels`), those of the task's own concept texts (the first
    ``experiment.concept_num_texts``, null: all; `concept_task`), and the concepts skipped, with why."""
    layers = sparse_probing_layers(cfg)
    if not layers:
        return SparsePlan([], {}, {}, "off (experiment.sparse_probing_layers = [])")
    task = concept_task(cfg)
    extra = concept_text_records(task, cfg.data.data_dir) if task else None
    kept, skipped = _usable(concept_labels(records))
    concept_texts = None
    if extra:
        extra = extra[: cfg.experiment.concept_num_texts]
        extra_kept, extra_skipped = _usable(
            {c: y for c, y in concept_labels(extra).items() if c not in kept and c not in skipped}
        )
        skipped.update(extra_skipped)
        if extra_kept:
            concept_texts = ConceptTexts(concept_items(extra), extra_kept, f"{task}: {CONCEPT_SOURCES[task]}")
    if not kept and not skipped and concept_texts is None:
        reason = (
            f"skipped: the held-out records of the training data ({training_data(cfg)}) carry no labelled "
            f"concept ({', '.join(CONCEPTS)}; the synthetic, reading, sycophancy and toxicity tasks do)"
        )
        logger.info("sparse probing: %s", reason)
        return SparsePlan(layers, {}, {}, reason)
    none_kept = not kept and concept_texts is None
    plan = SparsePlan(
        layers,
        kept,
        skipped,
        "skipped: no concept has enough texts of each class" if none_kept else "",
        concept_texts,
    )
    if plan.reason or plan.skipped:
        logger.info("sparse probing: %s", "; ".join([*filter(None, [plan.reason]), *skipped.values()]))
    return plan


def _usable(labels: dict[str, list[int]]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The concepts with enough texts of each class for the folds, and the others with why."""
    kept, skipped = {}, {}
    for concept, y in labels.items():
        try:
            check_labels(np.asarray(y), concept, SPARSE_FOLDS)
            kept[concept] = y
        except SparseProbeError as e:
            skipped[concept] = str(e)
    return kept, skipped


def probe_sites(cfg: RunConfig) -> list[str]:
    """The activation sites probed: ``mlp.up_proj`` (the paper's) and the penalty's ``train.reg_site``."""
    return list(dict.fromkeys([MLP_UP_PROJ, cfg.train.reg_site]))
