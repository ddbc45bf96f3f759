"""The `decpo` command line: the only package that parses arguments or prints."""

from decpo.cli.main import DEFAULT_PRESET, config_path, main

__all__ = ["DEFAULT_PRESET", "config_path", "main"]
