"""Jobs that tests/test_distributed.py runs in one process or, under `accelerate launch` / torchrun, in two.

python tests/distributed_jobs.py train <decpo train arguments...>   `decpo train`, pairs in file order
python tests/distributed_jobs.py sharded <out.json>                  FSDP2 probes, a short-last-batch run
python tests/distributed_jobs.py fsdp <decpo train arguments...>    `decpo train` under FSDP2 on CPU processes, pairs
    in file order, saying what the penalty's hook is attached to
python tests/distributed_jobs.py deepspeed <decpo train arguments...>  `decpo train`, pairs in file order, saying
    what the penalty's hook is attached to (run under `accelerate launch` with a DeepSpeed config)

The processes `decpo run --num-processes N` launches get `launched_fsdp_on_cpu` through tests/launched/sitecustomize.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import decpo.training.run as run

_trainer_args = run.trainer_args


def sequential_trainer_args(cfg, output_dir):
    """`decpo.training.run.trainer_args` with the pairs in file order instead of shuffled.

    The decorrelation penalty is a function of the rows of each forward, so one process (micro-batches of
    an accumulation) and two (one shard each) give the same numbers only when they hold the same pairs:
    in file order, micro-batch ``k`` of one process is the batch of process ``k``.
    """
    args = _trainer_args(cfg, output_dir)
    args.train_sampling_strategy = "sequential"
    return args


def train(argv: list[str]) -> int:
    from decpo.cli import main

    run.trainer_args = sequential_trainer_args
    return main(["train", *argv])


def sharded(out: str) -> int:
    """Two processes (torchrun, gloo): (1) a DecPO run whose last batch is short: the logged terms still
    add up to the logged loss; (2) the probe pass on an FSDP2-sharded model, on every process, equals the
    unsharded model's values, and so do the values the callback logs when the Trainer calls it."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from decpo.models import TINY_NAME, load_model, load_tokenizer
    from decpo.probes.callback import ProbeCallback

    from conftest import PAIRS, make_trainer

    result: dict = {}
    # 9 pairs, 4 per process: the second step is the end of the data with 1 pair left over (accelerate
    # pads the batches); `gather_for_metrics` would then keep 1 of the 2 processes' scalars
    pairs = [*PAIRS, {"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 11"}]
    trainer = make_trainer(
        Path(out).parent / "short",
        pairs=pairs,
        max_steps=2,
        reg_weight=0.1,
        train_sampling_strategy="sequential",
        ddp_timeout=60,  # the process group's: a process left waiting fails in a minute
    )
    trainer.train()
    result["logs"] = [h for h in trainer.state.log_history if "loss" in h and "loss/pref" in h]

    texts = ["I think 23 + 45 = 68. Is that right?", "yes", "no no no", "Answer: (A) 68 (B) 70", "0 1 2 3"]
    tokenizer = load_tokenizer(TINY_NAME)
    probe = ProbeCallback(texts, tokenizer, every_n_steps=0, probes=["decorrelation", "hoyer"], batch_size=2)
    result["unsharded"] = probe.measure(load_model(TINY_NAME, seed=0), 0)
    model = load_model(TINY_NAME, seed=0)
    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)
    result["sharded"] = probe.measure(model, 0)
    result["callback"] = drive_callback(probe, model, is_main=dist.get_rank() == 0)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"world_size": dist.get_world_size(), "ranks": everyone}))
    torch.distributed.barrier()
    return 0


def drive_callback(probe, model, is_main: bool) -> list[dict]:
    """The Trainer's calls of the callback (start, step 1) on this process; returns the values it logs.

    A pass on the main process only would leave it waiting in the sharded forward for the other process.
    """
    from transformers import TrainerControl, TrainerState

    class Trainer:  # the part of a Trainer the callback uses
        def __init__(self):
            self.logged: list[dict] = []

        def log(self, logs):
            self.logged.append(logs)

    trainer = Trainer()
    probe.bind(trainer)
    probe.every_n_steps = 1
    state = TrainerState(is_world_process_zero=is_main, is_local_process_zero=is_main)
    probe.on_train_begin(None, state, TrainerControl(), model=model)
    probe.on_step_begin(None, state, TrainerControl())  # the start values: a log of their own
    state.global_step = 1
    control = TrainerControl()
    probe.on_step_end(None, state, control, model=model)
    assert control.should_log
    logs: dict = {"loss": 0.0}
    probe.on_log(None, state, control, logs=logs)
    return [*trainer.logged, logs]


def fsdp_on_cpu() -> None:
    """Let accelerate (1.15) run FSDP2 on CPU processes, which it does not on its own; two patches:

    1. ``AcceleratorState`` makes a run on CPU processes ``MULTI_CPU`` (DDP) even when the Trainer hands it an
       FSDP plugin (``train.fsdp``): FSDP is chosen for GPU kinds only. Here it becomes ``FSDP``, in
       ``PartialState`` too (which every later ``AcceleratorState()`` copies).
    2. ``Accelerator.get_state_dict`` then takes its FSDP1 branch (``is_fsdp2`` is False), whose tensors point
       at freed storage once the model is FSDP2-sharded on CPU ("Attempted to access the data pointer on an
       invalid python storage" in safetensors). Here: torch's full state dict, copied, on every process.
    Each patch prints a line, so that the test knows FSDP ran.
    """
    import accelerate
    import accelerate.state as state
    from accelerate.utils import DistributedType

    init = state.AcceleratorState.__init__

    def fsdp_init(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin
            # every later `AcceleratorState()` copies PartialState's type over its own: FSDP there too, or the
            # resume's loads take FSDP1 branches (`is_fsdp2` False) and rank 0 waits alone in a broadcast
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            print("fsdp-on-cpu: distributed type FSDP", file=sys.stderr)

    def full_state_dict(self, model, unwrap=True):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        print(f"fsdp-on-cpu: state dict of {type(model).__name__}", file=sys.stderr)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return {k: v.detach().clone() for k, v in full.items()}

    state.AcceleratorState.__init__ = fsdp_init
    accelerate.Accelerator.get_state_dict = full_state_dict


def launched_fsdp_on_cpu() -> None:
    """In a training process that `decpo run --num-processes N` launched (tests/launched/sitecustomize.py):
    FSDP2 on CPU (`fsdp_on_cpu`) and the pairs in file order (`sequential_trainer_args`), as the ``fsdp`` job."""
    fsdp_on_cpu()
    run.trainer_args = sequential_trainer_args


def without_shared_memory_allreduce() -> None:
    """DeepSpeed's CPU accelerator builds a shared-memory allreduce op at its first start on a machine (ninja and
    the C++ compiler: about 2 minutes on 2 cores, then cached in ~/.cache/torch_extensions); here gloo's allreduce
    serves instead, so that a fresh machine (CI) runs the DeepSpeed tests in seconds. The op is a CPU speed-up of
    DeepSpeed's own communication; what these tests check (decpo's trainer under ZeRO) does not go through it."""
    import deepspeed.ops

    # read by deepspeed.comm.torch.build_shm_op at the first init of its communication
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def report_penalty_hook() -> None:
    """Print, at the penalty's first capture in a training step on this process, what its hook sees: the model
    the Trainer hands ``compute_loss`` (under DeepSpeed a ``DeepSpeedEngine``), the hooked module's weight
    (ZeRO-3 partitions it: an empty ``.data`` on every process, the full size in ``ds_numel``) and the shape of
    the activation the hook receives (the whole ``(2B, T, D)`` output, not a shard)."""
    import decpo.training.trainer as trainer
    from decpo.models.hooks import site_module

    capture = trainer.capture_activations
    reported: list[bool] = []

    def reporting(model, layers, site, **kwargs):
        if reported or "transform" not in kwargs:  # the check at the trainer's init has no transform
            return capture(model, layers, site, **kwargs)
        reported.append(True)
        module, _ = site_module(model, layers[0], site)
        weight = getattr(module, "base_layer", module).weight  # a LoRA layer: its base weight
        # before the forward, which gathers a ZeRO-3 weight while the module runs
        held, size = weight.numel(), getattr(weight, "ds_numel", weight.numel())
        transform = kwargs["transform"]

        def seen(t):
            print(
                f"penalty-hook: {type(model).__name__} | weight {held} of {size} held by this process "
                f"| activation {tuple(t.shape)}",
                file=sys.stderr,
            )
            return transform(t)

        return capture(model, layers, site, **{**kwargs, "transform": seen})

    trainer.capture_activations = reporting


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    job, *rest = sys.argv[1:]
    if job == "fsdp":
        fsdp_on_cpu()
    if job in ("deepspeed", "fsdp"):
        report_penalty_hook()
    if job == "deepspeed":
        without_shared_memory_allreduce()
    raise SystemExit(train(rest) if job in ("train", "fsdp", "deepspeed") else sharded(*rest))
