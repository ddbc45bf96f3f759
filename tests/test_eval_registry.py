"""The evaluation task registry: a task defined in the test itself runs through `evaluate` and the CLI."""

import argparse
import json
import sys

import pytest

import decpo.evaluation.registry as registry
from decpo.cli.eval import add_parser
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.registry import EvalError, get_task, register_task, task_names
from decpo.evaluation.runner import evaluate

TINY = "tiny-random-llama"
PROMPTS = ["The capital of France is", "Two plus two is", "Once upon a time"]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="decpo")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry as it is, restored after the test (a task registered here does not leak)."""
    task_names()  # the built-in tasks registered first
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))


def answer_words(ctx, judge):
    outputs = ctx.generate(PROMPTS, "generate answers")
    words = [float(len(o.split())) for o in outputs]
    samples = [
        {"prompt": p, "output": o, "scores": {"words": w}}
        for p, o, w in zip(PROMPTS, outputs, words, strict=True)
    ]
    metrics = {
        "gen/words": ctx.entry(words, "none"),
        "gen/new_tokens": ctx.entry([ctx.cfg.new_tokens], "none"),
    }
    return metrics, samples, len(PROMPTS)


def test_builtin_tasks_are_registered():
    assert task_names()[:4] == ("synthetic", "sycophancy", "reframing", "toxicity")
    assert get_task("toxicity").max_new_tokens == 20 and get_task("synthetic").max_new_tokens == 64
    assert get_task("toxicity").check_data is not None and get_task("synthetic").check_data is None


def test_the_builtin_names_of_the_help_are_the_ones_registered():
    """`decpo eval --help` names the built-in tasks without importing them (they import torch)."""
    builtin = [
        n for n in task_names() if get_task(n).run.__module__.startswith(registry.BUILTIN_TASKS_MODULE)
    ]
    assert registry.BUILTIN_TASK_NAMES == tuple(builtin)


def test_a_task_registered_here_runs_through_evaluate(tmp_path, clean_registry):
    register_task("answer_words", max_new_tokens=5)(answer_words)
    assert "answer_words" in task_names()
    result = evaluate(EvalConfig(task="answer_words", model=TINY, progress=False, n_boot=50), tmp_path / "ev")
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["task"] == "answer_words" and results["model"] == TINY and results["n"] == 3
    assert set(results["metrics"]) == {"gen/words", "gen/new_tokens"}
    assert results["metrics"]["gen/new_tokens"]["value"] == 5  # the task's own generation length
    assert results["config"]["max_new_tokens"] == 5
    assert results == result.results
    samples = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == PROMPTS
    words = [s["scores"]["words"] for s in samples]
    assert results["metrics"]["gen/words"]["value"] == pytest.approx(sum(words) / len(words))


def test_a_task_of_an_importable_module_runs_from_the_cli(tmp_path, clean_registry, monkeypatch, capsys):
    module = "decpo_user_tasks_for_test"
    (tmp_path / f"{module}.py").write_text(
        "from decpo.evaluation.registry import register_task\n\n\n"
        '@register_task("one_item")\n'
        "def one_item(ctx, judge):\n"
        '    return {"constant": ctx.entry([1.0], "higher")}, [{"prompt": "x"}], 1\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    try:
        out = tmp_path / "ev"
        argv = [
            "eval",
            "--model",
            TINY,
            "--task",
            f"{module}:one_item",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
        assert run_cli(argv) == 0
    finally:
        sys.modules.pop(module, None)
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == f"{module}:one_item" and results["metrics"]["constant"]["value"] == 1.0
    assert "constant" in capsys.readouterr().out


def test_an_unknown_task_suggests_the_closest_name():
    with pytest.raises(EvalError, match=r"unknown task 'toxicty'; did you mean 'toxicity'\?"):
        EvalConfig(task="toxicty")
    with pytest.raises(EvalError, match=r"unknown task 'sycophancyy'; did you mean 'sycophancy'\?"):
        get_task("sycophancyy")
    with pytest.raises(EvalError, match="unknown task 'zzz' \\(registered: synthetic, sycophancy"):
        get_task("zzz")
    with pytest.raises(EvalError, match="cannot import module 'no_such_module_here'"):
        get_task("no_such_module_here:x")
    with pytest.raises(EvalError, match="registers no task 'toxicty'; did you mean 'toxicity'"):
        get_task("decpo.evaluation.tasks:toxicty")


def test_the_cli_reports_an_unknown_task(tmp_path, capsys):
    assert run_cli(["eval", "--model", TINY, "--task", "synthetik", "--output-dir", str(tmp_path)]) == 2
    assert "did you mean 'synthetic'?" in capsys.readouterr().err


def test_a_taken_name_needs_replace(clean_registry):
    def other(ctx, judge):
        return {}, [], 0

    with pytest.raises(
        EvalError, match="'synthetic' is already registered by decpo.evaluation.tasks.synthetic"
    ):
        register_task("synthetic")(other)
    register_task("mine")(other)
    register_task("mine")(other)  # the same function again (a re-import) is fine
    with pytest.raises(EvalError, match="':'"):
        register_task("a:b")
    register_task("synthetic", replace=True)(other)
    assert get_task("synthetic").run is other


def test_every_eval_config_field_has_help():
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(EvalConfig))
