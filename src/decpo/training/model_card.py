"""The run folder's model card (``README.md``): what was trained from what, and where its settings are.

TRL's card (``Trainer.create_model_card``) links the base model to the Hub whatever it is ("a fine-tuned version
of [None]" for a local folder such as the embedded model's converted GGUF, a Hub link for decpo's in-process
``tiny-random-llama``) and its quick start loads ``model="None"``. This card names the base model as given,
links it only when it names a Hub repository, and says how decpo loads the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from decpo.io import atomic_write_text

IN_PROCESS = ("tiny-random-llama",)  # decpo's own model names: no file, no Hub repository


def hub_repository(name: str | None) -> str | None:
    """``name`` when it reads as a Hub ``owner/model`` id (not a local path, not decpo's in-process names)."""
    if not name or name in IN_PROCESS or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) else None


def card_text(run_name: str, base: str | None, objective: dict[str, Any], versions: dict[str, str]) -> str:
    """The card's Markdown. ``objective``: the trainer's loss settings (``loss_type``, ``beta``, ``reg_type``,
    ``reg_weight``, ...) as recorded; ``versions``: library -> version."""
    repo = hub_repository(base)
    front = ["---", "library_name: peft" if objective.get("peft") else "library_name: transformers"]
    if repo:
        front.append(f"base_model: {repo}")
    front += ["tags:", "- decpo", "- dpo", "- trl", "---", ""]
    said_base = (
        f"[{repo}](https://huggingface.co/{repo})" if repo else f"`{base}`" if base else "an unnamed model"
    )
    settings = ", ".join(f"{k}={v}" for k, v in objective.items() if k != "peft")
    used = ", ".join(f"{k} {v}" for k, v in versions.items())
    body = [
        f"# {run_name}",
        "",
        f"Fine-tuned from {said_base} by decpo's trainer (TRL's `DPOTrainer` plus the activation regularizer "
        f"of DecPO, Yan et al. 2024): {settings}.",
        "",
        "- Every setting of the run: `config.yaml` in this folder; the library versions: `env.json`"
        + (f" ({used})." if used else "."),
        "- Metrics: `metrics.jsonl` (each logged step), `final_metrics.json` (the last evaluation).",
        '- Load: `decpo.models.load_model("<this folder>/final")`, or `decpo eval --model <this folder>` to '
        "evaluate it; the weights in `final/` are "
        + ("a PEFT adapter on the base model." if objective.get("peft") else "the whole model."),
        "",
    ]
    return "\n".join(front + body)


def write_card(
    output_dir: str | Path, base: str | None, objective: dict[str, Any], versions: dict[str, str]
) -> Path:
    """``<output_dir>/README.md``, atomically."""
    path = Path(output_dir) / "README.md"
    atomic_write_text(path, card_text(Path(output_dir).name, base, objective, versions))
    return path


def base_model_name(output_dir: str | Path, model: Any) -> str | None:
    """The base model as the run's ``config.yaml`` names it (``default``: the embedded model), else as the
    model's config records it."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(output_dir) / "config.yaml").read_text()) or {}
        name = (cfg.get("model") or {}).get("model_name_or_path")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        name = None
    if name == "default":
        return "default (the embedded SmolLM2-135M-Instruct)"
    config = getattr(getattr(model, "base_model", model), "config", None) or getattr(model, "config", None)
    return name or getattr(config, "_name_or_path", None)


class ModelCardMixin:
    """Replaces TRL's model card with `card_text`'s."""

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        if not self.is_world_process_zero():
            return
        import peft
        import transformers
        import trl

        args = self.args
        objective = {
            k: getattr(args, k) for k in ("loss_type", "beta", "reg_type", "reg_weight") if hasattr(args, k)
        }
        if getattr(args, "reg_type", None):
            objective.update(
                reg_layers=getattr(args, "reg_layers", None), reg_site=getattr(args, "reg_site", None)
            )
        objective["peft"] = isinstance(self.model, peft.PeftModel)
        versions = {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        }
        write_card(args.output_dir, base_model_name(args.output_dir, self.model), objective, versions)
