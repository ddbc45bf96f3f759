"""The run configuration: TRL's dataclasses as sections, YAML presets plus dotted overrides, checked up front.

Modules: `errors` (`ConfigError`), `fields` (help metadata), `typecheck` (a value against an annotation),
`trainer_args` (the trainer's dataclasses), `trl_sections` (the ``model`` and ``train`` sections built from
them), `sections` and `experiment_settings` (decpo's own sections), `sampling` (the pair-sampling settings),
`run_config` (`RunConfig`, the YAML loader, the key catalogue) and `sweeps` (the config changes of a sweep).

The names below are imported on first use (`decpo.lazy`): the sections built from TRL's dataclasses import
trl, transformers and torch, which the light modules (`errors`, `fields`, `sampling`) do not need.
"""

from decpo.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "decpo.config.errors": ("ConfigError",),
        "decpo.config.run_config": (
            "FIELDS",
            "RENAMED",
            "RunConfig",
            "describe_keys",
            "load_config",
            "parse_override",
            "save_config",
        ),
        "decpo.config.sections": ("OBJECTIVES",),
        "decpo.config.trl_sections": ("DECPO_DEFAULTS",),
    },
)
