"""The persistent, content-addressed cache of precomputed reference log-probs (`CachedReferenceMixin`)."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from decpo.config.trainer_args import DecPOConfig
from decpo.models import TINY_NAME, load_model, load_tokenizer
from decpo.training.ref_cache import REF_COLUMNS, hash_dataset_tokens
from decpo.training.trainer import DecPOTrainer

from conftest import PAIRS

LOGGER = "decpo.training.ref_cache"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture
def ref_calls(monkeypatch):
    """Counts the reference forwards (`compute_ref_log_probs` calls) of every DecPOTrainer."""
    calls = []
    original = DecPOTrainer.compute_ref_log_probs

    def spy(self, model, inputs):
        calls.append(inputs["input_ids"].shape)
        return original(self, model, inputs)

    monkeypatch.setattr(DecPOTrainer, "compute_ref_log_probs", spy)
    return calls


def build(
    tmp_path,
    cache,
    *,
    pairs=PAIRS,
    lora_seed=None,
    perturb=False,
    eval_pairs=None,
    ref=False,
    model=None,
    **args,
):
    """A DecPOTrainer with precomputed reference log-probs on the tiny Llama (LoRA when ``lora_seed`` is set, an
    explicit ``ref_model``, a copy of the policy, when ``ref``)."""
    from peft import LoraConfig

    from decpo.models import frozen_copy

    model = model if model is not None else load_model(TINY_NAME, seed=0)
    if perturb:
        with torch.no_grad():
            model.model.norm.weight[0] += 1e-3
    config = DecPOConfig(
        **{
            "output_dir": str(tmp_path / "out"),
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "max_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
            "precompute_ref_log_probs": True,
            "ref_logps_cache": None if cache is None else str(cache),
            "reg_layers": [-1],
            "seed": 0 if lora_seed is None else lora_seed,
            **args,
        }
    )
    peft_config = None
    if lora_seed is not None:
        # the trainer seeds (args.seed) before it adds the adapter; random A and B: the policy differs from the
        # reference from the start
        peft_config = LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
    return DecPOTrainer(
        model=model,
        ref_model=frozen_copy(model) if ref else None,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        eval_dataset=None if eval_pairs is None else Dataset.from_list(eval_pairs),
        processing_class=load_tokenizer(TINY_NAME),
        peft_config=peft_config,
    )


def ref_values(trainer, split="train"):
    ds = trainer.train_dataset if split == "train" else trainer.eval_dataset
    return [torch.tensor(ds[c]) for c in REF_COLUMNS]


def files(cache):
    return sorted(cache.glob("*.safetensors")) if cache.exists() else []


def test_computing_the_reference_log_probs_is_announced_before_it_starts(tmp_path, monkeypatch, caplog):
    """The first run's silent minutes: the line comes before the reference's first forward."""
    said_before = []
    original = DecPOTrainer.compute_ref_log_probs

    def spy(self, model, inputs):
        said_before.append("reference log-probs for train: computing" in caplog.text)
        return original(self, model, inputs)

    monkeypatch.setattr(DecPOTrainer, "compute_ref_log_probs", spy)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        build(tmp_path / "a", tmp_path / "cache")
    assert said_before and all(said_before)
    assert f"computing {len(PAIRS)} pairs with the reference model" in caplog.text


def test_second_trainer_hits_with_identical_values(tmp_path, ref_calls, caplog):
    cache = tmp_path / "cache"
    first = build(tmp_path / "a", cache, eval_pairs=PAIRS[:5])
    assert ref_calls, "the first trainer computes the reference log-probs"
    assert len(files(cache)) == 2  # train and eval
    ref_calls.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        second = build(tmp_path / "b", cache, eval_pairs=PAIRS[:5])
    assert ref_calls == []
    assert sum("cache hit" in r.getMessage() for r in caplog.records) == 2
    for split in ("train", "eval"):
        for a, b in zip(ref_values(first, split), ref_values(second, split), strict=True):
            assert a.dtype == torch.float32 and len(a) == len(getattr(first, f"{split}_dataset"))
            assert torch.equal(a, b)
    # the same columns and types as TRL's own output, and the trainer still trains on them
    assert second.train_dataset.features == first.train_dataset.features
    assert second.train_dataset.column_names == first.train_dataset.column_names
    second.train()


PAIRS_ONE_TOKEN_CHANGED = [{**PAIRS[0], "chosen": " 3"}, *PAIRS[1:]]


@pytest.mark.parametrize(
    "change",
    [
        {"pairs": PAIRS_ONE_TOKEN_CHANGED},
        {"pairs": [PAIRS[1], PAIRS[0], *PAIRS[2:]]},  # row order
        {"perturb": True},  # reference weights
        {"max_length": 29},  # cuts one completion's EOS, drops no pair: the tokenized data is the same
        {"precompute_ref_batch_size": 2},
    ],
    ids=["data", "row-order", "weights", "max_length", "batch_size"],
)
def test_a_change_that_affects_the_values_misses(tmp_path, ref_calls, change):
    cache = tmp_path / "cache"
    build(tmp_path / "a", cache)
    ref_calls.clear()
    build(tmp_path / "b", cache, **change)
    assert ref_calls, "the changed trainer must recompute"
    assert len(files(cache)) == 2


def test_lora_adapters_are_not_part_of_the_reference(tmp_path, ref_calls):
    cache = tmp_path / "cache"
    first = build(tmp_path / "a", cache, lora_seed=1)
    ref_calls.clear()
    second = build(tmp_path / "b", cache, lora_seed=2)
    lora_a = [p for n, p in first.model.named_parameters() if "lora_A" in n]
    lora_b = [p for n, p in second.model.named_parameters() if "lora_A" in n]
    assert lora_a and not all(torch.equal(x, y) for x, y in zip(lora_a, lora_b, strict=True))
    assert ref_calls == []
    assert len(files(cache)) == 1
    for a, b in zip(ref_values(first), ref_values(second), strict=True):
        assert torch.equal(a, b)
    # the reference (adapter disabled) is the base model: a full fine-tuning trainer on it shares the entry
    full = build(tmp_path / "c", cache)
    assert ref_calls == []
    for a, b in zip(ref_values(first), ref_values(full), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["truncated", "wrong_length", "flipped_bit", "edited"])
def test_a_damaged_cache_file_is_recomputed_with_a_warning(tmp_path, ref_calls, caplog, damage):
    cache = tmp_path / "cache"
    first = build(tmp_path / "a", cache)
    (path,) = files(cache)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 9])
    elif damage == "flipped_bit":  # one value changed, the file still reads
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "edited":  # rewritten with other values of the right shape and the old metadata
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        save_file({c: torch.zeros(len(PAIRS)) for c in REF_COLUMNS}, str(path), metadata=metadata)
    else:
        save_file({c: torch.zeros(len(PAIRS) - 1) for c in REF_COLUMNS}, str(path))
    ref_calls.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        second = build(tmp_path / "b", cache)
    assert ref_calls, "a damaged entry must be recomputed"
    assert any(r.levelno == logging.WARNING and str(path) in r.getMessage() for r in caplog.records)
    assert not any("cache hit" in r.getMessage() for r in caplog.records)
    for a, b in zip(ref_values(first), ref_values(second), strict=True):
        assert torch.equal(a, b)
    # overwritten with the good values
    stored = load_file(str(path))
    for c, a in zip(REF_COLUMNS, ref_values(first), strict=True):
        assert torch.equal(stored[c], a)


def test_no_cache_folder_keeps_trls_behaviour(tmp_path, ref_calls):
    cache = tmp_path / "cache"
    cached = build(tmp_path / "a", cache)
    ref_calls.clear()
    plain = build(tmp_path / "b", None)
    assert ref_calls, "without a cache folder TRL computes the values"
    assert [p.name for p in tmp_path.rglob("*.safetensors")] == [files(cache)[0].name]
    for a, b in zip(ref_values(cached), ref_values(plain), strict=True):
        assert torch.equal(a, b)


def test_dataset_hash_follows_content_and_order():
    rows = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]},
        {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9]},
    ]
    ds = Dataset.from_list(rows)
    same = Dataset.from_list([dict(r) for r in rows])
    assert hash_dataset_tokens(ds) == hash_dataset_tokens(same)
    # token boundaries between columns count: [1, 2] | [3] differs from [1] | [2, 3]
    moved = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2, 3], "rejected_ids": [4, 5]}, rows[1]])
    assert hash_dataset_tokens(moved) != hash_dataset_tokens(ds)
    assert hash_dataset_tokens(ds.select([1, 0])) != hash_dataset_tokens(ds)
    assert hash_dataset_tokens(ds.select([1, 0]).select([1, 0])) == hash_dataset_tokens(ds)
    filtered = Dataset.from_list([*rows, rows[0]]).filter(lambda e, i: i < 2, with_indices=True)
    assert hash_dataset_tokens(filtered) == hash_dataset_tokens(ds)


class FakeZero3:
    """What DeepSpeed ZeRO-3 leaves on a rank: each parameter's ``.data`` empty, its full size in ``ds_numel``
    (and ``ds_id``, ``ds_shape``); the full values come back only inside a forward (``gathered``)."""

    def __init__(self):
        self.full: dict[torch.nn.Parameter, torch.Tensor] = {}

    def partition(self, model):
        for i, p in enumerate(model.parameters()):
            self.full[p] = p.data
            p.ds_id, p.ds_numel, p.ds_shape = i, p.numel(), tuple(p.shape)
            p.data = torch.empty(0, dtype=p.dtype)
        return model

    def gathered(self, fn):
        def run(*args, **kwargs):
            for p, data in self.full.items():
                p.data = data
            try:
                return fn(*args, **kwargs)
            finally:
                for p in self.full:
                    p.data = torch.empty(0, dtype=p.dtype)

        return run


@pytest.fixture
def zero3(monkeypatch):
    fake = FakeZero3()
    monkeypatch.setattr(
        DecPOTrainer, "compute_ref_log_probs", fake.gathered(DecPOTrainer.compute_ref_log_probs)
    )
    return fake


def test_a_reference_sharded_by_prepare_is_keyed_on_its_weights_before(
    tmp_path, zero3, monkeypatch, ref_calls
):
    from accelerate import Accelerator

    original = Accelerator.prepare_model

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        model = original(self, model, device_placement, evaluation_mode)
        return (
            zero3.partition(model) if evaluation_mode else model
        )  # the reference, as prepare_deepspeed does

    monkeypatch.setattr(Accelerator, "prepare_model", prepare_model)
    cache = tmp_path / "cache"
    first = build(tmp_path / "a", cache, ref=True)
    assert all(p.numel() == 0 for p in first.ref_model.parameters())  # the fake sharding took place
    ref_calls.clear()
    second = build(tmp_path / "b", cache, ref=True, perturb=True)  # another checkpoint of the architecture
    assert ref_calls, "another reference must not hit the first one's entry"
    assert len(files(cache)) == 2
    assert not all(torch.equal(a, b) for a, b in zip(ref_values(first), ref_values(second), strict=True))
    ref_calls.clear()
    build(tmp_path / "c", cache, ref=True)  # the first checkpoint again: its entry
    assert ref_calls == []


def test_partitioned_weights_turn_the_cache_off_with_a_warning(tmp_path, zero3, ref_calls, caplog):
    """Loaded under ZeRO-3 (``zero.Init``), the weights are partitioned before the trainer sees them."""
    cache = tmp_path / "cache"
    values = []
    for run, perturb in (("a", False), ("b", True)):
        model = load_model(TINY_NAME, seed=0)
        if perturb:
            with torch.no_grad():
                model.model.norm.weight[0] += 1e-3
        ref_calls.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            trainer = build(tmp_path / run, cache, model=zero3.partition(model))
        assert ref_calls, "partitioned weights: TRL's own precompute"
        assert any(
            r.levelno == logging.WARNING and "partitioned" in r.getMessage() for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        values.append(ref_values(trainer))
    assert files(cache) == []
    assert not torch.equal(values[0][0], values[1][0])


def test_sharded_tensor_names_detects_shards_generically():
    from decpo.training.ref_cache import sharded_tensor_names

    model = load_model(TINY_NAME, seed=0)
    assert sharded_tensor_names(model.named_parameters()) == []
    params = dict(model.named_parameters())
    ds = params["model.norm.weight"]  # DeepSpeed ZeRO-3: empty data, the logical size in ds_numel
    ds.ds_numel = ds.numel()
    ds.data = torch.empty(0)
    params["lm_head.weight"].data = torch.empty(0)  # empty, of unknown logical size
    flat = torch.nn.Parameter(torch.zeros(6))  # FSDP1 FlatParameter: the local shard of a larger flat tensor
    flat._unpadded_unsharded_size = torch.Size([12])
    view = torch.nn.Parameter(torch.zeros(3))  # FSDP1 use_orig_params view
    view._fsdp_flattened = True
    named = [*params.items(), ("flat", flat), ("view", view)]
    assert sharded_tensor_names(named) == ["model.norm.weight", "lm_head.weight", "flat", "view"]


def test_a_transformers_upgrade_misses(tmp_path, ref_calls, monkeypatch):
    import transformers

    cache = tmp_path / "cache"
    build(tmp_path / "a", cache)
    monkeypatch.setattr(transformers, "__version__", transformers.__version__ + ".post1")
    ref_calls.clear()
    build(tmp_path / "b", cache)
    assert ref_calls, "another transformers version may compute other values"
    assert len(files(cache)) == 2
