"""Prefix sharing gives TRL's log-probs, losses, rewards and gradients with each prompt processed once."""

from __future__ import annotations

import pytest
import torch

from decpo.training.packing import SharedPromptCollator, _pack, shared_attention_mask

from conftest import PAIRS, make_trainer

EXAMPLES = [
    {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
    {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11]},
]


def test_collator_layout_written_out():
    out = SharedPromptCollator(pad_token_id=0)(EXAMPLES)
    assert out["shared_input_ids"].tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 0]]
    assert out["shared_position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 2, 3, 0]]
    assert out["shared_branch"].tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 1, 2, 2, -1]]
    assert out["input_ids"].tolist() == [[3, 4, 5], [8, 9, 0], [3, 6, 0], [8, 10, 11]]
    assert out["completion_mask"].tolist() == [[0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1]]
    # flat indices into the 2 x 6 packed tokens
    assert out["shared_gather"].tolist() == [[2, 3, 4], [7, 8, 0], [2, 5, 0], [7, 9, 10]]
    # TRL's usual layout, prompt + completion, as indices into the packed tokens
    assert out["full_gather"].tolist() == [
        [0, 1, 2, 3, 4],
        [6, 7, 8, 0, 0],
        [0, 1, 2, 5, 0],
        [6, 7, 9, 10, 0],
    ]
    assert out["full_completion_mask"].tolist() == [
        [0, 0, 0, 1, 1],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 1, 1, 0],
    ]


def test_mask_blocks_the_other_completion_and_other_pairs():
    out = SharedPromptCollator(pad_token_id=0)(EXAMPLES)
    mask = shared_attention_mask(out["shared_group"], out["shared_branch"])[0, 0].int()
    assert mask.tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 1],  # rejected: prompt and itself, not the chosen tokens
    ]
    packed = SharedPromptCollator(pad_token_id=0, pack=True)(
        [*EXAMPLES, *([{"prompt_ids": [12], "chosen_ids": [13], "rejected_ids": [14]}] * 2)]
    )
    # pairs of 6, 5, 3 and 3 tokens: the two 3-token pairs share a row of 6
    assert packed["shared_input_ids"].size(0) == 3
    assert packed["shared_group"][2].tolist() == [0, 0, 0, 1, 1, 1]
    group = packed["shared_group"]
    mask = shared_attention_mask(group, packed["shared_branch"])[:, 0]
    q, k = torch.nonzero(mask[2], as_tuple=True)
    assert bool((group[2][q] == group[2][k]).all())  # no attention across pairs


def test_pack_never_exceeds_the_longest_pair():
    sizes = [9, 3, 3, 2, 5, 4, 1]
    rows = _pack(sizes, max(sizes))
    assert sorted(i for row in rows for i in row) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in row) <= 9 for row in rows)
    assert len(rows) == 3


def test_truncation_matches_trl_keep_start():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    ex = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6, 7], "rejected_ids": [8]}]
    ours = SharedPromptCollator(pad_token_id=0, max_length=5)(ex)
    trl = DataCollatorForPreference(pad_token_id=0, max_length=5)(ex)
    assert trl["input_ids"][0].tolist() == [1, 2, 3, 4, 5]
    assert ours["input_ids"][0].tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="keep_start"):
        SharedPromptCollator(pad_token_id=0, truncation_mode="keep_end")
    with pytest.raises(ValueError, match="empty batch"):
        SharedPromptCollator(pad_token_id=0)([])


def tiny_gpt2():
    """A tiny random GPT-2: learned absolute position embeddings (wpe), no rotary positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from decpo.models import load_tokenizer
    from decpo.models.tiny import TINY_NAME

    config = GPT2Config(
        vocab_size=len(load_tokenizer(TINY_NAME)),
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(config)


def _loss_grads_metrics(
    tmp_path, share: bool, attn: str | None = None, checkpointing=False, arch=None, **kwargs
):
    model = tiny_gpt2() if arch == "gpt2" else None
    trainer = make_trainer(tmp_path, dtype=torch.float64, share_prompt=share, model=model, **kwargs)
    if attn:
        trainer.model.config._attn_implementation = attn
    if checkpointing:  # what Trainer.train does at its start
        trainer.model.gradient_checkpointing_enable({"use_reentrant": False})
    ds = trainer.train_dataset
    batch = trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(len(ds))]))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"pack_pairs": True},
        {"lora": True},
        {"reg_tokens": "completion_mean", "reg_weight": 0.5},
        {"reg_weight": 0.0},
        {"loss_type": ["ipo"]},
        {"attn": "eager"},
        {"checkpointing": True, "reg_tokens": "completion_mean", "pack_pairs": True},
        # cuts the completions of 2 pairs (one of them both) and drops the pair whose 28-token prompt fills it
        {"max_length": 16, "reg_tokens": "completion_mean"},
        {"arch": "gpt2"},
        {"arch": "gpt2", "pack_pairs": True, "attn": "eager"},
        {"pad_to_multiple_of": 8, "pack_pairs": True},
    ],
    ids=[
        "decpo",
        "packed",
        "lora",
        "completion-mean",
        "dpo",
        "ipo",
        "eager",
        "checkpointed-shared",
        "truncated-by-max-length",
        "gpt2-absolute-positions",
        "gpt2-packed-eager",
        "pad-to-multiple-of",
    ],
)
def test_shared_step_equals_trl_step(tmp_path, kwargs):
    share_kwargs = dict(kwargs)
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in ("pack_pairs", "checkpointing")}
    loss_a, grads_a, m_a = _loss_grads_metrics(tmp_path / "a", False, **plain_kwargs)
    loss_b, grads_b, m_b = _loss_grads_metrics(tmp_path / "b", True, **share_kwargs)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-8)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        # TRL's fused LM head runs in float32, so differences of order 1e-7 of the gradient's scale are rounding
        scale = grads_a[name].abs().max().item()
        assert (grads_b[name] - grads_a[name]).abs().max().item() <= 1e-5 * scale + 1e-10, name
    for key in ("loss/pref", "rewards/margins", "logps/chosen", "logps/rejected", "num_tokens", "entropy"):
        if key in m_a:
            assert m_b[key] == pytest.approx(m_a[key], rel=1e-5, abs=1e-6), key


def test_precomputed_reference_is_shared_too(tmp_path):
    plain = make_trainer(tmp_path / "a", lora=True, precompute_ref_log_probs=True, dtype=torch.float64)
    shared = make_trainer(
        tmp_path / "b", lora=True, precompute_ref_log_probs=True, dtype=torch.float64, share_prompt=True
    )
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(
            torch.tensor(shared.train_dataset[key]),
            torch.tensor(plain.train_dataset[key]),
            rtol=1e-5,
            atol=1e-5,
        )


def test_training_with_sharing_ends_at_the_same_weights(tmp_path):
    finals = []
    for share in (False, True):
        trainer = make_trainer(tmp_path / str(share), dtype=torch.float64, share_prompt=share, max_steps=3)
        trainer.train()
        finals.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for name in finals[0]:
        torch.testing.assert_close(finals[1][name], finals[0][name], rtol=1e-5, atol=1e-6, msg=name)


def test_flash_attention_is_refused_with_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, share_prompt=True)
    trainer.model.config._attn_implementation = "flash_attention_2"
    ds = trainer.train_dataset
    batch = trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(4)]))
    with pytest.raises(ValueError, match="sdpa"):
        trainer.compute_loss(trainer.model, batch)


def test_pad_to_multiple_of_is_honoured():
    out = SharedPromptCollator(pad_token_id=0, pad_to_multiple_of=4)(EXAMPLES)
    assert out["shared_input_ids"].shape == (2, 8) and out["shared_group"][:, 6:].eq(-1).all()
    assert out["input_ids"].shape == (4, 4) and out["attention_mask"][:, 3:].eq(0).all()
    assert out["full_gather"].shape == (4, 8) and out["full_attention_mask"][:, 5:].eq(0).all()
    # the padding changes no real position: the unpadded layout is its prefix
    plain = SharedPromptCollator(pad_token_id=0)(EXAMPLES)
    for key, value in plain.items():
        if key.endswith("gather"):  # flat indices into rows of another length: compare what they pick
            value = plain["shared_input_ids"].flatten()[value]
            got = out["shared_input_ids"].flatten()[out[key]]
        else:
            got = out[key]
        assert got[..., : value.size(-1)].equal(value), key


def test_the_trainer_passes_pad_to_multiple_of_on(tmp_path):
    trainer = make_trainer(tmp_path, share_prompt=True, pad_to_multiple_of=8)
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[i] for i in range(4)])
    for key in ("input_ids", "shared_input_ids", "full_gather"):
        assert batch[key].size(-1) % 8 == 0, key


def _unhook(monkeypatch, model):
    """A TRL change that runs the backbone without its hooks (``backbone.forward(**kwargs)``, say)."""
    backbone = model.base_model
    cls = type(backbone)
    unhooked = type(
        f"Unhooked{cls.__name__}", (cls,), {"__call__": lambda self, *a, **k: self.forward(*a, **k)}
    )
    monkeypatch.setattr(backbone, "__class__", unhooked)


def test_a_forward_the_hooks_miss_is_an_error(tmp_path, monkeypatch):
    import trl

    # plain DPO (with the penalty on, its token selection would fail on the short view, by luck)
    trainer = make_trainer(tmp_path, share_prompt=True, reg_weight=0.0)
    ds = trainer.train_dataset
    batch = trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(4)]))
    trainer.compute_loss(trainer.model, batch)  # the hooks fire: no error
    _unhook(monkeypatch, trainer.model)
    # unhooked, TRL would score the short view ([last prompt token, completion]): wrong log-probs, no error
    with pytest.raises(RuntimeError, match=rf"TRL {trl.__version__}.*share_prompt=false"):
        trainer.compute_loss(trainer.model, batch)


def test_a_reference_pass_the_hooks_miss_is_an_error(tmp_path, monkeypatch):
    from decpo.models import load_model
    from decpo.models.tiny import TINY_NAME

    model = load_model(TINY_NAME, seed=0)
    _unhook(monkeypatch, model)
    with pytest.raises(RuntimeError, match="share_prompt=false"):
        make_trainer(tmp_path, share_prompt=True, precompute_ref_log_probs=True, model=model)


def test_evaluate_with_sharing_equals_trl(tmp_path):
    metrics, predictions = [], []
    for share in (False, True):
        trainer = make_trainer(
            tmp_path / str(share), dtype=torch.float64, share_prompt=share, eval_pairs=PAIRS[:6]
        )
        m = trainer.evaluate()
        metrics.append({k: v for k, v in m.items() if not k.endswith(("runtime", "per_second"))})
        ds = trainer.eval_dataset
        batch = trainer.data_collator([ds[i] for i in range(4)])
        loss, _, labels = trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
        predictions.append((loss, labels))
    assert metrics[0].keys() == metrics[1].keys() and "eval_loss/decorr" in metrics[0]
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, rel=1e-6, abs=1e-8), key
    (loss_a, labels_a), (loss_b, labels_b) = predictions
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-8)
    assert torch.equal(labels_b, labels_a)  # TRL's input_ids, prompt + completion


def test_a_backbone_without_position_ids_is_refused_at_init():
    from torch import nn

    from decpo.training.prefix_sharing import check_shareable

    class Backbone(nn.Module):  # positions from the attention mask, as some absolute-position models do
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            raise AssertionError("not called")

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = Backbone()

        @property
        def base_model(self):
            return self.transformer

    with pytest.raises(ValueError, match="position_ids.*share_prompt=false"):
        check_shareable(LM())
    check_shareable(tiny_gpt2())  # GPT-2 takes position_ids: shared rows get their own positions
