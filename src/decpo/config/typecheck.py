"""A generic check of a value against a type annotation: what a config key's field declares.

Pure: it knows nothing of decpo's sections, only of annotations (unions, ``Literal``, enums, lists, dicts,
classes) and of the forms YAML gives the same value in (an int for a float, ``"1e-3"`` for a float, one
item for a list, ``false`` for ``no``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from decpo.config.errors import ConfigError


class _Mismatch(Exception):
    """A value that does not fit an annotation (internal: `check_value` turns it into a `ConfigError`)."""


def check_value(key: str, value: Any, hint: Any, f: dataclasses.Field | None = None) -> Any:
    """``value`` checked against the annotation ``hint`` of config key ``key`` (and the field's
    ``metadata["choices"]``), converted where YAML gives another form of the same thing: an int for a float,
    ``"1e-3"`` (YAML 1.1 reads it as a string) for a float, one item for a list. A `ConfigError` otherwise."""
    try:
        value = _conform(value, hint, wrap=False)
    except _Mismatch:
        try:
            value = _conform(value, hint, wrap=True)
        except _Mismatch:
            quote = (
                " (YAML reads yes/no/on/off as true/false: quote the word)" if isinstance(value, bool) else ""
            )
            raise ConfigError(f"config key {key!r} expects {_describe(hint)}, got {value!r}{quote}") from None
    choices = (f.metadata.get("choices") if f is not None else None) or ()
    if choices and value is not None and value not in choices:
        raise ConfigError(f"config key {key!r} expects one of {list(choices)}, got {value!r}")
    return value


def _arms(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _conform(value: Any, hint: Any, wrap: bool) -> Any:
    arms = _arms(hint)
    if len(arms) > 1:
        enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in arms:  # `OptimizerNames | str`: a name of the enum
            if value is None and type(None) in arms:
                return None
            for e in enums:
                names = [m.value for m in e]  # a list: a YAML list or mapping is not hashable
                if value is False and "no" in names:  # YAML 1.1 reads `eval_strategy: no` as false
                    return "no"
                if isinstance(value, e) or (isinstance(value, str) and value in names):
                    return value.value if isinstance(value, e) else value
            raise _Mismatch
        for arm in arms:
            try:
                return _conform(value, arm, wrap)
            except _Mismatch:
                continue
        raise _Mismatch
    return _conform_one(value, hint, wrap)


def _conform_one(value: Any, hint: Any, wrap: bool) -> Any:
    if hint is Any:
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
        raise _Mismatch
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # an int stays one: `warmup_steps: 10` is a count, 0.1 a ratio
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value.value
        if value in [m.value for m in hint]:
            return value
        raise _Mismatch
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            if not wrap:
                raise _Mismatch
            value = [value]
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_conform(v, item, wrap=False) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        args = typing.get_args(hint)
        return {k: _conform(v, args[1], wrap=False) for k, v in value.items()} if args else value
    if isinstance(hint, type):  # another class (e.g. accelerate's ParallelismConfig): an instance only
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def _describe(hint: Any) -> str:
    arms = _arms(hint)
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and str in arms:
        names = [m.value for e in enums for m in e]
        return ("null or " if type(None) in arms else "") + f"one of {names}"
    words = []
    for a in arms:
        origin = typing.get_origin(a)
        if a is type(None):
            words.append("null")
        elif a is bool:
            words.append("true or false")
        elif a is int:
            words.append("an integer")
        elif a is float:
            words.append("a number")
        elif a is str:
            words.append("a string")
        elif origin is typing.Literal:
            words.append(" or ".join(repr(x) for x in typing.get_args(a)))
        elif origin in (list, tuple) or a in (list, tuple):
            args = typing.get_args(a)
            words.append(f"a list of {_describe(args[0])}" if args else "a list")
        elif origin is dict or a is dict:
            words.append("a mapping")
        elif isinstance(a, type) and issubclass(a, enum.Enum):
            words.append(f"one of {[m.value for m in a]}")
        elif isinstance(a, type):
            words.append(f"a {a.__name__} (not settable from YAML)")
        else:
            words.append(str(a))
    return " or ".join(dict.fromkeys(words))
