"""Field metadata shared by every settings dataclass: the help text that `decpo config-keys` and the
sub-commands' flags show."""

from __future__ import annotations


def described(text: str, off: str | None = None) -> dict[str, str]:
    """``field(metadata=described("..."))``: the help text of a settings field. ``off``: for a switch that is on
    by default, what its ``--no-x`` flag does, said as an action (``"Do not add ... (added by default)."``)."""
    return {"help": text} if off is None else {"help": text, "off_help": off}
