"""Length-grouped training batches for TRL's preference trainers.

TRL pads every micro-batch to its longest sequence (`DataCollatorForPreference`) and draws the pairs in random
order, so on data whose lengths vary widely much of a step is padding. transformers' Trainer can group samples
of similar length into a batch (``train_sampling_strategy="group_by_length"``, `LengthGroupedSampler`), but it
reads the lengths from a ``length`` column (or ``input_ids``), and TRL's tokenized dataset has neither; with the
option on, training fails. `LengthGroupedMixin` supplies the column:

* ``length`` = ``len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))``, capped at ``max_length``: the
  padded length a pair contributes to its batch (chosen and rejected rows share one padded width);
* the column survives `remove_unused_columns` (it is added to the signature columns); TRL's collator reads only
  its own keys, so the extra key never reaches the model;
* the sampler is transformers' `LengthGroupedSampler`, seeded with ``data_seed`` (else ``seed``) plus the
  epoch, like accelerate's seedable random sampler: an epoch's order is reproducible and a resumed run skips
  exactly the batches it had trained on. It still shuffles: random mega-batches of ~50 batches, each sorted by
  length. Every pair is seen once per epoch; only the order changes.
* evaluation keeps the dataset's order (transformers would length-group eval batches too).

Put the mixin before the TRL trainer: ``class MyTrainer(LengthGroupedMixin, DPOTrainer)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import has_length

GROUP_BY_LENGTH = "group_by_length"


def pair_length(example: dict[str, Any], max_length: int | None, shared: bool = False) -> int:
    """Padded length of a tokenized pair: prompt plus the longer answer, at most ``max_length``; with prefix
    sharing (``shared``) the packed row's length, prompt plus both answers (each answer cut as TRL cuts it)."""
    prompt, chosen, rejected = (len(example[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
    if max_length is not None:
        chosen, rejected = (max(0, min(n, max_length - prompt)) for n in (chosen, rejected))
    return prompt + chosen + rejected if shared else min(prompt + max(chosen, rejected), max_length or 10**12)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose shuffle depends only on ``seed + epoch`` (the Trainer calls `set_epoch`)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class LengthGroupedMixin:
    """Makes ``train_sampling_strategy="group_by_length"`` work with TRL's tokenized preference datasets."""

    def _grouping_by_length(self, args=None) -> bool:
        args = args if args is not None else self.args
        return getattr(args, "train_sampling_strategy", None) == GROUP_BY_LENGTH

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self._grouping_by_length(args):
            return dataset
        max_length = args.max_length
        column = args.length_column_name

        def add_length(batch):
            rows = zip(batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"], strict=True)
            return {
                column: [
                    pair_length(
                        {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r},
                        max_length,
                        shared=getattr(args, "share_prompt", False),
                    )
                    for p, c, r in rows
                ]
            }

        return dataset.map(add_length, batched=True)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._grouping_by_length() and self.args.length_column_name not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, self.args.length_column_name]

    def _get_train_sampler(self, train_dataset=None):
        if not self._grouping_by_length():
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if dataset is None or not has_length(dataset):
            return super()._get_train_sampler(train_dataset)  # transformers warns and keeps the dataset order
        if column not in (getattr(dataset, "column_names", None) or ()):
            raise ValueError(
                f"train_sampling_strategy='group_by_length' needs a {column!r} column in the train dataset; "
                "it is added when the trainer tokenizes the dataset (not for vision datasets, which are "
                "processed on the fly)"
            )
        args = self.args
        return SeededLengthGroupedSampler(
            args.train_batch_size * args.gradient_accumulation_steps,
            lengths=list(dataset[column]),
            seed=args.data_seed if args.data_seed is not None else args.seed,
        )

    def _get_eval_sampler(self, eval_dataset):
        if not self._grouping_by_length():
            return super()._get_eval_sampler(eval_dataset)
        # transformers would length-group eval batches too; keep them in dataset order
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
