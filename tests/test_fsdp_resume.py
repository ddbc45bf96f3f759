"""Resuming an FSDP checkpoint in one plain process (`decpo.training.fsdp_resume`); the run under FSDP itself is in
tests/test_distributed.py (slow)."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

from decpo.training.fsdp_resume import (
    FSDPCheckpointError,
    FSDPCheckpointMixin,
    fsdp_checkpoint_kind,
    positional_optimizer_state,
)


def _trained():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    # two groups, as the Trainer makes (decay / no decay), listed in another order than the model's
    groups = [
        {"params": [model[1].weight, model[0].weight], "weight_decay": 0.1},
        {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    for _ in range(2):
        model(torch.randn(5, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_fsdps_named_optimizer_state_becomes_the_positional_one_it_came_from():
    model, optimizer = _trained()
    # what FSDP2 saves (accelerate: torch's full optimizer state dict, keyed by parameter name)
    named = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    assert set(named["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    fresh = torch.optim.AdamW(
        [
            {"params": [model[1].weight, model[0].weight], "weight_decay": 0.1},
            {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    names = {id(p): n for n, p in model.named_parameters()}
    fresh.load_state_dict(positional_optimizer_state(named, fresh, names))
    expected, got = optimizer.state_dict(), fresh.state_dict()
    assert got["param_groups"] == expected["param_groups"]
    assert got["state"].keys() == expected["state"].keys()
    for i, state in expected["state"].items():
        for key, value in state.items():
            assert torch.equal(got["state"][i][key], value), (i, key)


def test_a_different_set_of_trained_parameters_is_refused_naming_one():
    model, optimizer = _trained()
    named = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    named["param_groups"][0]["params"] = ["0.weight"]  # 1.weight not in the saved group
    names = {id(p): n for n, p in model.named_parameters()}
    with pytest.raises(FSDPCheckpointError, match=r"train different parameters \(e.g. 1.weight\)"):
        positional_optimizer_state(named, optimizer, names)
    named["param_groups"] = named["param_groups"][:1]
    with pytest.raises(FSDPCheckpointError, match="1 parameter groups, this run's 2"):
        positional_optimizer_state(named, optimizer, names)


def test_the_kind_of_checkpoint_fsdp_saved(tmp_path):
    assert fsdp_checkpoint_kind(tmp_path) is None
    (tmp_path / "pytorch_model_fsdp_0").mkdir()
    assert fsdp_checkpoint_kind(tmp_path) == "sharded"
    (tmp_path / "pytorch_model_fsdp.bin").write_bytes(b"")
    assert fsdp_checkpoint_kind(tmp_path) == "full"


class _Plain(FSDPCheckpointMixin):
    is_fsdp_enabled = False


def test_a_sharded_checkpoint_in_one_process_is_refused_saying_what_to_do(tmp_path):
    (tmp_path / "pytorch_model_fsdp_0").mkdir()
    with pytest.raises(FSDPCheckpointError, match="resume it under FSDP .* FULL_STATE_DICT"):
        _Plain()._load_from_checkpoint(str(tmp_path))
