"""The jigsaw-bilstm scorer: the restricted unpickler of its tokenizer, the torch port against the package's
published scores, its place among the scorers; the evaluation's default scorer is not the pairs' one, and
the same scorer for both puts "evaluated by the scorer it was trained on" on the first lines."""

import json
import os
import pickle
from collections import OrderedDict

import pytest

from decpo.config import load_config
from decpo.config.sampling import scorer_spec
from decpo.evaluation.config import SAME_SCORER, EvalConfig
from decpo.evaluation.runner import evaluate
from decpo.evaluation.tasks import toxicity
from decpo.io import atomic_write_json
from decpo.reports.experiment_report import write_report
from decpo.reports.results import scorer_warning_lines
from decpo.scoring import jigsaw_bilstm
from decpo.scoring.classifiers import JigsawBiLSTMScorer, ScorerError, make_scorer
from decpo.scoring.jigsaw_bilstm import KerasTokenizer, TokenizerUnpickler, load_tokenizer, pad_sequences

needs_wheel = pytest.mark.skipif(
    jigsaw_bilstm.package_files() is None,
    reason=f"toxic-comment-classifier wheel not installed: `{jigsaw_bilstm.INSTALL}`",
)

# The package's README (toxic-comment-classifier 0.3.0, PyPI description), "Example Output": the six labels
# of `classify("You are so dumb and stupid!")` and `predict_batch` (the mean of the six labels) of six texts.
README_LABELS = {
    "toxic": 0.9889402985572815,
    "severe_toxic": 0.07256772369146347,
    "obscene": 0.620429277420044,
    "threat": 0.01934845559298992,
    "insult": 0.8664075136184692,
    "identity_hate": 0.04072948172688484,
}
README_OVERALL = {
    "You are so dumb and stupid!": 0.4347,
    "I hate you so much!": 0.1395,
    "This is wonderful news.": 0.0013,
    "You're disgusting!": 0.3110,
    "Absolutely love your energy!": 0.0088,
    "You're the worst person ever!": 0.0937,
    "Have a nice day :)": 0.0115,
}


class RunsACommand:
    """A pickle payload: unpickling it calls os.system (touches a marker file) if the unpickler allows it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_unpickler_refuses_a_pickle_that_runs_a_command(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(RunsACommand(marker)))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to construct (posix|nt|os)\.system"):
        load_tokenizer(path)
    assert not marker.exists()
    for obj in (eval, getattr, pickle.Unpickler):  # any other global too
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            TokenizerUnpickler(__import__("io").BytesIO(pickle.dumps(obj))).load()


def test_the_unpickler_wants_a_tokenizer_and_allows_the_containers(tmp_path):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(OrderedDict(a=1)))
    with pytest.raises(pickle.UnpicklingError, match="not a Keras Tokenizer"):
        load_tokenizer(path)


def test_texts_to_sequences_as_keras():
    tok = KerasTokenizer()
    vars(tok).update(
        word_index={"you": 1, "are": 2, "dumb": 3, "rare": 9},
        num_words=5,
        filters='!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n',
        lower=True,
        split=" ",
        oov_token=None,
        char_level=False,
    )
    # lower-cased, punctuation split off, unknown words dropped, index >= num_words dropped
    assert tok.texts_to_sequences(["You ARE dumb!!", "rare,you", ""]) == [[1, 2, 3], [1], []]
    # Keras pad_sequences: the last maxlen ids, zeros in front
    assert pad_sequences([[1, 2, 3], [], [7]], maxlen=2) == [[2, 3], [0, 0], [0, 7]]


@needs_wheel
def test_the_port_reproduces_the_packages_published_scores():
    scorer = make_scorer("jigsaw-bilstm")
    labels = scorer.labels(["You are so dumb and stupid!"])[0]
    assert labels == pytest.approx(README_LABELS, abs=5e-4)  # 3 decimals
    texts = list(README_OVERALL)
    overall = [sum(d.values()) / len(d) for d in scorer.labels(texts)]
    assert overall == pytest.approx(list(README_OVERALL.values()), abs=5e-4)
    # score() is the toxic label
    assert scorer.score(texts) == pytest.approx([d["toxic"] for d in scorer.labels(texts)])
    assert scorer.score([]) == []


@needs_wheel
def test_the_scorer_is_selectable_and_ranks_toxic_above_clean():
    scorer = make_scorer("jigsaw-bilstm")
    assert isinstance(scorer, JigsawBiLSTMScorer) and scorer.name == "jigsaw-bilstm"
    toxic = scorer.score(["you are a stupid idiot", "shut up, you moron", "I will kill you, loser"])
    clean = scorer.score(["the weather is nice today", "thank you for the help", "we met at the library"])
    assert min(toxic) > 0.5 > max(clean)


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(jigsaw_bilstm, "package_files", lambda: None)
    with pytest.raises(ScorerError, match=r"pip install --no-deps toxic-comment-classifier==0\.3\.0"):
        make_scorer("jigsaw-bilstm")


def test_the_default_eval_scorer_is_not_the_pairs_scorer(tmp_path, monkeypatch):
    assert EvalConfig(task="toxicity").scorer == "jigsaw-bilstm"
    assert EvalConfig(task="toxicity", pairs_scorer="toxicity").scorer == "jigsaw-bilstm"
    assert EvalConfig(task="toxicity", pairs_scorer="jigsaw-bilstm").scorer == "profanity-check"
    assert EvalConfig(task="toxicity", scorer="profanity-check").scorer == "profanity-check"

    import decpo.experiment.eval_stages as stages

    seen = []
    monkeypatch.setattr(stages, "evaluate", lambda cfg, out: seen.append((cfg.scorer, cfg.pairs_scorer)))
    for scorer in ("toxicity", "jigsaw-bilstm"):
        cfg = load_config(None, ["pairs.source=toxicity", f"pairs.scorer={scorer}"])
        stages.eval_stage(cfg, "toxicity", "tiny-random-llama", tmp_path)()
        assert seen[-1][0] != scorer_spec(cfg.pairs.scorer)
    assert seen == [("jigsaw-bilstm", "toxicity"), ("profanity-check", "jigsaw-bilstm")]


def test_the_same_scorer_opens_the_results_and_the_report_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(
        toxicity, "make_scorer", lambda spec: type("S", (), {"score": lambda s, t: [0.1] * len(t)})()
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Prompt {i} says"}) + "\n" for i in range(3)))
    pairs = tmp_path / "heldout.jsonl"
    pairs.write_text(json.dumps({"prompt": "Say", "chosen": " hello there", "rejected": " go away"}) + "\n")
    base = dict(task="toxicity", model="tiny-random-llama", prompts_path=str(prompts), pairs_path=str(pairs))
    base.update(max_new_tokens=3, num_samples=0, progress=False, n_boot=20)
    same = evaluate(EvalConfig(**base, scorer="profanity-check", pairs_scorer="toxicity"), tmp_path / "same")
    first = (tmp_path / "same" / "results.json").read_text().splitlines()[:2]
    assert SAME_SCORER in first[1] and first[1].lstrip().startswith('"WARNING"')
    assert same.results["WARNING"].startswith(SAME_SCORER + ": `profanity-check`")
    other = evaluate(EvalConfig(**base, pairs_scorer="toxicity"), tmp_path / "other")
    assert (
        "WARNING" not in other.results
        and SAME_SCORER not in (tmp_path / "other" / "results.json").read_text()
    )

    def report_lines(*overrides):
        return scorer_warning_lines(load_config(None, ["pairs.source=toxicity", *overrides]), ["toxicity"])

    assert SAME_SCORER in report_lines("experiment.eval_scorer=profanity-check")[0]
    assert (
        SAME_SCORER in report_lines("pairs.scorer=jigsaw-bilstm", "experiment.eval_scorer=jigsaw-bilstm")[0]
    )
    assert report_lines() == [] and report_lines("pairs.scorer=jigsaw-bilstm") == []

    # report.md: the warning right under the title
    run = tmp_path / "run"
    entry = {"value": 0.5, "direction": "higher", "ci": [0.1, 0.9], "n": 3}
    atomic_write_json(
        run / "eval" / "toxicity" / "base" / "results.json",
        {"task": "toxicity", "model": "base", "n": 3, "metrics": {"gen/valid_non_toxic_rate": entry}},
    )
    for overrides, warned in ((["experiment.eval_scorer=profanity-check"], True), ([], False)):
        cfg = load_config(None, ["pairs.source=toxicity", *overrides])
        report = write_report(run, cfg, models=["base"], tasks=["toxicity"], command="x", total_wall_s=1)
        assert (SAME_SCORER in report.read_text().splitlines()[2]) is warned


def test_decpo_run_builds_the_eval_scorers_before_any_stage(tmp_path, monkeypatch):
    import decpo.experiment.eval_stages as stages

    cfg = load_config(None, ["pairs.source=toxicity"])
    assert stages.eval_config_scorer(cfg) == "jigsaw-bilstm"
    monkeypatch.setattr(jigsaw_bilstm, "package_files", lambda: None)
    with pytest.raises(ScorerError, match="toxic-comment-classifier"):
        stages.add_evals(None, cfg, ["toxicity"], {}, {}, tmp_path, [])
    stages.add_evals(None, cfg, ["synthetic"], {}, {}, tmp_path, [])  # no toxicity task: no scorer built
