"""The command line's start and flags: help and parsing import no torch, `--version`, `config-keys` with a
filter and wrapped lines, 0 refused where it makes no sense (naming the flag), help and defaults shown."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import decpo
from decpo.cli import main
from decpo.cli.main import build_parser
from decpo.config import ConfigError, load_config

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
HEAVY = ("torch", "transformers", "trl", "peft")

# runs `decpo <argv>` in a fresh interpreter; its last stderr line: the heavy libraries it imported
PROBE = f"""
import json, sys
from decpo.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
"""


def _fresh_decpo(argv: list[str]) -> tuple[str, list[str]]:
    """``(stdout, heavy libraries imported)`` of ``decpo <argv>`` in a new process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["run", "--help"],
        ["sweep", "--help"],
        ["eval", "--help"],
        ["probe", "--help"],
        ["pairs", "--help"],
        ["config-keys", "--help"],
    ],
)
def test_help_and_the_parser_import_no_torch(argv):
    """`decpo --help` answers at once: building the parser imports none of torch, transformers, trl, peft
    (they take seconds to import; the commands import them when they run)."""
    out, heavy = _fresh_decpo(argv)
    assert out.startswith("usage: decpo") or out.startswith("decpo ")
    assert heavy == []


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"decpo {decpo.__version__}\n"
    declared = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared and declared.group(1) == decpo.__version__


def test_the_package_names_stay_importable_from_their_lazy_packages():
    import decpo.config
    import decpo.evaluation
    import decpo.probes

    assert decpo.config.load_config is load_config and "load_config" in dir(decpo.config)
    assert "describe_keys" in decpo.config.__all__
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        decpo.config.nonexistent  # noqa: B018
    from decpo.evaluation import EvalConfig, metrics  # a re-exported name and a submodule alike
    from decpo.probes import ACTIVATION_PROBES

    assert EvalConfig.__module__ == "decpo.evaluation.config" and metrics.__name__.endswith(".metrics")
    assert "decorrelation" in ACTIVATION_PROBES


def test_config_keys_filters_by_name_and_help(capsys):
    assert main(["config-keys", "BETA"]) == 0  # case-insensitive
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("train.beta = ") for line in lines)
    assert all("beta" in line.lower() for line in lines)  # not a wrapped line: not a terminal
    assert main(["config-keys"]) == 0
    assert len(capsys.readouterr().out.splitlines()) > len(lines)


def test_config_keys_says_when_nothing_matches_and_refuses_a_bad_pattern(capsys):
    assert main(["config-keys", "no-such-key-xyz"]) == 1
    assert "no config key's name or help matches 'no-such-key-xyz'" in capsys.readouterr().err
    assert main(["config-keys", "train.("]) == 2
    assert "'train.(' is not a regular expression" in capsys.readouterr().err


def test_config_keys_wraps_its_lines_to_the_terminal_width(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((60, 24)))
    assert main(["config-keys", "^train\\.reg_"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 60
    starts = [line for line in lines if not line.startswith("    ")]  # each key's first line
    assert len(starts) < len(lines) and all(line.startswith("train.reg_") for line in starts)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--num-processes", "0"], "--num-processes"),
        (["train", "--num-processes=-2"], "--num-processes"),
        (["run", "--num-processes", "0"], "--num-processes"),
        (["sweep", "--layers", "3", "--num-processes", "0"], "--num-processes"),
        (["probe", "--num-texts", "0"], "--num-texts"),
        (["pairs", "--prompts", "p.txt", "--output", "o.jsonl", "--limit", "0"], "--limit"),
    ],
)
def test_zero_is_refused_where_it_means_nothing_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    value = argv[-1].partition("=")[2] or argv[-1]
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"error: argument {flag}: expected a whole number >= 1, got {value!r}")
    )


@pytest.mark.parametrize(("steps", "refused"), [(0, True), (-2, True), (-1, False), (1, False)])
def test_train_max_steps_0_is_refused_at_load_and_minus_1_means_epochs(steps, refused):
    if refused:
        with pytest.raises(
            ConfigError, match=r"train\.max_steps must be >= 1, or -1 to train num_train_epochs"
        ):
            load_config(SMOKE, [f"train.max_steps={steps}"])
    else:
        assert load_config(SMOKE, [f"train.max_steps={steps}"]).train.max_steps == steps


def _sub_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_eval_help_prints_one_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "95% bootstrap CI" in " ".join(out.split()) and "%%" not in out


@pytest.mark.parametrize("command", list(_sub_parsers()))
def test_every_option_has_help_and_shows_its_default(command):
    parser = _sub_parsers()[command]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"decpo {command} {action.option_strings[0]}: no help"
        valued = action.default is not None and not isinstance(action.default, bool)
        if valued:
            assert "default" in action.help, f"decpo {command} {action.option_strings[0]}: no default shown"
    assert "(default: )" not in parser.format_help()


@pytest.mark.parametrize("command", list(_sub_parsers()))
def test_a_no_flag_says_what_it_does_not_what_the_feature_does(command):
    """``--no-weights``: "Do not add the weight-based proxy's rows ...", never the feature's own "Add ..."."""
    for action in _sub_parsers()[command]._actions:
        flag = next((o for o in action.option_strings if o.startswith("--no-")), None)
        if flag is None or isinstance(action, argparse.BooleanOptionalAction):
            continue
        first = action.help.split()[0].lower()
        assert first in ("do", "hide", "skip"), f"decpo {command} {flag}: {action.help!r}"
        assert "this flag turns it off" not in action.help


def test_an_on_by_default_switch_without_an_off_help_is_refused():
    """A new on-by-default bool field cannot get a --no- flag worded as the feature."""
    import dataclasses

    from decpo.cli.flags import add_dataclass_flags
    from decpo.config.fields import described

    @dataclasses.dataclass
    class Settings:
        colour: bool = dataclasses.field(default=True, metadata=described("Colour the output."))

    with pytest.raises(TypeError, match="Settings.colour is on by default"):
        add_dataclass_flags(argparse.ArgumentParser(), Settings)


def test_in_flag_terms_names_flags_where_fields_stand_and_leaves_words_alone():
    from decpo.cli.flags import in_flag_terms

    names = ["limit", "batch_size", "max_new_tokens", "synthetic_answer", "task", "prompts_path"]
    assert in_flag_terms("limit must be >= 1, got 0", names) == "--limit must be >= 1, got 0"
    assert (
        in_flag_terms("max_new_tokens and batch_size must be >= 1", names)
        == "--max-new-tokens and --batch-size must be >= 1"
    )
    assert in_flag_terms("synthetic_answer=number is the reading task's alone", names).startswith(
        "--synthetic-answer number is"
    )
    assert (
        in_flag_terms("prompts_path must exist", names, {"prompts_path": "prompts"}) == "--prompts must exist"
    )
    assert in_flag_terms("the task 'x' has no limit", names) == "the task 'x' has no limit"


@pytest.mark.parametrize(
    "argv, said",
    [
        (["eval", "--model", "default", "--task", "reading", "--limit", "0"], "--limit must be >= 1, got 0"),
        (
            ["eval", "--model", "default", "--task", "reading", "--batch-size", "0"],
            "--batch-size must be >= 1",
        ),
        (
            ["pairs", "--prompts", "toxicity", "--num-samples", "0", "--output", "x.jsonl"],
            "--num-samples must",
        ),
    ],
)
def test_a_bad_flag_value_is_said_as_the_flag(argv, said, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "batch_size" not in err and "num_samples" not in err
    assert list(tmp_path.iterdir()) == []  # no folder left behind


def test_an_unknown_scorer_is_listed_with_the_names_the_help_uses():
    from decpo.scoring.classifiers import ScorerError, make_scorer

    with pytest.raises(ScorerError) as e:
        make_scorer("toxcity")
    said = str(e.value)
    assert "did you mean 'toxicity'?" in said
    assert "toxicity (profanity-check)" in said and "sentiment (vader)" in said and "jigsaw-bilstm" in said
    assert make_scorer("toxicity").__class__.__name__ == "ProfanityCheckScorer"  # the alias, here too


def test_eval_refuses_an_unknown_scorer_before_the_model_loads(capsys, tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr("decpo.evaluation.runner.evaluate", no_loading)
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--task", "toxicity", "--model", "tiny-random-llama", "--scorer", "jigsaw-bilstm,toxcity"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown scorer 'toxcity'; did you mean 'toxicity'?" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no folder left behind
