"""The paper presets (configs/paper/) run: 2 steps of each on CPU, with only the model and the hardware keys swapped.

Each preset trains through `decpo.training.run.train` as written, except for these overrides:
``model.model_name_or_path`` (a tiny random Llama with the 32 blocks of Llama-2-7B and Llama-3-8B, so that
the preset's ``train.reg_layers`` exist, and a tokenizer trained on the tasks' own text), the hardware keys
of `CPU` (the ones a preset sets), and the size of the run (`SIZE`: 2 steps, 4 eval pairs). Everything
else is the preset's: its task loader on the real data, ``loss_type``, LoRA targets, gradient checkpointing,
``reg_form``, ``reg_layers``, the learning-rate schedule. A preset whose task data is not in $DECPO_DATA_DIR
is skipped, naming the missing file. A preset with a key that no longer exists fails, naming the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from decpo.cli import main
from decpo.config import ConfigError, load_config

from conftest import REPO, real_data_dir

PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
# the file each task trains on, inside $DECPO_DATA_DIR (decpo.data.tasks.DATA_FILES)
TASK_FILES = {
    "sycophancy": "sycophancy/generate_dataset.json",
    "reframing": "reframing/reframing_dataset.csv",
    "toxicity": "toxicity/harmless-base_test.jsonl.gz",
}
# hardware-only keys and their CPU values, applied where a preset sets them
CPU = {
    "model.dtype": "float32",
    "model.load_in_4bit": False,
    "model.load_in_8bit": False,
    "model.attn_implementation": None,
    "train.bf16": False,
    "train.fp16": False,
    "train.tf32": None,
}
SIZE = ["train.max_steps=2", "data.max_eval_samples=4"]
TINY_LAYERS = 32  # Llama-2-7B and Llama-3-8B have 32 blocks


def _flat(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def cpu_overrides(path: Path, model_dir: Path) -> list[str]:
    """The overrides that run ``path`` on a CPU: the tiny model, the hardware keys it sets, the run's size."""
    keys = _flat(yaml.safe_load(path.read_text()))
    hardware = [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).splitlines()[0]}"
        for k, v in CPU.items()
        if k in keys
    ]
    return [f"model.model_name_or_path={model_dir}", *hardware, *SIZE]


@pytest.fixture(scope="module")
def tiny_paper_llama(tmp_path_factory) -> Path:
    """A folder with a 32-block random Llama (hidden 16) and a byte-level BPE trained on the tasks' text."""
    from decpo.data.tasks import load_task
    from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer

    data = real_data_dir()
    tasks = [t for t, rel in TASK_FILES.items() if data is not None and (data / rel).is_file()]
    if not tasks:
        pytest.skip("real data not found: set DECPO_DATA_DIR")
    texts = [
        r[k]
        for t in tasks
        for r in load_task(t, "train", data_dir=data)
        for k in ("prompt", "chosen", "rejected")
    ]
    tokenizer = build_tiny_tokenizer(vocab_size=4096, corpus=texts)
    folder = tmp_path_factory.mktemp("tiny-paper-llama")
    build_tiny_llama(len(tokenizer), num_layers=TINY_LAYERS).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cpu_overrides_swap_only_the_model_the_hardware_keys_and_the_size(tmp_path):
    path = REPO / "configs" / "paper" / "llama2-7b-sycophancy.yaml"
    assert cpu_overrides(path, tmp_path) == [
        f"model.model_name_or_path={tmp_path}",
        "model.dtype=float32",
        "train.bf16=false",
        *SIZE,
    ]
    cfg = load_config(path, cpu_overrides(path, tmp_path))
    preset = load_config(path)
    changed = {k for k, v in _flat(cfg.to_dict()).items() if _flat(preset.to_dict())[k] != v}
    assert changed == {
        "model.model_name_or_path",
        "model.dtype",
        "train.bf16",
        "train.max_steps",
        "data.max_eval_samples",
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_preset_trains_two_steps_on_cpu(path, tiny_paper_llama, tmp_path, monkeypatch):
    import decpo.training.run as run

    cfg = load_config(path, cpu_overrides(path, tiny_paper_llama))
    needed = real_data_dir() / TASK_FILES[cfg.data.task] if real_data_dir() else None
    if needed is None or not needed.is_file():
        pytest.skip(f"{path.name} needs {TASK_FILES[cfg.data.task]} in $DECPO_DATA_DIR")
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))
    seen: dict = {"losses": [], "train_calls": 0}
    build = run.build_trainer

    def spy(cfg, output_dir, train_records, eval_records, args):
        """Record what the run trains on and what each training loss holds."""
        trainer = build(cfg, output_dir, train_records, eval_records, args)
        seen.update(trainer=trainer, train_records=train_records)
        compute_loss = trainer.compute_loss

        def recorded(model, *a, **k):
            loss = compute_loss(model, *a, **k)
            if model.training:
                seen["losses"].append(trainer._last_terms)  # (preference loss, penalty R)
            return loss

        trainer.compute_loss = recorded
        # the regularized block's MLP entered in train mode: the step's forward, then its recomputation in the
        # backward pass under gradient checkpointing (a pre-hook: torch's non-reentrant recomputation stops
        # early, before the module's output, once the tensors the backward needs are recomputed)
        mlp = trainer.model.get_base_model().model.layers[cfg.train.reg_layers[0]].mlp
        mlp.register_forward_pre_hook(
            lambda m, i: seen.__setitem__("train_calls", seen["train_calls"] + m.training)
        )
        return trainer

    monkeypatch.setattr(run, "build_trainer", spy)
    result = run.train(cfg, tmp_path / "run")

    trainer = seen["trainer"]
    assert trainer.state.global_step == 2
    assert {r["task"] for r in seen["train_records"]} == {cfg.data.task}  # the task's own loader, real data
    assert trainer.args.loss_type == cfg.train.loss_type and trainer.args.reg_form == cfg.train.reg_form
    assert trainer.args.reg_layers == cfg.train.reg_layers and trainer.args.lr_scheduler_type == "constant"
    lora = trainer.model.peft_config["default"]
    assert set(lora.target_modules) == set(cfg.model.lora_target_modules) and lora.r == cfg.model.lora_r
    assert (
        trainer.args.gradient_checkpointing and seen["train_calls"] == 2 * 2
    )  # 2 steps: forward + recomputation
    assert len(seen["losses"]) == 2 and all(penalty > 0 for _, penalty in seen["losses"])
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    assert result.metrics["eval/loss/decorr"] > 0


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_a_paper_preset_with_a_key_that_no_longer_exists_fails_naming_it(path, tmp_path, capsys):
    text = path.read_text()
    assert "\n  reg_form:" in text and "\n  lora_target_modules:" in text
    for old, new, named, meant in [
        ("\n  reg_form:", "\n  regularizer_form:", "train.regularizer_form", "train.reg_form"),
        ("\n  lora_target_modules:", "\n  lora_targets:", "model.lora_targets", "model.lora_target_modules"),
    ]:
        stale = tmp_path / path.name
        stale.write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=rf"unknown config key '{named}' .*did you mean '{meant}'"):
            load_config(stale)
    # through the CLI: exit status 2, the key named, nothing run
    assert main(["train", "--config", str(stale), "--output-dir", str(tmp_path / "run")]) == 2
    assert "'model.lora_targets'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
