"""The catalogue of config keys, and the reading of a YAML file plus dotted overrides into checked values,
without importing trl, transformers or torch: a typo in a config answers in well under 2 seconds.

decpo's own sections (``objective``, ``data``, ``pairs``, ``probe``, ``experiment``) are read from their
dataclasses, which import nothing heavy. The ``model`` and ``train`` sections are TRL's dataclasses
(`decpo.config.trl_sections`), whose import costs seconds (trl pulls in transformers and torch); their keys,
defaults (for the value checks of `decpo.config.train_checks`) and type annotations are saved in
``trl_keys.json`` beside this module, as JSON forms of the annotations that
`annotation_from_json` turns back into annotations `decpo.config.typecheck.check_value` checks exactly as it
checks the live ones. ``tests/test_config_catalogue.py`` regenerates the file from the installed TRL and fails
when it differs (then run ``python -m decpo.config.run_config``), and checks that both annotations accept, refuse
and convert the same values.

`read_flat` is the one reader of a config: `decpo.config.run_config.load_config` calls it with the live
annotations, the command line first calls `precheck` (this catalogue) before any heavy import.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from decpo.config.errors import ConfigError
from decpo.config.typecheck import check_value
from decpo.names import closest

TRL_KEYS_FILE = Path(__file__).with_name("trl_keys.json")
HEAVY_SECTIONS = ("model", "train")  # built from TRL's dataclasses: their keys come from TRL_KEYS_FILE

# keys of earlier decpo versions -> the TRL field that replaced them (with a value that changed form)
RENAMED = {
    "model.name": "model.model_name_or_path",
    "model.revision": "model.model_revision",
    "lora.enabled": "model.use_peft",
    "lora.r": "model.lora_r",
    "lora.alpha": "model.lora_alpha",
    "lora.dropout": "model.lora_dropout",
    "lora.target_modules": "model.lora_target_modules",
    "objective.loss_type": "train.loss_type",
    "objective.beta": "train.beta",
    "objective.reg_weight": "train.reg_weight",
    "objective.reg_balance": "train.reg_balance",
    "objective.reg_form": "train.reg_form",
    "objective.layers": "train.reg_layers",
    "objective.site": "train.reg_site",
    "objective.tokens": "train.reg_tokens",
    "objective.rows": "train.reg_rows",
    "objective.simpo_gamma": "train.simpo_gamma",
    "train.lr": "train.learning_rate",
    "train.lr_scheduler": "train.lr_scheduler_type",
    "train.epochs": "train.num_train_epochs",
    "train.batch_size": "train.per_device_train_batch_size",
    "train.eval_batch_size": "train.per_device_eval_batch_size",
    "train.grad_accum": "train.gradient_accumulation_steps",
    "train.precompute_ref": "train.precompute_ref_log_probs",
    "train.ref_cache": "train.ref_logps_cache (auto or null)",
    "train.group_by_length": "train.train_sampling_strategy=group_by_length",
    "train.resume": "train.resume_from_checkpoint (last or null)",
    "train.warmup_ratio": "train.warmup_steps (transformers 5: a number in [0, 1) is a ratio of the steps)",
}


class _NoDefault:
    """The default of a key whose default is not saved: decpo's own sections (their dataclasses give theirs),
    or a default JSON cannot hold."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """What a config key accepts: its type annotation and the field's ``metadata["choices"]``; for the heavy
    sections, its default (as JSON holds it: an enum's value), else `NO_DEFAULT`."""

    hint: Any
    choices: tuple = ()
    default: Any = NO_DEFAULT

    def check(self, key: str, value: Any) -> Any:
        return check_value(key, value, self.hint, _Choices(self.choices))


class _Choices:
    """The part of a `dataclasses.Field` that `check_value` reads: ``metadata["choices"]``."""

    def __init__(self, choices: tuple) -> None:
        self.metadata = {"choices": choices}


def leaves(prefix: str, cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The dotted keys of a section with their field and type annotation; a field holding a dataclass is a
    subsection (``experiment.slurm.*``)."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            out.update(leaves(f"{prefix}{f.name}.", type(sub)))
        else:
            out[f"{prefix}{f.name}"] = (f, hints[f.name])
    return out


def light_sections() -> dict[str, type]:
    """decpo's own sections (no heavy import), by name."""
    from decpo.config.experiment_settings import ExperimentSettings
    from decpo.config.sections import DataConfig, ObjectiveConfig, PairsSettings, ProbeSettings

    return {
        "data": DataConfig,
        "objective": ObjectiveConfig,
        "pairs": PairsSettings,
        "probe": ProbeSettings,
        "experiment": ExperimentSettings,
    }


def specs_of(sections: Mapping[str, type]) -> dict[str, KeySpec]:
    """Every dotted key of ``sections`` with its `KeySpec`, from the live dataclasses."""
    return {
        key: KeySpec(hint, tuple(f.metadata.get("choices") or ()))
        for name, cls in sections.items()
        for key, (f, hint) in leaves(f"{name}.", cls).items()
    }


# ---- annotations as JSON ----------------------------------------------------------------------------------


def annotation_to_json(hint: Any) -> Any:
    """A JSON form of a type annotation, for the forms `check_value` distinguishes."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return {"union": [annotation_to_json(a) for a in typing.get_args(hint)]}
    if hint is Any:
        return "any"
    if hint is type(None) or hint is None:
        return "null"
    for atom in (bool, int, float, str):
        if hint is atom:
            return atom.__name__
    if origin is typing.Literal:
        return {"literal": list(typing.get_args(hint))}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": hint.__name__, "values": [m.value for m in hint]}
    if origin in (list, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        return {"list": annotation_to_json(args[0]) if args else "any"}
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return {"dict": annotation_to_json(args[1]) if args else None}
    if isinstance(hint, type):  # a class YAML cannot build (e.g. accelerate's ParallelismConfig)
        return {"class": hint.__name__}
    raise TypeError(f"no JSON form for the annotation {hint!r}")


def annotation_from_json(obj: Any) -> Any:
    """The annotation `annotation_to_json` saved, as one `check_value` checks the same way."""
    if isinstance(obj, str):
        return {"any": Any, "null": type(None), "bool": bool, "int": int, "float": float, "str": str}[obj]
    if "union" in obj:
        return typing.Union[tuple(annotation_from_json(a) for a in obj["union"])]  # noqa: UP007
    if "literal" in obj:
        return typing.Literal[tuple(obj["literal"])]
    if "enum" in obj:
        return enum.Enum(obj["enum"], {f"V{i}": v for i, v in enumerate(obj["values"])})
    if "list" in obj:
        return list[annotation_from_json(obj["list"])]
    if "dict" in obj:
        return dict if obj["dict"] is None else dict[str, annotation_from_json(obj["dict"])]
    if "class" in obj:
        return type(obj["class"], (), {})  # no YAML value is an instance of it, as of the real class
    raise ValueError(f"{TRL_KEYS_FILE}: unknown annotation form {obj!r}")


def default_to_json(value: Any) -> Any:
    """A field's default as ``trl_keys.json`` saves it (an enum as its value), or `NO_DEFAULT` where JSON
    cannot hold it."""
    value = value.value if isinstance(value, enum.Enum) else value
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return NO_DEFAULT
    return value


def trl_keys_json(specs: Mapping[str, KeySpec]) -> str:
    """The text of ``trl_keys.json`` for the heavy sections' specs."""
    entries = {
        key: {"type": annotation_to_json(spec.hint), "choices": list(spec.choices)}
        | ({} if spec.default is NO_DEFAULT else {"default": spec.default})
        for key, spec in specs.items()
        if key.split(".", 1)[0] in HEAVY_SECTIONS
    }
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items()]  # a line a key: readable diffs
    return "{\n" + ",\n".join(lines) + "\n}\n"


def saved_specs() -> dict[str, KeySpec]:
    """The heavy sections' specs as saved in ``trl_keys.json``."""
    try:
        entries = json.loads(TRL_KEYS_FILE.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{TRL_KEYS_FILE}: cannot read the saved config keys ({e}); reinstall decpo") from e
    return {
        key: KeySpec(
            annotation_from_json(e["type"]), tuple(e.get("choices") or ()), e.get("default", NO_DEFAULT)
        )
        for key, e in entries.items()
    }


def catalogue() -> dict[str, KeySpec]:
    """Every valid key, in section order (``model``, ``data``, ``objective``, ``train``, ...), without trl."""
    saved = saved_specs()
    light = specs_of(light_sections())
    order = ("model", "data", "objective", "train", "pairs", "probe", "experiment")
    merged = {**saved, **light}
    return {k: merged[k] for name in order for k in merged if k.split(".", 1)[0] == name}


# ---- reading a config ---------------------------------------------------------------------------------------


def unknown_key(key: str, source: str, valid: typing.Iterable[str]) -> ConfigError:
    """The error for a key no section has: the renamed key's new home, or the closest valid key."""
    if key in RENAMED:
        return ConfigError(
            f"config key {key!r} in {source} was renamed: use {RENAMED[key]} (TRL's name; see `decpo config-keys`)"
        )
    # the old names too: a typo of a renamed key (`objective.betta`) is pointed at its new home (`train.beta`)
    names = (*valid, *RENAMED)
    match = closest(key, names, cutoff=0.5)
    if match is None:  # a right leaf under a wrong section, e.g. `beta` for `train.beta`
        match = next((k for k in names if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]), None)
    if match is None:
        hint = ""
    elif match in RENAMED:
        hint = f"; did you mean {RENAMED[match]}? ({match!r} was renamed to it)"
    else:
        hint = f"; did you mean {match!r}?"
    return ConfigError(f"unknown config key {key!r} in {source}{hint} (see `decpo config-keys`)")


def flatten(tree: dict[str, Any], groups: set[str], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"beta": 0.1}}`` -> ``{"train.beta": 0.1}``, descending into the names of ``groups``
    (sections, subsections and the old ``lora`` section) only."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in groups:
            flat.update(flatten(v, groups, key + "."))
        else:
            flat[key] = v
    return flat


def groups_of(keys: typing.Iterable[str]) -> set[str]:
    """The sections and subsections of dotted keys (every proper prefix), plus the old ``lora`` section."""
    out = {"lora"}
    for key in keys:
        parts = key.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.beta=0.2"`` -> ``("train.beta", 0.2)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.beta=0.2")
    key, raw = item.split("=", 1)
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:  # e.g. a !!python tag, which the safe loader refuses (as in a file)
        raise ConfigError(f"override {item!r}: not valid YAML: {e}") from e


Check = Callable[[str, Any], Any]


def read_flat(
    path: str | Path | None, overrides: typing.Sequence[str], check: Mapping[str, Check]
) -> dict[str, Any]:
    """A YAML file (safe loader) and dotted overrides, in that order, as checked values by dotted key;
    ``check`` maps every valid key to its check. A `ConfigError` names the file or the command line."""
    flat: dict[str, Any] = {}
    groups = groups_of(check)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        for key, value in flatten(tree, groups).items():
            if key not in check:
                raise unknown_key(key, str(path), check)
            flat[key] = check[key](key, value)
    for item in overrides:
        key, value = parse_override(item)
        if key not in check:
            raise unknown_key(key, "the command line", check)
        flat[key] = check[key](key, value)
    return flat


def precheck(path: str | Path | None, overrides: typing.Sequence[str]) -> dict[str, Any]:
    """What can be checked of a config without trl: its keys, every value's type, decpo's own sections' checks
    (built from their values), and the ``train`` section's value checks and the 2-row refusal
    (`decpo.config.train_checks`), on its given values over the defaults saved in ``trl_keys.json``.
    `decpo.config.run_config.load_config` checks everything again with the live sections, and the checks that
    need TRL's (the ``model`` section's, TRL's own ``__post_init__``, the other checks across sections).

    Returns every key's checked value: the given one, else its saved default (`NO_DEFAULT` where none is
    saved: decpo's own sections), for the command line's checks that need a model's config (the blocks of
    ``train.reg_layers``) but not torch."""
    specs = catalogue()
    flat = read_flat(path, overrides, {k: s.check for k, s in specs.items()})
    tree: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, rest = key.split(".", 1)
        if section not in HEAVY_SECTIONS:
            node = tree.setdefault(section, {})
            *inner, leaf = rest.split(".")
            for part in inner:
                node = node.setdefault(part, {})
            node[leaf] = value
    built = {}
    for name, cls in light_sections().items():
        try:  # its own checks; a subsection's dict is built by the section
            built[name] = cls(**tree.get(name, {}))
        except TypeError as e:  # a value of the wrong shape
            raise ConfigError(f"bad config value: {e}") from e
    _precheck_train(specs, flat, built["objective"].regularizer)
    return {key: flat.get(key, spec.default) for key, spec in specs.items()}


def _precheck_train(specs: Mapping[str, KeySpec], flat: Mapping[str, Any], regularizer: str | None) -> None:
    """The ``train`` checks of `decpo.config.train_checks` (and the ``model`` section's LoRA values) on the given
    values over the saved defaults; a check whose fields are not all known (a default JSON cannot hold) is left
    to `load_config`."""
    from decpo.config.train_checks import (  # light: no trl
        LORA_FIELDS,
        REGULARIZER_FIELDS,
        ROWS_FIELDS,
        TRAIN_FIELDS,
        check_decorrelation_rows,
        check_lora_values,
        check_regularizer,
        check_train_values,
    )

    def section(name: str) -> dict[str, Any]:
        return {
            key.split(".", 1)[1]: flat.get(key, spec.default)
            for key, spec in specs.items()
            if key.startswith(f"{name}.")
        }

    values, model = section("train"), section("model")
    train = types.SimpleNamespace(**values)

    def known(names: tuple[str, ...], given: Mapping[str, Any] = values) -> bool:
        return all(given.get(n, NO_DEFAULT) is not NO_DEFAULT for n in names)

    if known(LORA_FIELDS, model):
        check_lora_values(types.SimpleNamespace(**model))

    if known(REGULARIZER_FIELDS):
        try:
            check_regularizer(train)
        except ValueError as e:
            raise ConfigError(f"train.{e}") from e
    if known(TRAIN_FIELDS):
        check_train_values(train)
    if known(ROWS_FIELDS):
        check_decorrelation_rows(regularizer, train)
