"""`decpo train` end to end on the smoke preset: run directory, metric keys, resume, clear errors."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from decpo.cli import main

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_writes_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run)]) == 0
    for name in (
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "final_metrics.json",
        "final/adapter_model.safetensors",
    ):
        assert (run / name).exists(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["objective"]["name"] == "decpo" and cfg["train"]["max_steps"] == 4
    env = json.loads((run / "env.json").read_text())
    assert {"torch", "transformers", "trl", "peft", "device", "git"} <= set(env)
    card = (run / "README.md").read_text()  # decpo's card, not TRL's "fine-tuned version of [None]"
    assert (
        "Fine-tuned from `tiny-random-llama`" in card and "None" not in card and "huggingface.co" not in card
    )
    rows = read_metrics(run)
    train_keys = set().union(*(r for r in rows if "train/loss" in r))
    for key in (
        "train/loss",
        "train/loss/pref",
        "train/loss/decorr",
        "train/rewards/chosen",
        "train/rewards/rejected",
        "train/rewards/margins",
        "train/rewards/accuracies",
        "train/logps/chosen",
        "train/logps/rejected",
    ):
        assert key in train_keys, key
    eval_rows = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in eval_rows] == [0, 2, 4]
    assert {"eval/rewards/margins", "eval/rewards/accuracies", "eval/loss/decorr"} <= set(eval_rows[-1])
    assert "eval/rewards/accuracies" in capsys.readouterr().out


def test_the_smoke_preset_keeps_every_pair_and_shows_no_warning_a_user_cannot_act_on(
    tmp_path, recwarn, caplog
):
    assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run")]) == 0
    shown = [str(w.message) for w in recwarn]
    assert not [m for m in shown if "gradient_checkpointing` is deprecated" in m], shown
    assert not [m for m in shown if "tiny-random-llama" in m], (
        shown
    )  # peft's config look-up, at each checkpoint
    assert (
        "are skipped" not in caplog.text
    )  # the first try trains on all its pairs (max_length 96 dropped 23 of 32)
    # nor warns about its own setting (a fixed reg_weight 0.01 made the penalty 3.4 x the preference loss)
    assert "exceeds" not in caplog.text, caplog.text


def test_the_log_line_gives_the_step_of_the_total_and_the_time_left(tmp_path, caplog):
    with caplog.at_level("INFO", logger="decpo.training.callbacks"):
        assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" |")[0] for line in lines] == [f"step {s}/4" for s in (1, 2, 3, 4)]
    assert re.search(r"\| eta \d+ s$", lines[0]) and lines[-1].endswith("| eta 0 s")


@pytest.mark.parametrize(
    "seconds, said", [(0.4, "0 s"), (59.6, "1 min 00 s"), (200, "3 min 20 s"), (3900, "1 h 05 min")]
)
def test_eta_reads_as_minutes_and_hours(seconds, said):
    from decpo.training.callbacks import eta

    assert eta(seconds) == said


def test_rerun_resumes_and_does_not_duplicate_steps(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=2"]) == 0
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), "train.max_steps=4"]) == 0
    steps = [r["step"] for r in read_metrics(run) if "train/loss" in r]
    assert steps == [1, 2, 3, 4]


def test_resuming_under_a_changed_config_is_refused_naming_the_keys(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--config", SMOKE, "--output-dir", str(run)]
    assert main([*base, "train.max_steps=2"]) == 0
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main([*base, "train.max_steps=4", "objective.name=dpo", "data.max_train_samples=24"]) == 2
    err = capsys.readouterr().err
    assert "objective.name: 'decpo' -> 'dpo'" in err and "data.max_train_samples: 32 -> 24" in err
    assert "--allow-config-change" in err and "max_steps: " not in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == saved  # nothing was touched
    # step counts and logging / save frequency may change
    assert main([*base, "train.max_steps=3", "train.save_steps=1", "train.logging_steps=2"]) == 0
    # the explicit override resumes anyway, and the run's config.yaml says what it went on with
    assert main([*base, "--allow-config-change", "train.max_steps=4", "train.reg_weight=0.1"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["reg_weight"] == 0.1
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [1, 2, 3, 4]


def test_resume_check_matches_a_resolved_auto_weight_and_ignores_the_experiment(tmp_path):
    from decpo.config import ConfigError, load_config, save_config
    from decpo.training.checkpoints import check_resume_config

    cfg = load_config(SMOKE, ["train.reg_weight=auto"])
    save_config(cfg, tmp_path / "config.yaml")  # config.yaml keeps `auto`; reg_weight.json holds the lambda
    (tmp_path / "reg_weight.json").write_text(json.dumps({"reg_weight": 0.0123, "reg_balance": 0.3}))
    ckpt = tmp_path / "checkpoint-2"
    check_resume_config(cfg, tmp_path, ckpt)  # auto, resolved to the recorded lambda: the same run
    check_resume_config(cfg.replace(**{"experiment.eval_limit": 3, "probe.every_n_steps": 2}), tmp_path, ckpt)
    with pytest.raises(ConfigError, match=r"train.reg_balance: 0.3 -> 0.5"):
        check_resume_config(cfg.replace(**{"train.reg_balance": 0.5}), tmp_path, ckpt)
    with pytest.raises(ConfigError, match=r"train.reg_weight: 'auto' -> 0.0123"):
        check_resume_config(cfg.replace(**{"train.reg_weight": 0.0123}), tmp_path, ckpt)


@pytest.mark.parametrize("cut", ["model:\n  model_name_or_path: [tiny", "model"])
def test_a_damaged_config_yaml_is_one_error_naming_it(tmp_path, cut):
    from decpo.config import ConfigError, load_config
    from decpo.training.checkpoints import check_resume_config

    (tmp_path / "config.yaml").write_text(cut)  # cut short by a full disk, or edited
    with pytest.raises(ConfigError, match=r"config.yaml is damaged, so resuming checkpoint-2"):
        check_resume_config(load_config(SMOKE), tmp_path, tmp_path / "checkpoint-2")


def test_an_auto_weight_is_recorded_once_and_the_config_keeps_auto(tmp_path):
    run = tmp_path / "run"
    base = ["train", "--config", SMOKE, "--output-dir", str(run), "train.reg_weight=auto"]
    assert main([*base, "train.max_steps=2"]) == 0
    calibration = json.loads((run / "reg_weight.json").read_text())
    assert calibration["reg_weight"] > 0 and calibration["reg_balance"] == 0.3
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["reg_weight"] == "auto"
    # the same command resumes (config.yaml is the config as given) and recalibrates to the same lambda
    assert main([*base, "train.max_steps=2"]) == 0
    assert json.loads((run / "reg_weight.json").read_text()) == calibration
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [1, 2]


def test_pairs_sampled_from_the_model_are_built_by_the_pairs_step_and_handed_to_training(
    tmp_path, monkeypatch
):
    from decpo.config import ConfigError, load_config
    from decpo.training.data import load_records

    pairs = tmp_path / "pairs.jsonl"
    row = '{"prompt": "Q: 1 + 1?", "chosen": " 2", "rejected": " 3"}\n'
    pairs.write_text(row * 10)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather today\n")
    cfg = load_config(SMOKE, [f"pairs.source={prompts}"])
    with pytest.raises(ConfigError, match="decpo pairs"):
        load_records(cfg)  # training never builds pairs
    train, evals = load_records(cfg, pairs)
    assert len(train) + len(evals) == 10
    built = []
    monkeypatch.setattr("decpo.pairs.cache.ensure_pairs", lambda c: built.append(c) or pairs)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                SMOKE,
                "--output-dir",
                str(run),
                f"pairs.source={prompts}",
                "train.max_steps=1",
            ]
        )
        == 0
    )
    assert len(built) == 1 and (run / "final").is_dir()


def test_dpo_objective_has_no_penalty_terms(tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            ["train", "--config", SMOKE, "--output-dir", str(run), "objective.name=dpo", "train.max_steps=1"]
        )
        == 0
    )
    keys = set().union(*read_metrics(run))
    assert "train/loss" in keys and not any("decorr" in k for k in keys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["objective.lamda=1"], "did you mean"),
        (["train.reg_layers=[9]"], "layer 9 does not exist"),
        (["data.path=/nonexistent/pairs.jsonl"], "/nonexistent/pairs.jsonl"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_error(tmp_path, capsys, args, message):
    assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_record_names_file_line_and_field(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    assert main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run"), f"data.path={data}"]) == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl line 2" in err and "rejected" in err


def test_probes_during_training_land_in_metrics(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--output-dir", str(run), "probe.every_n_steps=2"]) == 0
    rows = read_metrics(run)
    probed = [r for r in rows if "probe/decorrelation/L00" in r]
    assert [r["probe/step"] for r in probed] == [0, 2, 4]
    assert all("probe/seconds" in r for r in probed)
    assert not any(k.startswith("train/probe") for r in rows for k in r)


def test_prompts_longer_than_max_length_are_counted_or_refused(tmp_path, capsys, caplog):
    data = tmp_path / "pairs.jsonl"
    short = '{"prompt": "Q: 1 + 1?", "chosen": " 2", "rejected": " 3"}\n'
    long = '{"prompt": "' + "word " * 200 + '", "chosen": " a", "rejected": " b"}\n'
    data.write_text(long * 2 + short * 6)  # the last 2 (short) are held out
    args = [
        "train",
        "--config",
        SMOKE,
        "--output-dir",
        str(tmp_path / "run"),
        f"data.path={data}",
        "train.max_steps=1",
        "train.max_length=96",
    ]
    with caplog.at_level("WARNING"):
        assert main([*args, "data.eval_fraction=0.25"]) == 0
    assert "2 of 6 train pairs have a prompt of train.max_length=96 tokens or more" in caplog.text
    data.write_text(long * 8)
    assert main([*args, "train.resume_from_checkpoint=null"]) == 2
    assert "every train prompt has 96 tokens or more" in capsys.readouterr().err


def test_without_config_the_commands_use_the_shipped_demo_preset():
    """`decpo run` / `train` / `sweep` without --config run the README's preset, not the dataclass defaults."""
    from decpo.cli import DEFAULT_PRESET, config_path
    from decpo.config import load_config

    from conftest import REPO

    assert config_path(None) == DEFAULT_PRESET and DEFAULT_PRESET.is_file()
    assert (REPO / "configs" / "default.yaml").resolve() == DEFAULT_PRESET.resolve()
    cfg = load_config(config_path(None))
    assert (
        cfg.experiment.seeds == [0, 1, 2]
        and cfg.train.learning_rate == 2e-3
        and cfg.data.task == "reading"
        and cfg.train.reg_weight == "auto"
    )
    assert config_path("x.yaml").name == "x.yaml"


def test_training_and_evaluation_record_the_same_environment():
    from decpo.env import environment
    from decpo.evaluation import runner
    from decpo.training import run

    assert run.environment is environment and runner.environment is environment
    env = environment()
    assert {"decpo", "git", "torch", "transformers", "trl", "device", "threads", "world_size"} <= set(env)


def test_full_fine_tuning_under_fsdp_gets_a_frozen_reference(tmp_path, monkeypatch):
    """Under FSDP TRL loads a reference for the precompute too, by the policy's name (which fails for the
    embedded and in-process models): decpo hands it a frozen copy, as without precompute."""
    from decpo.config import load_config
    from decpo.models import TINY_NAME, load_model
    from decpo.training.args import trainer_args
    from decpo.training.build import reference_model

    model = load_model(TINY_NAME)
    for extra, trl_needs_none in [
        ([], True),  # full fine-tuning with precomputed log-probs: TRL needs no reference model
        (["train.fsdp=full_shard"], False),
        (["train.fsdp=full_shard", "model.use_peft=true"], True),  # the adapter disabled
        (["train.precompute_ref_log_probs=false"], False),
    ]:
        cfg = load_config(SMOKE, ["model.use_peft=false", *extra])
        ref = reference_model(cfg, trainer_args(cfg, tmp_path), model)
        assert (ref is None) is trl_needs_none, extra
        assert ref is None or (ref is not model and not any(p.requires_grad for p in ref.parameters()))
    # `accelerate launch --config_file configs/accelerate/fsdp.yaml` says FSDP through the environment
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = load_config(SMOKE, ["model.use_peft=false"])
    assert reference_model(cfg, trainer_args(cfg, tmp_path), model) is not None
