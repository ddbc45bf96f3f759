"""The one exception type of the config layer."""

from __future__ import annotations

from decpo.errors import DecPOError


class ConfigError(DecPOError, ValueError):
    """A configuration file or override that cannot be used."""
