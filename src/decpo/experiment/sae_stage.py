"""The SAE stage of `decpo run` (``experiment.sae: true``): an SAE trained on the base model's activations
(`decpo.probes.sae_runner.SaeRun`), then its measures of base and every trained model, in ``sae/``:
``sae.csv`` (probes.csv's columns, probe ``sae/<measure>``), ``sae.json`` (where the SAE came from, its
training) and the SAE itself (``sae/sae/``, sparsify's format) when trained here.

Texts: the SAE trains on the training pairs' prompt + chosen answer (the texts the models were trained on)
and is measured on the held-out pairs the probes read (`decpo.experiment.probe_texts.probe_records`), prompt
+ chosen answer too: disjoint sets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from decpo.config import RunConfig
from decpo.experiment.plan import stage_key
from decpo.experiment.probe_texts import pairs_file, probe_records
from decpo.io import atomic_write_text
from decpo.probes.runner import prompt_text, rows_to_csv
from decpo.probes.sae_runner import SaeRun, sae_models
from decpo.probes.sae_settings import SaeSettings
from decpo.training.data import load_records

SAE_STAGE = "probes/sae"  # a probes-kind stage (experiment.resources.probes)
SAE_DIR = "sae"


def _text(record: dict) -> str:
    return prompt_text(record["prompt"]) + prompt_text(record["chosen"])


def sae_settings(cfg: RunConfig) -> SaeSettings:
    tokens = cfg.experiment.sae_train_tokens
    return SaeSettings() if tokens is None else SaeSettings(train_tokens=tokens)


def sae_layer(cfg: RunConfig) -> int:
    """``experiment.sae_layer``, null read as the first of ``train.reg_layers``."""
    layer = cfg.experiment.sae_layer
    return cfg.train.reg_layers[0] if layer is None else layer


def sae_key(cfg: RunConfig, model_keys: dict[str, str]) -> str:
    """The stage's key: the models' keys and what the texts, the SAE and its block depend on."""
    e = cfg.experiment
    return stage_key(
        {
            "models": model_keys,
            "n": e.probe_num_texts,
            "texts": cfg.to_dict()["data"],  # max_train_samples too: the training texts
            "site": cfg.train.reg_site,
            "layer": sae_layer(cfg),
            "sae_path": e.sae_path,
            "settings": sae_settings(cfg).__dict__,
            "max_length": cfg.train.max_length,
            "dtype": cfg.model.dtype,
        }
    )


def sae_stage(cfg: RunConfig, models: dict[str, str], out: Path) -> Callable[[], None]:
    """The stage's function: the SAE of base (the first of ``models``), then every model's measures."""

    def stage() -> None:
        base_cfg = cfg.replace(**{"train.seed": 0})  # the same training texts for every seed
        train = [] if cfg.experiment.sae_path else load_records(base_cfg, pairs_path=pairs_file(base_cfg))[0]
        run = SaeRun(
            [_text(r) for r in train],
            [_text(r) for r in probe_records(cfg)],
            site=cfg.train.reg_site,
            layer=sae_layer(cfg),
            settings=sae_settings(cfg),
            sae_path=cfg.experiment.sae_path,
            batch_size=cfg.probe.batch_size,
            max_length=cfg.train.max_length,
        )
        rows = sae_models(models, run, dtype=cfg.model.dtype)
        atomic_write_text(out / "sae.csv", rows_to_csv(rows))
        run.write(out)

    return stage
