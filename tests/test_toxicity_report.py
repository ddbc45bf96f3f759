"""report.md's "Toxicity by scorer" table from fabricated toxicity results (no training): every scorer's and
their mean's greedy and sampled measures, the collapse guard and perplexity, per model, over seeds with the
t-interval scipy gives; and its measure names as a real evaluation (tiny model, stub scorers) writes them."""

from __future__ import annotations

import json
import shutil

import numpy as np
from scipy import stats

from decpo.config import load_config
from decpo.evaluation import config as eval_config
from decpo.evaluation.config import EvalConfig
from decpo.evaluation.context import EvalContext
from decpo.evaluation.runner import evaluate
from decpo.evaluation.tasks import toxicity
from decpo.io import atomic_write_json
from decpo.reports.experiment_report import write_report
from decpo.reports.stats import share_measure

SCORERS = ("jigsaw-bilstm", "profanity-check", "mean")
SCORER_MEASURES = ("mean_toxicity", "expected_max_toxicity", "toxicity_probability")
COLLAPSE = (
    "gen/distinct_1",
    "gen/distinct_2",
    "gen/duplicate_rate",
    "sampled/distinct_1",
    "sampled/distinct_2",
    "sampled/duplicate_share",
    "gen/perplexity",
)
STOCK = "i am sorry, i cannot help with that."
# per model, the value of every measure (base: one run; dpo and decpo: seeds 0 and 1)
VALUES = {"base": {None: 0.40}, "dpo": {0: 0.20, 1: 0.26}, "decpo": {0: 0.10, 1: 0.13}}


def _value(metric: str, base: float) -> float:
    """A distinct value per measure, so a cell shows which measure it was read from."""
    offsets = {
        f"by_scorer/{s}/{m}": 0.01 * i
        for i, (s, m) in enumerate((s, m) for s in SCORERS for m in SCORER_MEASURES)
    }
    offsets.update({m: 0.2 + 0.01 * i for i, m in enumerate(COLLAPSE)})
    return base + offsets.get(metric, 0.0)


def _results(base: float, repeated: int, by_scorer: bool = True) -> dict:
    names = [f"by_scorer/{s}/{m}" for s in SCORERS for m in SCORER_MEASURES] if by_scorer else []
    names += ["gen/mean_toxicity", "sampled/expected_max_toxicity", "sampled/toxicity_probability", *COLLAPSE]
    metrics = {}
    for name in sorted(names):  # results.json sorts its measures: the table orders the scorers by config
        v = _value(name, base)
        metrics[name] = {"value": v, "ci": [v - 0.05, v + 0.05], "direction": "lower", "n": 40}
    metrics["gen/duplicate_rate"]["most_frequent"] = [[STOCK, repeated], ["other text", 1]]
    scorer = "jigsaw-bilstm,profanity-check" if by_scorer else "jigsaw-bilstm"
    return {"task": "toxicity", "n": 40, "metrics": metrics, "config": {"scorer": scorer, "num_samples": 4}}


def _folder(tmp_path, by_scorer: bool = True):
    out = tmp_path / "exp"
    models = []
    for method, seeds in VALUES.items():
        for seed, base in seeds.items():
            label = method if seed is None else f"{method}-s{seed}"
            models.append(label)
            repeated = 5 if method == "dpo" else 1
            atomic_write_json(
                out / "eval" / "toxicity" / label / "results.json", _results(base, repeated, by_scorer)
            )
    return out, models


def _report(out, models, tasks=("toxicity",)) -> str:
    cfg = load_config(None, ["experiment.seeds=[0,1]", "experiment.methods=[dpo,decpo]"])
    return write_report(out, cfg, models=models, tasks=list(tasks), command="x", total_wall_s=1).read_text()


def _table(report: str) -> list[list[str]]:
    """The cells of the "Toxicity by scorer" table, header first."""
    lines = report.splitlines()
    start = lines.index("### Toxicity by scorer")
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return [rows[0], *rows[2:]]  # without the |---| line


def _head(scorers) -> list[str]:
    """The table's header: each scorer's three measures, then the collapse guard and perplexity."""
    labels = ("mean toxicity", "exp. max. toxicity (K)", "toxicity prob. (K)")
    collapse = ("distinct-1", "distinct-2", "cross-prompt duplicates")
    return [
        "method",
        *(f"{s}: {label}" for s in scorers for label in labels),
        *collapse,
        *(f"{c} (K)" for c in collapse),
        "perplexity (base)",
    ]


def _t(values, share: bool = False):
    """The t-interval over seeds as the report prints it (a share's clipped to [0, 1])."""
    x = np.asarray(values)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    if share:
        low, high = max(low, 0.0), min(high, 1.0)
    return f"{x.mean():.3f} [{low:.3f}, {high:.3f}]"


def test_every_scorer_and_their_mean_side_by_side_with_the_collapse_guard(tmp_path):
    out, models = _folder(tmp_path)
    report = _report(out, models)
    head, *rows = _table(report)
    assert head == _head(SCORERS)
    assert [r[0] for r in rows] == ["base", "dpo", "decpo"]
    metrics = [f"by_scorer/{s}/{m}" for s in SCORERS for m in SCORER_MEASURES] + list(COLLAPSE)
    for row, (method, seeds) in zip(rows, VALUES.items(), strict=True):
        for cell, metric in zip(row[1:], metrics, strict=True):
            values = [_value(metric, b) for b in seeds.values()]
            if method == "base":  # one run: the evaluation's own interval over prompts
                v = values[0]
                assert cell == f"{v:.3f} [{v - 0.05:.3f}, {v + 0.05:.3f}]", (method, metric)
            else:  # over the 2 seeds
                assert cell == _t(values, share_measure(metric)), (method, metric)
    assert "K = 4 sampled continuations" in report
    assert "`mean` (each continuation's mean score over the scorers)" in report
    # the stock sentence dpo repeats for 5 prompts is listed; decpo and base repeat nothing
    assert f"- dpo-s0: `{STOCK}` x5" in report and "- decpo" not in report and "- base:" not in report


def test_one_scorer_is_named_by_the_config_and_no_toxicity_task_has_no_table(tmp_path):
    out, models = _folder(tmp_path, by_scorer=False)
    head, *rows = _table(_report(out, models))
    assert head[1:4] == [
        "jigsaw-bilstm: mean toxicity",
        "jigsaw-bilstm: exp. max. toxicity (K)",
        "jigsaw-bilstm: toxicity prob. (K)",
    ]
    assert rows[0][1] == f"{0.40:.3f} [{0.35:.3f}, {0.45:.3f}]"  # base, gen/mean_toxicity
    assert "mean: " not in " ".join(head)
    # no toxicity task evaluated: no table
    shutil.move(out / "eval" / "toxicity", out / "eval" / "other")
    assert "Toxicity by scorer" not in _report(out, models, tasks=("reading",))


class ConstantScorer:
    def __init__(self, value):
        self.value = value

    def score(self, texts):
        return [self.value] * len(texts)


def test_the_table_reads_the_measures_a_toxicity_evaluation_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(toxicity, "make_scorer", lambda spec: ConstantScorer({"a": 0.2, "b": 0.9}[spec]))
    monkeypatch.setattr(eval_config, "check_scorer_name", lambda spec: None)  # the made-up names "a", "b"
    monkeypatch.setattr(
        EvalContext, "generate", lambda self, prompts, desc: [f"words {i} here" for i in range(len(prompts))]
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Prompt {i} says"}) + "\n" for i in range(4)))
    pairs = tmp_path / "heldout.jsonl"
    pairs.write_text(json.dumps({"prompt": "Say", "chosen": " hello there", "rejected": " go away"}) + "\n")
    out = tmp_path / "exp"
    cfg = EvalConfig(
        task="toxicity",
        model="tiny-random-llama",
        prompts_path=str(prompts),
        pairs_path=str(pairs),
        scorer="b,a",
        max_new_tokens=3,
        num_samples=2,
        progress=False,
        n_boot=20,
    )
    evaluate(cfg, out / "eval" / "toxicity" / "base")
    head, base = _table(_report(out, ["base"]))
    # the scorers in the order of the evaluation's setting ("b,a"), not results.json's sorted one
    assert head == _head(("b", "a", "mean"))
    assert [c.split(" ")[0] for c in base[1:4]] == ["0.900", "0.900", "1.000"]
    assert [c.split(" ")[0] for c in base[7:10]] == ["0.550", "0.550", "1.000"]
    assert "n/a" not in base
