"""The run configuration: TRL's dataclasses as sections, YAML presets plus dotted overrides, checked up front.

Modules: `errors` (`ConfigError`), `fields` (help metadata), `typecheck` (a value against an annotation),
`trainer_args` (the trainer's dataclasses), `trl_sections` (the ``model`` and ``train`` sections built from
them), `sections` and `experiment_settings` (decpo's own sections), `sampling` (the pair-sampling settings),
`run_config` (`RunConfig`, the YAML loader, the key catalogue) and `sweeps` (the config changes of a sweep).
"""

from decpo.config.errors import ConfigError
from decpo.config.run_config import (
    FIELDS,
    RENAMED,
    RunConfig,
    describe_keys,
    load_config,
    parse_override,
    save_config,
)
from decpo.config.sections import OBJECTIVES
from decpo.config.trl_sections import DECPO_DEFAULTS

__all__ = [
    "DECPO_DEFAULTS",
    "FIELDS",
    "OBJECTIVES",
    "RENAMED",
    "ConfigError",
    "RunConfig",
    "describe_keys",
    "load_config",
    "parse_override",
    "save_config",
]
