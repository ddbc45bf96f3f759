"""The run configuration: `RunConfig` (its sections), the YAML loader with dotted command-line overrides, and
the catalogue of valid keys, all checked up front.

The sections are TRL's own dataclasses, field for field (``model``, ``train``: `decpo.config.trl_sections`),
and decpo's (``objective``, ``data``, ``pairs``, ``probe``: `decpo.config.sections`; ``experiment``:
`decpo.config.experiment_settings`). Every field carries its help text in ``metadata["help"]``, and every
value is checked against the field's type annotation, None-defaults included (`decpo.config.typecheck`); an
enum-typed field (``optim``, ``lr_scheduler_type``, ...) takes one of the enum's values. Unknown keys fail at
once and suggest the closest valid key (or name the new key of a renamed one, also when the closest name is
an old one: `objective.betta` -> `train.beta`), so a typo never silently falls back to a default.

Why not `HfArgumentParser`/`TrlParser`: they take flat ``--key value`` flags (no sections) and their
``parse_dict``/``parse_yaml_file`` pass values to the constructor unchecked; why not OmegaConf structured
configs: they reject `TrainingArguments`' ``dict | str`` and enum unions. The checks here read the same
dataclass annotations both use.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decpo.config.catalogue import (
    HEAVY_SECTIONS,
    NO_DEFAULT,
    TRL_KEYS_FILE,
    KeySpec,
    default_to_json,
    flatten,
    groups_of,
    leaves,
    read_flat,
    trl_keys_json,
    unknown_key,
)
from decpo.config.errors import ConfigError
from decpo.config.experiment_settings import ExperimentSettings
from decpo.config.sections import DataConfig, ObjectiveConfig, PairsSettings, ProbeSettings
from decpo.config.train_checks import check_decorrelation_rows
from decpo.config.trl_sections import ModelSection, TrainSection
from decpo.config.typecheck import check_value
from decpo.io import atomic_write_text


@dataclass
class RunConfig:
    """A run's whole configuration, one attribute per section (its dotted keys: `FIELDS`)."""

    model: ModelSection = field(default_factory=ModelSection)  # type: ignore[valid-type]
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainSection = field(default_factory=TrainSection)  # type: ignore[valid-type]
    pairs: PairsSettings = field(default_factory=PairsSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)

    def __post_init__(self) -> None:
        check_curve_steps(self)  # the checks that read more than one section
        check_answer_format(self)
        check_decorrelation_rows(self.objective.regularizer, self.train)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> RunConfig:
        """A validated copy with dotted keys changed: ``cfg.replace(**{"objective.name": "dpo"})``."""
        tree = self.to_dict()
        for key, value in dotted.items():
            if key not in FIELDS:
                raise _unknown_key(key, "replace()")
            _set(tree, key, _check_type(key, value))
        return _build(tree)


def check_answer_format(cfg: RunConfig) -> None:
    """``data.synthetic_answer=number`` is the reading task's alone: on ``synthetic`` the number is the fact
    line's only one, so copying it would solve every item; a `ConfigError` naming both fields. Tasks that do
    not use the answer format (data files, CAA, ...) ignore it, so the default preset trains them as it is."""
    if cfg.data.synthetic_answer == "number" and cfg.data.task == "synthetic":
        raise ConfigError(
            "data.synthetic_answer=number needs data.task=reading (got data.task='synthetic'): on the synthetic "
            "task the answer's number is the prompt's only one (data.synthetic_answer=option or letter there)"
        )


def check_curve_steps(cfg: RunConfig) -> None:
    """``experiment.curve_steps`` against the ``train`` section: each step's checkpoint must exist when the
    training ends (``train/<label>/checkpoint-<N>``), so a `ConfigError` naming the fields unless

    - ``train.max_steps`` > 0 and every step is below it (the final model is the curve's last point);
    - ``train.save_strategy`` is ``steps`` and every step is a multiple of a whole ``train.save_steps``;
    - ``train.save_total_limit`` keeps them: the trainer saves at every multiple of ``save_steps`` and at the
      last step, then deletes all but the newest ``save_total_limit`` (transformers' ``rotate_checkpoints``;
      null or <= 0 deletes none), so it must cover every save from the first curve step on.
    """
    steps, train = cfg.experiment.curve_steps, cfg.train
    if not steps:
        return
    where = f"experiment.curve_steps={steps}"
    if train.max_steps <= 0 or steps[-1] >= train.max_steps:
        raise ConfigError(
            f"{where}: each step must be below train.max_steps ({train.max_steps}, must be > 0)"
        )
    every = train.save_steps
    if str(getattr(train.save_strategy, "value", train.save_strategy)) != "steps" or every < 1 or every % 1:
        raise ConfigError(
            f"{where} evaluates checkpoints saved every train.save_steps steps: needs train.save_strategy=steps "
            f"and a whole train.save_steps >= 1 (got {train.save_strategy!r}, {every!r})"
        )
    off = [s for s in steps if s % int(every)]
    if off:
        raise ConfigError(
            f"{where}: {off} not a multiple of train.save_steps ({int(every)}): no checkpoint there"
        )
    saves = {*range(int(every), train.max_steps + 1, int(every)), train.max_steps}
    kept = len([s for s in saves if s >= steps[0]])
    limit = train.save_total_limit
    if limit is not None and 0 < limit < kept:
        raise ConfigError(
            f"{where}: train.save_total_limit={limit} deletes checkpoint-{steps[0]} before it is evaluated "
            f"({kept} checkpoints are saved from step {steps[0]} on): set train.save_total_limit >= {kept} "
            "(or null: keep every checkpoint)"
        )


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree["experiment"]["slurm"]["partition"] = value`` for ``key="experiment.slurm.partition"``."""
    *path, leaf = key.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}


def _build(tree: dict[str, dict[str, Any]]) -> RunConfig:
    try:
        return RunConfig(**{name: cls(**tree.get(name, {})) for name, cls in SECTIONS.items()})  # type: ignore[misc]
    except TypeError as e:  # a value of the wrong shape
        raise ConfigError(f"bad config value: {e}") from e


# dotted names of the sections inside sections ("experiment.slurm", "experiment.resources.train", ...)
_LEAVES = {key: fh for section, cls in SECTIONS.items() for key, fh in leaves(f"{section}.", cls).items()}  # type: ignore[arg-type]
FIELDS: dict[str, dataclasses.Field] = {key: f for key, (f, _) in _LEAVES.items()}
HINTS: dict[str, Any] = {key: hint for key, (_, hint) in _LEAVES.items()}
VALID_KEYS = tuple(FIELDS)
GROUPS = groups_of(FIELDS)


def _check_type(key: str, value: Any) -> Any:
    return check_value(key, value, HINTS[key], FIELDS[key])


def _unknown_key(key: str, source: str) -> ConfigError:
    return unknown_key(key, source, VALID_KEYS)


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    return flatten(tree, GROUPS)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Build a RunConfig from a YAML file (safe loader) and dotted overrides, in that order."""
    flat = read_flat(path, overrides, dict.fromkeys(FIELDS, _check_type))
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        _set(sections, key, value)
    return _build(sections)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_keys(
    cfg: RunConfig | None = None, *, pattern: re.Pattern[str] | None = None, width: int | None = None
) -> str:
    """One entry per valid key with its value in ``cfg`` (default: the defaults) and help text; a value that
    differs from the default says so, and a decpo default that differs from TRL's names TRL's.

    ``pattern``: only the keys whose name or help it matches (`re.search`); none matching gives ``""``.
    ``width``: each entry wrapped to that many columns, its continuation lines indented; None: one line each.
    """
    values = _flatten(cfg.to_dict()) if cfg is not None else {}
    defaults = _flatten(RunConfig().to_dict())
    lines = []
    for key, f in FIELDS.items():
        help_text = _one_line(f.metadata.get("help", ""))
        if pattern is not None and not (pattern.search(key) or pattern.search(help_text)):
            continue
        default = defaults[key]
        value = values.get(key, default)
        notes = []
        if value != default:
            notes.append(f"default {default!r}")
        elif "decpo_default" in f.metadata:
            upstream = f.metadata["upstream_default"]
            notes.append(
                f"decpo's default; {f.metadata['declared_in']}'s is {upstream!r}: {f.metadata['decpo_default']}"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        line = f"{key} = {value!r}{note}  # {help_text}"
        if width is not None:
            line = textwrap.fill(line, width=max(width, 40), subsequent_indent="    ", break_on_hyphens=False)
        lines.append(line)
    return "\n".join(lines)


def live_specs() -> dict[str, KeySpec]:
    """Every key's `KeySpec` from the live sections (TRL's included)."""
    defaults = _flatten({name: dataclasses.asdict(SECTIONS[name]()) for name in HEAVY_SECTIONS})
    return {
        k: KeySpec(
            HINTS[k],
            tuple(FIELDS[k].metadata.get("choices") or ()),
            default_to_json(defaults.get(k, NO_DEFAULT)),
        )
        for k in FIELDS
    }


if __name__ == "__main__":  # rewrite decpo/config/trl_keys.json from the installed TRL
    TRL_KEYS_FILE.write_text(trl_keys_json(live_specs()))
    print(f"wrote {TRL_KEYS_FILE}")
