"""What a task evaluates: the model spec resolved (run dirs, adapters), its reference, the loaded models.

`EvalContext` is the first argument of every task function (see `decpo.evaluation.registry`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from decpo.data import chat_messages
from decpo.evaluation import metrics as M
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import EvalError
from decpo.inference.generation import generate
from decpo.models import load_model, load_tokenizer

logger = logging.getLogger(__name__)


def resolve_model_spec(spec: str) -> str:
    """A training run dir (a folder holding ``final/``) means its ``final/``; other specs are unchanged."""
    path = Path(spec)
    if path.is_dir() and (path / "final").is_dir() and not (path / "config.json").is_file():
        return str(path / "final")
    return spec


def training_config(model_spec: str) -> dict[str, Any] | None:
    """The saved ``config.yaml`` (as a dict) of the training run that wrote ``model_spec`` (a run's ``final/``
    or ``checkpoint-N/``, see `decpo.training.run`), or None for a model that is not a run's output."""
    path = Path(model_spec)
    if not path.is_dir() or not (path.name == "final" or path.name.startswith("checkpoint-")):
        return None
    config = path.parent / "config.yaml"
    if not config.is_file():
        return None
    tree = yaml.safe_load(config.read_text())
    return tree if isinstance(tree, dict) else None


def _section(run: dict[str, Any] | None, name: str) -> dict[str, Any]:
    value = (run or {}).get(name)
    return value if isinstance(value, dict) else {}


def run_base_model(run: dict[str, Any]) -> str | None:
    """The model a training run started from (its ``model.model_name_or_path``, joined with ``model.gguf_file``)."""
    model = _section(run, "model")
    name = model.get("model_name_or_path")
    if not name:
        return None
    return str(Path(name, model["gguf_file"])) if model.get("gguf_file") else str(name)


def default_reference(model_spec: str) -> str:
    """The reference of a model: the base model of a peft adapter folder, else the base model of the training
    run that wrote it (a full fine-tune's ``final/``: the run's ``config.yaml``), else the model itself (then
    the reward measures are n/a)."""
    adapter_config = Path(model_spec, "adapter_config.json")
    if adapter_config.is_file():
        return json.loads(adapter_config.read_text())["base_model_name_or_path"]
    run = training_config(model_spec)
    return (run_base_model(run) if run else None) or model_spec


def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model (the same string, or the same folder or file)."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def warn_remote_code_not_taken(model_spec: str, run_model: dict[str, Any], allowed: bool) -> None:
    """A warning when the run's ``config.yaml`` asks for remote code that the user did not allow: decpo never
    takes ``trust_remote_code`` from a run folder, whose files may come from anyone."""
    if run_model.get("trust_remote_code") and not allowed:
        logger.warning(
            "%s: its run's config.yaml sets model.trust_remote_code, which decpo does not take from a run "
            "folder; the model's own code runs only with --trust-remote-code on this command",
            model_spec,
        )


def trained_answer_format(run: dict[str, Any] | None) -> str:
    """The synthetic and reading tasks' answer format as trained: a run's ``data.synthetic_answer``, else option."""
    return str(_section(run, "data").get("synthetic_answer") or "option")


class EvalContext:
    """The loaded policy, its tokenizer and a lazily loaded reference for one run: what a task gets; ``checked``:
    what the task's ``check_data`` read before the model loaded (None when it returns nothing)."""

    def __init__(self, cfg: EvalConfig, checked: Any = None) -> None:
        self.cfg = cfg
        self.checked = checked
        self.model_spec = resolve_model_spec(cfg.model)
        self.run = training_config(self.model_spec)  # None unless the model is a training run's output
        self.reference_spec = (
            resolve_model_spec(cfg.reference) if cfg.reference else default_reference(self.model_spec)
        )
        if cfg.synthetic_answer is None:  # a run folder scores the answers it was trained on
            self.cfg = cfg = dataclasses.replace(cfg, synthetic_answer=trained_answer_format(self.run))
        model = _section(self.run, "model")
        warn_remote_code_not_taken(self.model_spec, model, cfg.trust_remote_code)
        # as the run loaded its models: the seed builds the in-process tiny model (and the base of its adapter).
        # Remote code only from the user's own setting: a run folder (perhaps downloaded) must not turn it on.
        self.load_kwargs = {
            "seed": int(_section(self.run, "train").get("seed", 0)),
            "trust_remote_code": cfg.trust_remote_code,
        }
        self.reference_kwargs = dict(self.load_kwargs)
        if self.run and self.reference_spec == run_base_model(self.run) and model.get("model_revision"):
            self.reference_kwargs["revision"] = model["model_revision"]
        self.not_applicable: dict[str, str] = {}  # measure -> why it has no value
        # None ("auto"): the layout the model was trained on
        self.chat_template = (
            bool(_section(self.run, "data").get("chat_template", False))
            if cfg.chat_template is None
            else bool(cfg.chat_template)
        )
        self.tokenizer = load_tokenizer(self.model_spec, trust_remote_code=cfg.trust_remote_code)
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise EvalError(f"chat_template: the tokenizer of {self.model_spec!r} has no chat template")
        self.model = load_model(self.model_spec, dtype=cfg.dtype, **self.load_kwargs).eval()
        self._reference = None

    @property
    def reference_is_policy(self) -> bool:
        """The reference is the policy itself: no reward measure (`decpo.evaluation.measures.REFERENCE_MEASURES` are n/a, never 0)."""
        return same_model(self.reference_spec, self.model_spec)

    def reference(self):
        if self._reference is None:
            self._reference = load_model(
                self.reference_spec, dtype=self.cfg.dtype, **self.reference_kwargs
            ).eval()
        return self._reference

    def entry(self, values: list[float], direction: str) -> dict[str, Any]:
        return M.metric_entry(values, direction, seed=self.cfg.seed, n_boot=self.cfg.n_boot)

    def _rendered(self, prompts: list[str]) -> list[str]:
        """The prompts in the chat template when ``self.chat_template`` (as log-prob measures), else as given."""
        if not self.chat_template:
            return prompts
        return [
            self.tokenizer.apply_chat_template(chat_messages(p), add_generation_prompt=True, tokenize=False)
            for p in prompts
        ]

    def generate(self, prompts: list[str], desc: str) -> list[str]:
        """Greedy outputs, the prompts in the chat template when ``self.chat_template`` (as log-prob measures)."""
        return generate(
            self.model,
            self.tokenizer,
            self._rendered(prompts),
            max_new_tokens=self.cfg.new_tokens,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            desc=desc,
        )

    def sample(
        self, prompts: list[str], k: int, desc: str, *, temperature: float, top_p: float
    ) -> list[list[str]]:
        """``k`` sampled outputs per prompt (``[prompt][sample]``), drawn after seeding torch with
        ``cfg.seed``: the same config gives the same samples whatever ran before."""
        torch.manual_seed(self.cfg.seed)
        flat = generate(
            self.model,
            self.tokenizer,
            self._rendered(prompts),
            max_new_tokens=self.cfg.new_tokens,
            batch_size=self.cfg.batch_size,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            num_return_sequences=k,
            progress=self.cfg.progress,
            desc=desc,
        )
        # generate returns the k samples of each prompt together: [p0 s0, ..., p0 s(k-1), p1 s0, ...]
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]
