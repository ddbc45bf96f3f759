"""The toxicity evaluation end to end on tiny-random-llama with a stub scorer: the collapse guard (one
stock sentence for every prompt is flagged and not valid; varied outputs are not) and the sampled
RealToxicityPrompts protocol (K continuations per prompt, expected maximum toxicity, toxicity probability)
with the same collapse guard on the K samples (a stub sampling one sentence for every prompt is flagged)."""

import json

import pytest

from decpo.evaluation import config as eval_config
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext
from decpo.evaluation.registry import EvalError
from decpo.evaluation.runner import evaluate
from decpo.evaluation.tasks import toxicity
from decpo.reports.items import item_values
from decpo.scoring.diversity import normalise

TINY = "tiny-random-llama"
STOCK = "I am sorry, I cannot help with that."
PROMPTS = [f"Prompt number {i} says that" for i in range(12)]
WORDS = "river fence train dog chess bread lamp cloud stone apple violin garden mirror ocean".split()


class StubScorer:
    """Toxicity from the text alone, no model: the share of its characters that are a vowel, in [0, 1]."""

    def score(self, texts):
        return [sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts]


@pytest.fixture
def toxicity_cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(toxicity, "make_scorer", lambda spec: StubScorer())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    pairs = tmp_path / "heldout.jsonl"
    pairs.write_text(json.dumps({"prompt": "Say", "chosen": " hello there", "rejected": " go away"}) + "\n")

    def make(**kw) -> EvalConfig:
        base = dict(
            task="toxicity",
            model=TINY,
            prompts_path=str(prompts),
            pairs_path=str(pairs),
            max_new_tokens=4,
            num_samples=0,
            progress=False,
            n_boot=50,
        )
        return EvalConfig(**{**base, **kw})

    return make


def assert_items_reproduce(result, measures) -> None:
    """The per-item scores of samples.jsonl (`decpo.reports.items`) reproduce each measure: the reports can
    pair two models item by item on it."""
    lines = (result.output_dir / "samples.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    for name in measures:
        keys, values = item_values("toxicity", name, samples, result.results["metrics"][name])
        assert keys is not None, (name, values)


def varied(prompt: str) -> str:
    """A continuation of its own for each prompt: every bigram of all of them differs."""
    i = PROMPTS.index(prompt)
    return f"{WORDS[i]} near {WORDS[(i + 5) % len(WORDS)]} {WORDS[(i + 9) % len(WORDS)]}"


def test_one_stock_sentence_for_every_prompt_is_flagged_and_not_valid(toxicity_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(EvalContext, "generate", lambda self, prompts, desc: [STOCK] * len(prompts))
    m = evaluate(toxicity_cfg(), tmp_path / "stock").results["metrics"]
    # each output alone is fluent (a word, no loop): only the cross-prompt check sees the collapse
    assert m["gen/repetition_rate"]["value"] == 0.0 and m["gen/empty_rate"]["value"] == 0.0
    assert m["gen/valid_rate"]["value"] == 0.0
    assert m["gen/valid_non_toxic_rate"]["value"] == 0.0
    assert m["gen/duplicate_rate"]["value"] == 1.0
    assert m["gen/duplicate_rate"]["most_frequent"] == [
        ["i am sorry, i cannot help with that.", len(PROMPTS)]
    ]
    assert m["gen/distinct_2"]["value"] == pytest.approx(7 / (7 * len(PROMPTS)))
    assert m["gen/distinct_1"]["value"] < 0.1
    for name in ("gen/distinct_1", "gen/distinct_2"):
        low, high = m[name]["ci"]
        assert 0.0 <= low <= m[name]["value"] <= high <= 1.0 and m[name]["n"] == len(PROMPTS)


def test_varied_outputs_are_not_flagged(toxicity_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(EvalContext, "generate", lambda self, prompts, desc: [varied(p) for p in prompts])
    result = evaluate(toxicity_cfg(), tmp_path / "varied")
    m = result.results["metrics"]
    assert m["gen/valid_rate"]["value"] == 1.0
    assert m["gen/duplicate_rate"]["value"] == 0.0
    assert m["gen/distinct_2"]["value"] == 1.0
    assert [count for _, count in m["gen/duplicate_rate"]["most_frequent"]] == [1] * 5
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert all(s["scores"]["valid"] and not s["scores"]["duplicate"] for s in gens)


def test_two_prompts_sharing_a_continuation_are_both_invalid(toxicity_cfg, tmp_path, monkeypatch):
    def outputs(self, prompts, desc):
        out = [varied(p) for p in prompts]
        out[3] = out[0].upper() + "  "  # the same continuation after case and whitespace normalisation
        return out

    monkeypatch.setattr(EvalContext, "generate", outputs)
    result = evaluate(toxicity_cfg(), tmp_path / "two")
    m = result.results["metrics"]
    assert m["gen/duplicate_rate"]["value"] == pytest.approx(2 / len(PROMPTS))
    assert m["gen/valid_rate"]["value"] == pytest.approx(1 - 2 / len(PROMPTS))
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert [s["scores"]["duplicate"] for s in gens] == [i in (0, 3) for i in range(len(PROMPTS))]
    assert_items_reproduce(result, ("gen/duplicate_rate", "gen/valid_rate", "gen/valid_non_toxic_rate"))


def test_sampled_protocol_on_the_tiny_model(toxicity_cfg, tmp_path):
    cfg = toxicity_cfg(num_samples=2, limit=5)
    result = evaluate(cfg, tmp_path / "k2")
    m = result.results["metrics"]
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert len(gens) == 5 and all(len(s["sampled_outputs"]) == 2 for s in gens)
    scores = [s["scores"]["sampled_toxicity"] for s in gens]  # (prompts, K)
    assert scores == [StubScorer().score(s["sampled_outputs"]) for s in gens]
    for name in ("sampled/expected_max_toxicity", "sampled/toxicity_probability"):
        entry = m[name]
        assert entry["n"] == 5 and entry["direction"] == "lower"
        assert 0.0 <= entry["ci"][0] <= entry["value"] <= entry["ci"][1] <= 1.0
    assert m["sampled/expected_max_toxicity"]["value"] == pytest.approx(sum(max(r) for r in scores) / 5)
    assert m["sampled/toxicity_probability"]["value"] == pytest.approx(
        sum(any(x >= 0.5 for x in r) for r in scores) / 5
    )
    assert result.results["config"]["num_samples"] == 2
    assert_items_reproduce(result, ("sampled/expected_max_toxicity", "sampled/toxicity_probability"))
    # seeded from cfg.seed: the same config draws the same samples
    again = evaluate(cfg, tmp_path / "k2-again").samples
    assert [s.get("sampled_outputs") for s in again] == [s.get("sampled_outputs") for s in result.samples]


def stock_samples(self, prompts, k, desc, **kw):
    return [[STOCK] * k for _ in prompts]


def varied_samples(self, prompts, k, desc, **kw):
    """K continuations of each prompt of their own: no bigram repeats anywhere, within a prompt or across."""
    return [[" ".join(f"{w}{j}" for w in varied(p).split()) for j in range(k)] for p in prompts]


def test_one_stock_sentence_in_every_sample_is_flagged(toxicity_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(EvalContext, "generate", lambda self, prompts, desc: [varied(p) for p in prompts])
    monkeypatch.setattr(EvalContext, "sample", stock_samples)
    result = evaluate(toxicity_cfg(num_samples=3), tmp_path / "stock-k3")
    m = result.results["metrics"]
    # the greedy continuations are varied: only the sampled measures see the collapse
    assert m["gen/duplicate_rate"]["value"] == 0.0 and m["gen/distinct_2"]["value"] == 1.0
    assert m["sampled/duplicate_share"]["value"] == 1.0
    assert m["sampled/duplicate_share"]["n"] == len(PROMPTS)  # one share per prompt: the CI is over prompts
    assert m["sampled/duplicate_share"]["most_frequent"] == [[normalise(STOCK), 3 * len(PROMPTS)]]
    assert m["sampled/distinct_2"]["value"] == pytest.approx(7 / (7 * 3 * len(PROMPTS)))
    assert m["sampled/distinct_1"]["value"] < 0.1
    for name in ("sampled/distinct_1", "sampled/distinct_2"):
        low, high = m[name]["ci"]
        assert 0.0 <= low <= m[name]["value"] <= high <= 1.0 and m[name]["n"] == len(PROMPTS)
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert all(s["scores"]["sampled_duplicate"] == [True] * 3 for s in gens)
    assert_items_reproduce(result, ("sampled/duplicate_share",))


def test_varied_samples_are_not_flagged(toxicity_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(EvalContext, "generate", lambda self, prompts, desc: [varied(p) for p in prompts])
    monkeypatch.setattr(EvalContext, "sample", varied_samples)
    result = evaluate(toxicity_cfg(num_samples=3), tmp_path / "varied-k3")
    m = result.results["metrics"]
    assert m["sampled/duplicate_share"]["value"] == 0.0
    assert m["sampled/distinct_2"]["value"] == 1.0
    assert [count for _, count in m["sampled/duplicate_share"]["most_frequent"]] == [1] * 5
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert all(s["scores"]["sampled_duplicate"] == [False] * 3 for s in gens)


def test_samples_repeating_within_one_prompt_are_not_cross_prompt_duplicates(
    toxicity_cfg, tmp_path, monkeypatch
):
    def samples(self, prompts, k, desc, **kw):
        out = [[varied(p)] * k for p in prompts]
        out[4] = [varied(PROMPTS[0]), *out[4][1:]]  # prompt 4's first sample is prompt 0's sentence
        return out

    monkeypatch.setattr(EvalContext, "sample", samples)
    result = evaluate(toxicity_cfg(num_samples=3), tmp_path / "within")
    share = result.results["metrics"]["sampled/duplicate_share"]["value"]
    # prompt 0: all 3 of its samples equal prompt 4's first; prompt 4: that one of its 3
    assert share == pytest.approx((1 + 1 / 3) / len(PROMPTS))
    assert_items_reproduce(result, ("sampled/duplicate_share",))


def test_greedy_only_has_no_sampled_measures(toxicity_cfg, tmp_path):
    m = evaluate(toxicity_cfg(limit=3), tmp_path / "greedy").results["metrics"]
    assert not any(name.startswith("sampled/") for name in m)
    assert {"gen/distinct_1", "gen/distinct_2", "gen/duplicate_rate", "gen/valid_rate"} <= set(m)


def test_num_samples_is_checked(toxicity_cfg):
    with pytest.raises(EvalError, match="num_samples"):
        toxicity_cfg(num_samples=-1)
    assert EvalConfig(task="toxicity").num_samples == 4  # the CPU default (the published protocol: 25)


def test_decpo_run_evaluates_with_experiment_eval_num_samples(tmp_path, monkeypatch):
    import decpo.experiment.eval_stages as stages
    from decpo.config import load_config

    seen = []
    monkeypatch.setattr(stages, "evaluate", lambda cfg, out: seen.append(cfg.num_samples))
    for overrides in ([], ["experiment.eval_num_samples=0"], ["experiment.eval_num_samples=25"]):
        stages.eval_stage(load_config(None, overrides), "toxicity", TINY, tmp_path)()
    assert seen == [4, 0, 25]


class ConstantScorer:
    def __init__(self, value):
        self.value = value

    def score(self, texts):
        return [self.value] * len(texts)


def test_several_scorers_side_by_side_and_their_mean(toxicity_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(toxicity, "make_scorer", lambda spec: ConstantScorer({"a": 0.2, "b": 0.9}[spec]))
    monkeypatch.setattr(eval_config, "check_scorer_name", lambda spec: None)  # the made-up names "a", "b"
    monkeypatch.setattr(EvalContext, "generate", lambda self, prompts, desc: [varied(p) for p in prompts])
    result = evaluate(toxicity_cfg(scorer="a, b", num_samples=2, limit=4), tmp_path / "ab")
    m = {k: v["value"] for k, v in result.results["metrics"].items()}
    assert m["gen/mean_toxicity"] == pytest.approx(0.2)  # the first scorer's: the gen/ and sampled/ measures
    expected = {"a": (0.2, 1.0, 0.2, 0.0), "b": (0.9, 0.0, 0.9, 1.0), "mean": (0.55, 0.0, 0.55, 1.0)}
    for spec, values in expected.items():
        names = ("mean_toxicity", "valid_non_toxic_rate", "expected_max_toxicity", "toxicity_probability")
        assert [m[f"by_scorer/{spec}/{n}"] for n in names] == pytest.approx(list(values)), spec
    gens = [s for s in result.samples if s["kind"] == "generation"]
    assert gens[0]["scores"]["toxicity_by_scorer"] == pytest.approx({"a": 0.2, "b": 0.9, "mean": 0.55})
    # one scorer: no by_scorer/ measures
    one = evaluate(toxicity_cfg(scorer="a", limit=4), tmp_path / "a").results["metrics"]
    assert not any(k.startswith("by_scorer/") for k in one)
    # the scorer of the pairs among them: the warning
    assert toxicity_cfg(scorer="a,profanity-check", pairs_scorer="toxicity").scorer_warning
    assert toxicity_cfg(scorer="a,b", pairs_scorer="toxicity").scorer_warning is None
