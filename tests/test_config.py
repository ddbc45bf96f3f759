"""Config: YAML + dotted overrides, unknown keys with suggestions, wrong types, presets that load."""

from __future__ import annotations

import pytest

from decpo.config import ConfigError, load_config, parse_override

from conftest import REPO


def test_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  name: decpo\n  beta: 0.3\ntrain:\n  max_steps: 7\n")
    cfg = load_config(
        path, ["objective.name=dpo", "objective.beta=0.2", "train.max_steps=50", "objective.layers=[1, -2]"]
    )
    assert cfg.objective.name == "dpo" and cfg.objective.beta == 0.2
    assert cfg.train.max_steps == 50 and cfg.objective.layers == [1, -2]
    assert cfg.objective.regularizer is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("objective.bta=1", "did you mean 'objective.beta'"),
        ("beta=0.2", "did you mean 'objective.beta'"),
        ("train.max_step=3", "did you mean 'train.max_steps'"),
        ("train.max_steps=abc", "expects int"),
        ("objective.name=ppo", "objective.name must be one of"),
        ("objective.reg_form=square", "reg_form must be one of"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("objective.beta", "must look like section.key=value"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  lamda: 0.1\n")
    with pytest.raises(ConfigError, match=r"'objective.lamda' in .*c.yaml"):
        load_config(path)


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_override_values_are_yaml():
    assert load_config(None, ["objective.reg_weight=1e-3"]).objective.reg_weight == 1e-3
    assert parse_override("a.b=[q_proj, v_proj]") == ("a.b", ["q_proj", "v_proj"])
    assert parse_override("a.b=null") == ("a.b", None)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "configs").rglob("*.yaml") if "accelerate" not in str(p))
)
def test_every_preset_loads(name):
    path = next((REPO / "configs").rglob(name))
    load_config(path)


def test_reg_weight_auto_or_a_number_and_balance_positive():
    assert load_config(None, ["objective.reg_weight=auto"]).objective.reg_weight == "auto"
    assert load_config(None, ["objective.reg_weight=0.01"]).objective.reg_weight == 0.01
    assert load_config(None, ["objective.reg_weight=0"]).objective.reg_weight == 0
    with pytest.raises(ConfigError, match="'auto'"):
        load_config(None, ["objective.reg_weight=often"])
    with pytest.raises(ConfigError, match="reg_balance must be > 0"):
        load_config(None, ["objective.reg_weight=auto", "objective.reg_balance=0"])
    # a fixed weight ignores the balance
    assert (
        load_config(None, ["objective.reg_weight=0.1", "objective.reg_balance=0"]).objective.reg_balance == 0
    )


def test_eval_chat_template_is_true_false_or_auto_and_auto_follows_training():
    from decpo.experiment import eval_chat_template

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
    with pytest.raises(ConfigError, match="expects true, false or 'auto'"):
        load_config(None, ["experiment.eval_chat_template=raw"])
