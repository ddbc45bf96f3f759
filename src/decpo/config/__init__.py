"""The run configuration: TRL's dataclasses as sections, YAML presets plus dotted overrides, checked up front.

Modules: `errors` (`ConfigError`), `fields` (help metadata), `typecheck` (a value against an annotation),
`trainer_args` (the trainer's dataclasses), `trl_sections` (the ``model`` and ``train`` sections built from
them), `sections` and `experiment_settings` (decpo's own sections), `sampling` (the pair-sampling settings),
`catalogue` (the keys, and the reading of a config without trl: `trl_keys.json` holds the TRL sections'
keys), `run_config` (`RunConfig`, the loader) and `sweeps` (the config changes of a sweep).

The names below are imported on first use (`decpo.lazy`): the sections built from TRL's dataclasses import
trl, transformers and torch, which the light modules (`errors`, `fields`, `sampling`) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "decpo.config.errors": ("ConfigError",),
        "decpo.config.catalogue": ("RENAMED", "parse_override", "precheck"),
        "decpo.config.run_config": ("FIELDS", "RunConfig", "describe_keys", "load_config", "save_config"),
        "decpo.config.sections": ("OBJECTIVES",),
        "decpo.config.trl_sections": ("DECPO_DEFAULTS",),
    },
)
