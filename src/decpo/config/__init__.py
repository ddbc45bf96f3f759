"""The run configuration: TRL's dataclasses as sections, YAML presets plus dotted overrides, checked up front."""

from decpo.config.run_config import (
    DECPO_DEFAULTS,
    FIELDS,
    OBJECTIVES,
    RENAMED,
    ConfigError,
    RunConfig,
    describe_keys,
    load_config,
    parse_override,
    save_config,
)

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
