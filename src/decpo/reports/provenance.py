"""The section "How these numbers were made" that closes every report: the stages in run order (from
``stages.json``, `decpo.records.StageLog`), this invocation's wall time, the versions a training recorded in
its ``env.json``, and where each number's files are."""

from __future__ import annotations

import json
from pathlib import Path

from decpo.records import STAGES_FILE, StageLog


def provenance_lines(
    output_dir: Path, total_wall_s: float | None, stage_order: list[str] | None = None
) -> list[str]:
    """The provenance section of a report on ``output_dir`` (``total_wall_s`` None: no invocation time)."""
    lines = ["## How these numbers were made", ""]
    lines += _stage_table(output_dir / STAGES_FILE, stage_order)
    if total_wall_s is not None:
        lines.append(f"This invocation: {total_wall_s:.0f} s (stages done before were skipped).")
    lines += _version_lines(output_dir)
    lines.append(
        "Resolved config: `config.yaml`; each training run: `train/<method>-s<seed>/` (config.yaml, env.json, "
        "metrics.jsonl); each evaluation: `eval/<task>/<model>/` (results.json, samples.jsonl, run.json)."
    )
    return lines


def _stage_table(stages_path: Path, stage_order: list[str] | None) -> list[str]:
    """Every stage in the plan's order: status, wall time and config key; nothing without ``stages.json``."""
    if not stages_path.exists():
        return []
    log = StageLog(stages_path)
    lines = ["Stages in run order (the plan's order):", ""]
    lines += ["| # | stage | status | wall time (s) | config key |", "|---|---|---|---|---|"]
    lines += [
        f"| {i} | {name} | {s.get('status', '-')} | {s.get('wall_time_s', '-')} | `{s['key']}` |"
        for i, (name, s) in enumerate(log.in_run_order(stage_order), 1)
    ]
    return [*lines, ""]


def _version_lines(output_dir: Path) -> list[str]:
    """The library versions, git commit and device of the first training run's ``env.json``."""
    env_files = sorted((output_dir / "train").glob("*/env.json"))
    if not env_files:
        return []
    env = json.loads(env_files[0].read_text())
    return [
        "Versions: "
        + ", ".join(f"{k} {env[k]}" for k in ("decpo", "torch", "transformers", "trl", "peft") if k in env)
        + f"; git {env.get('git') or 'n/a'}; device {env.get('device')}."
    ]
