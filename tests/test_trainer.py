"""DecPOTrainer against a plain-PyTorch oracle, against TRL's DPOTrainer, and under accumulation."""

from __future__ import annotations

import pytest
import torch
from trl import DPOTrainer

from decpo.functional import decorrelation_penalty, dpo_loss, sequence_logps
from decpo.models import TINY_NAME, capture_activations, load_model

from conftest import PAIRS, make_trainer


def first_batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def oracle_step(policy, reference, batch, *, beta, reg_weight, layer, form="cosine"):
    """A compact DPO(+decorrelation) step in plain PyTorch (eric-mitchell/direct-preference-optimization style)."""
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with capture_activations(policy, [layer], "mlp.up_proj") as acts:
        logits = policy(input_ids=ids, attention_mask=attn).logits
    policy_logps = sequence_logps(logits, ids, comp)
    with torch.no_grad():
        reference_logps = sequence_logps(reference(input_ids=ids, attention_mask=attn).logits, ids, comp)
    policy_chosen_logps, policy_rejected_logps = policy_logps.chunk(2)
    reference_chosen_logps, reference_rejected_logps = reference_logps.chunk(2)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    # right padding: the last real token sits at length - 1
    last = attn.sum(1) - 1
    z = torch.stack([acts[layer % 2][i, last[i]] for i in range(ids.size(0))])  # 2 blocks
    loss = losses.mean() + reg_weight * decorrelation_penalty(z, form)
    return loss, chosen_rewards, rejected_rewards


@pytest.mark.parametrize("reg_weight", [0.0, 0.1])
def test_oracle_matches_trainer_loss_rewards_and_gradients(tmp_path, reg_weight):
    trainer = make_trainer(tmp_path, dtype=torch.float64, reg_weight=reg_weight, beta=0.1)
    batch = first_batch(trainer)
    # fresh copies with the same seed: TRL patches the forward of the models it is given
    policy_copy = load_model(TINY_NAME, seed=0).double()
    reference = load_model(TINY_NAME, seed=0).double().eval()

    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    oracle_loss, chosen_rewards, rejected_rewards = oracle_step(
        policy_copy, reference, batch, beta=0.1, reg_weight=reg_weight, layer=-1
    )
    oracle_loss.backward()

    assert loss.item() == pytest.approx(oracle_loss.item(), abs=1e-6)
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(chosen_rewards.mean().item(), abs=1e-6)
    assert metrics["rewards/rejected"][-1] == pytest.approx(rejected_rewards.mean().item(), abs=1e-6)
    for (name, p), (_, q) in zip(
        trainer.model.named_parameters(), policy_copy.named_parameters(), strict=True
    ):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_zero_weight_equals_trl_dpo_after_three_steps(tmp_path):
    ours = make_trainer(tmp_path / "a", reg_weight=0.0)
    theirs = make_trainer(tmp_path / "b", trainer_cls=DPOTrainer)
    ours.train()
    theirs.train()
    our_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    their_losses = [h["loss"] for h in theirs.state.log_history if "loss" in h]
    assert len(our_losses) == 3 and our_losses == their_losses
    for (name, p), (_, q) in zip(ours.model.named_parameters(), theirs.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("reg_type", [None, "l1"])
def test_batch4_accum1_equals_batch2_accum2(tmp_path, reg_type):
    # SGD with lr 1 makes the parameter change equal to the gradient, so gradients are compared directly.
    # (The decorrelation penalty is a property of the micro-batch's Gram matrix, so it is not accumulable.)
    common = dict(optim="sgd", learning_rate=1.0, max_steps=1, reg_type=reg_type, max_grad_norm=0.0)
    one = make_trainer(tmp_path / "a", per_device_train_batch_size=4, gradient_accumulation_steps=1, **common)
    two = make_trainer(tmp_path / "b", per_device_train_batch_size=2, gradient_accumulation_steps=2, **common)
    one.train()
    two.train()
    for (name, p), (_, q) in zip(one.model.named_parameters(), two.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


def test_every_policy_parameter_changes_and_reference_stays_equal(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    ref_before = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not change"
    for name, p in trainer.ref_model.named_parameters():
        assert torch.equal(p, ref_before[name]), f"reference {name} changed"


def last_token_rows(acts: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(2B, T, D)`` -> ``(2B, D)``: the last real token of each row (right padding: at length - 1)."""
    last = attention_mask.sum(1) - 1
    return torch.stack([acts[i, last[i]] for i in range(acts.size(0))])


def test_lora_policy_changes_only_adapters_and_penalty_has_gradient(tmp_path):
    # without precomputed reference log-probs the reference forward (adapter disabled) runs through the same
    # hooked modules after the policy forward; the penalty must come from the policy forward
    trainer = make_trainer(
        tmp_path, dtype=torch.float64, lora=True, max_steps=2, precompute_ref_log_probs=False, reg_weight=0.5
    )
    model = trainer.model
    batch = first_batch(trainer)
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)

    def adapter_grads(reg_weight):
        trainer.args.reg_weight = reg_weight
        model.zero_grad()
        trainer.compute_loss(model, batch).backward()
        return {n: p.grad.clone() for n, p in adapters.items()}

    # LoRA B starts at 0, so the gradient reaches only the B matrices; give B a value so that A gets one too
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for n, p in adapters.items():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    model.train()
    # the penalty's gradient: (the gradient with lambda 0.5) - (with lambda 0.25), divided by 0.25
    high, low = adapter_grads(0.5), adapter_grads(0.25)
    trainer.args.reg_weight = 0.5
    penalty_grad = {n: (high[n] - low[n]) / 0.25 for n in adapters}
    # against autograd of R(Z) on the policy forward alone (adapter enabled)
    model.zero_grad()
    with capture_activations(model, [-1], "mlp.up_proj") as acts:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    z = last_token_rows(acts[1], batch["attention_mask"])  # 2 blocks: -1 is block 1
    decorrelation_penalty(z, "cosine").backward()
    # every adapter (q, v, up_proj of both blocks) sits before the hooked output: all get a penalty gradient
    assert all(p.grad.norm() > 1e-3 for p in adapters.values())
    for n, p in adapters.items():
        # float32 agreement: the trainer's Gram matrix is float32 (`activation_penalty`)
        assert (penalty_grad[n] - p.grad).norm() <= 1e-5 * p.grad.norm(), n

    # training: every adapter matrix changes, no base weight does
    model.zero_grad()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert not torch.equal(p, before[n]), f"adapter {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"base weight {n} changed"


def perturbed(model, scale=0.05, seed=1):
    """``model`` with every weight moved by ``scale`` x N(0, 1) noise, so that it differs from the reference."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def preference_loss_oracle(loss_type, policy, reference, batch, beta):
    """TRL 1.16's ``sigmoid_norm``, ``ipo`` and ``sft`` losses in plain PyTorch, from sequence log-probs."""
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    logits = policy(input_ids=ids, attention_mask=attn).logits
    with torch.no_grad():
        ref_logits = reference(input_ids=ids, attention_mask=attn).logits
    if loss_type == "sft":  # mean NLL over all chosen completion tokens of the batch (a token mean)
        per_token = torch.gather(logits[:, :-1].log_softmax(-1), 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        chosen_mask = comp[:, 1:].chunk(2)[0].bool()
        return -per_token.chunk(2)[0][chosen_mask].mean()
    # both are length-normalised: log-ratio / number of completion tokens
    ratio = (sequence_logps(logits, ids, comp) - sequence_logps(ref_logits, ids, comp)) / comp.sum(1)
    chosen, rejected = ratio.chunk(2)
    delta = chosen - rejected
    if loss_type == "sigmoid_norm":
        return -torch.nn.functional.logsigmoid(beta * delta).mean()
    return ((delta - 1 / (2 * beta)) ** 2).mean()  # ipo, Azar et al. Eq. 17


@pytest.mark.parametrize("loss_type", ["sigmoid_norm", "sft", "ipo"])
def test_sigmoid_norm_and_sft_loss_types_run(tmp_path, loss_type):
    # the loss of a fixed batch equals TRL's formula for that loss type + lambda * R of the policy forward
    trainer = make_trainer(tmp_path, dtype=torch.float64, loss_type=[loss_type], beta=0.1, reg_weight=0.1)
    perturbed(trainer.model)  # policy != reference: the log-ratios are not all 0
    policy = perturbed(load_model(TINY_NAME, seed=0).double())
    reference = load_model(TINY_NAME, seed=0).double().eval()
    batch = first_batch(trainer)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    with capture_activations(policy, [-1], "mlp.up_proj") as acts:
        pref = preference_loss_oracle(loss_type, policy, reference, batch, beta=0.1)
    penalty = decorrelation_penalty(last_token_rows(acts[1], batch["attention_mask"]), "cosine")
    assert pref.abs().item() > 1e-3 and penalty.item() > 1e-3
    # float32 agreement: the penalty's Gram matrix is float32 (`activation_penalty`), TRL's log-probs too
    assert loss.item() == pytest.approx((pref + 0.1 * penalty).item(), rel=1e-6)
    metrics = trainer._metrics["train"]
    assert metrics["loss/pref"][-1] == pytest.approx(pref.item(), rel=1e-6)
    assert metrics["decorr/value"][-1] == pytest.approx(penalty.item(), rel=1e-6)
    trainer.train()  # and a run of it logs the terms
    assert any("loss/decorr" in h for h in trainer.state.log_history)


def test_simpo_trainer_composes_with_the_regularizer(tmp_path):
    from conftest import make_simpo_trainer

    trainer = make_simpo_trainer(tmp_path, reg_weight=0.1, simpo_gamma=0.2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all("loss/decorr" in h and "loss/pref" in h for h in logged)
    # SimPO at the start: -log sigmoid(beta * (avg_w - avg_l) - gamma) with equal averages -> -log sigmoid(-0.2)
    assert logged[0]["loss/pref"] == pytest.approx(
        -torch.nn.functional.logsigmoid(torch.tensor(-0.2)).item(), abs=1e-3
    )


@pytest.mark.parametrize("share_prompt", [False, True])
@pytest.mark.parametrize("group_by_length", [False, True])
@pytest.mark.parametrize("ref_cache", [False, True])
def test_every_feature_combination_gives_the_plain_trainers_first_step(
    tmp_path, share_prompt, group_by_length, ref_cache
):
    """The four mixins compose: each on/off combination gives the plain DecPO trainer's first-step losses.

    One batch holds all pairs, so length grouping changes only the row order, which neither the DPO loss (a
    mean) nor the decorrelation penalty (a norm of Z Z^T - I, invariant to permuting rows) sees.
    """
    common = dict(
        per_device_train_batch_size=len(PAIRS),
        max_steps=1,
        reg_type="decorrelation",
        reg_weight=0.1,
        precompute_ref_log_probs=True,
    )

    def first_log(path, **features):
        trainer = make_trainer(path, **common, **features)
        trainer.train()
        return trainer.state.log_history[0]

    plain = first_log(tmp_path / "plain")
    features = {"share_prompt": share_prompt}
    if group_by_length:
        features["train_sampling_strategy"] = "group_by_length"
    if ref_cache:
        features["ref_logps_cache"] = str(tmp_path / "cache")
    got = first_log(tmp_path / "combo", **features)
    if ref_cache:  # a second trainer reads the values the first one stored
        got_cached = first_log(tmp_path / "combo2", **features)
        assert got_cached["loss"] == pytest.approx(got["loss"], rel=1e-6)
    for key in ("loss", "loss/pref", "loss/decorr", "rewards/margins"):
        assert got[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
