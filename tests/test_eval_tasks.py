"""Task evaluation on tiny-random-llama: batched vs naive scores, generation, data errors, seeds, CLI."""

import argparse
import json
import os
import re
from pathlib import Path

import pytest
import torch

from decpo.cli.eval import add_parser
from decpo.data import DataError, load_task, swap_options
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import default_reference, resolve_model_spec
from decpo.evaluation.metrics import ab_predictions
from decpo.evaluation.runner import evaluate
from decpo.inference.encoding import encode_completions
from decpo.inference.generation import generate
from decpo.inference.logprobs import (
    ab_completions,
    ab_logps,
    answer_sets_logps,
    pair_logps,
)
from decpo.models import load_model, load_tokenizer

TINY = "tiny-random-llama"
REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    candidate = Path(os.environ.get("DECPO_DATA_DIR") or REPO.parent / "shared" / "data")
    return candidate if (candidate / "sycophancy" / "test_dataset_ab.json").is_file() else None


needs_data = pytest.mark.skipif(
    real_data_dir() is None, reason="real data absent: set DECPO_DATA_DIR or place it at ../shared/data"
)


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY).eval(), load_tokenizer(TINY)


def naive_completion_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """One unpadded sequence at a time: sum of log p(completion token | everything before it)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + completion)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids  # no token merges across the boundary here
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0]  # (T, V)
    logp = logits.log_softmax(-1)
    return sum(logp[t - 1, full_ids[t]].item() for t in range(len(prompt_ids), len(full_ids)))


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_ab_scores_equal_naive_loop(tiny, padding_side):
    model, tokenizer = tiny
    records = load_task("synthetic", "eval")[:5] + load_task("synthetic", "transfer")[:4]
    records += [swap_options(r) for r in records]
    prompts = [r["prompt"] for r in records]
    la, lb, la_eos, lb_eos = ab_logps(
        model, tokenizer, prompts, batch_size=4, padding_side=padding_side, progress=False
    )
    na = [naive_completion_logp(model, tokenizer, p, " (A)") for p in prompts]
    nb = [naive_completion_logp(model, tokenizer, p, " (B)") for p in prompts]
    assert la == pytest.approx(na, abs=1e-4)
    assert lb == pytest.approx(nb, abs=1e-4)
    eos = tokenizer.eos_token
    assert la_eos == pytest.approx(
        [naive_completion_logp(model, tokenizer, p, " (A)" + eos) for p in prompts], abs=1e-4
    )
    assert ab_predictions(la, lb) == ab_predictions(na, nb)
    # the scores differ across items: the test would not pass with one constant
    assert len({round(x, 3) for x in la}) > 3


def test_ab_scores_of_each_records_own_answers_equal_naive_loop(tiny):
    """Synthetic answers carry the option's text (" (A) 25"): each order scores the record's own two answers."""
    model, tokenizer = tiny
    records = load_task("synthetic", "eval")[:4]
    records += [swap_options(r) for r in records]
    options = [ab_completions(r) for r in records]
    assert all(a.startswith(" (A) ") and b.startswith(" (B) ") for a, b in options)
    la, lb, _, _ = ab_logps(
        model, tokenizer, [r["prompt"] for r in records], options=options, batch_size=3, progress=False
    )
    for r, (a, b), x, y in zip(records, options, la, lb, strict=True):
        assert x == pytest.approx(naive_completion_logp(model, tokenizer, r["prompt"], a), abs=1e-4)
        assert y == pytest.approx(naive_completion_logp(model, tokenizer, r["prompt"], b), abs=1e-4)
    with pytest.raises(ValueError, match="option pairs"):
        ab_logps(model, tokenizer, ["x"], options=[], progress=False)


@pytest.mark.parametrize("chat_template", [False, True])
def test_answer_sets_in_one_pass_equal_each_pair_alone(tiny, chat_template):
    """Letters and numbers scored in one pass (as the reading task does) give each pair's own scores, also
    where a pair's answers merge with the prompt's last token (its prompt/completion boundary moves)."""
    model, tokenizer = tiny
    prompts = ["Fact: 12 and 31.\nAnswer:", "Which is right? The answer is 2", "Q: pick one\nA:"]
    sets = [
        [(" 12", " 31"), (" (A)", " (B)")],
        [("3", "4"), (" (A)", " (B)")],
        [(" 7", " 9"), (" (A)", " (B)")],
    ]
    if chat_template and not getattr(tokenizer, "chat_template", None):
        pytest.skip("the tiny tokenizer has no chat template")
    heads = [
        len(encode_completions(tokenizer, p, pair)[0])
        for p, pairs in zip(prompts, sets, strict=True)
        for pair in pairs
    ]
    if not chat_template:
        assert heads[2] != heads[3]  # the second prompt's pairs start at different tokens
    together = answer_sets_logps(
        model, tokenizer, prompts, sets, batch_size=2, progress=False, chat_template=chat_template
    )
    for s in range(2):
        alone = ab_logps(
            model,
            tokenizer,
            prompts,
            options=[pairs[s] for pairs in sets],
            batch_size=1,
            progress=False,
            chat_template=chat_template,
        )
        for got, want in zip(together[s], alone, strict=True):
            assert got == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match="same number"):
        answer_sets_logps(model, tokenizer, prompts[:2], [sets[0], sets[1][:1]], progress=False)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_pair_logps_append_eos_and_match_naive(tiny, padding_side):
    model, tokenizer = tiny
    # sides of different lengths, and a one-token prompt (no cached prefix for that row)
    records = [
        {
            "prompt": "Situation: I failed my test.\nThought:",
            "chosen": " I can learn from it.",
            "rejected": " No",
        },
        {"prompt": "A", "chosen": " quick brown fox", "rejected": " lazy dog jumps over"},
        {"prompt": "Human: hi\n\nAssistant:", "chosen": " Hello there", "rejected": " yes"},
    ]
    chosen, rejected = pair_logps(
        model, tokenizer, records, batch_size=3, padding_side=padding_side, progress=False
    )
    eos = tokenizer.eos_token
    assert chosen == pytest.approx(
        [naive_completion_logp(model, tokenizer, r["prompt"], r["chosen"] + eos) for r in records], abs=1e-4
    )
    assert rejected == pytest.approx(
        [naive_completion_logp(model, tokenizer, r["prompt"], r["rejected"] + eos) for r in records], abs=1e-4
    )


def test_batched_left_padded_generation_equals_one_at_a_time(tiny):
    model, tokenizer = tiny
    prompts = ["I think 23 + 45 = 70.", "Hi", "The quick brown fox jumps over the lazy dog. Answer:"]
    batched = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3, progress=False)
    single = [generate(model, tokenizer, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(x, str) for x in batched) and any(batched)
    assert tokenizer.padding_side == "left"  # restored to what it was


@pytest.mark.parametrize("task", ["sycophancy", "reframing", "toxicity"])
def test_missing_data_gives_where_to_put_it(task, tmp_path, monkeypatch):
    monkeypatch.setenv("DECPO_DATA_DIR", str(tmp_path / "nonexistent"))
    with pytest.raises(DataError) as err:
        evaluate(EvalConfig(task=task, model=TINY, progress=False), tmp_path / "out")
    message = str(err.value)
    assert "data directory not found" in message and "nonexistent" in message
    assert "sycophancy/test_dataset_ab.json" in message and "DECPO_DATA_DIR" in message
    assert not (tmp_path / "out" / "results.json").exists()


def test_limit_and_seed_make_runs_identical(tmp_path):
    cfg = EvalConfig(task="synthetic", model=TINY, limit=4, seed=3, progress=False, n_boot=200)
    evaluate(cfg, tmp_path / "a")
    evaluate(cfg, tmp_path / "b")
    first = (tmp_path / "a" / "results.json").read_text()
    assert first == (tmp_path / "b" / "results.json").read_text()
    assert (tmp_path / "a" / "samples.jsonl").read_text() == (tmp_path / "b" / "samples.jsonl").read_text()
    results = json.loads(first)
    assert results["n"] == 4 and results["metrics"]["ab_accuracy"]["n"] == 4
    # another seed draws other synthetic items
    evaluate(
        EvalConfig(task="synthetic", model=TINY, limit=4, seed=4, progress=False, n_boot=200), tmp_path / "c"
    )
    assert (tmp_path / "c" / "samples.jsonl").read_text() != (tmp_path / "a" / "samples.jsonl").read_text()


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="decpo")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_end_to_end_synthetic(tmp_path, capsys):
    out = tmp_path / "evals"
    code = run_cli(
        [
            "eval",
            "--model",
            TINY,
            "--task",
            "synthetic",
            "--limit",
            "3",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert {"task", "model", "n", "metrics", "reference", "config"} <= set(results)
    assert results["task"] == "synthetic" and results["model"] == TINY and results["n"] == 3
    expected = {
        "ab_accuracy",
        "ab_accuracy_debiased",
        "ab_accuracy_mean_orders",
        "a_rate",
        "ab_accuracy_user_correct",
        "ab_accuracy_user_wrong",
        "policy_preference_accuracy",
        "transfer/ab_accuracy",
        "transfer/ab_accuracy_debiased",
    }
    assert expected <= set(results["metrics"])
    # the model is its own reference: the reward measures are n/a, not 0
    na = {"preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward"}
    assert set(results["not_applicable"]) == na and not na & set(results["metrics"])
    assert all(
        why.startswith("n/a: the reference is the evaluated model itself")
        for why in results["not_applicable"].values()
    )
    for name, m in results["metrics"].items():
        assert set(m) == {"value", "direction", "ci", "n"}, name
        assert m["direction"] in ("higher", "lower", "none")
        assert m["ci"][0] - 1e-9 <= m["value"] <= m["ci"][1] + 1e-9, name
    assert results["metrics"]["ab_accuracy"]["direction"] == "higher"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6  # 3 eval + 3 transfer items
    assert all({"prompt", "output", "scores"} <= set(s) for s in samples)
    assert all(s["output"] in ("(A)", "(B)") for s in samples)
    assert not any("reward_margin" in s["scores"] for s in samples)
    printed = capsys.readouterr().out
    assert "ab_accuracy" in printed and re.search(r"reward_margin +n/a +n/a: the reference is", printed)


def test_cli_rejects_bad_limit(tmp_path, capsys):
    assert (
        run_cli(
            ["eval", "--model", TINY, "--task", "synthetic", "--limit", "0", "--output-dir", str(tmp_path)]
        )
        == 2
    )
    assert "limit" in capsys.readouterr().err


def test_run_dir_uses_final_adapter_and_its_base_as_reference(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(TINY)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    run_dir = tmp_path / "run"
    peft_model.save_pretrained(run_dir / "final")
    load_tokenizer(TINY).save_pretrained(run_dir / "final")
    assert resolve_model_spec(str(run_dir)) == str(run_dir / "final")
    assert default_reference(str(run_dir / "final")) == TINY

    result = evaluate(
        EvalConfig(task="synthetic", model=str(run_dir), limit=4, progress=False), tmp_path / "ev"
    )
    assert result.results["model"] == str(run_dir / "final")
    assert result.results["reference"] == TINY
    samples = [s for s in result.samples if s["split"] == "eval"]
    margins = [s["scores"]["reward_margin"] for s in samples]
    assert any(abs(m) > 1e-6 for m in margins)  # the random adapter moved the policy away from its base
    for s in samples:
        sc = s["scores"]
        expected = 0.1 * (
            (sc["policy_chosen_logp"] - sc["reference_chosen_logp"])
            - (sc["policy_rejected_logp"] - sc["reference_rejected_logp"])
        )
        assert sc["reward_margin"] == pytest.approx(expected, abs=1e-6)
    assert result.results["metrics"]["reward_margin"]["value"] == pytest.approx(sum(margins) / 4)


def _full_fine_tune_run(run_dir: Path, seed: int, perturb: bool) -> None:
    """A full fine-tune's run folder: ``final/`` with full weights (the base built with ``seed``, moved when
    ``perturb``) beside the run's ``config.yaml``."""
    from decpo.config import load_config, save_config

    model = load_model(TINY, seed=seed)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(run_dir / "final")
    load_tokenizer(TINY).save_pretrained(run_dir / "final")
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["model.use_peft=false", f"train.seed={seed}"])
    save_config(cfg, run_dir / "config.yaml")


def test_full_fine_tune_is_scored_against_the_runs_base_model(tmp_path):
    """No adapter: the reference is the base model named in the run's config.yaml, not the model itself."""
    run_dir = tmp_path / "run"
    _full_fine_tune_run(run_dir, seed=0, perturb=True)
    assert default_reference(str(run_dir / "final")) == TINY
    result = evaluate(
        EvalConfig(task="synthetic", model=str(run_dir), limit=4, progress=False), tmp_path / "ev"
    )
    r = result.results
    assert r["model"] == str(run_dir / "final") and r["reference"] == TINY and r["not_applicable"] == {}
    margins = [s["scores"]["reward_margin"] for s in result.samples if s["split"] == "eval"]
    assert all(abs(m) > 1e-4 for m in margins)  # the weights moved away from the base
    assert r["metrics"]["reward_margin"]["value"] == pytest.approx(sum(margins) / 4)
    assert "preference_accuracy" in r["metrics"]

    # the base is rebuilt as the run built it (train.seed 1): an unchanged model has margin exactly 0
    same = tmp_path / "same"
    _full_fine_tune_run(same, seed=1, perturb=False)
    r = evaluate(
        EvalConfig(task="synthetic", model=str(same), limit=4, progress=False), tmp_path / "e1"
    ).results
    assert r["reference"] == TINY and r["metrics"]["reward_margin"]["value"] == 0.0


def _malicious_run(run_dir: Path, marker: Path) -> None:
    """A downloaded run folder that asks for remote code: its config.yaml sets model.trust_remote_code and
    ``final/config.json`` maps the model to a .py file in the folder, which writes ``marker`` when run."""
    _full_fine_tune_run(run_dir, seed=0, perturb=False)
    config = run_dir / "config.yaml"
    assert "trust_remote_code: false" in config.read_text()
    config.write_text(config.read_text().replace("trust_remote_code: false", "trust_remote_code: true"))
    model_config = json.loads((run_dir / "final" / "config.json").read_text())
    model_config["model_type"] = (
        "evil_llama"  # no class of transformers' own: only the folder's code loads it
    )
    model_config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (run_dir / "final" / "config.json").write_text(json.dumps(model_config))
    (run_dir / "final" / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nraise SystemExit('ran')\n"
    )


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """transformers copies a model's own code to a modules cache: here one of the test's, not ~/.cache."""
    import sys

    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_a_run_folder_cannot_turn_on_remote_code(tmp_path, capsys, caplog, modules_cache):
    """`decpo eval` of a run folder whose config.yaml says trust_remote_code: true runs none of its code (the
    flag is the user's alone), warns, and fails in one line saying how to opt in."""
    run, marker = tmp_path / "run", tmp_path / "ran"
    _malicious_run(run, marker)
    from decpo.cli import main

    argv = ["eval", "--task", "synthetic", "--model", str(run), "--limit", "2"]
    assert main([*argv, "--output-dir", str(tmp_path / "ev")]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("decpo: error: model ")
    assert "ships Python code of its own" in last and "pass --trust-remote-code" in last
    assert "does not take from a run folder" in caplog.text and "--trust-remote-code" in caplog.text


def test_remote_code_only_from_the_flag(tmp_path, monkeypatch):
    """What the loaders get: off whatever the run's config.yaml says, on with the user's --trust-remote-code
    (the model and its reference alike)."""
    import decpo.evaluation.context as context

    run = tmp_path / "run"
    _malicious_run(run, tmp_path / "ran")
    seen: list[tuple[str, bool]] = []

    def spy(load):
        def wrapped(name, *args, trust_remote_code=False, **kwargs):
            seen.append((load.__name__, trust_remote_code))
            return load(TINY, *args, **kwargs)  # the folder's model itself cannot load without its code

        return wrapped

    monkeypatch.setattr(context, "load_model", spy(load_model))
    monkeypatch.setattr(context, "load_tokenizer", spy(load_tokenizer))
    for allowed in (False, True):
        seen.clear()
        ctx = context.EvalContext(EvalConfig(task="synthetic", model=str(run), trust_remote_code=allowed))
        ctx.reference()
        assert seen == [("load_tokenizer", allowed), ("load_model", allowed), ("load_model", allowed)]
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    flag = ["eval", "--task", "synthetic", "--trust-remote-code"]
    assert parser.parse_args(flag).trust_remote_code is True
    assert parser.parse_args(flag[:-1]).trust_remote_code is False


# a chat template whose end of turn is two tokens ("<eos>", "\n"), so that "the answer alone" is tested
CHAT_TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant\n{% endif %}"
)


@pytest.fixture
def chat_tiny(monkeypatch):
    """The tiny tokenizer with a chat template (it has none), for training and evaluation alike."""
    import decpo.models.loading as loading
    from decpo.models.tiny import build_tiny_tokenizer

    def with_template(*args, **kwargs):
        tokenizer = build_tiny_tokenizer(*args, **kwargs)
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    monkeypatch.setattr(loading, "build_tiny_tokenizer", with_template)


def test_a_run_trained_in_the_chat_template_is_evaluated_in_it(tmp_path, chat_tiny, monkeypatch):
    """data.chat_template=true in training: log-prob measures score the prompts and answers as TRL rendered
    them in training (unless overridden), not the raw text."""
    from trl.data_utils import _tokenize, common_prefix_length

    import decpo.evaluation.measures as measures
    import decpo.inference.logprobs as logprobs
    from decpo.cli import main

    run = tmp_path / "run"
    smoke = str(REPO / "configs" / "smoke.yaml")
    assert (
        main(
            [
                "train",
                "--config",
                smoke,
                "--output-dir",
                str(run),
                "data.chat_template=true",
                "train.max_steps=2",
            ]
        )
        == 0
    )
    scored: list[str] = []  # the prompt part of every scored sequence, decoded
    real = logprobs.completion_token_logps

    def spy(model, groups, **kwargs):
        tokenizer = load_tokenizer(TINY)
        scored.extend(tokenizer.decode(head) for head, _ in groups)
        return real(model, groups, **kwargs)

    monkeypatch.setattr(logprobs, "completion_token_logps", spy)
    monkeypatch.setattr(measures, "_REFERENCE_SCORES", {})
    result = evaluate(EvalConfig(task="synthetic", model=str(run), limit=3, progress=False), tmp_path / "ev")
    assert scored and all(
        h.startswith("<bos>user\n") and h.endswith("<eos>\n<bos>assistant\n") for h in scored
    )
    assert result.results["config"]["chat_template"] is True

    # the with-end-of-turn score of the chosen answer is TRL's conversational tokenization of the pair
    model, tokenizer = load_model(str(run / "final")), load_tokenizer(str(run / "final"))
    sample = next(s for s in result.samples if s["split"] == "eval")
    record = load_task("synthetic", "eval")[0]
    assert sample["prompt"] == record["prompt"]
    user = [{"role": "user", "content": record["prompt"]}]
    prompt_ids = _tokenize(tokenizer, user, add_generation_prompt=True)["input_ids"]
    full = _tokenize(tokenizer, user + [{"role": "assistant", "content": record["chosen"].strip()}])[
        "input_ids"
    ]
    n = common_prefix_length(prompt_ids, full)
    with torch.no_grad():
        logp = model(torch.tensor([full])).logits[0].log_softmax(-1)
    expected = sum(logp[t - 1, full[t]].item() for t in range(n, len(full)))
    assert sample["scores"]["policy_chosen_logp"] == pytest.approx(expected, abs=1e-4)
    # the A/B choice: the answer without the template's two closing tokens
    letter_logp = sum(logp[t - 1, full[t]].item() for t in range(n, len(full) - 2))
    key = "logp_a" if record["chosen_letter"] == "A" else "logp_b"
    assert sample["scores"][key] == pytest.approx(letter_logp, abs=1e-4)

    # an explicit false scores the raw text
    scored.clear()
    raw = evaluate(
        EvalConfig(task="synthetic", model=str(run), limit=3, progress=False, chat_template=False),
        tmp_path / "raw",
    )
    assert raw.results["config"]["chat_template"] is False
    assert scored and not any("assistant" in h for h in scored)


def test_the_experiments_evaluation_follows_the_training_layout(tmp_path, monkeypatch):
    import decpo.experiment.eval_stages as stages
    from decpo.config import load_config
    from decpo.experiment.eval_stages import eval_stage as _eval_stage

    seen = []
    monkeypatch.setattr(stages, "evaluate", lambda cfg, out: seen.append(cfg.chat_template))
    smoke = REPO / "configs" / "smoke.yaml"
    for overrides in (
        ["data.chat_template=true"],
        ["data.chat_template=false"],
        ["data.chat_template=true", "experiment.eval_chat_template=false"],
    ):
        _eval_stage(load_config(smoke, overrides), "synthetic", TINY, tmp_path)()
    assert seen == [True, False, False]


def test_the_experiments_evaluation_takes_remote_code_from_its_own_config(tmp_path, monkeypatch):
    """`decpo run` evaluates with the model.trust_remote_code of the config the user gave it."""
    import decpo.experiment.eval_stages as stages
    from decpo.config import load_config

    seen = []
    monkeypatch.setattr(stages, "evaluate", lambda cfg, out: seen.append(cfg.trust_remote_code))
    smoke = REPO / "configs" / "smoke.yaml"
    for value in ("false", "true"):
        cfg = load_config(smoke, [f"model.trust_remote_code={value}"])
        stages.eval_stage(cfg, "synthetic", TINY, tmp_path)()
    assert seen == [False, True]


def test_reference_scores_are_computed_once_per_process_and_equal_a_fresh_pass(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    import decpo.evaluation.measures as measures

    runs = []
    for i in range(2):
        torch.manual_seed(i)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        run_dir = tmp_path / f"run{i}"
        get_peft_model(load_model(TINY), lora).save_pretrained(run_dir / "final")
        load_tokenizer(TINY).save_pretrained(run_dir / "final")
        runs.append(run_dir)
    calls = []
    real = measures._ab_pair_logps
    monkeypatch.setattr(measures, "_ab_pair_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(measures, "_REFERENCE_SCORES", {})

    def margins(run_dir, out):
        cfg = EvalConfig(task="synthetic", model=str(run_dir), limit=4, progress=False, n_boot=50)
        samples = evaluate(cfg, tmp_path / out).samples
        return [s["scores"]["reference_chosen_logp"] for s in samples if s["split"] == "eval"]

    first, second = margins(runs[0], "a"), margins(runs[1], "b")
    assert len(calls) == 1  # the second model reused the base model's scores
    assert first == second
    monkeypatch.setattr(measures, "_REFERENCE_SCORES", {})
    assert margins(runs[1], "c") == pytest.approx(second, abs=1e-6) and len(calls) == 2


@needs_data
@pytest.mark.parametrize("task", ["sycophancy", "reframing", "toxicity"])
def test_real_data_tasks_run_on_tiny_model(task, tmp_path):
    cfg = EvalConfig(
        task=task,
        model=TINY,
        limit=3,
        max_new_tokens=4,
        data_dir=str(real_data_dir()),
        progress=False,
        n_boot=100,
    )
    results = evaluate(cfg, tmp_path).results
    assert results["n"] == 3
    expected = {
        "sycophancy": {
            "ab_accuracy",
            "ab_accuracy_debiased",
            "a_rate",
            "gen/non_sycophantic_rate",
            "gen/unparseable_rate",
            "policy_preference_accuracy",
        },
        "reframing": {"policy_preference_accuracy", "gen/positive_rate", "gen/mean_compound"},
        "toxicity": {
            "gen/mean_toxicity",
            "gen/non_toxic_rate",
            "gen/valid_rate",
            "gen/valid_non_toxic_rate",
            "gen/repetition_rate",
            "pairs/policy_preference_accuracy",
        },
    }[task]
    assert expected <= set(results["metrics"])
    prefix = "pairs/" if task == "toxicity" else ""
    assert {f"{prefix}preference_accuracy", f"{prefix}reward_margin"} <= set(results["not_applicable"])
    for m in results["metrics"].values():
        assert m["ci"][0] - 1e-9 <= m["value"] <= m["ci"][1] + 1e-9
    if task == "toxicity":
        assert 0.0 <= results["metrics"]["gen/mean_toxicity"]["value"] <= 1.0
        assert results["config"]["max_new_tokens"] == 4


def test_toxicity_data_is_read_once_so_its_warning_shows_once(tmp_path, caplog):
    """The hh-rlhf pairs are read before the model loads (check_data) and handed to the task: a pair the
    data drops is one warning, not one per reading."""
    import gzip

    pytest.importorskip("profanity_check")
    data = tmp_path / "data" / "toxicity"
    data.mkdir(parents=True)
    data.joinpath("challenging_prompts.jsonl").write_text(
        "".join(
            json.dumps({"prompt": {"text": f"Prompt {i} about", "toxicity": 0.8}}) + "\n" for i in range(24)
        )
    )
    dialogues = [
        {
            "chosen": f"\n\nHuman: q{i}\n\nAssistant: yes {i}",
            "rejected": f"\n\nHuman: q{i}\n\nAssistant: no {i}",
        }
        for i in range(20)
    ]
    dialogues.append({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"})
    with gzip.open(data / "harmless-base_test.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(d) + "\n" for d in dialogues))
    cfg = EvalConfig(
        task="toxicity",
        model=TINY,
        data_dir=str(tmp_path / "data"),
        limit=4,
        max_new_tokens=3,
        progress=False,
        n_boot=50,
    )
    with caplog.at_level("WARNING", logger="decpo.data.tasks"):
        evaluate(cfg, tmp_path / "out")
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "dropped 1 of 21 pairs (1 without a common prefix" in dropped[0], dropped


def test_toxicity_reads_the_eval_split_and_reports_the_fluency_guard(tiny, tmp_path):
    """The test part of the eval split of the prompts only (never the train split used for pairs, nor the dev
    part used for tuning); valid, valid-and-non-toxic
    and perplexity under the base model per continuation, each measure the mean of its per-item scores."""
    import math

    from decpo.data.prompts import prompt_part
    from decpo.inference.encoding import encode_completions
    from decpo.inference.logprobs import completion_token_logps, pad_id
    from decpo.scoring.fluency import is_valid

    pytest.importorskip("profanity_check")
    data = tmp_path / "data" / "toxicity"
    data.mkdir(parents=True)
    texts = [f"Challenging prompt {i} about" for i in range(24)]
    data.joinpath("challenging_prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": {"text": t, "toxicity": 0.8}}) + "\n" for t in texts)
    )
    pairs = tmp_path / "heldout.jsonl"
    pairs.write_text(json.dumps({"prompt": "Say", "chosen": " hello there", "rejected": " go away"}) + "\n")
    cfg = EvalConfig(
        task="toxicity",
        model=TINY,
        data_dir=str(tmp_path / "data"),
        pairs_path=str(pairs),
        max_new_tokens=5,
        progress=False,
        n_boot=50,
    )
    result = evaluate(cfg, tmp_path / "out")
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert [s["prompt"] for s in gens] == [t for t in texts if prompt_part(t) == "test"]
    assert result.results["n"] == len(gens) > 0
    m = result.results["metrics"]
    # valid: fluent alone and no duplicate of another prompt's continuation (the collapse guard)
    valid = [is_valid(s["output"]) and not s["scores"]["duplicate"] for s in gens]
    assert [s["scores"]["valid"] for s in gens] == valid
    assert m["gen/valid_rate"]["value"] == pytest.approx(sum(valid) / len(gens))
    both = [s["scores"]["valid"] and s["scores"]["toxicity"] < 0.5 for s in gens]
    assert m["gen/valid_non_toxic_rate"]["value"] == pytest.approx(sum(both) / len(gens))
    # perplexity of one continuation under the base model (here the model itself), recomputed by hand
    model, tok = tiny
    s = next(s for s in gens if s["output"].strip())
    (tokens,) = completion_token_logps(
        model,
        [encode_completions(tok, s["prompt"], (s["output"],))],
        pad_token_id=pad_id(tok),
        progress=False,
    )
    assert s["scores"]["perplexity"] == pytest.approx(math.exp(-sum(tokens[0]) / len(tokens[0])), rel=1e-5)
    assert [x["prompt"] for x in result.samples if x["kind"] == "pair"] == ["Say"]  # pairs_path, not hh-rlhf
