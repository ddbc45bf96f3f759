"""k-sparse probing in `decpo run` (tiny model, smoke preset, synthetic task): the probe stage's rows at the
regularized layer, the report's subsection with t-intervals over 2 seeds and DecPO - DPO paired by seed,
experiment.sparse_probing_layers=[] turning it off, and concepts or tasks it cannot probe skipped with why."""

from __future__ import annotations

import csv
import json

import numpy as np
from scipy import stats

from decpo.cli import main
from decpo.config import load_config
from decpo.data import load_task
from decpo.experiment.probe_texts import sparse_probing_plan
from decpo.experiment.stages import probe_key, probe_stage
from decpo.models.tiny import TINY_NAME
from decpo.probes.tokens import AnsweredText
from decpo.reports.sparse_probing import sparse_probing_lines

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
CONCEPTS = {"user_correct", "correct_letter_a"}  # the synthetic task's


def _rows(folder):
    with open(folder / "probes.csv", newline="") as f:
        return list(csv.DictReader(f))


def _sparse_info(folder):
    return json.loads((folder / "probe_sets.json").read_text())["heldout_prompts"]["sparse_probing"]


def _section(report: str) -> str:
    start = report.index("### Sparse probing")
    return report[start : report.index("\n## ", start)]


def test_two_seeds_sparse_probing_rows_and_the_report_subsection(tmp_path):
    out = tmp_path / "exp"
    args = [
        "run",
        "--config",
        SMOKE,
        "--output-dir",
        str(out),
        "experiment.seeds=[0,1]",
        "experiment.eval_limit=8",
        "experiment.eval_generate=false",
        "experiment.eval_tasks=[synthetic]",
        "experiment.probe_num_texts=32",  # 32 held-out prompts: at least 13 of each class in both concepts
    ]
    assert main(args) == 0
    rows = [r for r in _rows(out / "probes") if r["probe"].startswith("sparse_probe/")]
    models = {"base", "dpo-s0", "dpo-s1", "decpo-s0", "decpo-s1"}
    # the regularized layer alone (train.reg_layers=[-1]: block 1 of 2), held-out prompts only (no @answer_last)
    assert {r["model"] for r in rows} == models
    assert {(r["layer"], r["site"]) for r in rows} == {("1", "mlp.up_proj")}
    assert {r["probe"].rsplit("/", 1)[1] for r in rows} == CONCEPTS
    assert {r["n_texts"] for r in rows} == {"32"}
    assert _sparse_info(out / "probes") == {
        "layers": [-1],
        "concepts": ["user_correct", "correct_letter_a"],
        "skipped": {},
        "reason": "",
        "folds": 5,
    }

    section = _section((out / "report.md").read_text())
    value = {(r["model"], r["probe"]): float(r["value"]) for r in rows}
    for concept in CONCEPTS:
        for measure, name, digits in (
            ("acc_k1", "accuracy at k = 1", 3),
            ("neurons_needed", "neurons needed", 1),
        ):
            probe = f"sparse_probe/{measure}/{concept}"
            finite = [np.isfinite(v) for (m, p), v in value.items() if p == probe]
            if not any(finite):  # neurons needed where no model decodes the concept: no row
                assert f"| {concept} | {name} |" not in section
                continue
            if not all(finite):  # some models decode it: their cells are checked by test_claim1_table
                continue
            line = next(x for x in section.splitlines() if f"| {concept} | {name} |" in x)
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[:4] == ["1 (regularized)", concept, name, f"{value[('base', probe)]:.{digits}f}"]
            for cell, method in zip(cells[4:6], ("dpo", "decpo"), strict=True):
                x = np.array([value[(f"{method}-s{s}", probe)] for s in (0, 1)])
                assert cell.startswith(f"{x.mean():.{digits}f}")
                if x[0] != x[1]:  # the t-interval over the 2 seeds, clipped to the measure's range
                    low, high = stats.t.interval(0.95, 1, loc=x.mean(), scale=stats.sem(x))
                    low, high = (
                        (max(low, 0.0), min(high, 1.0)) if measure == "acc_k1" else (max(low, 1.0), high)
                    )
                    assert cell == f"{x.mean():.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
            d = np.array([value[(f"decpo-s{s}", probe)] - value[(f"dpo-s{s}", probe)] for s in (0, 1)])
            assert cells[6].startswith(f"{d.mean():+.{digits}f}")  # DecPO - DPO, paired by seed
    assert "95% t-interval over seeds" in section and "DecPO - DPO paired by seed" in section


def test_the_stage_runs_the_default_regularized_layer_and_an_empty_list_turns_it_off(tmp_path):
    cfg = load_config(SMOKE, ["experiment.probe_num_texts=32"])
    off = cfg.replace(**{"experiment.sparse_probing_layers": []})
    models = {"base": TINY_NAME}
    probe_stage(cfg, models, tmp_path / "on")()
    probe_stage(off, models, tmp_path / "off")()
    on_rows = [r for r in _rows(tmp_path / "on") if r["probe"].startswith("sparse_probe/")]
    assert {r["probe"].rsplit("/", 1)[1] for r in on_rows} == CONCEPTS and {r["layer"] for r in on_rows} == {
        "1"
    }
    assert not [r for r in _rows(tmp_path / "off") if r["probe"].startswith("sparse_probe/")]
    info = _sparse_info(tmp_path / "off")
    assert info["layers"] == [] and info["reason"].startswith("off")
    assert sparse_probing_lines(_rows(tmp_path / "off"), info, [1]) == []  # no subsection in the report
    # the stage key changes with the setting (a resumed run re-probes)
    assert probe_key(cfg, {"base": "k"}) != probe_key(off, {"base": "k"})
    explicit = cfg.replace(**{"experiment.sparse_probing_layers": [0, 1]})
    assert probe_key(explicit, {"base": "k"}) != probe_key(cfg, {"base": "k"})


def test_too_few_texts_per_class_skips_the_concepts_and_the_report_says_why(tmp_path):
    cfg = load_config(SMOKE, ["experiment.probe_num_texts=8"])  # 3 of the smaller class: fewer than 10
    probe_stage(cfg, {"base": TINY_NAME}, tmp_path)()  # no crash
    assert not [r for r in _rows(tmp_path) if r["probe"].startswith("sparse_probe/")]
    info = _sparse_info(tmp_path)
    assert set(info["skipped"]) == CONCEPTS and info["concepts"] == []
    lines = "\n".join(sparse_probing_lines(_rows(tmp_path), info, [1]))
    assert "no concept has enough texts of each class" in lines
    assert "concept 'user_correct': its smaller class has 3 example(s)" in lines


def test_a_task_without_labelled_concepts_is_skipped_with_the_reason():
    cfg = load_config(SMOKE)
    records = [{"prompt": f"text {i}", "chosen": " a", "rejected": " b"} for i in range(40)]
    plan = sparse_probing_plan(cfg, records)
    assert plan.labels == {} and plan.layers == [-1]
    assert plan.reason.startswith("skipped: the held-out records of the training data (synthetic) carry no")
    # one concept too unbalanced, the other kept
    records = [{"prompt": "p", "user_correct": i < 5, "chosen_letter": "AB"[i % 2]} for i in range(40)]
    plan = sparse_probing_plan(cfg, records)
    assert list(plan.labels) == ["correct_letter_a"] and list(plan.skipped) == ["user_correct"]
    assert plan.reason == ""


def test_sycophancy_probes_the_answer_concept_on_its_own_texts_and_the_prompt_concept_once(data_dir):
    cfg = load_config(
        SMOKE, ["data.task=sycophancy", f"data.data_dir={data_dir}", "experiment.concept_num_texts=40"]
    )
    records = load_task("sycophancy", "eval", data_dir=data_dir)[:40]  # the held-out prompts
    plan = sparse_probing_plan(cfg, records)
    assert list(plan.labels) == ["correct_letter_a"]  # the held-out prompts' concept
    ct = plan.concept_texts
    assert list(ct.labels) == ["sycophantic_answer"] and len(ct.texts) == 40  # concept_num_texts of them
    assert ct.labels["sycophantic_answer"] == [i % 2 for i in range(40)]
    # prompt and answer apart, read at the mean over the answer's tokens; the sycophantic one is the rejected
    assert all(isinstance(t, AnsweredText) for t in ct.texts) and ct.token == "completion_mean"
    for i, (t, r) in enumerate(zip(ct.texts, records, strict=True)):  # the held-out items first
        assert (t.prompt, t.answer, t.other) == (
            (r["prompt"], r["rejected"], r["chosen"]) if i % 2 else (r["prompt"], r["chosen"], r["rejected"])
        )
    assert plan.record()["concept_texts"] == {
        "source": ct.source,
        "n_texts": 40,
        "token": "completion_mean",
        "concepts": ["sycophantic_answer"],
    }
    # null: every CAA item (eval, test file, train)
    every = sparse_probing_plan(cfg.replace(**{"experiment.concept_num_texts": None}), records)
    assert len(every.concept_texts.texts) == sum(
        len(load_task("sycophancy", s, data_dir=data_dir)) for s in ("eval", "test", "train")
    )
    # a user's pairs file has no concept texts
    assert sparse_probing_plan(cfg.replace(**{"data.path": "pairs.jsonl"}), records).concept_texts is None


def test_the_toxicity_task_probes_its_continuations_and_the_report_names_them(tmp_path, data_dir):
    cfg = load_config(
        SMOKE,
        [
            "data.task=toxicity",
            f"data.data_dir={data_dir}",
            "experiment.probe_num_texts=32",
            "experiment.concept_num_texts=40",
        ],
    )
    probe_stage(cfg, {"base": TINY_NAME}, tmp_path)()
    rows = _rows(tmp_path)
    sparse = [r for r in rows if r["probe"].startswith("sparse_probe/")]
    assert {r["probe"].rsplit("/", 1)[1] for r in sparse} == {"toxic_continuation"}
    assert {(r["layer"], r["n_texts"]) for r in sparse} == {("1", "40")}
    # the concept texts' other measures stay in their own folder: probes.csv's are the held-out prompts'
    own = _rows(tmp_path / "concept_texts")
    assert {r["probe"] for r in own} > {r["probe"] for r in sparse}
    key = ("probe", "site", "layer", "value")
    theirs = {tuple(r[k] for k in key) for r in own if not r["probe"].startswith("sparse_probe/")}
    assert theirs and not theirs & {tuple(r[k] for k in key) for r in rows}
    info = _sparse_info(tmp_path)
    assert info["concepts"] == [] and info["concept_texts"]["concepts"] == ["toxic_continuation"]
    assert info["reason"] == ""
    lines = "\n".join(sparse_probing_lines(rows, info, [1]))
    assert (
        "from the mean over the answer's tokens of 40 prompt + answer texts made for the task's own concepts "
        "(toxicity: challenging prompts" in lines
    )
    assert "| toxic_continuation | accuracy at k = 1 |" in lines


def test_the_probe_key_holds_the_concept_texts_so_an_older_run_probes_again(monkeypatch):
    from decpo.experiment import stages

    cfg = load_config(SMOKE, ["data.task=sycophancy"])
    key = probe_key(cfg, {"base": "k"})
    monkeypatch.setattr(stages, "concept_task", lambda cfg: None)  # as a probe stage before they existed
    assert probe_key(cfg, {"base": "k"}) != key
    monkeypatch.undo()
    # as a probe stage that read them at their last token, or read another number of them
    monkeypatch.setattr(stages, "CONCEPT_TOKEN", "last")
    assert probe_key(cfg, {"base": "k"}) != key
    monkeypatch.undo()
    assert probe_key(cfg.replace(**{"experiment.concept_num_texts": 128}), {"base": "k"}) != key
    monkeypatch.setattr(stages, "concept_task", lambda cfg: None)
    reading = cfg.replace(**{"data.task": "reading"})  # a task without concept texts keeps its key
    assert probe_key(reading, {"base": "k"}) == (monkeypatch.undo() or probe_key(reading, {"base": "k"}))
