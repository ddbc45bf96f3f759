"""`train.push_to_hub`: TRL's own arguments reach the Trainer, which uploads; offline, a clear error comes
back at once, before any data or model is loaded (the Hub is not reachable from this project's machines)."""

from __future__ import annotations

import pytest

from decpo.cli import main
from decpo.config import ConfigError, load_config
from decpo.training.args import trainer_args
from decpo.training.checks import check_hub_upload

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
PUSH = ["train.push_to_hub=true", "train.hub_model_id=me/decpo-smoke", "train.hub_strategy=end"]


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded")


def test_offline_mode_is_a_clear_error_before_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("decpo.models.loading.load_model", _no_model)
    monkeypatch.setattr("decpo.training.checks.hub_unreachable", _no_model)  # offline: no connection tried
    assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run"), *PUSH]) == 2
    err = capsys.readouterr().err
    assert "train.push_to_hub=true (hub_model_id 'me/decpo-smoke'), but HF_HUB_OFFLINE is set" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # a failed start leaves nothing


def test_an_unreachable_hub_is_named_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr(
        "decpo.training.checks.hub_unreachable",
        lambda endpoint: calls.append(endpoint) or "cannot connect to huggingface.co:443 (no route)",
    )
    args = trainer_args(load_config(SMOKE, PUSH), tmp_path)
    with pytest.raises(
        ConfigError, match=r"the Hub \(https://huggingface.co\) is unreachable: cannot connect"
    ):
        check_hub_upload(args)
    assert calls == ["https://huggingface.co"]


def test_no_token_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("decpo.training.checks.hub_unreachable", lambda endpoint: None)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    args = trainer_args(load_config(SMOKE, PUSH), tmp_path)
    with pytest.raises(ConfigError, match="needs a Hugging Face token"):
        check_hub_upload(args)
    check_hub_upload(trainer_args(load_config(SMOKE), tmp_path))  # no upload: no check


def test_the_hub_arguments_reach_the_trainer_which_uploads_at_the_end(tmp_path, monkeypatch):
    """With the Hub faked reachable: TRL's Trainer creates the repo from hub_model_id and uploads the final
    model once (hub_strategy end), through its own `init_hf_repo` / `push_to_hub`."""
    from transformers import Trainer

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("decpo.training.checks.hub_unreachable", lambda endpoint: None)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_fake")
    seen = []
    monkeypatch.setattr(
        Trainer, "init_hf_repo", lambda self, **kw: seen.append(("repo", self.args.hub_model_id))
    )
    monkeypatch.setattr(
        Trainer, "push_to_hub", lambda self, *a, **kw: seen.append(("push", self.args.hub_model_id)) or None
    )
    monkeypatch.setattr(Trainer, "_push_from_checkpoint", lambda self, folder: seen.append(("ckpt", folder)))
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), *PUSH, "train.max_steps=2"]) == 0
    assert [s for s in seen if s[0] != "ckpt"] == [("repo", "me/decpo-smoke"), ("push", "me/decpo-smoke")]
    assert (run / "final" / "adapter_model.safetensors").exists()
