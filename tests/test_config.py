"""Config: one schema on TRL's dataclasses; YAML + dotted overrides, unknown and renamed keys, every field
type-checked (None-defaults included), presets that load and round-trip."""

from __future__ import annotations

import dataclasses
import re

import pytest
from trl import ModelConfig as TrlModelConfig

from decpo.config import (
    DECPO_DEFAULTS,
    FIELDS,
    RENAMED,
    ConfigError,
    RunConfig,
    describe_keys,
    load_config,
    parse_override,
    save_config,
)
from decpo.config.trainer_args import DecPOConfig, SimPOConfig
from decpo.config.trl_sections import SIMPO_ONLY, TRAIN_NOT_KEYS
from decpo.training.args import trainer_args

from conftest import REPO

PRESETS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in str(p))


def _init_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def test_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  name: decpo\ntrain:\n  beta: 0.3\n  max_steps: 7\n")
    cfg = load_config(
        path, ["objective.name=dpo", "train.beta=0.2", "train.max_steps=50", "train.reg_layers=[1, -2]"]
    )
    assert cfg.objective.name == "dpo" and cfg.train.beta == 0.2
    assert cfg.train.max_steps == 50 and cfg.train.reg_layers == [1, -2]
    assert cfg.objective.regularizer is None


def test_every_trl_field_is_a_key_declared_once_with_its_help():
    """The train section is DecPOConfig's (DPOConfig's, TrainingArguments') fields and SimPO's extras, the
    model section TRL's ModelConfig plus gguf_file: the same names, annotations' help and nothing else."""
    train = {k.split(".", 1)[1]: f for k, f in FIELDS.items() if k.startswith("train.")}
    dpo = _init_fields(DecPOConfig)
    assert set(train) == (set(dpo) - set(TRAIN_NOT_KEYS)) | set(SIMPO_ONLY)
    assert set(SIMPO_ONLY) == set(_init_fields(SimPOConfig)) - set(dpo) and "simpo_gamma" in SIMPO_ONLY
    for name, f in train.items():
        declared = dpo.get(name) or _init_fields(SimPOConfig)[name]
        assert f.metadata["help"] == declared.metadata["help"], name
    model = {k.split(".", 1)[1] for k in FIELDS if k.startswith("model.")}
    assert model == set(_init_fields(TrlModelConfig)) | {"gguf_file", "trust_remote_code"}
    # the keys decpo used to declare itself are gone (they name their TRL field instead)
    assert not set(RENAMED) & set(FIELDS) and not any(k.startswith("lora.") for k in FIELDS)
    assert all(FIELDS[k].metadata.get("help") for k in FIELDS)


def test_any_training_argument_reaches_trls_config(tmp_path):
    cfg = load_config(
        None,
        [
            "train.warmup_steps=0.1",
            "train.optim=adamw_torch",
            "train.adam_beta2=0.95",
            "train.lr_scheduler_type=cosine",
            "train.lr_scheduler_kwargs={num_cycles: 0.5}",
            "train.torch_compile=false",
            "train.label_smoothing=0.1",
            "train.padding_free=false",
            "train.push_to_hub=true",
            "train.hub_model_id=me/decpo-smollm",
            "train.hub_strategy=end",
        ],
    )
    args = trainer_args(cfg, tmp_path)
    assert isinstance(args, DecPOConfig)
    assert args.warmup_steps == 0.1 and args.optim == "adamw_torch" and args.adam_beta2 == 0.95
    assert args.lr_scheduler_type == "cosine" and args.lr_scheduler_kwargs == {"num_cycles": 0.5}
    assert args.label_smoothing == 0.1 and args.push_to_hub and args.hub_model_id == "me/decpo-smollm"
    assert args.hub_strategy == "end" and args.output_dir == str(tmp_path)
    assert args.reg_type == "decorrelation" and args.reg_weight == "auto"
    # objective.name sets what it owns: reg_type, SFT's loss, SimPO's config
    assert trainer_args(cfg.replace(**{"objective.name": "dpo"}), tmp_path).reg_type is None
    assert trainer_args(cfg.replace(**{"objective.name": "sft"}), tmp_path).loss_type == ["sft"]
    simpo = trainer_args(cfg.replace(**{"objective.name": "simpo", "train.simpo_gamma": 0.7}), tmp_path)
    assert isinstance(simpo, SimPOConfig) and simpo.simpo_gamma == 0.7 and simpo.loss_type == "simpo"


def test_decpo_defaults_differ_from_trl_only_where_listed_with_a_reason():
    cfg = RunConfig()
    for section in ("model", "train"):
        values = dataclasses.asdict(getattr(cfg, section))
        for name, (value, reason) in DECPO_DEFAULTS[section].items():
            assert values[name] == value and reason, name
            assert FIELDS[f"{section}.{name}"].metadata["upstream_default"] != value
        for name in set(values) - set(DECPO_DEFAULTS[section]) - {"report_to"}:
            assert values[name] == FIELDS[f"{section}.{name}"].metadata["upstream_default"], name
    assert cfg.train.report_to == ["none"]  # TRL's "none", as a list


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.bta=1", "did you mean 'train.beta'"),
        ("beta=0.2", "did you mean 'train.beta'"),
        ("train.max_step=3", "did you mean 'train.max_steps'"),
        ("objective.beta=0.2", "'objective.beta' in the command line was renamed: use train.beta"),
        # a typo of a renamed key points at its new home, not at a valid key that merely looks alike
        ("objective.betta=0.1", "did you mean train.beta? ('objective.beta' was renamed to it)"),
        ("train.grad_acum=2", "did you mean train.gradient_accumulation_steps?"),
        ("lora.alfa=8", "did you mean model.lora_alpha?"),
        ("train.lr=1e-3", "renamed: use train.learning_rate"),
        ("lora.enabled=false", "renamed: use model.use_peft"),
        ("model.name=x", "renamed: use model.model_name_or_path"),
        ("train.max_steps=abc", "'train.max_steps' expects an integer, got 'abc'"),
        ("train.learning_rate=fast", "'train.learning_rate' expects a number, got 'fast'"),
        ("train.bf16=yes please", "expects true or false"),
        # fields whose default is None are checked too
        ("data.max_train_samples=abc", "'data.max_train_samples' expects an integer or null, got 'abc'"),
        ("experiment.eval_limit=[1,2]", "'experiment.eval_limit' expects an integer or null, got [1, 2]"),
        ("model.model_revision=3", "'model.model_revision' expects a string, got 3"),
        ("train.max_length=long", "'train.max_length' expects an integer or null"),
        ("train.hub_model_id=7", "'train.hub_model_id' expects a string or null"),
        ("pairs.limit=all", "'pairs.limit' expects an integer or null"),
        # enums list their values; metadata choices are kept
        ("train.optim=adamw_fast", "'train.optim' expects one of ['adamw_torch', 'adamw_torch_fused'"),
        ("train.eval_strategy=sometimes", "expects one of ['no', 'steps', 'epoch']"),
        ("train.lr_scheduler_type=wavy", "'train.lr_scheduler_type' expects one of ['linear', 'cosine'"),
        ("model.dtype=int8", "'model.dtype' expects one of ['auto', 'bfloat16', 'float16', 'float32']"),
        ("train.parallelism_config={a: 1}", "ParallelismConfig (not settable from YAML)"),
        # semantic checks of decpo's and TRL's own
        ("objective.name=ppo", "objective.name must be one of"),
        ("train.reg_form=square", "reg_form must be one of"),
        ("train.reg_weight=often", "reg_weight must be a number >= 0 or 'auto'"),
        ("train.per_device_train_batch_size=0", "train.per_device_train_batch_size must be >= 1"),
        ("train.beta", "must look like section.key=value"),
        ("experiment.eval_num_samples=-1", "experiment.eval_num_samples must be a number >= 0"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_trls_own_checks_run_before_training_and_name_the_section(tmp_path):
    cfg = load_config(
        None, ["train.load_best_model_at_end=true", "train.eval_strategy=steps", "train.save_strategy=epoch"]
    )
    with pytest.raises(ConfigError, match=r"^train: .*load_best_model_at_end"):
        trainer_args(cfg, tmp_path)
    with pytest.raises(ConfigError, match="model: You can't use 8 bit and 4 bit"):
        load_config(None, ["model.load_in_4bit=true", "model.load_in_8bit=true"])


def test_types_convert_only_between_forms_of_the_same_value():
    cfg = load_config(None, ["train.reg_layers=15", "train.learning_rate=1e-3", "train.warmup_steps=10"])
    assert cfg.train.reg_layers == [15]  # one item for a list
    assert cfg.train.learning_rate == 1e-3  # YAML 1.1 reads 1e-3 as a string
    assert cfg.train.warmup_steps == 10 and isinstance(cfg.train.warmup_steps, int)  # a count, not a ratio
    assert load_config(None, ["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    assert load_config(None, ["train.eval_strategy=no"]).train.eval_strategy == "no"  # YAML 1.1: false
    with pytest.raises(ConfigError, match="quote the word"):
        load_config(None, ["train.hub_strategy=off"])
    with pytest.raises(ConfigError, match="expects a list of an integer"):
        load_config(None, ["train.reg_layers=[1, two]"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lamda: 0.1\n")
    with pytest.raises(ConfigError, match=r"'train.lamda' in .*c.yaml"):
        load_config(path)
    path.write_text("objective:\n  layers: [3]\n")
    with pytest.raises(
        ConfigError, match=r"'objective.layers' in .*c.yaml was renamed: use train.reg_layers"
    ):
        load_config(path)


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  model_name_or_path: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_override_values_are_yaml():
    assert load_config(None, ["train.reg_weight=1e-3"]).train.reg_weight == 1e-3
    assert parse_override("a.b=[q_proj, v_proj]") == ("a.b", ["q_proj", "v_proj"])
    assert parse_override("a.b=null") == ("a.b", None)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_round_trips(path, tmp_path):
    """load -> the resolved config.yaml -> load gives the same objects."""
    cfg = load_config(path)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert type(again.train.reg_layers) is list


def test_paper_presets_train_their_epochs():
    for path in PRESETS:
        cfg = load_config(path)
        if "paper" in str(path):
            assert cfg.train.max_steps == -1 and cfg.train.num_train_epochs == 10, path


def test_reg_weight_auto_or_a_number_and_balance_positive():
    assert load_config(None, ["train.reg_weight=auto"]).train.reg_weight == "auto"
    assert load_config(None, ["train.reg_weight=0.01"]).train.reg_weight == 0.01
    assert load_config(None, ["train.reg_weight=0"]).train.reg_weight == 0
    with pytest.raises(ConfigError, match="reg_balance must be > 0"):
        load_config(None, ["train.reg_weight=auto", "train.reg_balance=0"])
    # a fixed weight ignores the balance
    assert load_config(None, ["train.reg_weight=0.1", "train.reg_balance=0"]).train.reg_balance == 0


def test_config_keys_lists_every_key_with_help_and_the_presets_values():
    lines = describe_keys().splitlines()
    assert len(lines) == len(FIELDS) and all("  # " in line for line in lines)
    lr = next(line for line in lines if line.startswith("train.learning_rate = "))
    assert "decpo's default; trl.DPOConfig's is 1e-06" in lr and "The initial learning rate" in lr
    shown = describe_keys(load_config(REPO / "configs" / "smoke.yaml")).splitlines()
    name = next(line for line in shown if line.startswith("model.model_name_or_path = "))
    assert name.startswith("model.model_name_or_path = 'tiny-random-llama' (default 'default')  # ")


def test_eval_chat_template_is_true_false_or_auto_and_auto_follows_training():
    from decpo.experiment.eval_stages import eval_chat_template

    assert load_config(None).experiment.eval_chat_template == "auto"
    assert load_config(None, ["experiment.eval_chat_template=null"]).experiment.eval_chat_template == "auto"
    for data, setting, expected in [
        (True, "auto", True),
        (False, "auto", False),
        (True, "false", False),
        (False, "true", True),
    ]:
        cfg = load_config(None, [f"data.chat_template={data}", f"experiment.eval_chat_template={setting}"])
        assert eval_chat_template(cfg) is expected
    with pytest.raises(ConfigError, match="must be true, false or 'auto'"):
        load_config(None, ["experiment.eval_chat_template=raw"])
