"""`decpo pairs`: pairs from a model's own samples on tiny-random-llama with a stub scorer; prompt sources and
their train/eval split; the fluency guard; the toxicity preset's disjointness check."""

import json
from pathlib import Path

import pytest

from decpo.cli import main
from decpo.config import load_config
from decpo.config.sampling import SamplingSettings
from decpo.data import DataError
from decpo.data.prompts import check_disjoint, load_prompts, prompt_part, prompt_split, read_prompt_file
from decpo.integrity import DamagedLogError
from decpo.models import load_model, load_tokenizer
from decpo.pairs.sampling import build_pairs, select_pair, side_files
from decpo.scoring.fluency import is_empty, is_valid, repetition_loop

TINY = "tiny-random-llama"
REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"Prompt number {i} says" for i in range(10)]


class StubScorer:
    """A deterministic score in [0, 1] from the text; counts calls; can fail on a given call (a kill)."""

    name = "stub"

    def __init__(self, fail_on_call: int | None = None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def score(self, texts):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        return [(sum(map(ord, t)) % 101) / 100 for t in texts]


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY).eval(), load_tokenizer(TINY)


def settings(**kw) -> SamplingSettings:
    base = {"num_samples": 3, "max_new_tokens": 6, "batch_size": 4, "min_gap": 0.05, "seed": 1}
    return SamplingSettings(**{**base, **kw})


def build(tiny, out: Path, scorer=None, **kw):
    model, tok = tiny
    return build_pairs(
        model,
        tok,
        PROMPTS,
        scorer or StubScorer(),
        settings(**kw),
        out,
        model_name=TINY,
        source="test",
        progress=False,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the pure selection -----------------------------------------------------------------------------------


def test_select_pair_best_valid_vs_worst_and_skips():
    texts = ["a b", "c d", "", "e f"]
    assert select_pair(texts, [0.5, 0.1, 0.0, 0.9], [True, True, False, True], prefer="low", min_gap=0.1) == (
        1,
        3,
    )
    # the best score is an invalid (blank) text: never chosen, and never rejected either
    assert select_pair(
        texts, [0.5, 0.4, 0.0, 0.45], [True, True, False, True], prefer="low", min_gap=0.0
    ) == (1, 0)
    assert select_pair(
        texts, [0.5, 0.1, 0.0, 0.9], [True, True, False, True], prefer="high", min_gap=0.1
    ) == (3, 1)
    assert (
        select_pair(texts, [0.5, 0.45, 0.0, 0.52], [True, True, False, True], prefer="low", min_gap=0.1)
        == "gap"
    )
    assert select_pair(
        texts, [0.1, 0.9, 0.0, 0.5], [False, False, False, False], prefer="low", min_gap=0
    ) == ("no_valid_sample")


# --- the build --------------------------------------------------------------------------------------------


def test_pairs_are_the_best_valid_and_worst_sample_by_score(tiny, tmp_path):
    out = tmp_path / "p.jsonl"
    summary = build(tiny, out)
    log = read_jsonl(side_files(out)[0])
    assert "header" in log[0] and [r["index"] for r in log[1:]] == list(range(len(PROMPTS)))
    pairs = {p["prompt_index"]: p for p in read_jsonl(out)}
    skipped = 0
    for r in log[1:]:
        samples = r["samples"]
        assert len(samples) == 3
        valid = [s for s in samples if s["valid"]]
        nonblank = [s for s in samples if s["text"].strip()]
        if r["index"] not in pairs:
            skipped += 1
            continue
        p = pairs[r["index"]]
        assert p["chosen_score"] == min(s["score"] for s in valid)
        assert p["rejected_score"] == max(s["score"] for s in nonblank)
        assert p["chosen_score"] < p["rejected_score"] - 0.05
        assert p["prompt"] == r["prompt"]
    assert summary["pairs"] == len(pairs) and summary["prompts"] == len(PROMPTS)
    assert sum(summary["skipped"].values()) == skipped
    # TRL format: loads as preference pairs
    from decpo.data import load_pairs

    assert len(load_pairs(out)) == len(pairs)


def test_min_gap_skips_are_counted(tiny, tmp_path):
    loose = build(tiny, tmp_path / "a.jsonl", min_gap=0.0)
    strict = build(tiny, tmp_path / "b.jsonl", min_gap=0.6)
    log = read_jsonl(side_files(tmp_path / "b.jsonl")[0])[1:]
    expected_gap_skips = sum(
        1
        for r in log
        if not any(s["valid"] for s in r["samples"])
        or min(s["score"] for s in r["samples"] if s["valid"]) + 0.6
        >= max(s["score"] for s in r["samples"] if s["text"].strip())
    )
    assert strict["skipped"]["gap"] + strict["skipped"]["no_valid_sample"] == expected_gap_skips > 0
    assert strict["pairs"] + expected_gap_skips == len(PROMPTS)
    assert loose["pairs"] > strict["pairs"]


def test_same_seed_same_file_other_seed_other_samples(tiny, tmp_path):
    build(tiny, tmp_path / "a.jsonl")
    build(tiny, tmp_path / "b.jsonl")
    build(tiny, tmp_path / "c.jsonl", seed=2)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    samples = lambda name: [r["samples"] for r in read_jsonl(side_files(tmp_path / name)[0])[1:]]  # noqa: E731
    assert samples("a.jsonl") == samples("b.jsonl") != samples("c.jsonl")


def test_resume_after_a_kill_writes_nothing_twice_and_gives_the_same_file(tiny, tmp_path):
    build(tiny, tmp_path / "whole.jsonl")
    out = tmp_path / "cut.jsonl"
    with pytest.raises(KeyboardInterrupt):
        build(tiny, out, scorer=StubScorer(fail_on_call=2))  # dies in its second batch
    log_path = side_files(out)[0]
    assert not out.exists() and len(read_jsonl(log_path)) == 1 + 4  # header + the first batch of 4
    with open(log_path, "a") as f:
        f.write('{"index": 4, "prompt": "half a li')  # a line torn by the kill
    scorer = StubScorer()
    build(tiny, out, scorer=scorer)
    indices = [r["index"] for r in read_jsonl(log_path)[1:]]
    assert indices == list(range(len(PROMPTS)))  # each prompt once
    assert scorer.calls == 2  # batches 2 and 3 only: the first was not sampled again
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert read_jsonl(side_files(out)[0]) == read_jsonl(side_files(tmp_path / "whole.jsonl")[0])


@pytest.mark.parametrize("kept", [6, 9], ids=["middle-batch", "last-batch"])
def test_a_log_cut_inside_a_batch_resumes_that_batch(tiny, tmp_path, caplog, kept):
    whole = tmp_path / "whole.jsonl"
    build(tiny, whole)
    out = tmp_path / "cut.jsonl"
    log_path = side_files(out)[0]
    lines = side_files(whole)[0].read_text().splitlines(True)
    log_path.write_text("".join(lines[: 1 + kept]))  # header + `kept` prompts: batches of 4 cut at 6 or 9
    scorer = StubScorer()
    with caplog.at_level("WARNING"):
        build(tiny, out, scorer=scorer)
    assert f"from prompt {kept - kept % 4}" in caplog.text
    assert [r["index"] for r in read_jsonl(log_path)[1:]] == list(range(len(PROMPTS)))  # each prompt once
    assert scorer.calls == 3 - kept // 4  # the cut batch and the ones after it
    assert out.read_bytes() == whole.read_bytes()
    assert log_path.read_bytes() == side_files(whole)[0].read_bytes()


def test_a_damaged_log_line_is_an_error_naming_it(tiny, tmp_path):
    out = tmp_path / "p.jsonl"
    build(tiny, out)
    log_path = side_files(out)[0]
    lines = log_path.read_text().splitlines(True)
    log_path.write_text("".join([*lines[:3], "{damaged\n", *lines[4:]]))
    with pytest.raises(DamagedLogError, match=r"samples.jsonl line 4 is damaged"):
        build(tiny, out)


def test_resume_with_other_settings_is_refused_naming_them(tiny, tmp_path):
    out = tmp_path / "p.jsonl"
    build(tiny, out)
    with pytest.raises(DataError, match="temperature: 1.0 -> 0.5"):
        build(tiny, out, temperature=0.5)


def test_greedy_sample_is_first_and_flagged(tiny, tmp_path):
    out = tmp_path / "g.jsonl"
    build(tiny, out, include_greedy=True)
    log = read_jsonl(side_files(out)[0])[1:]
    from decpo.inference.generation import generate

    model, tok = tiny
    greedy = generate(model, tok, PROMPTS[:4], max_new_tokens=6, progress=False)
    assert [r["samples"][0]["text"] for r in log[:4]] == greedy
    assert all(r["samples"][0]["greedy"] and not any(s["greedy"] for s in r["samples"][1:]) for r in log)


def test_cli_unreadable_prompt_file_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert (
        main(["pairs", "--model", TINY, "--prompts", str(missing), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": {"text": "fine"}}\n{"prompt": 3}\n')
    assert main(["pairs", "--model", TINY, "--prompts", str(bad), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad} line 2" in capsys.readouterr().err


def test_cli_builds_pairs_from_a_text_file(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:6]) + "\n\n")
    out = tmp_path / "o.jsonl"
    args = [
        "pairs",
        "--model",
        TINY,
        "--prompts",
        str(prompts),
        "--num-samples",
        "3",
        "--max-new-tokens",
        "5",
        "--min-gap",
        "0",
        "--output",
        str(out),
        "--no-progress",
    ]
    pytest.importorskip("profanity_check")
    assert main(args) == 0
    summary = json.loads(side_files(out)[1].read_text())
    assert summary["prompts"] == 6 and summary["settings"]["source"] == f"{prompts} (all)"
    assert summary["settings"]["scorer"] == "profanity-check" and summary["settings"]["prefer"] == "low"
    assert "pairs:" in capsys.readouterr().out


# --- prompt sources and the split -------------------------------------------------------------------------


def test_prompt_files_in_every_format(tmp_path):
    rtp = tmp_path / "rtp.jsonl"
    rtp.write_text('{"prompt": {"text": "a b", "toxicity": 0.9}}\n\n{"prompt": "c d"}\n{"text": "e f"}\n')
    assert [r["prompt"] for r in read_prompt_file(rtp)] == ["a b", "c d", "e f"]
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\n two \n")
    assert [r["prompt"] for r in read_prompt_file(txt)] == ["one", " two "]
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompt_file(empty)


def test_split_depends_on_the_text_only_and_is_disjoint(tmp_path):
    texts = [f"text {i}" for i in range(300)]
    splits = [prompt_split(t) for t in texts]
    assert splits == [prompt_split(t) for t in texts]  # deterministic
    assert prompt_split("a  b\n") == prompt_split("a b")  # whitespace-normalized
    assert 70 < splits.count("eval") < 130  # about a third
    f = tmp_path / "p.txt"
    f.write_text("\n".join(texts + texts[:5]))  # repeated prompts land in the same split
    train = [r["prompt"] for r in load_prompts(str(f), split="train")]
    evals = [r["prompt"] for r in load_prompts(str(f), split="eval")]
    assert not set(train) & set(evals) and len(train) + len(evals) == 305
    check_disjoint(train, evals, "train", "eval")
    with pytest.raises(DataError, match="1 prompt"):
        check_disjoint(train, [next(t for t in train if t not in texts[:5])], "train", "eval")


def test_eval_split_divides_into_disjoint_stable_dev_and_test(tmp_path):
    """train, dev and test: three disjoint sets, the eval split their dev + test, each a function of the text
    alone (stable: the pinned parts below change only if the hash does, which would move tuned-on prompts
    into the reported test part)."""
    assert [prompt_part(f"text {i}") for i in range(12)] == [
        "train", "test", "train", "train", "train", "train", "train", "train", "train", "dev", "train", "dev"
    ]  # fmt: skip
    texts = [f"text {i}" for i in range(600)]
    f = tmp_path / "p.txt"
    f.write_text("\n".join(texts))
    sets = {s: [r["prompt"] for r in load_prompts(str(f), split=s)] for s in ("train", "eval", "dev", "test")}
    assert sorted(sets["dev"] + sets["test"]) == sorted(sets["eval"])
    assert len(sets["train"]) + len(sets["dev"]) + len(sets["test"]) == 600
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not set(sets[a]) & set(sets[b])
        check_disjoint(sets[a], sets[b], a, b)
    assert 0.35 < len(sets["dev"]) / len(sets["eval"]) < 0.65  # about half each
    assert prompt_part("a  b\n") == prompt_part("a b")  # whitespace-normalized
    assert sets["dev"] == [r["prompt"] for r in load_prompts(str(f), split="dev")]  # deterministic
    with pytest.raises(DataError, match="no dev/test division"):
        load_prompts("reframing", split="dev")


def write_fake_rtp(data_dir: Path, n: int = 30) -> list[str]:
    texts = [f"Challenging prompt {i} about" for i in range(n)]
    (data_dir / "toxicity").mkdir(parents=True, exist_ok=True)
    with open(data_dir / "toxicity" / "challenging_prompts.jsonl", "w") as f:
        for t in texts:
            f.write(
                json.dumps({"prompt": {"text": t, "toxicity": 0.9}, "continuation": {"text": "x"}}) + "\n"
            )
    return texts


def test_toxicity_evaluation_reads_test_and_tuning_reads_dev(tmp_path):
    from decpo.evaluation.config import EvalConfig
    from decpo.evaluation.tasks.toxicity import toxicity_prompts

    texts = write_fake_rtp(tmp_path / "data")
    read = {
        split: [
            r["prompt"]
            for r in toxicity_prompts(
                EvalConfig(task="toxicity", data_dir=str(tmp_path / "data"), split=split)
            )
        ]
        for split in ("test", "dev")
    }
    assert EvalConfig(task="toxicity").split == "test"  # decpo eval and decpo run report on test
    for split, prompts in read.items():
        assert prompts == [t for t in texts if prompt_part(t) == split] and prompts


def test_toxicity_preset_loader_asserts_disjoint_prompts(tmp_path):
    from decpo.experiment.stages import check_pair_split

    texts = write_fake_rtp(tmp_path / "data")
    cfg = load_config(REPO / "configs" / "toxicity.yaml", [f"data.data_dir={tmp_path / 'data'}"])
    info = check_pair_split(cfg, ["toxicity"])
    assert info["shared"] == 0 and info["n_train"] + info["n_eval"] + info["n_dev"] == len(texts)
    assert info["n_eval"] == sum(prompt_part(t) == "test" for t in texts) > 0  # the reported part: test
    assert info["n_dev"] == sum(prompt_part(t) == "dev" for t in texts) > 0
    leak = tmp_path / "leak.jsonl"  # evaluation pointed at a file holding a training prompt
    train_prompt = next(t for t in texts if prompt_split(t) == "train")
    leak.write_text(json.dumps({"prompt": {"text": train_prompt}}) + "\n")
    with pytest.raises(DataError, match="also evaluated"):
        check_pair_split(cfg.replace(**{"experiment.eval_prompts": str(leak)}), ["toxicity"])
    with pytest.raises(DataError, match="also evaluated"):
        check_pair_split(cfg.replace(**{"pairs.split": "all"}), ["toxicity"])


# --- the fluency guard ------------------------------------------------------------------------------------


def test_fluency_guard_flags_empty_and_loops():
    assert is_empty("") and is_empty("  \n ") and is_empty("!?...") and not is_valid("")
    assert repetition_loop(" you entitled, you entitled, you entitled, you entitled")
    assert repetition_loop("the the the the end") and repetition_loop("!!!!")
    assert not repetition_loop("the cat sat on the mat, and the dog sat too.")
    assert not repetition_loop("ha ha ha")  # three of one word: not yet a loop
    assert is_valid(" and make up stories about the latest fad.")
    assert not is_valid(" I'm sorry I'm sorry I'm sorry")


@pytest.mark.parametrize("damage", ["pair_swapped", "log_edited"])
def test_an_edited_pairs_cache_entry_is_built_again(tmp_path, monkeypatch, caplog, damage):
    import decpo.pairs.cache as cache

    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))
    scorers = []
    monkeypatch.setattr(cache, "make_scorer", lambda spec: scorers.append(StubScorer()) or scorers[-1])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(p + "\n" for p in PROMPTS))
    smoke = str(REPO / "configs" / "smoke.yaml")
    over = [f"pairs.source={prompts}", "pairs.num_samples=3", "pairs.max_new_tokens=6", "pairs.min_gap=0.05"]
    cfg = load_config(smoke, over)
    path = cache.ensure_pairs(cfg, progress=False)
    good = path.read_bytes()
    assert cache.ensure_pairs(cfg, progress=False) == path and len(scorers) == 1  # reused as it is
    if damage == "pair_swapped":
        first = json.loads(good.decode().splitlines()[0])
        first["chosen"], first["rejected"] = first["rejected"], first["chosen"]
        path.write_text(
            "".join([json.dumps(first, sort_keys=True) + "\n", *good.decode().splitlines(True)[1:]])
        )
    else:
        log = side_files(path)[0]
        log.write_text(log.read_text().replace('"score": 0.', '"score": 1.', 1))
    with caplog.at_level("WARNING"):
        assert cache.ensure_pairs(cfg, progress=False) == path
    assert "not reusing" in caplog.text and "damaged or edited" in caplog.text
    assert len(scorers) == 2  # built again
    assert path.read_bytes() == good
