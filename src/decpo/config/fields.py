"""Field metadata shared by every settings dataclass: the help text that `decpo config-keys` and the
sub-commands' flags show."""

from __future__ import annotations


def described(text: str) -> dict[str, str]:
    """``field(metadata=described("..."))``: the help text of a settings field."""
    return {"help": text}
