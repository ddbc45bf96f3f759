"""Length-grouped batches (`LengthGroupedMixin`): less padding, same pairs, same per-batch loss."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from torch.utils.data import SequentialSampler

from decpo.config import ConfigError, RunConfig
from decpo.training.args import trainer_args
from decpo.training.batching import SeededLengthGroupedSampler, pair_length

from conftest import make_trainer

BATCH = 4
WORDS = ["fox", "dog", "yes", "no", "Agree", "Question", "Answer", "quick", "brown", "lazy"]


def mixed_pairs(n: int = 64, seed: int = 0) -> list[dict]:
    """Pairs of widely varying length (a few words to ~60), each with a unique prompt."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    pairs = []
    for i in range(n):
        k = rng.choice([1, 2, 4, 8, 12, 20])
        pairs.append(
            {
                "prompt": f"Q{i}: {words(k)}?",
                "chosen": " " + words(rng.randint(1, k)),
                "rejected": " " + words(rng.randint(1, k)),
            }
        )
    return pairs


def build(tmp_path, *, group: bool, pairs=None, eval_pairs=None, precompute: bool = False, **args):
    """A DecPOTrainer (no regularizer) on the tiny random Llama (`conftest.make_trainer`)."""
    config = dict(
        output_dir=str(tmp_path / ("grouped" if group else "random")),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        max_steps=2,
        max_length=256,
        reg_type=None,
        precompute_ref_log_probs=precompute,
        train_sampling_strategy="group_by_length" if group else "random",
    )
    config.update(args)
    pairs = pairs if pairs is not None else mixed_pairs()
    return make_trainer(tmp_path, pairs=pairs, eval_pairs=eval_pairs, **config)


def epoch_batches(trainer) -> list[dict]:
    return list(trainer.get_train_dataloader())


def padded_tokens(batches) -> int:
    return sum(b["input_ids"].numel() for b in batches)


def chosen_rows(batches) -> Counter:
    """Multiset of the real (unpadded) tokens of every chosen sequence, which identify a pair here."""
    rows: Counter = Counter()
    for b in batches:
        half = b["input_ids"].size(0) // 2
        for ids, mask in zip(b["input_ids"][:half], b["attention_mask"][:half], strict=True):
            rows[tuple(ids[mask.bool()].tolist())] += 1
    return rows


def test_length_column_is_the_padded_width_of_a_pair(tmp_path):
    trainer = build(tmp_path, group=True, max_length=24)
    dataset = trainer.train_dataset
    assert "length" in dataset.column_names
    lengths = dataset["length"]
    assert max(lengths) == 24 and min(lengths) < 24  # capped at max_length, and mixed
    for i in range(len(dataset)):
        row = dataset[i]
        assert row["length"] == pair_length(row, 24)
        assert row["length"] == trainer.data_collator([row])["input_ids"].size(1)


def test_random_order_is_unchanged_without_the_option(tmp_path):
    trainer = build(tmp_path, group=False)
    assert "length" not in trainer.train_dataset.column_names
    assert not isinstance(trainer._get_train_sampler(), SeededLengthGroupedSampler)


def test_grouped_batches_pad_less_and_see_every_pair_once(tmp_path):
    grouped, default = build(tmp_path, group=True), build(tmp_path, group=False)
    g, d = epoch_batches(grouped), epoch_batches(default)
    assert len(g) == len(d) == 64 // BATCH
    assert all("length" not in b for b in g)  # the collator drops the extra column
    # same pairs, once each per epoch (every prompt is unique, max_length truncates nothing here)
    expected = Counter(
        tuple(r["prompt_ids"] + r["chosen_ids"])
        for r in default.train_dataset.select_columns(["prompt_ids", "chosen_ids"])
    )
    assert chosen_rows(g) == chosen_rows(d) == expected
    assert sum(expected.values()) == 64
    # sum over batches of (longest sequence x rows): at least 15% less padding-inclusive work when grouped
    assert padded_tokens(g) < 0.85 * padded_tokens(d), (padded_tokens(g), padded_tokens(d))
    # the grouping still shuffles: not just the dataset sorted by length
    order = list(grouped._get_train_sampler())
    assert sorted(order) == list(range(64))
    assert order != sorted(range(64), key=lambda i: -grouped.train_dataset[i]["length"])


def test_order_is_seeded_per_epoch_and_reaches_the_dataloader(tmp_path):
    a, b = build(tmp_path / "a", group=True), build(tmp_path / "b", group=True)
    assert list(a._get_train_sampler()) == list(b._get_train_sampler())  # same seed, same order
    other = build(tmp_path / "c", group=True, data_seed=1)
    assert list(other._get_train_sampler()) != list(a._get_train_sampler())

    sampler = a._get_train_sampler()
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != list(a._get_train_sampler())  # a new shuffle each epoch
    loader = a.get_train_dataloader()
    loader.set_epoch(1)  # what the Trainer does at the start of each epoch
    first = next(iter(loader))
    expected = a.data_collator([a.train_dataset[i] for i in epoch1[:BATCH]])
    assert torch.equal(first["input_ids"], expected["input_ids"])


@pytest.mark.parametrize("precompute", [False, True])
def test_training_and_eval_run_grouped(tmp_path, precompute):
    trainer = build(
        tmp_path, group=True, precompute=precompute, eval_pairs=mixed_pairs(12, seed=1), eval_strategy="steps"
    )
    columns = set(trainer.train_dataset.column_names)
    assert "length" in columns
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= columns if precompute else True
    batch = next(iter(trainer.get_train_dataloader()))
    assert ("ref_chosen_logps" in batch) == precompute and "length" not in batch
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))

    # evaluation keeps the dataset's order (transformers would length-group it too)
    assert isinstance(trainer._get_eval_sampler(trainer.eval_dataset), SequentialSampler)
    rows = chosen_rows(trainer.get_eval_dataloader())
    in_order = [
        tuple(r["prompt_ids"] + r["chosen_ids"])
        for r in trainer.eval_dataset.select_columns(["prompt_ids", "chosen_ids"])
    ]
    assert list(rows) == in_order
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))


def test_batch_loss_does_not_depend_on_the_sampler(tmp_path):
    # precomputed reference log-probs: the ref columns must stay aligned with the pairs after the length column
    grouped = build(tmp_path, group=True, precompute=True)
    default = build(tmp_path, group=False, precompute=True)
    picked = list(grouped._get_train_sampler())[:BATCH]
    assert picked != list(range(BATCH))  # a batch the random order would not pick first
    from_grouped = next(iter(grouped.get_train_dataloader()))
    from_default = default.data_collator(
        [default._remove_unused_columns(default.train_dataset)[i] for i in picked]
    )
    assert from_grouped.keys() == from_default.keys()
    for key in from_grouped:
        assert torch.equal(from_grouped[key], from_default[key]), key
    with torch.no_grad():
        grouped.model.eval()
        default.model.eval()
        loss_g = grouped.compute_loss(grouped.model, from_grouped)
        loss_d = default.compute_loss(default.model, from_default)
    assert loss_g.item() == pytest.approx(loss_d.item(), abs=1e-7)
    assert 0.0 < loss_g.item() < 10.0


def test_config_key_maps_to_the_trainer_argument(tmp_path):
    on = trainer_args(RunConfig().replace(**{"train.train_sampling_strategy": "group_by_length"}), tmp_path)
    off = trainer_args(RunConfig(), tmp_path)
    assert on.train_sampling_strategy == "group_by_length" and on.length_column_name == "length"
    assert off.train_sampling_strategy == "random"
    with pytest.raises(ConfigError, match="simpo"):
        trainer_args(
            RunConfig().replace(
                **{"train.train_sampling_strategy": "group_by_length", "objective.name": "simpo"}
            ),
            tmp_path,
        )


def test_shared_length_is_the_packed_row():
    from decpo.training.batching import pair_length

    pair = {"prompt_ids": [1] * 5, "chosen_ids": [2] * 4, "rejected_ids": [3] * 2}
    assert pair_length(pair, None) == 9
    assert pair_length(pair, None, shared=True) == 11
    assert pair_length(pair, 8) == 8  # the chosen answer is cut to 3 tokens, as TRL cuts it
    assert pair_length(pair, 8, shared=True) == 10
