"""Model options of `load_model` (issue 14): attn_implementation reaches from_pretrained and is checked against
transformers' own names; bitsandbytes 4-/8-bit options build TRL's BitsAndBytesConfig and are refused at once
where they cannot work (no CUDA, GGUF, the in-process tiny model); a quantized model is prepared for LoRA by
peft and trains with the regularizer's hooks on it. The last tests need a CUDA GPU and bitsandbytes."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from decpo.models import (
    DEFAULT_NAME,
    TINY_NAME,
    ModelError,
    attn_implementations,
    check_attn_implementation,
    is_quantized,
    load_model,
    loading,
    prepare_for_kbit,
    quantization_config,
)
from decpo.models.tiny import build_tiny_llama, build_tiny_tokenizer

from conftest import PAIRS, REPO

NO_CUDA = "needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); this machine has no CUDA"
HAS_KBIT = torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None
needs_kbit = pytest.mark.skipif(not HAS_KBIT, reason="4-bit/8-bit loading needs a CUDA GPU and bitsandbytes")


@pytest.fixture
def tiny_folder(tmp_path):
    """The tiny random Llama saved as a plain safetensors folder (with its tokenizer), loadable by path."""
    tokenizer = build_tiny_tokenizer()
    folder = tmp_path / "tiny"
    build_tiny_llama(vocab_size=len(tokenizer), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- quantization options -> BitsAndBytesConfig


@pytest.mark.parametrize(
    "options",
    [
        dict(load_in_4bit=True),
        dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True, dtype="bfloat16"),
        dict(load_in_4bit=True, bnb_4bit_quant_storage="bfloat16", dtype="float16"),
        dict(load_in_8bit=True),
    ],
)
def test_the_quantization_config_is_trls_for_the_same_fields(options):
    from trl import ModelConfig
    from trl.trainer.utils import get_quantization_config

    ours = quantization_config(**options)
    theirs = get_quantization_config(ModelConfig(**options))
    assert type(ours).__name__ == "BitsAndBytesConfig"
    assert ours.to_dict() == theirs.to_dict()
    assert ours.load_in_4bit is options.get("load_in_4bit", False)
    assert ours.load_in_8bit is options.get("load_in_8bit", False)


def test_the_quantization_config_fields():
    config = quantization_config(
        load_in_4bit=True, bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True, dtype="bfloat16"
    )
    assert (config.load_in_4bit, config.load_in_8bit) == (True, False)
    assert config.bnb_4bit_quant_type == "fp4" and config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16  # the model's dtype, as TRL does
    # a compute dtype of its own wins over dtype
    config = quantization_config(load_in_4bit=True, dtype="float32", bnb_4bit_compute_dtype="bfloat16")
    assert config.bnb_4bit_compute_dtype == torch.bfloat16 and config.bnb_4bit_quant_type == "nf4"
    assert quantization_config() is None and quantization_config(dtype="bfloat16") is None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(load_in_4bit=True, load_in_8bit=True), "load_in_4bit and model.load_in_8bit are exclusive"),
        (
            dict(load_in_4bit=True, bnb_4bit_quant_type="int4"),
            r"bnb_4bit_quant_type='int4'.*\['nf4', 'fp4'\]",
        ),
        (dict(load_in_4bit=True, bnb_4bit_compute_dtype="fp8"), "bnb_4bit_compute_dtype='fp8'"),
        (dict(load_in_4bit=True, bnb_4bit_quant_storage="int3"), "bnb_4bit_quant_storage='int3'"),
    ],
)
def test_inconsistent_quantization_options_are_refused(options, message):
    with pytest.raises(ModelError, match=message):
        quantization_config(**options)
    with pytest.raises(ModelError, match=message):
        load_model(TINY_NAME, **options)


# --- quantized loading refused at once where it cannot work


@pytest.fixture
def nothing_loads(monkeypatch):
    """Any conversion, Hub lookup or from_pretrained fails the test: the checks come first."""

    def loaded(*args, **kwargs):
        raise AssertionError("a model was looked up or loaded before the quantization checks")

    monkeypatch.setattr(loading, "resolve_model_path", loaded)
    monkeypatch.setattr(loading, "_hub_kwargs", loaded)
    monkeypatch.setattr(loading, "build_tiny_llama", loaded)
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", loaded)


@pytest.mark.parametrize("option", ["load_in_4bit", "load_in_8bit"])
@pytest.mark.parametrize("spec", ["folder", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_quantized_loading_without_cuda_fails_at_once(monkeypatch, nothing_loads, tiny_folder, spec, option):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    name = str(tiny_folder) if spec == "folder" else spec
    with pytest.raises(ModelError) as e:
        load_model(name, **{option: True})
    assert str(e.value) == f"model.{option} {NO_CUDA}"


def test_quantized_loading_without_bitsandbytes_says_so(monkeypatch, nothing_loads, tiny_folder):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a)
    )
    with pytest.raises(ModelError, match="load_in_4bit needs a CUDA GPU and bitsandbytes .*not installed"):
        load_model(str(tiny_folder), load_in_4bit=True)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (TINY_NAME, {}, "'tiny-random-llama' is built in-process.*save it .*and pass the folder"),
        (DEFAULT_NAME, {}, "'default' is a GGUF model"),
        ("some/model.Q4_K_M.gguf", {}, "is a GGUF model.*full-precision weights only"),
        ("some-folder", {"gguf_file": "model.gguf"}, "is a GGUF model"),
    ],
)
def test_quantizing_a_gguf_or_the_tiny_model_is_refused(monkeypatch, nothing_loads, name, kwargs, message):
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: True
    )  # refused for what it is, not for the machine
    with pytest.raises(ModelError, match=message):
        load_model(name, load_in_4bit=True, **kwargs)


def test_quantizing_an_adapter_folder_is_refused(monkeypatch, nothing_loads, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ModelError, match="holds a peft adapter"):
        load_model(str(tmp_path), load_in_8bit=True)


# --- attn_implementation


def test_attn_implementation_names_are_transformers_own():
    names = attn_implementations()
    for name in ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"):
        assert name in names and check_attn_implementation(name) == name
    assert check_attn_implementation(None) is None
    assert check_attn_implementation("kernels-community/flash-attn2") == "kernels-community/flash-attn2"


def test_an_unknown_attn_implementation_is_refused_with_the_valid_list(nothing_loads):
    with pytest.raises(ModelError) as e:
        load_model(TINY_NAME, attn_implementation="fastest")
    message = str(e.value)
    assert "model.attn_implementation='fastest' is not an attention implementation" in message
    for name in ("'eager'", "'sdpa'", "'flash_attention_2'", "'flash_attention_3'", "'flex_attention'"):
        assert name in message
    assert "kernels-hub repo" in message


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_tiny_model(attn):
    assert load_model(TINY_NAME, attn_implementation=attn).config._attn_implementation == attn


def test_attn_implementation_reaches_from_pretrained(monkeypatch, tiny_folder):
    seen = []
    from_pretrained = loading.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return from_pretrained(*args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", spy)
    for attn in ("eager", "sdpa"):
        model = load_model(str(tiny_folder), attn_implementation=attn)
        assert seen[-1]["attn_implementation"] == attn and model.config._attn_implementation == attn
    load_model(str(tiny_folder))
    assert "attn_implementation" not in seen[-1] and "quantization_config" not in seen[-1]


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_an_attn_implementation_the_machine_lacks_is_a_model_error(tiny_folder):
    for name in (TINY_NAME, str(tiny_folder)):
        with pytest.raises(ModelError, match="model.attn_implementation='flash_attention_2' cannot be used"):
            load_model(name, attn_implementation="flash_attention_2")


# --- prepare_for_kbit and build_trainer


def test_prepare_for_kbit_leaves_a_model_that_is_not_quantized_alone():
    model = load_model(TINY_NAME, dtype="bfloat16")
    assert not is_quantized(model)
    assert prepare_for_kbit(model, gradient_checkpointing=True) is model
    assert all(p.requires_grad and p.dtype == torch.bfloat16 for p in model.parameters())
    assert not model.is_gradient_checkpointing


def test_prepare_for_kbit_runs_peft_on_a_quantized_model():
    model = load_model(TINY_NAME, dtype="bfloat16")
    model.is_loaded_in_4bit = True  # what the bitsandbytes quantizer sets (no Params4bit on a CPU)
    assert is_quantized(model)
    prepared = prepare_for_kbit(model, gradient_checkpointing=True)
    # peft's prepare_model_for_kbit_training: frozen, non-quantized weights upcast, checkpointing on
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in prepared.parameters())
    assert prepared.is_gradient_checkpointing


def _quantized_tiny(*args, **kwargs):
    model = build_tiny_llama(vocab_size=len(build_tiny_tokenizer()), seed=0)
    model.is_loaded_in_4bit = True
    return model


def test_build_trainer_trains_a_quantized_model_through_lora_only(tmp_path, monkeypatch):
    from decpo.config import ConfigError, load_config
    from decpo.training.build import build_trainer

    smoke = str(REPO / "configs" / "smoke.yaml")
    monkeypatch.setattr("decpo.models.loading.load_model", _quantized_tiny)
    with pytest.raises(ConfigError, match="4-bit or 8-bit model trains through LoRA only"):
        build_trainer(
            load_config(smoke, ["model.use_peft=false", "train.eval_strategy=no"]), tmp_path / "a", PAIRS, []
        )

    prepared = []

    def spy(model, gradient_checkpointing):
        prepared.append(gradient_checkpointing)
        return model

    monkeypatch.setattr("decpo.training.build.prepare_for_kbit", spy)
    trainer = build_trainer(load_config(smoke, ["train.eval_strategy=no"]), tmp_path / "b", PAIRS, [])
    assert prepared == [False] and hasattr(trainer.model, "peft_config")


# --- on a CUDA GPU with bitsandbytes: 4-bit QLoRA + DecPO + share_prompt on the tiny model


def _kbit_trainer(tmp_path, folder, *, gradient_checkpointing=False, **options):
    from datasets import Dataset
    from peft import LoraConfig

    from decpo.config.trainer_args import DecPOConfig
    from decpo.models import load_tokenizer
    from decpo.training.trainer import DecPOTrainer

    model = prepare_for_kbit(
        load_model(str(folder), **options), gradient_checkpointing=gradient_checkpointing
    )
    args = DecPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        precompute_ref_log_probs=False,
        share_prompt=True,
        disable_tqdm=True,
        seed=0,
        reg_layers=[-1],
        reg_weight=0.1,
    )
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], task_type="CAUSAL_LM"
    )
    return DecPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=load_tokenizer(str(folder)),
        peft_config=lora,
    )


@needs_kbit
@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_qlora_decpo_step_with_share_prompt_on_cuda(tmp_path, tiny_folder, gradient_checkpointing):
    from decpo.models import capture_activations, site_module

    trainer = _kbit_trainer(
        tmp_path, tiny_folder, gradient_checkpointing=gradient_checkpointing, load_in_4bit=True
    )
    assert is_quantized(trainer.model)
    module, _ = site_module(trainer.model, 1, "mlp.up_proj")
    assert "4bit" in type(module).__name__  # peft's lora.Linear4bit around bitsandbytes' Linear4bit
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    trainer.model.train()
    with capture_activations(trainer.model, [1], "mlp.up_proj") as acts:
        loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss) and 1 in acts and torch.isfinite(acts[1]).all()
    loss.backward()
    lora_grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_" in n and "up_proj" in n]
    assert lora_grads and all(g is not None and torch.isfinite(g).all() for g in lora_grads)
    trainer.model.zero_grad()
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    metrics = trainer.state.log_history
    assert any("loss/decorr" in m and torch.isfinite(torch.tensor(m["loss/decorr"])) for m in metrics)


@needs_kbit
def test_8bit_lora_decpo_step_on_cuda(tmp_path, tiny_folder):
    trainer = _kbit_trainer(tmp_path, tiny_folder, load_in_8bit=True)
    assert getattr(trainer.model, "is_loaded_in_8bit", False)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_decpo_train_checks_the_model_options_before_any_data_or_model(tmp_path, monkeypatch, capsys):
    from decpo.cli import main

    def nothing(*args, **kwargs):
        raise AssertionError("data or a model was loaded before the model options were checked")

    monkeypatch.setattr("decpo.training.run.load_records", nothing)
    monkeypatch.setattr("decpo.models.loading.load_model", nothing)
    smoke = str(REPO / "configs" / "smoke.yaml")
    run = tmp_path / "run"
    assert main(["train", "--config", smoke, "--output-dir", str(run), "model.load_in_4bit=true"]) == 2
    assert "model.load_in_4bit: 'tiny-random-llama' is built in-process" in capsys.readouterr().err
    assert main(["train", "--config", smoke, "--output-dir", str(run), "model.attn_implementation=fast"]) == 2
    assert "fast" in capsys.readouterr().err and not run.exists()
    with pytest.raises(Exception, match="trains through LoRA only: set model.use_peft=true"):
        from decpo.config import load_config

        load_config(smoke, ["model.load_in_4bit=true", "model.use_peft=false"])
