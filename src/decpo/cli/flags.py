"""Sub-command flags generated from a settings dataclass: one ``--field-name`` flag per field, its type,
default and help (``metadata["help"]``, see `decpo.config.fields.described`) read from the field, so that a
setting is declared, documented and defaulted in one place (`decpo eval`, `decpo probe`, `decpo pairs`)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

_SCALARS = (int, float, str)


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: a flag's comma-separated values, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1, else argparse's one-line error naming the flag
    (``argument --num-processes: expected a whole number >= 1, got '0'``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _members(hint: Any) -> list[Any]:
    """The types a hint allows, None left out (``int | None`` -> ``[int]``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _shown(default: Any) -> str:
    if isinstance(default, tuple | list):
        return ",".join(map(str, default)) or "none"  # an empty list: none, not a blank
    return str(default)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _flag_kwargs(field: dataclasses.Field, hint: Any, choices: Sequence[Any] | None) -> tuple[str, dict]:
    """``(flag prefix, add_argument keywords)`` of one field: its action or type, default and choices."""
    default = _default(field)
    members = _members(hint)
    if default is dataclasses.MISSING:
        kwargs: dict[str, Any] = {"required": True}
    else:
        kwargs = {"default": default}
    if members == [bool] and default is True:  # on by default: the flag turns it off
        return "--no-", {**kwargs, "action": "store_false"}
    if members == [bool]:
        return "--", {**kwargs, "action": "store_true"}
    if bool in members:  # bool or a word (chat_template: true, false, auto): --x / --no-x / unset
        return "--", {**kwargs, "action": argparse.BooleanOptionalAction}
    # a scalar where the field takes one (layers: "all" or block indices), else a list of words
    scalar = next((m for m in members if m in _SCALARS), None)
    listed = any(typing.get_origin(m) in (tuple, list) for m in members)
    kwargs["type"] = comma_list if listed and scalar is None else scalar or str
    choices = choices if choices is not None else field.metadata.get("choices")
    if choices is not None:
        kwargs["choices"] = tuple(choices)
    return "--", kwargs


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Collection[str] = (),
    flags: Mapping[str, str] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    extra_help: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of the dataclass ``cls`` to ``parser``; returns the fields added (each flag's
    ``dest``, so that ``dataclass_values`` can build ``cls`` from the parsed arguments).

    A field ``max_new_tokens`` becomes ``--max-new-tokens`` (``flags`` renames: ``{"pairs_path": "pairs"}``)
    with the field's type (``int | None`` -> int; ``str | tuple[int, ...]`` -> str; a tuple or list alone ->
    comma-separated words), default and help, the default appended to the help. A bool field is a switch: ``--x`` when off by default, ``--no-x`` when
    on (its help: ``described(..., off=...)``, what the flag does); a bool-or-word field (``bool | str | None``) is ``--x`` / ``--no-x`` / unset. A field without a default
    is a required flag. ``choices``: allowed values per field (else the field's ``metadata["choices"]``);
    ``extra_help``: text appended to a field's help (e.g. what is registered now).
    """
    flags, choices, extra_help = flags or {}, choices or {}, extra_help or {}
    hints = typing.get_type_hints(cls)
    added = []
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        prefix, kwargs = _flag_kwargs(field, hints[field.name], choices.get(field.name))
        text = field.metadata.get("help", "")
        # a --no- flag turns the field off: its help says what the flag does, not what the field does
        if prefix == "--no-":
            if "off_help" not in field.metadata:
                raise TypeError(
                    f"{cls.__name__}.{field.name} is on by default: give its --no- flag's help as "
                    "described(..., off='Do not ...')"
                )
            text = field.metadata["off_help"]
        if field.name in extra_help:
            text = f"{text} {extra_help[field.name]}"
        if "type" in kwargs and kwargs.get("default") is not None:
            text = f"{text} (default: {_shown(kwargs['default'])})"
        text = text.replace("%", "%%")  # argparse formats help with %
        name = flags.get(field.name, field.name.replace("_", "-"))
        if field.name in flags and "type" in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = name.upper().replace("-", "_")  # as argparse names an unrenamed flag's value
        parser.add_argument(f"{prefix}{name}", dest=field.name, help=text, **kwargs)
        added.append(field.name)
    return added


def dataclass_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The parsed values of the fields ``add_dataclass_flags`` added: ``cls(**dataclass_values(args, added))``."""
    return {name: getattr(args, name) for name in names}


def in_flag_terms(message: str, names: Sequence[str], flags: Mapping[str, str] | None = None) -> str:
    """A settings dataclass's error message with its field names said as the flags that set them: ``"limit
    must be >= 1"`` -> ``"--limit must be >= 1"``, ``"synthetic_answer=number ..."`` -> ``"--synthetic-answer
    number ..."``. A name is replaced only where it stands as a field (before ``must``, ``=`` or ``and``)."""
    flags = flags or {}
    if message.startswith("--"):  # it already names its flag (`--sparse-layers: layers must ...`)
        return message
    for name in sorted(names, key=len, reverse=True):
        flag = "--" + flags.get(name, name.replace("_", "-"))
        if flag in message:  # the message already says the flag (`--layers: layers must ...`)
            continue
        message = re.sub(rf"(?<![\w.-]){re.escape(name)}=", f"{flag} ", message)
        message = re.sub(rf"(?<![\w.-]){re.escape(name)}(?= must| and )", flag, message)
    return message


def from_flags(
    cls: type, args: argparse.Namespace, names: Sequence[str], flags: Mapping[str, str] | None = None
) -> Any:
    """``cls`` built from the parsed flags; a `DecPOError` its checks raise names the flags, not the fields."""
    from decpo.errors import DecPOError

    try:
        return cls(**dataclass_values(args, names))
    except DecPOError as e:
        raise type(e)(in_flag_terms(str(e), names, flags)) from None
