"""The `decpo` command line. The only module that prints."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import decpo
from decpo.cli import eval as eval_command
from decpo.cli import pairs as pairs_command
from decpo.cli import probe as probe_command
from decpo.cli.flags import comma_list, positive_int
from decpo.config.catalogue import precheck
from decpo.config.errors import ConfigError
from decpo.errors import DecPOError
from decpo.experiment.executors.base import StagesFailed
from decpo.io import LOCK_FILE, disk_full_error, output_lock, remove_failed_start, removed_if_start_fails
from decpo.log import setup_logging
from decpo.names import layer_items

# the embedded demo's preset (configs/default.yaml in the repository links to it)
DEFAULT_PRESET = Path(__file__).parent.parent / "presets" / "default.yaml"


def _relaunch(args: argparse.Namespace, argv: list[str]) -> int:
    """``decpo train --num-processes N``: run the same command as N data-parallel processes."""
    from decpo.training.launch import launch  # lazy: pulls in the trainer (torch, trl)

    rest = []
    skip = False
    for a in argv:  # drop --num-processes and its value
        if skip:
            skip = False
        elif a == "--num-processes":
            skip = True
        elif not a.startswith("--num-processes="):
            rest.append(a)
    return launch(args.num_processes, rest)


def _train_lock(output_dir: Path) -> contextlib.AbstractContextManager:
    """The output folder's lock (one writer per folder) for this process of `decpo train`: none in a process
    that decpo's own launcher started (the launching process holds it) nor in any but the first process of
    another launcher's (accelerate launch, torchrun)."""
    from decpo.training.launch import NUM_PROCESSES_ENV  # lazy: pulls in torch

    if NUM_PROCESSES_ENV in os.environ or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return output_lock(output_dir / LOCK_FILE, f"output folder {output_dir}", "decpo train")


def _cmd_train(args: argparse.Namespace) -> int:
    values = precheck(config_path(args.config), args.overrides)  # a typo answers before torch is imported
    check_known_layers(values)  # train.reg_layers, as far as the model is counted without torch
    # lazy: the config's sections and training pull in torch, transformers and trl
    from decpo.config import load_config
    from decpo.training.launch import check_launched_world
    from decpo.training.run import train

    cfg = load_config(config_path(args.config), args.overrides)  # a bad config fails here, before any launch
    check_layers_exist(cfg)  # train.reg_layers of a model counted only now (a cached Hub model's config)
    output_dir = Path(args.output_dir or f"runs/{cfg.objective.name}")
    launched = "WORLD_SIZE" in os.environ  # a launched process: the launcher cleans up after a failed start
    existed = output_dir.exists()
    with (
        contextlib.nullcontext() if launched else removed_if_start_fails(output_dir),
        _train_lock(output_dir),  # before any write, and before the pairs step (a refusal comes at once)
    ):
        # the pairs step first (pairs.source): built once, here, before any launch; a launched process finds
        # them in the cache
        pairs_path = _built_pairs(cfg)
        if args.num_processes > 1 and not launched:
            rc = _relaunch(args, args.raw_argv)
        else:
            check_launched_world()
            options = {"allow_config_change": args.allow_config_change, "pairs_path": pairs_path}
            result = train(cfg, output_dir, **options)
            rc = None
    if rc is not None:  # the launched processes' exit code
        if rc != 0 and not existed:
            remove_failed_start(output_dir)
        return rc
    print(f"run directory: {result.output_dir}")
    print(f"final weights: {result.final_dir}")
    for key in ("eval/rewards/accuracies", "eval/rewards/margins", "eval/loss"):
        if key in result.metrics:
            print(f"{key}: {result.metrics[key]:.4f}")
    print(f"wall time: {result.wall_time_s:.0f} s")
    return 0


def _built_pairs(cfg) -> Path | None:
    """With a ``pairs`` section (``pairs.source``): the pairs step of `decpo train`, the file training reads
    (built from the model's own samples, or reused from the cache); None without one."""
    if not cfg.pairs.source or cfg.data.path:  # both set: training names the conflict, before any sampling
        return None
    from decpo.pairs.cache import ensure_pairs  # lazy: sampling pulls in torch and the scorers

    return ensure_pairs(cfg)


def config_path(path: str | None) -> Path:
    """``--config``, or the embedded demo's preset (``configs/default.yaml``, shipped in the package)."""
    return Path(path) if path else DEFAULT_PRESET


def _experiment_config(args: argparse.Namespace, layers: list[int] | None = None):
    """The config of `decpo run` or `decpo sweep` (``layers``: the sweep's ``--layers`` as written, checked with
    ``train.reg_layers`` against the model's blocks before torch is imported where its folder counts them)."""
    overrides = list(args.overrides)
    if getattr(args, "seeds", None):
        overrides.append(f"experiment.seeds=[{args.seeds}]")
    if getattr(args, "methods", None):
        from decpo.config.sections import check_method  # lazy: kept off `decpo --help`'s path

        for method in comma_list(args.methods):  # named as the flag, not as the override it becomes
            check_method(method, "--methods")
        overrides.append(f"experiment.methods=[{args.methods}]")
    values = precheck(config_path(args.config), overrides)  # a typo answers before torch is imported
    check_known_layers(values, layers)
    from decpo.config import load_config  # lazy: the config's sections pull in trl, transformers and torch

    return load_config(config_path(args.config), overrides)


def check_layers_exist(cfg, layers: list[int] | None = None, flag: str = "--layers") -> None:
    """A `ConfigError` before any training when ``layers`` (of ``flag``) or ``train.reg_layers`` name a block the
    model does not have, as far as its config says without loading it (`decpo.models.loading.block_count`)."""
    from decpo.models.loading import block_count  # lazy: transformers reads a cached Hub model's config

    m = cfg.model
    n = block_count(m.model_name_or_path, getattr(m, "gguf_file", None), getattr(m, "model_revision", None))
    _refuse_missing_blocks(n, cfg.train.reg_layers, layers, flag)


def check_known_layers(
    values: dict[str, Any], layers: list[int] | None = None, flag: str = "--layers"
) -> None:
    """`check_layers_exist` before torch is imported, on the values `precheck` returns, for a model whose blocks
    are counted without transformers (`decpo.models.specs.known_block_count`: the tiny model, a local folder, the
    converted default); the others wait for `check_layers_exist`."""
    from decpo.models.specs import known_block_count  # light: no torch, no transformers

    name, gguf_file = values.get("model.model_name_or_path"), values.get("model.gguf_file")
    reg_layers = values.get("train.reg_layers")
    if not isinstance(name, str) or not (gguf_file is None or isinstance(gguf_file, str)):
        return  # not saved (`NO_DEFAULT`): left to the loaded config
    n = known_block_count(name, gguf_file)
    _refuse_missing_blocks(n, reg_layers if isinstance(reg_layers, list) else None, layers, flag)


def _refuse_missing_blocks(
    n: int | None, reg_layers: list[int] | None, layers: list[int] | None, flag: str
) -> None:
    """A `ConfigError` naming ``flag`` or ``train.reg_layers`` for a block a model of ``n`` blocks lacks (None:
    not known, nothing checked)."""
    from decpo.models.errors import ModelError
    from decpo.models.specs import block_indices

    if n is None:
        return
    for name, values in ((flag, layers or []), ("train.reg_layers", reg_layers or [])):
        try:
            block_indices(n, values)
        except ModelError as e:
            raise ConfigError(f"{name}: {e}") from e


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _experiment_config(args)
    check_layers_exist(cfg)  # train.reg_layers
    from decpo.experiment.recipes import run_experiment  # lazy: pulls in the trainer (torch, trl)

    out = Path(args.output_dir)
    with removed_if_start_fails(out), output_lock(out / LOCK_FILE, f"experiment folder {out}", "decpo run"):
        report = run_experiment(cfg, out, argv=args.raw_argv, num_processes=args.num_processes)
    print(f"report: {report}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:  # the blocks as written, for the check before torch; a malformed list is refused below, as before
        written = layer_items(args.layers) if args.layers is not None else None
    except ValueError:
        written = None
    cfg = _experiment_config(args, written)
    # lazy: the config's sections, the experiment and the hooks pull in torch, transformers and trl (slow for
    # `decpo --help`)
    from decpo.config.sweeps import parse_values
    from decpo.experiment.recipes import sweep_layers, sweep_strength
    from decpo.models.hooks import parse_layers

    try:
        values = parse_values(args.reg_weights) if args.reg_weights is not None else None
        layers = parse_layers(args.layers) if args.layers is not None else None
    except ValueError as e:
        raise ConfigError(f"sweep: {e}") from e
    check_layers_exist(cfg, layers)
    out = Path(args.output_dir or ("runs/strength" if values is not None else "runs/layer-sweep"))
    with removed_if_start_fails(out), output_lock(out / LOCK_FILE, f"sweep folder {out}", "decpo sweep"):
        if values is not None:
            path = sweep_strength(cfg, out, values, argv=args.raw_argv, num_processes=args.num_processes)
        else:
            path = sweep_layers(cfg, out, layers, argv=args.raw_argv, num_processes=args.num_processes)
    print(f"sweep: {path}")
    return 0


def _cmd_config_keys(args: argparse.Namespace) -> int:
    from decpo.config import describe_keys, load_config  # lazy: the config's sections pull in trl and torch

    try:
        pattern = re.compile(args.pattern, re.IGNORECASE) if args.pattern else None
    except re.error as e:
        raise ConfigError(f"config-keys: {args.pattern!r} is not a regular expression ({e})") from e
    # wrapped to a terminal's width; one line per key into a pipe or a file
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    if args.config:
        precheck(args.config, ())
    text = describe_keys(load_config(args.config) if args.config else None, pattern=pattern, width=width)
    if not text:
        print(f"decpo: no config key's name or help matches {args.pattern!r}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _add_stage_processes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="train each stage as N data-parallel processes (as `decpo train --num-processes`); the command "
        "itself stays one process: do not start it under `accelerate launch` or torchrun (default: %(default)s)",
    )


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train DPO / DecPO / L1-Reg / SFT",
        description="Train from a YAML config; any key can be overridden: objective.name=dpo train.max_steps=50",
    )
    p.add_argument(
        "--config", default=None, help="YAML config (default: the embedded demo, configs/default.yaml)"
    )
    p.add_argument("--output-dir", default=None, help="run directory (default: runs/<objective>)")
    p.add_argument(
        "--num-processes",
        type=positive_int,
        default=1,
        help="data-parallel processes (relaunches under `accelerate launch` on GPUs, torchrun with gloo on CPU; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume the output dir's newest checkpoint even though the config differs from its config.yaml "
        "(by default refused, naming the changed keys; step counts and logging/eval/save frequency may "
        "always change)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides section.key=value")
    p.set_defaults(func=_cmd_train)


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the paper's experiment: train DPO and DecPO, probe, evaluate, report",
        description="Train each method from the same base, probe base vs trained, evaluate, write report.md. "
        "Re-running skips finished stages and resumes an interrupted training. experiment.executor=local, slurm "
        "or ray runs the stages as jobs, several at a time (README: Experiments on a cluster); a failed job "
        "exits with code 1, naming it and its log.",
    )
    p.add_argument("--config", default=None, help="YAML config (default: the embedded demo)")
    p.add_argument("--output-dir", default="runs/paper-demo", help="experiment folder (default: %(default)s)")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument("--methods", default=None, help="comma-separated methods, e.g. dpo,decpo,l1,simpo,sft")
    _add_stage_processes(p)
    p.add_argument("overrides", nargs="*", help="dotted overrides section.key=value")
    p.set_defaults(func=_cmd_run)


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="DPO and DecPO per regularized layer (--layers), or DecPO per regularizer strength (--reg-weights)",
        description="--layers: per seed (experiment.seeds, or --seeds) one DPO run and one DecPO run per layer "
        "(train.reg_layers=[layer]), probes and evaluations of every run, layers.md with, per layer, the "
        "manipulation checks (decorrelation at that layer) and the primary outcome, each DecPO(L) - DPO paired "
        "by seed (the paper's Fig. 7). --reg-weights: DecPO once per strength and seed (experiment.seeds), "
        "probes and evaluations of every run, strength.md with decorrelation at the regularized layer and the task measures against the strength. "
        "A strength is an absolute lambda (train.reg_weight), or a balance (train.reg_balance) when the "
        "config's train.reg_weight is auto; 0 always means no penalty (train.reg_weight=0). "
        "experiment.executor=local, slurm or ray runs the stages as jobs, as for `decpo run`.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--layers", help="blocks counted from 0, e.g. 0-29, 0-29:4 or 3,15,27; every seed of experiment.seeds"
    )
    which.add_argument("--reg-weights", help="comma-separated strengths, e.g. 0,0.1,0.3,1,3")
    p.add_argument("--config", default=None, help="YAML config (default: the embedded demo)")
    p.add_argument(
        "--output-dir", default=None, help="sweep folder (default: runs/layer-sweep or runs/strength)"
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated training seeds (experiment.seeds) of either sweep, e.g. 0,1,2",
    )
    _add_stage_processes(p)
    p.add_argument("overrides", nargs="*", help="dotted overrides section.key=value")
    p.set_defaults(func=_cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decpo", description="Preference alignment with feature decorrelation (DecPO)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"decpo {decpo.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    probe_command.add_parser(sub)
    _add_run(sub)
    _add_sweep(sub)
    eval_command.add_parser(sub)
    pairs_command.add_parser(sub)
    p = sub.add_parser(
        "config-keys",
        help="list every config key with its default (or a preset's value) and help",
        description="One entry per config key: its value, its default where that differs, and its help; "
        "wrapped to the terminal's width in a terminal, one line per key otherwise (for grep).",
    )
    p.add_argument(
        "pattern",
        nargs="?",
        default=None,
        help="only the keys whose name or help matches this regular expression, case-insensitively (e.g. "
        "beta, '^train\\.reg_', checkpoint; default: every key)",
    )
    p.add_argument("--config", default=None, help="YAML config whose values to show (default: the defaults)")
    p.set_defaults(func=_cmd_config_keys)
    return parser


def _message(error: Exception, args: argparse.Namespace) -> str:
    """The error's message; a full disk's ``[Errno 28] No space left on device`` (a write names no file) with the
    command's output and what to do."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename is None:
        where = getattr(args, "output_dir", None) or getattr(args, "output", None)
        if where and str(where) not in str(error):
            return str(disk_full_error(where))
    return str(error)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.raw_argv = list(argv) if argv is not None else sys.argv[1:]
    setup_logging(args.verbose)

    try:
        return args.func(args)
    except StagesFailed as e:  # the stages that could run have run; the report waits for the others
        print(f"decpo: {e}", file=sys.stderr)
        return 1
    except (DecPOError, OSError) as e:  # OSError: FileNotFoundError, a full disk, a permission
        if args.verbose:  # -v: where it was raised, for a bug report
            traceback.print_exc()
        print(f"decpo: error: {_message(e, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "decpo: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
