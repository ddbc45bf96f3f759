"""Data parallelism through accelerate: 2 CPU processes (gloo) equal 1 process with the same global batch,
for DPO, DecPO and the probes during training, also sharded by FSDP2 and by DeepSpeed ZeRO-2/3 (and resumed);
the logged penalty under a short last batch; the probes on an FSDP2-sharded model on every process; `decpo run
--num-processes 2` with FSDP2, end to end, equal to 1 process."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import decpo.training.run as run
from decpo.cli import main
from decpo.training.launch import NUM_PROCESSES_ENV

from conftest import REPO
from distributed_jobs import sequential_trainer_args

pytestmark = pytest.mark.slow  # two extra Python processes: about a minute

SMOKE = str(REPO / "configs" / "smoke.yaml")
# Plain DPO (the decorrelation penalty is a property of each process's own rows), no LoRA dropout (random).
# 8 pairs = one global batch: every step sees all of them whatever the order, since accelerate's sharded
# sampler draws another permutation than the single-process one. max_length 160 (the smoke preset's): every
# one of these 8 synthetic pairs kept (prompts of 108-122 tokens).
COMMON = [
    "train.max_length=160",
    "objective.name=dpo",
    "model.lora_dropout=0.0",
    "train.max_steps=3",
    "train.eval_strategy=no",
    "train.save_steps=100",
    "data.max_train_samples=8",
    "train.learning_rate=1e-2",
]
# DecPO with its penalty and the probes every step; 4 pairs per forward. The penalty is a function of each
# forward's rows: one process with micro-batches of 4 (accumulation 2) and two with 4 each see the same rows
# when the pairs come in file order (`sequential_trainer_args`).
DECPO = [
    *[a for a in COMMON if not a.startswith("objective.name")],
    "objective.name=decpo",
    "train.reg_weight=0.1",
    "probe.every_n_steps=1",
    "train.per_device_train_batch_size=4",
]
CLOCK = {"time", "probe/seconds", "eval/runtime", "eval/samples_per_second", "eval/steps_per_second"}


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir):
    return [r["train/loss"] for r in rows(run_dir) if "train/loss" in r]


def child_env():
    # the children import this worktree's decpo (src) and the jobs module (tests)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        "TQDM_DISABLE": "1",
    }


def train_one(run_dir, *args) -> int:
    """`decpo train` on the smoke preset in this process."""
    return main(["train", "--config", SMOKE, "--output-dir", str(run_dir), *args])


def train_two(job: str, run_dir, *args) -> subprocess.CompletedProcess:
    """`distributed_jobs.py <job>` (`decpo train` on the smoke preset) in 2 processes started by torchrun."""
    script = [
        str(REPO / "tests" / "distributed_jobs.py"),
        job,
        "--config",
        SMOKE,
        "--output-dir",
        str(run_dir),
    ]
    env = {**child_env(), NUM_PROCESSES_ENV: "2"}  # `decpo train` then fails unless it is one of 2 processes
    done = subprocess.run([*TORCHRUN, *script, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_fsdp_launched(run_dir, *args) -> subprocess.CompletedProcess:
    """`distributed_jobs.py fsdp` (`decpo train` on the smoke preset) in 2 CPU processes started the way the README
    says, by `accelerate launch` with ``configs/accelerate/fsdp.yaml`` (its GPU settings made CPU ones)."""
    config = REPO / "configs" / "accelerate" / "fsdp.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    launch += ["--num_processes", "2", "--mixed_precision", "no"]
    script = [str(REPO / "tests" / "distributed_jobs.py"), "fsdp", "--config", SMOKE]
    env = {**child_env(), NUM_PROCESSES_ENV: "2"}
    done = subprocess.run(
        [*launch, *script, "--output-dir", str(run_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_deepspeed(stage: int, run_dir, *args) -> subprocess.CompletedProcess:
    """`distributed_jobs.py deepspeed` (`decpo train` on the smoke preset) in 2 CPU processes started by
    `accelerate launch` with ``configs/accelerate/deepspeed_zero<stage>.yaml``, its GPU settings made CPU ones."""
    config = REPO / "configs" / "accelerate" / f"deepspeed_zero{stage}.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    launch += ["--num_processes", "2", "--mixed_precision", "no"]
    script = [str(REPO / "tests" / "distributed_jobs.py"), "deepspeed", "--config", SMOKE]
    env = {**child_env(), NUM_PROCESSES_ENV: "2"}  # `decpo train` then fails unless it is one of 2 processes
    cmd = [*launch, *script, "--output-dir", str(run_dir), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_final_weights(one, two, filename: str, atol: float = 1e-5) -> dict:
    """The two runs' ``final/<filename>`` hold the same tensors (within ``atol``); returns the second's."""
    a, b = (load_file(str(d / "final" / filename)) for d in (one, two))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol), (key, (a[key] - b[key]).abs().max().item())
    return b


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    # `decpo train --num-processes 2` (DDP), DPO with the shared-prompt layout. TRL's own layout under DDP is
    # test_decpo_and_probes_in_two_processes_equal_one's (DecPO: DPO and its penalty); this test ran both layouts
    # until 2026-12-06, when CI's time ran over
    extra = ["train.share_prompt=true"]
    one = tmp_path / "one"
    args = [*COMMON, *extra]
    assert (
        main(
            [
                "train",
                "--config",
                SMOKE,
                "--output-dir",
                str(one),
                "train.per_device_train_batch_size=8",
                *args,
            ]
        )
        == 0
    )

    two = tmp_path / "two"
    env = child_env()
    cmd = [
        sys.executable,
        "-m",
        "decpo",
        "train",
        "--num-processes",
        "2",
        "--config",
        SMOKE,
        "--output-dir",
        str(two),
        "train.per_device_train_batch_size=4",
        *args,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    assert_same_final_weights(one, two, "adapter_model.safetensors")


def test_decpo_and_probes_in_two_processes_equal_one(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setattr(run, "trainer_args", sequential_trainer_args)
    assert train_one(one, "train.gradient_accumulation_steps=2", *DECPO) == 0
    train_two("train", two, *DECPO)

    a, b = rows(one), rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    # the probes at every step (step 0 in a log of its own), the penalty's terms, eval at the end
    assert [r["probe/step"] for r in a if "probe/step" in r] == [0, 1, 2, 3]
    assert all("train/loss/decorr" in r and "train/decorr/value" in r for r in a if "train/loss" in r)
    assert any("eval/loss/decorr" in r for r in a)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - CLOCK:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["step"], key)


@pytest.mark.parametrize(
    "extra, weights_file",
    [(["model.use_peft=false"], "model.safetensors"), ([], "adapter_model.safetensors")],
    ids=["full", "lora"],
)
def test_fsdp2_in_two_processes_equals_one(tmp_path, caplog, extra, weights_file):
    # DecPOTrainer sharded by FSDP2 (train.fsdp) on 2 CPU processes, accelerate patched to allow it on CPU
    # (`distributed_jobs.fsdp_on_cpu`: on its own it runs DDP there); plain DPO, full fine-tuning (the reference
    # a frozen copy: `decpo.training.build.reference_model`) or LoRA, 8 pairs = one global batch
    from decpo.models import TINY_NAME, load_model

    args = [*[a for a in COMMON if not a.startswith("train.save_steps")], "train.save_steps=2", *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_one(one, "train.per_device_train_batch_size=8", *args) == 0
    fsdp = "train.fsdp_config={version: 2, transformer_layer_cls_to_wrap: [LlamaDecoderLayer]}"
    done = train_two("fsdp", two, "train.per_device_train_batch_size=4", *args, "train.fsdp=full_shard", fsdp)
    assert done.stderr.count("fsdp-on-cpu: distributed type FSDP") == 2
    assert "fsdp-on-cpu: state dict of FSDP" in done.stderr  # of the FSDP2-sharded model (FSDP<its class>)

    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    weights = assert_same_final_weights(one, two, weights_file)
    up = "model.layers.0.mlp.up_proj.weight"
    loaded = dict(load_model(str(two / "final")).named_parameters())[up]  # an adapter: merged into its base
    if "model.use_peft=false" in extra:
        assert torch.equal(loaded, weights[up])
    else:
        assert not torch.equal(loaded, dict(load_model(TINY_NAME).named_parameters())[up])

    # as if stopped after step 2: FSDP's checkpoint (FULL_STATE_DICT: the weights and the optimizer state whole,
    # keyed by name) resumes in one plain process to the same step 3 and final weights
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {p.name for p in (two / "checkpoint-2").iterdir()}
    shutil.rmtree(two / "checkpoint-3")
    shutil.rmtree(two / "final")
    caplog.set_level(logging.INFO)
    assert train_one(two, "train.per_device_train_batch_size=8", *args, "--allow-config-change") == 0
    assert f"resuming from {two / 'checkpoint-2'}" in caplog.text
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert_same_final_weights(one, two, weights_file)


# TRL's token-pooled means: the sum over the batch's tokens over their count. Two processes pool the global
# batch's tokens; one process with 2 accumulated micro-batches averages the micro-batches' means, which
# differ whenever the micro-batches hold different token counts (by 1e-2 relative after 3 full fine-tuning
# steps). Sharding has no part in it: 2 DDP processes differ from 1 as much, and ZeRO-3 equals DDP (rel 1e-5).
TOKEN_POOLED = {"logits/chosen", "logits/rejected", "mean_token_accuracy", "entropy"}
# the activation the penalty's hook received under DeepSpeed (`distributed_jobs.report_penalty_hook`)
HOOK = (
    r"penalty-hook: (\w+) \| weight (\d+) of (\d+) held by this process \| activation \((\d+), \d+, (\d+)\)"
)


@pytest.mark.parametrize(
    "stage, extra, weights_file, atol",
    # full fine-tuning: Adam's first steps move each weight by about lr whatever the size of its gradient,
    # so reduction-order differences of 1e-7 in a tiny gradient reach 2e-5 in the weights
    [(2, [], "adapter_model.safetensors", 1e-5), (3, ["model.use_peft=false"], "model.safetensors", 1e-4)],
    ids=["zero2-lora", "zero3-full"],
)
def test_deepspeed_in_two_processes_equals_one_and_resumes(
    tmp_path, monkeypatch, stage, extra, weights_file, atol
):
    # `accelerate launch --config_file configs/accelerate/deepspeed_zero<stage>.yaml`, as the README says, on
    # 2 CPU processes (DeepSpeed's CPU accelerator, gloo), against one process accumulating 2 micro-batches;
    # a checkpoint at step 2 to resume from
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))  # this test's reference log-prob cache
    args = [*[a for a in DECPO if not a.startswith("train.save_steps")], "train.save_steps=2", *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setattr(run, "trainer_args", sequential_trainer_args)
    assert train_one(one, "train.gradient_accumulation_steps=2", *args) == 0
    done = train_deepspeed(stage, two, *args)

    # DeepSpeed ran: its checkpoint, one file of optimizer state per process (ZeRO-3: of weights too)
    shards = {p.name for p in (two / "checkpoint-2" / "global_step2").iterdir()}
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= shards
    assert (stage == 3) == ("zero_pp_rank_1_mp_rank_00_model_states.pt" in shards)
    # the penalty's hook, on each process, sat in the model DeepSpeed trains and received the whole activation
    # (2 x 4 rows, the intermediate width 32) of an up_proj whose weight ZeRO-3 holds none of on each process
    held = "0" if stage == 3 else "512"
    found = re.findall(HOOK, done.stderr)  # (the two processes' lines may interleave)
    assert found == [("DeepSpeedEngine", held, "512", "8", "32")] * 2, done.stderr[-3000:]
    # the reference log-probs of the model DeepSpeed holds, cached under a key (a cache hit when resuming)
    cached = re.search(r"reference log-probs for train: cached \((.+)\)", done.stderr)
    assert cached and "not cached" not in done.stderr, done.stderr[-3000:]

    a, b = rows(one), rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [r["probe/step"] for r in b if "probe/step" in r] == [0, 1, 2, 3]
    assert all("train/loss/decorr" in r for r in b if "train/loss" in r)
    pooled = {f"{mode}/{key}" for mode in ("train", "eval") for key in TOKEN_POOLED}
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - CLOCK - pooled:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["step"], key)
    weights = assert_same_final_weights(one, two, weights_file, atol=atol)
    from decpo.models import TINY_NAME, load_model

    up = "model.layers.0.mlp.up_proj.weight"
    loaded = dict(load_model(str(two / "final")).named_parameters())[up]  # an adapter: merged into its base
    if stage == 3:  # the weights ZeRO-3 gathered at the save
        assert torch.equal(loaded, weights[up])
    else:
        assert not torch.equal(loaded, dict(load_model(TINY_NAME).named_parameters())[up])

    # the checkpoint of step 2 resumes under DeepSpeed: as if stopped after it, the same command again
    shutil.rmtree(two / "checkpoint-3")
    shutil.rmtree(two / "final")
    done = train_deepspeed(stage, two, *args)
    assert f"resuming from {two / 'checkpoint-2'}" in done.stderr
    assert f"reference log-probs for train: cache hit ({cached[1]})" in done.stderr
    again = rows(two)
    # the resumed run measures the probes at its start (`ProbeCallback`): a row of its own at step 2, of the
    # weights DeepSpeed loaded back, equal to the ones measured at step 2 before
    start = [i for i, r in enumerate(again) if r["step"] == 2 and "train/loss" not in r]
    assert len(start) == 1, [r["step"] for r in again]
    restored, before = again.pop(start[0]), next(r for r in b if r["step"] == 2)
    for key in restored.keys() - CLOCK - {"step"}:
        assert restored[key] == pytest.approx(before[key], rel=1e-5, abs=1e-7), key
    assert [r["step"] for r in again] == [r["step"] for r in b]
    for x, y in zip(b, again, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - CLOCK:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), (x["step"], key)
    assert_same_final_weights(one, two, weights_file, atol=atol)


def test_fsdp_launched_from_its_config_trains_decpo_with_probes_and_resumes_anywhere(tmp_path, monkeypatch):
    # `accelerate launch --config_file configs/accelerate/fsdp.yaml` (FSDP2, FULL_STATE_DICT), as the README says,
    # on 2 CPU processes: DecPO with its penalty and the probes every step, LoRA, against one process accumulating
    # 2 micro-batches; the checkpoint of step 2 resumes under FSDP and in one plain process
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache"))
    args = [*[a for a in DECPO if not a.startswith("train.save_steps")], "train.save_steps=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setattr(run, "trainer_args", sequential_trainer_args)
    assert train_one(one, "train.gradient_accumulation_steps=2", *args) == 0
    done = train_fsdp_launched(two, *args)
    assert done.stderr.count("fsdp-on-cpu: distributed type FSDP") == 2
    # the penalty's hook, on each process, in the model FSDP2 shards, received the whole activation
    assert re.findall(HOOK, done.stderr) == [("FSDPPeftModelForCausalLM", "512", "512", "8", "32")] * 2
    # the reference log-probs of the model FSDP holds, cached under a key (a cache hit when resuming)
    cached = re.search(r"reference log-probs for train: cached \((.+)\)", done.stderr)
    assert cached and "not cached" not in done.stderr, done.stderr[-3000:]
    # FSDP's checkpoint: the weights and the optimizer state whole, keyed by name
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {p.name for p in (two / "checkpoint-2").iterdir()}

    a, b = rows(one), rows(two)
    assert [r["probe/step"] for r in b if "probe/step" in r] == [0, 1, 2, 3]
    assert all("train/loss/decorr" in r for r in b if "train/loss" in r)
    pooled = {f"{mode}/{key}" for mode in ("train", "eval") for key in TOKEN_POOLED}
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - CLOCK - pooled:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["step"], key)
    assert_same_final_weights(one, two, "adapter_model.safetensors")

    # as if stopped after step 2: the same launch again, then one process (its micro-batches accumulated)
    for where in ("fsdp", "one process"):
        shutil.rmtree(two / "checkpoint-3")
        shutil.rmtree(two / "final")
        if where == "fsdp":
            again = train_fsdp_launched(two, *args).stderr
            assert f"reference log-probs for train: cache hit ({cached[1]})" in again
        else:
            again = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "tests" / "distributed_jobs.py"),
                    "train",
                    "--config",
                    SMOKE,
                    "--output-dir",
                    str(two),
                    *args,
                    "train.gradient_accumulation_steps=2",
                    "--allow-config-change",
                ],
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert again.returncode == 0, again.stderr[-3000:]
            again = again.stderr
        assert f"resuming from {two / 'checkpoint-2'}" in again, (where, again[-3000:])
        resumed = [r for r in rows(two) if r["step"] > 2 and "train/loss" in r]
        before = [r for r in b if r["step"] > 2 and "train/loss" in r]
        assert [r["step"] for r in resumed] == [r["step"] for r in before] == [3]
        for x, y in zip(before, resumed, strict=True):
            for key in x.keys() - CLOCK - pooled:
                assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), (where, key)
        assert_same_final_weights(one, two, "adapter_model.safetensors")


def test_short_last_batch_penalty_and_fsdp_probes_on_every_process(tmp_path):
    out = tmp_path / "sharded.json"
    cmd = [*TORCHRUN, str(REPO / "tests" / "distributed_jobs.py"), "sharded", str(out)]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    for rank in result["ranks"]:
        # the logged terms add up to the Trainer's loss (the mean over processes), also at the short last
        # batch (step 2: 1 pair left over), where `gather_for_metrics` would keep rank 0's terms alone
        logs = rank["logs"]
        assert [h["step"] for h in logs] == [1, 2]
        for h in logs:
            assert h["loss/pref"] + h["loss/decorr"] == pytest.approx(h["loss"], abs=1e-5), h["step"]
        # the probe pass on the FSDP2-sharded model, run by every process, equals the unsharded model's
        sharded, unsharded = rank["sharded"], rank["unsharded"]
        assert sharded.keys() == unsharded.keys()
        for key in sharded.keys() - {"probe/seconds"}:
            assert sharded[key] == pytest.approx(unsharded[key], rel=1e-5, abs=1e-7), key
        # and through the callback's hooks (start, then step 1), on the main process and the other one
        start, step1 = rank["callback"]
        assert start["probe/step"] == 0 and step1["probe/step"] == 1 and "loss" in step1
        for key in unsharded.keys() - {"probe/seconds", "probe/step"}:
            assert start[key] == pytest.approx(unsharded[key], rel=1e-5, abs=1e-7), key
            assert step1[key] == pytest.approx(unsharded[key], rel=1e-5, abs=1e-7), key


def test_run_trains_each_stage_in_two_processes_and_evaluates_in_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "exp"
    args = ["run", "--num-processes", "2", "--config", SMOKE, "--output-dir", str(out), "--seeds", "0"]
    args += ["--methods", "dpo,decpo", "experiment.eval_limit=8", "experiment.probe_num_texts=8"]
    args += ["experiment.eval_tasks=[synthetic]"]
    assert main(args) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert {name: s["status"] for name, s in stages.items()} == dict.fromkeys(
        [
            "train/dpo-s0",
            "train/decpo-s0",
            "probes",
            *(f"eval/synthetic/{m}" for m in ("base", "dpo-s0", "decpo-s0")),
        ],
        "done",
    )
    for label in ("dpo-s0", "decpo-s0"):
        assert json.loads((out / "train" / label / "env.json").read_text())["world_size"] == 2
    assert (out / "report.md").is_file()


# tests/launched/sitecustomize.py: FSDP on CPU and pairs in file order in the processes `decpo run` launches
LAUNCHED = REPO / "tests" / "launched"


def numbers(tree, path=()):
    """The numeric leaves of a JSON tree, by path (bools and strings left out)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in numbers(sub, (*path, key)).items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, (*path, i)).items()}
    return {path: tree} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


def report_numbers(out) -> dict:
    """What the report's tables are made from: each evaluation's metrics, each probes.csv's values and the
    trainings' logged metrics (clock and token-pooled keys left out, see TOKEN_POOLED), by where they come from."""
    found: dict = {}
    for results in sorted(out.glob("eval/*/*/results.json")):
        where = str(results.relative_to(out))
        found |= {(where, *k): v for k, v in numbers(json.loads(results.read_text())["metrics"]).items()}
    for csv in sorted(out.glob("probes/**/probes.csv")):
        where = str(csv.relative_to(out))
        for line in csv.read_text().splitlines()[1:]:
            model, layer, site, probe, value, *_ = line.split(",")
            found[(where, model, layer, site, probe)] = float(value)
    pooled = {f"{mode}/{key}" for mode in ("train", "eval") for key in TOKEN_POOLED}
    for metrics in sorted(out.glob("train/*/metrics.jsonl")):
        where = str(metrics.relative_to(out))
        for i, row in enumerate(rows(metrics.parent)):
            found |= {(where, i, key): row[key] for key in row.keys() - CLOCK - pooled}
    return found


def test_run_with_fsdp_in_two_processes_per_stage_equals_one(tmp_path, monkeypatch, capfd):
    # `decpo run --num-processes 2` with FSDP2 (train.fsdp, the FSDP test's fsdp_config): each training stage in
    # 2 CPU processes that decpo launches, patched through tests/launched/sitecustomize.py; against the same
    # run in one process, micro-batches of 4 accumulated twice (the DecPO penalty is a function of each
    # forward's rows: 1 process x 2 micro-batches and 2 processes x 1 see the same rows in file order)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # one intra-op thread in this process and in the launched ones (which get OMP_NUM_THREADS=1): with 2 threads
    # here and 1 there, the same sums split differently (DPO's weights differed by 1.5e-8, rewards near 0 by
    # rel 1e-4, on 2 cores); equal thread counts leave the comparison to what FSDP itself changes
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fsdp_run_equals_one(tmp_path, monkeypatch, capfd)
    finally:
        torch.set_num_threads(threads)


def _fsdp_run_equals_one(tmp_path, monkeypatch, capfd):
    common = ["--config", SMOKE, "--seeds", "0", "--methods", "dpo,decpo", "train.save_steps=100"]
    common += ["experiment.eval_limit=8", "experiment.probe_num_texts=8", "experiment.eval_tasks=[synthetic]"]
    common += ["train.per_device_train_batch_size=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setattr(run, "trainer_args", sequential_trainer_args)
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache-one"))  # each run its own reference log-probs
    assert main(["run", "--output-dir", str(one), *common, "train.gradient_accumulation_steps=2"]) == 0

    capfd.readouterr()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([child_env()["PYTHONPATH"], str(LAUNCHED)]))
    monkeypatch.setenv("DECPO_TEST_FSDP_ON_CPU", "1")
    monkeypatch.setenv("DECPO_CACHE", str(tmp_path / "cache-two"))
    fsdp = "train.fsdp_config={version: 2, transformer_layer_cls_to_wrap: [LlamaDecoderLayer]}"
    launched = ["run", "--num-processes", "2", "--output-dir", str(two)]
    assert main([*launched, *common, "train.fsdp=full_shard", fsdp]) == 0
    err = capfd.readouterr().err
    # FSDP on each of the 2 processes of both stages, the final weights gathered from the sharded model
    assert err.count("fsdp-on-cpu: distributed type FSDP") == 4, err[-3000:]
    assert err.count("fsdp-on-cpu: state dict of FSDP") >= 2, err[-3000:]
    for label in ("dpo-s0", "decpo-s0"):
        for out, size in ((one, 1), (two, 2)):
            assert json.loads((out / "train" / label / "env.json").read_text())["world_size"] == size
        first, second = (one / "train" / label, two / "train" / label)
        assert_same_final_weights(first, second, "adapter_model.safetensors")
        w1, w2 = (load_file(str(d / "final" / "adapter_model.safetensors")) for d in (first, second))
        print(f"{label}: largest weight difference {max((w1[k] - w2[k]).abs().max().item() for k in w1):.1e}")

    a, b = report_numbers(one), report_numbers(two)
    assert a.keys() == b.keys()
    assert any(k[0].startswith("eval/") for k in a) and any("probes.csv" in k[0] for k in a)
    assert any(k[-1] == "train/loss/decorr" for k in a)
    for part in ("eval", "probes", "train"):  # the figures the README gives
        keys = [k for k in a if k[0].startswith(part)]
        rel = max((abs(b[k] - a[k]) / abs(a[k]), k) for k in keys if a[k] != 0)
        at_zero = max((abs(b[k]) for k in keys if a[k] == 0), default=0.0)
        print(
            f"{part}: {len(keys)} numbers, largest relative difference {rel[0]:.1e} ({rel[1]}), {at_zero:.1e} at 0"
        )
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-5), key  # measured: 6.4e-7 at most (README)
