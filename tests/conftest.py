"""Shared fixtures: tiny in-process models and trainers (offline, seconds), and the real-data folder."""

from __future__ import annotations

import os

# never reach for the Hub from tests (peft looks up a base model's config when saving adapters)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# under pytest-xdist the workers share the cores: each takes its share of intra-op threads (before torch starts),
# which the processes a test starts inherit
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
from pathlib import Path

import pytest
import torch

from decpo.models import load_model, load_tokenizer
from decpo.models.tiny import TINY_NAME

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):  # also when torch started before this file set OMP_NUM_THREADS
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): a worker per core, at most 4 (each builds models of its own)."""
    return min(4, os.cpu_count() or 1)


def real_data_dir() -> Path | None:
    """$DECPO_DATA_DIR, else ../shared/data beside the repo; None when neither exists."""
    for candidate in (os.environ.get("DECPO_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def data_dir() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real data not found: set DECPO_DATA_DIR")
    return path


PAIRS = [
    {"prompt": "What is 2 + 2?", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Is the sky blue?", "chosen": " Yes, it is.", "rejected": " No"},
    {"prompt": "I think 3 + 3 = 7. Question: What is 3 + 3?", "chosen": " 6", "rejected": " 7"},
    {"prompt": "Name a fox.", "chosen": " The quick brown fox", "rejected": " A dog"},
    {"prompt": "What is 9 - 4?", "chosen": " 5", "rejected": " 13"},
    {"prompt": "Agree?", "chosen": " (B) Disagree", "rejected": " (A) Agree"},
    {"prompt": "Count: 1 2 3", "chosen": " 4", "rejected": " 9 9"},
    {"prompt": "Answer:", "chosen": " yes", "rejected": " no no no"},
]


def make_trainer(
    tmp_path: Path,
    *,
    trainer_cls=None,
    dtype=torch.float32,
    lora: bool = False,
    pairs=PAIRS,
    eval_pairs=None,
    model=None,
    **args,
):
    """A DecPOTrainer (or ``trainer_cls``) on a tiny random Llama (or ``model``), full fine-tuning unless ``lora``."""
    from datasets import Dataset
    from peft import LoraConfig

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import frozen_copy
    from decpo.training.trainer import DecPOTrainer

    trainer_cls = trainer_cls or DecPOTrainer
    tokenizer = load_tokenizer(TINY_NAME)
    model = (model if model is not None else load_model(TINY_NAME, seed=0)).to(dtype)
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-2,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        precompute_ref_log_probs=False,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        reg_layers=[-1],
        reg_weight=0.1,
    )
    defaults.update(args)
    if trainer_cls is not DecPOTrainer:
        for key in [k for k in defaults if k.startswith("reg_")]:
            defaults.pop(key)
        from trl import DPOConfig

        config = DPOConfig(**defaults)
    else:
        config = DecPOConfig(**defaults)
    peft_config = (
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]) if lora else None
    )
    ref = None if lora or config.precompute_ref_log_probs else frozen_copy(model)
    return trainer_cls(
        model=model,
        ref_model=ref,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        eval_dataset=Dataset.from_list(eval_pairs) if eval_pairs is not None else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def make_simpo_trainer(tmp_path: Path, **args):
    """A SimPOTrainer (TRL's CPOTrainer as SimPO) with the regularizer on a tiny random Llama."""
    from datasets import Dataset

    from decpo.config.trainer_args import SimPOConfig
    from decpo.training.trainer import SimPOTrainer

    defaults = dict(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        reg_layers=[-1],
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    defaults.update(args)
    return SimPOTrainer(
        model=load_model(TINY_NAME),
        args=SimPOConfig(**defaults),
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=load_tokenizer(TINY_NAME),
    )
